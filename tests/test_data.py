"""Data: the three sources, the decode cache, root resolution, the mocked download, splits, transforms, sampler."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cifar_utils import data
from cifar_utils.config import Config
from cifar_utils.preprocessing import AUGMENTATIONS
from cifar_utils.data import (CACHE_NAME, FIXED_MEAN, FIXED_STD, CifarData, ImageSet, ShardedShuffleSampler,
                              augmentation_ops, build_transform, channel_stats, default_num_workers, load_dataset,
                              load_image_folder, load_torchvision_cifar10, make_dataloader, make_splits, resolve_root,
                              synthetic_dataset)
from cifar_utils.errors import ConfigError, DataError

RED, GREEN, BLUE = (200, 10, 30), (10, 200, 30), (20, 40, 220)


def solid(colour, size=(32, 32), mode="RGB"):
    return Image.new(mode, size, colour)


def write_small_folder(root: Path) -> Path:
    """train: cat = [a.png red, b.jpg green, c.png 40x48 blue]; dog = [d.png gray, e.bmp red]; test: one each."""
    (root / "train" / "cat").mkdir(parents=True)
    (root / "train" / "dog").mkdir(parents=True)
    (root / "test" / "cat").mkdir(parents=True)
    (root / "test" / "dog").mkdir(parents=True)
    solid(RED).save(root / "train" / "cat" / "a.png")
    solid(GREEN).save(root / "train" / "cat" / "b.jpg", quality=95)
    solid(BLUE, size=(40, 48)).save(root / "train" / "cat" / "c.png")
    solid(77, mode="L").save(root / "train" / "dog" / "d.png")
    solid(RED).save(root / "train" / "dog" / "e.bmp")
    (root / "train" / "dog" / "notes.txt").write_text("not an image")
    solid(BLUE).save(root / "test" / "cat" / "f.png")
    solid(GREEN).save(root / "test" / "dog" / "g.png")
    return root


def write_uniform_folder(root: Path, classes=("a", "b", "c"), per_class=2) -> Path:
    for split in ("train", "test"):
        for i, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for j in range(per_class):
                solid((10 * i, 10 * j, 5)).save(root / split / name / f"{j}.png")
    return root


# ------------------------------------------------------------------------------------------ sources


def test_synthetic_source():
    d = load_dataset(source="synthetic", synthetic_size=(50, 20), seed=3)
    assert d.source == "synthetic"
    assert d.train.images.shape == (50, 3, 32, 32) and d.train.images.dtype == torch.uint8
    assert d.test.images.shape == (20, 3, 32, 32)
    assert d.train.labels.dtype == torch.int64
    assert d.train.class_counts() == [5] * 10 and d.test.class_counts() == [2] * 10
    assert d.classes == [f"class{i}" for i in range(10)]
    again = synthetic_dataset(50, 20, seed=3)
    assert torch.equal(again.train.images, d.train.images) and torch.equal(again.train.labels, d.train.labels)
    assert not torch.equal(synthetic_dataset(50, 20, seed=4).train.images, d.train.images)
    assert d.train.images.float().std() > 10  # not a blank image set


def test_synthetic_classes_differ_in_mean_colour(synthetic):
    means = torch.stack([synthetic.train.images[synthetic.train.labels == c].float().mean(dim=(0, 2, 3))
                         for c in range(10)])
    distances = torch.cdist(means, means) + torch.eye(10) * 1e9
    assert distances.min() > 1.0  # every pair of classes is separable by colour alone


def test_image_folder_source_converts_and_resizes(tmp_path):
    root = write_small_folder(tmp_path / "imgs")
    with pytest.warns(UserWarning, match="resized 1 image"):
        d = load_dataset(root)
    assert d.source == "folder" and str(root) in d.description
    assert d.classes == ["cat", "dog"]
    assert d.train.images.shape == (5, 3, 32, 32) and d.train.images.dtype == torch.uint8
    assert d.test.images.shape == (2, 3, 32, 32)
    assert d.train.labels.tolist() == [0, 0, 0, 1, 1]
    assert d.test.labels.tolist() == [0, 1]
    images = d.train.images
    assert (images[0] == torch.tensor(RED).view(3, 1, 1)).all()  # PNG: exact
    assert (images[1].int() - torch.tensor(GREEN).view(3, 1, 1)).abs().max() <= 4  # JPEG: close
    assert (images[2] == torch.tensor(BLUE).view(3, 1, 1)).all()  # resized from 40x48, still solid blue
    assert (images[3] == 77).all()  # grayscale, converted to three equal channels
    assert (images[4] == torch.tensor(RED).view(3, 1, 1)).all()  # BMP


def test_image_folder_with_any_number_of_classes(tmp_path):
    d = load_dataset(write_uniform_folder(tmp_path / "three", classes=("x", "y", "z"), per_class=3))
    assert d.classes == ["x", "y", "z"]
    assert d.train.class_counts() == [3, 3, 3]
    splits = make_splits(d, validation_split=2, seed=0)
    assert len(splits.train) == 7 and len(splits.validation) == 2 and len(splits.test) == 9


def test_image_folder_rejects_mismatched_class_folders(tmp_path):
    root = write_uniform_folder(tmp_path / "m", classes=("a", "b"))
    (root / "test" / "b").rename(root / "test" / "c")
    with pytest.raises(DataError, match="only in train: \\['b'\\]"):
        load_dataset(root)


# -------------------------------------------------------------------------------------------- cache


def test_cache_is_written_next_to_the_data_and_reused(tmp_path, monkeypatch):
    root = write_uniform_folder(tmp_path / "imgs")
    first = load_dataset(root)
    cache = root / CACHE_NAME
    assert cache.is_file()
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == [CACHE_NAME]  # no temporary files left

    def must_not_decode(*args, **kwargs):
        raise AssertionError("the second load decoded the images instead of using the cache")

    monkeypatch.setattr(data, "_decode_split", must_not_decode)
    second = load_dataset(root)
    assert torch.equal(second.train.images, first.train.images)
    assert torch.equal(second.test.labels, first.test.labels)
    assert second.classes == first.classes


def test_cache_is_invalidated_when_a_file_changes(tmp_path, monkeypatch):
    root = write_uniform_folder(tmp_path / "imgs")
    load_dataset(root)
    decodes = []
    original = data._decode_split

    def counting(*args, **kwargs):
        decodes.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(data, "_decode_split", counting)
    changed = root / "train" / "b" / "1.png"
    stat = changed.stat()
    solid((250, 251, 252)).save(changed)
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    reloaded = load_dataset(root)
    assert decodes, "a changed file did not invalidate the cache"
    assert (reloaded.train.images[3] == torch.tensor([250, 251, 252]).view(3, 1, 1)).all()
    decodes.clear()
    load_dataset(root)
    assert not decodes  # the rebuilt cache is used again

    solid((1, 2, 3)).save(root / "train" / "a" / "9.png")  # a new file
    assert len(load_dataset(root).train) == 7
    assert decodes


def test_cache_write_is_atomic(tmp_path, monkeypatch):
    """A failure while writing the cache leaves no cache (and no partial file) behind; the load still works."""
    root = write_uniform_folder(tmp_path / "imgs")
    real_save = torch.save

    def failing_save(obj, path, *args, **kwargs):
        Path(path).write_bytes(b"half a cache")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.warns(UserWarning, match="could not write the decode cache"):
        d = load_dataset(root)
    assert len(d.train) == 6
    assert not (root / CACHE_NAME).exists()
    assert not [p for p in root.iterdir() if p.name.startswith(".")]
    monkeypatch.setattr(torch, "save", real_save)
    load_dataset(root)
    assert (root / CACHE_NAME).is_file()


def test_a_corrupt_cache_is_rebuilt(tmp_path):
    root = write_uniform_folder(tmp_path / "imgs")
    first = load_dataset(root)
    (root / CACHE_NAME).write_bytes(b"garbage")
    again = load_dataset(root)
    assert torch.equal(again.train.images, first.train.images)
    assert (root / CACHE_NAME).stat().st_size > 100


def test_cache_goes_elsewhere_when_the_data_folder_is_read_only(tmp_path, monkeypatch):
    root = write_uniform_folder(tmp_path / "imgs")
    elsewhere = tmp_path / "cache"
    monkeypatch.setenv("CIFAR_UTILS_CACHE", str(elsewhere))
    monkeypatch.setattr(data.os, "access", lambda path, mode: False)
    load_image_folder(root)
    assert not (root / CACHE_NAME).exists()
    assert len(list(elsewhere.glob(f"*{CACHE_NAME}"))) == 1


# -------------------------------------------------------------------------------- root resolution


def test_root_resolution_order(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR10_ROOT", str(tmp_path / "env"))
    assert resolve_root(tmp_path / "arg") == (tmp_path / "arg", "--data-root (data_root)")
    assert resolve_root() == (tmp_path / "env", "the CIFAR10_ROOT environment variable")
    monkeypatch.delenv("CIFAR10_ROOT")
    assert resolve_root() == (Path("data"), "the default ./data")


def test_load_dataset_uses_argument_then_env_then_dot_data(tmp_path, monkeypatch):
    write_uniform_folder(tmp_path / "work" / "data", classes=("d1", "d2"))
    write_uniform_folder(tmp_path / "env_root", classes=("e1", "e2", "e3"))
    write_uniform_folder(tmp_path / "arg_root", classes=("a1", "a2", "a3", "a4"))
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.delenv("CIFAR10_ROOT", raising=False)
    assert load_dataset().classes == ["d1", "d2"]
    monkeypatch.setenv("CIFAR10_ROOT", str(tmp_path / "env_root"))
    assert load_dataset().classes == ["e1", "e2", "e3"]
    assert load_dataset(tmp_path / "arg_root").classes == ["a1", "a2", "a3", "a4"]
    assert load_dataset(str(tmp_path / "arg_root")).classes == ["a1", "a2", "a3", "a4"]


def test_no_data_gives_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CIFAR10_ROOT", raising=False)
    with pytest.raises(DataError) as info:
        load_dataset()
    message = str(info.value)
    assert "data" in message and "does not exist" in message and "./data" in message
    assert "CIFAR10_ROOT" in message and "--data-root" in message and "--download" in message
    assert "\n" not in message

    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("CIFAR10_ROOT", str(tmp_path / "empty"))
    with pytest.raises(DataError, match="empty.*CIFAR10_ROOT environment variable.* is empty"):
        load_dataset()
    (tmp_path / "empty" / "stuff.txt").write_text("x")
    with pytest.raises(DataError, match="holds neither"):
        load_dataset()
    with pytest.raises(ConfigError, match="dataset='cifar-10' is not valid"):
        load_dataset(source="cifar-10")


def test_forcing_cifar10_on_an_image_folder_says_what_is_there(tmp_path):
    for split in ("train", "test"):
        (tmp_path / "folder" / split / "cat").mkdir(parents=True)
        Image.new("RGB", (32, 32)).save(tmp_path / "folder" / split / "cat" / "0.png")
    with pytest.raises(DataError) as info:
        load_dataset(tmp_path / "folder", source="cifar10")
    message = str(info.value)
    assert "holds an image folder" in message and "dataset='folder'" in message and "holds neither" not in message
    assert load_dataset(tmp_path / "folder").source == "folder"


# ---------------------------------------------------------------------- torchvision, download mocked


def fake_cifar_batches(folder: Path, per_batch: int = 4, test_size: int = 6) -> dict:
    """Write torchvision-format pickled batches; return the arrays written."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    written = {"train_data": [], "train_labels": []}
    for i in range(1, 6):
        arr = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [(i + j) % 10 for j in range(per_batch)]
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump({"batch_label": f"batch {i}", "data": arr, "labels": labels, "filenames": []}, f)
        written["train_data"].append(arr)
        written["train_labels"] += labels
    arr = rng.integers(0, 256, (test_size, 3072), dtype=np.uint8)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"batch_label": "test", "data": arr, "labels": list(range(test_size)), "filenames": []}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(data.CIFAR10_CLASSES), "num_cases_per_batch": per_batch}, f)
    written["test_data"], written["test_labels"] = arr, list(range(test_size))
    written["train_data"] = np.concatenate(written["train_data"])
    return written


@pytest.fixture
def mocked_torchvision(monkeypatch):
    """Replace torchvision's download with one that writes small fake batches; skip the md5 checks."""
    import torchvision.datasets.cifar as tv_cifar

    calls = {"download": [], "written": None}

    def fake_download(url, download_root, filename=None, md5=None, **kwargs):
        calls["download"].append(url)
        calls["written"] = fake_cifar_batches(Path(download_root) / "cifar-10-batches-py")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", fake_download)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))
    return calls


def test_torchvision_download_path_mocked(tmp_path, mocked_torchvision):
    root = tmp_path / "official"
    d = load_dataset(root, download=True)
    assert len(mocked_torchvision["download"]) == 1  # downloaded once, then reused for the test split
    assert "cifar-10-python.tar.gz" in mocked_torchvision["download"][0]
    written = mocked_torchvision["written"]
    assert d.source == "cifar10"
    assert d.classes == list(data.CIFAR10_CLASSES)
    assert d.train.images.shape == (20, 3, 32, 32) and d.train.images.dtype == torch.uint8
    assert d.test.images.shape == (6, 3, 32, 32)
    assert d.train.labels.tolist() == written["train_labels"]
    assert d.test.labels.tolist() == written["test_labels"]
    expected = torch.from_numpy(written["train_data"]).view(20, 3, 32, 32)  # CIFAR rows are channel-major
    assert torch.equal(d.train.images, expected)
    assert d.train.images.is_contiguous()

    again = load_dataset(root)  # auto-detected, no download
    assert again.source == "cifar10" and len(mocked_torchvision["download"]) == 1
    assert torch.equal(again.test.images, d.test.images)


def test_the_train_command_downloads_with_download(tmp_path, mocked_torchvision, monkeypatch, capsys):
    """The README's --download reaches torchvision through the CLI, and the run says which data it used."""
    import json

    from cifar_utils.cli import main

    monkeypatch.delenv("CIFAR10_ROOT", raising=False)
    root, out = tmp_path / "official", tmp_path / "run"
    code = main(["train", "--preset", "seed003", "--set", "model=resnet20", "--data-root", str(root), "--download",
                 "--epochs", "1", "--validation-split", "4", "--batch-size", "8", "--out", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert len(mocked_torchvision["download"]) == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split_sizes"] == {"train": 16, "validation": 4, "test": 6}
    assert metrics["data"] == f"official CIFAR-10 (torchvision) in {root}"


def test_the_data_copy_is_named_by_what_was_loaded_not_by_the_folder_it_lies_in():
    from cifar_utils.data import data_copy_kind

    assert data_copy_kind("official CIFAR-10 (torchvision) in data/cifar10-jpeg") == "official"  # --download there
    assert data_copy_kind("image folder data/cifar10-jpeg") == "jpeg"
    assert data_copy_kind("image folder /photos") == "folder" and data_copy_kind("synthetic") == "synthetic"


def test_an_unreadable_data_folder_or_checkpoint_is_one_clear_error(tmp_path, monkeypatch):
    """pathlib re-raises EACCES (another user's 0700 folder on a shared machine); root reads anything, so the
    refusal is simulated."""
    from pathlib import Path

    from cifar_utils import checkpoint
    from cifar_utils.data import load_dataset
    from cifar_utils.errors import CheckpointError, DataError

    locked = tmp_path / "theirs"
    locked.mkdir()
    is_dir = Path.is_dir

    def refusing(path):
        if locked in path.parents:
            raise PermissionError(13, "Permission denied", str(path))
        return is_dir(path)

    monkeypatch.setattr(Path, "is_dir", refusing)
    with pytest.raises(DataError, match="cannot read .*theirs/cifar-10-batches-py: Permission denied. Fix its"):
        load_dataset(str(locked))
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"PK")

    def no_read(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(checkpoint, "open", no_read, raising=False)
    with pytest.raises(CheckpointError, match="cannot read .*checkpoint.pt: Permission denied"):
        checkpoint.load_checkpoint(run / "checkpoint.pt")


def test_download_network_failure_gives_a_data_error(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", no_network)
    with pytest.raises(DataError) as info:
        load_dataset(tmp_path / "official", download=True)
    message = str(info.value)
    assert "download" in message and str(tmp_path / "official") in message
    assert "name resolution" in message
    assert "CIFAR10_ROOT" in message or "--data-root" in message
    assert info.value.__suppress_context__  # no chained urllib traceback


@pytest.mark.parametrize("raised, download, message", [
    (RuntimeError("File not found or corrupted."), True, "delete .*cifar-10-batches-py and the archive beside it"),
    (RuntimeError("Dataset not found or corrupted."), False, "run again with --download"),
    (PermissionError(13, "Permission denied"), True, "could not write CIFAR-10 .*Permission denied.*you can write to"),
])
def test_torchvision_failures_say_what_to_do_for_what_went_wrong(tmp_path, monkeypatch, raised, download, message):
    import torchvision

    def failing(*args, **kwargs):
        raise raised

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", failing)
    with pytest.raises(DataError, match=message) as info:
        load_torchvision_cifar10(tmp_path / "official", download=download)
    assert "Without internet" not in str(info.value)


def test_corrupt_torchvision_batches_give_a_data_error(tmp_path):
    folder = tmp_path / "official" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    (folder / "data_batch_1").write_bytes(b"junk")
    with pytest.raises(DataError, match="could not read CIFAR-10"):
        load_dataset(tmp_path / "official")


# -------------------------------------------------------------------------------------------- splits


def numbered_data(n_train=300, n_test=80) -> CifarData:
    """Images whose first two pixels encode their index, so subsets can be traced back."""
    def make(n, offset):
        images = torch.zeros(n, 3, 32, 32, dtype=torch.uint8)
        ids = torch.arange(n) + offset
        images[:, 0, 0, 0] = (ids % 256).to(torch.uint8)
        images[:, 0, 0, 1] = (ids // 256).to(torch.uint8)
        images[:, 1:] = torch.randint(0, 256, (n, 2, 32, 32), generator=torch.Generator().manual_seed(offset))
        return ImageSet(images, ids % 10, [str(c) for c in range(10)])

    return CifarData(make(n_train, 0), make(n_test, 1000), "synthetic", "numbered")


def ids(imageset: ImageSet) -> list[int]:
    return (imageset.images[:, 0, 0, 0].long() + 256 * imageset.images[:, 0, 0, 1].long()).tolist()


def test_splits_are_seeded_disjoint_and_sized():
    d = numbered_data()
    s = make_splits(d, validation_split=50, seed=1)
    train, val, test = ids(s.train), ids(s.validation), ids(s.test)
    assert (len(train), len(val), len(test)) == (250, 50, 80)
    assert not set(train) & set(val)
    assert sorted(train + val) == list(range(300))
    assert sorted(test) == list(range(1000, 1080))
    assert s.train.labels.tolist() == [i % 10 for i in train]  # labels travel with their images
    again = make_splits(d, validation_split=50, seed=1)
    assert ids(again.validation) == val and ids(again.train) == train
    other = make_splits(d, validation_split=50, seed=2)
    assert set(ids(other.validation)) != set(val)


def test_train_and_eval_limits_take_seeded_subsets():
    d = numbered_data()
    full = make_splits(d, validation_split=50, seed=1)
    s = make_splits(d, validation_split=50, seed=1, train_limit=40, validation_limit=20, test_limit=20)
    assert (len(s.train), len(s.validation), len(s.test)) == (40, 20, 20)
    assert set(ids(s.train)) < set(ids(full.train))
    assert set(ids(s.validation)) < set(ids(full.validation))
    assert len(set(ids(s.test))) == 20 and set(ids(s.test)) < set(range(1000, 1080))
    assert ids(make_splits(d, validation_split=50, seed=1, train_limit=40, validation_limit=20, test_limit=20).train) == ids(s.train)
    assert ids(make_splits(d, validation_split=50, seed=3, train_limit=40).train) != ids(s.train)


def test_each_limited_split_is_drawn_independently_of_the_other_limits():
    d = numbered_data()
    alone = make_splits(d, validation_split=50, seed=1, validation_limit=20, test_limit=20)
    for other in (dict(train_limit=40), dict(train_limit=10), dict(train_limit=40, validation_limit=7)):
        s = make_splits(d, validation_split=50, seed=1, **{**dict(validation_limit=20, test_limit=20), **other})
        assert ids(s.test) == ids(alone.test), other  # runs that differ in train_limit score the same images
        if "validation_limit" not in other:
            assert ids(s.validation) == ids(alone.validation), other
    assert ids(make_splits(d, validation_split=50, seed=2, test_limit=20).test) != ids(alone.test)


def labelled_data(class_sizes, n_test=20) -> CifarData:
    """Numbered images whose training labels come in blocks of ``class_sizes`` (imbalanced when they differ)."""
    d = numbered_data(sum(class_sizes), n_test)
    labels = torch.cat([torch.full((size,), c) for c, size in enumerate(class_sizes)])
    train = ImageSet(d.train.images, labels, [str(c) for c in range(len(class_sizes))])
    return CifarData(train, ImageSet(d.test.images, d.test.labels % len(class_sizes), train.classes), "synthetic", "labelled")


@pytest.mark.parametrize("class_sizes, held_out", [
    ((30,) * 10, 50),  # balanced: exactly 5 per class
    ((5000,) * 10, 4999),  # balanced, a total that does not divide: 9 classes of 500 and one of 499
    ((400, 250, 97, 31, 7, 3, 1), 123),  # imbalanced, with classes too small for even one image
    ((1000, 10), 300),
])
def test_validation_split_is_stratified_by_class(class_sizes, held_out):
    d = labelled_data(class_sizes)
    s = make_splits(d, validation_split=held_out, seed=4)
    counts = torch.tensor(s.validation.class_counts(), dtype=torch.float64)
    ideal = torch.tensor(class_sizes, dtype=torch.float64) * held_out / sum(class_sizes)
    assert int(counts.sum()) == len(s.validation) == held_out
    assert (counts - ideal).abs().max() < 1, (counts.tolist(), ideal.tolist())
    train, val = ids(s.train), ids(s.validation)
    assert not set(train) & set(val) and sorted(train + val) == list(range(sum(class_sizes)))
    assert s.validation.labels.tolist() == d.train.labels[val].tolist()  # labels travel with their images
    assert "stratified by class" in s.held_out


def test_stratified_split_is_seeded():
    d = labelled_data((400, 250, 97, 31, 7, 3, 1))
    first = make_splits(d, validation_split=80, seed=1)
    again = make_splits(d, validation_split=80, seed=1)
    other = make_splits(d, validation_split=80, seed=2)
    assert ids(again.validation) == ids(first.validation) and ids(again.train) == ids(first.train)
    assert set(ids(other.validation)) != set(ids(first.validation))
    assert other.validation.class_counts() == first.validation.class_counts()  # the counts depend on the labels alone


def test_stratified_counts_round_to_the_exact_total():
    sizes = torch.tensor([3, 3, 3])  # each ideal is 1/3 of 2: two classes get 1, the first ones (ties to the lower index)
    assert data.stratified_counts(sizes, 2).tolist() == [1, 1, 0]
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        sizes = torch.randint(1, 60, (int(torch.randint(2, 12, (1,), generator=gen)),), generator=gen)
        total = int(torch.randint(0, int(sizes.sum()), (1,), generator=gen))
        counts = data.stratified_counts(sizes, total)
        assert int(counts.sum()) == total
        assert ((counts - sizes * total / sizes.sum()).abs() < 1).all() and (counts <= sizes).all()


def test_split_sizes_match_the_splits_make_splits_draws():
    full = data.synthetic_dataset(*data.CIFAR10_SIZES.values(), seed=0)
    for config in (Config(), Config(validation_split=0), Config(validation_split=2_000, train_limit=1_000),
                   Config(validation_limit=300, test_limit=700)):
        splits = make_splits(full, config.validation_split, train_limit=config.train_limit,
                             validation_limit=config.validation_limit, test_limit=config.test_limit)
        assert data.split_sizes(config) == (len(splits.train), len(splits.validation), len(splits.test))
    assert data.split_sizes(Config()) == (45_000, 5_000, 10_000)


def test_validation_split_zero_trains_on_every_training_image():
    d = numbered_data()
    s = make_splits(d, validation_split=0, seed=1, validation_limit=10)
    assert len(s.validation) == 0 and tuple(s.validation.images.shape) == (0, 3, 32, 32)
    assert sorted(ids(s.train)) == list(range(300)) and len(s.test) == 80
    assert s.held_out.startswith("no validation")
    assert len(make_splits(d, validation_split=0, seed=1, train_limit=300).train) == 300


def test_split_errors():
    d = numbered_data(30, 10)
    with pytest.raises(DataError, match="validation_split=30"):
        make_splits(d, validation_split=30)
    with pytest.raises(DataError, match="train_limit=25"):
        make_splits(d, validation_split=10, train_limit=25)
    with pytest.raises(ConfigError, match="normalization='train-stats' is not valid; choose one of fixed, train_stats"):
        make_splits(d, validation_split=10, normalization="train-stats")


def test_normalisation_statistics_come_from_the_training_split(synthetic):
    s = make_splits(synthetic, validation_split=100, seed=0, train_limit=300, normalization="train_stats")
    pixels = s.train.images.double() / 255
    mean = pixels.mean(dim=(0, 2, 3))
    std = pixels.std(dim=(0, 2, 3), unbiased=False)
    np.testing.assert_allclose(s.mean, mean.numpy(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(s.std, std.numpy(), rtol=0, atol=1e-9)
    everything = synthetic.train.images.double() / 255
    assert not np.allclose(s.mean, everything.mean(dim=(0, 2, 3)).numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(channel_stats(s.train.images, chunk=7), channel_stats(s.train.images), atol=1e-12)
    fixed = make_splits(synthetic, validation_split=100, seed=0)
    assert (fixed.mean, fixed.std) == (FIXED_MEAN, FIXED_STD) == ((0.5,) * 3, (0.5,) * 3)


# --------------------------------------------------------------------------------------- transforms


@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_each_augmentation_keeps_shape_and_dtype(name, synthetic):
    image = synthetic.train.images[0]
    for op in augmentation_ops(name):
        image = op(image)
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8
    transform = build_transform(name, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    out = transform(synthetic.train.images[0])
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    torch.manual_seed(5)
    first = transform(synthetic.train.images[1])
    torch.manual_seed(5)
    assert torch.equal(transform(synthetic.train.images[1]), first)  # seeded


def test_no_augmentation_is_exact_normalisation(synthetic):
    image = synthetic.train.images[3]
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    out = build_transform("none", mean, std)(image)
    expected = (image.float() / 255 - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("name", [a for a in AUGMENTATIONS if a != "none"])
def test_random_augmentations_change_the_image(name, synthetic):
    image = synthetic.train.images[0]
    plain = build_transform("none", FIXED_MEAN, FIXED_STD)(image)
    transform = build_transform(name, FIXED_MEAN, FIXED_STD)
    torch.manual_seed(0)
    assert any(not torch.equal(transform(image), plain) for _ in range(5))


def test_augmentation_parameters_follow_the_reports():
    from torchvision.transforms import v2

    affine, jitter, flip = augmentation_ops("affine_jitter")
    assert isinstance(affine, v2.RandomAffine) and list(affine.degrees) == [-15, 15]
    assert tuple(affine.translate) == (0.1, 0.1) and tuple(affine.scale) == (0.9, 1.1)
    assert isinstance(jitter, v2.ColorJitter) and tuple(jitter.brightness) == pytest.approx((0.8, 1.2))
    assert tuple(jitter.hue) == pytest.approx((-0.1, 0.1))
    assert isinstance(flip, v2.RandomHorizontalFlip)
    crop, flip = augmentation_ops("crop_flip")
    assert isinstance(crop, v2.RandomCrop) and list(crop.padding) == [4, 4, 4, 4]
    assert isinstance(flip, v2.RandomHorizontalFlip)
    resized, flip = augmentation_ops("resized_crop_flip")
    assert isinstance(resized, v2.RandomResizedCrop)
    assert tuple(resized.scale) == (0.8, 1.0) and tuple(resized.ratio) == (0.9, 1.1)
    assert augmentation_ops("none") == []
    with pytest.raises(ConfigError, match="crop_flip"):
        augmentation_ops("mixup")


def test_each_augmentation_is_described_from_the_settings_it_runs_with(monkeypatch):
    from cifar_utils import preprocessing

    assert "rotation of up to 15 degrees, shift of up to 10%" in preprocessing.describe_augmentation("affine_jitter")
    assert "80% to 100% of the area" in preprocessing.describe_augmentation("resized_crop_flip")
    monkeypatch.setattr(preprocessing, "CROP_PADDING", 6)  # the text follows the constant, never restates it
    assert "padded by 6 pixels" in preprocessing.describe_augmentation("crop_flip")
    assert {name for name in preprocessing.AUGMENTATIONS if preprocessing.describe_augmentation(name)} == set(
        preprocessing.AUGMENTATIONS)


# ------------------------------------------------------------------------------------------ sampler


def test_sampler_is_a_seeded_permutation_per_epoch():
    sampler = ShardedShuffleSampler(10, seed=3)
    sampler.set_epoch(0)
    epoch0 = list(sampler)
    assert sorted(epoch0) == list(range(10)) and epoch0 != list(range(10))
    assert len(sampler) == 10
    fresh = ShardedShuffleSampler(10, seed=3)
    fresh.set_epoch(0)
    assert list(fresh) == epoch0
    sampler.set_epoch(1)
    assert list(sampler) != epoch0 and sorted(sampler) == list(range(10))
    other = ShardedShuffleSampler(10, seed=4)
    assert list(other) != epoch0
    assert list(ShardedShuffleSampler(10, shuffle=False)) == list(range(10))


def test_sampler_skip_resumes_part_way():
    sampler = ShardedShuffleSampler(10, seed=3)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_epoch(2, skip=4)
    assert list(sampler) == full[4:]
    assert len(sampler) == 6


@pytest.mark.parametrize("size, world", [(12, 3), (12, 4), (10, 3), (7, 2)])
def test_sampler_shards_are_disjoint_and_cover_everything(size, world):
    shards = []
    for rank in range(world):
        sampler = ShardedShuffleSampler(size, seed=1, num_replicas=world, rank=rank)
        sampler.set_epoch(5)
        shards.append(list(sampler))
        assert len(shards[-1]) == len(sampler) == -(-size // world)  # equal shares, as DistributedSampler
    everything = [i for shard in shards for i in shard]
    assert set(everything) == set(range(size))
    padding = len(everything) - size
    assert padding == -(-size // world) * world - size
    assert len(everything) - len(set(everything)) == padding  # only the padding repeats
    if size % world == 0:
        for a in range(world):
            for b in range(a + 1, world):
                assert not set(shards[a]) & set(shards[b])
    # All ranks cut the same permutation: interleaving the shards gives the single-process order.
    single = ShardedShuffleSampler(size, seed=1)
    single.set_epoch(5)
    interleaved = [shards[r][i] for i in range(len(shards[0])) for r in range(world)]
    assert interleaved[:size] == list(single)


@pytest.mark.parametrize("size, world", [(2, 8), (1, 3), (3, 8)])
def test_sets_smaller_than_the_rank_count_are_repeated_to_fill_every_rank(size, world):
    padded = data.pad_to_multiple(torch.arange(size), world)
    assert len(padded) == world * -(-size // world) and set(padded.tolist()) == set(range(size))
    assert [len(list(ShardedShuffleSampler(size, seed=0, num_replicas=world, rank=r))) for r in range(world)] == \
        [-(-size // world)] * world


# ------------------------------------------------------------------------------------------ loaders


def test_dataloader_batches_and_workers(synthetic):
    cpu = torch.device("cpu")
    assert default_num_workers(cpu) == 0
    assert default_num_workers(torch.device("cuda")) == min(8, os.cpu_count() or 1)
    loader = make_dataloader(synthetic.test, build_transform("none", FIXED_MEAN, FIXED_STD), 64, cpu)
    assert loader.num_workers == 0 and not loader.pin_memory
    batches = list(loader)
    assert [len(y) for _, y in batches] == [64, 64, 64, 8]
    x, y = batches[0]
    assert x.shape == (64, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(torch.cat([y for _, y in batches]), synthetic.test.labels)  # in order


def test_dataloader_workers_outlive_the_ctrl_c_that_stops_the_run(synthetic):
    # A terminal's Ctrl-C reaches every process of the job; the training process finishes its step with
    # batches from its workers, so they must not die of it first.
    loader = make_dataloader(synthetic.test, build_transform("none", FIXED_MEAN, FIXED_STD), 8, torch.device("cpu"),
                             num_workers=1)
    batches = iter(loader)
    next(batches)
    worker = loader._iterator._workers[0]
    os.kill(worker.pid, signal.SIGINT)
    assert sum(len(y) for _, y in batches) == len(synthetic.test) - 8
    assert worker.is_alive()


def test_a_process_with_live_dataloader_workers_still_exits(tmp_path):
    # Python stops worker processes at exit with SIGTERM: a worker that ignored it would hang the exit forever.
    script = tmp_path / "live_workers.py"
    script.write_text(textwrap.dedent("""
        import torch
        from cifar_utils.data import build_transform, make_dataloader, synthetic_dataset, FIXED_MEAN, FIXED_STD

        loader = make_dataloader(synthetic_dataset(40, 40, seed=0).test, build_transform("none", FIXED_MEAN, FIXED_STD),
                                 8, torch.device("cpu"), num_workers=1)
        batches = iter(loader)
        next(batches)
        raise SystemExit("stopped with a live worker")
    """))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "stopped with a live worker" in result.stderr


def test_per_split_batch_sizes(synthetic):
    from cifar_utils.experiment import make_loaders

    config = Config(batch_size=32, eval_batch_size=50, augmentation="crop_flip")
    splits = make_splits(synthetic, validation_split=100, seed=0)
    loaders = make_loaders(splits, config, torch.device("cpu"))
    assert loaders.train.batch_size == 32 and len(loaders.train) == -(-500 // 32)
    assert loaders.validation.batch_size == 50 and len(loaders.validation) == 2
    assert loaders.test.batch_size == 50 and len(loaders.test) == 4
    assert isinstance(loaders.train.sampler, ShardedShuffleSampler)
    train_labels = torch.cat([y for _, y in loaders.train])
    assert sorted(train_labels.tolist()) == sorted(splits.train.labels.tolist())


def test_one_per_class_draws_one_seeded_image_of_every_class_in_class_order():
    from cifar_utils.data import one_per_class

    labels = torch.tensor([2, 2, 0, 0, 0, 1, 2, 1])  # sorted splits would show one class only in [:4]
    picked = one_per_class(labels, seed=0)
    assert labels[picked].tolist() == [0, 1, 2]
    assert torch.equal(picked, one_per_class(labels, seed=0))
    assert len({tuple(one_per_class(labels, seed=s).tolist()) for s in range(10)}) > 1  # the seed matters


def test_a_holdout_that_would_leave_a_class_without_training_images_is_refused():
    images = torch.zeros(3, 3, 32, 32, dtype=torch.uint8)
    train = ImageSet(images, torch.tensor([0, 1, 1]), ["rare", "common"])
    data = CifarData(train, train, "synthetic", "synthetic data")
    with pytest.raises(DataError, match="leaves no training image of class rare; add images of it, or hold out fewer"):
        make_splits(data, validation_split=2)
    assert len(make_splits(data, validation_split=1).train) == 2


def test_the_holdout_takes_a_rare_class_s_last_image_only_when_nothing_else_can_be_taken():
    # One "rare" image and three "common": the rounding would hold out one of each (equal remainders, the
    # lower index first), leaving rare nothing to train on; two commons go instead.
    images = torch.zeros(4, 3, 32, 32, dtype=torch.uint8)
    train = ImageSet(images, torch.tensor([0, 1, 1, 1]), ["rare", "common"])
    splits = make_splits(CifarData(train, train, "synthetic", "synthetic data"), validation_split=2)
    assert splits.train.class_counts() == [1, 1] and splits.validation.class_counts() == [0, 2]
