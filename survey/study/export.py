"""The study's ratings as the contract's table (survey.ratings), and back into the database.

``ratings_frame`` / ``read_ratings`` read a study's ratings out of storage as a validated frame:
that frame is all the analysis ever sees. The CSV format, its columns and its validation are the
contract's (``survey.ratings``); calibration examples are never rated, so never exported, and
``rater`` is the public label, never the secret code.

    python -m survey.export export --study NAME --out ratings.csv
    python -m survey.export import --csv ratings.csv --study NAME
    python -m survey.export backup --out study-backup.sqlite   # the whole SQLite database

``backup`` copies a SQLite database with SQLite's online backup API: a consistent copy even while
the app runs and writes, as one self-contained file (its -wal and -shm are not needed).
PostgreSQL is backed up with ``pg_dump`` (README).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sqlite3
import sys
from pathlib import Path

import pandas as pd
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from survey.ratings import COLUMNS, RatingsError, validate
from survey.ratings import read_csv as read_contract_csv
from survey.ratings import write_csv
from survey.study import store
from survey.study.db import (
    Image,
    Method,
    Presentation,
    Rater,
    Rating,
    RatingSession,
    Stimulus,
    Study,
    default_app_dir,
    default_db_url,
    display_url,
    get_engine,
    one_line,
    sqlite_path,
)

def ratings_frame(db_url: str, study: str | None = None) -> pd.DataFrame:
    """Every rating of a study (or of all studies), in session and position order."""
    engine = get_engine(db_url)
    query = (
        select(
            Study.name, Rater.label, RatingSession.label, Image.name, Method.name, Rating.score,
            Presentation.is_repeat, Rating.shown_at, Rating.answered_at, Rating.response_ms,
        )
        .select_from(Rating)
        .join(Presentation, Rating.presentation_id == Presentation.id)
        .join(RatingSession, Presentation.session_id == RatingSession.id)
        .join(Rater, RatingSession.rater_id == Rater.id)
        .join(Study, RatingSession.study_id == Study.id)
        .join(Stimulus, Presentation.stimulus_id == Stimulus.id)
        .join(Image, Stimulus.image_id == Image.id)
        .join(Method, Stimulus.method_id == Method.id)
        .where(Presentation.is_calibration.is_(False))
        .order_by(Study.name, RatingSession.id, Presentation.position)
    )
    if study is not None:
        store.check_study_name(study)
        query = query.where(Study.name == study)
    with Session(engine) as session:
        if study is not None and session.scalar(select(Study.id).where(Study.name == study)) is None:
            # A mistyped name must not look like a study without ratings.
            raise store.StudyError(f"There is no study named {study!r}; studies: "
                                   f"{', '.join(store.list_studies(engine)) or 'none'}.")
        rows = [tuple(r) for r in session.execute(query)]
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame["repeat"] = frame["repeat"].astype(bool).astype("int64") if len(frame) else frame["repeat"]
    return validate(frame, source=f"the study database {display_url(db_url)}")


def read_ratings(db_url: str, study: str | None = None) -> pd.DataFrame:
    """A study's ratings for the analysis; every problem is a RatingsError with the reason.

    Never creates a database: a SQLite URL whose file is missing is an error, not an empty study.
    """
    try:
        path = sqlite_path(db_url)
        if path is not None and not path.is_file():
            raise RatingsError(f"cannot read ratings from {display_url(db_url)}: no database file at "
                               f"{path} (run the study first, or pass --csv)")
        return ratings_frame(db_url, study)
    except RatingsError:
        raise
    except Exception as error:  # the database layer raises many kinds; the user needs the text
        raise RatingsError(f"cannot read ratings from {display_url(db_url)}: {error}") from None


def read_ratings_csv(path: str | Path) -> pd.DataFrame:
    """A ratings CSV to import: every column, no duplicates; problems raise RatingsError naming
    the file's line."""
    return read_contract_csv(path, complete=True, refuse_duplicates=True)


def import_ratings(db_url: str, df: pd.DataFrame, *, study: str) -> dict[str, int]:
    """Add ratings collected elsewhere to ``study`` (created if needed).

    Images, methods and raters are matched by name and added when new (their stimuli then have
    no file and are never shown). A session already in the study is skipped, so importing the
    same file twice changes nothing.
    """
    engine = get_engine(db_url)
    store.ensure_study(engine, study)
    frame = validate(df, source="the ratings to import", complete=True, refuse_duplicates=True)
    imported = skipped = 0
    with Session(engine) as session, session.begin():
        study_row = session.scalar(select(Study).where(Study.name == study))
        calibration_only = set(session.scalars(
            select(Image.name).where(Image.study_id == study_row.id, Image.calibration.is_(True))
        ))
        shown_only = sorted(calibration_only & set(frame["image"]))
        if shown_only:
            raise RatingsError(
                f"The ratings name calibration images of study {study!r} ({', '.join(shown_only[:5])}): "
                f"those are shown as examples and never rated."
            )
        cache: dict[tuple, int] = {}

        def row_id(model, **fields) -> int:
            key = (model.__name__, *sorted(fields.items()))
            if key not in cache:
                row = session.scalar(select(model).filter_by(**fields))
                if row is None:
                    row = model(**fields)
                    session.add(row)
                    session.flush()
                cache[key] = row.id
            return cache[key]

        for session_label, rows in frame.groupby("session", sort=False):
            if session.scalar(
                select(RatingSession.id).where(RatingSession.study_id == study_row.id, RatingSession.label == session_label)
            ):
                skipped += 1
                continue
            rater_labels = rows["rater"].unique()
            if len(rater_labels) != 1:
                raise RatingsError(f"Session {session_label!r} belongs to several raters.")
            rater = session.scalar(select(Rater).where(Rater.label == rater_labels[0]))
            if rater is None:
                rater = Rater(code=None, label=rater_labels[0])
                session.add(rater)
                session.flush()
            if rater.code is not None or session.scalar(
                select(RatingSession.id).where(RatingSession.rater_id == rater.id, RatingSession.study_id == study_row.id)
            ):
                # One session per rater and study: a second one gets a fresh rater label. So does
                # a live rater (re-importing an export): tying them to imported ratings would
                # make the study look finished to them, should they join it themselves.
                rater = Rater(code=None, label=f"{rater_labels[0]}~{secrets.token_hex(3)}")
                session.add(rater)
                session.flush()
            rating_session = RatingSession(rater_id=rater.id, study_id=study_row.id, label=session_label, seed=0, slot=None)
            session.add(rating_session)
            session.flush()
            ordered = rows.sort_values("shown_at", kind="stable") if rows["shown_at"].notna().all() else rows
            for position, row in enumerate(ordered.itertuples(index=False)):
                image_id = row_id(Image, study_id=study_row.id, name=row.image)
                method_id = row_id(Method, study_id=study_row.id, name=row.method)
                stimulus_id = row_id(Stimulus, study_id=study_row.id, image_id=image_id, method_id=method_id)
                presentation = Presentation(
                    session_id=rating_session.id, position=position, stimulus_id=stimulus_id,
                    is_repeat=bool(row.repeat), shown_at=_naive(row.shown_at),
                )
                session.add(presentation)
                session.flush()
                session.add(
                    Rating(
                        presentation_id=presentation.id, score=int(row.score), shown_at=_naive(row.shown_at),
                        answered_at=_naive(row.answered_at),
                        response_ms=None if pd.isna(row.response_ms) else int(row.response_ms),
                    )
                )
                imported += 1
    return {"ratings": imported, "sessions_skipped": skipped}


def _naive(value):
    """UTC pandas time -> naive UTC datetime (what the database stores), NaT -> None."""
    return None if pd.isna(value) else value.tz_convert("UTC").tz_localize(None).to_pydatetime()


def backup_sqlite(db_url: str, out: str | Path) -> int:
    """Copy a SQLite study database to ``out`` (a new file) while it may be in use; return the
    number of ratings in the copy. The copy is checked (quick_check) before it takes its name."""
    source_path = sqlite_path(db_url)
    if source_path is None:
        raise store.StudyError(f"{display_url(db_url)} is not a SQLite file: back up PostgreSQL with "
                               f"pg_dump (pg_dump --format=custom --file=study.dump DATABASE).")
    if not source_path.is_file() or source_path.stat().st_size == 0:
        raise store.StudyError(f"No study database at {source_path}: nothing to back up.")
    out = Path(out)
    if out.exists():
        raise store.StudyError(f"{out} already exists: a backup never overwrites a file; choose a new name.")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    partial.unlink(missing_ok=True)
    source = sqlite3.connect(f"{source_path.resolve().as_uri()}?mode=ro", uri=True)
    target = sqlite3.connect(partial)
    try:
        source.backup(target)  # all pages in one step: one consistent snapshot
        target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
        problems = [row[0] for row in target.execute("PRAGMA quick_check")]
        ratings = target.execute("SELECT count(*) FROM ratings").fetchone()[0] \
            if target.execute("SELECT 1 FROM sqlite_master WHERE name = 'ratings'").fetchone() else 0
    except sqlite3.Error as error:
        raise store.StudyError(f"The backup of {source_path} failed ({error}); {out} was not written.") from None
    finally:
        target.close()
        source.close()
    if problems != ["ok"]:
        partial.unlink(missing_ok=True)
        raise store.StudyError(f"The copy of {source_path} fails SQLite's quick_check ({one_line(problems)}): "
                               f"the database itself may be damaged; {out} was not written.")
    os.replace(partial, out)
    return ratings


def backup_message(database: Path, out: Path, ratings: int) -> str:
    """What a backup wrote, and how to restore it over ``database``."""
    return (f"Backup of {database} ({ratings} ratings) written to {out}. To restore: stop the app, delete "
            f"{database.name}-wal and {database.name}-shm beside {database.name} if they are there, then copy "
            f"the backup to {database}.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m survey.export", description="Export or import MOS ratings (CSV).")
    parser.add_argument("--db", help="SQLAlchemy URL (default: env SURVEY_DB_URL or <app dir>/study.sqlite)")
    parser.add_argument("--app-dir", type=Path, default=None)
    commands = parser.add_subparsers(dest="command", required=True)
    export_cmd = commands.add_parser("export", help="write a study's ratings to a CSV")
    export_cmd.add_argument("--study", default=None, help="study name (default: all studies)")
    export_cmd.add_argument("--out", type=Path, required=True)
    import_cmd = commands.add_parser("import", help="add a CSV of ratings to a study")
    import_cmd.add_argument("--csv", type=Path, required=True)
    import_cmd.add_argument("--study", required=True)
    backup_cmd = commands.add_parser("backup", help="copy the SQLite study database, safely while the app runs")
    backup_cmd.add_argument("--out", type=Path, required=True, help="the copy (a new file)")
    args = parser.parse_args(argv)
    db_url = args.db or default_db_url(args.app_dir or default_app_dir())
    try:
        if args.command == "export":
            database = sqlite_path(db_url)
            if database is not None and not database.is_file():
                # Exporting must not create an empty database where none was.
                raise store.StudyError(f"No study database at {database} (pass --db, or run the study first).")
            frame = ratings_frame(db_url, args.study)
            write_csv(frame, args.out)
            print(f"{len(frame)} ratings written to {args.out}")
        elif args.command == "backup":
            ratings = backup_sqlite(db_url, args.out)
            print(backup_message(sqlite_path(db_url), Path(args.out), ratings))
        else:
            result = import_ratings(db_url, read_ratings_csv(args.csv), study=args.study)
            print(f"{result['ratings']} ratings imported into {args.study!r}; "
                  f"{result['sessions_skipped']} session(s) already there, skipped")
    except (RatingsError, store.StudyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except SQLAlchemyError as error:  # unreachable server, bad URL, locked file: no traceback
        print(f"error: the study database {display_url(db_url)} failed: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
