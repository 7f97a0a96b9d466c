"""Figures for results/reliability.md: Gradio's cache during N compares, before and after the fix.

    python scripts/cache_probe.py --app app.py [--compares 10] [--size 256] [--wait 75]
    python scripts/cache_probe.py --app /tmp/orig/app.py   # `git show 23de618:app.py`

Starts ``python APP`` on a synthetic study (an old app.py gets a fresh GRADIO_TEMP_DIR so that
only its own files count; the new one is given none, so it uses <app dir>/cache), runs N
LR-mode compares of a SIZExSIZE photo through the API, prints the cache's size after each, then
every 15 s for --wait seconds, and the /tmp/srgan-results-* folders left after SIGTERM.
Extra environment (SRGAN_CACHE_MB=20 SRGAN_CACHE_MINUTES=1) passes through.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gradio_client import Client, handle_file  # noqa: E402

from survey.study import db  # noqa: E402
from tools import loadtest  # noqa: E402
from tests.conftest import free_port  # noqa: E402


def size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20 if folder.exists() else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--app", type=Path, default=ROOT / "app.py")
    parser.add_argument("--compares", type=int, default=10)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--wait", type=float, default=75.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="storage-cache-bench-"))
    app_dir = work / "app"
    db_url = f"sqlite:///{app_dir / 'study.sqlite'}"
    loadtest.prepare_load_study(db_url=db_url, app_dir=app_dir, study="bench", stimuli=8)
    db.close_engines()
    old_app = args.app.resolve() != (ROOT / "app.py").resolve()
    env = {key: value for key, value in os.environ.items() if key != "GRADIO_TEMP_DIR"}
    env.update(PYTHONPATH=str(ROOT), GRADIO_ANALYTICS_ENABLED="False")
    cache = work / "gradio" if old_app else app_dir / "cache"
    if old_app:
        env["GRADIO_TEMP_DIR"] = str(cache)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    started_at = time.time()
    process = subprocess.Popen([sys.executable, str(args.app), "--port", str(port), "--app-dir", str(app_dir),
                                "--db-url", db_url, "--study", "bench", "--admin-token", "x" * 24],
                               cwd=ROOT, env=env, stdout=open(work / "app.log", "wb"), stderr=subprocess.STDOUT)
    try:
        loadtest.wait_until_up(url, process, timeout_s=180)
        rng = np.random.default_rng(0)
        photo = work / "input.png"
        Image.fromarray(rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)).save(photo)
        client = Client(url, verbose=False, download_files=False)
        print(f"{args.app} cache {cache}: {size_mb(cache):.1f} MB at start", flush=True)
        for index in range(args.compares):
            # A new picture each time (the same one would reuse the cached files).
            Image.fromarray(rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)).save(photo)
            started = time.perf_counter()
            client.predict(handle_file(str(photo)), "Treat as LR", 1.0, api_name="/compare")
            print(f"compare {index + 1}: {size_mb(cache):.1f} MB ({time.perf_counter() - started:.1f} s)", flush=True)
        waited = 0.0
        while waited < args.wait:
            time.sleep(15)
            waited += 15
            print(f"{waited:.0f} s after the last compare: {size_mb(cache):.1f} MB", flush=True)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    # The old app named its folder srgan-results-<random>, the new one srgan-results-<pid>-<random>.
    left = [p for p in Path(tempfile.gettempdir()).glob("srgan-results-*") if p.stat().st_mtime > started_at]
    wal = app_dir / "study.sqlite-wal"
    print(f"after SIGTERM: cache {size_mb(cache):.1f} MB; srgan-results folders made since the start and left: {len(left)} "
          f"({len([p for p in left if p.name.startswith(f'srgan-results-{process.pid}-')])} named by its pid); "
          f"study.sqlite-wal {wal.stat().st_size if wal.exists() else 'absent'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
