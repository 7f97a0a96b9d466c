"""Reading user images safely, and moving them between PIL and tensors.

Everything a user hands the demo, the study or the CLI goes through
``load_image``: it either returns a plain 8-bit RGB or RGBA image, upright
(EXIF orientation applied), or raises ``ImageError`` whose message can be shown
to the user as it is.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError
from torch import Tensor

# Input pixel limit (width x height) unless the caller or SRGAN_MAX_PIXELS says otherwise.
DEFAULT_MAX_PIXELS = 4_000_000
# A compressed file over this many bytes is refused before decoding.
DEFAULT_MAX_BYTES = 50 * 1024 * 1024
MIN_SIDE = 4
# The longest side may be at most this many times the shortest. Photos, even panoramas (about
# 4:1 to 10:1) and long phone screenshots (about 20:1), stay well inside it; a 4x10000 strip
# (2500:1) is no photo, and its 4x output is one no browser shows whole.
MAX_ASPECT = 64
# How far PNG metadata is unpacked to say how large an oversized chunk is (then "more than").
INFLATE_PROBE_BYTES = 256_000_000
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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


def _byte_count(size: int) -> str:
    return f"{size / 1e6:.0f} MB" if size >= 10**6 else f"{size / 1e3:.0f} kB"


def _inflated_size(compressed: bytes, cap: int) -> int:
    """How many bytes zlib data unpacks to, counting (not keeping) at most ``cap`` + 1 of them."""
    inflater = zlib.decompressobj()
    size, pending = 0, compressed
    try:
        while pending and size <= cap:
            size += len(inflater.decompress(pending, 1 << 20))
            pending = inflater.unconsumed_tail
    except zlib.error:
        pass  # corrupt data: what came out before it is all there is
    return size


def _png_metadata_problem(data: bytes, name: str) -> str | None:
    """Why Pillow refused a PNG's metadata, in the user's words: the first colour profile (iCCP)
    or compressed text chunk (zTXt, iTXt) that unpacks past Pillow's limit; None if there is none."""
    if not data.startswith(PNG_SIGNATURE):
        return None
    limit = PngImagePlugin.MAX_TEXT_CHUNK
    position = len(PNG_SIGNATURE)
    budget = INFLATE_PROBE_BYTES  # over all chunks: a file of many small ones costs no more
    while position + 8 <= len(data) and budget > 0:
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        start, position = position + 8, position + length + 12  # length, type, data, CRC
        if kind not in (b"iCCP", b"zTXt", b"iTXt"):
            continue
        keyword, _, rest = data[start : start + length].partition(b"\0")
        if kind == b"iCCP":
            what, compressed = "its embedded colour profile (ICC)", rest[1:]
        elif kind == b"zTXt":
            what, compressed = "a compressed text chunk", rest[1:]
        elif kind == b"iTXt" and rest[:1] == b"\1":  # compression flag set
            what, compressed = "a compressed text chunk", rest[2:].split(b"\0", 2)[-1]
        else:
            continue
        cap = budget
        size = _inflated_size(compressed, cap)
        budget -= size
        if size <= limit:
            continue
        unpacked = f"more than {_byte_count(cap)}" if size > cap else _byte_count(size)
        if kind == b"iCCP":
            return (f"{name}: {what} unpacks to {unpacked}; the limit is {_byte_count(limit)} (real profiles "
                    f"take a few kB). Save the image again without its colour profile (or as sRGB) and retry.")
        return (f"{name}: {what} ({keyword[:40].decode('latin-1')!r}) unpacks to {unpacked} from "
                f"{_byte_count(len(compressed))}; the limit is {_byte_count(limit)}: a decompression bomb, or "
                f"metadata far larger than a photo carries. Save the image again without its text metadata "
                f"and retry.")
    return None


def _refused_decoding(exc: Exception, data: bytes | None, name: str, fallback: str) -> ImageError:
    """The ImageError for an exception Pillow raised reading ``data``: what was wrong when we can
    tell (oversized metadata), else ``fallback``."""
    if isinstance(exc, ValueError) and data is not None:
        if "Too much memory used in text chunks" in str(exc):
            return ImageError(f"{name}: its text chunks hold more than "
                              f"{_byte_count(PngImagePlugin.MAX_TEXT_MEMORY)}, the limit. Save the image "
                              f"again without its text metadata and retry.")
        problem = _png_metadata_problem(data, name)
        if problem is not None:
            return ImageError(problem)
    return ImageError(f"{fallback} ({type(exc).__name__})")


def _read(source: str | Path | bytes, max_bytes: int) -> tuple[bytes, str]:
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
    return data, name


def _open(data: bytes, name: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        if isinstance(exc, UnidentifiedImageError):
            raise ImageError(f"{name}: not an image, or a format we can't read (use PNG or JPEG)") from None
        raise ImageError(f"{name}: the image is far too large to decode safely") from None
    except Exception as exc:  # PIL raises a zoo of errors on hostile headers
        raise _refused_decoding(exc, data, name, f"{name}: the file is truncated, corrupt or not an image") from None


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
    max_aspect: float | None = MAX_ASPECT,
) -> Image.Image:
    """Decode a user's image into an upright 8-bit RGB or RGBA PIL image.

    Raises ImageError, with a message fit for the user, for non-images,
    empty, truncated or corrupt files, animated images, images under
    4x4 pixels, images over ``max_pixels`` (default: SRGAN_MAX_PIXELS or
    4 megapixels), images whose longest side is over ``max_aspect`` times their
    shortest, and PNGs whose metadata unpacks past Pillow's safety limits.
    """
    limit = default_max_pixels() if max_pixels is None else int(max_pixels)
    data, file_name = None, "the image"
    if isinstance(source, Image.Image):
        image = source
    else:
        data, file_name = _read(source, max_bytes)
        image = _open(data, file_name)
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
    if max_aspect is not None and max(width, height) > max_aspect * min(width, height):
        ratio = max(width, height) / min(width, height)
        times = f"{ratio:,.0f}" if ratio >= 100 else f"{ratio:.1f}"
        raise ImageError(
            f"{name} is {width}x{height}: its long side is {times} times its short side; the limit is "
            f"{max_aspect:g} times (a panorama is about 4 to 10). Crop it into pieces closer to square first."
        )
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
        image = _to_8bit(image)
        image.load()
    except ImageError:
        raise
    except Exception as exc:  # truncated data, broken EXIF, decoder errors, metadata after the pixels
        raise _refused_decoding(exc, data, file_name, f"{name} is truncated or corrupt and can't be decoded") from None
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
