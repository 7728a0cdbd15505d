"""Training engine: one epoch of training, one of validation, and ``fit`` with checkpoints and resume.

Usage::

    history = fit(model, criterion, optimizer, train_loader, val_loader, device, config,
                  scheduler=scheduler, checkpoint_dir="runs/demo", resume=True)

``fit`` writes ``checkpoint.pt`` (atomically) after every epoch, and every ``checkpoint_every_steps``
optimizer steps when asked; with ``resume=True`` it continues from that file where it stopped: model,
optimizer, scheduler, scaler, EMA, RNG and the position in the epoch are all restored. The resumed run then
draws the same batches and augmentations as an uninterrupted one with the GPU pipeline, and with the
torchvision pipeline in one process without DataLoader workers (on the CPU it computes the same numbers;
a GPU's autotuned kernels can differ in the last bits unless ``deterministic``). With workers, or under
torchrun (every process restores the first one's random state), it sees the same images in the same order
with other random augmentations.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn
from tqdm import tqdm

from . import distributed
from .checkpoint import (BEST_CHECKPOINT_NAME, CHECKPOINT_NAME, checkpoint_config, load_checkpoint, restore_rng_state,
                         rng_state, save_checkpoint)
from .config import LOCATION_FIELDS, NOT_RESULT_FIELDS, without_ignored
from .device import autocast
from .errors import CheckpointError, OutOfMemoryError, TrainingDivergedError, TrainingInterrupted
from .optim import PER_STEP_SCHEDULERS, scheduler_interval

# Mini-batches between reads of the running loss on a GPU: reading it waits for the device to finish,
# which leaves it idle while the host queues the next mini-batch.
ACCELERATOR_READ_BACK_EVERY = 32


@dataclass
class EpochProgress:
    """Running totals of a (possibly partial) training epoch; saved in mid-epoch checkpoints."""

    batches: int = 0  # mini-batches done in this epoch
    loss_sum: float = 0.0  # sum over samples of the loss
    correct: int = 0  # correctly classified training samples
    count: int = 0  # samples seen
    seconds: float = 0.0  # training time spent in this epoch before a resume
    lr: Optional[float] = None  # the first group's learning rate when the epoch began: its history row's "lr"

    def __post_init__(self) -> None:
        self._sums: Optional[torch.Tensor] = None  # [loss sum, correct] not yet read back from the device
        self._first_bad: Optional[torch.Tensor] = None  # [mini-batch number, loss] of the first non-finite loss

    def record(self, loss: torch.Tensor, correct: torch.Tensor, count: int, batch_number: int) -> None:
        """Add one mini-batch's mean loss and correct count, on the device and without waiting for it."""
        loss = loss.detach().to(accumulator_dtype(loss.device))
        if self._sums is None:
            self._sums = torch.zeros(2, dtype=loss.dtype, device=loss.device)
            self._first_bad = torch.tensor([-1.0, 0.0], dtype=loss.dtype, device=loss.device)
        self._sums += torch.stack([loss * count, correct.to(loss.dtype)])
        first = ~torch.isfinite(loss) & (self._first_bad[0] < 0)
        self._first_bad = torch.where(first, torch.stack([torch.full_like(loss, batch_number), loss]),
                                      self._first_bad)
        self.batches, self.count = batch_number, self.count + count

    def read_back(self, epoch: int) -> None:
        """Fold the device sums into the fields (one host-device sync); raise at a non-finite loss."""
        if self._sums is None:
            return
        (loss_sum, correct), (bad_batch, bad_loss) = torch.stack([self._sums, self._first_bad]).tolist()
        self._sums = self._first_bad = None
        if bad_batch >= 0:
            raise TrainingDivergedError(epoch, int(bad_batch), bad_loss)
        self.loss_sum += loss_sum
        self.correct += int(correct)

    def averages(self) -> tuple[float, float]:
        loss_sum, correct, count = distributed.all_reduce_sum([self.loss_sum, self.correct, self.count])
        return loss_sum / max(count, 1), correct / max(count, 1)


def accumulator_dtype(device: torch.device) -> torch.dtype:
    """float64 for running sums, except on Apple's MPS, which has no float64."""
    return torch.float32 if device.type == "mps" else torch.float64


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DistributedDataParallel and/or torch.compile wrappers."""
    while True:
        if hasattr(model, "module"):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def train_epoch(model: nn.Module, dataloader, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                device: torch.device, accumulation_steps: int = 1, *, precision: str = "fp32",
                scaler: Optional[torch.amp.GradScaler] = None, grad_clip: Optional[float] = None,
                scheduler=None, averager=None, channels_last: bool = False, epoch: int = 1,
                start: Optional[EpochProgress] = None,
                on_step: Optional[Callable[[EpochProgress], None]] = None,
                progress: bool = False, read_back_every: int = 1) -> tuple[float, float]:
    """Train for one epoch and return ``(average loss, accuracy)`` over its samples.

    The optimizer steps every ``accumulation_steps`` mini-batches, and once more for a shorter remainder
    at the end of the epoch; each mini-batch's loss is divided by the size of its group, so a step sees
    the mean gradient. ``scheduler`` (per-step schedules only) and ``averager`` are stepped after every
    optimizer step, then ``on_step`` is called with the running totals. ``start`` resumes an epoch
    part-way: the loader must already skip the ``start.batches`` mini-batches done.

    Losses and correct counts are summed on the device and read back every ``read_back_every``
    mini-batches. With 1 (the CPU default) a NaN or infinite loss raises :class:`TrainingDivergedError`
    before its update can reach the weights; larger values let a GPU run ahead of the host, and the error
    still names the exact mini-batch (``fit`` checks the weights before every checkpoint, so a diverged
    update is never saved).
    """
    model.train()
    state = start or EpochProgress()
    total_batches = state.batches + len(dataloader)
    optimizer.zero_grad(set_to_none=True)
    bar = tqdm(total=total_batches, initial=state.batches, desc=f"epoch {epoch}", leave=False,
               disable=not progress, file=sys.stderr, dynamic_ncols=True)
    with bar:
        for batch_index, (images, labels) in enumerate(dataloader, start=state.batches):
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            group_start = batch_index - batch_index % accumulation_steps
            group_size = min(accumulation_steps, total_batches - group_start)
            steps_now = batch_index + 1 == group_start + group_size
            sync = contextlib.nullcontext() if steps_now or not hasattr(model, "no_sync") else model.no_sync()
            with sync:
                with autocast(device, precision):
                    logits = model(images)
                    loss = criterion(logits, labels)
                state.record(loss, (logits.argmax(1) == labels).sum(), len(labels), batch_index + 1)
                if (batch_index + 1) % read_back_every == 0:
                    state.read_back(epoch)
                scaled = loss / group_size
                (scaler.scale(scaled) if scaler else scaled).backward()
            if steps_now:
                _optimizer_step(model, optimizer, scaler, grad_clip)
                if scheduler is not None:
                    scheduler.step()
                if averager is not None:
                    averager.update(unwrap(model))
            bar.update(1)
            if steps_now and on_step is not None:
                on_step(state)
    state.read_back(epoch)
    return state.averages()


def _optimizer_step(model, optimizer, scaler, grad_clip) -> None:
    if scaler is not None:
        scaler.unscale_(optimizer)
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@torch.no_grad()
def validate_epoch(model: nn.Module, dataloader, criterion: nn.Module, device: torch.device, *,
                   precision: str = "fp32", channels_last: bool = False) -> tuple[float, float]:
    """Evaluate without gradients and return ``(average loss, accuracy)`` (summed over ranks under DDP).

    Under DDP a split whose size is not a multiple of the number of processes is padded with up to that many
    less one repeated images, as torch's DistributedSampler pads, so that every process runs the same number
    of batches. A loader whose sampler (or itself) has ``unpadded_size`` says how many of its images are not
    padding; only those count, so every image counts once."""
    model.eval()
    loss_sum = torch.zeros((), device=device, dtype=accumulator_dtype(device))
    correct = torch.zeros((), device=device, dtype=torch.int64)
    left = getattr(getattr(dataloader, "sampler", dataloader), "unpadded_size", None)
    count = 0
    for images, labels in dataloader:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            logits = model(images)
        if left is not None:  # padding comes last: drop it from the count
            kept = min(len(labels), left)
            left -= kept
            logits, labels = logits[:kept], labels[:kept]
        if not len(labels):
            continue
        with autocast(device, precision):
            loss = criterion(logits, labels)
        loss_sum += loss.to(loss_sum.dtype) * len(labels)
        correct += (logits.argmax(1) == labels).sum()
        count += len(labels)
    loss_total, correct_total, count_total = distributed.all_reduce_sum([loss_sum.item(), correct.item(), count])
    return loss_total / max(count_total, 1), correct_total / max(count_total, 1)


# What stops a training run gracefully, at its next optimizer step and with a checkpoint: Ctrl-C, and the
# polite kill of `timeout`, Slurm, Docker or a preempted cloud machine.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _InterruptFlag:
    """Turns the first Ctrl-C or SIGTERM into a request to stop at the next optimizer step. A second Ctrl-C acts
    as it did before the run (by default, KeyboardInterrupt at once); a repeated SIGTERM changes nothing, as
    Slurm signals every process of a job and torchrun passes the signal on to each of its processes again
    (each follows up with SIGKILL after its grace period)."""

    def __init__(self):
        self.requested: Optional[signal.Signals] = None  # the signal that asked to stop
        self._previous: dict[signal.Signals, object] = {}

    def __enter__(self) -> "_InterruptFlag":
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                # A process started with SIGTERM ignored keeps ignoring it. SIGINT is always taken: shells start
                # background jobs with it ignored, yet an explicit `kill -INT` to one still means "stop".
                if signum == signal.SIGINT or signal.getsignal(signum) is not signal.SIG_IGN:
                    self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = self.requested or signal.Signals(signum)
        if signum == signal.SIGINT:
            signal.signal(signum, _handler_to_restore(signum, self._previous[signum]))

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, _handler_to_restore(signum, previous))


class Terminated(KeyboardInterrupt):
    """SIGTERM raised where work stops at once, as Ctrl-C raises KeyboardInterrupt (see :func:`sigterm_interrupts`)."""

    signum = signal.SIGTERM


@contextlib.contextmanager
def sigterm_interrupts():
    """Within, SIGTERM raises :class:`Terminated`, a KeyboardInterrupt, so that what cleans up after Ctrl-C (the
    final evaluation's message) does so after SIGTERM too, instead of the process ending without a word."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
        yield
        return

    raised = []

    def terminate(signum, frame):
        if not raised:  # once: a repeated SIGTERM (Slurm, torchrun) must not cut short the cleanup it started
            raised.append(signum)
            raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, _handler_to_restore(signal.SIGTERM, previous))


def _handler_to_restore(signum: int, previous):
    # None: the handler before was set outside Python and cannot be put back; Python's own default stands in,
    # never the flag's, which would swallow every later signal.
    if previous is not None:
        return previous
    return signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL


def fit(model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer, train_loader, val_loader,
        device: torch.device, config, *, scheduler=None, scaler: Optional[torch.amp.GradScaler] = None,
        averager=None, precision: str = "fp32", checkpoint_dir: Optional[str | Path] = None, resume: bool = False,
        progress: bool = True, log: Callable[[str], None] = print,
        extra_state: Optional[dict] = None, on_save: Optional[Callable[[Path], None]] = None) -> list[dict]:
    """Train for ``config.epochs`` epochs and return the history, one dict per epoch.

    Each history row holds ``epoch``, ``train_loss``, ``train_acc``, ``val_loss``, ``val_acc``, ``lr``
    (at the start of the epoch) and ``seconds``. The model evaluated each epoch is ``averager.module`` when
    ``averager``, the weight average, is given (an :class:`~cifar_utils.ema.ExponentialMovingAverage`'s
    average, or the live model that a :class:`~cifar_utils.ema.Lookahead` pulls back to its average; either
    one is saved under the checkpoint's "ema" key); with ``val_loader`` None (no validation split) nothing
    is evaluated and ``val_loss`` and ``val_acc`` are NaN, so every row keeps the same columns.
    ``extra_state`` (classes, normalisation) is stored in every checkpoint, and a resumed checkpoint must
    match it; ``on_save`` is called with each
    checkpoint's path once written. Weights that became NaN or infinite raise :class:`TrainingDivergedError`
    instead of being checkpointed.
    """
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    interval = scheduler_interval(config)
    eval_model = averager.module if averager is not None else model
    history: list[dict] = []
    start_epoch, best_val_acc, partial = 0, -1.0, EpochProgress()

    if resume:
        if checkpoint_dir is None:
            raise CheckpointError("resume=True needs a checkpoint directory (out_dir) to resume from")
        path = checkpoint_dir / CHECKPOINT_NAME
        state = load_checkpoint(path, map_location=device)
        _check_same_setup(state, config, path, extra_state or {})
        try:
            unwrap(model).load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            for obj, key in ((scheduler, "scheduler"), (scaler, "scaler"), (averager, "ema")):
                if obj is not None and state.get(key) is not None:
                    obj.load_state_dict(state[key])
        except (RuntimeError, ValueError, KeyError, TypeError) as err:  # torch's size and group mismatches
            raise CheckpointError(f"{path} does not fit this run's network or optimizer (was it written by "
                                  f"another version of cifar_utils?): {str(err).splitlines()[0][:300]}") from None
        history = list(state["history"])
        start_epoch, best_val_acc = state["epoch"], state.get("best_val_acc", -1.0)
        partial = EpochProgress(**state["epoch_progress"]) if state.get("batches") else EpochProgress()
        if distributed.rank() != 0:  # the saved partial sums are every rank's, kept on rank 0 alone
            partial = EpochProgress(batches=partial.batches, seconds=partial.seconds, lr=partial.lr)
        if distributed.world_size() == 1:
            restore_rng_state(state["rng"])
        else:  # each rank has its own augmentation stream; reseed it deterministically
            torch.manual_seed(config.seed + 1000 * start_epoch + distributed.rank())
        if start_epoch >= config.epochs:
            log(f"nothing to resume: {checkpoint_dir} already finished {start_epoch} of {config.epochs} epochs")
            return history
        log(f"resuming from {checkpoint_dir / CHECKPOINT_NAME}: epoch {start_epoch + 1}, "
            f"mini-batch {partial.batches}")

    def snapshot(epoch_done: int, current: EpochProgress) -> dict:
        return {
            "model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "ema": averager.state_dict() if averager is not None else None,
            "epoch": epoch_done, "batches": current.batches, "epoch_progress": asdict(current),
            "config": config.to_dict(), "history": list(history), "best_val_acc": best_val_acc,
            "rng": rng_state(), **(extra_state or {}),
        }

    # This run's own latest checkpoint: the resumed one, then each it writes. A file left by an earlier run
    # that --overwrite replaces is not it, so an error never offers to resume that one.
    own_checkpoint = [checkpoint_dir / CHECKPOINT_NAME] if resume and checkpoint_dir is not None else []

    def save(name: str, epoch_done: int, current: EpochProgress) -> None:
        if checkpoint_dir is not None:
            if distributed.is_main_process():
                save_checkpoint(snapshot(epoch_done, current), checkpoint_dir / name)
                if on_save is not None:
                    on_save(checkpoint_dir / name)
            if name == CHECKPOINT_NAME:
                own_checkpoint[:] = [checkpoint_dir / name]

    read_back_every = 1 if device.type == "cpu" else ACCELERATOR_READ_BACK_EVERY
    agree_every = max(1, read_back_every // config.accumulation_steps)  # optimizer steps
    signum = signal.SIGINT  # the signal a stop reports

    def stop_agreed(batches: Optional[int] = None) -> bool:
        """Whether to stop now, after the optimizer step that ended at mini-batch ``batches`` (None: at an epoch's
        end). Under torchrun every process must stop after the same step, or the others would wait forever in
        their next all-reduce: they agree about as often as they read back anyway (every ``agree_every`` optimizer
        steps of the epoch) and at each epoch's end, and report SIGTERM where any of them had it."""
        nonlocal signum
        if distributed.world_size() == 1:
            signum = interrupt.requested or signum
            return interrupt.requested is not None
        if batches is not None and math.ceil(batches / config.accumulation_steps) % agree_every:
            return False
        stop, terminated = distributed.all_reduce_sum([float(interrupt.requested is not None),
                                                       float(interrupt.requested == signal.SIGTERM)])
        signum = signal.SIGTERM if terminated else signum
        return stop > 0

    with _InterruptFlag() as interrupt:
        for epoch in range(start_epoch, config.epochs):
            current, partial = partial, EpochProgress()
            _set_epoch(train_loader, epoch, current.batches)
            if current.lr is None:  # a resumed epoch keeps the rate it began with, not the per-step one reached
                current.lr = optimizer.param_groups[0]["lr"]
            started = time.perf_counter()

            def on_step(running: EpochProgress, epoch=epoch, started=started) -> None:
                every = config.checkpoint_every_steps * config.accumulation_steps
                stopping = stop_agreed(running.batches)
                if stopping or (every and running.batches % every == 0):
                    running.read_back(epoch + 1)
                    _check_finite_weights(model, epoch + 1, running.batches)
                    save(CHECKPOINT_NAME, epoch, _progress_to_save(running, time.perf_counter() - started))
                if stopping:
                    raise TrainingInterrupted(_interrupt_message(checkpoint_dir, epoch + 1, running.batches, signum),
                                              signum=signum)

            try:
                train_loss, train_acc = train_epoch(
                    model, train_loader, criterion, optimizer, device, config.accumulation_steps,
                    precision=precision, scaler=scaler, grad_clip=config.grad_clip,
                    scheduler=scheduler if interval == "step" else None, averager=averager,
                    channels_last=config.channels_last, epoch=epoch + 1, start=current, on_step=on_step,
                    progress=progress and distributed.is_main_process(),
                    read_back_every=read_back_every)
                val_loss, val_acc = math.nan, math.nan
                if val_loader is not None:
                    val_loss, val_acc = validate_epoch(eval_model, val_loader, criterion, device,
                                                       precision=precision, channels_last=config.channels_last)
            except torch.OutOfMemoryError:
                raise OutOfMemoryError(_oom_message(config, device, own_checkpoint[0] if own_checkpoint else None)) from None
            if val_loader is not None and not math.isfinite(val_loss):  # weights finite, but logits overflow
                raise TrainingDivergedError(epoch + 1, current.batches, val_loss, quantity="the validation loss")
            _check_finite_weights(model, epoch + 1, current.batches)
            if scheduler is not None and interval == "epoch":
                if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    scheduler.step(val_loss)
                else:
                    scheduler.step()
            seconds = current.seconds + time.perf_counter() - started
            history.append({"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc,
                            "val_loss": val_loss, "val_acc": val_acc, "lr": current.lr, "seconds": seconds})
            if val_acc > best_val_acc:
                best_val_acc = val_acc
                if config.keep_best:
                    save(BEST_CHECKPOINT_NAME, epoch + 1, EpochProgress())
            save(CHECKPOINT_NAME, epoch + 1, EpochProgress())
            if distributed.is_main_process() and ((epoch + 1) % config.print_every == 0 or epoch + 1 == config.epochs):
                log(format_history_row(history[-1], config.epochs))
            if stop_agreed():
                resume_at = None if epoch + 1 == config.epochs else epoch + 2
                raise TrainingInterrupted(_interrupt_message(checkpoint_dir, resume_at, 0, signum), signum=signum)
    return history


def _progress_to_save(running: EpochProgress, seconds: float) -> EpochProgress:
    """What a mid-epoch checkpoint records of ``running``: with the ``seconds`` of this stretch added, and under
    torchrun the sums of every process (resuming puts them on the first process alone). Every process calls
    it at the same step."""
    loss_sum, correct, count = distributed.all_reduce_sum([running.loss_sum, running.correct, running.count])
    return replace(running, loss_sum=loss_sum, correct=int(correct), count=int(count),
                   seconds=running.seconds + seconds)


def format_history_row(row: dict, epochs: int) -> str:
    val = ("no validation" if math.isnan(row["val_acc"]) else
           f"val loss {row['val_loss']:.4f} acc {row['val_acc']:6.2%}")
    return (f"epoch {row['epoch']:>3}/{epochs}  train loss {row['train_loss']:.4f} acc {row['train_acc']:6.2%}  "
            f"{val}  lr {row['lr']:.2e}  {row['seconds']:.1f} s")


def _set_epoch(loader, epoch: int, skip_batches: int) -> None:
    """Tell the loader (GPU pipeline) or its sampler which epoch to draw and how many batches to skip."""
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch, skip_batches)
    elif hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch, skip=skip_batches * loader.batch_size)
    elif skip_batches:
        raise CheckpointError("this loader cannot resume part-way through an epoch")


def _check_finite_weights(model: nn.Module, epoch: int, batch: int) -> None:
    """Raise :class:`TrainingDivergedError` if a weight or buffer is NaN or infinite.

    Called before every checkpoint: an optimizer step can overflow the weights while its loss is still
    finite, and such weights must not replace the last good checkpoint.
    """
    tensors = {name: t for name, t in unwrap(model).state_dict().items() if t.is_floating_point()}
    finite = torch.stack([torch.isfinite(t).all() for t in tensors.values()]).tolist()  # one device sync
    for (name, tensor), ok in zip(tensors.items(), finite):
        if not ok:
            value = tensor[~torch.isfinite(tensor)][0].item()
            raise TrainingDivergedError(epoch, batch, value, quantity=f"weight {name}")


# The only settings a resumed run may change: they never alter what it computes, and more epochs extend it.
# Any other difference is refused, and so is a longer run when the schedule is sized for the run's length.
RESUME_MAY_CHANGE = (*LOCATION_FIELDS, *NOT_RESULT_FIELDS, "epochs")


def _check_same_setup(state: dict, config, path: Path, extra_state: dict) -> None:
    # Settings neither run reads never make a difference (a run saved before they were refused may hold one).
    saved = without_ignored(checkpoint_config(state, path)).to_dict()
    wanted = without_ignored(config).to_dict()
    may_change = set(RESUME_MAY_CHANGE)
    # These schedules (and lookahead's ramp, and the progressive image sizes) span the run; more epochs would
    # bend them.
    sized_by_the_run = [what for what, sized in (
        (f"the {config.scheduler} schedule", config.scheduler in PER_STEP_SCHEDULERS
         or (config.scheduler == "cosine" and not config.cosine_t_max)),
        ("lookahead's ramp", config.lookahead_decay is not None),
        ("progressive resizing", bool(config.progressive_start))) if sized]
    if sized_by_the_run:
        may_change.discard("epochs")
    changed = [f"{key}={saved[key]!r} -> {value!r}" for key, value in wanted.items()
               if key not in may_change and saved[key] != value]
    changed += [f"{key} {state[key]!r} -> {value!r}" for key, value in extra_state.items()
                if key in state and list(state[key]) != list(value)]  # the data itself: classes, normalisation
    if changed:
        why = (f" ({' and '.join(sized_by_the_run)} {'is' if len(sized_by_the_run) == 1 else 'are'} sized for "
               f"{saved['epochs']} epoch{'' if saved['epochs'] == 1 else 's'}, so a run of {wanted['epochs']} would not "
               "continue it)"
               if wanted["epochs"] != saved["epochs"] and sized_by_the_run else "")
        raise CheckpointError(f"{path} was trained with other settings than this run: {'; '.join(changed)}{why}. "
                              "Resume with the settings it was trained with, or start a new run in another --out")


def _interrupt_message(checkpoint_dir: Optional[Path], epoch: Optional[int], batch: int,
                       signum: int = signal.SIGINT) -> str:
    """What an interrupted run says; ``epoch`` is the 1-based epoch to resume at, None once the last is done."""
    how = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
    if checkpoint_dir is None:
        return f"training {how} (no checkpoint directory was given, so nothing was saved)"
    if epoch is None:
        return (f"{how} after the last epoch; the trained model is saved in {checkpoint_dir}. The same "
                "command plus --resume (or resume=True in a notebook) skips training and runs the final evaluation.")
    return (f"training {how}; a checkpoint was saved in {checkpoint_dir} at epoch {epoch}, "
            f"mini-batch {batch}. Resume with the same command plus --resume (or resume=True in a notebook).")


def _oom_message(config, device: torch.device, checkpoint: Optional[Path]) -> str:
    """What running out of memory says; ``checkpoint`` is this run's latest checkpoint, None before its first."""
    smaller = max(1, config.batch_size // 2)
    # Resume refuses another batch size (the position in the epoch is counted in batches), so say so.
    kept = (f" The run's last checkpoint, {checkpoint}, is intact: --resume continues it with the same settings "
            "once memory is free (other programs on the GPU closed); a smaller batch starts a new run "
            "(another --out, or --overwrite).") if checkpoint is not None else " This run had saved no checkpoint yet."
    return (f"{device.type} ran out of memory with batch_size={config.batch_size}. Try --batch-size {smaller}, "
            f"or keep the effective batch with --batch-size {smaller} --accumulation-steps "
            f"{config.accumulation_steps * 2}.{kept}")
