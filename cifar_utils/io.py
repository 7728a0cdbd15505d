"""Atomic file writes: a crash never leaves a half-written file under its final name.

Each writer goes to a temporary file in the destination folder, is flushed and fsync'd, and is then
renamed over the destination with :func:`os.replace`, which is atomic on POSIX and Windows. Until the
rename, the previous file (say, the last good checkpoint) stays intact. :func:`load_torch` is the
matching safe reader.
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Sequence

import torch

from .errors import OutputExistsError, WriteError


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is fsync'd and renamed to ``path``.

    Any failure to write (a full disk, no permission) raises :class:`WriteError` naming ``path``.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; results should get the usual permissions
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as err:
        raise WriteError(path, err.strerror or str(err)) from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def new_results_path(path: str | os.PathLike, overwrite: bool) -> Path:
    """``path``, where a benchmark is about to write its results; a file already there raises
    :class:`OutputExistsError` unless ``overwrite``, since results are never replaced without being asked."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists; pass --overwrite to replace it or --out to write elsewhere")
    return path


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it, so do that once, before any thread starts
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read at import: reading it later would leave it 0 for a moment under other threads


def staging_folder(parent: Path, prefix: str) -> Path:
    """A new empty folder in ``parent`` to fill, then move into place whole with ``os.replace``; it gets the
    usual permissions (mkdtemp creates 0700, which the moved folder would keep)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(folder, 0o777 & ~_UMASK)
    return folder


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not supported on every platform, where it is harmless to skip.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_path)`` and move the result to ``path`` atomically."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def save_torch(obj: Any, path: str | os.PathLike) -> Path:
    def write(tmp: Path) -> None:
        try:
            torch.save(obj, tmp)
        except RuntimeError:  # torch reports a failed write (a full disk) as a C++ "enforce fail" without a reason
            raise OSError("torch.save stopped part-way, usually because the disk is full") from None

    return atomic_write(path, write)


def load_torch(path: str | os.PathLike, map_location=None) -> Any:
    """``torch.load(path, weights_only=True)`` after checking the file is a complete, uncorrupted archive.

    Raises :class:`zipfile.BadZipFile` for a truncated file or one whose bytes changed since it was
    written, and :class:`pickle.UnpicklingError` for one holding objects other than tensors and plain
    values (which could run code).
    """
    with open(path, "rb") as f:  # one open file: an atomic replace in between cannot swap what is read
        check_archive(f)
        f.seek(0)
        return torch.load(f, map_location=map_location, weights_only=True)


def check_archive(file: BinaryIO) -> None:
    """Raise :class:`zipfile.BadZipFile` unless every entry of ``file`` passes its CRC-32 check.

    ``torch.load`` reads tensor bytes without checking them, so a flipped byte (a flaky network drive)
    would otherwise load as silently wrong weights.
    """
    with zipfile.ZipFile(file) as archive:
        bad = archive.testzip()
    if bad is not None:
        raise zipfile.BadZipFile(f"{bad} fails its CRC check")


def save_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` as strict JSON: NaN and infinities (say, the loss of a diverged run) become null."""
    def write(tmp: Path) -> None:
        tmp.write_text(json.dumps(_finite(obj), indent=2, sort_keys=False, default=str, allow_nan=False) + "\n")

    return atomic_write(path, write)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {key: _finite(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(value) for value in obj]
    return obj


def save_csv(rows: Sequence[dict], path: str | os.PathLike) -> Path:
    """Write a list of dicts (same keys) as CSV with a header row."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            if not rows:
                return
            writer = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
            writer.writeheader()
            writer.writerows(rows)

    return atomic_write(path, write)


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save a matplotlib figure as PNG atomically."""
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png"))
