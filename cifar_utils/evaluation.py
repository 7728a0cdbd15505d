"""Predictions and evaluation: top-1 and per-class accuracy, confusion matrix, classification report."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import sys

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .device import autocast
from .errors import ConfigError


@dataclass
class Evaluation:
    """Everything measured on one split."""

    classes: list[str]
    labels: torch.Tensor  # int64 [N] true labels
    predictions: torch.Tensor  # int64 [N] predicted labels
    loss: float  # mean cross-entropy
    accuracy: float  # top-1, in [0, 1]
    per_class_accuracy: dict[str, float]  # recall of each class, in [0, 1]
    confusion: torch.Tensor  # int64 [C, C]; rows are true classes, columns predictions
    report: str  # scikit-learn classification_report

    def most_confused(self, top: int = 5) -> list[tuple[str, str, int]]:
        """The ``top`` (true class, predicted class, count) pairs off the diagonal, most frequent first."""
        off = self.confusion.clone()
        off.fill_diagonal_(0)
        values, flat = off.flatten().topk(min(top, off.numel()))
        c = len(self.classes)
        return [(self.classes[i // c], self.classes[i % c], int(v))
                for v, i in zip(values.tolist(), flat.tolist()) if v > 0]


def outputs_probabilities(model: nn.Module) -> bool:
    """Whether ``model`` (or the network inside its wrappers) ends in a Softmax, so that its outputs are
    class probabilities rather than logits (report 004's faithful head, ``head_softmax``). Its last module
    decides: a Softmax elsewhere in a network says nothing about its outputs."""
    *_, last = model.modules()
    return isinstance(last, nn.Softmax)


def as_log_probabilities(outputs: torch.Tensor, probabilities: bool) -> torch.Tensor:
    """Logits for the cross-entropy and the argmax: ``outputs`` themselves, or the log of probabilities
    (clamped above 0, as a bf16 or fp16 softmax can round a class's probability to 0)."""
    return outputs.clamp_min(torch.finfo(torch.float32).tiny).log() if probabilities else outputs


TTA_MODES = ("none", "flip", "flip_translate")  # the test-time augmentations _views makes


def _views(images: torch.Tensor, tta: str) -> list[torch.Tensor]:
    """Test-time augmentation views: the image, its mirror and (flip_translate) 2-pixel shifts of both."""
    if tta not in TTA_MODES:
        raise ConfigError(f"unknown tta {tta!r}; choose one of {', '.join(TTA_MODES)}")
    if tta == "none":
        return [images]
    views = [images, images.flip(-1)]
    if tta == "flip_translate":
        padded = [F.pad(v, (2, 2, 2, 2), mode="reflect") for v in views]
        h, w = images.shape[-2:]
        views += [p[..., :h, :w] for p in padded] + [p[..., 4:4 + h, 4:4 + w] for p in padded]
    return views


def view_count(tta: str) -> int:
    """How many views of each image ``tta`` evaluates (1 without test-time augmentation)."""
    return len(_views(torch.zeros(1, 1, 8, 8), tta))


@torch.no_grad()
def predict(model: nn.Module, dataloader, device: torch.device, *, precision: str = "fp32",
            tta: str = "none", channels_last: bool = False,
            progress: Optional[str] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits averaged over test-time views, and labels: ([N, C] float32, [N] int64), on the CPU. For a
    network that outputs probabilities, the log of its probabilities averaged over the views, so that the
    cross-entropy of the result is the plain -log p of the true class. ``progress`` names a progress bar
    over the batches (none when None)."""
    model.eval()
    probabilities = outputs_probabilities(model)
    all_logits, all_labels = [], []
    for images, labels in tqdm(dataloader, desc=progress, disable=progress is None, leave=False, file=sys.stderr,
                               dynamic_ncols=True):
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            outputs = torch.stack([model(v).float() for v in _views(images, tta)]).mean(0)
        all_logits.append(as_log_probabilities(outputs, probabilities).cpu())
        all_labels.append(labels.cpu())
    return torch.cat(all_logits), torch.cat(all_labels)


def evaluate(model: nn.Module, dataloader, device: torch.device, classes: Sequence[str], *,
             precision: str = "fp32", tta: str = "none", channels_last: bool = False,
             logits_and_labels: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
             progress: Optional[str] = None) -> Evaluation:
    """Predict ``dataloader`` and summarise: accuracy, per-class accuracy, confusion, sklearn report."""
    from sklearn.metrics import classification_report

    logits, labels = logits_and_labels or predict(model, dataloader, device, precision=precision, tta=tta,
                                                  channels_last=channels_last, progress=progress)
    predictions = logits.argmax(1)
    c = len(classes)
    confusion = torch.bincount(labels * c + predictions, minlength=c * c).view(c, c)
    per_class = (confusion.diag().double() / confusion.sum(1).clamp_min(1)).tolist()
    report = classification_report(labels.numpy(), predictions.numpy(), labels=list(range(c)),
                                   target_names=list(classes), digits=4, zero_division=0)
    return Evaluation(
        classes=list(classes), labels=labels, predictions=predictions,
        loss=F.cross_entropy(logits, labels).item(), accuracy=(predictions == labels).double().mean().item(),
        per_class_accuracy=dict(zip(classes, per_class)), confusion=confusion, report=report)
