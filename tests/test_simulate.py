"""The ratings simulator: the agreed format, its knobs, and the truth it reports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from survey.analysis import report
from survey.analysis.simulate import COLUMNS, PAPER_METHODS, simulate_study, true_means
from survey import ratings as contract


def test_format_and_design() -> None:
    df = simulate_study(n_raters=7, n_images=9, seed=1, retest_share=0.1)
    assert list(df.columns) == list(COLUMNS)
    first = df[df["repeat"] == 0]
    assert len(first) == 7 * 9 * 5
    assert not first.duplicated(["rater", "image", "method"]).any()
    assert set(df["method"]) == set(PAPER_METHODS)
    assert df["score"].between(1, 5).all() and df["score"].dtype == np.int64
    duplicates = df[df["repeat"] == 1]
    assert 0 < len(duplicates) < 0.2 * len(first)
    # The hidden duplicate is always shown after the first showing.
    shown = df.set_index(["rater", "image", "method", "repeat"])["shown_at"]
    for key in duplicates.set_index(["rater", "image", "method"]).index:
        assert shown[(*key, 0)] < shown[(*key, 1)]
    assert (pd.to_datetime(df["answered_at"]) > pd.to_datetime(df["shown_at"])).all()


def test_seeded_and_knobs_work() -> None:
    a = simulate_study(n_raters=5, n_images=4, seed=3)
    b = simulate_study(n_raters=5, n_images=4, seed=3)
    pd.testing.assert_frame_equal(a, b)
    assert not a["score"].equals(simulate_study(n_raters=5, n_images=4, seed=4)["score"])
    missing = simulate_study(n_raters=20, n_images=20, seed=3, missing_share=0.3)
    assert 0.6 * 2000 < len(missing) < 0.8 * 2000
    out = simulate_study(n_raters=20, n_images=10, seed=3, outlier_share=0.2, outlier_kind="inverted")
    assert len(out.attrs["outliers"]) == 4
    inverted = out[out["rater"].isin(out.attrs["outliers"])]
    assert inverted.groupby("method")["score"].mean()["hr"] < inverted.groupby("method")["score"].mean()["nearest"]


def test_true_means_match_a_monte_carlo_of_the_same_model() -> None:
    # Draw the latent score of an honest rating directly, a million times per method.
    rng = np.random.default_rng(0)
    n = 1_000_000
    methods = {"low": 1.2, "mid": 2.9, "high": 4.6}
    truth = true_means(methods, rater_bias_sd=0.4, image_sd=0.3, interaction_sd=0.2,
                       noise_sd_range=(0.3, 1.0))
    for name, mu in methods.items():
        latent = (mu + rng.normal(0, 0.4, n) + rng.normal(0, 0.3, n) + rng.normal(0, 0.2, n)
                  + rng.uniform(0.3, 1.0, n) * rng.standard_normal(n))
        score = np.clip(np.floor(latent + 0.5), 1, 5)
        assert truth[name] == pytest.approx(score.mean(), abs=0.004)
    # Clipping pulls the extremes inwards: the truth is not the latent mean.
    assert truth["low"] > 1.2 and truth["high"] < 4.6


def test_cli_writes_a_csv_the_report_reads(tmp_path: Path, capsys) -> None:
    from survey.analysis.simulate import main

    out = tmp_path / "ratings.csv"
    assert main(["--raters", "4", "--images", "3", "--seed", "9", "--outliers", "0.25", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "outlier raters: r" in stdout and "srgan" in stdout
    df = contract.read_csv(out)
    assert df["rater"].nunique() == 4 and (df["repeat"] == 0).sum() == 4 * 3 * 5


def test_cli_refuses_bad_values_without_a_traceback(tmp_path: Path, capsys) -> None:
    from survey.analysis.simulate import main

    for bad in (["--raters", "0"], ["--outliers", "2"], ["--missing", "-0.1"]):
        with pytest.raises(SystemExit):
            main([*bad, "--images", "3", "--out", str(tmp_path / "x.csv")])
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["--raters", "2", "--images", "2", "--out", str(blocker / "x.csv")]) == 2
    assert "cannot write" in capsys.readouterr().err
