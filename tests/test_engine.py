"""Engine: gradient accumulation by hand, train/validate epochs, fit's history, schedulers, optimizers, EMA,
device choice and seeding."""

from __future__ import annotations

import copy
import json
import math
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cifar_utils.checkpoint import load_checkpoint
from cifar_utils.config import Config, replace
from cifar_utils.data import ImageSet, ShardedShuffleSampler, make_splits, rank_share
from cifar_utils.device import get_device, set_seed
from cifar_utils.ema import ExponentialMovingAverage, Lookahead
from cifar_utils.engine import fit, train_epoch, validate_epoch
from cifar_utils.errors import ConfigError
from cifar_utils.experiment import make_loaders
from cifar_utils.gpu_data import GpuEvalLoader
from cifar_utils.models import build_model
from cifar_utils.optim import Muon, build_optimizer, build_scheduler, orthogonalize, scheduler_interval

CPU = torch.device("cpu")
HISTORY_KEYS = {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"}


def tiny_batches(n_batches=7, batch=2, features=4, classes=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, features, generator=gen), torch.randint(0, classes, (batch,), generator=gen))
            for _ in range(n_batches)]


def hand_accumulated_sgd(model: nn.Module, batches, k: int, lr: float):
    """Plain SGD where each step uses the mean of the per-batch mean gradients of a group of k batches."""
    model = copy.deepcopy(model)
    params = list(model.parameters())
    loss_sum, correct, count, steps = 0.0, 0, 0, 0
    for start in range(0, len(batches), k):
        group = batches[start:start + k]
        total = [torch.zeros_like(p) for p in params]
        for x, y in group:
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            for acc, g in zip(total, torch.autograd.grad(loss, params)):
                acc += g
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            count += len(y)
        with torch.no_grad():
            for p, g in zip(params, total):
                p -= lr * g / len(group)
        steps += 1
    return model, loss_sum / count, correct / count, steps


@pytest.mark.parametrize("k, expected_steps", [(1, 7), (2, 4), (3, 3), (7, 1), (10, 1)])
def test_gradient_accumulation_matches_hand_computation(k, expected_steps):
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    batches = tiny_batches()
    expected, expected_loss, expected_acc, hand_steps = hand_accumulated_sgd(model, batches, k, lr=0.5)
    assert hand_steps == expected_steps == math.ceil(len(batches) / k)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    steps = []
    optimizer.register_step_post_hook(lambda *_: steps.append(1))
    loss, acc = train_epoch(model, batches, nn.CrossEntropyLoss(), optimizer, CPU, accumulation_steps=k)
    assert len(steps) == expected_steps
    for ours, theirs in zip(model.parameters(), expected.parameters()):
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-6)
    assert loss == pytest.approx(expected_loss, rel=1e-6)
    assert acc == pytest.approx(expected_acc) and 0 <= acc <= 1
    assert model.training
    if k > 1:  # the hand reference really depends on k, so this test can tell k from 1
        per_batch, *_ = hand_accumulated_sgd(_initial_linear(), batches, 1, lr=0.5)
        assert not torch.allclose(per_batch.weight, expected.weight)


def _initial_linear():
    torch.manual_seed(0)
    return nn.Linear(4, 3)


def test_no_gradient_is_left_over_after_an_epoch():
    model = _initial_linear()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    train_epoch(model, tiny_batches(5), nn.CrossEntropyLoss(), optimizer, CPU, accumulation_steps=2)
    assert all(p.grad is None for p in model.parameters())  # the remainder group was stepped and cleared


@pytest.mark.parametrize("pipeline", ["torchvision", "gpu"])
def test_ddp_validation_counts_every_image_once_though_shards_are_padded(pipeline):
    """10 images over 3 ranks: ranks 1 and 2 each read one repeated image to keep the batch counts equal; the
    per-rank counts and sums add up to the whole split's, as the all-reduce over ranks adds them."""
    gen = torch.Generator().manual_seed(0)
    data = ImageSet(torch.randint(0, 256, (10, 3, 4, 4), dtype=torch.uint8, generator=gen),
                    torch.randint(0, 3, (10,), generator=gen), ["a", "b", "c"])
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 3))
    criterion = nn.CrossEntropyLoss()

    def shard(rank, world):
        if pipeline == "gpu":
            return GpuEvalLoader(data, (0.5,) * 3, (0.25,) * 3, 3, "cpu", rank=rank, world_size=world)
        dataset = torch.utils.data.TensorDataset(data.images.float() / 255, data.labels)
        return torch.utils.data.DataLoader(dataset, batch_size=3, sampler=ShardedShuffleSampler(
            len(data), shuffle=False, num_replicas=world, rank=rank))

    whole_loss, whole_acc = validate_epoch(model, shard(0, 1), criterion, CPU)
    shares = [rank_share(len(data), 3, rank) for rank in range(3)]
    assert shares == [4, 3, 3] and [sum(len(y) for _, y in shard(r, 3)) for r in range(3)] == [4, 4, 4]
    per_rank = [validate_epoch(model, shard(rank, 3), criterion, CPU) for rank in range(3)]
    assert sum(n * loss for n, (loss, _) in zip(shares, per_rank)) / 10 == pytest.approx(whole_loss, rel=1e-6)
    assert sum(n * acc for n, (_, acc) in zip(shares, per_rank)) / 10 == pytest.approx(whole_acc, abs=1e-9)


def test_validate_epoch_returns_exact_averages_without_training():
    model = _initial_linear().train()
    batches = tiny_batches(3, batch=3) + tiny_batches(1, batch=1, seed=9)
    before = copy.deepcopy(model.state_dict())
    loss, acc = validate_epoch(model, batches, nn.CrossEntropyLoss(), CPU)
    with torch.no_grad():
        logits = torch.cat([model(x) for x, _ in batches])
        labels = torch.cat([y for _, y in batches])
    assert loss == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-6)  # weighted by batch size
    assert acc == pytest.approx((logits.argmax(1) == labels).double().mean().item())
    assert 0 <= acc <= 1 and isinstance(acc, float)
    assert not model.training
    assert all(p.grad is None for p in model.parameters())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def test_gradient_clipping_bounds_the_update():
    batches = tiny_batches(1)
    for clip, bounded in ((1e-3, True), (None, False)):
        model = _initial_linear()
        start = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        train_epoch(model, batches, nn.CrossEntropyLoss(), optimizer, CPU, grad_clip=clip)
        moved = (torch.cat([p.detach().flatten() for p in model.parameters()]) - start).norm().item()
        assert (moved <= 1e-3 * 1.0001) == bounded, (clip, moved)


# ---------------------------------------------------------------------------------------------- fit


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc = nn.Linear(48, 10)

    def forward(self, x):
        return self.fc(self.pool(x).flatten(1))


def small_setup(synthetic, **overrides):
    values = dict(epochs=3, lr=0.05, optimizer="adam", scheduler="cosine", batch_size=50, eval_batch_size=100,
                  validation_split=100, train_limit=200, augmentation="none", print_every=2, num_workers=0)
    config = Config(**{**values, **overrides}).validate()
    splits = make_splits(synthetic, config.validation_split, config.seed, config.train_limit,
                         config.validation_limit, config.test_limit)
    loaders = make_loaders(splits, config, CPU)
    torch.manual_seed(0)
    model = TinyNet()
    optimizer = build_optimizer(model, config)
    steps_per_epoch = -(-len(loaders.train) // config.accumulation_steps)
    return config, loaders, model, optimizer, build_scheduler(optimizer, config, steps_per_epoch)


def test_fit_history_checkpoint_and_log(synthetic, tmp_path):
    config, loaders, model, optimizer, scheduler = small_setup(synthetic)
    lines = []
    history = fit(model, nn.CrossEntropyLoss(), optimizer, loaders.train, loaders.validation, CPU, config,
                  scheduler=scheduler, checkpoint_dir=tmp_path, progress=False, log=lines.append)
    assert len(history) == 3
    assert [row["epoch"] for row in history] == [1, 2, 3]
    for row in history:
        assert set(row) == HISTORY_KEYS
        assert 0 <= row["train_acc"] <= 1 and 0 <= row["val_acc"] <= 1
        assert math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"]) and row["seconds"] > 0
    # lr is the learning rate at the start of each epoch, following the cosine schedule over 3 epochs.
    cosine = [0.05 * (1 + math.cos(math.pi * e / 3)) / 2 for e in range(3)]
    assert [row["lr"] for row in history] == pytest.approx(cosine)
    assert scheduler.last_epoch == 3
    assert history[-1]["train_loss"] < history[0]["train_loss"]  # it learns the synthetic data
    assert history[-1]["val_acc"] > 0.6  # chance is 0.1
    # One line every print_every=2 epochs, plus the last one.
    assert [line.split()[1] for line in lines] == ["2/3", "3/3"]
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["epoch"] == 3 and state["history"] == history
    assert state["config"]["epochs"] == 3
    for key in ("model", "optimizer", "scheduler"):
        assert state[key] is not None
    torch.testing.assert_close(state["model"]["fc.weight"], model.fc.weight.detach())


def test_fit_without_a_validation_loader_records_nan_validation(synthetic, tmp_path):
    config, loaders, model, optimizer, scheduler = small_setup(synthetic, validation_split=0)
    assert loaders.validation is None
    lines = []
    history = fit(model, nn.CrossEntropyLoss(), optimizer, loaders.train, None, CPU, config, scheduler=scheduler,
                  checkpoint_dir=tmp_path, progress=False, log=lines.append)
    assert len(history) == 3 and all(set(row) == HISTORY_KEYS for row in history)
    assert all(math.isnan(row["val_loss"]) and math.isnan(row["val_acc"]) for row in history)
    assert all(math.isfinite(row["train_loss"]) and 0 <= row["train_acc"] <= 1 for row in history)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert all("no validation" in line and "nan" not in line for line in lines)


def test_train_with_validation_split_zero_uses_every_training_image_and_reports_no_validation(
        synthetic, tmp_path, monkeypatch):
    from cifar_utils import experiment, models
    from cifar_utils.report import read_run

    monkeypatch.setitem(models.ARCHITECTURES, "tiny_engine_net", lambda num_classes=10: TinyNet())
    config = Config(dataset="synthetic", model="tiny_engine_net", validation_split=0, epochs=2, batch_size=100,
                    augmentation="none", num_workers=0, test_limit=50)
    lines = []
    result = experiment.train(config, tmp_path / "run", device="cpu", progress=False, log=lines.append,
                              data=synthetic)
    assert len(result.splits.train) == len(synthetic.train) and len(result.splits.validation) == 0
    metrics = result.metrics
    assert metrics["split_sizes"] == {"train": len(synthetic.train), "validation": 0, "test": 50}
    assert metrics["validation_accuracy"] is None and metrics["validation_cross_entropy"] is None
    assert metrics["best_validation_accuracy"] is None and 0 <= metrics["test_accuracy"] <= 1
    saved = read_run(tmp_path / "run")
    assert {k: saved.metrics[k] for k in ("validation_accuracy", "best_validation_accuracy")} == dict.fromkeys(
        ("validation_accuracy", "best_validation_accuracy"))
    assert len(saved.history) == 2 and all(math.isnan(row["val_acc"]) for row in saved.history)
    assert not any("nan" in line for line in lines) and "no validation split" in lines[-1]


def test_fit_steps_plateau_with_the_validation_loss(synthetic):
    config, loaders, model, optimizer, _ = small_setup(synthetic, scheduler="plateau", epochs=2)
    seen = []

    class SpyPlateau(torch.optim.lr_scheduler.ReduceLROnPlateau):
        def step(self, metrics, *args, **kwargs):
            seen.append(metrics)
            return super().step(metrics, *args, **kwargs)

    history = fit(model, nn.CrossEntropyLoss(), optimizer, loaders.train, loaders.validation, CPU, config,
                  scheduler=SpyPlateau(optimizer), progress=False, log=lambda _: None)
    assert seen == [row["val_loss"] for row in history]


def test_fit_steps_per_step_schedules_once_per_optimizer_step(synthetic):
    # 200 images / batch 50 = 4 mini-batches; accumulation 3 -> 2 optimizer steps per epoch.
    config, loaders, model, optimizer, scheduler = small_setup(synthetic, scheduler="onecycle", epochs=2,
                                                               accumulation_steps=3)
    assert isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR) and scheduler.total_steps == 4
    fit(model, nn.CrossEntropyLoss(), optimizer, loaders.train, loaders.validation, CPU, config,
        scheduler=scheduler, progress=False, log=lambda _: None)
    assert scheduler.last_epoch == 4


def test_fit_evaluates_the_ema_model(synthetic):
    config, loaders, model, optimizer, scheduler = small_setup(synthetic, epochs=1, ema_decay=0.9)
    ema = ExponentialMovingAverage(model, 0.9)
    history = fit(model, nn.CrossEntropyLoss(), optimizer, loaders.train, loaders.validation, CPU, config,
                  scheduler=scheduler, averager=ema, progress=False, log=lambda _: None)
    ema_loss, _ = validate_epoch(ema.module, loaders.validation, nn.CrossEntropyLoss(), CPU)
    live_loss, _ = validate_epoch(model, loaders.validation, nn.CrossEntropyLoss(), CPU)
    assert history[0]["val_loss"] == pytest.approx(ema_loss, rel=1e-9)
    assert ema_loss != pytest.approx(live_loss, rel=1e-6)
    assert ema.updates == 4


def test_ema_is_an_exponential_average_of_the_weights_after_each_step():
    model = _initial_linear()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    snapshots = []
    optimizer.register_step_post_hook(lambda *_: snapshots.append([p.detach().clone() for p in model.parameters()]))
    ema = ExponentialMovingAverage(model, 0.8)
    expected = [p.detach().clone() for p in model.parameters()]  # the average starts at the initial weights
    train_epoch(model, tiny_batches(5), nn.CrossEntropyLoss(), optimizer, CPU, averager=ema)
    assert len(snapshots) == 5 and ema.updates == 5
    for t, snap in enumerate(snapshots):
        d = min(0.8, t / (t + 1))  # the warm-up (a plain mean): 0, 1/2, 2/3, 3/4, then 0.8
        expected = [d * e + (1 - d) * s for e, s in zip(expected, snap)]
    for ours, theirs in zip(ema.module.parameters(), expected):
        torch.testing.assert_close(ours, theirs)
    assert not torch.allclose(ema.module.weight, model.weight)


def test_the_configured_decay_takes_effect_within_a_short_run():
    # The old warm-up, (1 + t) / (10 + t), held any decay of 0.99 or more below 0.99 for 890 steps.
    model = nn.Linear(2, 2)
    averages = {decay: ExponentialMovingAverage(model, decay) for decay in (0.9, 0.95)}
    for _ in range(40):
        with torch.no_grad():
            model.weight.add_(1.0)
        for ema in averages.values():
            ema.update(model)
    assert averages[0.9].module.weight[0, 0] > averages[0.95].module.weight[0, 0] + 1  # 0.9 follows faster


def test_ema_skips_frozen_parameters_and_averages_batchnorm_statistics_with_the_weights():
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    model[1].weight.requires_grad_(False)
    ema = ExponentialMovingAverage(model, 0.5)
    with torch.no_grad():
        model[0].weight.add_(2.0)
        model[1].weight.add_(5.0)  # frozen: never averaged (it never changes in training)
        model[1].running_mean.add_(1.0)
        model[1].num_batches_tracked.add_(7)
    ema.updates = 100  # past the warm-up
    before, frozen_before = ema.module[0].weight.clone(), ema.module[1].weight.clone()
    ema.update(model)
    torch.testing.assert_close(ema.module[0].weight, 0.5 * before + 0.5 * model[0].weight)
    # The statistics of the averaged weights: averaged as they are, not the live model's (timm's EMA does so too).
    torch.testing.assert_close(ema.module[1].running_mean, torch.full((3,), 0.5))
    assert ema.module[1].num_batches_tracked.item() == 7  # an integer counter is copied
    torch.testing.assert_close(ema.module[1].weight, frozen_before)
    assert all(not p.requires_grad for p in ema.module.parameters())


# --------------------------------------------------------------------------------------- schedulers


def _lrs_over(scheduler, optimizer, steps):
    lrs = [optimizer.param_groups[0]["lr"]]
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    return lrs


def _optimizer(lr=0.1):
    return torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)


def test_cosine_schedule():
    optimizer = _optimizer(0.1)
    config = Config(lr=0.1, epochs=4, scheduler="cosine", min_lr=0.01)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch=10)
    assert isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR) and scheduler.T_max == 4
    expected = [0.01 + 0.09 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(5)]
    assert _lrs_over(scheduler, optimizer, 4) == pytest.approx(expected)
    assert scheduler_interval(config) == "epoch"
    assert build_scheduler(_optimizer(), Config(scheduler="cosine", cosine_t_max=100, epochs=40), 5).T_max == 100


def test_plateau_schedule_cuts_after_patience():
    optimizer = _optimizer(0.1)
    config = Config(lr=0.1, scheduler="plateau", plateau_patience=1, plateau_factor=0.5, min_lr=0.03)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch=10)
    lrs = []
    for loss in (1.0, 0.9, 0.9, 0.9, 0.95, 0.99, 1.0, 1.0):
        scheduler.step(loss)
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.03, 0.03, 0.03])  # floored at min_lr
    assert scheduler_interval(config) == "epoch"


def test_onecycle_schedule_spans_all_optimizer_steps():
    optimizer = _optimizer(0.1)
    config = Config(lr=0.2, epochs=3, scheduler="onecycle")
    scheduler = build_scheduler(optimizer, config, steps_per_epoch=5)
    assert scheduler.total_steps == 15
    lrs = _lrs_over(scheduler, optimizer, 14)
    assert max(lrs) == pytest.approx(0.2, rel=0.05)
    assert lrs.index(max(lrs)) in (3, 4)  # warm-up for 30% of the run
    assert lrs[:4] == sorted(lrs[:4]) and lrs[4:] == sorted(lrs[4:], reverse=True)
    assert lrs[0] == pytest.approx(0.2 / 25) and lrs[-1] < 1e-5
    assert scheduler_interval(config) == "step"


def test_warmup_cosine_schedule():
    optimizer = _optimizer(0.1)
    config = Config(lr=0.1, epochs=3, scheduler="warmup_cosine", warmup_epochs=1.0, min_lr=0.001)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch=4)
    lrs = _lrs_over(scheduler, optimizer, 12)
    expected = [0.025, 0.05, 0.075, 0.1]
    for step in range(4, 13):
        progress = (step - 4) / 8
        expected.append(0.001 + (0.1 - 0.001) * 0.5 * (1 + math.cos(math.pi * progress)))
    assert lrs == pytest.approx(expected)
    assert scheduler_interval(config) == "step"
    no_warmup = build_scheduler(_optimizer(0.1), Config(lr=0.1, epochs=2, scheduler="warmup_cosine"), 3)
    assert no_warmup.get_last_lr()[0] == pytest.approx(0.1)


def test_warmup_linear_schedule_decays_in_a_straight_line_to_its_floor():
    optimizer = _optimizer(0.1)
    config = Config(lr=0.1, epochs=3, scheduler="warmup_linear", warmup_epochs=1.0, min_lr=0.001)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch=4)
    lrs = _lrs_over(scheduler, optimizer, 12)
    expected = [0.025, 0.05, 0.075, 0.1] + [0.001 + (0.1 - 0.001) * (1 - (step - 4) / 8) for step in range(4, 13)]
    assert lrs == pytest.approx(expected)
    assert lrs[-1] == pytest.approx(0.001) and scheduler_interval(config) == "step"


def test_a_warmup_can_start_part_way_up():
    optimizer = _optimizer(0.1)
    config = Config(lr=0.1, epochs=2, scheduler="warmup_linear", warmup_epochs=1.0, warmup_start=0.2)
    lrs = _lrs_over(build_scheduler(optimizer, config, steps_per_epoch=4), optimizer, 3)
    assert lrs == pytest.approx([0.04, 0.06, 0.08, 0.1])  # 0.2 * lr + 0.8 * lr * (step + 1) / 4


@pytest.mark.parametrize("scheduler", ["cosine", "warmup_cosine", "warmup_linear", "plateau"])
def test_min_lr_is_the_floor_of_every_parameter_group(scheduler):
    # Muon's filters (0.2 x lr) and BatchNorm (4 x lr) start at other rates than lr; every group ends at
    # min_lr, none rises towards it, whichever schedule decays.
    config = Config(lr=0.1, epochs=2, scheduler=scheduler, optimizer="muon", muon_lr_scale=0.2,
                    norm_bias_lr_scale=4.0, min_lr=0.005, plateau_patience=0, plateau_factor=0.1)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(1, 3, 5, 5))
    optimizer = build_optimizer(model, config)
    scheduler_ = build_scheduler(optimizer, config, steps_per_epoch=3)
    peaks = sorted(g["lr"] for g in optimizer.param_groups)
    assert peaks == pytest.approx([0.02, 0.1, 0.4])
    steps = {"cosine": 2, "plateau": 20}.get(scheduler, 2 * 3)  # per epoch, per validation, per step
    for _ in range(steps):
        before = [g["lr"] for g in optimizer.param_groups]
        optimizer.step()
        scheduler_.step(1.0) if scheduler == "plateau" else scheduler_.step()
        if not scheduler.startswith("warmup"):  # (a warm-up rises at first)
            assert all(g["lr"] <= lr for g, lr in zip(optimizer.param_groups, before))
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.005] * 3)


def test_min_lr_must_stay_below_every_groups_rate():
    with pytest.raises(ConfigError, match=r"min_lr=0.03 is invalid: it must be below lr x muon_lr_scale \(0.02\)"):
        Config(lr=0.1, optimizer="muon", muon_lr_scale=0.2, min_lr=0.03).validate()
    Config(lr=0.1, optimizer="sgd", min_lr=0.03).validate()


def test_a_run_no_longer_than_its_warm_up_says_so_and_how_to_keep_the_presets_shape():
    from cifar_utils.experiment import _short_run_note
    from cifar_utils.presets import from_preset

    note = _short_run_note(from_preset("cpu", epochs=1))
    assert note.startswith("note: warmup_epochs=2 is not shorter than the run (1 epoch)")
    assert note.endswith("cpu warms up for 20% of its run, and --set warmup_epochs=0.2 keeps that share")
    assert _short_run_note(from_preset("cpu")) is None
    assert _short_run_note(from_preset("cpu", epochs=2, warmup_epochs=0.4)) is None
    assert _short_run_note(from_preset("seed003", epochs=1)) is None  # no warm-up to outlast


def test_no_scheduler():
    assert build_scheduler(_optimizer(), Config(scheduler="none"), 10) is None


# --------------------------------------------------------------------------------------- optimizers


def test_optimizers_from_config():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    model[0].weight.requires_grad_(False)
    sgd = build_optimizer(model, Config(optimizer="sgd", lr=0.05, momentum=0.8, nesterov=True, weight_decay=1e-4))
    assert type(sgd) is torch.optim.SGD
    group = sgd.param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (0.05, 0.8, True, 1e-4)
    assert len(group["params"]) == 1  # the frozen weight is left out; biases are in the second group
    assert [len(g["params"]) for g in sgd.param_groups] == [1, 2]
    assert sgd.param_groups[1]["weight_decay"] == 1e-4  # decayed like the weights by default
    adam = build_optimizer(model, Config(optimizer="adam", lr=1e-3, weight_decay=1e-5))
    assert type(adam) is torch.optim.Adam
    assert (adam.param_groups[0]["lr"], adam.param_groups[0]["weight_decay"]) == (1e-3, 1e-5)
    adamw = build_optimizer(model, Config(optimizer="adamw", lr=2e-3, weight_decay=1e-2))
    assert type(adamw) is torch.optim.AdamW
    assert (adamw.param_groups[0]["lr"], adamw.param_groups[0]["weight_decay"]) == (2e-3, 1e-2)


def test_norm_and_bias_parameters_get_their_own_learning_rate_and_no_decay_when_asked():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    config = Config(optimizer="sgd", lr=0.1, weight_decay=1e-3, norm_bias_lr_scale=8.0)
    weights, norm_bias = build_optimizer(model, config).param_groups
    assert {id(p) for p in weights["params"]} == {id(model[0].weight), id(model[3].weight)}
    assert len(norm_bias["params"]) == 4  # conv bias, BN weight and bias, Linear bias
    assert norm_bias["lr"] == pytest.approx(0.8)
    assert norm_bias["lr"] * norm_bias["weight_decay"] == pytest.approx(0.1 * 1e-3)  # same decay per step
    no_decay = build_optimizer(model, replace(config, weight_decay_norm_bias=False)).param_groups[1]
    assert no_decay["weight_decay"] == 0.0


@pytest.mark.parametrize("shape", [(16, 40), (40, 16), (128, 1152)])
def test_orthogonalize_moves_singular_values_near_one_and_keeps_singular_vectors(shape):
    torch.manual_seed(0)
    matrix = torch.randn(shape)
    matrix[0] *= 30  # one direction dominates the raw matrix
    result = orthogonalize(matrix)
    u, _, vh = torch.linalg.svd(matrix, full_matrices=False)
    in_matrix_basis = u.T @ result @ vh.T  # diagonal when the singular vectors are kept
    singular, raw = in_matrix_basis.diag(), torch.linalg.svdvals(matrix)
    assert torch.allclose(in_matrix_basis, torch.diag(singular), atol=1e-5)
    assert raw.max() / raw.min() > 30
    assert singular.min() > 0.5 and singular.max() < 1.25  # 3 Newton-Schulz steps: near 1, not exactly 1


def test_muon_groups_conv_filters_apart_and_steps_them_orthogonally():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(1, 3, 5, 5))
    config = Config(optimizer="muon", lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3, muon_lr_scale=0.5,
                    muon_momentum=0.6)
    optimizer = build_optimizer(model, config)
    assert type(optimizer) is Muon
    weights, norm_bias, filters = optimizer.param_groups
    assert [id(p) for p in filters["params"]] == [id(model[0].weight)]
    assert (filters["lr"], filters["momentum"], filters["orthogonalize"], filters["weight_decay"]) == (0.05, 0.6, True, 0)
    assert build_optimizer(model, replace(config, lr=0.2)).param_groups[2]["lr"] == 0.1  # lr scales the filters too
    assert [id(p) for p in weights["params"]] == [id(model[3].weight)] and not weights["orthogonalize"]
    assert (weights["lr"], weights["momentum"], weights["weight_decay"]) == (0.1, 0.9, 1e-3)

    conv = model[0].weight
    before = conv.detach().clone()
    conv.grad = torch.randn_like(conv)
    rescaled = before * (8 ** 0.5 / before.norm())  # norm sqrt(C_out) before the step
    expected = rescaled - 0.05 * orthogonalize(conv.grad.view(8, -1)).view_as(conv)  # Nesterov scales, no turn
    optimizer.step()
    assert torch.allclose(conv.detach(), expected, atol=1e-6)


def test_muon_steps_other_parameters_as_torch_sgd():
    torch.manual_seed(0)
    ours, reference = nn.Linear(4, 3), nn.Linear(4, 3)
    reference.load_state_dict(ours.state_dict())
    config = Config(optimizer="muon", lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2)
    muon = build_optimizer(ours, config)
    sgd = build_optimizer(reference, replace(config, optimizer="sgd"))
    for _ in range(3):
        x = torch.randn(5, 4)
        for model, optimizer in ((ours, muon), (reference, sgd)):
            optimizer.zero_grad()
            model(x).square().sum().backward()
            optimizer.step()
    for a, b in zip(ours.parameters(), reference.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_preset_optimizers():
    from cifar_utils.presets import from_preset

    model = nn.Linear(2, 2)
    assert type(build_optimizer(model, from_preset("seed000"))) is torch.optim.Adam
    assert type(build_optimizer(model, from_preset("seed001"))) is torch.optim.AdamW
    sgd = build_optimizer(model, from_preset("seed003"))
    assert type(sgd) is torch.optim.SGD and sgd.param_groups[0]["momentum"] == 0.9
    assert sgd.param_groups[0]["weight_decay"] == 1e-4


# ------------------------------------------------------------------------------------ device and seed


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_precision_uses_bf16_only_on_cpus_where_it_is_faster(monkeypatch, native, expected):
    from cifar_utils import device as device_module

    monkeypatch.setattr(device_module, "cpu_bf16_is_faster", lambda: native)
    assert device_module.resolve_precision("auto", CPU) == expected
    assert device_module.resolve_precision("fp32", CPU) == "fp32"  # an explicit choice is kept


def test_bf16_speed_is_not_measured_on_cpus_without_bf16(monkeypatch):
    from cifar_utils import device as device_module

    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(device_module, "cpu_bf16_measurement", None)  # calling it would fail
    assert device_module.cpu_bf16_is_faster() is False


@pytest.fixture
def bf16_cache(tmp_path, monkeypatch):
    """An empty precision cache, and a scripted timing in place of the real one: returns the speedups it
    was asked for."""
    from cifar_utils import device as device_module

    monkeypatch.setenv("CIFAR_UTILS_CACHE", str(tmp_path / "cache/cifar_utils"))
    speedups = [1.5, 1.0]
    monkeypatch.setattr(device_module, "_measure_bf16_speedup", lambda: speedups.pop(0))
    device_module.cpu_bf16_measurement.cache_clear()
    yield device_module
    device_module.cpu_bf16_measurement.cache_clear()


def test_the_bf16_measurement_is_made_once_per_machine_so_every_run_chooses_alike(bf16_cache, tmp_path):
    first = bf16_cache.cpu_bf16_measurement()
    assert first.faster and first.speedup == 1.5 and first.cache == tmp_path / "cache/cifar_utils/cpu_precision.json"
    bf16_cache.cpu_bf16_measurement.cache_clear()  # a new process: the file answers, the noisy timing is not rerun
    assert bf16_cache.cpu_bf16_measurement() == first
    # Another CPU (or torch, or thread count) is measured for itself; the first machine's entry stays.
    bf16_cache.cpu_bf16_measurement.cache_clear()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bf16_cache, "_machine_key", lambda: "another CPU")
        assert not bf16_cache.cpu_bf16_measurement().faster
    assert len(json.loads(first.cache.read_text())) == 2


def test_an_unreadable_or_unwritable_precision_cache_only_means_measuring_again(bf16_cache, tmp_path):
    cache = tmp_path / "cache/cifar_utils/cpu_precision.json"
    cache.parent.mkdir(parents=True)
    cache.write_text("{not json")
    assert bf16_cache.cpu_bf16_measurement().speedup == 1.5 and json.loads(cache.read_text())
    bf16_cache.cpu_bf16_measurement.cache_clear()
    cache.unlink()
    cache.mkdir()  # a folder where the file should be: neither readable nor writable as a file
    measured = bf16_cache.cpu_bf16_measurement()
    assert measured.speedup == 1.0 and measured.cache is None and not measured.faster


def test_freed_cpu_memory_is_kept_only_where_glibc_runs(monkeypatch):
    import platform

    from cifar_utils import device as device_module

    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert device_module.keep_freed_cpu_memory() is glibc  # applied (mallopt accepted both settings)
    device_module.keep_freed_cpu_memory.cache_clear()
    monkeypatch.setattr(device_module.platform, "libc_ver", lambda: ("musl", "1.2"))
    try:
        assert device_module.keep_freed_cpu_memory() is False  # another C library: nothing to set
    finally:
        device_module.keep_freed_cpu_memory.cache_clear()


def test_a_cpu_run_says_whether_malloc_keeps_freed_memory(synthetic, tmp_path, monkeypatch):
    from cifar_utils import experiment, models

    monkeypatch.setitem(models.ARCHITECTURES, "tiny_engine_net", lambda num_classes=10: TinyNet())
    monkeypatch.setattr(experiment, "keep_freed_cpu_memory", lambda: True)
    config = Config(dataset="synthetic", model="tiny_engine_net", epochs=1, batch_size=100, augmentation="none",
                    num_workers=0, test_limit=50)
    lines = []
    experiment.train(config, tmp_path / "run", device="cpu", progress=False, log=lines.append, data=synthetic)
    assert lines[0].startswith("device cpu (") and ", malloc reuses freed memory, precision " in lines[0]


def test_get_device_falls_back_to_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert get_device() == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert get_device() == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert get_device() == torch.device("cuda")


def test_get_device_honours_and_checks_a_preference(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert get_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        get_device("cuda")
    for name in ("gpu0", "xpu", "meta", ""):  # not a name, or a device type the kit cannot train on
        with pytest.raises(ConfigError, match="not a device this kit trains on"):
            get_device(name)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match="torch sees 1 GPU"):
        get_device("cuda:1")


def test_set_seed_makes_every_generator_reproducible():
    def draws():
        return torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random()

    set_seed(7)
    first = draws()
    set_seed(7)
    assert draws() == first
    set_seed(8)
    assert draws() != first
    set_seed(7)
    a = build_model("resnet20").state_dict()
    set_seed(7)
    b = build_model("resnet20").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_importing_the_package_does_not_seed():
    code = "\n".join([
        "import importlib, pkgutil, torch",
        "torch.manual_seed(123); expected = torch.rand(4); torch.manual_seed(123)",
        "import cifar_utils",
        "for m in pkgutil.iter_modules(cifar_utils.__path__):",
        "    if m.name == '__main__': continue",
        "    try: importlib.import_module('cifar_utils.' + m.name)",
        "    except ModuleNotFoundError as err:",  # an optional third-party dependency that is not installed
        "        if (err.name or '').startswith('cifar_utils'): raise",
        "assert torch.equal(torch.rand(4), expected), 'importing cifar_utils changed the RNG state'",
    ])
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_deferred_read_back_still_names_the_first_non_finite_mini_batch():
    """With read_back_every > 1 (the GPU setting) the loss is read late, but the error names the exact batch."""
    from cifar_utils.engine import train_epoch
    from cifar_utils.errors import TrainingDivergedError

    class PoisonAt(torch.nn.Module):
        def __init__(self, bad_call: int):
            super().__init__()
            self.linear = torch.nn.Linear(4, 3)
            self.calls, self.bad_call = 0, bad_call

        def forward(self, x):
            self.calls += 1
            out = self.linear(x)
            return out * float("nan") if self.calls == self.bad_call else out

    data = [(torch.randn(2, 4), torch.tensor([0, 1])) for _ in range(6)]
    model = PoisonAt(bad_call=3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TrainingDivergedError) as info:
        train_epoch(model, data, torch.nn.CrossEntropyLoss(), optimizer, torch.device("cpu"), epoch=2,
                    read_back_every=4)
    assert (info.value.epoch, info.value.batch) == (2, 3)
    assert model.calls == 4  # read back after the 4th mini-batch, not at the end of the epoch


def test_deferred_read_back_gives_the_same_averages():
    from cifar_utils.engine import train_epoch

    results = []
    for every in (1, 3):
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 3)
        data = [(torch.randn(5, 4), torch.randint(0, 3, (5,))) for _ in range(7)]
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        results.append(train_epoch(model, data, torch.nn.CrossEntropyLoss(), optimizer, torch.device("cpu"),
                                   read_back_every=every))
    assert results[0] == pytest.approx(results[1], rel=1e-12)


@pytest.mark.parametrize("scheduler, extra, refused", [
    ("cosine", {}, "the cosine schedule is sized"),  # T_max = epochs: more epochs would restart the schedule
    ("onecycle", {}, "the onecycle schedule is sized"),
    ("cosine", {"cosine_t_max": 10}, None),  # a fixed period, as seed000 has
    ("none", {}, None),
    ("none", {"lookahead_decay": 0.9}, "lookahead's ramp is sized"),  # sized by the run too
    # so are the progressive image sizes: 2 epochs would train the first at 16 px, not 32
    ("none", {"progressive_start": 16, "model": "cpu_net", "pipeline": "gpu"}, "progressive resizing is sized"),
])
def test_raising_epochs_on_resume_is_refused_only_for_schedules_sized_by_the_run(tmp_path, scheduler, extra, refused):
    from cifar_utils.data import synthetic_dataset
    from cifar_utils.errors import CheckpointError
    from cifar_utils.experiment import train
    from cifar_utils.presets import from_preset

    data = synthetic_dataset(48, 16)
    settings = {**dict(model="resnet20", batch_size=16, eval_batch_size=16, validation_split=16, scheduler=scheduler,
                       augmentation="none"), **extra}
    train(from_preset("seed003", epochs=1, **settings), tmp_path, data=data, progress=False, log=lambda _: None)
    longer = from_preset("seed003", epochs=2, **settings)
    if refused:
        with pytest.raises(CheckpointError, match=f"epochs=1 -> 2 \\({refused} for 1 epoch, so a run of 2 would not"):
            train(longer, tmp_path, data=data, progress=False, resume=True, log=lambda _: None)
    else:
        result = train(longer, tmp_path, data=data, progress=False, resume=True, log=lambda _: None)
        assert len(result.history) == 2


def test_lookahead_pulls_the_weights_back_to_their_average_every_few_steps():
    model = _initial_linear()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    stepped = []  # the weights right after each optimizer step, before any pull
    optimizer.register_step_post_hook(lambda *_: stepped.append([p.detach().clone() for p in model.parameters()]))
    lookahead = Lookahead(model, total_steps=12, decay=0.9, every=5)
    average = [p.detach().clone() for p in model.parameters()]
    for step in range(1, 13):
        train_epoch(model, tiny_batches(1, seed=step), nn.CrossEntropyLoss(), optimizer, CPU, averager=lookahead)
        if step % 5 == 0:
            d = 0.9 ** 5 * (step / 12) ** 3
            average = [d * a + (1 - d) * w for a, w in zip(average, stepped[-1])]
        # pulled back every 5 steps; at the last step the weights take the average as it is
        expected = average if step % 5 == 0 or step == 12 else stepped[-1]
        for ours, theirs in zip(model.parameters(), expected):
            torch.testing.assert_close(ours, theirs)
    assert lookahead.updates == 12 and lookahead.module is model
    assert not torch.allclose(stepped[-1][0], model.weight)  # the last step's own update was dropped


def test_lookahead_averages_batchnorm_statistics_and_its_state_round_trips():
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    lookahead = Lookahead(model, total_steps=100, decay=0.5, every=1)
    with torch.no_grad():
        model[1].running_mean.add_(1.0)
    lookahead.update(model)
    d = 0.5 * (1 / 100) ** 3
    torch.testing.assert_close(model[1].running_mean, torch.full((3,), 1 - d))
    state = lookahead.state_dict()
    other = Lookahead(nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)), total_steps=100, decay=0.5, every=1)
    other.load_state_dict(state)
    assert other.updates == 1
    for ours, theirs in zip(other.average, lookahead.average):
        torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(other.module[0].weight, model[0].weight)


def test_fit_with_lookahead_ends_on_the_average_and_evaluates_the_live_model(synthetic):
    config, loaders, model, optimizer, scheduler = small_setup(synthetic, epochs=2, lookahead_decay=0.9)
    lookahead = Lookahead(model, total_steps=8, decay=0.9)  # 200 images / batch 50 = 4 steps per epoch
    history = fit(model, nn.CrossEntropyLoss(), optimizer, loaders.train, loaders.validation, CPU, config,
                  scheduler=scheduler, averager=lookahead, progress=False, log=lambda _: None)
    live_loss, _ = validate_epoch(model, loaders.validation, nn.CrossEntropyLoss(), CPU)
    assert history[-1]["val_loss"] == pytest.approx(live_loss, rel=1e-9)
    for ours, theirs in zip(Lookahead._tensors(model), lookahead.average):
        torch.testing.assert_close(ours, theirs)


class _OnTheGpu:
    """A saved tensor as ``load_checkpoint(map_location="cuda")`` hands it back: the random generators refuse
    it (they take CPU tensors only) until ``.cpu()`` brings it back."""

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor

    def cpu(self) -> torch.Tensor:
        return self.tensor


def test_random_states_restore_from_a_checkpoint_mapped_to_a_gpu():
    from cifar_utils.checkpoint import restore_rng_state, rng_state

    saved = rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    mapped = {**saved, "torch": _OnTheGpu(saved["torch"]), "cuda": [_OnTheGpu(s) for s in saved["cuda"]],
              "numpy": {**saved["numpy"], "keys": _OnTheGpu(saved["numpy"]["keys"])}}
    restore_rng_state(mapped)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1]) and expected[2] == again[2]


def test_a_checkpoint_from_a_machine_with_more_gpus_restores_the_gpus_this_one_has(monkeypatch):
    """rng_state saves every visible GPU's state; on a machine with fewer, each of its own gets its state."""
    from cifar_utils import checkpoint

    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.append((device, state)))
    saved = {**checkpoint.rng_state(), "cuda": [torch.tensor([1], dtype=torch.uint8), torch.tensor([2], dtype=torch.uint8)]}
    checkpoint.restore_rng_state(saved)
    assert [(device, state.tolist()) for device, state in restored] == [(0, [1])]


@pytest.mark.parametrize("optimizer, momenta", [("sgd", {0.5}), ("muon", {0.5, 0.6})])
def test_onecycle_keeps_the_configured_momentum(optimizer, momenta):
    config = Config(model="cpu_net", optimizer=optimizer, scheduler="onecycle", momentum=0.5, muon_momentum=0.6,
                    lr=0.1).validate()
    opt = build_optimizer(build_model(config), config)
    scheduler = build_scheduler(opt, config, steps_per_epoch=10)
    for _ in range(5):
        opt.step()
        scheduler.step()
    assert {group["momentum"] for group in opt.param_groups} == momenta


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp16")])
def test_auto_precision_on_a_gpu_counts_only_native_bf16(monkeypatch, native, expected):
    # torch counts emulated bf16 (a T4, say) as supported unless asked not to; emulated bf16 is slow there.
    calls = []

    def is_bf16_supported(including_emulation=True):
        calls.append(including_emulation)
        return native or including_emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    from cifar_utils import device as device_module

    assert device_module.resolve_precision("auto", torch.device("cuda")) == expected
    assert calls == [False]
