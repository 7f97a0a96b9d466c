"""Issue #19, images: resizing a long strip must take memory linear in its pixels (the demo once
grew by 3 GB per 4x10000 upload and kept it), extreme aspect ratios get a clear refusal, and PNG
metadata past Pillow's limits is refused by name (not as "truncated or corrupt").

The memory checks run in a fresh interpreter (or a real ``python app.py``) and read its peak or
resident memory from /proc: torch's allocations are invisible to tracemalloc.
"""

from __future__ import annotations

import io
import re
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image, ImageCms

from srgan.images import MAX_ASPECT, ImageError, load_image
from tools import loadtest

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20


def _run_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def _proc_kib(pid: int | str, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


# --- imresize: linear memory, bounded caches ------------------------------------------------

PEAK_GROWTH = """
    import torch
    from srgan.imresize import imresize
    def peak_kib():
        return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
    x = torch.rand(1, 1, 4, {width})
    before = peak_kib()
    out = imresize(x, scale=4)
    assert out.shape == (1, 1, 16, 4 * {width}), out.shape
    print(peak_kib() - before)
"""


@pytest.mark.parametrize("width", [10_000, 250_000])  # the strip; the LR pixel limit's
def test_resizing_a_long_strip_takes_memory_linear_in_its_pixels(width: int) -> None:
    """x4 of a 4 x width strip: the old dense (out x in) float64 matrix alone was 32 x width^2
    bytes (3.2 GB at 10,000; 2 TB at 250,000, which the allocator refused outright). The output
    is 256 x width bytes; the peak may be a few times that, never width^2."""
    growth_mib = int(_run_python(PEAK_GROWTH.format(width=width))) / 1024
    output_mib = 16 * 4 * width * 4 / MIB
    assert growth_mib < 64 + 8 * output_mib, (growth_mib, output_mib)


def test_resize_memory_is_given_back_after_many_sizes() -> None:
    """A demo sees a new size per image: 16 strips of distinct widths, x4. The old caches kept
    every dense matrix (16 x 48 MB); now the cache is bounded in bytes and big ones are not kept."""
    code = """
        import gc, torch
        from srgan.imresize import imresize
        def rss_kib():
            return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1])
        imresize(torch.rand(1, 3, 8, 100), scale=4)
        gc.collect()
        before = rss_kib()
        for i in range(16):
            imresize(torch.rand(1, 3, 8, 1000 + i), scale=4)
        gc.collect()
        print(rss_kib() - before)
    """
    growth_mib = int(_run_python(code)) / 1024
    assert growth_mib < 150, growth_mib


# --- load_image: aspect ratio ----------------------------------------------------------------

def _png(image: Image.Image, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **save)
    return buffer.getvalue()


@pytest.mark.parametrize("size, times", [((4, 10_000), "2,500"), ((250_000, 4), "62,500"), ((257, 4), "64.2")])
def test_extreme_aspect_ratios_are_refused_with_the_limit(size: tuple[int, int], times: str) -> None:
    with pytest.raises(ImageError) as refusal:
        load_image(_png(Image.new("RGB", size)), max_pixels=4_000_000)
    message = str(refusal.value)
    assert f"{size[0]}x{size[1]}" in message and f"{times} times" in message
    assert f"the limit is {MAX_ASPECT} times" in message and "Crop it" in message


def test_a_wide_panorama_at_the_aspect_limit_is_accepted() -> None:
    assert load_image(_png(Image.new("RGB", (MAX_ASPECT * 4, 4)))).size == (MAX_ASPECT * 4, 4)
    assert load_image(_png(Image.new("RGB", (4, MAX_ASPECT * 4))), max_aspect=None).size == (4, MAX_ASPECT * 4)
    assert load_image(_png(Image.new("RGB", (4, 1000))), max_aspect=None).size == (4, 1000)


# --- load_image: PNG metadata past Pillow's limits -------------------------------------------

def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_with_chunk(chunk: bytes, *, after_pixels: bool = False) -> bytes:
    """An 8x8 PNG with ``chunk`` right after IHDR (read when the file is opened) or just before
    IEND (read when the pixels are decoded)."""
    plain = _png(Image.new("RGB", (8, 8), "red"))
    ihdr_end = 8 + 25  # signature, then IHDR's length, type, 13 bytes and CRC
    return plain[:-12] + chunk + plain[-12:] if after_pixels else plain[:ihdr_end] + chunk + plain[ihdr_end:]


def test_a_30_mb_colour_profile_is_refused_by_name() -> None:
    profile = np.random.default_rng(0).integers(0, 256, 30_000_000, dtype=np.uint8).tobytes()
    data = _png_with_chunk(_chunk(b"iCCP", b"huge profile\0\0" + zlib.compress(profile, 1)))
    with pytest.raises(ImageError, match=r"colour profile \(ICC\) unpacks to 30 MB; the limit is 1 MB.*"
                                         r"without its colour profile"):
        load_image(data)


@pytest.mark.parametrize("after_pixels", [False, True])
def test_a_text_chunk_inflating_to_100_mb_is_refused_by_name(after_pixels: bool) -> None:
    bomb = _chunk(b"zTXt", b"Comment\0\0" + zlib.compress(bytes(100_000_000), 9))
    with pytest.raises(ImageError) as refusal:
        load_image(_png_with_chunk(bomb, after_pixels=after_pixels))
    message = str(refusal.value)
    assert "text chunk ('Comment') unpacks to 100 MB" in message and "decompression bomb" in message
    assert "truncated" not in message and "corrupt" not in message


def test_ordinary_metadata_is_still_accepted() -> None:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = _png(Image.new("RGB", (8, 8), "red"), icc_profile=srgb)
    assert load_image(data).info.get("icc_profile") == srgb
    text = _png_with_chunk(_chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"a photo" * 1000)))
    assert load_image(text).size == (8, 8)


# --- the running app --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """``python app.py`` with no trained weights: each comparison is the bicubic upscale alone, so
    the resize is what a request costs (and the test takes seconds, not minutes)."""
    root = tmp_path_factory.mktemp("images")
    app_dir, no_weights = root / "app", root / "no-weights"
    no_weights.mkdir()
    db_url = f"sqlite:///{app_dir / 'study.sqlite'}"
    loadtest.prepare_load_study(db_url=db_url, app_dir=app_dir, study="images", stimuli=4)
    server = loadtest.AppProcess(app_dir=app_dir, db_url=db_url, study="images",
                                 env={"SRGAN_WEIGHTS_DIR": str(no_weights)})
    server.start()
    client = Client(server.url, verbose=False, download_files=False)
    photo = root / "photo.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(photo)
    answer = _post(client, photo)  # the first comparison also loads what a comparison needs
    assert answer.startswith("accepted"), answer + server.log_tail()
    yield server, client, root
    server.stop()


def _post(client: Client, path: Path) -> str:
    try:
        return f"accepted: {client.predict(handle_file(str(path)), 'Auto', 1.0, api_name='/compare')[0]}"  # the status line
    except Exception as error:  # gradio_client raises the app's gr.Error as an error
        return str(error)


def _assert_clear(message: str) -> None:
    for leak in ("allocate", "Tensor", "Traceback", 'File "', "RuntimeError"):
        assert leak not in message, message


@pytest.mark.e2e
def test_the_app_refuses_long_strips_clearly_and_keeps_its_memory(app) -> None:
    server, client, root = app
    strip = root / "strip_4x10000.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (10_000, 4, 3), dtype=np.uint8)).save(strip)
    before = _proc_kib(server.process.pid, "VmRSS")
    messages = [_post(client, strip) for _ in range(3)]
    growth_mib = (_proc_kib(server.process.pid, "VmRSS") - before) / 1024
    assert growth_mib < 500, growth_mib
    for message in messages:
        _assert_clear(message)
        assert re.search(r"4x10000: its long side is 2,500 times its short side; the limit is 64", message), message

    limit_strip = root / "strip_4x250000.png"
    Image.new("RGB", (250_000, 4), "gray").save(limit_strip)  # 1,000,000 pixels: the LR-mode limit
    message = _post(client, limit_strip)
    _assert_clear(message)
    assert "250000x4" in message and "the limit is 64 times" in message, message
    answer = _post(client, root / "photo.png")  # the server still serves an ordinary image
    assert answer.startswith("accepted"), answer + server.log_tail()


@pytest.mark.e2e
def test_the_app_upscales_strips_at_the_aspect_limit_in_linear_memory(app) -> None:
    """64x4096 and two near sizes, treated as LR (0.26 megapixels each, within every limit). The
    old resize built a dense 16384 x 4096 matrix per width (537 MB in float64 and 268 MB more in
    float32) and cached each: about 2.4 GB kept after three uploads."""
    server, client, root = app
    before = _proc_kib(server.process.pid, "VmRSS")
    for width in (4096, 4092, 4088):
        strip = root / f"strip_64x{width}.png"
        pixels = np.random.default_rng(width).integers(0, 256, (64, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(strip)
        answer = _post(client, strip)
        assert answer.startswith("accepted") and f"output {4 * width}x256" in answer, answer
    growth_mib = (_proc_kib(server.process.pid, "VmRSS") - before) / 1024
    assert growth_mib < 500, growth_mib
