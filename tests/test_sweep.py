"""The learning-rate sweep: argument checks, one run folder per (learning rate, seed), the table's
accuracies all of the evaluated weights, and the per-rate summary that chooses on validation only.

The notebook execution is replaced by a fake that writes a run's files as 03 would, so these tests
start no kernels.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from cifar_utils import io, report, sweep
from cifar_utils.checkpoint import CHECKPOINT_NAME
from cifar_utils.errors import CifarUtilsError, ConfigError, OutputExistsError

NOTEBOOK_DEFAULTS = report.notebook_parameters(sweep.TRAIN_NOTEBOOK)


def fake_accuracies(lr: float, seed: int) -> dict:
    """Made-up numbers that differ per run: the evaluated weights' accuracies and a higher curve peak."""
    return {"validation_accuracy": 0.5 + lr + seed / 100, "test_accuracy": 0.4 + lr + seed / 100,
            "curve_peak": 0.9 + lr}


def fake_execute(calls: list, keep_best: bool = False, fail_lr: float | None = None):
    """Stands in for report.execute_notebook: writes metrics.json and history.csv into the run's folder,
    with the config 03 would have trained, and records the parameters it was given."""

    def execute(notebook, output, parameters):
        calls.append(dict(parameters))
        if parameters["lr"] == fail_lr:
            kept = Path(output).with_name("03_train.failed.ipynb")
            kept.parent.mkdir(parents=True, exist_ok=True)
            kept.write_text("{}")
            raise report.NotebookFailed("TrainingDivergedError: the loss became nan", kept, "TrainingDivergedError")
        values = {k: v for k, v in {**NOTEBOOK_DEFAULTS, **parameters}.items() if k in sweep.CONFIG_PARAMETERS}
        config = report.notebook_config(values.pop("preset"), smoke=report.smoke_mode(), lr=parameters["lr"], **values)
        config = config.to_dict() | {"keep_best": keep_best}
        acc = fake_accuracies(parameters["lr"], parameters["seed"])
        out = Path(parameters["out_dir"])
        io.save_json({"config": config, "validation_accuracy": acc["validation_accuracy"],
                      "test_accuracy": acc["test_accuracy"], "train_seconds": 12.5, "date": "2026-01-02T03:04:05"},
                     out / "metrics.json")
        # The curve peaks at epoch 1 and ends lower: only keep_best tests the peak's weights.
        history = [{"epoch": 1, "train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.0, "val_acc": acc["curve_peak"],
                    "lr": parameters["lr"], "seconds": 6.0},
                   {"epoch": 2, "train_loss": 0.9, "train_acc": 0.6, "val_loss": 1.1, "val_acc": 0.3,
                    "lr": parameters["lr"], "seconds": 6.5}]
        io.save_csv(history, out / "history.csv")
        Path(output).write_text("{}")
        return Path(output)

    return execute


def quiet_sweep(*args, **kwargs):
    return sweep.run_lr_sweep(*args, devices=["cpu"], log=lambda _: None, **kwargs)


# ----------------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("learning_rates, base, message", [
    ([], {}, "non-empty list"),
    ("0.1", {}, "non-empty list"),
    ([0.1, -1.0], {}, "learning rate -1.0"),
    ([0.1, 0.1], {}, "repeats"),
    ([0.1], {"learning_rate": 0.1}, "unknown parameter.*learning_rate"),
    ([0.1], {"lr": 0.1}, "set by the sweep"),
    ([0.1], {"use_shipped": True}, "use_shipped are set by the sweep"),
    ([0.1], {"seed": 1}, "seed=1 in base_parameters.*seeds=\\[0, 1, 2\\]"),
    ([0.1], {"preset": "seed999"}, "unknown preset"),
])
def test_sweep_rejects_bad_arguments_before_running(learning_rates, base, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        sweep.run_lr_sweep(learning_rates, base, tmp_path)
    assert not any(tmp_path.iterdir())  # nothing ran


@pytest.mark.parametrize("seeds, message", [((), "non-empty list"), ("012", "non-empty list"), ([0, -1], "seed -1"),
                                            ([0, 1.5], "seed 1.5"), ([0, True], "seed True"), ([1, 1], "repeats")])
def test_sweep_rejects_bad_seeds(seeds, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        sweep.run_lr_sweep([0.1], {"preset": "seed004"}, tmp_path, seeds=seeds)
    assert not any(tmp_path.iterdir())


def test_sweep_stops_before_running_when_a_folder_holds_other_settings(tmp_path, monkeypatch):
    monkeypatch.setenv(report.SMOKE_ENV, "1")
    run_dir = sweep.run_path(tmp_path, 0.1, 0)
    run_dir.mkdir(parents=True)
    config = report.notebook_config("seed003", smoke=True, lr=0.1, batch_size=64, seed=0)
    (run_dir / "metrics.json").write_text(json.dumps({"config": config.to_dict(), "test_accuracy": 0.5}))
    (run_dir / "history.csv").write_text("epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds\n")
    with pytest.raises(OutputExistsError, match="batch_size: 64 -> 32"):
        sweep.run_lr_sweep([0.1, 0.01], {"preset": "seed003", "batch_size": 32}, tmp_path)
    assert not (tmp_path / sweep.run_dir_name(0.01)).exists()


def test_a_run_of_the_one_seed_layout_is_refused_not_mixed_in(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(sweep, "execute_notebook", fake_execute(calls))
    old = tmp_path / sweep.run_dir_name(0.1)
    old.mkdir()
    (old / "metrics.json").write_text("{}")
    with pytest.raises(OutputExistsError, match="one-seed layout"):
        quiet_sweep([0.1], {"preset": "seed004"}, tmp_path)
    assert calls == []


def test_an_interrupted_run_stops_the_sweep_unless_resume_continues_it(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(sweep, "execute_notebook", fake_execute(calls))
    quiet_sweep([0.1, 0.01], {"preset": "seed004"}, tmp_path)
    interrupted = sweep.run_path(tmp_path, 0.01, 0)
    (interrupted / "metrics.json").unlink()  # its checkpoint stays: killed before the end
    (interrupted / CHECKPOINT_NAME).write_bytes(b"a checkpoint")
    calls.clear()
    with pytest.raises(OutputExistsError, match="holds an unfinished run.*resume=True \\(for the report: --resume\\)"):
        quiet_sweep([0.1, 0.01], {"preset": "seed004"}, tmp_path)
    assert calls == []  # refused before anything ran
    runs = quiet_sweep([0.1, 0.01], {"preset": "seed004"}, tmp_path, resume=True)
    assert [(call["lr"], call["resume"]) for call in calls] == [(0.01, True)]  # the finished one is reused
    assert [run.reused for run in runs] == [True, False]


def test_a_run_that_diverged_is_reported_again_not_retrained_unless_asked(tmp_path, monkeypatch):
    """A diverged run keeps its last good checkpoint and no metrics.json; the next sweep with the same settings
    reports it from diverged.json instead of refusing the whole sweep as if the run were interrupted."""
    calls = []
    monkeypatch.setattr(sweep, "execute_notebook", fake_execute(calls, fail_lr=0.5))
    quiet_sweep([0.5, 0.01], {"preset": "seed004"}, tmp_path)
    diverged = sweep.run_path(tmp_path, 0.5, 0)
    (diverged / CHECKPOINT_NAME).write_bytes(b"its last good checkpoint")
    assert json.loads((diverged / sweep.DIVERGED_NAME).read_text())["config"]["lr"] == 0.5
    calls.clear()
    runs = quiet_sweep([0.5, 0.01], {"preset": "seed004"}, tmp_path)
    assert calls == [] and [run.reused for run in runs] == [False, True]
    assert runs[0].error.startswith("TrainingDivergedError: the loss became nan (in an earlier sweep")
    assert runs[0].notebook == diverged / "03_train.failed.ipynb"
    assert sweep.sweep_table(runs)[0]["status"].startswith("failed: TrainingDivergedError")
    # Other settings: refused before anything runs, as for a finished run with other settings.
    with pytest.raises(OutputExistsError, match="diverged with other settings \\(batch_size"):
        quiet_sweep([0.5, 0.01], {"preset": "seed004", "batch_size": 32}, tmp_path)
    assert calls == []
    # resume=True continues its checkpoint; overwrite=True trains both again from the start.
    quiet_sweep([0.5, 0.01], {"preset": "seed004"}, tmp_path, resume=True)
    assert [(call["lr"], call["resume"]) for call in calls] == [(0.5, True)]
    calls.clear()
    quiet_sweep([0.5, 0.01], {"preset": "seed004"}, tmp_path, overwrite=True)
    assert [(call["lr"], call["overwrite"]) for call in calls] == [(0.5, True), (0.01, True)]
    # A success removes the marker: the run is finished.
    monkeypatch.setattr(sweep, "execute_notebook", fake_execute(calls))
    quiet_sweep([0.5], {"preset": "seed004"}, tmp_path, overwrite=True)
    assert not (diverged / sweep.DIVERGED_NAME).exists() and (diverged / "metrics.json").is_file()


def test_a_run_whose_kernel_died_stays_unfinished_for_resume(tmp_path, monkeypatch):
    finishing = fake_execute([])

    def dead_kernel_at_half(notebook, output, parameters):
        if parameters["lr"] != 0.5:
            return finishing(notebook, output, parameters)
        Path(parameters["out_dir"]).mkdir(parents=True, exist_ok=True)
        (Path(parameters["out_dir"]) / CHECKPOINT_NAME).write_bytes(b"an epoch's checkpoint")
        raise report.NotebookFailed("the kernel running 03_train.ipynb died", None, None)

    monkeypatch.setattr(sweep, "execute_notebook", dead_kernel_at_half)
    died, _ = quiet_sweep([0.5, 0.01], {"preset": "seed004"}, tmp_path)
    assert died.notebook is None and not (died.run_dir / sweep.DIVERGED_NAME).exists()
    with pytest.raises(OutputExistsError, match="holds an unfinished run.*resume=True"):
        quiet_sweep([0.5, 0.01], {"preset": "seed004"}, tmp_path)


# ------------------------------------------------------------------------------------- seeds


def test_one_run_folder_per_learning_rate_and_seed(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(sweep, "execute_notebook", fake_execute(calls))
    runs = quiet_sweep([0.1, 0.01], {"preset": "seed004"}, tmp_path, seeds=[0, 3])
    expected = [(0.1, 0), (0.1, 3), (0.01, 0), (0.01, 3)]
    assert [(run.learning_rate, run.seed) for run in runs] == expected
    assert [(call["lr"], call["seed"]) for call in calls] == expected
    for run, call in zip(runs, calls):
        assert run.run_dir == tmp_path / f"lr_{run.learning_rate:g}" / f"seed_{run.seed}"
        assert call["out_dir"] == str(run.run_dir.resolve()) and (run.run_dir / "metrics.json").is_file()
        assert call["use_shipped"] is False  # a sweep's run never starts as a copy of 03's committed run
        assert set(call) - {"preset"} == set(sweep.PER_RUN_PARAMETERS)  # all it sets, all it refuses from the caller
        assert run.record.metrics["config"]["seed"] == run.seed
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.glob("lr_*/seed_*")) == [
        "lr_0.01/seed_0", "lr_0.01/seed_3", "lr_0.1/seed_0", "lr_0.1/seed_3"]
    assert (tmp_path / sweep.TABLE_NAME).is_file() and (tmp_path / sweep.SUMMARY_NAME).is_file()

    # The same sweep again trains nothing: every (rate, seed) run is reused.
    calls.clear()
    again = quiet_sweep([0.1, 0.01], {"preset": "seed004"}, tmp_path, seeds=[0, 3])
    assert calls == [] and all(run.reused for run in again)
    assert {row["status"] for row in sweep.sweep_table(again)} == {"reused: trained 2026-01-02"}  # its date
    # A new seed trains only that seed.
    more = quiet_sweep([0.1, 0.01], {"preset": "seed004"}, tmp_path, seeds=[0, 3, 4])
    assert [(call["lr"], call["seed"]) for call in calls] == [(0.1, 4), (0.01, 4)]
    assert [run.reused for run in more] == [True, True, False, True, True, False]
    assert all(run.notebook.is_file() for run in more)


def test_a_finished_run_trained_outside_the_sweep_is_reused_without_a_notebook(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(sweep, "execute_notebook", fake_execute(calls))
    quiet_sweep([0.1], {"preset": "seed004"}, tmp_path, seeds=[0])
    (tmp_path / "lr_0.1" / "seed_0" / "03_train.ipynb").unlink()  # as `train --out` leaves a run folder
    calls.clear()
    lines = []
    [run] = sweep.run_lr_sweep([0.1], {"preset": "seed004"}, tmp_path, seeds=[0], devices=["cpu"], log=lines.append)
    assert calls == [] and run.reused and run.notebook is None
    assert "no 03_train.ipynb: it was trained outside the sweep" in lines[-1]


def test_a_failed_run_is_a_row_and_the_others_go_on(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(sweep, "execute_notebook", fake_execute(calls, fail_lr=0.5))
    runs = quiet_sweep([0.5, 0.01], {"preset": "seed004"}, tmp_path, seeds=[0, 1])
    rows = sweep.sweep_table(runs)
    assert [row["status"].split(":")[0] for row in rows] == ["failed", "failed", "ok", "ok"]
    assert rows[0]["status"] == "failed: TrainingDivergedError: the loss became nan"
    assert runs[0].notebook == runs[0].run_dir / "03_train.failed.ipynb" and runs[0].notebook.is_file()
    assert list(sweep.sweep_histories(runs)) == ["lr=0.01"] and len(sweep.sweep_histories(runs)["lr=0.01"]) == 2


def test_every_run_failing_stops_the_sweep(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "execute_notebook", fake_execute([], fail_lr=0.5))
    with pytest.raises(CifarUtilsError, match="every run of the sweep failed"):
        quiet_sweep([0.5], {"preset": "seed004"}, tmp_path, seeds=[0, 1])


# ------------------------------------------------------------------------------------- table


@pytest.mark.parametrize("keep_best, evaluated", [(False, "last epoch"), (True, "best epoch")])
def test_table_accuracies_are_those_of_the_evaluated_weights(tmp_path, monkeypatch, keep_best, evaluated):
    monkeypatch.setattr(sweep, "execute_notebook", fake_execute([], keep_best=keep_best))
    (row,) = sweep.sweep_table(quiet_sweep([0.1], {"preset": "seed004"}, tmp_path, seeds=[2]))
    acc = fake_accuracies(0.1, 2)
    # val_acc and test_acc both come from metrics.json (one checkpoint), never the curve's peak epoch.
    assert (row["val_acc"], row["test_acc"]) == (acc["validation_accuracy"], acc["test_accuracy"])
    assert row["curve_best_val_acc"] == acc["curve_peak"] != row["val_acc"]
    assert row["evaluated"] == evaluated
    assert (row["learning_rate"], row["seed"], row["epochs"], row["status"]) == (0.1, 2, 2, "ok")


def test_table_reports_failed_runs():
    failed = sweep.SweepRun(0.5, 1, None, Path("x"), Path("x/03_train.failed.ipynb"), None, "diverged")
    (row,) = sweep.sweep_table([failed])
    assert row["learning_rate"] == 0.5 and row["seed"] == 1 and row["status"] == "failed: diverged"
    assert set(row) == {"learning_rate", "seed", "status", "epochs", "evaluated", "val_acc", "test_acc",
                        "curve_best_val_acc", "train_seconds"}
    assert math.isnan(row["val_acc"]) and math.isnan(row["test_acc"])


# ----------------------------------------------------------------------------------- summary


def row(lr, seed, val, test, seconds=10.0, status="ok"):
    return {"learning_rate": lr, "seed": seed, "status": status, "val_acc": val, "test_acc": test,
            "train_seconds": seconds}


def test_summary_means_and_sample_stds_per_learning_rate():
    rows = [row(0.1, 0, 0.60, 0.50, 10.0), row(0.1, 1, 0.70, 0.56, 20.0), row(0.1, 2, 0.80, 0.62, 30.0),
            row(0.01, 0, 0.65, 0.40), row(0.01, 1, math.nan, math.nan, math.nan, status="failed: diverged")]
    high, low = sweep.summarize_by_learning_rate(rows)
    assert (high["learning_rate"], high["runs"], high["failed"]) == (0.1, 3, 0)
    assert high["val_acc_mean"] == pytest.approx(0.70) and high["val_acc_std"] == pytest.approx(0.10)  # ddof=1
    assert high["test_acc_mean"] == pytest.approx(0.56) and high["test_acc_std"] == pytest.approx(0.06)
    assert high["train_seconds_mean"] == pytest.approx(20.0)
    # The failed run is counted but left out of the numbers; one run has no spread.
    assert (low["learning_rate"], low["runs"], low["failed"]) == (0.01, 1, 1)
    assert low["val_acc_mean"] == pytest.approx(0.65) and math.isnan(low["val_acc_std"])
    assert low["test_acc_mean"] == pytest.approx(0.40) and math.isnan(low["test_acc_std"])


def test_a_rate_whose_runs_all_failed_has_nan_numbers():
    (only,) = sweep.summarize_by_learning_rate([row(0.5, 0, math.nan, math.nan, status="failed: x")])
    assert (only["runs"], only["failed"]) == (0, 1) and math.isnan(only["val_acc_mean"])
    with pytest.raises(CifarUtilsError, match="no learning rate has a finished run"):
        sweep.chosen_learning_rate([only])


def test_chosen_learning_rate_uses_validation_not_test():
    rows = [row(0.1, 0, 0.70, 0.40), row(0.1, 1, 0.72, 0.42),  # best validation, worse test
            row(0.01, 0, 0.60, 0.90), row(0.01, 1, 0.62, 0.92),  # best test
            row(1.0, 0, math.nan, math.nan, status="failed: diverged")]
    assert sweep.chosen_learning_rate(sweep.summarize_by_learning_rate(rows)) == 0.1


def test_a_rate_that_failed_on_some_seeds_is_not_chosen_for_the_seeds_it_survived():
    rows = [row(0.1, s, 0.80, 0.8) for s in range(3)]
    rows += [row(0.5, 0, 0.82, 0.8), row(0.5, 1, math.nan, math.nan, status="failed: diverged"),
             row(0.5, 2, math.nan, math.nan, status="failed: diverged")]
    assert sweep.chosen_learning_rate(sweep.summarize_by_learning_rate(rows)) == 0.1
    only_partial = [row(0.5, 0, 0.82, 0.8), row(0.5, 1, math.nan, math.nan, status="failed: diverged")]
    assert sweep.chosen_learning_rate(sweep.summarize_by_learning_rate(only_partial)) == 0.5


def test_readable_rows_show_accuracies_in_percent():
    rows = [row(0.5, 0, 0.8866, 0.8843, seconds=400.04), row(0.5, 1, math.nan, math.nan, status="failed: x")]
    shown = sweep.readable(rows)
    assert shown[0] == {**rows[0], "val_acc": "88.66%", "test_acc": "88.43%", "train_seconds": "400.0"}
    assert (shown[1]["val_acc"], shown[1]["learning_rate"]) == ("n/a", 0.5)
    (summary,) = sweep.readable(sweep.summarize_by_learning_rate(rows[:1]))
    assert (summary["val_acc_mean"], summary["val_acc_std"], summary["runs"]) == ("88.66%", "n/a", 1)
