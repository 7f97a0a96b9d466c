"""Put a trained generator into the package as named fp16 weights.

    python -m srgan.install runs/srresnet-cpu/best_generator.pt --name srresnet_x4

The source is a weights file of a run folder (``best_generator.pt``, ``srresnet_x4.pt``) or a
training ``checkpoint.pt``. The package stores fp16 (3 MB instead of 6: the device machine
receives the whole checkout in 64 MiB) and loads fp32. Where the Set5 benchmark is present,
Set5 Y-PSNR is measured with the fp32 and the fp16-stored weights, recorded in the metadata,
and the install is refused if storage moved it by 0.01 dB or more.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .evaluate import default_benchmarks, load_pair
from .inference import upscale_tensor
from .images import tensor_to_array
from .metrics import psnr_y
from .models import SRResNet
from .weights import WEIGHTS, generator_from_state_dict, save_weights, weights_path

FP16_PSNR_TOLERANCE_DB = 0.01


class InstallError(RuntimeError):
    """A generator that cannot be installed; the message says why."""


def read_generator_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(fp32 state dict, metadata) from a weights file or a training checkpoint."""
    if not path.is_file():
        raise InstallError(f"{path}: no such file")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # not a torch file, or pickled objects we refuse to run
        raise InstallError(f"{path}: not a weights file or training checkpoint ({type(exc).__name__})") from None
    if not isinstance(blob, dict):
        raise InstallError(f"{path}: not a weights file or training checkpoint")
    if "state_dict" in blob:
        state, meta = blob["state_dict"], dict(blob.get("meta") or {})
    elif "generator" in blob:  # a checkpoint: its options become the metadata
        state = blob["generator"]
        meta = {"stage": blob.get("stage"), "loss": blob.get("loss"), "iterations": blob.get("step"),
                "patches_seen": blob.get("patches_seen"), "num_blocks": blob.get("num_blocks", 16),
                "best_val_psnr_y": blob.get("best_val_psnr"), "wall_time_s": blob.get("train_seconds")}
    else:
        raise InstallError(f"{path}: holds neither 'state_dict' nor 'generator'")
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    return state, meta


def fp16_round_trip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict as the package will load it: stored fp16, read back as fp32.
    InstallError where a value does not fit fp16 (it would load as inf)."""
    out = {}
    for key, value in state.items():
        if value.is_floating_point():
            half = value.half()
            if not torch.isfinite(half).all():
                raise InstallError(f"{key} holds values beyond fp16's range (max |x| "
                                   f"{value.abs().max().item():.3g}); these weights cannot be stored as fp16")
            value = half.float()
        out[key] = value
    return out


def set5_psnr(model: SRResNet, set5: Path) -> float:
    """Mean Y-PSNR (4 px border) of ``model`` on Set5, as ``srgan.evaluate`` scores it."""
    names = sorted(p.name for p in (set5 / "HR").glob("*.png"))
    if not names:
        raise InstallError(f"no HR images in {set5 / 'HR'}")
    scores = []
    for name in names:
        hr, lr = load_pair(set5, name)
        scores.append(psnr_y(tensor_to_array(upscale_tensor(model, lr, tile=256)), hr))
    return float(np.mean(scores))


def install(source: Path, name: str, *, benchmarks: Path | None = None,
            extra_meta: dict[str, str] | None = None) -> tuple[Path, dict[str, Any]]:
    """Write ``source``'s generator as the package's fp16 weights ``name``; returns (path, meta).
    ``extra_meta`` adds provenance the run could not know (e.g. the history of several runs)."""
    if name not in WEIGHTS:
        raise InstallError(f"unknown weights {name!r}; known: {', '.join(WEIGHTS)}")
    state, meta = read_generator_file(source)
    try:
        model = generator_from_state_dict(state, meta)
    except RuntimeError as exc:
        raise InstallError(f"{source}: does not fit the generator: {str(exc).splitlines()[0]}") from None
    rounded = generator_from_state_dict(fp16_round_trip(state), meta)
    set5 = (benchmarks or default_benchmarks()) / "Set5"
    if (set5 / "HR").is_dir():
        fp32, fp16 = set5_psnr(model, set5), set5_psnr(rounded, set5)
        meta["set5_psnr_y"] = {"fp32": round(fp32, 4), "fp16": round(fp16, 4)}
        if abs(fp32 - fp16) >= FP16_PSNR_TOLERANCE_DB:
            raise InstallError(f"fp16 storage moves Set5 PSNR-Y from {fp32:.4f} to {fp16:.4f} dB "
                               f"(tolerance {FP16_PSNR_TOLERANCE_DB} dB); not installed")
    meta.update(extra_meta or {})
    meta["installed_from"] = str(source)
    meta["installed_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    path = save_weights(model, weights_path(name), meta, dtype=torch.float16)
    return path, meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m srgan.install", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="weights file or checkpoint.pt of a training run")
    parser.add_argument("--name", choices=tuple(WEIGHTS), default="srresnet_x4", help="named weights to write")
    parser.add_argument("--benchmarks", type=Path, help="benchmarks folder (default ../shared/data/benchmarks)")
    parser.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE",
                        help="add to the metadata (repeatable), e.g. --meta 'history=...'")
    args = parser.parse_args(argv)
    extra = {}
    for item in args.meta:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            parser.error(f"--meta takes KEY=VALUE, got {item!r}")
        extra[key.strip()] = value
    try:
        path, meta = install(args.source, args.name, benchmarks=args.benchmarks, extra_meta=extra)
    except InstallError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    check = meta.get("set5_psnr_y")
    figures = (f"Set5 PSNR-Y {check['fp32']:.4f} dB fp32, {check['fp16']:.4f} dB as stored"
               if check else "Set5 not found: fp16 check skipped")
    print(f"installed {args.source} as {args.name}: {path} ({path.stat().st_size / 1e6:.1f} MB, fp16); {figures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
