"""Command line: train writes its files, evaluate prints accuracy, presets lists, bad input exits 2."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cifar_utils.checkpoint import load_checkpoint, save_checkpoint
from cifar_utils.cli import build_parser, config_overrides, main
from cifar_utils.config import field_names
from cifar_utils.errors import ConfigError
from cifar_utils.presets import PRESETS

HISTORY_KEYS = {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One epoch of seed003 (ResNet-32) on synthetic data, through the command line (limits keep it quick)."""
    out = tmp_path_factory.mktemp("cli") / "run"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["train", "--preset", "seed003", "--epochs", "1", "--set", "dataset=synthetic",
                     "--set", "validation_split=100", "--train-limit", "200", "--batch-size", "100",
                     "--validation-limit", "100", "--test-limit", "100", "--out", str(out), "--no-progress"])
    return code, out, stdout.getvalue(), stderr.getvalue()


def test_train_writes_metrics_history_and_checkpoint(trained_run):
    code, out, stdout, stderr = trained_run
    assert code == 0, stderr
    for name in ("metrics.json", "history.csv", "checkpoint.pt", "checkpoint_best.pt"):  # seed003 keeps the best
        assert (out / name).is_file(), name
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("test_accuracy", "validation_accuracy"):
        assert 0 <= metrics[key] <= 1
    for key in ("test_cross_entropy", "validation_cross_entropy"):
        assert math.isfinite(metrics[key]) and metrics[key] > 0
    assert metrics["train_seconds"] > 0 and metrics["total_seconds"] >= metrics["train_seconds"]
    assert metrics["epochs"] == 1 and metrics["preset"] == "seed003"
    assert metrics["split_sizes"] == {"train": 200, "validation": 100, "test": 100}
    assert len(metrics["per_class_test_accuracy"]) == 10
    config = metrics["config"]
    assert (config["preset"], config["model"], config["epochs"]) == ("seed003", "resnet32", 1)
    assert (config["dataset"], config["validation_split"]) == ("synthetic", 100)
    assert (config["train_limit"], config["validation_limit"], config["test_limit"], config["batch_size"]) == (
        200, 100, 100, 100)
    assert f"test accuracy {metrics['test_accuracy']:.2%}" in stdout

    with open(out / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and set(rows[0]) == HISTORY_KEYS
    assert rows[0]["epoch"] == "1"
    assert float(rows[0]["val_acc"]) == pytest.approx(metrics["best_validation_accuracy"])
    assert float(rows[0]["lr"]) == pytest.approx(0.1)

    state = load_checkpoint(out / "checkpoint.pt")
    assert state["epoch"] == 1 and state["config"]["preset"] == "seed003"
    assert state["classes"] == [f"class{i}" for i in range(10)]
    assert len(state["mean"]) == 3 and state["mean"] != [0.5, 0.5, 0.5]  # train_stats normalisation
    assert len(state["history"]) == 1


def test_evaluate_prints_the_checkpoint_accuracy(trained_run, capsys):
    code, out, _, _ = trained_run
    assert code == 0
    assert main(["evaluate", "--checkpoint", str(out / "checkpoint.pt")]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert f"test accuracy {metrics['test_accuracy']:.2%} on 100 images" in printed
    per_class = [line for line in printed.splitlines() if line.startswith("  class")]
    assert len(per_class) == 10 and all(line.rstrip().endswith("%") for line in per_class)


def test_evaluate_a_missing_checkpoint_is_a_clean_error(tmp_path, capsys):
    assert main(["evaluate", "--checkpoint", str(tmp_path / "nope.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "nope.pt" in err and "Traceback" not in err


def test_presets_lists_every_preset(capsys):
    assert main(["presets"]) == 0
    printed = capsys.readouterr().out
    entries = printed.strip().replace("\n ", " ").splitlines()  # a long source puts the description on a second line
    assert len(entries) == len(PRESETS)
    for name, preset in PRESETS.items():
        entry = " ".join(next(line for line in entries if line.split()[0] == name).split())
        assert " ".join(preset.source.split()) in entry and " ".join(preset.description.split()) in entry
    assert main(["presets", "--fields"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == field_names()
    assert lines[field_names().index("epochs")].split() == ["epochs", "30", "passes", "over", "the", "training", "split"]


def test_presets_name_shows_each_setting_with_its_source_and_fields_show_its_values(capsys):
    assert main(["presets", "seed004"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"seed004: {PRESETS['seed004'].description}")
    assert "stated by the report" in out and "chosen here: the report names no scheduler" in out
    assert "--faithful, the report's own recipe: validation_split=0, head_softmax=true" in out
    assert main(["presets", "cpu", "--fields"]) == 0
    lines = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()}
    assert (lines["model"], lines["epochs"], lines["data_root"]) == ("cpu_net", "10", "none")
    assert main(["presets", "seed999"]) == 2
    assert "unknown preset 'seed999'" in capsys.readouterr().err


def test_every_config_field_says_what_it_does_in_the_help(capsys):
    from cifar_utils.config import field_help

    assert set(field_help()) == set(field_names()) and all(field_help().values())
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--epochs EPOCHS config.epochs: passes over the training split" in text
    assert "None: 10% of them" in text  # a percent sign in a comment is printed, not taken for a format


def test_output_into_a_pipe_that_closes_early_ends_without_a_traceback():
    # As `python -m cifar_utils presets --fields | head -1`: the reader is gone before the command writes.
    process = subprocess.Popen([sys.executable, "-m", "cifar_utils", "presets", "--fields"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    process.stdout.close()
    err = process.stderr.read()
    assert process.wait(timeout=120) == 141, err
    assert err == ""


def test_python_dash_m_entry_point():
    result = subprocess.run([sys.executable, "-m", "cifar_utils", "presets"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "seed000" in result.stdout and "seed004" in result.stdout


def test_train_without_data_prints_one_readable_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CIFAR10_ROOT", raising=False)
    code = main(["train", "--preset", "seed000", "--epochs", "1", "--train-limit", "2000",
                 "--out", str(tmp_path / "run"), "--no-progress"])
    assert code == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in captured.err + captured.out
    assert "does not exist" in lines[0] and "CIFAR10_ROOT" in lines[0] and "--data-root" in lines[0]
    assert not (tmp_path / "run").exists()  # the folder this run created is not left behind, empty
    assert main(["train", "--preset", "cpu", "--no-progress"]) == 2  # the default runs/cpu-<time>/ neither
    assert list((tmp_path / "runs").iterdir()) == []
    (tmp_path / "kept").mkdir()
    assert main(["train", "--preset", "cpu", "--out", str(tmp_path / "kept"), "--no-progress"]) == 2
    assert (tmp_path / "kept").is_dir()  # a folder that was there before stays


@pytest.mark.parametrize("argv, expected", [
    (["train", "--preset", "seed999"], "seed000"),
    (["train", "--preset", "seed003", "--set", "epocs=1"], "epochs"),
    (["train", "--preset", "seed003", "--set", "epochs"], "FIELD=VALUE"),
    (["train", "--preset", "seed003", "--epochs", "0"], "epochs"),
    (["train", "--preset", "seed003", "--set", "=3"], "FIELD=VALUE"),
    # an unset shell variable: an error, not "none" (the whole data set) or the flag's default
    (["train", "--preset", "seed003", "--set", "test_limit="], "test_limit was given an empty value"),
    (["train", "--preset", "seed003", "--out", ""], "--out was given an empty value"),
    (["train", "--preset", "seed003", "--out", "x", "--resume", "--overwrite"], "choose one"),
    (["train", "--preset", "seed003", "--device", "xpu"], "not a device this kit trains on"),
    (["train", "--preset", "seed003", "--out", "a-file"], "--out a-file is a file, not a run folder"),
    (["results", "--runs", ".", "--results-dir", "nowhere"], "--results-dir nowhere: no such folder"),
])
def test_bad_input_gives_one_error_line_and_status_2(argv, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("")
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]


def test_field_flags_parse_as_set_does():
    overrides = lambda *argv: config_overrides(build_parser().parse_args(["train", "--preset", "cpu", *argv]))
    assert overrides() == {}  # a flag not given overrides nothing
    assert overrides("--grad-clip", "none", "--validation-split", "none", "--epochs", "3") == {
        "grad_clip": None, "validation_split": None, "epochs": 3}
    assert overrides("--grad-clip", "1") == overrides("--set", "grad_clip=1") == {"grad_clip": 1.0}


@pytest.mark.parametrize("argv, fragment", [
    (["train"], "the following arguments are required: --preset"),
    (["train", "--preset", "cpu", "--epochs", "abc"], "argument --epochs: epochs='abc' is not a valid int"),
    (["train", "--preset", "cpu", "--epochs", "none"], "argument --epochs: epochs='none' is not a valid int"),
    (["trian"], "invalid choice: 'trian'"),
    (["train", "--preset", "cpu", "--train-limit", ""], "argument --train-limit: train_limit was given an empty value"),
    (["train", "--preset", "cpu", "--data-root", ""], "argument --data-root: data_root was given an empty value"),
])
def test_argparse_usage_errors_are_one_error_line_and_exit_2(capsys, argv, fragment):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and fragment in err and "--help` lists" in err


@pytest.mark.parametrize("flag, bars", [([], True), (["--no-progress"], False)])
def test_no_progress_turns_the_bars_off_and_keeps_the_epoch_lines(tmp_path, capsys, flag, bars):
    code = main(["train", "--preset", "seed003", "--set", "model=resnet20", "--epochs", "1", "--set", "dataset=synthetic",
                 "--set", "validation_split=20", "--train-limit", "32", "--batch-size", "16", "--validation-limit", "20",
                 "--test-limit", "20", "--out", str(tmp_path / "run"), *flag])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert ("epoch 1:" in captured.err) == bars  # tqdm's bar: "epoch 1:  50%|..."
    assert "epoch   1/1" in captured.out


def test_no_validation_split_trains_where_nothing_selects_on_it_and_is_refused_where_something_does(tmp_path, capsys):
    """validation_split=0: seed004 (what its faithful variant runs) trains and reports only test accuracy;
    seed003 keeps its best-validation checkpoint, so it is refused with one line saying what to change."""
    common = ["--epochs", "1", "--set", "dataset=synthetic", "--validation-split", "0", "--train-limit", "32",
              "--batch-size", "32", "--test-limit", "20", "--no-progress"]
    assert main(["train", "--preset", "seed004", *common, "--out", str(tmp_path / "ok")]) == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "ok" / "metrics.json").read_text())
    assert metrics["validation_accuracy"] is None and 0 <= metrics["test_accuracy"] <= 1
    capsys.readouterr()
    code = main(["train", "--preset", "seed003", "--set", "model=resnet20", *common, "--out", str(tmp_path / "refused")])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: keep_best=True"), lines
    assert "validation_split=0 holds out no validation images" in lines[0]
    assert not (tmp_path / "refused").exists()


def test_a_last_training_batch_of_one_image_does_not_crash_batchnorm1d(tmp_path, capsys):
    """seed004's head has BatchNorm1d, which cannot train on one image: 5 images in batches of 4 leave one."""
    out = tmp_path / "run"
    code = main(["train", "--preset", "seed004", "--epochs", "1", "--set", "dataset=synthetic",
                 "--set", "validation_split=100", "--train-limit", "5", "--batch-size", "4", "--validation-limit", "10", "--test-limit", "10",
                 "--out", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert (out / "metrics.json").is_file()


def test_a_small_image_folder_trains_with_no_extra_flags(tmp_path, capsys):
    """3 classes and 120 training images: the default validation split adapts (10%) and says so."""
    import numpy as np
    from PIL import Image

    gen = np.random.default_rng(0)
    for split, per_class in (("train", 40), ("test", 10)):
        for c, name in enumerate(("cat", "dog", "fox")):
            folder = tmp_path / "data" / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = np.clip(gen.normal(60 + 70 * c, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    code = main(["train", "--preset", "seed003", "--epochs", "1", "--data-root", str(tmp_path / "data"),
                 "--out", str(tmp_path / "run"), "--device", "cpu", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    assert "splits: 108 train / 12 validation / 30 test (validation: the default 10% of 120 training images" in out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["split_sizes"] == {"train": 108, "validation": 12, "test": 30}


def test_faithful_for_a_preset_without_a_faithful_variant_is_one_error_line(capsys):
    assert main(["train", "--preset", "fast", "--faithful", "--set", "dataset=synthetic"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "no faithful variant" in err and "seed003" in err


def test_faithful_trains_the_presets_faithful_variant(monkeypatch):
    from cifar_utils import experiment
    from cifar_utils.presets import from_preset

    trained = []
    monkeypatch.setattr(experiment, "train", lambda config, *args, **kwargs: trained.append(config))
    assert main(["train", "--preset", "seed002", "--faithful", "--epochs", "2"]) == 0
    assert trained == [from_preset("seed002", faithful=True, epochs=2)]


@pytest.mark.parametrize("argv, message", [
    (["--lr", "0.2", "--set", "lr=0.1"], "lr is given twice, by --lr and by --set lr=...; give it once"),
    (["--data-root", "data", "--set", "data_root=elsewhere"], "data_root is given twice, by --data-root and by --set"),
    (["--download", "--set", "download=false"], "download is given twice, by --download and by --set"),
    (["--set", "lr=0.1", "--set", "lr=0.2"], "--set lr is given twice; give each field once"),
    (["--grad-clip", "none", "--set", "grad_clip=1.0"], "grad_clip is given twice, by --grad-clip and by --set"),
])
def test_a_field_given_twice_is_refused_rather_than_one_value_silently_winning(argv, message, capsys):
    assert main(["train", "--preset", "seed003", "--out", "never-written", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and err.count("\n") == 1
    assert not Path("never-written").exists()


def test_report_refuses_an_unknown_notebook_in_one_line(capsys):
    assert main(["report", "--smoke", "--notebooks", "06_extra.ipynb"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "06_extra.ipynb" in err and "05_lr_comparison.ipynb" in err


def test_a_report_notebook_is_named_by_its_file_its_stem_its_path_or_its_number():
    from cifar_utils.report import report_notebook

    for name in ("03_train.ipynb", "03_train", "notebooks/03_train.ipynb", "03"):
        assert report_notebook(name) == "03_train.ipynb"
    for wrong in ("3", "03_training", "train"):
        with pytest.raises(ConfigError, match=f"unknown notebook {wrong}; choose from 01_data.ipynb"):
            report_notebook(wrong)


def test_report_checks_its_data_root_and_output_dir_before_any_notebook_runs(tmp_path, capsys, monkeypatch):
    import cifar_utils.report as report

    monkeypatch.setattr(report, "execute_notebook", lambda *args, **kwargs: pytest.fail("a notebook started"))
    assert main(["report", "--smoke", "--data-root", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "(from --data-root) does not exist" in err and "--download" not in err
    (tmp_path / "a-file").write_text("")
    assert main(["report", "--smoke", "--output-dir", str(tmp_path / "a-file")]) == 2
    assert "is a file; name a folder" in capsys.readouterr().err


def test_report_runs_only_the_notebooks_named(monkeypatch):
    from cifar_utils import report

    calls = []
    monkeypatch.setattr(report, "run_report", lambda **kwargs: calls.append(kwargs))
    assert main(["report", "--smoke", "--notebooks", "05_lr_comparison.ipynb"]) == 0
    assert calls[0]["notebooks"] == ["05_lr_comparison.ipynb"] and calls[0]["smoke"]
    assert calls[0]["use_shipped"]
    assert main(["report", "--smoke", "--no-shipped"]) == 0
    assert not calls[1]["use_shipped"]


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stopped_report_says_how_to_continue(monkeypatch, capsys, signum, status):
    from cifar_utils import report

    def stopped(**kwargs):
        os.kill(os.getpid(), signum)
        time.sleep(5)  # the signal arrives first
        pytest.fail(f"{signal.Signals(signum).name} did not stop the report")

    monkeypatch.setattr(report, "run_report", stopped)
    assert main(["report", "--smoke"]) == status
    err = capsys.readouterr().err
    assert err.startswith("interrupted:") and "run the same command with --resume" in err and err.count("\n") == 1
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # put back as it was


def test_plot_draws_a_runs_curves_and_never_replaces_a_figure_unasked(trained_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run[1], run)
    assert main(["plot", str(run)]) == 0
    assert capsys.readouterr().out == f"wrote {run / 'training_curves.png'}\n"
    assert (run / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["plot", str(run)]) == 2
    assert "training_curves.png exists; pass --overwrite" in capsys.readouterr().err
    assert main(["plot", str(run), "--overwrite"]) == 0


@pytest.mark.parametrize("name, text, message", [
    ("metrics.json", '{"test_accuracy": 0.9', "metrics.json is damaged"),
    ("metrics.json", '{"accuracy": 0.9}', "is not the metrics.json of a cifar_utils run"),
    ("history.csv", "epoch,train_loss\n1,nan?\n", "history.csv is damaged"),
])
def test_plot_of_a_damaged_run_record_is_one_clear_error(trained_run, tmp_path, capsys, name, text, message):
    run = tmp_path / "run"
    shutil.copytree(trained_run[1], run)
    (run / "checkpoint.pt").unlink()  # else a damaged finished record would fall back to nothing to read
    (run / name).write_text(text)
    assert main(["plot", str(run), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and "Traceback" not in err and err.count("\n") == 1


def test_plot_compares_runs_and_reads_an_unfinished_run_from_its_checkpoint(trained_run, tmp_path, capsys):
    from cifar_utils import report

    for seed in (0, 1):
        shutil.copytree(trained_run[1], tmp_path / f"lr_0.1/seed_{seed}")
    unfinished = tmp_path / "lr_0.1/seed_1"
    (unfinished / "metrics.json").unlink()
    (unfinished / "history.csv").unlink()
    history, title = report.run_history(unfinished)
    assert len(history) == 1 and title == "seed_1: seed003, 1 of 1 epoch so far (unfinished)"
    finished = tmp_path / "lr_0.1/seed_0"
    assert report.run_history(finished)[1].startswith("seed_0: seed003, 1 epoch, test accuracy ")
    later = (finished / "metrics.json").stat().st_mtime + 10
    os.utime(finished / "checkpoint.pt", (later, later))  # a newer file (a copy, a checkout) says nothing
    assert report.run_history(finished)[1].startswith("seed_0: seed003, 1 epoch, test accuracy ")
    state = load_checkpoint(finished / "checkpoint.pt")
    state["config"]["epochs"] = 3  # resumed for more epochs: its checkpoint plans them
    save_checkpoint(state, finished / "checkpoint.pt")
    assert report.run_history(finished)[1] == "seed_0: seed003, 1 of 3 epochs so far (unfinished)"
    runs = [str(tmp_path / "lr_0.1/seed_0"), str(unfinished)]
    assert main(["plot", *runs]) == 2
    assert "name its file with --out" in capsys.readouterr().err
    assert main(["plot", *runs, "--out", str(tmp_path / "compare.pdf")]) == 2
    assert "ending in .png" in capsys.readouterr().err
    assert main(["plot", *runs, "--out", str(tmp_path / "compare.png")]) == 0
    assert (tmp_path / "compare.png").is_file()
    assert report._distinct_names([Path("a/lr_0.1/seed_0"), Path("a/lr_0.2/seed_0")]) == ["lr_0.1/seed_0", "lr_0.2/seed_0"]
    assert main(["plot", runs[0], runs[0], "--out", str(tmp_path / "twice.png")]) == 2
    assert "named twice" in capsys.readouterr().err
    assert main(["plot", str(tmp_path / "lr_0.1")]) == 2  # a sweep's folder: its runs are one level down
    assert f"holds 2 runs in its subfolders, e.g. {tmp_path / 'lr_0.1' / 'seed_0'}" in capsys.readouterr().err
    assert main(["plot", str(tmp_path / "lr_0.1" / "nothing")]) == 2
    err = capsys.readouterr().err
    assert "holds no run" in err and "name the folder given to train's --out" in err
