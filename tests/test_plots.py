"""Plots: each returns a Figure, saves a real PNG atomically, and rejects inconsistent input clearly."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from matplotlib.figure import Figure

from cifar_utils import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CLASSES = [f"class{c}" for c in range(10)]


def history(epochs: int = 3, start_acc: float = 0.2) -> list[dict]:
    return [{"epoch": e, "train_loss": 2.0 / e, "train_acc": start_acc + 0.1 * e, "val_loss": 2.1 / e,
             "val_acc": start_acc + 0.08 * e, "lr": 1e-3, "seconds": 1.5} for e in range(1, epochs + 1)]


def assert_png(path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert not list(path.parent.glob(f".{path.name}.*.tmp")), "a temporary file was left behind"


def test_history_curves_figure_and_png(tmp_path):
    target = tmp_path / "figures" / "curves.png"  # the folder does not exist yet
    fig = plots.plot_history(history(), title="demo", save_to=target)
    assert isinstance(fig, Figure)
    assert [ax.get_title() for ax in fig.axes] == ["Loss", "Accuracy"]
    assert_png(target)


def test_history_with_one_epoch_marks_every_epoch_on_the_axis():
    fig = plots.plot_history(history(epochs=1))
    assert list(fig.axes[0].get_xticks()) == [1]


def test_empty_history_is_refused():
    with pytest.raises(ValueError, match="empty"):
        plots.plot_history([])


def test_several_runs_on_one_figure(tmp_path):
    runs = {"lr=0.01": history(start_acc=0.3), "lr=0.001": history(start_acc=0.1)}
    fig = plots.plot_runs(runs, save_to=tmp_path / "runs.png")
    loss_ax, acc_ax = fig.axes
    assert len(loss_ax.get_lines()) == 2  # one validation-loss curve per run
    assert len(acc_ax.get_lines()) == 4  # validation and training accuracy per run
    assert_png(tmp_path / "runs.png")


def test_confusion_heatmap_counts_and_normalised(tmp_path):
    confusion = torch.tensor([[8, 2], [1, 9]])
    counts = plots.plot_confusion(confusion, ["cat", "dog"], normalize=False)
    normalised = plots.plot_confusion(confusion, ["cat", "dog"], normalize=True, save_to=tmp_path / "c.png")
    assert "8" in [t.get_text() for t in counts.axes[0].texts]
    assert "0.80" in [t.get_text() for t in normalised.axes[0].texts]  # row-normalised: 8 of 10 cats
    assert_png(tmp_path / "c.png")


def test_per_class_accuracy_bars(tmp_path):
    fig = plots.plot_per_class_accuracy({"cat": 0.5, "dog": 0.75}, save_to=tmp_path / "p.png")
    assert [t.get_text() for t in fig.axes[0].texts] == ["50.0%", "75.0%"]
    assert_png(tmp_path / "p.png")


def test_pick_examples_mixes_wrong_and_right():
    labels = torch.arange(40) % 10
    predictions = labels.clone()
    predictions[:5] = (predictions[:5] + 1) % 10  # 5 mistakes
    chosen = plots.pick_examples(labels, predictions, count=8, wrong_fraction=0.5)
    wrong = (labels[chosen] != predictions[chosen]).tolist()
    assert len(chosen) == 8 and len(set(chosen.tolist())) == 8
    assert wrong == [True] * 4 + [False] * 4
    few = plots.pick_examples(labels, predictions, count=16, wrong_fraction=1.0)
    assert int((labels[few] != predictions[few]).sum()) == 5  # all there are, topped up with right ones
    assert len(few) == 16


def test_prediction_grid_marks_wrong_ones(synthetic, tmp_path):
    images, labels = synthetic.test.images[:20], synthetic.test.labels[:20]
    predictions = labels.clone()
    predictions[:3] = (predictions[:3] + 1) % 10
    fig = plots.plot_predictions(images, labels, predictions, CLASSES, count=8, columns=4,
                                 save_to=tmp_path / "pred.png")
    colours = [ax.title.get_color() for ax in fig.axes if ax.title.get_text()]
    assert colours.count(plots.WRONG_COLOUR) == 3 and len(colours) == 8
    assert_png(tmp_path / "pred.png")


def test_prediction_grid_refuses_mismatched_lengths(synthetic):
    with pytest.raises(ValueError, match="same length"):
        plots.plot_predictions(synthetic.test.images[:5], synthetic.test.labels[:4], synthetic.test.labels[:4], CLASSES)


def test_class_samples_grid(synthetic, tmp_path):
    fig = plots.plot_class_samples(synthetic.train.images, synthetic.train.labels, synthetic.classes, per_class=3,
                                   save_to=tmp_path / "samples.png")
    assert len(fig.axes) == 10 * 3
    assert [fig.axes[3 * row].get_ylabel() for row in range(10)] == synthetic.classes
    assert_png(tmp_path / "samples.png")


def test_augmentation_grid_is_seeded_and_leaves_the_global_rng_alone(synthetic, tmp_path):
    images = synthetic.train.images[:3]
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = plots.plot_augmentations(images, ("crop_flip", "affine_jitter"), seed=1, save_to=tmp_path / "aug.png")
    assert torch.equal(torch.rand(1), before)
    second = plots.plot_augmentations(images, ("crop_flip", "affine_jitter"), seed=1)
    pixels = lambda fig: [ax.images[0].get_array().tolist() for ax in fig.axes]  # noqa: E731
    assert pixels(first) == pixels(second)
    assert [fig_ax.get_ylabel() for fig_ax in first.axes[::3]] == ["original", "crop_flip", "affine_jitter"]
    assert_png(tmp_path / "aug.png")


def test_branch_weights_heatmaps(tmp_path):
    weights = [torch.softmax(torch.randn(5, 3), dim=1), torch.softmax(torch.randn(5, 2), dim=1)]  # K differs
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    fig = plots.plot_branch_weights(weights, ["1x1", "3x3", "5x5"], images=images, count=2,
                                    save_to=tmp_path / "a.png")
    assert isinstance(fig, Figure)
    assert_png(tmp_path / "a.png")
    with pytest.raises(ValueError, match="no branch weights"):
        plots.plot_branch_weights([])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the headless rule is for Linux")
def test_headless_import_picks_agg():
    code = "import cifar_utils.plots, matplotlib; print(matplotlib.get_backend())"
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "PYTHONPATH": ":".join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().lower() == "agg"
