"""Smoke test: one epoch of a preset on about 1,000 real CIFAR-10 images from the shared JPEG copy.

Skipped (not failed) when the copy is absent; see the ``jpeg_subset_root`` fixture in conftest.py.
"""

from __future__ import annotations

import csv
import json
import math

import pytest

from cifar_utils.checkpoint import load_checkpoint
from cifar_utils.cli import main
from cifar_utils.data import CACHE_NAME, CIFAR10_CLASSES

pytestmark = pytest.mark.slow


def test_one_epoch_of_seed003_on_real_images(jpeg_subset_root, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CIFAR10_ROOT", raising=False)
    out = tmp_path / "run"
    code = main(["train", "--preset", "seed003", "--epochs", "1", "--data-root", str(jpeg_subset_root),
                 "--validation-split", "200", "--train-limit", "1000", "--validation-limit", "200", "--test-limit", "200",
                 "--out", str(out), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "epoch   1/1" in captured.out

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split_sizes"] == {"train": 1000, "validation": 200, "test": 200}
    assert str(jpeg_subset_root) in metrics["data"]
    assert list(metrics["per_class_test_accuracy"]) == list(CIFAR10_CLASSES)
    for key in ("test_accuracy", "validation_accuracy", "final_train_accuracy"):
        assert 0 <= metrics[key] <= 1
    for key in ("test_cross_entropy", "validation_cross_entropy"):
        assert math.isfinite(metrics[key])
    assert metrics["train_seconds"] > 0
    assert metrics["config"]["data_root"] == str(jpeg_subset_root)

    with open(out / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and math.isfinite(float(rows[0]["train_loss"]))

    state = load_checkpoint(out / "checkpoint.pt")
    assert state["epoch"] == 1 and state["classes"] == list(CIFAR10_CLASSES)
    # Normalisation from the training split of real images: nowhere near the fixed 0.5 / 0.5.
    assert all(0.3 < m < 0.6 for m in state["mean"]) and all(0.15 < s < 0.35 for s in state["std"])
    assert (jpeg_subset_root / CACHE_NAME).is_file()  # decoded once, cached next to the data
