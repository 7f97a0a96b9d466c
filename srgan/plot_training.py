"""Plot a training log: losses, learning rate, validation PSNR and, where the log has them,
validation texture ratio and colour shift, against patches seen.

    python -m srgan.plot_training runs/srresnet-.../log.csv training.png [--title "..."]

Also prints the validation PSNR's slope over the last ``--slope-window`` patches (dB per
100,000 patches): how fast the run was still improving when it stopped.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

LOSS_COLUMNS = ("loss_g", "loss_mse", "loss_vgg22", "loss_vgg54", "loss_lf", "loss_lr", "loss_gan", "loss_d")
VALIDATION_COLUMNS = ("val_psnr", "val_texture", "val_shift")  # logs before 2026-11-26 have only the first


def read_log(path: Path) -> dict[str, list[tuple[int, float]]]:
    """Each non-empty numeric column of a log.csv as (patches_seen, value) pairs."""
    series: dict[str, list[tuple[int, float]]] = {}
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or "patches_seen" not in reader.fieldnames:
                raise ValueError(f"{path} is not a training log (no patches_seen column)")
            for row in reader:
                try:
                    patches = int(row["patches_seen"])
                    for column in (*LOSS_COLUMNS, "lr", *VALIDATION_COLUMNS):
                        if row.get(column):
                            series.setdefault(column, []).append((patches, float(row[column])))
                except (TypeError, ValueError):  # a cut-off last line, a hand-edited cell
                    raise ValueError(f"{path}, line {reader.line_num}: not a row of numbers") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a training log (not a text file)") from None
    return series


def end_slope(points: list[tuple[int, float]], *, window: int) -> float | None:
    """Least-squares slope (per patch) of the points within ``window`` patches of the last one;
    None with fewer than two such points."""
    recent = [(x, y) for x, y in points if x >= points[-1][0] - window] if points else []
    if len({x for x, _ in recent}) < 2:
        return None
    xs, ys = zip(*recent, strict=True)
    return float(np.polyfit(xs, ys, 1)[0])


def plot_log(log_path: Path, out_path: Path, *, title: str | None = None,
             series: dict[str, list[tuple[int, float]]] | None = None) -> Path:
    """Write the figure of ``log_path`` (its ``series``, when already read) to ``out_path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = read_log(log_path) if series is None else series
    if not series:
        raise ValueError(f"{log_path} has no rows yet")
    watch = "val_texture" in series or "val_shift" in series
    fig, axes = plt.subplots(3 if watch else 2, 1, figsize=(7, 8.5 if watch else 6), sharex=True)
    ax_loss, ax_psnr = axes[0], axes[1]
    for column in LOSS_COLUMNS:
        if column in series:
            x, y = zip(*series[column], strict=True)
            ax_loss.plot(x, y, label=column.removeprefix("loss_"))
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel("loss (log scale)")
    ax_loss.legend(fontsize="small")
    ax_loss.grid(alpha=0.3)
    if "val_psnr" in series:
        x, y = zip(*series["val_psnr"], strict=True)
        ax_psnr.plot(x, y, marker="o", markersize=3, color="tab:green")
    if "lr" in series:
        ax_lr = ax_psnr.twinx()
        x, y = zip(*series["lr"], strict=True)
        ax_lr.plot(x, y, color="tab:grey", linewidth=1, linestyle="--")
        ax_lr.set_ylabel("learning rate (dashed)", color="tab:grey")
        ax_lr.set_ylim(bottom=0)
    ax_psnr.set_ylabel("validation PSNR-Y (dB)", color="tab:green")
    ax_psnr.grid(alpha=0.3)
    if watch:  # what PSNR cannot see: texture collapsing or running wild, and a colour cast
        ax_texture = axes[2]
        if "val_texture" in series:
            x, y = zip(*series["val_texture"], strict=True)
            ax_texture.plot(x, y, marker="o", markersize=3, color="tab:purple")
        ax_texture.axhline(1.0, color="tab:purple", linewidth=0.8, linestyle=":")
        ax_texture.set_ylabel("texture SR/HR (1: HR's)", color="tab:purple")
        ax_texture.set_ylim(bottom=0)
        ax_texture.grid(alpha=0.3)
        if "val_shift" in series:
            ax_shift = ax_texture.twinx()
            x, y = zip(*series["val_shift"], strict=True)
            ax_shift.plot(x, y, marker="s", markersize=3, color="tab:orange", linewidth=1)
            ax_shift.set_ylabel("colour shift (grey levels)", color="tab:orange")
            ax_shift.set_ylim(bottom=0)
    axes[-1].set_xlabel("patches seen")
    fig.suptitle(title or log_path.parent.name)
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return out_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m srgan.plot_training", description=__doc__.split("\n\n")[0])
    parser.add_argument("log", type=Path, help="log.csv of a training run")
    parser.add_argument("out", type=Path, help="PNG to write")
    parser.add_argument("--title", help="figure title (default: the log's folder name)")
    parser.add_argument("--slope-window", type=int, default=64_000, help="patches for the end slope")
    args = parser.parse_args(argv)
    if not args.log.is_file():
        print(f"error: {args.log} does not exist", file=sys.stderr)
        return 2
    try:
        series = read_log(args.log)
        print(plot_log(args.log, args.out, title=args.title, series=series))
        slope = end_slope(series.get("val_psnr", []), window=args.slope_window)
    except (ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if slope is not None:
        print(f"validation PSNR-Y slope over the last {args.slope_window:,} patches: "
              f"{slope * 100_000:+.3f} dB per 100,000 patches")
    return 0


if __name__ == "__main__":
    sys.exit(main())
