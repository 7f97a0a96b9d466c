"""Per-method MOS with three intervals, and pairwise comparisons of methods.

Ratings cluster: every rater scores many images and every image is scored by many raters,
so ratings sharing a rater or an image are correlated. Three intervals are reported:

* naive: the classic t-interval, mean +- t(0.975, n-1) s / sqrt(n), treating the n ratings
  as independent. It is far too narrow for MOS data and is shown only for comparison.
* clustered (the headline): a two-way cluster bootstrap that resamples raters and images
  together (multinomial weights on both, one matrix product per batch of resamples). The
  interval is mean +- t(0.975, df) se, where se is the bootstrap standard error with the
  pigeonhole bootstrap's known excess removed (resampling both raters and images counts
  the rater x image residual three times instead of once; Owen 2007) and its plug-in
  shrinkage undone (variance x k / (k - 1), k = min(raters, images)), and df = k - 1
  because the few clusters, not the many ratings, set the precision; the variance is never
  taken below the naive one (the correction can overshoot with very few clusters). Coverage
  (tests/test_stats.py, 26 raters x 20 images): about 95 %; the naive interval about 50 %.
* random effects: score ~ method + (1|rater) + (1|image) with variance components from
  moment equations (Henderson-type quadratic forms, no REML); each method's mean gets the
  standard error those components imply for its design.

Only first showings (repeat = 0) enter the MOS; hidden duplicates feed test-retest only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats as sps

from survey.analysis.codes import Coded, code_ratings
from survey.ratings import first_showings, method_order

LEVEL = 0.95


# --- intervals ------------------------------------------------------------------------


def t_interval(scores: np.ndarray, *, level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, low, high) of the classic t-interval; nan bounds when n < 2."""
    scores = np.asarray(scores, dtype=np.float64)
    n = scores.size
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = float(scores.mean())
    if n < 2:
        return mean, math.nan, math.nan
    half = sps.t.ppf(0.5 + level / 2, n - 1) * scores.std(ddof=1) / math.sqrt(n)
    return mean, mean - half, mean + half


def cluster_bootstrap_means(
    sums: np.ndarray,
    counts: np.ndarray,
    *,
    resamples: int,
    seed: int,
    resample_raters: bool = True,
    resample_images: bool = True,
    batch: int = 256,
) -> np.ndarray:
    """(resamples, methods) bootstrap means, raters and/or images drawn with replacement.

    A resample weights rater r by w_r and image i by v_i (multinomial counts), so each
    method's mean is sum_ri w_r v_i S_rim / sum_ri w_r v_i C_rim: one matrix product over
    raters and one contraction over images per batch, never a copy of the ratings.
    """
    rng = np.random.default_rng(seed)
    n_raters, n_images, n_methods = sums.shape
    stacked = np.concatenate([sums, counts], axis=2).reshape(n_raters, -1)
    out = np.empty((resamples, n_methods))
    for start in range(0, resamples, batch):
        size = min(batch, resamples - start)
        if resample_raters:
            w = rng.multinomial(n_raters, np.full(n_raters, 1 / n_raters), size=size)
        else:
            w = np.ones((size, n_raters))
        if resample_images:
            v = rng.multinomial(n_images, np.full(n_images, 1 / n_images), size=size)
        else:
            v = np.ones((size, n_images))
        by_image = (w.astype(np.float64) @ stacked).reshape(size, n_images, 2 * n_methods)
        totals = np.einsum("bic,bi->bc", by_image, v.astype(np.float64))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start:start + size] = totals[:, :n_methods] / totals[:, n_methods:]
    return out


def _cell_residual_variance(coded: Coded) -> np.ndarray:
    """Per method: sum over rated (rater, image) cells of squared two-way residuals / N^2.

    This is the rater x image residual's share of the variance of a method's mean (its
    sigma_e^2 / N); the pigeonhole bootstrap counts it about three times.
    """
    sums, all_counts = coded.cells
    out = np.full(len(coded.methods), math.nan)
    for m in range(len(coded.methods)):
        counts = all_counts[:, :, m]
        rated = counts > 0
        n = rated.sum()
        if n == 0:
            continue
        cell = np.where(rated, sums[:, :, m] / np.where(rated, counts, 1), 0.0)
        residual = _two_way_residuals(cell, rated)
        n_rows = int(rated.any(axis=1).sum())
        n_cols = int(rated.any(axis=0).sum())
        dof = n - n_rows - n_cols + 1
        if dof <= 0:
            out[m] = 0.0
            continue
        sigma2 = float((residual[rated] ** 2).sum() / dof)
        out[m] = sigma2 / n
    return out


def _two_way_residuals(cell: np.ndarray, rated: np.ndarray, *, sweeps: int = 50) -> np.ndarray:
    """Residuals of an additive rows + columns fit to the rated cells (backfitting)."""
    weight = rated.astype(np.float64)
    row = np.zeros(cell.shape[0])
    col = np.zeros(cell.shape[1])
    for _ in range(sweeps):
        with np.errstate(invalid="ignore", divide="ignore"):
            new_row = ((cell - col[None, :]) * weight).sum(1) / weight.sum(1)
            new_row = np.nan_to_num(new_row)
            new_col = ((cell - new_row[:, None]) * weight).sum(0) / weight.sum(0)
            new_col = np.nan_to_num(new_col)
        change = max(np.abs(new_row - row).max(initial=0), np.abs(new_col - col).max(initial=0))
        row, col = new_row, new_col
        if change < 1e-10:
            break
    return (cell - row[:, None] - col[None, :]) * weight


# --- random effects -------------------------------------------------------------------


def variance_components(coded: Coded) -> dict[str, float]:
    """Rater, image and residual variances of score ~ method + (1|rater) + (1|image).

    Three quadratic forms of the method-centred scores and their expectations under the
    model (Henderson-style moment equations, valid for unbalanced crossed designs):

        within raters: (N - R) e + (N - sum_r sum_i n_ri^2 / N_r) image
        within images: (N - I) e + (N - sum_i sum_r n_ri^2 / N_i) rater
        total:         (N - 1) e + (N - sum_r N_r^2 / N) rater + (N - sum_i N_i^2 / N) image

    solved for (rater, image, e); negative solutions are set to 0. Entries are nan when
    the design cannot separate them (fewer than 2 raters or 2 images).
    """
    nan = {"rater": math.nan, "image": math.nan, "residual": math.nan}
    r_idx, i_idx, m_idx, y = coded.rater_idx, coded.image_idx, coded.method_idx, coded.scores
    n = y.size
    n_r, n_i, n_m = len(coded.raters), len(coded.images), len(coded.methods)
    if n < 3:
        return nan
    method_mean = np.bincount(m_idx, weights=y, minlength=n_m) / np.maximum(
        np.bincount(m_idx, minlength=n_m), 1)
    r = y - method_mean[m_idx]
    per_rater = np.bincount(r_idx, minlength=n_r).astype(np.float64)
    per_image = np.bincount(i_idx, minlength=n_i).astype(np.float64)
    active_r, active_i = per_rater > 0, per_image > 0
    if active_r.sum() < 2 or active_i.sum() < 2:
        return nan
    cell = np.bincount(r_idx * n_i + i_idx, minlength=n_r * n_i).reshape(n_r, n_i).astype(float)

    def within(groups: np.ndarray, sizes: np.ndarray) -> float:
        group_sum = np.bincount(groups, weights=r, minlength=sizes.size)
        with np.errstate(invalid="ignore", divide="ignore"):
            group_mean = np.where(sizes > 0, group_sum / sizes, 0.0)
        return float(((r - group_mean[groups]) ** 2).sum())

    q_rater, q_image = within(r_idx, per_rater), within(i_idx, per_image)
    q_total = float(((r - r.mean()) ** 2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        k_image_in_rater = n - np.nansum((cell**2).sum(1) / per_rater)
        k_rater_in_image = n - np.nansum((cell**2).sum(0) / per_image)
    a = np.array([
        [0.0, k_image_in_rater, n - active_r.sum()],
        [k_rater_in_image, 0.0, n - active_i.sum()],
        [n - (per_rater**2).sum() / n, n - (per_image**2).sum() / n, n - 1.0],
    ])
    if abs(np.linalg.det(a)) < 1e-9 * max(1.0, np.abs(a).max()) ** 3:
        return nan
    rater, image, residual = np.linalg.solve(a, [q_rater, q_image, q_total])
    residual = max(residual, 0.0)
    return {"rater": max(rater, 0.0), "image": max(image, 0.0), "residual": residual}


def random_effects_standard_errors(coded: Coded, components: dict[str, float]) -> np.ndarray:
    """SE of each method's mean rating implied by the variance components and its design."""
    out = np.full(len(coded.methods), math.nan)
    if any(math.isnan(v) for v in components.values()):
        return out
    _, all_counts = coded.cells
    for m in range(len(coded.methods)):
        counts = all_counts[:, :, m]
        n = counts.sum()
        if n == 0:
            continue
        var = (
            components["rater"] * (counts.sum(1) ** 2).sum() / n**2
            + components["image"] * (counts.sum(0) ** 2).sum() / n**2
            + components["residual"] / n
        )
        out[m] = math.sqrt(var)
    return out


# --- the MOS table --------------------------------------------------------------------

MOS_COLUMNS = [
    "method", "n_ratings", "n_raters", "n_images", "mos", "sd", "naive_lo", "naive_hi",
    "boot_se", "boot_lo", "boot_hi", "re_se", "re_lo", "re_hi", "small_sample", "note",
]
# Below this many raters or images a method's intervals rest on a handful of clusters (t with
# k - 1 <= 3 degrees of freedom): they are kept inside the scale and flagged as rough.
SMALL_SAMPLE = 5
SCALE = (1.0, 5.0)


def _cluster_shortfall(n_raters: int, n_images: int) -> str:
    """Empty when a clustered estimate is possible, else what is missing."""
    short = [f">= 2 {what} (has {n})" for what, n in (("raters", n_raters), ("images", n_images))
             if n < 2]
    return "needs " + " and ".join(short) if short else ""


def _on_scale(lo: float, hi: float) -> tuple[float, float, bool]:
    """An interval for a mean of 1..5 scores cannot leave 1..5: clip it, and say if it did."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return lo, hi, False
    clipped = (max(lo, SCALE[0]), min(hi, SCALE[1]))
    return clipped[0], clipped[1], clipped != (lo, hi)


def mos_table(
    ratings: pd.DataFrame,
    *,
    methods: list[str] | None = None,
    resamples: int = 2000,
    seed: int = 0,
    level: float = LEVEL,
) -> pd.DataFrame:
    """One row per method: MOS with naive, clustered-bootstrap and random-effects intervals.

    Every interval is kept inside the 1..5 scale. A method with fewer than SMALL_SAMPLE raters or
    images is flagged (``small_sample``) and its note says how few, and which intervals were
    clipped; an interval that cannot be computed is NaN with the reason in the note.
    """
    coded = code_ratings(ratings, methods=methods)
    sums, all_counts = coded.cells
    rows = []
    boot = None
    if len(coded.raters) >= 2 and len(coded.images) >= 2 and coded.scores.size:
        boot = cluster_bootstrap_means(sums, all_counts, resamples=resamples, seed=seed)
        excess = 2.0 * _cell_residual_variance(coded)
    components = variance_components(coded)
    re_se = random_effects_standard_errors(coded, components)
    for m, name in enumerate(coded.methods):
        scores = coded.scores[coded.method_idx == m]
        counts = all_counts[:, :, m]
        n_raters = int((counts.sum(1) > 0).sum())
        n_images = int((counts.sum(0) > 0).sum())
        mean, naive_lo, naive_hi = t_interval(scores, level=level)
        row = {
            "method": name, "n_ratings": int(scores.size), "n_raters": n_raters,
            "n_images": n_images, "mos": mean,
            "sd": float(scores.std(ddof=1)) if scores.size > 1 else math.nan,
            "naive_lo": naive_lo, "naive_hi": naive_hi,
            "boot_se": math.nan, "boot_lo": math.nan, "boot_hi": math.nan,
            "re_se": float(re_se[m]), "re_lo": math.nan, "re_hi": math.nan,
            "small_sample": bool(scores.size) and min(n_raters, n_images) < SMALL_SAMPLE,
            "note": "",
        }
        notes = []
        if scores.size == 0:
            notes.append("no ratings")
        elif _cluster_shortfall(n_raters, n_images):
            notes.append("clustered interval n/a: " + _cluster_shortfall(n_raters, n_images))
        elif boot is not None:
            draws = boot[:, m]
            draws = draws[np.isfinite(draws)]
            var = float(draws.var(ddof=1)) if draws.size > 1 else math.nan
            # Remove the residual the pigeonhole bootstrap counts twice too often, and undo
            # the plug-in (n - 1) / n shrinkage of the fewer clusters. With very few
            # clusters that subtraction can overshoot: never go below the naive variance.
            df = min(n_raters, n_images) - 1
            naive_var = row["sd"] ** 2 / scores.size if scores.size > 1 else 0.0
            corrected = max((var - excess[m]) * (df + 1) / df, naive_var)
            se = math.sqrt(corrected) if math.isfinite(var) else math.nan
            half = sps.t.ppf(0.5 + level / 2, df) * se
            row.update(boot_se=se, boot_lo=mean - half, boot_hi=mean + half)
        if scores.size and math.isfinite(re_se[m]) and n_raters >= 2 and n_images >= 2:
            df = min(n_raters, n_images) - 1
            half = sps.t.ppf(0.5 + level / 2, df) * re_se[m]
            row.update(re_lo=mean - half, re_hi=mean + half)
        elif scores.size:
            why = _cluster_shortfall(n_raters, n_images) or "variance components not identifiable"
            notes.append("random effects n/a: " + why)
        if scores.size == 1:
            notes.append("naive interval n/a: needs >= 2 ratings")
        clipped = []
        for key, label in (("boot", "clustered"), ("naive", "naive"), ("re", "random-effects")):
            lo, hi, was_clipped = _on_scale(row[f"{key}_lo"], row[f"{key}_hi"])
            row[f"{key}_lo"], row[f"{key}_hi"] = lo, hi
            if was_clipped:
                clipped.append(label)
        if row["small_sample"]:
            few = " and ".join(f"{n} {what}" for what, n in (("raters", n_raters), ("images", n_images))
                               if n < SMALL_SAMPLE)
            notes.insert(0, f"small sample: only {few} (< {SMALL_SAMPLE}); its intervals are rough")
        if clipped:
            notes.append(f"{', '.join(clipped)} interval clipped to the 1..5 scale")
        row["note"] = "; ".join(notes)
        rows.append(row)
    table = pd.DataFrame(rows, columns=MOS_COLUMNS)
    table.attrs["variance_components"] = components
    return table


# --- pairwise comparisons -------------------------------------------------------------


def holm(p_values) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (nan entries are left out and stay nan)."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, math.nan)
    valid = np.flatnonzero(np.isfinite(p))
    m = valid.size
    if m == 0:
        return out
    order = valid[np.argsort(p[valid], kind="stable")]
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adjusted
    return out


def probability_of_superiority(a: np.ndarray, b: np.ndarray) -> float:
    """P(a random rating of A > one of B) + P(equal) / 2, exactly, from score counts."""
    a, b = np.asarray(a), np.asarray(b)
    if a.size == 0 or b.size == 0:
        return math.nan
    pa = np.bincount(a.astype(np.int64), minlength=6)[1:6] / a.size
    pb = np.bincount(b.astype(np.int64), minlength=6)[1:6] / b.size
    below_b = np.concatenate([[0.0], np.cumsum(pb)[:-1]])
    return float((pa * below_b).sum() + 0.5 * (pa * pb).sum())


def wilcoxon_p(differences: np.ndarray) -> tuple[float, str]:
    """Two-sided Wilcoxon signed-rank p-value, or nan and the reason it is undefined.

    scipy's own value (``scipy.stats.wilcoxon(d).pvalue``). For 13 pairs or fewer with ties or
    zeros (rating differences nearly always have them) scipy runs an exhaustive permutation
    test that took 0.35 s per call through ``permutation_test``; ``_exact_signed_rank_p`` gives
    the same p-value from the same 2^n sign flips, vectorised, in well under a millisecond.
    """
    d = np.asarray(differences, dtype=np.float64)
    if d.size < 2:
        return math.nan, "n/a: needs >= 2 pairs"
    if np.all(d == 0):
        return math.nan, "n/a: all paired differences are 0"
    nonzero = np.abs(d[d != 0])
    ties_or_zeros = nonzero.size < d.size or np.unique(nonzero).size < nonzero.size
    if ties_or_zeros and d.size <= 13:  # where scipy's method="auto" permutes
        return _exact_signed_rank_p(d), ""
    return float(sps.wilcoxon(d).pvalue), ""


def _exact_signed_rank_p(d: np.ndarray) -> float:
    """Two-sided p of the signed-rank sum R+ over every sign flip of the non-zero differences
    (zeros dropped, tied |d| given their average rank), as scipy's permutation test computes it:
    2 x the smaller tail, each tail counting the values within a relative 1e-14 of R+."""
    nonzero = d[d != 0]
    ranks = sps.rankdata(np.abs(nonzero))
    observed = ranks[nonzero > 0].sum()
    flips = (np.arange(2 ** nonzero.size)[:, None] >> np.arange(nonzero.size)) & 1
    null = flips @ ranks
    tolerance = abs(observed) * np.finfo(np.float64).eps * 100
    greater = np.mean(null >= observed - tolerance)
    less = np.mean(null <= observed + tolerance)
    return float(min(1.0, 2 * min(greater, less)))


def median_interval(
    differences: np.ndarray, *, resamples: int, seed: int, level: float = LEVEL
) -> tuple[float, float]:
    """Percentile bootstrap interval of the median of paired differences."""
    d = np.asarray(differences, dtype=np.float64)
    if d.size < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    medians = np.median(d[rng.integers(0, d.size, (resamples, d.size))], axis=1)
    low, high = np.quantile(medians, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def pairwise_table(
    ratings: pd.DataFrame,
    *,
    methods: list[str] | None = None,
    resamples: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """All method pairs: Wilcoxon on per-rater and per-image means (Holm), effect sizes."""
    first = first_showings(ratings)
    methods = method_order(first["method"].unique()) if methods is None else methods
    by_rater = first.pivot_table(index="rater", columns="method", values="score", aggfunc="mean")
    by_image = first.pivot_table(index="image", columns="method", values="score", aggfunc="mean")
    scores = {m: g.to_numpy() for m, g in first.groupby("method")["score"]}
    rows = []
    for k, (a, b) in enumerate(combinations(methods, 2)):
        row = {"method_a": a, "method_b": b}
        for unit, table in (("raters", by_rater), ("images", by_image)):
            if a in table.columns and b in table.columns:
                d = (table[a] - table[b]).dropna().to_numpy()
            else:
                d = np.array([])
            p, why = wilcoxon_p(d)
            row[f"n_{unit}"] = int(d.size)
            row[f"mean_diff_{unit}"] = float(d.mean()) if d.size else math.nan
            row[f"p_{unit}"] = p
            row[f"why_{unit}"] = why
            if unit == "raters":
                row["median_diff"] = float(np.median(d)) if d.size else math.nan
                lo, hi = median_interval(d, resamples=resamples, seed=seed + k)
                row["median_diff_lo"], row["median_diff_hi"] = lo, hi
        row["p_a_beats_b"] = probability_of_superiority(
            scores.get(a, np.array([])), scores.get(b, np.array([])))
        rows.append(row)
    columns = [
        "method_a", "method_b", "n_raters", "mean_diff_raters", "median_diff",
        "median_diff_lo", "median_diff_hi", "p_raters", "holm_raters", "n_images",
        "mean_diff_images", "p_images", "holm_images", "p_a_beats_b", "note",
    ]
    if not rows:
        return pd.DataFrame(columns=columns)
    table = pd.DataFrame(rows)
    table["holm_raters"] = holm(table["p_raters"])
    table["holm_images"] = holm(table["p_images"])
    table["note"] = [
        "; ".join(f"{unit}: {why}" for unit, why in (("raters", r), ("images", i)) if why)
        for r, i in zip(table["why_raters"], table["why_images"])
    ]
    return table[columns]


def mean_ranks(ratings: pd.DataFrame, *, methods: list[str] | None = None) -> pd.DataFrame:
    """Per rater, the rank of each method by the rater's mean score (1 = best, ties averaged)."""
    first = first_showings(ratings)
    methods = method_order(first["method"].unique()) if methods is None else methods
    by_rater = first.pivot_table(index="rater", columns="method", values="score", aggfunc="mean")
    by_rater = by_rater.reindex(columns=methods)
    return by_rater.rank(axis=1, ascending=False, method="average")
