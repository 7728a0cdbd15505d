"""Data: three sources behind one function, a decode cache, seeded splits, augmentations, loaders.

Sources (``load_dataset``):

- ``cifar10``: the official dataset through ``torchvision.datasets.CIFAR10`` (downloaded when allowed);
- ``folder``: an image folder, ``<root>/train/<class>/*`` and ``<root>/test/<class>/*``, any number of
  classes and any common image format (the layout of the offline JPEG copy, and of a user's own images);
- ``synthetic``: a tiny, learnable, generated data set for fast tests.

Images are kept as uint8 tensors of shape [N, 3, 32, 32]; an image folder is decoded once and cached next
to the data (``.cifar_utils_cache.pt``), so later loads take about a second.
"""

from __future__ import annotations

import hashlib
import math
import os
import signal
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence
from urllib.error import URLError

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from . import io
from . import preprocessing as spec
from .config import DATASETS, NORMALIZATIONS, VALIDATION_FRACTION
from .errors import ConfigError, DataError, WriteError
from .preprocessing import FIXED_MEAN, FIXED_STD, IMAGE_SIZE

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
CACHE_NAME = ".cifar_utils_cache.pt"
CACHE_VERSION = 2
TORCHVISION_FOLDER = "cifar-10-batches-py"


@dataclass
class ImageSet:
    """A labelled set of images held in memory."""

    images: torch.Tensor  # uint8 [N, 3, 32, 32]
    labels: torch.Tensor  # int64 [N]
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: torch.Tensor) -> "ImageSet":
        return ImageSet(self.images[indices], self.labels[indices], self.classes)

    def class_counts(self) -> list[int]:
        return torch.bincount(self.labels, minlength=len(self.classes)).tolist()


@dataclass
class CifarData:
    """The training and test sets of one source."""

    train: ImageSet
    test: ImageSet
    source: str  # "cifar10", "folder" or "synthetic"
    description: str  # where the data came from, for reports

    @property
    def classes(self) -> list[str]:
        return self.train.classes


@dataclass
class Splits:
    """Seeded train / validation / test splits and the normalisation to use with them."""

    train: ImageSet
    validation: ImageSet
    test: ImageSet
    mean: tuple[float, float, float]  # per-channel, in [0, 1] pixel units
    std: tuple[float, float, float]
    description: str
    held_out: str  # how the validation images were chosen from how many training images

    @property
    def classes(self) -> list[str]:
        return self.train.classes


# --------------------------------------------------------------------------------------------- sources


def data_copy_kind(description: str) -> str:
    """Which copy of the data a :attr:`CifarData.description` names: ``"jpeg"`` (the offline JPEG copy of
    CIFAR-10), ``"official"``, ``"folder"`` (another image folder), ``"synthetic"`` or ``"other"``. The one
    place that reads it; reports word each kind their own way."""
    for kind, start in (("official", "official"), ("synthetic", "synthetic")):  # first: wherever it was put
        if description.startswith(start):
            return kind
    if "cifar10-jpeg" in description:
        return "jpeg"
    return "folder" if description.startswith("image folder") else "other"


def resolve_root(root: str | os.PathLike | None = None, origin: Optional[str] = None) -> tuple[Path, str]:
    """The data root and where it came from: the argument, then ``$CIFAR10_ROOT``, then ``./data``.
    ``origin`` says where a given ``root`` came from (default: the user passed it)."""
    if root is not None:
        return Path(root).expanduser(), origin or "--data-root (data_root)"
    if os.environ.get("CIFAR10_ROOT"):
        return Path(os.environ["CIFAR10_ROOT"]).expanduser(), "the CIFAR10_ROOT environment variable"
    return Path("data"), "the default ./data"


def detect_source(root: Path) -> Optional[str]:
    """``"cifar10"`` for torchvision's batches, ``"folder"`` for an image folder, else None (also for a
    ``root`` that does not exist)."""
    if not _is_dir(root):
        return None
    if _is_dir(root / TORCHVISION_FOLDER):
        return "cifar10"
    if _is_dir(root / "train") and _is_dir(root / "test"):
        return "folder"
    return None


def _is_dir(path: Path) -> bool:
    """``path.is_dir()``; a folder this user may not read (pathlib re-raises EACCES) is a :class:`DataError`."""
    try:
        return path.is_dir()
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}. Fix its permissions (chmod u+rx) or point "
                        "--data-root (CIFAR10_ROOT) at a copy you can read") from None


def require_data(root: Path, origin: str) -> None:
    """:class:`DataError`, saying how to fix it, unless ``root`` holds a layout :func:`load_dataset` reads
    (for commands without --download, such as report, whose message does not offer it)."""
    if detect_source(root) is None:
        raise DataError(_not_found_message(root, origin, offer_download=False))


def load_dataset(
    root: str | os.PathLike | None = None,
    source: str = "auto",
    download: bool = False,
    skip_bad_files: bool = False,
    synthetic_size: tuple[int, int] = (600, 200),
    seed: int = 0,
    origin: Optional[str] = None,
) -> CifarData:
    """Load CIFAR-10 (or an image folder, or synthetic data) as uint8 tensors.

    ``source`` is ``"auto"`` (detect from the root), ``"cifar10"``, ``"folder"`` or ``"synthetic"``.
    Raises :class:`DataError` with where it looked (and, by ``origin``, where a given ``root`` came from) and
    how to fix it when nothing usable is found.
    """
    if source not in DATASETS:
        raise ConfigError(f"dataset={source!r} is not valid; choose one of {', '.join(DATASETS)}")
    if source == "synthetic":
        return synthetic_dataset(*synthetic_size, seed=seed)
    path, origin = resolve_root(root, origin)
    found = detect_source(path)
    asked = source
    if source == "auto":
        source = found or ("cifar10" if download else "")
    if source == "folder":
        return load_image_folder(path, skip_bad_files=skip_bad_files)
    if source == "cifar10" and (found == "cifar10" or download):
        return load_torchvision_cifar10(path, download=download)
    raise DataError(_not_found_message(path, origin, not download, found if asked == "cifar10" else None))


def _not_found_message(path: Path, origin: str, offer_download: bool, found: Optional[str] = None) -> str:
    """Why no data was found; ``found`` is the layout detected where ``dataset="cifar10"`` asked for another."""
    if found == "folder":
        return (f"dataset='cifar10' reads torchvision's CIFAR-10 batches ({TORCHVISION_FOLDER}/), but {path} (from "
                f"{origin}) holds an image folder (train/<class>/ and test/<class>/). Fix: leave dataset at 'auto' "
                "(or set dataset='folder') to read that folder, or add --download (download=True) to fetch the "
                "official CIFAR-10 there.")
    if not path.exists():
        what = f"{path} (from {origin}) does not exist"
    elif not path.is_dir():
        what = f"{path} (from {origin}) is not a folder"
    elif not any(path.iterdir()):
        what = f"{path} (from {origin}) is empty"
    else:
        what = (f"{path} (from {origin}) holds neither torchvision's CIFAR-10 batches "
                f"({TORCHVISION_FOLDER}/) nor an image folder (train/<class>/ and test/<class>/)")
    fix = ("pass --data-root DIR (data_root=DIR in Python and the notebooks, or set CIFAR10_ROOT) to a folder with train/<class>/*.jpg and "
           "test/<class>/*.jpg, or to one holding cifar-10-batches-py/")
    if offer_download:
        fix += ", or add --download (download=True) to fetch the official CIFAR-10 with torchvision"
    return f"no CIFAR-10 data found: {what}. Fix: {fix}."


def load_torchvision_cifar10(root: Path, download: bool = False) -> CifarData:
    """The official CIFAR-10 through torchvision, downloading it into ``root`` when allowed."""
    import torchvision

    sets = {}
    for split in ("train", "test"):
        try:
            ds = torchvision.datasets.CIFAR10(str(root), train=split == "train", download=download)
        except RuntimeError as err:  # torchvision's "Dataset not found or corrupted"
            fix = (f"delete {root / TORCHVISION_FOLDER} and the archive beside it, then download again" if download
                   else f"run again with --download (download=True), which fetches the batches again when "
                        f"{root / TORCHVISION_FOLDER} is damaged or missing")
            raise DataError(f"torchvision could not read CIFAR-10 in {root}: {err}. Fix: {fix}.") from None
        except (URLError, TimeoutError, ConnectionError, socket.gaierror) as err:  # no network
            raise DataError(f"downloading CIFAR-10 into {root} failed ({err}). Without internet, "
                            "point --data-root or CIFAR10_ROOT at an offline copy.") from None
        except OSError as err:  # a read-only folder, a file in the way, an unreadable batch
            raise DataError(f"torchvision could not {'write' if download else 'read'} CIFAR-10 in {root} "
                            f"({err.strerror or err}). Fix: point --data-root at a folder you can "
                            f"{'write to' if download else 'read'}.") from None
        images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
        sets[split] = ImageSet(images, torch.tensor(ds.targets, dtype=torch.int64), list(ds.classes))
    return CifarData(sets["train"], sets["test"], "cifar10", f"official CIFAR-10 (torchvision) in {root}")


def load_image_folder(root: Path, skip_bad_files: bool = False) -> CifarData:
    """An image folder ``root/{train,test}/<class>/*``, decoded once and cached next to the data."""
    files = {split: _list_images(root / split) for split in ("train", "test")}
    train_classes, test_classes = list(files["train"]), list(files["test"])
    if train_classes != test_classes:
        only_train = sorted(set(train_classes) - set(test_classes))
        only_test = sorted(set(test_classes) - set(train_classes))
        raise DataError(f"the class folders of {root}/train and {root}/test differ: only in train: "
                        f"{only_train or 'none'}; only in test: {only_test or 'none'}. "
                        "Both splits need the same class folders.")
    fingerprint = _fingerprint(files, skip_bad_files)
    cache = _cache_path(root)
    cached = _read_cache(cache, fingerprint)
    if cached is not None:
        sets, skipped, resized = cached
        _warn_about_files(root, skipped, resized)  # every load says what it left out, not only the first
        return CifarData(sets["train"], sets["test"], "folder", f"image folder {root}")
    bad: list[Path] = []
    resized_count = [0]
    sets = {split: _decode_split(files[split], train_classes, skip_bad_files, bad, resized_count)
            for split in ("train", "test")}
    skipped = [str(p) for p in bad]
    _warn_about_files(root, skipped, resized_count[0])
    for split, imageset in sets.items():
        empty = [c for c, n in zip(imageset.classes, imageset.class_counts()) if n == 0]
        if empty:
            raise DataError(f"{root}/{split} has no readable images for class(es) {', '.join(empty)}")
    _write_cache(cache, fingerprint, sets, skipped, resized_count[0])
    return CifarData(sets["train"], sets["test"], "folder", f"image folder {root}")


def _warn_about_files(root: Path, skipped: list[str], resized: int) -> None:
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable image file(s) in {root}, e.g. {skipped[0]}",
                      stacklevel=3)
    if resized:
        warnings.warn(f"resized {resized} image(s) in {root} to {IMAGE_SIZE}x{IMAGE_SIZE}", stacklevel=3)


def _list_images(split_dir: Path) -> dict[str, list[Path]]:
    if not _is_dir(split_dir):
        raise DataError(f"{split_dir} is missing: an image folder needs train/<class>/ and test/<class>/")
    classes = sorted(d.name for d in _entries(split_dir) if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"{split_dir} has no class folders: put each class's images in {split_dir}/<class>/")
    files = {}
    for name in classes:
        if name != name.encode("utf-8", "replace").decode("utf-8"):  # undecodable bytes, kept as surrogates
            raise DataError(f"class folder {split_dir / name!r} has a name that is not valid UTF-8, and class names "
                            "appear in every report: rename it")
        files[name] = sorted(p for p in _entries(split_dir / name)
                             if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
        if not files[name]:
            raise DataError(f"class folder {split_dir / name} has no images "
                            f"(looked for {', '.join(IMAGE_EXTENSIONS)}); add images or remove the folder")
    return files


def _entries(folder: Path) -> list[Path]:
    """The entries of ``folder``; an unreadable folder is a :class:`DataError` (skipping it would drop a class)."""
    try:
        return list(folder.iterdir())
    except OSError as err:
        raise DataError(f"cannot list {folder}: {err.strerror or err}. Fix its permissions "
                        "(chmod u+rx) or remove it") from None


def _decode_split(files: dict[str, list[Path]], classes: list[str], skip_bad_files: bool,
                  bad: list[Path], resized: list[int]) -> ImageSet:
    from PIL import Image, UnidentifiedImageError

    images, labels = [], []
    for label, name in enumerate(classes):
        for path in files[name]:
            try:
                with Image.open(path) as img:
                    img = _to_rgb(img)
            except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError,
                    DataError) as err:
                if not skip_bad_files:
                    raise DataError(f"cannot read image {path}: {err}. Remove or replace the file, or pass "
                                    "--skip-bad-files (skip_bad_files=True) to skip such files.") from None
                bad.append(path)
                continue
            if img.size != (IMAGE_SIZE, IMAGE_SIZE):
                img = img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
                resized[0] += 1
            images.append(np.asarray(img, dtype=np.uint8))
            labels.append(label)
    stacked = np.stack(images) if images else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    return ImageSet(torch.from_numpy(stacked).permute(0, 3, 1, 2).contiguous(),
                    torch.tensor(labels, dtype=torch.int64), list(classes))


def _to_rgb(img):
    """``img`` as 8-bit RGB; a mode whose pixel range cannot be known raises :class:`DataError`.

    PIL's own ``convert("RGB")`` clips 16-bit pixels to 255 and drops transparency, leaving silently wrong
    pixels. Transparent areas are composited onto black here.
    """
    from PIL import Image

    if img.mode.startswith("I;16") or (img.mode == "I" and img.format == "PNG"):  # 16-bit grey (PNG opens it as I)
        pixels = np.asarray(img).astype(np.float64)
        if img.mode == "I" and (pixels.min() < 0 or pixels.max() > 65535):
            raise DataError(f"its 32-bit pixels ({pixels.min():g} to {pixels.max():g}) are not 16-bit")
        return Image.fromarray(np.round(pixels / 257).astype(np.uint8), "L").convert("RGB")
    if img.mode in ("I", "F"):
        raise DataError(f"its pixel mode {img.mode!r} (32-bit {'integer' if img.mode == 'I' else 'float'}) has no "
                        "fixed range to map to 8 bits; save it as 8-bit RGB or greyscale")
    if img.mode in ("RGBA", "LA", "PA", "RGBa") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", img.size, (0, 0, 0, 255)), rgba).convert("RGB")
    return img.convert("RGB")


def _fingerprint(files: dict[str, dict[str, list[Path]]], skip_bad_files: bool) -> str:
    digest = hashlib.sha1(f"v{CACHE_VERSION} skip={skip_bad_files}".encode())
    for split, by_class in files.items():
        for name, paths in by_class.items():
            for p in paths:
                try:
                    st = p.stat()
                    stamp = f"{st.st_size}:{st.st_mtime_ns}"
                except OSError:  # a broken link or a symlink loop: decoding reports (or skips) it by name
                    stamp = "unreadable"
                digest.update(os.fsencode(f"{split}/{name}/{p.name}:{stamp}\n"))
    return digest.hexdigest()


def _cache_path(root: Path) -> Path:
    """Next to the data when writable; otherwise in ``$CIFAR_UTILS_CACHE`` or ``~/.cache/cifar_utils``."""
    if os.access(root, os.W_OK):
        return root / CACHE_NAME
    folder = Path(os.environ.get("CIFAR_UTILS_CACHE", Path.home() / ".cache" / "cifar_utils"))
    key = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16]
    return folder / f"{key}{CACHE_NAME}"


def _read_cache(path: Path, fingerprint: str) -> Optional[tuple[dict[str, ImageSet], list[str], int]]:
    """The cached sets, the files skipped and the number of images resized; None if absent or stale."""
    if not path.exists():
        return None
    # A stale, damaged or foreign cache (any other structure) is rebuilt, never trusted.
    try:
        blob = io.load_torch(path)
        if blob.get("fingerprint") != fingerprint:
            return None
        sets = {split: ImageSet(blob[split]["images"], blob[split]["labels"], list(blob["classes"]))
                for split in ("train", "test")}
        for imageset in sets.values():
            images, labels = imageset.images, imageset.labels
            if (images.dtype != torch.uint8 or tuple(images.shape[1:]) != (3, IMAGE_SIZE, IMAGE_SIZE)
                    or labels.dtype != torch.int64 or labels.shape != (len(images),)
                    or (len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < len(imageset.classes))):
                return None
        return sets, [str(p) for p in blob["skipped"]], int(blob["resized"])
    except Exception:
        return None


def _write_cache(path: Path, fingerprint: str, sets: dict[str, ImageSet], skipped: list[str],
                 resized: int) -> None:
    blob = {"fingerprint": fingerprint, "classes": sets["train"].classes, "skipped": skipped, "resized": resized,
            **{s: {"images": v.images, "labels": v.labels} for s, v in sets.items()}}
    try:
        io.save_torch(blob, path)
    except WriteError as err:  # a full disk, or no permission: training does not need the cache
        warnings.warn(f"could not write the decode cache {path} ({err.reason}); the next load will decode again",
                      stacklevel=3)


def synthetic_dataset(num_train: int = 600, num_test: int = 200, num_classes: int = 10,
                      seed: int = 0) -> CifarData:
    """A small generated data set that a model can learn: each class has its own colour and stripe pattern."""
    gen = torch.Generator().manual_seed(seed)
    colours = torch.rand(num_classes, 3, 1, 1, generator=gen) * 0.6 + 0.2
    ys = torch.arange(IMAGE_SIZE).view(1, IMAGE_SIZE, 1).float()
    xs = torch.arange(IMAGE_SIZE).view(1, 1, IMAGE_SIZE).float()
    patterns = torch.stack([torch.sin((xs * math.cos(c) + ys * math.sin(c)) * (0.3 + 0.1 * c))
                            for c in range(num_classes)])  # [C, 1, 32, 32]

    def make(n: int) -> ImageSet:
        labels = torch.arange(n) % num_classes
        labels = labels[torch.randperm(n, generator=gen)]
        noise = torch.randn(n, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen) * 0.1
        pixels = colours[labels] + 0.2 * patterns[labels] + noise
        images = (pixels.clamp(0, 1) * 255).round().to(torch.uint8)
        return ImageSet(images, labels, [f"class{c}" for c in range(num_classes)])

    return CifarData(make(num_train), make(num_test), "synthetic", f"synthetic data (seed {seed})")


# ---------------------------------------------------------------------------------------------- splits


def held_out_images(n: int, validation_split: Optional[int]) -> int:
    """How many of ``n`` training images ``validation_split`` holds out for validation: None holds out
    ``VALIDATION_FRACTION`` of them (at least one), any number that many."""
    return max(1, round(n * VALIDATION_FRACTION)) if validation_split is None else validation_split


# CIFAR-10's training and test images: what a run on the full data trains and scores on.
CIFAR10_SIZES = {"train": 50_000, "test": 10_000}


def split_sizes(config) -> tuple[int, int, int]:
    """The (train, validation, test) images of a run of ``config`` on the whole of CIFAR-10, as
    :func:`make_splits` draws them."""
    train = CIFAR10_SIZES["train"]
    validation = held_out_images(train, config.validation_split)
    sizes = (train - validation, validation, CIFAR10_SIZES["test"])
    limits = (config.train_limit, config.validation_limit, config.test_limit)
    return tuple(size if limit is None else min(size, limit) for size, limit in zip(sizes, limits))


def make_splits(data: CifarData, validation_split: Optional[int] = None, seed: int = 0,
                train_limit: Optional[int] = None, validation_limit: Optional[int] = None,
                test_limit: Optional[int] = None, normalization: str = "fixed") -> Splits:
    """Seeded, non-overlapping train/validation splits of the training set, plus the test set.

    ``validation_split`` images are held out for validation, stratified by class (see
    :func:`stratified_holdout`); None holds out ``VALIDATION_FRACTION`` of the training set (at least one
    image), so that small folders work without a setting, and 0 holds out none: every training image trains
    and the validation split is empty. ``train_limit`` takes a seeded random (not stratified) subset of the
    training split; ``validation_limit`` and ``test_limit`` cap the validation and test splits with seeded
    random subsets, each drawn from its own generator, so that one split's subset never depends on another
    split's limit (runs that differ only in ``train_limit`` are scored on the same images). Normalisation
    statistics come from the (limited) training split.
    """
    if normalization not in NORMALIZATIONS:
        raise ConfigError(f"normalization={normalization!r} is not valid; choose one of {', '.join(NORMALIZATIONS)}")
    n = len(data.train)
    if validation_split is None:
        held_out = (f"validation: the default {VALIDATION_FRACTION:.0%} of {n} training images, stratified by class; "
                    "--validation-split N chooses")
    elif validation_split == 0:
        held_out = f"no validation: validation_split=0 holds out none of the {n} training images"
    else:
        held_out = f"validation: validation_split={validation_split} of {n} training images, stratified by class"
    validation_split = held_out_images(n, validation_split)
    if validation_split >= n:
        raise DataError(f"validation_split={validation_split} is not smaller than the training set "
                        f"({n} images); use a smaller --validation-split")
    gen = torch.Generator().manual_seed(seed)
    val_idx, train_idx = stratified_holdout(data.train.labels, len(data.classes), validation_split, gen)
    classes = len(data.classes)
    left = torch.bincount(data.train.labels[train_idx], minlength=classes)
    emptied = [name for name, had, kept in zip(data.classes, torch.bincount(data.train.labels, minlength=classes), left)
               if had and not kept]
    if emptied:  # a class only ever seen in validation could never be learned
        raise DataError(f"holding out {validation_split} of the {n} training images for validation leaves no training "
                        f"image of class {', '.join(emptied)}; add images of it, or hold out fewer (--validation-split N)")
    if train_limit is not None:
        if train_limit > len(train_idx):
            raise DataError(f"train_limit={train_limit} is larger than the training split "
                            f"({len(train_idx)} images after holding out {validation_split} for validation)")
        train_idx = train_idx[torch.randperm(len(train_idx), generator=gen)[:train_limit]]
    test_idx = torch.arange(len(data.test))
    if validation_limit is not None:
        val_idx = val_idx[torch.randperm(len(val_idx), generator=_limit_generator(seed, "validation"))[:validation_limit]]
    if test_limit is not None:
        test_idx = torch.randperm(len(data.test), generator=_limit_generator(seed, "test"))[:test_limit]
    train = data.train.subset(train_idx)
    if normalization == "train_stats":
        mean, std = channel_stats(train.images)
    else:
        mean, std = FIXED_MEAN, FIXED_STD
    return Splits(train, data.train.subset(val_idx), data.test.subset(test_idx), mean, std, data.description,
                  held_out)


def _limit_generator(seed: int, split: str) -> torch.Generator:
    """The generator of ``split``'s limited subset: seeded from the run's seed and the split's name alone."""
    return torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(f"{split}:{seed}".encode()).digest()[:8], "little"))


def stratified_counts(class_counts: torch.Tensor, total: int) -> torch.Tensor:
    """How many of each class to hold out: ``total * class share``, rounded so that the counts sum to ``total``.

    Each class gets the floor of its ideal count, and the classes with the largest remainders one more
    (ties to the lower class index), so every count is within 1 of the ideal; except that a class gives up
    its last image only when no other class can give one instead (a class seen only in validation could
    never be learned, and small folders have such classes). ``class_counts`` int64 [C].
    """
    scaled = class_counts * total  # integers: ideal_c = scaled_c / n exactly
    n = int(class_counts.sum())
    counts = scaled // n
    floors, remainders = counts.tolist(), (scaled % n).tolist()
    for _ in range(total - int(counts.sum())):
        # The next image comes from a class that keeps one, else from any class with one left; among those,
        # first the classes still at their floor, then the largest remainder, then the lower index.
        for limit in (class_counts - 1, class_counts):
            able = [c for c in range(len(counts)) if counts[c] < limit[c]]
            if able:
                c = min(able, key=lambda c: (counts[c] > floors[c], -remainders[c], c))
                counts[c] += 1
                break
    return counts


def stratified_holdout(labels: torch.Tensor, num_classes: int, size: int,
                       gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(held out, kept)`` of ``labels`` [N]: ``size`` of them held out in class proportions
    (:func:`stratified_counts`), chosen at random within each class by ``gen``; both in random order."""
    order = torch.randperm(len(labels), generator=gen)
    ranked = labels[order]
    per_class = torch.bincount(labels, minlength=num_classes)
    quota = stratified_counts(per_class, size)
    # Each image's place among its class in the random order: the first quota[c] of class c are held out.
    grouped = torch.argsort(ranked, stable=True)
    class_start = per_class.cumsum(0) - per_class
    place = torch.empty_like(order)
    place[grouped] = torch.arange(len(order)) - class_start[ranked[grouped]]
    held = place < quota[ranked]
    return order[held], order[~held]


def one_per_class(labels: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Indices [C] of one image of each class present in ``labels`` [N], drawn at random (seeded), in class
    order: a sample for figures that shows every class (the splits are often sorted by class)."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    first = {}
    for index in order.tolist():
        first.setdefault(int(labels[index]), index)
    return torch.tensor([first[label] for label in sorted(first)], dtype=torch.long)


def channel_stats(images: torch.Tensor, chunk: int = 5000) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images [N, 3, H, W], in [0, 1] units."""
    if len(images) == 0:
        raise DataError("cannot compute normalisation statistics of an empty training split")
    total = torch.zeros(3, dtype=torch.float64)
    total_sq = torch.zeros(3, dtype=torch.float64)
    for start in range(0, len(images), chunk):
        x = images[start:start + chunk].to(torch.float64) / 255
        total += x.sum(dim=(0, 2, 3))
        total_sq += (x * x).sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(0).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


# ------------------------------------------------------------------------------------------ transforms


def augmentation_ops(name: str) -> list:
    """The random transforms of a named augmentation (uint8 tensor in, uint8 tensor out), with the settings
    of ``cifar_utils.preprocessing``."""
    from torchvision.transforms import v2

    def flip():
        return v2.RandomHorizontalFlip(spec.FLIP_PROBABILITY)

    ops = {
        "affine_jitter": lambda: [
            v2.RandomAffine(degrees=spec.AFFINE_DEGREES, translate=(spec.AFFINE_TRANSLATE,) * 2,
                            scale=spec.AFFINE_SCALE),
            v2.ColorJitter(brightness=spec.JITTER_BRIGHTNESS, contrast=spec.JITTER_CONTRAST,
                           saturation=spec.JITTER_SATURATION, hue=spec.JITTER_HUE),
            flip(),
        ],
        "crop_flip": lambda: [v2.RandomCrop(IMAGE_SIZE, padding=spec.CROP_PADDING), flip()],
        "resized_crop_flip": lambda: [
            v2.RandomResizedCrop(IMAGE_SIZE, scale=spec.RESIZED_CROP_SCALE, ratio=spec.RESIZED_CROP_RATIO,
                                 antialias=True),
            flip(),
        ],
        "none": lambda: [],
    }
    if name not in ops:
        raise ConfigError(f"unknown augmentation {name!r}; choose one of {', '.join(ops)}")
    return ops[name]()


def build_transform(augmentation: str, mean: Sequence[float], std: Sequence[float]):
    """uint8 [3, H, W] -> normalised float32 [3, H, W], with ``augmentation`` applied first."""
    from torchvision.transforms import v2

    return v2.Compose([*augmentation_ops(augmentation), v2.ToDtype(torch.float32, scale=True),
                       spec.Normalize(mean, std)])


class TensorImageDataset(Dataset):
    """Items ``(transform(images[i]), labels[i])`` from an :class:`ImageSet`."""

    def __init__(self, imageset: ImageSet, transform):
        self.imageset, self.transform = imageset, transform

    def __len__(self) -> int:
        return len(self.imageset)

    def __getitem__(self, index: int):
        return self.transform(self.imageset.images[index]), self.imageset.labels[index]


def drops_last_batch(asked: bool, images: int, batch: int) -> bool:
    """Whether a training epoch of ``images`` in batches of ``batch`` leaves out its last partial batch: when
    ``asked`` (drop_last), unless it is the only batch, and always a last batch of one image, on which
    BatchNorm cannot train. Both training loaders (torchvision and GPU pipelines) follow it."""
    return (asked and images >= batch) or (images % batch == 1 and images > 1)


def training_batches(images: int, batch: int, drop_last: bool) -> int:
    """Mini-batches in a training epoch of ``images`` in batches of ``batch`` (:func:`drops_last_batch`)."""
    full, remainder = divmod(images, batch)
    return full + (remainder > 0 and not drops_last_batch(drop_last, images, batch))


def pad_to_multiple(order: torch.Tensor, multiple: int) -> torch.Tensor:
    """``order`` padded with its own start to a length divisible by ``multiple``, as ``DistributedSampler``
    pads, so that every rank gets as many positions (repeated whole when it is shorter than the padding)."""
    extra = -len(order) % multiple
    if not extra:
        return order
    return order.repeat(math.ceil((len(order) + extra) / len(order)))[:len(order) + extra]


def rank_share(size: int, num_replicas: int, rank: int) -> int:
    """How many of ``size`` positions rank ``rank`` of ``num_replicas`` reads, leaving out the padding of
    :func:`pad_to_multiple` (which, when a rank gets any, is that rank's last position)."""
    return len(range(rank, size, num_replicas))


class ShardedShuffleSampler(Sampler[int]):
    """Seeded per-epoch shuffling, sharded across ranks, that can start part-way through an epoch.

    Epoch ``e`` is a permutation drawn from ``seed`` and ``e`` alone, so a resumed run sees the same
    order. With ``num_replicas`` ranks, the permutation is padded to a multiple of the rank count (as
    ``DistributedSampler`` does) and rank ``r`` takes every ``num_replicas``-th index from ``r``.
    ``skip`` drops the first indices of this rank's share, to resume mid-epoch.
    """

    def __init__(self, size: int, seed: int = 0, shuffle: bool = True, num_replicas: int = 1, rank: int = 0):
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def indices(self) -> torch.Tensor:
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.size, generator=gen)
        else:
            order = torch.arange(self.size)
        return pad_to_multiple(order, self.num_replicas)[self.rank::self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.skip:].tolist())

    @property
    def unpadded_size(self) -> int:
        """The indices left to yield that are not padding; they come first."""
        return max(0, rank_share(self.size, self.num_replicas, self.rank) - self.skip)

    def __len__(self) -> int:
        return max(0, math.ceil(self.size / self.num_replicas) - self.skip)  # a checkpoint after the last batch skips all


def default_num_workers(device: torch.device) -> int:
    # On the CPU, workers compete with the model for the same cores; on a GPU they hide augmentation.
    if device.type != "cuda":
        return 0
    return min(8, os.cpu_count() or 1)


def _ignore_ctrl_c(worker_id: int) -> None:
    """Worker processes ignore Ctrl-C, which a terminal (and Jupyter's interrupt) sends to every process of the
    job: the training process handles it, and finishing its current step needs the batches of live workers.
    SIGTERM still ends them: it is how Python stops its worker processes at exit."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_dataloader(imageset: ImageSet, transform, batch_size: int, device: torch.device,
                    sampler: Optional[Sampler] = None, num_workers: Optional[int] = None,
                    generator: Optional[torch.Generator] = None, drop_last: bool = False) -> DataLoader:
    """A DataLoader over ``imageset``; ``sampler`` None means in order (for evaluation).

    ``generator`` seeds the workers without drawing from the global RNG, so that with no workers (the CPU
    default) a resumed run's augmentations equal an uninterrupted run's. Worker processes draw their
    seeds when first started, so with workers a resumed run sees the same order, other augmentations.
    """
    workers = default_num_workers(device) if num_workers is None else num_workers
    return DataLoader(TensorImageDataset(imageset, transform), batch_size=batch_size, sampler=sampler,
                      shuffle=False, num_workers=workers, pin_memory=device.type == "cuda",
                      persistent_workers=workers > 0, drop_last=drop_last, worker_init_fn=_ignore_ctrl_c,
                      generator=generator or torch.Generator().manual_seed(0))
