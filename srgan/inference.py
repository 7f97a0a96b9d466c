"""Super-resolving images: tiled generator inference and the baselines.

Tiles (after Real-ESRGAN's ``tile_process``): the LR image is cut into
``tile`` x ``tile`` pieces, each run with ``overlap`` extra LR pixels of
context on every side, and only the centre of each output is kept. Memory is
bounded by the tile size, and because the context is wider than what the
network's outputs depend on noticeably, tiled and whole-image outputs agree
to within 1e-3.

Colour fix: the generators' outputs get their LR input's per-channel means
(``match_channel_means``; on by default in ``Upscaler``). SRGAN's losses (VGG54 and
adversarial) leave each image's mean brightness free: trained with them alone, our
SRGAN drifted by about 3 grey levels per image. The LR input, made from the original
by a resize that keeps the mean, says what the mean should be. Only the mean moves:
detail and texture are untouched.

Precision: ``precision="auto"`` runs the generators in bf16 on a CPU that multiplies bf16 in
hardware (AVX512-BF16 or AMX-BF16; 3.6x faster than fp32 on this project's machine, and Y-PSNR
within 0.01 dB of fp32 on Set5 and Set14, results/performance.md) and in fp32 elsewhere; "fp32",
"bf16" and (CUDA only) "fp16" force one. For inference the BatchNorms are folded into their convs
(``fold_batch_norm``) and the weights cast to the precision: plain eager PyTorch, which measured as
fast as the alternatives tried (torch.jit.freeze, torch.compile, ONNX Runtime).
"""

from __future__ import annotations

import threading

import torch
from PIL import Image
from torch import Tensor, nn

from .checkpoint import cpu_has_native_bf16
from .images import crop_to_multiple, pil_to_tensor, tensor_to_pil
from .imresize import imresize
from .models import SRResNet, fold_batch_norm, to_unit_range
from .weights import (
    METHOD_WEIGHTS,
    check_available,
    generator_from_state_dict,
    interpolate_state_dicts,
    is_available,
    load_state_dict,
)

METHODS = ("nearest", "bicubic", "srresnet", "srgan")
SCALE = 4
# Said with every MissingWeightsError of Upscaler: the baselines still work.
WITHOUT_WEIGHTS = 'The "bicubic" and "nearest" methods need no weights.'
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def required_weights(method: str, alpha: float | None = None) -> list[str]:
    """The weights names a call of ``Upscaler.upscale(image, method, alpha=alpha)`` needs: none for
    the baselines; with ``alpha`` (a blend of the two networks) both, except at the ends 0
    (SRResNet alone) and 1 (SRGAN alone)."""
    if method not in METHOD_WEIGHTS:
        return []
    if alpha is None:
        return [METHOD_WEIGHTS[method]]
    if alpha == 0.0:
        return [METHOD_WEIGHTS["srresnet"]]
    if alpha == 1.0:
        return [METHOD_WEIGHTS["srgan"]]
    return [METHOD_WEIGHTS["srresnet"], METHOD_WEIGHTS["srgan"]]


def parse_device(name: str | torch.device) -> torch.device:
    """A torch device from a user's option; ValueError (a message for the user) when it is not
    a device name or names a CUDA device this machine lacks, instead of a failure at first use."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {name}: not a device (cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device is available")
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision the generators run in on ``device``: "auto" is bf16 on a CPU that multiplies
    bf16 in hardware and fp32 elsewhere (a CPU without it emulates bf16 and gains little; on CUDA
    fp16 or bf16 is the user's choice). ValueError (a message for the user) for a name not in
    PRECISIONS or a precision the device cannot run."""
    if precision not in PRECISIONS:
        raise ValueError(f"--precision {precision}: choose from {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("--precision fp16 runs on CUDA only; on a CPU choose bf16 or fp32")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"--precision bf16: {torch.cuda.get_device_name(device)} has no bf16; choose fp16 or fp32")
    return precision


def prepare_generator(generator: SRResNet, *, device: torch.device, precision: str = "fp32") -> SRResNet:
    """An inference copy of ``generator``: BatchNorms folded into the convs, weights in
    ``precision`` ("fp32", "bf16", "fp16") on ``device``, channels_last (faster for these convs on
    CPU and GPU alike, results/performance.md). ``upscale_tensor`` runs it in its weights' dtype."""
    model = fold_batch_norm(generator).to(device=device, dtype=DTYPES[precision])
    return model.to(memory_format=torch.channels_last)


def tiled_forward(generator: nn.Module, lr: Tensor, *, tile: int | None, overlap: int = 16) -> Tensor:
    """The generator's raw output (HR in [-1, 1]) over ``tile`` x ``tile`` LR tiles, each with
    ``overlap`` LR pixels of context; ``tile=None`` runs the whole image at once. Tiled output
    is stored in ``lr``'s dtype. Shared by ``upscale_tensor`` and the benchmark (srgan.bench)."""
    if tile is not None and tile < 1:  # range() with a step < 1 would cut no tiles: a blank output
        raise ValueError(f"tile must be a positive number of LR pixels or None, got {tile}")
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")
    n, _, h, w = lr.shape
    if tile is None or (h <= tile and w <= tile):
        return generator(lr)
    s = generator.scale
    out = lr.new_empty((n, 3, h * s, w * s))
    for y0 in range(0, h, tile):
        y1 = min(y0 + tile, h)
        py0, py1 = max(y0 - overlap, 0), min(y1 + overlap, h)
        for x0 in range(0, w, tile):
            x1 = min(x0 + tile, w)
            px0, px1 = max(x0 - overlap, 0), min(x1 + overlap, w)
            sr = generator(lr[:, :, py0:py1, px0:px1])
            oy, ox = (y0 - py0) * s, (x0 - px0) * s
            out[:, :, y0 * s:y1 * s, x0 * s:x1 * s] = sr[:, :, oy:oy + (y1 - y0) * s, ox:ox + (x1 - x0) * s]
    return out


def match_channel_means(sr: Tensor, lr: Tensor) -> Tensor:
    """SR (N, C, H, W) in [0, 1] shifted per image and channel to the means of its LR input,
    clamped to [0, 1] (so saturated areas can leave a little of the shift)."""
    offset = lr.to(sr).mean(dim=(-2, -1), keepdim=True) - sr.mean(dim=(-2, -1), keepdim=True)
    return (sr + offset).clamp_(0, 1)


@torch.inference_mode()
def upscale_tensor(
    generator: SRResNet, lr: Tensor, *, tile: int | None = 256, overlap: int = 16, colour_fix: bool = False,
) -> Tensor:
    """Run the generator on LR images (N, 3, h, w) in [0, 1] -> (N, 3, 4h, 4w) in [0, 1], float32.

    The network runs in its weights' dtype (``prepare_generator`` makes a bf16 or fp16 copy).
    ``tile=None`` runs the whole image at once. ``colour_fix`` gives the output its input's
    channel means (``match_channel_means``).
    """
    weight = next(generator.parameters())
    lr = lr.to(device=weight.device, dtype=torch.float32)
    # channels_last is faster for these convs on CPU (oneDNN) and GPU alike (results/performance.md).
    x = lr.to(weight.dtype).contiguous(memory_format=torch.channels_last)
    sr = to_unit_range(tiled_forward(generator, x, tile=tile, overlap=overlap).float())
    return match_channel_means(sr, lr) if colour_fix else sr


def bicubic_upscale_tensor(lr: Tensor, *, scale: int = SCALE) -> Tensor:
    """MATLAB bicubic upscaling (the paper's baseline), clamped to [0, 1]."""
    return imresize(lr, scale=scale).clamp_(0, 1)


def _split_alpha(image: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    if image.mode == "RGBA":
        return image.convert("RGB"), image.getchannel("A")
    return image.convert("RGB"), None


def _resize_alpha(alpha: Image.Image, *, scale: float) -> Image.Image:
    t = pil_to_tensor(alpha)[:, :1]
    out = imresize(t, scale=scale).clamp_(0, 1).mul_(255).round_().to(torch.uint8)
    return Image.fromarray(out[0, 0].numpy(), "L")


def downscale(image: Image.Image, *, factor: int = SCALE) -> Image.Image:
    """HR -> LR as the paper: crop to a multiple of ``factor``, MATLAB bicubic down."""
    image = crop_to_multiple(image, factor)
    rgb, alpha = _split_alpha(image)
    lr = tensor_to_pil(imresize(pil_to_tensor(rgb), scale=1 / factor))
    if alpha is not None:
        lr = lr.convert("RGBA")
        lr.putalpha(_resize_alpha(alpha, scale=1 / factor))
    return lr


class Upscaler:
    """Every method behind one call, each generator loaded once and shared.

    ``precision``: "auto" (bf16 on a CPU with bf16 in hardware, else fp32), "fp32", "bf16" or
    "fp16" (CUDA); ``resolve_precision`` refuses what the device cannot run (ValueError).
    Thread-safe: Gradio runs requests in worker threads.
    """

    # Tiles bound memory only: on CPU, in fp32 and bf16, smaller tiles bought no cache benefit,
    # just overlap overhead (results/performance.md).
    def __init__(self, *, device: str | torch.device = "cpu", tile: int | None = 256, overlap: int = 16,
                 precision: str = "auto", colour_fix: bool = True) -> None:
        self.device = torch.device(device)
        self.tile = tile
        self.overlap = overlap
        self.precision = resolve_precision(precision, self.device)
        self.colour_fix = colour_fix  # the generators' outputs keep their input's channel means
        self._lock = threading.Lock()
        self._generators: dict[str, SRResNet] = {}
        self._states: dict[str, tuple[dict, dict]] = {}
        self._blend: tuple[float, SRResNet] | None = None

    def available_methods(self) -> list[str]:
        return [m for m in METHODS if m not in METHOD_WEIGHTS or is_available(METHOD_WEIGHTS[m])]

    def _state(self, method: str) -> tuple[dict, dict]:
        if method not in self._states:
            self._states[method] = load_state_dict(METHOD_WEIGHTS[method])
        return self._states[method]

    def generator(self, method: str, *, alpha: float | None = None) -> SRResNet:
        """The generator of ``method``; with ``alpha``, SRResNet and SRGAN blended.

        Raises MissingWeightsError naming every weights file it needs that is absent.
        """
        if alpha is not None:
            alpha = float(alpha)
            if alpha in (0.0, 1.0):  # the blend's ends are the networks themselves: one file each
                method, alpha = ("srresnet" if alpha == 0.0 else "srgan"), None
        needed_by = f'the "{method}" method' if alpha is None else f"alpha={alpha:g} (a blend of SRResNet and SRGAN)"
        check_available(required_weights(method, alpha), needed_by=needed_by, alternative=WITHOUT_WEIGHTS)
        with self._lock:
            if alpha is not None:
                if self._blend is not None and self._blend[0] == alpha:
                    return self._blend[1]
                sd_a, meta = self._state("srresnet")
                sd_b, _ = self._state("srgan")
                model = generator_from_state_dict(interpolate_state_dicts(sd_a, sd_b, alpha), meta)
                model = self._prepare(model)
                self._blend = (alpha, model)
                return model
            if method not in self._generators:
                state, meta = self._state(method)
                self._generators[method] = self._prepare(generator_from_state_dict(state, meta))
            return self._generators[method]

    def _prepare(self, model: SRResNet) -> SRResNet:
        return prepare_generator(model, device=self.device, precision=self.precision)

    def upscale(self, image: Image.Image, method: str, *, alpha: float | None = None) -> Image.Image:
        """4x upscale of an RGB/RGBA/grey PIL image with one method.

        ``alpha`` (SRResNet -> SRGAN network interpolation) applies to the
        learned methods. Raises MissingWeightsError (a FileNotFoundError) naming every weights
        file the call needs that is absent; ``available_methods()`` lists what works.
        """
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
        rgb, alpha_channel = _split_alpha(image)
        if method == "nearest":
            out = rgb.resize((rgb.width * SCALE, rgb.height * SCALE), Image.NEAREST)
        elif method == "bicubic":
            out = tensor_to_pil(bicubic_upscale_tensor(pil_to_tensor(rgb)))
        else:
            model = self.generator(method, alpha=alpha)
            sr = upscale_tensor(model, pil_to_tensor(rgb), tile=self.tile, overlap=self.overlap,
                                colour_fix=self.colour_fix)
            out = tensor_to_pil(sr)
        if alpha_channel is not None:
            out = out.convert("RGBA")
            out.putalpha(_resize_alpha(alpha_channel, scale=SCALE))
        return out
