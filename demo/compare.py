"""What the demo computes, as plain functions the UI, the API and the tests call.

One call of `compare` decides the mode, runs bicubic, SRResNet and SRGAN 4x
upscaling and measures each:

- HR mode (the image is a ground truth): it is cropped to a multiple of 4,
  downscaled 4x with the MATLAB-compatible bicubic the benchmarks use, and every
  method's result is scored against it (PSNR / SSIM on Y, as in the paper; NIQE).
- LR mode (the image is the low-resolution input): it is upscaled 4x; there is no
  reference, so only the no-reference NIQE is given.

Auto picks HR when both sides are at least `AUTO_HR_MIN_SIDE` pixels (such an
image still gives a usable LR input of at least 64 px a side) and LR otherwise.
Pixel limit: inputs over `max_pixels` are refused, and so are LR-mode inputs over
a quarter of it (their outputs have 16x the pixels).
"""

from __future__ import annotations

import io
import re
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from srgan.images import crop_to_multiple, default_max_pixels, load_image
from srgan.inference import Upscaler, downscale, required_weights
from srgan.metrics import psnr_y, ssim_y
from srgan.weights import METHOD_WEIGHTS, WEIGHTS, MissingWeightsError

SCALE = 4
MODES = ("Auto", "Treat as HR", "Treat as LR")
AUTO_HR_MIN_SIDE = 256
# Treating an image as HR needs it scored: after the 4 px border crop of the metrics,
# SSIM's 11x11 window must fit (20 - 8 = 12 px); its LR input is then 5 px or more a side.
MIN_HR_SIDE = 20
# LR inputs may use 1/4 of the input pixel limit: their outputs have 16x the pixels.
LR_PIXEL_DIVISOR = 4

RESULT_METHODS = ("bicubic", "srresnet", "srgan")
LABELS = {
    "bicubic": "Bicubic",
    "srresnet": "SRResNet",
    "srgan": "SRGAN",
    "hr": "HR (original)",
    "lr": "LR input",
}
METRIC_HEADERS = ["Method", "Time (s)", "PSNR (dB)", "SSIM", "NIQE", "Note"]

ProgressFn = Callable[[float, str], None]


class CompareError(ValueError):
    """A request the demo cannot serve; str() is a message for the user."""


@dataclass
class MethodResult:
    method: str
    image: Image.Image | None = None
    seconds: float | None = None
    psnr: float | None = None
    ssim: float | None = None
    niqe: float | None = None
    # Why there is no image (missing weights), shown in the method's panel.
    note: str = ""


@dataclass
class Comparison:
    mode: str  # "hr" or "lr"
    mode_reason: str
    lr: Image.Image
    hr: Image.Image | None
    alpha: float
    results: dict[str, MethodResult] = field(default_factory=dict)
    hr_niqe: float | None = None
    name: str = "image"

    def labelled_images(self) -> dict[str, Image.Image]:
        """Every full-size image there is to compare: the results, then HR when known."""
        images = {method_label(m, self.alpha): r.image for m, r in self.results.items() if r.image is not None}
        if self.hr is not None:
            images[LABELS["hr"]] = self.hr
        return images


def method_label(method: str, alpha: float = 1.0) -> str:
    if method == "srgan" and alpha < 1.0:
        return f"SRGAN (α = {alpha:.2f})"
    return LABELS[method]


def file_stem(source: object) -> str:
    """The name the outputs' files are given: the upload's stem, only word characters, '.' and
    '-', at most 48 characters (an uploaded name may be anything, and as long as a file
    system allows: the outputs add a suffix)."""
    stem = Path(source).stem if isinstance(source, (str, Path)) else ""
    return re.sub(r"[^\w.-]", "_", stem)[:48].strip(".") or "image"


def missing_weights_note(method: str) -> str:
    """Markdown: the method's missing weights file and the command (alone in the code span) that makes it."""
    info = WEIGHTS[METHOD_WEIGHTS[method]]
    return (
        f"{LABELS[method]} weights are not in this package yet ({info.filename}): they are made "
        f"{info.where}, with `{info.recipe}`."
    )


def choose_mode(size: tuple[int, int], requested: str = "Auto", *, max_pixels: int | None = None) -> tuple[str, str]:
    """Return ("hr" | "lr", a sentence saying why) for an image of `size` (width, height).

    With `max_pixels`, an image treated as LR may have at most a quarter of it, so its
    output (16x the pixels) stays within 4x the input limit.
    """
    chosen, reason = _choose_mode(size, requested)
    width, height = size
    if chosen == "lr" and max_pixels is not None and width * height > max_pixels // LR_PIXEL_DIVISOR:
        raise CompareError(
            f"Treated as LR, this {width}x{height} image would become {SCALE * width}x{SCALE * height}; "
            f"LR inputs are limited to {max_pixels / LR_PIXEL_DIVISOR / 1e6:.2f} megapixels. "
            f"Treat it as HR, or crop it."
        )
    return chosen, reason


def _choose_mode(size: tuple[int, int], requested: str) -> tuple[str, str]:
    width, height = size
    if requested not in MODES:
        raise CompareError(f"Unknown mode {requested!r}: choose one of {', '.join(MODES)}.")
    if requested == "Treat as HR":
        if min(width, height) < MIN_HR_SIDE:
            raise CompareError(
                f"The image is {width}x{height}: too small to treat as HR (it must be at least "
                f"{MIN_HR_SIDE} px a side to be scored). Treat it as LR, or use a larger image."
            )
        return "hr", "Treated as HR (you chose it): downscaled 4x, then super-resolved and scored against it."
    if requested == "Treat as LR":
        return "lr", "Treated as LR (you chose it): upscaled 4x; no reference, so NIQE only."
    if min(width, height) >= AUTO_HR_MIN_SIDE:
        return "hr", (
            f"Auto: {width}x{height} has both sides ≥ {AUTO_HR_MIN_SIDE} px, so it is treated as HR: "
            f"downscaled 4x (MATLAB bicubic), super-resolved, and scored against the original."
        )
    return "lr", (
        f"Auto: {width}x{height} has a side < {AUTO_HR_MIN_SIDE} px, so it is treated as LR: "
        f"upscaled 4x; no reference, so NIQE only."
    )


def check_alpha(alpha: float | None) -> float:
    if alpha is None:
        return 1.0
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise CompareError(f"α must be between 0 (SRResNet) and 1 (SRGAN), got {alpha}.")
    return alpha


def _niqe_or_none(image: Image.Image) -> float | None:
    """NIQE of an image, or None where the metric's pristine model is absent or the image is too small."""
    try:
        from srgan.niqe import niqe
    except ImportError:
        return None
    try:
        return float(niqe(np.asarray(image.convert("RGB"))))
    except (ValueError, FileNotFoundError):  # too small / flat; no fitted pristine model
        return None


def _run_method(upscaler: Upscaler, lr: Image.Image, method: str, alpha: float) -> MethodResult:
    blend = method == "srgan" and alpha < 1.0  # interpolates both networks' weights (α = 0: SRResNet's)
    needed = required_weights(method, alpha if blend else None)
    available = set(upscaler.available_methods())
    missing = [m for m in RESULT_METHODS if METHOD_WEIGHTS.get(m) in needed and m not in available]
    if missing:
        note = " ".join(missing_weights_note(m) for m in missing)
        if blend and missing == ["srresnet"]:
            note = "Blending SRResNet into SRGAN (α < 1) needs both networks. " + note
        return MethodResult(method, note=note)
    start = time.perf_counter()
    try:
        if method == "srgan" and alpha < 1.0:
            image = upscaler.upscale(lr, "srgan", alpha=alpha)
        else:
            image = upscaler.upscale(lr, method)
    except MissingWeightsError as error:  # weights removed while the app runs
        return MethodResult(method, note=str(error))
    return MethodResult(method, image=image, seconds=time.perf_counter() - start)


def compare(
    source: str | Path | bytes | Image.Image,
    *,
    upscaler: Upscaler,
    mode: str = "Auto",
    alpha: float | None = 1.0,
    max_pixels: int | None = None,
    with_niqe: bool = True,
    progress: ProgressFn | None = None,
) -> Comparison:
    """Decode `source`, pick the mode, and run every method on it.

    Raises ImageError / CompareError (both ValueErrors with a user-facing message)
    for inputs the demo refuses.
    """
    report = progress or (lambda fraction, message: None)
    alpha = check_alpha(alpha)
    report(0.0, "Reading the image")
    limit = default_max_pixels() if max_pixels is None else max_pixels
    image = load_image(source, max_pixels=limit)
    chosen, reason = choose_mode(image.size, mode, max_pixels=limit)
    if chosen == "hr":
        hr = crop_to_multiple(image, SCALE)
        lr = downscale(hr, factor=SCALE)
    else:
        hr, lr = None, image
    name = file_stem(source)
    comparison = Comparison(mode=chosen, mode_reason=reason, lr=lr, hr=hr, alpha=alpha, name=name)

    for step, method in enumerate(RESULT_METHODS):
        report(step / len(RESULT_METHODS), f"Upscaling with {method_label(method, alpha)}")
        comparison.results[method] = _run_method(upscaler, lr, method, alpha)

    report(0.95, "Measuring")
    for result in comparison.results.values():
        _score(result, hr, with_niqe=with_niqe)
    if hr is not None and with_niqe:
        comparison.hr_niqe = _niqe_or_none(hr)
    report(1.0, "Done")
    return comparison


def _score(result: MethodResult, hr: Image.Image | None, *, with_niqe: bool) -> None:
    """Fill in a result's PSNR / SSIM (against `hr`, when known) and NIQE."""
    if result.image is None:
        return
    if hr is not None:
        output, reference = np.asarray(result.image.convert("RGB")), np.asarray(hr.convert("RGB"))
        result.psnr = psnr_y(output, reference, border=SCALE)
        result.ssim = ssim_y(output, reference, border=SCALE)
    if with_niqe:
        result.niqe = _niqe_or_none(result.image)


def rerun_srgan(
    comparison: Comparison,
    *,
    upscaler: Upscaler,
    alpha: float | None,
    with_niqe: bool = True,
    progress: ProgressFn | None = None,
) -> Comparison:
    """A copy of `comparison` with only the SRGAN result redone at another α (the others are kept)."""
    report = progress or (lambda fraction, message: None)
    alpha = check_alpha(alpha)
    report(0.0, f"Upscaling with {method_label('srgan', alpha)}")
    result = _run_method(upscaler, comparison.lr, "srgan", alpha)
    report(0.9, "Measuring")
    _score(result, comparison.hr, with_niqe=with_niqe)
    report(1.0, "Done")
    return replace(comparison, alpha=alpha, results={**comparison.results, "srgan": result})


def _fmt(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def metrics_rows(comparison: Comparison) -> list[list[str]]:
    """One row per method (and HR when known), in METRIC_HEADERS order."""
    rows = []
    for method, r in comparison.results.items():
        note = "weights missing" if r.image is None else ""
        rows.append(
            [method_label(method, comparison.alpha), _fmt(r.seconds, 2), _fmt(r.psnr, 2), _fmt(r.ssim, 4), _fmt(r.niqe, 2), note]
        )
    if comparison.hr is not None:
        rows.append([LABELS["hr"], "–", "∞", "1.0000", _fmt(comparison.hr_niqe, 2), "reference"])
    return rows


def panel_caption(comparison: Comparison, method: str) -> str:
    """The Markdown under a method's panel: its scores, or why it is empty."""
    r = comparison.results[method]
    if r.image is None:
        return f"⚠️ {r.note}"
    parts = [f"{r.seconds:.2f} s"]
    if method == "srgan" and comparison.alpha < 1.0:
        parts.insert(0, f"α = {comparison.alpha:.2f} blend")
    if r.psnr is not None:
        parts += [f"PSNR {r.psnr:.2f} dB", f"SSIM {r.ssim:.4f}"]
    if r.niqe is not None:
        parts.append(f"NIQE {r.niqe:.2f}")
    return " · ".join(parts)


def hr_caption(comparison: Comparison) -> str:
    if comparison.hr is None:
        return "No reference: the image was treated as LR."
    w, h = comparison.hr.size
    text = f"The original, {w}x{h}"
    if comparison.hr_niqe is not None:
        text += f" · NIQE {comparison.hr_niqe:.2f}"
    return text


def zoom_crops(
    comparison: Comparison, *, center_x: float, center_y: float, crop: int = 48, zoom: int = 6
) -> list[tuple[Image.Image, str]]:
    """The same `crop` x `crop` region of every image, enlarged `zoom` times with nearest neighbour.

    center_x / center_y are fractions (0 to 1) of the output's width / height; the
    region is shifted inside the image near the borders. The LR input's matching
    region (crop / 4 px) is enlarged 4x more so every crop has the same size.
    """
    images = comparison.labelled_images()
    width, height = comparison.lr.width * SCALE, comparison.lr.height * SCALE
    crop = max(SCALE, min(crop, width, height) // SCALE * SCALE)
    left = int(round(min(max(center_x, 0.0), 1.0) * width - crop / 2))
    top = int(round(min(max(center_y, 0.0), 1.0) * height - crop / 2))
    left = min(max(left, 0), width - crop) // SCALE * SCALE
    top = min(max(top, 0), height - crop) // SCALE * SCALE
    box = (left, top, left + crop, top + crop)
    side = crop * zoom
    lr_box = tuple(v // SCALE for v in box)
    crops = [(comparison.lr.crop(lr_box).resize((side, side), Image.Resampling.NEAREST), f"{LABELS['lr']} (nearest)")]
    for label, image in images.items():
        crops.append((image.crop(box).resize((side, side), Image.Resampling.NEAREST), label))
    return crops


def point_to_fraction(index: tuple[int, int] | list[int], size: tuple[int, int]) -> tuple[float, float]:
    """A clicked pixel (x, y) of an image of `size` as fractions of its width and height."""
    x, y = index
    width, height = size
    return (x + 0.5) / width, (y + 0.5) / height


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def save_pngs(comparison: Comparison, out_dir: Path, *,
              encode: Callable[[Image.Image], bytes] = png_bytes) -> list[Path]:
    """Write each result (and the LR input used) as PNG into `out_dir`; return the paths.
    ``encode`` makes a PNG's bytes (the demo passes the files it has already written)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    lr_path = out_dir / f"{comparison.name}_lr_input.png"
    lr_path.write_bytes(encode(comparison.lr))
    paths.append(lr_path)
    for method, r in comparison.results.items():
        if r.image is None:
            continue
        suffix = f"_alpha{comparison.alpha:.2f}" if method == "srgan" and comparison.alpha < 1.0 else ""
        path = out_dir / f"{comparison.name}_{method}{suffix}_x{SCALE}.png"
        path.write_bytes(encode(r.image))
        paths.append(path)
    return paths


def new_run_dir(root: Path, *, keep: int = 20) -> Path:
    """A fresh folder under `root` for one run's downloads; only the newest `keep` runs are kept."""
    root.mkdir(parents=True, exist_ok=True)
    runs = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    for old in runs[: max(0, len(runs) - keep + 1)]:
        shutil.rmtree(old, ignore_errors=True)
    run_dir = root / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    run_dir.mkdir()
    return run_dir
