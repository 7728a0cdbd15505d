"""Issue 5's crash test: SIGKILL a real training process mid-epoch, resume it, and get the same run.

The killed and the resumed runs are ``python -m cifar_utils train`` subprocesses; the uninterrupted
reference runs the same command line in this process. All three use one thread, so the floating-point
reductions happen in the same order everywhere.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cifar_utils import cli
from cifar_utils.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
BATCHES_PER_EPOCH = 6  # 48 training images in mini-batches of 8
ARGS = ["train", "--preset", "seed003", "--set", "dataset=synthetic", "--set", "model=resnet20", "--epochs", "2",
        "--validation-split", "100", "--train-limit", "48", "--batch-size", "8", "--set", "validation_limit=16",
        "--set", "test_limit=16", "--lr", "0.02", "--checkpoint-every-steps", "1", "--device", "cpu", "--no-progress"]


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    torch.set_num_threads(threads)


def wait_for_mid_epoch_checkpoint(proc: subprocess.Popen, path: Path, epoch: int, timeout: float = 240) -> None:
    """Return once ``path`` holds a checkpoint taken part-way through epoch ``epoch`` (0-based)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the run ended (status {proc.returncode}) before it could be killed"
        if path.exists():
            state = load_checkpoint(path)  # written atomically, so never seen half-written
            if state["epoch"] == epoch and state["batches"] >= 1:
                return
        time.sleep(0.02)
    pytest.fail("no mid-epoch checkpoint appeared")


def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(tmp_path, one_thread):
    killed = tmp_path / "killed"
    log = (tmp_path / "killed.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "cifar_utils", *ARGS, "--out", str(killed)], cwd=tmp_path,
                            env=one_thread, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_mid_epoch_checkpoint(proc, killed / "checkpoint.pt", epoch=1)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        log.close()
    assert proc.returncode == -signal.SIGKILL
    state = load_checkpoint(killed / "checkpoint.pt")
    assert state["epoch"] == 1 and 1 <= state["batches"] < BATCHES_PER_EPOCH, "not killed during epoch 2"
    assert not (killed / "metrics.json").exists()

    resumed = subprocess.run([sys.executable, "-m", "cifar_utils", *ARGS, "--out", str(killed), "--resume"],
                             cwd=tmp_path, env=one_thread, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"epoch 2, mini-batch {state['batches']}" in resumed.stdout

    reference = tmp_path / "reference"
    assert cli.main([*ARGS, "--out", str(reference)]) == 0

    final, expected = load_checkpoint(killed / "checkpoint.pt"), load_checkpoint(reference / "checkpoint.pt")
    assert len(final["history"]) == len(expected["history"]) == 2
    for row, expected_row in zip(final["history"], expected["history"]):
        for key in expected_row.keys() - {"seconds"}:
            assert row[key] == pytest.approx(expected_row[key], rel=0, abs=1e-6), key
    for name, tensor in expected["model"].items():
        torch.testing.assert_close(final["model"][name], tensor, rtol=0, atol=1e-6, msg=name)
    metrics, expected_metrics = (json.loads((d / "metrics.json").read_text()) for d in (killed, reference))
    for key in ("test_accuracy", "test_cross_entropy", "validation_accuracy"):
        assert metrics[key] == pytest.approx(expected_metrics[key], rel=0, abs=1e-6), key
