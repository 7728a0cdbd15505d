"""Shared fixtures: tiny synthetic data, and a small real subset of the offline JPEG copy.

The JPEG copy is looked for at ``$CIFAR10_JPEG_ARCHIVE``, then ``../shared/data/cifar10-jpeg.tar.gz``
beside the repository, then as the extracted folder at ``$CIFAR10_ROOT`` (what ``.ci/run`` keeps when the
archive is gone); tests that need it are skipped when none is there.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cifar_utils.data import synthetic_dataset

REPO = Path(__file__).resolve().parents[1]
torch.set_num_threads(min(2, torch.get_num_threads()))
# precision="auto" remembers its CPU measurement per machine (cifar_utils.device.precision_cache_path): the
# tests, and the processes they start, keep theirs in a folder of their own rather than the user's cache.
_CACHE = tempfile.TemporaryDirectory(prefix="cifar-utils-test-cache-")
os.environ["CIFAR_UTILS_CACHE"] = _CACHE.name


def jpeg_archive() -> Path | None:
    candidates = [os.environ.get("CIFAR10_JPEG_ARCHIVE"), REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def extracted_jpeg_root() -> Path | None:
    root = os.environ.get("CIFAR10_ROOT")
    return Path(root) if root and (Path(root) / "train").is_dir() and (Path(root) / "test").is_dir() else None


@pytest.fixture(scope="session")
def jpeg_subset_root(tmp_path_factory) -> Path:
    """An image folder with the first 120 training and 40 test images of each class of the JPEG copy (in
    the archive's order, or by file name from an extracted copy)."""
    archive, extracted = jpeg_archive(), extracted_jpeg_root()
    if archive is None and extracted is None:
        pytest.skip("the offline CIFAR-10 JPEG copy is absent (no ../shared/data/cifar10-jpeg.tar.gz, no $CIFAR10_ROOT)")
    out = tmp_path_factory.mktemp("jpeg")
    limits = {"train": 120, "test": 40}
    if archive is None:
        for split, count in limits.items():
            for folder in sorted(p for p in (extracted / split).iterdir() if p.is_dir()):
                (out / split / folder.name).mkdir(parents=True)
                for image in sorted(folder.iterdir())[:count]:
                    shutil.copy2(image, out / split / folder.name / image.name)
        return out
    taken: Counter = Counter()
    with tarfile.open(archive) as tar:
        for member in tar:
            parts = Path(member.name).parts  # cifar10-jpeg/<split>/<class>/<file>
            if not member.isfile() or len(parts) != 4:
                continue
            split, cls = parts[1], parts[2]
            if taken[split, cls] < limits.get(split, 0):
                taken[split, cls] += 1
                member.name = "/".join(parts[1:])
                tar.extract(member, out, filter="data")
    return out


@pytest.fixture(scope="session")
def synthetic():
    """600 training and 200 test synthetic images of 10 classes."""
    return synthetic_dataset(600, 200, seed=0)


@pytest.fixture(scope="session")
def noise_folder(tmp_path_factory):
    """``noise_folder(train, test)``: a new image folder of random 32x32 PNGs (10 classes, ``train`` and
    ``test`` images per class, the same pixels on every call); returns its root."""
    def make(train: int, test: int) -> Path:
        root = tmp_path_factory.mktemp("noise")
        rng = np.random.default_rng(0)
        for split, per_class in (("train", train), ("test", test)):
            for label in range(10):
                folder = root / split / f"class{label}"
                folder.mkdir(parents=True)
                for index in range(per_class):
                    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{index}.png")
        return root
    return make
