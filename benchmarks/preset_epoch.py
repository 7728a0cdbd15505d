"""Time one training epoch of every preset on a small real subset (the issue-2 CPU check).

Usage::

    python benchmarks/preset_epoch.py --data-root data/cifar10-jpeg [--train-limit 2000] [--device cpu]

Each preset trains for one epoch on ``--train-limit`` training images (seeded subset) and is evaluated
on ``--validation-limit`` validation and ``--test-limit`` test images. Results go to
``benchmarks/results/preset-epoch-<device>-<date>.json`` with device, versions and settings. Accuracies
after one epoch on 2,000 images say nothing about a preset's final accuracy; the times show what a
CPU user should expect per 2,000 images.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import tempfile
from pathlib import Path

import torch

from cifar_utils import io
from cifar_utils.cli import positive
from cifar_utils.device import describe_device, get_device
from cifar_utils.errors import run_script
from cifar_utils.experiment import train
from cifar_utils.models import build_model, count_parameters
from cifar_utils.presets import PRESETS, from_preset
from cifar_utils.report import data_copy_note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", default=None, help="default: $CIFAR10_ROOT, then ./data")
    parser.add_argument("--presets", nargs="+", default=[p for p in PRESETS if p.startswith("seed")])
    parser.add_argument("--train-limit", type=positive(int), default=2000)
    parser.add_argument("--validation-limit", type=positive(int), default=500)
    parser.add_argument("--test-limit", type=positive(int), default=500)
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default=None, help="results JSON (default: benchmarks/results/...)")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()

    device = get_device(args.device)
    date = datetime.date.today().isoformat()
    default_out = Path(__file__).parent / "results" / f"preset-epoch-{device.type}-{date}.json"
    out = io.new_results_path(args.out or default_out, args.overwrite)
    runs = []
    for name in args.presets:
        config = from_preset(name, epochs=1, data_root=args.data_root, train_limit=args.train_limit,
                             validation_limit=args.validation_limit, test_limit=args.test_limit)
        with tempfile.TemporaryDirectory() as tmp:
            result = train(config, Path(tmp) / name, device=args.device, progress=False)
        runs.append({
            "preset": name, "parameters": count_parameters(build_model(config)),
            "train_seconds": result.metrics["train_seconds"], "total_seconds": result.metrics["total_seconds"],
            "test_accuracy": result.metrics["test_accuracy"], "data": result.metrics["data"],
            "config": config.to_dict(),
        })
        print(f"{name}: {runs[-1]['train_seconds']:.1f} s for one epoch of {args.train_limit} images "
              f"({runs[-1]['parameters'] / 1e6:.2f} M parameters)")
    io.save_json({
        "benchmark": "one epoch per preset", "command": " ".join(["python", *sys.argv]), "date": date, "device": describe_device(device),
        "torch_version": torch.__version__, "python_version": platform.python_version(),
        "settings": {"train_limit": args.train_limit, "validation_limit": args.validation_limit,
                     "test_limit": args.test_limit, "epochs": 1},
        "note": f"measured on {data_copy_note(runs[0]['data'])}" if runs else None, "runs": runs,
    }, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    run_script(main)
