"""CPU dry runs of every phase of benchmarks/gpu_run.py, so the GPU measurement kit cannot rot unnoticed.

The numbers mean nothing: tiny data, a step or an epoch each. What is checked is that each phase runs end
to end, skips airbench94 off CUDA with a message, and leaves a results file naming its command, device,
versions and date.
"""

from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_run  # noqa: E402


@pytest.fixture(scope="module")
def noise_root(noise_folder) -> Path:
    """An image folder of random pixels, just big enough for the notebooks' 5,000-image validation split."""
    return noise_folder(510, 10)


def dry_run(phase: str, out: Path, root: Path, *extra: str, capsys=None) -> dict:
    argv = [phase, "--out", str(out), "--device", "cpu", "--dry-run", "--data-root", str(root), *extra]
    assert gpu_run.main(argv) == 0
    [path] = out.glob(f"cpu-*-{phase}*-dryrun.json")
    record = json.loads(path.read_text())
    for key in ("command", "device", "torch_version", "date"):
        assert record[key], key
    assert record["command"].startswith("python benchmarks/gpu_run.py " if phase != "speed" else "python benchmarks/speed.py")
    assert record["complete"] is True
    return record


def test_check(noise_root, tmp_path, capsys):
    record = dry_run("check", tmp_path, noise_root)
    runs = {run["name"]: run for run in record["runs"]}
    # the real epoch ran (loader, loss, optimizer, schedule), only CUDA's sync debug mode was left out
    assert runs["fast_sync_check"]["result"] == (f"skipped: sync debug mode is CUDA-only (cpu); the "
                                                 f"{gpu_run.SYNC_CHECK_BATCHES}-step epoch ran")
    assert "convolution" in runs["fast_step_profile"]["table"]
    assert runs["airbench94_step_profile"]["skipped"] == "needs CUDA"
    assert set(record["packages"]) == set(gpu_run.PACKAGES)


def test_speed(noise_root, tmp_path, capsys):
    record = dry_run("speed", tmp_path, noise_root)
    assert "skipped" in record["results"]["airbench94"]
    fast = record["results"]["fast"]["epochs=1"]
    assert fast["test_accuracy"]["n"] == 2 and fast["validation_accuracy"]["n"] == 2
    assert all(run["train_seconds"] > 0 for run in fast["runs"])
    assert record["comparisons"]["fast_time_to_airbench_accuracy"]["reason"] == "airbench94 was skipped"
    assert "airbench94 needs a CUDA GPU" in capsys.readouterr().err


def test_tune(noise_root, tmp_path, capsys):
    record = dry_run("tune", tmp_path, noise_root)
    assert [run["overrides"]["lr"] for run in record["runs"]] == [0.5, 1.0]
    assert record["best"] in [run["overrides"] for run in record["runs"]]
    capsys.readouterr()
    [path] = tmp_path.glob("*.json")
    assert gpu_run.main(["--table", str(path)]) == 0
    table = capsys.readouterr().out
    assert "| fast | epochs=1, lr=0.5 |" in table and "dry run" in table


def test_a_results_file_is_never_replaced_and_bad_input_leaves_no_stub(noise_root, tmp_path, capsys):
    record = dry_run("tune", tmp_path, noise_root)
    [path] = tmp_path.glob("*.json")
    argv = ["tune", "--out", str(tmp_path), "--device", "cpu", "--dry-run", "--data-root", str(noise_root)]
    assert gpu_run.main([*argv, "--grid", "lr=0.7"]) == 2
    assert "already holds results" in capsys.readouterr().err
    assert json.loads(path.read_text()) == record  # the finished results are still there
    elsewhere = tmp_path / "other"
    assert gpu_run.main(["seeds", "--out", str(elsewhere), *argv[3:], "--part", "3/2"]) == 2
    assert "error:" in capsys.readouterr().err and not list(elsewhere.glob("*.json"))
    assert gpu_run.main([*argv[:2], str(elsewhere), "--device", "bogus", "--dry-run"]) == 2
    assert "not a device this kit trains on" in capsys.readouterr().err


def test_seeds_one_part(noise_root, tmp_path):
    # Part 5 of 5 is seed003 alone, the cheapest preset on a CPU; the split into parts is checked below.
    record = dry_run("seeds", tmp_path, noise_root, "--part", "5/5")
    [run] = record["runs"]
    assert run["preset"] == "seed003" and run["epochs"] <= run["full_epochs"] == 50
    assert set(run["probe_seconds_per_epoch"]) == {"gpu", "torchvision"}


def test_seeds_faithful(noise_root, tmp_path):
    # Part 5 of 5 is seed003, the cheapest on a CPU (seed001's 156M-parameter head takes seconds a step).
    record = dry_run("seeds", tmp_path, noise_root, "--part", "5/5", "--faithful")
    [run] = record["runs"]
    assert run["preset"] == "seed003" and run["faithful"] is True and run["full_epochs"] == 50
    assert "-seeds-faithful-part5of5-" in next(tmp_path.glob("*.json")).name


def test_best(noise_root, tmp_path, monkeypatch):
    # capped_run itself trains in the seeds tests; a real fast_best run on the CPU would add 20 s for nothing.
    calls = []

    def fake_capped_run(phase, preset, base, cap_seconds, folder, pipelines=("gpu", "torchvision"), faithful=False):
        calls.append((preset, base, pipelines, faithful))
        return {"preset": preset, "cap_seconds": cap_seconds, "epochs": 1, "test_accuracy": 0.1, "train_seconds": 1.0}

    monkeypatch.setattr(gpu_run, "capped_run", fake_capped_run)
    record = dry_run("best", tmp_path, noise_root)
    [run] = record["runs"]
    assert run["preset"] == "fast_best" and run["cap_seconds"] == 2.0
    assert calls == [("fast_best", gpu_run.TINY_FAST, ("gpu",), False)]  # its augmentations are GPU-only
    assert record["settings"]["target"].startswith("96% test accuracy")


def test_report_one_notebook(noise_root, tmp_path):
    record = dry_run("report", tmp_path, noise_root, "--notebooks", "01_data.ipynb", "--report-dir",
                     str(tmp_path / "report"))
    assert [run["notebook"] for run in record["runs"]] == ["01_data.ipynb"]
    with tarfile.open(tmp_path / "report.tar.gz") as tar:
        names = tar.getnames()
    assert "notebooks/01_data.ipynb" in names and any(name.startswith("figures/") for name in names)


@pytest.fixture
def fake_repo(tmp_path, monkeypatch):
    """gpu_run's report phase pointed at a copy of the repository's layout, with ``run_report`` replaced by a
    fake that records its arguments and writes what a notebook would: its executed copy, a figure and, for
    03 and 05, their runs. A notebook named in ``fail`` writes its figure and run, then fails."""
    from cifar_utils import report

    repo = tmp_path / "repo"
    (repo / "figures").mkdir(parents=True)
    (repo / "figures" / "committed.png").write_text("old")
    monkeypatch.setattr(gpu_run, "REPO", repo)
    calls, fail = [], set()

    def fake_run_report(*, notebooks, output_dir, use_shipped, resume, **kwargs):
        [name] = notebooks
        calls.append({"notebook": name, "output_dir": output_dir, "use_shipped": use_shipped, "resume": resume})
        (repo / "figures" / f"{name}.png").write_text("new")
        runs = report.profile_runs_dir(repo, smoke=False)
        if name in report.NOTEBOOK_RUNS:
            run = runs / report.NOTEBOOK_RUNS[name] / ("lr_0.25/seed_0" if name.startswith("05") else "")
            run.mkdir(parents=True, exist_ok=True)
            for file in ("metrics.json", "history.csv", "checkpoint.pt"):
                (run / file).write_text("x")
        if name in fail:
            failed = report.failed_notebooks_dir(repo)
            failed.mkdir(parents=True, exist_ok=True)
            (failed / name.replace(".ipynb", ".failed.ipynb")).write_text("partial")
            raise report.NotebookFailed(f"{name} stopped at cell 3: ValueError: boom")
        (repo / "notebooks").mkdir(exist_ok=True)
        (repo / "notebooks" / name).write_text("executed")
        return [repo / "notebooks" / name]

    monkeypatch.setattr(report, "run_report", fake_run_report)
    return calls, fail


def report_in_place(out: Path, root: Path, notebooks: str, *extra: str) -> int:
    return gpu_run.main(["report", "--out", str(out), "--device", "cpu", "--data-root", str(root),
                         "--notebooks", notebooks, *extra])


def packed(out: Path) -> set[str]:
    with tarfile.open(out / "report.tar.gz") as tar:
        return set(tar.getnames())


def test_report_in_place_trains_03_itself_and_packs_only_what_this_call_made(fake_repo, noise_root, tmp_path):
    calls, _ = fake_repo
    assert report_in_place(tmp_path / "out", noise_root, "05_lr_comparison.ipynb,01_data.ipynb,03_train.ipynb") == 0
    assert calls == [{"notebook": n, "output_dir": None, "use_shipped": False, "resume": False}  # the report's order
                     for n in ("01_data.ipynb", "03_train.ipynb", "05_lr_comparison.ipynb")]
    run = "runs/report-full/03_train/"
    sweep_run = "runs/report-full/lr_comparison/lr_0.25/seed_0/"
    assert packed(tmp_path / "out") == {  # not figures/committed.png, nor a sweep run's checkpoint
        "notebooks/01_data.ipynb", "notebooks/03_train.ipynb", "notebooks/05_lr_comparison.ipynb",
        "figures/01_data.ipynb.png", "figures/03_train.ipynb.png", "figures/05_lr_comparison.ipynb.png",
        run + "metrics.json", run + "history.csv", run + "checkpoint.pt",
        sweep_run + "metrics.json", sweep_run + "history.csv"}


def test_report_resume_continues_what_a_cut_short_call_left(fake_repo, noise_root, tmp_path):
    calls, _ = fake_repo
    assert report_in_place(tmp_path / "out", noise_root, "05_lr_comparison.ipynb", "--resume") == 0
    assert calls == [{"notebook": "05_lr_comparison.ipynb", "output_dir": None, "use_shipped": False, "resume": True}]


def test_report_a_failed_notebook_comes_back_apart_and_the_others_still_run(fake_repo, noise_root, tmp_path, capsys):
    calls, fail = fake_repo
    fail.add("03_train.ipynb")
    assert report_in_place(tmp_path / "out", noise_root, "03_train.ipynb,04_evaluate.ipynb,05_lr_comparison.ipynb") == 2
    assert [call["notebook"] for call in calls] == ["03_train.ipynb", "05_lr_comparison.ipynb"]  # 04 needs 03's run
    names = packed(tmp_path / "out")
    assert {"failed/03_train.failed.ipynb", "failed/figures/03_train.ipynb.png"} <= names
    assert not any("03_train/" in name or name == "figures/03_train.ipynb.png" for name in names)
    assert "notebooks/05_lr_comparison.ipynb" in names
    [path] = (tmp_path / "out").glob("*-report.json")
    record = json.loads(path.read_text())
    assert record["failed_notebooks"] == ["03_train.ipynb"] and "boom" in record["runs"][0]["failed"]
    assert record["runs"][1] == {"notebook": "04_evaluate.ipynb", "skipped": "03_train.ipynb failed"}
    assert "03_train.ipynb failed" in capsys.readouterr().err


def test_report_dry_run_in_place_is_refused(noise_root, tmp_path, capsys, monkeypatch):
    from cifar_utils import report

    monkeypatch.setattr(report, "run_report", lambda **kwargs: pytest.fail("the refused report ran"))
    assert gpu_run.main(["report", "--out", str(tmp_path), "--device", "cpu", "--dry-run",
                         "--data-root", str(noise_root)]) == 2
    assert "--report-dir" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.json"))  # refused before any results file


def test_parts_cover_every_preset_once():
    parts = [gpu_run.part_of(gpu_run.SEED_PRESETS, f"{k}/2") for k in (1, 2)]
    assert sorted(sum(parts, [])) == sorted(gpu_run.SEED_PRESETS)
    assert ("seed000" in parts[0]) != ("seed004" in parts[0])  # the two long ones are split up


@pytest.mark.parametrize("argv, message", [
    (["seeds", "--part", "3/2"], "--part expects K/N"),
    (["tune", "--grid", "lr"], "--grid expects FIELD=V1,V2"),
    (["tune", "--grid", "no_such_field=1"], "no_such_field"),
    (["report", "--notebooks", "06_missing.ipynb"], "unknown notebook"),
    (["tune", "--grid", "lr=.5,1e"], "1e"),
    (["tune", "--grid", "colour=red"], "unknown config field: colour"),
])
def test_bad_input_is_one_error_line(noise_root, tmp_path, capsys, argv, message):
    assert gpu_run.main([*argv, "--out", str(tmp_path), "--device", "cpu", "--dry-run",
                         "--data-root", str(noise_root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]
