"""Tile size against time and memory of tiled inference: python scripts/bench_tiles.py

For LR inputs of 270x480, 512x512 and 720x1280, runs `srgan.inference.upscale_tensor` with the
trained SRResNet (random weights when absent: same cost) in the precision "auto" picks, with
tiles of 128, 192, 256, 384 LR pixels and the whole image (up to 0.6 MP), each in its own
process so that the peak RSS is that setting's. Prints the best of two runs after a warm-up.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZES = ((270, 480), (512, 512), (720, 1280))
TILES = ("128", "192", "256", "384", "none")


def measure(height: int, width: int, tile: int | None) -> dict:
    sys.path.insert(0, str(ROOT))
    import torch

    from srgan import weights
    from srgan.inference import prepare_generator, resolve_precision, upscale_tensor
    from srgan.models import srresnet_x4

    device = torch.device("cpu")
    precision = resolve_precision("auto", device)
    generator = weights.load_generator("srresnet_x4") if weights.is_available("srresnet_x4") else srresnet_x4().eval()
    model = prepare_generator(generator, device=device, precision=precision)
    lr = torch.rand(1, 3, height, width)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    upscale_tensor(model, lr, tile=tile)  # warm-up
    times = []
    for _ in range(2):
        start = time.perf_counter()
        upscale_tensor(model, lr, tile=tile)
        times.append(time.perf_counter() - start)
    return {"precision": precision, "ms": round(min(times) * 1e3), "before_mb": round(before),
            "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main() -> None:
    if len(sys.argv) == 4:  # one setting, in a process of its own
        height, width, tile = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
        print(json.dumps(measure(height, width, None if tile == "none" else int(tile))))
        return
    for height, width in SIZES:
        for tile in TILES:
            if tile == "none" and height * width > 600_000:
                continue
            run = subprocess.run([sys.executable, __file__, str(height), str(width), tile],
                                 capture_output=True, text=True, check=True)
            result = json.loads(run.stdout)
            print(f"{height}x{width} tile {tile}: {result['ms']} ms in {result['precision']}, peak RSS "
                  f"{result['peak_mb']} MB ({result['before_mb']} MB before the first image)", flush=True)


if __name__ == "__main__":
    main()
