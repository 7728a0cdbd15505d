"""The fast presets: architecture rules, the whitening stem, and a short CPU training run of ``fast``."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cifar_utils.checkpoint import load_checkpoint
from cifar_utils.experiment import evaluate_checkpoint, train
from cifar_utils.fast_models import PatchWhitening, image_patches
from cifar_utils.gpu_data import GpuEvalLoader
from cifar_utils.models import Block, Classifier, branch_weight_entropy, build_model, collect_branch_weights
from cifar_utils.presets import from_preset


@pytest.fixture(scope="module")
def trained_fast(tmp_path_factory, synthetic):
    """``fast`` for 3 short epochs on 32 synthetic images (a small batch and learning rate to match)."""
    config = from_preset("fast", dataset="synthetic", validation_split=100, train_limit=32, validation_limit=16, test_limit=16, epochs=3,
                         batch_size=16, eval_batch_size=16, lr=0.1, warmup_epochs=0.5, ema_decay=0.5, tta="flip")
    out = tmp_path_factory.mktemp("fast")
    return train(config, out, device="cpu", progress=False, log=lambda _message: None, data=synthetic)


@pytest.mark.parametrize("name", ["fast", "fast_best"])
def test_fast_presets_use_the_gpu_pipeline_and_the_fast_recipe(name):
    config = from_preset(name)
    assert config.pipeline == "gpu" and config.channels_last and config.alternating_flip
    assert config.optimizer == "sgd" and config.nesterov and config.label_smoothing > 0
    assert config.tta == "flip_translate"


@pytest.mark.parametrize("architecture", ["fast_net", "fast_best_net"])
def test_every_convolution_is_a_block_with_at_least_two_branches(architecture):
    model = build_model(architecture)
    blocks = [m for m in model.modules() if isinstance(m, Block)]
    in_blocks = {id(conv) for block in blocks for conv in block.convs}
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(id(conv) in in_blocks for conv in convs)  # no shortcut or other plain convolutions
    assert all(block.num_branches >= 2 for block in blocks)
    assert isinstance(model.classifier, Classifier)
    assert not list(model.stem.parameters())  # the stem has no trainable parts
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_identity_init_starts_each_3x3_branch_as_the_identity():
    plain = build_model(from_preset("cpu", identity_init=False))
    net = build_model(from_preset("cpu", identity_init=True))
    x = torch.randn(2, 24, 9, 9)
    for block, plain_block in zip(net.backbone, plain.backbone):
        conv3, conv1 = block.convs  # the 3x3 branch, then the 1x1
        c_in = conv3.in_channels
        assert torch.equal(conv3(x[:, :c_in])[:, :c_in], x[:, :c_in])  # the first C_in filters copy their input
        if conv3.out_channels > c_in:
            assert conv3.weight[c_in:].abs().sum() > 0  # the others keep a random start
        assert conv1.weight.shape == plain_block.convs[1].weight.shape and conv1.weight.abs().sum() > 0
        x = torch.randn(2, block.out_channels, 9, 9)


def test_head_pool_max_takes_the_largest_activation_per_channel():
    net = build_model(from_preset("cpu", head_pool="max"))
    features = torch.randn(3, net.classifier.mlp[-1].in_features, 3, 3)
    expected = net.classifier.mlp(features.amax((2, 3))) * net.classifier.logit_scale
    assert torch.allclose(net.classifier(features), expected)
    with pytest.raises(ValueError, match="avg or max"):
        Classifier(8, 10, pool="min")


def test_whitening_makes_patch_covariance_the_identity():
    gen = torch.Generator().manual_seed(0)
    mixing = torch.randn(3, 3, generator=gen)
    images = torch.einsum("dc,nchw->ndhw", mixing, torch.randn(200, 3, 16, 16, generator=gen) * 3)
    stem = PatchWhitening(eps=1e-6)
    stem.fit(images)
    out = stem(images)  # [N, 24, 15, 15]
    half = out[:, :12].permute(0, 2, 3, 1).reshape(-1, 12)
    torch.testing.assert_close(torch.cov(half.T), torch.eye(12), atol=0.02, rtol=0)
    torch.testing.assert_close(out[:, 12:], -out[:, :12])
    assert image_patches(images[:1], 2).shape == (15 * 15, 12)


def test_fast_trains_on_cpu_and_its_loss_falls(trained_fast):
    losses = [row["train_loss"] for row in trained_fast.history]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert trained_fast.history[-1]["train_acc"] > 0.3  # 10 classes: chance is 0.1


def test_whitening_stem_is_fitted_frozen_and_restored_from_the_checkpoint(trained_fast, synthetic):
    splits = trained_fast.splits
    refit = build_model("fast_net")
    identity = refit.whitening.weight.clone()
    refit.init_from_data(splits.train.images, splits.mean, splits.std)
    assert not torch.equal(refit.whitening.weight, identity)
    torch.testing.assert_close(trained_fast.model.whitening.weight, refit.whitening.weight)  # unchanged by training
    assert all(p is not refit.whitening.weight for p in refit.parameters())

    checkpoint = trained_fast.out_dir / "checkpoint.pt"
    state = load_checkpoint(checkpoint)
    restored = build_model("fast_net")
    restored.load_state_dict(state["model"])
    torch.testing.assert_close(restored.whitening.weight, refit.whitening.weight)
    evaluation, _ = evaluate_checkpoint(checkpoint, device="cpu", data=synthetic)
    assert evaluation.accuracy == trained_fast.metrics["test_accuracy"]


def test_branch_weight_entropy_can_be_reported_after_training(trained_fast):
    splits = trained_fast.splits
    images, _ = next(iter(GpuEvalLoader(splits.test, splits.mean, splits.std, 16, "cpu")))
    weights = collect_branch_weights(trained_fast.model, images)
    assert len(weights) == 6 and all(w.shape == (16, 2) for w in weights)
    assert 0 <= branch_weight_entropy(weights) <= math.log(2) + 1e-6


def test_a_lookahead_run_ends_on_its_average_and_its_checkpoint_evaluates_the_same(tmp_path, synthetic):
    config = from_preset("cpu", dataset="synthetic", validation_split=100, train_limit=32, validation_limit=16,
                         test_limit=16, epochs=2, batch_size=16, eval_batch_size=16, lr=0.1, lookahead_decay=0.9)
    result = train(config, tmp_path / "run", device="cpu", progress=False, log=lambda _message: None, data=synthetic)
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert state["ema"]["updates"] == 4  # 32 images / batch 16, 2 epochs
    for name, value in state["model"].items():  # the live weights took the average at the last step
        if value.is_floating_point():
            torch.testing.assert_close(value, state["ema"]["module"][name])
    average = iter(state["ema"]["average"])
    for name, value in state["model"].items():
        if value.is_floating_point():
            torch.testing.assert_close(value, next(average))
    evaluation, _ = evaluate_checkpoint(tmp_path / "run" / "checkpoint.pt", device="cpu", data=synthetic)
    assert evaluation.accuracy == result.metrics["test_accuracy"]
