"""Time the demo's three-way comparison on this machine: python scripts/bench_demo.py

Uses the package's weights where present, else random 16-block generators (same cost),
and prints the median end-to-end time of `demo.compare.compare` for 128x128 and 256x256
LR inputs (treated as LR: 4x upscaled by bicubic, SRResNet and SRGAN, NIQE on each), with
the networks in fp32 and in the app's default precision ("auto": bf16 on a CPU with bf16 in
hardware) in the same run, their ratio, and where the time goes; then what a user of the tab
waits for in that precision: the Compare button's handler (`demo.ui.DemoTab.run_compare`: the
comparison, then the panels, wipe, zoom and downloads written as PNG files), from an empty
file cache each time.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage import data

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from demo.compare import compare  # noqa: E402
from demo.ui import DemoTab  # noqa: E402
from srgan.checkpoint import cpu_model_name  # noqa: E402
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
    photo = data.astronaut()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU {cpu_model_name()}")
    for side in (128, 256):
        image = Image.fromarray(np.ascontiguousarray(photo[100:100 + side, 150:150 + side]))
        medians = {}
        for precision in ("fp32", "auto"):
            upscaler = Upscaler(precision=precision)
            compare(image, upscaler=upscaler, mode="Treat as LR")  # warm-up, loads the models
            times, parts = [], []
            for _ in range(3):
                start = time.perf_counter()
                comparison = compare(image, upscaler=upscaler, mode="Treat as LR")
                times.append(time.perf_counter() - start)
                parts.append({m: r.seconds for m, r in comparison.results.items() if r.seconds is not None})
            medians[precision] = median = statistics.median(times)
            networks = statistics.median(sum(p[m] for m in ("srresnet", "srgan") if m in p) for p in parts)
            print(f"{side}x{side} LR -> {4 * side}x{4 * side}, networks in {upscaler.precision}: median {median:.2f} s "
                  f"(SRResNet + SRGAN {networks:.2f} s, the rest: bicubic, NIQE x3, images) "
                  f"(load average {os.getloadavg()[0]:.1f})")
        print(f"{side}x{side}: auto / fp32 = {medians['fp32'] / medians['auto']:.2f}x faster")
        print(f"{side}x{side}: the Compare button's handler, networks in {upscaler.precision}: median "
              f"{handler_seconds(upscaler, image):.2f} s")


def handler_seconds(upscaler: Upscaler, image: Image.Image) -> float:
    """Median time of the tab's Compare handler on ``image`` (treated as LR), files written afresh."""
    with tempfile.TemporaryDirectory() as folder:
        os.environ["GRADIO_TEMP_DIR"] = str(Path(folder) / "gradio")  # the views go under Gradio's cache
        tab = DemoTab(upscaler=upscaler, max_pixels=None, app_dir=Path(folder) / "app")
        source = Path(folder) / "input.png"
        image.save(source)
        times = []
        for _ in range(4):
            shutil.rmtree(tab.views_dir, ignore_errors=True)
            start = time.perf_counter()
            tab.run_compare(str(source), "Treat as LR", 1.0, progress=lambda fraction, desc=None: None)
            times.append(time.perf_counter() - start)
        return statistics.median(times[1:])  # the first run warms up


if __name__ == "__main__":
    main()
