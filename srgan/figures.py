"""Side-by-side crops of super-resolved images, like the paper's Figures 2 and 6.

One row per image, one column per method (e.g. bicubic | SRResNet | SRGAN | HR);
each cell is the same crop of that method's output, enlarged with nearest
neighbours so single pixels stay visible, with its PSNR / SSIM (Y channel,
``srgan.metrics``, the paper's convention) under it. The crop is the window of
the HR image with the most gradient energy, where methods differ most.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from srgan.metrics import psnr_y, ssim_y

# Column titles for the method names of srgan.inference.METHODS (others shown as given).
TITLES = {"nearest": "Nearest", "bicubic": "Bicubic", "srresnet": "SRResNet", "srgan": "SRGAN", "hr": "HR (original)"}
REFERENCE = "hr"

# Layout, in pixels of the output PNG.
PAD = 8
TITLE_HEIGHT = 26
LABEL_HEIGHT = 22
CAPTION_HEIGHT = 22
FONT_SIZE = 15
BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)
MISSING = (225, 225, 225)


def figure_size(*, rows: int, columns: int, cell: int) -> tuple[int, int]:
    """(width, height) of a comparison figure with square cells of ``cell`` pixels."""
    width = PAD + columns * (cell + PAD)
    height = PAD + TITLE_HEIGHT + rows * (LABEL_HEIGHT + cell + CAPTION_HEIGHT + PAD)
    return width, height


def _as_rgb_uint8(image: np.ndarray, what: str) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"{what}: expected a uint8 image, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ValueError(f"{what}: expected (H, W) grey or (H, W, 3) RGB, got shape {image.shape}")


def gradient_energy(image: np.ndarray) -> np.ndarray:
    """Squared gradient magnitude of the image's luma, (H - 1, W - 1)."""
    luma = np.asarray(image, np.float64)
    if luma.ndim == 3:
        luma = luma[..., :3] @ np.array([0.299, 0.587, 0.114])
    dx = np.diff(luma, axis=1)[:-1, :]
    dy = np.diff(luma, axis=0)[:, :-1]
    return dx * dx + dy * dy


def textured_crop(hr: np.ndarray, *, size: int) -> tuple[int, int, int]:
    """The size x size window of ``hr`` with the most gradient energy: (top, left, size).

    The size shrinks to the image's shorter side when the image is smaller.
    Window sums come from an integral image, so every position is tried.
    """
    height, width = np.asarray(hr).shape[:2]
    size = min(size, height, width)
    energy = np.zeros((height, width))
    energy[: height - 1, : width - 1] = gradient_energy(hr)
    integral = np.zeros((height + 1, width + 1))
    integral[1:, 1:] = energy.cumsum(axis=0).cumsum(axis=1)
    sums = integral[size:, size:] - integral[:-size, size:] - integral[size:, :-size] + integral[:-size, :-size]
    top, left = np.unravel_index(np.argmax(sums), sums.shape)
    return int(top), int(left), size


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()


def _centred_text(draw: ImageDraw.ImageDraw, text: str, *, x: int, y: int, width: int) -> None:
    """Text centred over a cell, in a smaller font when it would spill into the next cell."""
    for size in range(FONT_SIZE, 7, -1):
        font = _font(size)
        text_width = draw.textlength(text, font=font)
        if text_width <= width:
            break
    draw.text((x + max((width - text_width) / 2, 0), y), text, fill=TEXT, font=font)


def _column_order(rows: list[tuple[str, dict[str, np.ndarray]]]) -> list[str]:
    """Methods in the order first given, the reference last."""
    order: list[str] = []
    for _, images in rows:
        order += [m for m in images if m not in order and m != REFERENCE]
    if any(REFERENCE in images for _, images in rows):
        order.append(REFERENCE)
    return order


def _caption(sr: np.ndarray, hr: np.ndarray, box: tuple[int, int, int], measure_on: str) -> str:
    if measure_on == "crop":
        top, left, size = box
        sr, hr = sr[top : top + size, left : left + size], hr[top : top + size, left : left + size]
    return f"{psnr_y(sr, hr):.2f} dB / {ssim_y(sr, hr):.4f}"


def comparison_figure(
    rows: list[tuple[str, dict[str, np.ndarray]]],
    out_path: str | Path,
    *,
    crop: int | tuple[int, int, int] = 100,
    zoom: int = 2,
    measure_on: str = "image",
) -> Path:
    """Write a PNG of crops side by side, one row per image, one column per method.

    Args:
        rows: (row title, {method: uint8 image}) pairs; methods such as "bicubic",
            "srresnet", "srgan" and the reference "hr" (always the last column).
            All images of a row have the HR's size. Methods missing from a row
            leave a grey cell; methods given nowhere get no column.
        out_path: where the PNG goes (folders are made).
        crop: side of the square crop in HR pixels, placed on each row's most
            textured window; or a fixed (top, left, size) for every row.
        zoom: nearest-neighbour enlargement of the crops.
        measure_on: "image" (PSNR/SSIM of the whole image, as the paper prints
            under its crops) or "crop" (of the crop only).

    Returns:
        The path written.
    """
    if not rows:
        raise ValueError("comparison_figure needs at least one row")
    if measure_on not in ("image", "crop"):
        raise ValueError(f"measure_on must be 'image' or 'crop', got {measure_on!r}")
    if zoom < 1:
        raise ValueError(f"zoom must be at least 1, got {zoom}")
    columns = _column_order(rows)
    boxes = []
    for title, images in rows:
        if not images:
            raise ValueError(f"row {title!r} has no images")
        reference = images.get(REFERENCE, next(iter(images.values())))
        shape = np.asarray(reference).shape[:2]
        for method, image in images.items():
            if np.asarray(image).shape[:2] != shape:
                raise ValueError(f"row {title!r}: {method} is {np.asarray(image).shape[:2]}, the HR is {shape}")
        if isinstance(crop, int):
            boxes.append(textured_crop(reference, size=crop))
        else:
            top, left, size = crop
            if top < 0 or left < 0 or top + size > shape[0] or left + size > shape[1]:
                raise ValueError(f"row {title!r}: crop {crop} falls outside the {shape} image")
            boxes.append((top, left, size))
    # Every cell has the size of the largest crop; smaller crops (small images) sit top-left.
    cell = max(size for _, _, size in boxes) * zoom
    width, height = figure_size(rows=len(rows), columns=len(columns), cell=cell)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = _font(FONT_SIZE)
    for j, method in enumerate(columns):
        _centred_text(draw, TITLES.get(method, method), x=PAD + j * (cell + PAD), y=PAD, width=cell)
    y = PAD + TITLE_HEIGHT
    for (title, images), box in zip(rows, boxes):
        draw.text((PAD, y + 2), title, fill=TEXT, font=font)
        y += LABEL_HEIGHT
        top, left, size = box
        reference = images.get(REFERENCE)
        for j, method in enumerate(columns):
            x = PAD + j * (cell + PAD)
            if method not in images:
                draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=MISSING)
                _centred_text(draw, "n/a", x=x, y=y + cell // 2 - FONT_SIZE // 2, width=cell)
                continue
            image = _as_rgb_uint8(images[method], f"row {title!r}, {method}")
            patch = image[top : top + size, left : left + size]
            patch = patch.repeat(zoom, axis=0).repeat(zoom, axis=1)
            canvas.paste(Image.fromarray(patch), (x, y))
            if method != REFERENCE and reference is not None:
                caption = _caption(np.asarray(images[method]), np.asarray(reference), box, measure_on)
                _centred_text(draw, caption, x=x, y=y + cell + 3, width=cell)
        y += cell + CAPTION_HEIGHT + PAD
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out_path, optimize=True)
    return out_path
