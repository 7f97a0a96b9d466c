"""A training run's folder: its checkpoint, its CSV log and the metadata its weights carry.

``--out`` of ``srgan.train`` holds ``checkpoint.pt`` (model, optimizers, EMA, step, RNG streams:
everything to resume; written atomically, so a SIGKILL loses at most the time since the last
one), ``log.csv`` (one row per logging interval; rows past the checkpoint are dropped on resume)
and the weights files, whose ``meta`` (``run_metadata``) says how they were made: stage, loss,
schedule, precision, device, data, time, commit.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import math
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

REPO_ROOT = Path(__file__).resolve().parent.parent
CSV_COLUMNS = (
    "step", "patches_seen", "loss_g", "loss_mse", "loss_vgg22", "loss_vgg54", "loss_lf", "loss_lr", "loss_gan", "loss_d",
    "d_real", "d_fake", "lr", "patches_per_s", "val_psnr", "val_texture", "val_shift",
)  # fmt: skip


class TrainingSetupError(RuntimeError):
    """A run that cannot start as asked; the message says why."""


@dataclass
class Progress:
    """Where a run stands: what a checkpoint carries besides the modules and RNG streams."""

    step: int = 0
    patches_seen: int = 0
    best_val: float = -math.inf
    train_seconds: float = 0.0
    init_source: str = "random"
    sized: bool = False  # --fit-minutes: whether args.iterations is the measured schedule yet


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


def rng_state(sampler: Any, device: torch.device) -> dict[str, Any]:
    """This rank's random streams: the patch sampler's, torch's CPU and (on CUDA) device ones."""
    return {"sampler": sampler.state_dict(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def save_checkpoint(path: Path, progress: Progress, *, args: Any, spec: str, modules: dict[str, Any],
                    all_rng: list[dict[str, Any]]) -> None:
    """Write everything to resume from: ``modules`` maps generator / opt_g / discriminator /
    opt_d / ema to their objects (None where the run has none)."""
    atomic_save({
        "step": progress.step, "patches_seen": progress.patches_seen, "loss": spec, "stage": args.stage,
        "num_blocks": args.num_blocks,
        **{name: (m.state_dict() if m is not None else None) for name, m in modules.items()},
        "rng": all_rng, "best_val_psnr": progress.best_val, "train_seconds": progress.train_seconds,
        "iterations": args.iterations, "fit_sized": progress.sized,
        "init_source": progress.init_source, "args": {k: str(v) for k, v in vars(args).items()},
    }, path)


def restore_checkpoint(path: Path, *, args: Any, spec: str, modules: dict[str, Any], sampler: Any,
                       rank: int, device: torch.device, progress: Progress) -> dict[str, Any] | None:
    """Load ``path`` into ``modules`` (those that are not None), the sampler, the RNG streams
    and ``progress``; returns the EMA's state (None if the run kept none). TrainingSetupError
    when the checkpoint is another kind of run."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if ckpt["loss"] != spec or ckpt["num_blocks"] != args.num_blocks:
        raise TrainingSetupError(f"{path} is a {ckpt['loss']} run with {ckpt['num_blocks']} blocks; "
                                 f"this run is {spec}, {args.num_blocks}")
    for name, module in modules.items():
        if module is not None:
            module.load_state_dict(ckpt[name])
    if args.fit_minutes is not None and ckpt.get("fit_sized"):
        args.iterations, progress.sized = ckpt["iterations"], True  # keep the schedule it was sized to
    progress.step, progress.patches_seen = ckpt["step"], ckpt["patches_seen"]
    progress.best_val, progress.train_seconds = ckpt["best_val_psnr"], ckpt["train_seconds"]
    progress.init_source = ckpt.get("init_source", progress.init_source)
    rng = ckpt["rng"]
    if rank < len(rng):  # same world size: each rank continues its own streams
        sampler.load_state_dict(rng[rank]["sampler"])
        torch.set_rng_state(rng[rank]["torch"])
        if device.type == "cuda" and rng[rank].get("cuda") is not None:
            torch.cuda.set_rng_state(rng[rank]["cuda"])
    else:
        sampler.generator.manual_seed(args.seed * 1000 + rank + 7919 * progress.step)
    return ckpt.get("ema")


def run_metadata(args: Any, progress: Progress, *, spec: str, world: int, device: torch.device,
                 use_bf16: bool, memory_format: torch.memory_format, train_images: int,
                 val_images: int, val_psnr: float, completed: bool) -> dict[str, Any]:
    """What the weights written by a run record about it (``srgan.weights`` meta)."""
    return {
        "stage": args.stage, "loss": spec, "iterations": progress.step, "target_iterations": args.iterations,
        "completed": completed, "patches_seen": progress.patches_seen, "batch_size": args.batch_size,
        "global_batch_size": args.batch_size * world, "world_size": world, "patch": args.patch,
        "lr": args.lr, "schedule": args.schedule, "ema": args.ema, "d_warmup": getattr(args, "d_warmup", 0), "bf16": use_bf16,
        "fit_minutes": args.fit_minutes,
        "compile": args.compile_mode if getattr(args, "compile", False) else None,  # torch.compile's mode, or eager
        "precision": "bf16 autocast" if use_bf16 else "fp32",
        "memory_format": "channels_last" if memory_format == torch.channels_last else "contiguous",
        "wall_time_s": round(progress.train_seconds, 1), "device": device_name(device),
        "data": str(args.data), "train_images": train_images, "val_images": val_images,
        "val_psnr_y": round(val_psnr, 3), "best_val_psnr_y": round(progress.best_val, 3),
        "init": progress.init_source, "num_blocks": args.num_blocks, "git_commit": git_commit(),
        "torch": str(torch.__version__), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
