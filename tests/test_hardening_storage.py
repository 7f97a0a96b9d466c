"""Storage: no silent data loss at start or stop, backups, and disk use that stays bounded.

- A study database that is missing, emptied or damaged while the app folder holds stimuli is
  refused at start (``python app.py`` exits with one clear paragraph, touches nothing).
- A stopped app (SIGTERM, SIGINT) leaves no un-checkpointed -wal: the .sqlite file alone holds
  every rating. ``python -m survey.export backup`` copies a live database whole.
- Gradio's cache is the app's own folder, pruned by age and size; the admin's ratings CSV is
  served once, then gone; the Results tab's report folder goes when the app stops.
Real SQLite files and real ``python app.py`` processes on 127.0.0.1; nothing mocked.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image
from sqlalchemy import create_engine, inspect

from conftest import CHROMIUM_ARGS, ROOT, free_port
from survey.study import cleanup, db, export, store
from survey import ratings as contract
from tools import loadtest

STUDY = "storage"
STIMULI = 8
TOKEN = "storage-admin-token-0123456789"


def _prepared(app_dir: Path) -> str:
    db_url = f"sqlite:///{app_dir / 'study.sqlite'}"
    loadtest.prepare_load_study(db_url=db_url, app_dir=app_dir, study=STUDY, stimuli=STIMULI)
    return db_url


def _rate_everything(db_url: str, raters: int) -> int:
    """Raters finish the study through the store; returns the number of ratings given."""
    engine, given = db.get_engine(db_url), 0
    for _ in range(raters):
        code = store.new_rater(engine, consent=True)
        item = store.join_study(engine, code, STUDY)
        while not item.done:
            if item.is_calibration:
                item = store.acknowledge_calibration(engine, code, STUDY, item.presentation_id)
            else:
                item = store.submit_rating(engine, code, STUDY, item.presentation_id, 1 + given % 5).item
                given += 1
    return given


def _count_ratings(path: Path) -> int:
    connection = sqlite3.connect(path)
    try:
        return connection.execute("SELECT count(*) FROM ratings").fetchone()[0]
    finally:
        connection.close()


def _app_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "GRADIO_TEMP_DIR"}
    return {**env, "GRADIO_ANALYTICS_ENABLED": "False", **extra}


# ---------------------------------------------------------------- the check at start


def _corrupt_a_table_page(path: Path) -> None:
    """Overwrite the ratings table's root page (in the middle of the file) with other bytes."""
    connection = sqlite3.connect(path)
    (root,) = connection.execute("SELECT rootpage FROM sqlite_master WHERE name = 'ratings'").fetchone()
    (page_size,) = connection.execute("PRAGMA page_size").fetchone()
    (pages,) = connection.execute("PRAGMA page_count").fetchone()
    connection.close()
    assert 1 < root < pages  # an interior page of the file, not its header
    with open(path, "r+b") as file:
        file.seek((root - 1) * page_size + 8)
        file.write(bytes(range(256)) * 4)


@pytest.mark.e2e  # another interpreter
@pytest.mark.parametrize("damage", ["truncated", "deleted", "corrupted"])
def test_start_refuses_a_database_that_lost_its_ratings(tmp_path: Path, damage: str) -> None:
    app_dir = tmp_path / "app"
    db_url = _prepared(app_dir)
    assert _rate_everything(db_url, raters=2) > 0
    db.close_engines()
    database = app_dir / "study.sqlite"
    if damage == "truncated":
        database.write_bytes(b"")
    elif damage == "deleted":
        database.unlink()
    else:
        _corrupt_a_table_page(database)
    before = database.read_bytes() if database.exists() else None
    folders = sorted(p.name for p in (app_dir / "studies").iterdir())

    # As the user started it: the default study, no --db-url.
    run = subprocess.run([sys.executable, "app.py", "--app-dir", str(app_dir), "--port", str(free_port())],
                         cwd=ROOT, env=_app_env(), capture_output=True, text=True, timeout=120)

    assert run.returncode != 0
    message = run.stderr.strip()
    assert "Traceback" not in run.stderr + run.stdout and message.startswith("error: ") and "\n" not in message
    assert str(database) in message and "backup" in message
    assert {"truncated": "empty", "deleted": "missing", "corrupted": "damaged"}[damage] in message
    assert (database.read_bytes() if database.exists() else None) == before  # nothing written
    assert sorted(p.name for p in (app_dir / "studies").iterdir()) == folders  # no "examples" made
    assert not (app_dir / "examples").exists()


def test_check_database_refuses_studies_the_database_does_not_know(tmp_path: Path) -> None:
    app_dir = tmp_path / "app"
    _prepared(app_dir)
    db.close_engines()
    other = f"sqlite:///{tmp_path / 'other.sqlite'}"  # a database made elsewhere, without that study
    db.get_engine(other)
    db.close_engines()
    with pytest.raises(db.DatabaseCheckError, match=f"has no study '{STUDY}'.*move {app_dir / 'studies' / STUDY}"):
        db.check_database(other, app_dir)
    db.check_database(f"sqlite:///{app_dir / 'study.sqlite'}", app_dir)  # its own database passes
    db.check_database(f"sqlite:///{tmp_path / 'new.sqlite'}", tmp_path / "empty-app")  # a first start passes
    assert not (tmp_path / "new.sqlite").exists()


def test_check_database_on_postgresql(tmp_path: Path) -> None:
    """An empty (or another) PostgreSQL database is refused for an app folder with stimuli, and
    the check creates nothing there; a newer schema is refused before anything is written."""
    from test_postgres import postgres_database

    app_dir = tmp_path / "app"
    _prepared(app_dir)  # its own SQLite database: the PostgreSQL one below lacks the study
    db.close_engines()
    with postgres_database() as url:
        with pytest.raises(db.DatabaseCheckError, match=f"has no study '{STUDY}'"):
            db.check_database(url, app_dir)
        probe = create_engine(url)
        assert inspect(probe).get_table_names() == []  # the check created nothing
        probe.dispose()
        engine = db.get_engine(url)
        store.ensure_study(engine, STUDY)
        db.check_database(url, app_dir)
        with engine.begin() as connection:
            connection.execute(db.update(db.SchemaInfo).values(version=db.SCHEMA_VERSION + 1))
        with pytest.raises(db.SchemaVersionError):
            db.check_database(url, app_dir)


def test_check_database_reads_a_database_an_app_was_killed_on(tmp_path: Path) -> None:
    """Committed ratings still in the -wal of a killed app (no -shm either) pass the check."""
    app_dir = tmp_path / "app"
    db_url = _prepared(app_dir)
    db.close_engines()
    writer = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nsys.path.insert(0, '.')\n"
         "from survey.study import db, store\n"
         f"e = db.get_engine({db_url!r})\n"
         "with e.connect() as c: c.exec_driver_sql('PRAGMA wal_autocheckpoint=0')\n"
         "store.new_rater(e, consent=True)\nprint('ready', flush=True)\ntime.sleep(60)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "ready"
    writer.kill()
    writer.wait()
    assert (app_dir / "study.sqlite-wal").stat().st_size > 0
    (app_dir / "study.sqlite-shm").unlink(missing_ok=True)
    db.check_database(db_url, app_dir)


# ---------------------------------------------------------------- stopping, and backups


def _start_app(app_dir: Path, db_url: str, **env: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = open(app_dir.parent / "app.log", "ab")
    process = subprocess.Popen(
        [sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(port), "--app-dir", str(app_dir),
         "--db-url", db_url, "--study", STUDY],
        cwd=ROOT, env=_app_env(SRGAN_ADMIN_TOKEN=TOKEN, **env), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        loadtest.wait_until_up(url, process, timeout_s=180)
    except loadtest.LoadTestError:
        process.kill()
        pytest.fail((app_dir.parent / "app.log").read_text(errors="replace")[-3000:])
    return process, url


def _rate_through_the_app(url: str, ratings: int) -> int:
    """One rater gives ``ratings`` ratings through the running app; returns how many it acknowledged."""
    client = Client(url, verbose=False, download_files=False)
    state = client.predict("", True, api_name="/study_join")
    while state["kind"] == "calibration":
        state = client.predict(state["code"], state["presentation_id"], api_name="/study_continue")
    given = 0
    while state.get("kind") == "rating" and given < ratings:
        time.sleep(0.4)  # as a person would: the study refuses a rating given faster than it can be seen
        state = client.predict(state["code"], state["presentation_id"], 3, api_name="/study_rate")
        assert state["ok"], state
        given += 1
    return given


def _stop(process: subprocess.Popen, signum: int) -> int:
    process.send_signal(signum)
    return process.wait(timeout=60)


def _assert_stopped_cleanly(app_dir: Path, pid: int, ratings: int, tmp_path: Path) -> None:
    wal = app_dir / "study.sqlite-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    alone = tmp_path / "copied-alone" / "study.sqlite"  # as one would copy it: without -wal, -shm
    alone.parent.mkdir()
    shutil.copyfile(app_dir / "study.sqlite", alone)
    assert _count_ratings(alone) == ratings
    assert not list(Path(tempfile.gettempdir()).glob(f"{cleanup.REPORT_PREFIX}{pid}-*"))


@pytest.mark.e2e  # a real server
def test_sigint_checkpoints_the_database(tmp_path: Path) -> None:
    app_dir = tmp_path / "app"
    db_url = _prepared(app_dir)
    db.close_engines()
    process, url = _start_app(app_dir, db_url)
    try:
        given = _rate_through_the_app(url, ratings=4)
        assert (app_dir / "study.sqlite-wal").stat().st_size > 0  # the ratings are in the log now
        assert _stop(process, signal.SIGINT) == 0
    finally:
        process.kill()
    _assert_stopped_cleanly(app_dir, process.pid, given, tmp_path)


def test_backup_copies_a_live_database_whole(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    app_dir = tmp_path / "app"
    db_url = _prepared(app_dir)
    engine = db.get_engine(db_url)
    with engine.connect() as connection:  # keep the ratings in the write-ahead log
        connection.exec_driver_sql("PRAGMA wal_autocheckpoint=0")
        given = _rate_everything(db_url, raters=3)
        assert (app_dir / "study.sqlite-wal").stat().st_size > 0
        out = tmp_path / "backups" / "study.sqlite"
        code = export.main(["--db", db_url, "backup", "--out", str(out)])
        assert code == 0 and f"({given} ratings)" in capsys.readouterr().out
        assert sorted(p.name for p in out.parent.iterdir()) == ["study.sqlite"]  # one self-contained file
        assert _count_ratings(out) == given
        assert export.main(["--db", db_url, "backup", "--out", str(out)]) == 2  # never overwrites
        assert "already exists" in capsys.readouterr().err
    db.close_engines()
    missing = f"sqlite:///{tmp_path / 'none.sqlite'}"
    assert export.main(["--db", missing, "backup", "--out", str(tmp_path / "b.sqlite")]) == 2
    assert not (tmp_path / "none.sqlite").exists()
    assert export.main(["--db", "postgresql+psycopg://u:pw@127.0.0.1:1/x", "backup", "--out", "x"]) == 2
    assert "pg_dump" in capsys.readouterr().err


def test_backup_says_how_to_restore_the_database_it_copied(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    database = tmp_path / "app" / "ratings.db"  # not the default name
    db_url = f"sqlite:///{database}?timeout=5"
    loadtest.prepare_load_study(db_url=db_url, app_dir=tmp_path / "app", study=STUDY, stimuli=STIMULI)
    db.close_engines()
    assert export.main(["--db", db_url, "backup", "--out", str(tmp_path / "copy.db")]) == 0
    said = capsys.readouterr().out
    assert f"Backup of {database} (0 ratings)" in said and "study.sqlite" not in said
    assert "delete ratings.db-wal and ratings.db-shm" in said and f"copy the backup to {database}." in said


def test_every_form_of_sqlite_url_names_its_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The engine, export, report and the backup read a SQLite URL's file one way (db.sqlite_path):
    a driver name, a query or a file: URI changes nothing."""
    from survey.analysis import report, stats

    file = tmp_path / "s.sqlite"
    assert {url: db.sqlite_path(url) for url in (
        f"sqlite:///{file}", f"sqlite+pysqlite:///{file}?timeout=5", f"sqlite:///file:{file}?mode=rwc&uri=true",
        "sqlite:///relative/s.sqlite", "sqlite://", "sqlite:///:memory:", "sqlite:///file:m?mode=memory&uri=true",
        "postgresql+psycopg://u:pw@127.0.0.1:1/x",
    )} == {
        f"sqlite:///{file}": file, f"sqlite+pysqlite:///{file}?timeout=5": file,
        f"sqlite:///file:{file}?mode=rwc&uri=true": file, "sqlite:///relative/s.sqlite": Path("relative/s.sqlite"),
        "sqlite://": None, "sqlite:///:memory:": None, "sqlite:///file:m?mode=memory&uri=true": None,
        "postgresql+psycopg://u:pw@127.0.0.1:1/x": None,
    }
    missing = tmp_path / "none.sqlite"
    url = f"sqlite+pysqlite:///{missing}?timeout=5"
    assert export.main(["--db", url, "export", "--out", str(tmp_path / "o.csv")]) == 2  # reading makes no database
    assert f"No study database at {missing} " in capsys.readouterr().err
    with pytest.raises(contract.RatingsError, match="no database file at"):
        export.read_ratings(url, None)
    assert not missing.exists()
    new = tmp_path / "new" / "folder" / "s.sqlite"  # the engine makes the folder, whatever the form
    db.get_engine(f"sqlite+pysqlite:///{new}?timeout=5")
    db.close_engines()
    assert new.is_file()


# ---------------------------------------------------------------- the cache


def test_prune_cache_by_age_then_size(tmp_path: Path) -> None:
    now = 1_000_000.0
    policy = cleanup.CachePolicy(max_bytes=2000, max_age_s=3600)  # grace for size: 300 s
    ages = {"old": 7200, "a": 600, "b": 500, "c": 400, "recent": 60, "fresh": 10, "example": 9000,
            "once/csv": 7200, "once/stale": 2 * 86400}  # once/: the admin's CSVs, downloaded once
    for name, age in ages.items():
        path = tmp_path / name / f"{Path(name).name}.png"
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x" * 1000)
        os.utime(path, (now - age, now - age))
        os.utime(path.parent, (now - age, now - age))
    pruned = cleanup.prune_cache(tmp_path, policy, keep=[str(tmp_path / "example" / "example.png")], now=now)
    left = sorted(str(p.parent.relative_to(tmp_path)) for p in tmp_path.rglob("*.png"))
    # "old" by age, a CSV not fetched in a day too; then the oldest ("a", "b", "c") while over
    # 2000 bytes. The kept example, the files younger than 5 minutes and a CSV younger than a day
    # stay whatever their age or the size (4000 bytes: a burst overshoots the size for minutes).
    assert left == ["example", "fresh", "once/csv", "recent"]
    assert (pruned.files, pruned.kept_bytes) == (5, 4000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["example", "fresh", "once", "recent"]  # empty folders gone


@pytest.mark.e2e  # a real Gradio server
def test_an_upload_waiting_in_the_queue_is_never_pruned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """However long the queue: a comparison's upload waits behind one that holds the only worker
    while the cache is pruned as if it were an hour old and over its size; it still runs."""
    import gradio as gr

    cache = tmp_path / "cache"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(cache))  # the server's uploads: this test's own folder
    release = threading.Event()
    with gr.Blocks() as blocks:
        text, upload, out = gr.Textbox(), gr.File(type="filepath"), gr.Textbox()
        one_worker = dict(concurrency_id="one", concurrency_limit=1)
        gr.Button().click(lambda value: release.wait(60) and value, text, out, api_name="hold", **one_worker)
        gr.Button().click(lambda path: Path(path).read_text(), upload, out, api_name="read", **one_worker)
    blocks.queue()
    housekeeping = cleanup.Housekeeping(blocks, cache_dir=cache, policy=cleanup.CachePolicy(max_bytes=1, max_age_s=60))
    blocks.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        client = Client(blocks.local_url, verbose=False, download_files=False)
        holding = client.submit("held", api_name="/hold")
        source = tmp_path / "upload.txt"
        source.write_text("the upload")
        _wait_for(lambda: any(blocks._queue.active_jobs), "the first event running")
        waiting = client.submit(handle_file(str(source)), api_name="/read")
        _wait_for(lambda: cleanup.files_in_use(blocks), "the upload's event in the queue")
        (uploaded,) = cleanup.files_in_use(blocks)
        assert Path(uploaded).is_relative_to(cache) and Path(uploaded).is_file()
        pruned = cleanup.prune_cache(cache, housekeeping.janitor.policy, keep=housekeeping.janitor.keep(),
                                     now=time.time() + 3600)
        assert Path(uploaded).is_file() and pruned.kept_bytes == len("the upload")
        release.set()
        assert holding.result(timeout=60) == "held" and waiting.result(timeout=60) == "the upload"
    finally:
        release.set()
        blocks.close()


def _wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + 60  # a bound for a hung server, not a timing check
    while not condition():
        assert time.monotonic() < deadline, f"waited a minute for {what}"
        time.sleep(0.05)


def test_report_folders_of_dead_processes_are_removed(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"{cleanup.REPORT_PREFIX}{dead.pid}-abc"
    alive = tmp_path / f"{cleanup.REPORT_PREFIX}{os.getpid()}-abc"
    other = tmp_path / f"{cleanup.REPORT_PREFIX}oldstyle"
    for folder in (stale, alive, other):
        (folder / "all").mkdir(parents=True)
    assert cleanup.remove_stale_report_dirs(tmp_path) == [stale]
    assert alive.exists() and other.exists() and not stale.exists()


def _photo(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    return path


def _size(folder: Path, *, leave_out: set[str] = frozenset()) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and str(p) not in leave_out)


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory):
    """One app with a small cache (1 MB, files kept 6 s) and a rater's ratings in its -wal. The
    ratings CSV under cache/once/ is not pruned by that age (only a day), so the download tests
    may fetch it as late as a loaded machine makes them."""
    app_dir = tmp_path_factory.mktemp("running") / "app"
    db_url = _prepared(app_dir)
    db.close_engines()
    process, url = _start_app(app_dir, db_url, SRGAN_CACHE_MB="1", SRGAN_CACHE_MINUTES="0.1")
    given = _rate_through_the_app(url, ratings=STIMULI + 2)  # every image and its repeats
    yield process, url, app_dir, given
    process.kill()


@pytest.mark.e2e
def test_the_cache_is_the_apps_own_and_stays_small(running, tmp_path: Path) -> None:
    process, url, app_dir, _ = running
    cache = app_dir / "cache"
    assert cache.is_dir() and cache.stat().st_mode & 0o777 == 0o700  # nobody else reads the uploads
    client = Client(url, verbose=False, download_files=False)
    examples = {str(p) for p in cache.rglob("*.png") if "demo_views" not in p.parts}
    largest = 0
    for seed in range(6):
        client.predict(handle_file(str(_photo(tmp_path / f"in{seed}.png", seed))), "Auto", 1.0, api_name="/compare")
        largest = max(largest, _size(cache))
    assert (cache / "demo_views").is_dir()  # the comparisons' images went to the app's cache
    deadline = time.monotonic() + 60
    while _size(cache, leave_out=examples) > 2**20 and time.monotonic() < deadline:
        time.sleep(0.5)
    left = _size(cache, leave_out=examples)
    print(f"cache: largest {largest / 2**20:.1f} MB during 6 compares, {left / 2**20:.2f} MB after pruning")
    assert left <= 2**20
    assert all(Path(p).exists() for p in examples)  # the page's examples are never pruned


@pytest.mark.e2e
def test_the_ratings_csv_is_served_once(running) -> None:
    _, url, app_dir, _ = running
    client = Client(url, verbose=False, download_files=False)
    message, _, figures, ratings_csv, _ = client.predict(TOKEN, STUDY, False, api_name="/results_report")
    assert "Report for study" in message and ratings_csv
    path = Path(ratings_csv["path"])
    assert path.is_relative_to(app_dir / "cache") and path.stat().st_mode & 0o777 == 0o600
    with urllib.request.urlopen(ratings_csv["url"], timeout=10) as response:  # no token: the address is the secret
        assert response.read().decode().startswith("study,rater,")
    assert _status(ratings_csv["url"]) in (403, 404)  # downloaded once: gone
    assert not path.exists()


@pytest.mark.e2e
def test_the_ratings_csv_downloads_once_in_a_browser(running, chromium_path: str, tmp_path: Path) -> None:
    """The page only links the CSV (it is not fetched until clicked); the click downloads it."""
    from playwright.sync_api import expect, sync_playwright

    _, url, app_dir, _ = running
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 1000}, accept_downloads=True)
            page.goto(url)
            page.get_by_role("tab", name="Results (admin)").click()
            page.locator("#results-token input, #results-token textarea").first.fill(TOKEN)
            page.locator("#results-refresh").click()
            expect(page.locator("#results-message")).to_contain_text("Report for study", timeout=90_000)
            link = page.locator("#results-csv a").first
            expect(link).to_contain_text("KB")
            (waiting,) = list((app_dir / "cache" / "once").rglob("*.csv"))  # shown, not yet fetched
            with page.expect_download() as download:
                link.click()
            saved = tmp_path / "ratings.csv"
            download.value.save_as(saved)
        finally:
            browser.close()
    assert saved.read_text().startswith("study,rater,")
    assert not waiting.exists()


@pytest.mark.e2e
def test_sigterm_checkpoints_and_removes_what_the_run_made(running, tmp_path: Path) -> None:
    process, url, app_dir, given = running
    Client(url, verbose=False, download_files=False).predict(TOKEN, STUDY, False, api_name="/results_report")
    once = list((app_dir / "cache" / "once").rglob("*.csv"))
    assert once and list(Path(tempfile.gettempdir()).glob(f"{cleanup.REPORT_PREFIX}{process.pid}-*"))
    assert (app_dir / "study.sqlite-wal").stat().st_size > 0
    # A SIGTERM, then more (SIGTERM and Ctrl-C) while it stops: they are ignored, and the stop
    # (Gradio's 5 s wait for connections, then the checkpoint) completes.
    process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 60  # a bound for a hung stop, not a timing check
    while process.poll() is None and time.monotonic() < deadline:
        for signum in (signal.SIGTERM, signal.SIGINT):
            time.sleep(0.05)
            if process.poll() is None:
                process.send_signal(signum)
    assert process.wait(timeout=10) == 0
    _assert_stopped_cleanly(app_dir, process.pid, given, tmp_path)
    assert not any(path.exists() for path in once)  # a CSV never fetched goes with the app
