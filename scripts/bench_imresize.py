"""srgan.imresize's timings, and against another version of the file (the dense one of 23de618).

    git show 23de618:srgan/imresize.py > /tmp/old_imresize.py
    python scripts/bench_imresize.py [--old /tmp/old_imresize.py] [--device cuda]

Each resize's fastest run, old and new called in turn (the machine is shared: the minimum is the
least disturbed, and a busy moment hits both alike); weights cached, as in training. ratio = old /
new. The old code is not run where its dense matrices would not fit (the strip).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# The module itself (srgan exports a function of the same name).
new_imresize = importlib.import_module("srgan.imresize")


def load_module(path: Path):
    spec = importlib.util.spec_from_file_location("old_imresize", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

CASES = [
    ("training batch (16,3,96,96) x1/4", (16, 3, 96, 96), 1 / 4),
    ("training batch (16,3,96,96) x1/4, fp64", (16, 3, 96, 96), 1 / 4),
    ("LR batch (16,3,24,24) x4", (16, 3, 24, 24), 4),
    ("image 512x512 x4", (1, 3, 512, 512), 4),
    ("image 256x256 x4", (1, 3, 256, 256), 4),
    ("1080p (1,3,1080,1920) x1/4", (1, 3, 1080, 1920), 1 / 4),
    ("image 1000x1000 x4 (the demo's LR limit)", (1, 3, 1000, 1000), 4),
    ("image 2000x2000 x1/4 (the demo's HR limit)", (1, 3, 2000, 2000), 1 / 4),
    ("strip 4x10000 x4 (the issue's image)", (1, 3, 4, 10000), 4),
]


def best_seconds(fns, device, repeats):
    """The fastest run of each of ``fns``, called in turn (so a busy moment of the shared machine
    hits them alike), at least ``repeats`` rounds and at least a second of them."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    while len(times[0]) < repeats or sum(map(sum, times)) < 1.0:
        for fn, spent in zip(fns, times):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            spent.append(time.perf_counter() - start)
    return [min(spent) for spent in times]


def forced(bound, fn):
    """``fn`` run with DENSE_MAX_ENTRIES set to ``bound`` (0: every axis banded)."""
    def run():
        saved = new_imresize.DENSE_MAX_ENTRIES
        new_imresize.DENSE_MAX_ENTRIES = bound
        try:
            return fn()
        finally:
            new_imresize.DENSE_MAX_ENTRIES = saved
    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--old", type=Path, help="another imresize.py to compare with (ratio = old / new)")
    args = parser.parse_args()
    device = torch.device(args.device)
    old_imresize = load_module(args.old) if args.old else None
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print("| case | old (ms) | new (ms) | old / new | new, banded forced (ms) | max abs diff |")
    print("|---|---|---|---|---|---|")
    for label, shape, scale in CASES:
        dtype = torch.float64 if "fp64" in label else torch.float32
        x = torch.rand(shape, device=device, dtype=dtype)
        old_fits = old_imresize is not None and "strip" not in label
        fns = [lambda: new_imresize.imresize(x, scale=scale), forced(0, lambda: new_imresize.imresize(x, scale=scale))]
        if old_fits:
            fns.append(lambda: old_imresize.imresize(x, scale=scale))
        new, banded, *old = best_seconds(fns, device, args.repeats)
        if old_fits:
            diff = (old_imresize.imresize(x, scale=scale) - new_imresize.imresize(x, scale=scale)).abs().max().item()
            old_ms, ratio, diff_text = f"{old[0] * 1e3:.2f}", f"{old[0] / new:.2f}", f"{diff:.1e}"
        else:
            old_ms, ratio, diff_text = ("(too large)" if old_imresize else "-"), "-", "-"
        print(f"| {label} | {old_ms} | {new * 1e3:.2f} | {ratio} | {banded * 1e3:.2f} | {diff_text} |", flush=True)

    # Where the dense product stops paying: both forms forced, around DENSE_MAX_ENTRIES.
    print()
    print(f"dense vs banded (DENSE_MAX_ENTRIES = {new_imresize.DENSE_MAX_ENTRIES:,} entries per axis)")
    print("| case | entries per axis (out x in) | dense (ms) | banded (ms) | dense / banded |")
    print("|---|---|---|---|---|")
    for side, scale in ((64, 4), (128, 4), (256, 4), (256, 1 / 4), (512, 1 / 4), (1024, 1 / 4)):
        x = torch.rand(4, 3, side, side, device=device)
        dense, banded = best_seconds([forced(1 << 62, lambda: new_imresize.imresize(x, scale=scale)),
                                      forced(0, lambda: new_imresize.imresize(x, scale=scale))], device, args.repeats)
        entries = side * round(side * scale)
        print(f"| (4,3,{side},{side}) x{scale:g} | {entries:,} | {dense * 1e3:.2f} | {banded * 1e3:.2f} "
              f"| {dense / banded:.2f} |", flush=True)


if __name__ == "__main__":
    main()
