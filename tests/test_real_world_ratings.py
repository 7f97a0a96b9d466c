"""Ratings files as real studies make them: the silent errors a public dataset exposed, each with
the behaviour that replaces it (duplicates, whitespace, line numbers, the repeat rule, names that
look like missing values, few images or raters, one-level studies, the two BT.500 readings)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from survey import ratings as contract
from survey import report as report_command
from survey.analysis import report, screening, stats
from survey.analysis.codes import code_ratings
from survey.analysis.simulate import simulate_study
from survey.study import export

HEADER = "study,rater,session,image,method,score,repeat,shown_at,answered_at,response_ms\n"


def rows_csv(path: Path, rows: list[tuple], *, header: str = HEADER) -> Path:
    """rows: (rater, image, method, score[, repeat])."""
    lines = [header.rstrip("\n")]
    for row in rows:
        rater, image, method, score, *rest = row
        repeat = rest[0] if rest else 0
        lines.append(f"s,{rater},s-{rater},{image},{method},{score},{repeat},,,")
    path.write_text("\n".join(lines) + "\n")
    return path


def grid(raters: int, images: int, methods: dict[str, int], *, seed: int = 0) -> list[tuple]:
    """Every rater scores every image under every method: the method's base score +- 1."""
    rng = np.random.default_rng(seed)
    return [(f"r{r}", f"i{i}", m, int(np.clip(base + rng.integers(-1, 2), 1, 5)))
            for r in range(raters) for i in range(images) for m, base in methods.items()]


# --- duplicates ------------------------------------------------------------------------------


def test_a_duplicated_row_counts_once_and_the_summary_says_so(tmp_path: Path) -> None:
    rows = grid(6, 6, {"bicubic": 2, "srgan": 4})
    clean = rows_csv(tmp_path / "clean.csv", rows)
    doubled = rows_csv(tmp_path / "doubled.csv", rows + [rows[0], rows[5], rows[5]])
    for name, path in (("clean", clean), ("doubled", doubled)):
        assert report_command.main(["--csv", str(path), "--out", str(tmp_path / name),
                                    "--resamples", "200"]) == 0
    a, b = (report.read_table(tmp_path / name / "mos.csv") for name in ("clean", "doubled"))
    pd.testing.assert_frame_equal(a, b)  # the same MOS, counts and intervals
    assert "Duplicated rows (the same rater, image, method and showing as an earlier row): 3, each counted once" \
        in (tmp_path / "doubled" / "report.md").read_text()
    assert "earlier row): 0." in (tmp_path / "clean" / "report.md").read_text()


def test_the_importer_refuses_duplicates_naming_their_lines(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text(HEADER
                    + "s,R1,S1,img0,nearest,3,0,,,\n"
                    + "s,R1,S1,img1,hr,5,0,,,\n"
                    + "s,R1,S1, img0,nearest ,2,0,,,\n")  # the first row again, with stray spaces
    with pytest.raises(contract.RatingsError, match="twice with the same repeat flag; line 2, 4"):
        export.read_ratings_csv(path)


# --- whitespace ------------------------------------------------------------------------------


def test_ids_are_trimmed_like_scores_are(tmp_path: Path) -> None:
    path = rows_csv(tmp_path / "r.csv", [("s00", "Tennis", "srgan", " 4 "), ("s00 ", "Tennis ", " bicubic", "2"),
                                         (" s01", "Tennis", "srgan", "5 ")])
    frame = contract.read_csv(path)
    assert sorted(frame["rater"].unique()) == ["s00", "s01"]
    assert list(frame["image"].unique()) == ["Tennis"]
    assert sorted(frame["method"].unique()) == ["bicubic", "srgan"]
    assert list(frame["score"]) == [4, 2, 5]


# --- line numbers ----------------------------------------------------------------------------


def test_errors_name_the_files_own_line_counting_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text(HEADER + "s,a,s-a,i1,srgan,4,0,,,\n\n\ns,a,s-a,i2,srgan,4,0,,,\n\n"
                    + "s,a,s-a,i3,srgan,7,0,,,\n")
    # Lines: 1 header, 2 a rating, 3-4 blank, 5 a rating, 6 blank, 7 the bad score.
    with pytest.raises(contract.RatingsError, match="score must be in 1..5; line 7 has '7'"):
        contract.read_csv(path)
    with pytest.raises(contract.RatingsError, match="line 7"):
        export.read_ratings_csv(path)


# --- one rule for repeat ---------------------------------------------------------------------


@pytest.mark.parametrize("read", [contract.read_csv, export.read_ratings_csv])
def test_repeat_is_0_or_1_everywhere(tmp_path: Path, read) -> None:
    path = rows_csv(tmp_path / "r.csv", [("a", "i1", "srgan", 4, 0), ("a", "i1", "srgan", 3, 1),
                                         ("a", "i1", "srgan", 4, 2)])
    with pytest.raises(contract.RatingsError, match="repeat must be 0 or 1; line 4 has '2'"):
        read(path)


def test_the_report_command_refuses_repeat_2_without_a_traceback(tmp_path: Path, capsys) -> None:
    path = rows_csv(tmp_path / "r.csv", [("a", "i1", "srgan", 4, 0), ("a", "i1", "srgan", 4, 2)])
    assert report_command.main(["--csv", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "repeat must be 0 or 1; line 3" in capsys.readouterr().err


# --- names stay strings ----------------------------------------------------------------------


def test_a_method_named_nan_stays_a_name_through_the_report(tmp_path: Path) -> None:
    rows = grid(5, 5, {"nan": 2, "NA": 4, "null": 3})
    path = rows_csv(tmp_path / "r.csv", rows)
    assert sorted(contract.read_csv(path)["method"].unique()) == ["NA", "nan", "null"]
    assert report_command.main(["--csv", str(path), "--out", str(tmp_path / "out"), "--resamples", "200"]) == 0
    mos = report.read_table(tmp_path / "out" / "mos.csv")
    assert sorted(mos["method"].unique()) == ["NA", "nan", "null"]
    assert mos["mos"].notna().all() and mos["mos"].dtype == float
    pairs = report.read_table(tmp_path / "out" / "pairwise.csv")
    assert {"nan", "NA", "null"} == set(pairs["method_a"]) | set(pairs["method_b"])


# --- small samples ---------------------------------------------------------------------------


def test_few_images_give_intervals_inside_the_scale_flagged_as_rough(tmp_path: Path) -> None:
    """Two images per method (as in many real studies): the t quantile on 1 degree of freedom
    (12.7) used to send the clustered interval to [-1.9, 10.2]."""
    frame = contract.validate(pd.DataFrame(grid(12, 2, {"bicubic": 2, "srresnet": 3, "srgan": 4}, seed=3),
                                           columns=["rater", "image", "method", "score"]))
    table = stats.mos_table(frame, resamples=300, seed=0)
    for kind in ("boot", "naive", "re"):
        finite = table[[f"{kind}_lo", f"{kind}_hi"]].dropna()
        assert ((finite >= 1.0) & (finite <= 5.0)).all().all(), kind
    assert table["small_sample"].all()
    assert table["note"].str.contains("small sample: only 2 images").all()
    assert table["note"].str.contains("clustered, naive|clustered interval clipped|random-effects").any()
    a = report.analyse(frame, resamples=300)
    text = report.report_markdown(a, command="t", figures=[])
    assert "†" in text and report.SMALL_SAMPLE_FOOTNOTE in text
    assert "†" in report.summary_text(a)


def test_one_or_two_raters_keep_the_naive_interval_on_the_scale() -> None:
    frame = contract.validate(pd.DataFrame([("r1", "i1", "srgan", 5), ("r2", "i1", "srgan", 1),
                                            ("r1", "i1", "bicubic", 1), ("r2", "i1", "bicubic", 2)],
                                           columns=["rater", "image", "method", "score"]))
    table = stats.mos_table(frame, resamples=200)
    srgan = table.set_index("method").loc["srgan"]
    assert (srgan["naive_lo"], srgan["naive_hi"]) == (1.0, 5.0)  # t(0.975, 1) x 2.83 / 1.41: far off the scale
    assert "naive interval clipped to the 1..5 scale" in srgan["note"]
    assert srgan["small_sample"]


def test_an_interval_that_cannot_be_computed_is_never_drawn_as_a_point() -> None:
    """One rater: the clustered interval is n/a for every method; the figure must not show a
    bare marker (which reads as a certain MOS) but 'n/a'."""
    frame = contract.validate(pd.DataFrame(grid(1, 6, {"bicubic": 2, "srgan": 4}),
                                           columns=["rater", "image", "method", "score"]))
    a = report.analyse(frame, resamples=200)
    assert a.mos["boot_lo"].isna().all()
    fig = report.draw_figures(a)["mos_intervals.png"]
    ax = fig.axes[0]
    blue = [line for line in ax.lines if line.get_color() == "tab:blue" and line.get_marker() == "o"]
    assert not blue  # no clustered point at all
    assert sum(t.get_text() == "n/a" for t in ax.texts) == 2


# --- screening a one-level study -------------------------------------------------------------


def test_raters_who_always_give_1_in_a_study_of_the_worst_quality_are_kept() -> None:
    """One condition, all of it bad: honest raters give 1 almost always, some always. Their
    scores cannot track stimuli that differ by less than a point, and two such raters agree on
    every one of their 40 shared stimuli without copying each other."""
    honest = simulate_study(n_raters=12, n_images=40, methods={"nearest": 0.4}, seed=4)
    constant = pd.concat([honest[honest["rater"] == "r000"].assign(rater=f"c{k}", session=f"s-c{k}", score=1)
                          for k in range(3)])
    frame = contract.validate(pd.concat([honest, constant], ignore_index=True))
    table = screening.screen_raters(frame)
    assert not table.loc[["c0", "c1", "c2"], "rejected"].any(), table.loc[["c0", "c1", "c2"], "reasons"]
    assert not table["rejected"].any(), table.loc[table["rejected"], "reasons"]


def test_a_constant_rater_is_still_rejected_where_the_stimuli_differ() -> None:
    study = simulate_study(n_raters=10, n_images=8, seed=5)
    constant = study[study["rater"] == "r000"].assign(rater="c", session="s-c", score=3)
    table = screening.screen_raters(contract.validate(pd.concat([study, constant], ignore_index=True)))
    assert "all scores equal while the stimuli differ" in table.loc["c", "reasons"]


# --- BT.500: two readings --------------------------------------------------------------------


def bt500_study() -> pd.DataFrame:
    """Eight raters, 20 stimuli. Rater x scores 3 where the others give 1,1,1,1,1,2,2 (twice)
    and where they give 5,5,5,5,5,4,4 (twice): beyond 2 population SDs of those stimuli's
    scores, within 2 sample SDs. Elsewhere everyone scores 1..5 spread out."""
    rows = []
    others = [f"o{k}" for k in range(7)]
    patterns = [[1, 1, 1, 1, 1, 2, 2]] * 2 + [[5, 5, 5, 5, 5, 4, 4]] * 2
    for j, scores in enumerate(patterns):
        rows += [(o, f"p{j}", "m", s) for o, s in zip(others, scores)] + [("x", f"p{j}", "m", 3)]
    for j in range(16):
        scores = [1 + (j + k) % 5 for k in range(8)]
        rows += [(r, f"f{j}", "m", s) for r, s in zip(others + ["x"], scores)]
    return contract.validate(pd.DataFrame(rows, columns=["rater", "image", "method", "score"]))


def test_bt500_sample_reading_keeps_a_borderline_rater_the_population_reading_rejects() -> None:
    frame = bt500_study()
    coded = code_ratings(frame)
    sample = screening.bt500(coded, reading="sample")
    population = screening.bt500(coded, reading="population")
    assert (sample.loc["x", "bt500_p"], sample.loc["x", "bt500_q"]) == (0, 0)
    assert (population.loc["x", "bt500_p"], population.loc["x", "bt500_q"]) == (2, 2)
    assert not sample["bt500_reject"].any()
    assert list(population.index[population["bt500_reject"]]) == ["x"]


def test_bt500_population_reading_counts_a_unanimous_score_on_both_sides() -> None:
    frame = contract.validate(pd.DataFrame([(r, "same", "m", 4) for r in ("a", "b", "c")]
                                           + [(r, "varied", "m", s) for r, s in (("a", 1), ("b", 3), ("c", 5))],
                                           columns=["rater", "image", "method", "score"]))
    coded = code_ratings(frame)
    population = screening.bt500(coded, reading="population")
    assert list(population["bt500_p"]) == [1, 1, 1] and list(population["bt500_q"]) == [1, 1, 1]
    sample = screening.bt500(coded, reading="sample")
    assert sample[["bt500_p", "bt500_q"]].to_numpy().sum() == 0


def test_the_report_names_the_bt500_reading_it_used(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    contract.write_csv(bt500_study(), path)
    for reading, x_rejected in (("sample", False), ("population", True)):
        out = tmp_path / reading
        args = ["--csv", str(path), "--out", str(out), "--resamples", "200"]
        assert report_command.main(args + (["--bt500", reading] if reading != "sample" else [])) == 0
        text = (out / "report.md").read_text()
        assert f"(--bt500 {reading})" in text and report.BT500_READING_TEXT[reading] in text
        raters = report.read_table(out / "raters.csv").set_index("rater")
        assert bool(raters.loc["x", "bt500_reject"]) is x_rejected
        assert ("BT.500 (P=2, Q=2)" in raters.loc["x", "reasons"]) is x_rejected


def test_validate_takes_a_filtered_frame_with_real_times() -> None:
    """A frame cut from a bigger one (its index not 0..n-1), times already datetimes, one missing."""
    full = contract.validate(simulate_study(n_raters=3, n_images=2, seed=1))
    cut = full[full["rater"] == "r001"].copy()
    cut.loc[cut.index[0], "shown_at"] = pd.NaT
    again = contract.validate(cut)
    assert list(again.index) == list(range(len(cut)))
    assert again["shown_at"].isna().sum() == 1
    assert (again["answered_at"].to_numpy() == cut["answered_at"].to_numpy()).all()
