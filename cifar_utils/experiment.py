"""One training run from a config: data, model, fit, final evaluation, and the files of a run.

Usage::

    from cifar_utils import from_preset, train
    result = train(from_preset("seed003", epochs=2, train_limit=2000), out_dir="runs/demo")
    result.metrics["test_accuracy"]

A run directory holds ``checkpoint.pt`` (and ``checkpoint_best.pt`` with ``keep_best``), ``metrics.json``
and ``history.csv``, all written atomically. An existing run is never overwritten unless asked.
"""

from __future__ import annotations

import contextlib
import datetime
import platform
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn

from . import distributed, io
from .checkpoint import (BEST_CHECKPOINT_NAME, CHECKPOINT_NAME, CURVES_NAME, HISTORY_NAME, METRICS_NAME,
                         checkpoint_config, load_checkpoint)
from .config import WARMUP_SCHEDULERS, Config, replace, without_ignored
from .data import (CifarData, ShardedShuffleSampler, Splits, build_transform, drops_last_batch, load_dataset,
                   make_dataloader, make_splits, resolve_root)
from .discussion import count
from .device import (BF16_MIN_SPEEDUP, autocast, cpu_bf16_measurement, cpu_has_native_bf16, cpu_model,
                     describe_device, get_device, keep_freed_cpu_memory, resolve_precision, set_seed)
from .ema import ExponentialMovingAverage, Lookahead
from .engine import fit, sigterm_interrupts, unwrap
from .errors import (CheckpointError, CifarUtilsError, ConfigError, OutOfMemoryError, OutputExistsError,
                     TrainingDivergedError, TrainingInterrupted)
from .evaluation import Evaluation, evaluate
from .losses import build_criterion
from .models import build_model
from .optim import build_optimizer, build_scheduler
from .preprocessing import IMAGE_SIZE
from .presets import PRESETS, from_preset
from .run_lock import RunLock

RUN_FILES = (CHECKPOINT_NAME, BEST_CHECKPOINT_NAME, METRICS_NAME, HISTORY_NAME, CURVES_NAME)


@dataclass
class Loaders:
    train: object
    validation: Optional[object]  # None when there is no validation split (validation_split=0)
    test: object


@dataclass
class RunResult:
    config: Config
    out_dir: Path
    model: nn.Module  # the evaluated model (EMA weights when ema_decay is set; lookahead's end on its average)
    history: list[dict]
    metrics: dict
    test: Evaluation
    splits: Splits


def load_splits(config: Config, data: Optional[CifarData] = None, origin: Optional[str] = None) -> Splits:
    """The seeded splits ``config`` describes (its data source, validation size, limits, normalisation);
    ``origin`` says where ``config.data_root`` came from, for the message when no data is found there."""
    data = data or load_dataset(config.data_root, config.dataset, config.download, config.skip_bad_files,
                                seed=config.seed, origin=origin)
    return make_splits(data, config.validation_split, config.seed, config.train_limit, config.validation_limit,
                       config.test_limit, config.normalization)


def describe_progressive(sides: Sequence[int], epochs: int, full: int) -> str:
    """``sides`` per epoch (then ``full`` to epoch ``epochs``) in words: "epochs 1-4 at 16 px, 5-7 at 24 px,
    8-10 at 32 px"."""
    sides = [*sides] + [full] * (epochs - len(sides))
    spans, start = [], 0
    for epoch in range(1, epochs + 1):
        if epoch == epochs or sides[epoch] != sides[start]:
            span = f"{start + 1}" if epoch == start + 1 else f"{start + 1}-{epoch}"
            spans.append(f"{span} at {sides[start]} px")
            start = epoch
    if len(spans) == 1:
        return f"every epoch at {full} px"
    return ("epoch " if "-" not in spans[0] else "epochs ") + ", ".join(spans)


def make_loaders(splits: Splits, config: Config, device: torch.device) -> Loaders:
    """Per-split loaders: the torchvision DataLoader pipeline or the GPU-resident one; sharded under DDP."""
    rank, world = distributed.rank(), distributed.world_size()
    batch, eval_batch = config.batch_size // world, -(-config.eval_batch_size // world)
    if config.pipeline == "gpu":
        from .gpu_data import make_gpu_loaders

        loaders = Loaders(*make_gpu_loaders(splits, config, device, batch, eval_batch, rank, world))
        if not len(splits.validation):
            loaders.validation = None
        return loaders
    train_sampler = ShardedShuffleSampler(len(splits.train), config.seed, True, world, rank)
    train = make_dataloader(splits.train, build_transform(config.augmentation, splits.mean, splits.std), batch,
                            device, train_sampler, config.num_workers, torch.Generator().manual_seed(config.seed),
                            drop_last=drops_last_batch(config.drop_last, len(train_sampler), batch))
    evals = [_eval_loader(s, splits.mean, splits.std, eval_batch, config, device,
                          ShardedShuffleSampler(len(s), shuffle=False, num_replicas=world, rank=rank)
                          if world > 1 else None) if len(s) else None
             for s in (splits.validation, splits.test)]
    return Loaders(train, *evals)


def _eval_loader(imageset, mean, std, batch_size: int, config: Config, device: torch.device, sampler=None):
    """A DataLoader of ``imageset`` without augmentation, normalised with ``mean`` and ``std``, in order."""
    return make_dataloader(imageset, build_transform("none", mean, std), batch_size, device, sampler,
                           config.num_workers)


def prepare_out_dir(out_dir: Path, resume: bool, overwrite: bool) -> list[str]:
    """Check the (locked) run directory: an existing run needs ``resume`` or ``overwrite``. The earlier run's
    files that ``overwrite`` replaces; they stay until the new run's first checkpoint is written."""
    existing = [name for name in RUN_FILES if (out_dir / name).exists()]
    if resume:
        if not (out_dir / CHECKPOINT_NAME).exists():
            raise CheckpointError(f"nothing to resume: {out_dir / CHECKPOINT_NAME} does not exist; "
                                  "drop --resume (resume=False) to start a new run")
        if distributed.is_main_process():
            for leftover in out_dir.glob(".*.tmp"):  # temp files of saves that a crash cut short
                leftover.unlink()
        return []
    if existing and not overwrite:
        raise OutputExistsError(f"{out_dir} already holds a run ({', '.join(existing)}). Pass --resume "
                                "(resume=True) to continue it, --overwrite (overwrite=True) to replace it, "
                                "or choose another --out (out_dir).")
    return existing


def lock_out_dir(out_dir: Optional[str | Path], preset: str, resume: bool,
                 log: Callable[[str], None]) -> tuple[Path, contextlib.ExitStack]:
    """The run directory (a new timestamped one by default) and its lock, which rank 0 holds for the run.

    Taking the lock writes into the folder, so a run that could not save its results stops here, before
    loading any data; every rank raises the same error instead of waiting for rank 0 at a barrier.
    """
    if out_dir is None:
        if resume:
            raise CheckpointError("resume needs the run directory to continue: pass --out DIR (out_dir=...)")
        out_dir = distributed.broadcast_from_main(_new_run_dir(preset) if distributed.is_main_process() else None)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():  # every rank sees the same file, so each says so
        raise OutputExistsError(f"--out {out_dir} is a file, not a run folder; choose a folder (out_dir=...)")
    lock, problem = contextlib.ExitStack(), None
    if distributed.is_main_process():
        try:
            lock.enter_context(RunLock(out_dir, log))
        except CifarUtilsError as err:
            problem = err
    message = distributed.broadcast_from_main(None if problem is None else str(problem))
    if problem is not None:
        raise problem
    if message is not None:  # the other ranks: the same words (an exception itself may not survive pickling)
        raise OutputExistsError(message)
    return out_dir, lock


def _new_run_dir(preset: str) -> Path:
    """``runs/<preset>-<time>``, created now; a suffix keeps two runs started in the same second apart."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    for attempt in range(1, 100):
        candidate = Path("runs") / (f"{preset}-{stamp}" + (f"-{attempt}" if attempt > 1 else ""))
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            continue
    raise OutputExistsError(f"could not create a new run directory for {preset} under runs/; pass --out DIR")


def train(config: Config, out_dir: Optional[str | Path] = None, *, device: Optional[str] = None,
          resume: bool = False, overwrite: bool = False, progress: bool = True,
          log: Callable[[str], None] = print, data: Optional[CifarData] = None) -> RunResult:
    """Train ``config`` end to end and write the run's files into ``out_dir``; see the module docstring.

    Under ``torchrun`` this joins the process group (NCCL on GPUs, gloo on the CPU), trains with
    DistributedDataParallel on per-rank shards of ``config.batch_size / world_size`` images, and lets
    only rank 0 write files and print.
    """
    started = time.perf_counter()
    if resume and overwrite:
        raise ConfigError("--resume (resume=True) continues the run in --out (out_dir) and --overwrite "
                          "(overwrite=True) replaces it: choose one")
    config.validate()
    dev = get_device(device)
    # Checked on every rank before any collective, so a bad launch fails everywhere instead of hanging.
    distributed.check_batch_divides(config.batch_size, distributed.env_info().world_size)
    if config.sync_batchnorm and dev.type != "cuda":
        raise ConfigError("sync_batchnorm=True needs CUDA GPUs (torch's SyncBatchNorm has no CPU kernel); "
                          "drop it on the CPU, where each rank's BatchNorm uses its own shard")
    joined = distributed.launched_by_torchrun() and not distributed.is_initialized()
    if joined:
        info = distributed.setup(dev.type)
        if dev.type == "cuda":
            dev = torch.device("cuda", info.local_rank)
    try:
        return _train(config, out_dir, dev, resume, overwrite, progress, log, data, started)
    except torch.OutOfMemoryError:  # outside the training loop: moving data, compiling, evaluating
        raise OutOfMemoryError(f"{dev.type} ran out of memory outside the training loop (loading the data set onto "
                               f"the device, compiling or evaluating). Try a smaller --batch-size, "
                               f"--set eval_batch_size=N, or --pipeline torchvision to keep the data on the host.") from None
    finally:
        if joined:
            distributed.cleanup()


def _train(config: Config, out_dir, dev: torch.device, resume: bool, overwrite: bool, progress: bool,
           log: Callable[[str], None], data: Optional[CifarData], started: float) -> RunResult:
    fresh = out_dir is None or not Path(out_dir).exists()  # this run creates the folder
    out, lock = lock_out_dir(out_dir, config.preset, resume, log)
    try:
        with lock:
            earlier = prepare_out_dir(out, resume, overwrite)
            distributed.barrier()
            return _train_in(config, out, earlier, dev, resume, progress, log, data, started)
    except BaseException:
        if fresh and distributed.is_main_process():
            with contextlib.suppress(OSError):  # kept when it holds anything, such as a checkpoint
                out.rmdir()  # a run that failed before writing a file leaves no empty folder behind
        raise


def build_network(config: Config, splits: Splits, device: torch.device) -> nn.Module:
    """``config``'s network for ``splits`` on ``device`` (seeded by the caller): a layer fitted to the data (the
    fast networks' frozen whitening stem) fitted to the training split, in channels_last where asked."""
    model = build_model(config, len(splits.classes))
    if hasattr(model, "init_from_data"):
        model.init_from_data(splits.train.images, splits.mean, splits.std)
    model = model.to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


@dataclass
class TrainingParts:
    """What trains a network besides its data: see :func:`build_training_parts`."""

    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any  # a torch LR scheduler, or None
    scaler: Optional[torch.amp.GradScaler]  # fp16 only
    averager: Any  # the weight average (ExponentialMovingAverage or Lookahead), or None
    steps_per_epoch: int  # optimizer steps per epoch (mini-batches / accumulation_steps, rounded up)


def build_training_parts(model: nn.Module, config: Config, batches_per_epoch: int, device: torch.device,
                         precision: str) -> TrainingParts:
    """The loss, optimizer, schedule (sized in optimizer steps), fp16 gradient scaler and weight average that
    ``config`` trains ``model`` with, for epochs of ``batches_per_epoch`` mini-batches."""
    optimizer = build_optimizer(model, config)
    steps_per_epoch = -(-batches_per_epoch // config.accumulation_steps)
    averager = None
    if config.ema_decay is not None:
        averager = ExponentialMovingAverage(unwrap(model), config.ema_decay)
    elif config.lookahead_decay is not None:
        averager = Lookahead(unwrap(model), steps_per_epoch * config.epochs, config.lookahead_decay)
    return TrainingParts(build_criterion(config), optimizer, build_scheduler(optimizer, config, steps_per_epoch),
                         torch.amp.GradScaler(device.type) if precision == "fp16" else None, averager,
                         steps_per_epoch)


def _train_in(config: Config, out: Path, earlier: list[str], dev: torch.device, resume: bool, progress: bool,
              log: Callable[[str], None], data: Optional[CifarData], started: float) -> RunResult:
    main = distributed.is_main_process()
    say = log if main else (lambda _msg: None)
    precision = resolve_precision(config.precision, dev)
    reason = _precision_reason(config.precision, precision, dev)
    checkpoint = out / CHECKPOINT_NAME
    data_root_unset = config.data_root is None and data is None
    # What the run to resume recorded (read once here; fit reads it again to restore it, or says it is missing).
    recorded = (_recorded_setup(checkpoint) if resume and checkpoint.is_file()
                and (config.precision == "auto" or data_root_unset) else None)
    if recorded is not None and config.precision == "auto":
        precision, reason = _resumed_precision(recorded[1], checkpoint, precision, reason, dev)
    set_seed(config.seed + distributed.rank(), config.deterministic)
    if dev.type == "cuda" and not config.deterministic:
        # few input shapes (one per progressive-resizing stage): let cuDNN pick the fastest kernels once each
        torch.backends.cudnn.benchmark = True

    memory = ", malloc reuses freed memory" if dev.type == "cpu" and keep_freed_cpu_memory() else ""
    origin = None
    if recorded is not None and data_root_unset and recorded[0].data_root is not None:
        # A run given --data-root resumes on that folder unless told otherwise, as evaluate reads it.
        config, origin = replace(config, data_root=recorded[0].data_root), f"the data_root recorded in {checkpoint}"
    splits = load_splits(config, data, origin)
    say(f"device {describe_device(dev)}{memory}, precision {precision}{reason}, data: {splits.description}")
    say(f"splits: {len(splits.train)} train / {len(splits.validation)} validation / {len(splits.test)} test "
        f"({splits.held_out}); run directory {out}")
    note = _short_run_note(config)
    if note:
        say(note)
    loaders = make_loaders(splits, config, dev)
    if config.progressive_start:  # only on the GPU pipeline, whose loader holds the schedule
        loader = loaders.train
        say(f"progressive resizing: {describe_progressive(loader.epoch_sides, config.epochs, loader.image_size)}")
    torch.manual_seed(config.seed)  # the same initial weights on every rank
    model = build_network(config, splits, dev)
    per_process = config.batch_size // distributed.world_size()
    if per_process == 1 and any(isinstance(m, nn.BatchNorm1d) for m in model.modules()):
        raise ConfigError(f"batch_size={config.batch_size} gives each process mini-batches of 1 image, and "
                          f"{config.model}'s BatchNorm1d cannot train on one: choose a batch of at least "
                          f"{2 * distributed.world_size()}")
    if config.sync_batchnorm and not distributed.is_initialized():
        say("note: sync_batchnorm only matters under torchrun; this single process uses plain BatchNorm")
    if distributed.is_initialized():
        if config.sync_batchnorm:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    parts = build_training_parts(model, config, len(loaders.train), dev, precision)
    criterion, optimizer, scheduler, scaler, averager = (parts.criterion, parts.optimizer, parts.scheduler,
                                                         parts.scaler, parts.averager)
    compile_seconds = 0.0
    if config.compile:
        sides = sorted(set(getattr(loaders.train, "epoch_sides", ())) | {IMAGE_SIZE})  # progressive stages too
        examples = [torch.zeros(config.batch_size // distributed.world_size(), 3, side, side, device=dev)
                    for side in sides]
        if config.channels_last:
            examples = [x.contiguous(memory_format=torch.channels_last) for x in examples]
        compile_seconds, model = _compile(model, examples, dev, precision)
    torch.manual_seed(config.seed + distributed.rank())  # per-rank augmentation streams

    # Resume compares these with the checkpoint's: the data, and the precision that auto resolved to.
    extra = {"classes": splits.classes, "mean": list(splits.mean), "std": list(splits.std), "precision": precision}
    saved: list[Path] = []  # this run's checkpoints, as written

    def replace_earlier(path: Path) -> None:
        # The new run's first checkpoint is on disk: the earlier run's other files would now mix with it.
        for name in earlier:
            if name != path.name:
                (out / name).unlink(missing_ok=True)
        earlier.clear()
        saved.append(path)

    try:
        history = fit(model, criterion, optimizer, loaders.train, loaders.validation, dev, config,
                      scheduler=scheduler, scaler=scaler, averager=averager, precision=precision,
                      checkpoint_dir=out, resume=resume, progress=progress, log=say, extra_state=extra,
                      on_save=replace_earlier)
    except TrainingDivergedError as err:
        last = saved[-1] if saved else out / CHECKPOINT_NAME if resume else None
        kept = (f"the last good checkpoint was kept: {last}" if last else
                f"this run saved nothing, and the earlier run in {out} was left as it was" if earlier else
                "nothing was saved, as it diverged before its first checkpoint")
        raise TrainingDivergedError(err.epoch, err.batch, err.loss, err.quantity, kept) from None

    distributed.barrier()  # rank 0 has written the last checkpoints before any rank reads them
    eval_model = averager.module if averager is not None else unwrap(model)
    tta = f", test-time augmentation {config.tta}" if config.tta != "none" else ""
    validating = loaders.validation is not None
    validation = f" and {len(splits.validation)} validation" if validating else ""
    say(f"final evaluation: {len(splits.test)} test{validation} images{tta}")
    kwargs = dict(precision=precision, tta=config.tta, channels_last=config.channels_last)
    bars = progress and main  # a long final evaluation shows where it is
    try:
        with sigterm_interrupts():
            if config.keep_best and (out / BEST_CHECKPOINT_NAME).exists():
                best = load_checkpoint(out / BEST_CHECKPOINT_NAME, map_location=dev)
                if averager is not None and best.get("ema") is not None:
                    averager.load_state_dict(best["ema"])
                else:
                    eval_model.load_state_dict(best["model"])
                say(f"evaluating the best-validation checkpoint (epoch {best['epoch']})")
            test = evaluate(eval_model, _full_loader(loaders.test, splits.test, config, dev, splits), dev,
                            splits.classes, progress="test" if bars else None, **kwargs)
            val = evaluate(eval_model, _full_loader(loaders.validation, splits.validation, config, dev, splits), dev,
                           splits.classes, progress="validation" if bars else None, **kwargs) if validating else None
    except torch.OutOfMemoryError:
        raise OutOfMemoryError(f"{dev.type} ran out of memory in the final evaluation with "
                               f"eval_batch_size={config.eval_batch_size}; training finished and {out} holds "
                               f"its checkpoint. Evaluate it with a smaller batch: python -m cifar_utils "
                               f"evaluate --checkpoint {out / CHECKPOINT_NAME} --batch-size {max(1, config.eval_batch_size // 2)}") from None
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM (sigterm_interrupts)
        raise TrainingInterrupted(f"interrupted during the final evaluation; training had finished and "
                                  f"{out / CHECKPOINT_NAME} holds it. Run the same command with --resume "
                                  "(resume=True) to evaluate it and write metrics.json",
                                  signum=getattr(err, "signum", signal.SIGINT)) from None
    metrics = {
        "preset": config.preset,
        # Plain cross-entropy of the evaluated predictions; history.csv's losses are the training criterion.
        # Without a validation split (validation_split=0) the validation numbers are None (null in the file).
        "test_accuracy": test.accuracy, "test_cross_entropy": test.loss,
        "validation_accuracy": val.accuracy if validating else None,
        "validation_cross_entropy": val.loss if validating else None,
        "best_validation_accuracy": max((r["val_acc"] for r in history), default=float("nan")) if validating else None,
        "final_train_accuracy": history[-1]["train_acc"] if history else float("nan"),
        "per_class_test_accuracy": test.per_class_accuracy,
        "epochs": len(history),
        "train_seconds": sum(r["seconds"] for r in history),
        "compile_seconds": compile_seconds,
        "total_seconds": time.perf_counter() - started,
        "data": splits.description,
        # The folder the data came from, which data_root=None leaves to $CIFAR10_ROOT: a later reuse of the run
        # compares it, so that a run trained on one copy is never reused for another (None: data passed in).
        "data_folder": str(resolve_root(config.data_root)[0]) if data is None and config.dataset != "synthetic" else None,
        "split_sizes": {"train": len(splits.train), "validation": len(splits.validation), "test": len(splits.test)},
        "device": describe_device(dev), "precision": precision, "world_size": distributed.world_size(),
        "cpu_model": cpu_model() if dev.type == "cpu" else None,  # CPU times compare only on the same model
        "torch_version": torch.__version__, "python_version": platform.python_version(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "config": config.to_dict(),
    }
    if main:
        io.save_json(metrics, out / METRICS_NAME)
        io.save_csv(history, out / HISTORY_NAME)
        val_note = f"validation {val.accuracy:.2%}" if validating else "no validation split"
        say(f"test accuracy {test.accuracy:.2%} ({val_note}{tta}) on {splits.description}; files in {out}")
    distributed.barrier()
    return RunResult(config, out, eval_model, history, metrics, test, splits)


def _precision_reason(asked: str, chosen: str, device: torch.device) -> str:
    """Why ``precision=auto`` chose what it did, for the run's first line."""
    if asked != "auto":
        return ""
    if device.type == "cpu":
        if not cpu_has_native_bf16():
            return " (auto: this CPU has no bf16 arithmetic)"
        bf16 = cpu_bf16_measurement()
        verdict = "at least" if bf16.faster else "below"
        kept = f"kept in {bf16.cache}" if bf16.cache else "not kept: its cache file could not be written"
        return (f" (auto: bf16 trained {bf16.speedup:.2f}x as fast as fp32 on this CPU, {verdict} the "
                f"{BF16_MIN_SPEEDUP}x it needs; measured {bf16.date}, {kept})")
    return f" (auto on {device.type})"


def _short_run_note(config: Config) -> Optional[str]:
    """A note when the warm-up is not shorter than the run (``--epochs`` lowered, ``warmup_epochs`` kept): the
    schedule is then all warm-up, which is rarely what a short trial of a preset wants."""
    if config.scheduler not in WARMUP_SCHEDULERS or config.warmup_epochs < config.epochs:
        return None
    note = (f"note: warmup_epochs={config.warmup_epochs:g} is not shorter than the run ({count(config.epochs, 'epoch')}): "
            "the warm-up is cut to fit and the learning rate hardly decays")
    if config.preset in PRESETS:
        planned = from_preset(config.preset)
        share = planned.warmup_epochs / planned.epochs
        if share < 1:
            note += (f"; {config.preset} warms up for {share:.0%} of its run, and --set warmup_epochs="
                     f"{round(share * config.epochs, 2):g} keeps that share")
    return note


def _recorded_setup(checkpoint: Path) -> tuple[Config, Optional[str]]:
    """The config a checkpoint records and the precision it trained in (None in checkpoints older than that
    record)."""
    state = load_checkpoint(checkpoint)
    return checkpoint_config(state, checkpoint), state.get("precision")


def _resumed_precision(recorded: Optional[str], checkpoint: Path, chosen: str, reason: str,
                       device: torch.device) -> tuple[str, str]:
    """The precision, and why, for resuming a ``precision="auto"`` run: the one it trained in (``recorded``,
    from its checkpoint), even where auto would choose another here, so that one run never mixes two."""
    if recorded is None or recorded == chosen:
        return chosen, reason
    if recorded == "fp16" and device.type != "cuda":
        raise ConfigError(f"{checkpoint} trained in fp16 (precision=auto on its GPU), which needs a CUDA GPU: "
                          "resume it on a GPU, or start a new run here")
    return recorded, f" (auto: {recorded}, which the resumed run trained in; here auto would choose {chosen})"


def _full_loader(loader, imageset, config, device, splits):
    """Final evaluation reads every image on every rank (not a shard), so all ranks report the same numbers."""
    if distributed.world_size() == 1:
        return loader
    return _eval_loader(imageset, splits.mean, splits.std, config.eval_batch_size, config, device)


def _compile(model: nn.Module, examples: Sequence[torch.Tensor], device: torch.device,
             precision: str) -> tuple[float, nn.Module]:
    """``torch.compile`` the model and run one forward and backward pass on each of ``examples``
    ([B, 3, side, side], one per training image side, the last at full size), so that compiling happens here
    and is timed apart from training; the weights, BatchNorm statistics and gradients are restored afterwards.
    Seconds spent, and the compiled model. A shorter last batch still compiles once more inside the first
    epoch."""
    started = time.perf_counter()
    compiled = torch.compile(model)
    state = {k: v.clone() for k, v in unwrap(model).state_dict().items()}
    with autocast(device, precision):
        for example in examples:
            compiled(example).float().sum().backward()
        compiled.eval()  # validation runs the eval-mode graph at full size, which compiles separately
        with torch.no_grad():
            compiled(examples[-1])
        compiled.train()
    unwrap(model).load_state_dict(state)
    model.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started, compiled


@dataclass
class TrainedModel:
    """A checkpoint's network, ready to predict, with what it needs to read images."""

    model: nn.Module  # in eval mode, on ``device``; the EMA weights when the run kept an average
    config: Config
    classes: list[str]
    mean: tuple[float, ...]  # the normalisation it was trained with, in [0, 1] pixel units
    std: tuple[float, ...]
    device: torch.device


def load_model(path: str | Path, device: Optional[str] = None) -> TrainedModel:
    """Rebuild the network saved in checkpoint ``path`` (clear :class:`CheckpointError` if unusable)."""
    state = load_checkpoint(path)
    if "classes" not in state:
        raise CheckpointError(f"{path} does not record its classes; it was not written by cifar_utils.train")
    config = checkpoint_config(state, path)
    dev = get_device(device)
    model = build_model(config, len(state["classes"]))
    try:
        model.load_state_dict(state["ema"]["module"] if state.get("ema") is not None else state["model"])
    except (RuntimeError, KeyError, TypeError) as err:  # torch's missing, unexpected and mis-sized weights
        raise CheckpointError(f"{path} does not fit the {config.model} network it names for "
                              f"{len(state['classes'])} classes (was it written by another version of cifar_utils?): "
                              f"{str(err).splitlines()[0][:300]}") from None
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return TrainedModel(model.to(dev).eval(), config, list(state["classes"]), tuple(state["mean"]),
                        tuple(state["std"]), dev)


def evaluate_model(trained: TrainedModel, splits: Splits, config: Config) -> Evaluation:
    """Evaluate a loaded network on the test split of ``splits`` (made from ``config``, the run's settings
    with any overrides such as the data root or the evaluation batch), normalised with the statistics the
    checkpoint stores: recomputing them from other data would feed the network inputs it was not trained on."""
    if trained.classes != splits.classes:
        raise CheckpointError(f"the network was trained on classes {trained.classes}, but the data has {splits.classes}")
    loader = _eval_loader(splits.test, trained.mean, trained.std, config.eval_batch_size, config, trained.device)
    precision = resolve_precision(config.precision, trained.device)
    return evaluate(trained.model, loader, trained.device, splits.classes, precision=precision, tta=config.tta,
                    channels_last=config.channels_last)


def reported_checkpoint(path: str | Path, keep_best: bool) -> Path:
    """The checkpoint whose weights ``train`` tested: ``checkpoint_best.pt`` beside a run's ``checkpoint.pt``
    when the run kept the best-validation weights, else ``path`` itself."""
    path = Path(path)
    best = path.with_name(BEST_CHECKPOINT_NAME)
    return best if keep_best and path.name == CHECKPOINT_NAME and best.is_file() else path


def evaluate_checkpoint(path: str | Path, data_root: Optional[str] = None, device: Optional[str] = None,
                        data: Optional[CifarData] = None, batch_size: Optional[int] = None,
                        log: Callable[[str], None] = print,
                        precision: Optional[str] = None) -> tuple[Evaluation, Config]:
    """Evaluate checkpoint ``path`` on its run's test split (same seed and limits as in training, the
    normalisation stored in the checkpoint); ``data_root``, ``batch_size`` (the evaluation batch) and
    ``precision`` (e.g. fp32 for a run trained in fp16 on a GPU, scored on a CPU) override what the run's
    config says. A run's ``checkpoint.pt`` with ``keep_best`` is scored with the best-validation weights beside
    it, as ``train`` scored it."""
    trained = load_model(path, device)
    chosen = reported_checkpoint(path, trained.config.keep_best)
    if chosen != Path(path):
        log(f"evaluating {chosen}: the run kept its best-validation weights (keep_best), and train tested those")
        trained = load_model(chosen, device)
    if precision is None and trained.config.precision == "fp16" and trained.device.type != "cuda":
        raise ConfigError(f"{path} was trained with precision=fp16, which needs a CUDA GPU; to evaluate it on "
                          f"{trained.device.type}, add --precision fp32 (precision='fp32')")
    overrides = {"data_root": data_root, "eval_batch_size": batch_size, "precision": precision}
    # A setting the run never read (saved before such settings were refused) is no reason to refuse its evaluation.
    given = {k: v for k, v in overrides.items() if v is not None}
    config = replace(without_ignored(trained.config), **given)
    # The schedule's floor never reaches an evaluation, and versions before 2026-12-07 read min_lr as a share
    # of each group's rate under the warm-up schedules, which today's check can refuse.
    without_ignored(replace(config, min_lr=0.0)).validate()
    origin = f"the data_root recorded in {path}" if data_root is None else None
    return evaluate_model(trained, load_splits(config, data, origin), config), config
