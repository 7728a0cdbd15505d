"""Issue 12: nothing lost, nothing mixed, and no traceback from any bad file or setting.

Run-folder locking (with a real two-process race), ``--overwrite`` that keeps the earlier run until the new
one has a checkpoint, strict resume, early and one-line write failures, bad image folders, caches and
checkpoints, non-finite settings and honest messages.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cifar_utils import cli, data, experiment, io, report
from cifar_utils.checkpoint import load_checkpoint, save_checkpoint
from cifar_utils.config import Config, _field_types
from cifar_utils.device import cpu_model
from cifar_utils.errors import CheckpointError, ConfigError, DataError, OutputExistsError
from cifar_utils.run_lock import LOCK_NAME, RunLock
from test_reliability import (SimulatedCrash, cli_error, crash, make_image_folder, nan_loss, tiny,  # noqa: F401
                              tiny_args, tiny_config)

REPO = Path(__file__).resolve().parents[1]
# A real (small) network, so that a subprocess can train it: 48 images in 6 mini-batches of 8.
SUBPROCESS_ARGS = ["train", "--preset", "seed003", "--set", "dataset=synthetic", "--set", "model=resnet20",
                   "--epochs", "2", "--validation-split", "100", "--train-limit", "48", "--batch-size", "8",
                   "--set", "validation_limit=16", "--set", "test_limit=16", "--lr", "0.02", "--device", "cpu", "--no-progress"]


def subprocess_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


# ------------------------------------------------------------------------------------------- locking


def test_two_processes_on_one_out_one_trains_and_the_other_names_it(tmp_path):
    out = tmp_path / "run"
    procs = [subprocess.Popen([sys.executable, "-m", "cifar_utils", *SUBPROCESS_ARGS, "--out", str(out)],
                              cwd=tmp_path, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    results = [(proc.pid, *proc.communicate(timeout=300), proc.returncode) for proc in procs]
    assert sorted(code for *_, code in results) == [0, 2], results
    (winner, *_), (_, _, err, _) = sorted(results, key=lambda r: r[3])
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert f"in use by another training process (pid {winner} " in errors[0]
    # Every file is the winner's: the loser wrote nothing into the folder.
    metrics = json.loads((out / "metrics.json").read_text())
    state = load_checkpoint(out / "checkpoint.pt")
    assert metrics["epochs"] == state["epoch"] == 2 and metrics["config"] == state["config"]
    assert metrics["device"].startswith("cpu (") and metrics["cpu_model"] == cpu_model()  # CPU times need the model
    assert not (out / LOCK_NAME).exists()  # released on exit


def test_a_held_lock_stops_a_run_before_it_loads_data(tiny, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()
    fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"pid 4242 on elsewhere: python -m cifar_utils train")
        monkeypatch.setattr(experiment, "load_splits", lambda *a, **k: pytest.fail("loaded data"))
        cli_error(capsys, tiny_args(out), str(out), "pid 4242 on elsewhere")
    finally:
        os.close(fd)
    assert list(out.iterdir()) == [out / LOCK_NAME]


def test_a_holder_that_has_not_yet_written_who_it_is_is_still_named(tmp_path):
    # The race the two-process test can hit: the holder has the lock but has not yet written its description.
    import threading

    from cifar_utils.run_lock import RunLock

    out = tmp_path / "run"
    out.mkdir()
    fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    writer = threading.Timer(0.3, os.pwrite, (fd, b"pid 4242 on elsewhere: a run just started", 0))
    writer.start()
    try:
        with pytest.raises(OutputExistsError, match="in use by another training process \\(pid 4242 on elsewhere"):
            with RunLock(out):
                pytest.fail("took a held lock")
    finally:
        writer.join()
        os.close(fd)


def test_a_stale_lock_is_taken_over_and_every_run_releases_its_lock(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).write_text("pid 999999 on gone: a run that was killed")
    assert cli.main(tiny_args(out, "--epochs", "1")) == 0
    assert "no longer running (pid 999999 on gone" in capsys.readouterr().out
    assert not (out / LOCK_NAME).exists()
    cli_error(capsys, tiny_args(out, "--lr", "nan", "--overwrite"), "lr=nan")  # refused before the lock
    cli_error(capsys, tiny_args(out, "--set", "dataset=auto", "--data-root", str(tmp_path / "none"),
                                "--overwrite"), "does not exist")
    assert not (out / LOCK_NAME).exists()


def test_a_finishing_run_leaves_another_process_lock_at_the_same_path_alone(tmp_path):
    """The run folder was removed while A held it and B locked a new file there: A's exit must not delete B's
    lock, which would let a third process in beside B."""
    folder = tmp_path / "run"
    folder.mkdir()
    first = RunLock(folder, lambda _: None).__enter__()
    shutil.rmtree(folder)
    folder.mkdir()
    second = RunLock(folder, lambda _: None).__enter__()
    first.__exit__(None, None, None)
    assert (folder / LOCK_NAME).is_file()  # B's lock is still there
    with pytest.raises(OutputExistsError, match="in use by another training process"):
        RunLock(folder, lambda _: None).__enter__()
    second.__exit__(None, None, None)
    assert not (folder / LOCK_NAME).exists()


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_a_run_folder_that_cannot_be_written_fails_before_loading_data(tiny, tmp_path, capsys, monkeypatch, where):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the run folder should be")
    out = blocker if where == "a file" else blocker / "run"
    monkeypatch.setattr(experiment, "load_splits", lambda *a, **k: pytest.fail("loaded data"))
    if where == "a file":  # named for what it is, not as a disk or permission problem
        cli_error(capsys, tiny_args(out), f"--out {out} is a file, not a run folder")
    else:
        cli_error(capsys, tiny_args(out), f"could not write {out} (", "choose another --out")


# ----------------------------------------------------------------------------------------- overwrite


@pytest.fixture
def earlier_run(tiny, tmp_path) -> tuple[Path, dict[str, bytes]]:
    out = tmp_path / "run"
    assert cli.main(tiny_args(out, "--epochs", "1")) == 0
    before = files_of(out)
    assert {"checkpoint.pt", "checkpoint_best.pt", "metrics.json", "history.csv"} == before.keys()
    return out, before


def test_an_overwrite_whose_new_run_fails_keeps_the_earlier_run_and_says_so(tiny, earlier_run, tmp_path, capsys):
    out, before = earlier_run
    cli_error(capsys, tiny_args(out, "--overwrite", "--set", "dataset=auto", "--data-root", str(tmp_path / "typo")),
              "typo", "does not exist")
    assert files_of(out) == before
    tiny((1, nan_loss))
    line = cli_error(capsys, tiny_args(out, "--overwrite"), "training diverged")
    assert f"this run saved nothing, and the earlier run in {out} was left as it was" in line
    assert "last good checkpoint" not in line
    assert files_of(out) == before


def test_resume_and_overwrite_together_are_refused_from_python_too(earlier_run):
    out, before = earlier_run
    with pytest.raises(ConfigError, match="resume=True.*overwrite=True.*choose one"):
        experiment.train(Config(epochs=1), out, resume=True, overwrite=True)
    assert files_of(out) == before


def test_a_new_run_that_diverges_before_any_checkpoint_does_not_claim_one(tiny, tmp_path, capsys):
    tiny((1, nan_loss))
    out = tmp_path / "run"
    line = cli_error(capsys, tiny_args(out), "training diverged")
    assert "nothing was saved" in line and "last good checkpoint" not in line
    assert not (out / "checkpoint.pt").exists()


def test_overwrite_replaces_the_earlier_run_only_once_the_new_one_has_a_checkpoint(tiny, earlier_run):
    out, before = earlier_run
    tiny((2, crash))  # dies in its second mini-batch, before any checkpoint
    with pytest.raises(SimulatedCrash):
        experiment.train(tiny_config(lr=0.01), out, device="cpu", overwrite=True, progress=False)
    assert files_of(out) == before

    tiny((3, crash))  # dies after the checkpoint of its second optimizer step
    with pytest.raises(SimulatedCrash):
        experiment.train(tiny_config(lr=0.01, checkpoint_every_steps=2), out, device="cpu", overwrite=True,
                         progress=False)
    assert set(files_of(out)) == {"checkpoint.pt"}  # nothing of the earlier run left to mix with it
    state = load_checkpoint(out / "checkpoint.pt")
    assert (state["epoch"], state["batches"], state["config"]["lr"]) == (0, 2, 0.01)

    tiny()
    result = experiment.train(tiny_config(lr=0.01), out, device="cpu", overwrite=True, progress=False)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["lr"] == 0.01 == result.config.lr
    assert load_checkpoint(out / "checkpoint_best.pt")["config"]["lr"] == 0.01


# -------------------------------------------------------------------------------------- strict resume


@pytest.fixture
def one_epoch_of_two(tiny, tmp_path) -> Path:
    """A tiny run stopped after its first of two epochs (seed003's plateau schedule allows more epochs)."""
    out = tmp_path / "run"
    assert cli.main(tiny_args(out, "--epochs", "1")) == 0
    return out


def test_resume_reads_the_data_folder_the_run_recorded_when_none_is_given(tiny, tmp_path, monkeypatch, capsys):
    folder = make_image_folder(tmp_path / "images", per_class=10)
    out = tmp_path / "run"
    args = ["train", "--preset", "seed003", "--set", "model=tiny", "--validation-split", "4", "--batch-size", "4",
            "--device", "cpu", "--no-progress", "--out", str(out)]
    assert cli.main([*args, "--epochs", "1", "--data-root", str(folder)]) == 0
    monkeypatch.delenv("CIFAR10_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./data here either
    assert cli.main([*args, "--epochs", "2", "--resume"]) == 0
    assert json.loads((out / "metrics.json").read_text())["config"]["data_root"] == str(folder)
    assert "resuming" in capsys.readouterr().out


@pytest.mark.parametrize("extra, field", [
    (["--lr", "0.1"], "lr"),
    (["--set", "weight_decay=0.001"], "weight_decay"),
    (["--set", "normalization=fixed"], "normalization"),
    (["--set", "validation_limit=16"], "validation_limit"),
    (["--set", "augmentation=none"], "augmentation"),
    (["--set", "label_smoothing=0.1"], "label_smoothing"),
    (["--set", "keep_best=false"], "keep_best"),
])
def test_resume_refuses_a_changed_setting_and_names_it(one_epoch_of_two, capsys, extra, field):
    before = files_of(one_epoch_of_two)
    cli_error(capsys, tiny_args(one_epoch_of_two, "--resume", *extra), str(one_epoch_of_two / "checkpoint.pt"),
              f"{field}=")
    assert files_of(one_epoch_of_two) == before


def test_resume_may_change_what_does_not_alter_results_and_records_what_it_ran(one_epoch_of_two):
    assert cli.main(tiny_args(one_epoch_of_two, "--resume", "--epochs", "3", "--set", "print_every=2",
                              "--set", "num_workers=0", "--set", "eval_batch_size=8")) == 0
    metrics = json.loads((one_epoch_of_two / "metrics.json").read_text())
    state = load_checkpoint(one_epoch_of_two / "checkpoint.pt")
    assert metrics["config"] == state["config"]
    assert metrics["config"]["epochs"] == metrics["epochs"] == 3 and metrics["config"]["lr"] == 0.05


def test_resume_with_data_of_other_classes_is_one_clear_line(tiny, tmp_path, capsys):
    first, other = make_image_folder(tmp_path / "a"), make_image_folder(tmp_path / "b", train=("cat", "cow", "dog"))
    args = ["train", "--preset", "seed003", "--set", "model=tiny", "--validation-split", "1", "--batch-size", "2",
            "--device", "cpu", "--no-progress", "--out", str(tmp_path / "run")]
    assert cli.main([*args, "--epochs", "1", "--data-root", str(first)]) == 0
    cli_error(capsys, [*args, "--epochs", "2", "--data-root", str(other), "--resume"],
              "classes ['cat', 'dog'] -> ['cat', 'cow', 'dog']")


def test_resume_with_other_images_of_the_same_classes_names_the_normalisation(tiny, tmp_path, capsys):
    first, other = make_image_folder(tmp_path / "a"), make_image_folder(tmp_path / "b")
    for image in (other / "train").rglob("*.png"):  # the same classes, brighter pixels
        Image.fromarray(np.full((32, 32, 3), 250, np.uint8)).save(image)
    args = ["train", "--preset", "seed003", "--set", "model=tiny", "--validation-split", "1", "--batch-size", "2",
            "--device", "cpu", "--no-progress", "--out", str(tmp_path / "run")]
    assert cli.main([*args, "--epochs", "1", "--data-root", str(first)]) == 0
    line = cli_error(capsys, [*args, "--epochs", "2", "--data-root", str(other), "--resume"], "mean [")
    assert "classes" not in line  # the classes match; the training images' statistics do not


def _rewrite(path: Path, change) -> None:
    state = load_checkpoint(path)
    change(state)
    save_checkpoint(state, path)


def test_a_checkpoint_that_does_not_fit_the_network_or_optimizer_is_one_clear_line(one_epoch_of_two, capsys):
    path = one_epoch_of_two / "checkpoint.pt"
    _rewrite(path, lambda s: s["model"].update({"fc.weight": torch.zeros(3, 8)}))
    cli_error(capsys, tiny_args(one_epoch_of_two, "--resume", "--epochs", "2"), str(path), "does not fit")
    cli_error(capsys, ["evaluate", "--checkpoint", str(path), "--device", "cpu"], str(path), "does not fit")

    _rewrite(path, lambda s: s.update(model=load_checkpoint(one_epoch_of_two / "checkpoint_best.pt")["model"]))
    _rewrite(path, lambda s: s["optimizer"]["param_groups"][0].update(params=[0]))
    cli_error(capsys, tiny_args(one_epoch_of_two, "--resume", "--epochs", "2"), str(path), "does not fit")


def test_a_checkpoint_config_from_another_version_names_the_file(one_epoch_of_two, capsys):
    path = one_epoch_of_two / "checkpoint.pt"
    _rewrite(path, lambda s: s["config"].update(colour="red"))
    cli_error(capsys, ["evaluate", "--checkpoint", str(path), "--device", "cpu"], str(path), "colour")
    cli_error(capsys, tiny_args(one_epoch_of_two, "--resume", "--epochs", "2"), str(path), "colour")
    metrics = one_epoch_of_two / "metrics.json"
    metrics.write_text(json.dumps({**json.loads(metrics.read_text()), "config": {"colour": "red"}}))
    with pytest.raises(CheckpointError, match=re.escape(str(metrics))):
        report.evaluate_run(one_epoch_of_two, device="cpu")


# -------------------------------------------------------------------------------------- writing fails


def test_a_full_disk_while_saving_a_checkpoint_is_one_line_naming_it(tmp_path):
    def small_files() -> None:  # writes beyond 64 KB then fail as on a full disk (EFBIG instead of ENOSPC)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64_000, 64_000))

    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "cifar_utils", *SUBPROCESS_ARGS, "--out", str(out)], cwd=tmp_path,
                          env=subprocess_env(), capture_output=True, text=True, timeout=300, preexec_fn=small_files)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "enforce fail" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"could not write {out}" in errors[0] and "disk is full" in errors[0], proc.stderr
    assert not out.exists()  # no .tmp file left, so the folder this run created went too


def test_a_full_disk_while_writing_the_decode_cache_warns_and_continues(tmp_path, monkeypatch):
    root = make_image_folder(tmp_path / "data")

    def enforce_fail(obj, f, *args, **kwargs):  # what torch.save raises when the disk fills up
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(torch, "save", enforce_fail)
    with pytest.warns(UserWarning, match="could not write the decode cache .*disk is full"):
        loaded = data.load_dataset(root)
    assert loaded.train.class_counts() == [2, 2]
    assert not list(root.glob(".*"))


def test_metrics_json_is_strict_json(tmp_path):
    io.save_json({"best": float("nan"), "losses": [1.0, float("inf")], "nested": {"x": -float("inf")}},
                 tmp_path / "m.json")
    text = (tmp_path / "m.json").read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in JSON")) == {
        "best": None, "losses": [1.0, None], "nested": {"x": None}}


# ------------------------------------------------------------------------------------- bad settings


FLOAT_FIELDS = [name for name, kind in _field_types().items() if kind in (float, float | None)]


@pytest.mark.parametrize("field", FLOAT_FIELDS)
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_every_float_field_refuses_non_finite_values(field, value):
    with pytest.raises(ConfigError, match=f"{field}=.* finite"):
        Config(**{field: value}).validate()


@pytest.mark.parametrize("setting", ["--lr=inf", "--set=weight_decay=inf", "--set=min_lr=nan", "--grad-clip=inf"])
def test_non_finite_values_on_the_command_line_are_one_error_line(tmp_path, capsys, setting):
    field = setting.split("=")[-2].lstrip("-").replace("-", "_")
    cli_error(capsys, tiny_args(tmp_path / "run", setting), f"{field}=", "finite")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------- bad image folders


def folder_with(tmp_path: Path, name: str, write) -> tuple[Path, Path]:
    root = make_image_folder(tmp_path / "data")
    path = root / "train" / "dog" / name
    write(path)
    return root, path


def _decompression_bomb(path: Path) -> None:
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(path)


def _symlink_loop(path: Path) -> None:
    os.symlink(path.name, path)


def _float_tiff(path: Path) -> None:
    Image.fromarray(np.full((32, 32), 0.5, np.float32), "F").save(path)


def _int32_tiff(path: Path) -> None:
    Image.fromarray(np.full((32, 32), 70000, np.int32), "I").save(path)


@pytest.mark.parametrize("name, write, reason", [
    ("bomb.png", _decompression_bomb, "decompression bomb"),
    ("loop.png", _symlink_loop, "Too many levels of symbolic links"),
    ("float.tif", _float_tiff, "'F'"),
    ("int32.tif", _int32_tiff, "'I'"),
])
def test_a_bad_image_is_one_error_naming_it_or_skipped_with_a_warning(tmp_path, capsys, monkeypatch, name, write,
                                                                       reason):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1100)  # 32x32 images pass; the 64x64 "bomb" is over twice that
    root, bad = folder_with(tmp_path, name, write)
    cli_error(capsys, ["train", "--preset", "seed003", "--data-root", str(root), "--device", "cpu",
                       "--out", str(tmp_path / "run")], f"cannot read image {bad}", reason)
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        loaded = data.load_dataset(root, skip_bad_files=True)
    assert loaded.train.class_counts() == [2, 2]


def test_an_unreadable_class_folder_is_one_error_naming_it(tmp_path, capsys, monkeypatch):
    root = make_image_folder(tmp_path / "data")
    locked = root / "train" / "dog"
    real_iterdir = Path.iterdir

    def iterdir(self):  # chmod 000 does not stop root, who runs these tests in containers
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    cli_error(capsys, ["train", "--preset", "seed003", "--data-root", str(root), "--device", "cpu", "--out",
                       str(tmp_path / "run"), "--skip-bad-files"], f"cannot list {locked}", "Permission denied")


def test_file_and_folder_names_that_are_not_utf8(tmp_path, capsys):
    root = make_image_folder(tmp_path / "data")
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "train" / "dog" / os.fsdecode(b"caf\xe9.png"))
    assert data.load_dataset(root).train.class_counts() == [2, 3]
    assert data.load_dataset(root).train.class_counts() == [2, 3]  # from the cache
    (root / "train" / os.fsdecode(b"\xff")).mkdir()
    cli_error(capsys, ["train", "--preset", "seed003", "--data-root", str(root), "--device", "cpu",
                       "--out", str(tmp_path / "run")], "not valid UTF-8")


def _save(path: Path, image: Image.Image, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


def test_every_image_mode_becomes_correct_8_bit_rgb(tmp_path):
    root = make_image_folder(tmp_path / "data", train=("x",), per_class=0)
    folder = root / "train" / "x"
    palette = Image.new("P", (32, 32), 1)
    palette.putpalette([200, 100, 50] * 256)
    expected = {
        _save(folder / "a16.png", Image.fromarray(np.full((32, 32), 40000, np.uint16))): (156, 156, 156),
        _save(folder / "b_alpha.png", Image.new("LA", (32, 32), (200, 0))): (0, 0, 0),
        _save(folder / "c_half_alpha.png", Image.new("RGBA", (32, 32), (200, 100, 50, 128))): (100, 50, 25),
        _save(folder / "d_palette.png", palette, transparency=1): (0, 0, 0),
        _save(folder / "e_cmyk.tif", Image.new("CMYK", (32, 32), (0, 255, 255, 0))): (255, 0, 0),
        _save(folder / "f_bilevel.png", Image.new("1", (32, 32), 1)): (255, 255, 255),
        _save(folder / "g_grey.png", Image.new("L", (32, 32), 77)): (77, 77, 77),
    }
    Image.new("RGB", (32, 32)).save(root / "test" / "x" / "0.png")
    images = data.load_dataset(root).train.images
    assert images.dtype == torch.uint8 and len(images) == len(expected)
    for image, (path, rgb) in zip(images, sorted(expected.items())):
        assert tuple(image[:, 0, 0].tolist()) == pytest.approx(rgb, abs=1), path.name


def test_a_cache_of_another_structure_is_rebuilt(tmp_path):
    root = make_image_folder(tmp_path / "data")
    expected = data.load_dataset(root)
    cache = root / data.CACHE_NAME
    fingerprint = torch.load(cache, weights_only=True)["fingerprint"]
    for blob in ([1, 2, 3], {"fingerprint": fingerprint},
                 {"fingerprint": fingerprint, "classes": ["cat", "dog"], "skipped": [], "resized": 0,
                  "train": {"images": torch.zeros(4, 3, 8, 8, dtype=torch.uint8), "labels": torch.zeros(4)},
                  "test": "images"}):
        torch.save(blob, cache)
        loaded = data.load_dataset(root)
        assert torch.equal(loaded.train.images, expected.train.images)
        assert torch.load(cache, weights_only=True)["fingerprint"] == fingerprint  # rewritten


# ------------------------------------------------------------------------------------------ messages


def test_a_legacy_format_torch_file_is_not_called_corrupt(tmp_path, capsys):
    path = tmp_path / "old.pt"
    torch.save({"model": {}, "epoch": 1, "config": {}, "history": []}, path, _use_new_zipfile_serialization=False)
    line = cli_error(capsys, ["evaluate", "--checkpoint", str(path)], str(path), "legacy")
    assert "corrupt" not in line
    torch.save({"weight": torch.ones(2)}, path)
    line = cli_error(capsys, ["evaluate", "--checkpoint", str(path)], str(path), "not a cifar_utils checkpoint")
    assert "corrupt" not in line


def test_a_data_root_recorded_in_a_checkpoint_is_named_as_such(tiny, tmp_path, capsys):
    root = make_image_folder(tmp_path / "data")
    run = tmp_path / "run"
    assert cli.main(["train", "--preset", "seed003", "--set", "model=tiny", "--validation-split", "1", "--epochs", "1",
                     "--batch-size", "2", "--device", "cpu", "--no-progress", "--data-root", str(root),
                     "--out", str(run)]) == 0
    root.rename(tmp_path / "moved")
    cli_error(capsys, ["evaluate", "--checkpoint", str(run / "checkpoint.pt"), "--device", "cpu"],
              f"{root} (from the data_root recorded in {run / 'checkpoint.pt'}) does not exist")
    cli_error(capsys, ["evaluate", "--checkpoint", str(run / "checkpoint.pt"), "--device", "cpu", "--data-root",
                       str(root)], f"{root} (from --data-root (data_root)) does not exist")


def test_messages_name_the_notebook_parameters_too(tiny, tmp_path):
    with pytest.raises(CheckpointError, match=r"resume=False"):
        report.train_or_reuse(tiny_config(), tmp_path / "run", device="cpu", resume=True)
    tiny((1, nan_loss))
    with pytest.raises(Exception, match=r"grad_clip=1.0"):
        report.train_or_reuse(tiny_config(), tmp_path / "run", device="cpu")
    with pytest.raises(DataError, match=r"data_root="):
        data.load_dataset(tmp_path / "none")


def test_ctrl_c_in_the_final_evaluation_says_how_to_finish(tiny, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(experiment, "evaluate", interrupted)
        cli_error(capsys, tiny_args(out), "final evaluation", "--resume", str(out / "checkpoint.pt"), status=130)
    assert not (out / "metrics.json").exists() and not (out / LOCK_NAME).exists()
    assert cli.main(tiny_args(out, "--resume")) == 0
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 2


def test_an_existing_run_is_still_refused_without_resume_or_overwrite(earlier_run, capsys):
    out, before = earlier_run
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        experiment.train(tiny_config(epochs=1), out, device="cpu", progress=False)
    assert files_of(out) == before
