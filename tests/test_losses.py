"""Losses: report 000's KL + label-smoothing loss against a hand computation, and build_criterion."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cifar_utils.config import Config
from cifar_utils.losses import KLLabelSmoothingCrossEntropyLoss, build_criterion
from cifar_utils.presets import from_preset

LOGITS = [[2.0, -1.0, 0.5], [0.1, 0.3, -2.0]]
LABELS = [0, 2]


def hand_loss(logits, labels, eps, w):
    """The docstring's formula, written out with explicit loops over the batch and the classes."""
    total = 0.0
    for z, y in zip(logits, labels):
        c = len(z)
        norm = sum(math.exp(v) for v in z)
        p = [math.exp(v) / norm for v in z]
        q = [(1 - eps) * (1.0 if k == y else 0.0) + eps / c for k in range(c)]
        ce = -sum(q[k] * math.log(p[k]) for k in range(c))
        kl = sum((q[k] * math.log(q[k]) if q[k] > 0 else 0.0) - q[k] * math.log(p[k]) for k in range(c))
        total += ce + w * kl
    return total / len(labels)


@pytest.mark.parametrize("eps, w", [(0.2, 0.1), (0.1, 0.0), (0.0, 0.5), (0.5, 1.0), (0.0, 0.0)])
def test_kl_label_smoothing_matches_a_hand_computation(eps, w):
    loss = KLLabelSmoothingCrossEntropyLoss(smoothing=eps, kl_weight=w)(torch.tensor(LOGITS), torch.tensor(LABELS))
    assert loss.ndim == 0
    assert loss.item() == pytest.approx(hand_loss(LOGITS, LABELS, eps, w), rel=1e-6, abs=1e-6)


def test_default_arguments_are_report_000s():
    loss = KLLabelSmoothingCrossEntropyLoss()
    assert (loss.smoothing, loss.kl_weight) == (0.2, 0.1)
    value = loss(torch.tensor(LOGITS), torch.tensor(LABELS)).item()
    assert value == pytest.approx(hand_loss(LOGITS, LABELS, 0.2, 0.1), rel=1e-6)
    assert value != pytest.approx(hand_loss(LOGITS, LABELS, 0.2, 0.0), rel=1e-3)  # the KL term counts


def test_without_smoothing_and_kl_it_is_plain_cross_entropy():
    torch.manual_seed(0)
    logits, labels = torch.randn(16, 10) * 3, torch.randint(0, 10, (16,))
    ours = KLLabelSmoothingCrossEntropyLoss(smoothing=0.0, kl_weight=0.0)(logits, labels)
    torch.testing.assert_close(ours, F.cross_entropy(logits, labels))


def test_without_kl_it_is_torchs_label_smoothed_cross_entropy():
    torch.manual_seed(0)
    logits, labels = torch.randn(16, 10) * 3, torch.randint(0, 10, (16,))
    ours = KLLabelSmoothingCrossEntropyLoss(smoothing=0.2, kl_weight=0.0)(logits, labels)
    torch.testing.assert_close(ours, F.cross_entropy(logits, labels, label_smoothing=0.2))


def test_zero_smoothing_has_no_0_log_0_nan():
    logits, labels = torch.tensor(LOGITS), torch.tensor(LABELS)
    loss = KLLabelSmoothingCrossEntropyLoss(smoothing=0.0, kl_weight=0.3)(logits, labels)
    assert torch.isfinite(loss)
    # With one-hot targets KL = CE, so the loss is (1 + w) * CE.
    torch.testing.assert_close(loss, 1.3 * F.cross_entropy(logits, labels))


def test_gradient_is_one_plus_w_times_p_minus_q_over_batch():
    logits = torch.tensor(LOGITS, requires_grad=True)
    KLLabelSmoothingCrossEntropyLoss(0.2, 0.1)(logits, torch.tensor(LABELS)).backward()
    p = torch.softmax(torch.tensor(LOGITS), dim=1)
    q = torch.full((2, 3), 0.2 / 3)
    q[0, 0] += 0.8
    q[1, 2] += 0.8
    torch.testing.assert_close(logits.grad, 1.1 * (p - q) / 2)


@pytest.mark.parametrize("eps, w, classes", [(0.2, 0.1, 10), (0.05, 0.7, 4), (0.0, 0.3, 7)])
def test_it_is_one_plus_w_times_label_smoothed_cross_entropy_minus_a_constant(eps, w, classes):
    """The docstring's claim, on random logits: loss = (1 + w) CE_ls - w H(q), gradient (1 + w)(p - q) / B."""
    gen = torch.Generator().manual_seed(classes)
    batch = 16
    logits = (3 * torch.randn(batch, classes, generator=gen, dtype=torch.float64)).requires_grad_()
    labels = torch.randint(0, classes, (batch,), generator=gen)
    loss = KLLabelSmoothingCrossEntropyLoss(eps, w)(logits, labels)
    loss.backward()
    q = torch.full((batch, classes), eps / classes, dtype=torch.float64)
    q[torch.arange(batch), labels] += 1 - eps
    entropy = -torch.xlogy(q[0], q[0]).sum()  # the same for every image
    smoothed = F.cross_entropy(logits.detach().float(), labels, label_smoothing=eps).double()
    torch.testing.assert_close(loss.double(), (1 + w) * smoothed - w * entropy, rtol=1e-6, atol=1e-6)
    p = torch.softmax(logits.detach(), dim=1)
    torch.testing.assert_close(logits.grad, (1 + w) * (p - q) / batch, rtol=1e-5, atol=1e-7)


def test_low_precision_logits_give_a_float32_loss():
    logits = torch.tensor(LOGITS, dtype=torch.bfloat16)
    loss = KLLabelSmoothingCrossEntropyLoss()(logits, torch.tensor(LABELS))
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(hand_loss(logits.float().tolist(), LABELS, 0.2, 0.1), rel=1e-5)


@pytest.mark.parametrize("kwargs", [dict(smoothing=1.0), dict(smoothing=-0.1), dict(kl_weight=-1.0)])
def test_invalid_arguments_are_rejected(kwargs):
    with pytest.raises(ValueError):
        KLLabelSmoothingCrossEntropyLoss(**kwargs)


def test_build_criterion():
    kl = build_criterion(from_preset("seed000"))
    assert isinstance(kl, KLLabelSmoothingCrossEntropyLoss)
    assert (kl.smoothing, kl.kl_weight) == (0.2, 0.1)
    ce = build_criterion(from_preset("seed003"))
    assert type(ce) is nn.CrossEntropyLoss and ce.label_smoothing == 0.0
    smoothed = build_criterion(Config(loss="cross_entropy", label_smoothing=0.1))
    assert type(smoothed) is nn.CrossEntropyLoss and smoothed.label_smoothing == 0.1
    logits, labels = torch.tensor(LOGITS), torch.tensor(LABELS)
    assert kl(logits, labels).item() == pytest.approx(hand_loss(LOGITS, LABELS, 0.2, 0.1), rel=1e-6)
