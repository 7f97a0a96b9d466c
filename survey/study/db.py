"""The study database: SQLAlchemy 2 ORM models and the engine.

Tables: studies, images (rated, or calibration only: shown as examples, never rated), methods, stimuli (one image under one method, stored as a PNG with a
name that does not reveal the method), raters, rating sessions (one per rater and study),
presentations (what was shown to whom, in which position; calibration and hidden retest
duplicates flagged) and ratings (one per presentation, score 1-5, times).

The constraints, not code, make double counting impossible: UNIQUE(presentation) on ratings,
UNIQUE(session, position) on presentations, CHECK(score BETWEEN 1 AND 5).

SQLite by default (WAL, busy timeout, foreign keys on); any SQLAlchemy URL works (PostgreSQL
via ``postgresql+psycopg://``). A ``schema_info`` row records the schema version.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import unquote, urlsplit

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
    make_url,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship
from sqlalchemy.pool import NullPool
from sqlalchemy.util import asbool

SCHEMA_VERSION = 2  # 2: images.calibration
LOCK_TIMEOUT_MS = 5000  # how long a write waits for another connection's lock before failing


class SchemaVersionError(RuntimeError):
    """The database was written by a newer version of this app."""


def utc_now() -> datetime:
    """Naive UTC: portable across SQLite (no time zones) and PostgreSQL."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class SchemaInfo(Base):
    __tablename__ = "schema_info"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utc_now)


class Study(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utc_now)
    # None: every rater rates every stimulus; else a balanced subset of this many.
    per_rater: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Hidden test-retest duplicates per rater, and calibration images (each shown as 1 and 5).
    repeats: Mapped[int] = mapped_column(Integer, default=2)
    calibration_images: Mapped[int] = mapped_column(Integer, default=2)

    images: Mapped[list[Image]] = relationship(back_populates="study")
    methods: Mapped[list[Method]] = relationship(back_populates="study")

    __table_args__ = (
        CheckConstraint("per_rater IS NULL OR per_rater > 0", name="ck_study_per_rater"),
        CheckConstraint("repeats >= 0", name="ck_study_repeats"),
        CheckConstraint("calibration_images >= 0", name="ck_study_calibration"),
    )


class Image(Base):
    __tablename__ = "images"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    # Shown only as a calibration example (its nearest-neighbour version as a 1, the original
    # as a 5) and never rated: raters must not meet a rated image as a labelled example first.
    calibration: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))

    study: Mapped[Study] = relationship(back_populates="images")

    __table_args__ = (UniqueConstraint("study_id", "name", name="uq_image_name"),)


class Method(Base):
    __tablename__ = "methods"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))

    study: Mapped[Study] = relationship(back_populates="methods")

    __table_args__ = (UniqueConstraint("study_id", "name", name="uq_method_name"),)


class Stimulus(Base):
    __tablename__ = "stimuli"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    method_id: Mapped[int] = mapped_column(ForeignKey("methods.id", ondelete="CASCADE"))
    # Random hex name in the study folder; None for stimuli known only from imported ratings.
    file_name: Mapped[str | None] = mapped_column(String(64), nullable=True)
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)

    image: Mapped[Image] = relationship()
    method: Mapped[Method] = relationship()

    __table_args__ = (
        UniqueConstraint("image_id", "method_id", name="uq_stimulus"),
        UniqueConstraint("study_id", "file_name", name="uq_stimulus_file"),
    )


class Rater(Base):
    __tablename__ = "raters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The secret code a rater joins with; None for raters imported from a CSV.
    code: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    # The public name used in exports (never the secret code).
    label: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utc_now)
    consented_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class RatingSession(Base):
    __tablename__ = "rating_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rater_id: Mapped[int] = mapped_column(ForeignKey("raters.id", ondelete="CASCADE"))
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    label: Mapped[str] = mapped_column(String(64))
    # The seed of this rater's order, and the rater's slot in the balanced assignment. None for
    # imported sessions, and for a session abandoned with stimuli unrated whose slot went to a
    # later rater (who rates that remainder): such a session keeps its ratings and takes no more.
    seed: Mapped[int] = mapped_column(Integer)
    slot: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utc_now)

    rater: Mapped[Rater] = relationship()
    study: Mapped[Study] = relationship()

    __table_args__ = (
        UniqueConstraint("rater_id", "study_id", name="uq_session_rater_study"),
        UniqueConstraint("study_id", "slot", name="uq_session_slot"),
        UniqueConstraint("study_id", "label", name="uq_session_label"),
    )


class Presentation(Base):
    __tablename__ = "presentations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("rating_sessions.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    stimulus_id: Mapped[int] = mapped_column(ForeignKey("stimuli.id", ondelete="CASCADE"))
    is_calibration: Mapped[bool] = mapped_column(Boolean, default=False)
    is_repeat: Mapped[bool] = mapped_column(Boolean, default=False)
    # Calibration only: the score this example stands for (1 or 5).
    calibration_score: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Last time the page showed it (response times count from here), and, for calibration,
    # when the rater moved on.
    shown_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    session: Mapped[RatingSession] = relationship()
    stimulus: Mapped[Stimulus] = relationship()

    __table_args__ = (
        UniqueConstraint("session_id", "position", name="uq_presentation_position"),
        CheckConstraint("position >= 0", name="ck_presentation_position"),
    )


class Rating(Base):
    __tablename__ = "ratings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    presentation_id: Mapped[int] = mapped_column(
        ForeignKey("presentations.id", ondelete="CASCADE"), unique=True
    )
    score: Mapped[int] = mapped_column(Integer)
    # Always set for ratings given here; may be unknown for ratings imported from a CSV.
    shown_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    answered_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    response_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)

    presentation: Mapped[Presentation] = relationship()

    __table_args__ = (
        CheckConstraint("score BETWEEN 1 AND 5", name="ck_rating_score"),
        CheckConstraint("response_ms >= 0", name="ck_rating_response"),
    )


def default_app_dir() -> Path:
    """SRGAN_APP_DIR, else var/ in the checkout run from, else (an installed package) var/ in the
    current folder: never inside site-packages."""
    env = os.environ.get("SRGAN_APP_DIR")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file():  # only a source tree has it next to the packages
        return checkout / "var"
    return Path.cwd() / "var"


def default_db_url(app_dir: Path | None = None) -> str:
    """SURVEY_DB_URL, else a SQLite file in the app folder."""
    url = os.environ.get("SURVEY_DB_URL")
    if url:
        return url
    return f"sqlite:///{(app_dir or default_app_dir()) / 'study.sqlite'}"


def display_url(db_url: str) -> str:
    """The URL with any password masked, for messages and logs."""
    try:
        return make_url(db_url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: nothing to hide
        return db_url


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
    cursor.execute(f"PRAGMA busy_timeout={LOCK_TIMEOUT_MS}")  # wait for a concurrent writer rather than fail
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def get_engine(db_url: str) -> Engine:
    """One engine per URL for the process, with the schema created and its version checked."""
    with _engines_lock:
        engine = _engines.get(db_url)
        if engine is None:
            engine = _make_engine(db_url)
            _engines[db_url] = engine
        return engine


def _make_engine(db_url: str) -> Engine:
    path = sqlite_path(db_url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    connect_args = {}
    if db_url.startswith("postgresql"):
        # PostgreSQL waits for a lock forever by default; like SQLite's busy timeout, give up
        # after 5 s so the rater gets "not saved, retry" rather than a page that hangs.
        connect_args["options"] = f"-c lock_timeout={LOCK_TIMEOUT_MS}"
    engine = create_engine(db_url, pool_pre_ping=True, connect_args=connect_args)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    try:
        ensure_schema(engine)
    except Exception:
        engine.dispose()
        raise
    return engine


def ensure_schema(engine: Engine) -> None:
    """Create missing tables, record the version, refuse a database from a newer app."""
    Base.metadata.create_all(engine)
    with Session(engine) as session, session.begin():
        info = session.scalars(select(SchemaInfo).order_by(SchemaInfo.id)).first()
        if info is None:
            session.add(SchemaInfo(id=1, version=SCHEMA_VERSION))
        elif info.version > SCHEMA_VERSION:
            raise SchemaVersionError(_newer_schema_message(info.version))
    _migrate(engine)


def _migrate(engine: Engine) -> None:
    """Bring a database of an older schema version up to this one, step by step."""
    with engine.begin() as connection:
        # FOR UPDATE: two servers starting at once on PostgreSQL migrate one after the other.
        version = connection.scalar(select(SchemaInfo.version).where(SchemaInfo.id == 1).with_for_update())
        if version is None or version >= SCHEMA_VERSION:
            return
        if version < 2:  # version 1 had no calibration-only images: every image was rated
            if "calibration" not in {c["name"] for c in inspect(connection).get_columns("images")}:
                connection.execute(text("ALTER TABLE images ADD COLUMN calibration BOOLEAN NOT NULL DEFAULT false"))
        connection.execute(update(SchemaInfo).where(SchemaInfo.id == 1).values(version=SCHEMA_VERSION, updated_at=utc_now()))


def dispose_engine(db_url: str) -> None:
    """Close and forget the engine of a URL (tests, and before deleting a SQLite file)."""
    with _engines_lock:
        engine = _engines.pop(db_url, None)
    if engine is not None:
        engine.dispose()


def close_engines() -> None:
    """Close every engine of the process; a SQLite file is checkpointed first, so that the
    database file alone holds every rating (a stopped app must not leave them in the -wal file)."""
    with _engines_lock:
        engines = list(_engines.items())
        _engines.clear()
    for db_url, engine in engines:
        engine.dispose()
        path = sqlite_path(db_url)
        if path is not None and path.exists():
            checkpoint_sqlite(path)


def checkpoint_sqlite(path: Path) -> None:
    """Copy the write-ahead log into the database file and empty it; closing the last
    connection then removes the -wal file."""
    connection = sqlite3.connect(path, timeout=LOCK_TIMEOUT_MS / 1000)
    try:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()


# ---------------------------------------------------------------- the check at start


class DatabaseCheckError(RuntimeError):
    """Starting on this database would lose ratings or serve a damaged file; the message says
    what is wrong and what to do."""


def sqlite_path(db_url: str) -> Path | None:
    """The file of a SQLite URL (its query, ``?timeout=...`` or a ``file:`` URI's, left out);
    None for another database or SQLite in memory. Raises sqlalchemy's ArgumentError for a
    string that is no URL."""
    url = make_url(db_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    database = url.database
    if asbool(url.query.get("uri", False)) and database.startswith("file:"):
        # sqlite:///file:NAME?mode=...&uri=true: SQLite opens the URI; its file is the path part.
        database = unquote(urlsplit(database).path)
        if url.query.get("mode") == "memory" or database in ("", ":memory:"):
            return None
    return Path(database)


def stimulus_folders(app_dir: Path) -> dict[str, int]:
    """``studies/<name>/`` folders of the app folder that hold stimulus files: name -> count."""
    folders = {}
    root = Path(app_dir) / "studies"
    if root.is_dir():
        for folder in sorted(root.iterdir()):
            count = sum(1 for _ in folder.glob("*.png")) if folder.is_dir() else 0
            if count:
                folders[folder.name] = count
    return folders


def check_database(db_url: str, app_dir: Path) -> None:
    """Refuse, before anything is written, a database the app must not start on.

    SQLite: a missing or empty file while the app folder holds stimuli (a new database would
    silently replace the ratings), a file SQLite's integrity_check finds damaged, or not a database
    at all. Any database: a schema newer than this app, or study folders with stimuli whose
    study the database lacks (not the database they were made with). Raises
    DatabaseCheckError (SchemaVersionError for a newer schema); reads only.
    """
    folders = stimulus_folders(app_dir)
    path = sqlite_path(db_url)
    if path is not None:
        if not path.exists() or path.stat().st_size == 0:
            if folders:
                state = "missing" if not path.exists() else "empty (0 bytes)"
                raise DatabaseCheckError(
                    f"The study database {path} is {state}, but {Path(app_dir) / 'studies'} holds the stimuli "
                    f"of {_names(folders)}: starting would begin a new, empty database and lose every rating "
                    f"and rater link. Restore the database from a backup (stop the app, delete {path.name}-wal "
                    f"and {path.name}-shm if they are there, copy the backup to {path}), or, to start afresh "
                    f"on purpose, move {Path(app_dir) / 'studies'} away first."
                )
            return
        version, studies = _read_sqlite(path)
    else:
        version, studies = _read_database(db_url)
    if version is not None and version > SCHEMA_VERSION:
        raise SchemaVersionError(_newer_schema_message(version))
    orphans = {name: count for name, count in folders.items() if name not in studies}
    if orphans:
        where = Path(app_dir) / "studies"
        raise DatabaseCheckError(
            f"The study database {display_url(db_url)} has no study {_names(orphans, studies=False)}, but "
            f"{where} holds {'its' if len(orphans) == 1 else 'their'} stimuli: it is not the database "
            f"{'that study was' if len(orphans) == 1 else 'those studies were'} made with (an older backup, or "
            f"another --db-url?), and {'its' if len(orphans) == 1 else 'their'} ratings are not in it. Start "
            f"with the right database (--db-url, SURVEY_DB_URL), restore it from a backup, or move "
            f"{', '.join(str(where / name) for name in orphans)} out of {where} to go on without "
            f"{'it' if len(orphans) == 1 else 'them'}."
        )


def _names(folders: dict[str, int], *, studies: bool = True) -> str:
    listed = ", ".join(f"{name!r} ({count} files)" for name, count in folders.items())
    return f"{len(folders)} stud{'y' if len(folders) == 1 else 'ies'}: {listed}" if studies else listed


def one_line(problems: list[str], limit: int = 200) -> str:
    """SQLite's integrity_check lines (some of them several lines long) as one short line."""
    text = " ".join("; ".join(problems).split())
    return text if len(text) <= limit else text[:limit] + "..."


def _newer_schema_message(version: int) -> str:
    return (f"The study database has schema version {version}, newer than this app's "
            f"version {SCHEMA_VERSION}; upgrade the app (or use another database).")


def _read_sqlite(path: Path) -> tuple[int | None, set[str]]:
    """(schema version, study names) of a SQLite file after SQLite's integrity_check, opened read-only."""
    damaged = (f"Nothing was changed. Stop here and restore the database from a backup (`python -m survey.export "
               f"backup` makes one), or rescue what is readable with `sqlite3 {path} .recover | sqlite3 "
               f"rescued.sqlite` and start with --db-url sqlite:///rescued.sqlite.")
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=LOCK_TIMEOUT_MS / 1000)
    except sqlite3.Error as error:
        raise DatabaseCheckError(f"The study database {path} cannot be opened ({error}).") from None
    try:
        # integrity_check, not quick_check: it also finds indexes that disagree with their
        # tables (the UNIQUE ones keep a rating from counting twice), and takes 0.15 s on a
        # database of 100,000 ratings (quick_check 0.06 s; scripts/bench_db_check.py).
        problems = [row[0] for row in connection.execute("PRAGMA integrity_check(5)")]
        if problems != ["ok"]:
            raise DatabaseCheckError(f"The study database {path} is damaged (SQLite's integrity_check: "
                                     f"{one_line(problems)}). {damaged}")
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        version = (connection.execute("SELECT version FROM schema_info WHERE id = 1").fetchone() or (None,))[0] \
            if "schema_info" in tables else None
        studies = {row[0] for row in connection.execute("SELECT name FROM studies")} if "studies" in tables else set()
    except sqlite3.DatabaseError as error:  # not a database, a damaged header or schema; or locked
        if isinstance(error, sqlite3.OperationalError) and "locked" in str(error):
            raise DatabaseCheckError(f"The study database {path} is locked by another program ({error}); "
                                     f"start again once it is done.") from None
        raise DatabaseCheckError(f"The study database {path} is damaged, or not a SQLite database ({error}). "
                                 f"{damaged}") from None
    finally:
        connection.close()
    return version, studies


def _read_database(db_url: str) -> tuple[int | None, set[str]]:
    """(schema version, study names) of a server database, without creating anything."""
    engine = create_engine(db_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            tables = set(inspect(connection).get_table_names())
            version = connection.scalar(select(SchemaInfo.version).where(SchemaInfo.id == 1)) \
                if SchemaInfo.__tablename__ in tables else None
            studies = set(connection.scalars(select(Study.name))) if Study.__tablename__ in tables else set()
    finally:
        engine.dispose()
    return version, studies
