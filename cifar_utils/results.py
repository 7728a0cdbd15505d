"""The results table: generated from what was measured, never typed (issue 14).

Usage::

    from cifar_utils.results import collect_results, markdown_table, update_readme
    print(markdown_table(collect_results()))      # or: python -m cifar_utils results
    # The README's tables: the committed runs (checkpoints/) and benchmark files, not your own runs/:
    #   python -m cifar_utils results --runs checkpoints --readme README.md

Two kinds of record are read:

- run folders: every folder under ``runs_root`` that holds a ``metrics.json`` (written by ``train``; its
  ``config`` says how the run was trained, or a ``config.json`` beside it);
- benchmark files: every ``*.json`` in ``results_dir`` and each per-run record in it that names a preset.
  ``runs`` lists (benchmarks/cpu.py, gpu_run.py and preset_epoch.py; a record's preset is its ``preset``,
  else the file's ``preset_config``) and the ``results`` tree of benchmarks/speed.py (a ``runs`` list with
  the preset and its overrides in the sibling ``settings``). Dry runs are left out.

Runs of one preset with the same settings (seed apart), device, precision and data copy share one row:
mean ± std over them. Run folders share rows with each other; a benchmark file's runs only with runs of the
same file, which is one invocation of one version of the code (files of different days may not be). Every
preset without a run gets a row saying "not run yet".
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

from .checkpoint import METRICS_NAME
from .config import LOCATION_FIELDS, NOT_RESULT_FIELDS, VALIDATION_FRACTION, Config, field_names, with_defaults
from .data import data_copy_kind
from .device import recorded_device
from .errors import ConfigError, DataError
from .io import atomic_write
from .presets import PRESETS, from_preset

NOT_RUN = "not run yet"
NOT_RECORDED = "not recorded"
NO_VALIDATION = "none held out"  # validation_split=0: the run had no validation split to measure
# Recorded values that do not change what a run measures, or that say where rather than how it ran.
IGNORED_SETTINGS = ("preset", "seed", "skip_bad_files", *LOCATION_FIELDS, *NOT_RESULT_FIELDS)
# Runs on part of the data: they test the code, not the method.
PARTIAL = re.compile(r"\b(train|validation|test|eval)_limit=")
# gpu_run.py phases whose runs choose settings (grid points) or time the code, rather than report results.
SETTING_PHASES = ("tune", "profile", "malloc", "block_mix")  # files that measure the code or choose settings
COLUMNS = ("preset", "reported by its report", "settings", "runs", "validation accuracy", "test accuracy",
           "parameters", "epochs", "training time", "device", "data", "source")


@dataclass(frozen=True)
class Measurement:
    """One training run, as a run folder or a benchmark file recorded it."""

    preset: str
    settings: str  # what the run changed from its preset, e.g. "epochs=3, pipeline=gpu"; "" for the preset as is
    model: str  # architecture name, for the parameter count
    model_options: tuple  # (name, value) of the architecture options the run set away from their defaults
    epochs: Optional[float]  # epochs trained
    full_epochs: int  # the recipe's epochs (the preset's, or a capped run's full count)
    capped: bool  # stopped short of full_epochs by a time cap
    validation_accuracy: Optional[float]  # fraction in [0, 1]
    test_accuracy: Optional[float]  # fraction in [0, 1]
    held_out_validation: bool  # False for validation_split=0: the run had no validation split to measure
    train_seconds: Optional[float]
    device: str  # device name and precision, e.g. "NVIDIA H100 80GB HBM3, bf16"
    data: str  # which copy of the data: "JPEG copy", "official CIFAR-10", ...
    timing_note: str  # what else shaped the time, e.g. "GPU shared by 5 runs"; "" for nothing
    source: str  # the file it was read from
    batch: str  # runs of the same batch may share a row: "" for run folders, the file for benchmark records


# ------------------------------------------------------------------------------------------ reading


def collect_results(runs_root: str | os.PathLike | Sequence[str | os.PathLike] = "runs",
                    results_dir: str | os.PathLike = "benchmarks/results",
                    *, everything: bool = False) -> list[dict]:
    """The results table: one row (a dict over :data:`COLUMNS`, all values strings) per preset, settings,
    device and data copy, then one "not run yet" row per preset without a run.

    Results only, unless ``everything``: runs on part of the data (a ``*_limit`` setting: smoke and quick
    runs, one-epoch probes) and the grid points of tuning and profiling files are left out, since they
    measure the code or choose settings rather than report a result. A folder that does not exist holds
    no runs (``runs/`` is usually absent in a fresh clone).
    """
    folders, files = read_run_folders(runs_root), read_benchmark_files(results_dir, everything=everything)
    if not everything:
        folders = [m for m in folders if not PARTIAL.search(m.settings)]
        files = [m for m in files if not PARTIAL.search(m.settings)]
    groups: dict[tuple, list[Measurement]] = {}
    for m in folders + files:
        groups.setdefault((m.preset, m.settings, m.model, m.device, m.data, m.timing_note, m.batch), []).append(m)
    order = {name: i for i, name in enumerate(PRESETS)}
    keys = sorted(groups, key=lambda k: (order.get(k[0], len(order)), k[0], groups[k][0].source, k[1], k[3]))
    rows = [_row(groups[key]) for key in keys]
    measured = {m.preset for m in folders + files}
    return rows + [_not_run_row(name) for name in PRESETS if name not in measured]


def read_run_folders(runs_root: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Measurement]:
    """One measurement per ``metrics.json`` under ``runs_root`` (one folder or several, searched recursively).
    A result found twice counts once: through two paths to one file, as a copy (the shipped run in
    checkpoints/ beside the run it was copied from), or as a run that another reproduced exactly (same
    config, seed included, and the same accuracies), which measures nothing new."""
    roots = [runs_root] if isinstance(runs_root, (str, os.PathLike)) else list(runs_root)
    paths = {path.resolve(): path for root in map(Path, roots) if root.is_dir() for path in root.rglob(METRICS_NAME)}
    unique: dict[str, tuple[Path, Any]] = {}
    for key in sorted(paths):
        metrics = _load_json(key)
        unique.setdefault(_result_identity(metrics), (paths[key], metrics))
    return [_readable(path, lambda: _from_metrics(path, metrics)) for path, metrics in unique.values()]


def _readable(path: Path, read: Callable[[], Any]) -> Any:
    """``read()`` of one file, with a file whose fields are not what a run or benchmark records (another
    tool's metrics.json, say) reported by name instead of a traceback."""
    try:
        return read()
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        raise DataError(f"{path} does not hold the results this table reads ({type(err).__name__}: {err}); move "
                        "it out of the folders searched or fix it") from None


def _result_identity(metrics: Any) -> str:
    """What makes a run's result: its whole config and its accuracies (all of ``metrics`` without a config)."""
    if not isinstance(metrics, dict) or not metrics.get("config"):
        return json.dumps(metrics, sort_keys=True)
    return json.dumps([metrics["config"], metrics.get("test_accuracy"), metrics.get("validation_accuracy")],
                      sort_keys=True)


def read_benchmark_files(results_dir: str | os.PathLike, *, everything: bool = True) -> list[Measurement]:
    """Every per-run record naming a preset in the ``*.json`` files of ``results_dir`` (without
    ``everything``, none from the phases in :data:`SETTING_PHASES`)."""
    folder = Path(results_dir)
    if not folder.is_dir():
        return []
    return [m for path in sorted(folder.glob("*.json"))
            for m in _readable(path, lambda: _from_benchmark(path, everything))]


def _from_metrics(path: Path, metrics: dict) -> Measurement:
    config = metrics.get("config")
    if config is None and (path.parent / "config.json").is_file():
        config = _load_json(path.parent / "config.json")
    config = with_defaults(config) if config else {}
    preset = metrics.get("preset") or config.get("preset") or "custom"
    return _measurement(preset, metrics, config, device=recorded_device(metrics) or NOT_RECORDED,
                        precision=metrics.get("precision"), data=metrics.get("data"), timing_note="", source=path,
                        batch="")


def _from_benchmark(path: Path, everything: bool = True) -> list[Measurement]:
    record = _load_json(path)
    if not isinstance(record, dict) or record.get("dry_run"):
        return []
    if not everything and record.get("phase") in SETTING_PHASES:
        return []
    settings = record.get("settings") if isinstance(record.get("settings"), dict) else {}
    sharing = settings.get("processes_sharing_the_gpu") or 1
    shared = dict(device=recorded_device(record) or NOT_RECORDED, data=_file_data(record),
                  timing_note=f"GPU shared by {sharing} runs" if sharing > 1 else "", source=path,
                  batch=os.fspath(path))
    found = []
    for run, preset, recorded, precision in _preset_runs(record):
        found.append(_measurement(preset, run, recorded, precision=run.get("precision", precision),
                                  **{**shared, "data": run.get("data") or shared["data"]}))
    return found


def _preset_runs(record: Mapping) -> Iterator[tuple[Mapping, str, dict, Optional[str]]]:
    """(run, preset, what the run recorded of its config, precision) for each run that names a preset."""
    file_preset = (record.get("preset_config") or {}).get("preset")
    for run in record.get("runs") or []:
        preset = run.get("preset") if isinstance(run, dict) else None
        if isinstance(run, dict) and (preset or file_preset):
            # a whole config (the run's, else the file's for runs that name no preset) or only the overrides
            whole = run.get("config") or (None if preset or run.get("overrides") else record.get("preset_config"))
            recorded = with_defaults(whole) if whole else dict(run.get("overrides") or {})
            if run.get("faithful") and not whole and preset in PRESETS:
                # gpu_run.py seeds --faithful records only what it set on top of the faithful variant
                recorded = {**PRESETS[preset].faithful, **recorded}
            yield run, preset or file_preset, recorded, None
    settings = record.get("settings") if isinstance(record.get("settings"), dict) else {}
    recipes = settings.get("presets")
    recipes = recipes if isinstance(recipes, dict) else {}  # gpu_run.py's settings.presets is a list of names
    for group in _speed_groups(record.get("results")):
        settings = group.get("settings") or {}
        preset = settings.get("preset")
        if preset:
            # speed.py records each preset's overrides at the time (fields they lack were at their defaults);
            # the run's overrides go on top of them
            at_the_time = with_defaults(recipes[preset]) if preset in recipes else {}
            recorded = {**at_the_time, **(settings.get("overrides") or {})}
            for run in group["runs"]:
                yield run, preset, recorded, settings.get("precision")


def _speed_groups(node: Any) -> Iterator[Mapping]:
    """The dicts holding a ``runs`` list in benchmarks/speed.py's ``results`` tree (any depth)."""
    if isinstance(node, dict):
        if isinstance(node.get("runs"), list):
            yield node
        else:
            for child in node.values():
                yield from _speed_groups(child)


def _measurement(preset: str, run: Mapping, recorded: Mapping, *, device: str, precision: Optional[str],
                 data: Optional[str], timing_note: str, source: Path, batch: str) -> Measurement:
    for name in ("validation_accuracy", "test_accuracy", "train_seconds", "epochs"):
        value = run.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"its {name} is {value!r}, not a number")
    recipe = _recipe(preset)
    config = {**recipe, **recorded}
    epochs = run.get("epochs", recorded.get("epochs"))  # preset_epoch.py records them only in the config
    return Measurement(
        preset=preset, settings=_settings(recipe, recorded), model=config["model"],
        model_options=_model_options(config),
        epochs=epochs, full_epochs=run.get("full_epochs") or recipe["epochs"], capped=bool(run.get("capped")),
        validation_accuracy=run.get("validation_accuracy"), test_accuracy=run.get("test_accuracy"),
        held_out_validation=config.get("validation_split") != 0, train_seconds=run.get("train_seconds"),
        device=f"{device}, {precision}" if precision else device, data=data_copy(data), timing_note=timing_note,
        source=os.fspath(source), batch=batch)


def _recipe(preset: str) -> dict[str, Any]:
    """Every config field of ``preset`` as it is now (the defaults for a name that is no preset)."""
    return from_preset(preset).to_dict() if preset in PRESETS else Config(preset=preset).to_dict()


def _settings(recipe: Mapping[str, Any], recorded: Mapping[str, Any]) -> str:
    return ", ".join(_changed(recipe, recorded))


def _changed(recipe: Mapping[str, Any], recorded: Mapping[str, Any]) -> list[str]:
    """``name=value`` for each recorded value that differs from the recipe, seed and paths apart, in the
    order of the config's fields (fields it no longer has last)."""
    order = {name: i for i, name in enumerate(field_names())}
    changed = sorted((name for name, value in recorded.items()
                      if name not in IGNORED_SETTINGS and recipe.get(name, _MISSING) != value),
                     key=lambda name: (order.get(name, len(order)), name))
    return [f"{name}={recorded[name]}" for name in changed]


def differences_from_preset(preset: str, saved: Mapping[str, Any]) -> list[str]:
    """``name=value`` for each setting of ``saved`` (a whole config as a run saved it) that differs from
    ``preset`` as it is now, seed and paths apart: how a run of an earlier recipe differs from today's."""
    return _changed(_recipe(preset), with_defaults(saved))


_MISSING = object()  # a recorded field the current Config no longer has (such as eval_limit) always differs


def _file_data(record: Mapping) -> Optional[str]:
    """The data description of a benchmark file: its ``data`` (text or {"description": ...}), else its
    ``data_root``, else the ``--data-root`` of its command."""
    data = record.get("data")
    if isinstance(data, dict):
        data = data.get("description")
    if data:
        return data
    if record.get("data_root"):
        return f"image folder {record['data_root']}"
    found = re.search(r"--data-root[= ](\S+)", record.get("command") or "")
    return f"data root {found.group(1)}" if found else None


def data_copy(description: Optional[str]) -> str:
    """Which copy of CIFAR-10 a data description names, in a few words."""
    if not description:
        return NOT_RECORDED
    return {"jpeg": "JPEG copy", "official": "official CIFAR-10",
            "synthetic": "synthetic"}.get(data_copy_kind(description), description)


def render_results_file(path: str | os.PathLike, render: Callable[[dict], Any]) -> Any:
    """``render`` of one benchmark results file (a script's ``--readme`` or ``--table``), with a missing file,
    one that is not JSON, or one of another benchmark reported in one error naming it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no results file at {path}; name a .json file in benchmarks/results")
    record = _load_json(path)
    if not isinstance(record, dict):
        raise DataError(f"{path} is not a results file (it holds no JSON object)")
    return _readable(path, lambda: render(record))


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"could not read {path} ({err}); fix or remove it, then run again") from None


# ------------------------------------------------------------------------------------------ rows


def _row(runs: Sequence[Measurement]) -> dict[str, Any]:
    first = runs[0]
    preset = PRESETS.get(first.preset)
    epochs = sorted({m.epochs for m in runs if m.epochs is not None})
    timing = _mean_std([m.train_seconds for m in runs], _seconds)
    return {
        "preset": first.preset,
        "reported by its report": preset.reported if preset else "none (not a preset)",
        "settings": first.settings or "as the preset",
        "runs": str(len(runs)),
        "validation accuracy": (_mean_std([m.validation_accuracy for m in runs], _percent)
                                if first.held_out_validation else NO_VALIDATION),
        "test accuracy": _mean_std([m.test_accuracy for m in runs], _percent),
        "parameters": parameter_count(first.model, first.model_options),
        "epochs": _epochs(epochs, first.full_epochs, any(m.capped for m in runs)),
        "training time": f"{timing} ({first.timing_note})" if first.timing_note and timing != NOT_RECORDED else timing,
        "device": first.device,
        "data": first.data,
        "source": ", ".join(sorted({m.source for m in runs})),
    }


def _not_run_row(name: str) -> dict[str, Any]:
    config = from_preset(name)
    return {"preset": name, "reported by its report": PRESETS[name].reported, "settings": "as the preset",
            "runs": "0", "validation accuracy": NOT_RUN, "test accuracy": NOT_RUN,
            "parameters": parameter_count(config.model, _model_options(config.to_dict())),
            "epochs": f"{config.epochs} (the recipe)",
            "training time": NOT_RUN, "device": "", "data": "", "source": ""}


def _epochs(epochs: Sequence[float], full: int, capped: bool) -> str:
    if not epochs:
        return NOT_RECORDED
    trained = f"{epochs[0]:g}" if len(epochs) == 1 else f"{epochs[0]:g}-{epochs[-1]:g}"
    if capped:
        return f"{trained} of {full} (capped)"
    if epochs == [full]:
        return trained
    return f"{trained} of {full} (shortened)" if max(epochs) < full else f"{trained} (the recipe: {full})"


def mean_std(values: Sequence[Optional[float]]) -> dict:
    """Mean and sample standard deviation of the recorded values (None and NaN left out), as the benchmark
    files store them: ``{"mean", "std", "n"}``, with std None for one value and both None for none."""
    known = [v for v in values if v is not None and math.isfinite(v)]
    return {"mean": statistics.fmean(known) if known else None,
            "std": statistics.stdev(known) if len(known) > 1 else None, "n": len(known)}


def plus_minus(stat: Mapping[str, Any], spec: str, unit: str = "") -> str:
    """``mean ± std`` of a :func:`mean_std` dict in the format ``spec`` (the mean alone without a std; "-"
    without a mean); ``unit`` follows the mean, as in ``1.23x ± 0.05``."""
    if stat["mean"] is None:
        return "-"
    return f"{stat['mean']:{spec}}{unit}" + (f" ± {stat['std']:{spec}}" if stat["std"] is not None else "")


def _mean_std(values: Sequence[Optional[float]], fmt) -> str:
    """``mean ± std`` over the values that were recorded (sample std; the mean alone for one value), saying
    over how many when some runs of the row recorded none, since the "runs" column counts them all."""
    stat = mean_std(values)
    if not stat["n"]:
        return NOT_RECORDED
    text = fmt(stat["mean"]) if stat["std"] is None else fmt(stat["mean"], stat["std"])
    return text if stat["n"] == len(values) else f"{text} ({stat['n']} of {len(values)} runs)"


def _percent(mean: float, std: Optional[float] = None) -> str:
    return f"{mean:.2%}" if std is None else f"{mean * 100:.2f} ± {std * 100:.2f}%"


def _seconds(mean: float, std: Optional[float] = None) -> str:
    decimals = 0 if mean >= 100 else 1 if mean >= 10 else 2
    text = f"{mean:,.{decimals}f}"
    return f"{text} s" if std is None else f"{text} ± {std:,.{decimals}f} s"


def _model_options(config: Mapping[str, Any]) -> tuple:
    """:func:`~cifar_utils.models.chosen_model_options` of ``config`` as sorted (name, value) pairs, a cache key."""
    from .models import chosen_model_options

    return tuple(sorted(chosen_model_options(config).items()))


@functools.lru_cache(maxsize=None)
def parameter_count(model: str, options: tuple = ()) -> str:
    """Trainable parameters of architecture ``model`` with the architecture ``options`` ((name, value)
    pairs), built on the meta device (no memory, no data)."""
    import torch

    from .models import ARCHITECTURES, build_model, count_parameters

    if model not in ARCHITECTURES:
        return f"unknown model {model}"
    try:
        config = Config(model=model, **dict(options)).validate()
    except ValueError:
        return f"{model} does not take {dict(options)}"
    with torch.device("meta"):
        return f"{count_parameters(build_model(config)):,}"


# --------------------------------------------------------------------------------- hyperparameters


def hyperparameter_table(preset_name: str) -> list[dict]:
    """One row per setting a preset sets or flags as chosen: setting, value, and where the value comes from
    ("stated by the report", "chosen here: <why>", or "ours (no report)" for our own presets)."""
    config = from_preset(preset_name)  # ConfigError for an unknown name
    preset = PRESETS[preset_name]
    named = set(preset.overrides) | set(preset.chosen)
    rows = []
    for name in field_names():
        if name not in named:
            continue
        if not preset.from_report:
            origin = "ours (no report)"
        elif name in preset.chosen:
            origin = f"chosen here: {preset.chosen[name]}"
        else:
            origin = "stated by the report"
        rows.append({"setting": name, "value": _setting_value(name, getattr(config, name)), "source": origin})
    return rows


def _setting_value(name: str, value: Any) -> str:
    """A setting's value as the hyperparameter table shows it: what None means for the fields where it
    stands for a number."""
    if value is None and name == "validation_split":
        return f"{VALIDATION_FRACTION:.0%} of the training images"
    if value is None and name == "cosine_t_max":
        return "the run's epochs"
    return str(value)


# ------------------------------------------------------------------------------------------ markdown


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A GitHub markdown table of dicts with the same keys (the first row's order); "|" is escaped."""
    if not rows:
        return "(no rows)"
    columns = list(rows[0])

    def cells(values) -> str:
        return "| " + " | ".join(str(v).replace("|", "\\|").replace("\n", " ") for v in values) + " |"

    return "\n".join([cells(columns), "|" + "---|" * len(columns), *(cells(row[c] for c in columns) for row in rows)])


# How the README's tables are made: the committed runs (checkpoints/) and benchmark files, not a user's runs/.
README_COMMAND = "python -m cifar_utils results --runs checkpoints --readme README.md"


def results_markdown(rows: Sequence[Mapping[str, Any]], command: str = README_COMMAND) -> str:
    """The README section: a line saying how it was made (``command``), then the table."""
    return (f"Generated by `{command}` from run folders and benchmarks/results/; do not edit by hand. "
            "Accuracies are mean ± std over the runs of a row.\n\n" + markdown_table(rows))


def replace_sections(path: str | os.PathLike, bodies: Mapping[str, str]) -> Path:
    """Replace the text between ``<!-- MARKER:start -->`` and ``<!-- MARKER:end -->`` in ``path`` with
    ``bodies[MARKER]``, for every marker; the rest of the file is kept byte for byte. Every marker is
    checked before anything is written, and the file is replaced atomically, so it is never half-updated.
    The one place where generated tables enter the README."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read {path} ({err.strerror or err}); pass the README to update") from None
    for marker, body in bodies.items():
        start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
        if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
            raise ConfigError(f"{path} needs exactly one {start} line followed by one {end} line around the "
                              "generated table; add them where the table should go")
        before, rest = text.split(start)
        text = f"{before}{start}\n{body}\n{end}{rest.split(end)[1]}"
    atomic_write(path, lambda tmp: tmp.write_text(text))
    return path


def replace_section(path: str | os.PathLike, marker: str, body: str) -> Path:
    """:func:`replace_sections` for one marker."""
    return replace_sections(path, {marker: body})


def preset_table() -> list[dict]:
    """One row per preset: where it comes from, what it is, what its report measured (quoted), which
    settings we chose where the report is silent, and how to run the report's own recipe where ours differs."""
    return [{"preset": f"`{name}`", "source": preset.source, "what it is": preset.description,
             "reported by the source": preset.reported,
             "chosen here, not stated by the report (reasons: `Preset.chosen`)": ", ".join(preset.chosen) or "-",
             "faithful variant (`--faithful`)": ", ".join(f"{k}={v}" for k, v in preset.faithful.items()) or "-"}
            for name, preset in PRESETS.items()]


def update_readme(path: str | os.PathLike, *,
                  rows: Optional[Sequence[Mapping[str, Any]]] = None,
                  command: str = README_COMMAND) -> Path:
    """Write the results table (``rows``, by default :func:`collect_results` with its default folders)
    between the ``results`` marker lines of ``path``, and the preset table between its ``presets`` lines;
    ``command`` is the command line quoted as their source."""
    return replace_sections(path, {
        "results": results_markdown(collect_results() if rows is None else rows, command),
        "presets": f"Generated from `cifar_utils/presets.py` by `{command}`.\n\n" + markdown_table(preset_table())})
