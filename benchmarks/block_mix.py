"""The Block's two ways of mixing its branches, timed against each other in one run (issue 10).

Usage::

    python benchmarks/block_mix.py --data-root data/cifar10-jpeg --images 2048   # every preset, as the README table
    python benchmarks/block_mix.py --data-root ... --presets cpu --repeats 1 --images 512   # a quick check
    python benchmarks/block_mix.py --readme benchmarks/results/block-mix-<date>.json       # rewrite the README table

A Block computes ``O = sum_k a_k conv_k(X)``. Both ways below give the same O and the same gradients
(``tests/test_models.py`` checks them against the one-convolution-per-branch reference):

- ``input``: ``Block.mix_fused`` since this benchmark was written. Each branch convolves its scaled input
  ``a_k X``; the branches of one kernel size are one convolution of their stacked scaled inputs, whose sum
  over input channels is the mix.
- ``output``: ``Block.mix_fused`` before it, kept here as the peer. The branches of one kernel size are one
  convolution with n * C_out output channels; each output slice is scaled by ``a_k`` and added.

For each preset, one training epoch on ``--images`` seeded training images (``benchmarks/cpu.py``'s
throughput measurement: forward, backward and optimizer step after a one-batch warm-up) runs with each
way in turn, ``--repeats`` times, in one process on one machine. Every preset runs on the batched
(``gpu``) data pipeline, whichever device it is on, so that per-image augmentation does not hide the
network's speed. Results go to ``benchmarks/results/block-mix-<date>.json`` (kept unless ``--overwrite``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from cpu import README, REPO, cpu_model, data_fields, recorded_data, train_images_per_second

from cifar_utils import io
from cifar_utils.blocks import Block
from cifar_utils.cli import positive
from cifar_utils.data import load_dataset, resolve_root
from cifar_utils.device import describe_device, get_device, keep_freed_cpu_memory
from cifar_utils.errors import run_script
from cifar_utils.presets import PRESETS
from cifar_utils.report import data_label
from cifar_utils.results import mean_std, plus_minus, render_results_file, replace_section

# Presets whose networks are built of Blocks (seed003 is a ResNet, and fast_best is too big for a CPU run).
DEFAULT_PRESETS = ("cpu", "fast", "seed000", "seed001", "seed002", "seed004")


def mix_scaled_outputs(self: Block, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """The peer: ``Block.mix_fused`` as it was, scaling each branch's output [B, C_out, H, W] by a_k."""
    a = a.unsqueeze(2).unsqueeze(3)  # [B, K, 1, 1]
    out = None
    for k, indices in self._groups.items():
        convs = [self.convs[i] for i in indices]
        weight = torch.cat([c.weight for c in convs])
        bias = torch.cat([c.bias for c in convs]) if convs[0].bias is not None else None
        y = F.conv2d(x, weight, bias, padding=k // 2)  # [B, n*C_out, H, W]
        c = self.out_channels
        for j, branch in enumerate(indices):
            part, weight = y[:, j * c:(j + 1) * c], a[:, branch:branch + 1].to(y.dtype)
            out = part * weight if out is None else torch.addcmul(out, part, weight)
    return out


WAYS = {"input": Block.mix_fused, "output": mix_scaled_outputs}


def measure(preset: str, way: str, data, data_root: str, images: int, device: torch.device) -> dict:
    original = Block.mix_fused
    Block.mix_fused = WAYS[way]
    try:
        result = train_images_per_second(preset, data, data_root, images, device, pipeline="gpu")
    finally:
        Block.mix_fused = original
    return {**result, "way": way}


def render(result: dict) -> str:
    """The README's table for a results file."""
    lines = [f"Measured {result['date']} on {result['cpu_model']} ({result['device']}), torch "
             f"{result['torch_version']}, {result['images']:,} training images of the {data_label(recorded_data(result))} per "
             f"epoch, {result['repeats']} epochs per way and preset, alternating. Command: `{result['command']}`; "
             f"results: `{result['file']}`.", "",
             "| preset | training images/s, outputs scaled (before) | inputs scaled (now) | speed-up |",
             "| --- | --- | --- | --- |"]
    for preset, s in result["summary"].items():
        before, now, ratio = s["output"], s["input"], s["speedup"]
        lines.append(f"| `{preset}` | {plus_minus(before, '.1f')} | {plus_minus(now, '.1f')} | "
                     f"{plus_minus(ratio, '.2f', unit='x')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", help="the data folder (default: $CIFAR10_ROOT, then ./data)")
    parser.add_argument("--presets", default=",".join(DEFAULT_PRESETS), help="comma-separated preset names")
    parser.add_argument("--images", type=positive(int), default=1024, help="training images per timed epoch")
    parser.add_argument("--repeats", type=positive(int), default=3, help="timed epochs per way and preset")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="results JSON (default: benchmarks/results/block-mix-<date>.json)")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--readme", metavar="RESULTS", help="only rewrite the README table from this results file")
    args = parser.parse_args()
    args.data_root = str(resolve_root(args.data_root)[0])  # the CLI's rule, so child runs get the same folder
    if args.readme:
        replace_section(README, "block-mix", render_results_file(args.readme, render))
        return print(f"updated the Block mix table in {README} from {args.readme}")
    presets = [name.strip() for name in args.presets.split(",") if name.strip()]
    unknown = [name for name in presets if name not in PRESETS]
    if unknown or not presets:
        raise SystemExit(f"error: unknown preset(s) {', '.join(unknown) or '(none given)'}; "
                         f"choose from {', '.join(PRESETS)}")
    date = datetime.date.today().isoformat()
    default_out = Path(__file__).parent / "results" / f"block-mix-{date}.json"
    out = io.new_results_path(args.out or default_out, args.overwrite)

    device = get_device(args.device)
    if device.type == "cpu":
        keep_freed_cpu_memory()  # as training does
    data = load_dataset(args.data_root)
    runs = []
    for preset in presets:
        for _ in range(args.repeats):
            for way in WAYS:  # alternate, so that drifts in the machine's speed hit both ways alike
                runs.append(measure(preset, way, data, args.data_root, args.images, device))
                print(f"{preset:8s} {way:6s} {runs[-1]['images_per_second']:8.1f} training images/s", flush=True)
    summary = {}
    for preset in presets:
        speeds = {way: [r["images_per_second"] for r in runs if r["preset"] == preset and r["way"] == way]
                  for way in WAYS}
        summary[preset] = {**{way: mean_std(v) for way, v in speeds.items()},
                           "speedup": mean_std([new / old for new, old in zip(speeds["input"], speeds["output"])])}
    result = {
        "benchmark": "Block mix: training images/s with the branch weights applied to the inputs and to the outputs",
        "phase": "block_mix",  # measures the code, not a result: the results table leaves it out
        "command": " ".join(["python", *sys.argv]), "date": date, "file": os.path.relpath(out, REPO),
        "device": describe_device(device), "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "torch_version": torch.__version__,
        "python_version": platform.python_version(), "images": args.images, "repeats": args.repeats,
        **data_fields(data.description), "runs": runs, "summary": summary,
    }
    io.save_json(result, out)
    print(render(result) + f"wrote {out}")


if __name__ == "__main__":
    run_script(main)
