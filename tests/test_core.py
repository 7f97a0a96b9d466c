"""The srgan core: networks, MATLAB bicubic, metrics, image loading, weights, tiled inference."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import structural_similarity

from conftest import call_main
from srgan.images import ImageError, load_image, pil_to_tensor
from srgan.imresize import imresize
from srgan import inference
from srgan.inference import Upscaler, downscale, match_channel_means, prepare_generator, resolve_precision, upscale_tensor
from srgan.metrics import psnr_y, rgb_to_y, ssim, ssim_y
from srgan.models import Discriminator, SRResNet, count_parameters, fold_batch_norm, srresnet_x4
from srgan.weights import MissingWeightsError, interpolate_state_dicts, load_generator, save_weights

ROOT = Path(__file__).resolve().parent.parent


# --- networks -----------------------------------------------------------------

def test_generator_shapes_and_parameter_count():
    g = srresnet_x4()
    assert round(count_parameters(g) / 1e6, 2) == 1.55  # the paper's 1.55M
    assert len(g.body) == 16
    assert g(torch.rand(2, 3, 12, 20)).shape == (2, 3, 48, 80)


def test_discriminator_layout():
    d = Discriminator()
    convs = [m for m in d.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 512, 512]
    assert [c.stride[0] for c in convs] == [1, 2, 1, 2, 1, 2, 1, 2]
    assert d(torch.rand(3, 3, 96, 96)).shape == (3,)
    with pytest.raises(ValueError):
        Discriminator(image_size=90)


# --- MATLAB bicubic -----------------------------------------------------------

def _matlab_agreement(folder: Path) -> tuple[float, float]:
    same = total = 0
    abs_diff = 0.0
    for hr_path in sorted((folder / "HR").glob("*.png")):
        hr = np.asarray(Image.open(hr_path))
        lr = np.asarray(Image.open(folder / "LR_bicubic_x4" / hr_path.name))
        t = torch.from_numpy(hr.astype(np.float64))
        t = t[None] if t.ndim == 2 else t.permute(2, 0, 1)
        ours = imresize(t, scale=1 / 4).round().clamp(0, 255).to(torch.uint8)
        ours = ours[0].numpy() if hr.ndim == 2 else ours.permute(1, 2, 0).numpy()
        assert ours.shape == lr.shape
        same += int((ours == lr).sum())
        total += lr.size
        abs_diff += float(np.abs(ours.astype(int) - lr).sum())
    return same / total, abs_diff / total


@pytest.mark.parametrize("name", ["Set5", "Set14", "BSD100"])
def test_imresize_matches_matlab(benchmarks, name):
    identical, mad = _matlab_agreement(benchmarks / name)
    assert identical >= 0.85 and mad <= 0.2, (identical, mad)


def test_imresize_batches_and_identity():
    x = torch.rand(2, 3, 16, 24, dtype=torch.float64)
    assert imresize(x, scale=1.0).sub(x).abs().max() < 1e-12
    batch = imresize(x, scale=0.5)
    assert batch.shape == (2, 3, 8, 12)
    assert torch.allclose(batch[1], imresize(x[1], scale=0.5))
    assert imresize(x, size=(5, 7)).shape == (2, 3, 5, 7)
    # A constant image stays constant (weights sum to one, mirror padding).
    assert torch.allclose(imresize(torch.full((1, 9, 9), 0.3), scale=4), torch.tensor(0.3))


# --- metrics ------------------------------------------------------------------

def test_psnr_by_hand():
    hr = np.full((20, 20, 3), 100, np.uint8)
    sr = hr.copy()
    sr[10, 10] = [110, 110, 110]  # Y: round(16 + 110 * 219 / 255) - round(16 + 100 * 219 / 255) = 110 - 102
    y_diff = rgb_to_y(sr)[10, 10] - rgb_to_y(hr)[10, 10]
    assert y_diff == 8
    expected = 10 * np.log10(255**2 / (64 / 144))  # one pixel of the 12x12 left after the border
    assert psnr_y(sr, hr) == pytest.approx(expected, abs=1e-9)
    assert psnr_y(hr, hr) == float("inf")


def test_greyscale_scored_on_grey_values():
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    sr = np.clip(hr.astype(int) + rng.integers(-5, 6, hr.shape), 0, 255).astype(np.uint8)
    mse = np.mean((sr[4:-4, 4:-4].astype(float) - hr[4:-4, 4:-4]) ** 2)
    assert psnr_y(sr, hr) == pytest.approx(10 * np.log10(255**2 / mse))
    # An RGB output of grey content scores the same as the grey output.
    assert psnr_y(np.stack([sr] * 3, -1), hr) == pytest.approx(psnr_y(sr, hr))


def test_ssim_matches_scikit_image():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (64, 80)).astype(np.float64)
    b = np.clip(a + rng.normal(0, 20, a.shape), 0, 255)
    ours = ssim(a, b)
    ref = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
    assert ours == pytest.approx(ref, abs=1e-4)
    assert ssim(a, a) == pytest.approx(1.0)


def test_texture_energy_is_the_mean_squared_laplacian_of_luminance():
    from srgan.metrics import texture_energy

    flat = np.full((40, 40), 90, np.uint8)
    assert texture_energy(flat) == 0.0
    checker = (np.indices((40, 40)).sum(0) % 2 * 100).astype(np.uint8)
    # Every interior pixel of a 0/100 checkerboard has Laplacian +-400.
    assert texture_energy(checker) == pytest.approx(400.0**2)
    # RGB is scored on Y (BT.601: 219/255 of a grey step), grey images on their values.
    rgb = np.stack([checker] * 3, -1)
    expected = (4 * np.round(16 + 100 * 219 / 255) - 4 * 16) ** 2
    assert texture_energy(rgb) == pytest.approx(expected)
    smooth = np.round(np.add.outer(np.arange(40), np.arange(40)) * 3.0).astype(np.uint8)
    assert texture_energy(smooth) == 0.0  # a linear ramp has no second derivative
    with pytest.raises(ValueError, match="too small"):
        texture_energy(np.zeros((9, 40), np.uint8))


def test_colour_shift_is_the_largest_channel_mean_difference():
    from srgan.metrics import colour_shift

    rng = np.random.default_rng(2)
    hr = rng.integers(20, 230, (48, 64, 3)).astype(np.uint8)
    assert colour_shift(hr, hr) == 0.0
    sr = hr.astype(int)
    sr[..., 2] -= 5  # a blue cast
    sr[..., 0] += 2
    assert colour_shift(sr.astype(np.uint8), hr) == pytest.approx(5.0)
    # Noise that averages out is not a shift; the 4-pixel border is left out.
    noisy = hr.astype(int) + rng.choice([-3, 3], hr.shape)
    noisy[:4] = 255
    assert colour_shift(np.clip(noisy, 0, 255).astype(np.uint8), hr) < 0.3
    grey = hr[..., 0]
    assert colour_shift(np.clip(grey.astype(int) + 7, 0, 255).astype(np.uint8), grey) == pytest.approx(7.0)


def test_bicubic_baseline_reproduces_paper(benchmarks):
    # The proof that data, degradation and metrics follow the paper's protocol (first 10 BSD100 images
    # here for speed; `python -m srgan.evaluate` runs all and lands within 0.1 dB on every set).
    from srgan.evaluate import evaluate, summarise

    table = summarise(evaluate(benchmarks, methods=["bicubic"], sets=("Set5", "Set14"), with_niqe=False))
    assert table[("bicubic", "Set5")]["psnr"] == pytest.approx(28.43, abs=0.1)
    assert table[("bicubic", "Set14")]["psnr"] == pytest.approx(25.99, abs=0.1)
    assert table[("bicubic", "Set5")]["ssim"] == pytest.approx(0.810, abs=0.003)
    assert table[("bicubic", "Set14")]["ssim"] == pytest.approx(0.702, abs=0.003)
    # Bicubic is smooth (measured texture ratio 0.032 / 0.013) and keeps the colours (0.02 / 0.06 grey levels).
    assert table[("bicubic", "Set5")]["texture"] < 0.1 and table[("bicubic", "Set14")]["texture"] < 0.1
    assert table[("hr", "Set14")]["texture"] == pytest.approx(1.0)
    assert table[("bicubic", "Set5")]["colour"] < 0.2 and table[("bicubic", "Set14")]["colour"] < 0.2


# --- image loading ------------------------------------------------------------

def _png(image: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=kw.pop("format", "PNG"), **kw)
    return buf.getvalue()


def test_load_image_converts_modes():
    grey = load_image(_png(Image.new("L", (8, 8), 128)))
    assert grey.mode == "RGB" and grey.getpixel((0, 0)) == (128, 128, 128)
    sixteen = Image.fromarray(np.full((8, 8), 65535, np.uint16))
    assert load_image(_png(sixteen)).getpixel((1, 1)) == (255, 255, 255)
    palette = Image.new("RGB", (8, 8), (10, 200, 30)).convert("P")
    assert load_image(_png(palette)).mode == "RGB"
    rgba = load_image(_png(Image.new("RGBA", (8, 8), (1, 2, 3, 4))))
    assert rgba.mode == "RGBA"
    cmyk = load_image(_png(Image.new("CMYK", (8, 8), (0, 0, 0, 0)), format="JPEG"))
    assert cmyk.mode == "RGB"


def test_load_image_honours_exif_orientation():
    image = Image.new("RGB", (20, 10), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    loaded = load_image(_png(image, format="JPEG", exif=exif.tobytes()))
    assert loaded.size == (10, 20)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"this is not an image at all", "not an image"),
        ("truncated", "truncated"),
        ("tiny", "at least"),
        ("huge", "megapixels"),
        ("animated", "animated"),
    ],
)
def test_load_image_refuses_bad_input(data, message):
    if data == "truncated":
        noise = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
        full = _png(Image.fromarray(noise))
        data = full[: len(full) // 2]
    elif data == "tiny":
        data = _png(Image.new("RGB", (1, 1)))
    elif data == "huge":
        data = _png(Image.new("RGB", (3000, 2000)))
    elif data == "animated":
        frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0))]
        buf = io.BytesIO()
        frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
        data = buf.getvalue()
    with pytest.raises(ImageError, match=message):
        load_image(data, max_pixels=1_000_000)


def test_small_pixel_limits_are_spelled_in_pixels():
    with pytest.raises(ImageError, match=r"10x10 = 100 pixels; the limit is 50 pixels"):
        load_image(_png(Image.new("RGB", (10, 10))), max_pixels=50)


# --- weights and inference ----------------------------------------------------

@pytest.fixture
def random_weights(tmp_path, monkeypatch):
    torch.manual_seed(0)
    for name in ("srresnet_x4", "srgan_x4"):
        g = SRResNet(num_blocks=2)
        save_weights(g, tmp_path / f"{name}.pt", {"stage": "test", "note": "random init"})
    monkeypatch.setenv("SRGAN_WEIGHTS_DIR", str(tmp_path))
    return tmp_path


def test_missing_weights_name_file_and_command(tmp_path, monkeypatch):
    monkeypatch.setenv("SRGAN_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(MissingWeightsError, match=r"srresnet_x4\.pt.*python -m srgan\.train --stage srresnet"):
        load_generator("srresnet_x4")
    assert Upscaler().available_methods() == ["nearest", "bicubic"]


def test_upscaler_names_every_missing_file_a_call_needs(tmp_path, monkeypatch):
    # Only SRGAN is there: SRGAN works, a blend needs SRResNet's file too and says so.
    torch.manual_seed(0)
    save_weights(SRResNet(num_blocks=2), tmp_path / "srgan_x4.pt", {"stage": "test"})
    monkeypatch.setenv("SRGAN_WEIGHTS_DIR", str(tmp_path))
    up, image = Upscaler(), Image.new("RGB", (6, 4), (10, 200, 30))
    assert up.upscale(image, "srgan").size == up.upscale(image, "srgan", alpha=1.0).size == (24, 16)
    with pytest.raises(MissingWeightsError) as blend:
        up.upscale(image, "srgan", alpha=0.5)
    assert blend.value.names == ("srresnet_x4",) and str(tmp_path / "srresnet_x4.pt") in str(blend.value)
    assert "python -m srgan.train --stage srresnet" in str(blend.value) and '"bicubic"' in str(blend.value)
    # Neither is there: one error names both files, not the first one looked for.
    monkeypatch.setenv("SRGAN_WEIGHTS_DIR", str(tmp_path / "empty"))
    with pytest.raises(MissingWeightsError) as both:
        Upscaler().upscale(image, "srgan", alpha=0.5)
    assert both.value.names == ("srresnet_x4", "srgan_x4")
    for name in ("srresnet_x4.pt", "srgan_x4.pt"):
        assert str(tmp_path / "empty" / name) in str(both.value)
    assert "`" not in str(both.value)  # plain text: it is printed on terminals
    assert up.upscale(image, "bicubic").size == (24, 16)


def test_upscale_cli_names_every_missing_file_and_suggests_bicubic(tmp_path, monkeypatch, capsys):
    from srgan.upscale import main as upscale_main

    src = tmp_path / "photo.png"
    Image.new("RGB", (12, 8), (10, 20, 30)).save(src)
    monkeypatch.setenv("SRGAN_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    for extra, files in (([], ["srresnet_x4.pt"]), (["--model", "srgan", "--alpha", "0.5"],
                                                    ["srresnet_x4.pt", "srgan_x4.pt"])):
        code, _, err = call_main(upscale_main, [str(src), str(tmp_path / "out.png"), *extra], capsys)
        assert code == 2, err
        for name in files:
            assert str(tmp_path / "no-weights" / name) in err, err
        assert "--model bicubic" in err and "`" not in err
        assert "python -m srgan.train --stage srresnet --install" in err
        assert not (tmp_path / "out.png").exists()


def test_weights_round_trip_and_interpolation_endpoints(random_weights):
    a = load_generator("srresnet_x4")
    b = load_generator("srgan_x4")
    sd_a, sd_b = a.state_dict(), b.state_dict()
    for alpha, ref in ((0.0, sd_a), (1.0, sd_b)):
        mixed = interpolate_state_dicts(sd_a, sd_b, alpha)
        assert all(torch.equal(mixed[k], ref[k]) for k in ref)
    up = Upscaler()
    img = Image.fromarray((np.random.default_rng(0).random((16, 12, 3)) * 255).astype(np.uint8))
    assert np.array_equal(np.asarray(up.upscale(img, "srgan", alpha=0.0)), np.asarray(up.upscale(img, "srresnet")))
    assert np.array_equal(np.asarray(up.upscale(img, "srgan", alpha=1.0)), np.asarray(up.upscale(img, "srgan")))


def trained_like_generator(num_blocks: int = 16) -> SRResNet:
    """A random generator with non-trivial BN statistics and affine terms, as after training."""
    torch.manual_seed(0)
    g = SRResNet(num_blocks=num_blocks).eval()
    for m in g.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
    return g


def test_tiled_equals_untiled():
    g = trained_like_generator()  # non-trivial BN statistics, as after training
    lr = torch.rand(1, 3, 64, 64)
    whole = upscale_tensor(g, lr, tile=None)
    tiled = upscale_tensor(g, lr, tile=16, overlap=16)
    assert whole.shape == (1, 3, 256, 256)
    assert (whole - tiled).abs().max() < 1e-3


def test_colour_fix_moves_only_the_channel_means():
    torch.manual_seed(0)
    lr = torch.rand(2, 3, 8, 10) * 0.6 + 0.2
    sr = torch.rand(2, 3, 32, 40) * 0.5 + 0.3  # means 0.55, off from the input's 0.5
    fixed = match_channel_means(sr, lr)
    torch.testing.assert_close(fixed.mean(dim=(-2, -1)), lr.mean(dim=(-2, -1)))
    shift = fixed - sr  # one constant per image and channel: the detail is untouched
    torch.testing.assert_close(shift, shift[..., :1, :1].expand_as(shift))
    # Saturated outputs stay in [0, 1].
    assert match_channel_means(torch.ones(1, 3, 8, 8), torch.full((1, 3, 2, 2), 0.9)).max() <= 1.0
    bright = torch.ones(1, 3, 8, 8)
    bright[..., :4, :] = 0.0
    out = match_channel_means(bright, torch.full((1, 3, 2, 2), 0.9))
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_upscaler_gives_generator_outputs_their_inputs_channel_means(random_weights):
    img = Image.fromarray((np.random.default_rng(0).random((16, 12, 3)) * 200 + 20).astype(np.uint8))
    lr_means = np.asarray(img, np.float64).reshape(-1, 3).mean(0)
    fixed = np.asarray(Upscaler().upscale(img, "srresnet"), np.float64).reshape(-1, 3).mean(0)
    raw = np.asarray(Upscaler(colour_fix=False).upscale(img, "srresnet"), np.float64).reshape(-1, 3).mean(0)
    assert np.abs(fixed - lr_means).max() < 0.6  # rounding to 8 bits
    assert np.abs(raw - lr_means).max() > 5  # a random network drifts far


def test_tile_below_one_is_refused():
    # range(0, h, tile) with tile < 1 cuts no tiles: the output used to be the blank buffer.
    g = srresnet_x4().eval()
    for tile in (0, -3):
        with pytest.raises(ValueError, match="tile"):
            upscale_tensor(g, torch.rand(1, 3, 12, 12), tile=tile)


# --- precision: BatchNorm folded, bf16 on CPUs that have it ---------------------

def test_folding_batch_norm_keeps_the_outputs_and_leaves_the_network_alone():
    g = trained_like_generator()
    before = {k: v.clone() for k, v in g.state_dict().items()}
    folded = fold_batch_norm(g)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in g.modules()) == 33  # the original keeps its BNs
    assert all(torch.equal(before[k], v) for k, v in g.state_dict().items())
    lr = torch.rand(1, 3, 24, 20)
    with torch.inference_mode():
        assert (folded(lr) - g(lr)).abs().max() < 1e-4


def test_auto_precision_is_bf16_only_on_a_cpu_with_bf16_in_hardware(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", cpu) == "bf16" and Upscaler().precision == "bf16"
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", cpu) == "fp32" and Upscaler().precision == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"  # asked for: honoured (emulated, slower)
    with pytest.raises(ValueError, match="fp16 runs on CUDA only"):
        Upscaler(precision="fp16")
    with pytest.raises(ValueError, match="choose from auto, fp32, bf16, fp16"):
        resolve_precision("float64", cpu)


def test_bf16_inference_runs_in_bf16_and_stays_close_to_fp32():
    g = trained_like_generator()
    lr = torch.rand(1, 3, 20, 28)
    bf16 = prepare_generator(g, device=torch.device("cpu"), precision="bf16")
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}
    reference = upscale_tensor(g, lr, tile=None)
    out = upscale_tensor(bf16, lr, tile=None)
    assert out.dtype == torch.float32 and out.shape == reference.shape
    assert (out - reference).abs().mean() < 2 / 255  # bf16 keeps 8 bits of mantissa
    tiled = upscale_tensor(bf16, lr, tile=8, overlap=16)  # tiles in bf16 too
    assert (tiled - out).abs().max() < 0.05
    fp32 = prepare_generator(g, device=torch.device("cpu"), precision="fp32")
    assert (upscale_tensor(fp32, lr, tile=None) - reference).abs().max() < 1e-4


def test_upscaler_in_each_cpu_precision_blends_and_keeps_alpha(random_weights):
    rgba = Image.fromarray((np.random.default_rng(0).random((12, 16, 4)) * 255).astype(np.uint8), "RGBA")
    outputs = {}
    for precision in ("fp32", "bf16"):
        up = Upscaler(precision=precision)
        assert next(up.generator("srgan", alpha=0.5).parameters()).dtype == inference.DTYPES[precision]
        outputs[precision] = np.asarray(up.upscale(rgba, "srgan", alpha=0.5), np.float64)
        assert outputs[precision].shape == (48, 64, 4)
    difference = np.abs(outputs["bf16"] - outputs["fp32"])
    assert difference[..., :3].mean() < 2 and np.array_equal(outputs["bf16"][..., 3], outputs["fp32"][..., 3])


def test_upscale_cli_takes_a_precision_and_refuses_fp16_on_the_cpu(random_weights, tmp_path, capsys):
    from srgan.upscale import main as upscale_main

    Image.new("RGB", (8, 6), (90, 120, 30)).save(tmp_path / "in.png")
    assert upscale_main([str(tmp_path / "in.png"), str(tmp_path / "out.png"), "--precision", "fp32"]) == 0
    assert ", fp32," in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        upscale_main([str(tmp_path / "in.png"), str(tmp_path / "fp16.png"), "--precision", "fp16"])
    assert exited.value.code == 2 and "fp16 runs on CUDA only" in capsys.readouterr().err
    assert not (tmp_path / "fp16.png").exists()


@pytest.mark.slow
def test_tiled_equals_untiled_256():
    # The figure: a 256 px image cut in 64 px tiles.
    torch.manual_seed(0)
    g = srresnet_x4().eval()
    lr = torch.rand(1, 3, 256, 256)
    assert (upscale_tensor(g, lr, tile=None) - upscale_tensor(g, lr, tile=64)).abs().max() < 1e-3


def test_upscale_modes_and_alpha(random_weights):
    up = Upscaler(tile=8)
    rgba = Image.new("RGBA", (10, 6), (200, 100, 50, 128))
    for method in ("nearest", "bicubic", "srresnet"):
        out = up.upscale(rgba, method)
        assert out.size == (40, 24) and out.mode == "RGBA"
        assert out.getpixel((20, 12))[3] == 128
    assert np.asarray(up.upscale(rgba, "nearest"))[0, 0, :3].tolist() == [200, 100, 50]


def test_downscale_crops_to_multiple_of_four():
    img = Image.new("RGB", (18, 13), (50, 60, 70))
    lr = downscale(img)
    assert lr.size == (4, 3)
    assert lr.getpixel((1, 1)) == (50, 60, 70)


def test_upscale_cli(tmp_path, random_weights, capsys):
    from srgan.upscale import main as upscale_main

    src = tmp_path / "in.png"
    Image.new("RGB", (12, 8), (10, 20, 30)).save(src)
    code, out, err = call_main(upscale_main, [str(src), str(tmp_path / "out.png"), "--model", "srresnet"], capsys)
    assert code == 0, err
    assert Image.open(tmp_path / "out.png").size == (48, 32)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    code, _, err = call_main(upscale_main, [str(bad), str(tmp_path / "o.png")], capsys)
    assert code == 2 and "not an image" in err
    # Bad options are named as such, not blamed on the output file.
    for extra, message in ((["--tile", "-3"], "--tile"), (["--device", "foo"], "--device foo"),
                           (["--model", "bicubic", "--alpha", "0.5"], "--alpha"),
                           (["--device", "cuda:0"], "--device cuda:0"), (["--precision", "fp64"], "--precision")):
        if extra[-1] == "cuda:0" and torch.cuda.is_available():
            continue
        code, _, err = call_main(upscale_main, [str(src), str(tmp_path / "o.png"), *extra], capsys)
        assert code == 2 and message in err, err
        assert "o.png" not in err and not (tmp_path / "o.png").exists()
    code, _, err = call_main(upscale_main, [str(src), str(tmp_path / "o.xyz"), "--model", "bicubic"], capsys)
    assert code == 2 and "o.xyz" in err


@pytest.mark.e2e
def test_upscale_runs_as_a_module(tmp_path, random_weights):
    """The command a user types, in its own interpreter: no traceback, even for a bad file."""
    src, bad = tmp_path / "in.png", tmp_path / "bad.png"
    Image.new("RGB", (12, 8), (10, 20, 30)).save(src)
    bad.write_bytes(b"\x89PNG not really")
    ok = subprocess.run([sys.executable, "-m", "srgan.upscale", str(src), str(tmp_path / "out.png")],
                        cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0 and "in.png 12x8 ->" in ok.stdout, ok.stderr
    fail = subprocess.run([sys.executable, "-m", "srgan.upscale", str(bad), str(tmp_path / "o.png")],
                          cwd=ROOT, capture_output=True, text=True)
    assert fail.returncode == 2 and "not an image" in fail.stderr and "Traceback" not in fail.stderr


def test_evaluate_bad_data_and_device_are_clear_errors(tmp_path, capsys):
    from srgan.evaluate import main as evaluate_main

    (tmp_path / "Set5" / "HR").mkdir(parents=True)
    (tmp_path / "Set5" / "HR" / "broken.png").write_bytes(b"not a png")

    def evaluate(*extra):
        return call_main(evaluate_main, ["--sets", "Set5", "--no-niqe", "--no-figure", "--out", str(tmp_path / "out"),
                                       *extra], capsys)

    code, _, err = evaluate("--data", str(tmp_path))
    assert code == 2 and "broken.png" in err
    code, _, err = evaluate("--data", str(tmp_path), "--sets", "Set14")
    assert code == 2 and "no HR images" in err
    if not torch.cuda.is_available():
        code, _, err = evaluate("--device", "cuda")
        assert code == 2 and "no CUDA device" in err
    code, _, err = evaluate("--precision", "fp16")
    assert code == 2 and "fp16 runs on CUDA only" in err
    assert not (tmp_path / "out").exists()


def test_evaluate_command_writes_tables_and_figure(benchmarks, tmp_path, random_weights, capsys):
    from srgan.evaluate import main as evaluate_main

    # With (random) weights present the model rows appear; NIQE rows for Set14, the figure is written.
    out = tmp_path / "results"
    code, _, err = call_main(evaluate_main, ["--sets", "Set5", "Set14", "--limit", "2", "--out", str(out)], capsys)
    assert code == 0, err
    table = (out / "benchmark.md").read_text()
    for row in ("| Bicubic |", "| SRResNet |", "| SRGAN |", "NIQE", "| HR |"):
        assert row in table
    assert "32.05 / 0.9019" in table  # the paper's figure beside ours
    assert "Partial run: only the first 2 images" in table  # --limit never passes for the full table
    assert "ran in" not in table  # fp32 unless asked
    assert Image.open(out / "comparison.png").size[0] > 400
    code, _, err = call_main(evaluate_main, ["--data", str(tmp_path / "nowhere")], capsys)
    assert code == 2 and "not found" in err


def test_upscale_cli_colour_fix_is_on_unless_turned_off(tmp_path, random_weights):
    from srgan.upscale import main as upscale_main

    src = tmp_path / "in.png"
    Image.fromarray((np.random.default_rng(1).random((8, 12, 3)) * 200 + 20).astype(np.uint8)).save(src)
    means = {}
    for name, extra in (("fixed", []), ("raw", ["--no-colour-fix"])):
        assert upscale_main([str(src), str(tmp_path / f"{name}.png"), "--model", "srgan", *extra]) == 0
        means[name] = np.asarray(Image.open(tmp_path / f"{name}.png"), np.float64).reshape(-1, 3).mean(0)
    lr_means = np.asarray(Image.open(src), np.float64).reshape(-1, 3).mean(0)
    assert np.abs(means["fixed"] - lr_means).max() < 0.6 < 5 < np.abs(means["raw"] - lr_means).max()
