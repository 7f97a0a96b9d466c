"""The files the app writes beside its database, and how they are kept from filling the disk.

- Gradio's cache (uploads, the Compare tab's images, every file an event returns) goes to
  ``<app dir>/cache`` (``GRADIO_TEMP_DIR`` when that is set), readable by the app's user only,
  not to the machine-wide ``/tmp/gradio``. ``CacheJanitor`` prunes it in the background: files
  older than ``SRGAN_CACHE_MINUTES`` (default 60), then the oldest while it holds more than
  ``SRGAN_CACHE_MB`` (default 1024) and are older than 5 minutes; never a file that a queued or
  running event names (an upload waiting for its comparison).
- The Results tab writes its reports to a private temporary folder named by the process
  (``srgan-results-<pid>-*``), removed when the app stops; folders of processes that died
  without stopping are removed at the next start.
- The admin's ratings CSV is served once: ``OneShotDownloads`` deletes it when it has been
  downloaded whole, so its address is of no use to anyone afterwards (one never fetched goes when
  the app stops, or after a day).
- The first SIGTERM or Ctrl-C stops the app; further ones are ignored, so the stop always ends
  with the database checkpointed.
"""

from __future__ import annotations

import atexit
import os
import re
import secrets
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from survey.study.db import close_engines

CACHE_MB = 1024
CACHE_MINUTES = 60.0
MAX_CHECK_S = 10.0  # how often the janitor looks, at most (a walk of a full cache takes milliseconds)
# Files younger than this are never pruned for size. The files a queued or running event names
# are kept in any case (``files_in_use``), however long the queue; this covers what no queue
# shows: a page uploads an image when it is chosen, and its person may take a minute or two
# before pressing Compare; the results a page is still fetching. The price: a burst can
# overshoot the size by what the app writes in this time and one check (comparisons wrote at
# most about 10 MB/s here: up to about 3 GB over in a flood). Pruning by age keeps its own rule.
MAX_GRACE_S = 300.0
# The admin's ratings CSVs (``OneShotFiles``) under this folder of the cache: each goes once
# downloaded, or when the app stops. The janitor leaves them to that (the admin may read the
# report for a while before clicking, and the cache's age may be minutes) unless one is older
# than a day: an app that runs for weeks keeps no CSV nobody fetched.
ONCE_FOLDER = "once"
ONCE_MAX_AGE_S = 24 * 3600.0
REPORT_PREFIX = "srgan-results-"
FILE_ROUTE = "/gradio_api/file="  # where Gradio serves files


# ---------------------------------------------------------------- Gradio's cache


def use_app_cache(app_dir: Path) -> Path:
    """Point Gradio's cache at ``<app dir>/cache`` unless GRADIO_TEMP_DIR already names one;
    return it, created for this user only. Call before gradio components are made."""
    folder = Path(os.environ.get("GRADIO_TEMP_DIR") or Path(app_dir).resolve() / "cache")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        folder.chmod(0o700)  # uploads and results: nobody else's to read
    except OSError:  # a GRADIO_TEMP_DIR of another user's: theirs to protect
        pass
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    return folder


@dataclass(frozen=True)
class CachePolicy:
    max_bytes: int = CACHE_MB * 2**20
    max_age_s: float = CACHE_MINUTES * 60

    @classmethod
    def from_env(cls) -> CachePolicy:
        """SRGAN_CACHE_MB and SRGAN_CACHE_MINUTES; a value that is not a positive number is
        refused with a message naming it."""
        values = []
        for name, default in (("SRGAN_CACHE_MB", CACHE_MB), ("SRGAN_CACHE_MINUTES", CACHE_MINUTES)):
            text = os.environ.get(name, "").strip()
            try:
                value = float(text) if text else float(default)
            except ValueError:
                value = -1.0
            if not value > 0:
                raise ValueError(f"{name}={text!r}: must be a positive number")
            values.append(value)
        return cls(max_bytes=int(values[0] * 2**20), max_age_s=values[1] * 60)

    @property
    def check_every_s(self) -> float:
        return min(MAX_CHECK_S, max(1.0, self.max_age_s / 4))

    @property
    def grace_s(self) -> float:
        return min(MAX_GRACE_S, self.max_age_s / 2)


@dataclass
class Pruned:
    files: int = 0
    bytes: int = 0
    kept_bytes: int = 0


def prune_cache(folder: Path, policy: CachePolicy, *, keep: Iterable[str] = (), now: float | None = None) -> Pruned:
    """Delete files older than the policy's age, then the oldest while the folder holds more
    than its size; never the files in ``keep`` (what the page shows from the start: the
    examples; what queued events will read) nor, for size, any younger than the grace period.
    Files under ``once/`` only go past ONCE_MAX_AGE_S. Empty folders left behind go too."""
    now = time.time() if now is None else now
    folder = os.path.abspath(folder)  # paths compared with `keep`, which Gradio makes absolute
    keep = {os.path.abspath(path) for path in keep}
    once = os.path.join(folder, ONCE_FOLDER) + os.sep
    once_max_age_s = max(ONCE_MAX_AGE_S, policy.max_age_s)
    files = []  # (mtime, size, path)
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                continue
            files.append((info.st_mtime, info.st_size, path))
    files.sort()
    pruned = Pruned(kept_bytes=sum(size for _, size, _ in files))
    emptied = set()
    for mtime, size, path in files:
        if path.startswith(once):
            too_old, too_much = mtime < now - once_max_age_s, False
        else:
            too_old = mtime < now - policy.max_age_s
            too_much = pruned.kept_bytes > policy.max_bytes and mtime < now - policy.grace_s
        if path in keep or not (too_old or too_much):
            continue
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
        pruned.files += 1
        pruned.bytes += size
        pruned.kept_bytes -= size
        emptied.add(os.path.dirname(path))
    _remove_empty_folders(folder, emptied, older_than=now - policy.grace_s)
    return pruned


def _remove_empty_folders(folder: str, emptied: set[str], *, older_than: float) -> None:
    """Folders this round emptied, and any other empty one older than the grace period."""
    for root, _, files in os.walk(folder, topdown=False):
        if root == folder or files:
            continue
        try:
            if root in emptied or os.lstat(root).st_mtime < older_than:
                os.rmdir(root)
        except OSError:  # not empty (a subfolder stays), refilled meanwhile, or already gone
            pass


class CacheJanitor:
    """Prunes a cache folder now and then on a daemon thread (see ``prune_cache``)."""

    def __init__(self, folder: Path, policy: CachePolicy, *, keep: Callable[[], Iterable[str]] = tuple):
        self.folder, self.policy, self.keep = Path(folder), policy, keep
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cache-janitor", daemon=True)

    def start(self) -> CacheJanitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                prune_cache(self.folder, self.policy, keep=self.keep())
            except Exception as error:  # a janitor that dies would let the disk fill: say it, go on
                print(f"warning: pruning {self.folder} failed: {error}", flush=True)
            self._stop.wait(self.policy.check_every_s)


def kept_files(blocks) -> set[str]:
    """Files a Gradio app's page shows from the start (its examples): not to be pruned."""
    kept = set()
    for block in blocks.blocks.values():
        kept |= set(getattr(block, "keep_in_cache", ()))
    return kept


def check_queue(blocks) -> None:
    """Refuse, at start, a Gradio whose queue ``files_in_use`` cannot read (it would find nothing,
    and queued uploads would be pruned again without a word)."""
    queue = getattr(blocks, "_queue", None)
    if not all(hasattr(queue, name) for name in ("event_queue_per_concurrency_id", "active_jobs")):
        raise RuntimeError("this Gradio's queue has no event_queue_per_concurrency_id/active_jobs: "
                           "survey.study.cleanup.files_in_use needs updating for it")


def files_in_use(blocks) -> set[str]:
    """The files (``"path"`` of any payload) that the events queued or running name: uploads that
    a comparison waiting its turn will read. With up to 32 comparisons queued at concurrency 1,
    each seconds long, an upload may wait for minutes; no fixed grace period covers every queue.

    Gradio's queue is private (``Blocks._queue``; ``check_queue`` at start) and changes on the
    event loop's thread while this reads it from the janitor's: its lists are copied before they
    are walked, and a walk that races a change raises, so that round prunes nothing."""
    queue = blocks._queue
    events = [event for event_queue in list(queue.event_queue_per_concurrency_id.values())
              for event in list(event_queue.queue)]
    events += [event for job in list(queue.active_jobs) if job for event in list(job)]
    paths: set[str] = set()
    for event in events:
        body = getattr(event, "data", None)
        _add_paths(getattr(body, "data", None), paths)
    return paths


def _add_paths(value, paths: set[str]) -> None:
    if isinstance(value, dict):
        if isinstance(value.get("path"), str):
            paths.add(os.path.abspath(value["path"]))
        for item in list(value.values()):
            _add_paths(item, paths)
    elif isinstance(value, (list, tuple)):
        for item in list(value):
            _add_paths(item, paths)


# ---------------------------------------------------------------- the Results tab's reports


def private_report_dir() -> Path:
    """A folder for this process's reports, readable by its user only, removed at exit; the
    folders of processes that died without removing theirs are removed first."""
    remove_stale_report_dirs()
    folder = Path(tempfile.mkdtemp(prefix=f"{REPORT_PREFIX}{os.getpid()}-"))
    atexit.register(shutil.rmtree, folder, True)
    return folder


def remove_stale_report_dirs(root: Path | None = None) -> list[Path]:
    """Remove ``srgan-results-<pid>-*`` folders whose process is gone; return them."""
    removed = []
    for folder in Path(root or tempfile.gettempdir()).glob(f"{REPORT_PREFIX}*"):
        match = re.fullmatch(rf"{REPORT_PREFIX}(\d+)-.+", folder.name)
        if match and folder.is_dir() and not _process_alive(int(match.group(1))):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


# ---------------------------------------------------------------- downloads served once


class OneShotFiles:
    """Files that may be downloaded once: each is deleted once served whole."""

    def __init__(self) -> None:
        self._paths: set[str] = set()
        self._lock = threading.Lock()

    def add(self, source: Path, cache_dir: Path) -> Path:
        """A private copy of ``source`` under ``cache_dir`` in a folder of a random name (its
        address cannot be guessed); registered to be deleted once downloaded."""
        folder = Path(cache_dir) / ONCE_FOLDER / secrets.token_hex(16)
        folder.mkdir(parents=True, mode=0o700)
        target = folder / Path(source).name
        shutil.copyfile(source, target)
        target.chmod(0o600)
        with self._lock:
            self._paths.add(os.path.abspath(target))
        return target

    def registered(self, path: str) -> bool:
        with self._lock:
            return os.path.abspath(path) in self._paths

    def consume(self, path: str) -> None:
        """Delete a served file (and its folder)."""
        path = os.path.abspath(path)
        with self._lock:
            self._paths.discard(path)
        shutil.rmtree(os.path.dirname(path), ignore_errors=True)

    def clear(self) -> None:
        with self._lock:
            paths, self._paths = list(self._paths), set()
        for path in paths:
            shutil.rmtree(os.path.dirname(path), ignore_errors=True)


ONE_SHOT = OneShotFiles()


class OneShotDownloads:
    """ASGI middleware: a GET that serves a file of ``ONE_SHOT`` whole deletes it afterwards.
    Pass to ``launch(app_kwargs={"middleware": [starlette.middleware.Middleware(OneShotDownloads)]})``."""

    def __init__(self, app, files: OneShotFiles = ONE_SHOT) -> None:
        self.app, self.files = app, files

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" and scope.get("method") == "GET" else ""
        file = path.partition(FILE_ROUTE)[2] if FILE_ROUTE in path else ""
        if not file or not self.files.registered(file):
            await self.app(scope, receive, send)
            return
        status = 0

        async def send_then_consume(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body") and status == 200:
                self.files.consume(file)

        await self.app(scope, receive, send_then_consume)


# ---------------------------------------------------------------- starting and stopping


class Housekeeping:
    """What a running app does beside serving: prune the cache while it runs; when it stops
    (``stop``, also at exit, once), close the server, delete the downloads not yet fetched,
    and checkpoint and close the databases."""

    def __init__(self, blocks, *, cache_dir: Path, policy: CachePolicy) -> None:
        check_queue(blocks)
        self.blocks = blocks
        self.janitor = CacheJanitor(cache_dir, policy, keep=lambda: kept_files(blocks) | files_in_use(blocks))
        self._stopped = threading.Event()

    def start(self) -> Housekeeping:
        self.janitor.start()
        atexit.register(self.stop)
        return self

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        _ignore_stop_signals()  # stopping has begun: a SIGTERM now must not cut it short
        self.blocks.close(verbose=False)  # no request writes after this
        self.janitor.stop()
        ONE_SHOT.clear()
        close_engines()


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def stop_on_sigterm() -> None:
    """SIGTERM stops the app as Ctrl-C does (by default it ends Python on the spot, and the
    database's write-ahead log stays un-checkpointed). The first of either stops it; from then
    on both are ignored: a second one (an impatient Ctrl-C, a service manager that repeats its
    SIGTERM) would raise KeyboardInterrupt in the middle of the stop and skip the checkpoint.
    The stop takes seconds (Gradio waits 5 s for open connections); SIGKILL still ends a stuck
    one. Only the main thread can set handlers: elsewhere this does nothing."""
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            signal.signal(signum, _interrupt)


def _interrupt(_signum, _frame) -> None:
    _ignore_stop_signals()
    raise KeyboardInterrupt


def _ignore_stop_signals() -> None:
    """Ignore SIGTERM and SIGINT from now on where they are ours (``stop_on_sigterm``): a process
    that did not ask for that (a test run calling ``Housekeeping.stop``) keeps its own handlers.
    Signal handlers run in the main thread, so ``_interrupt`` is always there."""
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            if signal.getsignal(signum) is _interrupt:
                signal.signal(signum, signal.SIG_IGN)
