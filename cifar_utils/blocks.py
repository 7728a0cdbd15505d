"""The coursework network's building blocks: BranchGate, Block, Backbone, Classifier and Net.

The coursework Block, for input X [B, C_in, H, W] and K branches::

    a = g(Linear(SpatialAvgPool(X)))          # [B, K]; g = softmax (default), sigmoid or relu
    O = sum_k a_k * conv_k(X)                  # [B, C_out, H, W]; every conv_k reads the same X
    Y = act(BN(pool(O))) (+ shortcut(X))       # pooling, BN, activation and residual are optional

Architectures built from these live in ``cifar_utils.models`` (the reference presets' networks and the
CIFAR ResNets) and ``cifar_utils.fast_models`` (the fast and CPU presets' networks).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

GATES = ("softmax", "sigmoid", "relu")
ACTIVATIONS = ("relu", "leaky_relu", "gelu")
LEAKY_SLOPE = 0.1  # leaky_relu's slope for negative inputs (He initialisation reads it too)
POOLS = ("avg", "max")  # the Classifier's spatial pooling


def make_activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "leaky_relu":
        return nn.LeakyReLU(LEAKY_SLOPE, inplace=True)
    if name == "gelu":
        return nn.GELU()
    raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")


class BranchGate(nn.Module):
    """The branch weights ``a = g(Linear(SpatialAvgPool(X)))``: [B, C, H, W] -> [B, K].

    ``function`` is g; ``pool_size`` > 1 pools to a ``pool_size`` x ``pool_size`` grid before the Linear
    (report 001); ``hidden`` replaces the Linear by a two-layer MLP (report 004); ``temperature`` divides
    the logits before a softmax.
    """

    def __init__(self, in_channels: int, num_branches: int, function: str = "softmax", temperature: float = 1.0,
                 pool_size: int = 1, hidden: Optional[int] = None):
        super().__init__()
        if function not in GATES:
            raise ValueError(f"unknown gate {function!r}; choose one of {', '.join(GATES)}")
        if temperature <= 0:
            raise ValueError(f"gate temperature must be > 0, got {temperature}")
        self.function, self.temperature, self.pool_size = function, temperature, pool_size
        features = in_channels * pool_size * pool_size
        if hidden:
            self.fc = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_branches))
        else:
            self.fc = nn.Linear(features, num_branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A plain mean is the 1x1 average pool without its NCHW copy of a channels_last input.
        pooled = x.mean((2, 3)) if self.pool_size == 1 else F.adaptive_avg_pool2d(x, self.pool_size).flatten(1)
        logits = self.fc(pooled)
        if self.function == "softmax":
            # Dividing by 1 changes nothing but costs a kernel each way on a GPU, where steps are launch-bound.
            return torch.softmax(logits / self.temperature if self.temperature != 1 else logits, dim=1)
        if self.function == "sigmoid":
            return torch.sigmoid(logits)
        return torch.relu(logits)


class Block(nn.Module):
    """The coursework Block: K convolutions of the same input, mixed by input-dependent weights.

    ``kernel_sizes`` gives one odd kernel size per branch (K = its length). The fused path scales the
    input instead of the outputs (see :meth:`mix_fused`) and runs all branches of equal kernel size as one
    convolution; ``fused=False`` is the plain reference, one convolution per branch with its output scaled.
    Both use the same parameters.

    ``pool`` > 1 max-pools the mixed output by that factor before BN and the activation, so they run on
    ``pool``² times fewer elements in a downsampling Block (the shortcut, if any, is pooled the same way). The output
    keeps the input's memory format (channels_last stays channels_last).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_sizes: Sequence[int] = (3, 3, 3),
                 gate: str = "softmax", temperature: float = 1.0, pool_size: int = 1,
                 gate_hidden: Optional[int] = None, batchnorm: bool = True, activation: Optional[str] = "relu",
                 residual: bool = False, pool: int = 1, fused: bool = True):
        super().__init__()
        if not kernel_sizes or any(k < 1 or k % 2 == 0 for k in kernel_sizes):
            raise ValueError(f"kernel_sizes must be odd and positive, one per branch; got {tuple(kernel_sizes)}")
        if pool < 1:
            raise ValueError(f"pool must be at least 1, got {pool}")
        self.kernel_sizes = tuple(kernel_sizes)
        self.out_channels, self.pool, self.fused = out_channels, pool, fused
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

    @property
    def branch_labels(self) -> tuple[str, ...]:
        """A name per branch for reports: its kernel ("3x3"), numbered where kernels repeat ("3x3 #2")."""
        seen: dict[int, int] = defaultdict(int)
        labels = []
        for k in self.kernel_sizes:
            seen[k] += 1
            labels.append(f"{k}x{k}" + (f" #{seen[k]}" if len(self._groups[k]) > 1 else ""))
        return tuple(labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.gate(x)
        out = self.mix_fused(x, a) if self.fused else self.mix_reference(x, a)
        if self.pool > 1:
            out = F.max_pool2d(out, self.pool)
        out = self.act(self.bn(out))
        if self.shortcut is not None:
            skip = self.shortcut(x)
            out = out + (F.max_pool2d(skip, self.pool) if self.pool > 1 else skip)
        return out

    def mix_reference(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """``sum_k a[:, k] * conv_k(x)``, one convolution per branch."""
        return sum(a[:, k, None, None, None] * conv(x) for k, conv in enumerate(self.convs))

    def mix_fused(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """The same sum as ``sum_k conv_k(a_k * x)``: a convolution is linear, so scaling its input by a_k
        scales its output by a_k (its bias, without BN, is weighted apart: ``sum_k a_k b_k``).

        The n branches of one kernel size become a single convolution of their scaled inputs stacked
        [B, n*C_in, H, W] with their weights side by side [C_out, n*C_in, k, k]: its sum over input channels
        is their weighted sum. So no per-branch output [B, C_out, H, W] is written and no mixing pass runs,
        which is cheaper wherever C_in <= C_out (training speed against the old output scaling:
        ``benchmarks/block_mix.py``). No index lists (which copy host to device and sync on a GPU), and
        only 4-D tensors, so the result keeps the input's memory format.
        """
        # One [B, 1, 1, 1] view of a per branch. unbind's backward is one stack, where a slice per branch
        # costs a zero-filled copy each plus their sum: fewer kernels on a launch-bound GPU, same numbers.
        branch_weights = a.to(x.dtype).view(len(a), -1, 1, 1, 1).unbind(1)
        out = None
        for k, indices in self._groups.items():
            scaled = [x * branch_weights[i] for i in indices]
            weights = [self.convs[i].weight for i in indices]
            if len(indices) > 1:
                scaled, weights = [torch.cat(scaled, 1)], [torch.cat(weights, 1)]
            y = F.conv2d(scaled[0], weights[0], padding=k // 2)
            out = y if out is None else out + y
        if self.convs[0].bias is not None:
            biases = torch.stack([conv.bias for conv in self.convs])  # [K, C_out]
            out = out + (a.to(out.dtype) @ biases.to(out.dtype))[:, :, None, None]
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
    """Spatial pooling (``pool`` = "avg" or "max") to ``pool_size`` x ``pool_size``, flatten, then an MLP.

    Each hidden layer is Linear -> activation -> BatchNorm (optional) -> Dropout (optional).
    """

    def __init__(self, in_channels: int, num_classes: int, pool_size: int = 1, hidden: Sequence[int] = (),
                 dropout: float = 0.0, batchnorm: bool = False, activation: str = "relu", pool: str = "avg"):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"unknown pooling {pool!r}; choose {' or '.join(POOLS)}")
        self.pool = nn.AdaptiveAvgPool2d(pool_size) if pool == "avg" else nn.AdaptiveMaxPool2d(pool_size)
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
