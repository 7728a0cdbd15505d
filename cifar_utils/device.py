"""Device choice, seeding, determinism and mixed precision."""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import fcntl
import functools
import json
import os
import platform
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch

from .errors import CifarUtilsError, ConfigError
from .io import save_json


def get_device(preferred: Optional[str] = None) -> torch.device:
    """``preferred`` if given (clear error if unavailable), else cuda, then mps, then cpu."""
    if preferred is not None:
        try:
            device = torch.device(preferred)
        except RuntimeError:
            device = None
        if device is None or device.type not in ("cpu", "cuda", "mps"):
            raise ConfigError(f"device {preferred!r} is not a device this kit trains on; use cpu, cuda, cuda:1 or mps")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {preferred!r} was asked for, but no CUDA GPU is available; use --device cpu")
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            gpus = torch.cuda.device_count()
            raise ConfigError(f"device {preferred!r} was asked for, but torch sees {gpus} "
                              f"GPU{'' if gpus == 1 else 's'}, numbered from 0; use --device cuda:0")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ConfigError(f"device {preferred!r} was asked for, but MPS is not available; use --device cpu")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def describe_device(device: torch.device) -> str:
    """A human-readable device name, such as 'cuda (NVIDIA H100 80GB HBM3)' or 'cpu (2 threads)'."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return device.type


def recorded_device(record: Mapping[str, Any]) -> Optional[str]:
    """The device a run's record names (a metrics.json, or a benchmark file's top level), for tables and
    banners: the GPU's name, or the CPU's model and threads, with the process count of a DDP run ("8 x
    NVIDIA H100 80GB HBM3"); None where it names none. Runs older than the ``cpu_model`` field (added
    2026-12-07) recorded no CPU model, so their "cpu (2 threads)" stands for any CPU."""
    name = record.get("device")
    if not name:
        return None
    gpu = re.fullmatch(r"cuda \((.+)\)", name)  # gpu_run.py wrote the bare name until 2026-12-07
    threads = re.fullmatch(r"cpu \((.+)\)", name)
    if gpu:
        name = gpu.group(1)
    elif threads and record.get("cpu_model") not in (None, "", UNKNOWN_CPU):
        name = f"{record['cpu_model']} ({threads.group(1)})"
    processes = record.get("world_size") or 1
    return f"{processes} x {name}" if processes > 1 else name


def device_label(device: torch.device) -> str:
    """This machine's ``device`` named as :func:`recorded_device` names a run's, e.g. 'AMD EPYC (2 threads)'."""
    return recorded_device({"device": describe_device(device),
                            "cpu_model": cpu_model() if device.type == "cpu" else None})


def set_seed(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (all devices). Called explicitly by every entry point, never at import.

    ``deterministic=True`` also asks for deterministic kernels. On the CPU training is already
    deterministic. On CUDA, the nondeterministic operations these models use are:

    - convolutions: cuDNN autotunes its algorithm and some backward algorithms add with atomics; the
      switch turns autotuning off and picks deterministic algorithms;
    - matrix products in cuBLAS: made deterministic through ``CUBLAS_WORKSPACE_CONFIG``;
    - the backward passes of adaptive average pooling (the heads that average, and report 001's 8x8 gate
      pool; the other gates take a plain mean), of adaptive max pooling (the heads that take the max) and
      of the cross-entropy (NLL) loss: torch has no deterministic CUDA kernel for these, so it warns and
      the last bits of the weights can still differ between runs.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def cpu_has_native_bf16() -> bool:
    """Whether this CPU advertises bf16 arithmetic (AVX-512 BF16 or AMX), read from the Linux CPU flags;
    False where they cannot be read."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


# bf16 must train a 3x3 convolution at least this much faster than fp32 for precision="auto" to pick it.
BF16_MIN_SPEEDUP = 1.2


@dataclass(frozen=True)
class Bf16Measurement:
    """How much faster bf16 autocast trains a 3x3 convolution than fp32 on this machine, and where that
    was remembered (None where the cache file could not be written)."""

    speedup: float  # fp32 seconds / bf16 seconds, the best of several alternating tries of each
    date: str  # when it was measured, ISO format
    cache: Optional[Path]

    @property
    def faster(self) -> bool:
        return self.speedup >= BF16_MIN_SPEEDUP


# Where cifar_utils keeps what it measured about this machine, in place of $XDG_CACHE_HOME/cifar_utils.
CACHE_ENV = "CIFAR_UTILS_CACHE"


def precision_cache_path() -> Path:
    """The file that remembers each machine's bf16 measurement: ``cpu_precision.json`` in ``$CIFAR_UTILS_CACHE``,
    else in ``$XDG_CACHE_HOME/cifar_utils`` (default ``~/.cache/cifar_utils``)."""
    folder = os.environ.get(CACHE_ENV) or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cifar_utils"
    return Path(folder) / "cpu_precision.json"


UNKNOWN_CPU = "unknown"


def cpu_model() -> str:
    """The CPU's model name, from the Linux CPU information ("unknown" where there is none to read)."""
    try:
        match = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
    except OSError:
        match = None
    return match.group(1).strip() if match else UNKNOWN_CPU  # platform.processor() gives only "arm", "x86_64"


def _machine_key() -> str:
    """What the measurement depends on: the CPU model, the threads torch uses and torch's version."""
    return f"{cpu_model()}; {torch.get_num_threads()} threads; torch {torch.__version__}"


def _measure_bf16_speedup() -> float:
    """fp32 seconds over bf16 seconds for one training step of a 3x3 convolution: the best of 10 tries
    each, alternating, after a warm-up, so that a moment of load from another process slows both alike."""
    generator = torch.Generator().manual_seed(0)
    conv = torch.nn.Conv2d(64, 64, 3, padding=1, bias=False).to(memory_format=torch.channels_last)
    x = torch.randn(64, 64, 16, 16, generator=generator).contiguous(memory_format=torch.channels_last)
    best = {"bf16": float("inf"), "fp32": float("inf")}
    for attempt in range(12):
        for precision in best:
            started = time.perf_counter()
            with autocast(torch.device("cpu"), precision):
                conv(x).float().sum().backward()
            if attempt >= 2:  # the first two warm the kernels up
                best[precision] = min(best[precision], time.perf_counter() - started)
    return best["fp32"] / best["bf16"]


@functools.lru_cache(maxsize=1)
def cpu_bf16_measurement() -> Bf16Measurement:
    """This CPU's :class:`Bf16Measurement`, measured once per machine (a fraction of a second) and then read
    from :func:`precision_cache_path`, so that every run on the machine trains in the same precision: a
    timing of milliseconds on a busy machine could otherwise choose differently from one run to the next.
    Delete the file to measure again."""
    path, key = precision_cache_path(), _machine_key()
    with contextlib.ExitStack() as held:
        # Processes that start together (torchrun's, a sweep's) take turns: the first measures, the rest read.
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = held.enter_context(open(path.with_name(path.name + ".lock"), "a"))
            fcntl.flock(lock, fcntl.LOCK_EX)
        known: dict = {}
        with contextlib.suppress(OSError, ValueError):
            known = json.loads(path.read_text())
        known = known if isinstance(known, dict) else {}
        entry = known.get(key)
        if isinstance(entry, dict) and isinstance(entry.get("bf16_speedup"), (int, float)):
            return Bf16Measurement(float(entry["bf16_speedup"]), str(entry.get("date", "")), path)
        speedup, date = _measure_bf16_speedup(), datetime.date.today().isoformat()
        try:
            save_json({**known, key: {"bf16_speedup": speedup, "date": date}}, path)
        except (OSError, CifarUtilsError):
            return Bf16Measurement(speedup, date, None)
        return Bf16Measurement(speedup, date, path)


def cpu_bf16_is_faster() -> bool:
    """Whether bf16 autocast trains at least ``BF16_MIN_SPEEDUP`` times faster than fp32 on this CPU
    (:func:`cpu_bf16_measurement`), where the CPU advertises bf16. Advertising it is not enough: with the
    same torch, bf16 trained faster than fp32 on an AMD EPYC with AVX-512 BF16 and slower on an Intel Xeon
    with the same flag."""
    return cpu_has_native_bf16() and cpu_bf16_measurement().faster


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` means bf16 autocast on CUDA (fp16 where bf16 is unsupported) and on CPUs where it is
    measured faster (:func:`cpu_bf16_is_faster`), and fp32 elsewhere."""
    if precision == "auto":
        if device.type == "cuda":
            # Without the flag, torch counts emulated bf16 (pre-Ampere GPUs such as Colab's T4) as supported,
            # and emulated bf16 is slow: fp16 autocast is what those GPUs run fast.
            native = torch.cuda.is_bf16_supported(including_emulation=False)
            return "bf16" if native else "fp16"
        if device.type == "cpu" and cpu_bf16_is_faster():
            return "bf16"
        return "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("precision=fp16 needs a CUDA GPU; use bf16 or fp32 on this device")
    return precision


# glibc's mallopt parameters and the largest mmap threshold it accepts on 64-bit systems (half its 64 MiB heap).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_MAX = 32 << 20
TRIM_THRESHOLD = 1 << 30  # keep up to 1 GiB of freed heap instead of handing it back to the OS


@functools.lru_cache(maxsize=1)
def keep_freed_cpu_memory() -> bool:
    """Have glibc's malloc reuse freed memory for tensors up to 32 MiB instead of mapping fresh pages for
    each one. True where it applied (Linux with glibc), False elsewhere; it lasts for the whole process.

    A CPU training step allocates and frees activations of up to ~30 MB (the ``cpu`` preset at batch 256).
    By default glibc maps every such block from the OS and unmaps it when freed, so each step pays a page
    fault per 4 KiB page on first touch; ``benchmarks/cpu_malloc.py`` measures what reusing the memory gains.
    The cost: the process keeps up to 1 GiB of freed memory until it exits.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def autocast(device: torch.device, precision: str):
    """The autocast context for ``precision`` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
