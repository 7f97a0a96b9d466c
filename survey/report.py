"""The MOS report: ``python -m survey.report [--db URL | --csv FILE] [--out results/mos]``.

Writes report.md, CSV tables (mos.csv, pairwise.csv, raters.csv, stimuli.csv) and PNG
figures into --out and prints the per-method summary. Rater screening is applied by
default and always reported (see survey.screening for the rule); --no-screening keeps
every rater. ``--benchmark`` times the whole analysis on a simulated million ratings.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from survey import reliability, screening, stats

REPO = Path(__file__).resolve().parent.parent
FIGURES = ("distributions.png", "mos_intervals.png", "ranks.png", "rater_bias.png")


def default_db_url() -> str:
    from survey.db import default_db_url as study_default  # one rule for every command

    return study_default()


def read_csv(path: str | Path) -> pd.DataFrame:
    """A ratings CSV, validated by ``stats.clean_ratings`` (clear messages, never a traceback)."""
    path = Path(path)
    if not path.is_file():
        raise stats.RatingsError(f"no such ratings file: {path}")
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise stats.RatingsError(f"{path} is empty: expected a header line with the columns "
                                 f"{', '.join(stats.COLUMNS)}") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise stats.RatingsError(f"{path} is not a readable CSV file ({error})") from None
    raw = raw.replace("", np.nan)
    return stats.clean_ratings(raw)


def read_db(db_url: str, study: str | None) -> pd.DataFrame:
    # Imported here: the survey app's database layer is optional for a CSV report.
    from survey.db import display_url, sqlite_path
    from survey.export import ratings_frame

    try:
        path = sqlite_path(db_url)
        # Reading must not create an empty database where none was.
        if path is not None and not path.is_file():
            raise stats.RatingsError(f"cannot read ratings from {display_url(db_url)}: no database file at "
                                     f"{path} (run the study first, or pass --csv)")
        frame = ratings_frame(db_url, study)
    except stats.RatingsError:
        raise
    except Exception as error:  # the database layer raises many kinds; the user needs the text
        raise stats.RatingsError(f"cannot read ratings from {display_url(db_url)}: {error}") from None
    return stats.clean_ratings(frame)


def select_study(ratings: pd.DataFrame, study: str | None) -> tuple[pd.DataFrame, str]:
    studies = sorted(s for s in ratings["study"].unique() if s)
    if study is not None:
        ratings = ratings[ratings["study"] == study]
        if ratings.empty and studies:
            raise stats.RatingsError(f"no ratings for study {study!r}; studies present: "
                                     f"{', '.join(studies)}")
        return ratings, study
    if len(studies) > 1:
        raise stats.RatingsError(f"the ratings hold several studies ({', '.join(studies)}); "
                                 "choose one with --study")
    return ratings, studies[0] if studies else ""


@dataclass
class Analysis:
    """Everything the report shows; tables are plain DataFrames, also written as CSV."""

    study: str
    ratings: pd.DataFrame
    kept: pd.DataFrame
    screening_on: bool
    raters: pd.DataFrame
    mos: pd.DataFrame
    mos_all: pd.DataFrame
    pairwise: pd.DataFrame
    ranks: pd.DataFrame
    stimuli: pd.DataFrame
    alpha: float
    sos_a: float
    retest: dict
    p913_mos: dict
    resamples: int
    seed: int
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def analyse(ratings: pd.DataFrame, *, study: str = "", screening_on: bool = True,
            resamples: int = 2000, seed: int = 0) -> Analysis:
    started = time.perf_counter()
    notes = []
    first = ratings[ratings["repeat"] == 0]
    if first.empty:
        notes.append("no ratings (first showings) to analyse: nothing below can be computed")
    methods = stats.method_order(first["method"].unique())
    raters = screening.screen_raters(ratings) if len(first) else pd.DataFrame(
        columns=["rejected", "reasons"])
    rejected = set(raters.index[raters["rejected"].astype(bool)]) if len(raters) else set()
    kept = ratings[~ratings["rater"].isin(rejected)] if screening_on else ratings
    if screening_on and rejected and kept.empty:
        notes.append("screening rejected every rater; the tables after screening are empty")
    mos = stats.mos_table(kept, methods=methods, resamples=resamples, seed=seed)
    mos_all = stats.mos_table(ratings, methods=methods, resamples=resamples, seed=seed)
    pairwise = stats.pairwise_table(kept, methods=methods, resamples=resamples, seed=seed)
    ranks = stats.mean_ranks(kept, methods=methods)
    stimuli = reliability.stimulus_table(kept)
    counts = reliability.stimulus_counts(kept)
    alpha = reliability.krippendorff_alpha(counts, metric="ordinal") if len(counts) else math.nan
    p913_mos = {}
    kept_first = kept[kept["repeat"] == 0]
    if len(kept_first):
        coded = screening.code_ratings(kept)
        model = screening.p913_model(coded)
        keys = kept_first.groupby(["image", "method"], sort=False).size().index
        psi = pd.Series(model["stimulus_scores"], index=keys)
        p913_mos = psi.groupby(level="method").mean().to_dict()
    return Analysis(
        study=study, ratings=ratings, kept=kept, screening_on=screening_on, raters=raters,
        mos=mos, mos_all=mos_all, pairwise=pairwise, ranks=ranks, stimuli=stimuli,
        alpha=alpha, sos_a=reliability.sos_parameter(stimuli) if len(stimuli) else math.nan,
        retest=reliability.retest_summary(kept), p913_mos=p913_mos, resamples=resamples,
        seed=seed, notes=notes, seconds=time.perf_counter() - started,
    )


# --- text -----------------------------------------------------------------------------


def fmt(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else ""
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{value:.{digits}f}"
    return str(value)


def fmt_p(value) -> str:
    if not isinstance(value, (float, np.floating)) or not math.isfinite(value):
        return "n/a"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return "_(none)_\n"
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def interval(lo, hi) -> str:
    return "n/a" if not (math.isfinite(lo) and math.isfinite(hi)) else f"[{lo:.2f}, {hi:.2f}]"


def mos_markdown(mos: pd.DataFrame, p913: dict | None = None) -> str:
    header = ["method", "ratings", "raters", "images", "MOS", "clustered 95% CI (headline)",
              "naive t 95% CI", "random-effects 95% CI"]
    if p913 is not None:
        header.append("P.913 MOS (bias removed)")
    rows = []
    for _, r in mos.iterrows():
        row = [r["method"], fmt(r["n_ratings"]), fmt(r["n_raters"]), fmt(r["n_images"]),
               fmt(r["mos"]), interval(r["boot_lo"], r["boot_hi"]),
               interval(r["naive_lo"], r["naive_hi"]), interval(r["re_lo"], r["re_hi"])]
        if p913 is not None:
            row.append(fmt(p913.get(r["method"], math.nan)))
        rows.append(row)
    text = markdown_table(header, rows)
    notes = [f"- {r['method']}: {r['note']}" for _, r in mos.iterrows() if r["note"]]
    return text + ("\n" + "\n".join(notes) + "\n" if notes else "")


def summary_text(a: Analysis) -> str:
    """The per-method table printed on the terminal and shown in the admin tab."""
    lines = [f"{'method':12s} {'n':>7s} {'MOS':>5s}  {'clustered 95% CI':18s} {'naive 95% CI':18s}"]
    for _, r in a.mos.iterrows():
        lines.append(f"{r['method']:12s} {r['n_ratings']:7d} {fmt(r['mos']):>5s}  "
                     f"{interval(r['boot_lo'], r['boot_hi']):18s} "
                     f"{interval(r['naive_lo'], r['naive_hi']):18s}")
    return "\n".join(lines)


def summary_frame(a: Analysis) -> pd.DataFrame:
    """The headline table as a small DataFrame (for gr.Dataframe)."""
    return pd.DataFrame({
        "method": a.mos["method"],
        "ratings": a.mos["n_ratings"],
        "MOS": a.mos["mos"].round(3),
        "clustered 95% CI": [interval(lo, hi) for lo, hi in zip(a.mos["boot_lo"], a.mos["boot_hi"])],
        "naive 95% CI": [interval(lo, hi) for lo, hi in zip(a.mos["naive_lo"], a.mos["naive_hi"])],
    })


def report_markdown(a: Analysis, *, command: str, figures: list[str], source_note: str = "") -> str:
    first = a.ratings[a.ratings["repeat"] == 0]
    kept_first = a.kept[a.kept["repeat"] == 0]
    n_raters = first["rater"].nunique()
    rejected = a.raters[a.raters["rejected"].astype(bool)] if len(a.raters) else a.raters
    out = [f"# Mean Opinion Score report{': ' + a.study if a.study else ''}", ""]
    if source_note:
        out += [source_note, ""]
    out += [f"Made with `{command}` (bootstrap seed {a.seed}, {a.resamples} resamples; "
            f"analysis took {a.seconds:.1f} s).", ""]
    out += ["## Summary (in the spirit of ITU-T P.800.2)", ""]
    methods = stats.method_order(first["method"].unique())
    out += [
        "- Scale: 5-point absolute category rating (ACR): "
        + ", ".join(f"{k} {v}" for k, v in stats.ACR_LABELS.items()) + ".",
        f"- Raters: {n_raters}; ratings: {len(first)} first showings"
        f" + {int((a.ratings['repeat'] > 0).sum())} hidden test-retest duplicates;"
        f" images: {first['image'].nunique()}; methods: {', '.join(methods) or 'none'}.",
        f"- Screening: {'applied' if a.screening_on else 'NOT applied (--no-screening)'}; "
        f"{len(rejected)} of {n_raters} raters {'rejected' if a.screening_on else 'would be rejected'}"
        + (": " + "; ".join(f"{r} ({row['reasons']})" for r, row in rejected.iterrows()) if len(rejected) else "")
        + f". Analysed: {kept_first['rater'].nunique()} raters, {len(kept_first)} ratings.",
        "- Interval: the headline is the two-way clustered bootstrap 95% interval (raters and "
        "images resampled together). Ratings cluster by rater (some raters score everything "
        "higher) and by image (some images look better under every method); the naive "
        "t-interval treats every rating as independent and is far too narrow. The clustered "
        f"interval is MOS +- t(0.975, k - 1) x bootstrap SE ({a.resamples} resamples), "
        "k = min(raters, images), the SE corrected for the pigeonhole bootstrap's triple "
        "counting of the rater x image residual and for its plug-in (k - 1) / k shrinkage, "
        "and never below the naive SE. "
        "In simulation (survey.simulate, 400 studies of 26 raters x 20 images x 5 methods, "
        "tests/test_stats.py) it covers the true mean 94.7 % of the time, the naive interval "
        "51 %. The random-effects interval (same t quantile) ignores image x method "
        "interaction and is shown for comparison.",
        "- Only first showings enter the MOS; hidden duplicates are used for test-retest only.",
    ]
    out += [f"- Note: {n}" for n in a.notes]
    out += ["", f"## MOS per method ({'after screening' if a.screening_on else 'all raters'})", ""]
    out += [mos_markdown(a.mos, a.p913_mos)]
    components = a.mos.attrs.get("variance_components", {})
    if components:
        out += ["Random-effects model score ~ method + (1|rater) + (1|image), variance "
                "components by moment equations: "
                + ", ".join(f"{k} {fmt(v, 3)}" for k, v in components.items())
                + (" (n/a: needs >= 2 raters and >= 2 images)"
                   if any(math.isnan(v) for v in components.values()) else "")
                + ". P.913 MOS: mean over images of the stimulus scores of the ITU-T P.913 "
                "subject model (rater bias and inconsistency removed).", ""]
    if a.screening_on and len(rejected):
        out += ["### MOS per method, all raters (without screening)", "", mos_markdown(a.mos_all)]
    elif not a.screening_on and len(rejected):
        screened = a.ratings[~a.ratings["rater"].isin(set(rejected.index))]
        table = stats.mos_table(screened, methods=methods, resamples=a.resamples, seed=a.seed)
        out += ["### MOS per method, with the default screening", "", mos_markdown(table)]
    out += ["## Pairwise comparisons", "",
            "Two-sided Wilcoxon signed-rank tests on per-rater mean scores (the paper's test) "
            "and on per-image mean scores, Holm-corrected over all pairs. Effect sizes: the "
            "median paired per-rater difference A - B with its bootstrap 95% interval, and "
            "P(A > B): the probability that a random rating of A exceeds one of B, ties "
            "counted half.", ""]
    rows = []
    for _, r in a.pairwise.iterrows():
        rows.append([f"{r['method_a']} vs {r['method_b']}", fmt(r["n_raters"]),
                     fmt(r["median_diff"]), interval(r["median_diff_lo"], r["median_diff_hi"]),
                     fmt_p(r["p_raters"]), fmt_p(r["holm_raters"]), fmt(r["n_images"]),
                     fmt_p(r["p_images"]), fmt_p(r["holm_images"]), fmt(r["p_a_beats_b"]),
                     r["note"]])
    out += [markdown_table(["pair", "raters", "median diff", "95% CI", "p (raters)",
                            "Holm p (raters)", "images", "p (images)", "Holm p (images)",
                            "P(A > B)", "note"], rows)]
    out += ["## Rater screening", "",
            "Default rule (survey/screening.py): reject a rater when (a) ITU-R BT.500 observer "
            f"rejection applies, or (b) the Pearson correlation of their scores with the "
            f"leave-one-out MOS is below {screening.MIN_CORRELATION} (or undefined because all "
            f"their scores are equal), or (c) HR is rated below nearest on more than "
            f"{screening.MAX_GOLD_FAILURE_SHARE:.0%} of >= {screening.MIN_GOLD_IMAGES} gold "
            f"images, or (d) the test-retest mean absolute difference exceeds "
            f"{screening.MAX_RETEST_DIFFERENCE} over >= {screening.MIN_DUPLICATES} duplicates. "
            "Signs of a script (ratings stuffing): (e) a median response time below "
            f"{screening.MIN_MEDIAN_RESPONSE_MS} ms, or (f) response times so regular that their "
            f"coefficient of variation is below {screening.MIN_RESPONSE_CV} (both over >= "
            f"{screening.MIN_TIMED_RATINGS} timed ratings), or (g) one score per method on "
            f">= {screening.MAX_METHOD_PATTERN:.0%} of their ratings (over >= "
            f"{screening.MIN_PATTERN_METHODS} methods rated >= "
            f"{screening.MIN_PATTERN_RATINGS_PER_METHOD} times: the scores follow the method, not "
            f"the image), or (h) the same scores as another rater on >= "
            f"{screening.MAX_AGREEMENT:.0%} of >= {screening.MIN_SHARED_STIMULI} shared stimuli "
            "(both are flagged). P.913 bias and inconsistency are reported, not used to reject.", ""]
    rows = []
    for rater, r in a.raters.iterrows():
        rows.append([str(rater), fmt(r["n_ratings"]), f"{fmt(r['bt500_p'])}/{fmt(r['bt500_q'])}",
                     fmt(r["mos_correlation"]),
                     f"{fmt(r['gold_failures'])}/{fmt(r['gold_images'])}",
                     f"{fmt(r['retest_mad'])} ({fmt(r['duplicates'])})",
                     f"{fmt(r['median_response_ms'], 0)} ({fmt(r['response_cv'])})",
                     fmt(r["method_pattern"]),
                     f"{fmt(r['closest_agreement'])} ({r['closest_rater'] or 'n/a'}, {fmt(r['shared_stimuli'])})",
                     fmt(r["p913_bias"]), fmt(r["p913_inconsistency"]),
                     "REJECT: " + r["reasons"] if r["rejected"] else "kept"])
    out += [markdown_table(["rater", "ratings", "BT.500 P/Q", "r with MOS", "gold failures",
                            "retest mean abs. diff (pairs)", "median response ms (CV)",
                            "one score per method", "closest rater: agreement (who, shared)",
                            "P.913 bias", "P.913 inconsistency", "decision"], rows)]
    r = a.retest
    out += ["## Reliability", "",
            f"- Krippendorff's alpha (ordinal, units = stimuli): {fmt(a.alpha, 3)}.",
            f"- Test-retest: {r['duplicates']} hidden duplicates of analysed raters; mean absolute difference "
            f"{fmt(r['mean_abs_diff'])}, exact agreement {fmt(r['exact_agreement'])}, within "
            f"one point {fmt(r['within_one'])}, Pearson r {fmt(r['pearson_r'])}.",
            f"- SOS hypothesis: SOS^2 = a (-MOS^2 + 6 MOS - 5) fitted over "
            f"{int((a.stimuli['n'] >= 2).sum()) if len(a.stimuli) else 0} stimuli: "
            f"a = {fmt(a.sos_a, 3)}.",
            "- Per-image MOS with t-intervals over raters: stimuli.csv.", ""]
    if len(a.stimuli):
        spread = a.stimuli.groupby("method")["mos"].agg(["min", "median", "max"])
        spread = spread.reindex([m for m in methods if m in spread.index])
        out += [markdown_table(["method", "lowest image MOS", "median image MOS", "highest image MOS"],
                               [[m, fmt(s["min"]), fmt(s["median"]), fmt(s["max"])]
                                for m, s in spread.iterrows()])]
    if figures:
        out += ["## Figures", ""]
        captions = {
            "distributions.png": "Score distribution per method, mean marked in red (as the paper's Fig. 5).",
            "mos_intervals.png": "MOS per method with the naive and the clustered 95% intervals.",
            "ranks.png": "Mean rank per method across raters, 1 = best (as the paper's Fig. 10).",
            "rater_bias.png": "Per-rater bias and inconsistency (P.913 subject model); rejected raters in red.",
        }
        for name in figures:
            out += [f"![{captions[name]}]({name})", "", captions[name], ""]
    out += ["## Files", "",
            "mos.csv (per method, screened and all raters), pairwise.csv, raters.csv, stimuli.csv."]
    return "\n".join(out) + "\n"


# --- figures --------------------------------------------------------------------------


def write_figures(a: Analysis, out_dir: Path) -> list[str]:
    """The figures that can be drawn from this data; each is skipped when it cannot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    first = a.kept[a.kept["repeat"] == 0]
    methods = [m for m in a.mos["method"] if m in set(first["method"])]
    if methods:
        share = np.zeros((5, len(methods)))
        for k, m in enumerate(methods):
            scores = first.loc[first["method"] == m, "score"].to_numpy()
            share[:, k] = np.bincount(scores, minlength=6)[1:6] / scores.size
        fig, ax = plt.subplots(figsize=(1.2 * len(methods) + 2, 3.6))
        image = ax.imshow(share, origin="lower", cmap="viridis", aspect="auto",
                          extent=(-0.5, len(methods) - 0.5, 0.5, 5.5), vmin=0)
        means = [first.loc[first["method"] == m, "score"].mean() for m in methods]
        ax.plot(range(len(methods)), means, "s", color="red", label="mean")
        ax.set_xticks(range(len(methods)), methods)
        ax.set_yticks(range(1, 6))
        ax.set_ylabel("score")
        ax.legend(loc="upper left", fontsize=8)
        fig.colorbar(image, ax=ax, label="share of ratings")
        fig.tight_layout()
        fig.savefig(out_dir / "distributions.png", dpi=90)
        plt.close(fig)
        made.append("distributions.png")

        fig, ax = plt.subplots(figsize=(1.2 * len(methods) + 2, 3.6))
        x = np.arange(len(a.mos))
        for offset, lo, hi, label, color in (
            (-0.12, "naive_lo", "naive_hi", "naive t-interval", "tab:gray"),
            (0.12, "boot_lo", "boot_hi", "clustered bootstrap (headline)", "tab:blue"),
        ):
            mos = a.mos["mos"].to_numpy(dtype=float)
            low = mos - a.mos[lo].to_numpy(dtype=float)
            high = a.mos[hi].to_numpy(dtype=float) - mos
            ax.errorbar(x + offset, mos, yerr=np.nan_to_num(np.vstack([low, high])), fmt="o",
                        capsize=4, color=color, label=label)
        ax.set_xticks(x, a.mos["method"])
        ax.set_ylim(1, 5)
        ax.set_ylabel("MOS (95% interval)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / "mos_intervals.png", dpi=90)
        plt.close(fig)
        made.append("mos_intervals.png")

    ranks = a.ranks.dropna(axis=1, how="all")
    if ranks.shape[0] >= 1 and ranks.shape[1] >= 2:
        fig, ax = plt.subplots(figsize=(1.2 * ranks.shape[1] + 2, 3.6))
        rng = np.random.default_rng(0)
        for k, m in enumerate(ranks.columns):
            values = ranks[m].dropna().to_numpy()
            ax.plot(k + rng.uniform(-0.15, 0.15, values.size), values, ".", color="tab:gray",
                    alpha=0.5)
            ax.plot([k - 0.3, k + 0.3], [values.mean()] * 2, color="tab:red", lw=2)
        ax.set_xticks(range(ranks.shape[1]), ranks.columns)
        ax.set_ylabel("rank per rater (1 = best); red: mean")
        ax.invert_yaxis()
        fig.tight_layout()
        fig.savefig(out_dir / "ranks.png", dpi=90)
        plt.close(fig)
        made.append("ranks.png")

    raters = a.raters.dropna(subset=["p913_bias"]) if len(a.raters) else a.raters
    if len(raters) >= 2:
        order = raters.sort_values("p913_bias")
        colors = ["tab:red" if r else "tab:blue" for r in order["rejected"]]
        fig, ax = plt.subplots(figsize=(max(4.0, 0.18 * len(order) + 2), 3.6))
        y = np.arange(len(order))
        ax.errorbar(y, order["p913_bias"], yerr=order["p913_inconsistency"], fmt="none",
                    ecolor="lightgray")
        ax.scatter(y, order["p913_bias"], c=colors, s=14, zorder=3)
        ax.axhline(0, color="black", lw=0.5)
        if len(order) <= 40:
            ax.set_xticks(y, order.index, rotation=90, fontsize=6)
        else:
            ax.set_xticks([])
            ax.set_xlabel(f"{len(order)} raters, sorted by bias")
        ax.set_ylabel("bias (bar: +- inconsistency)")
        fig.tight_layout()
        fig.savefig(out_dir / "rater_bias.png", dpi=90)
        plt.close(fig)
        made.append("rater_bias.png")
    return made


def write_report(a: Analysis, out_dir: Path, *, command: str, source_note: str = "") -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in FIGURES:
        (out_dir / name).unlink(missing_ok=True)  # never leave a stale figure from another run
    mos = pd.concat([a.mos.assign(raters_used="screened" if a.screening_on else "all"),
                     a.mos_all.assign(raters_used="all")]) if a.screening_on else a.mos.assign(
        raters_used="all")
    mos.to_csv(out_dir / "mos.csv", index=False, float_format="%.4f")
    a.pairwise.to_csv(out_dir / "pairwise.csv", index=False, float_format="%.6g")
    a.raters.to_csv(out_dir / "raters.csv", float_format="%.4f")
    a.stimuli.to_csv(out_dir / "stimuli.csv", index=False, float_format="%.4f")
    figures = write_figures(a, out_dir)
    path = out_dir / "report.md"
    path.write_text(report_markdown(a, command=command, figures=figures, source_note=source_note))
    return path


def benchmark(*, raters: int = 1000, images: int = 200, resamples: int = 2000) -> str:
    from survey.simulate import simulate_study

    ratings = stats.clean_ratings(simulate_study(
        n_raters=raters, n_images=images, seed=1, outlier_share=0.05, retest_share=0.0))
    started = time.perf_counter()
    a = analyse(ratings, resamples=resamples, seed=0)
    analysed = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as out_dir:
        write_report(a, Path(out_dir), command="benchmark")
    seconds = time.perf_counter() - started
    return (f"{len(ratings):,} ratings ({raters} raters x {images * 5} stimuli, {len(a.mos)} "
            f"methods): analysis (screening, {resamples} bootstrap resamples, pairwise tests, "
            f"reliability) {analysed:.1f} s; with the report's CSVs and figures {seconds:.1f} s; "
            f"{os.cpu_count()} CPU cores")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Mean Opinion Score report of a rating study.")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--db", help="database URL (default: env SURVEY_DB_URL, else var/study.sqlite)")
    source.add_argument("--csv", type=Path, help="ratings CSV in the agreed format")
    parser.add_argument("--study", help="study name (needed when the data holds several)")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "mos")
    parser.add_argument("--no-screening", action="store_true", help="keep every rater")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (>= 2000 advised)")
    parser.add_argument("--note", default="", help="a line written at the top of the report")
    parser.add_argument("--benchmark", action="store_true",
                        help="time the analysis of a simulated million ratings and exit")
    args = parser.parse_args(argv)
    if args.benchmark:
        print(benchmark(resamples=args.resamples))
        return 0
    if args.resamples < 100:
        parser.error("--resamples must be at least 100")
    shown = list(sys.argv[1:] if argv is None else argv)
    if "--note" in shown[:-1]:  # the note is printed above the command already
        shown[shown.index("--note") + 1] = "..."
    command = "python -m survey.report " + " ".join(shlex.quote(x) for x in shown)
    try:
        if args.csv is not None:
            ratings = read_csv(args.csv)
        else:
            ratings = read_db(args.db or default_db_url(), args.study)
        ratings, study = select_study(ratings, args.study)
    except stats.RatingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if ratings.empty:
        print("warning: no ratings to analyse; the report says so", file=sys.stderr)
    a = analyse(ratings, study=study, screening_on=not args.no_screening,
                resamples=args.resamples, seed=args.seed)
    path = write_report(a, args.out, command=command.strip(), source_note=args.note)
    print(summary_text(a))
    rejected = int(a.raters["rejected"].astype(bool).sum()) if len(a.raters) else 0
    print(f"screening {'on' if a.screening_on else 'off'}: {rejected} rater(s) flagged")
    if a.screening_on and len(a.raters) and rejected == len(a.raters):
        print("every rater was rejected by screening, so no MOS is computed; the report says why "
              "for each, and --no-screening shows the unscreened figures")
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
