"""The "Results" tab: the MOS report of the study database, for whoever holds the admin token.

Call ``build_results_tab`` inside ``with gr.Tab("Results"):`` within a ``gr.Blocks``. Without a
token (env SRGAN_ADMIN_TOKEN) the tab only says how to enable it. With one, "Refresh report"
reads the study's ratings (``export.read_ratings``), runs the analysis on them
(``survey.analysis.report``) and shows the summary table, the figures (in-memory images), the
report's text as rendered, and a download of the ratings CSV (deleted from the server once downloaded: refresh
to download it again). The same function is the named API endpoint
``results_report`` (inputs: token, study, screening), which also checks the token.
"""

from __future__ import annotations

import hmac
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import pandas as pd

from PIL import Image as PILImage

from survey.analysis import report
from survey.ratings import FIRST_SHOWING, RatingsError, select_study, write_csv
from survey.study import store
from survey.study.cleanup import ONE_SHOT
from survey.study.db import get_engine
from survey.study.export import read_ratings

log = logging.getLogger(__name__)

DISABLED = (
    "### Results are disabled\n"
    "This tab shows the study's MOS report to the study's organisers only. To enable it, "
    "start the app with an admin token: `SRGAN_ADMIN_TOKEN=<a long random string> python app.py` "
    "(or `--admin-token`), then enter that token here."
)
WRONG_TOKEN = "**Wrong admin token.** Nothing is shown without the right token."
SUMMARY_COLUMNS = ["method", "ratings", "MOS", "clustered 95% CI", "naive 95% CI"]


@dataclass
class ResultsView:
    """What the tab shows after a refresh; empty parts when there is nothing to show."""

    message: str
    summary: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=SUMMARY_COLUMNS))
    figures: list[tuple[PILImage.Image, str]] = field(default_factory=list)  # (image, caption)
    markdown: str = ""
    ratings_csv: str | None = None


def token_matches(given: str | None, expected: str | None) -> bool:
    if not expected or not given:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def _folder_name(study: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", study) or "all"


def make_results(*, db_url: str, admin_token: str | None, out_dir: Path, token: str | None,
                 study: str | None, screening: bool = True, resamples: int = 2000) -> ResultsView:
    """Check the token, run the report on the database, and collect what the tab shows."""
    if not admin_token:
        return ResultsView(message=DISABLED)
    if not token_matches(token, admin_token):
        return ResultsView(message=WRONG_TOKEN)
    study = (study or "").strip() or None
    try:
        ratings = read_ratings(db_url, study)
        ratings, study_name = select_study(ratings, study)
    except RatingsError as error:
        return ResultsView(message=f"**Cannot make the report:** {error}")
    if ratings.empty:
        where = f"study {study!r}" if study else "the database"
        return ResultsView(message=f"No ratings in {where} yet: nothing to report.")
    folder = Path(out_dir) / _folder_name(study_name)
    try:
        analysis = report.analyse(ratings, study=study_name, screening_on=screening,
                                  resamples=resamples, seed=0)
        command = f"results tab (study {study_name!r}, screening {'on' if screening else 'off'})"
        # The text and the figures go to the page as they are made: no report folder is
        # written and read back. Only the ratings CSV is a file, for its download.
        markdown = report.report_markdown(analysis, command=command, figures=[])
        figures = report.figure_images(analysis)
        csv_path = write_csv(ratings, folder / f"ratings_{_folder_name(study_name)}.csv")
    except Exception:  # the admin gets a message; the details go to the server log
        log.exception("results report failed")
        return ResultsView(message="**The report failed** on this data; see the server log.")
    rejected = int(analysis.raters["rejected"].astype(bool).sum()) if len(analysis.raters) else 0
    message = (f"Report for study **{study_name or '(unnamed)'}**: "
               f"{ratings['rater'].nunique()} raters, "
               f"{int((ratings['repeat'] == FIRST_SHOWING).sum())} ratings; "
               f"screening {'on' if screening else 'off'}, {rejected} rater(s) flagged.")
    return ResultsView(message=message, summary=report.summary_frame(analysis),
                       figures=figures, markdown=markdown, ratings_csv=str(csv_path))


def _study_choices(db_url: str) -> list[str]:
    try:
        return store.list_studies(get_engine(db_url))
    except Exception:  # the database does not answer: type a name instead
        return []


def build_results_tab(*, db_url: str, admin_token: str | None, out_dir: Path) -> None:
    """The Results tab's components and events (inside an open gr.Tab of a gr.Blocks)."""
    if not admin_token:
        gr.Markdown(DISABLED)
        return
    gr.Markdown("### Study results\nEnter the admin token, pick a study and press "
                "**Refresh report**. The headline interval is the clustered bootstrap "
                "(raters and images resampled together).")
    with gr.Row():
        token = gr.Textbox(label="Admin token", type="password", scale=2, elem_id="results-token")
        study = gr.Dropdown(label="Study (empty: the only study)", choices=[],
                            allow_custom_value=True, value=None, scale=2,
                            elem_id="results-study")
        screening = gr.Checkbox(label="Screen raters (recommended)", value=True, scale=1,
                                elem_id="results-screening")
    refresh = gr.Button("Refresh report", variant="primary", elem_id="results-refresh")
    message = gr.Markdown(elem_id="results-message")
    summary = gr.Dataframe(label="MOS per method", headers=SUMMARY_COLUMNS, interactive=False,
                           elem_id="results-summary")
    figures = gr.Gallery(label="Figures", columns=2, height=520, object_fit="contain",
                         elem_id="results-figures")
    ratings_csv = gr.File(label="Ratings CSV (downloads once; Refresh for another copy)", interactive=False,
                          elem_id="results-csv")
    full_report = gr.Markdown(elem_id="results-report")

    def run(token_value: str, study_value: str | None, screening_value: bool):
        view = make_results(db_url=db_url, admin_token=admin_token, out_dir=out_dir,
                            token=token_value, study=study_value, screening=bool(screening_value))
        # The ratings leave the private report folder as a copy that is deleted once downloaded
        # (by the app's OneShotDownloads): Gradio would otherwise keep a copy in its cache,
        # served to anyone with the address, without the token.
        csv = view.ratings_csv and str(ONE_SHOT.add(Path(view.ratings_csv), Path(ratings_csv.GRADIO_CACHE)))
        return view.message, view.summary, view.figures, csv, view.markdown

    refresh.click(run, [token, study, screening],
                  [message, summary, figures, ratings_csv, full_report],
                  api_name="results_report")

    def studies(token_value: str):
        if not token_matches(token_value, admin_token):
            return gr.Dropdown(choices=[])
        return gr.Dropdown(choices=_study_choices(db_url))

    # The list of studies is shown only once the token is right.
    token.change(studies, [token], [study], api_visibility="private", show_progress="hidden")
