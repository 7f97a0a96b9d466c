"""MATLAB-compatible bicubic resize in PyTorch.

MATLAB's ``imresize(I, scale, 'bicubic')`` is the degradation behind the
paper's LR images and its bicubic baseline. It differs from
``torch.nn.functional.interpolate(..., mode='bicubic', antialias=True)`` in
three ways, all reproduced here: the cubic kernel uses a = -0.5 (PyTorch uses
-0.75), when shrinking the kernel is widened by 1/scale (antialiasing), and
the image is extended by symmetric (mirror) padding at its edges.

Each axis is resized by its contributions, as MATLAB's ``contributions()``:
for every output pixel, the few input pixels its kernel reaches
(``ceil(kernel width) + 2``) and their weights. Small axes (a training batch's
96 -> 24) apply them as one dense (out x in) matrix product on the tensor's
device. Larger axes are banded: outputs go in blocks, each block reading only
the short window of inputs its kernels reach, one small matrix product per
block, all blocks in one batched product. Memory grows with the pixel count,
never with out x in (a dense matrix for a 4 x 250,000 strip upscaled 4x would
take 2 TB in float64), and the work per output pixel is a few dozen
multiply-adds instead of in_len.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

# Axes with at most this many (out x in) entries are resized by one dense matrix product (a
# training batch's 96 -> 24, 128 -> 512): fastest there (python scripts/bench_imresize.py).
DENSE_MAX_ENTRIES = 1 << 16  # 256 KB in float32
# Larger axes are resized in blocks of outputs that advance over about BLOCK_SPAN input pixels,
# blocks of at least MIN_BLOCK outputs (narrower products run far below the machine's speed).
# Each block is one small dense product over its window of inputs, so an output pixel costs its
# block's window (36 inputs at x4, 140 at x1/4) instead of in_len, and memory is linear in the
# pixel count. Both chosen by timing on CPU (python scripts/bench_imresize.py).
BLOCK_SPAN = 32
MIN_BLOCK = 32
KERNEL_PIECE = 1 << 16  # output pixels whose weights are computed at once
# Matrices and contributions kept for reuse (training resizes the same sizes every batch),
# bounded in bytes over every size, device and dtype: a demo sees a new size per image.
CACHE_MAX_BYTES = 64 << 20


def cubic(x: Tensor) -> Tensor:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's)."""
    ax = x.abs()
    ax2, ax3 = ax * ax, ax * ax * ax
    inner = 1.5 * ax3 - 2.5 * ax2 + 1
    outer = -0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2
    return torch.where(ax <= 1, inner, torch.where(ax <= 2, outer, torch.zeros_like(ax)))


def _nbytes(value: Tensor | tuple[Tensor, ...]) -> int:
    tensors = value if isinstance(value, tuple) else (value,)
    return sum(t.numel() * t.element_size() for t in tensors)


class _ByteBoundedCache:
    """Least-recently-used values, evicted once they hold more than ``max_bytes``; a value
    larger than that is returned without being kept."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict[Any, Tensor | tuple[Tensor, ...]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()  # the demo serves requests from several threads

    def get(self, key: Any, make: Callable[[], Tensor | tuple[Tensor, ...]]) -> Tensor | tuple[Tensor, ...]:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = make()
        size = _nbytes(value)
        if size > self.max_bytes:
            return value
        with self._lock:
            if key not in self._items:
                self._items[key] = value
                self._bytes += size
            while self._bytes > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= _nbytes(evicted)
            return self._items.get(key, value)


_CACHE = _ByteBoundedCache(CACHE_MAX_BYTES)


def _kernel(in_len: int, out_len: int, scale: float, antialias: bool) -> tuple[Tensor, Tensor]:
    """One axis's contributions, as MATLAB's ``contributions()``: for every output pixel, the
    0-based index of the first input pixel it reads (before mirroring: it may lie outside the
    image) and the float64 weights of it and the following ones, (out_len,) and (out_len, taps).
    Taps whose weight is zero for every output pixel are dropped, as MATLAB drops them."""
    if in_len < 1 or out_len < 1:
        raise ValueError(f"axis lengths must be positive, got {in_len} -> {out_len}")
    kernel_width = 4.0
    if scale < 1 and antialias:
        kernel_width /= scale
    taps = math.ceil(kernel_width) + 2
    lefts, pieces = [], []
    # In pieces of outputs: the kernel's temporaries (a dozen (outputs x taps) float64 arrays)
    # would otherwise dwarf the result on a long axis.
    for start in range(0, out_len, KERNEL_PIECE):
        # Output pixel centres mapped into input coordinates (1-based, as MATLAB).
        x = torch.arange(start + 1, min(start + KERNEL_PIECE, out_len) + 1, dtype=torch.float64)
        u = x / scale + 0.5 * (1 - 1 / scale)
        left = torch.floor(u - kernel_width / 2)
        indices = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]
        distance = u[:, None] - indices
        if scale < 1 and antialias:
            weights = scale * cubic(distance * scale)
        else:
            weights = cubic(distance)
        lefts.append(left.long() - 1)
        pieces.append(weights / weights.sum(dim=1, keepdim=True))
    left, weights = torch.cat(lefts), torch.cat(pieces)
    used = (weights != 0).any(dim=0).nonzero().flatten()
    first, last = int(used[0]), int(used[-1])
    return left + first, weights[:, first : last + 1]


def _mirror(positions: Tensor, in_len: int) -> Tensor:
    """Symmetric padding: positions outside 0..in_len-1 mirror back into the image."""
    mirror = torch.cat([torch.arange(in_len), torch.arange(in_len - 1, -1, -1)])
    return mirror[positions % (2 * in_len)]


def _dense(in_len: int, out_len: int, scale: float, antialias: bool) -> Tensor:
    first, weights = _kernel(in_len, out_len, scale, antialias)
    idx = _mirror(first[:, None] + torch.arange(weights.shape[1]), in_len)
    matrix = torch.zeros(out_len, in_len, dtype=torch.float64)
    matrix.scatter_add_(1, idx, weights)  # mirrored taps may land on one input twice
    return matrix


def _blocks(in_len: int, out_len: int, scale: float, antialias: bool, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """The banded form: outputs in blocks of B consecutive pixels, each block reading a window
    of S consecutive (mirrored) inputs. Returns the (blocks, B, S) weights in ``dtype`` and the
    (blocks * S,) input index of every window position; out_len x S weights in all."""
    first, weights = _kernel(in_len, out_len, scale, antialias)
    weights = weights.to(dtype)  # before the (out_len x S) matrices: no float64 copy of those
    taps = weights.shape[1]
    block = min(max(MIN_BLOCK, int(BLOCK_SPAN * scale)), out_len)
    blocks = -(-out_len // block)
    spare = blocks * block - out_len  # the last block's missing outputs: zero weights, cut off later
    if spare:
        first = torch.cat([first, first[-1:].expand(spare)])
        weights = torch.cat([weights, weights.new_zeros(spare, taps)])
    first = first.view(blocks, block)
    start = first[:, 0]
    span = int((first[:, -1] - start).max()) + taps
    offsets = (first - start[:, None])[:, :, None] + torch.arange(taps)
    matrices = torch.zeros(blocks, block, span, dtype=dtype)
    matrices.scatter_add_(2, offsets, weights.view(blocks, block, taps))
    window = _mirror(start[:, None] + torch.arange(span), in_len).flatten()
    return matrices, window


def resize_matrix(
    in_len: int, out_len: int, scale: float, *, antialias: bool = True,
    device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
) -> Tensor:
    """The dense (out_len, in_len) matrix resizing one axis, on ``device`` (cached: do not modify).

    It has out_len x in_len entries: ``imresize`` itself uses it only for small axes.
    """
    device = torch.device(device)
    key = ("dense", in_len, out_len, float(scale), antialias, device, dtype)
    # Cached per device: a training batch would otherwise pay two blocking host-to-device copies.
    return _CACHE.get(key, lambda: _dense(in_len, out_len, float(scale), antialias).to(device=device, dtype=dtype))


def _blocks_on(in_len: int, out_len: int, scale: float, antialias: bool, device: torch.device,
               dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    def make() -> tuple[Tensor, Tensor]:
        matrices, window = _blocks(in_len, out_len, scale, antialias, dtype)
        return matrices.to(device), window.to(device)
    return _CACHE.get(("blocks", in_len, out_len, scale, antialias, device, dtype), make)


def _is_dense(in_len: int, out_len: int) -> bool:
    return in_len * out_len <= DENSE_MAX_ENTRIES


def _resize_rows(x: Tensor, out_len: int, scale: float, antialias: bool) -> Tensor:
    """(Q, H, W) -> (Q, out_len, W)."""
    q, in_len, width = x.shape
    if _is_dense(in_len, out_len):
        return torch.matmul(resize_matrix(in_len, out_len, scale, antialias=antialias, device=x.device,
                                          dtype=x.dtype), x)
    matrices, window = _blocks_on(in_len, out_len, scale, antialias, x.device, x.dtype)
    blocks, block, span = matrices.shape
    windows = x.index_select(1, window).view(q, blocks, span, width)
    # (blocks, B, S) @ (Q, blocks, S, W): the output comes out in its final layout.
    return torch.matmul(matrices, windows).view(q, blocks * block, width)[:, :out_len]


def _resize_columns(x: Tensor, out_len: int, scale: float, antialias: bool) -> Tensor:
    """(P, W) -> (P, out_len)."""
    rows, in_len = x.shape
    if _is_dense(in_len, out_len):
        return torch.matmul(x, resize_matrix(in_len, out_len, scale, antialias=antialias, device=x.device,
                                             dtype=x.dtype).T)
    matrices, window = _blocks_on(in_len, out_len, scale, antialias, x.device, x.dtype)
    blocks, block, span = matrices.shape
    windows = x.index_select(1, window).view(rows, blocks, span).transpose(0, 1)
    out = torch.matmul(windows, matrices.transpose(1, 2))  # (blocks, P, B)
    return out.permute(1, 0, 2).reshape(rows, blocks * block)[:, :out_len]


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
        scale_h = scale_w = float(scale)
    # Half precision loses too much in the weight sums; compute in float32 at least.
    work = x if x.dtype in (torch.float32, torch.float64) else x.float()
    lead = work.shape[:-2]
    if _is_dense(in_h, out_h) and _is_dense(in_w, out_w):
        # Rows first, as MATLAB (and the faster order for a training batch).
        out = _resize_rows(work.reshape(-1, in_h, in_w), out_h, scale_h, antialias)
        out = _resize_columns(out.reshape(-1, in_w), out_w, scale_w, antialias)
    else:
        # Columns first: the banded rows pass writes its output in its final layout, and when
        # enlarging that is the largest tensor (the columns pass ends in a transposing copy).
        out = _resize_columns(work.reshape(-1, in_w), out_w, scale_w, antialias).reshape(-1, in_h, out_w)
        out = _resize_rows(out, out_h, scale_h, antialias)
    return out.reshape(*lead, out_h, out_w).to(x.dtype).contiguous()
