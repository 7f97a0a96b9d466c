"""Resident memory of a real ``python app.py`` (trained weights, CPU) around three uploads of the
issue's 4x10000 PNG, then one 4x250000 PNG; run for the code before issue #19 (23de618) and for this one:

    rm -rf /tmp/oldtree && mkdir /tmp/oldtree && git archive 23de618 | tar -x -C /tmp/oldtree
    cp -r srgan/weights/*.pt /tmp/oldtree/srgan/weights/   # (if the archive lacks them)
    python scripts/thin_image_probe.py /tmp/oldtree
    python scripts/thin_image_probe.py .

Prints VmRSS (MiB) of the server after a warm-up comparison and after each upload, and the start
of each answer.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    tree = Path(sys.argv[1]).resolve()
    sys.path.insert(0, str(tree))
    from gradio_client import Client, handle_file

    from tools import loadtest

    assert Path(loadtest.__file__).resolve().is_relative_to(tree), loadtest.__file__
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        app_dir = root / "app"
        db_url = f"sqlite:///{app_dir / 'study.sqlite'}"
        loadtest.prepare_load_study(db_url=db_url, app_dir=app_dir, study="rss", stimuli=4)
        server = loadtest.AppProcess(app_dir=app_dir, db_url=db_url, study="rss")
        server.start()
        try:
            client = Client(server.url, verbose=False, download_files=False)

            def post(path: Path) -> str:
                try:
                    return "accepted: " + str(client.predict(handle_file(str(path)), "Auto", 1.0,
                                                             api_name="/compare")[0])
                except Exception as error:
                    return f"{type(error).__name__}: {error}"

            photo = root / "photo.png"
            Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(photo)
            post(photo)
            pid = server.process.pid
            print(f"tree {tree}")
            print(f"after a 64x48 warm-up comparison: {rss_mib(pid):,.0f} MiB")
            strip = root / "strip_4x10000.png"
            Image.fromarray(np.random.default_rng(1).integers(0, 256, (10_000, 4, 3), dtype=np.uint8)).save(strip)
            for attempt in range(1, 4):
                answer = post(strip)
                print(f"after 4x10000 upload {attempt}: {rss_mib(pid):,.0f} MiB; answer: {answer[:150]!r}")
            big = root / "strip_4x250000.png"
            Image.new("RGB", (250_000, 4), "gray").save(big)
            answer = post(big)
            print(f"after 4x250000 upload: {rss_mib(pid):,.0f} MiB; answer: {answer[:300]!r}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
