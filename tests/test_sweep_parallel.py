"""The learning-rate sweep spreads its runs over devices: in parallel across devices, in order on each."""

from __future__ import annotations

import threading

import pytest

from cifar_utils import sweep


def fake_runs(monkeypatch, barrier=None):
    """Replace the papermill execution by a record of which device ran which rate, and when."""
    events = []

    def run_one(notebook, plan, base_parameters, log):
        lr, device = plan.learning_rate, plan.device
        events.append(("start", lr, device))
        if barrier is not None:
            barrier.wait(timeout=10)  # only returns once a run on the other device has started too
        events.append(("end", lr, device))
        return sweep.SweepRun(lr, plan.seed, device, plan.run_dir, plan.run_dir / notebook.name, None, "not run (test)")

    monkeypatch.setattr(sweep, "_run_one", run_one)
    monkeypatch.setattr(sweep.io, "save_csv", lambda rows, path: None)
    return events


def test_runs_on_two_devices_overlap(monkeypatch, tmp_path):
    events = fake_runs(monkeypatch, threading.Barrier(2))
    with pytest.raises(sweep.CifarUtilsError, match="every run of the sweep failed"):
        sweep.run_lr_sweep([0.1, 0.01], {"preset": "seed004"}, tmp_path, devices=["cpu", "cpu:0"], log=lambda _: None)
    starts = [e for e in events[:2] if e[0] == "start"]
    assert len(starts) == 2  # both started before either ended: the barrier let them through together
    assert {(lr, device) for _, lr, device in starts} == {(0.1, "cpu"), (0.01, "cpu:0")}


def test_runs_on_one_device_go_one_after_another_and_keep_their_order(monkeypatch, tmp_path):
    events = fake_runs(monkeypatch)
    with pytest.raises(sweep.CifarUtilsError):
        sweep.run_lr_sweep([0.3, 0.1, 0.03], {"preset": "seed004"}, tmp_path, devices=["cpu"], log=lambda _: None)
    assert events == [(kind, lr, "cpu") for lr in (0.3, 0.1, 0.03) for kind in ("start", "end")]


def test_round_robin_assignment_and_result_order(monkeypatch, tmp_path):
    fake_runs(monkeypatch)
    captured = {}
    real_table = sweep.sweep_table

    def table(runs):
        captured["runs"] = runs
        return real_table(runs)

    monkeypatch.setattr(sweep, "sweep_table", table)
    with pytest.raises(sweep.CifarUtilsError):
        sweep.run_lr_sweep([0.4, 0.2, 0.1, 0.05], {"preset": "seed004"}, tmp_path, devices=["cpu", "cpu:0"],
                           log=lambda _: None)
    assert [(r.learning_rate, r.device) for r in captured["runs"]] == [
        (0.4, "cpu"), (0.2, "cpu:0"), (0.1, "cpu"), (0.05, "cpu:0")]


def test_seeds_are_spread_round_robin_too_and_keep_their_order(monkeypatch, tmp_path):
    fake_runs(monkeypatch)
    captured = {}
    monkeypatch.setattr(sweep, "sweep_table", lambda runs: captured.setdefault("runs", runs) and [])
    with pytest.raises(sweep.CifarUtilsError):
        sweep.run_lr_sweep([0.1, 0.01], {"preset": "seed004"}, tmp_path, seeds=[0, 1, 2], devices=["cpu", "cpu:0"],
                           log=lambda _: None)
    assert [(r.learning_rate, r.seed, r.device) for r in captured["runs"]] == [
        (0.1, 0, "cpu"), (0.1, 1, "cpu:0"), (0.1, 2, "cpu"), (0.01, 0, "cpu:0"), (0.01, 1, "cpu"), (0.01, 2, "cpu:0")]


def test_default_devices_without_several_gpus_is_one_sequential_device():
    assert sweep.parallel_devices() == [None]


@pytest.mark.parametrize("devices", ['["cuda:0", "cuda:1"]', ["cuda:0", "not a device"]])
def test_devices_that_are_not_a_list_of_device_names_are_refused(tmp_path, devices):
    with pytest.raises(sweep.ConfigError, match="devices"):
        sweep.run_lr_sweep([0.1], {"preset": "seed004"}, tmp_path, devices=devices, log=lambda _: None)
