"""``python -m survey.report`` end to end, and the admin Results tab on a real Gradio server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from conftest import CHROMIUM_ARGS, free_port
from survey import report as report_command
from survey.analysis import report
from survey.analysis.simulate import simulate_study

ROOT = Path(__file__).resolve().parent.parent
CSV_TABLES = ("mos.csv", "pairwise.csv", "raters.csv", "stimuli.csv")


def run_report(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "survey.report", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def main(*args: str) -> int:
    """The report's CLI in-process (quicker than a subprocess for the many small cases)."""
    return report_command.main(list(args))


def write_rows(path: Path, rows: list[tuple]) -> Path:
    columns = ["study", "rater", "session", "image", "method", "score", "repeat",
               "shown_at", "answered_at", "response_ms"]
    pd.DataFrame([("s", r, f"s-{r}", i, m, score, 0, "", "", "") for r, i, m, score in rows],
                 columns=columns).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def study_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ratings") / "ratings.csv"
    simulate_study(n_raters=12, n_images=8, seed=7, outlier_share=0.17, retest_share=0.1,
                   study="pilot").to_csv(path, index=False)
    return path


def test_report_on_csv_writes_markdown_tables_and_figures(study_csv: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "mos"
    assert main("--csv", str(study_csv), "--out", str(out), "--seed", "3", "--note", "Simulated with seed 7.") == 0
    stdout = capsys.readouterr().out
    assert "clustered 95% CI" in stdout and "srgan" in stdout
    text = (out / "report.md").read_text()
    assert text.startswith("# Mean Opinion Score report: pilot\n\nSimulated with seed 7.")
    assert "--seed 3" in text and "2000 resamples" in text
    assert "headline is the two-way clustered bootstrap" in text
    for section in ("## Pairwise comparisons", "## Rater screening", "## Reliability",
                    "Krippendorff's alpha (ordinal", "SOS hypothesis", "without screening"):
        assert section in text
    assert "nan" not in text.replace("nearest", "")
    for name in CSV_TABLES:
        assert (out / name).stat().st_size > 0
    for name in report.FIGURES:
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width > 100
        assert f"]({name})" in text
    mos = pd.read_csv(out / "mos.csv")
    assert set(mos["raters_used"]) == {"screened", "all"}
    screened = mos[mos["raters_used"] == "screened"]
    assert (screened["boot_hi"] - screened["boot_lo"] > screened["naive_hi"] - screened["naive_lo"]).all()
    raters = pd.read_csv(out / "raters.csv", index_col="rater")
    planted = simulate_study(n_raters=12, n_images=8, seed=7, outlier_share=0.17).attrs["outliers"]
    assert set(raters.index[raters["rejected"]]) == set(planted)
    assert len(pd.read_csv(out / "pairwise.csv")) == 10


@pytest.mark.e2e
def test_python_m_survey_report_runs_as_a_command(study_csv: Path, tmp_path: Path) -> None:
    """The command a user types, in its own interpreter with a headless matplotlib."""
    result = run_report("--csv", str(study_csv), "--out", str(tmp_path / "mos"), "--resamples", "100")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert (tmp_path / "mos" / "report.md").is_file()


def test_no_screening_keeps_everyone_and_says_so(study_csv: Path, tmp_path: Path) -> None:
    assert main("--csv", str(study_csv), "--out", str(tmp_path), "--no-screening",
                "--resamples", "300") == 0
    text = (tmp_path / "report.md").read_text()
    assert "NOT applied (--no-screening)" in text and "would be rejected" in text
    assert "with the default screening" in text
    assert set(pd.read_csv(tmp_path / "mos.csv")["raters_used"]) == {"all"}


@pytest.mark.parametrize("case, rows, expected", [
    ("empty", [], "no ratings (first showings) to analyse"),
    ("one rater", [("r1", f"i{k}", m, 1 + k % 5) for k in range(5) for m in ("bicubic", "srgan")],
     "needs >= 2 raters (has 1)"),
    ("one method", [(f"r{r}", f"i{k}", "srgan", 1 + (k + 2 * (r % 2)) % 5) for r in range(4) for k in range(5)],
     "srgan"),
    ("all equal", [(f"r{r}", f"i{k}", m, 3) for r in range(3) for k in range(3) for m in ("hr", "nearest")],
     "all paired differences are 0"),
    ("one rating", [("r1", "i1", "srgan", 4)], "naive interval n/a: needs >= 2 ratings"),
])
def test_degenerate_inputs_say_what_cannot_be_computed(tmp_path: Path, case: str, rows, expected: str) -> None:
    csv = write_rows(tmp_path / "ratings.csv", rows)
    assert main("--csv", str(csv), "--out", str(tmp_path / "out"), "--resamples", "200") == 0, case
    assert expected in (tmp_path / "out" / "report.md").read_text()


@pytest.mark.parametrize("content, message", [
    ("rater,image,method\na,b,c\n", "missing column(s): score"),
    ("rater,image,method,score\na,b,c,6\n", "score must be in 1..5; line 2 has '6'"),
    ("rater,image,method,score\na,b,c,4\na,b,d,3.5\n", "whole number; line 3 has '3.5'"),
    ("rater,image,method,score\na,b,c,good\n", "whole number; line 2 has 'good'"),
    ("", "is empty"),
])
def test_bad_csv_gets_a_clear_message(tmp_path: Path, content: str, message: str, capsys) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text(content)
    assert main("--csv", str(csv), "--out", str(tmp_path / "out")) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_several_studies_need_a_choice(tmp_path: Path, capsys) -> None:
    a = simulate_study(n_raters=3, n_images=3, seed=1, study="a")
    b = simulate_study(n_raters=3, n_images=3, seed=2, study="b")
    csv = tmp_path / "two.csv"
    pd.concat([a, b]).to_csv(csv, index=False)
    assert main("--csv", str(csv), "--out", str(tmp_path / "out")) == 2
    assert "several studies (a, b)" in capsys.readouterr().err
    assert main("--csv", str(csv), "--study", "b", "--out", str(tmp_path / "out"),
                "--resamples", "200") == 0
    assert (tmp_path / "out" / "report.md").read_text().startswith("# Mean Opinion Score report: b")


# --- the database path and the admin tab ----------------------------------------------


@pytest.fixture(scope="module")
def study_db(tmp_path_factory) -> str:
    export = pytest.importorskip("survey.study.export")
    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'study.sqlite'}"
    export.import_ratings(url, simulate_study(n_raters=6, n_images=4, seed=2, retest_share=0.1),
                          study="pilot")
    return url


def test_report_on_database(study_db: str, tmp_path: Path, capsys) -> None:
    assert main("--db", study_db, "--study", "pilot", "--out", str(tmp_path / "out"), "--resamples", "200") == 0
    capsys.readouterr()
    text = (tmp_path / "out" / "report.md").read_text()
    assert "Raters: 6; ratings: 120 first showings" in text
    missing = tmp_path / "none" / "x.sqlite"
    assert main("--db", f"sqlite:///{missing}", "--out", str(tmp_path / "o")) == 2
    assert "no database file at" in capsys.readouterr().err and not missing.exists()
    # A mistyped study is named as such, not reported as a study without ratings.
    assert main("--db", study_db, "--study", "pilto", "--out", str(tmp_path / "o")) == 2
    assert "no study named 'pilto'" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_results_function_checks_the_token(study_db: str, tmp_path: Path) -> None:
    from survey.study.admin_tab import DISABLED, WRONG_TOKEN, make_results

    common = dict(db_url=study_db, out_dir=tmp_path, study="pilot", resamples=200)
    assert make_results(admin_token=None, token="x", **common).message == DISABLED
    wrong = make_results(admin_token="s3cret", token="s3cre", **common)
    assert wrong.message == WRONG_TOKEN and wrong.summary.empty and not wrong.figures
    assert make_results(admin_token="s3cret", token="", **common).message == WRONG_TOKEN
    view = make_results(admin_token="s3cret", token="s3cret", **common)
    assert list(view.summary["method"]) == ["nearest", "bicubic", "srresnet", "srgan", "hr"]
    assert len(view.figures) == 4 and "## Rater screening" in view.markdown
    # The report reaches the page as made: images in memory with their captions, text with no
    # image links; nothing but the ratings CSV (for its download) is written to disk.
    assert all(isinstance(image, Image.Image) and image.width > 100 and caption for image, caption in view.figures)
    assert "![" not in view.markdown and "## Figures" not in view.markdown
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [Path(view.ratings_csv).name]
    assert pd.read_csv(view.ratings_csv)["rater"].nunique() == 6
    other = make_results(admin_token="s3cret", token="s3cret", **{**common, "study": "nope"})
    assert "no study named 'nope'" in other.message  # a mistyped name, not an empty study


@pytest.fixture(scope="module")
def results_server(study_db: str, tmp_path_factory):
    """The Results tab alone in a Blocks, served on 127.0.0.1 with token "s3cret"."""
    import gradio as gr

    from survey.study.admin_tab import build_results_tab

    out_dir = tmp_path_factory.mktemp("results")
    with gr.Blocks() as app:
        with gr.Tab("Results"):
            build_results_tab(db_url=study_db, admin_token="s3cret", out_dir=out_dir)
    port = free_port()
    app.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True,
                       quiet=True, allowed_paths=[str(out_dir)])
    try:
        yield f"http://127.0.0.1:{port}/", out_dir
    finally:
        app.close()


@pytest.mark.e2e
def test_results_endpoint_needs_the_token(results_server) -> None:
    from gradio_client import Client

    url, _ = results_server
    client = Client(url, verbose=False)
    message, summary, gallery, csv_file, markdown = client.predict(
        "wrong", "pilot", True, api_name="/results_report")
    assert "Wrong admin token" in message and not gallery and csv_file is None
    assert markdown == "" and not summary["data"]
    started = time.perf_counter()
    message, summary, gallery, csv_file, markdown = client.predict(
        "s3cret", "pilot", True, api_name="/results_report")
    assert time.perf_counter() - started < 60
    assert "Report for study **pilot**" in message
    assert [row[0] for row in summary["data"]] == ["nearest", "bicubic", "srresnet", "srgan", "hr"]
    assert len(gallery) == 4 and Path(csv_file).stat().st_size > 0
    assert "## Pairwise comparisons" in markdown


@pytest.mark.e2e
def test_results_tab_in_a_browser(results_server, chromium_path: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, out_dir = results_server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            page.goto(url)
            page.locator("#results-token input, #results-token textarea").first.fill("nope")
            page.locator("#results-refresh").click()
            expect(page.locator("#results-message")).to_contain_text("Wrong admin token", timeout=30_000)
            expect(page.locator("#results-figures img")).to_have_count(0)

            page.locator("#results-token input, #results-token textarea").first.fill("s3cret")
            page.locator("#results-refresh").click()
            expect(page.locator("#results-message")).to_contain_text("Report for study", timeout=60_000)
            expect(page.locator("#results-summary")).to_contain_text("srresnet")
            expect(page.locator("#results-figures img").first).to_be_visible()
            expect(page.locator("#results-report")).to_contain_text("Rater screening")
            expect(page.locator("#results-csv a")).to_contain_text("KB")
            page.screenshot(path=str(out_dir / "results_tab.png"), full_page=True)
        finally:
            browser.close()


def test_disabled_tab_explains_how_to_enable(tmp_path: Path) -> None:
    import gradio as gr

    from survey.study.admin_tab import build_results_tab

    with gr.Blocks() as app:
        build_results_tab(db_url="sqlite://", admin_token="", out_dir=tmp_path)
    texts = [c.value for c in app.blocks.values() if isinstance(c, gr.Markdown)]
    assert any("SRGAN_ADMIN_TOKEN" in t for t in texts)
    assert not any(isinstance(c, gr.Button) for c in app.blocks.values())


@pytest.mark.slow
def test_the_benchmark_analyses_a_million_ratings_and_prints_its_times() -> None:
    # A benchmark prints figures (recorded in results/performance.md); no test fails on a time.
    result = run_report("--benchmark", timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("1,000,000 ratings (1000 raters x 1000 stimuli, 5 methods)")
    analysis = float(result.stdout.split("reliability) ")[1].split(" s")[0])
    assert analysis > 0
