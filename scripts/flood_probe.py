"""A demo flood against a running app, and what a rater meanwhile sees: latency, refusals, server memory.

    python scripts/flood_probe.py [--clients 10] [--per-client 8] [--size 512]

Starts ``python app.py`` on a free 127.0.0.1 port with a temporary app folder and a small
study. A rater joins and rates (one second looking at each image, as a person would) while
``--clients`` loopback addresses (127.0.0.2, ...) each post ``--per-client`` comparisons of a
``--size`` px photo at once through the queue, as a script would. Prints the rater's call
latency before and during the flood, the refusals each side got, and the server's memory.
Nothing leaves this machine. Figures are recorded in results/reliability.md.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import secrets
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from gradio_client import Client
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools import loadtest  # noqa: E402


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024


def photo_png(size: int, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def rater(url: str, ratings: int, latencies: list[float], errors: list[str]) -> None:
    client = Client(url, verbose=False)
    try:
        state = client.predict("", True, api_name="/study_join")
        code, done = state["code"], 0
        while done < ratings and state["kind"] != "done":
            time.sleep(1.0)
            started = time.monotonic()
            if state["kind"] == "calibration":
                state = client.predict(code, state["presentation_id"], api_name="/study_continue")
            else:
                state = client.predict(code, state["presentation_id"], 3, api_name="/study_rate")
                done += 1
            latencies.append(1000 * (time.monotonic() - started))
            if not state["ok"]:
                errors.append(state["message"])
                return
    except Exception as error:  # a refusal at the queue arrives as an exception
        errors.append(str(error)[:200])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--per-client", type=int, default=8)
    parser.add_argument("--size", type=int, default=512, help="side of the flood's photos (treated as HR)")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="flood-probe-"))
    app_dir = root / "app"
    db_url = f"sqlite:///{app_dir / 'study.sqlite'}"
    loadtest.prepare_load_study(db_url=db_url, app_dir=app_dir, study="flood", stimuli=40)
    server = loadtest.AppProcess(app_dir=app_dir, db_url=db_url, study="flood")
    server.start()
    try:
        api = server.url + "gradio_api/"
        config = httpx.get(server.url + "config", timeout=30).json()
        compare_index = next(dep["id"] for dep in config["dependencies"] if dep.get("api_name") == "compare")
        rss_start = rss_mib(server.process.pid)

        quiet: list[float] = []
        quiet_errors: list[str] = []
        rater(server.url, 5, quiet, quiet_errors)

        addresses = [f"127.0.0.{i}" for i in range(2, 2 + args.clients)]
        clients = {a: httpx.Client(transport=httpx.HTTPTransport(local_address=a), timeout=120) for a in addresses}
        uploads = {}
        for i, (address, http) in enumerate(clients.items()):
            answer = http.post(api + "upload", files={"files": ("p.png", photo_png(args.size, i), "image/png")})
            uploads[address] = {"path": answer.json()[0], "meta": {"_type": "gradio.FileData"}}

        def flood(address: str) -> list[tuple[int, str]]:
            replies = []
            for _ in range(args.per_client):
                body = {"data": [uploads[address], "Treat as HR", 1.0], "fn_index": compare_index,
                        "session_hash": secrets.token_hex(8), "event_data": None, "trigger_id": None}
                answer = clients[address].post(api + "queue/join", content=json.dumps(body),
                                               headers={"content-type": "application/json"})
                replies.append((answer.status_code, answer.json().get("detail", "") if answer.status_code != 200 else ""))
            return replies

        busy: list[float] = []
        busy_errors: list[str] = []
        rating = threading.Thread(target=rater, args=(server.url, 10, busy, busy_errors))
        started = time.monotonic()
        with ThreadPoolExecutor(len(addresses)) as pool:
            replies = [reply for batch in pool.map(flood, addresses) for reply in batch]
        flood_s = time.monotonic() - started
        rating.start()
        rating.join()
        rss_flood = rss_mib(server.process.pid)
        admitted = sum(code == 200 for code, _ in replies)
        refused: dict[str, int] = {}
        for code, detail in replies:
            if code != 200:
                refused[f"{code} {detail[:70]}"] = refused.get(f"{code} {detail[:70]}", 0) + 1

        def summary(values: list[float]) -> str:
            if not values:
                return "none"
            ordered = sorted(values)
            return (f"p50 {statistics.median(ordered):.0f} ms, max {ordered[-1]:.0f} ms "
                    f"({len(ordered)} calls)")

        print(f"flood: {args.clients} clients x {args.per_client} comparisons of {args.size}x{args.size} "
              f"posted in {flood_s:.1f} s: {admitted} admitted")
        for reason, count in sorted(refused.items()):
            print(f"  refused {count}: {reason}")
        print(f"rater, quiet server:  {summary(quiet)}; errors: {quiet_errors or 'none'}")
        print(f"rater, during flood:  {summary(busy)}; errors: {busy_errors or 'none'}")
        print(f"server memory: {rss_start:.0f} MiB at start, {rss_flood:.0f} MiB after the flood")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
