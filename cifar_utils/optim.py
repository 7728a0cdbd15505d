"""Optimizers and learning-rate schedulers from a config."""

from __future__ import annotations

import math

import torch
from torch import nn

# Schedulers stepped after every optimizer step; the others step once per epoch.
PER_STEP_SCHEDULERS = ("onecycle", "warmup_cosine")


def parameter_groups(model: nn.Module, config) -> list[dict]:
    """The trainable parameters in two groups: conv and Linear weights first (the logged learning rate is
    theirs), then BatchNorm parameters and biases (every parameter of one dimension or less).

    The second group's learning rate is ``lr * norm_bias_lr_scale``. Its weight decay is divided by the
    same factor, so that the decay per step (lr x weight_decay) stays that of the weights, or is 0 when
    ``weight_decay_norm_bias`` is False. A group with no parameters is left out.
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    weights = [p for p in trainable if p.ndim > 1]
    norm_bias = [p for p in trainable if p.ndim <= 1]
    scale = config.norm_bias_lr_scale
    norm_bias_decay = config.weight_decay / scale if config.weight_decay_norm_bias else 0.0
    groups = [{"params": weights, "lr": config.lr, "weight_decay": config.weight_decay},
              {"params": norm_bias, "lr": config.lr * scale, "weight_decay": norm_bias_decay}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, config) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov), Adam or AdamW over :func:`parameter_groups`."""
    groups = parameter_groups(model, config)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr)
    return torch.optim.AdamW(groups, lr=config.lr)


def build_scheduler(optimizer: torch.optim.Optimizer, config, steps_per_epoch: int):
    """The scheduler named by ``config.scheduler`` (None for "none").

    ``steps_per_epoch`` counts optimizer steps (mini-batches / accumulation_steps, rounded up); it sizes
    the per-step schedules in :data:`PER_STEP_SCHEDULERS`.
    """
    name = config.scheduler
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=config.cosine_t_max or config.epochs, eta_min=config.min_lr)
    if name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=config.plateau_factor, patience=config.plateau_patience,
            min_lr=config.min_lr)
    total = max(1, steps_per_epoch * config.epochs)
    if name == "onecycle":
        # Each group peaks at config.lr times its own multiplier (norm_bias_lr_scale).
        peaks = [config.lr * g["lr"] / optimizer.defaults["lr"] for g in optimizer.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peaks, total_steps=total)
    if name == "warmup_cosine":
        warmup = min(total - 1, round(config.warmup_epochs * steps_per_epoch))
        floor = config.min_lr / config.lr

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, total - warmup)
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return None


def scheduler_interval(config) -> str:
    """``"step"`` for per-step schedules, ``"epoch"`` for the rest."""
    return "step" if config.scheduler in PER_STEP_SCHEDULERS else "epoch"
