"""The demo's example gallery: sample photos shipped inside scikit-image.

They come with a dependency, so the app needs no download and no shared data.
gr.Examples wants files, so the photos are written as PNGs under the app
folder on first start (and reused afterwards).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image


def _skimage_photo(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data  # imported lazily: it is slow to import

        return getattr(skimage.data, name)()

    return load


def _crop(load: Callable[[], np.ndarray], *, top: int, left: int, side: int) -> Callable[[], np.ndarray]:
    def load_crop() -> np.ndarray:
        return load()[top : top + side, left : left + side]

    return load_crop


# File stem -> function returning an HxWx3 uint8 array. The full photos are large
# enough to be treated as HR (downscaled, then super-resolved against the
# original); the 128x128 crops are small, so they are treated as LR inputs.
EXAMPLE_PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": _skimage_photo("astronaut"),
    "coffee": _skimage_photo("coffee"),
    "chelsea": _skimage_photo("chelsea"),
    "rocket": _skimage_photo("rocket"),
    "astronaut_face_lr": _crop(_skimage_photo("astronaut"), top=40, left=150, side=128),
    "chelsea_eyes_lr": _crop(_skimage_photo("chelsea"), top=60, left=130, side=128),
}


def write_examples(folder: Path) -> list[Path]:
    """Write the example photos as PNGs into `folder` (skipping existing ones); return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, load in EXAMPLE_PHOTOS.items():
        path = folder / f"{name}.png"
        if not path.exists():
            # Write to a temporary name first so a crash never leaves a half-written example.
            partial = path.with_suffix(".partial")
            Image.fromarray(load()).save(partial, format="PNG")
            partial.replace(path)
        paths.append(path)
    return paths
