"""Check srgan.niqe against an independent implementation: BasicSR 1.4.2's NIQE.

BasicSR's ``basicsr/metrics/niqe.py`` is a separate Python port of the authors'
MATLAB release (its docstring: MATLAB R2021a 5.72957338, BasicSR 5.7295763 on
baboon.png). This script scores benchmark images with both, prints the table
and writes ``tests/data/niqe_basicsr_reference.csv``, which
``tests/test_niqe.py`` holds srgan.niqe to (agreement within 0.05).

BasicSR itself is not a dependency: give its source archive, which pip fetches
from the registry, and the script imports only the modules NIQE needs::

    pip download --no-deps basicsr==1.4.2 -d /tmp/bsr
    python scripts/niqe_reference.py --basicsr-sdist /tmp/bsr/basicsr-1.4.2.tar.gz
"""

from __future__ import annotations

import argparse
import csv
import importlib
import shutil
import sys
import tarfile
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from srgan.evaluate import default_benchmarks, load_pair, read_uint8  # noqa: E402
from srgan.images import tensor_to_array  # noqa: E402
from srgan.inference import bicubic_upscale_tensor  # noqa: E402
from srgan.niqe import niqe  # noqa: E402

CROP_BORDER = 4  # as srgan.evaluate
OUT = ROOT / "tests" / "data" / "niqe_basicsr_reference.csv"
NEEDED = ("basicsr/metrics/niqe.py", "basicsr/metrics/metric_util.py", "basicsr/metrics/niqe_pris_params.npz",
          "basicsr/utils/matlab_functions.py", "basicsr/utils/registry.py", "basicsr/utils/color_util.py")


def import_basicsr_niqe(sdist: Path, workdir: Path) -> types.ModuleType:
    """BasicSR's niqe module from its sdist, without BasicSR's heavy package imports."""
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            inner = member.name.split("/", 1)[-1]
            if inner in NEEDED:
                target = workdir / inner
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    missing = [n for n in NEEDED if not (workdir / n).is_file()]
    if missing:
        raise SystemExit(f"error: {sdist} lacks {', '.join(missing)}: is it basicsr 1.4.2's source archive?")
    for package in ("basicsr", "basicsr/metrics"):
        (workdir / package / "__init__.py").write_text("")
    (workdir / "basicsr/utils/__init__.py").write_text("from .color_util import bgr2ycbcr\n")
    niqe_py = workdir / "basicsr/metrics/niqe.py"
    # Two adaptations, neither touching the computation: scipy moved convolve out of
    # ndimage.filters, and cv2 is only used for convert_to='gray', which is not used here.
    niqe_py.write_text(niqe_py.read_text().replace("from scipy.ndimage.filters import", "from scipy.ndimage import")
                       .replace("import cv2\n", ""))
    sys.path.insert(0, str(workdir))
    return importlib.import_module("basicsr.metrics.niqe")


def test_images(benchmarks: Path) -> list[tuple[str, np.ndarray]]:
    """HR of Set5, Set14 and ten BSD100 images, and bicubic 4x upscales of Set14 (a range of scores)."""
    images = []
    for dataset, count in (("Set5", None), ("Set14", None), ("BSD100", 10)):
        for path in sorted((benchmarks / dataset / "HR").glob("*.png"))[:count]:
            images.append((f"{dataset}/HR/{path.name}", read_uint8(path)))
    for path in sorted((benchmarks / "Set14" / "HR").glob("*.png")):
        hr, lr = load_pair(benchmarks / "Set14", path.name)
        if hr.ndim == 3:
            with torch.inference_mode():
                images.append((f"Set14/bicubic_x4/{path.name}", tensor_to_array(bicubic_upscale_tensor(lr))))
    return images


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--basicsr-sdist", type=Path, required=True, help="basicsr-1.4.2.tar.gz")
    parser.add_argument("--benchmarks", type=Path, default=default_benchmarks())
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if not args.basicsr_sdist.is_file():
        print(f"error: {args.basicsr_sdist} not found (pip download --no-deps basicsr==1.4.2)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as workdir:
        reference = import_basicsr_niqe(args.basicsr_sdist, Path(workdir))
        rows = []
        for name, image in test_images(args.benchmarks):
            start = time.perf_counter()
            # BasicSR reads images as OpenCV does: BGR channel order.
            theirs = reference.calculate_niqe(image if image.ndim == 2 else image[..., ::-1], CROP_BORDER,
                                              input_order="HW" if image.ndim == 2 else "HWC", convert_to="y")
            mid = time.perf_counter()
            ours = niqe(image, crop_border=CROP_BORDER)
            end = time.perf_counter()
            rows.append((name, theirs, ours, mid - start, end - mid))
            print(f"{name:34s} BasicSR {theirs:8.4f}  ours {ours:8.4f}  diff {ours - theirs:+.1e}  "
                  f"({mid - start:.2f} s vs {end - mid:.2f} s)")
    diffs = np.array([abs(r[2] - r[1]) for r in rows])
    print(f"{len(rows)} images: largest |difference| {diffs.max():.2e}, mean {diffs.mean():.2e}; "
          f"time BasicSR {sum(r[3] for r in rows):.1f} s, ours {sum(r[4] for r in rows):.1f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "niqe_basicsr", "crop_border"])
        writer.writerows((name, f"{theirs:.6f}", CROP_BORDER) for name, theirs, *_ in rows)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
