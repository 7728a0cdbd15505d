"""benchmarks/cpu.py's README table: a row per results file (the preset, then variants), with the bar's
verdict computed from each file's runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import cpu  # noqa: E402
import torch  # noqa: E402
from cifar_utils.cli import parse_settings  # noqa: E402
from cifar_utils.presets import from_preset  # noqa: E402


def _result(name: str, overrides: list[str], run_epochs: int, accuracies: list[float], seconds: list[float],
            **recipe_then) -> dict:
    """A results file of ``overrides`` (its --set values) on the preset, whose fields ``recipe_then`` held
    other values when the file was measured."""
    config = {**from_preset("cpu", **parse_settings(overrides)).to_dict(), **recipe_then}
    result = {
        "file": f"benchmarks/results/{name}.json", "date": "2026-11-23", "cpu_model": "Test CPU",
        "device": "cpu (2 threads)", "torch_version": "2.14.1", "command": f"python benchmarks/cpu.py {name}",
        "overrides": overrides, "preset_config": config, "throughput": [], "flops": None,
        "runs": [{"seed": i, "test_accuracy": a, "validation_accuracy": a, "wall_seconds": s, "epochs": run_epochs,
                  "split_sizes": {"train": 45000}, "precision": "fp32"}
                 for i, (a, s) in enumerate(zip(accuracies, seconds))],
    }
    result["summary"] = cpu.summarize(result)
    return result


def test_the_table_has_a_row_per_file_and_says_whether_each_meets_the_bar():
    preset = _result("preset", [], 10, [0.88, 0.88, 0.88], [700, 710, 720])
    variant = _result("variant", ["optimizer=sgd", "epochs=9"], 9, [0.91, 0.90, 0.92], [500, 520, 590])
    late = _result("late", ["epochs=20"], 20, [0.93, 0.93, 0.93], [500, 520, 610])  # one run over 600 s
    table = cpu.render_table([preset, variant, late])
    rows = [line for line in table.splitlines() if line.startswith("| ") and "seeds" not in line and "---" not in line]
    assert len(rows) == 3
    assert rows[0].startswith("| as the preset | 10 | 3 | 88.00% ± 0.00%") and rows[0].endswith("| no |")
    assert rows[1].startswith("| `optimizer=sgd`, `epochs=9` | 9 | 3 | 91.00% ± 1.00%")
    assert rows[1].endswith("| yes |")
    assert rows[2].endswith("| no |")
    assert all("| Test CPU, fp32, 2026-11-23 |" in row for row in rows)  # wall times compare only on one machine
    for name in ("preset", "variant", "late"):
        assert f"`benchmarks/results/{name}.json`" in table


def test_the_figure_plots_only_the_files_measured_on_the_first_files_machine(tmp_path, monkeypatch):
    preset = _result("preset", [], 10, [0.88, 0.88, 0.88], [700, 710, 720])
    short = _result("short", ["epochs=6"], 6, [0.87, 0.86, 0.87], [500, 510, 520])
    elsewhere = _result("elsewhere", ["epochs=12"], 12, [0.89] * 3, [600] * 3)
    elsewhere["cpu_model"] = "Another CPU"
    more_threads = _result("more_threads", ["epochs=9"], 9, [0.88] * 3, [300] * 3)
    more_threads["device"] = "cpu (8 threads)"
    in_bf16 = _result("in_bf16", ["epochs=14"], 14, [0.89] * 3, [550] * 3)  # same model name, bf16 arithmetic
    for run in in_bf16["runs"]:
        run["precision"] = "bf16"
    fig = cpu.plot_accuracy_time([preset, short, elsewhere, more_threads, in_bf16], tmp_path / "figure.png")
    points = [container.lines[0].get_xydata()[0] for container in fig.axes[0].containers]
    assert [(round(x, 2), round(y, 2)) for x, y in points] == [(11.83, 88.0), (8.5, 86.67)]  # minutes, %
    assert (tmp_path / "figure.png").stat().st_size > 0
    monkeypatch.setattr(cpu, "README", tmp_path / "README.md")
    monkeypatch.setattr(cpu, "FIGURE", tmp_path / "figures" / "cpu.png")
    (tmp_path / "README.md").write_text("<!-- cpu-benchmark:start -->\n<!-- cpu-benchmark:end -->\n")
    files = []
    for result in (preset, short, elsewhere):
        files.append(tmp_path / f"{result['file'].rsplit('/', 1)[-1]}")
        files[-1].write_text(json.dumps(result))
    monkeypatch.setattr(cpu, "REPO", tmp_path)
    cpu.update_readme(files)
    assert (tmp_path / "figures" / "cpu.png").is_file()
    text = (tmp_path / "README.md").read_text()
    assert "![cpu preset: test accuracy against wall time](figures/cpu.png)" in text and "another CPU" in text
    assert "Test CPU, cpu (2 threads), fp32, as a figure" in text
    # No run on the first file's machine: neither figure nor a line pointing to one.
    (tmp_path / "figures" / "cpu.png").unlink()
    no_runs = dict(preset, runs=[], summary={})
    files[0].write_text(json.dumps(no_runs))
    cpu.update_readme(files[:1])
    assert not (tmp_path / "figures" / "cpu.png").exists() and "figures/cpu.png" not in (tmp_path / "README.md").read_text()


def test_a_file_measured_before_the_preset_changed_shows_how_it_differs_without_any_set():
    older = _result("older", [], 12, [0.88] * 3, [700] * 3, **{"epochs": 12, "optimizer": "sgd", "muon_lr": 0.05})
    row = next(line for line in cpu.render_table([older]).splitlines() if "| 12 | 3 |" in line)
    assert row.startswith("| `optimizer=sgd`, `epochs=12` | 12 |")  # muon_lr meant nothing without Muon


def _measured(precision: str, images_per_second: float, peaks: dict, native_bf16: bool) -> dict:
    """A preset file whose throughput epoch trained in ``precision``, at 2e8 FLOP an image, beside ``peaks``."""
    result = _result(precision, [], 10, [0.88] * 3, [450] * 3)
    result["throughput"] = [{"preset": "cpu", "pipeline": "gpu", "precision": precision,
                             "images_per_second": images_per_second}]
    result["flops"] = {"training_flops_per_image": 2e8, "peak_gflops": peaks}
    result["cpu_native_bf16"] = native_bf16
    result["summary"] = cpu.summarize(result)
    return result


def test_without_bf16_arithmetic_only_the_fp32_peak_is_the_limit():
    result = _measured("fp32", 500.0, {"bf16": {"matmul": 0.3, "conv3x3": 20.0},  # 100 GFLOP/s achieved
                                       "fp32": {"matmul": 180.0, "conv3x3": 200.0}}, native_bf16=False)
    assert result["summary"]["fraction_of_peak"] == {"fp32": 0.5}
    text = cpu.render_table([result])
    assert "50% of the fp32 peak" in text and "bf16 peak" not in text and "no bf16 arithmetic" in text
    result["cpu_native_bf16"] = True  # as files from before the field, measured where bf16 is native
    assert set(cpu.summarize(result)["fraction_of_peak"]) == {"bf16", "fp32"}


def test_the_peak_of_the_precision_it_trained_in_comes_first():
    result = _measured("bf16", 1000.0, {"fp32": {"matmul": 180.0, "conv3x3": 160.0},  # 200 GFLOP/s achieved
                                        "bf16": {"matmul": 400.0, "conv3x3": 400.0}}, native_bf16=True)
    line = next(line for line in cpu.render_table([result]).splitlines() if "GFLOP per training image" in line)
    assert "200 GFLOP/s in bf16: 50% of the bf16 peak" in line and line.index("bf16 peak") < line.index("fp32 peak")


def test_the_flop_count_is_of_the_training_step_alone(monkeypatch):
    device = torch.device("cpu")
    step = cpu.training_flops_per_image(device, batch=2, precision="fp32")

    def timing_first(precision, device):  # as precision="auto" does on a CPU with bf16 arithmetic
        torch.randn(64, 64) @ torch.randn(64, 64)
        return "fp32"

    monkeypatch.setattr(cpu, "resolve_precision", timing_first)
    assert cpu.training_flops_per_image(device, batch=2) == step


def test_throughput_trains_at_full_size_even_with_progressive_resizing(synthetic, monkeypatch):
    sides = []
    build = cpu.build_network

    def recording_model(*args, **kwargs):
        model = build(*args, **kwargs)
        model.register_forward_pre_hook(lambda _module, inputs: sides.append(inputs[0].shape[-1]))
        return model

    monkeypatch.setattr(cpu, "build_network", recording_model)
    measured = cpu.train_images_per_second("cpu", synthetic, "unused", 512, torch.device("cpu"),
                                           progressive_start=16)
    assert measured["images"] == 512 and sides and set(sides) == {32}


def test_readme_from_another_benchmarks_file_is_one_error_naming_it(tmp_path):
    import subprocess
    import sys

    other = cpu.REPO / "benchmarks" / "results" / "block-mix-2026-11-23.json"
    done = subprocess.run([sys.executable, str(cpu.REPO / "benchmarks" / "cpu.py"), "--readme", str(other)],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"error: {other} does not hold the results this table reads")
