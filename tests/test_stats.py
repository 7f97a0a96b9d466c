"""Known answers for the report's statistics, and the coverage of its intervals."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from survey.analysis import reliability, stats
from survey.analysis.simulate import simulate_study
from survey import ratings as contract
from survey.analysis.codes import code_ratings


def frame(rows: list[tuple]) -> pd.DataFrame:
    """Ratings from (rater, image, method, score[, repeat]) tuples."""
    df = pd.DataFrame([r if len(r) == 5 else (*r, 0) for r in rows],
                      columns=["rater", "image", "method", "score", "repeat"])
    return contract.validate(df)


# --- intervals ------------------------------------------------------------------------


def test_t_interval_matches_scipy() -> None:
    scores = np.array([1, 2, 2, 3, 5, 4, 4, 3])
    mean, lo, hi = stats.t_interval(scores)
    ref_lo, ref_hi = sps.t.interval(0.95, len(scores) - 1, loc=scores.mean(), scale=sps.sem(scores))
    assert mean == pytest.approx(3.0)
    assert (lo, hi) == pytest.approx((ref_lo, ref_hi))
    assert math.isnan(stats.t_interval(np.array([4]))[1])


def test_cluster_bootstrap_weights_raters_and_images() -> None:
    # Recompute the first resample by hand: repeat each rating w_r * v_i times, then average.
    df = simulate_study(n_raters=5, n_images=4, seed=3, missing_share=0.2)
    layout = code_ratings(contract.validate(df))
    boot = stats.cluster_bootstrap_means(*layout.cells, resamples=3, seed=11)
    rng = np.random.default_rng(11)
    w = rng.multinomial(5, np.full(5, 0.2), size=3)
    v = rng.multinomial(4, np.full(4, 0.25), size=3)
    for b in range(3):
        weight = w[b, layout.rater_idx] * v[b, layout.image_idx]
        for m in range(len(layout.methods)):
            sel = layout.method_idx == m
            expected = np.average(layout.scores[sel], weights=weight[sel]) if weight[sel].sum() else np.nan
            assert boot[b, m] == pytest.approx(expected, nan_ok=True)


def test_bootstrap_without_resampling_returns_the_mean() -> None:
    df = contract.validate(simulate_study(n_raters=4, n_images=3, seed=1))
    layout = code_ratings(df)
    boot = stats.cluster_bootstrap_means(*layout.cells, resamples=2, seed=0,
                                         resample_raters=False, resample_images=False)
    means = df.groupby("method")["score"].mean().reindex(layout.methods).to_numpy()
    assert boot == pytest.approx(np.vstack([means, means]))


def test_variance_components_recover_a_known_crossed_design() -> None:
    rng = np.random.default_rng(5)
    n_r, n_i = 150, 150
    rater = rng.normal(0, 0.5, n_r)
    image = rng.normal(0, 0.7, n_i)
    r, i, m = (a.ravel() for a in np.meshgrid(np.arange(n_r), np.arange(n_i), [0, 1], indexing="ij"))
    keep = rng.random(r.size) < 0.5  # unbalanced on purpose
    r, i, m = r[keep], i[keep], m[keep]
    y = np.where(m == 0, 2.0, 3.0) + rater[r] + image[i] + rng.normal(0, 0.3, r.size)
    df = pd.DataFrame({"rater": r.astype(str), "image": i.astype(str),
                       "method": np.where(m == 0, "a", "b"), "score": y, "repeat": 0})
    comp = stats.variance_components(code_ratings(df))
    assert comp["rater"] == pytest.approx(rater.var(), rel=0.1)
    assert comp["image"] == pytest.approx(image.var(), rel=0.1)
    assert comp["residual"] == pytest.approx(0.09, rel=0.1)


def test_clustered_interval_covers_the_truth_and_naive_does_not() -> None:
    # 400 studies of the paper's shape at 20 images, coverage pooled over 5 methods (2,000
    # intervals: the estimate's sd is about 0.006). 400 resamples here (the report uses
    # >= 2,000) keep the test near 15 s.
    covered_boot, covered_naive, covered_re = [], [], []
    for study in range(400):
        df = simulate_study(n_raters=26, n_images=20, seed=10_000 + study)
        truth = df.attrs["true_means"]
        table = stats.mos_table(contract.validate(df), resamples=400, seed=study)
        t = table["method"].map(truth)
        covered_boot += list((table["boot_lo"] <= t) & (t <= table["boot_hi"]))
        covered_naive += list((table["naive_lo"] <= t) & (t <= table["naive_hi"]))
        covered_re += list((table["re_lo"] <= t) & (t <= table["re_hi"]))
    assert 0.93 <= np.mean(covered_boot) <= 0.97
    assert np.mean(covered_naive) < 0.85
    assert np.mean(covered_re) > 0.85


def test_mos_table_degenerate_inputs_say_what_is_missing() -> None:
    one_rater = frame([("r1", "i1", "a", 3), ("r1", "i2", "a", 4), ("r1", "i1", "b", 2)])
    table = stats.mos_table(one_rater, resamples=100)
    assert table["boot_lo"].isna().all()
    assert "needs >= 2 raters (has 1)" in table.loc[0, "note"]
    empty = stats.mos_table(frame([]).iloc[0:0], resamples=100)
    assert empty.empty and list(empty.columns) == stats.MOS_COLUMNS
    no_ratings = stats.mos_table(one_rater, methods=["a", "b", "c"], resamples=100)
    assert no_ratings.loc[2, "note"] == "no ratings"
    equal = frame([(r, i, "a", 3) for r in "xyz" for i in "pq"])
    row = stats.mos_table(equal, resamples=100).iloc[0]
    assert row["mos"] == 3 and row["boot_lo"] == pytest.approx(3) and row["boot_hi"] == pytest.approx(3)


# --- pairwise -------------------------------------------------------------------------


def test_holm_against_a_hand_computation() -> None:
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.06
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.005, math.nan])
    assert adjusted[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert math.isnan(adjusted[4])
    assert stats.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])


def test_wilcoxon_matches_scipy_and_refuses_degenerate_pairs() -> None:
    d = np.array([0.5, -0.2, 1.1, 0.8, 0.3, 0.9, -0.1, 0.4])
    assert stats.wilcoxon_p(d)[0] == pytest.approx(sps.wilcoxon(d).pvalue)
    assert stats.wilcoxon_p(np.zeros(5)) == (pytest.approx(math.nan, nan_ok=True),
                                             "n/a: all paired differences are 0")
    assert "needs >= 2" in stats.wilcoxon_p(np.array([1.0]))[1]


def test_wilcoxon_with_ties_and_zeros_is_scipys_exact_permutation_p() -> None:
    """Rating differences have ties and zeros; for up to 13 pairs scipy then permutes every sign
    (slowly), and our vectorised enumeration must give its p-value exactly. Checked on 599
    random cases when written; these cover zeros, ties, n = 13 and a one-sided extreme."""
    rng = np.random.default_rng(5)
    cases = [np.array([1.0, 1, 1, 2, 0, -1, 3, 1, 2, 0, 1, 1, 2]),  # n = 13: the last permuted size
             np.array([2.0, 2, 2, 2, 2, 2]),  # all one sign: the smallest p
             np.array([0.0, 0, 1, -1, 2, -2, 0.5])]
    cases += [rng.integers(-3, 4, size).astype(float) for size in (4, 7, 9)]
    for d in cases:
        assert stats.wilcoxon_p(d)[0] == pytest.approx(sps.wilcoxon(d).pvalue, abs=1e-12), d
    d = rng.integers(-3, 4, 14).astype(float)  # 14 pairs with ties: scipy's normal approximation
    assert stats.wilcoxon_p(d)[0] == pytest.approx(sps.wilcoxon(d).pvalue)


def test_probability_of_superiority_counts_ties_half() -> None:
    assert stats.probability_of_superiority(np.array([1, 2, 3]), np.array([2])) == pytest.approx(0.5)
    assert stats.probability_of_superiority(np.array([5, 5]), np.array([1, 5])) == pytest.approx(0.75)
    rng = np.random.default_rng(0)
    a, b = rng.integers(1, 6, 40), rng.integers(1, 6, 30)
    brute = ((a[:, None] > b[None, :]) + 0.5 * (a[:, None] == b[None, :])).mean()
    assert stats.probability_of_superiority(a, b) == pytest.approx(brute)


def test_pairwise_table_uses_per_rater_and_per_image_means() -> None:
    df = contract.validate(simulate_study(n_raters=8, n_images=6, seed=4))
    table = stats.pairwise_table(df, resamples=200)
    assert len(table) == 10
    row = table[(table["method_a"] == "bicubic") & (table["method_b"] == "srgan")].iloc[0]
    per_rater = df.pivot_table(index="rater", columns="method", values="score")
    d = per_rater["bicubic"] - per_rater["srgan"]
    assert row["p_raters"] == pytest.approx(sps.wilcoxon(d).pvalue)
    assert row["median_diff"] == pytest.approx(np.median(d))
    assert row["median_diff_lo"] <= row["median_diff"] <= row["median_diff_hi"]
    per_image = df.pivot_table(index="image", columns="method", values="score")
    assert row["p_images"] == pytest.approx(sps.wilcoxon(per_image["bicubic"] - per_image["srgan"]).pvalue)
    assert (table["holm_raters"] >= table["p_raters"]).all()


def test_clean_ratings_messages() -> None:
    with pytest.raises(contract.RatingsError, match="missing column.*score"):
        contract.validate(pd.DataFrame({"rater": ["a"], "image": ["b"], "method": ["c"]}))
    base = {"rater": ["a", "a"], "image": ["b", "c"], "method": ["m", "m"]}
    with pytest.raises(contract.RatingsError, match="line 3 has '6'"):
        contract.validate(pd.DataFrame({**base, "score": ["4", "6"]}))
    with pytest.raises(contract.RatingsError, match="whole number; line 2 has '2.5'"):
        contract.validate(pd.DataFrame({**base, "score": ["2.5", "3"]}))


# --- reliability ----------------------------------------------------------------------

# Krippendorff (2011), "Computing Krippendorff's alpha-reliability", section C: 4 observers,
# 12 units, values 1..5 with missing data. The paper's results: nominal 0.743, ordinal 0.815,
# interval 0.849; its coincidence matrix has o_11 = 7, o_12 = 4/3, o_55 = 3.
KRIPPENDORFF_DATA = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]


def test_krippendorff_alpha_reproduces_the_papers_example() -> None:
    counts = np.zeros((12, 5))
    for observer in KRIPPENDORFF_DATA:
        for unit, value in enumerate(observer):
            if value is not None:
                counts[unit, value - 1] += 1
    o = reliability.coincidence_matrix(counts)
    assert o[0, 0] == pytest.approx(7) and o[0, 1] == pytest.approx(4 / 3) and o[4, 4] == pytest.approx(3)
    assert reliability.krippendorff_alpha(counts, metric="nominal") == pytest.approx(0.743, abs=5e-4)
    assert reliability.krippendorff_alpha(counts, metric="ordinal") == pytest.approx(0.815, abs=5e-4)
    assert reliability.krippendorff_alpha(counts, metric="interval") == pytest.approx(0.849, abs=5e-4)
    assert math.isnan(reliability.krippendorff_alpha(np.array([[0, 0, 3, 0, 0]])))


def test_sos_parameter_recovers_a() -> None:
    mos = np.linspace(1.2, 4.8, 30)
    stimuli = pd.DataFrame({"n": 20, "mos": mos, "sos": np.sqrt(0.2 * (-mos**2 + 6 * mos - 5))})
    assert reliability.sos_parameter(stimuli) == pytest.approx(0.2)


def test_retest_summary_hand_example() -> None:
    df = frame([("r", "i1", "a", 3, 0), ("r", "i1", "a", 4, 1), ("r", "i2", "a", 2, 0),
                ("r", "i2", "a", 2, 1), ("s", "i1", "a", 5, 0), ("s", "i1", "a", 2, 1)])
    summary = reliability.retest_summary(df)
    assert summary["duplicates"] == 3
    assert summary["mean_abs_diff"] == pytest.approx((1 + 0 + 3) / 3)
    assert summary["exact_agreement"] == pytest.approx(1 / 3)
