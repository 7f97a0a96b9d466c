"""Choose an SRGAN generator among a run's snapshots by a stated perceptual rule.

    python -m srgan.choose runs/x/snapshots/*.pt [--floor-db 3.5] [--texture-floor 0.6]
        [--colour-margin-db 0.5] [--shift-margin 0.5] [--sheet crops.png]

Adversarial training does not converge to a point, and the last step is not the best by any
rule, so we choose by a stated one, in three steps:

1. Y-PSNR floor: candidates whose mean Y-PSNR is more than ``--floor-db`` (3.5 dB) under the
   reference SRResNet's are out. The paper's SRGAN sits 2.4-2.7 dB under its SRResNet and our
   target allows 1.5 dB under the paper's SRGAN; 3 dB until the second GPU session, whose
   snapshots all sat 3.07-4.0 dB under (results/training/srgan_choice.md). Texture floor:
   candidates whose texture ratio (summed Laplacian energy of SR over HR's, as
   ``srgan.evaluate``'s texture column) is under ``--texture-floor`` (0.6, the project's SRGAN
   target) are out too: textures are SRGAN's point, and a smooth snapshot can otherwise win on
   colour (the third GPU session's choice did, at 0.53 / 0.49 on Set14 / BSD100).
2. Colour: NIQE and Y-PSNR are blind to colour, and an adversarial generator can add colour
   speckle or a colour cast; candidates whose mean chroma PSNR (BT.601 Cb and Cr) is more
   than ``--colour-margin-db`` (0.5 dB) under the best remaining candidate's are out, and,
   of those left, the ones whose mean colour shift (``srgan.metrics.colour_shift``: the largest
   per-channel mean difference from HR, grey levels; a brightness drift) is more than
   ``--shift-margin`` (0.5) above the lowest of those.
3. Of the rest, the lowest mean NIQE.

All measured on the training folder's held-out photos (every 40th, never trained on; centre
crops of at most ``--crop`` px, 4x MATLAB-bicubic LR rounded to 8 bits as the trainer makes
them), never on a benchmark set: the benchmarks stay for reporting. Prints one row per
candidate beside HR, bicubic and the reference, marks the choice, and with ``--csv`` writes
the rows; ``--sheet`` draws the same crops of a few held-out photos for each candidate, to look
at before installing. Install the choice with ``python -m srgan.install FILE --name srgan_x4``.
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from srgan.data import TrainingDataError, decode_rgb, default_train_folder, degrade, list_images, split_train_val
from srgan.images import tensor_to_array
from srgan.inference import bicubic_upscale_tensor, upscale_tensor
from srgan.install import InstallError, read_generator_file
from srgan.figures import comparison_figure
from srgan.metrics import colour_shift, psnr_cbcr, psnr_y, texture_energy
from srgan.niqe import niqe
from srgan.weights import generator_from_state_dict, load_generator


@dataclass
class Candidate:
    name: str
    psnr_y: float
    psnr_cbcr: float
    niqe: float
    shift: float = 0.0  # mean colour_shift, grey levels
    texture: float | None = None  # Laplacian energy SR / HR summed over the photos; None: not measured
    within_floor: bool = True
    colour_ok: bool = True


def held_out_pairs(folder: Path, *, crop: int) -> list[tuple[np.ndarray, torch.Tensor]]:
    """(HR uint8 (H, W, 3), LR (1, 3, H/4, W/4) in [0, 1]) for each held-out photo."""
    _, val = split_train_val(list_images(folder))
    pairs = []
    for path in val:
        hr = decode_rgb(path)
        h, w = (min(crop, s) // 4 * 4 for s in hr.shape[:2])
        top, left = (hr.shape[0] - h) // 2, (hr.shape[1] - w) // 2
        hr = np.ascontiguousarray(hr[top : top + h, left : left + w])
        lr, _ = degrade(torch.from_numpy(hr).permute(2, 0, 1)[None])  # as the trainer makes LR
        pairs.append((hr, lr))
    return pairs


def score(upscale, pairs: list[tuple[np.ndarray, torch.Tensor]],
          keep: list[np.ndarray] | None = None) -> tuple[float, float, float, float, float]:
    """(mean Y-PSNR, mean CbCr-PSNR, mean NIQE, mean colour shift, texture ratio) of
    ``upscale(lr) -> uint8 array`` over the pairs; the outputs are appended to ``keep`` when given."""
    outputs = [(upscale(lr), hr) for hr, lr in pairs]
    if keep is not None:
        keep.extend(sr for sr, _ in outputs)
    return (float(np.mean([psnr_y(sr, hr) for sr, hr in outputs])),
            float(np.mean([psnr_cbcr(sr, hr) for sr, hr in outputs])),
            float(np.mean([niqe(sr) for sr, _ in outputs])),
            float(np.mean([colour_shift(sr, hr) for sr, hr in outputs])),
            float(sum(texture_energy(sr) for sr, _ in outputs) / sum(texture_energy(hr) for _, hr in outputs)))


def choose(candidates: list[Candidate], *, reference_psnr: float, floor_db: float,
           colour_margin_db: float, shift_margin: float = 0.5, texture_floor: float = 0.0) -> Candidate:
    """The rule of this module's docstring; ValueError where no candidate passes the floors."""
    for c in candidates:
        c.within_floor = (c.psnr_y >= reference_psnr - floor_db
                          and (c.texture is None or c.texture >= texture_floor))
    kept = [c for c in candidates if c.within_floor]
    if not kept:
        raise ValueError(f"no candidate is within {floor_db:g} dB of the reference's {reference_psnr:.2f} dB "
                         f"with a texture ratio of at least {texture_floor:g}")
    best_colour = max(c.psnr_cbcr for c in kept)
    clean = [c for c in kept if c.psnr_cbcr >= best_colour - colour_margin_db]
    # The shift bar is set among the chroma-clean ones: set among all, the best chroma and the
    # least shift can belong to two candidates that each fail the other's bar, leaving none.
    least_shift = min(c.shift for c in clean)
    for c in candidates:
        c.colour_ok = c in clean and c.shift <= least_shift + shift_margin
    return min((c for c in clean if c.colour_ok), key=lambda c: c.niqe)


def write_sheet(path: Path, pairs: list[tuple[np.ndarray, torch.Tensor]], outputs: dict[str, list[np.ndarray]],
                *, rows: int = 4) -> Path:
    """Crops of the first ``rows`` held-out photos: bicubic | reference | candidates | HR."""
    chosen_rows = []
    for i, (hr, _) in enumerate(pairs[:rows]):
        chosen_rows.append((f"held-out photo {i + 1}", {**{name: images[i] for name, images in outputs.items()}, "hr": hr}))
    return comparison_figure(chosen_rows, path, crop=96, zoom=2)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m srgan.choose", description=__doc__.split("\n\n")[0])
    p.add_argument("candidates", nargs="+", type=Path, help="generator weights files (.pt)")
    p.add_argument("--reference", default="srresnet_x4", help="named weights or .pt the floor is relative to")
    p.add_argument("--floor-db", type=float, default=3.5, help="Y-PSNR below the reference still allowed")
    p.add_argument("--texture-floor", type=float, default=0.6,
                   help="least texture ratio (Laplacian energy SR / HR) still allowed")
    p.add_argument("--colour-margin-db", type=float, default=0.5,
                   help="chroma PSNR below the best candidate's still allowed")
    p.add_argument("--shift-margin", type=float, default=0.5,
                   help="colour shift (grey levels) above the least-shifted candidate's still allowed")
    p.add_argument("--data", type=Path, default=default_train_folder(), help="training photos (held-out split)")
    p.add_argument("--crop", type=int, default=512, help="largest HR side scored")
    p.add_argument("--csv", type=Path, help="also write the rows here")
    p.add_argument("--sheet", type=Path, help="also draw crops of a few held-out photos per candidate (PNG)")
    args = p.parse_args(argv)
    try:
        pairs = held_out_pairs(args.data, crop=args.crop)
        models = {}
        for path in args.candidates:
            state, meta = read_generator_file(path)
            models[str(path)] = generator_from_state_dict(state, meta).eval()
        if args.reference.endswith(".pt"):
            state, meta = read_generator_file(Path(args.reference))
            reference = generator_from_state_dict(state, meta).eval()
        else:
            reference = load_generator(args.reference)
    except (TrainingDataError, InstallError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def run(model):
        return lambda lr: tensor_to_array(upscale_tensor(model, lr, tile=256))

    # Column titles of the sheet: file names without .pt, with their folder where two share a name.
    stems = [Path(name).stem for name in models]
    labels = {name: (stem if stems.count(stem) == 1 else f"{Path(name).parent.name}/{stem}")
              for name, stem in zip(models, stems)}
    reference_label = f"{Path(args.reference).stem} (reference)"
    outputs: dict[str, list[np.ndarray]] = {"bicubic": [], reference_label: []}
    with torch.inference_mode():
        ref = score(run(reference), pairs, keep=outputs[reference_label])
        bicubic = score(lambda lr: tensor_to_array(bicubic_upscale_tensor(lr)), pairs, keep=outputs["bicubic"])
        hr_niqe = float(np.mean([niqe(hr) for hr, _ in pairs]))
        candidates = []
        for name, model in models.items():
            outputs[labels[name]] = []
            candidates.append(Candidate(name, *score(run(model), pairs, keep=outputs[labels[name]])))
            print(f"  {name}: PSNR-Y {candidates[-1].psnr_y:.2f} dB, NIQE {candidates[-1].niqe:.2f}, "
                  f"shift {candidates[-1].shift:.2f}, texture {candidates[-1].texture:.2f}", file=sys.stderr)
    try:
        best = choose(candidates, reference_psnr=ref[0], floor_db=args.floor_db,
                      colour_margin_db=args.colour_margin_db, shift_margin=args.shift_margin,
                      texture_floor=args.texture_floor)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    rows = [("HR (the originals)", "", "", f"{hr_niqe:.2f}", "", "1.00", "", "", ""),
            ("bicubic", *(f"{v:.2f}" for v in bicubic), "", "", ""),
            (f"{args.reference} (reference)", *(f"{v:.2f}" for v in ref), "", "", "")]
    rows += [(c.name, f"{c.psnr_y:.2f}", f"{c.psnr_cbcr:.2f}", f"{c.niqe:.2f}", f"{c.shift:.2f}", f"{c.texture:.2f}",
              "yes" if c.within_floor else "no", "yes" if c.colour_ok else "no", "chosen" if c is best else "")
             for c in candidates]
    print(f"{len(pairs)} held-out photos of {args.data} (centre crops <= {args.crop} px). Rule: Y-PSNR >= "
          f"{ref[0]:.2f} - {args.floor_db:g} dB (reference {args.reference}) and texture >= "
          f"{args.texture_floor:g}, CbCr-PSNR within "
          f"{args.colour_margin_db:g} dB of the best of those and colour shift within {args.shift_margin:g} "
          f"of the least of those, then the lowest NIQE.\n")
    header = ("candidate", "PSNR-Y", "PSNR-CbCr", "NIQE", "shift", "texture", "floors", "colour", "chosen")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if args.csv:
        with args.csv.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)
    if args.sheet:
        print(f"crops: {write_sheet(args.sheet, pairs, outputs)}")
    print(f"chosen: {best.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
