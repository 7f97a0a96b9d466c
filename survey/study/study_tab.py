"""The "MOS study" tab: raters join with a code, calibrate, and rate one image at a time.

All state lives in the database, keyed by the rater's code: the page only remembers which
code and which image it shows, so the same code resumes anywhere (``?rater=CODE``). The same
protocol is exposed as named API endpoints (``study_join``, ``study_next``, ``study_continue``,
``study_rate``) for ``gradio_client``.

Call ``build_study_tab`` inside ``with gr.Tab("MOS study"):`` within a ``gr.Blocks``.

Against ratings stuffing (scripts that join as many raters and rate through these
endpoints): an optional invitation key (``join_key``: new raters need it, from the link
``?key=KEY``; existing raters resume without it), at most ``joins_per_hour`` new raters per
client address, and no rating sooner than ``min_rating_ms`` after its image was shown
(refused, nothing stored). The client address is the connecting one; behind a reverse proxy
it is the address the proxy forwards (uvicorn trusts X-Forwarded-For from the addresses in
FORWARDED_ALLOW_IPS, by default 127.0.0.1), otherwise every rater shares the proxy's. Screening
(survey.analysis.screening) catches the scripts that get through.
"""

from __future__ import annotations

import argparse
import base64
import hmac
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import gradio as gr
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from survey.ratings import SCORE_LABELS
from survey.study import store
from survey.study.admission import client_address
from survey.study.db import Rater, RatingSession, SchemaVersionError, Study, get_engine
from survey.study.prepare import stimulus_path

log = logging.getLogger(__name__)

NOT_SAVED = "**Not saved**: the study database did not answer. Please press the button again in a moment."
SAVED_NEXT_FAILED = (
    "**Saved**: your rating is stored, but the next image could not be loaded (the study database did "
    "not answer). Please reload this page in a moment to continue."
)
UNAVAILABLE = "**The study database did not answer.** Nothing was lost; please try again in a moment."
CONCURRENCY = "survey-study"

# A lab of 30 seats behind one NAT address can start together; a script cannot make thousands.
JOINS_PER_HOUR = 30
# Less than the time to see an image and press a key (the page's own round trip included):
# also stops a double key press from rating the next image unseen.
MIN_RATING_MS = 300
MIN_JOIN_KEY = 8  # characters
MAX_TRACKED_CLIENTS = 10_000  # join counts kept in memory; the least recent are forgotten

NEED_INVITATION = ("This study is by invitation: please open it with the invitation link you were sent "
                   "(if you already have a rater code, enter it to continue).")
BAD_INVITATION = ("This invitation link is not valid: please open the exact link you were sent, or ask the "
                  "study organiser for a new one.")
TOO_MANY_JOINS = ("Too many new raters have joined from your network in the last hour. If you already have a "
                  "rater code, enter it (or open your personal link) to continue; otherwise please try again later.")
TOO_FAST = "**Not saved**: please look at the image before rating it, then press your score again."
NEED_CONSENT = "Please read the instructions and tick the consent box first."
BAD_CODE_TYPE = "A rater code is text: copy it exactly from your link, or leave it empty to get a new one."
BAD_CONSENT_TYPE = "Consent is a yes or no: tick the consent box (in the API, consent=True)."
BAD_KEY_TYPE = "The invitation key is text: please open the exact invitation link you were sent."

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
    url.searchParams.delete('key');  // the personal link resumes without it: do not pass it on
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
        label = SCORE_LABELS[item.calibration_score or 1]
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


class JoinLimiter:
    """At most ``limit`` new raters per client address in any ``window_s``; thread-safe.

    Memory is bounded: at most ``limit`` times per client and ``max_clients`` clients (the one
    that joined least recently is forgotten first). ``limit`` None or 0: no limit.
    """

    def __init__(self, limit: int | None, *, window_s: float = 3600.0, max_clients: int = MAX_TRACKED_CLIENTS,
                 clock: Callable[[], float] = time.monotonic):
        self.limit, self.window_s, self.max_clients, self.clock = limit, window_s, max_clients, clock
        self._joins: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()
        self._last_warning = -float("inf")
        self._refusals = 0  # since the last warning: a flood of refusals must not flood the log

    def acquire(self, client: str) -> float | None:
        """Count one join for ``client`` and return its time, or None when the client is over the limit."""
        now = self.clock()
        if not self.limit:
            return now
        with self._lock:
            times = self._joins.pop(client, deque())
            while times and times[0] <= now - self.window_s:
                times.popleft()
            if len(times) >= self.limit:
                self._joins[client] = times
                self._refusals += 1
                if now - self._last_warning >= 60:
                    log.warning("new rater refused: %s joined %d times in the last hour (limit %d); "
                                "%d refusal(s) since the last warning", client, len(times), self.limit,
                                self._refusals)
                    self._last_warning, self._refusals = now, 0
                return None
            times.append(now)
            self._joins[client] = times  # now the most recent
            while len(self._joins) > self.max_clients:
                self._joins.popitem(last=False)
            return now

    def release(self, client: str, stamp: float) -> None:
        """Give back a join that created no rater (a database failure, say)."""
        with self._lock:
            times = self._joins.get(client)
            if times is not None and stamp in times:
                times.remove(stamp)

    def __len__(self) -> int:
        return len(self._joins)


def _as_text(value: object) -> str | None:
    """A text input stripped, "" for nothing, None for a value of another type (refused)."""
    if value is None:
        return ""
    return value.strip() if isinstance(value, str) else None


def check_join_key(join_key: str | None) -> str | None:
    """The study's invitation key, None for an open study; a short or blank key is refused."""
    if join_key is None or join_key == "":
        return None
    if not isinstance(join_key, str) or join_key != join_key.strip() or len(join_key) < MIN_JOIN_KEY:
        raise ValueError(f"The join key must be at least {MIN_JOIN_KEY} characters without surrounding spaces "
                         "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(16))').")
    return join_key


def add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    """The defences against ratings stuffing as command-line options (python -m survey, app.py)."""
    env = os.environ
    parser.add_argument("--join-key", default=env.get("SURVEY_JOIN_KEY") or None,
                        help="invitation key new raters must bring in their link, ?key=KEY (SURVEY_JOIN_KEY; "
                             "default: none, an open study); raters who joined resume without it")
    parser.add_argument("--joins-per-hour", type=int, default=env.get("SURVEY_JOINS_PER_HOUR", JOINS_PER_HOUR),
                        help=f"new raters per client address per hour (SURVEY_JOINS_PER_HOUR; default "
                             f"{JOINS_PER_HOUR}, 0: no limit)")
    parser.add_argument("--min-rating-ms", type=int, default=env.get("SURVEY_MIN_RATING_MS", MIN_RATING_MS),
                        help=f"refuse a rating sooner than this after its image was shown (SURVEY_MIN_RATING_MS; "
                             f"default {MIN_RATING_MS}, 0: no floor)")


def limit_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict:
    """build_study_tab's keyword arguments from add_limit_arguments' options; a bad one is a usage error."""
    try:
        join_key = check_join_key(args.join_key)
    except ValueError as error:
        parser.error(f"--join-key: {error}")
    if args.joins_per_hour < 0 or args.min_rating_ms < 0:
        parser.error("--joins-per-hour and --min-rating-ms must be 0 (off) or more")
    return {"join_key": join_key, "joins_per_hour": args.joins_per_hour, "min_rating_ms": args.min_rating_ms}


def _has_session(engine, code: str, study: str) -> bool:
    """Whether this rater code has already joined this study (so resumes without the key)."""
    with Session(engine) as session:
        return session.scalar(
            select(RatingSession.id)
            .join(Rater, RatingSession.rater_id == Rater.id)
            .join(Study, RatingSession.study_id == Study.id)
            .where(Rater.code == code, Study.name == study)
        ) is not None


def build_study_tab(*, db_url: str, app_dir: Path, study: str = "examples", join_key: str | None = None,
                    joins_per_hour: int | None = JOINS_PER_HOUR, min_rating_ms: int | None = MIN_RATING_MS,
                    idle: timedelta | None = None) -> None:
    """Build the tab's components and events inside the current ``gr.Blocks``.

    ``join_key``: new raters must bring it (invitation link ``?key=KEY``); None: open study.
    ``joins_per_hour``: new raters per client address per hour (None or 0: no limit).
    ``min_rating_ms``: ratings sooner than this after their image was shown are refused
    (None or 0: no floor). Load tests of capacity turn the last two off.
    ``idle``: how long a session sits idle before a new rater takes over its unrated images
    (None: SURVEY_ABANDON_MINUTES, read once here; see survey.store).
    """
    app_dir = Path(app_dir)
    store.check_study_name(study)
    join_key = check_join_key(join_key)
    if joins_per_hour is not None and joins_per_hour < 0 or min_rating_ms is not None and min_rating_ms < 0:
        raise ValueError("joins_per_hour and min_rating_ms must be 0 (no limit) or more.")
    joins = JoinLimiter(joins_per_hour)
    idle = store.idle_limit() if idle is None else idle  # once: a bad value warns once, not at every join

    def engine():
        return get_engine(db_url)

    # ---------------------------------------------------------------- protocol (UI and API)

    def join(code: object, consent: object, key: object = None, client: str = "unknown") -> Outcome:
        code = _as_text(code)
        if code is None:
            return Outcome(False, "refused", BAD_CODE_TYPE, None)
        if consent is not None and not isinstance(consent, bool):
            return Outcome(False, "refused", BAD_CONSENT_TYPE, None)
        if code:
            if join_key is not None:
                try:
                    joined = _has_session(engine(), store.check_rater_code(code), study)
                except store.StudyError as error:
                    return Outcome(False, "refused", str(error), None)
                except SQLAlchemyError:
                    log.exception("study database error")
                    return Outcome(False, "error", UNAVAILABLE, None)
                refusal = None if joined else _key_refusal(key)
                if refusal:
                    return Outcome(False, "refused", refusal, None)
            return _guarded(lambda: (store.join_study(engine(), code, study, idle=idle), "resumed", "Welcome back."),
                            code=code)
        refusal = _key_refusal(key)
        if refusal:
            return Outcome(False, "refused", refusal, None)
        if consent is not True:
            return Outcome(False, "refused", NEED_CONSENT, None)
        stamp = joins.acquire(client)
        if stamp is None:
            return Outcome(False, "refused", TOO_MANY_JOINS, None)
        try:
            code = store.new_rater(engine(), consent=True)
        except store.StudyError as error:
            joins.release(client, stamp)
            return Outcome(False, "refused", str(error), None)
        except SQLAlchemyError:
            joins.release(client, stamp)
            log.exception("study database error")
            return Outcome(False, "error", UNAVAILABLE, None)
        welcome = (
            f"Your rater code is **{code}**. Keep this page's address (it now ends with "
            f"`?rater={code}`) to continue later, on any device."
        )
        return _guarded(lambda: (store.join_study(engine(), code, study, idle=idle), "joined", welcome), code=code)

    def _key_refusal(key: object) -> str | None:
        """None when the study is open or the key is right; else what the rater should do."""
        if join_key is None:
            return None
        given = _as_text(key)
        if given is None:
            return BAD_KEY_TYPE
        if not given:
            return NEED_INVITATION
        if not hmac.compare_digest(given.encode("utf-8"), join_key.encode("utf-8")):
            return BAD_INVITATION
        return None

    def next_(code: object) -> Outcome:
        if _as_text(code) is None:
            return Outcome(False, "refused", BAD_CODE_TYPE, None)
        return _guarded(lambda: (store.next_item(engine(), code, study), "ok", ""), code=code)

    def continue_(code: object, presentation_id: object) -> Outcome:
        if _as_text(code) is None:
            return Outcome(False, "refused", BAD_CODE_TYPE, None)
        return _guarded(
            lambda: (store.acknowledge_calibration(engine(), code, study, presentation_id), "ok", ""), code=code
        )

    def rate(code: object, presentation_id: object, score: object) -> Outcome:
        if _as_text(code) is None:
            return Outcome(False, "refused", BAD_CODE_TYPE, None)

        def action():
            result = store.submit_rating(engine(), code, study, presentation_id, score, min_response_ms=min_rating_ms)
            if result.status == store.TOO_FAST:
                raise store.StudyError(TOO_FAST)  # nothing stored; the rater presses again
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
                for score, label in SCORE_LABELS.items()
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
        params = request.query_params if request is not None else {}
        code = (params.get("rater") or "").strip()
        # The invitation key of the link (?key=KEY) waits in the page's state for Start.
        state = {**state, "key": params.get("key") or ""}
        if not code:
            return (state,) + (gr.update(),) * (len(outputs) - 1)
        return render(join(code, False, state["key"], client_address(request)), state)

    def on_start(code: str, consent: bool, state: dict, request: gr.Request) -> tuple:
        return render(join(code, consent, state.get("key"), client_address(request)), state)

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
    for score, button in zip(SCORE_LABELS, score_buttons):
        button.click(on_rate(score), inputs=[page_state], outputs=outputs, **event_options)

    # Named API endpoints: the same protocol for gradio_client (state stays in the database).
    def study_join(code: str = "", consent: bool = False, key: str = "", request: gr.Request = None) -> dict:
        """Join with a code (or "" and consent=True for a new code; ``key``: the study's
        invitation key, when it has one); returns the item to show."""
        return join(code, consent, key, client_address(request)).as_api()

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
