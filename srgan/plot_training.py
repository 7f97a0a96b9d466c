"""Plot a training log: losses and validation PSNR against patches seen.

    python -m srgan.plot_training runs/srresnet-.../log.csv training.png
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

LOSS_COLUMNS = ("loss_g", "loss_mse", "loss_vgg22", "loss_vgg54", "loss_gan", "loss_d")


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
                    for column in (*LOSS_COLUMNS, "val_psnr"):
                        if row.get(column):
                            series.setdefault(column, []).append((patches, float(row[column])))
                except (TypeError, ValueError):  # a cut-off last line, a hand-edited cell
                    raise ValueError(f"{path}, line {reader.line_num}: not a row of numbers") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a training log (not a text file)") from None
    return series


def plot_log(log_path: Path, out_path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = read_log(log_path)
    if not series:
        raise ValueError(f"{log_path} has no rows yet")
    fig, (ax_loss, ax_psnr) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
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
    ax_psnr.set_ylabel("validation PSNR-Y (dB)")
    ax_psnr.set_xlabel("patches seen")
    ax_psnr.grid(alpha=0.3)
    fig.suptitle(log_path.parent.name)
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return out_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m srgan.plot_training", description=__doc__.split("\n\n")[0])
    parser.add_argument("log", type=Path, help="log.csv of a training run")
    parser.add_argument("out", type=Path, help="PNG to write")
    args = parser.parse_args(argv)
    if not args.log.is_file():
        print(f"error: {args.log} does not exist", file=sys.stderr)
        return 2
    try:
        print(plot_log(args.log, args.out))
    except (ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
