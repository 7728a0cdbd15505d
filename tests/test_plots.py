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


def test_several_seeds_per_run_are_thin_lines_under_their_mean():
    seeds = [history(start_acc=0.1), history(start_acc=0.3), history(epochs=2, start_acc=0.5)]  # one stopped early
    fig = plots.plot_runs({"lr=0.01": seeds, "lr=0.001": [history()]}, title="seed004, 45,000 images, JPEG copy")
    loss_ax, acc_ax = fig.axes
    assert len(loss_ax.get_lines()) == 3 + 1 + 1  # three seeds and their mean; one run alone
    assert len(acc_ax.get_lines()) == 3 + 2 + 2  # seeds' validation, then mean validation and training each
    mean = acc_ax.get_lines()[3]
    assert mean.get_label() == "lr=0.01 (mean of 3 runs) validation"
    assert list(mean.get_xdata()) == [1, 2]  # only the epochs every seed reached
    assert mean.get_ydata()[1] == pytest.approx(100 * (0.1 + 0.3 + 0.5 + 3 * 0.16) / 3)
    assert mean.get_linewidth() > acc_ax.get_lines()[0].get_linewidth()
    assert mean.get_marker() != acc_ax.get_lines()[5].get_marker()  # each rate its own marker shape
    training = acc_ax.get_lines()[4]
    assert training.get_label() == "lr=0.01 (mean of 3 runs) training"
    assert training.get_marker() == mean.get_marker() and training.get_markerfacecolor() == "none"  # by shape too
    assert fig._suptitle.get_text() == "seed004, 45,000 images, JPEG copy"


def summary_row(lr, val, val_std, test, test_std, runs=3, failed=0):
    return {"learning_rate": lr, "runs": runs, "failed": failed, "val_acc_mean": val, "val_acc_std": val_std,
            "test_acc_mean": test, "test_acc_std": test_std, "train_seconds_mean": 10.0}


def test_lr_comparison_has_error_bars_offset_series_and_the_chosen_rate(tmp_path):
    from matplotlib.container import ErrorbarContainer

    summary = [summary_row(0.1, 0.60, 0.02, 0.90, 0.01), summary_row(0.01, 0.70, 0.04, 0.50, 0.03),
               summary_row(0.001, 0.65, float("nan"), 0.55, float("nan"), runs=1, failed=2)]
    fig = plots.plot_lr_comparison(summary, "seed004, 45,000 images: learning rate", save_to=tmp_path / "lr.png")
    (ax,) = fig.axes
    assert ax.get_title() == "seed004, 45,000 images: learning rate" and ax.get_xscale() == "log"
    val, test = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    val_x, val_y = val.lines[0].get_data()
    test_x, test_y = test.lines[0].get_data()
    assert list(val_y) == pytest.approx([60, 70, 65]) and list(test_y) == pytest.approx([90, 50, 55])
    assert all(v < lr < t for v, lr, t in zip(val_x, (0.1, 0.01, 0.001), test_x))  # side by side, never on top
    (bars,) = val.lines[2]
    lows, highs = zip(*[(segment[0][1], segment[1][1]) for segment in bars.get_segments()])
    assert lows[:2] == pytest.approx((58, 66)) and highs[:2] == pytest.approx((62, 74))  # mean ± std
    chosen = [line for line in ax.get_lines() if line.get_linestyle() == ":"]
    assert [line.get_xdata()[0] for line in chosen] == [0.01]  # best validation, not best test (0.1)
    assert "1 run, 2 failed" in [t.get_text() for t in ax.get_xticklabels()][2]
    assert "chosen lr 0.01 (highest mean validation accuracy)" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert_png(tmp_path / "lr.png")


def test_lr_comparison_legend_says_when_a_higher_rate_was_passed_over_for_its_failures():
    summary = [summary_row(0.2, 0.86, 0.01, 0.85, 0.01), summary_row(0.4, 0.90, float("nan"), 0.89, float("nan"),
                                                                    runs=1, failed=1)]
    (ax,) = plots.plot_lr_comparison(summary, "t").axes
    assert ("chosen lr 0.2 (highest mean validation accuracy of the rates with no failed run)"
            in [t.get_text() for t in ax.get_legend().get_texts()])


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


def test_per_class_accuracy_has_a_chance_line_and_image_counts():
    accuracy = {"cat": 0.5, "dog": 0.75, "ship": 0.9, "frog": 0.2}
    fig = plots.plot_per_class_accuracy(accuracy, title="seed004, 10,000 test images",
                                        counts={"cat": 1000, "dog": 1000, "ship": 990, "frog": 1010})
    ax = fig.axes[0]
    (chance,) = [line for line in ax.get_lines() if line.get_label().startswith("chance")]
    assert chance.get_xdata()[0] == pytest.approx(25.0) and chance.get_linestyle() == "--"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["cat (n=1,000)", "dog (n=1,000)", "ship (n=990)",
                                                             "frog (n=1,010)"]
    assert ax.get_title() == "seed004, 10,000 test images"
    with pytest.raises(ValueError, match="missing: \\['frog'\\]"):
        plots.plot_per_class_accuracy(accuracy, counts={"cat": 1, "dog": 1, "ship": 1})


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


def test_prediction_grid_says_how_the_examples_were_chosen(synthetic):
    images, labels = synthetic.test.images[:20], synthetic.test.labels[:20]
    predictions = labels.clone()
    predictions[:3] = (predictions[:3] + 1) % 10
    fig = plots.plot_predictions(images, labels, predictions, CLASSES, count=8, columns=4, seed=5,
                                 title="seed004 on the JPEG copy")
    text = " ".join(fig._suptitle.get_text().split())
    assert text.startswith("seed004 on the JPEG copy")
    assert "3 misclassified, then 5 correctly classified images, drawn at random (seed 5) from the 20 given" in text


def test_prediction_grid_refuses_mismatched_lengths(synthetic):
    with pytest.raises(ValueError, match="same length"):
        plots.plot_predictions(synthetic.test.images[:5], synthetic.test.labels[:4], synthetic.test.labels[:4], CLASSES)


def test_class_samples_grid(synthetic, tmp_path):
    fig = plots.plot_class_samples(synthetic.train.images, synthetic.train.labels, synthetic.classes, per_class=3,
                                   title="600 training images (synthetic)", save_to=tmp_path / "samples.png")
    assert fig._suptitle.get_text() == "600 training images (synthetic)"
    assert len(fig.axes) == 10 * 3
    assert [fig.axes[3 * row].get_ylabel() for row in range(10)] == synthetic.classes
    assert_png(tmp_path / "samples.png")


def test_augmentation_grid_is_seeded_and_leaves_the_global_rng_alone(synthetic, tmp_path):
    images = synthetic.train.images[:3]
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = plots.plot_augmentations(images, ("crop_flip", "affine_jitter"), seed=1, title="augmentations",
                                     save_to=tmp_path / "aug.png")
    assert first._suptitle.get_text() == "augmentations"
    assert torch.equal(torch.rand(1), before)
    second = plots.plot_augmentations(images, ("crop_flip", "affine_jitter"), seed=1)
    pixels = lambda fig: [ax.images[0].get_array().tolist() for ax in fig.axes]  # noqa: E731
    assert pixels(first) == pixels(second)
    assert [fig_ax.get_ylabel() for fig_ax in first.axes[::3]] == ["original", "crop_flip", "affine_jitter"]
    assert_png(tmp_path / "aug.png")


def test_a_presets_augmentation_row_shows_its_gpu_pipeline_shifts_and_flips(synthetic):
    from cifar_utils.presets import from_preset

    images = synthetic.train.images[:4]
    fig = plots.plot_augmentations(images, (), seed=0, presets=("cpu",))
    assert [ax.get_ylabel() for ax in fig.axes[::4]] == ["original", "cpu preset"]
    shown = torch.stack([torch.as_tensor(ax.images[0].get_array()).permute(2, 0, 1) for ax in fig.axes[4:]])
    assert shown.shape == images.shape and 0 <= shown.min() and shown.max() <= 1
    config = from_preset("cpu")
    # every image is its original, shifted by at most crop_padding pixels and maybe mirrored: find it
    pad = config.crop_padding
    for image, original in zip(shown, images.float() / 255):
        padded = torch.nn.functional.pad(original[None], (pad,) * 4, mode="reflect")[0]
        windows = [view[:, dy:dy + 32, dx:dx + 32] for view in (padded, padded.flip(-1))
                   for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)]
        assert min((window - image).abs().max() for window in windows) < 1e-5
    assert any((image - original).abs().max() > 1e-3 for image, original in zip(shown, images.float() / 255))


def test_branch_weights_heatmaps(tmp_path):
    weights = [torch.softmax(torch.randn(5, 3), dim=1), torch.softmax(torch.randn(5, 2), dim=1)]  # K differs
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    fig = plots.plot_branch_weights(weights, ["1x1", "3x3", "5x5"], images=images, count=2,
                                    save_to=tmp_path / "a.png")
    assert isinstance(fig, Figure)
    assert_png(tmp_path / "a.png")
    with pytest.raises(ValueError, match="no branch weights"):
        plots.plot_branch_weights([])


def test_branch_weights_colour_scale_fits_the_data_and_axes_are_labelled():
    weights = [torch.tensor([[0.30, 0.70], [0.45, 0.55], [0.0, 1.0]]), torch.tensor([[0.52, 0.48], [0.40, 0.60], [0.5, 0.5]])]
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    fig = plots.plot_branch_weights(weights, ["3x3", "1x1"], images=images, count=2, image_labels=["cat", "ship", "dog"],
                                    title="seed004 test images")
    heatmaps = [ax for ax in fig.axes if ax.collections and ax.get_xlabel()]
    assert len(heatmaps) == 2
    for ax in heatmaps:
        assert ax.collections[0].get_clim() == pytest.approx((0.30, 0.70))  # the first 2 images, not 0..1
        assert ax.get_xlabel() == "branch (kernel size)"
        assert [t.get_text() for t in ax.get_xticklabels()] == ["3x3", "1x1"]
    assert [ax.get_title() for ax in fig.axes if ax.images] == ["cat", "ship"]
    (colour_bar,) = [ax for ax in fig.axes if ax.get_ylabel() == "branch weight a"]
    assert colour_bar.get_ylim() == pytest.approx((0.30, 0.70))


def test_importing_the_plots_leaves_the_users_backend_alone():
    # The figures are built without pyplot, so the package needs no backend, and a headless matplotlib
    # falls back to Agg by itself: importing the plots must not replace a backend the user picked.
    code = "import matplotlib; matplotlib.use('svg'); import cifar_utils.plots; print(matplotlib.get_backend())"
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "PYTHONPATH": ":".join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().lower() == "svg"


def test_branch_weight_summary_plots_the_chosen_images_and_averages_over_all():
    from cifar_utils.models import Block, branch_weight_entropy
    from cifar_utils.report import summarize_branch_weights

    model = torch.nn.Sequential(Block(3, 4, kernel_sizes=(3, 1)))
    weights = [torch.softmax(torch.randn(6, 2), dim=1)]
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    shown = torch.tensor([5, 2])
    summary = summarize_branch_weights(model, weights, images=images, count=2, shown=shown,
                                       image_labels=["five", "two"], log=lambda _: None)
    assert summary.entropy == pytest.approx(branch_weight_entropy(weights))  # all six images, not the two shown
    heatmaps = [ax for ax in summary.figure.axes if ax.collections and ax.get_xlabel()]
    drawn = [ax.collections[0].get_array().reshape(-1).tolist() for ax in heatmaps]
    assert sum(drawn, []) == pytest.approx(weights[0][5].tolist() + weights[0][2].tolist())
    titles = [ax.get_title() for ax in summary.figure.axes if ax.images]
    assert titles == ["five", "two"]
