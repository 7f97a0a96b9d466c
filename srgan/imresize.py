"""MATLAB-compatible bicubic resize in PyTorch.

MATLAB's ``imresize(I, scale, 'bicubic')`` is the degradation behind the
paper's LR images and its bicubic baseline. It differs from
``torch.nn.functional.interpolate(..., mode='bicubic', antialias=True)`` in
three ways, all reproduced here: the cubic kernel uses a = -0.5 (PyTorch uses
-0.75), when shrinking the kernel is widened by 1/scale (antialiasing), and
the image is extended by symmetric (mirror) padding at its edges.

Each axis is resized by a dense (out x in) weight matrix, so a whole batch is
two matrix products on whatever device the tensor lives on.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor


def cubic(x: Tensor) -> Tensor:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's)."""
    ax = x.abs()
    ax2, ax3 = ax * ax, ax * ax * ax
    inner = 1.5 * ax3 - 2.5 * ax2 + 1
    outer = -0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2
    return torch.where(ax <= 1, inner, torch.where(ax <= 2, outer, torch.zeros_like(ax)))


@lru_cache(maxsize=64)
def _weights_cpu(in_len: int, out_len: int, scale: float, antialias: bool) -> Tensor:
    """The (out_len, in_len) float64 matrix that resizes one axis like MATLAB."""
    kernel_width = 4.0
    if scale < 1 and antialias:
        kernel_width /= scale
    # Output pixel centres mapped into input coordinates (1-based, as MATLAB).
    x = torch.arange(1, out_len + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    indices = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]
    distance = u[:, None] - indices
    if scale < 1 and antialias:
        weights = scale * cubic(distance * scale)
    else:
        weights = cubic(distance)
    weights = weights / weights.sum(dim=1, keepdim=True)
    # Symmetric padding: indices outside 1..in_len mirror back into the image.
    mirror = torch.cat([torch.arange(in_len), torch.arange(in_len - 1, -1, -1)])
    idx = mirror[(indices.long() - 1) % (2 * in_len)]
    matrix = torch.zeros(out_len, in_len, dtype=torch.float64)
    matrix.scatter_add_(1, idx, weights)
    return matrix


@lru_cache(maxsize=16)  # training uses four; a demo sees many sizes, so keep the memory bounded
def _weights_on(in_len: int, out_len: int, scale: float, antialias: bool, device: torch.device,
                dtype: torch.dtype) -> Tensor:
    # Cached per device: a training batch would otherwise pay two blocking host-to-device copies.
    return _weights_cpu(in_len, out_len, scale, antialias).to(device=device, dtype=dtype)


def resize_matrix(
    in_len: int, out_len: int, scale: float, *, antialias: bool = True,
    device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
) -> Tensor:
    """The (out_len, in_len) matrix resizing one axis, on ``device`` (cached: do not modify)."""
    return _weights_on(in_len, out_len, float(scale), antialias, torch.device(device), dtype)


def imresize(
    x: Tensor, *, scale: float | None = None, size: tuple[int, int] | None = None,
    antialias: bool = True,
) -> Tensor:
    """Resize images like MATLAB's ``imresize(..., 'bicubic')``.

    Args:
        x: float tensor (C, H, W) or (N, C, H, W), any range, any device.
        scale: one factor for both axes (e.g. 1/4 to make LR, 4 to upscale).
        size: output (height, width), instead of scale.
        antialias: widen the kernel when shrinking (MATLAB's default).

    Returns:
        The resized tensor, same dtype and device, not clamped. Output size is
        ``ceil(H * scale)`` as in MATLAB.
    """
    if (scale is None) == (size is None):
        raise ValueError("give exactly one of scale or size")
    if not x.is_floating_point():
        raise TypeError(f"imresize expects a float tensor, got {x.dtype}")
    if x.dim() not in (3, 4):
        raise ValueError(f"expected (C, H, W) or (N, C, H, W), got shape {tuple(x.shape)}")
    in_h, in_w = x.shape[-2:]
    if size is not None:
        out_h, out_w = size
        scale_h, scale_w = out_h / in_h, out_w / in_w
    else:
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        out_h, out_w = math.ceil(in_h * scale), math.ceil(in_w * scale)
        scale_h = scale_w = scale
    # Half precision loses too much in the weight sums; compute in float32 at least.
    work = x if x.dtype in (torch.float32, torch.float64) else x.float()
    rows = resize_matrix(in_h, out_h, scale_h, antialias=antialias, device=x.device, dtype=work.dtype)
    cols = resize_matrix(in_w, out_w, scale_w, antialias=antialias, device=x.device, dtype=work.dtype)
    out = torch.matmul(torch.matmul(rows, work), cols.T)
    return out.to(x.dtype)
