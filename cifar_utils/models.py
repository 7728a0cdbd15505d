"""Models: each preset's architecture, the CIFAR ResNet baselines, and tools to inspect a network.

The coursework Block and the layers around it live in ``cifar_utils.blocks`` (re-exported here); the
fast and CPU presets' networks in ``cifar_utils.fast_models``. ``build_model(name)`` builds any
architecture in ``ARCHITECTURES`` by name.
"""

from __future__ import annotations

import inspect
import operator
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import fast_models
from .config import Config, field_defaults
from .errors import ConfigError
from .preprocessing import IMAGE_SIZE
from .blocks import (ACTIVATIONS, GATES, LEAKY_SLOPE, Backbone, Block, BranchGate, Classifier, LayerSpec, Net,
                     make_activation)

__all__ = ["ACTIVATIONS", "ARCHITECTURES", "GATES", "Backbone", "Block", "BranchGate", "Classifier", "LayerSpec",
           "Net", "build_model", "make_activation"]

# ------------------------------------------------------------------------------------ CIFAR ResNets


class _PadShortcut(nn.Module):
    """He et al.'s option A shortcut: subsample by 2 and zero-pad the new channels (no parameters)."""

    def __init__(self, extra_channels: int):
        super().__init__()
        self.extra = extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::2, ::2]
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Identity() if stride == 1 and in_planes == planes else _PadShortcut(planes - in_planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for CIFAR (He et al. 2015, section 4.2): 16/32/64 channels, n blocks per stage.

    ``stem_kernel`` is the size of the first convolution's kernel (3 in He et al.; odd, padded to keep 32x32).
    """

    def __init__(self, depth: int, num_classes: int = 10, stem_kernel: int = 3):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, ...), got {depth}")
        n = (depth - 2) // 6
        self.conv = nn.Conv2d(3, 16, stem_kernel, 1, stem_kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(16)
        blocks, planes = [], 16
        for stage, width in enumerate((16, 32, 64)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(planes, width, stride))
                planes = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(F.relu(self.bn(self.conv(x))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


# ---------------------------------------------------------------------------------- initialisation


def kaiming_init(model: nn.Module, nonlinearity: str = "relu") -> nn.Module:
    """He initialisation (fan_out) for convolutions; BatchNorm to weight 1, bias 0.

    Linear layers keep PyTorch's default, as in torchvision's ResNets: He-initialising the classifier makes
    the first logits so large (std ~15 for seed000_net) that the first epochs only undo the initialisation.
    """
    slope = LEAKY_SLOPE if nonlinearity == "leaky_relu" else 0  # the gain is sqrt(2 / (1 + slope^2))
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, a=slope, mode="fan_out", nonlinearity=nonlinearity)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


# ---------------------------------------------------------------------------------- architectures


def seed000_net(num_classes: int = 10) -> nn.Module:
    """Report 000: 11 residual Blocks (K=3), BN, LeakyReLU, MaxPool between stages; avg-pool + linear."""
    backbone = Backbone([64, 64, "M", 128, 128, 128, "M", 256, 256, 256, "M", 512, 512, 512],
                        kernel_sizes=(3, 3, 3), activation="leaky_relu", residual=True)
    return kaiming_init(Net(backbone, Classifier(backbone.out_channels, num_classes)), "leaky_relu")


def seed001_net(num_classes: int = 10) -> nn.Module:
    """Report 001: Blocks 64-128-256-512 (K=3, softmax gate on an 8x8 pool, ReLU, no BN); 3-layer MLP head.

    The report does not place its pooling; max-pooling after the first two Blocks keeps the last two at
    the 8x8 resolution that its 8x8 gate pool and AdaptiveAvgPool(8) head imply.
    """
    backbone = Backbone([64, "M", 128, "M", 256, 512], kernel_sizes=(3, 3, 3), pool_size=8, batchnorm=False)
    head = Classifier(backbone.out_channels, num_classes, pool_size=8, hidden=(4096, 4096), dropout=0.5)
    return kaiming_init(Net(backbone, head))


def seed002_net(num_classes: int = 10) -> nn.Module:
    """Report 002: 8 residual Blocks (K=3) with BN, ReLU and MaxPool; avg-pool + linear."""
    backbone = Backbone([64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512], kernel_sizes=(3, 3, 3),
                        residual=True)
    return Net(backbone, Classifier(backbone.out_channels, num_classes))


def seed004_net(num_classes: int = 10, head_softmax: bool = False) -> nn.Module:
    """Report 004: 6 Blocks mixing 1x1, 3x3 and 5x5 convolutions with an MLP gate, BN, ReLU; MaxPool after
    Blocks 2, 4 and 5; head = flatten (4x4), Linear, ReLU, BN, Dropout, Linear.

    ``head_softmax`` ends the head in a Softmax, as report 004's does, so that the cross-entropy loss (which
    applies its own log-softmax) sees probabilities p in [0, 1] as logits. It is not our default: softmax(p)
    is never sharper than e^1 against e^0, so the loss cannot fall below -log(e / (e + C - 1)) (1.461 for 10
    classes; the report's loss went from 2.07 to 1.52), and its gradients through the extra softmax are
    squashed, so the network learns more slowly. Predictions (the argmax) are the same either way.
    """
    backbone = Backbone([64, 128, "M", 128, 256, "M", 256, "M", 512], kernel_sizes=(1, 3, 5), gate_hidden=32)
    head = Classifier(backbone.out_channels, num_classes, pool_size=4, hidden=(512,), dropout=0.5, batchnorm=True)
    if head_softmax:
        head.mlp.append(nn.Softmax(dim=1))  # no parameters: checkpoints fit with or without it
    return Net(backbone, head)


def _resnet(depth: int) -> Callable[..., nn.Module]:
    def build(num_classes: int = 10, stem_kernel: int = 3) -> nn.Module:
        return kaiming_init(CifarResNet(depth, num_classes, stem_kernel))

    build.__doc__ = f"ResNet-{depth} for CIFAR (He et al. 2015), a baseline beside the coursework nets."
    return build


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "seed000_net": seed000_net,
    "seed001_net": seed001_net,
    "seed002_net": seed002_net,
    "seed004_net": seed004_net,
    **{f"resnet{d}": _resnet(d) for d in (20, 32, 44, 56)},
    **fast_models.ARCHITECTURES,
}


# Config fields that change an architecture: a builder in ARCHITECTURES that takes one has a keyword of that name.
MODEL_OPTIONS = ("stem_kernel", "head_softmax", "head_pool", "identity_init")


def _option_defaults() -> dict[str, Any]:
    return {name: value for name, value in field_defaults().items() if name in MODEL_OPTIONS}


def chosen_model_options(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The architecture options (``MODEL_OPTIONS``) that ``fields`` (config fields by name, such as a run's
    recorded config) set away from :class:`~cifar_utils.config.Config`'s defaults."""
    return {name: fields[name] for name, default in _option_defaults().items()
            if name in fields and fields[name] != default}


def model_options(config: Config) -> dict[str, Any]:
    """The architecture options ``config`` sets away from their defaults, as keywords for its model's builder;
    :class:`ConfigError` when ``config.model`` does not take one of them."""
    chosen = chosen_model_options({name: getattr(config, name) for name in MODEL_OPTIONS})
    for name, value in chosen.items():
        if name not in inspect.signature(ARCHITECTURES[config.model]).parameters:
            takers = [model for model, build in ARCHITECTURES.items() if name in inspect.signature(build).parameters]
            raise ConfigError(f"{name}={value!r} does not apply to model={config.model!r}, only to "
                              f"{', '.join(takers)}; leave {name} at its default {_option_defaults()[name]!r}")
    return chosen


def build_model(config_or_name, num_classes: int = 10) -> nn.Module:
    """Build an architecture from a :class:`~cifar_utils.config.Config` (with its architecture options,
    ``MODEL_OPTIONS``) or an architecture name (with the default options)."""
    name = config_or_name if isinstance(config_or_name, str) else config_or_name.model
    if name not in ARCHITECTURES:
        from .presets import PRESETS  # local import: presets builds on the config, which imports this module

        hint = f" ({name!r} is a preset: build_model(from_preset({name!r})))" if name in PRESETS else ""
        raise ConfigError(f"unknown architecture {name!r}{hint}; choose one of {', '.join(sorted(ARCHITECTURES))}")
    try:
        num_classes = operator.index(num_classes)  # an int, numpy's or torch's too
    except TypeError:
        raise ConfigError(f"num_classes={num_classes!r} is not a whole number of classes") from None
    if num_classes < 2:
        raise ConfigError(f"num_classes={num_classes}: a classifier needs at least 2 classes")
    options = {} if isinstance(config_or_name, str) else model_options(config_or_name)
    return ARCHITECTURES[name](num_classes, **options)


# --------------------------------------------------------------------------------- introspection


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (a frozen whitening stem's filters are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def branch_gates(model: nn.Module) -> list[BranchGate]:
    return [m for m in model.modules() if isinstance(m, BranchGate)]


@torch.no_grad()
def collect_branch_weights(model: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """Run ``images`` through ``model`` and return each Block's weights ``a``, a list of [B, K] tensors."""
    captured: list[torch.Tensor] = []
    hooks = [g.register_forward_hook(lambda _m, _i, out: captured.append(out.detach().float().cpu()))
             for g in branch_gates(model)]
    was_training = model.training
    try:
        model.eval()
        model(images)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return captured


def branch_weight_entropy(weights: Sequence[torch.Tensor]) -> float:
    """Mean entropy (nats) of normalised branch weights over Blocks and images; log K means uniform."""
    values = []
    for a in weights:
        p = a.clamp_min(0) / a.clamp_min(0).sum(dim=1, keepdim=True).clamp_min(1e-12)
        values.append(-(p * p.clamp_min(1e-12).log()).sum(dim=1).mean())
    return float(torch.stack(values).mean()) if values else float("nan")


def summarize(model: nn.Module, input_size: tuple[int, ...] = (1, 3, IMAGE_SIZE, IMAGE_SIZE)) -> list[dict]:
    """One row per layer (the children of top-level Sequentials expanded): name, type, output shape, parameters."""
    layers = []
    for name, child in model.named_children():
        if isinstance(child, nn.Sequential):
            layers += [(f"{name}.{sub}", m) for sub, m in child.named_children()]
        else:
            layers.append((name, child))
    rows: list[dict] = []
    hooks = [m.register_forward_hook(
        lambda m, _i, out, name=name: rows.append(
            {"layer": name, "type": type(m).__name__, "output_shape": tuple(out.shape),
             "parameters": count_parameters(m)}))
        for name, m in layers]
    device = next(model.parameters()).device
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(input_size, device=device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return rows

