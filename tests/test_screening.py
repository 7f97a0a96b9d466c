"""Rater screening: each criterion against a hand count or scipy, and its power on simulations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from survey.analysis import screening, stats
from survey.analysis.simulate import simulate_study
from survey import ratings as contract
from survey.analysis.codes import Coded, code_ratings


def frame(rows: list[tuple]) -> pd.DataFrame:
    df = pd.DataFrame([r if len(r) == 5 else (*r, 0) for r in rows],
                      columns=["rater", "image", "method", "score", "repeat"])
    return contract.validate(df)


def test_kurtosis_matches_scipy() -> None:
    x = np.array([1, 2, 2, 3, 3, 3, 4, 5, 5, 1])
    assert screening.kurtosis_beta2(x) == pytest.approx(sps.kurtosis(x, fisher=False, bias=True))


def reference_bt500(df: pd.DataFrame) -> dict[str, tuple[int, int, bool]]:
    """BT.500's procedure written out loop by loop, with scipy's kurtosis."""
    out = {}
    stimuli = {key: g["score"].to_numpy(float) for key, g in df.groupby(["image", "method"])}
    for rater, rows in df.groupby("rater"):
        p = q = 0
        for _, row in rows.iterrows():
            u = stimuli[(row["image"], row["method"])]
            if u.std() == 0:
                continue
            beta2 = sps.kurtosis(u, fisher=False)
            k = 2.0 if 2 <= beta2 <= 4 else np.sqrt(20)
            p += row["score"] >= u.mean() + k * u.std(ddof=1)
            q += row["score"] <= u.mean() - k * u.std(ddof=1)
        reject = (p + q) / len(rows) > 0.05 and p + q > 0 and abs(p - q) / (p + q) < 0.3
        out[rater] = (p, q, reject)
    return out


def test_bt500_matches_the_procedure_written_out() -> None:
    # Nine raters agree up to one point; "x" swings to 5 and 1 on alternate images.
    rng = np.random.default_rng(1)
    rows = []
    for j in range(20):
        base = 3 + (j % 3 == 0)
        for r in range(9):
            rows.append((f"h{r}", f"i{j}", "m", int(base + rng.integers(-1, 2) * (r % 3 == 0))))
        rows.append(("x", f"i{j}", "m", 5 if j % 2 else 1))
    df = frame(rows)
    table = screening.bt500(code_ratings(df))
    expected = reference_bt500(df)
    for rater, (p, q, reject) in expected.items():
        assert (table.loc[rater, "bt500_p"], table.loc[rater, "bt500_q"]) == (p, q)
        assert table.loc[rater, "bt500_reject"] == reject
    assert table.loc["x", "bt500_reject"] and table["bt500_reject"].sum() == 1


def test_mos_correlation_is_pearson_with_the_leave_one_out_mos() -> None:
    df = contract.validate(simulate_study(n_raters=6, n_images=5, seed=2))
    corr = screening.mos_correlation(code_ratings(df))
    mine = df[df["rater"] == "r002"]
    others = df[df["rater"] != "r002"].groupby(["image", "method"])["score"].mean()
    loo = others.loc[list(zip(mine["image"], mine["method"]))].to_numpy()
    assert corr["r002"] == pytest.approx(sps.pearsonr(mine["score"], loo)[0])


def test_gold_failures_and_retest_hand_example() -> None:
    rows = [("a", f"i{k}", "hr", 5) for k in range(4)] + [("a", f"i{k}", "nearest", 1) for k in range(4)]
    rows[0] = ("a", "i0", "hr", 1)
    rows[4] = ("a", "i0", "nearest", 3)  # i0: HR 1 < nearest 3, one failure in four
    rows += [("a", "i1", "hr", 3, 1), ("a", "i2", "hr", 5, 1)]  # duplicates: |5-3| and |5-5|
    df = frame(rows)
    gold = screening.gold_failures(df)
    assert (gold.loc["a", "gold_images"], gold.loc["a", "gold_failures"]) == (4, 1)
    assert gold.loc["a", "gold_fail_share"] == pytest.approx(0.25)
    retest = screening.retest_by_rater(df)
    assert retest.loc["a", "duplicates"] == 2 and retest.loc["a", "retest_mad"] == pytest.approx(1.0)
    no_gold = screening.gold_failures(df[df["method"] != "hr"])
    assert no_gold.loc["a", "gold_images"] == 0


def test_p913_model_recovers_bias_and_inconsistency() -> None:
    # Continuous scores from the P.913 model itself: psi_j + d_i + v_i e.
    rng = np.random.default_rng(3)
    n_r, n_s = 30, 200
    psi, bias = rng.uniform(1, 5, n_s), rng.normal(0, 0.5, n_r)
    bias -= bias.mean()
    noise = rng.uniform(0.2, 1.0, n_r)
    r, s = (a.ravel() for a in np.meshgrid(np.arange(n_r), np.arange(n_s), indexing="ij"))
    u = psi[s] + bias[r] + noise[r] * rng.standard_normal(r.size)
    coded = Coded(raters=[f"r{i:02d}" for i in range(n_r)], images=[f"i{j:03d}" for j in range(n_s)],
                  methods=["m"], rater_idx=r, image_idx=s, method_idx=np.zeros_like(s), stimulus_idx=s,
                  stimulus_image=np.arange(n_s), stimulus_method=np.zeros(n_s, dtype=np.int64), scores=u)
    model = screening.p913_model(coded)
    assert model["bias"].to_numpy() == pytest.approx(bias, abs=0.15)
    assert model["inconsistency"].to_numpy() == pytest.approx(noise, rel=0.15)
    assert np.corrcoef(model["stimulus_scores"], psi)[0, 1] > 0.99
    assert model["iterations"] < 500


def test_screening_catches_outliers_and_keeps_honest_raters() -> None:
    caught = outliers = false_alarms = honest = 0
    for study in range(40):
        df = simulate_study(n_raters=26, n_images=20, seed=700 + study, outlier_share=0.15,
                            retest_share=0.1)
        planted = set(df.attrs["outliers"])
        table = screening.screen_raters(contract.validate(df))
        rejected = set(table.index[table["rejected"]])
        caught += len(rejected & planted)
        outliers += len(planted)
        false_alarms += len(rejected - planted)
        honest += 26 - len(planted)
    assert caught / outliers >= 0.90
    assert false_alarms / honest <= 0.05


def test_constant_rater_is_flagged_with_a_reason() -> None:
    df = contract.validate(simulate_study(n_raters=8, n_images=4, seed=5))
    df.loc[df["rater"] == "r003", "score"] = 3
    table = screening.screen_raters(df)
    assert table.loc["r003", "rejected"]
    assert "all scores equal" in table.loc["r003", "reasons"]
    assert table.loc[table.index != "r003", "rejected"].sum() <= 1
