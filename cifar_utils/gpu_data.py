"""The GPU-resident data pipeline: the whole uint8 data set on the device, augmented there batch by batch.

Usage (``experiment.make_loaders`` does this when ``config.pipeline == "gpu"``)::

    train, validation, test = make_gpu_loaders(splits, config, device, batch, eval_batch, rank, world)
    train.set_epoch(epoch, skip_batches)   # the engine calls this at the start of every epoch
    for images, labels in train:           # float32 [B, 3, 32, 32] normalised, int64 [B], on the device
        ...

The images are copied to the device once, as uint8. Each batch is gathered there, augmented, normalised
and (with ``channels_last``) laid out channels-last, with no DataLoader workers and no PIL in the loop.

Every random choice of epoch ``e`` (the order, and each image's augmentation) comes from a
``torch.Generator`` on the device seeded by ``(seed, e)`` alone and is drawn for the whole epoch at once,
so a resumed run that skips the first batches of an epoch sees exactly the batches of an uninterrupted
run, and the global random stream is never touched. Under DDP every rank draws the same epoch and takes
every ``world_size``-th position of it, padded as ``DistributedSampler`` pads.

The augmentations are batched versions of the named torchvision ones in ``data.augmentation_ops``
(``crop_flip``, ``affine_jitter``, ``resized_crop_flip``, ``none``), with the same settings and
normalisation (both read ``cifar_utils.preprocessing``), written with tensor indexing and
``affine_grid``/``grid_sample``. Differences from torchvision: ColorJitter's four adjustments run in a
fixed order (brightness, contrast, saturation, hue) rather than a random order per image, and a resized
crop is interpolated from the whole image, so its border pixels may blend in a neighbour from outside the
crop box.
"""

from __future__ import annotations

import math
from typing import Iterator, Optional, Sequence

import torch
import torch.nn.functional as F

from .config import progressive_schedule
from .data import ImageSet, pad_to_multiple, rank_share, training_batches
from .errors import ConfigError
from . import preprocessing as spec
from .preprocessing import AUGMENTATIONS, CROP_PADDING, FLIPPING_AUGMENTATIONS, IMAGE_SIZE, Normalize

RESIZED_CROP_ATTEMPTS = 10  # as torchvision's RandomResizedCrop
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale


# ------------------------------------------------------------------------------- batched image operations
# All take float images [B, C, H, W] with values in [0, 1] (unless stated) and one parameter per image.


def flip_images(images: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Mirror left-right the images where ``flip`` (bool [B]) is set."""
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)


def translate_images(images: torch.Tensor, shift_y: torch.Tensor, shift_x: torch.Tensor,
                     max_shift: int, fill: str = "zeros") -> torch.Tensor:
    """Move each image's content down by ``shift_y`` and right by ``shift_x`` pixels (int64 [B], each in
    [-max_shift, max_shift]): a random crop of the padded image, as RandomCrop. ``fill`` is the padding,
    "zeros" or "reflect" (the image mirrored at its edge, without repeating the edge pixel)."""
    if max_shift == 0:
        return images
    b, c, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4, mode="reflect" if fill == "reflect" else "constant")
    rows = torch.arange(h, device=images.device) - shift_y.view(-1, 1) + max_shift  # [B, H] source rows
    cols = torch.arange(w, device=images.device) - shift_x.view(-1, 1) + max_shift  # [B, W] source columns
    picked_rows = padded.gather(2, rows.view(b, 1, h, 1).expand(b, c, h, w + 2 * max_shift))
    return picked_rows.gather(3, cols.view(b, 1, 1, w).expand(b, c, h, w))


def affine_images(images: torch.Tensor, angle: torch.Tensor, translate_x: torch.Tensor, translate_y: torch.Tensor,
                  scale: torch.Tensor) -> torch.Tensor:
    """Rotate by ``angle`` degrees and scale by ``scale`` about the centre, then move by ``translate_x``,
    ``translate_y`` pixels; outside the image is zero. Nearest-neighbour sampling, as RandomAffine."""
    b, _, h, w = images.shape
    radians = torch.deg2rad(angle.float())
    cos, sin = torch.cos(radians) / scale, torch.sin(radians) / scale
    # affine_grid maps output coordinates to input ones (in [-1, 1] units), so this is the inverse transform
    inverse = torch.stack([torch.stack([cos, sin], 1), torch.stack([-sin, cos], 1)], 1)  # [B, 2, 2]
    shift = torch.stack([2 * translate_x.float() / w, 2 * translate_y.float() / h], 1)  # [B, 2]
    offset = -(inverse @ shift.unsqueeze(2))  # [B, 2, 1]
    theta = torch.cat([inverse, offset], 2).to(images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def crop_and_resize_images(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, height: torch.Tensor,
                           width: torch.Tensor) -> torch.Tensor:
    """Cut the box (``top``, ``left``, ``height``, ``width``, pixels, int64 [B]) from each image and resize it
    bilinearly to the full image size."""
    b, _, h, w = images.shape
    zero = torch.zeros(b, device=images.device)
    sx, sy = width.float() / w, height.float() / h
    cx, cy = (2 * left.float() + width.float()) / w - 1, (2 * top.float() + height.float()) / h - 1
    theta = torch.stack([torch.stack([sx, zero, cx], 1), torch.stack([zero, sy, cy], 1)], 1).to(images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """Luma of RGB images: [B, 3, H, W] -> [B, 1, H, W]."""
    r, g, b = images.unbind(1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)


def rgb_to_hsv(images: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] -> HSV with hue, saturation and value in [0, 1]; [B, 3, H, W] both."""
    r, g, b = images.unbind(1)
    value, _ = images.max(1)
    chroma = value - images.min(1).values
    safe_chroma = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    saturation = torch.where(value > 0, chroma / torch.where(value > 0, value, torch.ones_like(value)),
                             torch.zeros_like(value))
    hue = torch.where(value == r, ((g - b) / safe_chroma) % 6,
                      torch.where(value == g, (b - r) / safe_chroma + 2, (r - g) / safe_chroma + 4))
    hue = torch.where(chroma > 0, hue / 6, torch.zeros_like(hue))
    return torch.stack([hue, saturation, value], 1)


def hsv_to_rgb(images: torch.Tensor) -> torch.Tensor:
    """HSV in [0, 1] -> RGB in [0, 1]; [B, 3, H, W] both."""
    hue, saturation, value = (t.unsqueeze(1) for t in images.unbind(1))
    n = torch.tensor([5.0, 3.0, 1.0], device=images.device, dtype=images.dtype).view(1, 3, 1, 1)  # R, G, B
    k = (n + hue * 6) % 6
    return value - value * saturation * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def color_jitter_images(images: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor,
                        saturation: torch.Tensor, hue: torch.Tensor) -> torch.Tensor:
    """ColorJitter with one factor per image ([B] each; hue is a shift in turns), in a fixed order."""
    def per_image(t: torch.Tensor) -> torch.Tensor:
        return t.to(images.dtype).view(-1, 1, 1, 1)

    out = (images * per_image(brightness)).clamp(0, 1)
    mean_gray = grayscale(out).mean(dim=(1, 2, 3), keepdim=True)
    out = (per_image(contrast) * out + (1 - per_image(contrast)) * mean_gray).clamp(0, 1)
    out = (per_image(saturation) * out + (1 - per_image(saturation)) * grayscale(out)).clamp(0, 1)
    hsv = rgb_to_hsv(out)
    hsv = torch.cat([(hsv[:, :1] + per_image(hue)) % 1, hsv[:, 1:]], 1)
    return hsv_to_rgb(hsv).clamp(0, 1)


def cutout_images(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: int) -> torch.Tensor:
    """Set a ``size`` x ``size`` square at (``top``, ``left``) (int64 [B]) of every image to zero."""
    _, _, h, w = images.shape
    rows = torch.arange(h, device=images.device).view(1, h, 1) - top.view(-1, 1, 1)
    cols = torch.arange(w, device=images.device).view(1, 1, w) - left.view(-1, 1, 1)
    inside = (rows >= 0) & (rows < size) & (cols >= 0) & (cols < size)  # [B, H, W]
    return images.masked_fill(inside.unsqueeze(1), 0)


# ------------------------------------------------------------------------ random parameters of an epoch


def _uniform(n: int, low: float, high: float, gen: torch.Generator, shape: Sequence[int] = ()) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, *shape, generator=gen, device=gen.device)


def draw_augmentation(augmentation: str, n: int, gen: torch.Generator, image_size: int = IMAGE_SIZE,
                      crop_padding: int = CROP_PADDING) -> dict[str, torch.Tensor]:
    """The random parameters of ``augmentation`` (without its flip) for ``n`` images: name -> tensor [n]."""
    device = gen.device
    if augmentation == "crop_flip":
        return {name: torch.randint(-crop_padding, crop_padding + 1, (n,), generator=gen, device=device)
                for name in ("shift_y", "shift_x")}
    if augmentation == "affine_jitter":
        max_shift = spec.AFFINE_TRANSLATE * image_size
        return {
            "angle": _uniform(n, -spec.AFFINE_DEGREES, spec.AFFINE_DEGREES, gen),
            "translate_x": torch.round(_uniform(n, -max_shift, max_shift, gen)),
            "translate_y": torch.round(_uniform(n, -max_shift, max_shift, gen)),
            "scale": _uniform(n, *spec.AFFINE_SCALE, gen),
            "brightness": _uniform(n, 1 - spec.JITTER_BRIGHTNESS, 1 + spec.JITTER_BRIGHTNESS, gen),
            "contrast": _uniform(n, 1 - spec.JITTER_CONTRAST, 1 + spec.JITTER_CONTRAST, gen),
            "saturation": _uniform(n, 1 - spec.JITTER_SATURATION, 1 + spec.JITTER_SATURATION, gen),
            "hue": _uniform(n, -spec.JITTER_HUE, spec.JITTER_HUE, gen),
        }
    if augmentation == "resized_crop_flip":
        return _draw_resized_crop(n, gen, image_size)
    check_augmentation(augmentation)
    return {}


def check_augmentation(augmentation: str) -> None:
    if augmentation not in AUGMENTATIONS:
        raise ConfigError(f"the gpu pipeline has no augmentation {augmentation!r}; choose one of "
                          f"{', '.join(AUGMENTATIONS)}")


def _draw_resized_crop(n: int, gen: torch.Generator, size: int) -> dict[str, torch.Tensor]:
    """RandomResizedCrop's boxes: up to 10 tries of area and aspect ratio each, the whole image if none fits."""
    area = size * size * _uniform(n, *spec.RESIZED_CROP_SCALE, gen, (RESIZED_CROP_ATTEMPTS,))
    log_ratio = _uniform(n, math.log(spec.RESIZED_CROP_RATIO[0]), math.log(spec.RESIZED_CROP_RATIO[1]), gen,
                         (RESIZED_CROP_ATTEMPTS,))
    width = torch.round(torch.sqrt(area * torch.exp(log_ratio)))
    height = torch.round(torch.sqrt(area / torch.exp(log_ratio)))
    fits = (width >= 1) & (width <= size) & (height >= 1) & (height <= size)  # [n, attempts]
    first = fits.int().argmax(1, keepdim=True)  # the first attempt that fits
    found = fits.any(1)
    full = torch.full((n,), float(size), device=gen.device)
    width = torch.where(found, width.gather(1, first).squeeze(1), full)
    height = torch.where(found, height.gather(1, first).squeeze(1), full)
    top = torch.floor(torch.rand(n, generator=gen, device=gen.device) * (size - height + 1))
    left = torch.floor(torch.rand(n, generator=gen, device=gen.device) * (size - width + 1))
    return {"top": top.long(), "left": left.long(), "height": height.long(), "width": width.long()}


def apply_augmentation(augmentation: str, images: torch.Tensor, params: dict[str, torch.Tensor],
                       crop_padding: int = CROP_PADDING, crop_fill: str = "zeros") -> torch.Tensor:
    """Apply ``augmentation`` (without its flip) with the drawn ``params`` to images in [0, 1]."""
    if augmentation == "crop_flip":
        return translate_images(images, params["shift_y"], params["shift_x"], crop_padding, crop_fill)
    if augmentation == "affine_jitter":
        moved = affine_images(images, params["angle"], params["translate_x"], params["translate_y"], params["scale"])
        return color_jitter_images(moved, params["brightness"], params["contrast"], params["saturation"],
                                   params["hue"])
    if augmentation == "resized_crop_flip":
        return crop_and_resize_images(images, params["top"], params["left"], params["height"], params["width"])
    return images


def device_generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """The generator seed of epoch ``epoch`` (epoch -1 seeds the per-image start of the alternating flip)."""
    return (seed * 1_000_003 + epoch + 1) % 2**63


# ------------------------------------------------------------------------------------------- loaders


class _DeviceImages:
    """An :class:`ImageSet` copied to the device once, with batched normalisation.

    ``len()`` is the number of batches left in the current epoch (all of them unless ``set_epoch`` asked
    to skip some), as for a DataLoader over a sampler that skips.
    """

    def __init__(self, imageset: ImageSet, mean: Sequence[float], std: Sequence[float], batch_size: int,
                 device: torch.device | str, rank: int = 0, world_size: int = 1, channels_last: bool = False):
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size} is invalid: it must be at least 1")
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is not in a world of {world_size} processes")
        self.device = torch.device(device)
        self.images = imageset.images.to(self.device)  # uint8 [N, 3, H, W], moved once
        self.labels = imageset.labels.to(self.device)  # int64 [N]
        self.classes = list(imageset.classes)
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.channels_last = channels_last
        self._normalise = Normalize(mean, std, self.device)
        self.epoch, self.skip_batches = 0, 0

    @property
    def positions_per_rank(self) -> int:
        return math.ceil(len(self.labels) / self.world_size)

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(self.positions_per_rank / self.batch_size)

    def __len__(self) -> int:
        return self.batches_per_epoch - self.skip_batches

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Draw epoch ``epoch`` next, starting after its first ``skip_batches`` batches."""
        if not 0 <= skip_batches <= self.batches_per_epoch:
            raise ConfigError(f"cannot skip {skip_batches} batches of an epoch of {self.batches_per_epoch}")
        self.epoch, self.skip_batches = epoch, skip_batches

    def _rank_batches(self, total: int) -> Iterator[torch.Tensor]:
        """This rank's positions in an epoch of ``total`` positions, one tensor per batch, after the skip."""
        mine = torch.arange(self.rank, total, self.world_size, device=self.device)
        for b in range(self.skip_batches, self.batches_per_epoch):
            yield mine[b * self.batch_size:(b + 1) * self.batch_size]

    def _layout(self, images: torch.Tensor) -> torch.Tensor:
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images


class GpuEvalLoader(_DeviceImages):
    """Evaluation batches in order, normalised, no augmentation: (float32 [B, 3, H, W], int64 [B])."""

    @property
    def unpadded_size(self) -> int:
        """The images this rank yields that are not padding; they come first (an evaluation never skips)."""
        return rank_share(len(self.labels), self.world_size, self.rank)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = pad_to_multiple(torch.arange(len(self.labels), device=self.device), self.world_size)
        for positions in self._rank_batches(len(order)):
            index = order[positions]
            yield self._layout(self._normalise(self.images[index].float() / 255)), self.labels[index]


class GpuTrainLoader(_DeviceImages):
    """Shuffled, augmented training batches: (float32 [B, 3, H, W] normalised, int64 [B]), on the device.

    ``augmentation`` is one of the named augmentations; ``crop_padding`` is crop_flip's largest shift and
    ``crop_fill`` what its shift brings in ("zeros" or "reflect");
    ``alternating_flip`` flips each image on every other epoch, starting at random per image, instead of
    independently each epoch; ``cutout`` blanks a random square of that side (to the mean colour, after
    normalisation). ``epoch_sides`` gives the image side of each of the first epochs (0-based): their
    augmented images are resized to it (bilinear, antialiased), later epochs keep the full size (progressive
    resizing: the early epochs cost a fraction). A last batch of a single image is left out, and with
    ``drop_last`` any partial last batch (so every step has one batch shape). After a full pass the loader
    moves on to the next epoch by itself.
    """

    def __init__(self, imageset: ImageSet, mean: Sequence[float], std: Sequence[float], batch_size: int,
                 device: torch.device | str, *, augmentation: str = "crop_flip", crop_padding: int = CROP_PADDING,
                 crop_fill: str = "zeros", alternating_flip: bool = False, cutout: int = 0, seed: int = 0, rank: int = 0,
                 world_size: int = 1, channels_last: bool = False, drop_last: bool = False,
                 epoch_sides: Sequence[int] = ()):
        super().__init__(imageset, mean, std, batch_size, device, rank, world_size, channels_last)
        self.drop_last = drop_last
        check_augmentation(augmentation)
        if crop_fill not in spec.CROP_FILLS:
            raise ConfigError(f"crop_fill={crop_fill!r} is not valid; choose one of {', '.join(spec.CROP_FILLS)}")
        if alternating_flip and augmentation not in FLIPPING_AUGMENTATIONS:
            raise ConfigError(f"alternating_flip needs an augmentation that flips; {augmentation!r} does not")
        self.augmentation, self.crop_padding, self.crop_fill, self.cutout = augmentation, crop_padding, crop_fill, cutout
        self.alternating_flip, self.seed = alternating_flip, seed
        self.image_size = int(self.images.shape[-1])
        if any(side >= self.image_size for side in epoch_sides):
            raise ConfigError(f"progressive_start must be smaller than the images ({self.image_size} px); "
                              f"got sides {sorted(set(epoch_sides))}")
        self.epoch_sides = tuple(epoch_sides)
        self._first_flip: Optional[torch.Tensor] = None
        if alternating_flip:
            start = device_generator(self.device, epoch_seed(seed, -1))
            self._first_flip = torch.rand(len(self.labels), generator=start, device=self.device) < 0.5

    @property
    def batches_per_epoch(self) -> int:
        return training_batches(self.positions_per_rank, self.batch_size, self.drop_last)

    def draw_epoch(self, epoch: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Epoch ``epoch``'s padded order (int64 [P]) and per-position augmentation parameters ([P] each)."""
        gen = device_generator(self.device, epoch_seed(self.seed, epoch))
        order = pad_to_multiple(torch.randperm(len(self.labels), generator=gen, device=self.device), self.world_size)
        params = draw_augmentation(self.augmentation, len(order), gen, self.image_size, self.crop_padding)
        if self.augmentation in FLIPPING_AUGMENTATIONS:
            if self._first_flip is not None:
                params["flip"] = self._first_flip[order] ^ bool(epoch % 2)
            else:
                params["flip"] = torch.rand(len(order), generator=gen, device=self.device) < spec.FLIP_PROBABILITY
        if self.cutout:
            for name in ("cutout_top", "cutout_left"):
                params[name] = torch.randint(0, self.image_size - self.cutout + 1, (len(order),), generator=gen,
                                             device=self.device)
        return order, params

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order, params = self.draw_epoch(self.epoch)
        for positions in self._rank_batches(len(order)):
            index = order[positions]
            batch = {name: value[positions] for name, value in params.items()}
            yield self.augment(self.images[index], batch, self.side(self.epoch)), self.labels[index]
        self.epoch, self.skip_batches = self.epoch + 1, 0

    def side(self, epoch: int) -> int:
        """The side in pixels of epoch ``epoch``'s (0-based) training images."""
        return self.epoch_sides[epoch] if epoch < len(self.epoch_sides) else self.image_size

    def augment(self, images: torch.Tensor, params: dict[str, torch.Tensor], side: int) -> torch.Tensor:
        """uint8 [B, 3, H, W] and their drawn parameters -> augmented, normalised float32 [B, 3, side, side]."""
        x = apply_augmentation(self.augmentation, images.float() / 255, params, self.crop_padding, self.crop_fill)
        if "flip" in params:
            x = flip_images(x, params["flip"])
        x = self._normalise(x)
        if self.cutout:
            x = cutout_images(x, params["cutout_top"], params["cutout_left"], self.cutout)
        if side != x.shape[-1]:
            x = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        return self._layout(x)


def make_gpu_loaders(splits, config, device: torch.device, batch_size: int, eval_batch_size: int, rank: int = 0,
                     world_size: int = 1) -> tuple[GpuTrainLoader, GpuEvalLoader, GpuEvalLoader]:
    """Train, validation and test loaders of ``splits`` on ``device``; batch sizes are per rank."""
    train = GpuTrainLoader(splits.train, splits.mean, splits.std, batch_size, device,
                           augmentation=config.augmentation, crop_padding=config.crop_padding,
                           crop_fill=config.crop_fill,
                           alternating_flip=config.alternating_flip, cutout=config.cutout, seed=config.seed,
                           rank=rank, world_size=world_size, channels_last=config.channels_last,
                           drop_last=config.drop_last, epoch_sides=progressive_schedule(config, int(splits.train.images.shape[-1])))
    evals = [GpuEvalLoader(s, splits.mean, splits.std, eval_batch_size, device, rank, world_size,
                           config.channels_last) for s in (splits.validation, splits.test)]
    return train, evals[0], evals[1]
