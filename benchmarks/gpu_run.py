"""One phase of the scripted GPU measurement run (benchmarks/GPU.md says the order, commands and minutes).

    python benchmarks/gpu_run.py PHASE --out DIR [--device cuda] [--data-root PATH] [--part K/N] [--dry-run]
    python benchmarks/gpu_run.py --table RESULTS_JSON      # a returned file's runs as a Markdown table

Phases, each made to fit one command of at most 9 minutes:

    check   device and versions, the wheels' imports, ``fast``'s real training steps (engine.train_epoch,
            its loader and optimizer) under torch.cuda.set_sync_debug_mode("error"), a profiler table of one
            bare ``fast`` and one airbench94 step
    profile one epoch of the real training loop (data, step, EMA, validation) of each --preset on
            PROBE_IMAGES images, after a warm-up epoch: the profiler's tables by host and by device time
    speed   benchmarks/speed.py: airbench94 against ``fast``, 10 runs each, in this one process
    tune    a small grid over --preset's (``fast``) epochs, lr and EMA decay, chosen on validation
    seeds   the reference presets (seed000..seed004) on the GPU pipeline, each capped in time, with the
            torchvision pipeline's seconds per epoch beside them; --part K/N; --faithful: their faithful
            variants (each report's own recipe where the preset differs) instead
    best    ``fast_best`` capped at 5 minutes of training
    report  the report notebooks (full profile), executed in place with their figures, 03 training its own
            run (never the committed CPU run); the finished notebooks, the figures they drew and the runs'
            records are packed as notebooks/, figures/ and runs/ (a failed notebook's copy as failed/)

Each phase writes ``<device>-<date>-<phase>[-partKofN].json`` into ``--out`` as soon as it has a number and
rewrites it (atomically) after every run, so a phase cut short still returns what it measured; files that
go with it are packed into one ``<phase>.tar.gz``. ``--dry-run`` shrinks every phase to a few steps on tiny
data, so the whole kit is tested on a CPU (tests/test_gpu_run.py); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import re
import shutil
import sys
import tarfile
import tempfile
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Optional

import torch

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "benchmarks"):  # run as a script from anywhere, without installing the package
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import speed  # noqa: E402  (benchmarks/speed.py)
from cifar_utils import build_model, from_preset, load_dataset, make_splits  # noqa: E402
from cifar_utils import io  # noqa: E402
from cifar_utils.cli import positive  # noqa: E402
from cifar_utils.config import parse_value  # noqa: E402
from cifar_utils.errors import CifarUtilsError, ConfigError, WriteError  # noqa: E402
from cifar_utils.data import held_out_images, training_batches  # noqa: E402
from cifar_utils.device import describe_device, get_device, resolve_precision  # noqa: E402
from cifar_utils.engine import train_epoch  # noqa: E402
from cifar_utils.experiment import build_network, build_training_parts, load_splits, make_loaders  # noqa: E402
from cifar_utils.optim import scheduler_interval  # noqa: E402
from cifar_utils.results import render_results_file  # noqa: E402

PHASES = ("check", "profile", "speed", "tune", "seeds", "best", "report")
# What gpu_prepare.sh puts there: a folder of its own, so that an extracted copy in data/ here never travels.
DEFAULT_ARCHIVE = REPO / ".gpu_data" / "cifar10-jpeg.tar.gz"
PACKAGES = ("airbench", "papermill", "nbclient", "nbformat", "nbval", "ipykernel", "jupyter_client")
# The longest (seed000, seed004) first: dealt round robin into parts, they land in different ones.
SEED_PRESETS = ["seed000", "seed004", "seed001", "seed002", "seed003"]
TUNE_GRID = {"epochs": [10, 12], "lr": [0.8, 1.0, 1.2], "ema_decay": [0.99, 0.995]}
PROBE_IMAGES = 5000  # training images of the probes that measure seconds per epoch (their second epoch)

# --dry-run: a few steps on tiny data; the fast presets also get a warm-up short enough for those steps to
# get past it.
TINY = dict(train_limit=64, validation_limit=32, test_limit=32, batch_size=32, eval_batch_size=32, validation_split=32)
TINY_FAST = dict(TINY, warmup_epochs=0.5)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("phase", nargs="?", choices=PHASES)
    parser.add_argument("--out", help="folder for the results JSON and the phase's tarball (needed with a phase)")
    parser.add_argument("--table", metavar="RESULTS_JSON", help="only print a results file's runs as a table")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --dry-run)")
    parser.add_argument("--data-root", default=None,
                        help="the CIFAR-10 copy (default: data/cifar10-jpeg, extracted from .gpu_data/cifar10-jpeg.tar.gz)")
    parser.add_argument("--preset", default="fast",
                        help="tune: the preset tuned; profile: comma-separated presets (default fast)")
    parser.add_argument("--part", default="1/1", help="seeds: run part K of N of the preset list (e.g. 1/2)")
    parser.add_argument("--faithful", action="store_true",
                        help="seeds: run the presets' faithful variants (from_preset(..., faithful=True))")
    parser.add_argument("--sharing", type=positive(int), default=1,
                        help="seeds: how many of these processes share the GPU at once (recorded beside the times)")
    parser.add_argument("--cap-seconds", type=positive(float), default=None,
                        help="seeds: training seconds per preset (default 40); best: in all (default 300)")
    parser.add_argument("--grid", action="append", default=[], metavar="FIELD=V1,V2",
                        help="tune: replace the grid (repeatable; any config field)")
    parser.add_argument("--runs", type=positive(int), default=None, help="speed: runs per variant (default 10)")
    parser.add_argument("--notebooks", default=None, help="report: comma-separated notebooks (default all five)")
    parser.add_argument("--report-dir", default=None,
                        help="report: execute into this folder (default: in place, replacing notebooks/ and figures/ "
                             "of this copy of the repository, as committed; --dry-run needs it)")
    parser.add_argument("--deadline-minutes", type=positive(float), default=8.5,
                        help="start no new run after this many minutes (the command limit is 10)")
    parser.add_argument("--resume", action="store_true",
                        help="report: 03 and 05 continue runs a cut-short call left unfinished on this machine")
    parser.add_argument("--dry-run", action="store_true", help="tiny data and budgets: tests the phase on a CPU")
    return parser


# ------------------------------------------------------------------------------------------- records


def package_versions() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            __import__(name)
            versions[name] = metadata.version(name)
        except Exception as err:  # noqa: BLE001 - any import failure is worth reporting, not fatal
            versions[name] = f"unavailable: {type(err).__name__}: {err}"
    return versions


class Record:
    """The phase's results file: header, settings, runs; rewritten atomically on every :meth:`save`. It never
    replaces a file it did not write: a second run of a phase on the same day needs another ``--out``."""

    def __init__(self, args: argparse.Namespace, device: torch.device, argv: list[str]) -> None:
        now = datetime.datetime.now()
        part = ("-faithful" if args.faithful else "") + (
            "" if args.part == "1/1" else "-part" + args.part.replace("/", "of"))
        suffix = "-dryrun" if args.dry_run else ""
        self.path = Path(args.out) / f"{speed.device_slug(device)}-{now:%Y-%m-%d}-{args.phase}{part}{suffix}.json"
        self.data: dict[str, Any] = {
            "phase": args.phase, "command": " ".join(["python", "benchmarks/gpu_run.py", *argv]),
            "date": now.isoformat(timespec="seconds"), "dry_run": args.dry_run, "complete": False,
            "device": describe_device(device), "torch_version": torch.__version__,
            "cuda_version": torch.version.cuda if device.type == "cuda" else None,
            "cudnn_version": torch.backends.cudnn.version() if device.type == "cuda" else None,
            "python_version": platform.python_version(), "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "settings": {}, "runs": [],
        }
        if self.path.exists():
            raise ConfigError(f"{self.path} already holds results of this phase from today; give another --out "
                              "or move that file away (nothing was run)")
        self.written = False

    def save(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            io.save_json(self.data, self.path)
        except OSError as err:
            raise WriteError(self.path, err.strerror or str(err)) from None
        self.written = True

    def discard_if_empty(self) -> None:
        """Remove the file when a phase stopped on bad input before any run: no stub is left behind."""
        if self.written and not self.data["runs"]:
            self.path.unlink(missing_ok=True)

    def add_run(self, run: dict) -> None:
        self.data["runs"].append(run)
        self.save()


def pack(out: Path, phase: str, root: Path, members: list[Path]) -> Path:
    """One ``<phase>.tar.gz`` in ``out`` with ``members`` (paths under ``root``): the machine returns at most 8 files."""
    tarball = out / f"{phase}.tar.gz"
    tmp = tarball.with_suffix(".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for member in members:
            tar.add(member, arcname=str(member.relative_to(root)))
    os.replace(tmp, tarball)
    return tarball


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------- phases


class Phase:
    """What every phase shares: the device, the data, the deadline and the record."""

    def __init__(self, args: argparse.Namespace, argv: list[str]) -> None:
        self.args = args
        self.started = time.monotonic()
        self.device = get_device(args.device)  # one clear error for a bad name or a missing GPU
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # as speed.py and the engine do
        self.out = Path(args.out)
        self.record = Record(args, self.device, argv)
        self.data_root = data_root(args.data_root)
        self.record.data["data_root"] = str(self.data_root)
        self._data = None

    def dataset(self):
        """The data set, loaded once per phase and shared by its runs."""
        if self._data is None:
            self._data = load_dataset(str(self.data_root))
            self.record.data["data"] = self._data.description
        return self._data

    def time_left(self) -> bool:
        if time.monotonic() - self.started < 60 * self.args.deadline_minutes:
            return True
        self.record.data["stopped"] = f"deadline of {self.args.deadline_minutes} minutes reached"
        self.record.save()
        say(self.record.data["stopped"])
        return False

    def finish(self) -> None:
        self.record.data["complete"] = "stopped" not in self.record.data
        self.record.data["phase_seconds"] = time.monotonic() - self.started
        self.record.save()
        say(f"results written to {self.record.path}")


def data_root(given: Optional[str]) -> Path:
    """The data folder; the default extracts gpu_prepare.sh's archive on first use (a fresh GPU machine)."""
    if given:
        return Path(given)
    root = REPO / "data" / "cifar10-jpeg"
    if not root.is_dir():
        if not DEFAULT_ARCHIVE.is_file():
            raise ConfigError(f"no data at {root} and no archive at {DEFAULT_ARCHIVE}: run "
                              "`bash benchmarks/gpu_prepare.sh` and carry .gpu_data/, or pass --data-root")
        say(f"extracting {DEFAULT_ARCHIVE} ...")
        with tarfile.open(DEFAULT_ARCHIVE) as tar:
            tar.extractall(root.parent, filter="data")
    return root


SYNC_CHECK_BATCHES = 4  # the real training epoch of the sync check: its first batch warms up, the rest are checked


def sync_check(phase: Phase, preset: str) -> dict:
    """Whether ``preset``'s real training step synchronises the host: a short epoch of ``engine.train_epoch``
    with the parts training builds (``experiment.build_network`` and ``build_training_parts``: loss,
    optimizer, per-step schedule, fp16 scaler, weight average) and the preset's own loader (augmentation
    included), under ``torch.cuda.set_sync_debug_mode("error")`` from the second optimizer step to the last
    (the first warms up: cuDNN's autotuning may synchronise; the epoch's final read-back is meant to). Off
    CUDA the same epoch runs, unchecked, so a dry run tests everything but the mode."""
    batch = TINY["batch_size"] if phase.args.dry_run else from_preset(preset).batch_size
    config = from_preset(preset, **{**(TINY if phase.args.dry_run else {}), "train_limit": SYNC_CHECK_BATCHES * batch})
    splits = load_splits(config, phase.dataset())
    model = build_network(config, splits, phase.device)
    loader = make_loaders(splits, config, phase.device).train
    precision = resolve_precision(config.precision, phase.device)
    parts = build_training_parts(model, config, len(loader), phase.device, precision)
    steps = parts.steps_per_epoch
    cuda, done = phase.device.type == "cuda", [0]

    def checked(state) -> None:  # after each optimizer step
        done[0] += 1
        if cuda and done[0] == 1:
            torch.cuda.synchronize(phase.device)
            torch.cuda.set_sync_debug_mode("error")
        if cuda and done[0] == steps:
            torch.cuda.set_sync_debug_mode("default")

    try:
        train_epoch(model, loader, parts.criterion, parts.optimizer, phase.device, config.accumulation_steps,
                    precision=precision, scaler=parts.scaler, grad_clip=config.grad_clip, averager=parts.averager,
                    scheduler=parts.scheduler if scheduler_interval(config) == "step" else None,
                    channels_last=config.channels_last, on_step=checked, read_back_every=len(loader) + 1)
    except RuntimeError as err:
        return {"result": "synchronising operation found", "error": str(err),
                "where": traceback.format_exc(limit=-4)}
    finally:
        if cuda:
            torch.cuda.set_sync_debug_mode("default")
    if not cuda:
        return {"result": f"skipped: sync debug mode is CUDA-only ({phase.device.type}); the {steps}-step epoch ran"}
    return {"result": f"no synchronising operation in training steps 2 to {steps} of engine.train_epoch"}


def train_step_parts(phase: Phase, preset: str):
    """A bare ``preset`` training step's parts for the profile, set up as airbench94's is (plain SGD, one
    normalised batch), so that the two profiles compare like with like: network, optimizer, one batch."""
    config = from_preset(preset, **(TINY if phase.args.dry_run else {}))
    splits = make_splits(phase.dataset(), config.validation_split, normalization=config.normalization)
    model = build_model(config, len(splits.classes))
    if hasattr(model, "init_from_data"):  # the frozen whitening stem
        model.init_from_data(splits.train.images, splits.mean, splits.std)
    model = model.to(phase.device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                nesterov=config.nesterov, weight_decay=config.weight_decay)
    mean = torch.tensor(splits.mean).view(1, 3, 1, 1)
    std = torch.tensor(splits.std).view(1, 3, 1, 1)
    images = ((splits.train.images[:config.batch_size].float() / 255 - mean) / std).to(phase.device)
    images = images.contiguous(memory_format=torch.channels_last)
    labels = splits.train.labels[:config.batch_size].to(phase.device)
    return model, optimizer, images, labels, config


def make_step(model, optimizer, images, labels, device: torch.device, label_smoothing: float,
              dtype: torch.dtype = torch.bfloat16) -> Callable[[], None]:
    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda"):
            loss = torch.nn.functional.cross_entropy(model(images), labels, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def profile_step(step: Callable[[], None], device: torch.device) -> dict:
    """The profiler's top operations and the host (wall) time of one step, after a warm-up step."""
    from torch.profiler import ProfilerActivity, profile

    step()
    speed.synchronize(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        started = time.perf_counter()
        step()
        host = time.perf_counter() - started  # the host's share: launching, before the device finishes
        speed.synchronize(device)
        wall = time.perf_counter() - started
    sort = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=15)
    return {"host_seconds": host, "wall_seconds": wall, "sorted_by": sort, "table": table}


def phase_check(phase: Phase) -> None:
    record, device = phase.record, phase.device
    record.data["packages"] = package_versions()
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        record.data["gpu"] = {"name": props.name, "memory_gib": props.total_memory / 2**30,
                              "multiprocessors": props.multi_processor_count,
                              "capability": f"{props.major}.{props.minor}"}
    record.save()
    record.add_run({"name": "fast_sync_check", **sync_check(phase, "fast")})
    model, optimizer, images, labels, config = train_step_parts(phase, "fast")
    step = make_step(model, optimizer, images, labels, device, config.label_smoothing)
    record.add_run({"name": "fast_step_profile", **profile_step(step, device)})
    if device.type == "cuda" and not record.data["packages"]["airbench"].startswith("unavailable"):
        from airbench import lib_airbench94

        net = lib_airbench94.make_net94()
        net_optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.85, nesterov=True)
        batch = images.half().contiguous(memory_format=torch.channels_last)
        # airbench94 trains its half-precision net without autocast
        record.add_run({"name": "airbench94_step_profile",
                        **profile_step(make_step(net, net_optimizer, batch, labels, device, 0.2, torch.float16),
                                       device)})
    else:
        reason = "needs CUDA" if device.type != "cuda" else record.data["packages"]["airbench"]
        say(f"airbench94 profile skipped: {reason}")
        record.add_run({"name": "airbench94_step_profile", "skipped": reason})
    for run in record.data["runs"]:
        if "table" in run:
            print(f"\n{run['name']}: host {run['host_seconds'] * 1e3:.1f} ms, wall {run['wall_seconds'] * 1e3:.1f} ms\n"
                  f"{run['table']}")


def phase_profile(phase: Phase) -> None:
    from torch.profiler import ProfilerActivity, profile

    args = phase.args
    base = {**(TINY if args.dry_run else {"train_limit": PROBE_IMAGES, "validation_split": 5000}), "epochs": 1}
    phase.record.data["settings"] = {"presets": args.preset.split(","), "base_overrides": base}
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if phase.device.type == "cuda" else [])
    with tempfile.TemporaryDirectory() as scratch:
        for preset in args.preset.split(","):
            measured_run(phase, preset, base, Path(scratch) / f"{preset}-warmup")
            with profile(activities=activities) as prof:
                run = measured_run(phase, preset, base, Path(scratch) / preset)
            config = from_preset(preset, **base)  # the run's own batch and drop_last, not the preset's
            batches = training_batches(run["split_sizes"]["train"], config.batch_size, config.drop_last)
            run.update(name=f"{preset}_epoch_profile", batches=batches,
                       ms_per_batch=1e3 * run["epoch_seconds"][0] / batches)
            for sort in ("self_cpu_time_total", "self_cuda_time_total" if len(activities) > 1 else None):
                if sort:
                    run[f"table_{sort}"] = prof.key_averages().table(sort_by=sort, row_limit=20)
            phase.record.add_run(run)
            say(f"[profile] {preset}: {run['epoch_seconds'][0]:.2f} s for {batches} mini-batches "
                f"({run['ms_per_batch']:.1f} ms each, validation included)\n{run['table_self_cpu_time_total']}")


def phase_speed(phase: Phase) -> None:
    """speed.py writes the record itself: the phase only chooses its settings."""
    args = phase.args
    argv = ["--device", str(phase.device), "--data-root", str(phase.data_root), "--seed002-epochs", "0",
            "--fast-best-runs", "0", "--out", str(phase.record.path), "--overwrite"]
    if args.dry_run:
        argv += ["--quick", "--runs", str(args.runs or 2), "--fast-epochs", "1"]
    else:
        argv += ["--runs", str(args.runs or 10), "--fast-epochs", "10,12"]
    if speed.main(argv) != 0:
        raise CifarUtilsError("benchmarks/speed.py failed; its error is printed above")


def parse_grid(items: list[str]) -> dict[str, list]:
    grid = {}
    for item in items:
        field, _, values = item.partition("=")
        if not field or not values:
            raise ConfigError(f"--grid expects FIELD=V1,V2 such as lr=0.8,1.0; got {item!r}")
        # Each value parsed as --set parses it (the field's own type, an unknown field refused): ".5" or "1."
        # was a raw JSON traceback before.
        grid[field.strip()] = [parse_value(field.strip(), v.strip()) for v in values.split(",")]
    return grid


def grid_points(grid: dict[str, list]) -> list[dict]:
    points = [{}]
    for field, values in grid.items():
        points = [{**point, field: value} for point in points for value in values]
    return points


def measured_run(phase: Phase, preset: str, overrides: dict, folder: Path, faithful: bool = False) -> dict:
    """One timed training run (speed.py's clock) with its accuracies and per-epoch seconds; ``faithful``
    runs the preset's faithful variant."""
    config = from_preset(preset, faithful=faithful, data_root=str(phase.data_root), **overrides)
    result, seconds = speed.timed_train(config, folder, phase.dataset(), phase.device)
    epoch_seconds = [row["seconds"] for row in result.history]
    return {"preset": preset, "faithful": faithful, "overrides": overrides,
            "validation_accuracy": result.metrics["validation_accuracy"],
            "test_accuracy": result.metrics["test_accuracy"], "train_seconds": seconds,
            "epochs": len(epoch_seconds), "epoch_seconds": epoch_seconds,
            "compile_seconds": result.metrics["compile_seconds"], "split_sizes": result.metrics["split_sizes"],
            "precision": result.metrics["precision"]}


def phase_tune(phase: Phase) -> None:
    args = phase.args
    grid = parse_grid(args.grid) if args.grid else ({"epochs": [1], "lr": [0.5, 1.0]} if args.dry_run else TUNE_GRID)
    base = TINY_FAST if args.dry_run else {"validation_split": 5000}
    points = grid_points(grid)
    for point in points:  # fail on a bad field or value before any GPU time is spent
        from_preset(args.preset, **{**base, **point})
    phase.record.data["settings"] = {"preset": args.preset, "grid": grid, "base_overrides": base,
                                     "chosen_on": "validation accuracy"}
    with tempfile.TemporaryDirectory() as scratch:
        measured_run(phase, args.preset, {**base, "epochs": 1, "seed": 10_000}, Path(scratch) / "warmup")
        for index, point in enumerate(points):
            if not phase.time_left():
                break
            run = measured_run(phase, args.preset, {**base, **point}, Path(scratch) / f"point{index}")
            phase.record.data["best"] = max([*phase.record.data["runs"], run],
                                            key=lambda r: r["validation_accuracy"])["overrides"]
            phase.record.add_run(run)
            say(f"[tune {index + 1}/{len(points)}] {point}: validation {run['validation_accuracy']:.2%}, "
                f"{run['train_seconds']:.1f} s")


def capped_run(phase: Phase, preset: str, base: dict, cap_seconds: float, folder: Path,
               pipelines: tuple[str, ...] = ("gpu", "torchvision"), faithful: bool = False) -> dict:
    """``preset`` at full length unless its measured seconds per epoch say that would pass ``cap_seconds``;
    then with as many epochs as fit (the schedule shortened to match), marked ``capped``. Probes on
    ``PROBE_IMAGES`` images (two epochs, the second timed) time each of ``pipelines`` alike."""
    full_epochs = from_preset(preset, faithful=faithful).epochs
    # Two epochs, the second one timed: the first holds cuDNN's autotuning and other one-off costs (a first
    # epoch on 5,000 images took 8x longer than a steady one on an H100, which capped runs far too early).
    probe = {**base, "epochs": 2, "train_limit": min(base.get("train_limit") or PROBE_IMAGES, PROBE_IMAGES)}
    probes = {pipeline: measured_run(phase, preset, {**probe, "pipeline": pipeline}, folder / f"probe-{pipeline}",
                                     faithful) for pipeline in pipelines}
    held_out = from_preset(preset, faithful=faithful, **base).validation_split
    train_images = len(phase.dataset().train)
    train_images -= held_out_images(train_images, held_out)
    if base.get("train_limit"):
        train_images = min(train_images, base["train_limit"])
    scale = train_images / probes["gpu"]["split_sizes"]["train"]
    estimate = {pipeline: run["epoch_seconds"][-1] * scale for pipeline, run in probes.items()}
    epochs = max(1, min(full_epochs, math.floor(cap_seconds / estimate["gpu"])))
    run = measured_run(phase, preset, {**base, "epochs": epochs, "pipeline": "gpu"}, folder / "run", faithful)
    steady = run["epoch_seconds"][1:] or run["epoch_seconds"]  # the first epoch holds one-off costs
    run.update(full_epochs=full_epochs, capped=epochs < full_epochs, cap_seconds=cap_seconds,
               gpu_seconds_per_epoch=sum(steady) / len(steady), probe_seconds_per_epoch=estimate)
    if "torchvision" in estimate:
        run["torchvision_over_gpu_epoch_time"] = estimate["torchvision"] / estimate["gpu"]
    return run


def part_of(items: list[str], spec: str) -> list[str]:
    """Part K of N (``spec`` "K/N") of ``items``, dealt round robin."""
    match = re.fullmatch(r"(\d+)/(\d+)", spec)
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise ConfigError(f"--part expects K/N with 1 <= K <= N, such as 1/2; got {spec!r}")
    return items[int(match[1]) - 1::int(match[2])]


def phase_seeds(phase: Phase) -> None:
    args = phase.args
    mine = part_of(SEED_PRESETS, args.part)
    cap = args.cap_seconds or (2.0 if args.dry_run else 40.0)
    base = TINY if args.dry_run else {}
    validation = ("each variant's own (validation_split=0: the test set, as the report did)" if args.faithful
                  else "held-out split of the training set")
    phase.record.data["settings"] = {"presets": mine, "faithful": args.faithful, "cap_seconds": cap,
                                     "probe_images": PROBE_IMAGES, "base_overrides": base, "validation": validation,
                                     "processes_sharing_the_gpu": args.sharing}
    with tempfile.TemporaryDirectory() as scratch:
        for preset in mine:
            if not phase.time_left():
                break
            run = capped_run(phase, preset, base, cap, Path(scratch) / preset, faithful=args.faithful)
            phase.record.add_run(run)
            validation = run["validation_accuracy"]
            say(f"[seeds] {preset}{' (faithful)' if args.faithful else ''}: {run['epochs']}/{run['full_epochs']} "
                f"epochs, validation {'-' if validation is None else f'{validation:.2%}'}, "
                f"test {run['test_accuracy']:.2%}, "
                f"{run['gpu_seconds_per_epoch']:.2f} s/epoch (torchvision {run['probe_seconds_per_epoch']['torchvision']:.2f})")


def phase_best(phase: Phase) -> None:
    args = phase.args
    cap = args.cap_seconds or (2.0 if args.dry_run else 300.0)
    base = TINY_FAST if args.dry_run else {}
    phase.record.data["settings"] = {"preset": "fast_best", "cap_seconds": cap, "base_overrides": base,
                                     "target": "96% test accuracy within 300 s of training"}
    with tempfile.TemporaryDirectory() as scratch:
        run = capped_run(phase, "fast_best", base, cap, Path(scratch), pipelines=("gpu",))  # GPU-only augmentations
        phase.record.add_run(run)
    say(f"[best] fast_best: {run['epochs']} epochs, test {run['test_accuracy']:.2%}, {run['train_seconds']:.1f} s")


def report_notebooks(args: argparse.Namespace) -> list[str]:
    """The report phase's notebooks in the report's order (04 after the 03 it evaluates), checked before
    anything runs."""
    from cifar_utils.report import NOTEBOOKS

    names = args.notebooks.split(",") if args.notebooks else list(NOTEBOOKS)
    unknown = [name for name in names if name not in NOTEBOOKS]
    if unknown:
        raise ConfigError(f"unknown notebook(s) {', '.join(unknown)}; choose from {', '.join(NOTEBOOKS)}")
    if args.dry_run and not args.report_dir:  # in place, a smoke run would replace the committed notebooks
        raise ConfigError("report --dry-run needs --report-dir: in place it would replace notebooks/ with smoke outputs")
    return [name for name in NOTEBOOKS if name in names]


def phase_report(phase: Phase) -> None:
    from cifar_utils.checkpoint import CHECKPOINT_NAME, HISTORY_NAME, METRICS_NAME
    from cifar_utils.report import (NOTEBOOK_RUNS, TRAIN_RUN_NAME, NotebookFailed, failed_notebooks_dir,
                                    profile_runs_dir, run_report)
    from cifar_utils.sweep import SUMMARY_NAME, TABLE_NAME

    args = phase.args
    names = report_notebooks(args)
    # In place (the default) the notebooks print their run folders as a clone has them (runs/report-full/...).
    root = Path(args.report_dir).resolve() if args.report_dir else REPO
    runs, failed_dir = profile_runs_dir(root, smoke=args.dry_run), failed_notebooks_dir(root)
    phase.record.data["settings"] = {"notebooks": names, "profile": "smoke" if args.dry_run else "full",
                                     "report_dir": str(root) if args.report_dir else "in place"}
    # Only what a notebook wrote is packed, copied out into a staging folder as soon as it finished: the
    # tree's figures/ also holds the committed (CPU) figures, and its tracked files may be reset by a later
    # call's copy of the working tree while a job runs on (gpu_mps.sh). What a failed notebook wrote goes
    # under failed/, never where the folding steps (GPU.md) would take it for a result.
    failed = set()
    with tempfile.TemporaryDirectory(prefix="report-") as scratch:
        staging = Path(scratch)
        for name in names:  # one at a time, packing after each: a cut-short phase returns what finished
            if not phase.time_left():
                break
            if name == "04_evaluate.ipynb" and "03_train.ipynb" in failed:
                say("skipping 04_evaluate.ipynb: it evaluates 03's run, which failed")
                phase.record.add_run({"notebook": name, "skipped": "03_train.ipynb failed"})
                continue
            figures_before, failed_before = file_states(root / "figures"), file_states(failed_dir)
            started = time.monotonic()
            try:
                # use_shipped=False: 03 trains on this machine instead of copying the committed (CPU) run.
                [executed] = run_report(smoke=args.dry_run, data_root=str(phase.data_root),
                                        output_dir=str(root) if args.report_dir else None, notebooks=[name],
                                        use_shipped=False, resume=args.resume, log=say)
            except NotebookFailed as err:  # the other notebooks still run; what it wrote comes back to read
                failed.add(name)
                say(f"error: {err}")
                phase.record.add_run({"notebook": name, "seconds": time.monotonic() - started, "failed": str(err)})
                target = staging / "failed"
                for copy in changed_files(failed_dir, failed_before):
                    stage(copy, target / copy.name)
            else:
                phase.record.add_run({"notebook": name, "seconds": time.monotonic() - started})
                target = staging
                stage(executed, target / "notebooks" / name)
                if name in NOTEBOOK_RUNS:  # its runs' records: the results table reads them, and 03's run ships
                    for path in sorted((runs / NOTEBOOK_RUNS[name]).rglob("*")):
                        if path.name in (METRICS_NAME, HISTORY_NAME, TABLE_NAME, SUMMARY_NAME) or (
                                path.name == CHECKPOINT_NAME and path.parent.name == TRAIN_RUN_NAME):
                            stage(path, target / path.relative_to(root))
            for figure in changed_files(root / "figures", figures_before):
                stage(figure, target / "figures" / figure.name)
            pack(phase.out, "report", staging, sorted(path for path in staging.rglob("*") if path.is_file()))
    if failed:
        phase.record.data["failed_notebooks"] = sorted(failed)
        phase.record.data["phase_seconds"] = time.monotonic() - phase.started
        phase.record.save()
        raise CifarUtilsError(f"{', '.join(sorted(failed))} failed (errors above and in the results file); "
                              "report.tar.gz holds what they wrote under failed/ (no notebook if the kernel died)")


def file_states(folder: Path) -> dict[str, tuple[int, int]]:
    """Each file's (mtime in ns, size) in ``folder``, to tell which files a notebook then wrote."""
    stats = {path.name: path.stat() for path in folder.glob("*") if path.is_file()}
    return {name: (stat.st_mtime_ns, stat.st_size) for name, stat in stats.items()}


def changed_files(folder: Path, before: dict[str, tuple[int, int]]) -> list[Path]:
    """The files of ``folder`` that are new or changed since ``before`` (:func:`file_states`)."""
    now = file_states(folder)
    return [folder / name for name, state in sorted(now.items()) if before.get(name) != state]


def stage(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target``, making its folders."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target)


# ----------------------------------------------------------------------------------------------- tables

COLUMNS = [("run", lambda r: (r.get("preset") or r.get("name") or r.get("notebook"))
            + (" (faithful)" if r.get("faithful") else "")),
           ("settings", None),  # the run's overrides less the phase's shared ones: see markdown_table
           ("epochs", lambda r: f"{r['epochs']}/{r['full_epochs']}" if "full_epochs" in r else r.get("epochs")),
           ("validation", lambda r: r.get("validation_accuracy")), ("test", lambda r: r.get("test_accuracy")),
           ("seconds", lambda r: r.get("train_seconds") or r.get("seconds")),
           ("GPU s/epoch", lambda r: r.get("gpu_seconds_per_epoch")),
           ("torchvision / GPU epoch time", lambda r: r.get("torchvision_over_gpu_epoch_time"))]


def markdown_table(path: str) -> str:
    """A gpu_run results file (speed's are speed.py's, printed by its own --table) as a Markdown table."""
    return render_results_file(path, _markdown_table)


def _markdown_table(record: dict) -> str:
    if "phase" not in record:
        return speed.markdown_table(record)
    lines = [f"Phase `{record['phase']}`, {record['date'][:10]} on {record['device']} (torch {record['torch_version']}, "
             f"CUDA {record['cuda_version'] or 'none'}){'; dry run, not meaningful' if record['dry_run'] else ''}.",
             f"Command: `{record['command']}`", "",
             "| " + " | ".join(name for name, _ in COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    # The phase's shared overrides (tune and profile record them) are not settings a row differs in, so they
    # are left out of its settings; files that do not record them leave out the dry run's sizes (TINY_FAST).
    shared = record.get("settings", {}).get("base_overrides")

    def differs(key: str, value: Any) -> bool:
        return key not in TINY_FAST if shared is None else key not in shared or shared[key] != value

    for run in record["runs"]:
        cells = []
        for name, get in COLUMNS:
            value = get(run) if get else ", ".join(f"{k}={v}" for k, v in run.get("overrides", {}).items()
                                                   if differs(k, v)) or "-"
            is_share = name in ("validation", "test") and isinstance(value, float)
            cells.append(f"{value:.2%}" if is_share else f"{value:.2f}" if isinstance(value, float)
                         else "-" if value is None else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ main


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    phase = None
    try:
        if args.table:
            print(markdown_table(args.table))
            return 0
        if not args.phase or not args.out:
            raise ConfigError("give a phase and --out DIR (or --table RESULTS_JSON); see --help")
        if args.phase == "report":
            report_notebooks(args)  # bad input stops here, before any results file or data extraction
        if args.grid:
            parse_grid(args.grid)  # so does a bad --grid
        phase = Phase(args, argv)
        runner = {"check": phase_check, "profile": phase_profile, "speed": phase_speed, "tune": phase_tune,
                  "seeds": phase_seeds, "best": phase_best, "report": phase_report}[args.phase]
        if args.phase != "speed":
            phase.record.save()
        runner(phase)
        if args.phase != "speed":
            phase.finish()
    except CifarUtilsError as err:
        if phase is not None:
            phase.record.discard_if_empty()
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the results file, saved after every run, says complete: false
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
