"""The "MOS study" tab: raters join with a code, calibrate, and rate one image at a time.

All state lives in the database, keyed by the rater's code: the page only remembers which
code and which image it shows, so the same code resumes anywhere (``?rater=CODE``). The same
protocol is exposed as named API endpoints (``study_join``, ``study_next``, ``study_continue``,
``study_rate``) for ``gradio_client``.

Call ``build_study_tab`` inside ``with gr.Tab("MOS study"):`` within a ``gr.Blocks``.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
from sqlalchemy.exc import SQLAlchemyError

from survey import store
from survey.db import SchemaVersionError, get_engine
from survey.prepare import stimulus_path

log = logging.getLogger(__name__)

NOT_SAVED = "**Not saved**: the study database did not answer. Please press the button again in a moment."
SAVED_NEXT_FAILED = (
    "**Saved**: your rating is stored, but the next image could not be loaded (the study database did "
    "not answer). Please reload this page in a moment to continue."
)
UNAVAILABLE = "**The study database did not answer.** Nothing was lost; please try again in a moment."
CONCURRENCY = "survey-study"

INSTRUCTIONS = """\
### Rate the quality of images

You will see photographs one at a time and rate each from **1 (Bad)** to **5 (Excellent)**,
judging how natural and detailed it looks. A few labelled examples come first to show what a
1 and a 5 look like; they are not counted. Images are shown at their true size: please do not
zoom the page. Use the buttons or the keys **1** to **5**. Each rating is saved at once: you
can stop at any time and continue later, on any device, with your personal link.

We store only your anonymous code, your ratings and their times, for research on image
super-resolution.
"""

CONSENT_LABEL = "I have read the instructions and agree that my anonymous ratings are stored and used for research."

# Keys 1-5 press the score buttons, Enter the Continue button; installed once per page.
# Also shows a note when the image box is smaller than the image (it then scrolls).
KEYS_JS = """
if (!window.__studyKeys) {
  window.__studyKeys = true;
  const visible = (el) => el && el.offsetParent !== null && !el.disabled;
  document.addEventListener('keydown', (event) => {
    if (event.altKey || event.ctrlKey || event.metaKey || event.repeat) return;
    const target = event.target;
    if (target && (target.tagName === 'INPUT' || target.tagName === 'TEXTAREA' || target.isContentEditable)) return;
    let button = null;
    if (/^[1-5]$/.test(event.key)) button = document.getElementById('study-score-' + event.key);
    else if (event.key === 'Enter') button = document.getElementById('study-continue');
    if (visible(button)) { event.preventDefault(); button.click(); }
  });
  setInterval(() => {
    const box = document.querySelector('#study-stimulus .stimulus-box');
    const note = document.getElementById('study-size-note');
    if (!box || !note) return;
    const clipped = box.scrollWidth > box.clientWidth + 1 || box.scrollHeight > box.clientHeight + 1;
    note.style.display = clipped ? 'block' : 'none';
  }, 400);
}
"""

# After a new code is issued, put it in the address bar so a reload resumes.
URL_JS = """
(code) => {
  if (code && /^[A-Za-z0-9_-]{22,64}$/.test(code)) {
    const url = new URL(window.location.href);
    url.searchParams.set('rater', code);
    window.history.replaceState(null, '', url.toString());
  }
}
"""


def _progress_html(item: store.Item) -> str:
    if item.done:
        return f"<div class='study-progress'><progress value='1' max='1'></progress> All {item.total} images rated.</div>"
    if item.is_calibration:
        text = f"Calibration example {item.calibration_seen + 1} of {item.calibration_total} (not counted)"
        return f"<div class='study-progress'><progress value='0' max='1'></progress> {text}</div>"
    return (
        f"<div class='study-progress'><progress value='{item.rated}' max='{item.total}'></progress> "
        f"Image {item.rated + 1} of {item.total}</div>"
    )


def _stimulus_html(app_dir: Path, item: store.Item) -> tuple[str, bool]:
    """The image at its native size in a scrolling box, and whether it could be read."""
    if item.done:
        return (
            "<div class='study-done'><h3>Thank you!</h3><p>You have rated every image of this study. "
            "You can close this page.</p></div>",
            True,
        )
    try:
        data = stimulus_path(app_dir, item.study, item.file_name or "").read_bytes()
    except (OSError, store.StudyError):
        log.error("stimulus file missing: study %s presentation %s", item.study, item.presentation_id)
        return (
            "<div class='study-error'><b>This image could not be loaded</b> (its file is missing on the "
            "server). Nothing was recorded; please tell the study organiser.</div>",
            False,
        )
    width, height = int(item.width or 0), int(item.height or 0)
    encoded = base64.b64encode(data).decode("ascii")
    size = f"width='{width}' height='{height}' style='max-width:none;width:{width}px;height:{height}px;'"
    banner = ""
    if item.is_calibration:
        label = store.SCORE_LABELS[item.calibration_score or 1]
        what = "a badly upscaled image" if item.calibration_score == 1 else "the original photograph"
        banner = (
            f"<div class='study-calibration'><b>Example of a {item.calibration_score} ({label})</b>: "
            f"{what}. Look at it, then press Continue.</div>"
        )
    return (
        f"{banner}<div class='stimulus-box' style='overflow:auto;max-width:100%;max-height:85vh;'>"
        f"<img class='stimulus' alt='image to rate' src='data:image/png;base64,{encoded}' {size}></div>"
        f"<p id='study-size-note' style='display:none'>The window is smaller than the image "
        f"({width}x{height} pixels): scroll inside the box, or enlarge the window.</p>",
        True,
    )


@dataclass(frozen=True)
class Outcome:
    """The result of one protocol step, for the page and the API alike."""

    ok: bool
    # joined / resumed / ok / saved / already saved / refused / error; ok=False with "saved" or
    # "already saved": the rating is stored but the next item could not be loaded.
    status: str
    message: str
    code: str | None
    item: store.Item | None = None

    def as_api(self) -> dict:
        # Never the stimulus file name: it must not reach clients.
        out = {"ok": self.ok, "status": self.status, "message": self.message, "code": self.code}
        if self.item is not None:
            out.update(self.item.as_dict())
        return out


def _guarded(action: Callable[[], tuple[store.Item, str, str]], *, code: str | None,
             failure: str = UNAVAILABLE) -> Outcome:
    """Run a store call; turn every failure into a clear message, never a traceback.

    ``failure`` is what a database failure means for this step ("not saved" for a rating).
    """
    try:
        item, status, message = action()
        return Outcome(True, status, message, code, item)
    except store.StudyError as error:
        return Outcome(False, "refused", str(error), code)
    except store.NextItemError as error:
        log.exception("study database error after a rating was stored")
        return Outcome(False, error.status, SAVED_NEXT_FAILED, code)
    except SchemaVersionError as error:
        return Outcome(False, "error", str(error), code)
    except (SQLAlchemyError, OSError):
        log.exception("study database error")
        return Outcome(False, "error", failure, code)
    except Exception:  # a bug: the rater still gets the retry message (retries are idempotent)
        log.exception("unexpected error in the study tab")
        return Outcome(False, "error", failure, code)


def build_study_tab(*, db_url: str, app_dir: Path, study: str = "examples") -> None:
    """Build the tab's components and events inside the current ``gr.Blocks``."""
    app_dir = Path(app_dir)
    store.check_study_name(study)

    def engine():
        return get_engine(db_url)

    # ---------------------------------------------------------------- protocol (UI and API)

    def join(code: str | None, consent: bool) -> Outcome:
        code = (code or "").strip()
        if not code:
            try:
                code = store.new_rater(engine(), consent=consent is True)
            except store.StudyError as error:
                return Outcome(False, "refused", str(error), None)
            except SQLAlchemyError:
                log.exception("study database error")
                return Outcome(False, "error", UNAVAILABLE, None)
            welcome = (
                f"Your rater code is **{code}**. Keep this page's address (it now ends with "
                f"`?rater={code}`) to continue later, on any device."
            )
            return _guarded(lambda: (store.join_study(engine(), code, study), "joined", welcome), code=code)
        return _guarded(lambda: (store.join_study(engine(), code, study), "resumed", "Welcome back."), code=code)

    def next_(code: str) -> Outcome:
        return _guarded(lambda: (store.next_item(engine(), code, study), "ok", ""), code=code)

    def continue_(code: str, presentation_id: int) -> Outcome:
        return _guarded(
            lambda: (store.acknowledge_calibration(engine(), code, study, presentation_id), "ok", ""), code=code
        )

    def rate(code: str, presentation_id: int, score: int) -> Outcome:
        def action():
            result = store.submit_rating(engine(), code, study, presentation_id, score)
            message = "Saved." if result.status == "saved" else "Already saved: your rating counts once."
            return result.item, result.status, message

        return _guarded(action, code=code, failure=NOT_SAVED)

    # ---------------------------------------------------------------- page

    gr.Markdown(INSTRUCTIONS)
    with gr.Column(visible=True) as join_box:
        code_box = gr.Textbox(
            label="Your rater code (leave empty if you are new)", max_lines=1, elem_id="study-code",
            placeholder="e.g. from your link ...?rater=CODE",
        )
        consent_box = gr.Checkbox(label=CONSENT_LABEL, elem_id="study-consent")
        with gr.Row():
            start_button = gr.Button("Start or continue", variant="primary", elem_id="study-start")
    message_box = gr.Markdown(elem_id="study-message")
    with gr.Column(visible=False) as rate_box:
        progress_box = gr.HTML(elem_id="study-progress")
        stimulus_box = gr.HTML(elem_id="study-stimulus")
        continue_button = gr.Button("Continue", variant="primary", visible=False, elem_id="study-continue")
        with gr.Row(visible=False) as score_row:
            score_buttons = [
                gr.Button(f"{score} {label}", elem_id=f"study-score-{score}", min_width=90)
                for score, label in store.SCORE_LABELS.items()
            ]
        gr.HTML("<small>Keys: 1 to 5 rate the image, Enter continues.</small>", js_on_load=KEYS_JS)
    page_state = gr.State({"code": None, "presentation_id": None})

    outputs = [page_state, code_box, join_box, message_box, rate_box, progress_box, stimulus_box, continue_button, score_row]

    def render(outcome: Outcome, state: dict) -> tuple:
        """Show an outcome on the page; on refusal or error keep showing what was shown."""
        if not outcome.ok or outcome.item is None:
            note = outcome.message
            if state.get("code"):
                note += " (Your earlier ratings are safe.)"
            return (state, gr.update(), gr.update(), note) + (gr.update(),) * 5
        item = outcome.item
        stimulus, readable = _stimulus_html(app_dir, item)
        message = outcome.message
        return (
            {"code": outcome.code, "presentation_id": item.presentation_id},
            gr.update(value=outcome.code),
            gr.update(visible=False),
            message,
            gr.update(visible=True),
            _progress_html(item),
            stimulus,
            gr.update(visible=item.is_calibration and readable),
            gr.update(visible=not item.done and not item.is_calibration and readable),
        )

    def not_started(state: dict) -> tuple:
        return render(Outcome(False, "refused", "Please enter your code and press Start first.", None), state)

    def on_load(state: dict, request: gr.Request) -> tuple:
        code = (request.query_params.get("rater") or "").strip() if request is not None else ""
        if not code:
            return (state,) + (gr.update(),) * (len(outputs) - 1)
        return render(join(code, False), state)

    def on_start(code: str, consent: bool, state: dict) -> tuple:
        return render(join(code, consent), state)

    def on_continue(state: dict) -> tuple:
        if not state.get("code"):
            return not_started(state)
        return render(continue_(state["code"], state["presentation_id"]), state)

    def on_rate(score: int) -> Callable[[dict], tuple]:
        def handler(state: dict) -> tuple:
            if not state.get("code"):
                return not_started(state)
            return render(rate(state["code"], state["presentation_id"], score), state)

        return handler

    event_options = dict(concurrency_id=CONCURRENCY, concurrency_limit=4, api_visibility="private")
    root = gr.context.Context.root_block
    if root is None:
        raise RuntimeError("build_study_tab must be called inside a gr.Blocks")
    root.load(on_load, inputs=[page_state], outputs=outputs, **event_options)
    start_click = start_button.click(on_start, inputs=[code_box, consent_box, page_state], outputs=outputs, **event_options)
    start_click.then(None, inputs=[code_box], js=URL_JS)
    # Enter in the code box starts too, and must also put a new code in the address bar.
    code_submit = code_box.submit(on_start, inputs=[code_box, consent_box, page_state], outputs=outputs, **event_options)
    code_submit.then(None, inputs=[code_box], js=URL_JS)
    continue_button.click(on_continue, inputs=[page_state], outputs=outputs, **event_options)
    for score, button in zip(store.SCORE_LABELS, score_buttons):
        button.click(on_rate(score), inputs=[page_state], outputs=outputs, **event_options)

    # Named API endpoints: the same protocol for gradio_client (state stays in the database).
    def study_join(code: str = "", consent: bool = False) -> dict:
        """Join with a code (or "" and consent=True for a new code); returns the item to show."""
        return join(code, consent).as_api()

    def study_next(code: str) -> dict:
        """The item a rater should see now (marks it shown)."""
        return next_(code).as_api()

    def study_continue(code: str, presentation_id: int) -> dict:
        """Move on from a calibration example."""
        return continue_(code, presentation_id).as_api()

    def study_rate(code: str, presentation_id: int, score: int) -> dict:
        """Rate the current item 1-5; returns the ack and the next item."""
        return rate(code, presentation_id, score).as_api()

    for endpoint in (study_join, study_next, study_continue, study_rate):
        gr.api(endpoint, api_name=endpoint.__name__, concurrency_id=CONCURRENCY, concurrency_limit=4)
