"""nbval settings for the report notebooks: ``CIFAR_UTILS_SMOKE=1 python -m pytest --nbval-lax tests notebooks``.

- The smoke profile is the default here (``CIFAR_UTILS_SMOKE=0`` validates the full profile, for hours).
- The notebooks' figures and runs go to a temporary folder, removed at the end, so a test run never
  rewrites the committed ``figures/``; ``CIFAR_UTILS_OUTPUT=DIR`` keeps them in ``DIR`` instead.
- Without the data (``$CIFAR10_ROOT``, else ``./data``), the notebooks are skipped, not failed.

nbval runs the notebooks in file order, so 04 evaluates the run that 03 wrote into that folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from cifar_utils.data import detect_source, resolve_root
from cifar_utils.report import OUTPUT_ENV, SMOKE_ENV

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault(SMOKE_ENV, "1")
_OWN_OUTPUT = None
if not os.environ.get(OUTPUT_ENV):
    _OWN_OUTPUT = tempfile.mkdtemp(prefix="cifar-report-nbval-")
    os.environ[OUTPUT_ENV] = _OWN_OUTPUT


def _data_missing() -> str | None:
    root, origin = resolve_root(None)
    root = root if root.is_absolute() else REPO / root  # the notebooks work from the repository root
    if root.is_dir() and detect_source(root):
        return None
    return (f"no CIFAR-10 data at {root} (from {origin}): set CIFAR10_ROOT to the extracted JPEG copy "
            "(for example data/cifar10-jpeg) or to a folder holding cifar-10-batches-py/")


def pytest_collection_modifyitems(config, items):
    reason = _data_missing()
    if reason is None:
        return
    for item in items:
        if Path(str(item.fspath)).suffix == ".ipynb":
            item.add_marker(pytest.mark.skip(reason=reason))


def pytest_sessionfinish(session, exitstatus):
    if _OWN_OUTPUT is not None:
        shutil.rmtree(_OWN_OUTPUT, ignore_errors=True)
