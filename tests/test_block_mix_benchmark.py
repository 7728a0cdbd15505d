"""benchmarks/block_mix.py end to end on a tiny image folder: both ways of mixing timed in turn, the
results file and the README table made from it; and its peer (the old mix) still equals the Block's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from cifar_utils.blocks import Block

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import block_mix  # noqa: E402


def test_the_peer_computes_the_same_mix():
    """Timing the old way against the new one only means something if both compute O = sum_k a_k conv_k(X)."""
    torch.manual_seed(0)
    for kernel_sizes, bias in (((3, 1), False), ((3, 3, 3), True), ((1, 3, 5, 3), False)):
        block = Block(5, 4, kernel_sizes=kernel_sizes, batchnorm=not bias).double()
        x, a = torch.randn(2, 5, 8, 8, dtype=torch.float64), torch.randn(2, len(kernel_sizes), dtype=torch.float64)
        torch.testing.assert_close(block_mix.mix_scaled_outputs(block, x, a), block.mix_fused(x, a))


def test_both_ways_are_timed_and_rendered(tmp_path, noise_folder):
    root = noise_folder(30, 2)
    out = tmp_path / "mix.json"
    command = [sys.executable, str(REPO / "benchmarks" / "block_mix.py"), "--data-root", str(root),
               "--presets", "cpu", "--repeats", "2", "--images", "256", "--out", str(out)]
    subprocess.run(command, check=True, capture_output=True, text=True)
    result = json.loads(out.read_text())
    assert [run["way"] for run in result["runs"]] == ["input", "output", "input", "output"]
    assert result["phase"] == "block_mix"  # left out of the results table: it measures the code
    assert all(run["images_per_second"] > 0 and run["pipeline"] == "gpu" for run in result["runs"])
    assert result["summary"]["cpu"]["speedup"]["n"] == 2
    table = block_mix.render(result)
    assert "| `cpu` |" in table and f"`{result['file']}`" in table
    again = subprocess.run(command, capture_output=True, text=True)  # never overwritten without being asked
    assert again.returncode != 0 and "--overwrite" in again.stderr
    unknown = subprocess.run([*command, "--presets", "cpu,nope"], capture_output=True, text=True)
    assert unknown.returncode != 0 and "unknown preset(s) nope" in unknown.stderr
