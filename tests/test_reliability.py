"""Reliability (issue 5): resume, safe checkpoints, one clear message for every bad input, determinism.

Training runs here use a tiny registered architecture on synthetic data, in this process, so that a fault
(a crash, Ctrl-C, out-of-memory, a NaN) can be injected at a chosen training step. The test that really
kills a process with SIGKILL is in ``test_reliability_crash.py``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from cifar_utils import cli, engine, experiment, io, models
from cifar_utils.checkpoint import load_checkpoint, save_checkpoint
from cifar_utils.config import Config
from cifar_utils.data import load_dataset, make_splits, synthetic_dataset
from cifar_utils.device import set_seed
from cifar_utils.errors import (CheckpointError, ConfigError, DataError, OutOfMemoryError, OutputExistsError,
                                TrainingDivergedError)
from cifar_utils.presets import from_preset

REPO = Path(__file__).resolve().parents[1]
BATCHES_PER_EPOCH = 4  # 64 training images in mini-batches of 16


# ------------------------------------------------------------------------------------------- helpers


class TinyNet(nn.Module):
    """Conv, BatchNorm, global pooling, linear: trains in milliseconds. ``fault`` = (n, action) runs
    ``action(model, logits)`` at the n-th training forward pass, to inject a failure at a known step."""

    def __init__(self, num_classes: int = 10, fault=None):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, num_classes)
        self.fault, self.calls = fault, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.fc(F.adaptive_avg_pool2d(F.relu(self.bn(self.conv(x))), 1).flatten(1))
        if self.training:
            self.calls += 1
            if self.fault is not None and self.calls == self.fault[0]:
                logits = self.fault[1](self, logits)
        return logits


class SimulatedCrash(Exception):
    """Stands in for the process dying (power cut, Colab disconnect) at a known step."""


def crash(model, logits):
    raise SimulatedCrash


def out_of_memory(model, logits):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def nan_loss(model, logits):
    return logits * float("nan")


def overflowing_gradient(model, logits):
    # The loss stays finite, but the gradient (and so the weights after this step) overflow.
    logits.register_hook(lambda grad: grad * float("inf"))
    return logits


def _signal(signum: int = signal.SIGINT) -> None:
    # To the main thread, as a terminal's Ctrl-C reaches Python: sent to the process (os.kill), it may land on
    # one of torch's threads, and then two in a row can reach the handler as one (seen under load in CI).
    signal.pthread_kill(threading.main_thread().ident, signum)


def ctrl_c(model, logits):
    _signal()
    return logits


def ctrl_c_twice(model, logits):
    _signal()
    # Two signals pending at once reach Python's handler as one: wait until the run's handler has taken the
    # first (it then hands Ctrl-C back), as a person's second Ctrl-C comes after the first was seen.
    deadline = time.monotonic() + 5
    while getattr(signal.getsignal(signal.SIGINT), "__name__", "") == "_handle" and time.monotonic() < deadline:
        time.sleep(0.001)
    _signal()
    return logits


@pytest.fixture
def tiny(monkeypatch):
    """Registers architecture ``tiny``; call the fixture's value with a fault to build it with one."""

    def register(fault=None):
        monkeypatch.setitem(models.ARCHITECTURES, "tiny", lambda num_classes=10: TinyNet(num_classes, fault))

    register()
    return register


def tiny_args(out: Path | None, *extra: str) -> list[str]:
    """The command line of a tiny run; a ``--set FIELD=VALUE`` in ``extra`` replaces this one's own (the CLI
    refuses a field set twice)."""
    settings = {"dataset": "synthetic", "model": "tiny", "validation_limit": "32", "test_limit": "32"}
    rest, items = [], iter(extra)
    for item in items:
        if item == "--set":
            key, value = next(items).split("=", 1)
            settings[key] = value
        else:
            rest.append(item)
    return ["train", "--preset", "seed003", *(arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")),
            "--epochs", "2", "--validation-split", "100", "--train-limit", "64", "--batch-size", "16",
            "--lr", "0.05", "--device", "cpu", "--no-progress", *(["--out", str(out)] if out else []), *rest]


def tiny_config(**overrides) -> Config:
    values = dict(dataset="synthetic", model="tiny", epochs=2, validation_split=100, train_limit=64, batch_size=16,
                  validation_limit=32, test_limit=32, lr=0.05)
    return from_preset("seed003", **{**values, **overrides})


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted tiny run: what every interrupted and resumed run must reproduce."""
    out = tmp_path_factory.mktemp("reference") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(models.ARCHITECTURES, "tiny", TinyNet)
        assert cli.main(tiny_args(out)) == 0
    return out


def assert_same_run(a: Path, b: Path, atol: float = 1e-6) -> None:
    """Same final history (but for timings), weights and test metrics, to within ``atol``."""
    first, second = load_checkpoint(a / "checkpoint.pt"), load_checkpoint(b / "checkpoint.pt")
    assert (first["epoch"], first["batches"]) == (second["epoch"], second["batches"])
    assert len(first["history"]) == len(second["history"]) == first["epoch"]
    for row_a, row_b in zip(first["history"], second["history"]):
        for key in row_a.keys() - {"seconds"}:
            assert row_a[key] == pytest.approx(row_b[key], rel=0, abs=atol), key
    assert first["model"].keys() == second["model"].keys()
    for name, tensor in first["model"].items():
        torch.testing.assert_close(tensor, second["model"][name], rtol=0, atol=atol, msg=name)
    metrics_a, metrics_b = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    for key in ("test_accuracy", "test_cross_entropy", "validation_accuracy", "validation_cross_entropy"):
        assert metrics_a[key] == pytest.approx(metrics_b[key], rel=0, abs=atol), key


def cli_error(capsys, args: list[str], *fragments: str, status: int = 2) -> str:
    """Run the CLI in this process; check its exit status and one ``error:`` line without a traceback."""
    code = cli.main(args)
    err = capsys.readouterr().err
    assert code == status, err
    assert "Traceback" not in err
    prefix = "interrupted:" if status in (130, 143) else "error:"
    lines = [line for line in err.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def finite(state: dict) -> bool:
    return all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


# ------------------------------------------------------------------------------------ crash and resume


def test_checkpoint_every_epoch_and_optionally_every_n_steps(tiny, tmp_path, monkeypatch):
    saved = []

    def recording_save(state, path):
        saved.append((Path(path).name, state["epoch"], state["batches"]))
        return save_checkpoint(state, path)

    monkeypatch.setattr(engine, "save_checkpoint", recording_save)
    experiment.train(tiny_config(keep_best=False), tmp_path / "per-epoch", device="cpu", progress=False)
    assert saved == [("checkpoint.pt", 1, 0), ("checkpoint.pt", 2, 0)]
    saved.clear()
    experiment.train(tiny_config(keep_best=False, checkpoint_every_steps=2), tmp_path / "per-step",
                     device="cpu", progress=False)
    assert saved == [("checkpoint.pt", 0, 2), ("checkpoint.pt", 0, 4), ("checkpoint.pt", 1, 0),
                     ("checkpoint.pt", 1, 2), ("checkpoint.pt", 1, 4), ("checkpoint.pt", 2, 0)]


def test_resume_at_an_epoch_boundary_matches_an_uninterrupted_run(tiny, tmp_path, reference):
    out = tmp_path / "run"
    tiny((BATCHES_PER_EPOCH + 1, crash))  # dies on the first mini-batch of epoch 2
    with pytest.raises(SimulatedCrash):
        cli.main(tiny_args(out))
    state = load_checkpoint(out / "checkpoint.pt")
    assert (state["epoch"], state["batches"], len(state["history"])) == (1, 0, 1)
    tiny()
    assert cli.main(tiny_args(out, "--resume")) == 0
    assert_same_run(out, reference)


def test_resume_true_in_python_continues_mid_epoch(tiny, tmp_path, reference):
    out = tmp_path / "run"
    tiny((BATCHES_PER_EPOCH + 3, crash))
    with pytest.raises(SimulatedCrash):
        experiment.train(tiny_config(checkpoint_every_steps=1), out, device="cpu", progress=False)
    state = load_checkpoint(out / "checkpoint.pt")
    assert (state["epoch"], state["batches"]) == (1, 2)
    tiny()
    experiment.train(tiny_config(checkpoint_every_steps=1), out, device="cpu", resume=True, progress=False)
    assert_same_run(out, reference)


def test_resuming_precision_auto_keeps_the_precision_the_run_trained_in(tiny, tmp_path, monkeypatch):
    out = tmp_path / "run"
    tiny((BATCHES_PER_EPOCH + 1, crash))
    monkeypatch.setattr(experiment, "resolve_precision", lambda p, d: "bf16" if p == "auto" else p)  # first machine
    with pytest.raises(SimulatedCrash):
        experiment.train(tiny_config(precision="auto"), out, device="cpu", progress=False)
    assert load_checkpoint(out / "checkpoint.pt")["precision"] == "bf16"
    tiny()
    monkeypatch.setattr(experiment, "resolve_precision", lambda p, d: "fp32" if p == "auto" else p)  # another one
    lines = []
    result = experiment.train(tiny_config(precision="auto"), out, device="cpu", resume=True, progress=False,
                              log=lines.append)
    assert "precision bf16 (auto: bf16, which the resumed run trained in; here auto would choose fp32)" in lines[0]
    assert result.metrics["precision"] == "bf16" and load_checkpoint(out / "checkpoint.pt")["precision"] == "bf16"


@pytest.mark.parametrize("optimizer", ["sgd", "muon"])
def test_mid_epoch_resume_under_a_per_step_schedule_matches_an_uninterrupted_run(tiny, tmp_path, optimizer):
    # The learning rate changes every step, yet the history logs each epoch's starting rate either way;
    # Muon's momentum and its conv-filter group must survive the checkpoint.
    config = tiny_config(optimizer=optimizer, scheduler="warmup_cosine", checkpoint_every_steps=1)
    experiment.train(config, tmp_path / "reference", device="cpu", progress=False)
    tiny((BATCHES_PER_EPOCH + 3, crash))
    with pytest.raises(SimulatedCrash):
        experiment.train(config, tmp_path / "run", device="cpu", progress=False)
    tiny()
    experiment.train(config, tmp_path / "run", device="cpu", resume=True, progress=False)
    assert_same_run(tmp_path / "run", tmp_path / "reference")


@pytest.mark.parametrize("overrides", [
    dict(pipeline="gpu", ema_decay=0.9), dict(pipeline="gpu", lookahead_decay=0.95), dict(accumulation_steps=3),
], ids=["gpu-pipeline-ema", "gpu-pipeline-lookahead", "accumulation"])
def test_mid_epoch_resume_with_weight_averages_or_accumulation_matches_an_uninterrupted_run(tiny, tmp_path, overrides):
    # The fast presets' pipeline and weight averages, and seed000's accumulation: the crash comes mid-epoch,
    # and with accumulation in the middle of a group, whose gradients the resumed run must gather again.
    config = tiny_config(checkpoint_every_steps=1, **overrides)
    experiment.train(config, tmp_path / "reference", device="cpu", progress=False, log=lambda _: None)
    tiny((BATCHES_PER_EPOCH + 2, crash))
    with pytest.raises(SimulatedCrash):
        experiment.train(config, tmp_path / "run", device="cpu", progress=False, log=lambda _: None)
    tiny()
    experiment.train(config, tmp_path / "run", device="cpu", resume=True, progress=False, log=lambda _: None)
    assert_same_run(tmp_path / "run", tmp_path / "reference")


def test_ctrl_c_saves_a_checkpoint_says_how_to_resume_and_resuming_finishes(tiny, tmp_path, capsys, reference):
    out = tmp_path / "run"
    tiny((2, ctrl_c))  # a real SIGINT to this process during the second mini-batch
    line = cli_error(capsys, tiny_args(out), str(out), "--resume", status=130)
    assert "epoch 1, mini-batch 2" in line
    state = load_checkpoint(out / "checkpoint.pt")
    assert (state["epoch"], state["batches"]) == (0, 2)
    tiny()
    assert cli.main(tiny_args(out, "--resume")) == 0
    assert_same_run(out, reference)


def test_ctrl_c_during_an_epochs_partial_last_batch_resumes_at_its_validation(tiny, tmp_path, capsys):
    # 60 images in batches of 16: the 4th batch holds 12, so a checkpoint after it skips more sampler
    # indices (4 x 16) than the epoch has; resuming must go on to that epoch's validation, not fail.
    args = [arg if arg != "64" else "60" for arg in tiny_args(None)]
    assert cli.main([*args, "--out", str(tmp_path / "reference")]) == 0
    out = tmp_path / "run"
    tiny((BATCHES_PER_EPOCH, ctrl_c))  # during the first epoch's last, partial mini-batch
    cli_error(capsys, [*args, "--out", str(out)], "epoch 1, mini-batch 4", "--resume", status=130)
    assert (load_checkpoint(out / "checkpoint.pt")["batches"]) == BATCHES_PER_EPOCH
    tiny()
    assert cli.main([*args, "--out", str(out), "--resume"]) == 0
    assert_same_run(out, tmp_path / "reference")


def test_a_second_ctrl_c_stops_at_once_without_finishing_the_step(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    # As in a terminal, Python's own handler first: a suite started in the background (cmd &) from a
    # non-interactive shell inherits SIGINT ignored, which the run would hand back after the first Ctrl-C.
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        tiny((2, ctrl_c_twice))  # two real SIGINTs during the second mini-batch's forward pass
        assert cli.main(tiny_args(out)) == 130
        assert capsys.readouterr().err == "interrupted\n"  # not the first Ctrl-C's "finish the step, save" path
        assert not (out / "checkpoint.pt").exists()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the run gave Ctrl-C back
    finally:
        signal.signal(signal.SIGINT, handler)


class UnhandledSigterm(Exception):
    """What SIGTERM does in these tests while no run handles it (by default it would end the test process)."""


def _raise_terminated(signum, frame):
    raise UnhandledSigterm


def sigterm(model, logits):
    _signal(signal.SIGTERM)
    return logits


def sigterm_twice(model, logits):
    # As under Slurm with torchrun: the job's signal, then torchrun's copy of it.
    for _ in range(2):
        _signal(signal.SIGTERM)
        time.sleep(0.05)
    return logits


def test_sigterm_saves_a_checkpoint_like_ctrl_c_and_resuming_finishes(tiny, tmp_path, capsys, reference):
    out = tmp_path / "run"
    handler = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        tiny((2, sigterm))  # a real SIGTERM (timeout, Slurm, a preempted machine) during the second mini-batch
        line = cli_error(capsys, tiny_args(out), "stopped by SIGTERM", "epoch 1, mini-batch 2", "--resume", status=143)
        assert line.startswith("interrupted:")
        assert signal.getsignal(signal.SIGTERM) is _raise_terminated  # the run gave SIGTERM back
    finally:
        signal.signal(signal.SIGTERM, handler)
    assert (load_checkpoint(out / "checkpoint.pt")["batches"]) == 2
    tiny()
    assert cli.main(tiny_args(out, "--resume")) == 0
    assert_same_run(out, reference)


def test_a_repeated_sigterm_still_lets_the_run_save_its_checkpoint(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    handler = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        tiny((2, sigterm_twice))
        cli_error(capsys, tiny_args(out), "stopped by SIGTERM", "epoch 1, mini-batch 2", status=143)
    finally:
        signal.signal(signal.SIGTERM, handler)
    assert load_checkpoint(out / "checkpoint.pt")["batches"] == 2


def test_sigterm_during_the_final_evaluation_says_training_is_done(tiny, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    evaluate = experiment.evaluate

    def terminated_evaluation(*args, **kwargs):
        _signal(signal.SIGTERM)
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(experiment, "evaluate", terminated_evaluation)
    handler = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        cli_error(capsys, tiny_args(out), "during the final evaluation", "--resume", status=143)
        assert signal.getsignal(signal.SIGTERM) is _raise_terminated
    finally:
        signal.signal(signal.SIGTERM, handler)
    assert not (out / "metrics.json").exists() and (out / "checkpoint.pt").is_file()


def test_a_run_started_with_sigterm_ignored_keeps_ignoring_it(tiny, tmp_path):
    handler = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        tiny((2, sigterm))
        assert cli.main(tiny_args(tmp_path / "run")) == 0
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, handler)


def test_a_batch_of_one_image_for_a_network_with_batchnorm1d_is_one_clear_error(tmp_path, capsys):
    args = ["train", "--preset", "seed004", "--set", "dataset=synthetic", "--train-limit", "8", "--validation-split",
            "4", "--test-limit", "4", "--batch-size", "1", "--epochs", "1", "--device", "cpu", "--no-progress",
            "--out", str(tmp_path / "run")]
    cli_error(capsys, args, "batch_size=1 gives each process mini-batches of 1 image", "BatchNorm1d",
              "at least 2")


def test_the_best_epoch_before_a_resume_stays_the_best_checkpoint(tiny, tmp_path, monkeypatch):
    """Epoch 1 scores best; the resumed epochs 2 and 3 score lower, so checkpoint_best.pt keeps epoch 1."""
    scores = iter([0.9, 0.1, 0.2])
    monkeypatch.setattr(engine, "validate_epoch", lambda *args, **kwargs: (1.0, next(scores)))
    out = tmp_path / "run"
    experiment.train(tiny_config(epochs=1), out, device="cpu", progress=False, log=lambda _: None)
    experiment.train(tiny_config(epochs=3), out, device="cpu", progress=False, resume=True, log=lambda _: None)
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 3
    assert load_checkpoint(out / "checkpoint_best.pt")["epoch"] == 1


def test_ctrl_c_during_the_last_validation_says_training_is_done_and_resuming_only_evaluates(
        tiny, tmp_path, capsys, monkeypatch, reference):
    out = tmp_path / "run"
    validate = engine.validate_epoch
    calls = []

    def interrupted_last_validation(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the second (last) epoch's validation
            _signal()
        return validate(*args, **kwargs)

    monkeypatch.setattr(engine, "validate_epoch", interrupted_last_validation)
    line = cli_error(capsys, tiny_args(out), str(out), "--resume", "after the last epoch", status=130)
    assert "mini-batch" not in line
    monkeypatch.setattr(engine, "validate_epoch", validate)
    assert cli.main(tiny_args(out, "--resume")) == 0
    assert_same_run(out, reference)


# ------------------------------------------------------------------------------ checkpoints and files


def test_a_failed_checkpoint_save_keeps_the_previous_one_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "checkpoint.pt"
    good = {"model": {"w": torch.arange(4.0)}, "epoch": 1, "config": {}, "history": []}
    save_checkpoint(good, target)

    def half_then_disk_full(obj, path, *args, **kwargs):
        Path(path).write_bytes(b"PK\x03\x04 the first half of a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", half_then_disk_full)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint({**good, "epoch": 2}, target)
    state = load_checkpoint(target)
    assert state["epoch"] == 1 and torch.equal(state["model"]["w"], torch.arange(4.0))
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_every_result_writer_is_atomic(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    io.save_csv([{"epoch": 1}], tmp_path / "history.csv")
    before = (tmp_path / "history.csv").read_bytes()
    with pytest.raises(ValueError):  # the second row has other keys: fails after the first row is written
        io.save_csv([{"epoch": 1}, {"other": 2}], tmp_path / "history.csv")
    assert (tmp_path / "history.csv").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["history.csv"]

    written = []
    real_atomic_write = io.atomic_write

    def recording_atomic_write(path, write):
        written.append(Path(path).name)
        return real_atomic_write(path, write)

    monkeypatch.setattr(io, "atomic_write", recording_atomic_write)
    fig = plt.figure()
    io.save_figure(fig, tmp_path / "curves.png")
    plt.close(fig)
    io.save_json({"test_accuracy": 0.5}, tmp_path / "metrics.json")
    io.save_csv([{"epoch": 1}], tmp_path / "history.csv")
    save_checkpoint({"model": {}, "epoch": 0, "config": {}, "history": []}, tmp_path / "checkpoint.pt")
    assert written == ["curves.png", "metrics.json", "history.csv", "checkpoint.pt"]


def test_a_process_killed_while_saving_never_leaves_a_half_file_under_the_final_name(tmp_path):
    target = tmp_path / "checkpoint.pt"
    save_checkpoint({"model": {"w": torch.ones(3)}, "epoch": 1, "config": {}, "history": []}, target)
    script = textwrap.dedent(f"""
        import os, signal, torch
        from cifar_utils.checkpoint import save_checkpoint

        def dies_half_way(obj, path, *args, **kwargs):
            with open(path, "wb") as f:
                f.write(b"PK half a checkpoint")
                f.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        torch.save = dies_half_way
        save_checkpoint({{"model": {{}}, "epoch": 2, "config": {{}}, "history": []}}, {str(target)!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert load_checkpoint(target)["epoch"] == 1
    leftovers = [p.name for p in tmp_path.iterdir() if p != target]
    assert len(leftovers) == 1 and leftovers[0].startswith(".checkpoint.pt.") and leftovers[0].endswith(".tmp")


def test_checkpoints_load_with_weights_only(reference):
    for name in ("checkpoint.pt", "checkpoint_best.pt"):
        state = torch.load(reference / name, weights_only=True)
        assert {"model", "optimizer", "scheduler", "rng", "epoch", "batches", "history", "config"} <= state.keys()


class RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_holding_a_pickled_object_is_refused_without_running_it(tmp_path, capsys):
    path, marker = tmp_path / "evil.pt", tmp_path / "code-ran"
    torch.save({"model": RunsCode(marker), "epoch": 0, "config": {}, "history": []}, path)
    with pytest.raises(CheckpointError, match="could run code") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    cli_error(capsys, ["evaluate", "--checkpoint", str(path)], str(path), "refused")
    assert not marker.exists()


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2  # inside the tensor, which is almost all of the file
    data[middle:middle + 8] = bytes(255 - b for b in data[middle:middle + 8])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncate, _empty, _flip_bytes])
def test_a_truncated_or_corrupt_checkpoint_gives_an_error_naming_the_file(tmp_path, capsys, damage):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"model": {"w": torch.randn(100_000)}, "epoch": 1, "config": {}, "history": []}, path)
    damage(path)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)
    cli_error(capsys, ["evaluate", "--checkpoint", str(path)], str(path), "truncated or corrupt")


def test_resuming_from_a_corrupt_checkpoint_is_a_clear_error(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"not a checkpoint")  # say, a header zeroed by a crash
    cli_error(capsys, tiny_args(out, "--resume"), str(out / "checkpoint.pt"), "truncated or corrupt")


def test_a_run_saved_with_a_setting_it_never_read_is_still_evaluated_and_resumed(tiny, tmp_path, capsys):
    # Saved before such settings were refused: kl_weight under plain cross-entropy changed nothing.
    out = tmp_path / "run"
    assert cli.main(tiny_args(out, "--epochs", "1")) == 0
    path = out / "checkpoint.pt"
    state = load_checkpoint(path)
    state["config"]["kl_weight"] = 0.5
    save_checkpoint(state, path)
    assert cli.main(["evaluate", "--checkpoint", str(path)]) == 0
    capsys.readouterr()
    assert cli.main(tiny_args(out, "--epochs", "2", "--resume")) == 0  # the same run, continued


def test_a_file_or_folder_that_is_no_checkpoint_is_named_without_advice_to_delete_it(tmp_path, capsys):
    (tmp_path / "metrics.json").write_text("{}")
    line = cli_error(capsys, ["evaluate", "--checkpoint", str(tmp_path / "metrics.json")], "is not a checkpoint")
    assert "Delete" not in line
    save_checkpoint({"model": {}, "epoch": 1, "config": {}, "history": []}, tmp_path / "checkpoint.pt")
    cli_error(capsys, ["evaluate", "--checkpoint", str(tmp_path)], "is a folder", str(tmp_path / "checkpoint.pt"))
    newer = tmp_path / "newer.pt"
    io.save_torch({"model": {}, "epoch": 1, "config": {}, "history": [], "format_version": 99}, newer)
    with pytest.raises(CheckpointError, match="newer cifar_utils"):
        load_checkpoint(newer)


def test_an_earlier_run_is_never_silently_overwritten(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    args = tiny_args(out, "--epochs", "1")
    assert cli.main(args) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert {"checkpoint.pt", "metrics.json", "history.csv"} <= before.keys()
    cli_error(capsys, args, str(out), "--resume", "--overwrite")
    with pytest.raises(OutputExistsError):
        experiment.train(tiny_config(epochs=1), out, device="cpu", progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert cli.main([*args, "--resume"]) == 0  # a finished run: nothing to train, files rewritten
    assert "nothing to resume" in capsys.readouterr().out
    assert cli.main([*args, "--overwrite"]) == 0
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1


def test_a_new_run_gets_its_own_directory(tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(tiny_args(None, "--epochs", "1")) == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("seed003-") and (run / "metrics.json").exists()


def test_two_runs_started_in_the_same_second_get_two_directories(tmp_path, monkeypatch):
    import datetime
    import types

    monkeypatch.chdir(tmp_path)
    frozen = datetime.datetime(2026, 12, 8, 9, 30, 0)
    monkeypatch.setattr(experiment, "datetime", types.SimpleNamespace(datetime=types.SimpleNamespace(now=lambda: frozen)))
    first, second = experiment._new_run_dir("seed003"), experiment._new_run_dir("seed003")
    assert (first.name, second.name) == ("seed003-20261208-093000", "seed003-20261208-093000-2")
    assert first.is_dir() and second.is_dir()


# ------------------------------------------------------------------------------------------ bad data


def make_image_folder(root: Path, train=("cat", "dog"), test=None, per_class: int = 2) -> Path:
    for split, classes in (("train", train), ("test", test or train)):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = np.full((32, 32, 3), 60 * c + 20 * i, np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def write_truncated_jpeg(path: Path) -> Path:
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, "JPEG")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def write_text_png(path: Path) -> Path:
    path.write_text("this is not an image\n")
    return path


def data_args(root: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["train", "--preset", "seed003", "--data-root", str(root), "--out", str(tmp_path / "run"),
            "--device", "cpu", *extra]


def _missing(root: Path) -> str:
    return "does not exist"


def _empty_root(root: Path) -> str:
    root.mkdir()
    return "is empty"


def _neither_layout(root: Path) -> str:
    (root / "images").mkdir(parents=True)
    (root / "readme.txt").write_text("my photos")
    return "holds neither"


def _empty_class(root: Path) -> str:
    make_image_folder(root)
    (root / "train" / "bird").mkdir()
    (root / "test" / "bird").mkdir()
    return "train/bird has no images"


def _class_names_differ(root: Path) -> str:
    make_image_folder(root, train=("cat", "dog"), test=("cat", "dgo"))
    return "only in train: ['dog']; only in test: ['dgo']"


@pytest.mark.parametrize("make_root", [_missing, _empty_root, _neither_layout, _empty_class, _class_names_differ])
def test_unusable_data_root_gives_one_clear_error(tmp_path, capsys, make_root):
    root = tmp_path / "data"
    expected = make_root(root)
    with pytest.raises(DataError) as info:
        load_dataset(root)
    assert expected in str(info.value) and str(root) in str(info.value)
    cli_error(capsys, data_args(root, tmp_path), expected)


@pytest.mark.parametrize("write_bad_file", [write_truncated_jpeg, write_text_png])
def test_a_corrupt_or_non_image_file_is_an_error_naming_the_file(tmp_path, capsys, write_bad_file):
    root = make_image_folder(tmp_path / "data")
    bad = write_bad_file(root / "train" / "dog" / ("bad.jpg" if write_bad_file is write_truncated_jpeg else "bad.png"))
    with pytest.raises(DataError, match="--skip-bad-files") as info:
        load_dataset(root)
    assert f"cannot read image {bad}" in str(info.value)
    cli_error(capsys, data_args(root, tmp_path), str(bad))


def test_skip_bad_files_skips_them_with_a_warning_that_counts_them(tiny, tmp_path):
    root = make_image_folder(tmp_path / "data")
    write_truncated_jpeg(root / "train" / "cat" / "bad.jpg")
    write_text_png(root / "test" / "dog" / "bad.png")
    for load in ("decoded", "cached"):  # the second load comes from the cache and must warn again
        with pytest.warns(UserWarning, match="skipped 2 unreadable image file"):
            data = load_dataset(root, skip_bad_files=True)
        assert data.train.class_counts() == [2, 2] and data.test.class_counts() == [2, 2], load
    with pytest.warns(UserWarning, match="skipped 2 unreadable image file"):
        code = cli.main(data_args(root, tmp_path, "--skip-bad-files", "--set", "model=tiny", "--epochs", "1",
                                  "--validation-split", "1", "--batch-size", "2", "--no-progress"))
    assert code == 0


def test_a_class_whose_images_are_all_unreadable_is_an_error_even_when_skipping(tmp_path):
    root = make_image_folder(tmp_path / "data", per_class=1)
    (root / "train" / "dog" / "0.png").write_text("not an image")
    with pytest.warns(UserWarning, match="skipped 1"), pytest.raises(DataError, match="no readable images.*dog"):
        load_dataset(root, skip_bad_files=True)


# ---------------------------------------------------------------------------------------- bad config


def test_unknown_preset_and_unknown_field_are_clear_errors(tmp_path, capsys):
    args = ["--set", "dataset=synthetic", "--out", str(tmp_path / "run")]
    cli_error(capsys, ["train", "--preset", "seed999", *args], "unknown preset 'seed999'", "seed003")
    cli_error(capsys, ["train", "--preset", "seed003", "--set", "colour=red", *args],
              "unknown config field", "colour", "validation_split")
    with pytest.raises(ConfigError, match="unknown preset"):
        from_preset("seed999")
    with pytest.raises(ConfigError, match="colour"):
        from_preset("seed003", colour="red")
    # A preset's recipe under another preset's name would mislabel the run in every table.
    cli_error(capsys, ["train", "--preset", "cpu", "--set", "preset=seed000", *args], "cannot rename preset 'cpu'",
              "--preset seed000")
    assert from_preset("cpu", preset="cpu").preset == "cpu"
    cli_error(capsys, ["train", "--preset", "cpu", "--set", "preset=custom", *args], "cannot rename preset 'cpu'",
              "chosen with --preset")


def test_sync_batchnorm_on_the_cpu_is_one_clear_error_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "run"
    cli_error(capsys, ["train", "--preset", "seed003", "--set", "dataset=synthetic", "--set", "sync_batchnorm=true",
                       "--device", "cpu", "--out", str(out)], "sync_batchnorm=True needs CUDA GPUs", "drop it")
    assert not out.exists()


@pytest.mark.parametrize("flag, value, field", [
    ("--lr", "0", "lr"), ("--lr", "-0.1", "lr"), ("--epochs", "0", "epochs"), ("--batch-size", "0", "batch_size"),
    ("--accumulation-steps", "0", "accumulation_steps"),
])
def test_invalid_values_are_clear_errors(tmp_path, capsys, flag, value, field):
    line = cli_error(capsys, ["train", "--preset", "seed003", "--set", "dataset=synthetic", flag, value,
                              "--out", str(tmp_path / "run")], f"{field}=")
    assert "invalid" in line
    with pytest.raises(ConfigError, match=f"^{field}="):
        from_preset("seed003", **{field: type(getattr(Config(), field))(value)})


def test_a_validation_split_or_train_limit_larger_than_the_data_is_a_clear_error(tmp_path, capsys, synthetic):
    base = ["train", "--preset", "seed003", "--set", "dataset=synthetic", "--out", str(tmp_path / "run")]
    cli_error(capsys, [*base, "--validation-split", "600"],
              "validation_split=600 is not smaller than the training set (600 images)")
    cli_error(capsys, [*base, "--validation-split", "100", "--train-limit", "1000"],
              "train_limit=1000 is larger than the training split (500 images")
    with pytest.raises(DataError, match="validation_split=600"):
        make_splits(synthetic, 600)
    with pytest.raises(DataError, match="train_limit=1000"):
        make_splits(synthetic, 100, train_limit=1000)


@pytest.mark.parametrize("field, value", [
    ("lr", "0.1"), ("epochs", "5"), ("epochs", 2.5), ("batch_size", True), ("train_limit", "none"),
    ("keep_best", "yes"), ("data_root", 3),
])
def test_notebook_parameters_of_the_wrong_type_are_rejected(field, value):
    with pytest.raises(ConfigError, match=f"^{field}=.*has type {type(value).__name__}"):
        Config(**{field: value}).validate()
    with pytest.raises(ConfigError, match=field):
        from_preset("seed003", **{field: value})


# -------------------------------------------------------------------------------- failures in training


def test_out_of_memory_suggests_smaller_batches_and_keeps_the_checkpoint(tiny, tmp_path, capsys):
    tiny((3, out_of_memory))
    out = tmp_path / "run"
    line = cli_error(capsys, tiny_args(out, "--checkpoint-every-steps", "1"), "ran out of memory",
                     "--batch-size 8", "--accumulation-steps 2", f"last checkpoint, {out / 'checkpoint.pt'}, is intact")
    assert "Tried to allocate" not in line  # one message of ours, not torch's
    assert (load_checkpoint(out / "checkpoint.pt")["batches"]) == 2
    with pytest.raises(OutOfMemoryError, match="batch_size=16"):
        experiment.train(tiny_config(), tmp_path / "python", device="cpu", progress=False)


def test_out_of_memory_before_any_checkpoint_claims_none(tiny, tmp_path, capsys):
    tiny((1, out_of_memory))
    line = cli_error(capsys, tiny_args(tmp_path / "run"), "ran out of memory", "This run had saved no checkpoint yet")
    assert "intact" not in line


def test_out_of_memory_never_offers_to_resume_the_run_that_overwrite_replaces(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(tiny_args(out, "--epochs", "1")) == 0
    capsys.readouterr()
    tiny((1, out_of_memory))
    line = cli_error(capsys, tiny_args(out, "--lr", "0.01", "--overwrite"), "ran out of memory",
                     "This run had saved no checkpoint yet")
    assert "--resume" not in line  # the checkpoint there is the earlier run's, trained at another lr
    assert load_checkpoint(out / "checkpoint.pt")["config"]["lr"] == 0.05


def test_nan_loss_stops_naming_epoch_and_step_and_keeps_the_last_good_checkpoint(tiny, tmp_path, capsys):
    tiny((BATCHES_PER_EPOCH + 2, nan_loss))
    out = tmp_path / "run"
    cli_error(capsys, tiny_args(out, "--checkpoint-every-steps", "1"), "training diverged",
              "the loss became nan at epoch 2, mini-batch 2", "last good checkpoint was kept")
    state = load_checkpoint(out / "checkpoint.pt")
    assert (state["epoch"], state["batches"]) == (1, 1) and finite(state)
    with pytest.raises(TrainingDivergedError) as info:
        experiment.train(tiny_config(), tmp_path / "python", device="cpu", progress=False)
    assert (info.value.epoch, info.value.batch) == (2, 2)


def test_non_finite_weights_are_never_checkpointed(tiny, tmp_path, capsys):
    tiny((3, overflowing_gradient))  # the loss stays finite: only the check before saving can notice
    out = tmp_path / "run"
    line = cli_error(capsys, tiny_args(out, "--checkpoint-every-steps", "1"), "training diverged")
    assert re.search(r"weight \S+ became (nan|-?inf) at epoch 1, mini-batch 3", line), line
    state = load_checkpoint(out / "checkpoint.pt")
    assert (state["epoch"], state["batches"]) == (0, 2) and finite(state)


def test_a_validation_loss_that_overflows_stops_the_run_before_it_is_checkpointed(tiny, tmp_path, capsys,
                                                                                 monkeypatch):
    # Finite weights can still give logits that overflow: 03's check cell caught such a run at lr 1e30,
    # which train had finished and reported as if nothing had happened.
    monkeypatch.setattr(engine, "validate_epoch", lambda *args, **kwargs: (float("inf"), 0.1))
    out = tmp_path / "run"
    cli_error(capsys, tiny_args(out, "--epochs", "1"), "training diverged",
              "the validation loss became inf at epoch 1", "nothing was saved")
    assert not (out / "checkpoint.pt").exists() and not (out / "metrics.json").exists()


def test_a_huge_learning_rate_stops_with_a_clear_error_and_a_finite_checkpoint(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    line = cli_error(capsys, tiny_args(out, "--lr", "1e30", "--checkpoint-every-steps", "1"), "training diverged")
    where = re.search(r"became (nan|-?inf) at epoch 1, mini-batch (\d+)", line)
    assert where, line
    state = load_checkpoint(out / "checkpoint.pt")  # the first step starts from finite weights, so one exists
    assert state["batches"] < int(where.group(2)) and finite(state)


# --------------------------------------------------------------------------------------- determinism


def test_the_same_seed_on_the_cpu_gives_identical_runs(tiny, tmp_path, reference):
    assert cli.main(tiny_args(tmp_path / "again")) == 0
    assert_same_run(tmp_path / "again", reference, atol=0)


@pytest.fixture
def restore_determinism(monkeypatch):
    # set, then removed: monkeypatch then restores what was there before, absent included, after train sets it
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2:]


def test_deterministic_switch_asks_torch_for_deterministic_kernels(tiny, tmp_path, restore_determinism):
    torch.use_deterministic_algorithms(False)
    experiment.train(tiny_config(epochs=1, deterministic=True), tmp_path / "run", device="cpu", progress=False)
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    # Where torch has no deterministic kernel (CUDA's adaptive-pooling backward, say) it warns rather than stops.
    assert torch.is_deterministic_algorithms_warn_only_enabled()


def test_seeding_covers_python_numpy_and_torch():
    import random

    draws = []
    for _ in range(2):
        set_seed(123)
        draws.append((random.random(), float(np.random.rand()), float(torch.rand(1))))
    assert draws[0] == draws[1]
    assert synthetic_dataset(20, 10, seed=1).train.images.equal(synthetic_dataset(20, 10, seed=1).train.images)
