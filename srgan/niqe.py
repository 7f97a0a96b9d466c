"""NIQE, the "completely blind" image quality score (lower is more natural).

Mittal, Soundararajan and Bovik, "Making a 'Completely Blind' Image Quality
Analyzer", IEEE Signal Processing Letters 20(3), 2013. The paper's SRGAN
results look natural although their PSNR is low; NIQE needs no reference and
measures how far an image's local statistics are from those of pristine
photographs.

Recipe, as in the paper:

1. Luminance (BT.601 Y, as ``srgan.metrics.rgb_to_y``; grey images as they are).
2. MSCN coefficients: (I - mu) / (sigma + 1), mu and sigma local Gaussian-weighted
   mean and deviation (7x7 window, sigma 7/6, replicated edges).
3. For every 96x96 patch, 18 features: a generalized Gaussian fit to the MSCN
   values (shape, variance) and asymmetric generalized Gaussian fits to the
   products of horizontal, vertical and both diagonal neighbours (shape, mean,
   left variance, right variance). Again on the image halved by MATLAB-style
   bicubic resizing (48x48 patches there, the same regions): 36 features.
4. Pristine model: the features of the sharpest patches of natural photographs
   (mean local deviation above 0.75 x the image's sharpest patch), fitted by a
   multivariate Gaussian (mean, covariance). ``python -m srgan.niqe fit`` makes
   it from the training photos and saves ``srgan/niqe_pristine.npz``.
5. A test image's patch features (all patches) are fitted by a Gaussian too, and
   NIQE = sqrt((mu1 - mu2)^T ((S1 + S2) / 2)^+ (mu1 - mu2)).

Shapes are estimated by moment matching through a lookup table (as BRISQUE),
vectorised over all patches at once.

Scores are comparable with each other, not digit for digit with the authors'
MATLAB release: our pristine model comes from this project's training photos
(``meta`` in the .npz says which), the luminance is BT.601 Y rather than
``rgb2gray``, neighbour products stay inside each patch (no wrap-around) and
the MSCN fit is the paper's symmetric GGD.

CLI::

    python -m srgan.niqe fit [--data ../shared/data/train] [--out srgan/niqe_pristine.npz]
    python -m srgan.niqe score IMAGE...
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.ndimage import correlate1d
from scipy.special import gammaln

from srgan.metrics import rgb_to_y

PATCH_SIZE = 96
SHARPNESS_THRESHOLD = 0.75
NUM_FEATURES = 36
PRISTINE_PATH = Path(__file__).with_name("niqe_pristine.npz")
FIT_COMMAND = "python -m srgan.niqe fit"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

# MSCN stabilising constant (the image is on a 0-255 scale).
_C = 1.0


class MissingPristineModelError(FileNotFoundError):
    """The fitted pristine model file is absent."""


@dataclass(frozen=True)
class PristineModel:
    mean: np.ndarray  # (36,)
    cov: np.ndarray  # (36, 36)
    meta: dict


# ---------------------------------------------------------------- luminance


def luminance(image: np.ndarray) -> np.ndarray:
    """uint8 or float [0, 255] image, (H, W) grey or (H, W, 3) RGB -> float64 (H, W)."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]  # alpha carries no luminance
    if image.ndim == 2:
        return image.astype(np.float64)
    if image.ndim == 3 and image.shape[2] == 3:
        return rgb_to_y(image)
    raise ValueError(f"NIQE needs an (H, W) grey or (H, W, 3) RGB image, got shape {image.shape}")


# ---------------------------------------------------------------- MSCN


def _gaussian_window(size: int = 7, sigma: float = 7 / 6) -> np.ndarray:
    x = np.arange(size) - (size - 1) / 2
    w = np.exp(-(x * x) / (2 * sigma * sigma))
    return w / w.sum()


_WINDOW = _gaussian_window()


def _blur(x: np.ndarray) -> np.ndarray:
    # The 2D Gaussian is separable; mode="nearest" is MATLAB's 'replicate'.
    return correlate1d(correlate1d(x, _WINDOW, axis=0, mode="nearest"), _WINDOW, axis=1, mode="nearest")


def local_mean_and_deviation(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian-weighted local mean and standard deviation of a float plane."""
    mu = _blur(y)
    # abs(): rounding can make E[x^2] - mu^2 slightly negative on flat areas.
    sigma = np.sqrt(np.abs(_blur(y * y) - mu * mu))
    return mu, sigma


def mscn(y: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients of a float plane."""
    mu, sigma = local_mean_and_deviation(np.asarray(y, np.float64))
    return (y - mu) / (sigma + _C)


# ---------------------------------------------------------------- halving


def _half_bicubic_taps() -> np.ndarray:
    """The 8 weights of MATLAB's antialiased bicubic imresize at scale 0.5.

    At an exact factor of 2 every output pixel sits at the same offset between
    input pixels, so MATLAB's weight matrix reduces to one 8-tap filter applied
    with stride 2 (``srgan.imresize`` builds the same weights as a matrix).
    """
    distance = np.arange(3.5, -4.0, -1.0)  # output centre minus input centre, in input pixels
    ax = np.abs(distance * 0.5)  # the kernel is widened 2x when shrinking
    cubic = np.where(ax <= 1, 1.5 * ax**3 - 2.5 * ax**2 + 1,
                     np.where(ax <= 2, -0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2, 0.0))
    return cubic / cubic.sum()


_HALF_TAPS = _half_bicubic_taps()


def _halve_axis(x: np.ndarray, axis: int) -> np.ndarray:
    x = np.moveaxis(x, axis, 0)
    n_out = (x.shape[0] + 1) // 2
    # Symmetric padding (edge pixel repeated) is how MATLAB extends the image.
    padded = np.pad(x, [(4, 4)] + [(0, 0)] * (x.ndim - 1), mode="symmetric")
    out = np.zeros((n_out,) + x.shape[1:])
    for k, w in enumerate(_HALF_TAPS):
        out += w * padded[1 + k : 1 + k + 2 * n_out : 2]
    return np.moveaxis(out, 0, axis)


def halve_bicubic(y: np.ndarray) -> np.ndarray:
    """MATLAB ``imresize(y, 0.5)`` (bicubic, antialiased) of a float plane."""
    return _halve_axis(_halve_axis(np.asarray(y, np.float64), 0), 1)


# ---------------------------------------------------------------- GGD / AGGD fits

# Lookup table: for a generalized Gaussian of shape g, (E|x|)^2 / E[x^2] =
# Gamma(2/g)^2 / (Gamma(1/g) Gamma(3/g)), increasing in g (0 at g -> 0, 3/4 at g -> inf).
_SHAPES = np.arange(0.2, 10.0 + 1e-9, 0.001)
_RATIOS = np.exp(2 * gammaln(2 / _SHAPES) - gammaln(1 / _SHAPES) - gammaln(3 / _SHAPES))


def _shape_from_ratio(ratio: np.ndarray) -> np.ndarray:
    # Linear interpolation in the table; out-of-range ratios clip to 0.2 or 10.
    return np.interp(ratio, _RATIOS, _SHAPES)


def fit_ggd(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Generalized Gaussian (zero mean) fit along the last axis: (shape, variance).

    Moment matching: (E|x|)^2 / E[x^2] determines the shape; the variance is E[x^2].
    A constant-zero sample has no shape: NaN.
    """
    x = np.asarray(x, np.float64)
    variance = np.mean(x * x, axis=-1)
    mean_abs = np.mean(np.abs(x), axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        shape = _shape_from_ratio(mean_abs * mean_abs / variance)
    return np.where(variance > 0, shape, np.nan), variance


def fit_aggd(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetric generalized Gaussian fit along the last axis.

    Returns (shape, mean, left variance, right variance), the left/right
    variances being E[x^2] over the negative / positive values (BRISQUE's
    sigma_l^2, sigma_r^2). Samples with no values on one side give NaN.
    """
    x = np.asarray(x, np.float64)
    square = x * x
    negative, positive = x < 0, x > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        left_var = np.sum(np.where(negative, square, 0.0), axis=-1) / np.sum(negative, axis=-1)
        right_var = np.sum(np.where(positive, square, 0.0), axis=-1) / np.sum(positive, axis=-1)
        gamma_hat = np.sqrt(left_var / right_var)
        mean_abs = np.mean(np.abs(x), axis=-1)
        r_hat = mean_abs * mean_abs / np.mean(square, axis=-1)
        # Undo the effect of the asymmetry on the ratio before the table lookup.
        r_norm = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1) ** 2
        shape = _shape_from_ratio(r_norm)
        shape = np.where(np.isfinite(r_norm), shape, np.nan)
        # Scale parameters beta = sigma * sqrt(Gamma(1/g) / Gamma(3/g)).
        to_beta = np.exp(0.5 * (gammaln(1 / shape) - gammaln(3 / shape)))
        mean = (np.sqrt(right_var) - np.sqrt(left_var)) * to_beta * np.exp(gammaln(2 / shape) - gammaln(1 / shape))
    return shape, mean, left_var, right_var


# ---------------------------------------------------------------- features


def _to_patches(plane: np.ndarray, size: int) -> np.ndarray:
    """(rows*size, cols*size) -> (rows*cols, size, size), row-major patch order."""
    h, w = plane.shape
    return plane.reshape(h // size, size, w // size, size).swapaxes(1, 2).reshape(-1, size, size)


def _patch_features(coefficients: np.ndarray) -> np.ndarray:
    """(P, s, s) MSCN patches -> (P, 18) features."""
    count = coefficients.shape[0]
    shape, variance = fit_ggd(coefficients.reshape(count, -1))
    columns = [shape, variance]
    c = coefficients
    neighbour_products = (
        c[:, :, :-1] * c[:, :, 1:],  # horizontal
        c[:, :-1, :] * c[:, 1:, :],  # vertical
        c[:, :-1, :-1] * c[:, 1:, 1:],  # main diagonal
        c[:, :-1, 1:] * c[:, 1:, :-1],  # anti-diagonal
    )
    for product in neighbour_products:
        columns.extend(fit_aggd(product.reshape(count, -1)))
    return np.stack(columns, axis=1)


def niqe_features(image: np.ndarray, *, patch_size: int = PATCH_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Per-patch NIQE features and sharpness of an image.

    Args:
        image: uint8 or float [0, 255], (H, W) grey or (H, W, 3) RGB.
        patch_size: side of the square patches (even).

    Returns:
        (features (P, 36), sharpness (P,)), P = (H // patch_size) * (W // patch_size);
        the image is cropped to whole patches from its top-left corner. Sharpness
        is the patch's mean local deviation (sigma of the MSCN step).
    """
    if patch_size % 2:
        raise ValueError(f"patch_size must be even (the second scale halves it), got {patch_size}")
    y = luminance(image)
    rows, cols = y.shape[0] // patch_size, y.shape[1] // patch_size
    if rows * cols == 0:
        return np.zeros((0, NUM_FEATURES)), np.zeros(0)
    y = y[: rows * patch_size, : cols * patch_size]
    features, sharpness = [], None
    size = patch_size
    for scale in range(2):
        mu, sigma = local_mean_and_deviation(y)
        coefficients = (y - mu) / (sigma + _C)
        features.append(_patch_features(_to_patches(coefficients, size)))
        if scale == 0:
            sharpness = _to_patches(sigma, size).mean(axis=(1, 2))
            y = halve_bicubic(y)
            size //= 2
    return np.concatenate(features, axis=1), sharpness


# ---------------------------------------------------------------- the score


def _gaussian_fit(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return features.mean(axis=0), np.cov(features, rowvar=False)


def niqe_distance(mean_a: np.ndarray, cov_a: np.ndarray, mean_b: np.ndarray, cov_b: np.ndarray) -> float:
    """sqrt(d^T ((S_a + S_b) / 2)^+ d), d = mean_a - mean_b (pseudo-inverse)."""
    d = mean_a - mean_b
    return float(np.sqrt(max(d @ np.linalg.pinv((cov_a + cov_b) / 2) @ d, 0.0)))


def niqe(image: np.ndarray, *, model: PristineModel | None = None) -> float:
    """NIQE of an image (lower = closer to natural photographs).

    Args:
        image: uint8 (or float in [0, 255]) array, (H, W) grey or (H, W, 3) RGB,
            at least two 96x96 patches in size.
        model: pristine model; the package's fitted one by default.

    Raises:
        ValueError: the image is too small or has too few textured patches.
        MissingPristineModelError: no fitted model (run ``python -m srgan.niqe fit``).
    """
    model = model or load_pristine_model()
    patch_size = int(model.meta.get("patch_size", PATCH_SIZE))
    image = np.asarray(image)
    height, width = image.shape[:2]
    if (height // patch_size) * (width // patch_size) < 2:
        raise ValueError(
            f"NIQE needs an image of at least two {patch_size}x{patch_size} patches "
            f"(e.g. {patch_size}x{2 * patch_size} pixels); this one is {width}x{height}"
        )
    features, _ = niqe_features(image, patch_size=patch_size)
    # Flat patches have no distribution to fit (NaN features); leave them out.
    features = features[np.all(np.isfinite(features), axis=1)]
    if len(features) < 2:
        raise ValueError("NIQE needs at least two patches with texture; this image is (almost) flat")
    mean, cov = _gaussian_fit(features)
    return niqe_distance(model.mean, model.cov, mean, cov)


# ---------------------------------------------------------------- the pristine model


@lru_cache(maxsize=4)
def _load_npz(path: str, mtime: float) -> PristineModel:
    with np.load(path, allow_pickle=False) as data:
        return PristineModel(mean=data["mean"].copy(), cov=data["cov"].copy(), meta=json.loads(str(data["meta"])))


def load_pristine_model(path: str | Path | None = None) -> PristineModel:
    """The fitted pristine model (``srgan/niqe_pristine.npz`` by default)."""
    path = Path(path) if path is not None else PRISTINE_PATH
    if not path.is_file():
        raise MissingPristineModelError(
            f"NIQE's pristine model {path} is missing; make it with `{FIT_COMMAND}` "
            "(it fits the training photos in a few minutes)"
        )
    return _load_npz(str(path), path.stat().st_mtime)


def save_pristine_model(model: PristineModel, path: str | Path) -> None:
    np.savez(path, mean=model.mean, cov=model.cov, meta=np.array(json.dumps(model.meta, sort_keys=True)))


def image_files(folder: Path) -> list[Path]:
    """Image files under a folder (recursively), sorted for a reproducible fit."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def fit_pristine_model(
    folder: str | Path,
    *,
    patch_size: int = PATCH_SIZE,
    sharpness_threshold: float = SHARPNESS_THRESHOLD,
    max_images: int | None = None,
    progress: bool = False,
) -> PristineModel:
    """Fit NIQE's pristine model to the sharpest patches of the photos in a folder.

    From each image, the patches whose sharpness exceeds ``sharpness_threshold``
    times that image's sharpest patch are kept (the paper's selection); their
    36 features over all images are fitted by a multivariate Gaussian.
    """
    files = image_files(Path(folder))[:max_images]
    if not files:
        raise ValueError(f"no images found in {folder}")
    selected, used = [], 0
    for i, path in enumerate(files):
        features, sharpness = niqe_features(_read_rgb(path), patch_size=patch_size)
        if len(features) == 0:
            continue  # smaller than one patch
        keep = (sharpness > sharpness_threshold * sharpness.max()) & np.all(np.isfinite(features), axis=1)
        selected.append(features[keep])
        used += 1
        if progress and (i + 1) % 50 == 0:
            print(f"  {i + 1}/{len(files)} images", file=sys.stderr)
    features = np.concatenate(selected) if selected else np.zeros((0, NUM_FEATURES))
    if len(features) <= NUM_FEATURES:
        raise ValueError(f"only {len(features)} sharp patches in {folder}: too few to fit a {NUM_FEATURES}-D Gaussian")
    mean, cov = _gaussian_fit(features)
    meta = {
        "data": str(folder),
        "images": used,
        "patches": int(len(features)),
        "patch_size": patch_size,
        "sharpness_threshold": sharpness_threshold,
        "features": NUM_FEATURES,
        "luminance": "BT.601 Y (srgan.metrics.rgb_to_y)",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
    }
    return PristineModel(mean=mean, cov=cov, meta=meta)


# ---------------------------------------------------------------- CLI


def _display_path(path: Path) -> str:
    """The path relative to the repository when it can be (no home folders in the npz)."""
    repo = Path(__file__).resolve().parent.parent
    try:
        return os.path.relpath(path.resolve(), repo)
    except ValueError:
        return str(path)


def _cmd_fit(args: argparse.Namespace) -> int:
    from srgan.data import default_train_folder  # the training photos are NIQE's pristine set

    folder = Path(args.data) if args.data else default_train_folder()
    if not folder.is_dir():
        print(f"error: training photos not found at {folder} (give --data or set SRGAN_SHARED_DATA)", file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        model = fit_pristine_model(folder, max_images=args.max_images, progress=True)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    model.meta["data"] = _display_path(folder)
    model.meta["fit_seconds"] = round(seconds, 1)
    save_pristine_model(model, args.out)
    print(f"fitted {model.meta['patches']} patches from {model.meta['images']} images in {seconds:.1f} s -> {args.out}")
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from srgan.images import ImageError, load_image

    try:
        model = load_pristine_model()
    except MissingPristineModelError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    status = 0
    for name in args.images:
        try:
            image = np.asarray(load_image(name).convert("RGB"))
            print(f"{niqe(image, model=model):.4f}\t{name}")
        except (ImageError, ValueError, OSError) as err:
            # load_image's messages may already start with the file's name: say it once.
            message = str(err).removeprefix(f"{Path(name).name}: ")
            print(f"error: {name}: {message}", file=sys.stderr)
            status = 1
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m srgan.niqe", description="NIQE no-reference quality score.")
    commands = parser.add_subparsers(dest="command", required=True)
    fit = commands.add_parser("fit", help="fit the pristine model to the training photos")
    fit.add_argument("--data", help="folder of pristine photos (default: $SRGAN_SHARED_DATA/train or ../shared/data/train)")
    fit.add_argument("--out", default=str(PRISTINE_PATH), help="output .npz (default: %(default)s)")
    fit.add_argument("--max-images", type=int, default=None, help="use only the first N images (sorted by path)")
    score = commands.add_parser("score", help="print the NIQE of images (lower = more natural)")
    score.add_argument("images", nargs="+")
    args = parser.parse_args(argv)
    return _cmd_fit(args) if args.command == "fit" else _cmd_score(args)


if __name__ == "__main__":
    sys.exit(main())
