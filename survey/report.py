"""The MOS report: ``python -m survey.report [--db URL | --csv FILE] [--out results/mos]``.

Writes report.md, CSV tables (mos.csv, pairwise.csv, raters.csv, stimuli.csv) and PNG figures
into --out and prints the per-method summary. Rater screening is applied by default and always
reported (survey.analysis.screening); --no-screening keeps every rater. ``--benchmark`` times the
whole analysis on a simulated million ratings.

This command is where the two rooms meet: ratings come from a CSV (``survey.ratings.read_csv``)
or from the study's database (``survey.study.export.read_ratings``, the storage side), as a
validated frame that ``survey.analysis.report`` analyses without knowing where it came from.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

from survey import ratings as contract
from survey.analysis.report import analyse, summary_text, write_report
from survey.analysis.screening import BT500_READINGS
from survey.analysis.simulate import simulate_study

REPO = Path(__file__).resolve().parent.parent


def benchmark(*, raters: int = 1000, images: int = 200, resamples: int = 2000) -> str:
    """Time the analysis of a simulated study of ``raters`` x ``images`` x 5 methods."""
    ratings = contract.validate(simulate_study(
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


def read_database(db_url: str | None, study: str | None):
    # The study's storage layer (SQLAlchemy) is loaded only for a database report.
    from survey.study.db import default_db_url
    from survey.study.export import read_ratings

    return read_ratings(db_url or default_db_url(), study)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m survey.report",
                                     description="Mean Opinion Score report of a rating study.")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--db", help="database URL (default: env SURVEY_DB_URL, else var/study.sqlite)")
    source.add_argument("--csv", type=Path, help="ratings CSV in the agreed format (plain or .gz)")
    parser.add_argument("--study", help="study name (needed when the data holds several)")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "mos")
    parser.add_argument("--no-screening", action="store_true", help="keep every rater")
    parser.add_argument("--bt500", choices=BT500_READINGS, default="sample",
                        help="reading of BT.500's observer rejection: sample SD with unanimous "
                             "stimuli skipped (default), or population SD with ties on both sides")
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
            ratings = contract.read_csv(args.csv)
        else:
            ratings = read_database(args.db, args.study)
        ratings, study = contract.select_study(ratings, args.study)
    except contract.RatingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if ratings.empty:
        print("warning: no ratings to analyse; the report says so", file=sys.stderr)
    a = analyse(ratings, study=study, screening_on=not args.no_screening,
                resamples=args.resamples, seed=args.seed, bt500_reading=args.bt500)
    try:
        path = write_report(a, args.out, command=command.strip(), source_note=args.note)
    except OSError as error:
        print(f"error: cannot write the report into {args.out}: {error.strerror or error}", file=sys.stderr)
        return 2
    print(summary_text(a))
    rejected = int(a.raters["rejected"].astype(bool).sum()) if len(a.raters) else 0
    print(f"screening {'on' if a.screening_on else 'off'} (BT.500 reading: {a.bt500_reading}): "
          f"{rejected} rater(s) flagged")
    if a.merged_duplicates:
        print(f"{a.merged_duplicates} duplicated row(s) counted once (the first kept)")
    if a.screening_on and len(a.raters) and rejected == len(a.raters):
        print("every rater was rejected by screening, so no MOS is computed; the report says why "
              "for each, and --no-screening shows the unscreened figures")
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
