"""What glibc's malloc setting (``cifar_utils.device.keep_freed_cpu_memory``) does to CPU training speed.

Usage::

    python benchmarks/cpu_malloc.py --data-root data/cifar10-jpeg        # ~4 min on 2 cores
    python benchmarks/cpu_malloc.py --data-root ... --repeats 1 --images 512   # a quick check
    python benchmarks/cpu_malloc.py --readme benchmarks/results/cpu-malloc-<date>.json  # rewrite the README line

It times one training epoch of the ``cpu`` preset on ``--images`` seeded training images (the same
measurement as ``benchmarks/cpu.py``'s throughput), once with glibc's default malloc and once with freed
memory kept for reuse. The setting lasts for a whole process, so every measurement runs in a fresh
process; the two settings alternate, ``--repeats`` times each, on the same machine in the same run.
Results go to ``benchmarks/results/cpu-malloc-<date>.json`` (kept unless ``--overwrite``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

from cpu import PRESET, README, REPO, cpu_model, data_fields, recorded_data, train_images_per_second

from cifar_utils import io
from cifar_utils.cli import positive
from cifar_utils.data import load_dataset, resolve_root
from cifar_utils.device import describe_device, get_device
from cifar_utils.errors import run_script
from cifar_utils.report import data_label
from cifar_utils.results import mean_std, plus_minus, render_results_file, replace_section

SETTINGS = ("default", "reuse")  # glibc's own malloc behaviour, then keep_freed_cpu_memory()


def child(setting: str, data_root: str, images: int) -> None:
    """Measure in this (fresh) process and print the result as one JSON line."""
    from cifar_utils.device import keep_freed_cpu_memory

    applied = keep_freed_cpu_memory() if setting == "reuse" else False
    device = get_device("cpu")
    result = train_images_per_second(PRESET, load_dataset(data_root), data_root, images, device)
    print(json.dumps({"setting": setting, "applied": applied, **result}))


def measure(setting: str, data_root: str, images: int) -> dict:
    command = [sys.executable, __file__, "--child", setting, "--data-root", data_root, "--images", str(images)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"error: the {setting} measurement failed (exit {done.returncode}):\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def render(result: dict) -> str:
    """The README's lines for a results file."""
    s = result["summary"]
    default, reuse, speedup = s["images_per_second"]["default"], s["images_per_second"]["reuse"], s["speedup"]
    return (f"Measured {result['date']} on {result['cpu_model']} ({result['torch_threads']} threads), torch "
            f"{result['torch_version']}, glibc {result['glibc']}: one `{result['preset']}` training epoch on "
            f"{result['images']:,} images of the {data_label(recorded_data(result))} ran at {plus_minus(default, '.0f')} "
            f"images/s with glibc's default malloc and {plus_minus(reuse, '.0f')} with freed memory "
            f"kept, {plus_minus(speedup, '.2f', unit='x')} over {speedup['n']} pairs of fresh processes. "
            f"Command: `{result['command']}`; results: `{result['file']}`.\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", help="the data folder (default: $CIFAR10_ROOT, then ./data)")
    parser.add_argument("--images", type=positive(int), default=2048, help="training images per timed epoch")
    parser.add_argument("--repeats", type=positive(int), default=3, help="measurements per setting")
    parser.add_argument("--out", default=None, help="results JSON (default: benchmarks/results/cpu-malloc-<date>.json)")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--readme", metavar="RESULTS", help="only rewrite the README line from this results file")
    parser.add_argument("--child", choices=SETTINGS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.data_root = str(resolve_root(args.data_root)[0])  # the CLI's rule, so child runs get the same folder
    if args.child:
        return child(args.child, args.data_root, args.images)
    if args.readme:
        replace_section(README, "cpu-malloc", render_results_file(args.readme, render))
        return print(f"updated the malloc line in {README} from {args.readme}")

    date = datetime.date.today().isoformat()
    default_out = Path(__file__).parent / "results" / f"cpu-malloc-{date}.json"
    out = io.new_results_path(args.out or default_out, args.overwrite)
    runs = []
    for _ in range(args.repeats):
        for setting in SETTINGS:
            runs.append(measure(setting, args.data_root, args.images))
            print(f"{setting}: {runs[-1]['images_per_second']:.0f} training images/s", flush=True)
    speeds = {s: [r["images_per_second"] for r in runs if r["setting"] == s] for s in SETTINGS}
    ratios = [reuse / default for default, reuse in zip(speeds["default"], speeds["reuse"])]
    result = {
        "benchmark": "cpu preset: training images/s with glibc's default malloc and with freed memory kept",
        "phase": "malloc",  # measures the code, not a result: the results table leaves it out
        "command": " ".join(["python", *sys.argv]), "date": date, "file": os.path.relpath(out, REPO),
        "device": describe_device(get_device("cpu")), "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__, "python_version": platform.python_version(),
        "glibc": platform.libc_ver()[1], "preset": PRESET, "images": args.images,
        **data_fields(load_dataset(args.data_root).description), "runs": runs,
        "summary": {"images_per_second": {s: mean_std(v) for s, v in speeds.items()},
                    "speedup": mean_std(ratios)},
    }
    io.save_json(result, out)
    speedup = result["summary"]["speedup"]
    print(f"reuse / default: {plus_minus(speedup, '.2f', unit='x')} over {speedup['n']} pairs; wrote {out}")


if __name__ == "__main__":
    run_script(main)
