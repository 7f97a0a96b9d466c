"""Shared fixtures: where the shared data and a browser are, and free ports."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The project's data lives outside it: ../shared/data, or a path in SRGAN_SHARED_DATA.
SHARED_DATA = Path(os.environ.get("SRGAN_SHARED_DATA", ROOT.parent / "shared" / "data"))
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "benchmarks").is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set SRGAN_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def benchmarks(shared_data: Path) -> Path:
    return shared_data / "benchmarks"


@pytest.fixture(scope="session")
def train_data(shared_data: Path) -> Path:
    path = shared_data / "train"
    if not path.is_dir():
        pytest.skip(f"training photos not found at {path}")
    return path


@pytest.fixture(scope="session")
def chromium_path() -> str:
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        pytest.skip("the playwright package is not installed")
    return CHROMIUM


# Flags for a headless Chromium on a machine with no network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Slow tests run only when -m names them (-m slow). Done here, not with -m "not slow" in
    pytest.ini, so that another -m (the fast loop's -m "not e2e") does not bring them back."""
    if "slow" in (config.getoption("markexpr") or ""):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


def call_main(main, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[object, str, str]:
    """A command's ``main(argv)`` in this interpreter (no process start): (exit code, stdout,
    stderr). argparse's refusals exit with 2; an uncaught exception, which a user would see as a
    traceback, fails the test."""
    try:
        code = main(argv)
    except SystemExit as exited:
        code = exited.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
