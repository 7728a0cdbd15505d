"""Optimizers and learning-rate schedulers from a config.

``optimizer="muon"`` is :class:`Muon`: the conv filters step along their orthogonalised momentum (Muon,
as in Keller Jordan's airbench94_muon), everything else takes plain SGD steps.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from .config import FILTERS_RATE, NORM_BIAS_RATE, WARMUP_SCHEDULERS, WEIGHTS_RATE

# Schedulers stepped after every optimizer step; the others step once per epoch.
PER_STEP_SCHEDULERS = ("onecycle", *WARMUP_SCHEDULERS)
# Quintic Newton-Schulz iteration of Muon: its coefficients raise small singular values fast, and a few
# steps bring every singular value of a unit-norm matrix near 1 (not exactly: speed matters more here).
NEWTON_SCHULZ_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NEWTON_SCHULZ_STEPS = 3


def orthogonalize(matrix: torch.Tensor) -> torch.Tensor:
    """``matrix`` [m, n] with its singular values moved near 1 and its singular vectors kept: about
    U V^T of its SVD, by NEWTON_SCHULZ_STEPS Newton-Schulz iterations (matrix products only)."""
    a, b, c = NEWTON_SCHULZ_COEFFICIENTS
    x = matrix / (matrix.norm() + 1e-7)  # singular values in [0, 1], where the iteration converges
    wide = x.T if x.shape[0] > x.shape[1] else x  # iterate on the smaller Gram matrix
    for _ in range(NEWTON_SCHULZ_STEPS):
        gram = wide @ wide.T
        wide = a * wide + (b * gram + c * (gram @ gram)) @ wide
    return wide.T if x.shape[0] > x.shape[1] else wide


class Muon(torch.optim.Optimizer):
    """SGD with momentum (optionally Nesterov) and L2 weight decay, as ``torch.optim.SGD``, except in the
    groups marked ``orthogonalize``: there each weight [C_out, ...] steps by ``lr`` along its orthogonalised
    momentum (viewed as [C_out, rest]), so that every direction of the update moves equally.

    Before each such step the weight is rescaled to norm sqrt(C_out). A convolution followed by BatchNorm
    computes the same function at any scale, so this fixes the step's size relative to the weight (the job
    weight decay does for SGD) and the group takes no weight decay. Use it only for weights that a
    normalisation follows, as in every Block with BN. In a Block the normalisation follows the mix
    ``sum_k a_k conv_k(X)``, not each branch, so rescaling each kernel size's filters on its own also holds
    their scales level with each other: the Block's weights ``a`` alone then set how much each branch
    contributes.
    """

    def __init__(self, params, lr: float, momentum: float, nesterov: bool):
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=0.0, orthogonalize=False)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            momentum = group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if group["weight_decay"]:
                    grad = grad.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buffer = state["momentum_buffer"].mul_(momentum).add_(grad)
                update = grad.add(buffer, alpha=momentum) if group["nesterov"] else buffer
                if group["orthogonalize"]:
                    p.mul_(math.sqrt(p.shape[0]) / p.norm().clamp_min(1e-12))
                    update = orthogonalize(update.reshape(len(update), -1)).view_as(p)
                p.add_(update, alpha=-group["lr"])
        return loss


def parameter_groups(model: nn.Module, config) -> list[dict]:
    """The trainable parameters in two groups: conv and Linear weights first (the logged learning rate is
    theirs), then BatchNorm parameters and biases (every parameter of one dimension or less).

    The second group's learning rate is ``lr * norm_bias_lr_scale``. Its weight decay is divided by the
    same factor, so that the decay per step (lr x weight_decay) stays that of the weights, or is 0 when
    ``weight_decay_norm_bias`` is False. With ``optimizer="muon"`` the conv filters (4-D weights) leave the
    first group for a third, ``orthogonalize``d one (see :class:`Muon`) with the learning rate
    ``lr * muon_lr_scale`` and ``muon_momentum``.
    A group with no parameters is left out.
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    muon = config.optimizer == "muon"
    filters = [p for p in trainable if p.ndim == 4] if muon else []
    weights = [p for p in trainable if p.ndim > 1 and not (muon and p.ndim == 4)]
    norm_bias = [p for p in trainable if p.ndim <= 1]
    rates = config.group_rates()
    norm_bias_decay = config.weight_decay / config.norm_bias_lr_scale if config.weight_decay_norm_bias else 0.0
    groups = [{"params": weights, "lr": rates[WEIGHTS_RATE], "weight_decay": config.weight_decay},
              {"params": norm_bias, "lr": rates[NORM_BIAS_RATE], "weight_decay": norm_bias_decay},
              {"params": filters, "lr": rates.get(FILTERS_RATE), "momentum": config.muon_momentum,
               "orthogonalize": True}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, config) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov), Adam, AdamW or :class:`Muon` over :func:`parameter_groups`."""
    groups = parameter_groups(model, config)
    if config.optimizer == "muon":
        return Muon(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr)
    return torch.optim.AdamW(groups, lr=config.lr)


def build_scheduler(optimizer: torch.optim.Optimizer, config, steps_per_epoch: int):
    """The scheduler named by ``config.scheduler`` (None for "none").

    ``steps_per_epoch`` counts optimizer steps (mini-batches / accumulation_steps, rounded up); it sizes
    the per-step schedules in :data:`PER_STEP_SCHEDULERS`. ``config.min_lr`` is the floor of every parameter
    group's rate in every schedule that has one (``Config.validate`` keeps it below each group's peak).
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
        # Each group peaks at config.lr times its own multiplier (norm_bias_lr_scale). torch's OneCycleLR
        # would also cycle every group's momentum between 0.85 and 0.95, overriding momentum and
        # muon_momentum without a word; the config's momenta stay.
        peaks = [config.lr * g["lr"] / optimizer.defaults["lr"] for g in optimizer.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peaks, total_steps=total, cycle_momentum=False)
    if name in WARMUP_SCHEDULERS:
        warmup = min(total - 1, round(config.warmup_epochs * steps_per_epoch))
        start = config.warmup_start

        def factor_from(peak: float) -> Callable[[int], float]:
            floor = config.min_lr / peak  # min_lr is every group's floor, as torch's eta_min and min_lr are

            def factor(step: int) -> float:
                # (step + 1): the first step of a warm-up from zero still moves the weights. So the peak comes
                # at the warm-up's last step and again at the decay's first, and the run's last step is still
                # above the floor (warmup_linear: 1 / (total - warmup) of the way, as airbench94's triangle).
                if step < warmup:
                    return start + (1 - start) * (step + 1) / warmup
                progress = min(1.0, (step - warmup) / max(1, total - warmup))
                decay = 1 - progress if name == "warmup_linear" else 0.5 * (1 + math.cos(math.pi * progress))
                return floor + (1 - floor) * decay

            return factor

        return torch.optim.lr_scheduler.LambdaLR(optimizer, [factor_from(g["lr"]) for g in optimizer.param_groups])
    return None


def scheduler_interval(config) -> str:
    """``"step"`` for per-step schedules, ``"epoch"`` for the rest."""
    return "step" if config.scheduler in PER_STEP_SCHEDULERS else "epoch"
