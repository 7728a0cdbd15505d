"""Run by tests/test_distributed.py, under torchrun or alone: train a tiny coursework net on synthetic data.

Usage: ``python tests/ddp_worker.py RUN_DIR ARTIFACT_DIR [FIELD=VALUE ...] [--resume] [--sigterm-rank1-at N]``.
Besides the run files (written by rank 0 only), each rank saves its final weights and the list of files it
wrote into ARTIFACT_DIR, so the test can compare ranks. ``--sigterm-rank1-at N`` sends SIGTERM to rank 1
alone during its N-th forward pass, as a signal that reaches one process of the job; the run then exits
with the status the command line gives.
"""

import json
import os
import signal
import sys
from pathlib import Path

import torch

from cifar_utils import distributed, io, models
from cifar_utils.config import parse_value
from cifar_utils.data import synthetic_dataset
from cifar_utils.errors import TrainingInterrupted
from cifar_utils.experiment import train
from cifar_utils.presets import from_preset


def tiny_net(num_classes: int = 10) -> torch.nn.Module:
    # No BatchNorm, so per-rank batch statistics cannot make DDP differ from one process.
    backbone = models.Backbone([8, "M", 16], kernel_sizes=(3, 3), batchnorm=False)
    return models.Net(backbone, models.Classifier(backbone.out_channels, num_classes))


def main() -> None:
    run_dir, artifacts = Path(sys.argv[1]), Path(sys.argv[2])
    extra = [a for a in sys.argv[3:] if "=" in a]
    resume = "--resume" in sys.argv
    rank = distributed.env_info().rank
    models.ARCHITECTURES["tiny_test_net"] = tiny_net
    written: list[str] = []
    real_atomic_write = io.atomic_write

    def recording_atomic_write(path, write):
        written.append(Path(path).name)
        return real_atomic_write(path, write)

    io.atomic_write = recording_atomic_write
    # 63 validation images: rank 1's shard ends in a repeated image, which must not count (as in one process).
    overrides = dict(model="tiny_test_net", epochs=2, batch_size=32, eval_batch_size=32, validation_split=63,
                     augmentation="none", optimizer="sgd", lr=0.05, scheduler="none", seed=0,
                     precision="fp32")  # bf16 rounding would hide the equality of DDP and one process
    for item in extra:
        key, value = item.split("=", 1)
        overrides[key] = parse_value(key, value)
    config = from_preset("seed002", **overrides)
    if "--sigterm-rank1-at" in sys.argv and rank == 1:
        at, calls = int(sys.argv[sys.argv.index("--sigterm-rank1-at") + 1]), []

        def sigterm_at_forward(module, args) -> None:
            calls.append(1)
            if len(calls) == at:
                os.kill(os.getpid(), signal.SIGTERM)

        def net_with_sigterm(num_classes: int = 10) -> torch.nn.Module:
            net = tiny_net(num_classes)
            net.register_forward_pre_hook(sigterm_at_forward)
            return net

        models.ARCHITECTURES["tiny_test_net"] = net_with_sigterm
    try:
        result = train(config, run_dir, data=synthetic_dataset(256, 64, seed=0), progress=False, resume=resume)
    except TrainingInterrupted as err:
        print(f"rank {rank} interrupted: {err}")
        raise SystemExit(err.exit_status) from None
    artifacts.mkdir(parents=True, exist_ok=True)
    torch.save(result.model.state_dict(), artifacts / f"weights_rank{rank}.pt")
    (artifacts / f"written_rank{rank}.json").write_text(json.dumps(written))


if __name__ == "__main__":
    main()
