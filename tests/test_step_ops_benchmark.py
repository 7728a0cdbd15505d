"""benchmarks/step_ops.py counts a training step's operators; results files (every benchmark's) are never overwritten unasked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import step_ops  # noqa: E402


def test_a_step_is_counted_by_operator():
    counts = step_ops.count_step("cpu")
    network = counts["network_by_operator"]
    assert counts["network"] == sum(network.values()) and counts["optimizer"] == sum(counts["optimizer_by_operator"].values())
    assert network["convolution"] == 13 and network["convolution_backward"] == 12  # stem, then 6 Blocks x 2 branches
    assert "slice_backward" not in network  # the Block's per-branch copies are gone (tests/test_models.py)


def test_the_results_file_is_written_once(tmp_path):
    out = tmp_path / "ops.json"
    command = [sys.executable, str(REPO / "benchmarks" / "step_ops.py"), "--presets", "cpu", "--out", str(out)]
    subprocess.run(command, check=True, capture_output=True, text=True)
    result = json.loads(out.read_text())
    assert result["phase"] == "step_ops" and [c["preset"] for c in result["counts"]] == ["cpu"]
    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode != 0 and "--overwrite" in again.stderr
    unknown = subprocess.run([*command, "--overwrite", "--presets", "nope"], capture_output=True, text=True)
    assert unknown.returncode != 0 and "unknown preset(s) nope" in unknown.stderr


def test_a_results_path_that_exists_is_refused_unless_overwrite(tmp_path, capsys):
    import pytest

    from cifar_utils import io
    from cifar_utils.errors import OutputExistsError, run_script

    path = tmp_path / "results.json"
    assert io.new_results_path(path, overwrite=False) == path  # nothing there yet
    path.write_text("{}")
    with pytest.raises(OutputExistsError, match="pass --overwrite to replace it or --out"):
        io.new_results_path(path, overwrite=False)
    assert io.new_results_path(str(path), overwrite=True) == path
    with pytest.raises(SystemExit) as info:
        run_script(lambda: io.new_results_path(path, overwrite=False))
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and err.startswith("error: ") and "results.json exists" in err


def test_ctrl_c_ends_a_script_with_one_line_and_status_130(capsys):
    import pytest

    from cifar_utils.errors import run_script

    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as info:
        run_script(interrupted)
    assert info.value.code == 130 and capsys.readouterr().err == "interrupted\n"


def test_a_training_stopped_by_sigterm_ends_a_script_as_interrupted_with_status_143(capsys):
    import signal

    import pytest

    from cifar_utils.errors import TrainingInterrupted, run_script

    def stopped():
        raise TrainingInterrupted("training stopped by SIGTERM; a checkpoint was saved", signum=signal.SIGTERM)

    with pytest.raises(SystemExit) as info:
        run_script(stopped)
    assert info.value.code == 143
    assert capsys.readouterr().err == "interrupted: training stopped by SIGTERM; a checkpoint was saved\n"
