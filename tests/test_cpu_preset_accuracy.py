"""The one real-accuracy test: the ``cpu`` preset, trained on the full training split less validation,
really learns (issue 10). It guards the whole pipeline (data, Blocks, optimizer, evaluation); it is
not timed, because timing is a benchmark's job (``benchmarks/cpu.py``); it takes as long as one run there
(the README's CPU table).

It needs the whole offline JPEG copy at ``$CIFAR10_ROOT`` (``.ci/run`` extracts it there) and is
skipped without it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cifar_utils import from_preset, train

pytestmark = pytest.mark.slow
# Issue 10's threshold. The preset's mean sits 0.4 to 0.5 points above it on both machines measured, and
# this seed (0) more so (benchmarks/results/cpu-preset-2026-12-06.json, fp32: 88.36% ± 0.17%, seed 0 88.38%;
# cpu-preset-2026-12-07-bf16.json, bf16: 88.50% ± 0.14%, seed 0 88.49%; no seed of either below 88.18%).
MIN_TEST_ACCURACY = 0.88


def test_cpu_preset_learns_on_the_full_data(tmp_path):
    root = os.environ.get("CIFAR10_ROOT")
    if not root or not (Path(root) / "train").is_dir():
        pytest.skip("needs the full CIFAR-10 image folder at $CIFAR10_ROOT")
    result = train(from_preset("cpu", data_root=root), out_dir=tmp_path / "run", progress=False)
    assert result.metrics["split_sizes"] == {"train": 45000, "validation": 5000, "test": 10000}
    assert result.metrics["test_accuracy"] >= MIN_TEST_ACCURACY, result.metrics
