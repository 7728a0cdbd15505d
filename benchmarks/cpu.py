"""The CPU preset's benchmark (issue 10): accuracy and wall time over seeds, training throughput against
the reference presets, and the achieved GFLOP/s against this machine's matrix-multiply peak.

Usage::

    python benchmarks/cpu.py --data-root data/cifar10-jpeg              # the whole benchmark (2 cores: ~25 min bf16, ~50 fp32)
    python benchmarks/cpu.py --data-root ... --seeds 0 --throughput-images 256   # a quick check
    python benchmarks/cpu.py --readme benchmarks/results/cpu-preset-<date>.json [VARIANT.json ...]  # README table, figure
    python benchmarks/cpu.py --data-root ... --set head_pool=max --out FILE     # a variant of the preset

What it measures, in one process on one machine:

- ``runs``: ``python -m cifar_utils train --preset cpu --seed S`` once per seed, as a user runs it. The wall
  time counts everything from starting the command to its exit (Python start-up, reading the decode
  cache, the whitening fit, training, the final test-time-augmented evaluation of the validation and
  test sets). The decode cache is built before the first run, so every run reads it.
- ``throughput``: images per second of one training epoch (forward, backward, optimizer step) on
  ``--throughput-images`` seeded training images, after a short warm-up, for ``cpu`` and for ``seed002`` and
  ``seed003`` on their own (torchvision) pipeline.
- ``flops``: the CPU preset's floating-point operations per training image (counted by
  ``torch.utils.flop_counter``: convolutions and matrix products, forward and backward), times its
  throughput, against the fastest large fp32 matrix product and 3x3 convolution on this machine, and bf16's
  where the CPU has bf16 arithmetic (torch's CPU matrix product does not use the bf16 instructions that its
  convolutions use; without them bf16 is emulated, far below fp32, so it is not measured).

``--set FIELD=VALUE`` (repeatable) changes the preset's settings in every timed run, as ``train --set``
does; ``--runs-dir`` keeps the runs' folders (``seed<S>``) instead of deleting them.

Results go to ``benchmarks/results/cpu-preset-<date>.json`` (an existing file is kept unless
``--overwrite``), rewritten after every run so that a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import torch

from cifar_utils import io
from cifar_utils.checkpoint import METRICS_NAME
from cifar_utils.cli import parse_settings, positive
from cifar_utils.data import load_dataset, resolve_root
from cifar_utils.device import (autocast, cpu_has_native_bf16, cpu_model, describe_device, get_device,
                                 keep_freed_cpu_memory, resolve_precision)
from cifar_utils.engine import train_epoch
from cifar_utils.errors import run_script
from cifar_utils.experiment import build_network, build_training_parts, load_splits, make_loaders
from cifar_utils.results import differences_from_preset, mean_std, plus_minus, render_results_file, replace_section
from cifar_utils.models import build_model, count_parameters
from cifar_utils.presets import from_preset
from cifar_utils.report import data_copy_note, data_label

PRESET = "cpu"
BAR_ACCURACY, BAR_SECONDS = 0.90, 600.0  # issue 10: mean test accuracy >= 90% in <= 10 minutes
THROUGHPUT_PRESETS = ("cpu", "seed002", "seed003")
REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
# Written with the README table from the same files, so the two never disagree.
FIGURE = REPO / "figures" / "cpu_accuracy_time.png"
# Results files before 2026-12-07 named their data only in their note, and all were measured on the JPEG copy.
UNRECORDED_DATA = "image folder data/cifar10-jpeg"


def cpu_results(record: dict) -> dict:
    """A results file's record if this script wrote it; a KeyError naming what another benchmark's lacks
    (which :func:`render_results_file` reports with the file's name)."""
    for key in ("summary", "runs", "throughput", "cpu_model", "device", "preset_config"):
        record[key]
    return record


def data_fields(description: str) -> dict:
    """A results file's record of its data: the loader's description and a note naming the copy."""
    return {"data": description, "note": f"measured on {data_copy_note(description)}"}


def recorded_data(result: dict) -> str:
    """The data description a results file records (:data:`UNRECORDED_DATA` for the older files)."""
    return result.get("data") or UNRECORDED_DATA


def run_seed(seed: int, data_root: str, out_dir: Path, settings: list[str]) -> dict:
    """One ``train --preset cpu`` command as a user runs it (``settings``: its ``--set`` values); its wall
    time and its metrics."""
    command = [sys.executable, "-m", "cifar_utils", "train", "--preset", PRESET, "--seed", str(seed),
               "--data-root", data_root, "--out", str(out_dir), "--no-progress"]
    command += [arg for item in settings for arg in ("--set", item)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"error: seed {seed} failed (exit {done.returncode}):\n{done.stdout}{done.stderr}")
    metrics = json.loads((out_dir / METRICS_NAME).read_text())
    return {"seed": seed, "wall_seconds": wall, "test_accuracy": metrics["test_accuracy"],
            "validation_accuracy": metrics["validation_accuracy"], "train_seconds": metrics["train_seconds"],
            "epochs": metrics["epochs"], "split_sizes": metrics["split_sizes"], "precision": metrics["precision"],
            "output": done.stdout.strip().splitlines()}


def train_images_per_second(preset: str, data, data_root: str, images: int, device: torch.device,
                            **overrides) -> dict:
    """Images per second of one training epoch of ``preset`` (with ``overrides``) on ``images`` seeded
    training images, all at full size."""
    # At full size throughout (no progressive resizing): the GFLOP/s compare against a 32 px step's FLOPs.
    config = from_preset(preset, data_root=data_root, train_limit=images, **{**overrides, "progressive_start": 0})
    splits = load_splits(config, data)
    model = build_network(config, splits, device)
    precision = resolve_precision(config.precision, device)
    loader = make_loaders(splits, config, device).train
    parts = build_training_parts(model, config, len(loader), device, precision)
    criterion, optimizer = parts.criterion, parts.optimizer  # images per second only: no schedule needed
    kwargs = dict(precision=precision, channels_last=config.channels_last)
    warm_up = [next(iter(loader))]  # one batch: allocator and kernel selection
    train_epoch(model, warm_up, criterion, optimizer, device, **kwargs)
    started = time.perf_counter()
    train_epoch(model, loader, criterion, optimizer, device, config.accumulation_steps, **kwargs)
    seconds = time.perf_counter() - started
    seen = min(len(loader) * config.batch_size, len(splits.train))  # drop_last leaves out a partial batch
    return {"preset": preset, "pipeline": config.pipeline, "precision": precision, "images": seen,
            "seconds": seconds, "images_per_second": seen / seconds,
            "parameters": count_parameters(model)}


def training_flops_per_image(device: torch.device, batch: int = 64, **overrides) -> float:
    """Floating-point operations of one training step of the CPU preset's network, per image."""
    from torch.utils.flop_counter import FlopCounterMode

    config = from_preset(PRESET, **overrides)
    model = build_model(config).to(device).to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    # Resolved before counting: precision="auto" may time a convolution, whose FLOPs are no part of the step.
    precision = resolve_precision(config.precision, device)
    counter = FlopCounterMode(display=False)
    with counter, autocast(device, precision):
        model(x).float().sum().backward()
    return counter.get_total_flops() / batch


def peak_gflops(dtype: torch.dtype, repeats: int = 5) -> dict[str, float]:
    """The best GFLOP/s of a 2048 x 2048 matrix product and of a 3x3 convolution (256 channels, 16x16,
    batch 256, channels_last) in ``dtype`` on the CPU: the fastest this machine's kernels go."""
    a, b = (torch.randn(2048, 2048).to(dtype) for _ in range(2))
    x = torch.randn(256, 256, 16, 16).to(dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(256, 256, 3, 3).to(dtype).contiguous(memory_format=torch.channels_last)
    cases = {"matmul": (lambda: a @ b, 2 * 2048 ** 3),
             "conv3x3": (lambda: torch.nn.functional.conv2d(x, w, padding=1), 2 * 256 * 16 * 16 * 256 * 256 * 9)}
    peaks = {}
    for name, (op, flops) in cases.items():
        op()  # warm-up
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            op()
            best = min(best, time.perf_counter() - started)
        peaks[name] = flops / best / 1e9
    return peaks


def native_peaks(result: dict) -> dict:
    """The measured peaks of the precisions this CPU computes in hardware: without bf16 arithmetic its bf16
    products are emulated, far below fp32, and no limit for a run."""
    peaks = result["flops"]["peak_gflops"]
    return {k: v for k, v in peaks.items() if k != "bf16" or result.get("cpu_native_bf16", True)}


def summarize(result: dict) -> dict:
    runs = result["runs"]
    summary = {}
    if runs:
        accuracy = mean_std([r["test_accuracy"] for r in runs])
        wall = mean_std([r["wall_seconds"] for r in runs])
        summary = {"test_accuracy": accuracy, "validation_accuracy": mean_std([r["validation_accuracy"] for r in runs]),
                   "wall_seconds": wall,
                   "bar": {"accuracy": BAR_ACCURACY, "seconds": BAR_SECONDS, "seeds_needed": 3,
                           "met": accuracy["mean"] >= BAR_ACCURACY and wall["mean"] <= BAR_SECONDS
                           and max(r["wall_seconds"] for r in runs) <= BAR_SECONDS and len(runs) >= 3}}
    speeds = {t["preset"]: t["images_per_second"] for t in result["throughput"]}
    if PRESET in speeds:
        summary["speedup_over"] = {p: speeds[PRESET] / s for p, s in speeds.items() if p != PRESET}
        if result.get("flops"):
            achieved = result["flops"]["training_flops_per_image"] * speeds[PRESET] / 1e9
            summary["achieved_gflops"] = achieved
            summary["fraction_of_peak"] = {k: achieved / max(v.values()) for k, v in native_peaks(result).items()}
    return summary


def _settings(result: dict) -> str:
    """How a file's runs differ from the preset as it is now: from the whole config it recorded (a file
    from before a change of the preset differs without any --set), else from its --set values."""
    changed = (differences_from_preset(PRESET, result["preset_config"]) if result.get("preset_config")
               else result["overrides"])
    return ", ".join(f"`{o}`" for o in changed) or "as the preset"


def run_precision(result: dict) -> str:
    """The precision a file's runs trained in ("auto" resolves to bf16 only where the CPU runs it fast)."""
    return result["runs"][0]["precision"] if result["runs"] else "no runs"


def same_machine(results: list[dict]) -> list[dict]:
    """The files with runs measured on the first file's CPU and threads, in its precision: wall times compare
    only between those. The model name alone is not enough: two machines named "AMD EPYC" here differed in
    bf16 arithmetic, and so in precision and speed."""
    def machine(r: dict) -> tuple:
        return r["cpu_model"], r["device"], run_precision(r)
    return [r for r in results if machine(r) == machine(results[0]) and r["summary"].get("test_accuracy")]


def plot_accuracy_time(results: list[dict], save_to: Optional[Path] = None):
    """Mean test accuracy (%) against mean wall time per run (minutes), error bars one standard deviation
    over the seeds, a point per file of :func:`same_machine` labelled with its epochs (the table says how
    else each differs); issue 10's bar is the shaded corner above 90% and left of 10 minutes."""
    from matplotlib.figure import Figure

    shown = same_machine(results)
    fig = Figure(figsize=(6.4, 4.2), dpi=90)
    ax = fig.subplots()
    for r in shown:
        acc, wall = r["summary"]["test_accuracy"], r["summary"]["wall_seconds"]
        x, y = wall["mean"] / 60, 100 * acc["mean"]
        ax.errorbar(x, y, xerr=(wall["std"] or 0) / 60, yerr=100 * (acc["std"] or 0), fmt="o", color="tab:blue",
                    capsize=4)
        label = f"{r['runs'][0]['epochs']} epochs" + (" (the preset)" if _settings(r) == "as the preset" else "")
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(7, -13), fontsize=8)
    top = max(100 * BAR_ACCURACY, *(100 * r["summary"]["test_accuracy"]["mean"] for r in shown)) + 1
    ax.fill_between([0, BAR_SECONDS / 60], 100 * BAR_ACCURACY, top, color="tab:red", alpha=0.1,
                    label=f"issue 10's bar: at least {BAR_ACCURACY:.0%} in at most {BAR_SECONDS / 60:.0f} minutes")
    right = max(BAR_SECONDS, *(r["summary"]["wall_seconds"]["mean"] for r in shown)) / 60 * 1.25
    ax.set_xlim(0, right)
    ax.set_ylim(top=top)
    ax.set(xlabel="wall time per run, command start to exit (minutes)", ylabel="test accuracy (%), mean ± std",
           title=f"cpu preset on {results[0]['cpu_model']}, {results[0]['device']}, {run_precision(results[0])}: "
                 f"{data_label(recorded_data(results[0]))}")
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    if save_to is not None:
        io.save_figure(fig, save_to)
    return fig


def render_table(results: list[dict]) -> str:
    """The README's markdown for one or more results files: a row per file (the preset first, then
    variants), then the first file's throughput and FLOP figures."""
    lines = [f"- `{r['file']}`: measured {r['date']} on {r['cpu_model']} ({r['device']}), torch {r['torch_version']}, "
             f"command `{r['command']}`." for r in results]
    copies = sorted({data_copy_note(recorded_data(r)) for r in results})
    lines += ["", f"All on {copies[0]}." if len(copies) == 1 else f"On {'; '.join(copies)} (each file says which).", ""]
    with_runs = [r for r in results if r["summary"].get("test_accuracy")]
    if with_runs:
        lines += ["| `cpu` preset, settings | epochs | seeds | test accuracy | validation accuracy "
                  "| wall time, command start to exit | measured on | issue 10's bar met |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in with_runs:
            s = r["summary"]
            acc, val, wall = s["test_accuracy"], s["validation_accuracy"], s["wall_seconds"]
            lines.append(f"| {_settings(r)} | {r['runs'][0]['epochs']} | {acc['n']} | {plus_minus(acc, '.2%')} "
                         f"| {plus_minus(val, '.2%')} | {plus_minus(wall, '.0f')} s "
                         f"| {r['cpu_model']}, {run_precision(r)}, {r['date']} "
                         f"| {'yes' if s['bar']['met'] else 'no'} |")
        lines += ["", f"Training on {with_runs[0]['runs'][0]['split_sizes']['train']:,} images. The bar: a mean of at "
                      f"least {BAR_ACCURACY:.0%} test accuracy in at most {BAR_SECONDS:.0f} s, every run within that "
                      "time, 3 seeds or more.", ""]
        shown = same_machine(results)
        if shown:
            others = (" (the others ran on another CPU, thread count or precision, so their wall times do not compare)"
                      if len(shown) < len(with_runs) else "")
            lines += [f"The rows measured on {results[0]['cpu_model']}, {results[0]['device']}, "
                      f"{run_precision(results[0])}, as a figure{others}:", "",
                      f"![cpu preset: test accuracy against wall time]({FIGURE.relative_to(REPO).as_posix()})", ""]
    first = results[0]
    s = first["summary"]
    if first["throughput"]:
        lines += [f"Throughput, from `{first['file']}` ({_settings(first)}):", "",
                  "| preset | pipeline | precision | training images/s | `cpu` is faster by |", "| --- | --- | --- | --- | --- |"]
        for t in first["throughput"]:
            ratio = s.get("speedup_over", {}).get(t["preset"])
            lines.append(f"| `{t['preset']}` | {t['pipeline']} | {t['precision']} | {t['images_per_second']:.0f} "
                         f"| {'' if ratio is None else f'{ratio:.1f}x'} |")
        lines.append("")
    if s.get("achieved_gflops"):
        trained_in = next((t["precision"] for t in first["throughput"] if t["preset"] == PRESET), None)
        # The precision it trained in first: beside it, another precision's peak is context, not a limit.
        peaks = dict(sorted(native_peaks(first).items(), key=lambda item: item[0] != trained_in))
        lines.append(f"The `cpu` preset computes {first['flops']['training_flops_per_image'] / 1e9:.2f} GFLOP per "
                     f"training image and achieves {s['achieved_gflops']:.0f} GFLOP/s"
                     + (f" in {trained_in}" if trained_in else "") + ": "
                     + ", ".join(f"{s['fraction_of_peak'][k]:.0%} of the {k} peak measured here (matrix product "
                                 f"{v['matmul']:.0f}, 3x3 convolution {v['conv3x3']:.0f} GFLOP/s)"
                                 for k, v in peaks.items()) + "."
                     + ("" if "bf16" in peaks else " This CPU has no bf16 arithmetic, so fp32 is its limit."))
    return "\n".join(lines).rstrip() + "\n"


def update_readme(results_files: list[Path]) -> None:
    results = [render_results_file(f, cpu_results) for f in results_files]
    replace_section(README, "cpu-benchmark", render_table(results))
    written = [README]
    if same_machine(results):
        plot_accuracy_time(results, FIGURE)
        written.append(FIGURE)
    print(f"updated {' and '.join(map(str, written))} from {', '.join(map(str, results_files))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--data-root", help="the data folder (default: $CIFAR10_ROOT, then ./data)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--throughput-images", type=positive(int), default=2048, help="training images per timed epoch")
    parser.add_argument("--out", default=None, help="results JSON (default: benchmarks/results/cpu-preset-<date>.json)")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--readme", metavar="RESULTS", nargs="+",
                        help="only rewrite the README table from these results files (the preset's first)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="a preset setting for every timed run, as in `train --set` (repeatable)")
    parser.add_argument("--runs-dir", default=None, help="keep the runs in this folder (default: a temporary one)")
    args = parser.parse_args()
    args.data_root = str(resolve_root(args.data_root)[0])  # the CLI's rule, so child runs get the same folder
    if args.readme:
        return update_readme([Path(f) for f in args.readme])
    overrides = parse_settings(args.overrides)
    limits = [key for key in overrides if key.endswith("_limit")]
    if limits:  # the benchmark is of full-data runs, and its throughput runs set train_limit themselves
        raise SystemExit(f"error: --set {limits[0]}=... is not allowed: the benchmark times full-data runs. For a "
                         f"quick check use `python -m cifar_utils train --preset {PRESET} --{limits[0].replace('_', '-')} N`")
    preset_config = from_preset(PRESET, **overrides)  # checks the values before anything runs

    device = get_device("cpu")
    malloc_reuse = keep_freed_cpu_memory()  # as `train` does on the CPU, so throughput matches the timed runs
    date = datetime.date.today().isoformat()
    default_out = Path(__file__).parent / "results" / f"cpu-preset-{date}.json"
    out = io.new_results_path(args.out or default_out, args.overwrite)
    data = load_dataset(args.data_root)  # builds the decode cache, so every timed run reads it
    result = {
        "benchmark": "cpu preset: accuracy, wall time, throughput, GFLOP/s",
        "command": " ".join(["python", *sys.argv]), "date": date, "file": os.path.relpath(out, REPO),
        "device": describe_device(device), "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
        "cpu_native_bf16": cpu_has_native_bf16(), "torch_threads": torch.get_num_threads(), "torch_version": torch.__version__,
        "python_version": platform.python_version(), "malloc_reuses_freed_memory": malloc_reuse,
        **data_fields(data.description), "overrides": args.overrides, "preset_config": preset_config.to_dict(), "runs": [], "throughput": [],
        "flops": None, "summary": {},
    }

    def save() -> None:
        result["summary"] = summarize(result)
        io.save_json(result, out)

    with contextlib.ExitStack() as stack:
        runs_dir = Path(args.runs_dir) if args.runs_dir else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        for seed in args.seeds:
            run = run_seed(seed, args.data_root, runs_dir / f"seed{seed}", args.overrides)
            result["runs"].append(run)
            save()
            print(f"seed {seed}: test {run['test_accuracy']:.2%} in {run['wall_seconds']:.0f} s", flush=True)
    for preset in THROUGHPUT_PRESETS:
        result["throughput"].append(train_images_per_second(preset, data, args.data_root, args.throughput_images, device,
                                                            **(overrides if preset == PRESET else {})))
        save()
        print(f"{preset}: {result['throughput'][-1]['images_per_second']:.0f} training images/s", flush=True)
    result["flops"] = {"training_flops_per_image": training_flops_per_image(device, **overrides),
                       "peak_gflops": {"fp32": peak_gflops(torch.float32),
                                       **({"bf16": peak_gflops(torch.bfloat16)} if result["cpu_native_bf16"] else {})}}
    save()
    print(render_table([result]))
    print(f"wrote {out}")


if __name__ == "__main__":
    run_script(main)
