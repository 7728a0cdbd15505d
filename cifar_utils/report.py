"""The report: the notebooks' shared set-up, train-or-reuse for 03, evaluation of a run for 04, and
``run_report``, which executes notebooks 01 to 05 in order through papermill. The discussions that end
03, 04 and 05 are written by :mod:`cifar_utils.discussion`.

Two profiles:

- **full** (default): each notebook's own parameters, which is hours of training; meant for a GPU.
- **smoke** (``CIFAR_UTILS_SMOKE=1``, or ``python -m cifar_utils report --smoke``): every training run
  caps at one epoch on a few hundred images (:data:`SMOKE_PROFILE`), so the whole report runs in
  minutes on a 2-core CPU. CI runs the notebooks this way under nbval.

Notebooks share state only through files. Set ``CIFAR_UTILS_OUTPUT=DIR`` to send their figures to
``DIR/figures`` and their runs to ``DIR/runs`` instead of the repository's ``figures/`` and ``runs/``.

Usage::

    python -m cifar_utils report --smoke           # executes notebooks/*.ipynb in place
    from cifar_utils.report import run_report
    run_report(smoke=True, data_root="data/cifar10-jpeg", output_dir="/tmp/report")
"""

from __future__ import annotations

import ast
import csv
import datetime
import json
import math
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import torch

from . import io
from .checkpoint import CHECKPOINT_NAME, CURVES_NAME, HISTORY_NAME, METRICS_NAME
from .config import (LOCATION_FIELDS, NOT_RESULT_FIELDS, Config, config_from_dict, field_names, with_defaults,
                     without_ignored)
from .data import data_copy_kind, require_data, resolve_root, split_sizes
from .discussion import count
from .device import (autocast, describe_device, device_label, get_device, keep_freed_cpu_memory, recorded_device,
                     resolve_precision)
from .errors import CheckpointError, CifarUtilsError, ConfigError, OutputExistsError, WriteError
from .evaluation import view_count
from .preprocessing import IMAGE_SIZE
from .presets import PRESETS, from_preset

SMOKE_ENV = "CIFAR_UTILS_SMOKE"
OUTPUT_ENV = "CIFAR_UTILS_OUTPUT"
NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"  # present in a clone, not in a wheel
NOTEBOOKS = ("01_data.ipynb", "02_model.ipynb", "03_train.ipynb", "04_evaluate.ipynb", "05_lr_comparison.ipynb")
SMOKE_PROFILE = {"epochs": 1, "train_limit": 200, "validation_limit": 100, "test_limit": 100}  # caps of every smoke training run
TRAIN_RUN_NAME = "03_train"  # 03's run directory under the runs folder; 04 evaluates it
SWEEP_RUN_NAME = "lr_comparison"  # 05's folder of runs under the runs folder
NOTEBOOK_RUNS = {"03_train.ipynb": TRAIN_RUN_NAME, "05_lr_comparison.ipynb": SWEEP_RUN_NAME}  # what each trains into
# A finished full-data run of 03's default settings, committed with the repository (its metrics.json says how
# and where it was trained), so 04 and 05 show a real model minutes after a fresh clone.
SHIPPED_RUN = Path(__file__).resolve().parents[1] / "checkpoints" / "report" / TRAIN_RUN_NAME
SHIPPED_FILES = (METRICS_NAME, HISTORY_NAME, CHECKPOINT_NAME)
# The kernel's own start-up warnings (such as "running over TCP without encryption") would otherwise land in
# the output of a notebook that runs another one (05 runs 03).
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]
# Papermill metadata (timings, absolute input/output paths) that should not be committed.
VOLATILE_METADATA = ("papermill", "execution", "widgets")


# ------------------------------------------------------------------------------------ notebook set-up


def smoke_mode() -> bool:
    """True when ``$CIFAR_UTILS_SMOKE`` is 1/true/yes/on."""
    return os.environ.get(SMOKE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass
class NotebookSetup:
    """What every notebook needs to know about where and how it runs."""

    smoke: bool  # the smoke profile (tiny subsets, one epoch) is on
    device: torch.device  # GPU when available, else CPU
    in_colab: bool  # running in Google Colab (which may download the official CIFAR-10)
    figures_dir: Path  # where the report's PNGs go
    runs_dir: Path  # where training runs go (separate folders for the two profiles)


def profile_runs_dir(output: Path, smoke: bool) -> Path:
    """Where a profile's training runs go under the report's ``output`` folder (one folder per profile)."""
    return output / "runs" / f"report-{'smoke' if smoke else 'full'}"


def failed_notebooks_dir(output: Path) -> Path:
    """Where :func:`run_report` keeps the executed copy of a notebook that failed, under its ``output``."""
    return output / "runs" / "report-failed"


def shown_path(path: Path) -> Path:
    """``path`` relative to the working directory when it lies inside it, so saved outputs name no machine's
    absolute paths."""
    return path.relative_to(Path.cwd()) if path.is_absolute() and path.is_relative_to(Path.cwd()) else path


def notebook_setup(log: Callable[[str], None] = print) -> NotebookSetup:
    """Read the profile and output folder from the environment, pick the device, and say all of it."""
    smoke = smoke_mode()
    output = shown_path(Path(os.environ.get(OUTPUT_ENV) or "."))  # run folders then print as they do in a clone
    setup = NotebookSetup(smoke=smoke, device=get_device(), in_colab="google.colab" in sys.modules,
                          figures_dir=output / "figures", runs_dir=profile_runs_dir(output, smoke))
    if smoke:
        profile = (f"smoke ({SMOKE_ENV}=1): at most {SMOKE_PROFILE['epochs']} epoch on {SMOKE_PROFILE['train_limit']} "
                   f"training images, {SMOKE_PROFILE['validation_limit']} validation and "
                   f"{SMOKE_PROFILE['test_limit']} test images")
    else:
        profile = "full (each notebook's own settings; set CIFAR_UTILS_SMOKE=1 for a quick check)"
    from .plots import show_inline

    show_inline()
    root, origin = resolve_root(None)
    log(f"device: {describe_device(setup.device)}")
    log(f"profile: {profile}")
    log(f"data root: {root} (from {origin}){'; Colab downloads the official CIFAR-10' if setup.in_colab else ''}")
    return setup


def data_copy_note(description: str) -> str:
    """Which copy of the data a number was measured on, for conclusions."""
    return {"jpeg": "the offline JPEG copy of CIFAR-10 (not the official data set)", "official": "the official CIFAR-10",
            "folder": f"an {description}, not the official CIFAR-10"}.get(data_copy_kind(description), description)


def data_label(description: str) -> str:
    """A short name of the data copy for figure titles: 'JPEG copy of CIFAR-10', 'official CIFAR-10', ..."""
    return {"jpeg": "JPEG copy of CIFAR-10", "official": "official CIFAR-10",
            "folder": "image folder"}.get(data_copy_kind(description), description)


def notebook_config(preset: str, *, smoke: bool, epochs: Optional[int] = None, lr: Optional[float] = None,
                    batch_size: Optional[int] = None, seed: int = 0, data_root: Optional[str] = None,
                    train_limit: Optional[int] = None, validation_limit: Optional[int] = None,
                    test_limit: Optional[int] = None,
                    download: bool = False) -> Config:
    """The validated config of a notebook run: ``preset`` with the values that are not None.

    In the smoke profile, epochs are capped at 1 and ``train_limit``, ``validation_limit`` and ``test_limit`` default to the
    :data:`SMOKE_PROFILE` sizes. Wrong names, types or values raise :class:`ConfigError`.
    """
    if not isinstance(preset, str):
        raise ConfigError(f"preset={preset!r} has type {type(preset).__name__}, but preset must be a str "
                          f"(one of {', '.join(PRESETS)})")
    overrides: dict[str, Any] = {"seed": seed, "data_root": data_root, "download": download}
    for name, value in (("epochs", epochs), ("lr", lr), ("batch_size", batch_size),
                        ("train_limit", train_limit), ("validation_limit", validation_limit),
                        ("test_limit", test_limit)):
        if value is not None:
            overrides[name] = value
    if smoke:
        for name in ("train_limit", "validation_limit", "test_limit"):
            overrides.setdefault(name, SMOKE_PROFILE[name])
        epochs_asked = overrides.get("epochs")
        if isinstance(epochs_asked, int) and not isinstance(epochs_asked, bool):
            overrides["epochs"] = min(epochs_asked, SMOKE_PROFILE["epochs"])
        elif epochs_asked is None:
            overrides["epochs"] = SMOKE_PROFILE["epochs"]
    if isinstance(data_root, os.PathLike):  # a Path is fine; other wrong types fail validation below
        overrides["data_root"] = os.fspath(data_root)
    return from_preset(preset, **overrides)


def _run_description(metrics: Mapping[str, Any]) -> str:
    """One run's provenance from its metrics.json, without its time and date: preset, epochs, split sizes, data
    copy, precision and device (for an interrupted run, what :func:`evaluate_run` read from its checkpoint)."""
    if "interrupted_after" in metrics:
        return (f"preset `{metrics['preset']}`, interrupted after {metrics['interrupted_after']} of "
                f"{count(metrics['epochs'], 'epoch')}: no metrics.json yet, so its checkpoint is all there is")
    sizes = metrics.get("split_sizes", {})
    precision = f" in {metrics['precision']}" if metrics.get("precision") else ""
    return (f"preset `{metrics.get('preset')}`, {count(metrics.get('epochs', 0), 'epoch')} on "
            f"{sizes.get('train', 0):,} training images ({sizes.get('validation', 0):,} validation, "
            f"{sizes.get('test', 0):,} test) of {data_copy_note(metrics.get('data', 'unknown data'))}, trained"
            f"{precision} on {recorded_device(metrics)}")


def _run_sentence(metrics: Mapping[str, Any]) -> str:
    """:func:`_run_description` with the run's training time and date."""
    if "interrupted_after" in metrics:
        return _run_description(metrics)
    return (f"{_run_description(metrics)} in {format_duration(metrics.get('train_seconds', 0.0))} on "
            f"{str(metrics.get('date', ''))[:10]}")


def _runs_sentences(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """One sentence per group of runs that differ only in time and date (05's seeds and rates of one
    preset), with the range of their training times and their dates."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for metrics in runs:
        groups.setdefault(_run_description(metrics), []).append(metrics)
    sentences = []
    for description, group in groups.items():
        if len(group) == 1 or any("interrupted_after" in metrics for metrics in group):
            sentences += [f"Run: {_run_sentence(metrics)}" for metrics in group]
            continue
        fastest, slowest = (format_duration(f(m.get("train_seconds", 0.0) for m in group)) for f in (min, max))
        took = f"{fastest} each" if fastest == slowest else f"{fastest} to {slowest} each"
        dates = sorted({str(metrics.get("date", ""))[:10] for metrics in group})
        sentences.append(f"{len(group)} runs, each {description} in {took}, on {', '.join(dates)}")
    return sentences


def banner(setup: NotebookSetup, runs: Sequence[Mapping[str, Any]] = (), what: str = "These outputs"):
    """A Markdown banner saying when and where a notebook's outputs were produced, built from the runs' own
    metadata (``metrics.json`` dicts) and the notebook's set-up, so it cannot go stale. Displayed as the
    notebook's first result."""
    from IPython.display import Markdown

    if setup.smoke:
        kind = "**smoke profile**: tiny subsets and one epoch, so the numbers only show that the code works"
    elif all(_whole_recipe(metrics) for metrics in runs):
        kind = "**full profile**: whole splits, each preset's own epochs"
    else:  # a notebook given fewer epochs or images: the run sentences below say which
        kind = "**full profile**, with the epochs and images each run below gives"
    lines = [f"> **{what}** were produced on {datetime.date.today().isoformat()} on "
             f"{device_label(setup.device)}, {kind}."]
    if not runs:
        root, origin = resolve_root(None)
        lines.append(f"> Data: {data_copy_note(_describe_root(root))}, found through {origin}.")
    lines += [f"> {sentence}." for sentence in _runs_sentences(runs)]
    return Markdown("\n>\n".join(lines))


def _whole_recipe(metrics: Mapping[str, Any]) -> bool:
    """Whether a run trained its preset's epochs on whole splits (no ``*_limit``)."""
    config, preset = metrics.get("config") or {}, metrics.get("preset")
    return ("interrupted_after" not in metrics and preset in PRESETS
            and metrics.get("epochs") == from_preset(preset).epochs
            and not any(config.get(name) for name in ("train_limit", "validation_limit", "test_limit")))


def _describe_root(root: Path) -> str:
    from .data import detect_source

    source = detect_source(root)
    return f"image folder {root}" if source == "folder" else f"official CIFAR-10 at {root}" if source else str(root)


def describe_config(config: Config) -> str:
    """One line with the settings a reader of the report wants to see."""
    limits = (f"{config.train_limit or 'all'} training images, {config.validation_limit or 'all'} validation images, "
              f"{config.test_limit or 'all'} test images")
    optimizer = (f"muon for the conv filters (at {config.muon_lr_scale:g} x lr), sgd for the rest,"
                 if config.optimizer == "muon" else config.optimizer)
    return (f"preset {config.preset} (model {config.model}): {count(config.epochs, 'epoch')}, {optimizer} "
            f"lr {config.lr:g}, batch {config.batch_size}, {config.scheduler} schedule, {config.loss} loss, "
            f"augmentation {config.augmentation}, seed {config.seed}; {limits}")


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Plain-text table of dicts with the same keys: deterministic output for nbval-checked cells."""
    if not rows:
        return "(no rows)"
    columns = list(rows[0])
    cells = [[f"{row[c]:,}" if isinstance(row[c], int) and not isinstance(row[c], bool) else str(row[c])
              for c in columns] for row in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    numeric = [all(isinstance(row[c], (int, float)) and not isinstance(row[c], bool) for row in rows) for c in columns]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if right else v.ljust(w) for v, w, right in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(columns), line(["-" * w for w in widths]), *(line(values) for values in cells)])


def history_table(history: Sequence[Mapping[str, Any]]) -> str:
    """A run's ``history.csv`` rows as a plain-text table, one line per epoch; ``lr`` is the learning rate
    when the epoch began."""
    return format_table([{"epoch": row["epoch"], "train loss": f"{row['train_loss']:.4f}",
                          "train acc": f"{row['train_acc']:.2%}", "val loss (criterion)": f"{row['val_loss']:.4f}",
                          "val acc": f"{row['val_acc']:.2%}", "lr at start": f"{row['lr']:.2e}",
                          "seconds": f"{row['seconds']:.1f}"} for row in history])


@dataclass
class UntrainedForward:
    """A few training images through an untrained network (02): the uint8 ``images`` [N, 3, 32, 32], their
    class names, the normalised float32 ``inputs`` and the class ``probabilities`` [N, classes]."""

    model: torch.nn.Module
    images: torch.Tensor
    labels: list[str]
    inputs: torch.Tensor
    probabilities: torch.Tensor

    def describe_shapes(self, config: Config) -> str:
        return (f"{config.preset} ({config.model}): images {tuple(self.images.shape)} {self.images.dtype} -> "
                f"inputs {tuple(self.inputs.shape)} {self.inputs.dtype} -> class probabilities "
                f"{tuple(self.probabilities.shape)}")

    def describe_confidence(self) -> str:
        """How far the predictions are from chance: the mean top-class probability and entropy."""
        classes = self.probabilities.shape[1]
        confidence = self.probabilities.max(dim=1).values.mean().item()
        entropy = -(self.probabilities * self.probabilities.log()).sum(dim=1).mean().item()
        return (f"mean probability of the top class {confidence:.3f} (chance: {1 / classes:.3f}); mean entropy of "
                f"the prediction {entropy:.3f} nats (chance, all classes equal: log {classes} = "
                f"{math.log(classes):.3f})")


def untrained_forward(config: Config, data, classes: int = 8) -> UntrainedForward:
    """One training image of each of the first ``classes`` classes, normalised as ``config`` trains, through
    its untrained network (seeded by ``config.seed``). Training images: the test set waits for 04."""
    from .data import build_transform, one_per_class
    from .evaluation import as_log_probabilities, outputs_probabilities
    from .experiment import build_network, load_splits

    splits = load_splits(config, data)
    shown = one_per_class(splits.train.labels, seed=config.seed)[:classes]
    pixels = splits.train.images[shown]
    inputs = build_transform("none", splits.mean, splits.std)(pixels)  # uint8 -> normalised float32
    torch.manual_seed(config.seed)
    # As training builds it: a fast network's whitening stem fitted to the training split.
    model = build_network(config, splits, torch.device("cpu")).eval()
    with torch.no_grad():
        outputs = model(inputs.contiguous(memory_format=torch.channels_last) if config.channels_last else inputs)
        probabilities = as_log_probabilities(outputs, outputs_probabilities(model)).softmax(dim=1)
    return UntrainedForward(model, pixels, [data.classes[i] for i in splits.train.labels[shown]], inputs,
                            probabilities)


def model_summaries(presets: Optional[Sequence[str]] = None) -> dict[str, list[dict]]:
    """Each preset's model, layer by layer (:func:`cifar_utils.models.summarize`), built one at a time."""
    from .models import build_model, summarize

    summaries = {}
    for name in presets or list(PRESETS):
        torch.manual_seed(0)
        model = build_model(from_preset(name), 10)
        summaries[name] = summarize(model)
        del model  # the largest preset model holds over 150 M parameters
    return summaries


def preset_overview(summaries: Mapping[str, Sequence[Mapping]]) -> list[dict]:
    """One row per preset: source report, architecture, Block count and parameters."""
    rows = []
    for name, layers in summaries.items():
        config = from_preset(name)
        blocks = sum(1 for layer in layers if layer["type"] == "Block")
        rows.append({"preset": name, "source": PRESETS[name].source.split(";")[0], "model": config.model,
                     "Blocks": blocks, "parameters": sum(layer["parameters"] for layer in layers)})
    return rows


# --------------------------------------------------------------------------------------- run folders


@dataclass
class RunRecord:
    """A finished training run as read back from its folder."""

    out_dir: Path
    history: list[dict]  # one row per epoch: epoch, train_loss, train_acc, val_loss, val_acc, lr, seconds
    metrics: dict  # the run's metrics.json
    reused: bool = False  # True when an earlier run was reused instead of trained again


def read_run(out_dir: str | os.PathLike) -> RunRecord:
    """Read ``metrics.json`` and ``history.csv`` of a finished run (clear error when they are missing)."""
    out_dir = Path(out_dir)
    metrics_path, history_path = out_dir / METRICS_NAME, out_dir / HISTORY_NAME
    if not metrics_path.is_file() or not history_path.is_file():
        raise CheckpointError(f"{out_dir} holds no finished run (metrics.json and history.csv are written when "
                              "training ends): run 03_train.ipynb (or `python -m cifar_utils train --out "
                              f"{out_dir}`) first")
    metrics = read_metrics(metrics_path)
    try:
        with open(history_path, newline="") as f:
            history = [{key: int(value) if key == "epoch" else float(value) for key, value in row.items()}
                       for row in csv.DictReader(f)]
    except (OSError, UnicodeDecodeError, csv.Error, ValueError, TypeError) as err:
        raise CheckpointError(f"{history_path} is damaged ({err}); train the run again (--overwrite) or remove "
                              f"{out_dir}") from None
    return RunRecord(out_dir, history, metrics)


def read_metrics(path: Path) -> dict[str, Any]:
    """A finished run's ``metrics.json``; one that is damaged or not a run's raises :class:`CheckpointError`."""
    try:
        metrics = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path} is damaged ({err}); train the run again (--overwrite) or remove "
                              f"{path.parent}") from None
    if not isinstance(metrics, dict) or not isinstance(metrics.get("test_accuracy"), (int, float)):
        raise CheckpointError(f"{path} is not the metrics.json of a cifar_utils run (it has no test_accuracy); "
                              "point at the folder a train run wrote")
    return metrics


def run_history(run_dir: str | os.PathLike) -> tuple[list[dict], str]:
    """The per-epoch history of the run in ``run_dir`` and a title saying what it is: a finished run's from
    history.csv, a run still training (or resumed for more epochs) from its checkpoint, written after every
    epoch, so a run can be plotted while it trains."""
    from .checkpoint import load_checkpoint

    run_dir = Path(run_dir)
    metrics_path, checkpoint_path = run_dir / METRICS_NAME, run_dir / CHECKPOINT_NAME
    record = read_run(run_dir) if metrics_path.is_file() else None
    state = None
    # A finished run's checkpoint is read (it can be gigabytes) only when it was written after metrics.json,
    # as a resume for more epochs writes it; file times alone also change with a copy or a checkout, so the
    # checkpoint must plan other epochs than metrics.json ran. Unreadable, it leaves the finished record.
    if checkpoint_path.is_file() and (record is None or checkpoint_path.stat().st_mtime > metrics_path.stat().st_mtime):
        try:
            state = load_checkpoint(checkpoint_path)
        except CheckpointError:
            if record is None:
                raise
    resumed = (record is not None and state is not None
               and state["config"].get("epochs") != record.metrics.get("config", {}).get("epochs"))
    if record is not None and not resumed:
        metrics = record.metrics
        test_images = metrics.get("split_sizes", {}).get("test")
        tested = f"{test_images:,} test images of " if test_images else ""  # a subset's count shows as such
        return record.history, (f"{run_dir.name}: {metrics.get('preset')}, {count(len(record.history), 'epoch')}, "
                                f"test accuracy {metrics['test_accuracy']:.2%} on {tested}the "
                                f"{data_label(metrics.get('data', 'unknown data'))}")
    if state is None:
        inside = sorted({path.parent for name in (METRICS_NAME, CHECKPOINT_NAME) for path in run_dir.rglob(name)}
                        if run_dir.is_dir() else [])
        hint = (f"; it holds {count(len(inside), 'run')} in its subfolders, e.g. {inside[0]}: name those (with --out "
                "for several)" if inside else "; name the folder given to train's --out")
        raise CheckpointError(f"{run_dir} holds no run: no {METRICS_NAME} (a finished run) nor {CHECKPOINT_NAME} (one "
                              f"that has trained an epoch){hint}")
    if not state["history"]:
        raise CheckpointError(f"{run_dir} has not finished its first epoch yet: nothing to plot")
    return list(state["history"]), (f"{run_dir.name}: {state['config'].get('preset')}, {state['epoch']} of "
                                    f"{count(state['config'].get('epochs'), 'epoch')} so far (unfinished)")


def plot_run_folders(run_dirs: Sequence[str | os.PathLike], out: Optional[str | os.PathLike] = None,
                     overwrite: bool = False) -> Path:
    """Draw the training curves of one run (default file: ``<run>/training_curves.png``) or compare several on one
    figure (``out`` needed), and return the PNG's path; an existing file is replaced only with ``overwrite``."""
    from . import plots

    if not run_dirs:
        raise ConfigError("name at least one run folder to plot")
    if out is None and len(run_dirs) > 1:
        raise ConfigError(f"{len(run_dirs)} runs go into one figure: name its file with --out, e.g. --out compare.png")
    path = Path(out) if out is not None else Path(run_dirs[0]) / CURVES_NAME
    if path.suffix.lower() != ".png":
        raise ConfigError(f"--out {path}: the figure is written as PNG; give a file name ending in .png")
    if path.is_dir():
        raise ConfigError(f"--out {path} is a folder; give the PNG's file name, e.g. {path / CURVES_NAME}")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists; pass --overwrite to replace it, or choose another --out")
    runs = [run_history(run_dir) for run_dir in run_dirs]
    if len(runs) == 1:
        history, title = runs[0]
        plots.plot_history(history, title=title, save_to=path)
    else:
        labels = _distinct_names([Path(run_dir) for run_dir in run_dirs])
        plots.plot_runs({label: history for label, (history, _) in zip(labels, runs)},
                        title="\n".join(title for _, title in runs) if len(runs) <= 3 else None, save_to=path)
    return path


def _distinct_names(paths: Sequence[Path]) -> list[str]:
    """The shortest trailing parts of ``paths`` that tell them apart (``lr_0.5/seed_0``, not the whole path)."""
    parts = [path.resolve().parts for path in paths]
    for depth in range(1, max(map(len, parts)) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    raise ConfigError(f"a run folder is named twice: {' '.join(map(str, paths))}")


def _data_folder(root: Optional[str]) -> Path:
    """The folder a data_root names here and now (None: $CIFAR10_ROOT, then ./data)."""
    return resolve_root(root)[0].resolve()


def config_differences(saved: Mapping[str, Any], config: Config) -> list[str]:
    """``field: saved -> wanted`` for each result-relevant field where a saved config differs. A field the
    saved config lacks (it predates the field) counts as its default, which is what that run did. data_root
    differs only where the two name different folders: ``data/x``, its absolute path and None under
    ``CIFAR10_ROOT=data/x`` are the same data. ``download`` never differs: it only says how the data got there.
    Nor does a setting that the run never reads (:func:`~cifar_utils.config.without_ignored`, as resume
    compares them): a run saved before such settings were refused may hold one."""
    known = set(field_names())  # a field of a newer version cannot differ from anything here
    saved = without_ignored(config_from_dict({name: value for name, value in with_defaults(saved).items()
                                              if name in known})).to_dict()
    return [f"{name}: {saved[name]!r} -> {value!r}" for name, value in without_ignored(config).to_dict().items()
            if name not in NOT_RESULT_FIELDS and name != "download" and saved[name] != value
            and not (name == "data_root" and _data_folder(saved[name]) == _data_folder(value))]


def reusable_run(config: Config, out_dir: str | os.PathLike, overwrite: bool = False) -> Optional[RunRecord]:
    """The finished run in ``out_dir`` if it was trained with ``config``; None when there is none (or
    ``overwrite`` asks to replace it). A run with other settings, or an unfinished one, raises
    :class:`OutputExistsError`: a run is never replaced without ``overwrite=True``."""
    out_dir = Path(out_dir)
    if overwrite:
        return None
    if (out_dir / METRICS_NAME).is_file():
        record = read_run(out_dir)
        saved = record.metrics.get("config", {})
        if saved.get("data_root") is None and record.metrics.get("data_folder"):
            saved = {**saved, "data_root": record.metrics["data_folder"]}  # where $CIFAR10_ROOT pointed then
        refuse_other_settings(out_dir, "a run", config_differences(saved, config))
        record.reused = True
        return record
    if (out_dir / CHECKPOINT_NAME).is_file():
        raise OutputExistsError(
            f"{out_dir} holds an unfinished run (a checkpoint but no metrics.json). Set resume=True (for the "
            "report: --resume) to continue it, overwrite=True (for the report: delete the folder) to start again, "
            "or choose another out_dir.")
    return None


def refuse_other_settings(out_dir: Path, what: str, differences: Sequence[str]) -> None:
    """:class:`OutputExistsError` when ``out_dir`` holds ``what`` ("a run") trained with other settings
    (``differences``, from :func:`config_differences`): it is never replaced without ``overwrite=True``."""
    if differences:
        raise OutputExistsError(f"{out_dir} already holds {what} with other settings ({'; '.join(differences)}). "
                                "Set overwrite=True to replace it, or choose another out_dir to keep both.")


def _require_type(name: str, value: Any, kinds: tuple, what: str) -> None:
    if isinstance(value, bool) and bool not in kinds:
        ok = False
    else:
        ok = isinstance(value, kinds)
    if not ok:
        raise ConfigError(f"{name}={value!r} has type {type(value).__name__}, but {name} must be {what}")


def shipped_run_for(config: Config, out_dir: Path, shipped: Path = SHIPPED_RUN) -> Optional[RunRecord]:
    """The shipped run, when ``out_dir`` is empty (or missing) and the run was trained with ``config`` (data
    location aside): what :func:`copy_shipped_run` copies. None otherwise."""
    if not (shipped / METRICS_NAME).is_file() or any(out_dir.glob("*")):
        return None
    record = read_run(shipped)
    differences = config_differences(record.metrics.get("config", {}), config)
    return None if [d for d in differences if d.split(":")[0] not in LOCATION_FIELDS] else record


def copy_shipped_run(config: Config, out_dir: Path, shipped: Path = SHIPPED_RUN,
                     log: Callable[[str], None] = print) -> Optional[RunRecord]:
    """Copy the shipped run into the empty ``out_dir`` when it was trained with ``config`` (data location
    aside) and return it; None when there is no shipped run or its settings differ."""
    record = shipped_run_for(config, out_dir, shipped)
    if record is None:
        return None
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = io.staging_folder(out_dir.parent, ".shipped-")
        try:
            for name in SHIPPED_FILES:
                shutil.copy2(shipped / name, staging / name)
            if out_dir.exists():
                out_dir.rmdir()  # empty, checked above (another process writing there now makes this fail)
            os.replace(staging, out_dir)  # all files appear at once
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # gone already when the replace succeeded
    except OSError as err:
        raise WriteError(out_dir, err.strerror or str(err)) from None
    log(f"using the shipped run {shown_path(shipped)} ({_run_sentence(record.metrics)}); "
        "set use_shipped=False to train it yourself")
    return RunRecord(out_dir, record.history, record.metrics, reused=True)


def train_or_reuse(config: Config, out_dir: str | os.PathLike, *, device: Optional[str] = None,
                   overwrite: bool = False, resume: bool = False, progress: bool = False,
                   use_shipped: bool = False, log: Callable[[str], None] = print) -> RunRecord:
    """Train ``config`` into ``out_dir``, or reuse the finished run there when it has the same settings.

    ``overwrite=True`` replaces an earlier run (and says so); ``resume=True`` continues an interrupted
    one from its checkpoint. Anything else already in ``out_dir`` stops with a clear error.
    ``use_shipped=True`` copies the committed run (:data:`SHIPPED_RUN`) into an empty ``out_dir`` instead
    of training, when it has the same settings.
    """
    _require_type("out_dir", out_dir, (str, os.PathLike), "a path (str)")
    _require_type("device", device, (str, type(None)), "a str such as 'cpu' or 'cuda', or None")
    for name, value in (("overwrite", overwrite), ("resume", resume), ("progress", progress),
                        ("use_shipped", use_shipped)):
        _require_type(name, value, (bool,), "True or False")
    if overwrite and resume:
        raise ConfigError("overwrite=True and resume=True contradict each other: choose one")
    out_dir = Path(out_dir)
    if not resume:
        earlier = reusable_run(config, out_dir, overwrite)
        if earlier is not None:
            log(f"reusing the finished run in {out_dir}: it has the same settings "
                f"(set overwrite=True to train again)")
            return earlier
        shipped = copy_shipped_run(config, out_dir, log=log) if use_shipped and not overwrite else None
        if shipped is not None:
            return shipped
        if overwrite and any((out_dir / name).exists() for name in (METRICS_NAME, CHECKPOINT_NAME)):
            log(f"overwrite=True: replacing the earlier run in {out_dir}")
    from .experiment import train

    result = train(config, out_dir, device=device, resume=resume, overwrite=overwrite, progress=progress, log=log)
    return RunRecord(result.out_dir, result.history, result.metrics)


# -------------------------------------------------------------------------------------- evaluation


@dataclass
class RunEvaluation:
    """A run's checkpoint evaluated on its test split, with the raw test images for plots."""

    checkpoint: Path
    config: Config
    evaluation: Any  # cifar_utils.evaluation.Evaluation
    images: torch.Tensor  # uint8 [N, 3, 32, 32] test images, in the order of evaluation.labels
    data_description: str
    trained: Any  # cifar_utils.experiment.TrainedModel: the evaluated network
    metrics: dict  # the run's metrics.json; for an interrupted run, what its checkpoint says (for banner)
    note: str = ""  # a sentence when the test images are not from the data folder the run recorded


def evaluate_run(run_dir: str | os.PathLike, data_root: Optional[str] = None,
                 device: Optional[str] = None) -> RunEvaluation:
    """Evaluate the checkpoint 03 wrote into ``run_dir`` (the best-validation one when the run kept it)."""
    from .checkpoint import checkpoint_config, load_checkpoint
    from .config import replace
    from .data import load_dataset
    from .experiment import evaluate_model, load_model, load_splits, reported_checkpoint

    run_dir = Path(run_dir)
    latest = run_dir / CHECKPOINT_NAME
    if not latest.is_file():
        raise CheckpointError(f"no checkpoint in {run_dir}: run 03_train.ipynb first (it writes "
                              f"{latest}), or set run_dir to the folder of an earlier run")
    if (run_dir / METRICS_NAME).is_file():
        record = run_dir / METRICS_NAME
        metrics = read_metrics(record)
        config = checkpoint_config(metrics, record)
    else:  # an interrupted run: its checkpoint still says how it was trained
        record = latest
        state = load_checkpoint(latest)
        config = checkpoint_config(state, latest)
        metrics = {"preset": config.preset, "epochs": config.epochs, "interrupted_after": state["epoch"]}
    origin = f"the data_root recorded in {record}" if data_root is None else None
    note = ""
    recorded = config.data_root
    if data_root is None and recorded is not None and not Path(recorded).expanduser().exists():
        # A run trained elsewhere (the shipped one, say): evaluate it on the data found here, and say so.
        root, origin = resolve_root(None)
        note = (f"The data folder recorded in {record} ({recorded}) is not on this machine, so the checkpoint is "
                f"evaluated on the test images at {root} (from {origin}).")
        config = replace(config, data_root=None)
    config = replace(config, **({"data_root": data_root} if data_root is not None else {}))
    checkpoint = reported_checkpoint(latest, config.keep_best)
    data = load_dataset(config.data_root, config.dataset, config.download, config.skip_bad_files, seed=config.seed,
                        origin=origin)
    splits = load_splits(config, data)
    trained = load_model(checkpoint, device)
    evaluation = evaluate_model(trained, splits, config)
    return RunEvaluation(checkpoint, config, evaluation, splits.test.images, data.description, trained, metrics, note)


@dataclass
class BranchWeightSummary:
    """What a network's Blocks do with their branches, for a report."""

    weights: list  # one [N, K] tensor of weights a per Block; empty for a network without Blocks
    entropy: float  # mean entropy of a over Blocks and images, in nats (NaN without Blocks)
    uniform: float  # log K: the entropy of an even mix (NaN without Blocks)
    figure: Any  # the heatmaps of a for the first images, or None without Blocks
    branch_labels: tuple = ()  # one name per branch, such as "3x3"

    def preferences(self) -> list[tuple[str, float]]:
        """Per Block, the branch with the largest mean weight over the images and that mean weight."""
        means = [a.float().mean(dim=0) for a in self.weights]
        return [(self.branch_labels[int(m.argmax())], float(m.max())) for m in means]

    def describe(self, blocks: str = "its Blocks") -> str:
        """A clause for a conclusion, such as 'its Blocks mix their branches almost evenly (...)', with
        ``blocks`` as its subject."""
        if not self.weights:
            return "it has no coursework Blocks"
        share = self.entropy / self.uniform
        how = ("almost evenly" if share > 0.98 else "unevenly, yet far from one branch per image" if share > 0.5
               else "close to one branch per image")
        return (f"{blocks} mix their branches {how} (mean weight entropy {self.entropy:.3f} nats; an even mix "
                f"has {self.uniform:.3f}, one branch alone 0)")


def summarize_branch_weights(model: torch.nn.Module, weights: Sequence[torch.Tensor],
                             images: Optional[torch.Tensor] = None, title: Optional[str] = None,
                             save_to: Optional[str | os.PathLike] = None, count: int = 4,
                             image_labels: Optional[Sequence[str]] = None,
                             log: Callable[[str], None] = print,
                             shown: Optional[torch.Tensor] = None) -> BranchWeightSummary:
    """Print the mean entropy of ``weights`` (a list over Blocks of [N, K], as ``collect_branch_weights``
    gives) against log K and plot them for the first ``count`` ``images`` (uint8 [N, 3, 32, 32]), or for
    the images at indices ``shown`` (e.g. :func:`cifar_utils.data.one_per_class`), named by ``image_labels``
    (such as their classes); for a network without Blocks, say so instead."""
    from . import plots
    from .models import Block, branch_weight_entropy

    if not weights:
        log(f"{type(model).__name__} has no coursework Blocks, so there are no branch weights to show")
        return BranchWeightSummary([], float("nan"), float("nan"), None)
    labels = next(m for m in model.modules() if isinstance(m, Block)).branch_labels
    entropy, uniform = branch_weight_entropy(weights), math.log(weights[0].shape[1])
    log(f"{len(weights)} Blocks, K = {weights[0].shape[1]}: mean entropy of a over {weights[0].shape[0]:,} images = "
        f"{entropy:.3f} nats (uniform: log K = {uniform:.3f}; one branch only: 0)")
    plotted = weights if shown is None else [a[shown] for a in weights]
    if shown is not None and images is not None:
        images = images[shown]
    figure = plots.plot_branch_weights(plotted, list(labels), images=images, count=count, title=title,
                                       save_to=save_to, image_labels=image_labels)
    return BranchWeightSummary(list(weights), entropy, uniform, figure, labels)


def trained_branch_weights(result: RunEvaluation, batch_size: int = 500) -> list[torch.Tensor]:
    """The trained Blocks' weights ``a`` on every test image of ``result``: one [N, K] tensor per Block,
    on the CPU (an empty list for a network without Blocks, such as ResNet-32)."""
    from .data import build_transform
    from .models import collect_branch_weights

    trained = result.trained
    normalise = build_transform("none", trained.mean, trained.std)
    per_batch = [collect_branch_weights(trained.model, normalise(result.images[start:start + batch_size]).to(trained.device))
                 for start in range(0, len(result.images), batch_size)]
    return [torch.cat(blocks) for blocks in zip(*per_batch)]


# ------------------------------------------------------------------------------------------ papermill


def import_papermill():
    """papermill, or a :class:`CifarUtilsError` that says how to install it."""
    try:
        import papermill
    except ImportError:
        raise CifarUtilsError("running the notebooks needs papermill, which is not installed. Install it with "
                              "`pip install papermill ipykernel` (or `pip install -e \".[notebooks]\"`, or "
                              "`pip install -r requirements.txt`)") from None
    return papermill


def clean_notebook(path: str | os.PathLike) -> None:
    """Drop papermill's timings and absolute paths and any widget state, so the file can be committed."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for key in VOLATILE_METADATA:
        nb.metadata.pop(key, None)
    for cell in nb.cells:
        for key in VOLATILE_METADATA:
            cell.metadata.pop(key, None)
    io.atomic_write(path, lambda tmp: nbformat.write(nb, str(tmp)))


def notebook_parameters(path: str | os.PathLike) -> dict[str, Any]:
    """The default values of a notebook's ``parameters`` cell (literals only)."""
    papermill = import_papermill()
    values = {}
    for name, info in papermill.inspect_notebook(str(path)).items():
        try:
            values[name] = ast.literal_eval(info["default"])
        except (ValueError, SyntaxError):
            values[name] = info["default"]
    return values


class NotebookFailed(CifarUtilsError):
    """A notebook stopped with an exception; ``executed`` is the kept copy with the error (None: none was
    written, as when the kernel died before papermill saved anything)."""

    def __init__(self, message: str, executed: Optional[Path] = None, ename: Optional[str] = None):
        super().__init__(message)
        self.executed = executed
        self.ename = ename  # the failing cell's exception class, e.g. "TrainingDivergedError" (None: the kernel died)


SCRATCH_PREFIX = ".papermill-"  # + "<pid>@<host>-": a folder whose process on this host is gone is an orphan


def _scratch_prefix() -> str:
    return f"{SCRATCH_PREFIX}{os.getpid()}@{socket.gethostname()}-"


def _remove_orphaned_scratch(folder: Path) -> None:
    """Remove the scratch folders of executions on this host whose process was killed outright (SIGKILL, a
    power cut) before it could clean up; a live process's, another host's (a shared disk) and a folder not
    named this way are left alone."""
    host = socket.gethostname()
    for scratch in folder.glob(f"{SCRATCH_PREFIX}*"):
        named = re.fullmatch(rf"{re.escape(SCRATCH_PREFIX)}(\d+)@(.+)-[^-]+", scratch.name)
        if named and named.group(2) == host and int(named.group(1)) != os.getpid() \
                and not _process_alive(int(named.group(1))):
            shutil.rmtree(scratch, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0 only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's process
        pass
    return True


def failed_copy(output: Path, failed_dir: Optional[str | os.PathLike] = None) -> Path:
    """Where :func:`execute_notebook` keeps the executed copy of a notebook meant for ``output`` that failed."""
    return Path(failed_dir or output.parent) / f"{output.stem}.failed{output.suffix}"


def _keep(executed: Path, failed: Path) -> Optional[Path]:
    """Move a failed execution's notebook to ``failed``, and return it; None where papermill wrote none."""
    if not executed.is_file():
        return None
    failed.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(executed), failed)
    return failed


def execute_notebook(notebook: str | os.PathLike, output: str | os.PathLike, parameters: Optional[dict] = None,
                     *, clean: bool = False, cwd: Optional[str | os.PathLike] = None,
                     failed_dir: Optional[str | os.PathLike] = None) -> Path:
    """Run ``notebook`` through papermill into ``output`` (written only when complete).

    On an exception in a cell, or a kernel that died, the executed copy (as far as papermill wrote it) is
    kept as ``<name>.failed.ipynb`` in ``failed_dir`` (default: beside ``output``) and
    :class:`NotebookFailed` names the error and the copy; a success removes an earlier attempt's copy.
    ``clean`` strips volatile metadata. The kernel starts in ``cwd`` (default: the notebook's folder).
    """
    papermill = import_papermill()
    notebook, output = Path(notebook), Path(output)
    if not notebook.is_file():
        raise CifarUtilsError(f"notebook {notebook} not found: the report notebooks ship with the repository "
                              "(git clone it; a pip-installed package does not include them)")
    output.parent.mkdir(parents=True, exist_ok=True)
    failed = failed_copy(output, failed_dir)
    _remove_orphaned_scratch(output.parent)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=_scratch_prefix()) as scratch:
        executed = Path(scratch) / notebook.name
        try:
            papermill.execute_notebook(str(notebook), str(executed), parameters=parameters or {},
                                       cwd=str(cwd or notebook.parent), progress_bar=False, log_output=False,
                                       extra_arguments=KERNEL_ARGUMENTS)
        except papermill.PapermillExecutionError as err:
            kept = _keep(executed, failed)
            raise NotebookFailed(f"{notebook.name} stopped at cell {err.exec_count}: {err.ename}: {err.evalue} "
                                 f"(the executed notebook is at {kept})", kept, err.ename) from None
        except RuntimeError as err:  # nbclient's DeadKernelError and its kin: the kernel itself died
            kept = _keep(executed, failed)
            where = f"; the notebook as far as it ran is at {kept}" if kept else ""
            raise NotebookFailed(f"the kernel running {notebook.name} died ({type(err).__name__}: {err}); this is "
                                 f"often running out of memory: try a smaller batch size{where}", kept) from None
        if clean:
            clean_notebook(executed)
        io.atomic_write(output, lambda tmp: shutil.copyfile(executed, tmp))
    failed.unlink(missing_ok=True)  # an earlier attempt's: this one succeeded
    return output


# ---------------------------------------------------------------------------------- the whole report


@contextmanager
def environment(**values: Optional[str]) -> Iterator[None]:
    """Set (or, for None, leave alone) environment variables for the kernels started inside."""
    before = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is not None:
                os.environ[name] = value
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@dataclass
class PlannedTraining:
    """Training runs of one notebook of the full profile, for the time estimate."""

    notebook: str
    config: Config
    runs: int = 1  # how many of its runs train (05: one per learning rate and seed)
    reused: int = 0  # how many it reuses instead: finished runs with the same settings


def full_profile_trainings(notebooks_dir: Path = NOTEBOOKS_DIR, runs_dir: Optional[Path] = None,
                           notebooks: Sequence[str] = NOTEBOOKS, use_shipped: bool = True) -> list[PlannedTraining]:
    """The training runs of the full profile that ``notebooks`` start, from the defaults in 03's and 05's
    parameters cells. A run whose folder under ``runs_dir`` (default: the full profile's runs folder of the
    repository) already holds a finished run with its settings, or that 03 would take from the shipped run
    (unless ``use_shipped`` is False, as in :func:`run_report`), counts as reused, not as a run."""
    from .sweep import run_path  # local import: sweep builds on this module

    runs_dir = runs_dir if runs_dir is not None else profile_runs_dir(notebooks_dir.parent, smoke=False)
    plan = []
    if "03_train.ipynb" in notebooks:
        params = notebook_parameters(notebooks_dir / "03_train.ipynb")
        config = notebook_config(params["preset"], smoke=False, epochs=params.get("epochs"), lr=params.get("lr"),
                                 batch_size=params.get("batch_size"), seed=params.get("seed", 0))
        reused = _reuses(config, runs_dir / TRAIN_RUN_NAME, use_shipped and params.get("use_shipped", False))
        plan.append(PlannedTraining("03_train.ipynb", config, runs=int(not reused), reused=int(reused)))
    if "05_lr_comparison.ipynb" in notebooks:
        params = notebook_parameters(notebooks_dir / "05_lr_comparison.ipynb")
        configs = [notebook_config(params["preset"], smoke=False, epochs=params.get("epochs"), lr=lr, seed=seed,
                                   batch_size=params.get("batch_size"))
                   for lr in params["learning_rates"] for seed in params.get("seeds", [0])]
        reused = sum(_reuses(c, run_path(runs_dir / SWEEP_RUN_NAME, c.lr, c.seed)) for c in configs)
        plan.append(PlannedTraining("05_lr_comparison.ipynb", configs[0], runs=len(configs) - reused, reused=reused))
    return plan


def _reuses(config: Config, run_dir: Path, use_shipped: bool = False) -> bool:
    """Whether a notebook would reuse a finished run for ``config`` in ``run_dir`` (or, ``use_shipped``, copy
    the shipped run into it) instead of training."""
    try:
        if reusable_run(config, run_dir) is not None:
            return True
    except (CifarUtilsError, OSError, ValueError):  # other settings, unfinished or unreadable: the notebook
        return False  # stops there and says why, and the fix (overwrite=True) trains
    return use_shipped and shipped_run_for(config, run_dir, SHIPPED_RUN) is not None


def seconds_per_image(config: Config, device: torch.device, steps: int = 3) -> tuple[float, float]:
    """Measured (training, evaluation) seconds per image of ``config`` on ``device``: the fastest of ``steps``
    training steps at its batch size, memory format and precision, and of as many forward passes at its
    evaluation batch size, on random images after one warm-up step. Evaluation is per view (test-time
    augmentation multiplies it)."""
    from .losses import build_criterion
    from .models import build_model
    from .optim import build_optimizer

    if device.type == "cpu":
        keep_freed_cpu_memory()  # as training does, so the estimate sees the same speed
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model = build_model(config, 10).to(device).to(memory_format=memory_format)
    optimizer, criterion = build_optimizer(model, config), build_criterion(config)
    precision = resolve_precision(config.precision, device)

    def batch(size: int) -> torch.Tensor:
        return torch.randn(size, 3, IMAGE_SIZE, IMAGE_SIZE, device=device).contiguous(memory_format=memory_format)

    images, labels = batch(config.batch_size), torch.randint(0, 10, (config.batch_size,), device=device)

    def train_step() -> None:
        with autocast(device, precision):
            loss = criterion(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def timed(step: Callable[[], None]) -> float:
        # The fastest of a few steps: other work on a shared machine only ever slows a step, and an estimate
        # measured in such a moment came out ten times too long.
        step()  # warm-up: allocations and kernel selection
        fastest = math.inf
        for _ in range(steps):
            started = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            fastest = min(fastest, time.perf_counter() - started)
        return fastest

    model.train()
    train_seconds = timed(train_step) / config.batch_size
    model.eval()
    eval_images = batch(config.eval_batch_size)
    with torch.no_grad(), autocast(device, precision):
        eval_seconds = timed(lambda: model(eval_images)) / config.eval_batch_size
    return train_seconds, eval_seconds


def estimate_seconds(plan: Sequence[PlannedTraining], per_image: Sequence[tuple[float, float]]) -> float:
    """Seconds the planned trainings take on the whole of CIFAR-10, given (train, eval) seconds per image for
    each item of ``plan``: every epoch trains on the training split and validates on the validation split
    (one view); the end evaluates validation and test once more with the config's test-time augmentation."""
    total = 0.0
    for item, (train_s, eval_s) in zip(plan, per_image, strict=True):
        train, validation, test = split_sizes(item.config)
        per_run = (item.config.epochs * (train * train_s + validation * eval_s)
                   + (validation + test) * eval_s * view_count(item.config.tta))
        total += item.runs * per_run
    return total


def full_profile_warning(device: torch.device, notebooks_dir: Path = NOTEBOOKS_DIR,
                         measure: Callable[[Config, torch.device], tuple[float, float]] = seconds_per_image, *,
                         runs_dir: Optional[Path] = None, notebooks: Sequence[str] = NOTEBOOKS,
                         use_shipped: bool = True) -> Optional[str]:
    """The warning printed before a full-profile report on a machine without a GPU, with an estimate
    measured on this machine of the trainings that ``notebooks`` will start; None when they start none
    (every run is reused)."""
    plan = full_profile_trainings(notebooks_dir, runs_dir, notebooks, use_shipped)
    reused = sum(item.reused for item in plan)
    plan = [item for item in plan if item.runs]
    if not plan:
        return None
    seconds = estimate_seconds(plan, [measure(item.config, device) for item in plan])
    runs = "; ".join(f"{item.notebook}: {item.runs} x {item.config.preset} for {item.config.epochs} epochs"
                     for item in plan)
    also = (f" ({count(reused, 'finished run')} with the same settings {'is' if reused == 1 else 'are'} reused)"
            if reused else "")
    return (f"WARNING: no GPU found, so the full report trains on {describe_device(device)}. It trains {runs}{also}, "
            f"which on this machine would take about {format_duration(seconds)} (measured from a few training "
            "steps at the presets' batch sizes). Stop now (Ctrl-C) and use `python -m cifar_utils report --smoke` "
            "for a quick run, or run the report on a GPU.")


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "an unknown time"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} minutes"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} hours"
    return f"{seconds / 86400:.1f} days"


def report_notebook(name: str) -> str:
    """The report notebook ``name`` names: its file name (``03_train.ipynb``), also given without the
    extension, with its folder (``notebooks/03_train.ipynb``) or by its number (``03``)."""
    stem = Path(name).name.removesuffix(".ipynb")
    matches = [notebook for notebook in NOTEBOOKS if stem in (notebook.removesuffix(".ipynb"), notebook[:2])]
    if len(matches) != 1:
        raise ConfigError(f"unknown notebook {name}; choose from {', '.join(NOTEBOOKS)} (or their numbers, 01 to "
                          f"{NOTEBOOKS[-1][:2]})")
    return matches[0]


def run_report(smoke: bool = False, data_root: Optional[str] = None, output_dir: Optional[str] = None, *,
               notebooks: Sequence[str] = NOTEBOOKS, notebooks_dir: str | os.PathLike = NOTEBOOKS_DIR,
               use_shipped: bool = True, resume: bool = False, log: Callable[[str], None] = print) -> list[Path]:
    """Execute the report notebooks in order through papermill; return the executed notebooks' paths.

    Without ``output_dir`` the notebooks are replaced in place by their executed versions (each only when
    it ran to the end), figures go to ``figures/`` and runs to ``runs/``; with it, all three go under
    ``output_dir``. ``smoke`` selects the tiny profile; ``data_root`` sets ``CIFAR10_ROOT`` for the kernels.
    ``use_shipped=False`` has 03 train its run even where the committed one (:data:`SHIPPED_RUN`) has its
    settings, so that every output comes from this machine. ``resume=True`` has 03 and 05 continue their
    interrupted runs (a checkpoint but no metrics.json) instead of stopping at them. A notebook that fails
    stops the report with :class:`NotebookFailed`.
    """
    import_papermill()
    notebooks_dir = Path(notebooks_dir)
    notebooks = [report_notebook(name) for name in notebooks]
    unknown = [name for name in notebooks if not (notebooks_dir / name).is_file()]
    if unknown:
        raise CifarUtilsError(f"notebook(s) {', '.join(unknown)} not found in {notebooks_dir}: the report runs "
                              "from a clone of the repository")
    device = get_device()
    out = Path(output_dir).resolve() if output_dir else None
    if out is not None and out.exists() and not out.is_dir():
        raise ConfigError(f"--output-dir {output_dir} is a file; name a folder (it is created if missing)")
    root = Path(data_root).expanduser().resolve() if data_root else None
    if root is not None:  # before any kernel starts, and naming the flag the user gave
        require_data(root, "--data-root")
    if not smoke and device.type != "cuda":
        with environment(CIFAR10_ROOT=str(root) if root else None):  # the data the notebooks will see
            warning = full_profile_warning(device, notebooks_dir, notebooks=notebooks, use_shipped=use_shipped,
                                           runs_dir=profile_runs_dir(out or notebooks_dir.parent, smoke=False))
        if warning:
            log(warning)
    work = notebooks_dir.resolve().parent  # where each notebook's first cell moves its kernel (from notebooks/)
    if root is not None and notebooks_dir.name == "notebooks" and root.is_relative_to(work):
        root = root.relative_to(work)  # so the outputs name it as a clone does (data/cifar10-jpeg)
    executed = []
    with environment(**{SMOKE_ENV: "1" if smoke else "0", OUTPUT_ENV: str(out) if out else None,
                        "CIFAR10_ROOT": str(root) if root else None}):
        for name in notebooks:
            started = time.perf_counter()
            target = (out / name) if out else notebooks_dir / name
            log(f"running {name} ({'smoke' if smoke else 'full'} profile) ...")
            parameters = {}
            if name == "03_train.ipynb" and not use_shipped:
                parameters["use_shipped"] = False
            if resume and name in NOTEBOOK_RUNS:
                parameters["resume"] = True
            # A failed copy never goes into notebooks/, where nbval would collect it.
            execute_notebook(notebooks_dir / name, target, parameters or None, clean=True,
                             failed_dir=failed_notebooks_dir(out or notebooks_dir.parent))
            log(f"  {name} done in {format_duration(time.perf_counter() - started)}: {target}")
            executed.append(target)
    return executed
