"""ONNX export: onnxruntime reproduces PyTorch's output (skips without onnx/onnxruntime)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from srgan.export import export_onnx, load_model, main, onnxruntime_max_difference


def test_onnx_matches_pytorch(tmp_path: Path) -> None:
    pytest.importorskip("onnx", reason="ONNX export needs the onnx package (pip install onnx)")
    pytest.importorskip("onnxruntime", reason="the check needs onnxruntime (pip install onnxruntime)")
    generator = load_model(None, random=True, num_blocks=2)
    path = export_onnx(generator, tmp_path / "g.onnx")
    # Dynamic axes: another batch and size than the export's sample.
    lr = torch.rand(2, 3, 13, 21, generator=torch.Generator().manual_seed(1))
    assert onnxruntime_max_difference(generator, path, lr) < 1e-3
    # A perturbed PyTorch model no longer matches: the comparison can fail.
    with torch.no_grad():
        generator.conv_last.bias.add_(0.1)
    assert onnxruntime_max_difference(generator, path, lr) > 1e-2


def test_export_without_weights_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SRGAN_WEIGHTS_DIR", str(tmp_path / "none"))
    assert main(["--format", "onnx", str(tmp_path / "x.onnx"), "--model", "srgan_x4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--random" in err and "Traceback" not in err


def test_export_bad_options_are_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--model", "nope", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown weights 'nope'")  # no stray quotes from KeyError
    with pytest.raises(SystemExit):  # opsets this old give graphs onnxruntime rejects
        main(["--random", "--opset", "5", str(tmp_path / "x.onnx")])
    assert "--opset must be at least 9" in capsys.readouterr().err
