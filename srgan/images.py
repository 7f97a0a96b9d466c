"""Reading user images safely, and moving them between PIL and tensors.

Everything a user hands the demo, the study or the CLI goes through
``load_image``: it either returns a plain 8-bit RGB or RGBA image, upright
(EXIF orientation applied), or raises ``ImageError`` whose message can be shown
to the user as it is.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

# Input pixel limit (width x height) unless the caller or SRGAN_MAX_PIXELS says otherwise.
DEFAULT_MAX_PIXELS = 4_000_000
# A compressed file over this many bytes is refused before decoding.
DEFAULT_MAX_BYTES = 50 * 1024 * 1024
MIN_SIDE = 4


class ImageError(ValueError):
    """An image we can't or won't process; the message is meant for the user."""


def default_max_pixels() -> int:
    value = os.environ.get("SRGAN_MAX_PIXELS")
    if not value:
        return DEFAULT_MAX_PIXELS
    try:
        return int(float(value))
    except ValueError:
        raise ImageError(f"SRGAN_MAX_PIXELS must be a number of pixels, got {value!r}") from None


def _pixel_count(pixels: int) -> str:
    # Megapixels to one decimal hide small limits ("0.0 megapixels"): count those in pixels.
    return f"{pixels / 1e6:.1f} megapixels" if pixels >= 100_000 else f"{pixels:,} pixels"


def _open(source: str | Path | bytes, max_bytes: int) -> Image.Image:
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
        name = "the upload"
    else:
        path = Path(source)
        name = path.name
        if not path.is_file():
            raise ImageError(f"{name}: no such file")
        size = path.stat().st_size
        if size > max_bytes:
            raise ImageError(f"{name}: the file is {size / 1e6:.0f} MB; the limit is {max_bytes / 1e6:.0f} MB")
        data = path.read_bytes()
    if not data:
        raise ImageError(f"{name}: the file is empty (0 bytes)")
    if len(data) > max_bytes:
        raise ImageError(f"{name}: the file is {len(data) / 1e6:.0f} MB; the limit is {max_bytes / 1e6:.0f} MB")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        if isinstance(exc, UnidentifiedImageError):
            raise ImageError(f"{name}: not an image, or a format we can't read (use PNG or JPEG)") from None
        raise ImageError(f"{name}: the image is far too large to decode safely") from None
    except Exception as exc:  # PIL raises a zoo of errors on hostile headers
        raise ImageError(f"{name}: the file is truncated, corrupt or not an image ({type(exc).__name__})") from None


def _to_8bit(image: Image.Image) -> Image.Image:
    """Any PIL mode -> 'RGB' or 'RGBA' with 8 bits per channel."""
    mode = image.mode
    if mode in ("RGB", "RGBA"):
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if mode == "F":
            peak = 1.0 if values.max(initial=0) <= 1.0 else 255.0
        else:
            peak = 65535.0 if values.max(initial=0) > 255 or mode.startswith("I;16") else 255.0
        grey = np.clip(np.round(values / peak * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode in ("LA", "PA") or (mode == "P" and "transparency" in image.info):
        return image.convert("RGBA")
    if mode == "RGBa":
        return image.convert("RGBA")
    return image.convert("RGB")  # 1, L, P, CMYK, YCbCr, LAB, HSV


def load_image(
    source: str | Path | bytes | Image.Image,
    *,
    max_pixels: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Image.Image:
    """Decode a user's image into an upright 8-bit RGB or RGBA PIL image.

    Raises ImageError, with a message fit for the user, for non-images,
    empty, truncated or corrupt files, animated images, images under
    4x4 pixels and images over ``max_pixels`` (default: SRGAN_MAX_PIXELS or
    4 megapixels).
    """
    limit = default_max_pixels() if max_pixels is None else int(max_pixels)
    image = source if isinstance(source, Image.Image) else _open(source, max_bytes)
    name = "the image"
    if getattr(image, "n_frames", 1) > 1 and getattr(image, "is_animated", False):
        raise ImageError("animated images are not supported: save one frame as PNG or JPEG")
    width, height = image.size
    if width * height > limit:
        raise ImageError(
            f"{name} is {width}x{height} = {_pixel_count(width * height)}; "
            f"the limit is {_pixel_count(limit)} (crop or shrink it first)"
        )
    if min(width, height) < MIN_SIDE:
        raise ImageError(f"{name} is {width}x{height}; it must be at least {MIN_SIDE}x{MIN_SIDE} pixels")
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
        image = _to_8bit(image)
        image.load()
    except ImageError:
        raise
    except Exception as exc:  # truncated data, broken EXIF, decoder errors
        raise ImageError(f"{name} is truncated or corrupt and can't be decoded ({type(exc).__name__})") from None
    return image


def crop_to_multiple(image: Image.Image, multiple: int = 4) -> Image.Image:
    """Crop the bottom and right edges so both sides divide by ``multiple``."""
    width, height = image.size
    w, h = width - width % multiple, height - height % multiple
    if (w, h) == (width, height):
        return image
    return image.crop((0, 0, w, h))


def pil_to_tensor(image: Image.Image) -> Tensor:
    """An RGB (or grey) PIL image -> float tensor (1, 3, H, W) in [0, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()


def tensor_to_array(tensor: Tensor) -> np.ndarray:
    """A float tensor (1, 3, H, W) or (3, H, W) in [0, 1] -> uint8 (H, W, 3), rounded."""
    t = tensor.detach()
    if t.dim() == 4:
        if t.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {t.shape[0]}")
        t = t[0]
    t = t.float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return t.permute(1, 2, 0).cpu().numpy()


def tensor_to_pil(tensor: Tensor) -> Image.Image:
    return Image.fromarray(tensor_to_array(tensor), "RGB")
