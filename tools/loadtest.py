"""Load test of the MOS study: many simulated raters complete a study at once over HTTP.

    python -m tools.loadtest                                  # 50 raters x 40 stimuli, SQLite
    python -m tools.loadtest --db-url postgresql+psycopg://user@127.0.0.1:5432/db
    python -m tools.loadtest --servers 2 --db-url URL     # two app processes, one database
    python -m tools.loadtest --url http://127.0.0.1:7860/ --db-url URL --study NAME

Without ``--url`` it prepares a study of ``--stimuli`` small synthetic stimuli (4 methods,
nearest and hr included so calibration runs as in a real study) in a temporary app folder,
starts ``python app.py`` on a free loopback port and stops it at the end. Each rater is a thread
with its own ``gradio_client`` that joins, passes calibration and rates every image through the
study tab's named endpoints, as the page does. At the end the database is read back: ratings
acknowledged "saved" must equal ratings stored, and no showing may be stored twice.
Only loopback servers are accepted, and the run is bounded in raters, stimuli and time.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from PIL import Image as PILImage

from survey.ratings import LOW_ANCHOR, REFERENCE

ROOT = Path(__file__).resolve().parent.parent
MAX_RATERS = 500
MAX_STIMULI = 400
MAX_SERVERS = 8
LOAD_METHODS = (LOW_ANCHOR, "bicubic", "srgan", REFERENCE)  # the anchors let calibration run
REQUEST_TIMEOUT_S = 60.0
RETRIES = 5  # per step, after "not saved" or a dropped connection
# The app's defences against ratings stuffing (new raters per client per hour, a floor on the
# time to rate, an invitation key) would refuse a capacity test's scripted raters: off here.
SCRIPTED_RATERS_ALLOWED = {"SURVEY_JOINS_PER_HOUR": "0", "SURVEY_MIN_RATING_MS": "0", "SURVEY_JOIN_KEY": ""}


class LoadTestError(RuntimeError):
    """A load test that cannot run (bad option, server not reachable); the message says why."""


# ---------------------------------------------------------------- safety and the server


def check_loopback(url: str) -> str:
    """The URL, if its host is this machine; a load test never targets another server."""
    host = urlsplit(url).hostname
    if not host:
        raise LoadTestError(f"Not a server URL: {url!r} (expected e.g. http://127.0.0.1:7860/).")
    try:
        address = ipaddress.ip_address(socket.gethostbyname(host))
    except (OSError, ValueError) as error:
        raise LoadTestError(f"Cannot resolve {host!r}: {error}") from None
    if not address.is_loopback:
        raise LoadTestError(f"Refusing to load-test {host} ({address}): only loopback servers (127.0.0.1) are allowed.")
    return url if url.endswith("/") else url + "/"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_synthetic_outputs(folder: Path, *, stimuli: int, size: int = 48) -> Path:
    """``folder/<method>/imgNN.png`` for 4 methods: stimuli/4 images, plain coloured squares."""
    if stimuli % len(LOAD_METHODS) or stimuli <= 0:
        raise LoadTestError(f"--stimuli must be a positive multiple of {len(LOAD_METHODS)} (images x methods).")
    rng = random.Random(0)
    for index in range(stimuli // len(LOAD_METHODS)):
        colour = tuple(rng.randrange(256) for _ in range(3))
        for method in LOAD_METHODS:
            (folder / method).mkdir(parents=True, exist_ok=True)
            PILImage.new("RGB", (size, size), colour).save(folder / method / f"img{index:03d}.png")
    return folder


def prepare_load_study(*, db_url: str, app_dir: Path, study: str, stimuli: int) -> None:
    """A study of ``stimuli`` stimuli (default protocol: calibration and 2 hidden repeats)."""
    from survey.study.prepare import prepare_from_outputs

    with tempfile.TemporaryDirectory() as outputs:
        write_synthetic_outputs(Path(outputs), stimuli=stimuli)
        prepare_from_outputs(db_url=db_url, app_dir=app_dir, study=study, outputs_dir=Path(outputs))


def start_app(*, app_dir: Path, db_url: str, study: str, port: int, log_path: Path,
              extra_args: tuple[str, ...] = (), env: dict[str, str] | None = None) -> subprocess.Popen:
    """``python app.py`` on 127.0.0.1:port in its own process group; its output goes to log_path."""
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", **SCRIPTED_RATERS_ALLOWED, **(env or {})}
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(port),
             "--app-dir", str(app_dir), "--db-url", db_url, "--study", study, *extra_args],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )


def wait_until_up(url: str, process: subprocess.Popen | None, *, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise LoadTestError(f"The app exited with code {process.returncode} before it answered.")
        try:
            with urllib.request.urlopen(url + "config", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise LoadTestError(f"The app at {url} did not answer within {timeout_s:.0f} s.")


def stop_app(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class AppProcess:
    """``python app.py`` for one app folder and database on a free loopback port; restartable."""

    def __init__(self, *, app_dir: Path, db_url: str, study: str, extra_args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None):
        self.app_dir, self.db_url, self.study = Path(app_dir), db_url, study
        self.extra_args, self.env = extra_args, env
        self.log_path = self.app_dir.parent / f"{self.app_dir.name}.log"
        self.process: subprocess.Popen | None = None
        self.url = ""

    def start(self, *, timeout_s: float = 120.0) -> str:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/"
        self.process = start_app(app_dir=self.app_dir, db_url=self.db_url, study=self.study, port=port,
                                 log_path=self.log_path, extra_args=self.extra_args, env=self.env)
        try:
            wait_until_up(self.url, self.process, timeout_s=timeout_s)
        except LoadTestError as error:
            self.stop()
            raise LoadTestError(f"{error}\n--- app log ---\n{self.log_tail()}") from None
        return self.url

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL, as a crash or an out-of-memory kill would: no clean shutdown."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None:
            stop_app(self.process)


# ---------------------------------------------------------------- one simulated rater


@dataclass
class RaterRun:
    """What one rater sent and what the server acknowledged."""

    code: str | None = None
    saved: list[int] = field(default_factory=list)  # presentation ids acknowledged "saved"
    already_saved: int = 0
    in_doubt: list[int] = field(default_factory=list)  # sent, but no answer came back
    latencies_ms: list[float] = field(default_factory=list)  # of acknowledged submissions
    errors: list[str] = field(default_factory=list)
    done: bool = False
    # Where the rater stands, so a run stopped by a fault resumes (and re-sends an unanswered
    # rating, as a person pressing the button again would).
    item: dict | None = None
    pending: tuple[int, int] | None = None  # (presentation id, score) of the rating sent last


class _Clients:
    """One gradio_client per server; successive requests go round the servers (scale-out)."""

    def __init__(self, urls: list[str]):
        from gradio_client import Client

        self.clients = [Client(url, verbose=False, download_files=False) for url in urls]
        self.sent = 0

    def call(self, *args, api_name: str) -> dict:
        client = self.clients[self.sent % len(self.clients)]
        self.sent += 1
        return client.submit(*args, api_name=api_name).result(timeout=REQUEST_TIMEOUT_S)


def run_rater(url: str | list[str], *, seed: int, code: str | None = None, run: RaterRun | None = None,
              stop: threading.Event | None = None, deadline: float = float("inf")) -> RaterRun:
    """Join (or resume with ``code``) and rate until done, stopped, or past the deadline.

    With several URLs (app processes sharing one database) each request goes to the next one.
    """
    run = run or RaterRun(code=code)
    rng = random.Random(seed)
    stop = stop or threading.Event()
    client = _Clients([url] if isinstance(url, str) else list(url))
    failures = 0
    while not stop.is_set() and time.monotonic() < deadline and failures <= RETRIES:
        item = run.item
        try:
            if item is None:
                item = client.call(run.code or "", run.code is None, api_name="/study_join")
                run.code = run.code or item.get("code")
            elif item.get("kind") == "calibration":
                item = client.call(run.code, item["presentation_id"], api_name="/study_continue")
            else:
                pid = item["presentation_id"]
                if run.pending is None or run.pending[0] != pid:
                    run.pending = (pid, rng.randint(1, 5))
                start = time.perf_counter()
                try:
                    answer = client.call(run.code, pid, run.pending[1], api_name="/study_rate")
                except Exception:
                    if pid not in run.in_doubt:
                        run.in_doubt.append(pid)  # sent; stored or not, no one knows yet
                    raise
                if answer.get("status") in ("saved", "already saved"):
                    run.latencies_ms.append((time.perf_counter() - start) * 1000)
                    if answer["status"] == "saved":
                        run.saved.append(pid)
                    else:
                        run.already_saved += 1
                    if pid in run.in_doubt:
                        run.in_doubt.remove(pid)
                item = answer
        except Exception as error:  # connection refused or reset, timeout: the server may be down
            run.errors.append(f"{type(error).__name__}: {error}")
            failures += 1
            time.sleep(0.5)
            continue
        if not item.get("ok"):
            # "not saved" or refused: note it, then ask the server where this rater stands.
            run.errors.append(f"{item.get('status')}: {item.get('message')}")
            failures += 1
            time.sleep(0.2)
            run.item = None if run.code is None else _safe_next(client, run.code)
            continue
        failures = 0
        run.item = item
        if item.get("kind") == "done":
            run.done = True
            break
    return run


def _safe_next(client: _Clients, code: str) -> dict | None:
    try:
        answer = client.call(code, api_name="/study_next")
    except Exception:  # the caller retries with a join
        return None
    return answer if answer.get("ok") else None


# ---------------------------------------------------------------- many raters, and the check


@dataclass
class LoadResult:
    backend: str
    servers: int
    raters: int
    stimuli: int
    completed: int
    sent: int  # acknowledged "saved"
    stored: int
    duplicates: int
    lost: int  # acknowledged but not stored
    unacknowledged: int  # stored without an acknowledgement (answers lost in flight)
    errors: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    wall_s: float

    @property
    def ok(self) -> bool:
        return self.sent == self.stored and self.duplicates == 0 and self.lost == 0 and self.completed == self.raters

    def markdown_row(self) -> str:
        return (f"| {self.backend} | {self.servers} | {self.raters} x {self.stimuli} | {self.completed} | {self.sent} | {self.stored} | "
                f"{self.duplicates} | {self.lost} | {self.errors} | {self.p50_ms:.0f} | {self.p99_ms:.0f} | "
                f"{self.max_ms:.0f} | {self.wall_s:.1f} | {self.sent / max(self.wall_s, 1e-9):.1f} |")


MARKDOWN_HEADER = (
    "| database | app processes | raters x stimuli | completed | ratings sent (acknowledged) | stored | duplicates | lost | "
    "errors | p50 submit ms | p99 submit ms | max ms | wall s | ratings/s |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def stored_ratings(db_url: str, study: str) -> dict[str, set[int]]:
    """Presentation ids with a stored rating, per rater code, for one study."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from survey.study.db import Presentation, Rater, Rating, RatingSession, Study, get_engine

    with Session(get_engine(db_url)) as session:
        rows = session.execute(
            select(Rater.code, Rating.presentation_id)
            .join(Presentation, Rating.presentation_id == Presentation.id)
            .join(RatingSession, Presentation.session_id == RatingSession.id)
            .join(Rater, RatingSession.rater_id == Rater.id)
            .join(Study, RatingSession.study_id == Study.id)
            .where(Study.name == study)
        )
        out: dict[str, set[int]] = {}
        for code, pid in rows:
            out.setdefault(code, set()).add(pid)
        return out


def duplicate_ratings(db_url: str, study: str) -> int:
    """Ratings beyond the first of one showing (same session, stimulus and repeat flag): must be 0."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from survey.study.db import Presentation, Rating, RatingSession, Study, get_engine

    per_showing = (
        select(func.count(Rating.id).label("n"))
        .join(Presentation, Rating.presentation_id == Presentation.id)
        .join(RatingSession, Presentation.session_id == RatingSession.id)
        .join(Study, RatingSession.study_id == Study.id)
        .where(Study.name == study)
        .group_by(Presentation.session_id, Presentation.stimulus_id, Presentation.is_repeat)
        .subquery()
    )
    with Session(get_engine(db_url)) as session:
        return int(session.scalar(select(func.coalesce(func.sum(per_showing.c.n - 1), 0))))


def summarise(runs: list[RaterRun], *, db_url: str, study: str, stimuli: int, wall_s: float,
              servers: int = 1) -> LoadResult:
    stored = stored_ratings(db_url, study)
    ours = {run.code for run in runs if run.code}
    lost = sum(len(set(run.saved) - stored.get(run.code, set())) for run in runs if run.code)
    unacknowledged = sum(len(stored.get(run.code, set()) - set(run.saved)) for run in runs if run.code)
    latencies = [ms for run in runs for ms in run.latencies_ms]
    return LoadResult(
        backend=db_url.split(":", 1)[0].split("+", 1)[0],
        servers=servers,
        raters=len(runs),
        stimuli=stimuli,
        completed=sum(run.done for run in runs),
        sent=sum(len(run.saved) for run in runs),
        stored=sum(len(pids) for code, pids in stored.items() if code in ours),
        duplicates=duplicate_ratings(db_url, study),
        lost=lost,
        unacknowledged=unacknowledged,
        errors=sum(len(run.errors) for run in runs),
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        max_ms=max(latencies, default=0.0),
        wall_s=wall_s,
    )


def run_raters(url: str | list[str], *, raters: int, timeout_s: float, seed: int = 0,
               stop: threading.Event | None = None) -> tuple[list[RaterRun], float]:
    """``raters`` threads at once; returns their runs and the wall time."""
    runs = [RaterRun() for _ in range(raters)]
    deadline = time.monotonic() + timeout_s
    threads = [
        threading.Thread(target=run_rater, args=(url,), kwargs=dict(seed=seed + i, run=runs[i], stop=stop, deadline=deadline),
                         daemon=True)
        for i in range(raters)
    ]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()) + REQUEST_TIMEOUT_S)
    return runs, time.perf_counter() - start


def load_test(*, raters: int, stimuli: int, db_url: str | None = None, url: str | None = None,
              study: str = "loadtest", servers: int = 1, timeout_s: float = 900.0,
              work_dir: Path | None = None) -> LoadResult:
    """Run the whole load test (start the app unless ``url`` is given) and check the database.

    ``servers`` > 1 starts that many app processes on the same database and app folder, and
    every rater's requests alternate between them: state lives in the database, not a process.
    """
    if not 1 <= raters <= MAX_RATERS:
        raise LoadTestError(f"--raters must be from 1 to {MAX_RATERS}.")
    if not 4 <= stimuli <= MAX_STIMULI:
        raise LoadTestError(f"--stimuli must be from 4 to {MAX_STIMULI}.")
    if not 1 <= servers <= MAX_SERVERS:
        raise LoadTestError(f"--servers must be from 1 to {MAX_SERVERS}.")
    if url is not None:
        if not db_url:
            raise LoadTestError("With --url, also give --db-url (the app's database) so stored ratings can be counted.")
        url = check_loopback(url)
        wait_until_up(url, None, timeout_s=10)
        runs, wall_s = run_raters(url, raters=raters, timeout_s=timeout_s)
        return summarise(runs, db_url=db_url, study=study, stimuli=stimuli, wall_s=wall_s)
    with tempfile.TemporaryDirectory(prefix="srgan-load-", dir=work_dir) as tmp:
        app_dir = Path(tmp) / "app"
        db_url = db_url or f"sqlite:///{app_dir / 'study.sqlite'}"
        prepare_load_study(db_url=db_url, app_dir=app_dir, study=study, stimuli=stimuli)
        apps = [AppProcess(app_dir=app_dir, db_url=db_url, study=study) for _ in range(servers)]
        for index, app in enumerate(apps):
            app.log_path = Path(tmp) / f"app{index}.log"
        try:
            urls = [app.start() for app in apps]
            runs, wall_s = run_raters(urls, raters=raters, timeout_s=timeout_s)
        finally:
            for app in apps:
                app.stop()
        return summarise(runs, db_url=db_url, study=study, stimuli=stimuli, wall_s=wall_s, servers=servers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.loadtest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--raters", type=int, default=50, help=f"simulated raters at once (default 50, at most {MAX_RATERS})")
    parser.add_argument("--stimuli", type=int, default=40, help="stimuli in the study, a multiple of 4 (default 40)")
    parser.add_argument("--db-url", help="SQLAlchemy URL of an empty database (default: a SQLite file in a temp folder)")
    parser.add_argument("--url", help="attach to a running app on this machine instead of starting one")
    parser.add_argument("--study", default="loadtest", help="the study the app serves (default loadtest)")
    parser.add_argument("--servers", type=int, default=1,
                        help="app processes sharing the database; each rater's requests alternate between them")
    parser.add_argument("--timeout", type=float, default=900.0, help="stop the raters after this many seconds")
    args = parser.parse_args(argv)
    try:
        result = load_test(raters=args.raters, stimuli=args.stimuli, db_url=args.db_url, url=args.url,
                           study=args.study, servers=args.servers, timeout_s=args.timeout)
    except LoadTestError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(MARKDOWN_HEADER)
    print(result.markdown_row())
    print(f"unacknowledged (stored, answer lost): {result.unacknowledged}")
    print("PASS" if result.ok else "FAIL: sent != stored, duplicates, lost ratings or unfinished raters")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
