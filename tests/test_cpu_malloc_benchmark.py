"""benchmarks/cpu_malloc.py end to end on a tiny image folder: both settings measured in fresh processes,
the results file and the README line made from it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import cpu_malloc  # noqa: E402


def test_both_settings_are_measured_and_rendered(tmp_path, noise_folder):
    root = noise_folder(30, 2)  # 270 training images after validation: one batch
    out = tmp_path / "malloc.json"
    command = [sys.executable, str(REPO / "benchmarks" / "cpu_malloc.py"), "--data-root", str(root),
               "--repeats", "1", "--images", "256", "--out", str(out)]
    subprocess.run(command, check=True, capture_output=True, text=True)
    result = json.loads(out.read_text())
    assert [run["setting"] for run in result["runs"]] == ["default", "reuse"]
    assert result["phase"] == "malloc"  # left out of the results table: it measures the code
    assert [run["applied"] for run in result["runs"]][0] is False
    assert all(run["images_per_second"] > 0 for run in result["runs"])
    line = cpu_malloc.render(result)
    assert "images/s with glibc's default malloc" in line and f"`{result['file']}`" in line
    again = subprocess.run(command, capture_output=True, text=True)  # never overwritten without being asked
    assert again.returncode != 0 and "--overwrite" in again.stderr
