"""NIQE, the "completely blind" image quality score (lower is more natural).

Mittal, Soundararajan and Bovik, "Making a 'Completely Blind' Image Quality
Analyzer", IEEE Signal Processing Letters 20(3), 2013. The paper's SRGAN
results look natural although their PSNR is low; NIQE needs no reference and
measures how far an image's local statistics are from those of pristine
photographs.

The features are computed as the authors' MATLAB release computes them
(``computequality.m``, ``computefeature.m``, ``estimateaggdparam.m``), so that
scores against their pristine model are the published NIQE:

1. Luminance: MATLAB's ``rgb2ycbcr`` Y (BT.601, [16, 235], rounded, as
   ``srgan.metrics.rgb_to_y``; the convention of SR papers and BasicSR); grey
   images as they are. Optionally a border is cropped first.
2. MSCN coefficients: (I - mu) / (sigma + 1), mu and sigma local Gaussian-weighted
   mean and deviation (7x7 window, sigma 7/6, replicated edges).
3. For every 96x96 block, 18 features: an asymmetric generalized Gaussian (AGGD)
   fit to the MSCN values (shape, mean of the two scales) and AGGD fits to the
   products of each value with its neighbour to the left, above and on both
   diagonals, the block wrapping round as MATLAB's ``circshift`` does (shape,
   mean, left scale, right scale). Again on the image halved by MATLAB's
   bicubic ``imresize`` (48x48 blocks there, the same regions): 36 features.
   Shapes come from MATLAB's lookup: the nearest entry of a table over
   0.2:0.001:10.
4. A pristine model is the mean and covariance of the features of the sharpest
   blocks of natural photographs (mean local deviation above 0.75 x the image's
   sharpest block).
5. A test image's block features are fitted by a Gaussian too (NaN-aware, as
   MATLAB's ``nanmean`` / ``nancov``), and
   NIQE = sqrt((mu1 - mu2)^T ((S1 + S2) / 2)^+ (mu1 - mu2)).

Pristine models, by name (``srgan/niqe_models/``):

- ``standard`` (the default): the authors' own, ``modelparameters.mat`` of their
  MATLAB release, as BasicSR 1.4.2 ships it (``niqe_pris_params.npz``,
  Apache-2.0; see ``srgan/niqe_models/NOTICE.md``). Scores are comparable with
  published NIQE values.
- ``project``: fitted by ``python -m srgan.niqe fit`` on this project's 438
  training photos with the same features. Kept to compare with the standard
  one; its scores are not comparable with anyone else's.

CLI::

    python -m srgan.niqe score [--model standard|project|FILE.npz] [--crop-border N] IMAGE...
    python -m srgan.niqe fit [--data ../shared/data/train] [--out srgan/niqe_models/project.npz]
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
from scipy.special import gamma

from srgan.metrics import rgb_to_y

PATCH_SIZE = 96
SHARPNESS_THRESHOLD = 0.75
NUM_FEATURES = 36
MODELS_DIR = Path(__file__).with_name("niqe_models")
MODEL_FILES = {
    "standard": MODELS_DIR / "niqe_pris_params.npz",  # the authors' MATLAB model, via BasicSR 1.4.2
    "project": MODELS_DIR / "project.npz",  # fitted on this project's training photos
}
DEFAULT_MODEL = "standard"
FIT_COMMAND = "python -m srgan.niqe fit"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

# MSCN stabilising constant (the image is on a 0-255 scale).
_C = 1.0


class MissingPristineModelError(FileNotFoundError):
    """The pristine model file is absent."""


@dataclass(frozen=True)
class PristineModel:
    mean: np.ndarray  # (36,)
    cov: np.ndarray  # (36, 36)
    meta: dict


# ---------------------------------------------------------------- luminance


def luminance(image: np.ndarray) -> np.ndarray:
    """uint8 or float [0, 255] image, (H, W) grey or (H, W, 3) RGB -> float64 (H, W), rounded."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]  # alpha carries no luminance
    if image.ndim == 2:
        # MATLAB scores uint8 images: a float image is rounded as they would be.
        return np.round(image.astype(np.float64))
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
    # MATLAB's fspecial('gaussian', 7, 7/6) is separable; mode="nearest" is imfilter's 'replicate'.
    return correlate1d(correlate1d(x, _WINDOW, axis=0, mode="nearest"), _WINDOW, axis=1, mode="nearest")


def local_mean_and_deviation(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian-weighted local mean and standard deviation of a float plane."""
    mu = _blur(y)
    # abs(): rounding can make E[x^2] - mu^2 slightly negative on flat areas (MATLAB does the same).
    sigma = np.sqrt(np.abs(_blur(y * y) - mu * mu))
    return mu, sigma


# |I - mu| below this is rounding noise: the local mean of integer grey values is off by
# about 1e-13, and where a neighbourhood is flat the exact difference is 0.
_ROUNDING_NOISE = 1e-9


def mscn(y: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients of a float plane.

    Differences from the local mean at rounding-noise level are set to exactly 0, as in
    exact arithmetic. Otherwise the signs of that noise decide which side of the AGGD fit
    the many zeros of flat areas fall on, and NIQE of an image with flat areas would move by
    up to 0.05 with the order of floating-point sums (measured against BasicSR).
    """
    y = np.asarray(y, np.float64)
    mu, sigma = local_mean_and_deviation(y)
    centred = y - mu
    centred[np.abs(centred) < _ROUNDING_NOISE] = 0.0
    return centred / (sigma + _C)


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


# ---------------------------------------------------------------- the AGGD fit

# MATLAB's lookup table (estimateaggdparam.m): for a generalized Gaussian of shape g,
# (E|x|)^2 / E[x^2] = Gamma(2/g)^2 / (Gamma(1/g) Gamma(3/g)), increasing in g.
_SHAPES = np.arange(0.2, 10.001, 0.001)  # MATLAB's 0.2:0.001:10, 9801 entries
_RATIOS = gamma(2 / _SHAPES) ** 2 / (gamma(1 / _SHAPES) * gamma(3 / _SHAPES))


def _nearest_shape(ratio: np.ndarray) -> np.ndarray:
    """The table's shape whose ratio is nearest (MATLAB's min of squared differences).

    An undefined ratio (NaN) gets the table's first shape, 0.2: MATLAB's ``min`` of an
    all-NaN vector returns index 1, and the authors' pristine model was made that way.
    """
    ratio = np.asarray(ratio, np.float64)
    right = np.clip(np.searchsorted(_RATIOS, ratio), 1, len(_RATIOS) - 1)
    left = right - 1
    # Ties go to the lower index, as MATLAB's min returns the first minimum.
    pick = np.where((ratio - _RATIOS[left]) ** 2 <= (_RATIOS[right] - ratio) ** 2, left, right)
    return np.where(np.isnan(ratio), _SHAPES[0], _SHAPES[pick])


def fit_aggd(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetric generalized Gaussian fit along the last axis: (shape, left scale, right scale).

    Moment matching as MATLAB's ``estimateaggdparam``: the left/right deviations are the
    RMS of the negative / positive values, the shape comes from the normalised ratio
    (E|x|)^2 / E[x^2], and each scale is deviation x sqrt(Gamma(1/g) / Gamma(3/g)).
    Samples with no values on one side give NaN scales.
    """
    x = np.asarray(x, np.float64)
    square = x * x
    negative, positive = x < 0, x > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        left_std = np.sqrt(np.sum(np.where(negative, square, 0.0), axis=-1) / np.sum(negative, axis=-1))
        right_std = np.sqrt(np.sum(np.where(positive, square, 0.0), axis=-1) / np.sum(positive, axis=-1))
        gamma_hat = left_std / right_std
        mean_abs = np.mean(np.abs(x), axis=-1)
        r_hat = mean_abs * mean_abs / np.mean(square, axis=-1)
        # Undo the effect of the asymmetry on the ratio before the table lookup.
        r_norm = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1) ** 2
    shape = _nearest_shape(r_norm)
    to_scale = np.sqrt(gamma(1 / shape) / gamma(3 / shape))
    return shape, left_std * to_scale, right_std * to_scale


def aggd_mean(shape: np.ndarray, left_scale: np.ndarray, right_scale: np.ndarray) -> np.ndarray:
    """The mean of an AGGD: (beta_r - beta_l) Gamma(2/g) / Gamma(1/g) (the paper's Eq. 8)."""
    return (right_scale - left_scale) * gamma(2 / shape) / gamma(1 / shape)


# ---------------------------------------------------------------- features


def _to_patches(plane: np.ndarray, size: int) -> np.ndarray:
    """(rows*size, cols*size) -> (rows*cols, size, size), row-major patch order."""
    h, w = plane.shape
    return plane.reshape(h // size, size, w // size, size).swapaxes(1, 2).reshape(-1, size, size)


# MATLAB's circshift shifts of computefeature.m: (rows, columns).
_NEIGHBOUR_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))


def _patch_features(coefficients: np.ndarray) -> np.ndarray:
    """(P, s, s) MSCN patches -> (P, 18) features."""
    count = coefficients.shape[0]
    shape, left, right = fit_aggd(coefficients.reshape(count, -1))
    columns = [shape, (left + right) / 2]
    for shift in _NEIGHBOUR_SHIFTS:
        # Each block wraps round on itself, as circshift inside MATLAB's blkproc.
        product = coefficients * np.roll(coefficients, shift, axis=(1, 2))
        shape, left, right = fit_aggd(product.reshape(count, -1))
        columns.extend([shape, aggd_mean(shape, left, right), left, right])
    return np.stack(columns, axis=1)


def niqe_features(image: np.ndarray, *, patch_size: int = PATCH_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Per-patch NIQE features and sharpness of an image.

    Args:
        image: uint8 or float [0, 255], (H, W) grey or (H, W, 3) RGB.
        patch_size: side of the square patches (even).

    Returns:
        (features (P, 36), sharpness (P,)), P = (H // patch_size) * (W // patch_size);
        the image is cropped to whole patches from its top-left corner. Sharpness
        is the patch's mean local deviation (sigma of the MSCN step). Features of
        flat patches may be NaN.
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
        features.append(_patch_features(_to_patches(mscn(y), size)))
        if scale == 0:
            sharpness = _to_patches(local_mean_and_deviation(y)[1], size).mean(axis=(1, 2))
            y = halve_bicubic(y)
            size //= 2
    return np.concatenate(features, axis=1), sharpness


# ---------------------------------------------------------------- the score


def gaussian_fit(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of feature rows, NaN-aware as MATLAB's nanmean and nancov.

    The mean ignores NaN entries column by column; the covariance uses the rows
    without any NaN.
    """
    complete = features[np.all(np.isfinite(features), axis=1)]
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(np.where(np.isfinite(features), features, np.nan), axis=0)
    return mean, np.cov(complete, rowvar=False)


def niqe_distance(mean_a: np.ndarray, cov_a: np.ndarray, mean_b: np.ndarray, cov_b: np.ndarray) -> float:
    """sqrt(d^T ((S_a + S_b) / 2)^+ d), d = mean_a - mean_b (pseudo-inverse)."""
    d = mean_a - mean_b
    return float(np.sqrt(max(d @ np.linalg.pinv((cov_a + cov_b) / 2) @ d, 0.0)))


def niqe(image: np.ndarray, *, model: PristineModel | str | None = None, crop_border: int = 0) -> float:
    """NIQE of an image (lower = closer to natural photographs).

    Args:
        image: uint8 (or float in [0, 255]) array, (H, W) grey or (H, W, 3) RGB,
            at least two 96x96 patches in size after the crop.
        model: a pristine model, or its name ("standard", the authors', by default;
            "project") or .npz path.
        crop_border: pixels left out at each edge first (4 in ``srgan.evaluate``,
            as for PSNR/SSIM).

    Raises:
        ValueError: the image is too small or has too few textured patches.
        MissingPristineModelError: the model file is absent.
    """
    if not isinstance(model, PristineModel):
        model = load_pristine_model(model)
    patch_size = int(model.meta.get("patch_size", PATCH_SIZE))
    image = np.asarray(image)
    if crop_border < 0:
        raise ValueError(f"crop_border must be 0 or more, got {crop_border}")
    if crop_border:
        image = image[crop_border:-crop_border, crop_border:-crop_border]
    height, width = image.shape[:2]
    if (height // patch_size) * (width // patch_size) < 2:
        raise ValueError(
            f"NIQE needs an image of at least two {patch_size}x{patch_size} patches "
            f"(e.g. {patch_size}x{2 * patch_size} pixels"
            + (f" after a {crop_border} px border" if crop_border else "")
            + f"); this one is {width}x{height}"
        )
    features, _ = niqe_features(image, patch_size=patch_size)
    # Flat patches have no distribution to fit; with fewer than two textured ones there is no score.
    if np.sum(np.all(np.isfinite(features), axis=1)) < 2:
        raise ValueError("NIQE needs at least two patches with texture; this image is (almost) flat")
    mean, cov = gaussian_fit(features)
    return niqe_distance(model.mean, model.cov, mean, cov)


# ---------------------------------------------------------------- pristine models


@lru_cache(maxsize=4)
def _load_npz(path: str, mtime: float) -> PristineModel:
    with np.load(path, allow_pickle=False) as data:
        if "mu_pris_param" in data:  # BasicSR's copy of the authors' modelparameters.mat
            return PristineModel(mean=data["mu_pris_param"].reshape(-1).copy(), cov=data["cov_pris_param"].copy(),
                                 meta={"name": "standard", "patch_size": PATCH_SIZE,
                                       "source": "modelparameters.mat of the NIQE MATLAB release, "
                                                 "as niqe_pris_params.npz of BasicSR 1.4.2"})
        return PristineModel(mean=data["mean"].copy(), cov=data["cov"].copy(), meta=json.loads(str(data["meta"])))


def load_pristine_model(model: str | Path | None = None) -> PristineModel:
    """A pristine model by name ("standard" by default, "project") or .npz path."""
    if model is None:
        model = DEFAULT_MODEL
    if isinstance(model, str) and model in MODEL_FILES:
        path = MODEL_FILES[model]
        remedy = f"make it with `{FIT_COMMAND}`" if model == "project" else "it ships with the package: restore it from git"
    else:
        path = Path(model)
        if path.suffix != ".npz":
            raise ValueError(f"unknown NIQE model {str(model)!r}: name one of {', '.join(MODEL_FILES)} or a .npz file")
        remedy = f"make one with `{FIT_COMMAND} --out {path}`"
    if not path.is_file():
        raise MissingPristineModelError(f"NIQE's pristine model {path} is missing; {remedy}")
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
        selected.append(features[sharpness > sharpness_threshold * sharpness.max()])
        used += 1
        if progress and (i + 1) % 50 == 0:
            print(f"  {i + 1}/{len(files)} images", file=sys.stderr)
    features = np.concatenate(selected) if selected else np.zeros((0, NUM_FEATURES))
    if np.sum(np.all(np.isfinite(features), axis=1)) <= NUM_FEATURES:
        raise ValueError(f"only {len(features)} sharp patches in {folder}: too few to fit a {NUM_FEATURES}-D Gaussian")
    mean, cov = gaussian_fit(features)
    meta = {
        "name": "project",
        "data": str(folder),
        "images": used,
        "patches": int(len(features)),
        "patch_size": patch_size,
        "sharpness_threshold": sharpness_threshold,
        "features": NUM_FEATURES,
        "feature_code": "MATLAB release's (srgan.niqe)",
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
        model = load_pristine_model(args.model)
    except (MissingPristineModelError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    status = 0
    for name in args.images:
        try:
            loaded = load_image(name)
            # A grey file is scored on its grey values, as MATLAB would; anything else on Y.
            image = np.asarray(loaded.convert("L" if loaded.mode in ("1", "L", "LA", "I", "I;16") else "RGB"))
            print(f"{niqe(image, model=model, crop_border=args.crop_border):.4f}\t{name}")
        except (ImageError, ValueError, OSError) as err:
            # load_image's messages may already start with the file's name: say it once.
            message = str(err).removeprefix(f"{Path(name).name}: ")
            print(f"error: {name}: {message}", file=sys.stderr)
            status = 1
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m srgan.niqe", description="NIQE no-reference quality score.")
    commands = parser.add_subparsers(dest="command", required=True)
    fit = commands.add_parser("fit", help="fit a pristine model to photos (the 'project' model: the training photos)")
    fit.add_argument("--data", help="folder of pristine photos (default: $SRGAN_SHARED_DATA/train or ../shared/data/train)")
    fit.add_argument("--out", default=str(MODEL_FILES["project"]), help="output .npz (default: %(default)s)")
    fit.add_argument("--max-images", type=int, default=None, help="use only the first N images (sorted by path)")
    score = commands.add_parser("score", help="print the NIQE of images (lower = more natural)")
    score.add_argument("--model", default=DEFAULT_MODEL,
                       help="pristine model: standard (the authors', default), project, or a .npz file")
    score.add_argument("--crop-border", type=int, default=0, metavar="N", help="leave out N pixels at each edge")
    score.add_argument("images", nargs="+")
    args = parser.parse_args(argv)
    return _cmd_fit(args) if args.command == "fit" else _cmd_score(args)


if __name__ == "__main__":
    sys.exit(main())
