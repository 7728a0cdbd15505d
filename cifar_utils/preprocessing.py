"""The named augmentations' settings and the input normalisation, defined once.

Both pipelines read these: the torchvision one (``data.augmentation_ops``, ``data.build_transform``) and
the batched one on the device (``gpu_data``), so a setting changed here changes both.
"""

from __future__ import annotations

from typing import Sequence

import torch

IMAGE_SIZE = 32  # CIFAR images are IMAGE_SIZE x IMAGE_SIZE pixels; image folders are resized to it
FIXED_MEAN = (0.5, 0.5, 0.5)  # normalization="fixed", the normalisation most reports use
FIXED_STD = (0.5, 0.5, 0.5)

CROP_PADDING = 4  # crop_flip: largest shift in pixels; config.crop_padding's default
CROP_FILLS = ("zeros", "reflect")  # crop_flip: what a shift brings in at the border (config.crop_fill)
FLIPPING_AUGMENTATIONS = ("affine_jitter", "crop_flip", "resized_crop_flip")  # the named ones; each mirrors
AUGMENTATIONS = (*FLIPPING_AUGMENTATIONS, "none")  # config.augmentation's choices, in both pipelines
FLIP_PROBABILITY = 0.5  # every flipping augmentation mirrors an image with this probability
AFFINE_DEGREES = 15.0  # affine_jitter: rotation in [-15, 15] degrees
AFFINE_TRANSLATE = 0.1  # affine_jitter: shift of up to this fraction of the image size, each axis
AFFINE_SCALE = (0.9, 1.1)  # affine_jitter: zoom range
JITTER_BRIGHTNESS, JITTER_CONTRAST, JITTER_SATURATION, JITTER_HUE = 0.2, 0.2, 0.2, 0.1  # affine_jitter's ColorJitter
RESIZED_CROP_SCALE = (0.8, 1.0)  # resized_crop_flip: crop area as a fraction of the image
RESIZED_CROP_RATIO = (0.9, 1.1)  # resized_crop_flip: crop aspect ratio range


def describe_augmentation(name: str) -> str:
    """A named augmentation's settings in words, read from the constants above (01 prints them)."""
    flip = f"a horizontal flip (probability {FLIP_PROBABILITY:g})"
    return {
        "affine_jitter": (f"a random rotation of up to {AFFINE_DEGREES:g} degrees, shift of up to "
                          f"{AFFINE_TRANSLATE:.0%} and scale of {AFFINE_SCALE[0]:g} to {AFFINE_SCALE[1]:g}, colour "
                          f"jitter of brightness {JITTER_BRIGHTNESS:g}, contrast {JITTER_CONTRAST:g}, saturation "
                          f"{JITTER_SATURATION:g} and hue {JITTER_HUE:g}, and {flip}"),
        "crop_flip": (f"a random {IMAGE_SIZE}x{IMAGE_SIZE} crop of the image padded by {CROP_PADDING} pixels "
                      f"(config.crop_padding), and {flip}"),
        "resized_crop_flip": (f"a random crop of {RESIZED_CROP_SCALE[0]:.0%} to {RESIZED_CROP_SCALE[1]:.0%} of the "
                              f"area, aspect ratio {RESIZED_CROP_RATIO[0]:g} to {RESIZED_CROP_RATIO[1]:g}, resized "
                              f"back to {IMAGE_SIZE}x{IMAGE_SIZE}, and {flip}"),
        "none": "none: the images as they are",
    }[name]


class Normalize:
    """Float images in [0, 1], [3, H, W] or [B, 3, H, W] -> ``(x - mean) / std`` per channel."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device | str = "cpu"):
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(-1, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std
