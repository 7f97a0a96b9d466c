"""Kill the app with SIGKILL again and again mid-study; count what the database kept.

    python scripts/kill_probe.py [--kills 11] [--raters 5] [--stimuli 20] [--db-url URL]

Starts ``python app.py`` on 127.0.0.1 with a temporary app folder (SQLite, or an empty
database at ``--db-url``), lets ``--raters`` scripted raters rate, and SIGKILLs the server a
random moment after the next few ratings land, ``--kills`` times, restarting it each time; the
raters carry on where the server left them (an unanswered rating is sent again, as a person
pressing the button again would). At the end every rater finishes. Prints, after each kill and
in total: ratings acknowledged, stored, acknowledged but missing (must be 0), stored twice
(must be 0). gradio_client's threads print the cut connections to stderr (2>/dev/null).
Figures are recorded in results/reliability.md.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from survey.study import db  # noqa: E402
from tools import loadtest  # noqa: E402

STUDY = "killprobe"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=11)
    parser.add_argument("--raters", type=int, default=5)
    parser.add_argument("--stimuli", type=int, default=20, help="a multiple of 4")
    parser.add_argument("--db-url", help="an empty database (default: SQLite in a temp folder)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    chance = random.Random(args.seed)

    app_dir = Path(tempfile.mkdtemp(prefix="kill-probe-")) / "app"
    db_url = args.db_url or f"sqlite:///{app_dir / 'study.sqlite'}"
    loadtest.prepare_load_study(db_url=db_url, app_dir=app_dir, study=STUDY, stimuli=args.stimuli)
    server = loadtest.AppProcess(app_dir=app_dir, db_url=db_url, study=STUDY)
    runs = [loadtest.RaterRun() for _ in range(args.raters)]
    missing_total = 0
    print(f"{'kill':>4} {'acknowledged':>12} {'stored':>6} {'missing':>7} {'twice':>5}")
    for kill in range(1, args.kills + 1):
        server.start()
        stop = threading.Event()
        threads = [threading.Thread(target=loadtest.run_rater, args=(server.url,),
                                    kwargs=dict(seed=1000 * kill + i, run=run, stop=stop))
                   for i, run in enumerate(runs)]
        for thread in threads:
            thread.start()
        before = sum(map(len, loadtest.stored_ratings(db_url, STUDY).values()))
        target = before + chance.randint(3, 12)
        deadline = time.monotonic() + 60
        while sum(map(len, loadtest.stored_ratings(db_url, STUDY).values())) < target and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(chance.random() * 0.3)  # a random moment: sometimes between, sometimes inside a write
        server.kill()
        stop.set()
        for thread in threads:
            thread.join(60)
        stored = loadtest.stored_ratings(db_url, STUDY)
        acknowledged = sum(len(run.saved) for run in runs)
        missing = sum(len(set(run.saved) - stored.get(run.code, set())) for run in runs if run.code)
        missing_total += missing
        twice = loadtest.duplicate_ratings(db_url, STUDY)
        print(f"{kill:>4} {acknowledged:>12} {sum(map(len, stored.values())):>6} {missing:>7} {twice:>5}", flush=True)
        if all(run.done for run in runs):
            break
    server.start()
    finishers = [threading.Thread(target=loadtest.run_rater, args=(server.url,), kwargs=dict(seed=99_000 + i, run=run))
                 for i, run in enumerate(runs)]
    for thread in finishers:
        thread.start()
    for thread in finishers:
        thread.join(300)
    summary = loadtest.summarise(runs, db_url=db_url, study=STUDY, stimuli=args.stimuli, wall_s=1.0)
    server.stop()
    db.dispose_engine(db_url)
    print(f"after {kill} kills and a clean finish: {summary.completed} of {args.raters} raters completed, "
          f"{summary.sent} ratings acknowledged, {summary.stored} stored ({summary.unacknowledged} of them sent but "
          f"cut off before the answer), lost {summary.lost + missing_total}, "
          f"stored twice {summary.duplicates}")
    return 0 if summary.lost == summary.duplicates == missing_total == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
