"""Checkpoints: atomic saving, safe loading (``weights_only=True``), and RNG state capture.

A checkpoint is a dict::

    {"model", "optimizer", "scheduler", "scaler", "ema",   # state_dicts (None where unused)
     "epoch",          # epochs completed
     "batches",        # mini-batches done in the next epoch (0 at an epoch boundary)
     "epoch_progress", # running sums of that partial epoch
     "config", "history", "best_val_acc", "rng", "classes", "mean", "std",
     "precision",      # what the run trained in (precision="auto" resumes in it)
     "format_version"}

It holds only tensors and plain Python values, so ``torch.load(path, weights_only=True)`` can read it
and a checkpoint file can never run code.
"""

from __future__ import annotations

import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import io
from .config import Config, config_from_dict
from .errors import CheckpointError, ConfigError

FORMAT_VERSION = 1
# The files of a run directory.
CHECKPOINT_NAME = "checkpoint.pt"  # the latest state, to resume from
BEST_CHECKPOINT_NAME = "checkpoint_best.pt"  # the best-validation weights (keep_best)
METRICS_NAME = "metrics.json"  # written once the run is finished and tested
HISTORY_NAME = "history.csv"  # one row per epoch
CURVES_NAME = "training_curves.png"  # the curves `plot` draws of a run (and 03 of each sweep run)
REQUIRED_KEYS = ("model", "epoch", "config", "history")
# How torch's legacy (pre-1.6, non-zip) format begins: a pickled magic number. cifar_utils never writes it.
LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19"
ZIP_MAGIC = b"PK\x03\x04"  # how every checkpoint begins, a truncated one too: torch saves a zip archive


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` atomically: the previous file at ``path`` stays until the new one is complete."""
    return io.save_torch({**state, "format_version": FORMAT_VERSION}, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely; a missing, truncated or foreign file raises :class:`CheckpointError`."""
    path = Path(path)
    if path.is_dir():
        inside = f"; pass {path / CHECKPOINT_NAME}" if (path / CHECKPOINT_NAME).is_file() else ""
        raise CheckpointError(f"{path} is a folder, not a checkpoint file{inside}")
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: train first (python -m cifar_utils train ...) "
                              "or pass the path of an existing checkpoint.pt")
    try:
        with open(path, "rb") as f:
            start = f.read(len(LEGACY_TORCH_MAGIC))
    except OSError as err:  # another user's run, say
        raise CheckpointError(f"cannot read {path}: {err.strerror or err}. Fix its permissions or copy it "
                              "somewhere you can read") from None
    if start == LEGACY_TORCH_MAGIC:
        raise CheckpointError(f"{path} is not a cifar_utils checkpoint: it is a torch file in the legacy "
                              "(non-zip) format, which cifar_utils never writes. Pass the checkpoint.pt of a run.")
    # Another kind of file (a run's metrics.json, say) is named as such; a damaged .pt as corrupt, below.
    if path.suffix != ".pt" and start[:len(ZIP_MAGIC)] != ZIP_MAGIC[:len(start)]:
        raise CheckpointError(f"{path} is not a checkpoint (torch checkpoints are zip archives). Pass the "
                              f"{CHECKPOINT_NAME} of a run.")
    try:
        state = io.load_torch(path, map_location=map_location)
    except pickle.UnpicklingError as err:
        if "GLOBAL" not in str(err):  # torch names the refused class or function as "GLOBAL module.name"
            raise _corrupt(path, err) from None
        raise CheckpointError(f"checkpoint {path} holds Python objects other than tensors and plain values, "
                              "so it was refused: loading it could run code. Use a checkpoint written by "
                              "cifar_utils, or train again.") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as err:
        raise _corrupt(path, err) from None
    missing = [k for k in REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"{path} is not a cifar_utils checkpoint (missing {', '.join(missing)})")
    if state.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer cifar_utils (checkpoint format "
                              f"{state['format_version']}, this one reads up to {FORMAT_VERSION}); upgrade the kit")
    return state


def checkpoint_config(state: dict[str, Any], path: str | Path) -> Config:
    """The config a checkpoint (or a run's metrics.json) records; a field this version does not know, or a
    config of another structure, raises :class:`CheckpointError` naming the file."""
    try:
        return config_from_dict(state["config"])
    except (ConfigError, TypeError, KeyError) as err:
        raise CheckpointError(f"{path} was written by another version of cifar_utils: {err}") from None


def _corrupt(path: Path, err: Exception) -> CheckpointError:
    reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
    return CheckpointError(f"checkpoint {path} is truncated or corrupt and cannot be loaded ({reason}). "
                           "Delete it and resume from another checkpoint, or train again.")


def rng_state() -> dict[str, Any]:
    """The python, numpy and torch (CPU and CUDA) random states, as weights_only-loadable values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved. The generators take CPU tensors only, and a checkpoint loaded
    with ``map_location="cuda"`` holds its states on the GPU, so each is brought back first."""
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        # A run saved where more GPUs were visible restores the states of the GPUs this machine has.
        for index, saved in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(saved.cpu(), index)
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
