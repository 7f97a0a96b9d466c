"""The MOS report: the analysis of a validated ratings frame, rendered as Markdown and figures.

``analyse`` runs every statistic on a frame from ``survey.ratings.validate`` (it never reads a
file or a database: ``python -m survey.report`` and the admin tab hand it one); ``report_markdown``
renders the text, ``draw_figures`` the figures as matplotlib figures, ``write_report`` both plus
CSV tables into a folder. Rater screening is applied by default and always reported (see
survey.analysis.screening for the rule).
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image as PILImage

from survey.analysis import reliability, screening, stats
from survey.analysis.codes import code_ratings
from survey.ratings import HIDDEN_DUPLICATE, SCORE_LABELS, duplicated, first_showings, method_order

BT500_READING_TEXT = {
    "sample": "sample SD (N - 1), stimuli where all raters agree skipped",
    "population": "population SD (N), ties counted on both sides (as SUREAL)",
}
FIGURES = ("distributions.png", "mos_intervals.png", "ranks.png", "rater_bias.png")
CAPTIONS = {
    "distributions.png": "Score distribution per method, mean marked in red (as the paper's Fig. 5).",
    "mos_intervals.png": "MOS per method with the naive and the clustered 95% intervals.",
    "ranks.png": "Mean rank per method across raters, 1 = best (as the paper's Fig. 10).",
    "rater_bias.png": "Per-rater bias and inconsistency (P.913 subject model); rejected raters in red.",
}
FIGURE_DPI = 90
# Columns of the report's CSV tables that hold names: read back as text (read_table).
TEXT_COLUMNS = ("method", "method_a", "method_b", "rater", "image", "closest_rater", "reasons",
                "note", "raters_used")


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
    bt500_reading: str = "sample"
    merged_duplicates: int = 0
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def analyse(ratings: pd.DataFrame, *, study: str = "", screening_on: bool = True,
            resamples: int = 2000, seed: int = 0, bt500_reading: str = "sample") -> Analysis:
    """Every statistic of the report, on a frame from ``survey.ratings.validate``.

    Rows repeating an earlier row's rater, image, method and showing (``DUPLICATE_KEY``) are
    counted once, the first kept, and the summary says how many were merged.
    """
    started = time.perf_counter()
    notes = []
    twice = duplicated(ratings)
    merged = int(twice.sum())
    if merged:
        ratings = ratings[~twice]
    first = first_showings(ratings)
    if first.empty:
        notes.append("no ratings (first showings) to analyse: nothing below can be computed")
    methods = method_order(first["method"].unique())
    raters = screening.screen_raters(ratings, bt500_reading=bt500_reading) if len(first) else pd.DataFrame(
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
    coded = code_ratings(kept)
    if coded.scores.size:
        model = screening.p913_model(coded)
        psi = pd.Series(model["stimulus_scores"], index=coded.stimulus_keys())
        p913_mos = psi.groupby(level="method").mean().to_dict()
    return Analysis(
        study=study, ratings=ratings, kept=kept, screening_on=screening_on, raters=raters,
        mos=mos, mos_all=mos_all, pairwise=pairwise, ranks=ranks, stimuli=stimuli,
        alpha=alpha, sos_a=reliability.sos_parameter(stimuli) if len(stimuli) else math.nan,
        retest=reliability.retest_summary(kept), p913_mos=p913_mos, resamples=resamples,
        seed=seed, bt500_reading=bt500_reading, merged_duplicates=merged, notes=notes,
        seconds=time.perf_counter() - started,
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


def interval(lo, hi, small_sample: bool = False) -> str:
    """An interval as text; "n/a" when it could not be computed, a dagger when it rests on
    fewer than stats.SMALL_SAMPLE raters or images (the table's note says which)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "n/a"
    return f"[{lo:.2f}, {hi:.2f}]" + (" †" if small_sample else "")


SMALL_SAMPLE_FOOTNOTE = (f"† fewer than {stats.SMALL_SAMPLE} raters or images: a rough interval "
                         "(few clusters), kept inside the 1..5 scale; see the note.")


def mos_markdown(mos: pd.DataFrame, p913: dict | None = None) -> str:
    header = ["method", "ratings", "raters", "images", "MOS", "clustered 95% CI (headline)",
              "naive t 95% CI", "random-effects 95% CI"]
    if p913 is not None:
        header.append("P.913 MOS (bias removed)")
    rows = []
    for _, r in mos.iterrows():
        small = bool(r["small_sample"])
        row = [r["method"], fmt(r["n_ratings"]), fmt(r["n_raters"]), fmt(r["n_images"]),
               fmt(r["mos"]), interval(r["boot_lo"], r["boot_hi"], small),
               interval(r["naive_lo"], r["naive_hi"], small), interval(r["re_lo"], r["re_hi"], small)]
        if p913 is not None:
            row.append(fmt(p913.get(r["method"], math.nan)))
        rows.append(row)
    text = markdown_table(header, rows)
    notes = [f"- {r['method']}: {r['note']}" for _, r in mos.iterrows() if r["note"]]
    if mos["small_sample"].astype(bool).any():
        notes.append(SMALL_SAMPLE_FOOTNOTE)
    return text + ("\n" + "\n".join(notes) + "\n" if notes else "")


def summary_text(a: Analysis) -> str:
    """The per-method table printed on the terminal and shown in the admin tab."""
    lines = [f"{'method':12s} {'n':>7s} {'MOS':>5s}  {'clustered 95% CI':18s} {'naive 95% CI':18s}"]
    for _, r in a.mos.iterrows():
        small = bool(r["small_sample"])
        lines.append(f"{r['method']:12s} {r['n_ratings']:7d} {fmt(r['mos']):>5s}  "
                     f"{interval(r['boot_lo'], r['boot_hi'], small):18s} "
                     f"{interval(r['naive_lo'], r['naive_hi'], small):18s}")
    if a.mos["small_sample"].astype(bool).any():
        lines.append(SMALL_SAMPLE_FOOTNOTE)
    return "\n".join(lines)


def summary_frame(a: Analysis) -> pd.DataFrame:
    """The headline table as a small DataFrame (for gr.Dataframe)."""
    return pd.DataFrame({
        "method": a.mos["method"],
        "ratings": a.mos["n_ratings"],
        "MOS": a.mos["mos"].round(3),
        "clustered 95% CI": [interval(lo, hi, small) for lo, hi, small in
                             zip(a.mos["boot_lo"], a.mos["boot_hi"], a.mos["small_sample"])],
        "naive 95% CI": [interval(lo, hi, small) for lo, hi, small in
                         zip(a.mos["naive_lo"], a.mos["naive_hi"], a.mos["small_sample"])],
    })


def report_markdown(a: Analysis, *, command: str, figures: list[str], source_note: str = "") -> str:
    first = first_showings(a.ratings)
    kept_first = first_showings(a.kept)
    n_raters = first["rater"].nunique()
    rejected = a.raters[a.raters["rejected"].astype(bool)] if len(a.raters) else a.raters
    out = [f"# Mean Opinion Score report{': ' + a.study if a.study else ''}", ""]
    if source_note:
        out += [source_note, ""]
    out += [f"Made with `{command}` (bootstrap seed {a.seed}, {a.resamples} resamples; "
            f"analysis took {a.seconds:.1f} s).", ""]
    out += ["## Summary (in the spirit of ITU-T P.800.2)", ""]
    methods = method_order(first["method"].unique())
    out += [
        "- Scale: 5-point absolute category rating (ACR): "
        + ", ".join(f"{k} {v}" for k, v in SCORE_LABELS.items()) + ".",
        f"- Raters: {n_raters}; ratings: {len(first)} first showings"
        f" + {int((a.ratings['repeat'] == HIDDEN_DUPLICATE).sum())} hidden test-retest duplicates;"
        f" images: {first['image'].nunique()}; methods: {', '.join(methods) or 'none'}.",
        f"- Screening: {'applied' if a.screening_on else 'NOT applied (--no-screening)'}; "
        f"{len(rejected)} of {n_raters} raters {'rejected' if a.screening_on else 'would be rejected'}"
        + (": " + "; ".join(f"{r} ({row['reasons']})" for r, row in rejected.iterrows()) if len(rejected) else "")
        + f". Analysed: {kept_first['rater'].nunique()} raters, {len(kept_first)} ratings. "
        f"BT.500 observer rejection read as {BT500_READING_TEXT[a.bt500_reading]} "
        f"(--bt500 {a.bt500_reading}).",
        f"- Duplicated rows (the same rater, image, method and showing as an earlier row): "
        f"{a.merged_duplicates}" + (", each counted once (the first kept)." if a.merged_duplicates else "."),
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
        "interaction and is shown for comparison. Every interval is kept inside the 1..5 scale; "
        f"one that rests on fewer than {stats.SMALL_SAMPLE} raters or images is marked †.",
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
            "Default rule (survey/analysis/screening.py): reject a rater when (a) ITU-R BT.500 "
            f"observer rejection applies ({BT500_READING_TEXT[a.bt500_reading]}), or (b) the "
            f"Pearson correlation of their scores with the "
            f"leave-one-out MOS is below {screening.MIN_CORRELATION} (or undefined because all "
            f"their scores are equal) where the stimuli they scored differ by >= "
            f"{screening.MIN_MOS_SPREAD:g} point in MOS, or (c) HR is rated below nearest on more than "
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
            "(both are flagged; like (b), only where the stimuli differ by a point of MOS). P.913 bias and inconsistency are reported, not used to reject.", ""]
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
        for name in figures:
            out += [f"![{CAPTIONS[name]}]({name})", "", CAPTIONS[name], ""]
    out += ["## Files", "",
            "mos.csv (per method, screened and all raters), pairwise.csv, raters.csv, stimuli.csv. "
            "Read them with survey.analysis.report.read_table, which keeps every name as text "
            "(pandas' default reader reads some names, such as NA or null, as missing values)."]
    return "\n".join(out) + "\n"


# --- figures --------------------------------------------------------------------------


def draw_figures(a: Analysis) -> dict[str, Figure]:
    """The figures that can be drawn from this data (by file name); each is skipped when it
    cannot. Plain matplotlib Figures: no pyplot state, safe in a server's threads."""
    made = {}
    first = first_showings(a.kept)
    methods = [m for m in a.mos["method"] if m in set(first["method"])]
    if methods:
        share = np.zeros((5, len(methods)))
        for k, m in enumerate(methods):
            scores = first.loc[first["method"] == m, "score"].to_numpy()
            share[:, k] = np.bincount(scores, minlength=6)[1:6] / scores.size
        fig, ax = _figure(figsize=(1.2 * len(methods) + 2, 3.6))
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
        made["distributions.png"] = fig

        fig, ax = _figure(figsize=(1.2 * len(methods) + 2, 3.6))
        x = np.arange(len(a.mos))
        mos = a.mos["mos"].to_numpy(dtype=float)
        small = a.mos["small_sample"].to_numpy(dtype=bool)
        for offset, lo, hi, label, color in (
            (-0.12, "naive_lo", "naive_hi", "naive t-interval", "tab:gray"),
            (0.12, "boot_lo", "boot_hi", "clustered bootstrap (headline)", "tab:blue"),
        ):
            low, high = a.mos[lo].to_numpy(dtype=float), a.mos[hi].to_numpy(dtype=float)
            drawn = np.isfinite(mos) & np.isfinite(low) & np.isfinite(high)
            # Filled: a sound interval; hollow: few raters or images; an interval that could
            # not be computed is never drawn as a point (which would read as a certain MOS).
            for keep, face in ((drawn & ~small, color), (drawn & small, "white")):
                if keep.any():
                    ax.errorbar(x[keep] + offset, mos[keep],
                                yerr=np.vstack([mos - low, high - mos])[:, keep], fmt="o",
                                capsize=4, color=color, mfc=face,
                                label=label if face == color or not (drawn & ~small).any() else None)
            for k in np.flatnonzero(np.isfinite(mos) & ~drawn):
                ax.annotate("n/a", (x[k] + offset, 1.08), ha="center", fontsize=7, color=color)
        if small.any():
            ax.set_title(f"hollow: fewer than {stats.SMALL_SAMPLE} raters or images", fontsize=8)
        ax.set_xticks(x, a.mos["method"])
        ax.set_ylim(1, 5)
        ax.set_ylabel("MOS (95% interval)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        fig.tight_layout()
        made["mos_intervals.png"] = fig

    ranks = a.ranks.dropna(axis=1, how="all")
    if ranks.shape[0] >= 1 and ranks.shape[1] >= 2:
        fig, ax = _figure(figsize=(1.2 * ranks.shape[1] + 2, 3.6))
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
        made["ranks.png"] = fig

    raters = a.raters.dropna(subset=["p913_bias"]) if len(a.raters) else a.raters
    if len(raters) >= 2:
        order = raters.sort_values("p913_bias")
        colors = ["tab:red" if r else "tab:blue" for r in order["rejected"]]
        fig, ax = _figure(figsize=(max(4.0, 0.18 * len(order) + 2), 3.6))
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
        made["rater_bias.png"] = fig
    return made




def _figure(figsize: tuple[float, float]):
    fig = Figure(figsize=figsize)
    return fig, fig.subplots()


def write_figures(a: Analysis, out_dir: Path) -> list[str]:
    """Draw the figures into ``out_dir`` as PNGs; their file names."""
    figures = draw_figures(a)
    for name, fig in figures.items():
        fig.savefig(out_dir / name, dpi=FIGURE_DPI)
    return list(figures)


def figure_images(a: Analysis) -> list[tuple[PILImage.Image, str]]:
    """The figures as in-memory images with their captions (the admin tab's gallery)."""
    out = []
    for name, fig in draw_figures(a).items():
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=FIGURE_DPI)
        buffer.seek(0)
        image = PILImage.open(buffer)
        image.load()
        out.append((image, CAPTIONS[name]))
    return out


def read_table(path: str | Path) -> pd.DataFrame:
    """One of the report's CSV tables with its name columns as text: pandas' default reader
    would turn a method or rater called "nan", "NA" or "null" into a missing value."""
    header = pd.read_csv(path, nrows=0).columns
    names = {c: str for c in header if c in TEXT_COLUMNS}
    table = pd.read_csv(path, dtype=names, keep_default_na=False,
                        na_values={c: [""] for c in header if c not in names})
    return table


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
