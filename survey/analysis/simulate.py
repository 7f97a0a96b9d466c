"""A ratings simulator with known truth, for testing the report's statistics.

Generative model (one rating of image j processed by method m, by rater i):

    latent = mu_m + bias_i + image_j + interaction_jm + noise_i * N(0, 1)
    score  = clip(round(latent), 1, 5)

with rater bias ~ N(0, rater_bias_sd), image effect ~ N(0, image_sd), image x method
interaction ~ N(0, interaction_sd) and a per-rater inconsistency noise_i drawn uniformly
from ``noise_sd_range``. A share of raters are outliers: "random" raters score uniformly
1..5, "inverted" raters give 6 - the honest score. Hidden test-retest duplicates are drawn
with fresh noise; a share of ratings can be missing at random.

Because of rounding and clipping, ``mu_m`` is not the mean score. The truth an interval
for method m must cover is E[score] over the rater, image and noise population of honest
raters; ``true_means`` computes it by integrating the normal CDF over the latent spread,
averaged over many draws of the rater inconsistency.

CLI: ``python -m survey.simulate --raters 26 --images 100 --seed 1609 --out ratings.csv``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import ndtr

from survey.ratings import COLUMNS

# The paper's BSD100 MOS (Table 2 of arXiv 1609.04802), used here as latent method means.
PAPER_METHODS: dict[str, float] = {
    "nearest": 1.11,
    "bicubic": 1.47,
    "srresnet": 2.29,
    "srgan": 3.56,
    "hr": 4.46,
}


def _round_clip(latent: np.ndarray) -> np.ndarray:
    # floor(x + 0.5): halves round up, unlike numpy's banker's rounding.
    return np.clip(np.floor(latent + 0.5), 1, 5).astype(np.int64)


def simulate_study(
    *,
    n_raters: int = 26,
    n_images: int = 100,
    methods: dict[str, float] | None = None,
    seed: int = 0,
    rater_bias_sd: float = 0.35,
    image_sd: float = 0.35,
    interaction_sd: float = 0.15,
    noise_sd_range: tuple[float, float] = (0.4, 0.9),
    outlier_share: float = 0.0,
    outlier_kind: str = "mixed",
    retest_share: float = 0.0,
    missing_share: float = 0.0,
    study: str = "simulated",
) -> pd.DataFrame:
    """A study in the ratings format; raters who are outliers are listed in ``df.attrs``.

    Every rater rates every (image, method) once (minus ``missing_share`` at random), plus
    hidden duplicates of ``retest_share`` of their ratings (repeat = 1). ``outlier_kind`` is
    "random", "inverted" or "mixed" (alternating). ``df.attrs["outliers"]`` holds the
    outlier raters' names and ``df.attrs["true_means"]`` the truth from ``true_means``.
    """
    methods = dict(PAPER_METHODS if methods is None else methods)
    if n_raters < 1 or n_images < 1 or not methods:
        raise ValueError("need at least one rater, one image and one method")
    rng = np.random.default_rng(seed)
    method_names = list(methods)
    mu = np.array([methods[m] for m in method_names])
    n_methods = len(method_names)

    bias = rng.normal(0.0, rater_bias_sd, n_raters)
    noise = rng.uniform(*noise_sd_range, n_raters)
    image_effect = rng.normal(0.0, image_sd, n_images)
    interaction = rng.normal(0.0, interaction_sd, (n_images, n_methods))

    n_outliers = int(round(outlier_share * n_raters))
    outlier_ids = rng.choice(n_raters, n_outliers, replace=False)
    kinds = np.array(["honest"] * n_raters, dtype=object)
    for k, rater in enumerate(outlier_ids):
        kind = outlier_kind if outlier_kind != "mixed" else ("random", "inverted")[k % 2]
        kinds[rater] = kind

    rater_idx, image_idx, method_idx = (
        a.ravel() for a in np.meshgrid(
            np.arange(n_raters), np.arange(n_images), np.arange(n_methods), indexing="ij"
        )
    )
    keep = rng.random(rater_idx.size) >= missing_share
    rater_idx, image_idx, method_idx = rater_idx[keep], image_idx[keep], method_idx[keep]
    repeat = np.zeros(rater_idx.size, dtype=np.int64)

    duplicate = rng.random(rater_idx.size) < retest_share
    rater_idx = np.concatenate([rater_idx, rater_idx[duplicate]])
    image_idx = np.concatenate([image_idx, image_idx[duplicate]])
    method_idx = np.concatenate([method_idx, method_idx[duplicate]])
    repeat = np.concatenate([repeat, np.ones(int(duplicate.sum()), dtype=np.int64)])

    expected = (
        mu[method_idx] + bias[rater_idx] + image_effect[image_idx]
        + interaction[image_idx, method_idx]
    )
    score = _round_clip(expected + noise[rater_idx] * rng.standard_normal(rater_idx.size))
    rater_kind = kinds[rater_idx]
    score = np.where(rater_kind == "inverted", 6 - score, score)
    score = np.where(rater_kind == "random", rng.integers(1, 6, rater_idx.size), score)

    # Timestamps: each rater works through a shuffled order, a few seconds per screen.
    order = rng.permutation(rater_idx.size)
    rater_idx, image_idx, method_idx = rater_idx[order], image_idx[order], method_idx[order]
    repeat, score = repeat[order], score[order]
    by_rater = np.argsort(rater_idx, kind="stable")
    rater_idx, image_idx, method_idx = rater_idx[by_rater], image_idx[by_rater], method_idx[by_rater]
    repeat, score = repeat[by_rater], score[by_rater]
    response_ms = np.round(rng.lognormal(np.log(3500), 0.5, rater_idx.size)).astype(np.int64)
    step_ms = response_ms + 400
    first_of_rater = np.r_[True, rater_idx[1:] != rater_idx[:-1]]
    cumulative = np.cumsum(step_ms)
    rater_offset = np.maximum.accumulate(np.where(first_of_rater, cumulative - step_ms, 0))
    elapsed_ms = cumulative - step_ms - rater_offset
    start = np.datetime64("2026-11-01T09:00:00.000")
    shown_at = start + (rater_idx * 37 * 60_000 + elapsed_ms).astype("timedelta64[ms]")
    answered_at = shown_at + response_ms.astype("timedelta64[ms]")
    shown = np.char.add(np.datetime_as_string(shown_at, unit="ms"), "Z")
    answered = np.char.add(np.datetime_as_string(answered_at, unit="ms"), "Z")

    width = max(3, len(str(n_raters)))
    rater_names = np.array([f"r{i:0{width}d}" for i in range(n_raters)])
    image_names = np.array([f"img{j:03d}" for j in range(n_images)])
    df = pd.DataFrame({
        "study": study,
        "rater": rater_names[rater_idx],
        "session": np.char.add("s-", rater_names[rater_idx]),
        "image": image_names[image_idx],
        "method": np.array(method_names)[method_idx],
        "score": score,
        "repeat": repeat,
        "shown_at": shown,
        "answered_at": answered,
        "response_ms": response_ms,
    }, columns=list(COLUMNS))
    # The hidden duplicate is whichever showing comes second.
    df["repeat"] = df.groupby(["rater", "image", "method"]).cumcount().astype(np.int64)
    df.attrs["outliers"] = sorted(rater_names[outlier_ids].tolist())
    df.attrs["true_means"] = true_means(
        methods, rater_bias_sd=rater_bias_sd, image_sd=image_sd,
        interaction_sd=interaction_sd, noise_sd_range=noise_sd_range,
    )
    return df


def true_means(
    methods: dict[str, float],
    *,
    rater_bias_sd: float = 0.35,
    image_sd: float = 0.35,
    interaction_sd: float = 0.15,
    noise_sd_range: tuple[float, float] = (0.4, 0.9),
    draws: int = 20_000,
) -> dict[str, float]:
    """E[score] of an honest rater's rating per method, over the whole population.

    Given a rater's inconsistency s, the latent score is normal with mean mu_m and sd
    sqrt(bias^2 + image^2 + interaction^2 + s^2); the rounded, clipped score's expectation
    is then exact via the normal CDF. s is integrated out on an even grid of ``draws``
    points of its uniform distribution (midpoint rule).
    """
    low, high = noise_sd_range
    s = low + (high - low) * (np.arange(draws) + 0.5) / draws
    spread = np.sqrt(rater_bias_sd**2 + image_sd**2 + interaction_sd**2 + s**2)
    truth = {}
    for name, mu in methods.items():
        # E[clip(round(X))] = 1 + sum_{k=1..4} P(X >= k + 0.5) for scores on 1..5.
        thresholds = np.arange(1, 5) + 0.5
        exceed = ndtr((mu - thresholds[:, None]) / spread[None, :])
        truth[name] = float(np.mean(1.0 + exceed.sum(axis=0)))
    return truth


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m survey.simulate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--raters", type=int, default=26)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1609)
    parser.add_argument("--outliers", type=float, default=0.0, help="share of outlier raters")
    parser.add_argument("--retest", type=float, default=0.05, help="share of ratings duplicated")
    parser.add_argument("--missing", type=float, default=0.0, help="share of ratings missing")
    parser.add_argument("--study", default="simulated")
    parser.add_argument("--out", type=Path, required=True, help="CSV file to write")
    args = parser.parse_args(argv)
    # Usage errors, not tracebacks, for values the simulator cannot take.
    if args.raters < 1 or args.images < 1:
        parser.error("--raters and --images must be at least 1")
    for name in ("outliers", "retest", "missing"):
        if not 0 <= getattr(args, name) <= 1:
            parser.error(f"--{name} is a share: from 0 to 1")
    df = simulate_study(
        n_raters=args.raters, n_images=args.images, seed=args.seed,
        outlier_share=args.outliers, retest_share=args.retest,
        missing_share=args.missing, study=args.study,
    )
    # mtime 0: the same seed gives the same bytes, also for a .gz file.
    compression = {"method": "gzip", "mtime": 0} if args.out.suffix == ".gz" else None
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(args.out, index=False, compression=compression)
    except OSError as error:
        print(f"error: cannot write {args.out}: {error.strerror or error}", file=sys.stderr)
        return 2
    print(f"wrote {len(df)} ratings to {args.out}")
    print("outlier raters: " + (", ".join(df.attrs["outliers"]) or "none"))
    print("true mean score per method (E of the rounded score over the population):")
    for name, value in df.attrs["true_means"].items():
        print(f"  {name:10s} {value:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
