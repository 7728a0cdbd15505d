"""The results table is read from run folders and benchmark files in each real format, never typed."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import pytest
import torch

from cifar_utils.cli import main
from cifar_utils.errors import ConfigError, DataError
from cifar_utils.models import build_model, count_parameters
from cifar_utils.presets import PRESETS, from_preset
from cifar_utils.results import (collect_results, hyperparameter_table, markdown_table, mean_std, plus_minus,
                                 update_readme)

H100 = "NVIDIA H100 80GB HBM3"
JPEG_ROOT = "/work/main/data/cifar10-jpeg"


def write_json(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


def gpu_run_seeds(preset="seed000"):
    """benchmarks/gpu_run.py seeds phase: a capped run on a GPU shared by 5 processes."""
    return {"phase": "seeds", "command": "python benchmarks/gpu_run.py seeds --part 1/5", "dry_run": False,
            "complete": True, "device": H100, "settings": {"presets": [preset], "cap_seconds": 420.0,
                                                          "processes_sharing_the_gpu": 5},
            "runs": [{"preset": preset, "overrides": {"epochs": 3, "pipeline": "gpu"}, "validation_accuracy": 0.6538,
                      "test_accuracy": 0.6508, "train_seconds": 76.6, "epochs": 3, "precision": "bf16",
                      "full_epochs": 40, "capped": True, "cap_seconds": 420.0}],
            "data_root": JPEG_ROOT, "data": f"image folder {JPEG_ROOT}"}


def speed(fast_tests=(0.88, 0.89, 0.9)):
    """benchmarks/speed.py: a results tree, fast under per-budget keys, airbench94 naming no preset."""
    runs = [{"seed": seed, "test_accuracy": acc, "validation_accuracy": acc - 0.01, "train_seconds": 6.0 + seed,
             "epochs": 10} for seed, acc in enumerate(fast_tests)]
    return {"benchmark": "benchmarks/speed.py", "device": f"cuda ({H100})",
            "data": {"description": f"image folder {JPEG_ROOT}", "train_images": 50000, "test_images": 10000},
            "settings": {"runs": len(runs), "presets": {"fast": dict(PRESETS["fast"].overrides)}},
            "results": {"airbench94": {"settings": {"package_version": "0.1.8"},
                                       "runs": [{"seed": 0, "test_accuracy": 0.9, "epochs": 9.9}]},
                        "fast": {"epochs=10": {"settings": {"preset": "fast", "overrides": {
                            "data_root": JPEG_ROOT, "validation_split": 1000, "epochs": 10}, "precision": "bf16"},
                            "test_accuracy": {"mean": 0.0, "std": 0.0, "n": 3}, "runs": runs}}}}


def cpu_preset():
    """benchmarks/cpu.py: the runs name no preset; preset_config does, and only the command names the data."""
    return {"benchmark": "cpu preset", "command": "python benchmarks/cpu.py --data-root data/cifar10-jpeg",
            "device": "cpu (2 threads)", "preset_config": from_preset("cpu").to_dict(),
            "runs": [{"seed": seed, "test_accuracy": acc, "validation_accuracy": acc, "train_seconds": 700.0,
                      "epochs": from_preset("cpu").epochs, "precision": "fp32"}
                     for seed, acc in enumerate((0.86, 0.87, 0.88))]}


def preset_epoch():
    """benchmarks/preset_epoch.py: one record per preset with its whole config and data description."""
    config = {**from_preset("seed003").to_dict(), "data_root": "/tmp/data/cifar10-jpeg", "train_limit": 2000,
              "epochs": 1}
    return {"benchmark": "one epoch per preset", "device": "cpu (2 threads)",
            "runs": [{"preset": "seed003", "parameters": 464154, "train_seconds": 9.9, "test_accuracy": 0.104,
                      "data": "image folder /tmp/data/cifar10-jpeg", "config": config}]}


def run_folder(root, name, seed, test_accuracy):
    """A run folder as `train` writes it (metrics.json with the config inside, history.csv)."""
    config = {**from_preset("seed001").to_dict(), "seed": seed, "data_root": "data"}
    write_json(root / name / "metrics.json", {
        "preset": "seed001", "test_accuracy": test_accuracy, "validation_accuracy": test_accuracy + 0.01,
        "epochs": 30, "train_seconds": 300.0 + seed, "data": "official CIFAR-10 (torchvision) in data",
        "device": f"cuda ({H100})", "precision": "bf16", "config": config})
    (root / name / "history.csv").write_text("epoch,train_loss\n1,2.0\n")


@pytest.fixture
def measured(tmp_path):
    results, runs = tmp_path / "results", tmp_path / "runs"
    write_json(results / "nvidia-h100-seeds-part1of5.json", gpu_run_seeds())
    write_json(results / "nvidia-h100-speed.json", speed())
    write_json(results / "cpu-preset.json", cpu_preset())
    write_json(results / "preset-epoch-cpu.json", preset_epoch())
    write_json(results / "dry.json", {**gpu_run_seeds("seed002"), "dry_run": True})  # not a measurement
    write_json(results / "notes.json", {"unrelated": [1, 2]})
    run_folder(runs, "seed001-a", 0, 0.80)
    run_folder(runs / "nested", "seed001-b", 1, 0.82)
    return runs, results


def rows_of(rows, preset):
    return [row for row in rows if row["preset"] == preset]


def test_every_format_gives_its_rows(measured):
    rows = collect_results(*measured, everything=True)
    (seed000,) = rows_of(rows, "seed000")
    assert (seed000["epochs"], seed000["test accuracy"], seed000["validation accuracy"]) == (
        "3 of 40 (capped)", "65.08%", "65.38%")
    assert seed000["training time"] == "76.6 s (GPU shared by 5 runs)"
    assert (seed000["device"], seed000["data"]) == (f"{H100}, bf16", "JPEG copy")
    assert seed000["settings"] == "pipeline=gpu, epochs=3"  # in the order of the config's fields
    assert seed000["source"].endswith("nvidia-h100-seeds-part1of5.json")
    assert seed000["reported by its report"] == PRESETS["seed000"].reported

    (fast,) = rows_of(rows, "fast")  # airbench94 names no preset: no row
    assert fast["settings"] == "validation_split=1000, epochs=10"
    assert fast["runs"] == "3" and fast["epochs"] == "10 of 12 (shortened)"
    assert fast["test accuracy"] == f"89.00 ± {statistics.stdev([88, 89, 90]):.2f}%"
    assert fast["training time"] == "7.00 ± 1.00 s" and fast["device"] == f"{H100}, bf16"

    (cpu,) = rows_of(rows, "cpu")
    assert (cpu["settings"], cpu["runs"], cpu["data"], cpu["epochs"]) == ("as the preset", "3", "JPEG copy",
                                                                      str(from_preset("cpu").epochs))
    assert cpu["test accuracy"] == "87.00 ± 1.00%" and cpu["device"] == "cpu (2 threads), fp32"

    (seed003,) = rows_of(rows, "seed003")
    assert seed003["settings"] == "train_limit=2000, epochs=1"
    assert seed003["epochs"] == "1 of 50 (shortened)" and seed003["validation accuracy"] == "not recorded"
    with torch.device("meta"):
        assert seed003["parameters"] == f"{count_parameters(build_model('resnet32')):,}"


def test_results_leave_out_partial_data_runs_unless_asked(measured):
    rows = collect_results(*measured)
    assert rows_of(rows, "seed003")[0]["test accuracy"] == "not run yet"  # its only record is a 2,000-image run
    assert all("_limit=" not in row["settings"] for row in rows)
    assert any("_limit=" in row["settings"] for row in collect_results(*measured, everything=True))


def test_run_folders_of_several_seeds_share_a_row_with_mean_and_std(measured):
    (seed001,) = rows_of(collect_results(*measured), "seed001")
    assert seed001["runs"] == "2" and seed001["settings"] == "as the preset"
    assert seed001["test accuracy"] == f"81.00 ± {statistics.stdev([80, 82]):.2f}%"
    assert (seed001["device"], seed001["data"], seed001["epochs"]) == (f"{H100}, bf16", "official CIFAR-10", "30")
    assert seed001["source"].count("metrics.json") == 2


def test_cpu_runs_on_different_cpu_models_get_their_own_rows(tmp_path):
    """CPU times compare only on one CPU model: a benchmark file's and a run folder's model name their row."""
    runs, results = tmp_path / "runs", tmp_path / "results"
    write_json(results / "xeon.json", {**cpu_preset(), "cpu_model": "Intel(R) Xeon(R) Processor"})
    write_json(results / "unknown.json", cpu_preset())  # older runs recorded no CPU model
    for name, model in (("a", "AMD EPYC"), ("b", "AMD EPYC"), ("c", "Intel(R) Xeon(R) Processor")):
        write_json(runs / name / "metrics.json", {
            "preset": "cpu", "test_accuracy": 0.88, "validation_accuracy": 0.88, "epochs": 10, "train_seconds": 400.0,
            "data": "image folder data/cifar10-jpeg", "device": "cpu (2 threads)", "cpu_model": model,
            "precision": "bf16", "config": {**from_preset("cpu").to_dict(), "seed": ord(name)}})
    devices = {(row["device"], row["runs"]) for row in rows_of(collect_results(runs, results), "cpu")}
    from cifar_utils.device import UNKNOWN_CPU, recorded_device
    assert recorded_device({"device": "cpu (8 threads)", "cpu_model": UNKNOWN_CPU}) == "cpu (8 threads)"
    assert devices == {("Intel(R) Xeon(R) Processor (2 threads), fp32", "3"), ("cpu (2 threads), fp32", "3"),
                       ("AMD EPYC (2 threads), bf16", "2"), ("Intel(R) Xeon(R) Processor (2 threads), bf16", "1")}


def test_runs_on_one_gpu_and_on_several_get_their_own_rows(measured, tmp_path):
    runs, results = measured
    run_folder(tmp_path / "ddp", "seed001-c", 2, 0.81)
    metrics = json.loads((tmp_path / "ddp" / "seed001-c" / "metrics.json").read_text())
    write_json(tmp_path / "ddp" / "seed001-c" / "metrics.json", {**metrics, "world_size": 8, "train_seconds": 40.0})
    rows = {row["device"]: row["runs"] for row in rows_of(collect_results([runs, tmp_path / "ddp"], results), "seed001")}
    assert rows == {f"{H100}, bf16": "2", f"8 x {H100}, bf16": "1"}


def test_a_copied_or_exactly_reproduced_run_counts_once(measured, tmp_path):
    runs, results = measured
    shipped = tmp_path / "checkpoints" / "seed001-a"
    shutil.copytree(runs / "seed001-a", shipped)  # as the shipped run sits beside the run it came from
    run_folder(tmp_path / "again", "seed001-a", 0, 0.80)  # the same seed trained again, the same accuracies
    metrics = json.loads((tmp_path / "again" / "seed001-a" / "metrics.json").read_text())
    write_json(tmp_path / "again" / "seed001-a" / "metrics.json", {**metrics, "train_seconds": 333.0})
    (seed001,) = rows_of(collect_results([runs, tmp_path / "checkpoints", tmp_path / "again"], results), "seed001")
    assert seed001["runs"] == "2"
    run_folder(tmp_path / "other", "seed001-c", 0, 0.81)  # the same seed, another result: a measurement
    (seed001,) = rows_of(collect_results([runs, tmp_path / "other"], results), "seed001")
    assert seed001["runs"] == "3"


def test_presets_without_a_run_say_not_run_yet(measured):
    rows = collect_results(*measured)
    missing = [row["preset"] for row in rows if row["test accuracy"] == "not run yet"]
    # seed002's only record is a dry run, seed003's a 2,000-image run
    assert missing == ["seed002", "seed003", "seed004", "fast_best"]
    assert rows[-4:] == [row for row in rows if row["preset"] in missing]
    (seed004,) = rows_of(rows, "seed004")
    assert seed004["epochs"] == "150 (the recipe)" and seed004["runs"] == "0"


def test_missing_folders_hold_no_runs_and_a_corrupt_file_is_one_clear_error(tmp_path):
    rows = collect_results(tmp_path / "no-runs", tmp_path / "no-results")
    assert [row["preset"] for row in rows] == list(PRESETS)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="bad.json"):
        collect_results(tmp_path / "no-runs", tmp_path)


@pytest.mark.parametrize("folder, name, text", [
    ("runs", "metrics.json", "[]"),
    ("runs", "metrics.json", '{"config": "x"}'),
    ("runs", "metrics.json", '{"preset": "cpu", "test_accuracy": "high"}'),
    ("runs", "metrics.json", '{"preset": "cpu", "epochs": "ten"}'),
    ("results", "x.json", '{"preset_config": "cpu", "runs": [{"test_accuracy": 0.5}]}'),
    ("results", "x.json", '{"results": {"settings": {"preset": "cpu"}, "runs": [1]}}'),
])
def test_a_file_that_is_not_a_run_or_benchmark_record_is_named_in_one_error(tmp_path, folder, name, text):
    # The run folders are searched recursively, so another tool's metrics.json can turn up among them.
    path = tmp_path / folder / "some-tool" / name if folder == "runs" else tmp_path / folder / name
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(DataError, match=f"{path} does not hold the results this table reads"):
        collect_results(tmp_path / "runs", tmp_path / "results")


def test_a_results_file_to_render_that_is_missing_or_of_another_kind_is_one_clear_error(tmp_path):
    from cifar_utils.results import render_results_file

    with pytest.raises(ConfigError, match="no results file at"):
        render_results_file(tmp_path / "nonexist.json", lambda record: record)
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(DataError, match="holds no JSON object"):
        render_results_file(tmp_path / "list.json", lambda record: record)
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(DataError, match="other.json does not hold the results this table reads"):
        render_results_file(tmp_path / "other.json", lambda record: record["summary"])


def test_the_hyperparameter_table_says_where_each_value_comes_from():
    rows = {row["setting"]: row for row in hyperparameter_table("seed002")}
    assert rows["augmentation"]["value"] == "affine_jitter"
    assert rows["augmentation"]["source"] == f"chosen here: {PRESETS['seed002'].chosen['augmentation']}"
    assert rows["optimizer"]["source"] == "stated by the report"
    assert rows["precision"]["value"] == "auto" and rows["precision"]["source"].startswith("chosen here:")
    assert set(rows) == set(PRESETS["seed002"].overrides) | set(PRESETS["seed002"].chosen)
    assert {row["source"] for row in hyperparameter_table("fast")} == {"ours (no report)"}
    with pytest.raises(ConfigError):
        hyperparameter_table("seed999")


def test_markdown_table_escapes_pipes():
    text = markdown_table([{"a": "x|y", "b": 1}])
    assert text.splitlines() == ["| a | b |", "|---|---|", "| x\\|y | 1 |"]


README = ("# Title\n\nintro\n<!-- results:start -->\nold table\n<!-- results:end -->\n\n## After\ntext\n"
          "<!-- presets:start -->\n<!-- presets:end -->\n")


def test_update_readme_replaces_only_the_text_between_the_markers(tmp_path):
    path = tmp_path / "README.md"
    path.write_text(README)
    update_readme(path, rows=[{"preset": "seed000", "test accuracy": "1.00%"}])
    text = path.read_text()
    assert text.startswith("# Title\n\nintro\n<!-- results:start -->\n")
    assert "\n<!-- results:end -->\n\n## After\ntext\n<!-- presets:start -->\nGenerated from" in text
    assert text.endswith("<!-- presets:end -->\n") and "| `seed004` |" in text
    assert "old table" not in text and "| seed000 | 1.00% |" in text
    update_readme(path, rows=[{"preset": "seed000", "test accuracy": "1.00%"}])
    assert path.read_text() == text  # idempotent


@pytest.mark.parametrize("broken", [
    README.replace("<!-- results:end -->\n", ""),
    README.replace("<!-- results:start -->\n", ""),
    README + "<!-- results:start -->\n",
    README.replace("<!-- presets:end -->\n", ""),
    "<!-- results:end -->\n" + README.replace("<!-- results:end -->\n", ""),
])
def test_update_readme_refuses_missing_or_misplaced_markers_and_leaves_the_file(tmp_path, broken):
    # (the presets markers come second: a broken results marker must stop the presets table too)
    path = tmp_path / "README.md"
    path.write_text(broken)
    with pytest.raises(ConfigError, match="(results|presets):start"):
        update_readme(path, rows=[{"preset": "x"}])
    assert path.read_text() == broken


def test_the_results_command_prints_the_table_and_updates_the_readme(measured, tmp_path, capsys):
    runs, results = measured
    readme = tmp_path / "README.md"
    readme.write_text(README)
    assert main(["results", "--runs", str(runs), "--results-dir", str(results), "--readme", str(readme)]) == 0
    printed = capsys.readouterr().out
    assert printed.strip() == markdown_table(collect_results(runs, results))
    assert "| seed000 |" in readme.read_text() and "old table" not in readme.read_text()
    assert main(["results", "--runs", str(runs), "--results-dir", str(results), "--readme",
                 str(tmp_path / "missing.md")]) == 2
    assert "error:" in capsys.readouterr().err
    # A mistyped folder would drop its runs from the table without a word: refused, and the README kept.
    before = readme.read_text()
    assert main(["results", "--runs", str(runs), str(tmp_path / "chekpoints"), "--readme", str(readme)]) == 2
    assert f"--runs {tmp_path / 'chekpoints'}: no such folder" in capsys.readouterr().err
    assert readme.read_text() == before


def test_parameter_count_builds_the_architecture_with_the_runs_options():
    from cifar_utils.results import parameter_count

    full, one_by_one = parameter_count("resnet32"), parameter_count("resnet32", (("stem_kernel", 1),))
    assert int(one_by_one.replace(",", "")) < int(full.replace(",", ""))  # report 003's 1x1 stem
    assert parameter_count("resnet32", (("head_pool", "max"),)) == "resnet32 does not take {'head_pool': 'max'}"


def test_a_variant_benchmark_gets_its_own_row_and_the_malloc_file_none(tmp_path):
    results = tmp_path / "results"
    older = from_preset("cpu", head_pool="avg", identity_init=False).to_dict()
    del older["head_pool"], older["identity_init"]  # saved before these fields existed: their defaults
    variant = {**cpu_preset(), "overrides": [], "preset_config": older}
    write_json(results / "cpu-preset.json", cpu_preset())
    write_json(results / "cpu-preset-variant.json", variant)
    write_json(results / "cpu-malloc.json", {"phase": "malloc", "runs": [
        {"setting": "default", "preset": "cpu", "images_per_second": 500.0}]})
    rows = rows_of(collect_results(tmp_path / "no-runs", results, everything=False), "cpu")
    assert sorted(row["settings"] for row in rows) == ["as the preset", "head_pool=avg, identity_init=False"]
    assert all(row["runs"] == "3" for row in rows)  # the malloc file's throughput run is no result


def test_a_faithful_seeds_run_shows_its_variants_settings(tmp_path):
    # gpu_run.py seeds --faithful records only its own overrides; the row must not read as the held-out recipe.
    record = gpu_run_seeds("seed003")
    record["runs"][0].update(faithful=True, capped=False, full_epochs=50, epochs=50,
                             overrides={"epochs": 50, "pipeline": "gpu"})
    write_json(tmp_path / "results" / "seeds-faithful.json", record)
    (row,) = rows_of(collect_results(tmp_path / "no-runs", tmp_path / "results"), "seed003")
    assert row["settings"] == "stem_kernel=1, pipeline=gpu" and row["validation accuracy"] == "65.38%"
    with torch.device("meta"):  # the 1x1 stem has fewer weights than the preset's 3x3 one
        assert row["parameters"] == f"{count_parameters(build_model(from_preset('seed003', faithful=True))):,}"


def test_a_speed_file_is_read_with_the_preset_as_it_was(tmp_path):
    # fast before it took the max-pooling head and identity start: its overrides then lacked both fields.
    record = speed()
    older = record["settings"]["presets"]["fast"]
    for field in ("head_pool", "identity_init"):
        older.pop(field, None)
    write_json(tmp_path / "results" / "speed.json", record)
    (row,) = rows_of(collect_results(tmp_path / "no-runs", tmp_path / "results"), "fast")
    assert row["settings"] == "head_pool=avg, identity_init=False, validation_split=1000, epochs=10"


def test_a_run_without_a_validation_split_says_so(tmp_path):
    record = gpu_run_seeds("seed004")
    record["runs"][0].update(faithful=True, validation_accuracy=None)
    write_json(tmp_path / "results" / "seeds-faithful.json", record)
    (row,) = rows_of(collect_results(tmp_path / "no-runs", tmp_path / "results"), "seed004")
    assert "validation_split=0" in row["settings"] and row["validation accuracy"] == "none held out"


def test_the_epochs_column_says_whether_a_run_was_shorter_or_longer_than_its_recipe():
    from cifar_utils import results

    assert results._epochs([10], 10, capped=False) == "10"
    assert results._epochs([8, 10], 12, capped=False) == "8-10 of 12 (shortened)"
    assert results._epochs([12], 10, capped=False) == "12 (the recipe: 10)"
    assert results._epochs([3], 40, capped=True) == "3 of 40 (capped)"


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "benchmarks" / "results").glob("*.json")),
                         ids=lambda path: path.name)
def test_every_results_file_says_where_when_and_how_it_was_measured(path):
    record = json.loads(path.read_text())
    missing = [key for key in ("device", "torch_version", "command", "date") if not record.get(key)]
    assert not missing, f"{path.name} lacks {missing}"


def test_a_mean_over_fewer_runs_than_the_row_counts_says_how_many():
    from cifar_utils.results import _mean_std, _percent

    assert _mean_std([0.8, 0.9], _percent) == "85.00 ± 7.07%"
    assert _mean_std([0.8, None, 0.9], _percent) == "85.00 ± 7.07% (2 of 3 runs)"
    assert _mean_std([0.8, float("nan")], _percent) == "80.00% (1 of 2 runs)"


def test_benchmark_statistics_give_no_spread_for_one_value():
    assert mean_std([0.5, None, float("nan"), 0.7]) == pytest.approx({"mean": 0.6, "std": 0.1414213, "n": 2})
    one = mean_std([0.8812])
    assert one == {"mean": 0.8812, "std": None, "n": 1} and plus_minus(one, ".2%") == "88.12%"  # not "± 0.00%"
    assert plus_minus(mean_std([1.2, 1.4]), ".2f", unit="x") == "1.30x ± 0.14"
    assert plus_minus(mean_std([]), ".2f") == "-"
