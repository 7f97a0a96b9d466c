"""The demo's functions: modes, metrics, α blending, missing weights, zoom, downloads, bad inputs."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from demo.compare import (
    AUTO_HR_MIN_SIDE,
    MIN_HR_SIDE,
    RESULT_METHODS,
    CompareError,
    choose_mode,
    compare,
    file_stem,
    metrics_rows,
    panel_caption,
    point_to_fraction,
    rerun_srgan,
    save_pngs,
    zoom_crops,
)
from demo.examples import EXAMPLE_PHOTOS, write_examples
from srgan.images import ImageError
from srgan.inference import Upscaler
from srgan.models import SRResNet
from srgan.weights import save_weights


def write_random_weights(folder: Path, names: tuple[str, ...] = ("srresnet_x4", "srgan_x4")) -> None:
    """Small random generators (different seeds, so the two networks differ)."""
    for seed, name in enumerate(names):
        torch.manual_seed(seed)
        save_weights(SRResNet(num_blocks=2, channels=16), folder / f"{name}.pt", {"stage": "random test weights"})


@pytest.fixture
def weights_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "weights"
    write_random_weights(folder)
    monkeypatch.setenv("SRGAN_WEIGHTS_DIR", str(folder))
    return folder


@pytest.fixture
def upscaler() -> Upscaler:
    return Upscaler(tile=64)


def photo(side: int) -> Image.Image:
    """A real photo crop (scikit-image's astronaut) of side x side pixels."""
    return Image.fromarray(EXAMPLE_PHOTOS["astronaut"]()[:side, 100 : 100 + side])


def png_bytes(image: Image.Image, **save_args) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=save_args.pop("format", "PNG"), **save_args)
    return buffer.getvalue()


# ---------------------------------------------------------------- modes


def test_auto_mode_uses_the_size_rule() -> None:
    assert choose_mode((AUTO_HR_MIN_SIDE, AUTO_HR_MIN_SIDE))[0] == "hr"
    assert choose_mode((AUTO_HR_MIN_SIDE - 1, 2000))[0] == "lr"
    assert choose_mode((128, 128), "Treat as HR")[0] == "hr"
    assert choose_mode((1000, 1000), "Treat as LR")[0] == "lr"


def test_bad_mode_requests_are_explained() -> None:
    with pytest.raises(CompareError, match="too small to treat as HR"):
        choose_mode((12, 40), "Treat as HR")
    with pytest.raises(CompareError, match="Unknown mode"):
        choose_mode((100, 100), "Treat as video")
    # LR inputs may use a quarter of the pixel limit (their outputs have 16x the pixels).
    assert choose_mode((100, 100), "Treat as LR", max_pixels=40_000)[0] == "lr"
    with pytest.raises(CompareError, match="LR inputs are limited"):
        choose_mode((101, 100), "Treat as LR", max_pixels=40_000)
    assert choose_mode((300, 300), max_pixels=100_000)[0] == "hr"


def test_hr_mode_scores_every_method_against_the_original(weights_dir: Path, upscaler: Upscaler) -> None:
    hr = photo(258)  # not a multiple of 4: cropped to 256
    comparison = compare(hr, upscaler=upscaler, with_niqe=False)
    assert comparison.mode == "hr"
    assert comparison.hr.size == (256, 256) and comparison.lr.size == (64, 64)
    for method in ("bicubic", "srresnet", "srgan"):
        result = comparison.results[method]
        assert result.image.size == (256, 256)
        assert result.seconds >= 0 and result.psnr is not None and result.ssim is not None
    # Bicubic of a real photo is far closer to it than an untrained network's output.
    assert comparison.results["bicubic"].psnr > 22
    assert comparison.results["bicubic"].psnr > comparison.results["srresnet"].psnr
    rows = metrics_rows(comparison)
    assert [row[0] for row in rows] == ["Bicubic", "SRResNet", "SRGAN", "HR (original)"]


def test_smallest_hr_image_is_scored_and_a_smaller_one_refused(weights_dir: Path, upscaler: Upscaler) -> None:
    # A 16-19 px side used to pass the check and then crash in SSIM (8 px left after the border).
    smallest = photo(MIN_HR_SIDE)
    comparison = compare(smallest, upscaler=upscaler, mode="Treat as HR", with_niqe=False)
    assert all(r.ssim is not None for r in comparison.results.values())
    with pytest.raises(CompareError, match="too small to treat as HR"):
        compare(photo(MIN_HR_SIDE - 1), upscaler=upscaler, mode="Treat as HR", with_niqe=False)


def test_lr_mode_upscales_without_reference(weights_dir: Path, upscaler: Upscaler) -> None:
    comparison = compare(png_bytes(photo(48)), upscaler=upscaler, with_niqe=False)
    assert comparison.mode == "lr" and comparison.hr is None
    for result in comparison.results.values():
        assert result.image.size == (192, 192)
        assert result.psnr is None and result.ssim is None
    assert "PSNR" not in panel_caption(comparison, "srgan")


def test_niqe_is_reported_when_the_image_is_large_enough(weights_dir: Path, upscaler: Upscaler) -> None:
    comparison = compare(photo(64), upscaler=upscaler, mode="Treat as LR")
    # 256x256 outputs hold four 96x96 patches: NIQE is defined (the standard model ships with the package).
    assert all(r.niqe is not None and np.isfinite(r.niqe) for r in comparison.results.values())
    assert "NIQE" in panel_caption(comparison, "bicubic")


# ---------------------------------------------------------------- α: network interpolation


def test_alpha_endpoints_are_exactly_srresnet_and_srgan(weights_dir: Path, upscaler: Upscaler) -> None:
    lr = photo(40)
    at_zero = compare(lr, upscaler=upscaler, alpha=0.0, with_niqe=False)
    at_one = compare(lr, upscaler=upscaler, alpha=1.0, with_niqe=False)
    halfway = compare(lr, upscaler=upscaler, alpha=0.5, with_niqe=False)
    srresnet = np.asarray(at_zero.results["srresnet"].image)
    srgan = np.asarray(at_one.results["srgan"].image)
    assert not np.array_equal(srresnet, srgan)  # the two random networks differ
    assert np.array_equal(np.asarray(at_zero.results["srgan"].image), srresnet)
    assert np.array_equal(np.asarray(upscaler.upscale(lr, "srgan", alpha=1.0)), srgan)
    blend = np.asarray(halfway.results["srgan"].image)
    assert not np.array_equal(blend, srresnet) and not np.array_equal(blend, srgan)
    assert "α = 0.50" in panel_caption(halfway, "srgan")


def test_rerun_srgan_changes_only_the_srgan_result(weights_dir: Path, upscaler: Upscaler) -> None:
    first = compare(photo(40), upscaler=upscaler, alpha=1.0, with_niqe=False)
    second = rerun_srgan(first, upscaler=upscaler, alpha=0.0, with_niqe=False)
    assert second.alpha == 0.0 and first.alpha == 1.0
    assert second.results["bicubic"] is first.results["bicubic"]
    assert np.array_equal(np.asarray(second.results["srgan"].image), np.asarray(first.results["srresnet"].image))
    with pytest.raises(CompareError, match="between 0"):
        rerun_srgan(first, upscaler=upscaler, alpha=1.5)


# ---------------------------------------------------------------- missing weights


def test_missing_weights_leave_bicubic_working(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SRGAN_WEIGHTS_DIR", str(tmp_path / "empty"))
    comparison = compare(photo(32), upscaler=Upscaler(), with_niqe=False)
    assert comparison.results["bicubic"].image.size == (128, 128)
    for method in ("srresnet", "srgan"):
        assert comparison.results[method].image is None
        assert f"python -m srgan.train --stage {method}" in panel_caption(comparison, method)
    assert "SRResNet weights are not in this package yet" in panel_caption(comparison, "srresnet")
    assert [row[-1] for row in metrics_rows(comparison)] == ["", "weights missing", "weights missing"]


def test_blending_needs_both_networks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_random_weights(tmp_path, names=("srgan_x4",))
    monkeypatch.setenv("SRGAN_WEIGHTS_DIR", str(tmp_path))
    upscaler = Upscaler()
    pure = compare(photo(32), upscaler=upscaler, alpha=1.0, with_niqe=False)
    assert pure.results["srgan"].image is not None
    blended = compare(photo(32), upscaler=upscaler, alpha=0.5, with_niqe=False)
    assert blended.results["srgan"].image is None
    assert "needs both networks" in blended.results["srgan"].note


def _built_tab(app_dir: Path) -> dict:
    """The comparison tab's components (by elem_id) as a page would first show them."""
    import gradio as gr

    from demo.ui import DemoTab

    with gr.Blocks() as blocks:
        DemoTab(upscaler=Upscaler(), max_pixels=None, app_dir=app_dir).build()
    return {c.elem_id: c for c in blocks.blocks.values() if getattr(c, "elem_id", None)}


def test_the_tab_says_which_weights_are_missing_before_any_comparison(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    write_random_weights(tmp_path / "weights", names=("srgan_x4",))
    monkeypatch.setenv("SRGAN_WEIGHTS_DIR", str(tmp_path / "weights"))
    tab = _built_tab(tmp_path / "app")
    weights = tab["demo-weights"].value
    assert "srresnet_x4.pt" in weights and "`python -m srgan.train --stage srresnet --install`" in weights
    assert "SRResNet panel will stay empty" in weights and "srgan_x4.pt" not in weights
    # α blends both networks: with one missing it is off, and says why.
    alpha = tab["demo-alpha"]
    assert alpha.interactive is False and "srresnet_x4.pt is missing" in alpha.info

    monkeypatch.setenv("SRGAN_WEIGHTS_DIR", str(tmp_path / "empty"))
    tab = _built_tab(tmp_path / "app")
    weights, alpha = tab["demo-weights"].value, tab["demo-alpha"]
    assert "srresnet_x4.pt" in weights and "srgan_x4.pt" in weights and "SRResNet and SRGAN panels" in weights
    assert alpha.interactive is False and "srresnet_x4.pt and srgan_x4.pt are missing" in alpha.info


def test_with_both_networks_the_tab_warns_of_nothing(weights_dir: Path, tmp_path: Path) -> None:
    tab = _built_tab(tmp_path / "app")
    assert "missing" not in tab["demo-weights"].value and "⚠️" not in tab["demo-weights"].value
    assert tab["demo-alpha"].interactive is not False


# ---------------------------------------------------------------- zoom and downloads


def test_zoom_shows_the_same_region_of_every_image(weights_dir: Path, upscaler: Upscaler) -> None:
    comparison = compare(photo(256), upscaler=upscaler, with_niqe=False)
    crops = zoom_crops(comparison, center_x=0.5, center_y=0.25, crop=32, zoom=4)
    assert [label for _, label in crops] == ["LR input (nearest)", "Bicubic", "SRResNet", "SRGAN", "HR (original)"]
    assert all(image.size == (128, 128) for image, _ in crops)
    # Region centred at (128, 64) of the 256x256 outputs: box (112, 48)-(144, 80), each pixel a 4x4 block.
    expected = np.asarray(comparison.hr.crop((112, 48, 144, 80)))
    assert np.array_equal(np.asarray(crops[-1][0])[::4, ::4], expected)
    assert np.array_equal(np.asarray(crops[0][0])[::16, ::16], np.asarray(comparison.lr.crop((28, 12, 36, 20))))
    # A click in a corner keeps the region inside the image.
    corner = zoom_crops(comparison, center_x=1.0, center_y=1.0, crop=32, zoom=1)
    assert np.array_equal(np.asarray(corner[-1][0]), np.asarray(comparison.hr.crop((224, 224, 256, 256))))
    # A click on pixel (x, y) centres the zoom on that pixel.
    assert point_to_fraction((127, 63), (256, 256)) == (127.5 / 256, 63.5 / 256)


def test_downloads_are_lossless_pngs(weights_dir: Path, upscaler: Upscaler, tmp_path: Path) -> None:
    comparison = compare(photo(32), upscaler=upscaler, alpha=0.25, with_niqe=False)
    comparison.name = "cat"
    paths = save_pngs(comparison, tmp_path / "out")
    assert [p.name for p in paths] == [
        "cat_lr_input.png", "cat_bicubic_x4.png", "cat_srresnet_x4.png", "cat_srgan_alpha0.25_x4.png"
    ]
    for path, method in zip(paths[1:], ("bicubic", "srresnet", "srgan")):
        with Image.open(path) as saved:
            assert np.array_equal(np.asarray(saved), np.asarray(comparison.results[method].image))


def test_a_comparison_encodes_each_image_once(weights_dir: Path, upscaler: Upscaler, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """PNG encoding had become most of a comparison's time: each result was encoded for its panel,
    again for the wipe and again for the download (2.2 of 3.5 s for a 256x256 input). Now each
    image's pixels are encoded once; the wipe and the downloads reuse those bytes."""
    from demo.ui import DemoTab

    tab = DemoTab(upscaler=upscaler, max_pixels=None, app_dir=tmp_path / "app")
    tab.views_dir = tmp_path / "views"
    comparison = compare(photo(32), upscaler=upscaler, with_niqe=False)
    encoded: list[bytes] = []
    save = Image.Image.save

    def counting_save(image: Image.Image, fp, *args, **kwargs):
        encoded.append(image.tobytes())
        return save(image, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", counting_save)
    outputs = tab._render(comparison)
    assert len(encoded) == len(set(encoded)) and len(encoded) >= 4  # LR, three results, zoom crops
    panels = dict(zip(RESULT_METHODS, outputs[2:2 + 2 * len(RESULT_METHODS):2]))
    downloads = {Path(f).name: Path(f).read_bytes() for f in outputs[-1]}
    wipe_left, wipe_right = outputs[-3]
    for method, panel in panels.items():
        assert downloads[f"{comparison.name}_{method}_x4.png"] == Path(panel).read_bytes()
        with Image.open(panel) as shown:  # lossless at the faster compression level
            assert np.array_equal(np.asarray(shown), np.asarray(comparison.results[method].image))
    assert Path(wipe_left).read_bytes() == Path(panels["bicubic"]).read_bytes()


def test_example_gallery_is_written_once(tmp_path: Path) -> None:
    paths = write_examples(tmp_path)
    assert {p.stem for p in paths} >= {"astronaut", "coffee", "chelsea", "rocket"}
    sizes = {p.stem: Image.open(p).size for p in paths}
    assert min(sizes["astronaut"]) >= AUTO_HR_MIN_SIDE and max(sizes["astronaut_face_lr"]) < AUTO_HR_MIN_SIDE
    stamp = paths[0].stat().st_mtime_ns
    write_examples(tmp_path)
    assert paths[0].stat().st_mtime_ns == stamp


# ---------------------------------------------------------------- hostile and unusual inputs


def _animated_gif() -> bytes:
    frames = [Image.new("RGB", (16, 16), color) for color in ("red", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


REFUSED = {
    "not an image": (b"this is a text file, not a picture\n", "not an image"),
    "0 bytes": (b"", "empty"),
    "truncated": (png_bytes(Image.new("RGB", (64, 64), "red"))[:60], "truncated|corrupt"),
    "1x1": (png_bytes(Image.new("RGB", (1, 1))), "at least 4x4"),
    "animated GIF": (_animated_gif(), "animated"),
    "over the limit": (png_bytes(Image.new("RGB", (120, 100))), "limit"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_bad_inputs_get_a_clear_message(case: str, tmp_path: Path, upscaler: Upscaler) -> None:
    data, message = REFUSED[case]
    path = tmp_path / "upload.png"
    path.write_bytes(data)
    with pytest.raises(ImageError, match=message):
        compare(path, upscaler=upscaler, max_pixels=10_000, with_niqe=False)


def _exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    return png_bytes(Image.new("RGB", (40, 20), "blue"), format="JPEG", exif=exif)


ACCEPTED = {
    "16-bit grey": (png_bytes(Image.fromarray(np.full((24, 24), 40000, np.uint16))), (96, 96)),
    "CMYK JPEG": (png_bytes(Image.new("CMYK", (24, 24), (0, 128, 128, 0)), format="JPEG"), (96, 96)),
    "palette": (png_bytes(Image.new("RGB", (24, 24), "green").convert("P")), (96, 96)),
    "alpha": (png_bytes(Image.new("RGBA", (24, 24), (255, 0, 0, 128))), (96, 96)),
    "EXIF-rotated": (_exif_rotated_jpeg(), (80, 160)),
}


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_unusual_images_are_converted_and_upscaled(case: str, upscaler: Upscaler, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SRGAN_WEIGHTS_DIR", str(tmp_path))  # no weights: bicubic only, fast
    data, size = ACCEPTED[case]
    comparison = compare(data, upscaler=upscaler, with_niqe=False)
    assert comparison.results["bicubic"].image.size == size
    if case == "alpha":
        assert comparison.results["bicubic"].image.mode == "RGBA"
    if case == "16-bit grey":  # 40000 / 65535 of full scale, not clipped to white
        assert abs(int(np.asarray(comparison.lr)[0, 0, 0]) - round(40000 / 65535 * 255)) <= 1


def test_out_of_range_alpha_is_refused(upscaler: Upscaler) -> None:
    with pytest.raises(CompareError, match="between 0"):
        compare(photo(16), upscaler=upscaler, alpha=-0.1)


# ---------------------------------------------------------------- the tab's handlers (no server)


def test_tab_handlers_render_results_and_explain_refusals(weights_dir: Path, tmp_path: Path) -> None:
    import gradio as gr

    from demo.ui import DemoTab

    with gr.Blocks():
        tab = DemoTab(upscaler=Upscaler(), max_pixels=None, app_dir=tmp_path / "app")
        tab.build()
    source = str(tab.example_paths[-1])  # a 128x128 crop: LR mode
    outputs = tab.run_compare(source, "Auto", 1.0, progress=lambda *args, **kwargs: None)
    assert len(outputs) == tab.output_count
    comparison, status = outputs[:2]
    assert "treated as LR" in status and comparison.results["srgan"].image.size == (512, 512)
    assert [Path(p).suffix for p in outputs[-1]] == [".png"] * 4
    # Moving α before any comparison changes nothing (and raises nothing).
    assert all(isinstance(o, type(gr.skip())) for o in tab.run_blend(None, 0.5, progress=lambda *a, **k: None))

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really a JPEG")
    with pytest.raises(gr.Error, match="not an image|corrupt"):
        tab.check_input(str(broken), "Auto")
    refusal = tab.show_refusal(str(broken), "Auto")
    assert "Can't use this image" in refusal[1] and refusal[2] is None
    assert tab.check_input(source, "Auto") == "Working…"


def test_a_view_handed_out_again_is_not_pruned_from_the_cache_as_old(tmp_path: Path) -> None:
    """The cache is pruned by file age: a panel reused an hour after it was first written is
    young again, so the page that just got its link can still fetch it."""
    from demo.ui import png_file
    from survey.study.cleanup import CachePolicy, prune_cache

    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    path = Path(png_file(image, tmp_path, "panel"))
    hour_ago = time.time() - 3600
    os.utime(path, (hour_ago, hour_ago))
    assert png_file(image, tmp_path, "panel") == str(path)
    prune_cache(tmp_path, CachePolicy(max_bytes=2**30, max_age_s=1800))
    assert path.is_file()


def test_png_file_writes_each_image_once_and_whole(tmp_path: Path) -> None:
    from demo.ui import png_file

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8))
    path = Path(png_file(image, tmp_path, "photo_srgan_x4"))
    assert path.name == "photo_srgan_x4.png" and path.is_relative_to(tmp_path)
    assert np.array_equal(np.asarray(Image.open(path)), np.asarray(image))
    before = path.stat()
    # The same pixels again: the same file, untouched (a served file is never rewritten).
    assert png_file(image.copy(), tmp_path, "photo_srgan_x4") == str(path)
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    # Other pixels or another name: another file; no partial files left behind.
    other = png_file(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), tmp_path, "photo_srgan_x4")
    assert other != str(path) and Path(png_file(image, tmp_path, "wipe")).parent == path.parent
    assert not list(tmp_path.rglob("*.partial"))


def test_any_uploaded_name_gives_output_files_the_file_system_takes(tmp_path: Path) -> None:
    from demo.ui import png_file

    long_name = tmp_path / ("фото " * 100 + ".png")  # 901 bytes of UTF-8: over any file name limit
    assert file_stem(long_name) == ("фото_" * 10)[:48] and file_stem(tmp_path / "../..png") == "image"
    assert file_stem("/x/astronaut.png") == "astronaut" and file_stem(b"bytes") == "image"
    image = Image.new("RGB", (8, 8), (1, 2, 3))
    assert Path(png_file(image, tmp_path, f"{file_stem(long_name)}_srgan_alpha0.50_x4")).is_file()
