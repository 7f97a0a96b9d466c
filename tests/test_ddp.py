"""DistributedDataParallel on CPU: two gloo ranks via torchrun on 127.0.0.1 keep identical
weights, learn, write the log and checkpoint once, and resume."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent


def torchrun(args: list[str], hashes: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
               "-m", "srgan.train", *args, "--param-hash-dir", str(hashes)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_two_gloo_ranks_stay_in_sync_and_resume(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    smooth = np.linspace(0, 255, 96)[None, :, None] * np.ones((96, 1, 3))
    for i in range(5):
        noisy = smooth + rng.normal(0, 20, smooth.shape) + 40 * i
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(photos / f"{i}.png")
    out, hashes = tmp_path / "run", tmp_path / "hashes"
    args = ["--stage", "srresnet", "--data", str(photos), "--num-blocks", "1", "--batch-size", "2",
            "--patch", "16", "--lr", "2e-3", "--log-every", "5", "--val-every", "100", "--val-patch", "32",
            "--device", "cpu", "--no-progress", "--out", str(out)]
    torchrun([*args, "--iterations", "15"], hashes)

    rank0, rank1 = (hashes / "rank0.txt").read_text(), (hashes / "rank1.txt").read_text()
    assert len(rank0) == 64 and rank0 == rank1  # DDP kept the parameters identical
    with (out / "log.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [5, 10, 15]  # logged once, by rank 0
    assert [int(r["patches_seen"]) for r in rows] == [20, 40, 60]  # 2 ranks x batch 2 per step
    assert float(rows[-1]["loss_mse"]) < float(rows[0]["loss_mse"])
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".tmp") == []
    ckpt = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert ckpt["step"] == 15 and len(ckpt["rng"]) == 2  # each rank's RNG stream is kept
    assert not torch.equal(ckpt["rng"][0]["sampler"]["generator"], ckpt["rng"][1]["sampler"]["generator"])
    meta = torch.load(out / "srresnet_x4.pt", map_location="cpu", weights_only=True)["meta"]
    assert meta["world_size"] == 2 and meta["global_batch_size"] == 4

    (hashes / "rank0.txt").unlink()
    (hashes / "rank1.txt").unlink()
    torchrun([*args, "--iterations", "20", "--resume"], hashes)
    assert (hashes / "rank0.txt").read_text() == (hashes / "rank1.txt").read_text() != rank0
    ckpt = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert ckpt["step"] == 20 and ckpt["patches_seen"] == 80


@pytest.mark.slow
def test_two_gloo_ranks_srgan_stage(tmp_path: Path) -> None:
    """The SRGAN stage (two DDP models, D frozen in the G step) under 2 ranks."""
    from skimage import data

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("astronaut", "coffee", "chelsea"):
        Image.fromarray(getattr(data, name)()).save(photos / f"{name}.png")
    hashes = tmp_path / "hashes"
    torchrun(["--stage", "srgan", "--init", "none", "--data", str(photos), "--num-blocks", "1",
              "--batch-size", "2", "--patch", "16", "--iterations", "4", "--log-every", "2",
              "--val-patch", "32", "--device", "cpu", "--no-progress", "--out", str(tmp_path / "gan")], hashes)
    assert (hashes / "rank0.txt").read_text() == (hashes / "rank1.txt").read_text()
