"""Operators dispatched by one training step of each fast preset's network, counted (issue 15).

Usage::

    python benchmarks/step_ops.py                                  # cpu, fast, fast_best
    python benchmarks/step_ops.py --presets fast --out FILE        # one preset, another file

On an H100 a ``fast`` step spent about 31 ms launching kernels on the host against 9 ms of GPU work
(benchmarks/results/nvidia-h100-80gb-hbm3-2026-11-22-check.json): there, every operator the step
dispatches costs host time. The count does not depend on the device, so it can be measured, and kept
from growing, on any machine. For each preset it counts the aten operators of the forward and backward
pass (the network, its loss) and of the optimizer step on a small batch of random images, each by name.
The optimizer's count is the CPU's: torch's SGD steps parameter by parameter there, where on a GPU it
batches them (foreach), so only the network's count carries over to a GPU as it is.

Results go to ``benchmarks/results/step-ops-<date>.json`` (kept unless ``--overwrite``).
"""

from __future__ import annotations

import argparse
import collections
import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cifar_utils import io  # noqa: E402
from cifar_utils.losses import build_criterion  # noqa: E402
from cifar_utils.models import build_model  # noqa: E402
from cifar_utils.optim import build_optimizer  # noqa: E402
from cifar_utils.presets import PRESETS, from_preset  # noqa: E402
from cifar_utils.errors import run_script  # noqa: E402

DEFAULT_PRESETS = ("cpu", "fast", "fast_best")
BATCH = 8  # images per counted step: the count does not depend on it, and small keeps the run short


class CountOperators(TorchDispatchMode):
    """Counts every aten operator dispatched inside it, by name (``convolution``, ``add_``, ...)."""

    def __init__(self):
        super().__init__()
        self.counts: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def count_step(preset: str) -> dict:
    """The operators of one training step of ``preset``'s network (after an uncounted first step, which
    creates the optimizer's state): forward and backward, then the optimizer step."""
    config = from_preset(preset)
    model = build_model(config)
    layout = torch.channels_last if config.channels_last else torch.contiguous_format
    model = model.to(memory_format=layout).train()
    criterion, optimizer = build_criterion(config), build_optimizer(model, config)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(BATCH, 3, 32, 32, generator=generator).contiguous(memory_format=layout)
    labels = torch.randint(0, 10, (BATCH,), generator=generator)

    def forward_backward() -> None:
        optimizer.zero_grad(set_to_none=True)
        criterion(model(images), labels).backward()

    forward_backward()
    optimizer.step()
    with CountOperators() as network:
        forward_backward()
    with CountOperators() as step:
        optimizer.step()
    return {"preset": preset, "network": sum(network.counts.values()), "optimizer": sum(step.counts.values()),
            "network_by_operator": dict(network.counts.most_common()),
            "optimizer_by_operator": dict(step.counts.most_common())}


def _commit() -> str | None:
    """The checkout whose package was counted (the count changes with the code, not the machine)."""
    try:
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=list(DEFAULT_PRESETS), help="preset names")
    parser.add_argument("--out", default=None, help="results JSON (default: benchmarks/results/step-ops-<date>.json)")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    unknown = [name for name in args.presets if name not in PRESETS]
    if unknown:
        raise SystemExit(f"error: unknown preset(s) {', '.join(unknown)}; choose from {', '.join(PRESETS)}")
    date = datetime.date.today().isoformat()
    default_out = Path(__file__).parent / "results" / f"step-ops-{date}.json"
    out = io.new_results_path(args.out or default_out, args.overwrite)
    counts = []
    for preset in args.presets:
        counts.append(count_step(preset))
        print(f"{preset:10s} network {counts[-1]['network']:5d} operators, optimizer {counts[-1]['optimizer']:5d}")
    io.save_json({
        "benchmark": "aten operators dispatched by one training step (forward and backward; optimizer step)",
        "phase": "step_ops",  # measures the code, not a result: the results table leaves it out
        "command": " ".join(["python", *sys.argv]), "date": date, "file": os.path.relpath(out, REPO),
        "commit": _commit(), "device": "cpu", "batch": BATCH, "torch_version": torch.__version__,
        "python_version": platform.python_version(), "counts": counts,
    }, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    run_script(main)
