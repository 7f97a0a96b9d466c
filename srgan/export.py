"""Export a generator to ONNX, checked against PyTorch with onnxruntime when it is installed.

    python -m srgan.export --format onnx srresnet_x4.onnx --model srresnet_x4
    python -m srgan.export --format onnx random.onnx --random        # no trained weights needed

The graph takes LR images (N, 3, h, w) in [0, 1] and returns (N, 3, 4h, 4w) in [0, 1] (the
generator followed by the map from [-1, 1], clamped); batch, height and width are dynamic.
Needs the ``onnx`` package (and ``onnxruntime`` for the check).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from srgan.models import SRResNet, to_unit_range

FORMATS = ("onnx",)


class ExportError(RuntimeError):
    """An export that cannot be done as asked; the message says why."""


class UnitRangeGenerator(nn.Module):
    """The generator with its output mapped to [0, 1]: what an application wants."""

    def __init__(self, generator: SRResNet) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, lr: Tensor) -> Tensor:
        return to_unit_range(self.generator(lr))


def load_model(name: str | None, *, random: bool, num_blocks: int = 16) -> SRResNet:
    if random:
        torch.manual_seed(0)
        return SRResNet(num_blocks=num_blocks).eval()
    from srgan import weights

    try:
        return weights.load_generator(name or "srresnet_x4")
    except (weights.MissingWeightsError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) else exc  # str(KeyError) adds quotes
        # On a line of its own: a missing file's message ends with a command to copy.
        raise ExportError(f"{message}\nUse --random to export an untrained generator.") from None


def export_onnx(generator: SRResNet, path: Path, *, opset: int = 17, sample_size: int = 24) -> Path:
    """Write ``generator`` (wrapped to return [0, 1]) as ONNX with dynamic batch/height/width."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ExportError("ONNX export needs the 'onnx' package: pip install onnx onnxruntime") from None
    model = UnitRangeGenerator(generator.eval()).eval()
    sample = torch.rand(1, 3, sample_size, sample_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter, on purpose
        torch.onnx.export(
            model, (sample,), str(path), input_names=["lr"], output_names=["sr"], opset_version=opset,
            dynamic_axes={"lr": {0: "batch", 2: "height", 3: "width"},
                          "sr": {0: "batch", 2: "height4", 3: "width4"}},
            dynamo=False,  # the TorchScript exporter: no onnxscript dependency
        )
    return path


def onnxruntime_max_difference(generator: SRResNet, path: Path, lr: Tensor) -> float:
    """Largest |onnxruntime - PyTorch| of the [0, 1] outputs on ``lr``."""
    try:
        import onnxruntime
    except ImportError:
        raise ExportError("checking needs the 'onnxruntime' package: pip install onnxruntime") from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(["sr"], {"lr": lr.numpy().astype(np.float32)})
    with torch.no_grad():
        torch_out = UnitRangeGenerator(generator.eval())(lr).numpy()
    return float(np.abs(onnx_out - torch_out).max())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m srgan.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--format", choices=FORMATS, default="onnx")
    parser.add_argument("out", type=Path, help="file to write, e.g. srresnet_x4.onnx")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--model", default="srresnet_x4", help="named weights: srresnet_x4 or srgan_x4")
    which.add_argument("--random", action="store_true", help="an untrained generator (for testing)")
    parser.add_argument("--num-blocks", type=int, default=16, help="with --random only")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")
    args = parser.parse_args(argv)
    if args.opset < 9:  # older opsets give graphs onnxruntime rejects (checked down to 9)
        parser.error(f"--opset must be at least 9, got {args.opset}")
    try:
        generator = load_model(args.model, random=args.random, num_blocks=args.num_blocks)
        try:
            path = export_onnx(generator, args.out, opset=args.opset)
        except (OSError, RuntimeError) as exc:  # unwritable path; an opset this torch can't write
            raise ExportError(f"{args.out}: {exc}") from None
        print(f"wrote {path}")
        if not args.no_check:
            lr = torch.rand(1, 3, 20, 28, generator=torch.Generator().manual_seed(0))
            difference = onnxruntime_max_difference(generator, path, lr)
            print(f"onnxruntime vs PyTorch on a 20x28 input: max |difference| {difference:.2e}")
            if difference > 1e-3:
                print("error: the ONNX graph does not match PyTorch", file=sys.stderr)
                return 1
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
