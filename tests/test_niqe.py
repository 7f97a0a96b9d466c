"""NIQE: estimators, known answers, agreement with an independent implementation, sensitivity
to distortions, the pristine models and the CLI."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter
from scipy.special import gamma
from scipy.stats import gennorm
from skimage import data

from conftest import call_main
from srgan.imresize import imresize
from srgan.evaluate import load_pair, read_uint8
from srgan.images import tensor_to_array
from srgan.inference import bicubic_upscale_tensor
from srgan.niqe import main as niqe_main
from srgan.niqe import (
    MODEL_FILES,
    MissingPristineModelError,
    PristineModel,
    aggd_mean,
    fit_aggd,
    fit_pristine_model,
    halve_bicubic,
    load_pristine_model,
    mscn,
    niqe,
    niqe_features,
)

ROOT = Path(__file__).resolve().parent.parent


def blurred(image: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    out = gaussian_filter(image.astype(np.float64), sigma=(sigma, sigma, 0)[: image.ndim])
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def noisy(image: np.ndarray, sigma: float = 15.0, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0.0, sigma, image.shape)
    return np.clip(np.round(image + noise), 0, 255).astype(np.uint8)


def read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


# ---------------------------------------------------------------- known answers


def test_mscn_of_flat_areas_is_exactly_zero() -> None:
    # Exactly: rounding noise there would decide the sign of many AGGD samples.
    assert np.abs(mscn(np.full((64, 80), 128.0))).max() == 0.0
    assert np.abs(mscn(np.zeros((32, 32)))).max() == 0.0
    ramp = np.zeros((64, 64))
    ramp[:, 32:] = np.arange(32) * 7.0 + 3.0
    coefficients = mscn(ramp)
    assert np.all(coefficients[:, :28] == 0.0) and np.abs(coefficients[:, 36:-4]).max() < 0.5


def test_mscn_of_a_step_is_signed_and_bounded() -> None:
    step = np.zeros((32, 32))
    step[:, 16:] = 200.0
    coefficients = mscn(step)
    assert coefficients[:, 15].max() < -0.5 and coefficients[:, 16].min() > 0.5
    assert np.abs(coefficients[:, :8]).max() < 1e-9  # far from the edge, flat


def test_halving_matches_matlab_style_imresize() -> None:
    plane = np.random.default_rng(1).uniform(0, 255, (97, 192))
    expected = imresize(torch.from_numpy(plane)[None], scale=0.5)[0].numpy()
    np.testing.assert_allclose(halve_bicubic(plane), expected, atol=1e-9)


@pytest.mark.parametrize(("shape", "beta_left", "beta_right"),
                         [(0.8, 0.3, 0.6), (2.0, 1.0, 0.5), (1.5, 0.4, 0.4), (0.6, 0.7, 0.7)])
def test_aggd_fit_recovers_shape_and_scales(shape: float, beta_left: float, beta_right: float) -> None:
    rng = np.random.default_rng(3)
    n = 400_000
    magnitude = np.abs(gennorm.rvs(shape, size=n, random_state=rng))
    # The AGGD puts mass beta_l / (beta_l + beta_r) on the left side.
    left = rng.random(n) < beta_left / (beta_left + beta_right)
    samples = np.where(left, -beta_left * magnitude, beta_right * magnitude)
    fitted_shape, fitted_left, fitted_right = fit_aggd(samples)
    assert fitted_shape == pytest.approx(shape, rel=0.05)
    assert fitted_left == pytest.approx(beta_left, rel=0.03)
    assert fitted_right == pytest.approx(beta_right, rel=0.03)
    true_mean = (beta_right - beta_left) * gamma(2 / shape) / gamma(1 / shape)
    assert aggd_mean(fitted_shape, fitted_left, fitted_right) == pytest.approx(true_mean, abs=0.01)
    assert np.mean(samples) == pytest.approx(true_mean, abs=0.01)


def test_aggd_shape_is_a_table_entry_as_in_matlab() -> None:
    samples = np.random.default_rng(4).normal(size=(5, 200_000))
    shapes, _, _ = fit_aggd(samples)
    # MATLAB picks from 0.2:0.001:10 (the nearest ratio), it does not interpolate.
    np.testing.assert_allclose(shapes * 1000, np.round(shapes * 1000), atol=1e-6)
    np.testing.assert_allclose(shapes, 2.0, atol=0.1)


def test_aggd_of_zero_or_one_sided_samples_gives_nan_scales_not_errors() -> None:
    shape, left, right = fit_aggd(np.zeros((2, 100)))
    # MATLAB's min over an all-NaN vector returns the first entry: the authors' model has that.
    assert np.all(shape == pytest.approx(0.2)) and np.isnan(left).all() and np.isnan(right).all()
    shape, left, right = fit_aggd(np.abs(np.random.default_rng(5).normal(size=100)) + 0.1)
    assert np.isnan(left) and right > 0


# ---------------------------------------------------------------- features and inputs


def test_features_shape_and_patch_grid() -> None:
    features, sharpness = niqe_features(data.astronaut())  # 512x512 -> 5x5 patches of 96
    assert features.shape == (25, 36) and sharpness.shape == (25,)
    assert np.isfinite(features).all() and (sharpness > 0).all()


def test_grey_float_and_rgb_inputs() -> None:
    image = data.coffee()
    assert niqe(image.astype(np.float64)) == pytest.approx(niqe(image), rel=1e-9)
    assert 0 < niqe(data.camera()) < 20  # grey (H, W)


@pytest.mark.parametrize("size", [(95, 500), (96, 191), (50, 50)])
def test_too_small_image_is_a_clear_value_error(size: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="at least two 96x96 patches"):
        niqe(np.zeros(size + (3,), np.uint8))


def test_flat_image_is_a_clear_value_error() -> None:
    with pytest.raises(ValueError, match="flat"):
        niqe(np.full((200, 300), 90, np.uint8))


def test_bad_shape_is_a_clear_value_error() -> None:
    with pytest.raises(ValueError, match="grey or"):
        niqe(np.zeros((200, 300, 2), np.uint8))


# ---------------------------------------------------------------- the score behaves


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea"])
def test_blur_and_noise_raise_niqe(name: str) -> None:
    image = getattr(data, name)()
    clean = niqe(image)
    assert niqe(blurred(image)) > clean + 1.0
    assert niqe(noisy(image)) > clean + 1.0


def test_blur_and_noise_raise_niqe_on_a_benchmark_image(benchmarks: Path) -> None:
    image = read_rgb(benchmarks / "Set14" / "HR" / "lenna.png")
    clean = niqe(image)
    assert niqe(blurred(image)) > clean + 1.0
    assert niqe(noisy(image, sigma=10.0)) > clean + 1.0


def bsd100_scores(benchmarks: Path, *, every: int) -> tuple[np.ndarray, np.ndarray]:
    """NIQE of BSD100 HR images and of bicubic 4x upscales of their LR inputs (every n-th image)."""
    root = benchmarks / "BSD100"
    hr_scores, bicubic_scores = [], []
    for path in sorted((root / "HR").glob("*.png"))[::every]:
        lr = torch.from_numpy(read_rgb(root / "LR_bicubic_x4" / path.name).copy()).permute(2, 0, 1).double()
        bicubic = imresize(lr, scale=4).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
        hr_scores.append(niqe(read_rgb(path)))
        bicubic_scores.append(niqe(bicubic))
    return np.array(hr_scores), np.array(bicubic_scores)


def test_hr_is_more_natural_than_bicubic_on_bsd100_subset(benchmarks: Path) -> None:
    hr, bicubic = bsd100_scores(benchmarks, every=5)
    assert len(hr) == 20
    # Measured on these 20 (standard model): HR 3.29, bicubic 7.61.
    assert hr.mean() < bicubic.mean() - 3.0
    assert np.mean(hr < bicubic) >= 0.9


@pytest.mark.slow
def test_hr_is_more_natural_than_bicubic_on_all_of_bsd100(benchmarks: Path) -> None:
    hr, bicubic = bsd100_scores(benchmarks, every=1)
    assert len(hr) == 100
    # Measured (standard model, no border): HR 3.22, bicubic 7.69, HR lower on all 100 images.
    assert hr.mean() < bicubic.mean() - 3.0
    assert np.mean(hr < bicubic) > 0.95


# ---------------------------------------------------------------- the pristine model


STANDARD_SHA256 = "2a7c182a68c9e7f1b2e2e5ec723279d6f65d912b6fcaf37eb2bf03d7367c4296"  # BasicSR 1.4.2's file


def test_the_default_model_is_the_authors_standard_one() -> None:
    path = MODEL_FILES["standard"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == STANDARD_SHA256
    assert (path.parent / "NOTICE.md").is_file()
    model = load_pristine_model()
    assert model is load_pristine_model("standard") and model.meta["name"] == "standard"
    assert model.mean.shape == (36,) and model.cov.shape == (36, 36)
    np.testing.assert_allclose(model.cov, model.cov.T)
    # Features 1 and 19: the MSCN shape at each scale, near 2.6 / 3.0 for pristine photos.
    assert model.mean[0] == pytest.approx(2.6013, abs=1e-4) and model.mean[18] == pytest.approx(2.9695, abs=1e-4)


def test_the_project_model_is_from_the_training_photos_with_the_same_features() -> None:
    model = load_pristine_model("project")
    assert model.mean.shape == (36,) and model.cov.shape == (36, 36)
    assert model.meta["patch_size"] == 96 and model.meta["sharpness_threshold"] == 0.75
    assert model.meta["images"] >= 100 and "train" in model.meta["data"]
    assert "benchmarks" not in model.meta["data"] and "MATLAB" in model.meta["feature_code"]
    assert MODEL_FILES["project"].stat().st_size < 100_000
    # The two models rank images alike but score them differently.
    sharp, soft = data.astronaut(), blurred(data.astronaut())
    assert niqe(soft, model="project") > niqe(sharp, model="project")
    assert niqe(sharp, model="project") != pytest.approx(niqe(sharp), abs=0.05)


def test_missing_or_unknown_models_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(MissingPristineModelError, match="python -m srgan.niqe fit --out"):
        load_pristine_model(tmp_path / "absent.npz")
    with pytest.raises(ValueError, match="standard, project"):
        load_pristine_model("matlab")


def recorded_image(benchmarks: Path, name: str) -> np.ndarray:
    """An image of tests/data/niqe_basicsr_reference.csv by its name there: SET/HR/FILE or
    SET/bicubic_x4/FILE (the MATLAB bicubic 4x upscale of the set's LR input)."""
    dataset, kind, file = name.split("/")
    if kind == "HR":
        return read_uint8(benchmarks / dataset / "HR" / file)
    _, lr = load_pair(benchmarks / dataset, file)
    with torch.inference_mode():
        return tensor_to_array(bicubic_upscale_tensor(lr))


def test_agrees_with_an_independent_implementation(benchmarks: Path) -> None:
    """BasicSR 1.4.2's NIQE (a port of the MATLAB release) on 42 benchmark images, recorded by
    scripts/niqe_reference.py. Measured: 35 of 42 within 0.001, largest 0.012 (BSD100 002, a quarter
    flat), where BasicSR computes in float32 and we in float64."""
    with open(ROOT / "tests" / "data" / "niqe_basicsr_reference.csv") as f:
        reference = {row["image"]: (float(row["niqe_basicsr"]), int(row["crop_border"])) for row in csv.DictReader(f)}
    assert len(reference) >= 40
    differences = np.array([abs(niqe(recorded_image(benchmarks, name), crop_border=border) - value)
                            for name, (value, border) in reference.items()])
    assert differences.max() < 0.05, differences.max()
    assert np.median(differences) < 1e-3


def test_an_image_scores_zero_against_its_own_model() -> None:
    features, _ = niqe_features(data.astronaut())
    own = PristineModel(mean=features.mean(axis=0), cov=np.cov(features, rowvar=False), meta={"patch_size": 96})
    assert niqe(data.astronaut(), model=own) == pytest.approx(0.0, abs=1e-6)


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]):
    """``python -m srgan.niqe ARGS`` in this interpreter: (exit code, stdout, stderr)."""
    return lambda *args: call_main(niqe_main, list(args), capsys)


def test_fit_cli_writes_a_model_with_metadata(train_data: Path, tmp_path: Path, run_cli) -> None:
    out = tmp_path / "pristine.npz"
    code, _, err = run_cli("fit", "--data", str(train_data / "bsds500"), "--out", str(out), "--max-images", "20")
    assert code == 0, err
    model = load_pristine_model(out)
    assert model.meta["images"] == 20 and model.meta["patches"] > 36
    assert model.meta["date"] and model.meta["patch_size"] == 96
    # A model from twenty photos still ranks a blurred photo as less natural.
    image = data.astronaut()
    assert niqe(blurred(image), model=model) > niqe(image, model=model)


def test_fit_refuses_too_few_photos_clearly(train_data: Path, tmp_path: Path, run_cli) -> None:
    with pytest.raises(ValueError, match="too few"):
        fit_pristine_model(train_data / "bsds500", max_images=2)
    with pytest.raises(ValueError, match="no images"):
        fit_pristine_model(tmp_path)
    out = tmp_path / "pristine.npz"
    code, _, err = run_cli("fit", "--data", str(tmp_path / "nowhere"), "--out", str(out))
    assert code == 2 and "not found" in err
    assert not out.exists()


def test_score_cli_prints_scores_and_clear_errors(tmp_path: Path, run_cli) -> None:
    good = tmp_path / "coffee.png"
    Image.fromarray(data.coffee()).save(good)
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(small)
    code, out, bad_err = run_cli("score", str(good), str(bad), str(small))
    assert code == 1
    score, name = out.strip().split("\t")
    assert float(score) == pytest.approx(niqe(data.coffee()), abs=1e-3) and name == str(good)
    code, out, _ = run_cli("score", "--model", "project", "--crop-border", "4", str(good))
    assert code == 0
    assert float(out.split("\t")[0]) == pytest.approx(niqe(data.coffee(), model="project", crop_border=4), abs=1e-3)
    code, _, err = run_cli("score", "--model", "matlab", str(good))
    assert code == 2 and "standard, project" in err
    assert str(bad) in bad_err and str(small) in bad_err
    assert "notes.png: notes.png" not in bad_err  # the file is named once
