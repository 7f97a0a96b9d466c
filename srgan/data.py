"""Training patches for SRGAN, cut and degraded a whole batch at a time on the device.

The paper trains on random 96x96 HR crops and their 4x bicubic-downscaled LR versions. To keep
a GPU fed, the photos are decoded once and held on the device as one flat uint8 buffer
(``ImageBank``); a batch is then drawn with no per-sample Python work:

1. images are picked with probability proportional to their number of valid crop positions
   (so every 96x96 window of the collection is equally likely),
2. the crop position and one of the 8 flips/90-degree rotations are drawn per sample,
3. one gather with batched index arithmetic cuts all crops, the flip/rotation folded into the
   indices (a flip or transpose of a square patch is a permutation of its pixel coordinates),
4. the LR batch is ``srgan.imresize.imresize(hr, scale=1/4)`` (MATLAB bicubic, antialiased),
   rounded to 8 bits like the stored LR images the paper's models see at test time.

Ranges are the paper's: LR in [0, 1], HR in [-1, 1].

A small held-out slice of the training photos (every 40th file, sorted by path) is validation;
the benchmark sets are never used during training.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
VALIDATION_EVERY = 40


class TrainingDataError(ValueError):
    """A training folder that cannot be used; the message says why."""


def default_train_folder() -> Path:
    """SRGAN_SHARED_DATA/train if that variable is set, else ../shared/data/train from the repo."""
    env = os.environ.get("SRGAN_SHARED_DATA")
    if env:
        return Path(env) / "train"
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "train"


def list_images(folder: str | Path) -> list[Path]:
    """All .jpg/.jpeg/.png files under ``folder`` (recursive), sorted by path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TrainingDataError(f"training folder {folder} does not exist")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def split_train_val(paths: list[Path], *, every: int = VALIDATION_EVERY) -> tuple[list[Path], list[Path]]:
    """Deterministic hold-out: every ``every``-th file (0, 40, 80, ...) is validation."""
    if len(paths) < 2:
        raise TrainingDataError(f"need at least 2 training images (one is held out), found {len(paths)}")
    val = paths[::every]
    train = [p for i, p in enumerate(paths) if i % every]
    return train, val


def decode_rgb(path: Path) -> np.ndarray:
    """An image file as an upright uint8 (H, W, 3) RGB array."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


@dataclass
class ImageBank:
    """Decoded images held as one flat uint8 buffer on a device.

    Image k occupies ``pixels[offsets[k] : offsets[k] + 3 * heights[k] * widths[k]]`` in (C, H, W)
    order. ``names`` are the source paths (for metadata and errors).
    """

    pixels: Tensor  # uint8, flat
    offsets: Tensor  # int64 (K,)
    heights: Tensor  # int64 (K,)
    widths: Tensor  # int64 (K,)
    names: list[str]

    @classmethod
    def from_arrays(cls, arrays: list[np.ndarray], *, names: list[str] | None = None,
                    device: torch.device | str = "cpu") -> ImageBank:
        if not arrays:
            raise TrainingDataError("no images to hold")
        chw = [np.ascontiguousarray(a.transpose(2, 0, 1)).reshape(-1) for a in arrays]
        sizes = torch.tensor([c.size for c in chw], dtype=torch.int64)
        offsets = torch.cumsum(sizes, 0) - sizes
        pixels = torch.from_numpy(np.concatenate(chw))
        return cls(
            pixels=pixels.to(device),
            offsets=offsets.to(device),
            heights=torch.tensor([a.shape[0] for a in arrays], dtype=torch.int64, device=device),
            widths=torch.tensor([a.shape[1] for a in arrays], dtype=torch.int64, device=device),
            names=names or [f"image{k}" for k in range(len(arrays))],
        )

    @classmethod
    def from_paths(cls, paths: list[Path], *, device: torch.device | str = "cpu",
                   workers: int = 8) -> ImageBank:
        """Decode ``paths`` (in threads: PIL releases the GIL while decoding) onto ``device``."""
        if not paths:
            raise TrainingDataError("no images to load")
        try:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                arrays = list(pool.map(decode_rgb, paths))
        except (OSError, ValueError) as exc:
            raise TrainingDataError(f"cannot decode a training image: {exc}") from None
        return cls.from_arrays(arrays, names=[str(p) for p in paths], device=device)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def device(self) -> torch.device:
        return self.pixels.device

    @property
    def num_pixels(self) -> int:
        return int((self.heights * self.widths).sum())

    def image(self, k: int) -> Tensor:
        """Image k as a uint8 (3, H, W) view."""
        h, w, start = int(self.heights[k]), int(self.widths[k]), int(self.offsets[k])
        return self.pixels[start : start + 3 * h * w].view(3, h, w)


@dataclass
class CropPlan:
    """Where each crop of a batch comes from and how it is flipped (all (B,) tensors).

    The output pixel (i, j) reads crop coordinate (i, j), transposed first if ``transpose``,
    then mirrored vertically if ``flip_v`` and horizontally if ``flip_h``; i.e. the output is
    ``transpose(flip(crop))``. The 8 combinations are the 8 flips/90-degree rotations.
    """

    image: Tensor
    top: Tensor
    left: Tensor
    transpose: Tensor  # bool
    flip_v: Tensor  # bool
    flip_h: Tensor  # bool


def crop_positions(bank: ImageBank, *, patch: int) -> Tensor:
    """Number of valid ``patch`` x ``patch`` crop positions of each image (float64, (K,));
    TrainingDataError where no image has one."""
    positions = ((bank.heights - patch + 1).clamp(min=0) * (bank.widths - patch + 1).clamp(min=0)).double()
    if float(positions.sum()) == 0:
        raise TrainingDataError(f"no training image is at least {patch}x{patch} pixels")
    return positions


def draw_crops(bank: ImageBank, batch_size: int, *, patch: int, generator: torch.Generator,
               augment: bool = True, positions: Tensor | None = None) -> CropPlan:
    """Random crop positions and flips for a batch; images weighted by their crop positions
    (``positions``: ``crop_positions(bank, patch=patch)``, computed here when None; pass it in
    a loop, since checking it reads a value back from the device)."""
    device = bank.device
    if positions is None:
        positions = crop_positions(bank, patch=patch)
    image = torch.multinomial(positions, batch_size, replacement=True, generator=generator)
    u = torch.rand(2, batch_size, generator=generator, device=device, dtype=torch.float64)
    top = (u[0] * (bank.heights[image] - patch + 1)).long()
    left = (u[1] * (bank.widths[image] - patch + 1)).long()
    if augment:
        flags = torch.randint(0, 2, (3, batch_size), generator=generator, device=device).bool()
    else:
        flags = torch.zeros(3, batch_size, dtype=torch.bool, device=device)
    return CropPlan(image, top, left, flags[0], flags[1], flags[2])


def cut_crops(bank: ImageBank, plan: CropPlan, *, patch: int) -> Tensor:
    """Gather all crops of ``plan`` at once: uint8 (B, 3, patch, patch) on the bank's device."""
    device = bank.device
    ii = torch.arange(patch, device=device).view(1, patch, 1)
    jj = torch.arange(patch, device=device).view(1, 1, patch)
    t = plan.transpose.view(-1, 1, 1)
    row = torch.where(t, jj, ii)
    col = torch.where(t, ii, jj)
    row = torch.where(plan.flip_v.view(-1, 1, 1), patch - 1 - row, row)
    col = torch.where(plan.flip_h.view(-1, 1, 1), patch - 1 - col, col)
    h, w = bank.heights[plan.image], bank.widths[plan.image]
    # Flat index of pixel (c, top + row, left + col) of each sample's image.
    base = bank.offsets[plan.image] + plan.top * w + plan.left  # (B,)
    spatial = row * w.view(-1, 1, 1) + col  # (B, P, P)
    channel = torch.arange(3, device=device).view(1, 3, 1, 1) * (h * w).view(-1, 1, 1, 1)
    index = base.view(-1, 1, 1, 1) + channel + spatial.unsqueeze(1)
    return bank.pixels[index]


def degrade(hr_uint8: Tensor, *, scale: int = 4, quantize: bool = True) -> tuple[Tensor, Tensor]:
    """uint8 HR crops -> (LR in [0, 1], HR in [-1, 1]), float32.

    LR = MATLAB-bicubic downscale by ``scale``, clamped and (by default) rounded to 8 bits,
    as the LR images a trained model is later given.
    """
    from srgan.imresize import imresize

    hr = hr_uint8.float() / 255.0
    lr = imresize(hr, scale=1 / scale).clamp_(0, 1)
    if quantize:
        lr = torch.round(lr * 255.0) / 255.0
    return lr, hr * 2 - 1


class PatchSampler:
    """Endless random (LR, HR) training batches from an ``ImageBank``.

    Args (keyword-only):
        patch: HR crop side (paper: 96); must divide by ``scale``.
        scale: downscaling factor (paper: 4).
        seed: seed of this sampler's own generator (on the bank's device). Under DDP each rank
            passes a different seed: every rank draws from all images with its own RNG stream.
        augment: random flips and 90-degree rotations.
    """

    def __init__(self, bank: ImageBank, *, patch: int = 96, scale: int = 4, seed: int = 0,
                 augment: bool = True) -> None:
        if patch % scale:
            raise TrainingDataError(f"patch {patch} must divide by the scale {scale}")
        self.bank = bank
        self.patch = patch
        self.scale = scale
        self.augment = augment
        self.generator = torch.Generator(device=bank.device)
        self.generator.manual_seed(seed)
        self.positions = crop_positions(bank, patch=patch)

    def sample(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """(LR (B, 3, p/s, p/s) in [0, 1], HR (B, 3, p, p) in [-1, 1]) on the bank's device."""
        plan = draw_crops(self.bank, batch_size, patch=self.patch, generator=self.generator,
                          augment=self.augment, positions=self.positions)
        return degrade(cut_crops(self.bank, plan, patch=self.patch), scale=self.scale)

    def state_dict(self) -> dict[str, Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.generator.set_state(state["generator"].cpu())


def validation_crops(bank: ImageBank, *, patch: int = 128, per_image: int = 4, scale: int = 4,
                     seed: int = 0) -> tuple[Tensor, Tensor]:
    """Fixed (LR in [0, 1], HR in [-1, 1]) validation crops: ``per_image`` seeded positions in
    each image, no augmentation; the same for every run with the same images and seed."""
    patch = min(patch, int(bank.heights.min()), int(bank.widths.min())) // scale * scale
    if patch < 4 * scale:
        raise TrainingDataError("validation images are too small to crop")
    generator = torch.Generator(device=bank.device)
    generator.manual_seed(seed)
    image = torch.arange(len(bank), device=bank.device).repeat_interleave(per_image)
    u = torch.rand(2, image.numel(), generator=generator, device=bank.device, dtype=torch.float64)
    top = (u[0] * (bank.heights[image] - patch + 1)).long()
    left = (u[1] * (bank.widths[image] - patch + 1)).long()
    no = torch.zeros_like(image, dtype=torch.bool)
    plan = CropPlan(image, top, left, no, no, no)
    return degrade(cut_crops(bank, plan, patch=patch), scale=scale)


def load_training_data(folder: str | Path, *, device: torch.device | str = "cpu",
                       max_images: int | None = None) -> tuple[ImageBank, ImageBank]:
    """(train bank, validation bank) for a folder of photos, decoded onto ``device``."""
    paths = list_images(folder)
    if max_images is not None:
        paths = paths[:max_images]
    if not paths:
        raise TrainingDataError(f"no .jpg/.png images found under {folder}")
    train, val = split_train_val(paths)
    return ImageBank.from_paths(train, device=device), ImageBank.from_paths(val, device=device)
