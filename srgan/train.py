"""Train SRResNet and SRGAN with the paper's recipe (Ledig et al., Sec. 3.2).

    python -m srgan.train --stage srresnet            # 1*MSE, Adam lr 1e-4, 1e6 iterations
    python -m srgan.train --stage srgan               # 1*VGG54+1e-3*GAN from srresnet_x4,
                                                      # lr 1e-4 then 1e-5, 2e5 iterations
    torchrun --nproc_per_node 8 -m srgan.train ...    # DistributedDataParallel, one GPU a rank

The Table 1 variants are one option away: ``--stage srresnet --loss 1*VGG22`` (SRResNet-VGG22),
``--stage srgan --loss 1*MSE+1e-3*GAN`` (SRGAN-MSE), ``--loss 1*VGG22+1e-3*GAN`` (SRGAN-VGG22).

A run folder (``--out``) receives ``checkpoint.pt`` (every few minutes and at exit, written
atomically: a SIGKILL loses at most ``--checkpoint-minutes``), ``log.csv``,
``best_generator.pt`` (best validation PSNR), ``val_crops/`` (a few validation crops drawn at
each validation: bicubic | SR | HR; the log has their PSNR, texture ratio and colour shift, see
``srgan.validation``) and the final ``<stage>_x4.pt`` written by ``srgan.weights.save_weights``
with the run's metadata. ``--resume`` continues a run from its
checkpoint: model, optimizers, step (the learning-rate schedule is a function of the step), RNG.

Under torchrun every rank holds all training images and draws its batches with its own RNG
stream (seed + rank), so the ranks see different patches; gradients are averaged by DDP, and
rank 0 alone validates, logs and writes files.

This module holds the options, one training step and the loop; ``srgan.checkpoint`` the run
folder (checkpoint, resume, log, metadata) and ``srgan.distributed`` the multi-GPU setup.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import math
import signal
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from srgan import distributed
from srgan.checkpoint import (
    Progress,
    TrainingSetupError,
    append_log,
    bf16_supported,
    device_name,
    parameter_hash,
    restore_checkpoint,
    rng_state,
    run_metadata,
    save_checkpoint,
    truncate_log,
)
from srgan.data import (
    PatchSampler,
    TrainingDataError,
    default_train_folder,
    load_training_data,
    validation_crops,
)
from srgan.install import InstallError, install, read_generator_file
from srgan.losses import (
    LF_BLOCK,
    GeneratorLoss,
    LossSpecError,
    discriminator_fake_loss,
    discriminator_real_loss,
    parse_loss_spec,
)
from srgan.models import Discriminator, SRResNet
from srgan.validation import validate
from srgan.vgg import MissingVGGWeightsError
from srgan.weights import save_weights

REPO_ROOT = Path(__file__).resolve().parent.parent

# The paper's recipe per stage; every entry can be overridden on the command line.
STAGE_DEFAULTS: dict[str, dict[str, Any]] = {
    "srresnet": {"loss": "1*MSE", "lr": 1e-4, "schedule": "constant", "iterations": 1_000_000,
                 "init": "none"},
    "srgan": {"loss": "1*VGG54+1e-3*GAN", "lr": 1e-4, "schedule": "step", "iterations": 200_000,
              "init": "srresnet_x4"},
}
SCHEDULES = ("constant", "step", "cosine")
# --fit-minutes: steps before timing starts (cuDNN autotuning, allocator warm-up) and steps timed.
FIT_WARMUP_STEPS, FIT_TIMED_STEPS = 20, 40
FIT_SAFETY = 0.92  # share of the measured rate planned on: validation and logging also take time
# The probe's 40 steps can miss how fast a machine really runs: on the third GPU session's H200 it
# measured 2,648 patches/s where the run averaged 2,154, and the time box cut the schedule at 93%.
# So the schedule is sized once more, a quarter into the box, from the rate over every step since
# the probe (validation, logging and the machine's swings included), with a smaller margin.
FIT_REPLAN_SHARE, FIT_REPLAN_SAFETY = 0.25, 0.97


# ----------------------------------------------------------------------------- options


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m srgan.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--stage", choices=tuple(STAGE_DEFAULTS), default="srresnet")
    p.add_argument("--loss", help="loss spec, e.g. 1*MSE or 1*VGG54+1e-3*GAN (default: the stage's)")
    p.add_argument("--init", help="generator to start from: a named weight (srresnet_x4), a .pt file or "
                                  "'none' (default: srresnet_x4 for the srgan stage, none for srresnet)")
    p.add_argument("--data", type=Path, default=default_train_folder(), help="folder of training photos")
    p.add_argument("--max-images", type=int, help="use only the first N photos (smoke tests)")
    p.add_argument("--out", type=Path, help="run folder (default runs/<stage>-<date>)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if present)")
    p.add_argument("--batch-size", type=int, default=16, help="patches per step per rank")
    p.add_argument("--patch", type=int, default=96, help="HR crop side")
    p.add_argument("--lr", type=float, help="base learning rate (default: the stage's, 1e-4)")
    p.add_argument("--schedule", choices=SCHEDULES, help="constant | step (x0.1 at half) | cosine")
    p.add_argument("--iterations", type=int, help="steps (default: the stage's)")
    p.add_argument("--patches", type=int, help="patches to see in all, instead of --iterations")
    p.add_argument("--fit-minutes", type=float,
                   help="size the schedule from the measured step rate (after a warm-up, and again a "
                        "quarter in) so that it completes in this many minutes of training (instead of "
                        "--iterations/--patches)")
    p.add_argument("--max-minutes", type=float, help="time box: checkpoint and exit 0 after this")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt if present")
    p.add_argument("--checkpoint-minutes", type=float, default=5.0)
    p.add_argument("--log-every", type=int, default=100, help="steps between CSV rows")
    p.add_argument("--val-every", type=int, default=1000, help="steps between validations")
    p.add_argument("--val-patch", type=int, default=128, help="HR side of the validation crops")
    p.add_argument("--val-sheets", type=int, default=4, metavar="CROPS",
                   help="at each validation, draw this many crops (bicubic | SR | HR) to "
                        "OUT/val_crops/stepNNNNNNN.jpg, to watch for collapse and colour drift (0: none)")
    p.add_argument("--d-warmup", type=int, default=0, metavar="STEPS",
                   help="first STEPS steps train the discriminator only (a fresh D beside a trained G, "
                        "when fine-tuning an SRGAN)")
    p.add_argument("--ema", type=float, default=0.0, help="EMA decay of the generator (0: off)")
    p.add_argument("--snapshots", type=int, default=0,
                   help="also save the generator (fp16) at N evenly spaced points of the schedule, "
                        "in OUT/snapshots/, to choose from afterwards (e.g. by a perceptual rule)")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                   help="bf16 autocast (CUDA, or CPUs with native bf16: AVX512-BF16 or AMX)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                   help="channels_last memory format")
    p.add_argument("--fused-adam", action=argparse.BooleanOptionalAction, default=True,
                   help="fused Adam (CUDA and CPU)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                   help="torch.compile the generator (with --compile-mode reduce-overhead on CUDA: CUDA graphs, "
                        "1.5x SRResNet's step on an H100 at batch 128, results/performance.md)")
    p.add_argument("--compile-mode", default="default",
                   help="torch.compile mode (e.g. reduce-overhead for CUDA graphs)")
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm under DDP")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-blocks", type=int, default=16, help="residual blocks (smoke tests only)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--install", action="store_true",
                   help="when the run completes, install its final generator as the package's named "
                        "fp16 weights (srgan.install)")
    p.add_argument("--param-hash-dir", type=Path, help=argparse.SUPPRESS)  # DDP test: per-rank hash
    return p


def resolve_options(args: argparse.Namespace, *, world_size: int = 1) -> argparse.Namespace:
    """Fill stage defaults and check the combination; TrainingSetupError if it makes no sense."""
    defaults = STAGE_DEFAULTS[args.stage]
    args.loss = args.loss or defaults["loss"]
    args.lr = args.lr if args.lr is not None else defaults["lr"]
    args.schedule = args.schedule or defaults["schedule"]
    args.init = args.init or defaults["init"]
    try:
        args.loss_spec = parse_loss_spec(args.loss)
    except LossSpecError as exc:
        raise TrainingSetupError(f"--loss: {exc}") from None
    if args.stage == "srresnet" and args.loss_spec.uses_gan:
        raise TrainingSetupError("a loss with a GAN term trains SRGAN: use --stage srgan")
    if args.stage == "srgan" and not args.loss_spec.uses_gan:
        raise TrainingSetupError(f"--stage srgan needs a GAN term in --loss (got {args.loss}); "
                                 "without one use --stage srresnet")
    if args.patches is not None and args.iterations is not None:
        raise TrainingSetupError("give --iterations or --patches, not both")
    if args.fit_minutes is not None:
        if args.patches is not None or args.iterations is not None:
            raise TrainingSetupError("--fit-minutes sizes the schedule itself: drop --iterations/--patches")
        if not args.fit_minutes > 0:
            raise TrainingSetupError("--fit-minutes must be positive")
    if args.snapshots < 0:
        raise TrainingSetupError("--snapshots must be 0 or more")
    if args.val_sheets < 0:
        raise TrainingSetupError("--val-sheets must be 0 or more")
    if args.d_warmup < 0:
        raise TrainingSetupError("--d-warmup must be 0 or more")
    if args.d_warmup and not args.loss_spec.uses_gan:
        raise TrainingSetupError("--d-warmup trains the discriminator: it needs a GAN term (--stage srgan)")
    for name in ("batch_size", "patch", "log_every", "val_every", "num_blocks"):
        if getattr(args, name) <= 0:
            raise TrainingSetupError(f"--{name.replace('_', '-')} must be positive")
    if args.patch % 4:
        raise TrainingSetupError(f"--patch must divide by 4, got {args.patch}")
    if args.loss_spec.uses_gan and args.patch % 16:
        raise TrainingSetupError(f"the discriminator needs --patch divisible by 16, got {args.patch}")
    if any(t.name == "LF" for t in args.loss_spec.terms) and args.patch % LF_BLOCK:
        raise TrainingSetupError(f"the LF loss compares {LF_BLOCK}x{LF_BLOCK} block means: --patch must divide "
                                 f"by {LF_BLOCK}, got {args.patch}")
    if args.patches is not None:
        args.iterations = math.ceil(args.patches / (args.batch_size * world_size))
    elif args.iterations is None:
        args.iterations = defaults["iterations"]
    if args.iterations <= 0:
        raise TrainingSetupError("--iterations/--patches must be positive")
    if not 0.0 <= args.ema < 1.0:
        raise TrainingSetupError("--ema must be in [0, 1)")
    if args.install and set(args.loss_spec.terms) != set(parse_loss_spec(defaults["loss"]).terms):
        # The named weights are the paper's models (srgan.weights.WEIGHTS); a Table 1 variant
        # installed under that name would be shown and scored as the paper's model.
        raise TrainingSetupError(f"--install writes the named {args.stage}_x4 weights, which are the "
                                 f"paper's {defaults['loss']} model; this run's loss is {args.loss}")
    if args.out is None:
        args.out = REPO_ROOT / "runs" / f"{args.stage}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    elif not args.resume and (args.out / "checkpoint.pt").is_file():
        # Starting afresh there would overwrite the checkpoint and mix two runs in log.csv.
        raise TrainingSetupError(f"{args.out} already holds a run: pass --resume to continue it, "
                                 "or choose another --out")
    return args


# ----------------------------------------------------------------------------- pure helpers


def lr_at(step: int, *, base_lr: float, schedule: str, total_steps: int) -> float:
    """Learning rate at ``step`` (0-based): constant, step (x0.1 from half-way, the paper's
    SRGAN schedule) or cosine (to 0 at ``total_steps``)."""
    if schedule == "constant":
        return base_lr
    if schedule == "step":
        return base_lr if step < total_steps // 2 else base_lr * 0.1
    if schedule == "cosine":
        return 0.5 * base_lr * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
    raise ValueError(f"unknown schedule {schedule!r}; known: {', '.join(SCHEDULES)}")


def ema_update(ema_model: nn.Module, model: nn.Module, *, decay: float) -> None:
    """ema = decay * ema + (1 - decay) * model for parameters; buffers copied."""
    with torch.no_grad():
        ema_params = list(ema_model.parameters())
        torch._foreach_lerp_(ema_params, [p.detach() for p in model.parameters()], 1 - decay)
        for ema_buffer, buffer in zip(ema_model.buffers(), model.buffers(), strict=True):
            ema_buffer.copy_(buffer)


# ----------------------------------------------------------------------------- setup


def load_init_generator(init: str, model: SRResNet) -> str:
    """Load the generator the SRGAN stage starts from; returns a description for metadata."""
    if init.lower() == "none":
        return "none (random init)"
    from srgan import weights

    if init in weights.WEIGHTS or init in weights.METHOD_WEIGHTS:
        try:
            state, _ = weights.load_state_dict(init)
        except weights.MissingWeightsError as exc:
            # On a line of its own: the message ends with a command to copy.
            raise TrainingSetupError(f"--init {init}: {exc}\nOr pass --init PATH / --init none.") from None
        source = f"{init} ({weights.weights_path(init)})"
    else:
        try:
            state, _ = read_generator_file(Path(init))
        except InstallError as exc:
            raise TrainingSetupError(f"--init {exc} (a named weights, a .pt file or 'none')") from None
        source = init
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise TrainingSetupError(f"--init {init} does not fit this generator "
                                 f"(--num-blocks?): {str(exc).splitlines()[0]}") from None
    return source


# ----------------------------------------------------------------------------- one step


@dataclass
class StepModels:
    """What one training step updates. ``g_train``/``d_train`` are the modules called for the
    forward passes (the DDP or torch.compile wrappers, or the modules themselves)."""

    generator: nn.Module
    g_train: nn.Module
    opt_g: torch.optim.Optimizer
    loss_fn: GeneratorLoss
    discriminator: nn.Module | None = None
    d_train: nn.Module | None = None
    opt_d: torch.optim.Optimizer | None = None


def training_step(models: StepModels, lr_batch: Tensor, hr_batch: Tensor, *,
                  autocast: Callable[[], Any] = nullcontext, train_generator: bool = True) -> dict[str, Tensor]:
    """One update: with a discriminator, D on (HR, detached SR) then G; else G alone.
    ``train_generator=False`` updates D only (G's losses are still computed, for the log).
    Returns each loss, detached (tensors: reading them would sync a GPU)."""
    m = models
    # Gradients cleared before the forward: under CUDA graphs (compile's reduce-overhead) the
    # graph's outputs must not be touched by the previous step's backward.
    m.opt_g.zero_grad(set_to_none=True)
    with autocast(), torch.set_grad_enabled(train_generator and torch.is_grad_enabled()):
        sr = m.g_train(lr_batch)
    losses: dict[str, Tensor] = {}
    fake_logits = None
    if m.discriminator is not None:
        # D step on real HR and the detached SR (two backward passes; DDP averages each).
        m.discriminator.requires_grad_(True)
        m.opt_d.zero_grad(set_to_none=True)
        with autocast():
            real_logits = m.d_train(hr_batch)
        loss_d_real = discriminator_real_loss(real_logits)
        loss_d_real.backward()
        with autocast():
            detached_logits = m.d_train(sr.detach())
        loss_d_fake = discriminator_fake_loss(detached_logits)
        loss_d_fake.backward()
        m.opt_d.step()
        losses["loss_d"] = (loss_d_real + loss_d_fake).detach()
        # D's mean output on real and fake: both drifting to 1/0 (D wins) or meeting at 0.5 for
        # long is what collapse looks like in the log.
        losses["d_real"] = torch.sigmoid(real_logits.detach().float()).mean()
        losses["d_fake"] = torch.sigmoid(detached_logits.detach().float()).mean()
        # G step: D frozen and called unwrapped, so DDP expects no gradients from it.
        m.discriminator.requires_grad_(False)
        with autocast():
            fake_logits = m.discriminator(sr)
    with autocast(), torch.set_grad_enabled(train_generator and torch.is_grad_enabled()):
        loss_g, parts = m.loss_fn(sr, hr_batch, fake_logits)
    if train_generator:
        loss_g.backward()
        m.opt_g.step()
    losses["loss_g"] = loss_g.detach()
    for name, value in parts.items():
        losses[f"loss_{name.lower()}"] = value
    return losses


# ----------------------------------------------------------------------------- the run


def run(args: argparse.Namespace) -> int:
    rank, world, device = distributed.setup(args.device)
    try:
        args = resolve_options(args, world_size=world)
        return train(args, rank=rank, world=world, device=device)
    finally:
        distributed.teardown(world)


def build_models(args: argparse.Namespace, device: torch.device, world: int, *,
                 memory_format: torch.memory_format) -> StepModels:
    """Generator, discriminator (GAN losses), their Adam optimizers and the loss, on ``device``."""
    if args.sync_bn and device.type != "cuda":
        raise TrainingSetupError("--sync-bn needs CUDA devices (PyTorch's SyncBatchNorm has no CPU kernel)")
    generator: nn.Module = SRResNet(num_blocks=args.num_blocks).to(device)
    discriminator: nn.Module | None = None
    if args.loss_spec.uses_gan:
        discriminator = Discriminator(image_size=args.patch).to(device)
    if world > 1 and args.sync_bn:
        generator = nn.SyncBatchNorm.convert_sync_batchnorm(generator)
        if discriminator is not None:
            discriminator = nn.SyncBatchNorm.convert_sync_batchnorm(discriminator)
    adam: dict[str, Any] = {"betas": (0.9, 0.999)}
    if args.fused_adam and device.type in ("cuda", "cpu"):
        adam["fused"] = True  # one kernel, and no per-parameter read of Adam's step count
    generator.to(memory_format=memory_format)
    opt_d = None
    if discriminator is not None:
        discriminator.to(memory_format=memory_format)
        opt_d = torch.optim.Adam(discriminator.parameters(), lr=args.lr, **adam)
    return StepModels(generator=generator, g_train=generator,
                      opt_g=torch.optim.Adam(generator.parameters(), lr=args.lr, **adam),
                      loss_fn=GeneratorLoss(args.loss_spec).to(device=device, memory_format=memory_format),
                      discriminator=discriminator, d_train=discriminator, opt_d=opt_d)


def snapshot_due(step: int, *, total: int, snapshots: int) -> bool:
    """Whether ``step`` is the first at or past one of ``snapshots`` evenly spaced points of a
    ``total``-step schedule (the last point is the final step)."""
    return snapshots > 0 and step * snapshots // total > (step - 1) * snapshots // total


def train(args: argparse.Namespace, *, rank: int, world: int, device: torch.device) -> int:
    is_main = rank == 0
    cuda = device.type == "cuda"
    spec = str(args.loss_spec)
    out: Path = args.out
    checkpoint_path, log_path = out / "checkpoint.pt", out / "log.csv"
    resuming = args.resume and checkpoint_path.is_file()
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
    if cuda:
        torch.backends.cudnn.benchmark = True  # fixed shapes: autotuned conv algorithms pay off

    torch.manual_seed(args.seed)  # same init on every rank (DDP also broadcasts rank 0's)
    train_bank, val_bank = load_training_data(args.data, device=device, max_images=args.max_images)
    sampler = PatchSampler(train_bank, patch=args.patch, seed=args.seed * 1000 + rank)
    val_lr, val_hr = validation_crops(val_bank, patch=args.val_patch, seed=args.seed)
    val_images = len(val_bank)
    del val_bank

    use_bf16 = args.bf16 and bf16_supported(device)
    if args.bf16 and not use_bf16 and is_main:
        print(f"note: {device_name(device)} has no native bf16; training in fp32", file=sys.stderr)
    # channels_last pays on CUDA and in oneDNN's CPU convolutions (here 1.25x in fp32, 1.3x in bf16).
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    models = build_models(args, device, world, memory_format=memory_format)
    generator, discriminator = models.generator, models.discriminator
    progress = Progress()
    if not resuming:  # a resumed run has its own weights
        progress.init_source = load_init_generator(args.init, generator)
    trained = {"generator": generator, "opt_g": models.opt_g, "discriminator": discriminator, "opt_d": models.opt_d}
    ema_state = None
    if resuming:
        ema_state = restore_checkpoint(checkpoint_path, args=args, spec=spec, modules=trained, sampler=sampler,
                                       rank=rank, device=device, progress=progress)
        if is_main:
            truncate_log(log_path, last_step=progress.step)
            print(f"resumed {checkpoint_path} at step {progress.step}", file=sys.stderr)
    # The EMA starts from the generator as it stands now (initialised or resumed), not from the
    # random weights it was built with.
    ema_model = None
    if args.ema:
        ema_model = copy.deepcopy(generator).eval().requires_grad_(False)
        if ema_state is not None:
            ema_model.load_state_dict(ema_state)
    kept = ema_model or generator  # what is validated and written

    models.g_train = distributed.wrap(generator, device, world)
    models.d_train = distributed.wrap(discriminator, device, world)
    if args.compile:
        models.g_train = torch.compile(models.g_train, mode=args.compile_mode)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_bf16 else nullcontext
    cuda_graphs = args.compile and cuda and "reduce-overhead" in args.compile_mode
    patches_per_step = args.batch_size * world

    def checkpoint() -> None:
        all_rng = distributed.gather_object(rng_state(sampler, device), world)
        if is_main:
            save_checkpoint(checkpoint_path, progress, args=args, spec=spec,
                            modules={**trained, "ema": ema_model}, all_rng=all_rng)

    def metadata(val_psnr: float, *, completed: bool) -> dict[str, Any]:
        return run_metadata(args, progress, spec=spec, world=world, device=device, use_bf16=use_bf16,
                            memory_format=memory_format, train_images=len(train_bank),
                            val_images=val_images, val_psnr=val_psnr, completed=completed)

    def synchronize() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    stop = {"signal": False}

    def request_stop(signum: int, frame: Any) -> None:
        stop["signal"] = True

    previous_handlers = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    bar = tqdm(total=args.iterations, initial=progress.step, disable=not (is_main and args.progress),
               dynamic_ncols=True, desc=args.stage)
    sums: dict[str, Tensor] = {}
    interval_steps, interval_start = 0, time.perf_counter()
    run_start = time.perf_counter() - progress.train_seconds
    session_start = last_checkpoint = time.perf_counter()
    val_psnr = math.nan
    timed_out = False
    loop_start_step, fit_t0 = progress.step, 0.0
    replanned = False  # only the session that measured the probe sizes again (fit_t0 is its clock)

    generator.train()
    if discriminator is not None:
        discriminator.train()
    while progress.step < args.iterations:
        lr = lr_at(progress.step, base_lr=args.lr, schedule=args.schedule, total_steps=args.iterations)
        for opt in (models.opt_g, models.opt_d):
            if opt is not None:
                for group in opt.param_groups:
                    group["lr"] = lr
        if cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        lr_batch, hr_batch = sampler.sample(args.batch_size)
        losses = training_step(models, lr_batch.contiguous(memory_format=memory_format),
                               hr_batch.contiguous(memory_format=memory_format), autocast=autocast,
                               train_generator=progress.step >= args.d_warmup)
        if ema_model is not None:
            ema_update(ema_model, generator, decay=args.ema)

        progress.step += 1
        step = progress.step
        progress.patches_seen += patches_per_step
        interval_steps += 1
        for key, value in losses.items():
            sums[key] = sums.get(key, 0) + value
        bar.update(1)

        if args.fit_minutes is not None and not progress.sized:
            # Size the schedule from the step rate measured after a warm-up (two syncs in all).
            if step == loop_start_step + FIT_WARMUP_STEPS:
                synchronize()
                fit_t0 = time.perf_counter()
            elif step == loop_start_step + FIT_WARMUP_STEPS + FIT_TIMED_STEPS:
                synchronize()
                now = time.perf_counter()
                steps_per_s = FIT_TIMED_STEPS / (now - fit_t0)
                left_s = args.fit_minutes * 60 - (now - session_start)
                planned = max(step + 1, step + int(steps_per_s * left_s * FIT_SAFETY))
                args.iterations = distributed.min_over_ranks(planned, world, device)
                progress.sized = True
                bar.total = args.iterations
                if is_main:
                    print(f"--fit-minutes {args.fit_minutes:g}: {steps_per_s * patches_per_step:.0f} "
                          f"patches/s measured; schedule sized to {args.iterations} steps "
                          f"({args.iterations * patches_per_step} patches)", file=sys.stderr)
        elif args.fit_minutes is not None and fit_t0 and not replanned and step % args.log_every == 0:
            # Every rank reaches this step together; the decision is agreed (a collective follows).
            (due,) = distributed.any_rank(
                [time.perf_counter() - session_start >= FIT_REPLAN_SHARE * args.fit_minutes * 60], world, device)
            if due:
                synchronize()
                now = time.perf_counter()
                steps_per_s = (step - loop_start_step - FIT_WARMUP_STEPS) / (now - fit_t0)
                left_s = args.fit_minutes * 60 - (now - session_start)
                planned = max(step + 1, step + int(steps_per_s * left_s * FIT_REPLAN_SAFETY))
                before, args.iterations = args.iterations, distributed.min_over_ranks(planned, world, device)
                replanned = True
                bar.total = args.iterations
                if is_main:
                    print(f"--fit-minutes {args.fit_minutes:g}: {steps_per_s * patches_per_step:.0f} patches/s "
                          f"since the probe; schedule sized again to {args.iterations} steps (was {before})",
                          file=sys.stderr)

        validate_now = step % args.val_every == 0 or step == args.iterations
        if step % args.log_every == 0 or validate_now:
            row = {k: f"{float(v) / interval_steps:.6g}" for k, v in sums.items()}
            elapsed = time.perf_counter() - interval_start  # float() above synchronised the GPU
            row.update(step=step, patches_seen=progress.patches_seen, lr=f"{lr:.3g}",
                       patches_per_s=f"{interval_steps * patches_per_step / elapsed:.1f}")
            if validate_now and is_main:
                scores = validate(kept, val_lr, val_hr, sheet=out / "val_crops" / f"step{step:07d}.jpg",
                                  sheet_crops=args.val_sheets, step=step)
                val_psnr = scores.psnr
                row.update(val_psnr=f"{val_psnr:.3f}", val_texture=f"{scores.texture:.3f}",
                           val_shift=f"{scores.shift:.2f}")
                if val_psnr > progress.best_val:
                    progress.best_val = val_psnr
                    save_weights(kept, out / "best_generator.pt", metadata(val_psnr, completed=False))
            if is_main:
                append_log(log_path, row)
                bar.set_postfix(loss=row["loss_g"], patches_s=row["patches_per_s"], val=row.get("val_psnr", "-"))
            sums, interval_steps, interval_start = {}, 0, time.perf_counter()

        if is_main and (progress.sized or args.fit_minutes is None) and \
                snapshot_due(step, total=args.iterations, snapshots=args.snapshots):
            save_weights(kept, out / "snapshots" / f"step{step:07d}.pt",
                         metadata(validate(kept, val_lr, val_hr).psnr, completed=False), dtype=torch.float16)

        progress.train_seconds = time.perf_counter() - run_start
        stop_now = stop["signal"] or (args.max_minutes is not None
                                      and time.perf_counter() - session_start > args.max_minutes * 60)
        checkpoint_due = time.perf_counter() - last_checkpoint > args.checkpoint_minutes * 60
        # The same decisions on every rank: both lead to collectives.
        stop_now, checkpoint_due = distributed.any_rank([stop_now, checkpoint_due], world, device)
        if stop_now:
            timed_out = True
            break
        if checkpoint_due:
            checkpoint()
            last_checkpoint = time.perf_counter()
    bar.close()
    for sig, handler in previous_handlers.items():
        signal.signal(sig, handler)

    progress.train_seconds = time.perf_counter() - run_start
    checkpoint()
    completed = progress.step >= args.iterations
    if is_main:
        if math.isnan(val_psnr) or not completed:
            val_psnr = validate(kept, val_lr, val_hr).psnr
        name = f"{args.stage}_x4"
        final_path = save_weights(kept, out / f"{name}.pt", metadata(val_psnr, completed=completed))
        if args.install and completed:
            try:
                installed, _ = install(final_path, name)
                print(f"installed as {name}: {installed} (fp16)", file=sys.stderr)
            except InstallError as exc:
                print(f"not installed: {exc}", file=sys.stderr)
        state = "stopped early (time box/signal)" if timed_out else "done"
        print(f"{state}: step {progress.step}/{args.iterations}, {progress.patches_seen} patches, val PSNR-Y "
              f"{val_psnr:.2f} dB; weights {final_path}; resume with --resume --out {out}",
              file=sys.stderr)
    if args.param_hash_dir is not None:
        args.param_hash_dir.mkdir(parents=True, exist_ok=True)
        (args.param_hash_dir / f"rank{rank}.txt").write_text(parameter_hash(generator))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (TrainingSetupError, TrainingDataError, LossSpecError, MissingVGGWeightsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
