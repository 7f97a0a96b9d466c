"""The study database through the store: constraints, idempotence, resume, bad input, export.

Every test runs twice: on a fresh SQLite file, and on a fresh database of the PostgreSQL server
named by SURVEY_TEST_PG_URL (``eval "$(scripts/pg_cluster.sh start)"``; skipped without one).
"""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from survey.study import db, export, protocol, store
from survey.study.db import Presentation, Rating, SchemaInfo
from survey import ratings as contract
from test_postgres import postgres_database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    if request.param == "postgres":
        with postgres_database() as url:
            yield url
        return
    url = f"sqlite:///{tmp_path / 'study.sqlite'}"
    yield url
    db.dispose_engine(url)


@pytest.fixture
def engine(db_url):
    return db.get_engine(db_url)


METHODS = ["nearest", "bicubic", "srgan", "hr"]


def make_study(engine, name="s", *, n_images=4, methods=METHODS, **options) -> str:
    """A study as survey.prepare makes one: rated images, then calibration-only images (nearest and hr)."""
    store.ensure_study(engine, name, **options)
    for i in range(n_images):
        for method in methods:
            store.register_stimulus(engine, name, image=f"img{i}", method=method,
                                    file_name=f"{i:02d}{method}.png", width=8, height=8)
    for i in range(options.get("calibration_images", 2)):
        for method in ("nearest", "hr"):
            store.register_stimulus(engine, name, image=f"cal{i}", method=method, file_name=f"cal{i:02d}{method}.png",
                                    width=8, height=8, calibration=True)
    return name


def pass_calibration(engine, code, study) -> store.Item:
    item = store.join_study(engine, code, study)
    while item.is_calibration:
        item = store.acknowledge_calibration(engine, code, study, item.presentation_id)
    return item


def count_ratings(engine) -> int:
    with engine.connect() as connection:
        return connection.scalar(select(func.count(Rating.id)))


def test_schema_version_recorded_and_newer_refused(db_url, engine):
    with engine.connect() as connection:
        assert connection.scalar(select(SchemaInfo.version)) == db.SCHEMA_VERSION
    with engine.begin() as connection:
        connection.execute(update(SchemaInfo).values(version=db.SCHEMA_VERSION + 1))
    db.dispose_engine(db_url)
    with pytest.raises(db.SchemaVersionError, match="newer"):
        db.get_engine(db_url)
    with db.create_engine(db_url).begin() as connection:  # put it back so the fixture can clean up
        connection.execute(update(SchemaInfo).values(version=db.SCHEMA_VERSION))


def test_a_version_1_database_is_migrated_and_keeps_its_study(db_url, engine):
    """Version 1 had no calibration-only images: its images become rated ones, its raters keep their plans."""
    study = make_study(engine, n_images=2, methods=["nearest", "hr"], calibration_images=0)
    code = store.new_rater(engine, consent=True)
    first = pass_calibration(engine, code, study)
    store.submit_rating(engine, code, study, first.presentation_id, 3)
    with engine.begin() as connection:  # back to version 1's schema
        connection.execute(text("ALTER TABLE images DROP COLUMN calibration"))
        connection.execute(update(SchemaInfo).values(version=1))
    db.dispose_engine(db_url)
    engine = db.get_engine(db_url)
    with engine.connect() as connection:
        assert connection.scalar(select(SchemaInfo.version)) == db.SCHEMA_VERSION == 2
    assert store.image_names(engine, study, calibration=False) == ["img0", "img1"]
    assert store.image_names(engine, study, calibration=True) == []
    assert [score for _, _, score in store.session_ratings(engine, code, study)] == [3]
    store.register_stimulus(engine, study, image="cal0", method="hr", file_name="cal0hr.png", width=8, height=8,
                            calibration=True)
    assert store.study_summary(engine, study)["calibration_images_ready"] == 1
    db.dispose_engine(db_url)
    db.get_engine(db_url)  # a second start finds nothing to do


def test_sqlite_runs_in_wal_with_foreign_keys(engine):
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite pragmas")
    with engine.connect() as connection:
        assert connection.scalar(text("PRAGMA journal_mode")) == "wal"
        assert connection.scalar(text("PRAGMA foreign_keys")) == 1
        assert connection.scalar(text("PRAGMA busy_timeout")) >= 1000


def test_database_refuses_double_ratings_bad_scores_and_double_positions(engine):
    study = make_study(engine)
    code = store.new_rater(engine, consent=True)
    item = pass_calibration(engine, code, study)
    store.submit_rating(engine, code, study, item.presentation_id, 3)
    row = dict(presentation_id=item.presentation_id, score=4, shown_at=db.utc_now(), answered_at=db.utc_now(),
               response_ms=5)
    with pytest.raises(IntegrityError), engine.begin() as connection:  # one rating per presentation
        connection.execute(insert(Rating).values(**row))
    other = store.next_item(engine, code, study).presentation_id
    for score in (0, 6):  # CHECK score BETWEEN 1 AND 5
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(insert(Rating).values(**{**row, "presentation_id": other, "score": score}))
    with engine.connect() as connection:
        session_id, stimulus_id = connection.execute(
            select(Presentation.session_id, Presentation.stimulus_id).where(Presentation.id == other)).one()
    with pytest.raises(IntegrityError), engine.begin() as connection:  # one presentation per position
        connection.execute(insert(Presentation).values(session_id=session_id, position=0, stimulus_id=stimulus_id))
    assert count_ratings(engine) == 1


def test_resubmission_is_idempotent_and_a_changed_score_refused(engine):
    study = make_study(engine)
    code = store.new_rater(engine, consent=True)
    item = pass_calibration(engine, code, study)
    first = store.submit_rating(engine, code, study, item.presentation_id, 4)
    assert first.status == "saved" and first.item.rated == 1
    again = store.submit_rating(engine, code, study, item.presentation_id, "4")
    assert again.status == "already saved" and again.item.presentation_id == first.item.presentation_id
    with pytest.raises(store.StudyError, match="already rated 4"):
        store.submit_rating(engine, code, study, item.presentation_id, 2)
    assert store.session_ratings(engine, code, study) == [(4, item.presentation_id, 4)]


def test_concurrent_submissions_of_one_rating_store_it_once(engine):
    study = make_study(engine)
    code = store.new_rater(engine, consent=True)
    pid = pass_calibration(engine, code, study).presentation_id
    outcomes: list[str] = []

    def submit():
        try:
            outcomes.append(store.submit_rating(engine, code, study, pid, 5).status)
        except store.StudyError as error:  # lost the race to the current-image check
            outcomes.append(f"refused: {error}")

    threads = [threading.Thread(target=submit) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("saved") == 1
    assert count_ratings(engine) == 1


def test_rater_resumes_exactly_where_they_left_off(engine):
    study = make_study(engine)
    code = store.new_rater(engine, consent=True)
    item = pass_calibration(engine, code, study)
    given = []
    for score in (1, 2, 3):
        given.append((item.presentation_id, score))
        item = store.submit_rating(engine, code, study, item.presentation_id, score).item
    # Another device, later: joining again resumes at the fourth image, same plan.
    resumed = store.join_study(engine, code, study)
    assert resumed.presentation_id == item.presentation_id and resumed.rated == 3
    assert not resumed.is_calibration
    assert [(pid, score) for _, pid, score in store.session_ratings(engine, code, study)] == given
    with engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(db.RatingSession)) == 1


def test_full_session_ends_done_with_every_stimulus_rated(engine):
    study = make_study(engine, n_images=3, methods=["nearest", "hr"], repeats=1)
    code = store.new_rater(engine, consent=True)
    item = pass_calibration(engine, code, study)
    assert item.total == 3 * 2 + 1
    while not item.done:
        item = store.submit_rating(engine, code, study, item.presentation_id, 3).item
    assert item.rated == item.total == 7
    with pytest.raises(store.StudyError):  # nothing more to rate: a replay of an old id is refused
        store.submit_rating(engine, code, study, 1, 3)


@pytest.mark.parametrize("code", ["", "   ", "abc", "' OR 1=1 --", "x" * 200, "a b c d e f g h i j k l m n o p",
                                  "../../../../etc/passwd#########", None])
def test_malformed_rater_codes_are_refused_clearly(engine, code):
    make_study(engine)
    with pytest.raises(store.StudyError, match="code"):
        store.join_study(engine, code, "s")


def test_unknown_code_and_missing_consent(engine):
    make_study(engine)
    with pytest.raises(store.StudyError, match="unknown"):
        store.join_study(engine, "A" * 24, "s")
    with pytest.raises(store.StudyError, match="consent"):
        store.new_rater(engine, consent=False)
    with pytest.raises(store.StudyError, match="no study"):
        store.join_study(engine, store.new_rater(engine, consent=True), "nope")


@pytest.mark.parametrize("score", [0, 6, -1, "3; DROP TABLE ratings", "", None, 3.5, True, "five", [3]])
def test_bad_scores_store_nothing(engine, score):
    study = make_study(engine)
    code = store.new_rater(engine, consent=True)
    item = pass_calibration(engine, code, study)
    with pytest.raises(store.StudyError, match="score"):
        store.submit_rating(engine, code, study, item.presentation_id, score)
    assert count_ratings(engine) == 0
    assert store.next_item(engine, code, study).presentation_id == item.presentation_id


def test_stale_foreign_and_calibration_submissions_are_refused(engine):
    study = make_study(engine)
    alice = store.new_rater(engine, consent=True)
    bob = store.new_rater(engine, consent=True)
    first = store.join_study(engine, alice, study)
    assert first.is_calibration
    with pytest.raises(store.StudyError, match="calibration"):
        store.submit_rating(engine, alice, study, first.presentation_id, 1)
    item = pass_calibration(engine, alice, study)
    plan = store.session_plan(engine, alice, study)
    later = plan[-1]["presentation_id"]
    with pytest.raises(store.StudyError, match="not the one"):  # a page from the future / forged id
        store.submit_rating(engine, alice, study, later, 3)
    pass_calibration(engine, bob, study)
    with pytest.raises(store.StudyError, match="not part of your session"):  # someone else's image
        store.submit_rating(engine, bob, study, item.presentation_id, 3)
    for bad_id in ("1; DROP TABLE ratings", "-3", "0", "", None):
        with pytest.raises(store.StudyError, match="valid image"):
            store.submit_rating(engine, alice, study, bad_id, 3)
    assert count_ratings(engine) == 0
    store.submit_rating(engine, alice, study, item.presentation_id, 3)
    assert count_ratings(engine) == 1


def test_plans_are_recorded_balanced_and_free_of_neighbours(engine):
    study = make_study(engine, n_images=6, methods=["nearest", "bicubic", "srgan", "hr"], per_rater=8, repeats=2)
    counts: Counter = Counter()
    for _ in range(9):
        code = store.new_rater(engine, consent=True)
        store.join_study(engine, code, study)
        plan = store.session_plan(engine, code, study)
        rated = [p for p in plan if not p["is_calibration"]]
        assert len([p for p in rated if not p["is_repeat"]]) == 8
        assert len([p for p in rated if p["is_repeat"]]) == 2
        assert not any(a["image_id"] == b["image_id"] for a, b in zip(rated, rated[1:]))
        counts.update(p["stimulus_id"] for p in rated if not p["is_repeat"])
        # The plan is reproduced from the recorded seed and slot.
        with engine.connect() as connection:
            rows = connection.execute(
                select(db.Stimulus.id, db.Stimulus.image_id, db.Method.name, db.Image.calibration)
                .join(db.Method, db.Stimulus.method_id == db.Method.id)
                .join(db.Image, db.Stimulus.image_id == db.Image.id).order_by(db.Stimulus.id)).all()
        replay = protocol.plan_session([tuple(r[:3]) for r in rows if not r[3]],
                                       calibration_stimuli=[tuple(r[:3]) for r in rows if r[3]],
                                       slot=plan[0]["slot"], seed=plan[0]["seed"],
                                       per_rater=8, repeats=2, calibration_images=2)
        assert [p.stimulus_id for p in replay] == [p["stimulus_id"] for p in plan]
    # 9 raters x 8 = 72 ratings over 24 stimuli: exactly 3 each.
    assert set(counts.values()) == {3} and len(counts) == 24


def test_export_round_trip_and_import_is_idempotent(engine, db_url, tmp_path):
    study = make_study(engine, n_images=3, methods=["nearest", "hr"], repeats=1)
    code = store.new_rater(engine, consent=True)
    item = pass_calibration(engine, code, study)
    scores = []
    while not item.done:
        score = 5 if len(scores) % 2 else 2
        scores.append(score)
        item = store.submit_rating(engine, code, study, item.presentation_id, score).item
    frame = export.ratings_frame(db_url, study)
    assert list(frame.columns) == list(contract.COLUMNS)
    assert list(frame["score"]) == scores and frame["repeat"].sum() == 1
    assert (frame["response_ms"] >= 0).all() and (frame["answered_at"] >= frame["shown_at"]).all()
    assert code not in set(frame["rater"])  # the secret code never leaves the database
    path = contract.write_csv(frame, tmp_path / "ratings.csv")
    assert path.read_text().splitlines()[0] == ",".join(contract.COLUMNS)
    back = export.read_ratings_csv(path)
    assert back.equals(frame)
    assert export.import_ratings(db_url, back, study="elsewhere") == {"ratings": 7, "sessions_skipped": 0}
    assert export.import_ratings(db_url, back, study="elsewhere") == {"ratings": 0, "sessions_skipped": 1}
    imported = export.ratings_frame(db_url, "elsewhere")
    assert list(imported["score"]) == scores and list(imported["image"]) == list(frame["image"])
    assert len(export.ratings_frame(db_url)) == 14
    # Ratings of an image the study only shows as a calibration example are refused whole.
    onto_calibration = back.assign(image=back["image"].where(back.index > 0, "cal0"), session="other")
    with pytest.raises(contract.RatingsError, match="calibration images .*cal0"):
        export.import_ratings(db_url, onto_calibration, study=study)
    assert len(export.ratings_frame(db_url, study)) == 7


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t.replace("response_ms", "ms"), "missing response_ms"),
        (lambda t: t.replace(",3,0,", ",7,0,", 1), "score must be"),
        (lambda t: t.replace(",3,0,", ",3; DROP TABLE ratings,0,", 1), "score must be"),
        (lambda t: t.replace(",3,0,", ",3,2,", 1), "repeat must be"),
        (lambda t: t.replace("2026-01-01T10:00:00Z", "yesterday", 1), "ISO 8601"),
        (lambda t: t + t.splitlines()[1] + "\n", "twice"),
        (lambda t: t.splitlines()[0] + "\n", "no ratings"),
    ],
)
def test_read_ratings_csv_rejects_bad_files_clearly(tmp_path, change, message):
    good = (",".join(contract.COLUMNS) + "\n"
            + "s,R1,S1,img0,nearest,3,0,2026-01-01T10:00:00Z,2026-01-01T10:00:02Z,2000\n"
            + "s,R1,S1,img1,hr,5,0,2026-01-01T10:00:03Z,2026-01-01T10:00:04Z,1000\n")
    path = tmp_path / "ok.csv"
    path.write_text(good)
    assert len(export.read_ratings_csv(path)) == 2
    path.write_text(change(good))
    with pytest.raises(contract.RatingsError, match=message):
        export.read_ratings_csv(path)


def test_export_cli(db_url, engine, tmp_path, capsys):
    study = make_study(engine, n_images=2, methods=["nearest", "hr"])
    code = store.new_rater(engine, consent=True)
    item = pass_calibration(engine, code, study)
    store.submit_rating(engine, code, study, item.presentation_id, 4)
    out = tmp_path / "r.csv"
    assert export.main(["--db", db_url, "export", "--study", study, "--out", str(out)]) == 0
    assert export.main(["--db", db_url, "import", "--csv", str(out), "--study", "copy"]) == 0
    assert len(export.ratings_frame(db_url, "copy")) == 1
    with engine.connect() as connection:  # the imported session is not tied to the live rater
        codes = connection.execute(
            select(db.Rater.code).join(db.RatingSession, db.RatingSession.rater_id == db.Rater.id)
            .join(db.Study, db.RatingSession.study_id == db.Study.id).where(db.Study.name == "copy")
        ).scalars().all()
    assert codes == [None]
    (tmp_path / "bad.csv").write_text("nonsense\n1\n")
    assert export.main(["--db", db_url, "import", "--csv", str(tmp_path / "bad.csv"), "--study", "copy"]) == 2
    assert "expected exactly the columns" in capsys.readouterr().err


def test_export_cli_refuses_unknown_study_missing_file_and_dead_server(db_url, engine, tmp_path, capsys):
    make_study(engine, name="real", n_images=1, methods=["hr"])
    out = tmp_path / "r.csv"
    # A mistyped study name is an error, not "0 ratings written".
    assert export.main(["--db", db_url, "export", "--study", "reel", "--out", str(out)]) == 2
    assert "no study named 'reel'" in capsys.readouterr().err and not out.exists()
    with pytest.raises(store.StudyError, match="no study named"):
        export.ratings_frame(db_url, "reel")
    # A SQLite path with no database is refused, and no empty database is left behind.
    missing = tmp_path / "nowhere.sqlite"
    assert export.main(["--db", f"sqlite:///{missing}", "export", "--out", str(out)]) == 2
    assert "No study database" in capsys.readouterr().err and not missing.exists()
    # An unreachable server: a one-line error with the password masked, no traceback.
    assert export.main(["--db", "postgresql+psycopg://u:secretpw@127.0.0.1:1/x", "export", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "secretpw" not in err and "Traceback" not in err
