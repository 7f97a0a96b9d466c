"""Named generator weights that live inside the package.

Like torchvision's ``Weights`` enums, each entry says what the file holds and
how it was made; the training metadata travels in the file itself. Nothing is
ever downloaded: a missing file is an error naming the command that makes it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .models import SRResNet

PACKAGE_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class WeightsInfo:
    name: str
    filename: str
    description: str
    loss: str  # the paper's loss for it, as srgan.losses writes it
    recipe: str  # the command that trains it and installs it here (a command only: it is quoted as code)
    where: str  # what the recipe needs besides the command
    paper_psnr: dict[str, float]  # the paper's Table 2 Y-PSNR (dB), 4x
    paper_ssim: dict[str, float]


WEIGHTS: dict[str, WeightsInfo] = {
    "srresnet_x4": WeightsInfo(
        name="srresnet_x4",
        filename="srresnet_x4.pt",
        description="SRResNet, 16 blocks, 4x, trained with pixel MSE",
        loss="1*MSE",
        recipe="python -m srgan.train --stage srresnet --install",
        where="on a GPU (or, in hours, a CPU with bf16)",
        paper_psnr={"Set5": 32.05, "Set14": 28.49, "BSD100": 27.58},
        paper_ssim={"Set5": 0.9019, "Set14": 0.8184, "BSD100": 0.7620},
    ),
    "srgan_x4": WeightsInfo(
        name="srgan_x4",
        filename="srgan_x4.pt",
        description="SRGAN-VGG54 generator, 4x, VGG54 content + 1e-3 adversarial loss",
        loss="1*VGG54+0.001*GAN",
        recipe="python -m srgan.train --stage srgan --install",
        where="from srresnet_x4, on a GPU (or, in hours, a CPU with bf16)",
        paper_psnr={"Set5": 29.40, "Set14": 26.02, "BSD100": 25.16},
        paper_ssim={"Set5": 0.8472, "Set14": 0.7397, "BSD100": 0.6688},
    ),
}

# Method names used across the app -> weight names.
METHOD_WEIGHTS = {"srresnet": "srresnet_x4", "srgan": "srgan_x4"}


class MissingWeightsError(FileNotFoundError):
    """Trained weights that are not in the package (yet). ``names``: every missing weights name
    (empty for a file that is there but unreadable)."""

    names: tuple[str, ...] = ()


def weights_dir() -> Path:
    """SRGAN_WEIGHTS_DIR if set (read at call time), else the package's own folder."""
    env = os.environ.get("SRGAN_WEIGHTS_DIR")
    return Path(env) if env else PACKAGE_WEIGHTS_DIR


def _info(name: str) -> WeightsInfo:
    name = METHOD_WEIGHTS.get(name, name)
    if name not in WEIGHTS:
        raise KeyError(f"unknown weights {name!r}; known: {', '.join(WEIGHTS)}")
    return WEIGHTS[name]


def weights_path(name: str) -> Path:
    return weights_dir() / _info(name).filename


def is_available(name: str) -> bool:
    return weights_path(name).is_file()


def missing_line(name: str) -> str:
    """The missing file and how to make it, in plain text (terminals print it: no Markdown), the
    command last so that it can be copied whole."""
    info = _info(name)
    return f"{weights_path(name)} ({info.description}): make it {info.where}, with: {info.recipe}"


def check_available(names: list[str] | tuple[str, ...], *, needed_by: str = "", alternative: str = "") -> None:
    """Raise one MissingWeightsError naming every file of ``names`` that is absent (not just the
    first), what needs them (``needed_by``) and what works without them (``alternative``)."""
    missing = tuple(_info(name).name for name in names if not is_available(name))
    if not missing:
        return
    lead = f"{needed_by} needs trained weights that are missing:" if needed_by else "trained weights are missing:"
    lines = [lead] + [f"  {missing_line(name)}" for name in missing]
    if os.environ.get("SRGAN_WEIGHTS_DIR"):  # the package's own files may be there after all
        lines.append(f"  (SRGAN_WEIGHTS_DIR is set: weights are read from {weights_dir()}, "
                     f"not from the package's {PACKAGE_WEIGHTS_DIR})")
    if alternative:
        lines.append(alternative)
    error = MissingWeightsError("\n".join(lines))
    error.names = missing
    raise error


def _read(name: str) -> dict[str, Any]:
    path = weights_path(name)
    check_available([name])
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise MissingWeightsError(f"{path} is not a readable weights file ({exc})") from None
    if not isinstance(blob, dict) or "state_dict" not in blob:
        raise MissingWeightsError(f"{path} is not a weights file written by srgan.weights.save_weights")
    # Shipped weights are stored as fp16 to halve the package; the networks compute in fp32.
    blob["state_dict"] = {k: v.float() if v.is_floating_point() else v for k, v in blob["state_dict"].items()}
    return blob


def weights_meta(name: str) -> dict[str, Any]:
    """The training metadata stored with the weights (stage, data, iterations, ...)."""
    return dict(_read(name).get("meta", {}))


def describe(name: str) -> str:
    """One line for users: how the named weights were made, from their metadata."""
    info = _info(name)
    if not is_available(name):
        return (f"{info.name}: **missing**, {info.filename} is not in this package yet "
                f"(made {info.where}, with `{info.recipe}`)")
    meta = weights_meta(name)
    device = str(meta.get("device", "an unrecorded device"))
    parts = [f"{info.name}: {info.description}"]
    if meta.get("loss") and meta["loss"] != info.loss:
        parts.append(f"last run's loss {meta['loss']}")
    made = []
    if meta.get("wall_time_s"):
        seconds = float(meta["wall_time_s"])
        took = f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"
        made.append(f"trained {took} on {device}")
    if meta.get("precision"):
        made.append(str(meta["precision"]))
    if meta.get("patches_seen"):
        seen = int(meta["patches_seen"])
        total = int(meta.get("total_patches") or seen)
        made.append(f"{seen:,} patches of {meta.get('patch', 96)} px"
                    + (f" ({total:,} in all with earlier runs it started from)" if total > seen else ""))
    if made:
        parts.append(", ".join(made))
    set5 = meta.get("set5_psnr_y")
    if isinstance(set5, dict) and "fp16" in set5:
        parts.append(f"Set5 PSNR-Y {set5['fp16']:.2f} dB (paper {info.paper_psnr['Set5']:.2f})")
    if device.startswith("cpu") and not meta.get("gpu_minutes"):
        parts.append("interim CPU-trained weights: a GPU run replaces them")
    return "; ".join(parts)


def generator_from_state_dict(state_dict: dict[str, torch.Tensor], meta: dict[str, Any] | None = None) -> SRResNet:
    meta = meta or {}
    model = SRResNet(
        num_blocks=int(meta.get("num_blocks", 16)),
        channels=int(meta.get("channels", 64)),
        scale=int(meta.get("scale", 4)),
    )
    model.load_state_dict(state_dict)
    return model.eval()


def load_generator(name: str, *, device: torch.device | str = "cpu") -> SRResNet:
    """The named trained generator, in eval mode, on ``device``."""
    blob = _read(name)
    return generator_from_state_dict(blob["state_dict"], blob.get("meta")).to(device)


def load_state_dict(name: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    blob = _read(name)
    return blob["state_dict"], dict(blob.get("meta", {}))


def save_weights(model: torch.nn.Module, path: str | Path, meta: dict[str, Any], *,
                 dtype: torch.dtype = torch.float32) -> Path:
    """Write the state_dict with its metadata, atomically; floating tensors stored as ``dtype``
    (fp32 for run folders, fp16 for the weights shipped in the package: loading returns fp32)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = getattr(model, "module", model)  # unwrap DDP
    module = getattr(module, "_orig_mod", module)  # unwrap torch.compile
    state = {k: v.detach().to("cpu", dtype).clone() if v.is_floating_point() else v.detach().cpu().clone()
             for k, v in module.state_dict().items()}
    meta = dict(meta)
    meta["storage_dtype"] = str(dtype).removeprefix("torch.")
    if isinstance(module, SRResNet):
        meta.setdefault("num_blocks", len(module.body))
        meta.setdefault("channels", module.conv_first[0].out_channels)
        meta.setdefault("scale", module.scale)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"state_dict": state, "meta": meta}, tmp)
    os.replace(tmp, path)
    return path


def interpolate_state_dicts(
    sd_a: dict[str, torch.Tensor], sd_b: dict[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """Network interpolation (as ESRGAN): (1 - alpha) * a + alpha * b, per tensor.

    alpha = 0 and 1 return exact copies of a and b; integer buffers (BN's
    batch counter) are taken from the nearer end.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if sd_a.keys() != sd_b.keys():
        raise ValueError("the two state dicts hold different parameters")
    out = {}
    for key, a in sd_a.items():
        b = sd_b[key]
        if alpha == 0.0 or not a.is_floating_point():
            out[key] = (a if alpha < 0.5 else b).clone() if not a.is_floating_point() else a.clone()
        elif alpha == 1.0:
            out[key] = b.clone()
        else:
            out[key] = torch.lerp(a, b, alpha)
    return out
