"""Learning-rate comparison: ``03_train.ipynb`` executed through papermill once per learning rate and seed.

Each run gets its own folder ``<out_dir>/lr_<rate>/seed_<seed>/`` holding the executed notebook
(``03_train.ipynb``) and the run's files (``metrics.json``, ``history.csv``, checkpoints). A folder that
already holds a finished run with the same settings is reused, not trained again; one with other
settings stops the sweep before anything runs, unless ``overwrite=True``. A run that fails (say, a
learning rate so large that training diverges) is reported in the table instead of stopping the others.
A run that diverged leaves ``diverged.json`` (its error and settings), so the next sweep with the same
settings reports it again instead of training it again (``overwrite=True`` does; ``resume=True`` continues
its last good checkpoint). Any other failure (a kernel out of memory, say) leaves an unfinished run, which
stops the next sweep until ``resume=True`` continues it or ``overwrite=True`` replaces it.

The learning rate is chosen on the mean validation accuracy over the seeds; test accuracy is only
reported, never used to choose.

Usage::

    from cifar_utils import plots, sweep
    runs = sweep.run_lr_sweep([0.01, 0.005, 0.001], {"preset": "seed004", "epochs": 30}, "runs/lr_comparison",
                              seeds=(0, 1, 2))
    rows = sweep.sweep_table(runs)                  # one row per (learning rate, seed)
    summary = sweep.summarize_by_learning_rate(rows)  # one row per learning rate: means and stds over seeds
    sweep.chosen_learning_rate(summary)             # the rate with the highest mean validation accuracy
    plots.plot_lr_comparison(summary, title="seed004, 45,000 images: learning rate")
"""

from __future__ import annotations

import json
import math
import os
import statistics
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from . import io
from .checkpoint import CHECKPOINT_NAME, METRICS_NAME
from .device import get_device
from .config import Config
from .errors import CifarUtilsError, ConfigError, DataError, OutputExistsError, TrainingDivergedError
from .report import (NOTEBOOKS_DIR, NotebookFailed, RunRecord, config_differences, execute_notebook, failed_copy,
                     notebook_config, notebook_parameters, read_run, refuse_other_settings, reusable_run, smoke_mode)

TRAIN_NOTEBOOK = NOTEBOOKS_DIR / "03_train.ipynb"
# 03's parameters that a sweep sets itself, per run (_run_one sets exactly these).
PER_RUN_PARAMETERS = ("lr", "seed", "out_dir", "device", "overwrite", "resume", "progress", "figures_dir",
                      "use_shipped")
# 03's parameters that feed its config (the rest are about where and how it runs).
CONFIG_PARAMETERS = ("preset", "epochs", "batch_size", "seed", "data_root", "train_limit", "validation_limit",
                     "test_limit")
TABLE_NAME = "comparison.csv"
SUMMARY_NAME = "comparison_summary.csv"
DIVERGED_NAME = "diverged.json"  # in a run's folder: the error and settings of a run that diverged
FAILED = "failed"  # how a failed run's status starts in the table
REUSED = "reused"  # how a reused run's status starts: "reused: trained <date>", the date its metrics.json gives


@dataclass
class SweepRun:
    """One run of a sweep: one learning rate with one seed."""

    learning_rate: float
    seed: int  # 03's seed: it seeds the train/validation split, initialisation, shuffling and augmentation
    device: Optional[str]  # the device it ran on (None: the best available)
    run_dir: Path  # its folder: executed notebook and run files
    # The executed 03_train.ipynb (or the .failed copy); None: trained elsewhere, or its kernel died first.
    notebook: Optional[Path]
    record: Optional[RunRecord]  # metrics and history; None when the run failed
    error: Optional[str] = None  # why it failed

    @property
    def reused(self) -> bool:
        return self.record is not None and self.record.reused


def run_dir_name(learning_rate: float) -> str:
    """``lr_0.01``, ``lr_0.0005``: ``:g`` keeps the folder name short and unambiguous."""
    return f"lr_{learning_rate:g}"


def seed_dir_name(seed: int) -> str:
    return f"seed_{seed}"


def run_path(out_dir: str | os.PathLike, learning_rate: float, seed: int) -> Path:
    """The folder of one run of a sweep: ``<out_dir>/lr_<rate>/seed_<seed>``."""
    return Path(out_dir) / run_dir_name(learning_rate) / seed_dir_name(seed)


def run_lr_sweep(learning_rates: Sequence[float], base_parameters: Mapping[str, Any], out_dir: str | os.PathLike,
                 *, seeds: Sequence[int] = (0,), devices: Optional[Sequence[Optional[str]]] = None,
                 notebook: str | os.PathLike = TRAIN_NOTEBOOK, overwrite: bool = False, resume: bool = False,
                 log: Callable[[str], None] = print) -> list[SweepRun]:
    """Execute ``notebook`` (03) once per learning rate and seed with ``base_parameters``; return the runs
    in order: each seed of the first rate, then each seed of the next, and so on.

    ``seeds`` are 03's ``seed`` values every learning rate runs with, so each rate sees the same splits
    and initialisations; ``base_parameters`` must therefore leave ``seed`` out. ``devices`` lists where
    runs go, round-robin (``["cuda:0", "cuda:1"]``); each device runs its share one after another, and
    different devices run at the same time. None means every visible GPU when there are several
    (:func:`parallel_devices`), else the best available device, one run after another. ``overwrite``
    retrains runs that exist; ``resume`` continues interrupted ones. The table (:func:`sweep_table`) is
    also written to ``<out_dir>/comparison.csv``, its summary per learning rate
    (:func:`summarize_by_learning_rate`) to ``<out_dir>/comparison_summary.csv``.
    """
    learning_rates = _check_learning_rates(learning_rates)
    seeds = _check_seeds(seeds)
    notebook, out_dir = Path(notebook), Path(out_dir)
    defaults = _check_parameters(notebook, base_parameters)
    if overwrite and resume:
        raise ConfigError("overwrite=True and resume=True contradict each other: choose one")
    devices = _check_devices(devices) if devices else parallel_devices()
    base_parameters = dict(base_parameters)
    if isinstance(base_parameters.get("data_root"), (str, os.PathLike)):  # the runs' kernels start elsewhere
        base_parameters["data_root"] = os.fspath(Path(base_parameters["data_root"]).expanduser().resolve())
    config_values = {k: v for k, v in {**defaults, **base_parameters}.items() if k in CONFIG_PARAMETERS}
    config_values.pop("seed", None)  # the notebook's default; each run sets its own
    preset = config_values.pop("preset")
    # Settle every folder before training anything, so a clash is found in seconds, not hours.
    planned = []
    for index, (lr, seed) in enumerate((lr, seed) for lr in learning_rates for seed in seeds):
        _check_layout(out_dir / run_dir_name(lr))
        config = notebook_config(preset, smoke=smoke_mode(), lr=lr, seed=seed, **config_values)
        run_dir = run_path(out_dir, lr, seed)
        unfinished = (run_dir / CHECKPOINT_NAME).is_file() and not (run_dir / METRICS_NAME).is_file()
        continue_run = resume and unfinished
        diverged = None if continue_run or overwrite else _earlier_divergence(config, run_dir)
        earlier = None if continue_run or diverged else reusable_run(config, run_dir, overwrite)
        planned.append(_Planned(lr, seed, devices[index % len(devices)], run_dir, config, earlier, diverged,
                                {"overwrite": overwrite, "resume": continue_run}))

    def run_share(device: Optional[str]) -> dict[tuple[float, int], SweepRun]:
        """Run this device's share of the plan, one after another."""
        done = {}
        for plan in (p for p in planned if p.device == device):
            lr, seed, run_dir = plan.learning_rate, plan.seed, plan.run_dir
            executed = run_dir / notebook.name
            if plan.earlier is not None:
                has_notebook = executed.is_file()  # not where the run was trained outside the sweep
                where = "" if has_notebook else f"; no {notebook.name}: it was trained outside the sweep"
                log(f"lr {lr:g} seed {seed}: reusing the finished run in {run_dir} (same settings; overwrite=True "
                    f"trains again{where})")
                done[lr, seed] = SweepRun(lr, seed, device, run_dir, executed if has_notebook else None, plan.earlier)
            elif plan.diverged is not None:
                error = f"{plan.diverged} (in an earlier sweep with the same settings; overwrite=True trains it again)"
                log(f"lr {lr:g} seed {seed}: FAILED: {error}")
                kept = failed_copy(executed)
                done[lr, seed] = SweepRun(lr, seed, device, run_dir, kept if kept.is_file() else None, None, error)
            else:
                done[lr, seed] = _run_one(notebook, plan, base_parameters, log)
        return done

    # One thread per device is enough: each run executes in its own kernel process.
    used = list(dict.fromkeys(plan.device for plan in planned))
    with ThreadPoolExecutor(max_workers=len(used)) as pool:
        finished = {key: run for share in pool.map(run_share, used) for key, run in share.items()}
    runs = [finished[plan.learning_rate, plan.seed] for plan in planned]
    rows = sweep_table(runs)
    io.save_csv(rows, out_dir / TABLE_NAME)
    io.save_csv(summarize_by_learning_rate(rows), out_dir / SUMMARY_NAME)
    if all(run.record is None for run in runs):
        raise CifarUtilsError(f"every run of the sweep failed; the first: {runs[0].error}")
    return runs


@dataclass
class _Planned:
    """One run of a sweep as planned before anything trains."""

    learning_rate: float
    seed: int
    device: Optional[str]
    run_dir: Path
    config: Config  # what 03 will train
    earlier: Optional[RunRecord]  # a finished run with these settings, reused
    diverged: Optional[str]  # why an earlier sweep's run with these settings diverged; reported, not retrained
    existing: dict[str, bool]  # 03's overwrite and resume flags for what run_dir holds


def _earlier_divergence(config: Config, run_dir: Path) -> Optional[str]:
    """The error of a run in ``run_dir`` that diverged in an earlier sweep (:data:`DIVERGED_NAME`) with
    ``config``'s settings, None where there is none; with other settings, :class:`OutputExistsError`, as for
    a finished run. A diverged run keeps its last good checkpoint, so without this it would look interrupted."""
    marker = run_dir / DIVERGED_NAME
    if (run_dir / METRICS_NAME).is_file() or not marker.is_file():
        return None
    try:
        earlier = json.loads(marker.read_text())
        error, saved = earlier["error"], earlier["config"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise DataError(f"{marker} is damaged ({err}); delete it, or pass overwrite=True") from None
    refuse_other_settings(run_dir, "a run that diverged", config_differences(saved, config))
    return error


def parallel_devices() -> list[Optional[str]]:
    """Every visible GPU (``cuda:0``, ``cuda:1``, ...) when there are several; else ``[None]``, the best device."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [f"cuda:{i}" for i in range(count)] if count > 1 else [None]


def _run_one(notebook: Path, plan: _Planned, base_parameters: Mapping[str, Any],
             log: Callable[[str], None]) -> SweepRun:
    """Execute one (learning rate, seed) run's notebook into its folder and read its results back; a run that
    diverged leaves :data:`DIVERGED_NAME` with its settings, so that the next sweep reports it again."""
    lr, seed, device, run_dir = plan.learning_rate, plan.seed, plan.device, plan.run_dir
    # Each run's curves go into its own folder, not over the report's figures/training_curves.png; every run
    # trains or reuses its own folder (the committed run is 03's, trained elsewhere, not one of a sweep's).
    parameters = {**base_parameters, **plan.existing, "lr": lr, "seed": seed, "out_dir": str(run_dir.resolve()),
                  "device": device, "progress": False, "figures_dir": str(run_dir.resolve()), "use_shipped": False}
    executed = run_dir / notebook.name
    name = f"lr {lr:g} seed {seed}"
    log(f"{name}: executing {notebook.name} into {executed}{f' on {device}' if device else ''} ...")
    try:
        execute_notebook(notebook, executed, parameters)
    except NotebookFailed as err:
        log(f"{name}: FAILED: {err}")
        if err.ename == TrainingDivergedError.__name__:
            io.save_json({"error": str(err), "config": plan.config.to_dict()}, run_dir / DIVERGED_NAME)
        return SweepRun(lr, seed, device, run_dir, err.executed, None, str(err))
    (run_dir / DIVERGED_NAME).unlink(missing_ok=True)  # an earlier attempt's: this one finished
    record = read_run(run_dir)
    log(f"{name}: validation accuracy {record.metrics['validation_accuracy']:.2%}, test accuracy "
        f"{record.metrics['test_accuracy']:.2%} (both of the {_evaluated(record.metrics)} weights)")
    return SweepRun(lr, seed, device, run_dir, executed, record)


def _check_devices(devices: Sequence[Optional[str]]) -> list[Optional[str]]:
    """A list of device names, each one :func:`~cifar_utils.device.get_device` accepts here, checked before any
    run starts; a single string (papermill's ``-p`` passes one) is refused, not split."""
    if isinstance(devices, (str, bytes)) or not isinstance(devices, Sequence):
        raise ConfigError(f"devices={devices!r} must be a list such as ['cuda:0', 'cuda:1'] "
                          "(with papermill: -y 'devices: [\"cuda:0\", \"cuda:1\"]')")
    for device in devices:
        try:
            get_device(device) if device is not None else None
        except (ConfigError, TypeError) as err:
            raise ConfigError(f"devices: {err}") from None
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


def _check_seeds(seeds: Sequence[int]) -> list[int]:
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or not seeds:
        raise ConfigError(f"seeds={seeds!r} must be a non-empty list of whole numbers, e.g. [0, 1, 2]")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"seed {seed!r} in seeds is invalid: each must be a whole number >= 0")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds={list(seeds)} repeats a seed; each run needs its own")
    return list(seeds)


def _check_layout(lr_dir: Path) -> None:
    """Refuse a folder of the earlier one-seed layout (a run right in ``lr_<rate>/``): its files would
    lie beside the new ``seed_<seed>/`` runs and never be reused."""
    if (lr_dir / METRICS_NAME).is_file() or (lr_dir / CHECKPOINT_NAME).is_file():
        raise OutputExistsError(f"{lr_dir} holds a run of the earlier one-seed layout; each run now has its own "
                                f"folder {lr_dir / 'seed_<seed>'}. Move that run's files into the folder of its seed "
                                "(see its metrics.json) to reuse it, delete them, or choose another out_dir")


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
    if "seed" in base_parameters:
        raise ConfigError(f"seed={base_parameters['seed']!r} in base_parameters: the sweep sets the seed of each run; "
                          "leave it out and pass the seeds to run_lr_sweep, e.g. seeds=[0, 1, 2]")
    unknown = sorted(set(base_parameters) - set(known))
    if unknown:
        raise ConfigError(f"unknown parameter(s) for {notebook.name}: {', '.join(unknown)}. "
                          f"Valid: {', '.join(known)}")
    fixed = sorted(set(base_parameters) & set(PER_RUN_PARAMETERS))
    if fixed:
        raise ConfigError(f"{', '.join(fixed)} are set by the sweep for each run; leave them out of base_parameters")
    return known


def sweep_table(runs: Sequence[SweepRun]) -> list[dict]:
    """One row per run, in the runs' order. Keys:

    - ``learning_rate``, ``seed``; ``status``: ``ok`` (trained now), ``reused: trained <date>`` or
      ``failed: <why>``; ``epochs`` trained;
    - ``evaluated``: which weights the run tested: ``best epoch`` (the config's ``keep_best``: the epoch
      with the highest validation accuracy) or ``last epoch``;
    - ``val_acc``, ``test_acc``: validation and test accuracy of those same weights (``metrics.json``'s
      ``validation_accuracy`` and ``test_accuracy``). The rule: the test accuracy shown is always that of
      the weights whose validation accuracy is compared, so choosing on ``val_acc`` and reporting
      ``test_acc`` describe one model;
    - ``curve_best_val_acc``: the highest validation accuracy of the training curve (``history.csv``), a
      statistic of the curve only: without ``keep_best`` it belongs to other weights than ``test_acc``;
    - ``train_seconds``: training time (epochs only).

    Accuracies are in [0, 1]; a failed run has NaN numbers, 0 epochs and an empty ``evaluated``.
    """
    rows = []
    for run in runs:
        row = {"learning_rate": run.learning_rate, "seed": run.seed}
        if run.record is None:
            rows.append({**row, "status": f"{FAILED}: {run.error}", "epochs": 0, "evaluated": "",
                         "val_acc": math.nan, "test_acc": math.nan, "curve_best_val_acc": math.nan,
                         "train_seconds": math.nan})
            continue
        metrics, history = run.record.metrics, run.record.history
        rows.append({
            **row,
            "status": _reused_status(metrics) if run.reused else "ok",
            "epochs": len(history),
            "evaluated": _evaluated(metrics),
            "val_acc": metrics["validation_accuracy"],
            "test_acc": metrics["test_accuracy"],
            "curve_best_val_acc": max((epoch["val_acc"] for epoch in history), default=math.nan),
            "train_seconds": metrics["train_seconds"],
        })
    return rows


def _reused_status(metrics: Mapping[str, Any]) -> str:
    """``reused: trained 2026-12-07``: when the reused run was trained, so a table of reused runs still says
    that they are real runs and from when."""
    date = metrics.get("date")
    return f"{REUSED}: trained {str(date)[:10]}" if date else f"{REUSED}: trained on an unrecorded date"


def _evaluated(metrics: Mapping[str, Any]) -> str:
    """Which weights a run's ``metrics.json`` scores: with ``keep_best`` the run evaluates its
    best-validation checkpoint (:func:`cifar_utils.experiment.train`), else its last epoch's weights."""
    return "best epoch" if metrics.get("config", {}).get("keep_best") else "last epoch"


def summarize_by_learning_rate(rows: Sequence[Mapping[str, Any]]) -> list[dict]:
    """One row per learning rate of :func:`sweep_table` rows, in the order the rates first appear. Keys:
    ``learning_rate``; ``runs``: finished runs averaged; ``failed``: failed runs, left out of the numbers;
    ``val_acc_mean``, ``val_acc_std``, ``test_acc_mean``, ``test_acc_std``: over the finished runs' seeds
    (std: sample standard deviation, ddof=1; NaN with fewer than two runs); ``train_seconds_mean``.
    Every number is NaN for a rate whose runs all failed."""
    groups: dict[float, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(float(row["learning_rate"]), []).append(row)
    summary = []
    for lr, group in groups.items():
        finished = [row for row in group if not str(row["status"]).startswith(FAILED)]
        entry: dict[str, Any] = {"learning_rate": lr, "runs": len(finished), "failed": len(group) - len(finished)}
        for key in ("val_acc", "test_acc"):
            values = [float(row[key]) for row in finished]
            entry[f"{key}_mean"] = statistics.fmean(values) if values else math.nan
            entry[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else math.nan
        seconds = [float(row["train_seconds"]) for row in finished]
        entry["train_seconds_mean"] = statistics.fmean(seconds) if seconds else math.nan
        summary.append(entry)
    return summary


def readable(rows: Sequence[Mapping[str, Any]]) -> list[dict]:
    """:func:`sweep_table` or :func:`summarize_by_learning_rate` rows for display: accuracies (and their
    standard deviations) in percent, seconds to a tenth, "n/a" where a number is missing (one seed: no std)."""
    def cell(key: str, value: Any) -> Any:
        if not isinstance(value, float) or key == "learning_rate":
            return value
        if math.isnan(value):
            return "n/a"
        return f"{value:.2%}" if "_acc" in key else f"{value:.1f}" if key.startswith("train_seconds") else value

    return [{key: cell(key, value) for key, value in row.items()} for row in rows]


def chosen_learning_rate(summary: Sequence[Mapping[str, Any]]) -> float:
    """The learning rate with the highest mean validation accuracy in a :func:`summarize_by_learning_rate`
    summary (the first of equals), among the rates none of whose runs failed when there are any: a rate
    that diverged on some seeds is not chosen for the seeds it survived. Test accuracy plays no part in
    the choice: it is only reported."""
    candidates = [row for row in summary if not math.isnan(row["val_acc_mean"])]
    if not candidates:
        raise CifarUtilsError("no learning rate has a finished run to choose from: every run failed "
                              "(the table's status column says why)")
    reliable = [row for row in candidates if not row["failed"]]
    return max(reliable or candidates, key=lambda row: row["val_acc_mean"])["learning_rate"]


def passed_over(summary: Sequence[Mapping[str, Any]], chosen: float) -> list[Mapping[str, Any]]:
    """The rows of rates that reached a higher mean validation accuracy than ``chosen`` on the seeds that
    finished, but that :func:`chosen_learning_rate` left out because runs of theirs failed."""
    best = next(row for row in summary if row["learning_rate"] == chosen)
    return [row for row in summary if row["failed"] and not math.isnan(row["val_acc_mean"])
            and row["val_acc_mean"] > best["val_acc_mean"]]


def sweep_histories(runs: Sequence[SweepRun]) -> dict[str, list[list[dict]]]:
    """``{"lr=0.01": [history of each finished seed], ...}`` for :func:`cifar_utils.plots.plot_runs`;
    a rate whose runs all failed is left out."""
    histories: dict[str, list[list[dict]]] = {}
    for run in runs:
        if run.record is not None:
            histories.setdefault(f"lr={run.learning_rate:g}", []).append(run.record.history)
    return histories
