"""Ratings as a tidy table, and back.

One row per rating, exactly these columns:
``study, rater, session, image, method, score, repeat, shown_at, answered_at, response_ms``
(``repeat``: 0 first showing, 1 the hidden duplicate; calibration examples are never rated, so
never exported; ``rater`` is the public label, never the secret code; times are UTC).

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

from survey import store
from survey.db import (
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

COLUMNS = ["study", "rater", "session", "image", "method", "score", "repeat", "shown_at", "answered_at", "response_ms"]
TEXT_COLUMNS = ["study", "rater", "session", "image", "method"]


class RatingsFileError(ValueError):
    """A ratings CSV that cannot be used; the message says why and where."""


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame[COLUMNS].copy()
    for column in TEXT_COLUMNS:
        frame[column] = frame[column].astype(str)
    frame["score"] = frame["score"].astype("int64")
    frame["repeat"] = frame["repeat"].astype("int64")
    for column in ("shown_at", "answered_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    frame["response_ms"] = frame["response_ms"].astype("Int64")
    return frame.reset_index(drop=True)


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
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["repeat"] = frame["repeat"].astype(bool).astype("int64") if len(frame) else frame["repeat"]
    return _typed(frame)


def _iso(series: pd.Series) -> pd.Series:
    return series.map(lambda t: "" if pd.isna(t) else t.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))


def write_ratings_csv(df: pd.DataFrame, path: str | Path) -> Path:
    """Write the agreed columns (times as ISO 8601 UTC)."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise RatingsFileError(f"The ratings table lacks the column(s) {', '.join(missing)}.")
    out = _typed(df)
    out["shown_at"], out["answered_at"] = _iso(out["shown_at"]), _iso(out["answered_at"])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(path, index=False)
    return path


def read_ratings_csv(path: str | Path) -> pd.DataFrame:
    """Read and validate a ratings CSV; problems raise RatingsFileError naming the row."""
    path = Path(path)
    if not path.is_file():
        raise RatingsFileError(f"No such ratings file: {path}")
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise RatingsFileError(f"{path} is not a readable CSV file ({error}).") from None
    missing = [c for c in COLUMNS if c not in raw.columns]
    extra = [c for c in raw.columns if c not in COLUMNS]
    if missing or extra:
        raise RatingsFileError(
            f"{path}: expected exactly the columns {', '.join(COLUMNS)}"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unexpected {', '.join(extra)}" if extra else "")
        )
    if raw.empty:
        raise RatingsFileError(f"{path} holds no ratings.")

    def bad(mask: pd.Series, what: str) -> None:
        if mask.any():
            rows = ", ".join(str(i + 2) for i in raw.index[mask][:5])  # +2: header, 1-based
            raise RatingsFileError(f"{path}: {what} (line {rows}).")

    for column in TEXT_COLUMNS:
        bad(raw[column].str.strip() == "", f"empty {column}")
    bad(~raw["score"].str.strip().isin(list("12345")), "score must be a whole number from 1 to 5")
    bad(~raw["repeat"].str.strip().isin(["0", "1"]), "repeat must be 0 or 1")
    bad(~raw["response_ms"].str.strip().str.fullmatch(r"\d*"), "response_ms must be a whole number of milliseconds")
    frame = raw.copy()
    for column in ("shown_at", "answered_at"):
        parsed = pd.to_datetime(frame[column].replace("", None), utc=True, errors="coerce", format="ISO8601")
        bad(parsed.isna() & (frame[column].str.strip() != ""), f"{column} is not an ISO 8601 time")
        frame[column] = parsed
    frame["response_ms"] = pd.to_numeric(frame["response_ms"].replace("", None)).astype("Int64")
    frame = _typed(frame)
    duplicated = frame.duplicated(["study", "session", "image", "method", "repeat"], keep=False)
    bad(duplicated, "the same session rated the same image and method twice with the same repeat flag")
    return frame


def import_ratings(db_url: str, df: pd.DataFrame, *, study: str) -> dict[str, int]:
    """Add ratings collected elsewhere to ``study`` (created if needed).

    Images, methods and raters are matched by name and added when new (their stimuli then have
    no file and are never shown). A session already in the study is skipped, so importing the
    same file twice changes nothing.
    """
    engine = get_engine(db_url)
    store.ensure_study(engine, study)
    frame = _typed(df)
    imported = skipped = 0
    with Session(engine) as session, session.begin():
        study_row = session.scalar(select(Study).where(Study.name == study))
        calibration_only = set(session.scalars(
            select(Image.name).where(Image.study_id == study_row.id, Image.calibration.is_(True))
        ))
        shown_only = sorted(calibration_only & set(frame["image"]))
        if shown_only:
            raise RatingsFileError(
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
                raise RatingsFileError(f"Session {session_label!r} belongs to several raters.")
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
            write_ratings_csv(frame, args.out)
            print(f"{len(frame)} ratings written to {args.out}")
        elif args.command == "backup":
            ratings = backup_sqlite(db_url, args.out)
            print(backup_message(sqlite_path(db_url), Path(args.out), ratings))
        else:
            result = import_ratings(db_url, read_ratings_csv(args.csv), study=args.study)
            print(f"{result['ratings']} ratings imported into {args.study!r}; "
                  f"{result['sessions_skipped']} session(s) already there, skipped")
    except (RatingsFileError, store.StudyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except SQLAlchemyError as error:  # unreachable server, bad URL, locked file: no traceback
        print(f"error: the study database {display_url(db_url)} failed: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
