"""Faults during a study, on the real app (``python app.py``) and a real SQLite file.

- The server is killed (SIGKILL) in the middle of a load run and restarted: every rating
  acknowledged before the kill is stored, none twice, and each rater resumes at the right image.
- A write that fails (the database locked past its busy timeout; a write refused by the
  database as on a full disk) tells the rater "not saved", stores nothing, and the same rating
  succeeds once the fault clears.
- A rating stored when only fetching the next image fails says "saved", not "not saved".

Root ignores file permissions, and an immutable (chattr +i) WAL database crashes SQLite with
SIGBUS, so the refused write is made by the database itself: a trigger raising SQLite's own
"database or disk is full" error.
"""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from gradio_client import Client

from survey.study import db, store
from tools import loadtest
from survey.study.study_tab import NOT_SAVED, SAVED_NEXT_FAILED

pytestmark = pytest.mark.e2e  # app servers killed and restarted

STUDY = "faults"
STIMULI = 20  # small: the kill test restarts the app and finishes every rater


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    app_dir = tmp_path_factory.mktemp("faults") / "app"
    db_url = f"sqlite:///{app_dir / 'study.sqlite'}"
    loadtest.prepare_load_study(db_url=db_url, app_dir=app_dir, study=STUDY, stimuli=STIMULI)
    app = loadtest.AppProcess(app_dir=app_dir, db_url=db_url, study=STUDY)
    app.start()
    yield app
    app.stop()
    db.dispose_engine(db_url)


def _rater_at_first_rating(client: Client) -> dict:
    state = client.predict("", True, api_name="/study_join")
    while state["kind"] == "calibration":
        state = client.predict(state["code"], state["presentation_id"], api_name="/study_continue")
    assert state["kind"] == "rating", state
    return state


def _scores(server: loadtest.AppProcess, code: str) -> list[int]:
    return [score for _, _, score in store.session_ratings(db.get_engine(server.db_url), code, STUDY)]


def _sqlite_file(server: loadtest.AppProcess) -> str:
    return server.db_url.removeprefix("sqlite:///")


def test_kill_mid_run_loses_no_acknowledged_rating_and_raters_resume(server):
    stop = threading.Event()
    result: dict = {}
    worker = threading.Thread(
        target=lambda: result.update(zip(("runs", "wall"), loadtest.run_raters(server.url, raters=5, timeout_s=120,
                                                                                 seed=100, stop=stop))))
    worker.start()
    engine = db.get_engine(server.db_url)
    deadline = time.monotonic() + 60
    while sum(map(len, loadtest.stored_ratings(server.db_url, STUDY).values())) < 25:
        assert time.monotonic() < deadline, "the raters did not get going"
        time.sleep(0.05)
    server.kill()  # mid-run: requests in flight are cut off
    stop.set()
    worker.join(90)
    runs = result["runs"]
    stored = loadtest.stored_ratings(server.db_url, STUDY)
    assert all(run.code for run in runs)
    for run in runs:
        mine = stored.get(run.code, set())
        assert set(run.saved) <= mine, "a rating acknowledged before the kill is missing"
        assert mine - set(run.saved) <= set(run.in_doubt), "a rating stored that was never sent"
        assert not run.done
    assert loadtest.duplicate_ratings(server.db_url, STUDY) == 0

    server.start()
    for run in runs:
        # Another device joins with the same code: the first image after the last one stored.
        plan = [p for p in store.session_plan(engine, run.code, STUDY) if not p["is_calibration"]]
        mine = stored.get(run.code, set())
        last = max((i for i, p in enumerate(plan) if p["presentation_id"] in mine), default=-1)
        assert all(p["presentation_id"] in mine for p in plan[: last + 1]), "a gap in the stored ratings"
        resumed = Client(server.url, verbose=False).predict(run.code, False, api_name="/study_join")
        assert resumed["ok"] and resumed["rated"] == last + 1
        if last >= 0 or resumed["kind"] != "calibration":  # (a slow rater may still be calibrating)
            assert resumed["presentation_id"] == plan[last + 1]["presentation_id"]
    # The raters carry on (an unanswered rating is sent again: stored once) and finish.
    finishers = [threading.Thread(target=loadtest.run_rater, args=(server.url,), kwargs=dict(seed=200 + i, run=run))
                 for i, run in enumerate(runs)]
    for thread in finishers:
        thread.start()
    for thread in finishers:
        thread.join(120)
    summary = loadtest.summarise(runs, db_url=server.db_url, study=STUDY, stimuli=STIMULI, wall_s=1.0)
    assert summary.completed == 5 and summary.duplicates == 0 and summary.lost == 0
    assert summary.stored == summary.sent + summary.unacknowledged
    assert summary.unacknowledged <= sum(len(run.in_doubt) for run in runs) + 5
    total = store.join_study(engine, runs[0].code, STUDY).total
    assert all(len(pids) == total for code, pids in loadtest.stored_ratings(server.db_url, STUDY).items()
               if code in {run.code for run in runs})


def test_locked_database_says_not_saved_and_the_retry_is_stored_once(server):
    client = Client(server.url, verbose=False)
    state = _rater_at_first_rating(client)
    blocker = sqlite3.connect(_sqlite_file(server), isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")  # held past the app's 5 s busy timeout
        failed = client.predict(state["code"], state["presentation_id"], 4, api_name="/study_rate")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert failed == {"ok": False, "status": "error", "message": NOT_SAVED, "code": state["code"]}
    assert _scores(server, state["code"]) == []
    retried = client.predict(state["code"], state["presentation_id"], 4, api_name="/study_rate")
    assert retried["ok"] and retried["status"] == "saved"
    assert _scores(server, state["code"]) == [4]


def _with_trigger(server: loadtest.AppProcess, sql: str):
    connection = sqlite3.connect(_sqlite_file(server), isolation_level=None)
    connection.execute(sql)
    return connection


def test_disk_full_write_says_not_saved_and_succeeds_once_it_clears(server):
    client = Client(server.url, verbose=False)
    state = _rater_at_first_rating(client)
    connection = _with_trigger(server, "CREATE TRIGGER disk_full BEFORE INSERT ON ratings "
                                       "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END")
    try:
        failed = client.predict(state["code"], state["presentation_id"], 2, api_name="/study_rate")
        assert not failed["ok"] and failed["message"] == NOT_SAVED
        assert _scores(server, state["code"]) == []
        again = client.predict(state["code"], api_name="/study_next")  # the page still shows the same image
        assert again["presentation_id"] == state["presentation_id"]
    finally:
        connection.execute("DROP TRIGGER disk_full")
        connection.close()
    retried = client.predict(state["code"], state["presentation_id"], 2, api_name="/study_rate")
    assert retried["status"] == "saved" and retried["rated"] == 1
    assert _scores(server, state["code"]) == [2]


def test_saved_rating_with_failed_next_image_says_saved(server):
    client = Client(server.url, verbose=False)
    state = _rater_at_first_rating(client)
    # Showing the next image (it records when it was shown) fails; the rating itself is stored.
    connection = _with_trigger(server, "CREATE TRIGGER next_fails BEFORE UPDATE OF shown_at ON presentations "
                                       "WHEN OLD.shown_at IS NULL BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END")
    try:
        answer = client.predict(state["code"], state["presentation_id"], 5, api_name="/study_rate")
    finally:
        connection.execute("DROP TRIGGER next_fails")
        connection.close()
    assert answer == {"ok": False, "status": "saved", "message": SAVED_NEXT_FAILED, "code": state["code"]}
    assert "Saved" in answer["message"] and "Not saved" not in answer["message"]
    assert _scores(server, state["code"]) == [5]
    replay = client.predict(state["code"], state["presentation_id"], 5, api_name="/study_rate")
    assert replay["ok"] and replay["status"] == "already saved" and replay["rated"] == 1
    assert replay["presentation_id"] != state["presentation_id"]
    assert _scores(server, state["code"]) == [5]
