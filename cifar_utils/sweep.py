"""Learning-rate comparison: ``03_train.ipynb`` executed through papermill once per learning rate.

Each run gets its own folder ``<out_dir>/lr_<rate>/`` holding the executed notebook (``03_train.ipynb``)
and the run's files (``metrics.json``, ``history.csv``, checkpoints). A folder that already holds a
finished run with the same settings is reused, not trained again; one with other settings stops the
sweep before anything runs, unless ``overwrite=True``. A run that fails (say, a learning rate so large
that training diverges) is reported in the table instead of stopping the others.

Usage::

    from cifar_utils.sweep import run_lr_sweep, sweep_table
    runs = run_lr_sweep([0.01, 0.005, 0.001], {"preset": "seed004", "epochs": 30}, "runs/lr_comparison")
    sweep_table(runs)   # rows: learning rate, best and final validation accuracy, test accuracy, seconds
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from . import io
from .errors import CifarUtilsError, ConfigError
from .report import (NOTEBOOKS_DIR, NotebookFailed, RunRecord, execute_notebook, notebook_config,
                     notebook_parameters, read_run, reusable_run, smoke_mode)

TRAIN_NOTEBOOK = NOTEBOOKS_DIR / "03_train.ipynb"
# 03's parameters that a sweep sets itself, per run.
PER_RUN_PARAMETERS = ("lr", "out_dir", "device", "overwrite", "resume", "progress", "figures_dir")
# 03's parameters that feed its config (the rest are about where and how it runs).
CONFIG_PARAMETERS = ("preset", "epochs", "batch_size", "seed", "data_root", "train_limit", "validation_limit",
                     "test_limit")
TABLE_NAME = "comparison.csv"


@dataclass
class SweepRun:
    """One learning rate of a sweep."""

    learning_rate: float
    device: Optional[str]  # the device it ran on (None: the best available)
    run_dir: Path  # its folder: executed notebook and run files
    notebook: Path  # the executed 03_train.ipynb (or the .failed copy)
    record: Optional[RunRecord]  # metrics and history; None when the run failed
    error: Optional[str] = None  # why it failed

    @property
    def reused(self) -> bool:
        return self.record is not None and self.record.reused


def run_dir_name(learning_rate: float) -> str:
    """``lr_0.01``, ``lr_0.0005``: ``:g`` keeps the folder name short and unambiguous."""
    return f"lr_{learning_rate:g}"


def run_lr_sweep(learning_rates: Sequence[float], base_parameters: Mapping[str, Any], out_dir: str | os.PathLike,
                 devices: Optional[Sequence[Optional[str]]] = None, *, notebook: str | os.PathLike = TRAIN_NOTEBOOK,
                 overwrite: bool = False, resume: bool = False, log: Callable[[str], None] = print) -> list[SweepRun]:
    """Execute ``notebook`` (03) once per learning rate with ``base_parameters``; return the runs in order.

    ``devices`` lists where runs go, round-robin (``["cuda:0", "cuda:1"]``); each device runs its share one
    after another, and different devices run at the same time. None means every visible GPU when there are
    several (:func:`parallel_devices`), else the best available device, one run after another.
    ``overwrite`` retrains runs that exist; ``resume`` continues interrupted ones. The table is also
    written to ``<out_dir>/comparison.csv``.
    """
    learning_rates = _check_learning_rates(learning_rates)
    notebook, out_dir = Path(notebook), Path(out_dir)
    defaults = _check_parameters(notebook, base_parameters)
    if overwrite and resume:
        raise ConfigError("overwrite=True and resume=True contradict each other: choose one")
    devices = _check_devices(devices) if devices else parallel_devices()
    base_parameters = dict(base_parameters)
    if isinstance(base_parameters.get("data_root"), (str, os.PathLike)):  # the runs' kernels start elsewhere
        base_parameters["data_root"] = os.fspath(Path(base_parameters["data_root"]).expanduser().resolve())
    config_values = {k: v for k, v in {**defaults, **base_parameters}.items() if k in CONFIG_PARAMETERS}
    preset = config_values.pop("preset")
    # Settle every folder before training anything, so a clash is found in seconds, not hours.
    planned = []
    for index, lr in enumerate(learning_rates):
        config = notebook_config(preset, smoke=smoke_mode(), lr=lr, **config_values)
        run_dir = out_dir / run_dir_name(lr)
        unfinished = (run_dir / "checkpoint.pt").is_file() and not (run_dir / "metrics.json").is_file()
        earlier = None if resume and unfinished else reusable_run(config, run_dir, overwrite)
        planned.append((lr, devices[index % len(devices)], run_dir, earlier, resume and unfinished))
    def run_share(device: Optional[str]) -> dict[float, SweepRun]:
        """Run this device's share of the plan, one after another."""
        done = {}
        for lr, run_device, run_dir, earlier, continue_run in planned:
            if run_device != device:
                continue
            if earlier is not None:
                log(f"lr {lr:g}: reusing the finished run in {run_dir} (same settings; overwrite=True trains again)")
                done[lr] = SweepRun(lr, device, run_dir, run_dir / notebook.name, earlier)
            else:
                done[lr] = _run_one(notebook, lr, device, run_dir, base_parameters,
                                    {"overwrite": overwrite, "resume": continue_run}, log)
        return done

    # One thread per device is enough: each run executes in its own kernel process.
    used = list(dict.fromkeys(device for _, device, *_ in planned))
    with ThreadPoolExecutor(max_workers=len(used)) as pool:
        finished = {lr: run for share in pool.map(run_share, used) for lr, run in share.items()}
    runs = [finished[lr] for lr in learning_rates]
    io.save_csv(sweep_table(runs), out_dir / TABLE_NAME)
    if all(run.record is None for run in runs):
        raise CifarUtilsError(f"every run of the sweep failed; the first: {runs[0].error}")
    return runs


def parallel_devices() -> list[Optional[str]]:
    """Every visible GPU (``cuda:0``, ``cuda:1``, ...) when there are several; else ``[None]``, the best device."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [f"cuda:{i}" for i in range(count)] if count > 1 else [None]


def _run_one(notebook: Path, lr: float, device: Optional[str], run_dir: Path, base_parameters: Mapping[str, Any],
             existing: Mapping[str, bool], log: Callable[[str], None]) -> SweepRun:
    """Execute one learning rate's notebook into ``run_dir`` and read its results back. ``existing``
    holds the ``overwrite`` and ``resume`` flags for what is already in ``run_dir``."""
    # Each run's curves go into its own folder, not over the report's figures/training_curves.png.
    parameters = {**base_parameters, **existing, "lr": lr, "out_dir": str(run_dir.resolve()), "device": device,
                  "progress": False, "figures_dir": str(run_dir.resolve())}
    executed = run_dir / notebook.name
    log(f"lr {lr:g}: executing {notebook.name} into {executed}{f' on {device}' if device else ''} ...")
    try:
        execute_notebook(notebook, executed, parameters)
    except NotebookFailed as err:
        log(f"lr {lr:g}: FAILED: {err}")
        return SweepRun(lr, device, run_dir, executed.with_name(f"{executed.stem}.failed{executed.suffix}"),
                        None, str(err))
    record = read_run(run_dir)
    log(f"lr {lr:g}: best validation accuracy {record.metrics['best_validation_accuracy']:.2%}, "
        f"test accuracy {record.metrics['test_accuracy']:.2%}")
    return SweepRun(lr, device, run_dir, executed, record)


def _check_devices(devices: Sequence[Optional[str]]) -> list[Optional[str]]:
    """A list of device names; a single string (papermill's ``-p`` passes one) is refused, not split."""
    import torch

    if isinstance(devices, (str, bytes)) or not isinstance(devices, Sequence):
        raise ConfigError(f"devices={devices!r} must be a list such as ['cuda:0', 'cuda:1'] "
                          "(with papermill: -y 'devices: [\"cuda:0\", \"cuda:1\"]')")
    for device in devices:
        try:
            torch.device(device) if device is not None else None
        except (RuntimeError, TypeError):
            raise ConfigError(f"{device!r} in devices is not a device name; use cpu, cuda, cuda:1 or mps") from None
    return list(devices)


def _check_learning_rates(learning_rates: Sequence[float]) -> list[float]:
    if isinstance(learning_rates, (str, bytes)) or not isinstance(learning_rates, Sequence) or not learning_rates:
        raise ConfigError(f"learning_rates={learning_rates!r} must be a non-empty list of numbers, e.g. [0.01, 0.001]")
    for lr in learning_rates:
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
            raise ConfigError(f"learning rate {lr!r} in learning_rates is invalid: each must be a number > 0")
    if len(set(learning_rates)) != len(learning_rates):
        raise ConfigError(f"learning_rates={list(learning_rates)} repeats a rate; each run needs its own")
    return [float(lr) for lr in learning_rates]


def _check_parameters(notebook: Path, base_parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Papermill only warns about a parameter the notebook does not have; a sweep refuses it.
    Returns the notebook's default parameters."""
    if not notebook.is_file():
        raise CifarUtilsError(f"notebook {notebook} not found: the sweep runs 03_train.ipynb from a clone of the "
                              "repository (a pip-installed package does not include the notebooks)")
    if not isinstance(base_parameters, Mapping):
        raise ConfigError(f"base_parameters must be a dict of {notebook.name}'s parameters, "
                          f"got {type(base_parameters).__name__}")
    known = notebook_parameters(notebook)
    unknown = sorted(set(base_parameters) - set(known))
    if unknown:
        raise ConfigError(f"unknown parameter(s) for {notebook.name}: {', '.join(unknown)}. "
                          f"Valid: {', '.join(known)}")
    fixed = sorted(set(base_parameters) & set(PER_RUN_PARAMETERS))
    if fixed:
        raise ConfigError(f"{', '.join(fixed)} are set by the sweep for each run; leave them out of base_parameters")
    return known


def sweep_table(runs: Sequence[SweepRun]) -> list[dict]:
    """One row per run: learning rate, epochs, best and final validation accuracy, test accuracy (in
    [0, 1]; NaN for a failed run), training seconds, and status."""
    rows = []
    for run in runs:
        if run.record is None:
            rows.append({"learning_rate": run.learning_rate, "epochs": 0, "best_val_acc": math.nan,
                         "final_val_acc": math.nan, "test_acc": math.nan, "train_seconds": math.nan,
                         "status": f"failed: {run.error}"})
            continue
        metrics, history = run.record.metrics, run.record.history
        rows.append({
            "learning_rate": run.learning_rate,
            "epochs": len(history),
            "best_val_acc": metrics["best_validation_accuracy"],
            "final_val_acc": history[-1]["val_acc"] if history else math.nan,
            "test_acc": metrics["test_accuracy"],
            "train_seconds": metrics["train_seconds"],
            "status": "reused" if run.reused else "ok",
        })
    return rows


def sweep_histories(runs: Sequence[SweepRun]) -> dict[str, list[dict]]:
    """``{"lr=0.01": history, ...}`` of the runs that finished, for :func:`cifar_utils.plots.plot_runs`."""
    return {f"lr={run.learning_rate:g}": run.record.history for run in runs if run.record is not None}
