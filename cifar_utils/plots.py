"""Plots for the report: training curves, confusion heatmap, sample predictions, per-class accuracy,
learning-rate comparisons, sample images, augmentations and the Blocks' branch weights.

Every function returns a :class:`matplotlib.figure.Figure` and, given ``save_to``, also writes it as a
PNG atomically (:func:`cifar_utils.io.save_figure`). The figures are built without pyplot, so a
notebook shows each one exactly once (when it is the cell's last expression) and scripts do not pile
up open figures. Images are uint8 tensors [N, 3, H, W], as :class:`cifar_utils.data.ImageSet` holds them.

Usage::

    from cifar_utils import plots, sweep
    plots.plot_history(result.history, title="seed004, 45,000 images (JPEG copy)", save_to="figures/curves.png")
    plots.plot_confusion(evaluation.confusion, evaluation.classes, normalize=True, title="seed004: test confusion")
    plots.plot_lr_comparison(sweep.summarize_by_learning_rate(sweep.sweep_table(runs)), title="seed004: learning rate")

The functions that show results take a ``title``: name the preset, the number of images and the data copy.
"""

from __future__ import annotations

import math
import os
import textwrap
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import matplotlib.ticker
import matplotlib.transforms
import numpy as np
import torch
from matplotlib.figure import Figure

from . import io
from .preprocessing import FLIPPING_AUGMENTATIONS

PathLike = Union[str, os.PathLike]
GRID_DPI = 80  # image grids: 32x32 images gain nothing from more pixels, and notebooks stay small
PLOT_DPI = 90  # line plots and heatmaps, as shown in notebooks
RUN_MARKERS = ("o", "s", "^", "D", "v", "P")  # one per run label, so crossing curves stay apart
WRONG_COLOUR = "tab:red"
RIGHT_COLOUR = "tab:green"


def _finish(fig: Figure, save_to: Optional[PathLike], dpi: int = 110, layout: bool = True) -> Figure:
    if layout:
        fig.tight_layout()
    if save_to is not None:
        io.save_figure(fig, Path(save_to), dpi=dpi)
    return fig


def show_inline() -> None:
    """In IPython, display returned figures inline (they are built without pyplot, which would do it)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None:
        shell.run_line_magic("matplotlib", "inline")


def _as_hwc(image: torch.Tensor) -> np.ndarray:
    """uint8 [3, H, W] tensor -> [H, W, 3] array for imshow."""
    return image.detach().cpu().permute(1, 2, 0).numpy()


def _show_image(ax, image: torch.Tensor, title: str = "", colour: str = "black") -> None:
    ax.imshow(_as_hwc(image), interpolation="nearest")
    ax.set_title(title, fontsize=8, color=colour)
    ax.set_xticks([])
    ax.set_yticks([])


def _history_column(history: Sequence[Mapping], key: str) -> list[float]:
    return [float(row[key]) for row in history]


def _epoch_axes(axes, epochs: Sequence[float]) -> None:
    """Whole-number epoch ticks (every epoch when there are few), a grid, and no offset notation."""
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.ticklabel_format(axis="y", useOffset=False)
        if len(set(epochs)) <= 12:
            ax.set_xticks(sorted(set(epochs)))
        else:
            ax.xaxis.get_major_locator().set_params(integer=True)


# ------------------------------------------------------------------------------------ training curves


def plot_history(history: Sequence[Mapping], title: Optional[str] = None,
                 save_to: Optional[PathLike] = None) -> Figure:
    """Loss and accuracy per epoch, training and validation, from a history (list of dicts with
    ``epoch``, ``train_loss``, ``train_acc``, ``val_loss``, ``val_acc``; accuracies in [0, 1])."""
    if not history:
        raise ValueError("the history is empty: nothing to plot")
    epochs = _history_column(history, "epoch")
    fig = Figure(figsize=(10, 3.6), dpi=PLOT_DPI)
    loss_ax, acc_ax = fig.subplots(1, 2)
    for split, style in (("train", "-o"), ("val", "--s")):
        name = "training" if split == "train" else "validation"
        loss_ax.plot(epochs, _history_column(history, f"{split}_loss"), style, label=name, markersize=4)
        acc_ax.plot(epochs, [100 * v for v in _history_column(history, f"{split}_acc")], style, label=name,
                    markersize=4)
    loss_ax.set(xlabel="epoch", ylabel="loss", title="Loss")
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    _epoch_axes((loss_ax, acc_ax), epochs)
    for ax in (loss_ax, acc_ax):
        ax.legend()
    if title:
        fig.suptitle(title)
    return _finish(fig, save_to)


def plot_runs(histories: Mapping[str, Sequence], title: Optional[str] = None,
              save_to: Optional[PathLike] = None) -> Figure:
    """Several runs' curves on one figure, one colour and marker shape per label (say, per learning rate):
    validation loss (left), validation accuracy (right, solid) and training accuracy (right, dotted).

    ``histories`` maps a label to a history or to a list of histories (say, one per seed, as
    :func:`cifar_utils.sweep.sweep_histories` gives). A label with several is drawn as one thin, faint
    line per run and a thick line with markers for their mean over the epochs every run reached;
    training accuracy shows only that mean, so the figure stays readable."""
    groups = _history_groups(histories)
    fig = Figure(figsize=(10, 3.8), dpi=PLOT_DPI)
    loss_ax, acc_ax = fig.subplots(1, 2)
    colours = matplotlib.colormaps["viridis"](np.linspace(0, 0.85, len(groups)))
    all_epochs: list[float] = []
    for index, (colour, (label, runs)) in enumerate(zip(colours, groups.items())):
        marker = RUN_MARKERS[index % len(RUN_MARKERS)]
        if len(runs) > 1:
            for history in runs:
                epochs = _history_column(history, "epoch")
                loss_ax.plot(epochs, _history_column(history, "val_loss"), "-", color=colour, alpha=0.35, linewidth=0.8)
                acc_ax.plot(epochs, [100 * v for v in _history_column(history, "val_acc")], "-", color=colour,
                            alpha=0.35, linewidth=0.8)
        name = label if len(runs) == 1 else f"{label} (mean of {len(runs)} runs)"
        epochs, val_loss = mean_curve(runs, "val_loss")
        all_epochs += epochs
        style = dict(color=colour, marker=marker, markersize=4, markevery=max(1, len(epochs) // 12))
        loss_ax.plot(epochs, val_loss, "-", linewidth=2, label=name, **style)
        acc_ax.plot(epochs, [100 * v for v in mean_curve(runs, "val_acc")[1]], "-", linewidth=2,
                    label=f"{name} validation", **style)
        acc_ax.plot(epochs, [100 * v for v in mean_curve(runs, "train_acc")[1]], ":", linewidth=1.5,
                    label=f"{name} training", **{**style, "markerfacecolor": "none"})  # hollow: told apart by shape
    loss_ax.set(xlabel="epoch", ylabel="validation loss", title="Validation loss")
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy (solid: validation, dotted: training)")
    _epoch_axes((loss_ax, acc_ax), all_epochs)
    loss_ax.legend(fontsize=8)
    acc_ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return _finish(fig, save_to)


def _history_groups(histories: Mapping[str, Sequence]) -> dict[str, list[Sequence[Mapping]]]:
    """``{label: [history, ...]}`` from a mapping whose values are a history or a list of histories;
    empty histories are left out."""
    groups = {}
    for label, value in histories.items():
        runs = [value] if value and isinstance(value[0], Mapping) else list(value)
        runs = [history for history in runs if history]
        if runs:
            groups[label] = runs
    if not groups:
        raise ValueError("no runs to plot: every history is empty")
    return groups


def mean_curve(runs: Sequence[Sequence[Mapping]], key: str) -> tuple[list[float], list[float]]:
    """Epochs every run reached and the runs' mean of ``key`` at each: the thick line of :func:`plot_runs`,
    which :func:`cifar_utils.discussion.discuss_lr_comparison` describes."""
    per_run = [{float(row["epoch"]): float(row[key]) for row in history} for history in runs]
    epochs = sorted(set.intersection(*(set(values) for values in per_run)))
    return epochs, [float(np.mean([values[epoch] for values in per_run])) for epoch in epochs]


def plot_lr_comparison(summary: Sequence[Mapping], title: str, save_to: Optional[PathLike] = None) -> Figure:
    """Mean validation and test accuracy per learning rate, with error bars of one standard deviation
    over the seeds, from :func:`cifar_utils.sweep.summarize_by_learning_rate` (no bar for a single run).

    The x axis is logarithmic; the two series sit a little left (validation, circles) and right (test,
    squares) of each rate so that neither hides the other. Each tick names the rate and its number of
    finished (and failed) runs. A dotted line marks the chosen rate: the highest mean validation
    accuracy (:func:`cifar_utils.sweep.chosen_learning_rate`); test accuracy is only reported."""
    from .sweep import chosen_learning_rate, passed_over

    if not summary:
        raise ValueError("the summary is empty: no learning rates to plot")
    rates = np.array([float(row["learning_rate"]) for row in summary])
    # A tenth of the smallest gap between rates on the log axis, so neighbouring rates never meet.
    gaps = np.diff(np.sort(np.log10(rates)))
    shift = 10 ** (0.1 * gaps.min() if len(gaps) else 0.05)
    fig = Figure(figsize=(6.4, 4.2), dpi=PLOT_DPI)
    ax = fig.subplots()
    for key, name, marker, colour, factor in (("val_acc", "validation", "o", "tab:blue", 1 / shift),
                                               ("test_acc", "test", "s", "tab:orange", shift)):
        means = [100 * float(row[f"{key}_mean"]) for row in summary]
        spreads = [100 * _number(row[f"{key}_std"]) for row in summary]
        ax.errorbar(rates * factor, means, yerr=np.nan_to_num(spreads), fmt=marker, color=colour, capsize=4,
                    markersize=6, label=f"{name} (mean ± std over seeds)")
    chosen = chosen_learning_rate(summary)
    among = " of the rates with no failed run" if passed_over(summary, chosen) else ""
    ax.axvline(chosen, color="grey", linestyle=":", linewidth=1.5,
               label=f"chosen lr {chosen:g} (highest mean validation accuracy{among})")
    ax.set_xscale("log")
    ax.set_xticks(rates, [_rate_tick(row) for row in summary])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    margin = 10 ** (0.1 * np.ptp(np.log10(rates)) + 0.2)  # room for the offset markers at either end
    ax.set_xlim(rates.min() / margin, rates.max() * margin)
    ax.set(xlabel="learning rate", ylabel="accuracy (%)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _finish(fig, save_to)


def _number(value: Optional[float]) -> float:
    return math.nan if value is None else float(value)


def _rate_tick(row: Mapping) -> str:
    failed = f", {row['failed']} failed" if row.get("failed") else ""
    return f"{float(row['learning_rate']):g}\n{row['runs']} run{'s' if row['runs'] != 1 else ''}{failed}"


# ------------------------------------------------------------------------------------------ evaluation


def plot_confusion(confusion: torch.Tensor | np.ndarray, classes: Sequence[str], normalize: bool = True,
                   title: Optional[str] = None, save_to: Optional[PathLike] = None) -> Figure:
    """Confusion heatmap; rows are true classes, columns predictions. ``normalize`` divides each row by
    its total, so a cell reads "fraction of this class predicted as that one"; otherwise counts."""
    import seaborn as sns

    matrix = np.asarray(confusion, dtype=np.float64)
    if normalize:
        matrix = matrix / np.clip(matrix.sum(axis=1, keepdims=True), 1, None)
    fig = Figure(figsize=(7.5, 6.2), dpi=PLOT_DPI)
    ax = fig.subplots()
    sns.heatmap(matrix, annot=True, fmt=".2f" if normalize else ".0f", cmap="Blues", square=True, ax=ax,
                xticklabels=classes, yticklabels=classes, annot_kws={"fontsize": 7},
                vmin=0, vmax=1 if normalize else None,
                cbar_kws={"label": "fraction of the true class" if normalize else "images"})
    ax.set(xlabel="predicted class", ylabel="true class",
           title=title or ("Confusion matrix (row-normalised)" if normalize else "Confusion matrix (counts)"))
    ax.tick_params(axis="x", rotation=45)
    ax.tick_params(axis="y", rotation=0)
    return _finish(fig, save_to)


def plot_per_class_accuracy(per_class_accuracy: Mapping[str, float], title: Optional[str] = None,
                            save_to: Optional[PathLike] = None, counts: Optional[Mapping[str, int]] = None) -> Figure:
    """Horizontal bars of each class's accuracy (recall, in [0, 1]), with the mean as a dotted line and
    chance (1 / number of classes) as a dashed one. ``counts`` (class -> number of test images) adds
    each class's number of images to its tick label."""
    names = list(per_class_accuracy)
    if counts is not None and set(counts) != set(names):
        raise ValueError(f"counts must name the same classes as per_class_accuracy; missing: "
                         f"{sorted(set(names) - set(counts))}, extra: {sorted(set(counts) - set(names))}")
    values = [100 * float(per_class_accuracy[n]) for n in names]
    fig = Figure(figsize=(7, 0.35 * len(names) + 1.2), dpi=PLOT_DPI)
    ax = fig.subplots()
    ticks = [f"{n} (n={int(counts[n]):,})" for n in names] if counts is not None else names
    bars = ax.barh(ticks, values, color="tab:blue")
    ax.bar_label(bars, labels=[f"{v:.1f}%" for v in values], padding=3, fontsize=8)
    mean = float(np.mean(values))
    ax.axvline(mean, color="black", linestyle=":", linewidth=1.5, label=f"mean ({mean:.1f}%)")
    ax.axvline(100 / len(names), color="tab:red", linestyle="--", linewidth=1,
               label=f"chance (1/{len(names)} = {100 / len(names):.1f}%)")
    ax.invert_yaxis()  # first class on top, as in the tables
    ax.set(xlim=(0, 110), xlabel="accuracy (%)", title=title or "Per-class accuracy")
    # Below the axis label (a fixed distance in points, whatever the number of classes): bars fill the axes.
    below = matplotlib.transforms.offset_copy(ax.transAxes, fig=fig, y=-32, units="points")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, 0), bbox_transform=below, ncol=2, fontsize=8)
    return _finish(fig, save_to)


def pick_examples(labels: torch.Tensor, predictions: torch.Tensor, count: int = 16,
                  wrong_fraction: float = 0.5, seed: int = 0) -> torch.Tensor:
    """Indices of ``count`` seeded examples, about ``wrong_fraction`` of them misclassified (fewer when
    there are not enough mistakes), wrong ones first."""
    gen = torch.Generator().manual_seed(seed)
    wrong = torch.nonzero(labels != predictions).flatten()
    right = torch.nonzero(labels == predictions).flatten()
    n_wrong = min(len(wrong), round(count * wrong_fraction))
    n_right = min(len(right), count - n_wrong)
    n_wrong = min(len(wrong), count - n_right)  # top up with mistakes when few are right
    wrong = wrong[torch.randperm(len(wrong), generator=gen)[:n_wrong]]
    right = right[torch.randperm(len(right), generator=gen)[:n_right]]
    return torch.cat([wrong, right])


def plot_predictions(images: torch.Tensor, labels: torch.Tensor, predictions: torch.Tensor,
                     classes: Sequence[str], count: int = 16, wrong_fraction: float = 0.5, columns: int = 8,
                     seed: int = 0, title: Optional[str] = None, save_to: Optional[PathLike] = None) -> Figure:
    """A grid of sample predictions (chosen by :func:`pick_examples`): each image titled "predicted /
    true", wrong ones in red with a red frame; the figure's title says how they were chosen, under
    ``title``. ``images`` uint8 [N, 3, H, W]; ``labels`` and ``predictions`` int [N] in the same order."""
    if not (len(images) == len(labels) == len(predictions)):
        raise ValueError(f"images ({len(images)}), labels ({len(labels)}) and predictions "
                         f"({len(predictions)}) must have the same length and order")
    chosen = pick_examples(labels, predictions, count, wrong_fraction, seed)
    rows = max(1, -(-len(chosen) // columns))
    fig = Figure(figsize=(1.3 * columns, 1.8 * rows + 0.4), dpi=GRID_DPI)
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, index in zip(axes, chosen.tolist()):
        true, predicted = int(labels[index]), int(predictions[index])
        wrong = true != predicted
        ax.axis("on")
        _show_image(ax, images[index], f"{classes[predicted]}\n/ {classes[true]}",
                    WRONG_COLOUR if wrong else RIGHT_COLOUR)
        for spine in ax.spines.values():
            spine.set(color=WRONG_COLOUR if wrong else "none", linewidth=2.5)
    n_wrong = int((labels[chosen] != predictions[chosen]).sum())
    rule = (f"{n_wrong} misclassified, then {len(chosen) - n_wrong} correctly classified images, drawn at random "
            f"(seed {seed}) from the {len(labels):,} given; each titled predicted / true, wrong ones in red")
    rule = textwrap.fill(rule, max(40, int(16 * columns)))  # about as many characters as the grid is wide
    fig.suptitle(f"{title}\n{rule}" if title else rule, fontsize=10)
    return _finish(fig, save_to)


# ------------------------------------------------------------------------------------------------ data


def plot_class_samples(images: torch.Tensor, labels: torch.Tensor, classes: Sequence[str], per_class: int = 8,
                       seed: int = 0, title: Optional[str] = None, save_to: Optional[PathLike] = None) -> Figure:
    """A grid with one row per class and ``per_class`` seeded random images of it.
    ``images`` uint8 [N, 3, H, W]; ``labels`` int [N]."""
    gen = torch.Generator().manual_seed(seed)
    # At 64 dpi each 32x32 image is shown at about its own resolution: the grid stays small in a notebook.
    fig = Figure(figsize=(0.5 * per_class + 1.3, 0.6 * len(classes)), dpi=64)
    axes = np.atleast_2d(fig.subplots(len(classes), per_class, gridspec_kw={"wspace": 0.05, "hspace": 0.05}))
    for row, name in enumerate(classes):
        members = torch.nonzero(labels == row).flatten()
        members = members[torch.randperm(len(members), generator=gen)[:per_class]]
        for col in range(per_class):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if col < len(members):
                ax.imshow(_as_hwc(images[members[col]]), interpolation="nearest")
        axes[row, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return _finish(fig, save_to, dpi=100, layout=False)


def plot_augmentations(images: torch.Tensor, augmentations: Sequence[str] = FLIPPING_AUGMENTATIONS,
                       seed: int = 0, title: Optional[str] = None, save_to: Optional[PathLike] = None,
                       presets: Sequence[str] = ()) -> Figure:
    """Before/after: the first row shows ``images`` (uint8 [N, 3, H, W]) as they are, each further row
    the same images through one named augmentation (:func:`cifar_utils.data.augmentation_ops`), then one
    row per preset in ``presets``: its first epoch's training images on the GPU pipeline, with the preset's
    own shift, border fill, flips and cutout (shown black: the fill is the mean colour after normalisation),
    at full size even where the preset resizes its first epochs. Seeded, and the global random state is left
    as it was."""
    from torchvision.transforms import v2

    from .data import augmentation_ops

    rows = ["original", *augmentations, *(f"{preset} preset" for preset in presets)]
    fig = Figure(figsize=(0.8 * len(images) + 1.6, 0.8 * len(rows)), dpi=GRID_DPI)
    axes = np.atleast_2d(fig.subplots(len(rows), len(images), gridspec_kw={"wspace": 0.05, "hspace": 0.05}))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        shown = [images] + [torch.stack([v2.Compose(augmentation_ops(name))(image) for image in images])
                            for name in augmentations]
        shown += [_preset_training_images(images, preset, seed) for preset in presets]
        for row, (name, row_images) in enumerate(zip(rows, shown)):
            for col, image in enumerate(row_images):
                _show_image(axes[row, col], image)
            axes[row, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return _finish(fig, save_to, dpi=100, layout=False)


def _preset_training_images(images: torch.Tensor, preset: str, seed: int) -> torch.Tensor:
    """uint8 [N, 3, H, W] -> float [N, 3, H, W] in [0, 1]: the images as ``preset``'s GPU pipeline augments
    them in its first epoch (seeded by ``seed``), in their original order and not normalised."""
    from .data import ImageSet
    from .gpu_data import GpuTrainLoader
    from .presets import from_preset

    config = from_preset(preset)
    order = torch.arange(len(images))
    loader = GpuTrainLoader(ImageSet(images, order, [str(i) for i in order.tolist()]), (0.0,) * 3, (1.0,) * 3,
                            len(images), "cpu", augmentation=config.augmentation, crop_padding=config.crop_padding,
                            crop_fill=config.crop_fill, alternating_flip=config.alternating_flip,
                            cutout=config.cutout, seed=seed)
    augmented, labels = next(iter(loader))  # one shuffled batch of all the images; labels are their positions
    return augmented[labels.argsort()].clamp(0, 1)


# ----------------------------------------------------------------------------------------------- model


def plot_branch_weights(weights: Sequence[torch.Tensor], branch_labels: Optional[Sequence[str]] = None,
                        images: Optional[torch.Tensor] = None, count: int = 4, title: Optional[str] = None,
                        save_to: Optional[PathLike] = None, image_labels: Optional[Sequence[str]] = None) -> Figure:
    """The Blocks' branch weights ``a`` for the first ``count`` images: one heatmap per image, a row per
    Block and a column per branch, as :func:`cifar_utils.models.collect_branch_weights` returns them
    (a list over Blocks of [B, K]). ``branch_labels`` name the columns (say "3x3"); ``images`` (uint8
    [B, 3, H, W]) are shown above their heatmaps; ``image_labels`` name the images (say their true
    classes; default "image 0", ...). The colour scale runs from the smallest to the largest weight
    shown, so small differences stay visible, with one colour bar for all heatmaps."""
    import seaborn as sns

    if not weights:
        raise ValueError("no branch weights: the model has no coursework Blocks")
    widest = max(w.shape[1] for w in weights)
    count = min(count, weights[0].shape[0])
    if image_labels is not None and len(image_labels) < count:
        raise ValueError(f"image_labels has {len(image_labels)} names for the {count} images shown")
    names = list(image_labels[:count]) if image_labels is not None else [f"image {i}" for i in range(count)]
    # Blocks may have different K; pad with NaN so seaborn leaves those cells blank.
    table = torch.full((count, len(weights), widest), float("nan"))
    for block, a in enumerate(weights):
        table[:, block, : a.shape[1]] = a[:count].float()
    low, high = float(np.nanmin(table.numpy())), float(np.nanmax(table.numpy()))
    has_images = images is not None
    fig = Figure(figsize=(2.3 * count + 1.2, 0.32 * len(weights) + (3.4 if has_images else 1.8)), dpi=PLOT_DPI)
    grid = fig.add_gridspec(2 if has_images else 1, count + 1, width_ratios=[1] * count + [0.08],
                            height_ratios=[1, 3] if has_images else None)
    colour_bar = fig.add_subplot(grid[-1, count])
    for i in range(count):
        if has_images:
            _show_image(fig.add_subplot(grid[0, i]), images[i], names[i])
        ax = fig.add_subplot(grid[-1, i])
        sns.heatmap(table[i].numpy(), ax=ax, vmin=low, vmax=high, cmap="viridis", annot=True, fmt=".2f",
                    annot_kws={"fontsize": 6}, cbar=i == 0, cbar_ax=colour_bar if i == 0 else None,
                    cbar_kws={"label": "branch weight a"},
                    yticklabels=[f"Block {b + 1}" for b in range(len(weights))] if i == 0 else False,
                    xticklabels=list(branch_labels) if branch_labels else [f"{k + 1}" for k in range(widest)])
        ax.set_xlabel("branch (kernel size)" if branch_labels else "branch", fontsize=8)
        if not has_images:
            ax.set_title(names[i], fontsize=8)
        ax.tick_params(labelsize=7)
    colour_bar.tick_params(labelsize=7)
    fig.suptitle(title or "Branch weights a per Block (each row sums to 1 with the softmax gate)", fontsize=10)
    return _finish(fig, save_to)
