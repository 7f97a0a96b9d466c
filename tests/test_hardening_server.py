"""What the running server admits (issue #19): a demo flood, malformed inputs, huge bodies, its internals.

One ``python app.py`` on 127.0.0.1 for the module. Floods come from several loopback
addresses (127.0.0.2, 127.0.0.3, ...: all of 127/8 is this machine), so the per-client share
and the demo's own bound are both exercised; nothing leaves the machine.
"""

from __future__ import annotations

import io
import json
import re
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio_client import Client
from PIL import Image

from survey.study.admission import PER_CLIENT_MESSAGE, ROOM_LIMITS, DEMO_ROOM
from survey.study import db
from tools import loadtest

STUDY = "hardening"
TOKEN = "hardening-admin-token-0123456789"
MAX_UPLOAD_MB = 2

pytestmark = pytest.mark.e2e


class Server:
    def __init__(self, process: loadtest.AppProcess):
        self.process = process
        self.url = process.url
        self.api = process.url + "gradio_api/"
        config = httpx.get(process.url + "config", timeout=30).json()
        self.fn_index = {dep.get("api_name"): dep["id"] for dep in config["dependencies"] if dep.get("api_name")}

    def client(self, address: str = "127.0.0.1") -> httpx.Client:
        return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=60)

    def upload(self, http: httpx.Client, png: bytes) -> dict:
        answer = http.post(self.api + "upload", files={"files": ("photo.png", png, "image/png")})
        answer.raise_for_status()
        return {"path": answer.json()[0], "meta": {"_type": "gradio.FileData"}}

    def join(self, http: httpx.Client, api_name: str, data: list, *, raw: bytes | None = None) -> httpx.Response:
        body = {"data": data, "fn_index": self.fn_index[api_name], "session_hash": secrets.token_hex(8),
                "event_data": None, "trigger_id": None}
        if raw is not None:
            return http.post(self.api + "queue/join", content=raw, headers={"content-type": "application/json"})
        return http.post(self.api + "queue/join", content=json.dumps(body), headers={"content-type": "application/json"})

    def rss_mib(self) -> float:
        status = Path(f"/proc/{self.process.process.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024

    def settled_rss_mib(self, *, spread: float = 2.0, timeout: float = 20.0) -> float:
        """The server's RSS once it holds still (five reads over a second within ``spread`` MiB):
        comparisons queued by earlier tests of this module may still be finishing, and what they
        allocate must not be charged to the next test (CI once saw +66 MiB that way)."""
        reads = [self.rss_mib()]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.25)
            reads = [*reads[-4:], self.rss_mib()]
            if len(reads) == 5 and max(reads) - min(reads) < spread:
                break
        return reads[-1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("admission")
    app_dir = root / "app"
    db_url = f"sqlite:///{app_dir / 'study.sqlite'}"
    loadtest.prepare_load_study(db_url=db_url, app_dir=app_dir, study=STUDY, stimuli=12)
    process = loadtest.AppProcess(app_dir=app_dir, db_url=db_url, study=STUDY,
                                  extra_args=("--max-upload-mb", str(MAX_UPLOAD_MB)),
                                  env={"SRGAN_ADMIN_TOKEN": TOKEN})
    process.start()
    yield Server(process)
    process.stop()
    db.dispose_engine(db_url)


def _png(size: int = 512, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _rate_until(client: Client, stop: threading.Event, latencies: list[float], errors: list[str]) -> None:
    """A rater who keeps rating (through the page's own endpoints) until told to stop."""
    try:
        state = client.predict("", True, api_name="/study_join")
        code = state["code"]
        while not stop.is_set() and state["kind"] != "done":
            time.sleep(1.0)  # looking at the image: the study refuses ratings faster than a person
            started = time.monotonic()
            if state["kind"] == "calibration":
                state = client.predict(code, state["presentation_id"], api_name="/study_continue")
            else:
                state = client.predict(code, state["presentation_id"], 3, api_name="/study_rate")
            latencies.append(time.monotonic() - started)
            if not state["ok"]:
                errors.append(state["message"])
                return
    except Exception as error:  # a refusal at the queue arrives as an exception
        errors.append(str(error))


def test_one_client_gets_only_its_share_of_the_demo(server):
    with server.client("127.0.0.20") as http:
        image = server.upload(http, _png(seed=99))
        answers = [server.join(http, "compare", [image, "Treat as HR", 1.0]) for _ in range(12)]
    limit = ROOM_LIMITS[DEMO_ROOM].per_client
    assert sum(a.status_code == 200 for a in answers) <= limit
    refused = [a for a in answers if a.status_code == 503]
    assert refused and refused[0].json()["detail"] == PER_CLIENT_MESSAGE.format(count=limit)


def test_a_demo_flood_from_many_clients_leaves_raters_rating(server):
    """Ten clients post eight comparisons each at once (the old global queue bound of 64 sent
    every rater HTTP 503 "Queue is full"): each client gets its share, the demo its bound, and
    a rater rating meanwhile is never refused."""
    addresses = [f"127.0.0.{i}" for i in range(2, 12)]
    clients = {address: server.client(address) for address in addresses}
    files = {address: server.upload(http, _png(seed=i)) for i, (address, http) in enumerate(clients.items())}

    stop, latencies, rater_errors = threading.Event(), [], []
    rater = threading.Thread(target=_rate_until, args=(Client(server.url, verbose=False), stop, latencies,
                                                       rater_errors))
    rater.start()

    def flood(address: str) -> list[httpx.Response]:
        return [server.join(clients[address], "compare", [files[address], "Treat as HR", 1.0]) for _ in range(8)]

    with ThreadPoolExecutor(len(addresses)) as pool:
        answers = dict(zip(addresses, pool.map(flood, addresses)))
    # The rater goes on while the demo's queue is still full: three answers, however slow the machine.
    deadline = time.monotonic() + 120
    while len(latencies) < 3 and not rater_errors and rater.is_alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    stop.set()
    rater.join(timeout=120)

    limit = ROOM_LIMITS[DEMO_ROOM]
    admitted = {address: sum(a.status_code == 200 for a in replies) for address, replies in answers.items()}
    refusals = [a.json()["detail"] for replies in answers.values() for a in replies if a.status_code != 200]
    assert all(a.status_code in (200, 503) for replies in answers.values() for a in replies)
    assert all(count <= limit.per_client for count in admitted.values()), admitted
    # Ten clients x six would be 60: the demo's own bound (plus the few already running) stops them.
    assert sum(admitted.values()) <= limit.waiting + len(addresses), admitted
    assert refusals and all(message in (limit.busy_message,) or message.startswith("You already have")
                            for message in refusals), set(refusals)
    assert not rater_errors, rater_errors
    assert len(latencies) >= 3  # the rater went on rating during the flood
    for http in clients.values():
        http.close()


@pytest.mark.parametrize("api_name, data, expected", [
    ("update_zoom", [None, float("nan"), 50, 48], r"x \(%\) must be a number"),
    ("update_zoom", [None, "NaN", 50, 48], r"x \(%\) must be a number"),
    ("update_zoom", [None, 50, 50, 1e9], r"Crop \(output px\) must be from 16 to 128"),
    ("blend", [None, True], r"α must be a number"),
    ("compare", [None, "Treat as SVG", 1.0], r"Mode must be one of Auto"),
    ("compare", [None, "Auto", 7.5], r"α must be from 0 to 1, not 7.5"),
    ("compare", [{"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}, "Auto", 1.0],
     r"must be a file uploaded to this server first"),
    ("compare", [{"path": "https://example.com/a.png"}, "Auto", 1.0], r"uploaded to this server first"),
    ("compare", [None, "Auto", 1.0, 4, 5], r"has 5 inputs; this action takes 3"),
])
def test_a_malformed_call_is_refused_before_the_queue_with_what_to_fix(server, api_name, data, expected):
    log_before = len(server.process.log_tail(10**9))
    with server.client() as http:
        answer = server.join(http, api_name, data)
    assert answer.status_code == 422
    assert re.search(expected, answer.json()["detail"][0]["message"]), answer.json()
    time.sleep(0.3)
    assert "Traceback" not in server.process.log_tail(10**9)[log_before:]


def test_a_call_naming_a_server_file_does_not_reveal_the_server_layout(server):
    """The database's own path as the image: refused without a word about the app folder."""
    database = server.process.db_url.removeprefix("sqlite:///")
    with server.client() as http:
        answer = server.join(http, "compare", [{"path": database, "meta": {"_type": "gradio.FileData"}}, "Auto", 1.0])
    assert answer.status_code == 422
    assert str(server.process.app_dir) not in answer.text and "sqlite" not in answer.text


def test_queued_events_cannot_be_run_around_the_queue(server):
    """/run/<name> would run a comparison with no queue, no bound and no input check."""
    with server.client() as http:
        answer = http.post(server.api + "run/compare", json={"data": [None, "Auto", 1.0]})
    assert answer.status_code == 404


def test_the_monitoring_dashboard_is_off_and_its_key_never_printed(server):
    with server.client() as http:
        answer = http.get(server.url + "gradio_api/monitoring")
        answer_root = http.get(server.url + "monitoring")
    assert answer.status_code in (403, 404) and answer_root.status_code in (403, 404)
    time.sleep(0.3)
    assert "Monitoring URL" not in server.process.log_tail(10**9)


def test_a_huge_body_is_refused_before_it_is_read(server):
    """A data: URL of 3x the upload limit inside the JSON, declared and streamed (no length)."""
    payload = "data:image/png;base64," + "A" * (3 * MAX_UPLOAD_MB * 2**20 * 4 // 3)
    body = json.dumps({"data": [{"url": payload, "meta": {"_type": "gradio.FileData"}}, "Auto", 1.0],
                       "fn_index": server.fn_index["compare"], "session_hash": "x" * 10}).encode()
    rss_before = server.settled_rss_mib()
    with server.client() as http:
        declared = server.join(http, "compare", [], raw=body)

        def chunks():
            for start in range(0, len(body), 2**16):
                yield body[start:start + 2**16]

        streamed = http.post(server.api + "queue/join", content=chunks(), headers={"content-type": "application/json"})
    for answer in (declared, streamed):
        assert answer.status_code == 413
        assert "larger than this server accepts" in answer.json()["detail"]
    assert server.rss_mib() - rss_before < 50
    with server.client() as http:  # the server still answers
        assert http.get(server.url + "config").status_code == 200
