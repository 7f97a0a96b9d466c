"""Access control of the running app: secret codes, own session only, blind stimuli, admin token,
no file served that should not be, no path traversal, limited uploads.

One ``python app.py`` for the module (admin token set, small pixel and upload limits), driven
over HTTP as a browser or a script would.
"""

from __future__ import annotations

import base64
import re
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

import app as app_module
from survey.study import db, export, prepare, store
from tools import loadtest

STUDY = "access"
TOKEN = "t0ken-" + "x" * 26
MAX_PIXELS = 120_000
MAX_UPLOAD_MB = 1


def photo(seed: int, size=(64, 48)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("access")
    app_dir = root / "app"
    db_url = f"sqlite:///{app_dir / 'study.sqlite'}"
    prepare.prepare_from_hr(db_url=db_url, app_dir=app_dir, study=STUDY,
                            hr_images={f"photo{i}": photo(i) for i in range(3)},
                            methods=["nearest", "bicubic", "hr"])
    app = loadtest.AppProcess(
        app_dir=app_dir, db_url=db_url, study=STUDY,
        extra_args=("--max-pixels", str(MAX_PIXELS), "--max-upload-mb", str(MAX_UPLOAD_MB)),
        env={"SRGAN_ADMIN_TOKEN": TOKEN},
    )
    app.start()
    yield app
    app.stop()
    db.dispose_engine(db_url)


@pytest.fixture(scope="module")
def client(server):
    return Client(server.url, verbose=False, download_files=False)


def _count_ratings(server) -> int:
    return sum(map(len, loadtest.stored_ratings(server.db_url, STUDY).values()))


def _to_first_rating(client: Client) -> dict:
    state = client.predict("", True, api_name="/study_join")
    while state["kind"] == "calibration":
        state = client.predict(state["code"], state["presentation_id"], api_name="/study_continue")
    return state


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.e2e
def test_rater_codes_are_unguessable(server):
    engine = db.get_engine(server.db_url)
    codes = [store.new_rater(engine, consent=True) for _ in range(200)]
    assert len(set(codes)) == len(codes)
    for code in codes:
        assert store.RATER_CODE.fullmatch(code)
        assert len(base64.urlsafe_b64decode(code + "=" * (-len(code) % 4))) * 8 >= 128
    # Shorter codes (fewer than 128 bits) are refused before any query.
    with pytest.raises(store.StudyError, match="22 or more"):
        store.check_rater_code("A" * 21)
    # Every character position varies across codes: nothing fixed or sequential.
    assert all(len({code[i] for code in codes}) > 20 for i in range(22))


@pytest.mark.e2e
def test_a_rater_reads_and_writes_only_their_own_session(server, client):
    alice = _to_first_rating(client)
    bob = _to_first_rating(client)
    before = _count_ratings(server)
    stolen = client.predict(bob["code"], alice["presentation_id"], 3, api_name="/study_rate")
    assert not stolen["ok"] and "not part of your session" in stolen["message"]
    assert "presentation_id" not in stolen and "rater" not in stolen  # nothing of Alice's comes back
    engine = db.get_engine(server.db_url)
    alice_calibration = store.session_plan(engine, alice["code"], STUDY)[0]["presentation_id"]
    foreign = client.predict(bob["code"], alice_calibration, api_name="/study_continue")
    assert not foreign["ok"] and "not one of your calibration" in foreign["message"]
    assert _count_ratings(server) == before
    # Each code sees only its own sequence and labels.
    assert client.predict(bob["code"], api_name="/study_next")["presentation_id"] == bob["presentation_id"]
    assert client.predict(alice["code"], api_name="/study_next")["rater"] == alice["rater"] != bob["rater"]
    mine = client.predict(alice["code"], alice["presentation_id"], 3, api_name="/study_rate")
    assert mine["status"] == "saved" and _count_ratings(server) == before + 1


@pytest.mark.e2e
def test_stimulus_files_and_answers_do_not_reveal_the_method(server, client):
    folder = prepare.study_dir(server.app_dir, STUDY)
    files = sorted(folder.iterdir())
    assert len(files) == 3 * 3 + 2 * 2  # and two calibration images as nearest and original
    engine = db.get_engine(server.db_url)
    rated = {store.stimulus_file_name(engine, STUDY, image, method)
             for image in store.image_names(engine, STUDY, calibration=False) for method in ("nearest", "bicubic", "hr")}
    sizes = set()
    for path in files:
        assert re.fullmatch(r"[0-9a-f]{32}\.png", path.name), path.name
        with Image.open(path) as image:
            if path.name in rated:
                sizes.add(image.size)
            text = " ".join(f"{k}={v}" for k, v in image.info.items()).lower()
        assert not any(method in text for method in ("nearest", "bicubic", "hr", "srgan"))
    assert len(rated) == 9 and len(sizes) == 1  # every method has the same size: size says nothing either
    state = _to_first_rating(client)
    assert "method" not in state and "file_name" not in state
    assert not any(name.removesuffix(".png") in str(state) for name in (p.name for p in files))


@pytest.mark.e2e
def test_results_need_the_admin_token(server, client):
    for wrong in ("", "t0ken", TOKEN + "x", TOKEN.upper()):
        message, *rest = client.predict(wrong, STUDY, True, api_name="/results_report")
        assert "Wrong admin token" in message
        assert not rest[1] and rest[2] is None  # no figures, no CSV
    # A rater finishes the study; the admin's report comes back with its figures and CSV,
    # served from Gradio's cache (the report folder itself is never served).
    state = _to_first_rating(client)
    while state["kind"] != "done":
        state = client.predict(state["code"], state["presentation_id"], 1 + state["rated"] % 5,
                               api_name="/study_rate")
    message, _, figures, ratings_csv, markdown = client.predict(TOKEN, STUDY, False, api_name="/results_report")
    assert "Report for study" in message, message
    assert figures and ratings_csv and "MOS" in markdown
    assert "gradio_api/file=" in ratings_csv["url"] and "srgan-results-" not in ratings_csv["url"]
    with urllib.request.urlopen(ratings_csv["url"], timeout=10) as response:
        text = response.read().decode()
    assert text.startswith("study,rater,") and state["code"] not in text  # labels, never codes


def test_admin_part_refuses_weak_tokens_and_starts_only_with_one(monkeypatch, capsys):
    monkeypatch.delenv("SRGAN_ADMIN_TOKEN", raising=False)
    assert app_module.parse_args([]).admin_token is None  # results tab disabled
    with pytest.raises(SystemExit):
        app_module.parse_args(["--admin-token", "short"])
    assert "at least 16" in capsys.readouterr().err
    local = app_module.parse_args(["--local-demo"])
    assert local.admin_token and len(local.admin_token) >= 16
    with pytest.raises(SystemExit):  # local demo mode is for this machine only
        app_module.parse_args(["--local-demo", "--host", "0.0.0.0"])
    assert "loopback" in capsys.readouterr().err


def test_app_refuses_to_serve_a_study_that_was_not_prepared(tmp_path):
    with pytest.raises(SystemExit, match="no study 'nope'.*survey.prepare"):
        app_module.main(["--study", "nope", "--app-dir", str(tmp_path), "--port", "1"])
    db.dispose_engine(f"sqlite:///{tmp_path / 'study.sqlite'}")


@pytest.mark.e2e
def test_private_files_are_not_served(server):
    base = server.url + "gradio_api/file="
    private = [
        server.app_dir / "study.sqlite",
        server.app_dir / "study.sqlite-wal",
        next(prepare.study_dir(server.app_dir, STUDY).iterdir()),  # a stimulus: its name is its secret
        server.app_dir.parent / f"{server.app_dir.name}.log",
    ]
    for path in private:
        assert path.exists()
        assert _http_status(base + urllib.parse.quote(str(path))) in (403, 404), path
    for sneaky in ("../../../../etc/passwd", str(server.app_dir / "examples" / ".." / "study.sqlite"),
                   "/etc/passwd", "%2e%2e/%2e%2e/etc/passwd"):
        assert _http_status(base + sneaky) in (403, 404), sneaky


@pytest.mark.e2e
def test_no_path_traversal_through_any_id_or_name(server, client, tmp_path):
    before = _count_ratings(server)
    for code in ("../../etc/passwd", "..%2F..%2Fstudy.sqlite", "A" * 22 + "/../x"):
        answer = client.predict(code, api_name="/study_next")
        assert not answer["ok"] and "rater code is not valid" in answer["message"]
    state = _to_first_rating(client)
    for pid in ("../1", "1/../2", "..", "%2e%2e"):
        answer = client.predict(state["code"], pid, 3, api_name="/study_rate")
        assert not answer["ok"] and "valid image" in answer["message"]
    assert _count_ratings(server) == before
    for name in ("../study.sqlite", "..", "a/../../b.png", "/etc/passwd", "x.png/..", ".png"):
        with pytest.raises(store.StudyError):
            prepare.stimulus_path(server.app_dir, STUDY, name)
    for study in ("../x", "..", "a/b", "/abs", "x/../../y"):
        with pytest.raises(store.StudyError, match="Invalid study name"):
            prepare.study_dir(server.app_dir, study)
        with pytest.raises(store.StudyError):
            export.ratings_frame(server.db_url, study)
    assert prepare.main(["--name", "../evil", "--hr-dir", str(tmp_path), "--db", server.db_url,
                         "--app-dir", str(tmp_path)]) == 2
    assert not (tmp_path.parent / "evil").exists()


@pytest.mark.e2e
def test_demo_uploads_are_size_and_pixel_limited(server, client, tmp_path):
    big = tmp_path / "big.png"
    photo(1, size=(400, 400)).save(big)  # 160,000 pixels > the server's 120,000
    with pytest.raises(Exception, match="pixels"):
        client.predict(handle_file(str(big)), "Auto", 1.0, api_name="/compare")
    huge = tmp_path / "huge.png"
    huge.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(int(1.5 * 1024 * 1024)))  # over the 1 MB upload limit
    with pytest.raises(Exception, match="(?i)size|large|exceed|413"):
        client.predict(handle_file(str(huge)), "Auto", 1.0, api_name="/compare")
    small = tmp_path / "small.png"
    photo(2, size=(40, 32)).save(small)
    result = client.predict(handle_file(str(small)), "Auto", 1.0, api_name="/compare")
    assert result  # the server still serves a normal request
