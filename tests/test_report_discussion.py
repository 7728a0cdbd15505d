"""The report's generated parts: banners from run metadata, discussions from the run's numbers, and the
shipped run that 03 reuses."""

from __future__ import annotations

import datetime
import math
from pathlib import Path
from dataclasses import replace

import pytest
import torch

from cifar_utils import discussion, report
from cifar_utils.device import cpu_model
from cifar_utils.errors import WriteError
from cifar_utils.evaluation import Evaluation
from cifar_utils.presets import from_preset


def tiny_config(**overrides):
    values = dict(dataset="synthetic", validation_split=100, train_limit=64, validation_limit=32, test_limit=32,
                  epochs=1, batch_size=32, eval_batch_size=64)
    return from_preset("seed003", **{**values, **overrides})


def record(history, **metrics):
    return report.RunRecord(out_dir=None, history=history, metrics=metrics)


def row(epoch, train_acc, val_acc, val_loss):
    return {"epoch": epoch, "train_loss": 1.0, "train_acc": train_acc, "val_loss": val_loss, "val_acc": val_acc,
            "lr": 0.1, "seconds": 1.0}


def test_training_discussion_reads_overfitting_from_the_run():
    overfit = record([row(1, 0.70, 0.68, 0.9), row(2, 0.99, 0.80, 1.2)], test_accuracy=0.79, validation_accuracy=0.80)
    text = discussion.discuss_training(overfit)
    assert "+19.0 points" in text and "large gap" in text
    assert "lowest at epoch 1 of 2 (0.900)" in text and "ended at 1.200" in text
    assert "1.00 points below the final validation accuracy" in text

    healthy = record([row(1, 0.60, 0.62, 1.1), row(2, 0.86, 0.87, 0.5)], test_accuracy=0.871, validation_accuracy=0.87)
    text = discussion.discuss_training(healthy)
    assert "not overfitting" in text and "lowest at the last epoch" in text and "predicted the test result well" in text
    assert "smoke" not in text and "smoke run" in discussion.discuss_training(healthy, smoke=True)
    assert "measured without test-time augmentation" in text  # no config recorded: no TTA

    below = record([row(1, 0.50, 0.70, 1.1), row(2, 0.70, 0.85, 0.5)], test_accuracy=0.85, validation_accuracy=0.85)
    text = discussion.discuss_training(below)
    assert "-15.0 points): validation accuracy is well above training accuracy" in text and "are close" not in text
    assert "equal to the final validation accuracy" in text


def test_training_discussion_says_the_final_accuracies_use_test_time_augmentation():
    history = [row(1, 0.60, 0.62, 1.1), row(2, 0.86, 0.86, 0.5)]
    text = discussion.discuss_training(record(history, test_accuracy=0.871, validation_accuracy=0.875,
                                          config={"tta": "flip_translate"}))
    assert "both measured with test-time augmentation (flip_translate)" in text
    assert ("The curves' per-epoch validation accuracies are measured without test-time augmentation: 86.00% for "
            "the evaluated weights, 1.50 points below the final evaluation with it.") in text
    # a run that keeps its best epoch is evaluated there; here augmentation costs accuracy, and the text says so
    history = [row(1, 0.60, 0.88, 1.1), row(2, 0.86, 0.86, 0.5)]
    text = discussion.discuss_training(record(history, test_accuracy=0.871, validation_accuracy=0.875,
                                          config={"tta": "flip", "keep_best": True}))
    assert "88.00% for the evaluated weights, 0.50 points above the final evaluation with it" in text


def test_training_discussion_names_only_the_regularisers_the_run_used():
    history = [row(1, 0.60, 0.62, 1.1), row(2, 0.92, 0.87, 0.5)]  # a 5-point gap, validation loss still falling
    used = discussion.discuss_training(record(history, test_accuracy=0.87, validation_accuracy=0.87,
                                              config={"augmentation": "crop_flip", "weight_decay": 5e-4}))
    assert "some overfitting, held in check by augmentation and weight decay." in used
    assert "the gap had not yet cost validation loss, so more epochs might still help" in used
    assert "not started to overfit" not in used  # it would contradict "some overfitting"
    bare = discussion.discuss_training(record(history, test_accuracy=0.87, validation_accuracy=0.87,
                                              config={"augmentation": "none", "label_smoothing": 0.0}))
    assert "with no augmentation, label smoothing or weight decay to hold it in check" in bare
    close = [row(1, 0.60, 0.62, 1.1), row(2, 0.86, 0.87, 0.5)]
    assert "measured on augmented images while" in discussion.discuss_training(
        record(close, test_accuracy=0.87, validation_accuracy=0.87, config={"augmentation": "crop_flip"}))
    assert "measured while the weights still change" in discussion.discuss_training(
        record(close, test_accuracy=0.87, validation_accuracy=0.87, config={"augmentation": "none"}))


def test_evaluation_discussion_names_confusions_and_gate_preferences():
    classes = ["cat", "dog", "ship"]
    confusion = torch.tensor([[80, 15, 5], [12, 85, 3], [1, 0, 99]])
    labels = torch.repeat_interleave(torch.arange(3), 100)
    evaluation = Evaluation(accuracy=0.88, loss=0.4, labels=labels, predictions=labels, confusion=confusion,
                            classes=classes, per_class_accuracy={"cat": 0.80, "dog": 0.85, "ship": 0.99}, report="")
    branches = report.BranchWeightSummary(
        weights=[torch.tensor([[0.8, 0.2], [0.6, 0.4]]), torch.tensor([[0.5, 0.5], [0.52, 0.48]])],
        entropy=0.6, uniform=math.log(2), figure=None, branch_labels=("3x3", "1x1"))
    text = discussion.discuss_evaluation(evaluation, branches)
    assert "weakest class is cat (80.0%)" in text and "strongest ship (99.0%)" in text
    assert "cat predicted as dog (15 images)" in text and "dog is taken for cat 12 times" in text
    assert "both ways" in text
    assert "Block 1 3x3 70.0%, Block 2 3x3 51.0%" in text
    assert "Block 1 gives 3x3 more than 55.0% (an even mix gives each branch 50.0%)" in text
    assert "Overall, the Blocks mix their branches" in text
    assert "unevenly, yet far from one branch per image" in text  # entropy 0.6 of 0.693

    lopsided = torch.tensor([[80, 15, 5], [5, 92, 3], [1, 0, 99]])
    text = discussion.discuss_evaluation(replace(evaluation, confusion=lopsided), branches)
    assert "dog is taken for cat 5 times: cat is taken for dog 3.0 times as often as the reverse." in text
    one_way = torch.tensor([[80, 15, 5], [0, 97, 3], [1, 0, 99]])
    assert "dog is taken for cat 0 times: never the other way." in discussion.discuss_evaluation(
        replace(evaluation, confusion=one_way), branches)


def test_gate_preferences_a_rounded_55_percent_cannot_fall_on_both_sides_of_the_threshold():
    branches = report.BranchWeightSummary([torch.tensor([[0.549, 0.451]]), torch.tensor([[0.5512, 0.4488]])], 0.69,
                                          math.log(2), None, ("3x3", "1x1"))
    evaluation = Evaluation(accuracy=0.5, loss=1.0, labels=torch.zeros(2, dtype=torch.long),
                            predictions=torch.zeros(2, dtype=torch.long), confusion=torch.tensor([[2, 0], [0, 0]]),
                            classes=["a", "b"], per_class_accuracy={"a": 1.0, "b": 0.0}, report="")
    text = discussion.discuss_evaluation(evaluation, branches)
    assert "Block 1 3x3 54.9%, Block 2 3x3 55.1%. Block 2 gives 3x3 more than 55.0%" in text


def test_gate_preferences_without_a_clear_favourite():
    branches = report.BranchWeightSummary([torch.tensor([[0.52, 0.48]])], 0.69, math.log(2), None, ("3x3", "1x1"))
    evaluation = Evaluation(accuracy=0.5, loss=1.0, labels=torch.zeros(2, dtype=torch.long),
                            predictions=torch.zeros(2, dtype=torch.long), confusion=torch.tensor([[2, 0], [0, 0]]),
                            classes=["a", "b"], per_class_accuracy={"a": 1.0, "b": 0.0}, report="")
    assert "No Block gives its favourite branch more than 55.0%" in discussion.discuss_evaluation(evaluation, branches)


def test_banner_is_built_from_the_run_metadata(monkeypatch, tmp_path):
    monkeypatch.setenv(report.OUTPUT_ENV, str(tmp_path))
    setup = report.NotebookSetup(smoke=False, device=torch.device("cpu"), in_colab=False, figures_dir=tmp_path,
                                 runs_dir=tmp_path)
    metrics = {"preset": "cpu", "epochs": 10, "split_sizes": {"train": 45000, "validation": 5000, "test": 10000},
               "data": "image folder /x/cifar10-jpeg", "device": "cuda (NVIDIA H100 80GB HBM3)", "precision": "bf16",
               "train_seconds": 75.0, "date": "2026-11-22T19:00:00"}
    text = report.banner(setup, [metrics]).data
    assert "**full profile**" in text and "preset `cpu`, 10 epochs on 45,000 training images" in text
    assert "JPEG copy" in text and "trained in bf16 on NVIDIA H100 80GB HBM3 in 75 s" in text and "2026-11-22" in text
    assert "75 s" in text and f"produced on {datetime.date.today().isoformat()} on {cpu_model()} (" in text
    assert "whole splits, each preset's own epochs" in text
    shorter = report.banner(setup, [{**metrics, "epochs": 3}]).data  # 03 given epochs=3: the clause would be false
    assert "whole splits" not in shorter and "with the epochs and images each run below gives" in shorter
    subset = report.banner(setup, [{**metrics, "config": {"train_limit": 5000}}]).data
    assert "whole splits" not in subset


def test_a_banner_sums_up_runs_that_differ_only_in_time_and_date(tmp_path):
    setup = report.NotebookSetup(smoke=False, device=torch.device("cpu"), in_colab=False, figures_dir=tmp_path,
                                 runs_dir=tmp_path)
    run = {"preset": "cpu", "epochs": 1, "split_sizes": {"train": 9, "validation": 1, "test": 5},
           "data": "image folder /x/cifar10-jpeg", "device": "cpu (2 threads)", "train_seconds": 400.0,
           "date": "2026-12-07T10:00:00"}
    runs = [run, {**run, "train_seconds": 480.0, "date": "2026-12-06T09:00:00"}, {**run, "epochs": 2}]
    text = report.banner(setup, runs).data
    assert ("> 2 runs, each preset `cpu`, 1 epoch on 9 training images (1 validation, 5 test) of the offline JPEG "
            "copy of CIFAR-10 (not the official data set), trained on cpu (2 threads) in 7 minutes to 8 minutes "
            "each, on 2026-12-06, 2026-12-07.") in text
    assert "> Run: preset `cpu`, 2 epochs on 9 training images" in text  # other settings: its own line


def test_a_matching_shipped_run_is_copied_instead_of_trained(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shipped = tmp_path / "shipped"
    trained = report.train_or_reuse(tiny_config(), shipped, device="cpu", log=lambda _: None)
    lines = []
    got = report.copy_shipped_run(tiny_config(data_root=str(tmp_path / "elsewhere")), tmp_path / "runs" / "03",
                                  shipped=shipped, log=lines.append)
    assert got is not None and got.reused and got.metrics == trained.metrics
    assert sorted(p.name for p in (tmp_path / "runs" / "03").iterdir()) == sorted(report.SHIPPED_FILES)
    sibling = tmp_path / "runs" / "made-by-mkdir"
    sibling.mkdir()
    assert (tmp_path / "runs" / "03").stat().st_mode & 0o777 == sibling.stat().st_mode & 0o777  # not mkdtemp's 0700
    assert lines[0].startswith("using the shipped run shipped (")  # relative: no machine's absolute path
    # other settings, or a folder that already holds something: never copied
    assert report.copy_shipped_run(tiny_config(lr=0.05), tmp_path / "runs" / "other", shipped=shipped) is None
    assert report.copy_shipped_run(tiny_config(), tmp_path / "runs" / "03", shipped=shipped) is None
    assert not list((tmp_path / "runs").glob(".shipped-*"))  # no staging folder left behind


def test_a_shipped_run_that_cannot_be_copied_is_one_error_and_leaves_nothing(tmp_path, monkeypatch):
    shipped = tmp_path / "shipped"
    report.train_or_reuse(tiny_config(), shipped, device="cpu", log=lambda _: None)

    def full_disk(source, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report.shutil, "copy2", full_disk)
    with pytest.raises(WriteError, match="No space left on device"):
        report.copy_shipped_run(tiny_config(), tmp_path / "runs" / "03", shipped=shipped, log=lambda _: None)
    assert list((tmp_path / "runs").iterdir()) == []  # no staging folder, no half-copied run


def lr_row(lr, val, val_std, test=0.8, runs=2):
    return {"learning_rate": lr, "runs": runs, "failed": 0, "val_acc_mean": val, "val_acc_std": val_std,
            "test_acc_mean": test, "test_acc_std": 0.001, "train_seconds_mean": 10.0}


def test_a_run_summary_reads_every_number_from_the_metrics():
    metrics = {"preset": "cpu", "epochs": 1, "split_sizes": {"train": 45000, "validation": 5000, "test": 1},
               "train_seconds": 409.4, "device": "cpu (2 threads)", "test_accuracy": 0.8849,
               "validation_accuracy": 0.889, "config": {"tta": "flip"}}
    text = discussion.summarize_run(metrics, "the offline JPEG copy")
    assert text == ("The cpu preset, trained for 1 epoch on 45,000 images in 409 s on cpu (2 threads), reached "
                    "88.49% test accuracy on 1 test image and 88.90% final validation accuracy, both with test-time "
                    "augmentation (flip); measured on the offline JPEG copy.")
    unvalidated = discussion.summarize_run({**metrics, "validation_accuracy": None}, "x", smoke=True)
    assert "on 1 test image, with test-time augmentation (flip); measured on x. This is a smoke run" in unvalidated


def test_lr_discussion_weighs_the_lead_against_seed_noise():
    clear = [lr_row(0.1, 0.80, 0.002), lr_row(0.2, 0.86, 0.003), lr_row(0.4, 0.83, 0.002)]
    text = discussion.discuss_lr_comparison(clear, 0.2)
    assert "lr 0.2 reaches 86.00% ± 0.30% validation" in text and "over 2 seeds" in text
    assert "lead over lr 0.4 is 3.00 points" in text and "ranking is unlikely to be seed-to-seed noise" in text
    assert "inside the range tried" in text
    close = [lr_row(0.1, 0.851, 0.004), lr_row(0.2, 0.853, 0.005)]
    text = discussion.discuss_lr_comparison(close, 0.2)
    assert "not clearly different" in text
    assert ("On where the best rate lies: lr 0.1 is not clearly worse, so a smaller rate might do as well or better; "
            "no larger rate was tried, so a larger rate might do as well or better.") in text


def test_lr_discussion_brackets_the_best_rate_only_when_both_neighbours_did_clearly_worse():
    # 05's committed runs: lr 0.125 and lr 0.5 both trail lr 0.25 by less than twice the larger seed spread
    summary = [lr_row(0.125, 0.8763, 0.0072), lr_row(0.25, 0.8896, 0.0025), lr_row(0.5, 0.8860, 0.0008)]
    text = discussion.discuss_lr_comparison(summary, 0.25)
    assert "inside the range tried" not in text
    # lr 0.5, the runner-up, had its margin in the sentence before: named, not repeated
    assert ("On where the best rate lies: lr 0.125 is within twice the seed-to-seed spread of lr 0.25, so a smaller "
            "rate might do as well or better; lr 0.5 is not clearly worse, so a larger rate might do as well or "
            "better.") in text
    assert "seed-to-seed standard deviation (0.25 points)" in text
    summary[0] = lr_row(0.125, 0.8763, 0.0060)  # a lead of 1.33 points over twice 0.60%: clearly worse
    text = discussion.discuss_lr_comparison(summary, 0.25)
    assert "On where the best rate lies: lr 0.5 is not clearly worse" in text and "lr 0.125 is within" not in text
    one_seed = [lr_row(0.1, 0.80, math.nan, runs=1), lr_row(0.2, 0.81, math.nan, runs=1), lr_row(0.4, 0.805, math.nan, runs=1)]
    text = discussion.discuss_lr_comparison(one_seed, 0.2)
    assert "inside the range tried" not in text  # one seed per rate: no noise to weigh a lead against
    assert "lr 0.4 trails by 0.50 points, which one seed per rate cannot tell from noise" in text
    alike = [lr_row(0.1, 0.80, 0.0), lr_row(0.2, 0.81, 0.0), lr_row(0.4, 0.79, 0.0)]  # seeds that scored alike
    text = discussion.discuss_lr_comparison(alike, 0.2)
    assert "with seeds that scored exactly alike there is no measure of noise" in text
    assert "unlikely to be" not in text and "inside the range tried" not in text
    assert "lr 0.4 trails by 2.00 points, which seeds that scored exactly alike cannot tell from noise" in text


def test_lr_discussion_names_a_better_rate_that_failed_on_some_seeds_and_never_reports_a_negative_lead():
    # sweep.chosen_learning_rate passes over lr 0.2 (a seed diverged) for lr 0.1, though 0.2's survivor scored higher
    partly = {**lr_row(0.2, 0.85, math.nan, runs=1), "failed": 1}
    text = discussion.discuss_lr_comparison([lr_row(0.1, 0.80, 0.01), partly, lr_row(0.05, 0.78, 0.01)], 0.1)
    assert ("lr 0.2 reached a higher mean validation accuracy over the seeds that finished, but a rate that fails on "
            "some seeds is not chosen.") in text
    assert "lead over lr 0.05 is 2.00 points" in text and "-" not in text.split("lead over")[1].split("points")[0]
    assert "lr 0.2 did as well or better, so a larger rate might do as well or better" in text


def test_lr_discussion_counts_a_failed_rate_as_worse_and_a_tied_one_as_not():
    diverged = {**lr_row(1.0, math.nan, math.nan, test=math.nan, runs=0), "failed": 2}
    text = discussion.discuss_lr_comparison([lr_row(0.001, 0.70, 0.01), lr_row(0.01, 0.80, 0.01), diverged], 0.01)
    assert "Runs failed for lr 1 on 2 of 2 seeds" in text and "inside the range tried" in text
    assert "by more than twice the seed-to-seed spread" not in text  # lr 1 was never compared with a spread
    assert "lead over lr 0.001" in text  # measured against the best rate that finished
    tied = discussion.discuss_lr_comparison([lr_row(0.001, 0.80, 0.01), lr_row(0.01, 0.80, 0.01)], 0.001)
    assert "Every other rate reached the same mean validation accuracy" in tied and "were worse" not in tied
    one_epoch = {"lr=0.001": [[{"epoch": 1, "val_acc": 0.5, "val_loss": 1.0, "lr": 0.001}]],
                 "lr=0.01": [[{"epoch": 1, "val_acc": 0.6, "val_loss": 0.9, "lr": 0.01}]]}
    text = discussion.discuss_lr_comparison([lr_row(0.001, 0.5, 0.0), lr_row(0.01, 0.6, 0.0)], 0.01, histories=one_epoch)
    assert "fell at every epoch" not in text  # one epoch has no epoch-to-epoch change


def test_training_discussion_of_a_run_without_validation_claims_no_overfitting_verdict():
    history = [row(1, 0.50, math.nan, math.nan), row(2, 0.70, math.nan, math.nan)]
    text = discussion.discuss_training(record(history, test_accuracy=0.66, validation_accuracy=None))
    assert "held out no validation images" in text and "66.00%" in text
    assert "nan" not in text and "gap" not in text and "memorises" not in text


def test_a_saved_config_without_a_newer_field_counts_as_its_default():
    config = from_preset("cpu", head_pool="avg", identity_init=False)  # the defaults
    saved = config.to_dict()
    del saved["head_pool"], saved["identity_init"]  # a run saved before these fields existed
    assert report.config_differences(saved, config) == []
    assert report.config_differences(saved, from_preset("cpu", identity_init=False)) == ["head_pool: 'avg' -> 'max'"]


def test_settings_that_do_not_change_results_never_stop_a_run_being_reused():
    from cifar_utils import engine
    from cifar_utils.config import NOT_RESULT_FIELDS

    saved = from_preset("cpu").to_dict()
    assert report.config_differences(saved, from_preset("cpu", eval_batch_size=1000, print_every=3, num_workers=0)) == []
    assert report.config_differences(saved, from_preset("cpu", label_smoothing=0.1)) == ["label_smoothing: 0.2 -> 0.1"]
    # Each such setting changed at once, as reuse compares it, and as resume compares it (no error).
    changed = from_preset("cpu", print_every=3, num_workers=1, checkpoint_every_steps=7, eval_batch_size=250)
    assert {name for name in NOT_RESULT_FIELDS if getattr(changed, name) != saved[name]} == set(NOT_RESULT_FIELDS)
    assert report.config_differences(saved, changed) == []
    engine._check_same_setup({"config": saved, "extra_state": {}}, changed, Path("checkpoint.pt"), {})


def test_a_setting_the_saved_run_never_read_never_stops_it_being_reused():
    saved = {**from_preset("cpu").to_dict(), "kl_weight": 0.5}  # saved before unread settings were refused
    assert report.config_differences(saved, from_preset("cpu")) == []
    # Where the wanted run reads it, the setting that makes it read differs too; the saved run computed with
    # the preset's value of what it never read, as resume compares them.
    assert report.config_differences(saved, from_preset("cpu", loss="kl_label_smoothing", kl_weight=0.1)) == [
        "loss: 'cross_entropy' -> 'kl_label_smoothing'", "kl_weight: 0.0 -> 0.1"]


def test_data_root_differs_only_where_it_names_another_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "x").mkdir(parents=True)
    saved = from_preset("cpu", data_root="data/x").to_dict()  # a command-line run from the repository root
    monkeypatch.setenv("CIFAR10_ROOT", str(tmp_path / "data" / "x"))  # as `report` sets it for the notebooks
    assert report.config_differences(saved, from_preset("cpu", data_root=None)) == []
    assert report.config_differences(saved, from_preset("cpu", data_root=str(tmp_path / "data" / "x"))) == []
    assert report.config_differences(saved, from_preset("cpu", data_root="data/y")) == [
        "data_root: 'data/x' -> 'data/y'"]
    monkeypatch.setenv("CIFAR10_ROOT", "elsewhere")  # None now names another folder
    assert report.config_differences(saved, from_preset("cpu")) == ["data_root: 'data/x' -> None"]


def test_the_config_line_says_how_muon_splits_the_parameters():
    assert "muon for the conv filters (at 0.2 x lr), sgd for the rest, lr 0.25" in report.describe_config(from_preset("cpu"))
    assert ", sgd lr 0.25," in report.describe_config(from_preset("cpu", optimizer="sgd"))


def test_lr_discussion_reads_the_curves_when_given_the_histories():
    def history(accuracies, losses, rates=(1.0, 1.0, 1.0)):  # the rate as each epoch began, as a fraction
        return [{"epoch": e + 1, "val_acc": a, "val_loss": l, "lr": r}
                for e, (a, l, r) in enumerate(zip(accuracies, losses, rates))]

    histories = {
        "lr=0.25": [history([0.70, 0.80, 0.88], [1.0, 0.8, 0.6]), history([0.72, 0.82, 0.88], [1.0, 0.8, 0.6])],
        "lr=0.5": [history([0.60, 0.70, 0.87], [1.2, 1.3, 0.7]), history([0.62, 0.72, 0.87], [1.2, 1.3, 0.7])],
        "lr=0.125": [history([0.72, 0.83, 0.86], [0.9, 0.8, 0.7])],
    }
    summary = [lr_row(0.125, 0.86, math.nan, runs=1), lr_row(0.25, 0.88, 0.0), lr_row(0.5, 0.87, 0.0)]
    text = discussion.discuss_lr_comparison(summary, 0.25, histories=histories)
    assert "Along the way (the per-epoch curves, without test-time augmentation), lr 0.125" in text
    assert ("lr 0.5 trails lr 0.25 by up to 10.00 points of mean validation accuracy (epoch 2: 71.00% against "
            "81.00%)") in text
    assert "ends 2.00 points behind; lr 0.5 trails" in text and "and ends 1.00 points behind." in text
    assert "lr 0.125 trails lr 0.25 by up to 2.00 points" in text  # epoch 3; it led at epochs 1 and 2
    assert "rose from one epoch to the next for lr 0.5 at epoch 2:" in text
    assert "Along the way" not in discussion.discuss_lr_comparison(summary, 0.25)  # no histories, no curve sentences
    # The same rise while the rate still climbs (a warm-up) is told apart from one after it.
    warming = {**histories, "lr=0.5": [history([0.60, 0.70, 0.87], [1.2, 1.3, 0.7], rates=(0.2, 0.6, 1.0))] * 2}
    text = discussion.discuss_lr_comparison(summary, 0.25, histories=warming)
    assert "rose from one epoch to the next" not in text
    assert ("The mean validation loss rose for lr 0.5 at epoch 2, while the learning rate was still climbing in its "
            "warm-up") in text
