"""Reliability: Krippendorff's alpha, test-retest agreement, the SOS hypothesis, per-stimulus MOS.

Krippendorff's alpha follows "Computing Krippendorff's Alpha-Reliability" (Krippendorff,
2011): values per unit (here a stimulus, i.e. an image processed by one method) are
counted, the coincidence matrix o_ck = sum_u (n_uc n_uk - [c = k] n_uc) / (m_u - 1) is
built from those counts in one matrix product, and alpha = 1 - D_o / D_e with the chosen
metric's distances. Units with fewer than 2 values are not pairable and are left out.

SOS hypothesis (Hossfeld et al., QoMEX 2011): on a 1..5 scale the variance of a stimulus's
scores follows SOS^2 = a (-MOS^2 + 6 MOS - 5); a is fitted by least squares over stimuli
and characterises how much raters disagree (a higher a: more diverse opinions).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as sps

from survey.analysis.screening import retest_pairs
from survey.ratings import first_showings


def coincidence_matrix(unit_counts: np.ndarray) -> np.ndarray:
    """Krippendorff's o_ck from a (units, values) count matrix n_uc."""
    counts = np.asarray(unit_counts, dtype=np.float64)
    pairable = counts.sum(1) >= 2
    counts = counts[pairable]
    weights = 1.0 / (counts.sum(1) - 1.0)
    o = (counts * weights[:, None]).T @ counts
    o -= np.diag((counts * weights[:, None]).sum(0))
    return o


def krippendorff_alpha(
    unit_counts: np.ndarray, *, values: np.ndarray | None = None, metric: str = "ordinal"
) -> float:
    """Alpha from a (units, values) count matrix; values are the sorted scale points.

    metric: "nominal", "ordinal" or "interval". nan when it is undefined (fewer than two
    pairable values, or no disagreement expected because every value is the same).
    """
    o = coincidence_matrix(unit_counts)
    k = o.shape[0]
    values = np.arange(1, k + 1, dtype=np.float64) if values is None else np.asarray(values, float)
    n_c = o.sum(1)
    n = n_c.sum()
    if n < 2:
        return math.nan
    if metric == "nominal":
        delta = 1.0 - np.eye(k)
    elif metric == "interval":
        delta = (values[:, None] - values[None, :]) ** 2
    elif metric == "ordinal":
        # delta_ck = (sum_{g=c..k} n_g - (n_c + n_k) / 2)^2 for c <= k, symmetric.
        cumulative = np.concatenate([[0.0], np.cumsum(n_c)])
        lo = np.minimum.outer(np.arange(k), np.arange(k))
        hi = np.maximum.outer(np.arange(k), np.arange(k))
        delta = (cumulative[hi + 1] - cumulative[lo] - (n_c[:, None] + n_c[None, :]) / 2) ** 2
    else:
        raise ValueError(f"unknown metric {metric!r}: use nominal, ordinal or interval")
    observed = (o * delta).sum()
    expected = (np.outer(n_c, n_c) * delta).sum() / (n - 1)
    if expected == 0:
        return math.nan
    return float(1.0 - observed / expected)


def stimulus_counts(ratings: pd.DataFrame) -> np.ndarray:
    """(stimuli, 5) counts of scores 1..5 over first showings."""
    first = first_showings(ratings)
    if first.empty:
        return np.zeros((0, 5))
    unit = first.groupby(["image", "method"], sort=False).ngroup().to_numpy()
    flat = unit * 5 + first["score"].to_numpy(dtype=np.int64) - 1
    return np.bincount(flat, minlength=(unit.max() + 1) * 5).reshape(-1, 5)


def retest_summary(ratings: pd.DataFrame) -> dict[str, float]:
    """Agreement of hidden duplicates with their first showing."""
    pairs = retest_pairs(ratings)
    n = len(pairs)
    out = {"duplicates": n, "mean_abs_diff": math.nan, "exact_agreement": math.nan,
           "within_one": math.nan, "pearson_r": math.nan}
    if n == 0:
        return out
    diff = (pairs["first"] - pairs["second"]).abs()
    out.update(mean_abs_diff=float(diff.mean()), exact_agreement=float((diff == 0).mean()),
               within_one=float((diff <= 1).mean()))
    if n >= 3 and pairs["first"].std() > 0 and pairs["second"].std() > 0:
        out["pearson_r"] = float(sps.pearsonr(pairs["first"], pairs["second"])[0])
    return out


def stimulus_table(ratings: pd.DataFrame, *, level: float = 0.95) -> pd.DataFrame:
    """Per (image, method): n, MOS, SOS and the t-interval over its raters."""
    first = first_showings(ratings)
    grouped = first.groupby(["image", "method"])["score"]
    table = grouped.agg(n="size", mos="mean", sos="std").reset_index()
    n = table["n"].to_numpy()
    with np.errstate(invalid="ignore"):
        half = sps.t.ppf(0.5 + level / 2, np.where(n >= 2, n - 1, np.nan)) * table["sos"] / np.sqrt(n)
    table["ci_lo"] = table["mos"] - half
    table["ci_hi"] = table["mos"] + half
    return table


def sos_parameter(stimuli: pd.DataFrame) -> float:
    """Least-squares a in SOS^2 = a (-MOS^2 + 6 MOS - 5) over stimuli with >= 2 ratings."""
    usable = stimuli[stimuli["n"] >= 2]
    x = -usable["mos"] ** 2 + 6 * usable["mos"] - 5
    y = usable["sos"] ** 2
    denominator = float((x * x).sum())
    return float((x * y).sum() / denominator) if denominator > 0 else math.nan
