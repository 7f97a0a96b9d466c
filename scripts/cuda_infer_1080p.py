"""Time the trained SRResNet on one whole 270x480 LR frame (-> 1080x1920) on a GPU.

The GPU issue's inference target is 5 ms for this frame. `srgan.bench --compile` times the
compiled network only at its 128x128 sweep's fastest setting (tile 128), which at this size makes
9 tile shapes and 9 CUDA graphs; this script times the untiled frame, one shape and one graph,
eager and compiled (mode reduce-overhead), in fp16 and bf16. It prints a markdown table.

    PYTHONPATH=. python scripts/cuda_infer_1080p.py [--device cuda] [--size 270x480] [--repeats 20] [--no-compile]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from srgan.bench import (InferenceSetting, generator_flops, load_or_random_generator, make_runner,
                         median_seconds, photo_crop)
from srgan.inference import parse_device


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", default="270x480", help="LR height x width")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--no-compile", action="store_true", help="eager rows only")
    args = parser.parse_args(argv)
    device = parse_device(args.device)
    height, width = (int(v) for v in args.size.lower().split("x"))
    generator, weights_note = load_or_random_generator("srresnet_x4", device)
    lr = photo_crop(height, width).to(device)
    gflop = generator_flops(generator, height, width) / 1e9
    precisions = ["fp16", "bf16"] if device.type == "cuda" else ["fp32", "bf16"]
    settings = [InferenceSetting(None, True, p) for p in precisions]
    if not args.no_compile:
        settings += [InferenceSetting(None, True, p, compiled=True) for p in precisions]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"SRResNet ({weights_note.split(' (')[0]} weights), {height}x{width} LR -> "
          f"{height * 4}x{width * 4}, {gflop:.0f} GFLOP, on {name}, torch {torch.__version__}")
    print("\n| setting | first call (s) | ms (median of %d) | GFLOP/s |\n|---|---|---|---|" % args.repeats)
    for setting in settings:
        try:
            runner = make_runner(generator, lr, setting)
            start = time.perf_counter()
            runner()  # compiles / records the graph
            first = time.perf_counter() - start
            seconds = median_seconds(runner, device=device, warmup=2, repeats=args.repeats)
        except Exception as exc:  # noqa: BLE001 - one setting failing must not lose the others' figures
            print(f"| {setting.label()} | failed: {type(exc).__name__}: {str(exc)[:120]} | | |")
            continue
        print(f"| {setting.label()} | {first:.1f} | {seconds * 1e3:.2f} | {gflop / seconds:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
