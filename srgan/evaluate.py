"""Reproduce the paper's Table 2: ``python -m srgan.evaluate``.

4x super-resolution of Set5, Set14 and BSD100, scored with Y-channel PSNR and
SSIM (4-pixel border, uint8 outputs), beside the paper's figures. Inputs are
the MATLAB-made ``LR_bicubic_x4`` images where present (the inputs of the
paper's baselines), else our MATLAB-compatible downscale of HR. Rows for
trained models appear once their weights are in the package. Besides the
paper's columns:

- NIQE (no reference, lower is more natural) on the authors' standard
  pristine model, 4-pixel border, as published NIQE values are computed;
- texture: high-frequency (Laplacian) energy of SR over HR's, summed over a
  set (1 = as much detail as the original; SRResNet is far under it);
- colour: the largest per-channel mean difference |SR - HR| in grey levels,
  averaged over a set's images (a brightness or colour cast).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from .images import pil_to_tensor, tensor_to_array
from .imresize import imresize
from .inference import PRECISIONS, Upscaler, bicubic_upscale_tensor, parse_device, resolve_precision, upscale_tensor
from .metrics import colour_shift, psnr_y, ssim_y, texture_energy
from .weights import METHOD_WEIGHTS, describe, is_available

ROOT = Path(__file__).resolve().parent.parent
SETS = ("Set5", "Set14", "BSD100")
BORDER = 4  # pixels left out at each edge, for every metric (the paper's convention for PSNR/SSIM)

# The paper's Table 2 (4x, Y channel). Its SSIM came from the daala tools and
# reads higher than the standard SSIM computed here (see the README).
PAPER_TABLE2 = {
    "nearest": {"Set5": (26.26, 0.7552), "Set14": (24.64, 0.7100), "BSD100": (25.02, 0.6606)},
    "bicubic": {"Set5": (28.43, 0.8211), "Set14": (25.99, 0.7486), "BSD100": (25.94, 0.6935)},
    "srresnet": {"Set5": (32.05, 0.9019), "Set14": (28.49, 0.8184), "BSD100": (27.58, 0.7620)},
    "srgan": {"Set5": (29.40, 0.8472), "Set14": (26.02, 0.7397), "BSD100": (25.16, 0.6688)},
}
LABELS = {"nearest": "Nearest", "bicubic": "Bicubic", "srresnet": "SRResNet", "srgan": "SRGAN", "hr": "HR"}


def default_benchmarks() -> Path:
    shared = os.environ.get("SRGAN_SHARED_DATA")
    return Path(shared) / "benchmarks" if shared else ROOT.parent / "shared" / "data" / "benchmarks"


@dataclass
class Score:
    method: str
    dataset: str
    image: str
    psnr: float
    ssim: float
    niqe: float | None = None
    texture: float = float("nan")  # Laplacian energy of this output (of HR in HR's row)
    colour: float = float("nan")  # largest per-channel |mean difference| from HR, grey levels


def read_uint8(path: Path) -> np.ndarray:
    """A benchmark image as uint8: (H, W) for greyscale files, (H, W, 3) otherwise."""
    with Image.open(path) as im:
        im = im.convert("L") if im.mode in ("L", "I;16", "I") else im.convert("RGB")
        return np.asarray(im)


def load_pair(dataset_dir: Path, name: str) -> tuple[np.ndarray, torch.Tensor]:
    """(HR uint8 array, LR tensor (1, 3, h, w) in [0, 1]) for one benchmark image."""
    hr = read_uint8(dataset_dir / "HR" / name)
    lr_path = dataset_dir / "LR_bicubic_x4" / name
    if lr_path.is_file():
        lr = pil_to_tensor(Image.fromarray(read_uint8(lr_path)))
    else:
        lr = imresize(pil_to_tensor(Image.fromarray(hr)), scale=1 / 4).clamp(0, 1)
        lr = lr.mul(255).round().div(255)
    h, w = hr.shape[:2]
    if (lr.shape[-2] * 4, lr.shape[-1] * 4) != (h, w):
        raise ValueError(f"{dataset_dir.name}/{name}: LR {tuple(lr.shape[-2:])} is not HR {h}x{w} / 4")
    return hr, lr


def super_resolve(method: str, lr: torch.Tensor, upscaler: Upscaler) -> np.ndarray:
    if method == "nearest":
        out = torch.nn.functional.interpolate(lr, scale_factor=4, mode="nearest")
        return tensor_to_array(out)
    if method == "bicubic":
        return tensor_to_array(bicubic_upscale_tensor(lr))
    return tensor_to_array(upscale_tensor(upscaler.generator(method), lr, tile=upscaler.tile,
                                          colour_fix=upscaler.colour_fix))


def niqe_scorer():
    """srgan.niqe's scorer on the standard model (4-pixel border) when present, else None (with why)."""
    try:
        from . import niqe
        model = niqe.load_pristine_model("standard")
    except Exception as exc:  # absent module or model: the table goes on without NIQE
        return None, str(exc)
    return (lambda image: niqe.niqe(image, model=model, crop_border=BORDER)), ""


def evaluate(
    benchmarks: Path, *, methods: list[str], sets: tuple[str, ...] = SETS, device: str = "cpu",
    limit: int | None = None, with_niqe: bool = True, keep_images: dict | None = None, colour_fix: bool = True,
    precision: str = "fp32",
) -> list[Score]:
    upscaler = Upscaler(device=device, tile=256, precision=precision, colour_fix=colour_fix)
    niqe, why = niqe_scorer() if with_niqe else (None, "disabled")
    if with_niqe and niqe is None:
        print(f"NIQE skipped: {why}", file=sys.stderr)
    scores: list[Score] = []
    for dataset in sets:
        folder = benchmarks / dataset
        names = sorted(p.name for p in (folder / "HR").glob("*.png"))
        if not names:
            raise FileNotFoundError(f"no HR images in {folder / 'HR'}")
        names = names[:limit] if limit else names
        for name in tqdm(names, desc=dataset, unit="img", leave=False):
            hr, lr = load_pair(folder, name)
            use_niqe = niqe is not None
            hr_texture = texture_energy(hr, border=BORDER)
            scores.append(Score("hr", dataset, name, float("nan"), float("nan"), niqe(hr) if use_niqe else None,
                                texture=hr_texture, colour=0.0))
            for method in methods:
                # A greyscale reference is scored on grey values (srgan.metrics handles it).
                sr = super_resolve(method, lr, upscaler)
                score = Score(method, dataset, name, psnr_y(sr, hr, border=BORDER), ssim_y(sr, hr, border=BORDER),
                              niqe(sr) if use_niqe else None, texture=texture_energy(sr, border=BORDER),
                              colour=colour_shift(sr, hr, border=BORDER))
                scores.append(score)
                if keep_images is not None:
                    keep_images.setdefault((dataset, name), {"hr": hr})[method] = sr
    return scores


def summarise(scores: list[Score]) -> dict[tuple[str, str], dict[str, float]]:
    """Per (method, set): mean PSNR, SSIM, NIQE and colour shift, and the texture ratio
    (the set's summed Laplacian energy over HR's, so that no near-flat image dominates)."""
    table: dict[tuple[str, str], dict[str, float]] = {}
    groups: dict[tuple[str, str], list[Score]] = {}
    hr_texture: dict[tuple[str, str], float] = {}
    for s in scores:
        groups.setdefault((s.method, s.dataset), []).append(s)
        if s.method == "hr":
            hr_texture[(s.dataset, s.image)] = s.texture
    for key, group in groups.items():
        niqes = [s.niqe for s in group if s.niqe is not None]
        references = [hr_texture.get((s.dataset, s.image), np.nan) for s in group]
        table[key] = {
            "psnr": float(np.mean([s.psnr for s in group])),
            "ssim": float(np.mean([s.ssim for s in group])),
            "niqe": float(np.mean(niqes)) if niqes else float("nan"),
            "texture": float(np.sum([s.texture for s in group]) / np.sum(references)),
            "colour": float(np.mean([s.colour for s in group])),
            "n": len(group),
        }
    return table


def _fmt(value: float, digits: int) -> str:
    return "–" if value is None or np.isnan(value) else f"{value:.{digits}f}"


def write_tables(table: dict, methods: list[str], sets: tuple[str, ...], out_dir: Path, *, note: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "benchmark.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "dataset", "images", "psnr_y", "ssim_y", "niqe", "texture_ratio", "colour_shift",
                         "paper_psnr_y", "paper_ssim_daala"])
        for method in [*methods, "hr"]:
            for dataset in sets:
                row = table.get((method, dataset))
                if row is None:
                    continue
                paper = PAPER_TABLE2.get(method, {}).get(dataset, (None, None))
                writer.writerow([method, dataset, row["n"], _fmt(row["psnr"], 4), _fmt(row["ssim"], 4),
                                 _fmt(row["niqe"], 4), _fmt(row["texture"], 4), _fmt(row["colour"], 3),
                                 paper[0] or "", paper[1] or ""])

    lines = [
        "# Benchmark: 4x super-resolution, the paper's Table 2",
        "",
        "Y-channel PSNR (dB) / SSIM, 4-pixel border, outputs rounded to uint8; inputs are the",
        "MATLAB-made `LR_bicubic_x4` images. **ours** is measured by this repository,",
        "**paper** is Ledig et al. (2017), Table 2.",
        "",
        "| method | " + " | ".join(f"{d} ours | {d} paper" for d in sets) + " |",
        "|---|" + "---|---|" * len(sets),
    ]
    for method in methods:
        cells = []
        for dataset in sets:
            row = table.get((method, dataset))
            paper = PAPER_TABLE2.get(method, {}).get(dataset)
            ours = f"{row['psnr']:.2f} / {row['ssim']:.4f}" if row else "–"
            theirs = f"{paper[0]:.2f} / {paper[1]:.4f}" if paper else "–"
            cells += [ours, theirs]
        lines.append(f"| {LABELS.get(method, method)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Beyond the paper's columns: **NIQE** (no reference, lower is more natural; the authors' standard",
        "pristine model, 4-pixel border), **texture** (Laplacian energy of the outputs over HR's, summed",
        "over the set: 1 is as much fine detail as the original), **colour** (largest per-channel mean",
        "difference |SR - HR| in grey levels, averaged over the set's images: a brightness or colour cast).",
        "",
        "| method | " + " | ".join(f"{d} NIQE | {d} texture | {d} colour" for d in sets) + " |",
        "|---|" + "---|---|---|" * len(sets),
    ]
    for method in [*methods, "hr"]:
        cells = []
        for dataset in sets:
            row = table.get((method, dataset), {})
            cells += [_fmt(row.get("niqe", np.nan), 3), _fmt(row.get("texture", np.nan), 2),
                      _fmt(row.get("colour", np.nan), 2)]
        lines.append(f"| {LABELS.get(method, method)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "SSIM: ours is the standard SSIM of Wang et al. (Gaussian window 11, sigma 1.5, as",
        "scikit-image); the paper's SSIM came from the daala tools and reads higher on the same",
        "images (bicubic: paper 0.8211 / 0.7486 / 0.6935 vs standard 0.810 / 0.702 / 0.667 on",
        "Set5 / Set14 / BSD100), so compare PSNR directly and SSIM only as gains over bicubic.",
        "",
        note,
        "",
        "Regenerate: `python -m srgan.evaluate` (CPU, a few minutes).",
    ]
    path = out_dir / "benchmark.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m srgan.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="benchmarks folder (default ../shared/data/benchmarks)")
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--limit", type=int, default=None, help="first N images of each set (quick checks)")
    parser.add_argument("--no-niqe", action="store_true", help="skip NIQE")
    parser.add_argument("--no-figure", action="store_true", help="skip results/comparison.png")
    parser.add_argument("--no-colour-fix", action="store_true",
                        help="score the networks' own outputs, without giving them their input's channel means")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="the networks' precision (default fp32: the tables in full precision; auto is what "
                             "the demo runs, bf16 on a CPU with bf16 in hardware)")
    args = parser.parse_args(argv)

    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    try:
        precision = resolve_precision(args.precision, parse_device(args.device))
    except ValueError as exc:
        parser.error(str(exc))
    benchmarks = args.data or default_benchmarks()
    if not benchmarks.is_dir():
        print(f"error: benchmark data not found at {benchmarks} (pass --data or set SRGAN_SHARED_DATA)", file=sys.stderr)
        return 2
    methods = ["nearest", "bicubic"] + [m for m, w in METHOD_WEIGHTS.items() if is_available(w)]
    note = "Trained rows use the weights shipped in `srgan/weights/`:\n\n" + "\n".join(
        f"- {describe(w)}." for w in METHOD_WEIGHTS.values())
    note += ("\n\nThe networks' outputs are given their LR input's channel means (`srgan.inference`'s colour fix, "
             "as the demo and `python -m srgan.upscale` do)." if not args.no_colour_fix else
             "\n\n**Without the colour fix** (`--no-colour-fix`): the networks' own outputs.")
    if precision != "fp32":
        note += f"\n\nThe networks ran in **{precision}** (`--precision {args.precision}`)."
    if args.limit:  # a quick check must not pass for the full table (it is written to results/ too)
        note += f"\n\n**Partial run: only the first {args.limit} images of each set** (`--limit {args.limit}`)."
    start = time.perf_counter()
    images: dict = {}
    try:
        scores = evaluate(benchmarks, methods=methods, sets=tuple(args.sets), device=args.device, limit=args.limit,
                          with_niqe=not args.no_niqe, keep_images=None if args.no_figure else images,
                          colour_fix=not args.no_colour_fix, precision=precision)
    except (OSError, ValueError) as exc:  # a set without HR images, an unreadable or mis-sized image
        print(f"error: {exc}", file=sys.stderr)
        return 2
    table = summarise(scores)
    path = write_tables(table, methods, tuple(args.sets), args.out, note=note)
    with open(args.out / "benchmark_per_image.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "dataset", "image", "psnr_y", "ssim_y", "niqe", "texture_energy", "colour_shift"])
        for s in scores:
            writer.writerow([s.method, s.dataset, s.image, _fmt(s.psnr, 4), _fmt(s.ssim, 4),
                             "" if s.niqe is None else f"{s.niqe:.4f}", _fmt(s.texture, 2), _fmt(s.colour, 3)])
    if not args.no_figure:
        write_comparison(images, args.out / "comparison.png")
    print(path.read_text())
    print(f"done in {time.perf_counter() - start:.0f} s")
    return 0


def write_comparison(images: dict, path: Path) -> None:
    """Crops of a few Set14 / BSD100 images, method by method, like the paper's figures."""
    try:
        from .figures import comparison_figure
    except ImportError as exc:
        print(f"comparison figure skipped: {exc}", file=sys.stderr)
        return
    wanted = [("Set14", "baboon.png"), ("Set14", "comic.png"), ("BSD100", "008.png"), ("BSD100", "086.png")]
    rows = []
    for key in wanted:
        if key in images:
            arrays = images[key]
            order = [m for m in ("bicubic", "srresnet", "srgan", "hr") if m in arrays]
            rows.append((f"{key[0]} {Path(key[1]).stem}", {m: arrays[m] for m in order}))
    if rows:
        comparison_figure(rows, path)


if __name__ == "__main__":
    sys.exit(main())
