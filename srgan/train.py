"""Train SRResNet and SRGAN with the paper's recipe (Ledig et al., Sec. 3.2).

    python -m srgan.train --stage srresnet            # 1*MSE, Adam lr 1e-4, 1e6 iterations
    python -m srgan.train --stage srgan               # 1*VGG54+1e-3*GAN from srresnet_x4,
                                                      # lr 1e-4 then 1e-5, 2e5 iterations
    torchrun --nproc_per_node 8 -m srgan.train ...    # DistributedDataParallel, one GPU a rank

The Table 1 variants are one option away: ``--stage srresnet --loss 1*VGG22`` (SRResNet-VGG22),
``--stage srgan --loss 1*MSE+1e-3*GAN`` (SRGAN-MSE), ``--loss 1*VGG22+1e-3*GAN`` (SRGAN-VGG22).

A run folder (``--out``) receives ``checkpoint.pt`` (every few minutes and at exit, written
atomically: a SIGKILL loses at most ``--checkpoint-minutes``), ``log.csv``,
``best_generator.pt`` (best validation PSNR) and the final ``<stage>_x4.pt`` written by
``srgan.weights.save_weights`` with the run's metadata. ``--resume`` continues a run from its
checkpoint: model, optimizers, step (the learning-rate schedule is a function of the step), RNG.

Under torchrun every rank holds all training images and draws its batches with its own RNG
stream (seed + rank), so the ranks see different patches; gradients are averaged by DDP, and
rank 0 alone validates, logs and writes files.
"""

from __future__ import annotations

import argparse
import copy
import csv
import datetime as dt
import hashlib
import math
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from srgan.data import (
    PatchSampler,
    TrainingDataError,
    default_train_folder,
    load_training_data,
    validation_crops,
)
from srgan.install import InstallError, install, read_generator_file
from srgan.losses import (
    GeneratorLoss,
    LossSpec,
    LossSpecError,
    discriminator_fake_loss,
    discriminator_real_loss,
    parse_loss_spec,
)
from srgan.models import Discriminator, SRResNet, to_unit_range
from srgan.vgg import MissingVGGWeightsError

REPO_ROOT = Path(__file__).resolve().parent.parent

# The paper's recipe per stage; every entry can be overridden on the command line.
STAGE_DEFAULTS: dict[str, dict[str, Any]] = {
    "srresnet": {"loss": "1*MSE", "lr": 1e-4, "schedule": "constant", "iterations": 1_000_000,
                 "init": "none"},
    "srgan": {"loss": "1*VGG54+1e-3*GAN", "lr": 1e-4, "schedule": "step", "iterations": 200_000,
              "init": "srresnet_x4"},
}
SCHEDULES = ("constant", "step", "cosine")
CSV_COLUMNS = (
    "step", "patches_seen", "loss_g", "loss_mse", "loss_vgg22", "loss_vgg54", "loss_gan", "loss_d",
    "d_real", "d_fake", "lr", "patches_per_s", "val_psnr",
)  # fmt: skip
# --fit-minutes: steps before timing starts (cuDNN autotuning, allocator warm-up) and steps timed.
FIT_WARMUP_STEPS, FIT_TIMED_STEPS = 20, 40
FIT_SAFETY = 0.92  # share of the measured rate planned on: validation and logging also take time


class TrainingSetupError(RuntimeError):
    """A run that cannot start as asked; the message says why."""


# ----------------------------------------------------------------------------- options


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m srgan.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--stage", choices=tuple(STAGE_DEFAULTS), default="srresnet")
    p.add_argument("--loss", help="loss spec, e.g. 1*MSE or 1*VGG54+1e-3*GAN (default: the stage's)")
    p.add_argument("--init", help="generator to start from: a named weight (srresnet_x4), a .pt file or "
                                  "'none' (default: srresnet_x4 for the srgan stage, none for srresnet)")
    p.add_argument("--data", type=Path, default=default_train_folder(), help="folder of training photos")
    p.add_argument("--max-images", type=int, help="use only the first N photos (smoke tests)")
    p.add_argument("--out", type=Path, help="run folder (default runs/<stage>-<date>)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if present)")
    p.add_argument("--batch-size", type=int, default=16, help="patches per step per rank")
    p.add_argument("--patch", type=int, default=96, help="HR crop side")
    p.add_argument("--lr", type=float, help="base learning rate (default: the stage's, 1e-4)")
    p.add_argument("--schedule", choices=SCHEDULES, help="constant | step (x0.1 at half) | cosine")
    p.add_argument("--iterations", type=int, help="steps (default: the stage's)")
    p.add_argument("--patches", type=int, help="patches to see in all, instead of --iterations")
    p.add_argument("--fit-minutes", type=float,
                   help="size the schedule from the measured step rate so that it completes in this "
                        "many minutes of training (instead of --iterations/--patches)")
    p.add_argument("--max-minutes", type=float, help="time box: checkpoint and exit 0 after this")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt if present")
    p.add_argument("--checkpoint-minutes", type=float, default=5.0)
    p.add_argument("--log-every", type=int, default=100, help="steps between CSV rows")
    p.add_argument("--val-every", type=int, default=1000, help="steps between validations")
    p.add_argument("--val-patch", type=int, default=128, help="HR side of the validation crops")
    p.add_argument("--ema", type=float, default=0.0, help="EMA decay of the generator (0: off)")
    p.add_argument("--snapshots", type=int, default=0,
                   help="also save the generator (fp16) at N evenly spaced points of the schedule, "
                        "in OUT/snapshots/, to choose from afterwards (e.g. by a perceptual rule)")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                   help="bf16 autocast (CUDA, or CPUs with native bf16: AVX512-BF16 or AMX)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                   help="channels_last memory format")
    p.add_argument("--fused-adam", action=argparse.BooleanOptionalAction, default=True,
                   help="fused Adam (CUDA and CPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile the generator")
    p.add_argument("--compile-mode", default="default",
                   help="torch.compile mode (e.g. reduce-overhead for CUDA graphs)")
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm under DDP")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-blocks", type=int, default=16, help="residual blocks (smoke tests only)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--install", action="store_true",
                   help="when the run completes, install its final generator as the package's named "
                        "fp16 weights (srgan.install)")
    p.add_argument("--param-hash-dir", type=Path, help=argparse.SUPPRESS)  # DDP test: per-rank hash
    return p


def resolve_options(args: argparse.Namespace, *, world_size: int = 1) -> argparse.Namespace:
    """Fill stage defaults and check the combination; TrainingSetupError if it makes no sense."""
    defaults = STAGE_DEFAULTS[args.stage]
    args.loss = args.loss or defaults["loss"]
    args.lr = args.lr if args.lr is not None else defaults["lr"]
    args.schedule = args.schedule or defaults["schedule"]
    args.init = args.init or defaults["init"]
    try:
        args.loss_spec = parse_loss_spec(args.loss)
    except LossSpecError as exc:
        raise TrainingSetupError(f"--loss: {exc}") from None
    if args.stage == "srresnet" and args.loss_spec.uses_gan:
        raise TrainingSetupError("a loss with a GAN term trains SRGAN: use --stage srgan")
    if args.stage == "srgan" and not args.loss_spec.uses_gan:
        raise TrainingSetupError(f"--stage srgan needs a GAN term in --loss (got {args.loss}); "
                                 "without one use --stage srresnet")
    if args.patches is not None and args.iterations is not None:
        raise TrainingSetupError("give --iterations or --patches, not both")
    if args.fit_minutes is not None:
        if args.patches is not None or args.iterations is not None:
            raise TrainingSetupError("--fit-minutes sizes the schedule itself: drop --iterations/--patches")
        if not args.fit_minutes > 0:
            raise TrainingSetupError("--fit-minutes must be positive")
    if args.snapshots < 0:
        raise TrainingSetupError("--snapshots must be 0 or more")
    for name in ("batch_size", "patch", "log_every", "val_every", "num_blocks"):
        if getattr(args, name) <= 0:
            raise TrainingSetupError(f"--{name.replace('_', '-')} must be positive")
    if args.patch % 4:
        raise TrainingSetupError(f"--patch must divide by 4, got {args.patch}")
    if args.loss_spec.uses_gan and args.patch % 16:
        raise TrainingSetupError(f"the discriminator needs --patch divisible by 16, got {args.patch}")
    if args.patches is not None:
        args.iterations = math.ceil(args.patches / (args.batch_size * world_size))
    elif args.iterations is None:
        args.iterations = defaults["iterations"]
    if args.iterations <= 0:
        raise TrainingSetupError("--iterations/--patches must be positive")
    if not 0.0 <= args.ema < 1.0:
        raise TrainingSetupError("--ema must be in [0, 1)")
    if args.install and set(args.loss_spec.terms) != set(parse_loss_spec(defaults["loss"]).terms):
        # The named weights are the paper's models (srgan.weights.WEIGHTS); a Table 1 variant
        # installed under that name would be shown and scored as the paper's model.
        raise TrainingSetupError(f"--install writes the named {args.stage}_x4 weights, which are the "
                                 f"paper's {defaults['loss']} model; this run's loss is {args.loss}")
    if args.out is None:
        args.out = REPO_ROOT / "runs" / f"{args.stage}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    elif not args.resume and (args.out / "checkpoint.pt").is_file():
        # Starting afresh there would overwrite the checkpoint and mix two runs in log.csv.
        raise TrainingSetupError(f"{args.out} already holds a run: pass --resume to continue it, "
                                 "or choose another --out")
    return args


# ----------------------------------------------------------------------------- pure helpers


def lr_at(step: int, *, base_lr: float, schedule: str, total_steps: int) -> float:
    """Learning rate at ``step`` (0-based): constant, step (x0.1 from half-way, the paper's
    SRGAN schedule) or cosine (to 0 at ``total_steps``)."""
    if schedule == "constant":
        return base_lr
    if schedule == "step":
        return base_lr if step < total_steps // 2 else base_lr * 0.1
    if schedule == "cosine":
        return 0.5 * base_lr * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
    raise ValueError(f"unknown schedule {schedule!r}; known: {', '.join(SCHEDULES)}")


def psnr_y_tensor(sr: Tensor, hr: Tensor, *, border: int = 4) -> Tensor:
    """Per-image Y-PSNR (dB) of batches in [-1, 1], by the project's convention
    (``srgan.metrics.psnr_y``): 8-bit RGB, BT.601 Y rounded, ``border`` pixels cut."""
    weights = torch.tensor([65.481, 128.553, 24.966], device=sr.device, dtype=torch.float64) / 255.0

    def y_channel(images: Tensor) -> Tensor:
        rgb = torch.round(to_unit_range(images.double()) * 255.0)
        return torch.round(16.0 + torch.einsum("nchw,c->nhw", rgb, weights))

    sr_y, hr_y = y_channel(sr), y_channel(hr)
    if border:
        sr_y = sr_y[:, border:-border, border:-border]
        hr_y = hr_y[:, border:-border, border:-border]
    mse = ((sr_y - hr_y) ** 2).mean(dim=(1, 2)).clamp_min(1e-10)
    return 10 * torch.log10(255.0**2 / mse)


@torch.no_grad()
def validate(generator: nn.Module, val_lr: Tensor, val_hr: Tensor, *, batch_size: int = 16) -> float:
    """Mean Y-PSNR of the generator on fixed validation crops (eval mode, fp32)."""
    was_training = generator.training
    generator.eval()
    scores = []
    for start in range(0, len(val_lr), batch_size):
        sr = generator(val_lr[start : start + batch_size]).float()
        scores.append(psnr_y_tensor(sr, val_hr[start : start + batch_size]))
    generator.train(was_training)
    return float(torch.cat(scores).mean())


def ema_update(ema_model: nn.Module, model: nn.Module, *, decay: float) -> None:
    """ema = decay * ema + (1 - decay) * model for parameters; buffers copied."""
    with torch.no_grad():
        ema_params = list(ema_model.parameters())
        torch._foreach_lerp_(ema_params, [p.detach() for p in model.parameters()], 1 - decay)
        for ema_buffer, buffer in zip(ema_model.buffers(), model.buffers(), strict=True):
            ema_buffer.copy_(buffer)


def git_commit() -> str:
    """The code's commit, '+dirty' when the tree has changes; $SRGAN_GIT_COMMIT where set (the
    device machine gets a copy of the tree without .git); 'unknown' outside git."""
    if os.environ.get("SRGAN_GIT_COMMIT"):
        return os.environ["SRGAN_GIT_COMMIT"]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """True where the CPU multiplies bf16 in hardware (AVX512-BF16 or AMX-BF16 flags).

    Without them oneDNN emulates bf16, which gains little over fp32, so we keep fp32.
    ``cpuinfo`` is the text of /proc/cpuinfo (read when None; absent off Linux: False)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[-1].split())
            return bool(flags & {"avx512_bf16", "amx_bf16"})
    return False


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast speeds training up on ``device``."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_native_bf16()


def cpu_model_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({cpu_model_name()}, {torch.get_num_threads()} threads)"


def parameter_hash(module: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, p in sorted(module.state_dict().items()):
        if p.is_floating_point() and "running" not in name:
            digest.update(name.encode())
            digest.update(p.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file, then os.replace: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def truncate_log(path: Path, *, last_step: int) -> None:
    """Drop CSV rows past ``last_step`` (written after the checkpoint a resumed run starts from)."""
    if not path.is_file():
        return
    with path.open(newline="") as f:
        rows = [row for row in csv.DictReader(f) if int(row["step"]) <= last_step]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def append_log(path: Path, row: dict[str, Any]) -> None:
    new = not path.is_file()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow({k: row.get(k, "") for k in CSV_COLUMNS})


# ----------------------------------------------------------------------------- setup


def setup_distributed(device_arg: str | None) -> tuple[int, int, torch.device]:
    """(rank, world size, device). Under torchrun: NCCL on GPUs, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    wanted = device_arg or ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(wanted)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainingSetupError(f"--device {wanted}: no CUDA device is available")
        if world > 1 or device.index is None:
            device = torch.device("cuda", local_rank if world > 1 else 0)
        torch.cuda.set_device(device)
    if world > 1:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def load_init_generator(init: str, model: SRResNet) -> str:
    """Load the generator the SRGAN stage starts from; returns a description for metadata."""
    if init.lower() == "none":
        return "none (random init)"
    from srgan import weights

    if init in weights.WEIGHTS or init in weights.METHOD_WEIGHTS:
        try:
            state, _ = weights.load_state_dict(init)
        except weights.MissingWeightsError as exc:
            raise TrainingSetupError(f"--init {init}: {exc} (or pass --init PATH / --init none)") from None
        source = f"{init} ({weights.weights_path(init)})"
    else:
        try:
            state, _ = read_generator_file(Path(init))
        except InstallError as exc:
            raise TrainingSetupError(f"--init {exc} (a named weights, a .pt file or 'none')") from None
        source = init
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise TrainingSetupError(f"--init {init} does not fit this generator "
                                 f"(--num-blocks?): {str(exc).splitlines()[0]}") from None
    return source


def gather_object(obj: Any, world: int) -> list[Any]:
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


# ----------------------------------------------------------------------------- one step


@dataclass
class StepModels:
    """What one training step updates. ``g_train``/``d_train`` are the modules called for the
    forward passes (the DDP or torch.compile wrappers, or the modules themselves)."""

    generator: nn.Module
    g_train: nn.Module
    opt_g: torch.optim.Optimizer
    loss_fn: GeneratorLoss
    discriminator: nn.Module | None = None
    d_train: nn.Module | None = None
    opt_d: torch.optim.Optimizer | None = None


def training_step(models: StepModels, lr_batch: Tensor, hr_batch: Tensor, *,
                  autocast: Callable[[], Any] = nullcontext) -> dict[str, Tensor]:
    """One update: with a discriminator, D on (HR, detached SR) then G; else G alone.
    Returns each loss, detached (tensors: reading them would sync a GPU)."""
    m = models
    # Gradients cleared before the forward: under CUDA graphs (compile's reduce-overhead) the
    # graph's outputs must not be touched by the previous step's backward.
    m.opt_g.zero_grad(set_to_none=True)
    with autocast():
        sr = m.g_train(lr_batch)
    losses: dict[str, Tensor] = {}
    fake_logits = None
    if m.discriminator is not None:
        # D step on real HR and the detached SR (two backward passes; DDP averages each).
        m.discriminator.requires_grad_(True)
        m.opt_d.zero_grad(set_to_none=True)
        with autocast():
            real_logits = m.d_train(hr_batch)
        loss_d_real = discriminator_real_loss(real_logits)
        loss_d_real.backward()
        with autocast():
            detached_logits = m.d_train(sr.detach())
        loss_d_fake = discriminator_fake_loss(detached_logits)
        loss_d_fake.backward()
        m.opt_d.step()
        losses["loss_d"] = (loss_d_real + loss_d_fake).detach()
        # D's mean output on real and fake: both drifting to 1/0 (D wins) or meeting at 0.5 for
        # long is what collapse looks like in the log.
        losses["d_real"] = torch.sigmoid(real_logits.detach().float()).mean()
        losses["d_fake"] = torch.sigmoid(detached_logits.detach().float()).mean()
        # G step: D frozen and called unwrapped, so DDP expects no gradients from it.
        m.discriminator.requires_grad_(False)
        with autocast():
            fake_logits = m.discriminator(sr)
    with autocast():
        loss_g, parts = m.loss_fn(sr, hr_batch, fake_logits)
    loss_g.backward()
    m.opt_g.step()
    losses["loss_g"] = loss_g.detach()
    for name, value in parts.items():
        losses[f"loss_{name.lower()}"] = value
    return losses


# ----------------------------------------------------------------------------- the run


def run(args: argparse.Namespace) -> int:
    rank, world, device = setup_distributed(args.device)
    try:
        args = resolve_options(args, world_size=world)
        return train(args, rank=rank, world=world, device=device)
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def train(args: argparse.Namespace, *, rank: int, world: int, device: torch.device) -> int:
    is_main = rank == 0
    cuda = device.type == "cuda"
    spec: LossSpec = args.loss_spec
    out: Path = args.out
    checkpoint_path, log_path = out / "checkpoint.pt", out / "log.csv"
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
    if cuda:
        torch.backends.cudnn.benchmark = True  # fixed shapes: autotuned conv algorithms pay off

    torch.manual_seed(args.seed)  # same init on every rank (DDP also broadcasts rank 0's)
    train_bank, val_bank = load_training_data(args.data, device=device, max_images=args.max_images)
    sampler = PatchSampler(train_bank, patch=args.patch, seed=args.seed * 1000 + rank)
    val_lr, val_hr = validation_crops(val_bank, patch=args.val_patch, seed=args.seed)
    val_images = len(val_bank)
    del val_bank

    use_bf16 = args.bf16 and bf16_supported(device)
    if args.bf16 and not use_bf16 and is_main:
        print(f"note: {device_name(device)} has no native bf16; training in fp32", file=sys.stderr)
    # channels_last pays on CUDA and in oneDNN's CPU convolutions (here 1.25x in fp32, 1.3x in bf16).
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    generator = SRResNet(num_blocks=args.num_blocks).to(device)
    init_source = "random"
    discriminator: Discriminator | None = None
    if spec.uses_gan:
        discriminator = Discriminator(image_size=args.patch).to(device)
    if not (args.resume and checkpoint_path.is_file()):  # a resumed run has its own weights
        init_source = load_init_generator(args.init, generator)
    if args.sync_bn and not cuda:
        raise TrainingSetupError("--sync-bn needs CUDA devices (PyTorch's SyncBatchNorm has no CPU kernel)")
    if world > 1 and args.sync_bn:
        generator = nn.SyncBatchNorm.convert_sync_batchnorm(generator)
        if discriminator is not None:
            discriminator = nn.SyncBatchNorm.convert_sync_batchnorm(discriminator)
    generator.to(memory_format=memory_format)
    loss_fn = GeneratorLoss(spec).to(device=device, memory_format=memory_format)

    adam = {"betas": (0.9, 0.999)}
    if args.fused_adam and device.type in ("cuda", "cpu"):
        adam["fused"] = True  # one kernel, and no per-parameter read of Adam's step count
    opt_g = torch.optim.Adam(generator.parameters(), lr=args.lr, **adam)
    opt_d = None
    if discriminator is not None:
        discriminator.to(memory_format=memory_format)
        opt_d = torch.optim.Adam(discriminator.parameters(), lr=args.lr, **adam)
    step, patches_seen, best_val, train_seconds = 0, 0, -math.inf, 0.0
    ema_state = None
    sized = False  # --fit-minutes: whether args.iterations is the measured schedule yet
    if args.resume and checkpoint_path.is_file():
        ckpt = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        if ckpt["loss"] != str(spec) or ckpt["num_blocks"] != args.num_blocks:
            raise TrainingSetupError(f"{checkpoint_path} is a {ckpt['loss']} run with "
                                     f"{ckpt['num_blocks']} blocks; this run is {spec}, {args.num_blocks}")
        generator.load_state_dict(ckpt["generator"])
        opt_g.load_state_dict(ckpt["opt_g"])
        if discriminator is not None:
            discriminator.load_state_dict(ckpt["discriminator"])
            opt_d.load_state_dict(ckpt["opt_d"])
        ema_state = ckpt.get("ema")
        if args.fit_minutes is not None and ckpt.get("fit_sized"):
            args.iterations, sized = ckpt["iterations"], True  # keep the schedule it was sized to
        step, patches_seen = ckpt["step"], ckpt["patches_seen"]
        best_val, train_seconds = ckpt["best_val_psnr"], ckpt["train_seconds"]
        init_source = ckpt.get("init_source", init_source)
        rng = ckpt["rng"]
        if rank < len(rng):  # same world size: each rank continues its own streams
            sampler.load_state_dict(rng[rank]["sampler"])
            torch.set_rng_state(rng[rank]["torch"])
            if cuda and rng[rank].get("cuda") is not None:
                torch.cuda.set_rng_state(rng[rank]["cuda"])
        else:
            sampler.generator.manual_seed(args.seed * 1000 + rank + 7919 * step)
        if is_main:
            truncate_log(log_path, last_step=step)
            print(f"resumed {checkpoint_path} at step {step}", file=sys.stderr)
        del ckpt
    # The EMA starts from the generator as it stands now (initialised or resumed), not from the
    # random weights it was built with.
    ema_model = None
    if args.ema:
        ema_model = copy.deepcopy(generator).eval().requires_grad_(False)
        if ema_state is not None:
            ema_model.load_state_dict(ema_state)

    g_train: nn.Module = generator
    d_train: nn.Module | None = discriminator
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if cuda else None
        g_train = DDP(generator, device_ids=ids)
        if discriminator is not None:
            d_train = DDP(discriminator, device_ids=ids)
    if args.compile:
        g_train = torch.compile(g_train, mode=args.compile_mode)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_bf16 else nullcontext
    cuda_graphs = args.compile and cuda and "reduce-overhead" in args.compile_mode
    models = StepModels(generator=generator, g_train=g_train, opt_g=opt_g, loss_fn=loss_fn,
                        discriminator=discriminator, d_train=d_train, opt_d=opt_d)

    def checkpoint() -> None:
        rng = {"sampler": sampler.state_dict(), "torch": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state(device) if cuda else None}
        all_rng = gather_object(rng, world)
        if not is_main:
            return
        atomic_save({
            "step": step, "patches_seen": patches_seen, "loss": str(spec), "stage": args.stage,
            "num_blocks": args.num_blocks, "generator": generator.state_dict(),
            "opt_g": opt_g.state_dict(),
            "discriminator": discriminator.state_dict() if discriminator is not None else None,
            "opt_d": opt_d.state_dict() if opt_d is not None else None,
            "ema": ema_model.state_dict() if ema_model is not None else None,
            "rng": all_rng, "best_val_psnr": best_val, "train_seconds": train_seconds,
            "iterations": args.iterations, "fit_sized": sized,
            "init_source": init_source, "args": {k: str(v) for k, v in vars(args).items()},
        }, checkpoint_path)

    def metadata(val_psnr: float, *, completed: bool) -> dict[str, Any]:
        return {
            "stage": args.stage, "loss": str(spec), "iterations": step, "target_iterations": args.iterations,
            "completed": completed, "patches_seen": patches_seen, "batch_size": args.batch_size,
            "global_batch_size": args.batch_size * world, "world_size": world, "patch": args.patch,
            "lr": args.lr, "schedule": args.schedule, "ema": args.ema, "bf16": use_bf16,
            "fit_minutes": args.fit_minutes,
            "precision": "bf16 autocast" if use_bf16 else "fp32",
            "memory_format": "channels_last" if memory_format == torch.channels_last else "contiguous",
            "wall_time_s": round(train_seconds, 1), "device": device_name(device),
            "data": str(args.data), "train_images": len(train_bank), "val_images": val_images,
            "val_psnr_y": round(val_psnr, 3), "best_val_psnr_y": round(best_val, 3),
            "init": init_source, "num_blocks": args.num_blocks, "git_commit": git_commit(),
            "torch": str(torch.__version__), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }

    stop = {"signal": False}

    def request_stop(signum: int, frame: Any) -> None:
        stop["signal"] = True

    previous_handlers = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}

    from tqdm import tqdm

    bar = tqdm(total=args.iterations, initial=step, disable=not (is_main and args.progress),
               dynamic_ncols=True, desc=args.stage)
    sums: dict[str, Tensor] = {}
    interval_steps, interval_start = 0, time.perf_counter()
    run_start = time.perf_counter() - train_seconds
    session_start = time.perf_counter()
    last_checkpoint = time.perf_counter()
    val_psnr = math.nan
    timed_out = False
    loop_start_step, fit_t0 = step, 0.0

    def synchronize() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    generator.train()
    if discriminator is not None:
        discriminator.train()
    while step < args.iterations:
        lr = lr_at(step, base_lr=args.lr, schedule=args.schedule, total_steps=args.iterations)
        for opt in (opt_g, opt_d):
            if opt is not None:
                for group in opt.param_groups:
                    group["lr"] = lr
        if cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        lr_batch, hr_batch = sampler.sample(args.batch_size)
        lr_batch = lr_batch.contiguous(memory_format=memory_format)
        hr_batch = hr_batch.contiguous(memory_format=memory_format)

        losses = training_step(models, lr_batch, hr_batch, autocast=autocast)
        if ema_model is not None:
            ema_update(ema_model, generator, decay=args.ema)

        step += 1
        patches_seen += args.batch_size * world
        interval_steps += 1
        for key, value in losses.items():
            sums[key] = sums.get(key, 0) + value
        bar.update(1)

        if args.fit_minutes is not None and not sized:
            # Size the schedule from the step rate measured after a warm-up (two syncs in all).
            if step == loop_start_step + FIT_WARMUP_STEPS:
                synchronize()
                fit_t0 = time.perf_counter()
            elif step == loop_start_step + FIT_WARMUP_STEPS + FIT_TIMED_STEPS:
                synchronize()
                now = time.perf_counter()
                steps_per_s = FIT_TIMED_STEPS / (now - fit_t0)
                left_s = args.fit_minutes * 60 - (now - session_start)
                planned = torch.tensor([max(step + 1, step + int(steps_per_s * left_s * FIT_SAFETY))])
                if world > 1:
                    planned = planned.to(device)
                    dist.all_reduce(planned, op=dist.ReduceOp.MIN)
                args.iterations, sized = int(planned), True
                bar.total = args.iterations
                if is_main:
                    print(f"--fit-minutes {args.fit_minutes:g}: {steps_per_s * args.batch_size * world:.0f} "
                          f"patches/s measured; schedule sized to {args.iterations} steps "
                          f"({args.iterations * args.batch_size * world} patches)", file=sys.stderr)

        validate_now = step % args.val_every == 0 or step == args.iterations
        if step % args.log_every == 0 or validate_now or step == args.iterations:
            row = {k: f"{float(v) / interval_steps:.6g}" for k, v in sums.items()}
            elapsed = time.perf_counter() - interval_start  # float() above synchronised the GPU
            row.update(step=step, patches_seen=patches_seen, lr=f"{lr:.3g}",
                       patches_per_s=f"{interval_steps * args.batch_size * world / elapsed:.1f}")
            if validate_now and is_main:
                val_psnr = validate(ema_model or generator, val_lr, val_hr)
                row["val_psnr"] = f"{val_psnr:.3f}"
                if val_psnr > best_val:
                    best_val = val_psnr
                    from srgan.weights import save_weights

                    save_weights(ema_model or generator, out / "best_generator.pt",
                                 metadata(val_psnr, completed=False))
            if is_main:
                append_log(log_path, row)
                bar.set_postfix(loss=row["loss_g"], patches_s=row["patches_per_s"], val=row.get("val_psnr", "-"))
            sums, interval_steps, interval_start = {}, 0, time.perf_counter()

        if args.snapshots and is_main and (sized or args.fit_minutes is None) and \
                step * args.snapshots // args.iterations > (step - 1) * args.snapshots // args.iterations:
            from srgan.weights import save_weights

            snapshot_model = ema_model or generator
            save_weights(snapshot_model, out / "snapshots" / f"step{step:07d}.pt",
                         metadata(validate(snapshot_model, val_lr, val_hr), completed=False),
                         dtype=torch.float16)

        train_seconds = time.perf_counter() - run_start
        stop_now = stop["signal"] or (args.max_minutes is not None
                                      and time.perf_counter() - session_start > args.max_minutes * 60)
        checkpoint_due = time.perf_counter() - last_checkpoint > args.checkpoint_minutes * 60
        if world > 1:
            # The same decisions on every rank (both involve collectives); a single process
            # decides on the host, with no device read per step.
            flags = torch.tensor([float(stop_now), float(checkpoint_due)], device=device)
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
            stop_now, checkpoint_due = bool(flags[0]), bool(flags[1])
        if stop_now:
            timed_out = True
            break
        if checkpoint_due:
            checkpoint()
            last_checkpoint = time.perf_counter()
    bar.close()
    for sig, handler in previous_handlers.items():
        signal.signal(sig, handler)

    train_seconds = time.perf_counter() - run_start
    checkpoint()
    completed = step >= args.iterations
    if is_main:
        final_model = ema_model or generator
        if math.isnan(val_psnr) or not completed:
            val_psnr = validate(final_model, val_lr, val_hr)
        from srgan import weights

        name = f"{args.stage}_x4"
        meta = metadata(val_psnr, completed=completed)
        final_path = weights.save_weights(final_model, out / f"{name}.pt", meta)
        if args.install and completed:
            try:
                installed, _ = install(final_path, name)
                print(f"installed as {name}: {installed} (fp16)", file=sys.stderr)
            except InstallError as exc:
                print(f"not installed: {exc}", file=sys.stderr)
        state = "stopped early (time box/signal)" if timed_out else "done"
        print(f"{state}: step {step}/{args.iterations}, {patches_seen} patches, val PSNR-Y "
              f"{val_psnr:.2f} dB; weights {final_path}; resume with --resume --out {out}",
              file=sys.stderr)
    if args.param_hash_dir is not None:
        args.param_hash_dir.mkdir(parents=True, exist_ok=True)
        (args.param_hash_dir / f"rank{rank}.txt").write_text(parameter_hash(generator))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (TrainingSetupError, TrainingDataError, LossSpecError, MissingVGGWeightsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
