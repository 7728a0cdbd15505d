"""Models: the coursework Block, Backbone, Classifier, CIFAR ResNets, and each preset's architecture.

The coursework Block, for input X [B, C_in, H, W] and K branches::

    a = g(Linear(SpatialAvgPool(X)))          # [B, K]; g = softmax (default), sigmoid or relu
    O = sum_k a_k * conv_k(X)                  # [B, C_out, H, W]; every conv_k reads the same X
    Y = act(BN(O)) (+ shortcut(X))             # BN, activation and residual are optional

``build_model(name)`` builds any architecture in ``ARCHITECTURES`` by name.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

GATES = ("softmax", "sigmoid", "relu")
ACTIVATIONS = ("relu", "leaky_relu", "gelu")


def make_activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "leaky_relu":
        return nn.LeakyReLU(0.1, inplace=True)
    if name == "gelu":
        return nn.GELU()
    raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")


class BranchGate(nn.Module):
    """The branch weights ``a = g(Linear(SpatialAvgPool(X)))``: [B, C, H, W] -> [B, K].

    ``pool_size`` > 1 pools to a ``pool_size`` x ``pool_size`` grid before the Linear (report 001);
    ``hidden`` replaces the Linear by a two-layer MLP (report 004); ``temperature`` divides the logits
    before a softmax.
    """

    def __init__(self, in_channels: int, num_branches: int, gate: str = "softmax", temperature: float = 1.0,
                 pool_size: int = 1, hidden: Optional[int] = None):
        super().__init__()
        if gate not in GATES:
            raise ValueError(f"unknown gate {gate!r}; choose one of {', '.join(GATES)}")
        if temperature <= 0:
            raise ValueError(f"gate temperature must be > 0, got {temperature}")
        self.gate, self.temperature = gate, temperature
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        features = in_channels * pool_size * pool_size
        if hidden:
            self.fc = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_branches))
        else:
            self.fc = nn.Linear(features, num_branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.fc(self.pool(x).flatten(1))
        if self.gate == "softmax":
            return torch.softmax(logits / self.temperature, dim=1)
        if self.gate == "sigmoid":
            return torch.sigmoid(logits)
        return torch.relu(logits)


class Block(nn.Module):
    """The coursework Block: K convolutions of the same input, mixed by input-dependent weights.

    ``kernel_sizes`` gives one odd kernel size per branch (K = its length). The fused path runs all
    branches of equal kernel size as one convolution with K*C_out output channels; ``fused=False`` is
    the plain reference, one convolution per branch. Both use the same parameters.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_sizes: Sequence[int] = (3, 3, 3),
                 gate: str = "softmax", temperature: float = 1.0, pool_size: int = 1,
                 gate_hidden: Optional[int] = None, batchnorm: bool = True, activation: Optional[str] = "relu",
                 residual: bool = False, fused: bool = True):
        super().__init__()
        if not kernel_sizes or any(k < 1 or k % 2 == 0 for k in kernel_sizes):
            raise ValueError(f"kernel_sizes must be odd and positive, one per branch; got {tuple(kernel_sizes)}")
        self.kernel_sizes = tuple(kernel_sizes)
        self.out_channels = out_channels
        self.fused = fused
        self.gate = BranchGate(in_channels, len(self.kernel_sizes), gate, temperature, pool_size, gate_hidden)
        self.convs = nn.ModuleList(
            nn.Conv2d(in_channels, out_channels, k, padding=k // 2, bias=not batchnorm) for k in self.kernel_sizes
        )
        self.bn = nn.BatchNorm2d(out_channels) if batchnorm else nn.Identity()
        self.act = make_activation(activation) if activation else nn.Identity()
        self.shortcut: Optional[nn.Module] = None
        if residual:
            same = in_channels == out_channels
            self.shortcut = nn.Identity() if same else nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))
        groups = defaultdict(list)
        for index, k in enumerate(self.kernel_sizes):
            groups[k].append(index)
        self._groups = dict(groups)  # kernel size -> branch indices sharing one fused convolution

    @property
    def num_branches(self) -> int:
        return len(self.kernel_sizes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.gate(x)
        mixed = self.mix_fused(x, a) if self.fused else self.mix_reference(x, a)
        out = self.act(self.bn(mixed))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return out

    def mix_reference(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """``sum_k a[:, k] * conv_k(x)``, one convolution per branch."""
        return sum(a[:, k, None, None, None] * conv(x) for k, conv in enumerate(self.convs))

    def mix_fused(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """The same sum, with branches of equal kernel size stacked into one convolution."""
        out = None
        for k, indices in self._groups.items():
            convs = [self.convs[i] for i in indices]
            weight = torch.cat([c.weight for c in convs]) if len(convs) > 1 else convs[0].weight
            bias = None
            if convs[0].bias is not None:
                bias = torch.cat([c.bias for c in convs]) if len(convs) > 1 else convs[0].bias
            y = F.conv2d(x, weight, bias, padding=k // 2)  # [B, n*C_out, H, W]
            b, _, h, w = y.shape
            y = y.view(b, len(indices), self.out_channels, h, w)
            weights = a[:, indices].view(b, len(indices), 1, 1, 1).to(y.dtype)
            part = (y * weights).sum(dim=1)
            out = part if out is None else out + part
        return out


LayerSpec = Union[int, str]  # an int is a Block with that many output channels; "M" is a 2x2 MaxPool


class Backbone(nn.Sequential):
    """A sequence of Blocks (ints in ``layers``) with 2x2 max-pooling ("M") between them."""

    def __init__(self, layers: Sequence[LayerSpec], in_channels: int = 3, **block_kwargs):
        modules = []
        channels = in_channels
        for spec in layers:
            if spec == "M":
                modules.append(nn.MaxPool2d(2))
            elif isinstance(spec, int):
                modules.append(Block(channels, spec, **block_kwargs))
                channels = spec
            else:
                raise ValueError(f"layer spec {spec!r} is neither a channel count nor 'M'")
        super().__init__(*modules)
        self.out_channels = channels


class Classifier(nn.Module):
    """Spatial average pooling to ``pool_size`` x ``pool_size``, flatten, then an MLP.

    Each hidden layer is Linear -> activation -> BatchNorm (optional) -> Dropout (optional).
    """

    def __init__(self, in_channels: int, num_classes: int, pool_size: int = 1, hidden: Sequence[int] = (),
                 dropout: float = 0.0, batchnorm: bool = False, activation: str = "relu"):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        layers: list[nn.Module] = [nn.Flatten()]
        features = in_channels * pool_size * pool_size
        for width in hidden:
            layers += [nn.Linear(features, width), make_activation(activation)]
            if batchnorm:
                layers.append(nn.BatchNorm1d(width))
            if dropout:
                layers.append(nn.Dropout(dropout))
            features = width
        layers.append(nn.Linear(features, num_classes))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.pool(x))


class Net(nn.Module):
    """``Net = Backbone + Classifier``; ``stem`` is an optional fixed front end (for the fast presets)."""

    def __init__(self, backbone: nn.Module, classifier: nn.Module, stem: Optional[nn.Module] = None):
        super().__init__()
        self.stem = stem
        self.backbone = backbone
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stem is not None:
            x = self.stem(x)
        return self.classifier(self.backbone(x))


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
    """ResNet-(6n+2) for CIFAR (He et al. 2015, section 4.2): 16/32/64 channels, n blocks per stage."""

    def __init__(self, depth: int, num_classes: int = 10):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, ...), got {depth}")
        n = (depth - 2) // 6
        self.conv = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
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
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity=nonlinearity)
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


def seed004_net(num_classes: int = 10) -> nn.Module:
    """Report 004: 6 Blocks mixing 1x1, 3x3 and 5x5 convolutions with an MLP gate, BN, ReLU; MaxPool after
    Blocks 2, 4 and 5; head = flatten (4x4), Linear, ReLU, BN, Dropout, Linear."""
    backbone = Backbone([64, 128, "M", 128, 256, "M", 256, "M", 512], kernel_sizes=(1, 3, 5), gate_hidden=32)
    head = Classifier(backbone.out_channels, num_classes, pool_size=4, hidden=(512,), dropout=0.5, batchnorm=True)
    return Net(backbone, head)


def _resnet(depth: int) -> Callable[[int], nn.Module]:
    def build(num_classes: int = 10) -> nn.Module:
        return kaiming_init(CifarResNet(depth, num_classes))

    build.__doc__ = f"ResNet-{depth} for CIFAR (He et al. 2015), a baseline beside the coursework nets."
    return build


ARCHITECTURES: dict[str, Callable[[int], nn.Module]] = {
    "seed000_net": seed000_net,
    "seed001_net": seed001_net,
    "seed002_net": seed002_net,
    "seed004_net": seed004_net,
    **{f"resnet{d}": _resnet(d) for d in (20, 32, 44, 56)},
}


def build_model(config_or_name, num_classes: int = 10) -> nn.Module:
    """Build an architecture from a :class:`~cifar_utils.config.Config` or an architecture name."""
    name = config_or_name if isinstance(config_or_name, str) else config_or_name.model
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose one of {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[name](num_classes)


# --------------------------------------------------------------------------------- introspection


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


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


def summarize(model: nn.Module, input_size: tuple[int, ...] = (1, 3, 32, 32)) -> list[dict]:
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


# The fast presets' architectures live in fast_models, which builds on the classes above.
from . import fast_models  # noqa: E402

ARCHITECTURES.update(fast_models.ARCHITECTURES)
