"""Command line: ``python -m cifar_utils {train,evaluate,presets,plot,report,results} ...``.

Examples::

    python -m cifar_utils train --preset seed000 --epochs 1 --train-limit 2000 --data-root data/cifar10-jpeg
    python -m cifar_utils train --preset seed003 --out runs/r32 --resume
    python -m cifar_utils train --preset seed002 --set grad_clip=1.0 --set tta=flip
    python -m cifar_utils evaluate --checkpoint runs/r32/checkpoint.pt
    python -m cifar_utils presets                 # every preset; `presets seed004`: one's recipe and its sources
    python -m cifar_utils presets --fields        # every setting, its default and what it does
    python -m cifar_utils train --preset seed002 --faithful    # the report's own recipe where ours differs
    python -m cifar_utils plot runs/r32           # its training curves, in runs/r32/training_curves.png
    python -m cifar_utils results --runs checkpoints --readme README.md   # the README's tables

Mistakes (a wrong path, an unknown preset or field, an invalid value) print one ``error:`` line and
exit with status 2; Ctrl-C during training saves a checkpoint and exits with status 130, SIGTERM with 143.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import Optional, Sequence

from .checkpoint import CURVES_NAME
from .config import PRECISIONS, cli_value, field_defaults, field_help, parse_value
from .distributed import env_info
from .errors import CifarUtilsError, ConfigError, TrainingInterrupted
from .presets import PRESETS, faithful_presets, from_preset

# Command-line flags that map one-to-one onto config fields; their values parse as `--set` parses them.
FIELD_FLAGS = ("epochs", "lr", "batch_size", "seed", "data_root", "train_limit", "validation_limit", "test_limit",
               "pipeline", "validation_split", "accumulation_steps", "grad_clip", "precision", "checkpoint_every_steps")


def _field_flag(name: str):
    """argparse type of ``--NAME``: the field's own type, "none" for None where the field takes it."""
    def parse(text: str):
        try:
            return parse_value(name, text)
        except ConfigError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    return parse


def positive(kind: type):
    """argparse type for a count or a duration of the benchmark scripts: a ``kind`` (int or float) above 0,
    so that 0 never runs nothing (or falls back to a default) without a word."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {kind.__name__}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be above 0")
        return value
    return parse


class _Parser(argparse.ArgumentParser):
    """argparse whose bad-argument errors read like every other error here: one ``error:`` line that says
    where the options are listed, instead of the whole usage block first. Subcommands inherit it."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (`{self.prog} --help` lists the options)\n")


# Commands that only print: piped into `head`, they stop quietly when the reader does.
LISTING_COMMANDS = ("presets", "results")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m cifar_utils", description=__doc__.split("\n")[0],
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a preset and write metrics.json, history.csv, checkpoint.pt")
    train.add_argument("--preset", required=True, help=f"one of: {', '.join(PRESETS)}")
    train.add_argument("--faithful", action="store_true",
                       help=f"run the report's own recipe where the preset differs ({', '.join(faithful_presets())})")
    for name in FIELD_FLAGS:  # absent unless given, so that "--grad-clip none" can set None
        train.add_argument("--" + name.replace("_", "-"), dest=name, type=_field_flag(name), default=argparse.SUPPRESS,
                           help=f"config.{name}: {field_help()[name]}".replace("%", "%%"))
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                       help="override any config field (repeatable); see `presets --fields`")
    train.add_argument("--download", action="store_true", help=field_help()["download"])
    train.add_argument("--skip-bad-files", action="store_true", help=field_help()["skip_bad_files"])
    train.add_argument("--out", default=None, help="run directory (default: runs/<preset>-<time>)")
    train.add_argument("--device", default=None, help="cpu, cuda, cuda:1 or mps (default: best available)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    train.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")
    train.add_argument("--no-progress", action="store_true", help="no progress bar, only per-epoch lines")

    evaluate = commands.add_parser("evaluate", help="evaluate a checkpoint on its test split")
    evaluate.add_argument("--checkpoint", required=True)
    evaluate.add_argument("--data-root", default=None)
    evaluate.add_argument("--device", default=None)
    evaluate.add_argument("--batch-size", type=int, default=None, help="evaluation batch (default: the run's)")
    evaluate.add_argument("--precision", default=None, choices=PRECISIONS,
                          help="autocast precision (default: the run's; fp16 needs a CUDA GPU)")

    presets = commands.add_parser("presets", help="list the presets, show one's recipe, or list the config fields")
    presets.add_argument("name", nargs="?", default=None,
                         help="a preset: its settings, each with where it comes from (the report, or chosen here and why)")
    presets.add_argument("--fields", action="store_true",
                         help="every config field with what it does and its default (with NAME: the preset's value)")

    plot = commands.add_parser("plot", help="draw the training curves of a run, or compare several runs, as a PNG")
    plot.add_argument("runs", nargs="+", metavar="RUN",
                      help="run folders (train's --out): finished, or still training (its last checkpoint)")
    plot.add_argument("--out", default=None, help=f"the PNG to write (default for one run: RUN/{CURVES_NAME})")
    plot.add_argument("--overwrite", action="store_true", help="replace an existing --out")

    report = commands.add_parser("report", help="run notebooks 01-05 through papermill")
    report.add_argument("--smoke", action="store_true", help="tiny profile: a few hundred images, one epoch")
    report.add_argument("--data-root", default=None)
    report.add_argument("--output-dir", default=None, help="where the executed notebooks, figures and runs go (default: notebooks in place, figures/ and runs/)")
    report.add_argument("--notebooks", nargs="+", default=None, metavar="NAME",
                        help="only these notebooks, in this order, by file name, stem or number (03_train.ipynb, 03_train, 03; "
                             "default: all five; 04 needs 03's run)")
    report.add_argument("--no-shipped", action="store_true",
                        help="03 trains its run even where the committed one (checkpoints/report/03_train) has "
                             "its settings, so every output comes from this machine")
    report.add_argument("--resume", action="store_true",
                        help="03 and 05 continue their interrupted runs from the checkpoints instead of stopping")

    results = commands.add_parser("results", help="print the results table of every run and benchmark file")
    results.add_argument("--runs", nargs="+", default=None,
                         help="folders searched for run folders (default: runs, if it exists; the README's table "
                              "uses checkpoints, the committed runs)")
    results.add_argument("--results-dir", default="benchmarks/results",
                         help="folder of benchmark JSON files (default: benchmarks/results)")
    results.add_argument("--everything", action="store_true",
                         help="also list partial-data runs (smoke, quick, probes) and tuning/profiling grid points")
    results.add_argument("--readme", default=None,
                         help="also write the table (and the presets table) between their <!-- ...:start/end --> lines here")
    return parser


def parse_settings(items: list[str]) -> dict:
    """Config values from ``--set FIELD=VALUE`` items, each parsed to its field's type."""
    settings = {}
    for item in items:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise ConfigError(f"--set expects FIELD=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        if key.strip() in settings:
            raise ConfigError(f"--set {key.strip()} is given twice; give each field once")
        settings[key.strip()] = parse_value(key.strip(), value.strip())
    return settings


def config_overrides(args: argparse.Namespace) -> dict:
    """Config overrides from the dedicated flags and from ``--set FIELD=VALUE``."""
    overrides = {name: getattr(args, name) for name in FIELD_FLAGS if hasattr(args, name)}
    if args.download:
        overrides["download"] = True
    if args.skip_bad_files:
        overrides["skip_bad_files"] = True
    settings = parse_settings(args.overrides)
    for name in settings:
        if name in overrides:  # (None too: `--grad-clip none`) which one wins would be a guess: refuse, naming both
            flag = f"--{name.replace('_', '-')}"
            raise ConfigError(f"{name} is given twice, by {flag} and by --set {name}=...; give it once (either way)")
    return {**overrides, **settings}


def refuse_empty_flags(args: argparse.Namespace) -> None:
    """An empty flag value (``--out "$DIR"`` with DIR unset) is an error, never the flag's default."""
    empty = [name for name, value in vars(args).items() if value == "" and name != "argv"]
    if empty:
        raise ConfigError(f"--{empty[0].replace('_', '-')} was given an empty value; give one, or leave the flag out "
                          "for its default")


def run(args: argparse.Namespace) -> int:
    refuse_empty_flags(args)
    if args.command == "train":
        from .experiment import train

        config = from_preset(args.preset, faithful=args.faithful, **config_overrides(args))
        train(config, args.out, device=args.device, resume=args.resume, overwrite=args.overwrite,
              progress=not args.no_progress)
    elif args.command == "evaluate":
        from .experiment import evaluate_checkpoint

        result, config = evaluate_checkpoint(args.checkpoint, args.data_root, args.device, batch_size=args.batch_size,
                                             precision=args.precision)
        print(f"test accuracy {result.accuracy:.2%} on {len(result.labels)} images (preset {config.preset})")
        for name, acc in result.per_class_accuracy.items():
            print(f"  {name:<12} {acc:.2%}")
    elif args.command == "presets":
        if args.fields:
            print_fields(args.name)
        elif args.name is not None:
            print_preset(args.name)
        else:
            for name, preset in PRESETS.items():
                # A long source (the cpu and fast presets cite their issue) goes on a line of its own.
                source = preset.source if len(preset.source) <= 11 else f"{preset.source}\n" + " " * (10 + 1 + 11)
                print(f"{name:<10} {source:<11} {preset.description}")
    elif args.command == "plot":
        from .report import plot_run_folders

        print(f"wrote {plot_run_folders(args.runs, args.out, overwrite=args.overwrite)}")
    elif args.command == "report":
        from .engine import sigterm_interrupts
        from .report import NOTEBOOKS, run_report

        try:
            with sigterm_interrupts():
                run_report(smoke=args.smoke, data_root=args.data_root, output_dir=args.output_dir,
                           notebooks=args.notebooks or NOTEBOOKS, use_shipped=not args.no_shipped,
                           resume=args.resume)
        except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM (Terminated)
            print("interrupted: the notebooks that ran to the end are saved, and a run stopped during training "
                  "keeps its last checkpoint (written at the end of every epoch); run the same command with "
                  "--resume to continue from there", file=sys.stderr)
            return 128 + getattr(err, "signum", signal.SIGINT)
    elif args.command == "results":
        from .results import collect_results, markdown_table, update_readme

        missing = [folder for folder in args.runs or () if not Path(folder).is_dir()]
        if missing:  # a mistyped folder would silently drop its runs from the table
            raise ConfigError(f"--runs {' '.join(missing)}: no such folder; name folders that hold run folders "
                              "(the committed runs are in checkpoints)")
        if not Path(args.results_dir).is_dir():  # nor may a missing one drop every benchmark row
            raise ConfigError(f"--results-dir {args.results_dir}: no such folder; run from the repository root or "
                              "name the folder of benchmark results files (benchmarks/results)")
        rows = collect_results(args.runs or ["runs"], args.results_dir, everything=args.everything)
        if args.readme:  # before printing, which a closed pipe (| head) may stop
            update_readme(args.readme, rows=rows, command=" ".join(["python -m cifar_utils", *args.argv]))
            print(f"updated the results section of {args.readme}", file=sys.stderr)
        print(markdown_table(rows))
    return 0


def print_fields(preset: Optional[str] = None) -> None:
    """Every config field, its value (the default, or ``preset``'s) as ``--set`` takes it, and what it does."""
    values = from_preset(preset).to_dict() if preset is not None else field_defaults()
    for name, value in values.items():
        print(f"{name:<24} {cli_value(value):<14} {field_help()[name]}")


def print_preset(name: str) -> None:
    """Preset ``name``: what it is, where its recipe comes from, and each setting it makes, with its source."""
    from .results import hyperparameter_table  # local import: results loads plotting and the models

    rows = hyperparameter_table(name)  # ConfigError for an unknown name
    preset = PRESETS[name]
    print(f"{name}: {preset.description}\nsource: {preset.source}\nreported: {preset.reported}\n")
    width = max(len(row["setting"]) for row in rows)
    value_width = min(24, max(len(row["value"]) for row in rows))
    for row in rows:
        print(f"{row['setting']:<{width}}  {row['value']:<{value_width}}  {row['source']}")
    if preset.faithful:
        print(f"\n--faithful, the report's own recipe: "
              f"{', '.join(f'{key}={cli_value(value)}' for key, value in preset.faithful.items())}")
    print(f"\nevery setting, with what it does: python -m cifar_utils presets {name} --fields")


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit:  # --help: flush its text here, where a closed pipe is caught
            sys.stdout.flush()
            raise
    except BrokenPipeError:  # --help piped into a reader that stopped early
        return _closed_pipe()
    args.argv = list(sys.argv[1:] if argv is None else argv)  # quoted as the source of generated tables
    try:
        status = run(args)
        sys.stdout.flush()  # here, where a closed pipe is caught below, not in Python's flush at exit
        return status
    except TrainingInterrupted as err:
        if env_info().rank == 0:  # under torchrun every process stops at the same step; the first says so
            print(f"interrupted: {err}", file=sys.stderr)
        return err.exit_status
    except CifarUtilsError as err:
        rank = env_info().rank
        # A bad setting fails identically on every torchrun rank: rank 0 alone says so.
        if rank == 0 or not isinstance(err, ConfigError):
            print(f"error: {err}" if rank == 0 else f"error (rank {rank}): {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        if args.command not in LISTING_COMMANDS:  # a training whose log pipe broke (tee died) must not end silently
            raise
        return _closed_pipe()


def _closed_pipe() -> int:
    """A listing piped into a reader that stopped early (| head) is not an error: no traceback, status 141."""
    with contextlib.suppress(OSError, ValueError):  # stdout may be no file (a notebook)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's last flush would fail again
    return 141  # what a shell reports for a writer a closed pipe stopped (128 + SIGPIPE)
