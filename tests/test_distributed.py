"""DDP on the CPU with gloo: two torchrun processes against one process with the same global batch."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "ddp_worker.py"
TIMEOUT_S = 90


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run a command in its own process group, and kill the whole group if it hangs or the test fails."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def torchrun(nproc: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]


def history(run_dir: Path) -> list[list[float]]:
    lines = (run_dir / "history.csv").read_text().splitlines()[1:]
    return [[float(v) for v in line.split(",")[1:5]] for line in lines]  # losses and accuracies


@pytest.fixture(scope="module")
def ddp_and_single(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    ddp = run(torchrun(2, str(WORKER), str(root / "ddp"), str(root / "ddp_art")), root)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = run([sys.executable, str(WORKER), str(root / "single"), str(root / "single_art")], root)
    assert single.returncode == 0, single.stderr[-3000:]
    return root


def test_ddp_run_completes_and_only_rank0_writes(ddp_and_single):
    root = ddp_and_single
    assert {"checkpoint.pt", "metrics.json", "history.csv"} <= {p.name for p in (root / "ddp").iterdir()}
    assert json.loads((root / "ddp_art" / "written_rank1.json").read_text()) == []
    assert {"checkpoint.pt", "metrics.json", "history.csv"} <= set(
        json.loads((root / "ddp_art" / "written_rank0.json").read_text()))
    assert json.loads((root / "ddp" / "metrics.json").read_text())["world_size"] == 2


def test_final_weights_identical_on_both_ranks(ddp_and_single):
    rank0 = torch.load(ddp_and_single / "ddp_art" / "weights_rank0.pt")
    rank1 = torch.load(ddp_and_single / "ddp_art" / "weights_rank1.pt")
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name


def assert_same_training(run: Path, art: Path, reference_run: Path, reference_art: Path) -> None:
    """Both epochs of the history within 1e-5, and rank 0's final weights within 1e-5 (rtol 1e-4)."""
    rows, reference_rows = history(run), history(reference_run)
    assert len(rows) == len(reference_rows) == 2
    for row, reference_row in zip(rows, reference_rows):
        assert row == pytest.approx(reference_row, abs=1e-5)
    weights = torch.load(art / "weights_rank0.pt")
    reference_weights = torch.load(reference_art / "weights_rank0.pt")
    for name in reference_weights:
        torch.testing.assert_close(weights[name], reference_weights[name], atol=1e-5, rtol=1e-4)


def test_loss_curve_matches_single_process(ddp_and_single):
    # Same global batch: rank r's shard of batch i is exactly half of the single process's batch i, and
    # DDP averages gradients, so only float summation order differs. Stated tolerance: 1e-5.
    root = ddp_and_single
    assert_same_training(root / "ddp", root / "ddp_art", root / "single", root / "single_art")


def test_resume_under_ddp(ddp_and_single, tmp_path):
    first = run(torchrun(2, str(WORKER), str(tmp_path / "run"), str(tmp_path / "art"), "epochs=1"), tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    second = run(torchrun(2, str(WORKER), str(tmp_path / "run"), str(tmp_path / "art"), "epochs=2", "--resume"),
                 tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming from" in second.stdout
    assert_same_training(tmp_path / "run", tmp_path / "art", ddp_and_single / "ddp", ddp_and_single / "ddp_art")


def test_sigterm_to_one_process_stops_every_process_at_the_same_step_and_resume_finishes(ddp_and_single, tmp_path):
    # Rank 1 alone gets SIGTERM in its third forward pass (3 steps of 6 per epoch): had it stopped alone, rank 0
    # would wait for it in the next all-reduce and never save the partial epoch.
    first = run(torchrun(2, str(WORKER), str(tmp_path / "run"), str(tmp_path / "art"), "--sigterm-rank1-at", "3"),
                tmp_path)
    assert first.returncode != 0
    for rank in (0, 1):  # the first process, which alone prints on the command line, names rank 1's signal
        assert f"rank {rank} interrupted: training stopped by SIGTERM; a checkpoint was saved" in first.stdout, \
            first.stderr[-3000:]
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert (state["epoch"], state["batches"]) == (0, 3)
    second = run(torchrun(2, str(WORKER), str(tmp_path / "run"), str(tmp_path / "art"), "--resume"), tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert_same_training(tmp_path / "run", tmp_path / "art", ddp_and_single / "ddp", ddp_and_single / "ddp_art")


def test_batch_that_does_not_divide_fails_on_every_rank_with_one_message(tmp_path):
    result = run(torchrun(2, "-m", "cifar_utils", "train", "--preset", "seed002", "--set", "dataset=synthetic",
                          "--batch-size", "33", "--out", str(tmp_path / "run")), tmp_path)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert errors == ["error: batch_size=33 does not divide across 2 processes; choose a multiple of 2, "
                      "such as --batch-size 34 (the per-process batch is batch_size / nproc_per_node)"]
    assert "exitcode  : 2" in result.stderr  # both ranks exited with the CLI's bad-input status
    assert not (tmp_path / "run").exists()


def test_readme_torchrun_lines_run_as_written(tmp_path):
    """The README's torchrun lines, with 2 gloo processes instead of 4 and small-data flags appended."""
    from cifar_utils.distributed import check_batch_divides
    from cifar_utils.presets import from_preset

    lines = [shlex.split(line) for line in (REPO / "README.md").read_text().splitlines() if line.startswith("torchrun ")]
    train_line, resume_line, sync_line = lines
    assert "--resume" in resume_line and "sync_batchnorm=true" in sync_line  # the last one needs CUDA GPUs
    for args in lines:
        assert args[:4] == ["torchrun", "--nproc_per_node", "4", "-m"]
        batch = int(args[args.index("--batch-size") + 1]) if "--batch-size" in args else from_preset(args[args.index("--preset") + 1]).batch_size
        check_batch_divides(batch, 4)  # the README's own 4 processes can split it
    small = ["--device", "cpu", "--epochs", "1", "--set", "dataset=synthetic", "--train-limit", "160",
             "--validation-limit", "40", "--test-limit", "40", "--no-progress"]
    for args, expected in ((train_line, "test accuracy"), (resume_line, "nothing to resume")):
        result = run(torchrun(2, *args[3:], *small), tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        assert expected in result.stdout
    assert json.loads((tmp_path / "runs" / "seed002-ddp" / "metrics.json").read_text())["world_size"] == 2
