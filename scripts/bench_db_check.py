"""Figures for results/reliability.md: the start check on a big study database, the backup.

    python scripts/bench_db_check.py [--ratings 100000] [--folder /tmp/storage-bench]

Builds a SQLite study database of the app's schema with that many ratings (1,000 raters, each
rating every one of ratings/1000 stimuli), then times SQLite's quick_check and integrity_check,
the app's whole start check (survey.study.db.check_database) and a backup (survey.export backup).
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from survey.study import db, export  # noqa: E402
from tools import loadtest  # noqa: E402

STUDY = "bench"
RATERS = 1000


def build(folder: Path, ratings: int) -> str:
    app_dir = folder / "app"
    db_url = f"sqlite:///{app_dir / 'study.sqlite'}"
    per_rater = ratings // RATERS
    stimuli = -(-per_rater // 4) * 4  # a multiple of the load study's 4 methods
    loadtest.prepare_load_study(db_url=db_url, app_dir=app_dir, study=STUDY, stimuli=stimuli)
    db.close_engines()
    now = datetime(2025, 1, 1).isoformat(sep=" ")
    connection = sqlite3.connect(app_dir / "study.sqlite")
    with connection:
        study_id = connection.execute("SELECT id FROM studies WHERE name = ?", (STUDY,)).fetchone()[0]
        stimulus_ids = [row[0] for row in connection.execute(
            "SELECT stimuli.id FROM stimuli JOIN images ON images.id = stimuli.image_id "
            "WHERE stimuli.study_id = ? AND NOT images.calibration", (study_id,))][:per_rater]
        for rater in range(RATERS):
            rater_id = connection.execute(
                "INSERT INTO raters (code, label, created_at, consented_at) VALUES (?, ?, ?, ?)",
                (f"code{rater:06d}" + "x" * 16, f"rater{rater:06d}", now, now)).lastrowid
            session_id = connection.execute(
                "INSERT INTO rating_sessions (rater_id, study_id, label, seed, slot, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)", (rater_id, study_id, f"s{rater:06d}", rater, rater, now)).lastrowid
            for position, stimulus_id in enumerate(stimulus_ids):
                presentation_id = connection.execute(
                    "INSERT INTO presentations (session_id, position, stimulus_id, is_calibration, is_repeat, "
                    "shown_at) VALUES (?, ?, ?, 0, 0, ?)", (session_id, position, stimulus_id, now)).lastrowid
                connection.execute(
                    "INSERT INTO ratings (presentation_id, score, shown_at, answered_at, response_ms) "
                    "VALUES (?, ?, ?, ?, ?)", (presentation_id, 1 + (rater + position) % 5, now, now, 1500))
    connection.close()
    return db_url


def timed(what: str, function) -> float:
    started = time.perf_counter()
    result = function()
    seconds = time.perf_counter() - started
    print(f"{what}: {seconds:.3f} s" + (f" ({result})" if result is not None else ""), flush=True)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ratings", type=int, default=100_000)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/storage-bench"))
    args = parser.parse_args()
    shutil.rmtree(args.folder, ignore_errors=True)
    started = time.perf_counter()
    db_url = build(args.folder, args.ratings)
    path = db.sqlite_path(db_url)
    print(f"built {path}: {path.stat().st_size / 2**20:.1f} MB in {time.perf_counter() - started:.0f} s")
    connection = sqlite3.connect(path)
    print("ratings:", connection.execute("SELECT count(*) FROM ratings").fetchone()[0])
    connection.close()
    for pragma in ("quick_check", "integrity_check"):
        # Twice: the first read may come from disk, the second from the page cache.
        for attempt in ("cold", "warm"):
            timed(f"PRAGMA {pragma} ({attempt})", lambda: _pragma(path, pragma))
    timed("survey.study.db.check_database", lambda: db.check_database(db_url, path.parent))
    backup = args.folder / "backup.sqlite"
    timed("survey.export backup", lambda: export.backup_sqlite(db_url, backup))
    print(f"backup {backup.stat().st_size / 2**20:.1f} MB")
    return 0


def _pragma(path: Path, pragma: str) -> str:
    connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return connection.execute(f"PRAGMA {pragma}").fetchone()[0]
    finally:
        connection.close()


if __name__ == "__main__":
    sys.exit(main())
