"""Speed benchmark: airbench94, our ``fast`` preset, and ``seed002`` with both data pipelines, side by side.

Everything runs in this one process, on one device and one copy of the data::

    python benchmarks/speed.py --device cuda --data-root /data/cifar10-jpeg        # the real benchmark (GPU)
    python benchmarks/speed.py --device cpu --quick --data-root /tmp/cifar10-jpeg   # a few minutes' smoke test
    python benchmarks/speed.py --table benchmarks/results/cpu-2026-11-22-quick.json  # print a results table

It measures, with ``--runs`` runs each (seeds 0, 1, ...) after one untimed warm-up run:

1. airbench94 from the pip package ``airbench`` (CUDA only; skipped with a message elsewhere), trained on
   the same images: they are written to ``<work dir>/cifar10/{train,test}.pt`` in airbench's format, so it
   never downloads;
2. ``fast`` at each epoch budget of ``--fast-epochs``; the smallest budget whose mean *validation* accuracy
   reaches airbench94's (both validate on held-out training images) gives the time to reach airbench's
   accuracy, and the test accuracies of that budget and of airbench94 are then compared;
3. ``seed002`` for ``--seed002-epochs`` epochs with the torchvision DataLoader pipeline and with the GPU one;
4. ``fast_best`` (``--fast-best-runs`` runs), to report what it reaches.

Every variant is timed the same way, from "data on the device" to "trained weights": building the network,
the whitening fit, every epoch (with our per-epoch validation and checkpoint writes) up to the last step;
neither reading files nor the final evaluation counts. ``torch.compile`` time is reported apart, and so is
the untimed warm-up run. The results go to ``benchmarks/results/<device>-<date>.json`` (``-quick`` added in
quick mode), rewritten atomically after every run; an existing file is kept unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import re
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere, without installing the package
    sys.path.insert(0, str(REPO))

from cifar_utils import io  # noqa: E402
from cifar_utils.cli import positive  # noqa: E402
from cifar_utils.data import CifarData, load_dataset, make_splits  # noqa: E402
from cifar_utils.device import describe_device, get_device  # noqa: E402
from cifar_utils.errors import CifarUtilsError, ConfigError  # noqa: E402
from cifar_utils.experiment import train  # noqa: E402
from cifar_utils.gpu_data import GpuEvalLoader  # noqa: E402
from cifar_utils.models import branch_weight_entropy, collect_branch_weights  # noqa: E402
from cifar_utils.presets import PRESETS, from_preset  # noqa: E402
from cifar_utils.results import mean_std, plus_minus, render_results_file  # noqa: E402

RESULTS_DIR = REPO / "benchmarks" / "results"
AIRBENCH_TTA_LEVEL = 2  # airbench94's own setting: mirror and translate
ENTROPY_IMAGES = 1000  # test images whose Block weights give the mean branch entropy

# Full-size settings, and the quick mode's tiny ones (CPU smoke test; the numbers mean nothing for speed).
FULL = dict(runs=5, fast_epochs="8,10,12,14", seed002_epochs=2, fast_best_runs=1, validation_split=1000,
            fast={}, seed002={}, fast_best={})
QUICK = dict(runs=5, fast_epochs="1,2", seed002_epochs=1, fast_best_runs=1, validation_split=64,
             # a handful of steps: a warm-up short enough for them to get past it
             fast=dict(train_limit=128, validation_limit=32, test_limit=32, batch_size=32, eval_batch_size=32,
                       warmup_epochs=0.5),
             seed002=dict(train_limit=32, validation_limit=16, test_limit=16, batch_size=16, eval_batch_size=16),
             fast_best=dict(train_limit=32, validation_limit=16, test_limit=16, batch_size=16, eval_batch_size=16,
                            warmup_epochs=0.5))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="cuda, cuda:1 or cpu (default: the best available)")
    parser.add_argument("--data-root", default=None,
                        help="the CIFAR-10 copy (default: $CIFAR10_ROOT, then ./data)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny subsets and budgets: checks the benchmark end to end in minutes on a CPU")
    parser.add_argument("--runs", type=positive(int), default=None, help="timed runs per variant (default 5)")
    parser.add_argument("--fast-epochs", default=None,
                        help="comma-separated epoch budgets for `fast` (default 8,10,12,14; quick: 1,2)")
    parser.add_argument("--seed002-epochs", type=int, default=None,
                        help="epochs of seed002 (default 2; quick: 1; 0 skips it)")
    parser.add_argument("--fast-best-runs", type=int, default=None, help="runs of fast_best (default 1; 0 skips it)")
    parser.add_argument("--validation-split", type=int, default=None,
                        help="images held out for the per-epoch validation of our presets (default 1000)")
    parser.add_argument("--compile", action="store_true", help="also time `fast` with torch.compile")
    parser.add_argument("--skip-airbench", action="store_true", help="leave airbench94 out")
    parser.add_argument("--out", default=None, help="results file (default benchmarks/results/<device>-<date>.json)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing results file")
    parser.add_argument("--work-dir", default=None, help="scratch folder for runs and airbench's data (default: temp)")
    parser.add_argument("--table", metavar="RESULTS_JSON", default=None,
                        help="only print the Markdown table of an existing results file")
    parser.add_argument("--readme", metavar="README", default=None,
                        help="with --table: also write it between README's <!-- MARKER:start/end --> lines")
    parser.add_argument("--marker", default="gpu-speed", help="with --readme: the marker of the table's section")
    return parser


# ------------------------------------------------------------------------------------------- statistics


def summarize_runs(runs: list[dict], warmup_seconds: float, settings: dict) -> dict:
    summary = {
        "settings": settings,
        "warmup_seconds": warmup_seconds,
        "test_accuracy": mean_std([r["test_accuracy"] for r in runs]),
        "validation_accuracy": mean_std([r["validation_accuracy"] for r in runs]),
        "train_seconds": mean_std([r["train_seconds"] for r in runs]),
        "seconds_per_epoch": mean_std([r["train_seconds"] / r["epochs"] for r in runs]),
    }
    if runs and "branch_entropy_nats" in runs[0]:
        summary["branch_entropy_nats"] = mean_std([r["branch_entropy_nats"] for r in runs])
        summary["uniform_entropy_nats"] = runs[0]["uniform_entropy_nats"]
    return {**summary, "runs": runs}


# --------------------------------------------------------------------------------------------- devices


def device_slug(device: torch.device) -> str:
    """A file-name-safe device name: 'cpu', or the GPU's name such as 'nvidia-h100-80gb-hbm3'."""
    if device.type == "cuda":
        return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")
    return device.type


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def working_directory(path: Path) -> Iterator[None]:
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


# -------------------------------------------------------------------------------------------- airbench


def write_airbench_set(imageset, path: Path) -> None:
    """One image set as airbench reads it: images uint8 [N, 32, 32, 3], labels int64 [N]."""
    io.save_torch({"images": imageset.images.permute(0, 2, 3, 1).contiguous(), "labels": imageset.labels,
                   "classes": list(imageset.classes)}, path)


def run_airbench(splits, device: torch.device, runs: int, work_dir: Path, say: Callable,
                 on_run: Callable[[dict], None] = lambda _summary: None) -> dict:
    """airbench94 with its own hyperparameters, trained on our training split (``splits``) and evaluated on
    our validation and test splits; timed from its loader holding the data on the device to its return."""
    if device.type != "cuda":
        message = f"airbench94 needs a CUDA GPU (it calls torch.cuda directly); skipped on {device.type}"
        say(message)
        return {"skipped": message}
    try:
        import airbench
        from airbench import lib_airbench94
    except ImportError:
        raise ConfigError("airbench is not installed: `pip install airbench` (benchmark only), "
                          "or pass --skip-airbench") from None
    if device.index not in (None, 0):
        raise ConfigError("airbench94 always uses cuda:0; run the benchmark with --device cuda")
    # train94 reads ./cifar10/test.pt on every call (for its verbose log only): there it is our small
    # validation split, so that read costs little; the test split sits in a folder of its own.
    write_airbench_set(splits.train, work_dir / "cifar10" / "train.pt")
    write_airbench_set(splits.validation, work_dir / "cifar10" / "test.pt")
    write_airbench_set(splits.test, work_dir / "cifar10_test" / "test.pt")
    hyp = lib_airbench94.hyp["opt"]
    with working_directory(work_dir):
        def loader():  # reads train.pt onto the GPU: done before the clock starts
            return airbench.CifarLoader("cifar10", train=True, batch_size=hyp["batch_size"],
                                        aug=lib_airbench94.hyp["aug"], altflip=True)

        started = time.perf_counter()
        airbench.warmup94(train_loader=loader(), verbose=False)
        synchronize(device)
        warmup_seconds = time.perf_counter() - started
        evaluation = {"validation_accuracy": airbench.CifarLoader("cifar10", train=False, batch_size=2000),
                      "test_accuracy": airbench.CifarLoader("cifar10_test", train=False, batch_size=2000)}
        results = []
        for run in range(runs):
            torch.manual_seed(run)  # airbench draws from the global generator
            train_loader = loader()
            synchronize(device)
            started = time.perf_counter()
            model = airbench.train94(train_loader=train_loader, verbose=False)
            synchronize(device)
            seconds = time.perf_counter() - started
            record = {"seed": run, "train_seconds": seconds, "epochs": hyp["train_epochs"], "compile_seconds": 0.0}
            for key, eval_loader in evaluation.items():
                record[key] = airbench.evaluate(model, eval_loader, tta_level=AIRBENCH_TTA_LEVEL)
            results.append(record)
            say(f"[airbench94] run {run + 1}/{runs}: validation {record['validation_accuracy']:.2%}, "
                f"test {record['test_accuracy']:.2%}, {seconds:.2f} s")
            settings = {"package_version": getattr(airbench, "__version__", _package_version("airbench")),
                        "train_images": len(splits.train), "tta_level": AIRBENCH_TTA_LEVEL,
                        "timing": "wall time of train94(train_loader) after cuda synchronize, the loader already "
                                  "holding the training images on the GPU: builds the network, fits the "
                                  "whitening, trains; excludes the final evaluation"}
            on_run(summarize_runs(results, warmup_seconds, settings))
    return summarize_runs(results, warmup_seconds, settings)


def _package_version(name: str) -> Optional[str]:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


# ------------------------------------------------------------------------------------------ our presets


def branch_entropy(model: torch.nn.Module, splits, device: torch.device) -> dict:
    """Mean entropy (nats) of the Blocks' branch weights on the first test images, with the uniform maximum."""
    loader = GpuEvalLoader(splits.test, splits.mean, splits.std, ENTROPY_IMAGES, device)
    images, _ = next(iter(loader))
    weights = collect_branch_weights(model, images)
    if not weights:
        return {}
    branches = weights[0].shape[1]
    return {"branch_entropy_nats": branch_weight_entropy(weights), "uniform_entropy_nats": math.log(branches),
            "mean_branch_weights": [[round(v, 4) for v in a.mean(0).tolist()] for a in weights]}


class RunClock:
    """A ``log`` for :func:`train` that times a run from "data on the device" to "trained weights".

    ``train`` logs "splits: ..." just before it copies the data onto the device (milliseconds on a GPU) and
    builds the network, and one "epoch N/N ..." line after the last epoch's checkpoint, just before the
    final evaluation; the span between the two is the timed part. Everything else it logs is dropped.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.start: Optional[float] = None
        self.end: Optional[float] = None

    def __call__(self, message: str) -> None:
        if message.startswith("splits:"):
            self.start = time.perf_counter()
        elif message.startswith("epoch "):
            synchronize(self.device)  # the epoch line follows a read-back, so this is already settled
            self.end = time.perf_counter()

    def seconds(self) -> float:
        if self.start is None or self.end is None:
            raise CifarUtilsError("train() no longer logs the 'splits:' and 'epoch N/N' lines this benchmark "
                                  "times runs with; update RunClock in benchmarks/speed.py")
        return self.end - self.start


def timed_train(config, folder: Path, data: CifarData, device: torch.device):
    """``train(config)`` on ``data``; the result and its seconds from data on the device to trained weights,
    compilation left out (it is in ``metrics["compile_seconds"]``)."""
    clock = RunClock(device)
    result = train(config, folder, device=str(device), progress=False, log=clock, data=data)
    return result, clock.seconds() - result.metrics["compile_seconds"]


def run_preset(label: str, preset: str, overrides: dict, data: CifarData, device: torch.device, runs: int,
               work_dir: Path, say: Callable, on_run: Callable[[dict], None] = lambda _summary: None) -> dict:
    """One untimed warm-up run (1 epoch), then ``runs`` (at least 1) timed runs of ``preset`` with ``overrides``."""
    folder = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=work_dir))
    started = time.perf_counter()
    train(from_preset(preset, **{**overrides, "epochs": 1, "seed": 10_000}), folder / "warmup", device=str(device),
          progress=False, log=lambda _message: None, data=data)
    warmup_seconds = time.perf_counter() - started
    results = []
    for run in range(runs):
        config = from_preset(preset, **{**overrides, "seed": run})
        result, seconds = timed_train(config, folder / f"run{run}", data, device)
        record = {"seed": run, "test_accuracy": result.metrics["test_accuracy"],
                  "validation_accuracy": result.metrics["validation_accuracy"],
                  "train_seconds": seconds, "epochs": len(result.history),
                  "epoch_seconds": [row["seconds"] for row in result.history],
                  "compile_seconds": result.metrics["compile_seconds"],
                  "total_seconds": result.metrics["total_seconds"],
                  "final_train_loss": result.history[-1]["train_loss"],
                  **branch_entropy(result.model, result.splits, device)}
        results.append(record)
        say(f"[{label}] run {run + 1}/{runs}: validation {record['validation_accuracy']:.2%}, "
            f"test {record['test_accuracy']:.2%}, {record['train_seconds']:.2f} s")
        sizes = {"train": len(result.splits.train), "validation": len(result.splits.validation),
                 "test": len(result.splits.test)}
        settings = {"preset": preset, "overrides": overrides, "split_sizes": sizes,
                    "precision": result.metrics["precision"]}
        on_run(summarize_runs(results, warmup_seconds, settings))
    return summarize_runs(results, warmup_seconds, settings)


# ------------------------------------------------------------------------------------------ comparisons


def compare(results: dict) -> dict:
    """The issue's targets, computed from the measured means (None where a part was skipped)."""
    out: dict = {}
    airbench = results.get("airbench94", {})
    reference = airbench.get("validation_accuracy", {}).get("mean")
    reference_seconds = airbench.get("train_seconds", {}).get("mean")
    fast = {budget: summary for budget, summary in results.get("fast", {}).items() if summary.get("runs")}
    if reference is None:
        out["fast_time_to_airbench_accuracy"] = {"value": None, "reason": "airbench94 was skipped"}
    else:
        out["fast_time_ratio_to_airbench"] = {budget: summary["train_seconds"]["mean"] / reference_seconds
                                              for budget, summary in fast.items()}
        # Chosen on validation, so the test accuracies below stay an unbiased comparison.
        reached = [(summary["train_seconds"]["mean"], budget) for budget, summary in fast.items()
                   if summary["validation_accuracy"]["mean"] >= reference]
        if not reached:
            out["fast_time_to_airbench_accuracy"] = {
                "value": None, "reason": f"no `fast` budget reached airbench94's mean validation accuracy {reference:.4f}"}
        else:
            seconds, budget = min(reached)
            out["fast_time_to_airbench_accuracy"] = {
                "value": seconds, "budget": budget, "chosen_on": "validation accuracy",
                "airbench_validation_accuracy": reference, "airbench_seconds": reference_seconds,
                "ratio_to_airbench": seconds / reference_seconds,
                "fast_test_accuracy": fast[budget]["test_accuracy"]["mean"],
                "airbench_test_accuracy": airbench["test_accuracy"]["mean"],
                "target": "at most 2x airbench94 (stretch: 1x)"}
    torchvision, gpu = results.get("seed002_torchvision"), results.get("seed002_gpu")
    if torchvision and gpu:
        out["seed002_epoch_speedup"] = {
            "value": torchvision["seconds_per_epoch"]["mean"] / gpu["seconds_per_epoch"]["mean"],
            "target": "at least 10x"}
        out["seed002_accuracy_gap"] = {
            "value": gpu["test_accuracy"]["mean"] - torchvision["test_accuracy"]["mean"],
            "target": "within +-0.005 (gpu minus torchvision)"}
    best = results.get("fast_best")
    if best and best["runs"]:
        out["fast_best"] = {"test_accuracy": best["test_accuracy"]["mean"], "train_seconds": best["train_seconds"]["mean"],
                            "target": "96% within 300 s of training"}
    return out


# ---------------------------------------------------------------------------------------------- tables


def _pct(stat: dict) -> str:
    return plus_minus(stat, ".2%")


def _sec(stat: dict) -> str:
    return plus_minus(stat, ".2f")


def markdown_table(report: dict) -> str:
    """The results as a Markdown table, headed by where and how they were measured."""
    mode = "CPU quick mode: tiny subsets, not meaningful as speed or accuracy numbers" if report["quick"] else "full"
    lines = [f"Measured {report['date'][:10]} on {report['device']} (torch {report['torch_version']}, "
             f"CUDA {report['cuda_version'] or 'none'}) on {report['data']['description']}; {mode}.",
             f"Command: `{report['command']}`", "",
             "| variant | runs | validation accuracy | test accuracy | training s | s / epoch | warm-up s "
             "| branch entropy (nats) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    rows = []
    for name, summary in report["results"].items():
        if name == "fast":
            rows += [(f"fast, {budget}", s) for budget, s in summary.items()]
        else:
            rows.append((name, summary))
    for name, summary in rows:
        if "skipped" in summary:
            lines.append(f"| {name} | - | skipped: {summary['skipped']} | | | | | |")
            continue
        entropy = "-"
        if "branch_entropy_nats" in summary:
            entropy = f"{summary['branch_entropy_nats']['mean']:.3f} of {summary['uniform_entropy_nats']:.3f}"
        validation = summary.get("validation_accuracy", {"mean": None})  # absent from files made before it
        lines.append(f"| {name} | {summary['test_accuracy']['n']} | {_pct(validation)} | {_pct(summary['test_accuracy'])} | "
                     f"{_sec(summary['train_seconds'])} | {_sec(summary['seconds_per_epoch'])} | "
                     f"{summary['warmup_seconds']:.1f} | {entropy} |")
    lines.append("")
    for name, item in report["comparisons"].items():
        lines.append(f"- {name}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                              for k, v in item.items()))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ main


def results_path(args: argparse.Namespace, device: torch.device, date: str) -> Path:
    if args.out:
        return Path(args.out)
    return RESULTS_DIR / f"{device_slug(device)}-{date}{'-quick' if args.quick else ''}.json"


def run_benchmark(args: argparse.Namespace) -> Path:
    mode = QUICK if args.quick else FULL
    runs = args.runs if args.runs is not None else mode["runs"]
    try:
        given = mode["fast_epochs"] if args.fast_epochs is None else args.fast_epochs  # "" is an error, not the default
        fast_epochs = [int(e) for e in given.split(",")]
    except ValueError:
        raise ConfigError(f"--fast-epochs expects comma-separated whole numbers such as 8,10,12; "
                          f"got {args.fast_epochs!r}") from None
    seed002_epochs = mode["seed002_epochs"] if args.seed002_epochs is None else args.seed002_epochs
    fast_best_runs = mode["fast_best_runs"] if args.fast_best_runs is None else args.fast_best_runs
    validation_split = mode["validation_split"] if args.validation_split is None else args.validation_split
    if runs < 1 or min(fast_epochs) < 1 or seed002_epochs < 0 or fast_best_runs < 0:
        raise ConfigError("--runs and --fast-epochs must be at least 1, --seed002-epochs and --fast-best-runs "
                          "0 or more")
    device = get_device(args.device)
    now = datetime.datetime.now()
    out_path = io.new_results_path(results_path(args, device, now.strftime("%Y-%m-%d")), args.overwrite)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # for every variant alike (airbench sets it when imported)
    say = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731

    data = load_dataset(args.data_root)
    say(f"device {describe_device(device)}; data {data.description} ({len(data.train)} train, {len(data.test)} test)")
    common = {"data_root": args.data_root, "validation_split": validation_split}
    results: dict = {}
    report = {
        "benchmark": "benchmarks/speed.py",
        "command": " ".join(["python", "benchmarks/speed.py", *args.argv]),
        "date": now.isoformat(timespec="seconds"),
        "quick": args.quick,
        "complete": False,
        "device": describe_device(device),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda if device.type == "cuda" else None,
        "cudnn_version": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "data": {"description": data.description, "train_images": len(data.train), "test_images": len(data.test)},
        "settings": {"runs": runs, "fast_epochs": fast_epochs, "seed002_epochs": seed002_epochs,
                     "fast_best_runs": fast_best_runs, "validation_split": validation_split,
                     "cudnn_benchmark": device.type == "cuda",
                     "timing": "from data on the device to trained weights, compilation apart (see RunClock)",
                     "presets": {name: PRESETS[name].overrides for name in ("fast", "fast_best", "seed002")}},
        "results": results,
        "comparisons": {},
    }

    def save(*keys: str) -> Callable[[dict], None]:
        """Store a variant's summary under ``results[keys...]`` and rewrite the file: a benchmark cut short
        still leaves every run it finished."""
        def store(summary: dict) -> None:
            node = results
            for key in keys[:-1]:
                node = node.setdefault(key, {})
            node[keys[-1]] = summary
            report["comparisons"] = compare(results)
            io.save_json(report, out_path)
        return store

    if args.work_dir:
        Path(args.work_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.work_dir) as scratch:
        work_dir = Path(scratch)
        if args.skip_airbench:
            save("airbench94")({"skipped": "--skip-airbench"})
        else:
            # airbench94 trains on our seed-0 split of the same images and validates on its held-out part.
            splits = make_splits(data, validation_split, seed=0)
            save("airbench94")(run_airbench(splits, device, runs, work_dir, say, on_run=save("airbench94")))
        for epochs in fast_epochs:
            overrides = {**common, **mode["fast"], "epochs": epochs}
            key = ("fast", f"epochs={epochs}")
            save(*key)(run_preset(f"fast-{epochs}ep", "fast", overrides, data, device, runs, work_dir, say,
                                  on_run=save(*key)))
        if args.compile:
            overrides = {**common, **mode["fast"], "compile": True}
            save("fast_compiled")(run_preset("fast-compiled", "fast", overrides, data, device, runs, work_dir, say,
                                             on_run=save("fast_compiled")))
        for pipeline in ("torchvision", "gpu") if seed002_epochs else ():
            overrides = {**common, **mode["seed002"], "epochs": seed002_epochs, "pipeline": pipeline}
            key = f"seed002_{pipeline}"
            save(key)(run_preset(f"seed002-{pipeline}", "seed002", overrides, data, device, runs, work_dir, say,
                                 on_run=save(key)))
        if fast_best_runs:
            overrides = {**common, **mode["fast_best"]}
            if args.quick:
                overrides["epochs"] = 1
            save("fast_best")(run_preset("fast_best", "fast_best", overrides, data, device, fast_best_runs,
                                         work_dir, say, on_run=save("fast_best")))

    report["complete"] = True
    io.save_json(report, out_path)
    print(markdown_table(report))
    say(f"results written to {out_path}")
    return out_path


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.readme and not args.table:
        parser.error("--readme writes a results file's table: give the file with --table")
    if args.marker != parser.get_default("marker") and not args.readme:
        parser.error("--marker names the README section that --readme writes: give --readme too")
    args.argv = sys.argv[1:] if argv is None else list(argv)  # for the results file's command line
    try:
        if args.table:
            table = render_results_file(args.table, markdown_table)
            print(table)
            if args.readme:
                from cifar_utils.results import replace_section

                marker = "" if args.marker == parser.get_default("marker") else f" --marker {args.marker}"
                replace_section(args.readme, args.marker, f"Generated by `python benchmarks/speed.py --table "
                                f"{args.table} --readme {args.readme}{marker}`.\n\n{table}")
            return 0
        run_benchmark(args)
    except CifarUtilsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the results file, rewritten after every run, says complete: false
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
