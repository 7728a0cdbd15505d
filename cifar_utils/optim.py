"""Optimizers and learning-rate schedulers from a config."""

from __future__ import annotations

import math

import torch
from torch import nn

# Schedulers stepped after every optimizer step; the others step once per epoch.
PER_STEP_SCHEDULERS = ("onecycle", "warmup_cosine")


def build_optimizer(model: nn.Module, config) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov), Adam or AdamW with the config's learning rate and weight decay."""
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
                               weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


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
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total)
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
