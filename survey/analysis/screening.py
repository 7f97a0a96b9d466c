"""Rater screening: who is rejected, by which criterion, never silently.

Criteria (each reported per rater; all on first showings except the test-retest one):

* ITU-R BT.500 observer rejection (BT.500-14 Annex 1 A1-2.3.1): per stimulus, the
  kurtosis beta2 = m4 / m2^2 decides whether scores are normal (2 <= beta2 <= 4, band
  mean +- 2 s) or not (band mean +- sqrt(20) s); P and Q count a rater's scores at or
  above / at or below the band. Reject when (P + Q) / N > 0.05 and |P - Q| / (P + Q) < 0.3,
  N the rater's ratings. The Recommendation leaves two details open, so two readings are offered
  (``BT500_READINGS``; the report names the one used):
    "sample" (the default): s is the sample SD (N - 1) of the stimulus's scores, and stimuli
      whose scores are all equal (s = 0) are skipped: nobody is outlying where all agree.
    "population": s is the population SD (N), every stimulus counts, and on a stimulus where
      all agree each score is both at or above and at or below the zero-width band, so it adds
      to P and Q alike (as the SUREAL package computes it). This reading rejects more raters
      of studies with many unanimous stimuli.
* Correlation with the MOS: Pearson of a rater's scores with the leave-one-out MOS of the
  same stimuli (the rater's own score removed). Honest raters track the stimuli
  (r ~ 0.8 on the paper's design); random scorers give r ~ 0, inverted raters r < 0. It is
  only a test where the stimuli differ: when the leave-one-out MOS of the stimuli a rater
  scored spans less than ``MIN_MOS_SPREAD`` (1 point), as in a study of one quality level,
  there is nothing to track, and a rater who gives every image the same score is consistent.
* Gold items: on an image where the rater scored both HR and nearest-neighbour
  upscaling, HR below nearest is a failure; the share of such images is reported.
* Test-retest: mean absolute difference between the two showings of hidden duplicates.
* Response time: the median time from showing to rating (response_ms) and its coefficient
  of variation. People need seconds to judge a photograph, and their times vary (CV ~0.5);
  a script answers in a fraction of a second, or after the same fixed delay every time.
* Method pattern: the share of a rater's ratings that equal their most frequent score for
  that method. An honest rater's scores follow the image as well as the method (at most
  ~0.88 in simulated studies with >= 8 images per method); a rater who reads the method
  off the stimulus and scores it, not the picture, reaches 1.
* Copies: the rater whose first-showing scores agree most often with this rater's on the
  stimuli both rated. Honest raters agree on ~40-70 % of shared stimuli (at most ~0.85 over
  >= 25 shared ones in simulation); bots running one script agree on all of them.
* ITU-T P.913 (12.6) subject model: alternating estimates of stimulus scores psi_j, rater
  bias d_i and rater inconsistency v_i in u_ij = psi_j + d_i + v_i e. Reported, not a
  rejection criterion: a bias is removed by the model rather than a reason to reject.

Default rule (``screen_raters``): reject a rater when any holds
  (a) BT.500 rejects them;
  (b) correlation with the leave-one-out MOS < 0.25, or undefined because all their
      scores are equal while the stimuli differ (needs >= 5 ratings of stimuli whose
      leave-one-out MOS spans >= 1 point);
  (c) gold failures on more than 25 % of >= 3 gold images;
  (d) test-retest mean absolute difference > 1.5 over >= 5 duplicates;
  (e) median response time < 800 ms over >= 10 timed ratings;
  (f) response times implausibly regular: coefficient of variation < 0.1 over >= 10 timed
      ratings;
  (g) method pattern >= 0.95 over >= 3 methods with >= 8 ratings each;
  (h) scores the same as another rater's on >= 95 % of >= 30 shared stimuli (both are
      flagged: the report names the other), where their stimuli differ by >= 1 point of MOS.
Criteria (e) to (h) catch scripted raters ("ratings stuffing"): in a simulated study, ten
bots that give each method a fixed score pass (a) to (d) (they rate HR above nearest and
track the methods' order) yet move bicubic's MOS by more than a point.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from survey.analysis.codes import Coded, code_ratings
from survey.ratings import GOLD_HIGH, GOLD_LOW, HIDDEN_DUPLICATE, first_showings

MIN_CORRELATION = 0.25
MIN_RATINGS_FOR_CORRELATION = 5
MIN_MOS_SPREAD = 1.0
BT500_READINGS = ("sample", "population")
MAX_GOLD_FAILURE_SHARE = 0.25
MIN_GOLD_IMAGES = 3
MAX_RETEST_DIFFERENCE = 1.5
MIN_DUPLICATES = 5
MIN_MEDIAN_RESPONSE_MS = 800
MIN_RESPONSE_CV = 0.1
MIN_TIMED_RATINGS = 10
MAX_METHOD_PATTERN = 0.95
MIN_PATTERN_METHODS = 3
MIN_PATTERN_RATINGS_PER_METHOD = 8
MAX_AGREEMENT = 0.95
MIN_SHARED_STIMULI = 30


def kurtosis_beta2(scores: np.ndarray) -> float:
    """BT.500's beta2 = m4 / m2^2 with central moments over N (scipy's fisher=False)."""
    x = np.asarray(scores, dtype=np.float64)
    m2 = ((x - x.mean()) ** 2).mean()
    return float(((x - x.mean()) ** 4).mean() / m2**2) if m2 > 0 else math.nan


def bt500(coded: Coded, *, reading: str = "sample") -> pd.DataFrame:
    """Per rater: N, P, Q and whether BT.500's observer rejection applies (``reading``: see the
    module's docstring)."""
    if reading not in BT500_READINGS:
        raise ValueError(f"unknown BT.500 reading {reading!r}: use {' or '.join(BT500_READINGS)}")
    s, u = coded.stimulus_idx, coded.scores
    k = coded.n_stimuli
    n = np.bincount(s, minlength=k).astype(np.float64)
    mean = np.bincount(s, weights=u, minlength=k) / np.maximum(n, 1)
    dev = u - mean[s]
    m2 = np.bincount(s, weights=dev**2, minlength=k) / np.maximum(n, 1)
    m4 = np.bincount(s, weights=dev**4, minlength=k) / np.maximum(n, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        beta2 = m4 / m2**2
        sd = np.sqrt(m2 * n / (n - 1)) if reading == "sample" else np.sqrt(m2)
    normal = (beta2 >= 2) & (beta2 <= 4)
    band = np.where(normal, 2.0, math.sqrt(20.0)) * sd
    # "population": a zero band where all agree puts each score on both sides of it.
    usable = (n >= 2) & (m2 > 0) if reading == "sample" else n >= 1
    high = usable[s] & (u >= mean[s] + band[s])
    low = usable[s] & (u <= mean[s] - band[s])
    r = len(coded.raters)
    total = np.bincount(coded.rater_idx, minlength=r).astype(np.float64)
    p = np.bincount(coded.rater_idx, weights=high, minlength=r)
    q = np.bincount(coded.rater_idx, weights=low, minlength=r)
    with np.errstate(invalid="ignore", divide="ignore"):
        reject = ((p + q) / total > 0.05) & (np.abs((p - q) / (p + q)) < 0.3)
    return pd.DataFrame({"n_ratings": total.astype(int), "bt500_p": p.astype(int),
                         "bt500_q": q.astype(int), "bt500_reject": reject}, index=coded.raters)


def mos_correlation(coded: Coded) -> pd.Series:
    """Per rater: Pearson r of their scores with the leave-one-out MOS of each stimulus."""
    s, u, r_idx = coded.stimulus_idx, coded.scores, coded.rater_idx
    n = np.bincount(s, minlength=coded.n_stimuli).astype(np.float64)
    total = np.bincount(s, weights=u, minlength=coded.n_stimuli)
    keep = n[s] >= 2
    x, r_idx = u[keep], r_idx[keep]
    y = (total[s][keep] - x) / (n[s][keep] - 1)
    r = len(coded.raters)
    cnt = np.bincount(r_idx, minlength=r).astype(np.float64)

    def per_rater(values: np.ndarray) -> np.ndarray:
        return np.bincount(r_idx, weights=values, minlength=r)

    with np.errstate(invalid="ignore", divide="ignore"):
        mx, my = per_rater(x) / cnt, per_rater(y) / cnt
        sxy = per_rater(x * y) / cnt - mx * my
        sxx = per_rater(x * x) / cnt - mx**2
        syy = per_rater(y * y) / cnt - my**2
        # Round-off can leave a tiny positive variance for a constant rater.
        sxx = np.where(sxx < 1e-12, 0.0, sxx)
        syy = np.where(syy < 1e-12, 0.0, syy)
        # A constant rater (or constant MOS) has no correlation: NaN, never +-inf from round-off.
        corr = np.where((sxx > 0) & (syy > 0), sxy / np.sqrt(sxx * syy), np.nan)
    low = np.full(r, np.inf)
    high = np.full(r, -np.inf)
    np.minimum.at(low, r_idx, y)
    np.maximum.at(high, r_idx, y)
    out = pd.Series(corr, index=coded.raters, name="mos_correlation")
    out.attrs["n"] = pd.Series(cnt.astype(int), index=coded.raters)
    out.attrs["constant"] = pd.Series((sxx == 0) & (syy > 0), index=coded.raters)
    # How far apart the stimuli this rater scored are (leave-one-out MOS, max - min).
    out.attrs["spread"] = pd.Series(np.where(cnt > 0, high - low, np.nan), index=coded.raters)
    return out


def gold_failures(ratings: pd.DataFrame, *, high: str = GOLD_HIGH, low: str = GOLD_LOW) -> pd.DataFrame:
    """Per rater: images with both gold methods rated, and the share where high < low."""
    shown_first = first_showings(ratings)
    first = shown_first[shown_first["method"].isin([high, low])]
    raters = sorted(shown_first["rater"].unique())
    table = first.pivot_table(index=["rater", "image"], columns="method", values="score",
                              aggfunc="mean")
    if high not in table.columns or low not in table.columns:
        return pd.DataFrame({"gold_images": 0, "gold_failures": 0, "gold_fail_share": math.nan},
                            index=raters)
    pairs = table[[high, low]].dropna()
    failed = (pairs[high] < pairs[low]).groupby(level="rater").agg(["size", "sum"])
    failed = failed.reindex(raters).fillna(0)
    out = pd.DataFrame({"gold_images": failed["size"].astype(int),
                        "gold_failures": failed["sum"].astype(int)}, index=raters)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["gold_fail_share"] = out["gold_failures"] / out["gold_images"].replace(0, np.nan)
    return out


def retest_pairs(ratings: pd.DataFrame) -> pd.DataFrame:
    """One row per hidden duplicate: rater, image, method, first and second score."""
    keys = ["rater", "image", "method"]
    first = first_showings(ratings).groupby(keys)["score"].first()
    second = ratings[ratings["repeat"] == HIDDEN_DUPLICATE].groupby(keys)["score"].first()
    pairs = pd.concat({"first": first, "second": second}, axis=1, join="inner")
    return pairs.reset_index()


def retest_by_rater(ratings: pd.DataFrame) -> pd.DataFrame:
    raters = sorted(first_showings(ratings)["rater"].unique())
    pairs = retest_pairs(ratings)
    diff = (pairs["first"] - pairs["second"]).abs().groupby(pairs["rater"]).agg(["size", "mean"])
    diff = diff.reindex(raters)
    return pd.DataFrame({"duplicates": diff["size"].fillna(0).astype(int),
                         "retest_mad": diff["mean"]}, index=raters)


def response_times(ratings: pd.DataFrame) -> pd.DataFrame:
    """Per rater: timed ratings (every showing), median response_ms and its coefficient of variation.

    All NaN when the data has no response times (e.g. an imported CSV without them).
    """
    raters = sorted(first_showings(ratings)["rater"].unique())
    if "response_ms" in ratings.columns:
        ms = pd.to_numeric(ratings["response_ms"], errors="coerce")
    else:
        ms = pd.Series(np.nan, index=ratings.index)
    times = ms[ms.notna()].astype(np.float64).groupby(ratings["rater"][ms.notna()])
    mean = times.mean()
    with np.errstate(invalid="ignore", divide="ignore"):
        cv = times.std(ddof=0) / mean.where(mean > 0)
    out = pd.DataFrame({"timed_ratings": times.size(), "median_response_ms": times.median(),
                        "response_cv": cv}).reindex(raters)
    out["timed_ratings"] = out["timed_ratings"].fillna(0).astype(int)
    return out


def method_pattern(ratings: pd.DataFrame) -> pd.Series:
    """Per rater: share of first-showing ratings equal to the rater's most frequent score for that method.

    Over the methods the rater scored at least ``MIN_PATTERN_RATINGS_PER_METHOD`` times; NaN
    with fewer than ``MIN_PATTERN_METHODS`` such methods (too little to tell).
    """
    first = first_showings(ratings)
    raters = sorted(first["rater"].unique())
    counts = first.groupby(["rater", "method", "score"]).size()
    per_method = counts.groupby(level=["rater", "method"]).agg(["sum", "max"])
    per_method = per_method[per_method["sum"] >= MIN_PATTERN_RATINGS_PER_METHOD]
    per_rater = per_method.groupby(level="rater").agg(["size", "sum"])
    enough = per_rater[("sum", "size")] >= MIN_PATTERN_METHODS
    share = (per_rater[("max", "sum")] / per_rater[("sum", "sum")]).where(enough)
    return share.reindex(raters).rename("method_pattern")


def closest_raters(coded: Coded) -> pd.DataFrame:
    """Per rater: the other rater whose first-showing scores agree most often with theirs.

    Agreement = share of the stimuli both rated where both gave the same score, among raters
    sharing at least ``MIN_SHARED_STIMULI`` stimuli (else no partner). Dense R x S one-hot
    products: O(R^2 S) work and O(R^2 + R S) memory, under a second for 1,000 x 1,000.
    """
    r, k = len(coded.raters), coded.n_stimuli
    empty = pd.DataFrame({"closest_rater": pd.Series([""] * r, dtype=object),
                          "closest_agreement": np.nan, "shared_stimuli": 0}, index=coded.raters)
    if r < 2 or k == 0:
        return empty
    grid = np.zeros((r, k), dtype=np.int8)  # 0: not rated
    grid[coded.rater_idx, coded.stimulus_idx] = coded.scores.astype(np.int8)
    rated = (grid > 0).astype(np.float32)
    shared = rated @ rated.T
    agree = np.zeros((r, r), dtype=np.float32)
    for score in range(1, 6):
        same = (grid == score).astype(np.float32)
        agree += same @ same.T
    np.fill_diagonal(shared, 0)
    eligible = shared >= MIN_SHARED_STIMULI
    share = np.where(eligible, agree / np.maximum(shared, 1), -1.0)
    best = share.argmax(axis=1)
    rows = np.arange(r)
    found = share[rows, best] >= 0
    empty.loc[found, "closest_rater"] = np.asarray(coded.raters, dtype=object)[best[found]]
    empty.loc[found, "closest_agreement"] = share[rows, best][found]
    empty.loc[found, "shared_stimuli"] = shared[rows, best][found].astype(int)
    return empty


def p913_model(coded: Coded, *, tolerance: float = 1e-8, max_iterations: int = 500,
               min_inconsistency: float = 0.05) -> dict:
    """P.913 subject model by alternating estimates: stimulus score, rater bias, inconsistency.

    Start from the stimulus MOS; then repeat: bias d_i = mean residual of rater i (centred
    so biases average 0 over raters), inconsistency v_i = rms of u - psi - d (floored at
    ``min_inconsistency`` so a rater with one repeated score cannot take all the weight),
    psi_j = inverse-variance weighted mean of u - d over the stimulus's raters; until no
    estimate moves by more than ``tolerance``.
    """
    s, u, r_idx = coded.stimulus_idx, coded.scores, coded.rater_idx
    k, r = coded.n_stimuli, len(coded.raters)
    n_s = np.maximum(np.bincount(s, minlength=k), 1)
    n_r = np.maximum(np.bincount(r_idx, minlength=r), 1)
    psi = np.bincount(s, weights=u, minlength=k) / n_s
    bias = np.zeros(r)
    inconsistency = np.ones(r)
    iterations = 0
    for iterations in range(1, max_iterations + 1):
        bias_new = np.bincount(r_idx, weights=u - psi[s], minlength=r) / n_r
        bias_new -= bias_new.mean()
        residual = u - psi[s] - bias_new[r_idx]
        inconsistency_new = np.maximum(
            np.sqrt(np.bincount(r_idx, weights=residual**2, minlength=r) / n_r),
            min_inconsistency)
        w = 1.0 / inconsistency_new[r_idx] ** 2
        psi_new = (np.bincount(s, weights=w * (u - bias_new[r_idx]), minlength=k)
                   / np.bincount(s, weights=w, minlength=k))
        change = max(np.abs(psi_new - psi).max(initial=0), np.abs(bias_new - bias).max(initial=0),
                     np.abs(inconsistency_new - inconsistency).max(initial=0))
        psi, bias, inconsistency = psi_new, bias_new, inconsistency_new
        if change < tolerance:
            break
    return {"stimulus_scores": psi, "bias": pd.Series(bias, index=coded.raters),
            "inconsistency": pd.Series(inconsistency, index=coded.raters),
            "iterations": iterations}


def screen_raters(ratings: pd.DataFrame, *, bt500_reading: str = "sample") -> pd.DataFrame:
    """Every criterion per rater, the reasons for rejection, and the decision."""
    coded = code_ratings(ratings)
    table = bt500(coded, reading=bt500_reading)
    corr = mos_correlation(coded)
    table["mos_correlation"] = corr
    table["mos_spread"] = corr.attrs["spread"]
    table = table.join(gold_failures(ratings)).join(retest_by_rater(ratings))
    table = table.join(response_times(ratings))
    table["method_pattern"] = method_pattern(ratings)
    table = table.join(closest_raters(coded))
    model = p913_model(coded) if coded.scores.size else None
    table["p913_bias"] = model["bias"] if model else math.nan
    table["p913_inconsistency"] = model["inconsistency"] if model else math.nan
    reasons = []
    for rater, row in table.iterrows():
        why = []
        if row["bt500_reject"]:
            why.append(f"BT.500 (P={row['bt500_p']}, Q={row['bt500_q']})")
        n_corr = corr.attrs["n"][rater]
        if n_corr >= MIN_RATINGS_FOR_CORRELATION and corr.attrs["spread"][rater] >= MIN_MOS_SPREAD:
            if row["mos_correlation"] < MIN_CORRELATION:
                why.append(f"r with MOS {row['mos_correlation']:.2f} < {MIN_CORRELATION}")
            elif corr.attrs["constant"][rater]:
                why.append("all scores equal while the stimuli differ")
        if row["gold_images"] >= MIN_GOLD_IMAGES and row["gold_fail_share"] > MAX_GOLD_FAILURE_SHARE:
            why.append(f"HR below nearest on {row['gold_failures']}/{row['gold_images']} images")
        if row["duplicates"] >= MIN_DUPLICATES and row["retest_mad"] > MAX_RETEST_DIFFERENCE:
            why.append(f"test-retest mean abs. difference {row['retest_mad']:.2f} > {MAX_RETEST_DIFFERENCE}")
        why += stuffing_reasons(row)
        reasons.append("; ".join(why))
    table["reasons"] = reasons
    table["rejected"] = table["reasons"] != ""
    table.index.name = "rater"
    return table


def stuffing_reasons(row: pd.Series) -> list[str]:
    """Criteria (e) to (h) for one rater's row of the screening table: signs of a script."""
    why = []
    if row["timed_ratings"] >= MIN_TIMED_RATINGS:
        if row["median_response_ms"] < MIN_MEDIAN_RESPONSE_MS:
            why.append(f"median response time {row['median_response_ms']:.0f} ms < {MIN_MEDIAN_RESPONSE_MS} ms")
        if row["response_cv"] < MIN_RESPONSE_CV:
            why.append(f"response times implausibly regular (CV {row['response_cv']:.2f} < {MIN_RESPONSE_CV})")
    if row["method_pattern"] >= MAX_METHOD_PATTERN:
        why.append(f"one score per method on {row['method_pattern']:.0%} of their ratings "
                   "(scores follow the method, not the image)")
    # Where the stimuli hardly differ (one quality level), honest raters agree on nearly every
    # score: agreement is no sign of copying there.
    if row["closest_agreement"] >= MAX_AGREEMENT and row["mos_spread"] >= MIN_MOS_SPREAD:
        why.append(f"the same scores as {row['closest_rater']} on {row['closest_agreement']:.0%} of "
                   f"{row['shared_stimuli']} shared stimuli")
    return why
