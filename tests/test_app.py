"""`python app.py` end to end: a real server, driven by gradio_client and by headless Chromium."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import CHROMIUM_ARGS, ROOT, free_port

import app
from srgan.models import SRResNet
from srgan.weights import save_weights

STARTUP_TIMEOUT_S = 120
RUN_TIMEOUT_MS = 120_000


def test_options_come_from_arguments_then_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SRGAN_PORT", "7999")
    monkeypatch.setenv("SRGAN_APP_DIR", str(tmp_path))
    monkeypatch.setenv("SRGAN_ADMIN_TOKEN", "secret-token-0123456789")
    monkeypatch.setenv("SURVEY_STUDY", "bsd100")
    config = app.parse_args(["--port", "8001", "--max-pixels", "1000"])
    assert (config.port, config.host, config.max_pixels) == (8001, "127.0.0.1", 1000)
    assert config.app_dir == tmp_path.resolve() and config.admin_token == "secret-token-0123456789"
    assert config.study == "bsd100" and app.parse_args(["--study", "other"]).study == "other"
    assert config.study_db_url == f"sqlite:///{tmp_path.resolve() / 'study.sqlite'}"
    assert app.parse_args([]).port == 7999
    with pytest.raises(SystemExit):
        app.parse_args(["--concurrency", "0"])
    with pytest.raises(SystemExit):
        app.parse_args(["--study", "../elsewhere"])
    for bad in (["--max-pixels", "0"], ["--port", "70000"]):
        with pytest.raises(SystemExit):
            app.parse_args(bad)
    assert config.precision == "auto" and app.parse_args(["--precision", "fp32"]).precision == "fp32"
    with pytest.raises(SystemExit):  # fp16 runs on CUDA only
        app.parse_args(["--precision", "fp16"])
    monkeypatch.setenv("SRGAN_PRECISION", "bf16")
    assert app.parse_args([]).precision == "bf16"
    # A bad environment value is a usage error naming the option, not a traceback.
    monkeypatch.setenv("SRGAN_PRECISION", "double")
    with pytest.raises(SystemExit):
        app.parse_args([])
    monkeypatch.setenv("SRGAN_PRECISION", "auto")
    monkeypatch.setenv("SRGAN_PORT", "eighty")
    with pytest.raises(SystemExit):
        app.parse_args([])


def test_an_unreachable_study_database_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exited:
        app.main(["--db-url", "postgresql+psycopg://u:secretpw@127.0.0.1:1/x", "--study", "x",
                  "--app-dir", str(tmp_path)])
    message = str(exited.value.code)
    assert message.startswith("error: the study database") and "secretpw" not in message


def test_the_app_builds_in_process_with_named_endpoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SRGAN_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    blocks = app.build_app(app.AppConfig(app_dir=tmp_path / "var", port=free_port()))
    api_names = {dep.get("api_name") for dep in blocks.config["dependencies"]}
    assert {"compare", "blend"} <= api_names
    assert (tmp_path / "var" / "examples" / "astronaut.png").is_file()


def test_start_up_says_which_weights_are_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SRGAN_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    launched = []
    monkeypatch.setattr(app, "launch", lambda blocks, config, **options: launched.append(blocks))
    assert app.main(["--app-dir", str(tmp_path / "var"), "--port", str(free_port())]) == 0
    captured = capsys.readouterr()
    assert "Networks run on cpu in " in captured.out  # which precision the demo's networks use
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2, warnings  # one line per missing file, before anyone compares
    for line, stage in zip(warnings, ("srresnet", "srgan")):
        assert str(tmp_path / "no-weights" / f"{stage}_x4.pt") in line and "bicubic" in line
        assert line.endswith(f"python -m srgan.train --stage {stage} --install")
    # The page says it too: the α slider of the app that was launched is off.
    (blocks,) = launched
    (alpha,) = [c for c in blocks.blocks.values() if getattr(c, "elem_id", None) == "demo-alpha"]
    assert alpha.interactive is False


# ---------------------------------------------------------------- the real server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """`python app.py` on a free port with random-init weights; killed at the end."""
    tmp = tmp_path_factory.mktemp("app")
    for seed, name in enumerate(("srresnet_x4", "srgan_x4")):
        torch.manual_seed(seed)
        save_weights(SRResNet(num_blocks=4, channels=32), tmp / "weights" / f"{name}.pt", {"stage": "random"})
    port = free_port()
    env = {
        **os.environ,
        "SRGAN_WEIGHTS_DIR": str(tmp / "weights"),
        "SRGAN_APP_DIR": str(tmp / "var"),
        "GRADIO_TEMP_DIR": str(tmp / "gradio"),
    }
    log = (tmp / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(port), "--host", "127.0.0.1"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"app.py exited with {process.returncode}:\n{(tmp / 'server.log').read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"app.py did not answer within {STARTUP_TIMEOUT_S} s:\n{(tmp / 'server.log').read_text()}")
            time.sleep(0.5)
        yield url, tmp
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
    assert f"running at {url}" in (tmp / "server.log").read_text()


@pytest.mark.e2e
def test_gradio_client_gets_three_results_and_scores(server: tuple[str, Path]) -> None:
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    url, tmp = server
    client = Client(url, verbose=False, download_files=str(tmp / "client"))
    example = tmp / "var" / "examples" / "astronaut.png"
    result = client.predict(handle_file(str(example)), "Auto", 1.0, api_name="/compare")
    status, images, scores, files = result[0], result[1:9:2], result[9], result[14]
    assert "treated as HR" in status
    for path in images:  # bicubic, SRResNet, SRGAN, HR: all the original's size
        assert Image.open(path).size == (512, 512)
    assert [row[0] for row in scores["data"]] == ["Bicubic", "SRResNet", "SRGAN", "HR (original)"]
    assert all(float(row[2]) > 0 for row in scores["data"][:3])  # PSNR for every method
    assert sorted(Path(p).name for p in files) == [
        "astronaut_bicubic_x4.png", "astronaut_lr_input.png", "astronaut_srgan_x4.png", "astronaut_srresnet_x4.png"
    ]

    # /blend re-runs SRGAN on the same session's image: α = 0 is exactly SRResNet.
    blended = client.predict(0.0, api_name="/blend")
    assert "α = 0.00" in blended[6]
    assert np.array_equal(np.asarray(Image.open(blended[5])), np.asarray(Image.open(result[3])))

    not_an_image = tmp / "notes.txt"
    not_an_image.write_text("hello")
    with pytest.raises(AppError, match="not an image"):
        client.predict(handle_file(str(not_an_image)), "Auto", 1.0, api_name="/compare")
    # Files Gradio's own gr.Image would decode (or choke on) reach srgan.images.load_image untouched.
    sixteen_bit, cmyk, animated = tmp / "grey16.png", tmp / "cmyk.jpg", tmp / "animated.gif"
    Image.fromarray(np.full((24, 24), 40000, np.uint16)).save(sixteen_bit)
    Image.new("CMYK", (24, 24), (0, 128, 128, 0)).save(cmyk)
    frames = [Image.new("RGB", (24, 24), color) for color in ("red", "blue")]
    frames[0].save(animated, save_all=True, append_images=frames[1:], duration=100, loop=0)
    for path in (sixteen_bit, cmyk):
        converted = client.predict(handle_file(str(path)), "Auto", 1.0, api_name="/compare")
        assert Image.open(converted[1]).size == (96, 96)
    with pytest.raises(AppError, match="animated images are not supported"):
        client.predict(handle_file(str(animated)), "Auto", 1.0, api_name="/compare")
    # The server keeps serving after a refusal.
    small = tmp / "small.png"
    Image.open(example).crop((200, 200, 232, 232)).save(small)
    result = client.predict(handle_file(str(small)), "Auto", 0.5, api_name="/compare")
    assert "treated as LR" in result[0] and Image.open(result[5]).size == (128, 128)
    assert "α = 0.50" in result[6]


@pytest.mark.e2e
def test_only_public_files_are_served(server: tuple[str, Path]) -> None:
    url, tmp = server
    database = tmp / "var" / "study.sqlite"
    example = tmp / "var" / "examples" / "coffee.png"
    with urllib.request.urlopen(f"{url}gradio_api/file={example}", timeout=10) as response:
        assert response.status == 200
    for private in (database, tmp / "server.log"):
        assert private.is_file()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}gradio_api/file={private}", timeout=10)
        assert refused.value.code in (403, 404)


@pytest.mark.e2e
def test_browser_example_compare_zoom_and_refusal(server: tuple[str, Path], chromium_path: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, tmp = server
    not_an_image = tmp / "broken.png"
    not_an_image.write_bytes(b"definitely not a PNG")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.locator("#demo-examples button.gallery-item").nth(2).click()  # chelsea, 451x300: HR
            expect(page.locator("#demo-input img")).to_be_visible()
            page.locator("#demo-run").click()
            for method in ("bicubic", "srresnet", "srgan", "hr"):
                expect(page.locator(f"#demo-{method} img")).to_be_visible(timeout=RUN_TIMEOUT_MS)
            for method in ("bicubic", "srresnet", "srgan"):
                expect(page.locator(f"#demo-{method}-caption")).to_contain_text("PSNR", timeout=RUN_TIMEOUT_MS)
            expect(page.locator("#demo-status")).to_contain_text("treated as HR")
            expect(page.locator("#demo-metrics")).to_contain_text("SRGAN")
            expect(page.locator("#demo-slider img")).to_have_count(2)  # both sides of the wipe (lazy-loaded)
            expect(page.locator("#demo-files")).to_contain_text("chelsea_srgan_x4")

            # A click near the top-left of a result moves the zoom there.
            page.locator("#demo-srgan img").click(position={"x": 5, "y": 5})
            expect(page.locator("#demo-zoom-x input[type=number]")).not_to_have_value("50", timeout=30_000)
            assert float(page.locator("#demo-zoom-x input[type=number]").input_value()) < 10
            expect(page.locator("#demo-zoom img")).to_have_count(5)  # LR, three methods, HR
            page.screenshot(path=str(tmp / "demo.png"), full_page=True)

            page.locator("#demo-input button[aria-label='Remove Image']").first.click()
            page.locator("#demo-input input[type=file]").set_input_files(str(not_an_image))
            page.locator("#demo-run").click()
            expect(page.locator("#demo-status")).to_contain_text("not an image", timeout=RUN_TIMEOUT_MS)
            expect(page.locator("#demo-srgan img")).to_have_count(0)  # no stale results beside the message
            page.screenshot(path=str(tmp / "refusal.png"), full_page=True)
        finally:
            browser.close()


@pytest.mark.e2e
def test_rater_links_and_invitations_open_on_the_study(server: tuple[str, Path], chromium_path: str) -> None:
    from gradio_client import Client
    from playwright.sync_api import expect, sync_playwright

    url, _ = server
    code = Client(url, verbose=False).predict(code="", consent=True, api_name="/study_join")["code"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(f"{url}?rater={code}")
            expect(page.locator("#study-message")).to_contain_text("Welcome back", timeout=30_000)
            expect(page.locator("#study-progress")).to_be_visible()
            expect(page.locator("#demo-run")).to_be_hidden()
            page.goto(f"{url}?study")  # the link to send new raters
            expect(page.locator("#study-start")).to_be_visible(timeout=30_000)
            expect(page.locator("#demo-run")).to_be_hidden()
            page.goto(url)  # everyone else gets the demo
            expect(page.locator("#demo-run")).to_be_visible(timeout=30_000)
            expect(page.locator("#study-start")).to_be_hidden()
        finally:
            browser.close()


# Every image a comparison puts on the page: the four panels, both sides of the wipe, the zoom crops.
SHOWN_IMAGES = "#demo-bicubic img, #demo-srresnet img, #demo-srgan img, #demo-slider img, #demo-zoom img"


@pytest.mark.e2e
def test_repeated_lr_comparisons_serve_every_image_whole(server: tuple[str, Path], chromium_path: str) -> None:
    """The same comparison, repeated from fresh pages, serves every image whole, and never rewrites one.

    Each run puts identical images on the page again, and the wipe's dropdown events send
    two of them a second time while the browser is still fetching the panels. Gradio used
    to rewrite such a file in place (the same pixels land at the same path) while it was
    being served: Content-Length mismatches and a broken panel, when the timing was bad.
    That a served file is never written again is checked directly; it does not need the timing.
    """
    from playwright.sync_api import expect, sync_playwright

    url, tmp = server
    failed_requests: list[str] = []
    first_seen: dict[Path, tuple[int, int, int]] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS, headless=True)
        try:
            for attempt in range(4):
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.on("requestfailed", lambda request: failed_requests.append(f"{request.url}: {request.failure}")
                        if "/gradio_api/file=" in request.url else None)
                page.goto(url)
                page.locator("#demo-examples button.gallery-item").nth(4).click()  # astronaut_face_lr, 128x128: LR
                expect(page.locator("#demo-input img")).to_be_visible()
                page.locator("#demo-run").click()
                for method in ("bicubic", "srresnet", "srgan"):
                    expect(page.locator(f"#demo-{method}-caption")).to_contain_text("NIQE", timeout=RUN_TIMEOUT_MS)
                expect(page.locator("#demo-status")).to_contain_text("treated as LR")
                expect(page.locator("#demo-slider img")).to_have_count(2)
                expect(page.locator("#demo-zoom img")).to_have_count(4)  # LR, three methods
                page.wait_for_function(
                    f"() => [...document.querySelectorAll({SHOWN_IMAGES!r})].every(img => img.complete)",
                    timeout=RUN_TIMEOUT_MS,
                )
                images = page.locator(SHOWN_IMAGES).evaluate_all(
                    "images => images.map(img => [img.src, img.naturalWidth])"
                )
                assert len(images) == 9 and all(width > 0 for _, width in images), (attempt, images)
                for src, _ in images:
                    path = Path(urllib.parse.unquote(src.split("/gradio_api/file=", 1)[1]))
                    stat = path.stat()
                    now = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
                    assert first_seen.setdefault(path, now) == now, f"run {attempt + 1} rewrote {path.name}"
                page.close()
        finally:
            browser.close()
    assert len(first_seen) >= 8  # the same files, served again
    assert failed_requests == []
    assert "Content-Length" not in (tmp / "server.log").read_text()
