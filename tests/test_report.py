"""The report: notebook format rules, smoke settings, train-or-reuse, papermill runs of 03 and 05.

The papermill tests start real Jupyter kernels. Those that train need the full offline JPEG copy (the
notebooks hold out a 5,000-image validation split): ``$CIFAR10_ROOT``, else ``data/cifar10-jpeg``;
without it they are skipped.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import sys
from pathlib import Path

import nbformat
import pytest
import torch

from cifar_utils import report, sweep
from cifar_utils.checkpoint import load_checkpoint, save_checkpoint
from cifar_utils.config import replace
from cifar_utils.data import detect_source
from cifar_utils.errors import CheckpointError, CifarUtilsError, ConfigError, OutputExistsError
from cifar_utils.presets import from_preset

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = [REPO / "notebooks" / name for name in report.NOTEBOOKS]
TRAIN_PARAMETERS = ("preset", "epochs", "lr", "batch_size", "seed", "data_root", "out_dir", "train_limit",
                    "validation_limit", "test_limit", "progress")


@pytest.fixture(scope="module")
def full_data_root() -> Path:
    candidates = [os.environ.get("CIFAR10_ROOT"), REPO / "data" / "cifar10-jpeg"]
    for candidate in candidates:
        if candidate:
            root = Path(candidate) if Path(candidate).is_absolute() else REPO / candidate
            if root.is_dir() and detect_source(root):
                return root.resolve()
    pytest.skip("the extracted offline CIFAR-10 copy is absent: set CIFAR10_ROOT (e.g. data/cifar10-jpeg)")


@pytest.fixture
def smoke_env(monkeypatch, tmp_path):
    """Kernels started by the test run the smoke profile and write figures and runs under tmp_path."""
    monkeypatch.setenv(report.SMOKE_ENV, "1")
    monkeypatch.setenv(report.OUTPUT_ENV, str(tmp_path / "report"))
    return tmp_path / "report"


def tiny_config(**overrides):
    values = dict(dataset="synthetic", validation_split=100, train_limit=64, validation_limit=32, test_limit=32, epochs=1,
                  batch_size=32, eval_batch_size=64)
    return from_preset("seed003", **{**values, **overrides})


# ----------------------------------------------------------------------------------- notebook format


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_format(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec["name"] == "python3" and nb.metadata.kernelspec["language"] == "python"
    assert nb.metadata.language_info["name"] == "python"
    assert "widgets" not in nb.metadata and "papermill" not in nb.metadata
    first = nb.cells[0]
    assert first.cell_type == "markdown"
    assert f"colab.research.google.com/github/YOUR-ORG/cifar-coursework-kit/blob/main/notebooks/{path.name}" in first.source
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    # a banner generated from the run's metadata says where the saved numbers come from
    banners = [cell for cell in code if "report.banner(setup" in cell.source]
    assert len(banners) == 1
    shown = "".join(output.get("data", {}).get("text/markdown", "") for output in banners[0].outputs)
    assert "produced on" in shown and "profile" in shown
    assert "google.colab" in code[0].source and "%pip install" in code[0].source
    assert "report.notebook_setup()" in code[1].source  # prints the device
    counts = [cell.execution_count for cell in code]
    assert counts == list(range(1, len(code) + 1)), "outputs must be saved executed, in order"
    for cell in code:
        assert "papermill" not in cell.metadata and "execution" not in cell.metadata
        for output in cell.outputs:
            assert output.output_type != "error", f"{path.name} was saved with an error"
            assert "application/vnd.jupyter.widget-view+json" not in output.get("data", {})
            assert "\r" not in output.get("text", ""), "progress-bar output was saved"


def test_train_notebook_parameters_cell():
    nb = nbformat.read(REPO / "notebooks" / "03_train.ipynb", as_version=4)
    tagged = [cell for cell in nb.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1
    names = set(report.notebook_parameters(REPO / "notebooks" / "03_train.ipynb"))
    assert set(TRAIN_PARAMETERS) <= names


# -------------------------------------------------------------------------------- profile and config


def test_smoke_mode_reads_the_environment(monkeypatch):
    monkeypatch.setenv(report.SMOKE_ENV, "1")
    assert report.smoke_mode()
    monkeypatch.setenv(report.SMOKE_ENV, "0")
    assert not report.smoke_mode()
    monkeypatch.delenv(report.SMOKE_ENV)
    assert not report.smoke_mode()


def test_notebook_config_smoke_caps_and_defaults():
    smoke = report.notebook_config("seed000", smoke=True, epochs=40)
    assert (smoke.epochs, smoke.train_limit, smoke.validation_limit, smoke.test_limit) == (
        1, report.SMOKE_PROFILE["train_limit"], report.SMOKE_PROFILE["validation_limit"], report.SMOKE_PROFILE["test_limit"])
    explicit = report.notebook_config("seed000", smoke=True, train_limit=64)
    assert explicit.train_limit == 64
    full = report.notebook_config("seed000", smoke=False)
    assert (full.epochs, full.train_limit, full.lr) == (40, None, 1e-3)  # the preset's own values


@pytest.mark.parametrize("kwargs, message", [
    ({"preset": "seed999"}, "unknown preset 'seed999'"),
    ({"preset": 3}, "preset=3 has type int"),
    ({"lr": -0.1}, "lr=-0.1 is invalid"),
    ({"epochs": "3"}, "epochs='3' has type str"),
])
def test_notebook_config_rejects_bad_values(kwargs, message):
    kwargs = {"preset": "seed000", **kwargs}
    with pytest.raises(ConfigError, match=message):
        report.notebook_config(kwargs.pop("preset"), smoke=False, **kwargs)


def test_setup_uses_the_output_folder(monkeypatch, tmp_path):
    monkeypatch.setenv(report.OUTPUT_ENV, str(tmp_path))
    monkeypatch.setenv(report.SMOKE_ENV, "1")
    lines = []
    setup = report.notebook_setup(log=lines.append)
    assert setup.figures_dir == tmp_path / "figures" and setup.runs_dir == tmp_path / "runs" / "report-smoke"
    assert lines[0].startswith("device: ") and "smoke" in lines[1]


def test_setup_names_an_output_folder_inside_the_working_folder_relative_to_it(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(report.OUTPUT_ENV, str(tmp_path / "build" / "report"))
    monkeypatch.setenv(report.SMOKE_ENV, "0")
    setup = report.notebook_setup(log=lambda line: None)
    # What the notebooks print ("reusing the finished run in ...") then reads as it does in a clone.
    assert setup.runs_dir == Path("build/report/runs/report-full") and setup.figures_dir == Path("build/report/figures")


def test_format_table_is_aligned():
    text = report.format_table([{"name": "a", "parameters": 1234}, {"name": "bbb", "parameters": 5}])
    assert text.splitlines() == ["name  parameters", "----  ----------", "a          1,234", "bbb            5"]


# ----------------------------------------------------------------------------------- train or reuse


def test_train_or_reuse_never_replaces_a_run_silently(tmp_path):
    run_dir = tmp_path / "run"
    first = report.train_or_reuse(tiny_config(), run_dir, device="cpu")
    assert not first.reused and (run_dir / "metrics.json").is_file()
    stamp = (run_dir / "metrics.json").stat().st_mtime_ns

    lines = []
    again = report.train_or_reuse(tiny_config(), run_dir, device="cpu", log=lines.append)
    assert again.reused and "reusing" in lines[0]
    assert (run_dir / "metrics.json").stat().st_mtime_ns == stamp  # not trained again
    assert len(again.history) == len(first.history)
    for row, first_row in zip(again.history, first.history):  # approx() takes flat mappings only
        assert row == pytest.approx(first_row)

    with pytest.raises(OutputExistsError, match=r"other settings \(lr: 0\.1 -> 0\.05\).*overwrite=True"):
        report.train_or_reuse(tiny_config(lr=0.05), run_dir, device="cpu")

    lines = []
    replaced = report.train_or_reuse(tiny_config(lr=0.05), run_dir, device="cpu", overwrite=True, log=lines.append)
    assert not replaced.reused and replaced.metrics["config"]["lr"] == 0.05
    assert any("overwrite=True: replacing" in line for line in lines)


def test_train_or_reuse_refuses_an_unfinished_run_and_bad_flags(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"partial")
    with pytest.raises(OutputExistsError, match="unfinished run.*resume=True"):
        report.train_or_reuse(tiny_config(), tmp_path)
    with pytest.raises(ConfigError, match="progress='yes' has type str"):
        report.train_or_reuse(tiny_config(), tmp_path, progress="yes")
    with pytest.raises(ConfigError, match="contradict"):
        report.train_or_reuse(tiny_config(), tmp_path, overwrite=True, resume=True)


def test_evaluate_run_without_a_checkpoint_says_to_run_03(tmp_path):
    with pytest.raises(CheckpointError, match="run 03_train.ipynb first"):
        report.evaluate_run(tmp_path / "nothing-here")


def test_read_run_needs_a_finished_run(tmp_path):
    with pytest.raises(CheckpointError, match="no finished run"):
        report.read_run(tmp_path)


# ------------------------------------------------------------------------------------ report command


def test_report_without_papermill_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "papermill", None)  # makes `import papermill` fail
    with pytest.raises(CifarUtilsError, match="pip install papermill"):
        report.run_report(smoke=True)


def fake_measure(config, device):
    return 0.05, 0.01  # seconds per image: training, evaluation (per view)


def test_full_profile_warning_estimates_the_time(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "SHIPPED_RUN", tmp_path / "no_shipped_run")
    measured = []

    def measure(config, device):
        measured.append(config.preset)
        return fake_measure(config, device)

    text = report.full_profile_warning(torch.device("cpu"), measure=measure, runs_dir=tmp_path)
    assert text.startswith("WARNING: no GPU found") and "--smoke" in text and "reused" not in text
    assert measured == ["cpu", "cpu"]  # 03's run and 05's runs, each at its own settings
    plan = report.full_profile_trainings(runs_dir=tmp_path)
    assert [(item.notebook, item.runs) for item in plan] == [("03_train.ipynb", 1), ("05_lr_comparison.ipynb", 6)]
    expected = report.estimate_seconds(plan, [(0.05, 0.01)] * 2)
    assert f"about {report.format_duration(expected)}" in text
    # 03: the preset's epochs; 05: 3 rates x 2 seeds of them; each epoch 45,000 training and 5,000 validation
    # images; each run ends with 15,000 images evaluated in the 6 views of flip_translate.
    epochs = from_preset("cpu").epochs
    per_epoch = 45_000 * 0.05 + 5_000 * 0.01
    assert expected == pytest.approx(7 * epochs * per_epoch + 7 * 15_000 * 6 * 0.01)


def _finished_run(run_dir, config):
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps({"config": config.to_dict(), "test_accuracy": 0.5}))
    (run_dir / "history.csv").write_text("epoch,train_loss\n")


def test_full_profile_warning_leaves_out_the_runs_that_will_be_reused(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "SHIPPED_RUN", tmp_path / "no_shipped_run")
    plan = report.full_profile_trainings(runs_dir=tmp_path)
    _finished_run(tmp_path / report.TRAIN_RUN_NAME, plan[0].config)
    lr_config = replace(plan[1].config, lr=0.5, seed=1)
    _finished_run(sweep.run_path(tmp_path / "lr_comparison", 0.5, 1), lr_config)
    _finished_run(sweep.run_path(tmp_path / "lr_comparison", 0.125, 0), replace(plan[1].config, lr=0.125, epochs=1))
    _finished_run(sweep.run_path(tmp_path / "lr_comparison", 0.25, 0), replace(plan[1].config, lr=0.25))
    (sweep.run_path(tmp_path / "lr_comparison", 0.25, 0) / "history.csv").unlink()
    plan = report.full_profile_trainings(runs_dir=tmp_path)
    # 03 and one 05 run are reused; a run with other settings (epochs) or without its history stops its
    # notebook, so it counts as trained
    assert [(item.runs, item.reused) for item in plan] == [(0, 1), (5, 1)]
    text = report.full_profile_warning(torch.device("cpu"), measure=fake_measure, runs_dir=tmp_path)
    assert "05_lr_comparison.ipynb: 5 x cpu" in text and "03_train" not in text
    assert "(2 finished runs with the same settings are reused)" in text
    only_03 = report.full_profile_warning(torch.device("cpu"), measure=fake_measure, runs_dir=tmp_path,
                                          notebooks=["03_train.ipynb", "04_evaluate.ipynb"])
    assert only_03 is None  # nothing left to train: no warning


def test_full_profile_warning_counts_the_shipped_run_as_reused(tmp_path, monkeypatch):
    plan = report.full_profile_trainings(runs_dir=tmp_path / "runs")
    shipped = tmp_path / "shipped"
    _finished_run(shipped, replace(plan[0].config, data_root="/elsewhere"))  # where its data lay does not matter
    monkeypatch.setattr(report, "SHIPPED_RUN", shipped)
    assert report.full_profile_trainings(runs_dir=tmp_path / "runs")[0].runs == 0
    assert report.full_profile_trainings(runs_dir=tmp_path / "runs", use_shipped=False)[0].runs == 1  # --no-shipped
    (tmp_path / "runs" / report.TRAIN_RUN_NAME).mkdir(parents=True)
    (tmp_path / "runs" / report.TRAIN_RUN_NAME / "notes.txt").write_text("x")  # not empty: nothing is copied
    assert report.full_profile_trainings(runs_dir=tmp_path / "runs")[0].runs == 1


def test_seconds_per_image_times_the_config_at_its_own_batch_sizes(monkeypatch):
    from cifar_utils import models

    config = from_preset("cpu", batch_size=8, eval_batch_size=4)
    batches, build = [], models.build_model

    def recording(*args, **kwargs):  # the network, noting the batch size of every forward pass
        model = build(*args, **kwargs)
        model.register_forward_pre_hook(lambda module, inputs: batches.append(inputs[0].shape[0]))
        return model

    monkeypatch.setattr(models, "build_model", recording)
    train_s, eval_s = report.seconds_per_image(config, torch.device("cpu"), steps=1)
    assert sorted(set(batches)) == [4, 8]  # one timing alone on a loaded machine says nothing about the other
    assert 0 < train_s < 10 and 0 < eval_s < 10


def test_seconds_per_image_keeps_the_fastest_step_so_a_moment_of_other_work_does_not_inflate_it(monkeypatch):
    import time

    from cifar_utils import models

    config = from_preset("cpu", batch_size=8, eval_batch_size=4)
    forwards, build = [], models.build_model

    def slowed_once(*args, **kwargs):  # the second timed training step waits as if the machine were busy
        model = build(*args, **kwargs)

        def hook(module, inputs):
            forwards.append(inputs[0].shape[0])
            if forwards.count(8) == 3 and inputs[0].shape[0] == 8:
                time.sleep(3.0)
        model.register_forward_pre_hook(hook)
        return model

    monkeypatch.setattr(models, "build_model", slowed_once)
    train_s, _ = report.seconds_per_image(config, torch.device("cpu"), steps=3)
    assert forwards.count(8) == 4 and train_s * 8 < 0.9  # a mean over the three would be over 1 s


def test_format_duration():
    assert [report.format_duration(s) for s in (30, 600, 36_000, 400_000)] == ["30 s", "10 minutes", "10 hours",
                                                                                "4.6 days"]


# ----------------------------------------------------------------------------- papermill (real kernels)


def test_scratch_folders_of_killed_executions_are_removed_and_live_ones_kept(tmp_path, monkeypatch):
    import types

    def execute_notebook(source, executed, **kwargs):
        Path(executed).write_text("{}")

    fake = types.SimpleNamespace(execute_notebook=execute_notebook, PapermillExecutionError=type("E", (Exception,), {}))
    monkeypatch.setattr(report, "import_papermill", lambda: fake)
    host, never = socket.gethostname(), int(Path("/proc/sys/kernel/pid_max").read_text()) + 1  # no process has it
    orphan = tmp_path / f".papermill-{never}@{host}-abc12345"  # its process is gone: nothing else will clean it
    kept = [tmp_path / f".papermill-{os.getppid()}@{host}-def12345",  # alive
            tmp_path / f".papermill-{never}@another-host-ghi12345",  # a shared disk: not this host's to judge
            tmp_path / ".papermill-notapid"]
    for folder in (orphan, *kept):
        folder.mkdir()
        (folder / "03_train.ipynb").write_text("{}")
    report.execute_notebook(REPO / "notebooks" / "03_train.ipynb", tmp_path / "03_train.ipynb", {})
    assert not orphan.exists() and all(folder.is_dir() for folder in kept)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*(f.name for f in kept), "03_train.ipynb"])


@pytest.mark.parametrize("wrote_before_dying", [True, False])
def test_a_kernel_that_dies_keeps_what_ran_and_names_it(wrote_before_dying, tmp_path, monkeypatch):
    """A dead kernel (out of memory, say) is no cell error: the failed copy is kept where papermill wrote
    one, and the error names it or none, so that a sweep never points at a file that does not exist."""
    import types

    def execute_notebook(source, executed, **kwargs):
        if wrote_before_dying:
            Path(executed).write_text("{}")
        raise RuntimeError("Kernel died before replying to execute_request")

    fake = types.SimpleNamespace(execute_notebook=execute_notebook, PapermillExecutionError=type("E", (Exception,), {}))
    monkeypatch.setattr(report, "import_papermill", lambda: fake)
    with pytest.raises(report.NotebookFailed, match="kernel running 03_train.ipynb died") as failure:
        report.execute_notebook(REPO / "notebooks" / "03_train.ipynb", tmp_path / "03_train.ipynb", {})
    kept = tmp_path / "03_train.failed.ipynb"
    assert failure.value.executed == (kept if wrote_before_dying else None)
    assert kept.is_file() == wrote_before_dying and (str(kept) in str(failure.value)) == wrote_before_dying
    assert not (tmp_path / "03_train.ipynb").exists() and not list(tmp_path.glob(".papermill-*"))


@pytest.mark.parametrize("parameters, message", [
    ({"preset": "seed999"}, "unknown preset 'seed999'; choose one of seed000"),
    ({"lr": -0.1}, "lr=-0.1 is invalid: it must be > 0"),
    ({"epochs": "three"}, "epochs='three' has type str, but epochs must be int"),
])
def test_train_notebook_with_a_wrong_parameter_fails_clearly(parameters, message, smoke_env, tmp_path):
    with pytest.raises(report.NotebookFailed, match="ConfigError") as failure:
        report.execute_notebook(REPO / "notebooks" / "03_train.ipynb", tmp_path / "03_train.ipynb", parameters)
    assert message in str(failure.value)
    executed = nbformat.read(tmp_path / "03_train.failed.ipynb", as_version=4)
    errors = [out for cell in executed.cells if cell.cell_type == "code" for out in cell.outputs
              if out.output_type == "error"]
    assert len(errors) == 1 and errors[0].ename == "ConfigError" and message in errors[0].evalue
    assert not (tmp_path / "03_train.ipynb").exists()  # only the .failed copy


def test_lr_comparison_notebook_with_a_rate_that_diverges_then_reused_and_resumed(full_data_root, smoke_env, tmp_path):
    sweep_dir = tmp_path / "sweep"
    parameters = {"learning_rates": [0.05, 1e30], "seeds": [0], "preset": "seed003", "train_limit": 64,
                  "validation_limit": 32, "test_limit": 32, "data_root": str(full_data_root), "out_dir": str(sweep_dir)}
    report.execute_notebook(REPO / "notebooks" / "05_lr_comparison.ipynb", tmp_path / "05.ipynb", parameters)

    with open(sweep_dir / sweep.TABLE_NAME, newline="") as f:
        table = list(csv.DictReader(f))
    assert [float(row["learning_rate"]) for row in table] == [0.05, 1e30]
    assert "TrainingDivergedError" in table.pop()["status"]  # reported in the table, and 05 still finished
    assert (sweep.run_path(sweep_dir, 1e30, 0) / sweep.DIVERGED_NAME).is_file()  # the next sweep reports it again
    [row] = table
    assert row["status"] == "ok" and int(row["epochs"]) == 1
    assert all(0 <= float(row[key]) <= 1 for key in ("val_acc", "test_acc", "curve_best_val_acc"))
    assert float(row["train_seconds"]) > 0
    run_dir = sweep.run_path(sweep_dir, 0.05, 0)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["config"]["lr"] == 0.05 and metrics["split_sizes"]["train"] == 64
    executed = nbformat.read(run_dir / "03_train.ipynb", as_version=4)
    assert executed.metadata.papermill["parameters"]["lr"] == 0.05  # kept as the run's record
    assert (run_dir / "training_curves.png").is_file()  # not over the report's figure
    assert (smoke_env / "figures" / "lr_comparison.png").is_file()
    assert not (smoke_env / "figures" / "training_curves.png").exists()

    # The same sweep again reuses the finished run instead of training it again.
    lines = []
    again = sweep.run_lr_sweep([0.05], {"preset": "seed003", "epochs": 30, "train_limit": 64, "validation_limit": 32, "test_limit": 32,
                                              "data_root": str(full_data_root)}, sweep_dir, log=lines.append)
    assert [run.reused for run in again] == [True] and all("reusing" in line for line in lines)

    # A run killed before its end (a checkpoint, no metrics.json) is continued by 05 with resume=True: made here
    # by winding the checkpoint back to before its only epoch, so the resumed run trains that epoch again.
    (run_dir / "metrics.json").unlink()
    state = load_checkpoint(run_dir / "checkpoint.pt")
    save_checkpoint({**state, "epoch": 0, "batches": 0, "history": []}, run_dir / "checkpoint.pt")
    report.execute_notebook(REPO / "notebooks" / "05_lr_comparison.ipynb", tmp_path / "05-resumed.ipynb",
                            {**parameters, "learning_rates": [0.05], "resume": True})
    resumed = nbformat.read(run_dir / "03_train.ipynb", as_version=4)
    printed = "".join(out.get("text", "") for cell in resumed.cells if cell.cell_type == "code" for out in cell.outputs)
    assert "resuming from" in printed and "epoch 1, mini-batch 0" in printed
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 1
    assert load_checkpoint(run_dir / "checkpoint.pt")["epoch"] == 1


def test_report_without_the_shipped_run_tells_03_to_train(tmp_path, monkeypatch):
    executed = []
    monkeypatch.setattr(report, "execute_notebook",
                        lambda notebook, output, parameters=None, **kwargs: executed.append((notebook.name, parameters)))
    names = ("03_train.ipynb", "04_evaluate.ipynb")
    report.run_report(smoke=True, output_dir=str(tmp_path), notebooks=names, log=lambda line: None)
    report.run_report(smoke=True, output_dir=str(tmp_path), notebooks=names, use_shipped=False, log=lambda line: None)
    assert executed == [("03_train.ipynb", None), ("04_evaluate.ipynb", None),
                        ("03_train.ipynb", {"use_shipped": False}), ("04_evaluate.ipynb", None)]
    executed.clear()  # --resume: the two notebooks that train continue their interrupted runs
    report.run_report(smoke=True, output_dir=str(tmp_path), notebooks=(*names, "05_lr_comparison.ipynb"),
                      use_shipped=False, resume=True, log=lambda line: None)
    assert executed == [("03_train.ipynb", {"use_shipped": False, "resume": True}), ("04_evaluate.ipynb", None),
                        ("05_lr_comparison.ipynb", {"resume": True})]


def test_the_report_command_passes_resume_and_no_shipped(monkeypatch):
    from cifar_utils import cli

    seen = []
    monkeypatch.setattr(report, "run_report", lambda **kwargs: seen.append(kwargs))
    assert cli.main(["report", "--notebooks", "05_lr_comparison.ipynb", "--resume", "--no-shipped"]) == 0
    assert seen[0]["resume"] is True and seen[0]["use_shipped"] is False
    assert seen[0]["notebooks"] == ["05_lr_comparison.ipynb"]


def test_the_cpu_estimate_sees_the_data_root_the_notebooks_will_see(tmp_path, monkeypatch):
    # Which runs the notebooks reuse depends on the data they read, so the estimate must use that root too.
    seen = []
    monkeypatch.setattr(report, "full_profile_warning", lambda *args, **kwargs: seen.append(os.environ.get("CIFAR10_ROOT")))
    monkeypatch.setattr(report, "execute_notebook", lambda *args, **kwargs: None)
    monkeypatch.setenv("CIFAR10_ROOT", str(tmp_path / "other"))
    for split in ("train", "test"):  # an image folder's layout: run_report checks it before anything runs
        (tmp_path / "data" / split).mkdir(parents=True)
    report.run_report(data_root=str(tmp_path / "data"), output_dir=str(tmp_path), notebooks=("01_data.ipynb",),
                      log=lambda line: None)
    assert seen == [str(tmp_path / "data")] and os.environ["CIFAR10_ROOT"] == str(tmp_path / "other")


def test_report_names_a_data_root_inside_the_repository_relative_to_it(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(report, "execute_notebook",
                        lambda *args, **kwargs: seen.append(os.environ["CIFAR10_ROOT"]))
    monkeypatch.setattr(report, "require_data", lambda root, origin: None)  # about names: no data needed
    inside = report.NOTEBOOKS_DIR.parent / "data" / "cifar10-jpeg"
    for root in (inside, tmp_path / "cifar10-jpeg"):
        report.run_report(smoke=True, data_root=str(root), output_dir=str(tmp_path), notebooks=("01_data.ipynb",),
                          log=lambda line: None)
    # The kernels work from the repository root, so the relative name finds the same folder there.
    assert seen == ["data/cifar10-jpeg", str(tmp_path / "cifar10-jpeg")]


def test_report_runs_a_notebook_into_an_output_folder(full_data_root, tmp_path, monkeypatch):
    monkeypatch.delenv(report.OUTPUT_ENV, raising=False)
    smoke_before = os.environ.get(report.SMOKE_ENV)
    out = tmp_path / "out"
    lines = []
    executed = report.run_report(smoke=True, data_root=str(full_data_root), output_dir=str(out),
                                 notebooks=("01_data.ipynb",), log=lines.append)
    assert executed == [out / "01_data.ipynb"]
    nb = nbformat.read(executed[0], as_version=4)
    assert "papermill" not in nb.metadata
    assert all("papermill" not in cell.metadata and "execution" not in cell.metadata for cell in nb.cells)
    assert (out / "figures" / "class_samples.png").is_file() and (out / "figures" / "augmentations.png").is_file()
    assert any("01_data.ipynb done" in line for line in lines)
    assert os.environ.get(report.SMOKE_ENV) == smoke_before and report.OUTPUT_ENV not in os.environ  # restored


def _image_folder(root: Path, classes=("cat", "dog"), per_class=6) -> Path:
    from PIL import Image

    for split in ("train", "test"):
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (32, 32), (40 * c + i, 90, 200 - 30 * c)).save(root / split / name / f"{i}.png")
    return root


def test_evaluate_run_of_a_run_trained_elsewhere_uses_the_data_here_and_says_so(tmp_path, monkeypatch):
    # The shipped run records data/cifar10-jpeg; a clone with its data elsewhere must still evaluate it.
    trained_on = _image_folder(tmp_path / "there")
    config = from_preset("seed003", data_root=str(trained_on), validation_split=2, epochs=1, batch_size=4,
                         eval_batch_size=4)
    report.train_or_reuse(config, tmp_path / "run", device="cpu", log=lambda _: None)
    trained_on.rename(tmp_path / "here")
    monkeypatch.setenv("CIFAR10_ROOT", str(tmp_path / "here"))
    result = report.evaluate_run(tmp_path / "run", device="cpu")
    assert f"({trained_on}) is not on this machine" in result.note and str(tmp_path / "here") in result.note
    assert len(result.evaluation.labels) == 12 and result.metrics["preset"] == "seed003"


def test_evaluate_run_of_an_interrupted_run_gives_its_banner_from_the_checkpoint(tmp_path):
    report.train_or_reuse(tiny_config(epochs=2), tmp_path / "run", device="cpu", log=lambda _: None)
    (tmp_path / "run" / "metrics.json").unlink()  # as if stopped before the final evaluation
    result = report.evaluate_run(tmp_path / "run", device="cpu")
    assert result.metrics == {"preset": "seed003", "epochs": 2, "interrupted_after": 2} and not result.note
    setup = report.NotebookSetup(smoke=True, device=torch.device("cpu"), in_colab=False, figures_dir=tmp_path,
                                 runs_dir=tmp_path)
    assert "interrupted after 2 of 2 epochs" in report.banner(setup, [result.metrics]).data


def test_a_run_trained_from_cifar10_root_is_not_reused_for_another_data_folder(tmp_path, monkeypatch):
    # Notebooks leave data_root at None, so the data folder comes from $CIFAR10_ROOT at training time.
    first, second = _image_folder(tmp_path / "first"), _image_folder(tmp_path / "second")
    config = from_preset("seed003", validation_split=2, epochs=1, batch_size=4, eval_batch_size=4)
    monkeypatch.setenv("CIFAR10_ROOT", str(first))
    report.train_or_reuse(config, tmp_path / "run", device="cpu", log=lambda _: None)
    assert report.reusable_run(config, tmp_path / "run").reused
    monkeypatch.setenv("CIFAR10_ROOT", str(second))
    with pytest.raises(OutputExistsError, match=f"data_root: '{first}' -> None"):
        report.reusable_run(config, tmp_path / "run")


def test_a_run_is_reused_whether_or_not_the_data_was_downloaded(tmp_path):
    # In Colab 03 passes download=True; the shipped run and a sweep's runs were made without it.
    config = from_preset("seed003", validation_split=2, epochs=1, batch_size=4, eval_batch_size=4,
                         data_root=str(_image_folder(tmp_path / "data")))
    report.train_or_reuse(config, tmp_path / "run", device="cpu", log=lambda _: None)
    assert report.reusable_run(replace(config, download=True), tmp_path / "run").reused
