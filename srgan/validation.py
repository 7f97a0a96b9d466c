"""What a training run measures and shows on its fixed validation crops.

Y-PSNR alone cannot watch an SRGAN run: its failures are a collapse into smooth or noisy
output and a drift in colour, at nearly the same PSNR. So each validation also gives the
texture ratio (Laplacian energy of SR over HR's, ``srgan.metrics.texture_energy``, as
``srgan.evaluate``'s texture column) and the colour shift (the largest per-channel mean
difference from HR in grey levels, ``srgan.metrics.colour_shift``, without the colour fix),
and can draw a few crops as an image, to look at while the run goes on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor, nn

from srgan.inference import bicubic_upscale_tensor
from srgan.metrics import colour_shift, texture_energy
from srgan.models import to_unit_range

SHEET_LABEL_HEIGHT = 14  # px: one line of PIL's built-in font above each column
SHEET_JPEG_QUALITY = 95  # 4:4:4, so colour speckle shows; a sheet is about 100 KB


@dataclass(frozen=True)
class Validation:
    """One validation of a generator on the run's fixed crops (eval mode, fp32)."""

    psnr: float  # mean Y-PSNR, dB (the project's convention, 4 px border)
    texture: float  # Laplacian energy of SR over HR's, summed over the crops: 1 is HR's detail
    shift: float  # mean over crops of the largest per-channel mean difference SR - HR, grey levels


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


def to_uint8_images(batch: Tensor) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8 on the host."""
    unit = to_unit_range(batch.detach().float()).clamp(0, 1)
    return (unit * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def generate(generator: nn.Module, val_lr: Tensor, *, batch_size: int = 16) -> Tensor:
    """The generator's outputs (fp32, [-1, 1]) for every validation crop, in eval mode."""
    was_training = generator.training
    generator.eval()
    try:
        return torch.cat([generator(val_lr[start : start + batch_size]).float()
                          for start in range(0, len(val_lr), batch_size)])
    finally:
        generator.train(was_training)


def score(sr: Tensor, hr: Tensor) -> Validation:
    """PSNR, texture ratio and colour shift of outputs ``sr`` against ``hr`` (both [-1, 1])."""
    psnr = float(psnr_y_tensor(sr, hr).mean())
    sr_images, hr_images = to_uint8_images(sr), to_uint8_images(hr)
    hr_energy = sum(texture_energy(image) for image in hr_images)
    texture = sum(texture_energy(image) for image in sr_images) / hr_energy if hr_energy > 0 else math.nan
    shift = float(np.mean([colour_shift(s, h) for s, h in zip(sr_images, hr_images, strict=True)]))
    return Validation(psnr=psnr, texture=texture, shift=shift)


def sheet_indices(count: int, crops: int) -> list[int]:
    """``count`` crop indices spread evenly over ``crops`` (the crops come image by image, so
    spreading shows different photos)."""
    if count <= 0 or crops <= 0:
        return []
    return sorted({round(i * (crops - 1) / max(count - 1, 1)) for i in range(min(count, crops))})


def write_sheet(path: Path, *, val_lr: Tensor, sr: Tensor, hr: Tensor, indices: list[int], step: int) -> Path:
    """Draw the chosen crops as rows of bicubic | SR | HR (a label line above) to a JPEG."""
    bicubic = bicubic_upscale_tensor(val_lr[indices].float()) * 2 - 1
    columns = [to_uint8_images(bicubic), to_uint8_images(sr[indices]), to_uint8_images(hr[indices])]
    rows, height, width = len(indices), hr.shape[-2], hr.shape[-1]
    sheet = Image.new("RGB", (3 * width, SHEET_LABEL_HEIGHT + rows * height), "white")
    draw = ImageDraw.Draw(sheet)
    for col, (label, images) in enumerate(zip(("bicubic", f"SR, step {step:,}", "HR"), columns, strict=True)):
        draw.text((col * width + 3, 1), label, fill="black")
        for row, image in enumerate(images):
            sheet.paste(Image.fromarray(image), (col * width, SHEET_LABEL_HEIGHT + row * height))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    sheet.save(tmp, format="JPEG", quality=SHEET_JPEG_QUALITY, subsampling=0)
    tmp.replace(path)  # a viewer refreshing the folder never opens half a file
    return path


def validate(generator: nn.Module, val_lr: Tensor, val_hr: Tensor, *, sheet: Path | None = None,
             sheet_crops: int = 4, step: int = 0) -> Validation:
    """Score the generator on the validation crops; with ``sheet``, also draw ``sheet_crops``."""
    sr = generate(generator, val_lr)
    if sheet is not None and sheet_crops > 0:
        write_sheet(sheet, val_lr=val_lr, sr=sr, hr=val_hr, indices=sheet_indices(sheet_crops, len(sr)), step=step)
    return score(sr, val_hr)
