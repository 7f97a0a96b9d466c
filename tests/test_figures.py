"""The paper-style comparison figure: layout, crops, the textured-window picker, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from srgan.figures import (
    CAPTION_HEIGHT,
    LABEL_HEIGHT,
    MISSING,
    PAD,
    TITLE_HEIGHT,
    comparison_figure,
    figure_size,
    textured_crop,
)


def flat_with_texture(*, height: int, width: int, top: int, left: int, size: int, seed: int = 0) -> np.ndarray:
    """A flat grey RGB image with one square of random texture."""
    image = np.full((height, width, 3), 120, np.uint8)
    rng = np.random.default_rng(seed)
    image[top : top + size, left : left + size] = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    return image


def degraded(image: np.ndarray, *, amount: int, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).integers(-amount, amount + 1, image.shape)
    return np.clip(image.astype(int) + noise, 0, 255).astype(np.uint8)


def cell_origin(*, row: int, column: int, cell: int) -> tuple[int, int]:
    """(y, x) of a cell's top-left pixel in the figure."""
    y = PAD + TITLE_HEIGHT + row * (LABEL_HEIGHT + cell + CAPTION_HEIGHT + PAD) + LABEL_HEIGHT
    return y, PAD + column * (cell + PAD)


def test_textured_crop_finds_the_textured_square() -> None:
    image = flat_with_texture(height=120, width=200, top=30, left=110, size=40)
    assert textured_crop(image, size=40) == (30, 110, 40)
    grey = image[..., 0]
    assert textured_crop(grey, size=40) == (30, 110, 40)


def test_textured_crop_shrinks_to_small_images() -> None:
    image = flat_with_texture(height=30, width=50, top=0, left=10, size=30)
    top, left, size = textured_crop(image, size=100)
    assert size == 30 and top == 0 and 0 <= left <= 20


def test_figure_has_the_expected_size_columns_and_pixels(tmp_path: Path) -> None:
    crop, zoom = 40, 2
    rows = []
    for i in range(2):
        hr = flat_with_texture(height=96, width=128, top=20 + 10 * i, left=50, size=crop, seed=i)
        rows.append((f"image {i}", {
            "bicubic": degraded(hr, amount=40, seed=10 + i),
            "srresnet": degraded(hr, amount=20, seed=20 + i),
            "srgan": degraded(hr, amount=10, seed=30 + i),
            "hr": hr,
        }))
    path = comparison_figure(rows, tmp_path / "out" / "comparison.png", crop=crop, zoom=zoom)
    assert path.is_file() and path.stat().st_size < 2_000_000
    figure = np.asarray(Image.open(path).convert("RGB"))
    cell = crop * zoom
    assert figure.shape[1::-1] == figure_size(rows=2, columns=4, cell=cell)
    assert figure.shape[:2] == (PAD + TITLE_HEIGHT + 2 * (LABEL_HEIGHT + cell + CAPTION_HEIGHT + PAD), PAD + 4 * (cell + PAD))
    # The HR column (last) holds the textured window, enlarged with nearest neighbours.
    for i, (_, images) in enumerate(rows):
        y, x = cell_origin(row=i, column=3, cell=cell)
        expected = images["hr"][20 + 10 * i : 20 + 10 * i + crop, 50 : 50 + crop].repeat(zoom, 0).repeat(zoom, 1)
        np.testing.assert_array_equal(figure[y : y + cell, x : x + cell], expected)
        y, x = cell_origin(row=i, column=0, cell=cell)
        expected = images["bicubic"][20 + 10 * i : 20 + 10 * i + crop, 50 : 50 + crop].repeat(zoom, 0).repeat(zoom, 1)
        np.testing.assert_array_equal(figure[y : y + cell, x : x + cell], expected)
    # Captions (PSNR / SSIM) are drawn under the methods but not under the HR.
    y, x = cell_origin(row=0, column=0, cell=cell)
    assert (figure[y + cell : y + cell + CAPTION_HEIGHT, x : x + cell] < 128).any()
    y, x = cell_origin(row=0, column=3, cell=cell)
    assert (figure[y + cell : y + cell + CAPTION_HEIGHT, x : x + cell] == 255).all()


def test_missing_methods_are_omitted_or_greyed(tmp_path: Path) -> None:
    hr = flat_with_texture(height=64, width=64, top=0, left=0, size=32)
    grey_hr = hr[..., 0]
    rows = [
        ("rgb", {"bicubic": degraded(hr, amount=30, seed=1), "srgan": degraded(hr, amount=5, seed=2), "hr": hr}),
        # A greyscale image (like Set14 bridge) without an SRGAN output.
        ("grey", {"bicubic": degraded(grey_hr, amount=30, seed=3), "hr": grey_hr}),
    ]
    path = comparison_figure(rows, tmp_path / "fig.png", crop=32, zoom=3, measure_on="crop")
    figure = np.asarray(Image.open(path).convert("RGB"))
    cell = 96
    assert figure.shape[1::-1] == figure_size(rows=2, columns=3, cell=cell)  # no SRResNet column
    y, x = cell_origin(row=1, column=1, cell=cell)  # grey row, SRGAN column
    assert (figure[y : y + 10, x : x + 10] == MISSING).all()
    y, x = cell_origin(row=1, column=2, cell=cell)  # grey HR shown as grey RGB
    np.testing.assert_array_equal(figure[y : y + cell : 3, x : x + cell : 3, 1], grey_hr[:32, :32])


def test_fixed_crop_box(tmp_path: Path) -> None:
    hr = flat_with_texture(height=64, width=96, top=10, left=10, size=40)
    path = comparison_figure([("fixed", {"hr": hr})], tmp_path / "fixed.png", crop=(5, 50, 30), zoom=1)
    figure = np.asarray(Image.open(path).convert("RGB"))
    y, x = cell_origin(row=0, column=0, cell=30)
    np.testing.assert_array_equal(figure[y : y + 30, x : x + 30], hr[5:35, 50:80])


@pytest.mark.parametrize(
    ("rows", "kwargs", "message"),
    [
        ([], {}, "at least one row"),
        ([("a", {})], {}, "no images"),
        ([("a", {"bicubic": np.zeros((32, 32, 3), np.uint8), "hr": np.zeros((64, 64, 3), np.uint8)})], {}, "the HR is"),
        ([("a", {"hr": np.zeros((64, 64, 3), np.float32)})], {}, "uint8"),
        ([("a", {"hr": np.zeros((64, 64, 3), np.uint8)})], {"crop": (40, 40, 30)}, "outside"),
        ([("a", {"hr": np.zeros((64, 64, 3), np.uint8)})], {"measure_on": "all"}, "measure_on"),
    ],
)
def test_bad_input_is_a_clear_value_error(rows, kwargs, message: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=message):
        comparison_figure(rows, tmp_path / "bad.png", **kwargs)
    assert not (tmp_path / "bad.png").exists()
