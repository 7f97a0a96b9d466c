"""Hostile inputs through the real running app's API, the demo and the study alike.

One ``python app.py`` for the module (small pixel and upload limits, admin token set). Each
input must get a clear message (checked), leave the server up (a normal request succeeds right
after) and leave the ratings table exactly as it was. Inputs that are odd but valid images
(16-bit, CMYK, palette, alpha, EXIF-rotated) must be accepted instead.
"""

from __future__ import annotations

import io
import re
import sqlite3
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from survey.study import db, store
from tools import loadtest

STUDY = "hostile"
TOKEN = "hostile-admin-token-0123456789"
MAX_PIXELS = 200_000
MAX_UPLOAD_MB = 1


@dataclass
class World:
    server: loadtest.AppProcess
    client: Client
    files: Path
    code: str  # a rater standing at a rating item, with one rating already given
    rated_pid: int  # the presentation rated 3 already
    current_pid: int
    future_pid: int
    calibration_pid: int


def _picture(size=(96, 80), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    base = np.stack([np.sin(x / 7 + c) * np.cos(y / 5) for c in range(3)], -1) * 100 + 128
    return np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)


def _png_header_bomb() -> bytes:
    """A valid PNG header claiming 40000 x 40000 pixels, a few bytes long."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")


def _write_files(folder: Path) -> None:
    rgb = Image.fromarray(_picture())
    rgb.save(folder / "ok.png")
    buffer = io.BytesIO()
    rgb.save(buffer, format="PNG")
    (folder / "truncated.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("this is not an image\n" * 20)
    (folder / "page.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>")
    Image.new("RGB", (1, 1), "red").save(folder / "one.png")
    Image.fromarray((_picture().astype(np.uint16)[..., 0] * 257)).save(folder / "sixteen.png")
    rgb.convert("CMYK").save(folder / "cmyk.jpg", quality=90)
    rgb.convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.png")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(folder / "alpha.png")
    frames = [Image.fromarray(_picture(seed=s)).convert("P") for s in range(3)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when displayed
    Image.fromarray(_picture(size=(96, 64))).save(folder / "rotated.jpg", exif=exif.tobytes())
    Image.fromarray(_picture(size=(600, 400))).save(folder / "over_limit.png")  # 240,000 > 200,000 pixels
    (folder / "bomb.png").write_bytes(_png_header_bomb())
    (folder / "oversized.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(int(1.2 * 1024 * 1024)))
    rgb.save(folder / "jpeg_named.png", format="JPEG")  # content, not name, decides


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("hostile")
    app_dir = root / "app"
    db_url = f"sqlite:///{app_dir / 'study.sqlite'}"
    loadtest.prepare_load_study(db_url=db_url, app_dir=app_dir, study=STUDY, stimuli=8)
    server = loadtest.AppProcess(
        app_dir=app_dir, db_url=db_url, study=STUDY,
        extra_args=("--max-pixels", str(MAX_PIXELS), "--max-upload-mb", str(MAX_UPLOAD_MB)),
        env={"SRGAN_ADMIN_TOKEN": TOKEN},
    )
    server.start()
    files = root / "files"
    files.mkdir()
    _write_files(files)
    client = Client(server.url, verbose=False, download_files=False)
    state = client.predict("", True, api_name="/study_join")
    code = state["code"]
    calibration_pid = state["presentation_id"]
    while state["kind"] == "calibration":
        state = client.predict(code, state["presentation_id"], api_name="/study_continue")
    rated_pid = state["presentation_id"]
    state = client.predict(code, rated_pid, 3, api_name="/study_rate")
    assert state["status"] == "saved"
    plan = store.session_plan(db.get_engine(db_url), code, STUDY)
    yield World(server, client, files, code, rated_pid, state["presentation_id"], plan[-1]["presentation_id"],
                calibration_pid)
    server.stop()
    db.dispose_engine(db_url)


def _ratings_snapshot(world: World) -> list[tuple]:
    with sqlite3.connect(world.server.db_url.removeprefix("sqlite:///")) as connection:
        return connection.execute("SELECT id, presentation_id, score, shown_at, answered_at FROM ratings "
                                  "ORDER BY id").fetchall()


def _compare(name: str, mode: str = "Auto", alpha: float = 1.0) -> Callable[[World], str]:
    def send(world: World) -> str:
        source = handle_file(str(world.files / name)) if name else None
        result = world.client.predict(source, mode, alpha, api_name="/compare")
        return f"accepted: {result[1]}"  # the status line
    return send


def _rate(code: str | None, pid: object, score: object) -> Callable[[World], str]:
    def send(world: World) -> str:
        answer = world.client.predict(world.code if code is None else code,
                                      _pid(world, pid), score, api_name="/study_rate")
        return ("accepted: " if answer["ok"] else "") + answer["message"]
    return send


def _pid(world: World, pid: object) -> object:
    return getattr(world, pid) if isinstance(pid, str) and pid.endswith("_pid") else pid


def _join(code: str, consent: bool = False) -> Callable[[World], str]:
    def send(world: World) -> str:
        answer = world.client.predict(code, consent, api_name="/study_join")
        return ("accepted: " if answer["ok"] else "") + answer["message"]
    return send


def _continue(pid: object) -> Callable[[World], str]:
    def send(world: World) -> str:
        answer = world.client.predict(world.code, _pid(world, pid), api_name="/study_continue")
        return ("accepted: " if answer["ok"] else "") + answer["message"]
    return send


def _report(token: str, study: str) -> Callable[[World], str]:
    def send(world: World) -> str:
        return world.client.predict(token, study, True, api_name="/results_report")[0]
    return send


# (id, what to send, the message expected: a regex; "accepted: ..." for inputs that must work)
CASES = [
    # --- the demo: malformed images of every kind
    ("not-an-image", _compare("text.png"), r"not an image"),
    ("svg-with-script", _compare("page.svg"), r"not an image|can't read"),
    ("truncated-png", _compare("truncated.png"), r"truncated|corrupt"),
    ("zero-bytes", _compare("empty.png"), r"empty \(0 bytes\)"),
    ("one-pixel", _compare("one.png"), r"1x1.*at least"),
    ("animated-gif", _compare("animated.gif"), r"animated images are not supported"),
    ("over-pixel-limit", _compare("over_limit.png"), r"pixels|megapixels"),
    ("png-header-bomb", _compare("bomb.png"), r"too large|pixels|megapixels"),
    ("oversized-upload", _compare("oversized.png"), r"(?i)exceed|too large|size"),
    ("no-image", _compare(""), r"Upload an image"),
    ("unknown-mode", _compare("ok.png", mode="Treat as SVG"), r"(?i)mode|choices|not in the list"),
    ("alpha-out-of-range", _compare("ok.png", alpha=7.5), r"(?i)α must be (between|from 0 to 1)|maximum|range"),
    ("sixteen-bit", _compare("sixteen.png"), r"^accepted"),
    ("cmyk-jpeg", _compare("cmyk.jpg"), r"^accepted"),
    ("palette", _compare("palette.png"), r"^accepted"),
    ("alpha-channel", _compare("alpha.png"), r"^accepted"),
    ("exif-rotated", _compare("rotated.jpg"), r"^accepted"),
    ("jpeg-named-png", _compare("jpeg_named.png"), r"^accepted"),
    # --- the study: scores
    ("score-0", _rate(None, "current_pid", 0), r"from 1 to 5, not 0"),
    ("score-6", _rate(None, "current_pid", 6), r"from 1 to 5, not 6"),
    ("score-negative", _rate(None, "current_pid", -1), r"from 1 to 5"),
    ("score-sql", _rate(None, "current_pid", "3; DROP TABLE ratings"), r"whole number from 1 to 5"),
    ("score-none", _rate(None, "current_pid", None), r"whole number from 1 to 5"),
    ("score-3.5", _rate(None, "current_pid", 3.5), r"whole number from 1 to 5"),
    ("score-empty", _rate(None, "current_pid", ""), r"whole number from 1 to 5"),
    ("score-word", _rate(None, "current_pid", "five"), r"whole number from 1 to 5"),
    # --- rater codes
    ("code-unicode", _join("ラター" * 8), r"rater code is not valid"),
    ("code-very-long", _join("A" * 10_000), r"rater code is not valid"),
    ("code-sql", _join("' OR '1'='1' --'''''''''''"), r"rater code is not valid"),
    ("code-nul-byte", _join("A" * 22 + "\x00"), r"rater code is not valid"),
    ("code-traversal", _join("../../../../etc/passwd-xxxx"), r"rater code is not valid"),
    ("code-unknown", _join("Z" * 24), r"unknown"),
    ("new-code-without-consent", _join("", consent=False), r"consent"),
    # --- replayed, out-of-order and foreign submissions
    ("replay-changed-score", _rate(None, "rated_pid", 5), r"already rated 3.*cannot be changed"),
    ("replay-same-score", _rate(None, "rated_pid", 3), r"^accepted: Already saved"),
    ("out-of-order-future", _rate(None, "future_pid", 4), r"not the one to rate now"),
    ("rate-calibration", _rate(None, "calibration_pid", 1), r"calibration example"),
    ("continue-a-rating", _continue("current_pid"), r"not one of your calibration"),
    ("presentation-unknown", _rate(None, 987654, 3), r"not part of your session"),
    ("presentation-negative", _rate(None, -5, 3), r"valid image"),
    ("presentation-text", _rate(None, "1 OR 1=1", 3), r"valid image"),
    ("presentation-huge", _rate(None, 10**30, 3), r"valid image"),
    ("presentation-over-int32", _rate(None, 2**31, 3), r"valid image"),
    ("rate-with-unknown-code", _rate("Q" * 30, "current_pid", 3), r"unknown"),
    # --- wrong study ids (admin report, with and without the token)
    ("report-unknown-study", _report(TOKEN, "no-such-study"), r"(?i)no ratings|cannot make|no study"),
    ("report-traversal-study", _report(TOKEN, "../../etc"), r"(?i)invalid study name|cannot make"),
    ("report-wrong-token", _report("guess", STUDY), r"Wrong admin token"),
]


def test_the_table_is_large_enough():
    assert len(CASES) >= 30 and len({case[0] for case in CASES}) == len(CASES)


@pytest.mark.e2e
@pytest.mark.parametrize("send, expected", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_hostile_input_gets_a_clear_message_and_changes_nothing(world, send, expected):
    before = _ratings_snapshot(world)
    try:
        message = send(world)
    except Exception as error:  # gradio_client raises the app's gr.Error (or the server's refusal) as an error
        message = str(error)
    assert re.search(expected, message), f"unexpected message: {message!r}"
    assert "Traceback" not in message and "File \"" not in message
    # The server is still up and serves a normal request; the ratings table is untouched.
    state = world.client.predict(world.code, api_name="/study_next")
    assert state["ok"] and state["presentation_id"] == world.current_pid
    assert _ratings_snapshot(world) == before
