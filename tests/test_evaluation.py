"""Evaluation: confusion matrix, per-class accuracy, most-confused pairs, sklearn report, TTA views."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cifar_utils.errors import ConfigError
from cifar_utils.evaluation import _views, evaluate, predict, view_count

CPU = torch.device("cpu")
CLASSES = ["a", "b", "c"]
LABELS = [0, 0, 1, 1, 2, 2, 2]
PREDICTED = [0, 1, 1, 1, 2, 0, 0]


def hand_example():
    gen = torch.Generator().manual_seed(0)
    logits = torch.rand(len(LABELS), 3, generator=gen)  # in [0, 1): the +3 below decides the argmax
    logits[torch.arange(len(LABELS)), torch.tensor(PREDICTED)] += 3.0
    return logits, torch.tensor(LABELS)


def report_line(report: str, name: str) -> list[str]:
    return next(line.split() for line in report.splitlines() if line.split()[:1] == [name])


def test_evaluate_on_hand_made_logits():
    logits, labels = hand_example()
    result = evaluate(None, None, CPU, CLASSES, logits_and_labels=(logits, labels))
    assert result.predictions.tolist() == PREDICTED
    assert result.labels.tolist() == LABELS
    # rows: true class, columns: predicted class
    assert result.confusion.tolist() == [[1, 1, 0], [0, 2, 0], [2, 0, 1]]
    assert result.confusion.dtype == torch.int64
    assert result.accuracy == pytest.approx(4 / 7)
    assert result.per_class_accuracy == pytest.approx({"a": 0.5, "b": 1.0, "c": 1 / 3})
    assert list(result.per_class_accuracy) == CLASSES
    assert result.loss == pytest.approx(F.cross_entropy(logits, labels).item())
    assert result.classes == CLASSES


def test_most_confused_pairs():
    result = evaluate(None, None, CPU, CLASSES, logits_and_labels=hand_example())
    assert result.most_confused() == [("c", "a", 2), ("a", "b", 1)]
    assert result.most_confused(top=1) == [("c", "a", 2)]


def test_sklearn_classification_report():
    report = evaluate(None, None, CPU, CLASSES, logits_and_labels=hand_example()).report
    assert isinstance(report, str)
    # precision, recall, f1, support
    assert report_line(report, "a") == ["a", "0.3333", "0.5000", "0.4000", "2"]
    assert report_line(report, "b") == ["b", "0.6667", "1.0000", "0.8000", "2"]
    assert report_line(report, "c") == ["c", "1.0000", "0.3333", "0.5000", "3"]
    assert report_line(report, "accuracy")[1] == "0.5714"


def test_a_class_without_examples():
    logits, labels = hand_example()
    logits = torch.cat([logits, torch.zeros(7, 1)], dim=1)
    result = evaluate(None, None, CPU, CLASSES + ["d"], logits_and_labels=(logits, labels))
    assert result.confusion.shape == (4, 4)
    assert result.per_class_accuracy["d"] == 0.0
    assert result.accuracy == pytest.approx(4 / 7)
    assert report_line(result.report, "d")[-1] == "0"


class Affine(nn.Module):
    """A tiny model that is not mirror-symmetric, so test-time views change its output."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 4)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_evaluate_runs_the_model():
    torch.manual_seed(0)
    model = Affine()
    batches = [(torch.randn(5, 3, 8, 8), torch.randint(0, 4, (5,))) for _ in range(3)]
    result = evaluate(model, batches, CPU, ["w", "x", "y", "z"])
    with torch.no_grad():
        logits = torch.cat([model(x) for x, _ in batches])
    labels = torch.cat([y for _, y in batches])
    assert result.predictions.tolist() == logits.argmax(1).tolist()
    assert result.accuracy == pytest.approx((logits.argmax(1) == labels).double().mean().item())
    assert result.confusion.sum() == 15
    assert result.loss == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-6)
    assert not model.training


def test_tta_views():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    none = _views(x, "none")
    assert len(none) == 1 and torch.equal(none[0], x)
    flip = _views(x, "flip")
    assert len(flip) == 2 and torch.equal(flip[1], x.flip(-1))
    views = _views(x, "flip_translate")
    assert len(views) == 6
    assert all(v.shape == x.shape for v in views)
    assert torch.equal(views[2][..., 2:, 2:], x[..., :-2, :-2])  # shifted by 2 pixels one way
    assert torch.equal(views[4][..., :-2, :-2], x[..., 2:, 2:])  # and the other
    assert torch.equal(views[3][..., 2:, 2:], x.flip(-1)[..., :-2, :-2])
    assert len({v.sum().item() for v in views[2:]}) > 1  # the padded views are not all the same
    assert [view_count(tta) for tta in ("none", "flip", "flip_translate")] == [1, 2, 6]


def test_an_unknown_tta_is_refused_not_taken_for_flip():
    with pytest.raises(ConfigError, match="unknown tta 'flip_tranlsate'; choose one of none, flip, flip_translate"):
        view_count("flip_tranlsate")


@pytest.mark.parametrize("tta", ["none", "flip", "flip_translate"])
def test_predict_averages_logits_over_views(tta):
    torch.manual_seed(0)
    model = Affine()
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    logits, labels = predict(model, [(x, y)], CPU, tta=tta)
    with torch.no_grad():
        expected = torch.stack([model(v) for v in _views(x, tta)]).mean(0)
    torch.testing.assert_close(logits, expected)
    assert torch.equal(labels, y)
    assert logits.shape == (4, 4) and logits.dtype == torch.float32
    if tta != "none":
        with torch.no_grad():
            assert not torch.allclose(logits, model(x))


def test_a_network_that_outputs_probabilities_is_scored_by_the_log_of_them():
    # Report 004's faithful head ends in a Softmax: a softmax over its outputs again would cap every
    # probability near e / (e + C - 1) and put the cross-entropy above 1.461 however good the network.
    from cifar_utils.models import build_model
    from cifar_utils.presets import from_preset

    torch.manual_seed(0)
    model = build_model(from_preset("seed004", faithful=True), 4).eval()
    with torch.no_grad():
        [*_, last] = (m for m in model.modules() if isinstance(m, nn.Linear))
        last.bias.copy_(torch.tensor([8.0, 0.0, 0.0, 0.0]))  # a confident network: mostly class 0
        x = torch.randn(6, 3, 32, 32)
        probabilities = torch.stack([model(v) for v in _views(x, "flip")]).mean(0)
    y = probabilities.argmax(1)  # labels it gets right, with high probability
    result = evaluate(model, [(x, y)], CPU, ["w", "x", "y", "z"], tta="flip")
    assert result.loss == pytest.approx(-probabilities[torch.arange(6), y].log().mean().item(), rel=1e-5)
    assert result.loss < -math.log(math.e / (math.e + 3))  # the floor of a softmax over probabilities
    assert result.accuracy == 1.0
    logits, _ = predict(build_model(from_preset("seed004"), 4).eval(), [(x, y)], CPU)
    assert not (logits <= 0).all()  # the default head's logits pass through as they are


def test_evaluate_checkpoint_scores_what_train_reported(tmp_path, synthetic):
    from cifar_utils.checkpoint import load_checkpoint
    from cifar_utils.data import CifarData, ImageSet
    from cifar_utils.experiment import evaluate_checkpoint, train
    from cifar_utils.presets import from_preset

    config = from_preset("seed003", dataset="synthetic", validation_split=100, train_limit=64, validation_limit=48, test_limit=48,
                         epochs=4, batch_size=32, lr=0.3, scheduler="none", keep_best=True,
                         normalization="train_stats")
    result = train(config, tmp_path / "run", device="cpu", progress=False, data=synthetic, log=lambda _: None)
    best_epoch = load_checkpoint(tmp_path / "run" / "checkpoint_best.pt")["epoch"]
    assert best_epoch < config.epochs  # otherwise the last and the best weights are the same

    # Other training images give other train_stats; the checkpoint's own statistics must be used.
    darker = ImageSet(synthetic.train.images // 2, synthetic.train.labels, synthetic.train.classes)
    lines = []
    evaluation, _ = evaluate_checkpoint(tmp_path / "run" / "checkpoint.pt", device="cpu", log=lines.append,
                                        data=CifarData(darker, synthetic.test, "synthetic", "darker"))
    assert "checkpoint_best.pt" in lines[0]
    assert evaluation.accuracy == result.metrics["test_accuracy"]
    assert evaluation.loss == pytest.approx(result.metrics["test_cross_entropy"], abs=1e-6)


def test_a_checkpoint_whose_min_lr_todays_check_refuses_is_still_evaluated(tmp_path, synthetic):
    """Before 2026-12-07 the warm-up schedules read min_lr as a share of each group's rate: 0.1 of Muon's
    filters was fine then, and is above their rate of 0.05 now. An evaluation never reads the schedule."""
    from cifar_utils.checkpoint import load_checkpoint, save_checkpoint
    from cifar_utils.experiment import evaluate_checkpoint, train
    from cifar_utils.presets import from_preset

    config = from_preset("cpu", dataset="synthetic", validation_split=100, train_limit=32, validation_limit=16,
                         test_limit=16, epochs=1, batch_size=16, precision="fp32")
    result = train(config, tmp_path / "run", device="cpu", progress=False, data=synthetic, log=lambda _: None)
    path = tmp_path / "run" / "checkpoint.pt"
    state = load_checkpoint(path)
    state["config"]["min_lr"] = 0.1  # between the filters' rate (0.05) and lr (0.25)
    save_checkpoint(state, path)
    evaluation, config = evaluate_checkpoint(path, device="cpu", data=synthetic)
    assert config.min_lr == 0.1 and evaluation.accuracy == result.metrics["test_accuracy"]
    # A schedule that never reads min_lr (seed000's preset value 1e-6 stays, unread) is scored as it always was.
    unread = from_preset("seed000", dataset="synthetic", validation_split=100, train_limit=16, validation_limit=8,
                         test_limit=8, epochs=1, batch_size=8, accumulation_steps=1, precision="fp32",
                         scheduler="onecycle")
    result = train(unread, tmp_path / "onecycle", device="cpu", progress=False, data=synthetic, log=lambda _: None)
    evaluation, _ = evaluate_checkpoint(tmp_path / "onecycle" / "checkpoint.pt", device="cpu", data=synthetic)
    assert evaluation.accuracy == result.metrics["test_accuracy"]


def test_final_evaluation_says_what_it_does_and_shows_progress(tmp_path, synthetic, capsys):
    from cifar_utils.experiment import train
    from cifar_utils.presets import from_preset

    config = from_preset("seed003", dataset="synthetic", validation_split=100, train_limit=32, validation_limit=48, test_limit=48,
                         epochs=1, batch_size=32, eval_batch_size=16)
    train(config, tmp_path / "run", device="cpu", progress=True, data=synthetic)
    captured = capsys.readouterr()
    assert "final evaluation: 48 test and 48 validation images" in captured.out
    assert "test: " in captured.err and "validation: " in captured.err  # the tqdm bars of both splits


def test_a_run_trained_in_fp16_is_evaluated_on_a_cpu_only_when_asked_for_fp32(tmp_path, synthetic):
    from cifar_utils.checkpoint import load_checkpoint, save_checkpoint
    from cifar_utils.errors import ConfigError
    from cifar_utils.experiment import evaluate_checkpoint, train
    from cifar_utils.presets import from_preset

    config = from_preset("seed003", dataset="synthetic", validation_split=100, train_limit=32, validation_limit=16,
                         test_limit=16, epochs=1, batch_size=16, precision="fp32", keep_best=False)
    result = train(config, tmp_path / "run", device="cpu", progress=False, data=synthetic, log=lambda _: None)
    path = tmp_path / "run" / "checkpoint.pt"
    state = load_checkpoint(path)
    state["config"]["precision"] = "fp16"  # as if trained on a GPU in fp16
    save_checkpoint(state, path)
    with pytest.raises(ConfigError, match="trained with precision=fp16.*--precision fp32"):
        evaluate_checkpoint(path, device="cpu", data=synthetic)
    evaluation, config = evaluate_checkpoint(path, device="cpu", data=synthetic, precision="fp32")
    assert config.precision == "fp32" and evaluation.accuracy == result.metrics["test_accuracy"]
