"""The study on a real PostgreSQL server: a fresh database per test, and what differs from SQLite.

The server comes from ``scripts/pg_cluster.sh start`` (CI starts one), which exports
SURVEY_TEST_PG_URL. Without it, or when it does not answer, these tests skip and say why.
The storage suite (tests/test_survey_store.py) runs on PostgreSQL through ``postgres_database``.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from survey.study import db, store

PG_URL_VARIABLE = "SURVEY_TEST_PG_URL"


def postgres_admin_url() -> str:
    """The test server's URL, or skip (with the reason) when there is none that answers."""
    url = os.environ.get(PG_URL_VARIABLE)
    if not url:
        pytest.skip(f"no PostgreSQL server: {PG_URL_VARIABLE} is unset (eval \"$(scripts/pg_cluster.sh start)\")")
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as error:  # any driver or network failure means: not reachable
        pytest.skip(f"PostgreSQL at {make_url(url).render_as_string(hide_password=True)} is unreachable: {error}")
    finally:
        engine.dispose()
    return url


@contextmanager
def postgres_database() -> Iterator[str]:
    """A new, empty database on the test server for one test; dropped afterwards."""
    admin_url = postgres_admin_url()
    name = "survey_" + secrets.token_hex(6)
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        try:
            yield url
        finally:
            db.dispose_engine(url)
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url


def _study_with_stimuli(engine, name: str = "s", *, images: int = 4) -> str:
    store.ensure_study(engine, name)
    for i in range(images):
        for method in ("nearest", "bicubic", "hr"):
            store.register_stimulus(engine, name, image=f"img{i}", method=method,
                                    file_name=f"{secrets.token_hex(8)}.png", width=8, height=8)
    return name


@pytest.mark.postgres
def test_schema_is_created_on_postgres_with_its_constraints(pg_url):
    engine = db.get_engine(pg_url)
    assert engine.dialect.name == "postgresql"
    with engine.connect() as connection:
        tables = set(connection.scalars(text(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")))
        checks = set(connection.scalars(text(
            "SELECT conname FROM pg_constraint WHERE contype IN ('c', 'u')")))
    assert {"studies", "stimuli", "raters", "rating_sessions", "presentations", "ratings", "schema_info"} <= tables
    assert {"ck_rating_score", "uq_presentation_position", "uq_session_slot"} <= checks


@pytest.mark.postgres
def test_concurrent_joins_get_distinct_slots_on_postgres(pg_url):
    """Slots come from max()+1 under READ COMMITTED: the unique constraint and a retry keep them distinct."""
    engine = db.get_engine(pg_url)
    study = _study_with_stimuli(engine)
    codes = [store.new_rater(engine, consent=True) for _ in range(12)]
    errors: list[Exception] = []

    def join(code: str) -> None:
        try:
            store.join_study(engine, code, study)
        except Exception as error:  # collected and reported below
            errors.append(error)

    threads = [threading.Thread(target=join, args=(code,)) for code in codes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with engine.connect() as connection:
        slots = list(connection.scalars(select(db.RatingSession.slot)))
    assert sorted(slots) == list(range(12))


@pytest.mark.postgres
def test_times_round_trip_as_naive_utc_on_postgres(pg_url):
    """Timestamps are stored without a time zone and read back as UTC, whatever the server's zone."""
    engine = db.get_engine(pg_url)
    with engine.begin() as connection:
        connection.execute(text(f"ALTER DATABASE \"{make_url(pg_url).database}\" SET timezone TO 'America/New_York'"))
    db.dispose_engine(pg_url)  # new connections take the database's zone
    engine = db.get_engine(pg_url)
    with engine.connect() as connection:
        assert connection.scalar(text("SHOW timezone")) == "America/New_York"
    study = _study_with_stimuli(engine)
    code = store.new_rater(engine, consent=True)
    item = store.join_study(engine, code, study)
    while item.is_calibration:
        item = store.acknowledge_calibration(engine, code, study, item.presentation_id)
    before = db.utc_now()
    store.submit_rating(engine, code, study, item.presentation_id, 4)
    with engine.connect() as connection:
        answered = connection.scalar(select(func.max(db.Rating.answered_at)))
    assert answered.tzinfo is None
    assert abs((answered - before).total_seconds()) < 60


@pytest.mark.postgres
def test_a_locked_table_fails_the_write_after_the_lock_timeout_and_the_retry_succeeds(pg_url):
    """PostgreSQL would wait forever; the engine's lock_timeout turns a held lock into "not saved"."""
    from sqlalchemy.exc import OperationalError

    engine = db.get_engine(pg_url)
    study = _study_with_stimuli(engine)
    code = store.new_rater(engine, consent=True)
    item = store.join_study(engine, code, study)
    while item.is_calibration:
        item = store.acknowledge_calibration(engine, code, study, item.presentation_id)
    blocker = create_engine(pg_url)
    try:
        with blocker.begin() as connection:
            connection.execute(text("LOCK TABLE ratings IN ACCESS EXCLUSIVE MODE"))
            start = time.monotonic()
            with pytest.raises(OperationalError, match="lock timeout"):
                store.submit_rating(engine, code, study, item.presentation_id, 2)
            waited = time.monotonic() - start
    finally:
        blocker.dispose()
    assert db.LOCK_TIMEOUT_MS / 1000 - 0.5 <= waited < db.LOCK_TIMEOUT_MS / 1000 + 5
    assert store.submit_rating(engine, code, study, item.presentation_id, 2).status == "saved"
    assert store.session_ratings(engine, code, study) == [(item_position(engine, item.presentation_id), item.presentation_id, 2)]


def item_position(engine, presentation_id: int) -> int:
    with engine.connect() as connection:
        return connection.scalar(select(db.Presentation.position).where(db.Presentation.id == presentation_id))
