"""Fast architectures of the coursework network (the ``cpu``, ``fast`` and ``fast_best`` presets).

Every convolution layer is a coursework :class:`~cifar_utils.models.Block` with K = 2 branches, a 3x3 and
a 1x1 convolution of the same input mixed by the Block's own weights ``a = softmax(Linear(AvgPool(X)))``;
the 1x1 branch adds about 1/9 of a 3x3 convolution's work, where a second 3x3 branch would double it.
In front sits a frozen patch-whitening stem (fitted to the training images by ``init_from_data``) and at
the end the classifier is global pooling (average, or max with ``head_pool="max"``) and an MLP (a single
Linear layer) with a fixed output scale. ``identity_init=True`` starts every 3x3 branch as the identity
on its first C_in output channels (airbench94's dirac initialisation), so a fresh Block first passes its
input on. The layout follows the fastest published CIFAR-10 trainers (three stages, each a Block, a 2x2
max-pool and more Blocks at the pooled resolution), written for this kit::

    fast_net       stem(2x2, 24 ch) | 64 M 64 | 256 M 256 | 256 M 256 | avg pool, Linear x 1/8
    fast_best_net  stem(2x2, 24 ch) | 128 M 128 128 | 512 M 512 512 | 512 M 512 512 | avg pool, Linear x 1/8
                   (the Blocks after each pool are residual)
    cpu_net        stem(2x2, 24 ch) | 32 M 32 | 128 M 128 | 128 M 128 | avg pool, Linear x 1/8

"M" is the 2x2 max-pool inside the Block before it (conv -> mix -> pool -> BN -> GELU).

Shapes: input [B, 3, 32, 32] normalised; stem output [B, 24, 31, 31]; stages end at 15, 7 and 3 pixels.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import Block, Classifier, Net
from .preprocessing import Normalize

KERNEL_SIZES = (3, 1)  # the two branches of every Block
STEM_PATCH = 2  # the whitening stem's patch side, in pixels
STEM_EPS = 1e-2  # added to the patch-covariance eigenvalues: tempers the noisiest (JPEG-flattened) directions
STEM_FIT_IMAGES = 2000  # training images whose patches fit the whitening (1.9M patches for a 12x12 covariance)
BATCHNORM_MOMENTUM = 0.4  # short runs: running statistics follow the fast-moving weights closely
LOGIT_SCALE = 1 / 8  # keeps the first logits small and slows the classifier relative to the body


def image_patches(images: torch.Tensor, patch: int) -> torch.Tensor:
    """Every ``patch`` x ``patch`` patch of images [N, C, H, W] as a row: [N * L, C * patch**2], in the order
    (channel, row, column) of a convolution weight's input dimensions (L patches per image)."""
    n, c, h, w = images.shape
    rows, cols = h - patch + 1, w - patch + 1
    shifted = [images[:, :, i:i + rows, j:j + cols] for i in range(patch) for j in range(patch)]
    patches = torch.stack(shifted, 2).view(n, c * patch * patch, rows * cols)  # [N, D, L]
    return patches.transpose(1, 2).reshape(-1, c * patch * patch)


class PatchWhitening(nn.Module):
    """A frozen ``patch`` x ``patch`` convolution that whitens image patches: [B, C, H, W] -> [B, 2D, H-p+1, W-p+1]
    with D = C * patch**2.

    After :meth:`fit`, its D filters are the eigenvectors of the covariance of training patches, each
    divided by sqrt(eigenvalue + eps), and the other D are their negatives, so that a following nonlinearity
    keeps both signs. Until fitted, the filters copy each patch value (identity). The filters are a buffer:
    saved in checkpoints and restored from them, never trained.
    """

    def __init__(self, in_channels: int = 3, patch: int = STEM_PATCH, eps: float = STEM_EPS):
        super().__init__()
        self.patch, self.eps = patch, eps
        dims = in_channels * patch * patch
        basis = torch.eye(dims).view(dims, in_channels, patch, patch)
        self.register_buffer("weight", torch.cat([basis, -basis]))  # [2D, C, p, p]

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]

    @torch.no_grad()
    def fit(self, images: torch.Tensor, chunk: int = 500) -> None:
        """Fit the whitening to normalised float images [N, C, H, W] (all their patches, in chunks)."""
        dims = self.weight.shape[0] // 2
        second_moment = torch.zeros(dims, dims, dtype=torch.float64)
        total = torch.zeros(dims, dtype=torch.float64)
        count = 0
        for start in range(0, len(images), chunk):
            patches = image_patches(images[start:start + chunk].double().cpu(), self.patch)  # [n*L, D]
            second_moment += patches.T @ patches
            total += patches.sum(0)
            count += len(patches)
        mean = total / count
        covariance = second_moment / count - torch.outer(mean, mean)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
        filters = (eigenvectors / torch.sqrt(eigenvalues.clamp_min(0) + self.eps)).T.flip(0)  # strongest first
        filters = filters.reshape(dims, *self.weight.shape[1:]).to(self.weight)
        self.weight.copy_(torch.cat([filters, -filters]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight.to(x.dtype))


class ScaledClassifier(Classifier):
    """:class:`Classifier` (spatial pooling, average or max, + MLP) whose logits are multiplied by a fixed
    ``logit_scale``."""

    def __init__(self, in_channels: int, num_classes: int, logit_scale: float = LOGIT_SCALE, **kwargs):
        super().__init__(in_channels, num_classes, **kwargs)
        self.logit_scale = logit_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * self.logit_scale


class FastNet(Net):
    """:class:`Net` whose stem is a :class:`PatchWhitening` and a GELU; ``experiment.train`` fits the whitening
    to the training images (``init_from_data``) before training."""

    def __init__(self, backbone: nn.Module, classifier: nn.Module, whitening: PatchWhitening):
        super().__init__(backbone, classifier, stem=nn.Sequential(whitening, nn.GELU()))

    @property
    def whitening(self) -> PatchWhitening:
        return self.stem[0]

    def init_from_data(self, images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> None:
        """Fit the whitening to the first training images (uint8 [N, 3, H, W]), normalised with ``mean``, ``std``."""
        self.whitening.fit(Normalize(mean, std)(images[:STEM_FIT_IMAGES].float() / 255))


def fast_stages(stages: Sequence[tuple[int, int]], in_channels: int, residual: bool,
                kernel_sizes: Sequence[int] = KERNEL_SIZES, activation: str = "gelu",
                identity_init: bool = False) -> nn.Sequential:
    """Stages of Blocks: for each (width, blocks), a Block to ``width`` channels that max-pools its mixed
    output by 2 before BN and the activation, then ``blocks - 1`` Blocks at the pooled resolution (residual
    when ``residual``). ``identity_init``: see the module docstring."""
    layers: list[nn.Module] = []
    channels = in_channels
    for width, blocks in stages:
        layers.append(Block(channels, width, kernel_sizes, activation=activation, pool=2))
        layers += [Block(width, width, kernel_sizes, activation=activation, residual=residual)
                   for _ in range(blocks - 1)]
        channels = width
    backbone = nn.Sequential(*layers)
    for module in backbone.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = BATCHNORM_MOMENTUM
            module.weight.requires_grad_(False)  # scale fixed at 1: the next layer's weights carry the scale
        if identity_init and isinstance(module, nn.Conv2d) and module.kernel_size == (3, 3):
            with torch.no_grad():
                nn.init.dirac_(module.weight[:module.in_channels])  # the rest keep their random start
    backbone.out_channels = channels
    return backbone


def _fast_net(stages: Sequence[tuple[int, int]], residual: bool, num_classes: int, head_pool: str,
              identity_init: bool) -> FastNet:
    whitening = PatchWhitening()
    backbone = fast_stages(stages, whitening.out_channels, residual, identity_init=identity_init)
    return FastNet(backbone, ScaledClassifier(backbone.out_channels, num_classes, pool=head_pool), whitening)


def fast_net(num_classes: int = 10, head_pool: str = "avg", identity_init: bool = False) -> nn.Module:
    """The ``fast`` preset's network: 6 Blocks (3x3 + 1x1), 64-256-256 channels, whitening stem; ~2.2M parameters."""
    return _fast_net([(64, 2), (256, 2), (256, 2)], False, num_classes, head_pool, identity_init)


def fast_best_net(num_classes: int = 10, head_pool: str = "avg", identity_init: bool = False) -> nn.Module:
    """The ``fast_best`` preset's network: 9 Blocks (3x3 + 1x1), 128-512-512 channels, residual after each pool;
    ~14.1M parameters."""
    return _fast_net([(128, 3), (512, 3), (512, 3)], True, num_classes, head_pool, identity_init)


def cpu_net(num_classes: int = 10, head_pool: str = "avg", identity_init: bool = False) -> nn.Module:
    """The ``cpu`` preset's network: ``fast_net`` at half the width, 6 Blocks (3x3 + 1x1), 32-128-128 channels;
    ~0.55M parameters, sized to train in minutes on a 2-core CPU."""
    return _fast_net([(32, 2), (128, 2), (128, 2)], False, num_classes, head_pool, identity_init)


ARCHITECTURES: dict[str, Callable[[int], nn.Module]] = {
    "cpu_net": cpu_net,
    "fast_net": fast_net,
    "fast_best_net": fast_best_net,
}
