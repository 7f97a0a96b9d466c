"""End to end: a real Gradio server with the study tab, driven by headless Chromium and by
gradio_client through the named API endpoints."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import CHROMIUM_ARGS, ROOT, free_port
from srgan.models import SRResNet
from srgan.weights import save_weights
from survey.study import db, export, prepare, store
from survey.study.study_tab import _stimulus_html

pytestmark = pytest.mark.e2e  # a real server, and Chromium

STUDY = "e2e"


def small_photos() -> dict[str, Image.Image]:
    y, x = np.mgrid[0:48, 0:64]
    photos = {}
    for i in range(3):
        rgb = np.stack([np.sin(x / (3 + i) + c) * np.cos(y / (4 + c)) for c in range(3)], -1)
        photos[f"photo{i}"] = Image.fromarray((127.5 + 127 * rgb).astype(np.uint8))
    return photos


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A small Blocks with the study tab on 127.0.0.1 (3 images x nearest/bicubic/hr)."""
    import gradio as gr

    from survey.study.study_tab import build_study_tab

    root = tmp_path_factory.mktemp("study")
    app_dir = root / "var"
    db_url = f"sqlite:///{root / 'study.sqlite'}"
    prepare.prepare_from_hr(db_url=db_url, app_dir=app_dir, study=STUDY, hr_images=small_photos(),
                            methods=["nearest", "bicubic", "hr"], repeats=1, calibration_images=1)
    with gr.Blocks() as demo:
        with gr.Tab("MOS study"):
            build_study_tab(db_url=db_url, app_dir=app_dir, study=STUDY, min_rating_ms=0)  # scripted, fast
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield {"url": f"http://127.0.0.1:{port}/", "db_url": db_url, "app_dir": app_dir}
    finally:
        demo.close()
        db.dispose_engine(db_url)


def wait_progress(page, text: str) -> None:
    from playwright.sync_api import expect

    expect(page.locator("#study-progress")).to_contain_text(text, timeout=20_000)


def test_rater_calibrates_rates_by_click_and_key_and_resumes(server, chromium_path, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    engine = db.get_engine(server["db_url"])
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            page.goto(server["url"])
            page.locator("#study-start").click()  # no consent yet: refused clearly
            expect(page.locator("#study-message")).to_contain_text("consent", timeout=20_000)
            page.locator("#study-consent input").check()
            page.locator("#study-start").click()
            # Calibration: an example of a 1 (nearest), then of a 5 (original); Continue / Enter.
            stimulus = page.locator("#study-stimulus img.stimulus")
            wait_progress(page, "Calibration example 1 of 2")
            expect(page.locator("#study-stimulus")).to_contain_text("Example of a 1 (Bad)")
            expect(page.locator("#study-score-3")).to_be_hidden()
            examples = [stimulus.get_attribute("src")]
            page.locator("#study-continue").click()
            wait_progress(page, "Calibration example 2 of 2")
            expect(page.locator("#study-stimulus")).to_contain_text("Example of a 5 (Excellent)")
            examples.append(stimulus.get_attribute("src"))
            page.keyboard.press("Enter")
            wait_progress(page, "Image 1 of 10")
            # The examples are separate photographs: neither is ever an image to rate.
            rated_images = [stimulus.get_attribute("src")]
            code = re.search(r"rater=([A-Za-z0-9_-]+)", page.url).group(1)
            # Native size: the 64x48 HR -> 16x12 LR -> 64x48 stimuli, not stretched.
            box = page.locator("#study-stimulus img.stimulus").bounding_box()
            assert (round(box["width"]), round(box["height"])) == (64, 48)
            given = []
            for n, score in enumerate([2, 5, 1], start=1):  # by clicking
                page.locator(f"#study-score-{score}").click()
                given.append(score)
                wait_progress(page, f"Image {n + 1} of 10")
                rated_images.append(stimulus.get_attribute("src"))
            for n, score in enumerate([4, 3], start=4):  # by keys
                page.keyboard.press(str(score))
                given.append(score)
                wait_progress(page, f"Image {n + 1} of 10")
                rated_images.append(stimulus.get_attribute("src"))
            assert len(set(examples)) == 2 and not set(examples) & set(rated_images)
            expect(page.locator("#study-message")).to_contain_text("Saved")
            page.screenshot(path=str(tmp_path / "study.png"), full_page=True)
            page.close()

            # Later, another window: the same code continues at image 6.
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            page.goto(f"{server['url']}?rater={code}")
            wait_progress(page, "Image 6 of 10")
            expect(page.locator("#study-score-1")).to_be_visible()
            page.keyboard.press("5")
            given.append(5)
            wait_progress(page, "Image 7 of 10")
            page.screenshot(path=str(tmp_path / "resumed.png"), full_page=True)

            # Malformed and unknown codes in the URL get a clear message and no rating UI.
            for bad, message in (("x'%20OR%201=1", "not valid"), ("A" * 24, "unknown")):
                page = browser.new_page()
                page.goto(f"{server['url']}?rater={bad}")
                expect(page.locator("#study-message")).to_contain_text(message, timeout=20_000)
                expect(page.locator("#study-score-1")).to_be_hidden()
        finally:
            browser.close()
    assert [score for _, _, score in store.session_ratings(engine, code, STUDY)] == given
    frame = export.ratings_frame(server["db_url"], STUDY)
    assert list(frame["score"]) == given and frame["session"].nunique() == 1


def test_enter_in_the_code_box_starts_and_puts_the_new_code_in_the_address(server, chromium_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(server["url"])
            page.locator("#study-consent input").check()
            page.locator("#study-code textarea, #study-code input").first.press("Enter")
            wait_progress(page, "Calibration example 1 of 2")
            # The welcome says the address now ends with ?rater=CODE: it must.
            expect(page).to_have_url(re.compile(r"[?&]rater=[A-Za-z0-9_-]{22,}"), timeout=20_000)
        finally:
            browser.close()


def test_api_endpoints_drive_the_same_protocol(server):
    from gradio_client import Client

    client = Client(server["url"], verbose=False)
    refused = client.predict(code="", consent=False, api_name="/study_join")
    assert not refused["ok"] and "consent" in refused["message"]
    state = client.predict(code="", consent=True, api_name="/study_join")
    assert state["ok"] and state["kind"] == "calibration" and "file_name" not in state
    code = state["code"]
    while state["kind"] == "calibration":
        state = client.predict(code=code, presentation_id=state["presentation_id"], api_name="/study_continue")
    pid = state["presentation_id"]
    for bad in (0, 6, "3; DROP TABLE ratings"):
        answer = client.predict(code=code, presentation_id=pid, score=bad, api_name="/study_rate")
        assert not answer["ok"] and "score" in answer["message"]
    saved = client.predict(code=code, presentation_id=pid, score=4, api_name="/study_rate")
    assert saved["status"] == "saved" and saved["rated"] == 1
    replay = client.predict(code=code, presentation_id=pid, score=4, api_name="/study_rate")
    assert replay["status"] == "already saved" and replay["presentation_id"] == saved["presentation_id"]
    changed = client.predict(code=code, presentation_id=pid, score=1, api_name="/study_rate")
    assert not changed["ok"] and "cannot be changed" in changed["message"]
    resumed = client.predict(code=code, api_name="/study_next")
    assert resumed["presentation_id"] == saved["presentation_id"] and resumed["rated"] == 1
    unknown = client.predict(code="B" * 30, api_name="/study_next")
    assert not unknown["ok"] and "unknown" in unknown["message"]
    engine = db.get_engine(server["db_url"])
    assert [score for _, _, score in store.session_ratings(engine, code, STUDY)] == [4]


def test_missing_stimulus_file_is_reported_and_nothing_is_recorded(server):
    engine = db.get_engine(server["db_url"])
    code = store.new_rater(engine, consent=True)
    item = store.join_study(engine, code, STUDY)
    html, readable = _stimulus_html(server["app_dir"], item)
    assert readable and "data:image/png;base64," in html and item.file_name not in html
    missing = store.Item(**{**item.__dict__, "file_name": "0" * 32 + ".png"})
    html, readable = _stimulus_html(server["app_dir"], missing)
    assert not readable and "could not be loaded" in html and "Nothing was recorded" in html
    assert store.session_ratings(engine, code, STUDY) == []


def test_a_failed_database_write_says_not_saved_and_the_retry_counts_once(server):
    import sqlite3

    from gradio_client import Client

    client = Client(server["url"], verbose=False)
    state = client.predict(code="", consent=True, api_name="/study_join")
    code = state["code"]
    while state["kind"] == "calibration":
        state = client.predict(code=code, presentation_id=state["presentation_id"], api_name="/study_continue")
    # Another process holds the write lock longer than the busy timeout: the write fails.
    blocker = sqlite3.connect(server["db_url"].removeprefix("sqlite:///"), isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        failed = client.predict(code=code, presentation_id=state["presentation_id"], score=2, api_name="/study_rate")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert not failed["ok"] and failed["status"] == "error" and "Not saved" in failed["message"]
    retried = client.predict(code=code, presentation_id=state["presentation_id"], score=2, api_name="/study_rate")
    assert retried["status"] == "saved"
    engine = db.get_engine(server["db_url"])
    assert [score for _, _, score in store.session_ratings(engine, code, STUDY)] == [2]


def test_python_m_survey_serves_the_study_alone(tmp_path, chromium_path):
    """The study-only server the README gives raters: the study tab and nothing of the demo."""
    from playwright.sync_api import expect, sync_playwright

    for seed, name in enumerate(("srresnet_x4", "srgan_x4")):  # small stand-ins: the example study is made at start
        torch.manual_seed(seed)
        save_weights(SRResNet(num_blocks=2, channels=16), tmp_path / "weights" / f"{name}.pt", {"stage": "random"})
    port = free_port()
    env = {**os.environ, "SRGAN_WEIGHTS_DIR": str(tmp_path / "weights"), "GRADIO_TEMP_DIR": str(tmp_path / "gradio")}
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "survey", "--app-dir", str(tmp_path / "var"), "--port", str(port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, (tmp_path / "server.log").read_text()
            try:
                with urllib.request.urlopen(url, timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page()
                page.goto(url)
                page.locator("#study-consent input").check()
                page.locator("#study-start").click()
                wait_progress(page, "Calibration example 1")
                expect(page.locator("#demo-run")).to_have_count(0)
                expect(page.get_by_role("tab", name="Results (admin)")).to_have_count(0)
            finally:
                browser.close()
    finally:
        process.terminate()
        process.wait(timeout=15)
        log.close()
