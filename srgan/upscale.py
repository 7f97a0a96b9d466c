"""Command line: ``python -m srgan.upscale IN OUT --model srresnet``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .images import ImageError, load_image
from .inference import METHODS, PRECISIONS, Upscaler, parse_device, required_weights, resolve_precision
from .weights import MissingWeightsError, check_available


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m srgan.upscale", description="4x super-resolution of one image.")
    parser.add_argument("input", type=Path, help="image to upscale (PNG, JPEG, ...)")
    parser.add_argument("output", type=Path, help="where to write the 4x result (PNG recommended)")
    parser.add_argument("--model", choices=METHODS, default="srresnet", help="method (default: srresnet)")
    parser.add_argument("--alpha", type=float, default=None,
                        help="blend SRResNet (0) and SRGAN (1) weights by network interpolation")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="the network's precision: auto (default) is bf16 on a CPU with bf16 in hardware "
                             "(AVX512-BF16, AMX), fp32 elsewhere; fp16 on CUDA only")
    parser.add_argument("--tile", type=int, default=256, help="LR tile side; 0 runs the whole image at once")
    parser.add_argument("--no-colour-fix", action="store_true",
                        help="keep the network's own channel means (by default the output gets the input's)")
    parser.add_argument("--max-pixels", type=int, default=None, help="refuse inputs with more pixels (default 4e6)")
    args = parser.parse_args(argv)

    if args.alpha is not None and not 0 <= args.alpha <= 1:
        parser.error("--alpha must be between 0 and 1")
    if args.alpha is not None and args.model not in ("srresnet", "srgan"):
        parser.error(f"--alpha blends the two networks; it does not apply to --model {args.model}")
    if args.tile < 0:
        parser.error("--tile must be a positive number of LR pixels, or 0 for no tiling")
    try:
        device = parse_device(args.device)
        precision = resolve_precision(args.precision, device)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        # First, and for every file the model needs (a blend, 0 < --alpha < 1, needs both networks').
        needed_by = f"--model {args.model}" + ("" if args.alpha is None else f" --alpha {args.alpha:g}")
        check_available(required_weights(args.model, args.alpha), needed_by=needed_by,
                        alternative="--model bicubic needs no weights.")
        image = load_image(args.input, max_pixels=args.max_pixels)
        upscaler = Upscaler(device=device, tile=args.tile or None, precision=precision,
                            colour_fix=not args.no_colour_fix)
        start = time.perf_counter()
        result = upscaler.upscale(image, args.model, alpha=args.alpha)
        elapsed = time.perf_counter() - start
    except (ImageError, MissingWeightsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # weights that don't fit the network, out of (GPU) memory
        print("error: " + " ".join(line.strip() for line in str(exc).splitlines()[:2]), file=sys.stderr)
        return 2
    try:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        result.save(args.output)
    except (OSError, ValueError) as exc:  # unknown extension, RGBA as JPEG, unwritable folder
        print(f"error: {args.output}: {exc}", file=sys.stderr)
        return 2
    print(f"{args.input} {image.width}x{image.height} -> {args.output} {result.width}x{result.height} "
          f"({args.model}{'' if args.model in ('nearest', 'bicubic') else ', ' + precision}, {elapsed:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
