"""Time the demo's three-way comparison on this machine: python scripts/bench_demo.py

Uses the package's weights where present, else random 16-block generators (same cost),
and prints the median end-to-end time of `demo.compare.compare` for 128x128 and 256x256
LR inputs (treated as LR: 4x upscaled by bicubic, SRResNet and SRGAN, NIQE on each).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from demo.compare import compare  # noqa: E402
from srgan.inference import Upscaler  # noqa: E402
from srgan.models import srresnet_x4  # noqa: E402
from srgan.weights import is_available, save_weights  # noqa: E402


def main() -> None:
    if not (is_available("srresnet_x4") and is_available("srgan_x4")):
        folder = tempfile.mkdtemp()
        for name in ("srresnet_x4", "srgan_x4"):
            save_weights(srresnet_x4(), Path(folder) / f"{name}.pt", {"note": "random init, for timing"})
        os.environ["SRGAN_WEIGHTS_DIR"] = folder
        print("weights: random init (no trained weights in the package)")
    upscaler = Upscaler()
    photo = data.astronaut()
    for side in (128, 256):
        image = Image.fromarray(np.ascontiguousarray(photo[100:100 + side, 150:150 + side]))
        compare(image, upscaler=upscaler, mode="Treat as LR")  # warm-up, loads the models
        times = []
        for _ in range(3):
            start = time.perf_counter()
            compare(image, upscaler=upscaler, mode="Treat as LR")
            times.append(time.perf_counter() - start)
        print(f"{side}x{side} LR -> {4 * side}x{4 * side}: median {statistics.median(times):.2f} s "
              f"(load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
