"""PSNR and SSIM the way the paper's tables were computed.

The convention of the SR literature (and of the MATLAB scripts behind the
paper's Table 2): outputs rounded to uint8, converted to the Y channel of
BT.601 YCbCr (rounded, as MATLAB's ``rgb2ycbcr`` on uint8), a border of
``scale`` pixels removed, then PSNR with peak 255 and SSIM of Wang et al.
(Gaussian window 11x11, sigma 1.5). Greyscale images are scored on their grey
values directly, as the MATLAB scripts do.

These are pure functions on numpy arrays, shared by evaluation, training
validation, the demo and the study.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import correlate1d

# BT.601 luma for RGB in [0, 255] mapped to Y in [16, 235].
_Y_WEIGHTS = np.array([65.481, 128.553, 24.966]) / 255.0
# Plain luma, used to compare an RGB output with a greyscale reference.
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])


def rgb_to_y(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) RGB -> float64 (H, W) BT.601 Y in [16, 235], rounded."""
    rgb = np.asarray(image, dtype=np.float64)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {rgb.shape}")
    return np.round(16.0 + rgb @ _Y_WEIGHTS)


def _check_uint8(image: np.ndarray, name: str) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"{name} must be uint8 (outputs are rounded before scoring), got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"{name} must be (H, W) grey or (H, W, 3) RGB, got shape {image.shape}")
    return image


def scoring_channel(sr: np.ndarray, hr: np.ndarray, *, border: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """The two float64 planes that PSNR and SSIM compare, borders removed.

    RGB references are compared on Y. A greyscale reference is compared on its
    grey values; an RGB output against it is reduced to plain luma.
    """
    sr, hr = _check_uint8(sr, "sr"), _check_uint8(hr, "hr")
    if sr.shape[:2] != hr.shape[:2]:
        raise ValueError(f"sizes differ: sr {sr.shape[:2]} vs hr {hr.shape[:2]}")
    if hr.ndim == 2:
        ref = hr.astype(np.float64)
        out = sr.astype(np.float64) if sr.ndim == 2 else np.round(sr.astype(np.float64) @ _LUMA_WEIGHTS)
    else:
        ref = rgb_to_y(hr)
        out = rgb_to_y(sr) if sr.ndim == 3 else np.round(16.0 + sr.astype(np.float64) * 219.0 / 255.0)
    if border:
        if min(ref.shape) <= 2 * border:
            raise ValueError(f"image {ref.shape} too small for a {border}-pixel border crop")
        ref = ref[border:-border, border:-border]
        out = out[border:-border, border:-border]
    return out, ref


def psnr(a: np.ndarray, b: np.ndarray, *, peak: float = 255.0) -> float:
    """PSNR in dB between two float arrays (inf when identical)."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    if mse == 0:
        return float("inf")
    return 10.0 * np.log10(peak * peak / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size) - (size - 1) / 2
    w = np.exp(-(x * x) / (2 * sigma * sigma))
    return w / w.sum()


def _blur(x: np.ndarray, window: np.ndarray) -> np.ndarray:
    return correlate1d(correlate1d(x, window, axis=0, mode="reflect"), window, axis=1, mode="reflect")


def ssim(a: np.ndarray, b: np.ndarray, *, data_range: float = 255.0, win_size: int = 11, sigma: float = 1.5) -> float:
    """Mean SSIM (Wang et al. 2004) of two float planes.

    Gaussian-weighted local statistics with population covariances; the mean is
    taken over the map less a margin of half a window, which is how
    scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False)`` computes it.
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"ssim needs two planes of one shape, got {a.shape} and {b.shape}")
    if min(a.shape) < win_size:
        raise ValueError(f"image {a.shape} smaller than the {win_size}x{win_size} SSIM window")
    window = _gaussian_window(win_size, sigma)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = _blur(a, window), _blur(b, window)
    var_a = _blur(a * a, window) - mu_a * mu_a
    var_b = _blur(b * b, window) - mu_b * mu_b
    cov = _blur(a * b, window) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    pad = (win_size - 1) // 2
    return float(ssim_map[pad:-pad, pad:-pad].mean())


def psnr_y(sr: np.ndarray, hr: np.ndarray, *, border: int = 4) -> float:
    """Y-channel PSNR (dB) of a uint8 output against its uint8 reference."""
    out, ref = scoring_channel(sr, hr, border=border)
    return psnr(out, ref)


def ssim_y(sr: np.ndarray, hr: np.ndarray, *, border: int = 4) -> float:
    """Y-channel SSIM of a uint8 output against its uint8 reference."""
    out, ref = scoring_channel(sr, hr, border=border)
    return ssim(out, ref)


# BT.601 chroma (Cb, Cr) for RGB in [0, 255], around 128.
_CBCR_WEIGHTS = np.array([[-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]]).T / 255.0


def rgb_to_cbcr(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) RGB -> float64 (H, W, 2) BT.601 chroma offsets (Cb, Cr) from 128."""
    rgb = np.asarray(image, dtype=np.float64)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {rgb.shape}")
    return rgb @ _CBCR_WEIGHTS


def psnr_cbcr(sr: np.ndarray, hr: np.ndarray, *, border: int = 4) -> float:
    """PSNR (dB) of the BT.601 chroma planes (Cb and Cr together) of two uint8 RGB images.

    The paper's metrics see only Y, and so does NIQE; colour speckle or a colour cast, which
    an adversarially trained generator can add, shows up here."""
    sr, hr = _check_uint8(sr, "sr"), _check_uint8(hr, "hr")
    if sr.ndim != 3 or hr.ndim != 3 or sr.shape != hr.shape:
        raise ValueError(f"psnr_cbcr needs two RGB images of one size, got {sr.shape} and {hr.shape}")
    cut = (slice(border, -border), slice(border, -border)) if border else (slice(None), slice(None))
    return psnr(rgb_to_cbcr(sr[cut]), rgb_to_cbcr(hr[cut]))


def texture_energy(image: np.ndarray, *, border: int = 4) -> float:
    """Mean squared Laplacian of a uint8 image's luminance (Y; grey values for grey images).

    High-frequency energy: SRGAN's point is detail where SRResNet is smooth, so the ratio
    ``texture_energy(sr) / texture_energy(hr)`` is near 1 for a generator that makes as much
    texture as the original, and far under 1 for a smooth one (PSNR and SSIM cannot tell)."""
    image = _check_uint8(image, "image")
    plane = image.astype(np.float64) if image.ndim == 2 else rgb_to_y(image)
    if border:
        if min(plane.shape) <= 2 * border + 2:
            raise ValueError(f"image {plane.shape} too small for a {border}-pixel border crop")
        plane = plane[border:-border, border:-border]
    # The 4-neighbour Laplacian, on interior pixels only (no padding makes edges).
    laplacian = (plane[1:-1, :-2] + plane[1:-1, 2:] + plane[:-2, 1:-1] + plane[2:, 1:-1]
                 - 4 * plane[1:-1, 1:-1])
    return float(np.mean(laplacian * laplacian))


def colour_shift(sr: np.ndarray, hr: np.ndarray, *, border: int = 4) -> float:
    """The largest per-channel mean difference |mean(SR_c) - mean(HR_c)| in grey levels (R, G, B).

    A brightness or colour cast over the whole image; zero for a generator that keeps its
    input's colours. Grey images have one channel; an RGB output against a grey reference
    is compared on plain luma."""
    sr, hr = _check_uint8(sr, "sr"), _check_uint8(hr, "hr")
    if sr.shape[:2] != hr.shape[:2]:
        raise ValueError(f"sizes differ: sr {sr.shape[:2]} vs hr {hr.shape[:2]}")
    if hr.ndim == 2 and sr.ndim == 3:
        sr = sr.astype(np.float64) @ _LUMA_WEIGHTS
    elif hr.ndim == 3 and sr.ndim == 2:
        sr = np.repeat(sr[..., None], 3, axis=2)
    cut = (slice(border, -border), slice(border, -border)) if border else (slice(None), slice(None))
    difference = sr[cut].astype(np.float64) - hr[cut].astype(np.float64)
    means = difference.reshape(-1, 1 if difference.ndim == 2 else 3).mean(axis=0)
    return float(np.abs(means).max())
