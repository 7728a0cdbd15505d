"""Models: the fused Block equals the reference Block, the gate formula, ResNet sizes, every preset's model."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch import nn

from cifar_utils import models
from cifar_utils.models import (ARCHITECTURES, Backbone, Block, BranchGate, Classifier, CifarResNet, Net,
                                branch_weight_entropy, build_model, collect_branch_weights, count_parameters,
                                kaiming_init, make_activation, summarize)
from cifar_utils.config import Config
from cifar_utils.errors import ConfigError
from cifar_utils.presets import PRESETS, from_preset

TOL = dict(atol=1e-5, rtol=1e-5)


def _outputs_and_grads(block: Block, x: torch.Tensor, fused: bool):
    """Output, input gradient and parameter gradients of ``block`` for a fixed random upstream gradient."""
    block.fused = fused
    block.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    out = block(x)
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    (out * upstream).sum().backward()
    grads = {name: p.grad.clone() for name, p in block.named_parameters()}
    return out.detach(), x.grad.clone(), grads


BLOCK_CASES = {
    "equal_kernels": dict(kernel_sizes=(3, 3, 3)),
    "mixed_kernels_1_3_5": dict(kernel_sizes=(1, 3, 5)),
    "mixed_with_repeats": dict(kernel_sizes=(3, 5, 3, 1)),
    "single_branch": dict(kernel_sizes=(3,)),
    "sigmoid_gate": dict(kernel_sizes=(3, 3), gate="sigmoid"),
    "relu_gate": dict(kernel_sizes=(1, 3, 5), gate="relu"),
    "softmax_temperature": dict(kernel_sizes=(3, 3, 3), temperature=0.3),
    "pool_size_8": dict(kernel_sizes=(3, 3, 3), pool_size=8),
    "gate_hidden_mlp": dict(kernel_sizes=(1, 3, 5), gate_hidden=7),
    "residual_projection": dict(kernel_sizes=(3, 3, 3), residual=True),
    "residual_identity": dict(kernel_sizes=(1, 3, 5), residual=True, same_channels=True),
    "no_batchnorm_with_bias": dict(kernel_sizes=(3, 3, 5), batchnorm=False, activation="gelu"),
    "leaky_relu_all_options": dict(kernel_sizes=(1, 3, 3, 5), gate="softmax", temperature=2.0, pool_size=8,
                                   gate_hidden=5, residual=True, activation="leaky_relu"),
}


@pytest.mark.parametrize("case", list(BLOCK_CASES))
def test_fused_block_matches_reference_in_outputs_and_gradients(case):
    kwargs = dict(BLOCK_CASES[case])
    same = kwargs.pop("same_channels", False)
    torch.manual_seed(0)
    c_in, c_out = (6, 6) if same else (4, 6)
    block = Block(c_in, c_out, **kwargs).double().train()  # float64: the two paths sum in different orders
    if kwargs.get("gate") == "relu":  # make sure the relu gate is not all zeros, so the test means something
        nn.init.constant_(block.gate.fc.bias, 0.5)
    x = torch.randn(3, c_in, 16, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    out_f, gx_f, grads_f = _outputs_and_grads(block, x, fused=True)
    out_r, gx_r, grads_r = _outputs_and_grads(block, x, fused=False)
    assert out_f.shape == (3, c_out, 16, 16)
    assert out_f.abs().sum() > 0
    torch.testing.assert_close(out_f, out_r, **TOL)
    torch.testing.assert_close(gx_f, gx_r, **TOL)
    assert grads_f.keys() == grads_r.keys()
    single_softmax = len(block.kernel_sizes) == 1 and block.gate.function == "softmax"  # a = 1: the gate gets no gradient
    for name in grads_f:
        if not (single_softmax and name.startswith("gate.")):
            assert grads_f[name].abs().sum() > 0, f"no gradient reached {name}"
        torch.testing.assert_close(grads_f[name], grads_r[name], **TOL, msg=f"gradient of {name} differs")


@pytest.mark.parametrize("kernel_sizes", [(3, 3, 3), (1, 3, 5), (5, 3, 5, 1)])
@pytest.mark.parametrize("bias", [False, True])
def test_mix_fused_and_mix_reference_equal_an_independent_sum(kernel_sizes, bias):
    """O = sum_k a_k conv_k(X) written out with F.conv2d, for arbitrary (even negative) weights a."""
    torch.manual_seed(0)
    block = Block(5, 4, kernel_sizes=kernel_sizes, batchnorm=not bias)
    x = torch.randn(2, 5, 8, 8)
    a = torch.randn(2, len(kernel_sizes))
    expected = torch.zeros(2, 4, 8, 8)
    for k, conv in enumerate(block.convs):
        size = kernel_sizes[k]
        branch = F.conv2d(x, conv.weight, conv.bias, padding=size // 2)
        for b in range(2):
            expected[b] += a[b, k] * branch[b]
    torch.testing.assert_close(block.mix_reference(x, a), expected, **TOL)
    torch.testing.assert_close(block.mix_fused(x, a), expected, **TOL)


@pytest.mark.parametrize("kernel_sizes, convolutions",
                         [((3, 3, 3), 1), ((1, 3, 5), 3), ((3, 5, 3), 2), ((3, 3, 3, 3, 3), 1)])
def test_fused_path_runs_one_convolution_per_kernel_size(monkeypatch, kernel_sizes, convolutions):
    block = Block(4, 6, kernel_sizes=kernel_sizes)
    calls = []
    original = F.conv2d

    def counting_conv2d(*args, **kwargs):
        calls.append(args[1].shape)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "conv2d", counting_conv2d)
    block(torch.randn(2, 4, 8, 8))
    assert len(calls) == convolutions
    assert all(shape[0] == 6 for shape in calls)  # each writes C_out channels: the branches' sum
    assert sum(shape[1] for shape in calls) == 4 * len(kernel_sizes)  # K * C_in scaled input channels in all
    calls.clear()
    block.fused = False
    block(torch.randn(2, 4, 8, 8))
    assert len(calls) == len(kernel_sizes)


@pytest.mark.parametrize("pool_size", [1, 8])
@pytest.mark.parametrize("gate, temperature", [("softmax", 1.0), ("softmax", 0.5), ("sigmoid", 1.0), ("relu", 1.0)])
def test_branch_gate_is_g_of_linear_of_spatial_average_pool(gate, temperature, pool_size):
    torch.manual_seed(0)
    module = BranchGate(3, 4, function=gate, temperature=temperature, pool_size=pool_size)
    x = torch.randn(2, 3, 16, 16)
    step = 16 // pool_size
    pooled = x.unfold(2, step, step).unfold(3, step, step).mean(dim=(-1, -2))  # [2, 3, p, p]
    logits = pooled.flatten(1) @ module.fc.weight.T + module.fc.bias
    expected = {"softmax": lambda z: torch.softmax(z / temperature, dim=1), "sigmoid": torch.sigmoid,
                "relu": torch.relu}[gate](logits)
    a = module(x)
    assert a.shape == (2, 4)
    torch.testing.assert_close(a, expected, **TOL)


def test_softmax_branch_weights_sum_to_one_and_temperature_sharpens():
    torch.manual_seed(0)
    x = torch.randn(5, 3, 16, 16) * 3
    sharp = BranchGate(3, 4, temperature=0.1)
    soft = BranchGate(3, 4, temperature=10.0)
    soft.load_state_dict(sharp.state_dict())
    for gate in (sharp, soft):
        a = gate(x)
        assert (a >= 0).all()
        torch.testing.assert_close(a.sum(1), torch.ones(5))
    assert sharp(x).max(1).values.mean() > soft(x).max(1).values.mean()


def test_block_rejects_bad_arguments():
    with pytest.raises(ValueError, match="odd"):
        Block(3, 4, kernel_sizes=(3, 2))
    with pytest.raises(ValueError, match="odd"):
        Block(3, 4, kernel_sizes=())
    with pytest.raises(ValueError, match="gate"):
        Block(3, 4, gate="tanh")
    with pytest.raises(ValueError, match="temperature"):
        Block(3, 4, temperature=0.0)
    with pytest.raises(ValueError, match="activation"):
        Block(3, 4, activation="swish")


def test_residual_shortcut_is_identity_or_projection():
    same = Block(8, 8, residual=True)
    assert isinstance(same.shortcut, nn.Identity)
    projected = Block(4, 8, residual=True)
    conv = projected.shortcut[0]
    assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.out_channels == 8
    assert Block(4, 8).shortcut is None
    # The residual is added after the activation: Y = act(BN(O)) + X.
    torch.manual_seed(0)
    x = torch.randn(2, 8, 8, 8)
    same.eval()
    plain = Block(8, 8, residual=False).eval()
    plain.load_state_dict(same.state_dict())
    torch.testing.assert_close(same(x), plain(x) + x)


# ----------------------------------------------------------------------------------------- ResNets


@pytest.mark.parametrize("depth, millions", [(20, 0.27), (32, 0.46), (44, 0.66), (56, 0.85)])
def test_cifar_resnet_parameter_counts_match_he_et_al(depth, millions):
    model = build_model(f"resnet{depth}")
    n = count_parameters(model)
    assert round(n / 1e6, 2) == millions, n
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)


def test_resnet32_has_about_046m_parameters_and_31_weighted_layers_plus_fc():
    model = build_model("resnet32")
    assert abs(count_parameters(model) - 0.46e6) < 0.01e6
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(convs) + len(linears) == 32  # option A shortcuts add no weighted layers


def test_cifar_resnet_rejects_depths_that_are_not_6n_plus_2():
    with pytest.raises(ValueError, match="6n\\+2"):
        CifarResNet(21)


# -------------------------------------------------------------------------------- preset models


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_model_runs_forward_and_backward(name):
    torch.manual_seed(0)
    model = build_model(from_preset(name))
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    if hasattr(model, "init_from_data"):
        model.init_from_data(images, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    model.train()
    x = (images.float() / 255 - 0.5) / 0.5
    out = model(x)
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()
    F.cross_entropy(out, torch.tensor([1, 7])).backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    missing = [n for n, p in trainable if p.grad is None]
    assert not missing, f"parameters without a gradient: {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for _, p in trainable)
    assert any(p.grad.abs().sum() > 0 for _, p in trainable)


@pytest.mark.parametrize("name", ["resnet20", "seed004_net"])
def test_build_model_honours_num_classes_and_rejects_unknown_names(name):
    model = build_model(name, num_classes=4).eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 4)
    with pytest.raises(ValueError, match="resnet32"):
        build_model("resnet33")
    with pytest.raises(ConfigError, match=r"'cpu' is a preset: build_model\(from_preset\('cpu'\)\)"):
        build_model("cpu")
    with pytest.raises(ConfigError, match="at least 2 classes"):
        build_model(name, num_classes=0)
    with pytest.raises(ConfigError, match="unknown preset \\['cpu'\\]"):
        from_preset(["cpu"])


def test_stem_kernel_sets_the_resnet_stem_and_keeps_its_output_size():
    torch.manual_seed(0)
    plain, narrow = build_model("resnet32"), build_model(Config(model="resnet32", stem_kernel=1))
    assert plain.conv.kernel_size == (3, 3) and narrow.conv.kernel_size == (1, 1) and narrow.conv.out_channels == 16
    assert count_parameters(plain) - count_parameters(narrow) == 16 * 3 * (9 - 1)
    assert narrow.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert build_model(Config(model="resnet20", stem_kernel=5)).conv.padding == (2, 2)


def test_head_softmax_outputs_probabilities_whose_cross_entropy_cannot_go_below_its_floor():
    images = torch.randn(4, 3, 32, 32)
    torch.manual_seed(0)
    model = build_model(Config(model="seed004_net", head_softmax=True)).eval()
    probabilities = model(images)
    assert (probabilities >= 0).all()
    torch.testing.assert_close(probabilities.sum(1), torch.ones(4))
    torch.manual_seed(0)
    plain = build_model("seed004_net").eval()
    assert plain.state_dict().keys() == model.state_dict().keys()  # the Softmax has no parameters
    torch.testing.assert_close(probabilities, plain(images).softmax(1))
    # Cross-entropy of probabilities p: the best is a one-hot p, giving -log(e / (e + C - 1)), 1.461 for 10 classes.
    floor = -math.log(math.e / (math.e + 9))
    one_hot = F.one_hot(torch.arange(10), 10).double()
    assert abs(F.cross_entropy(one_hot, torch.arange(10)).item() - floor) < 1e-6
    near_one_hot = torch.softmax(torch.eye(10, dtype=torch.float64) * 50, dim=1)  # what the head can approach
    assert abs(F.cross_entropy(near_one_hot, torch.arange(10)).item() - floor) < 1e-6
    anywhere = torch.distributions.Dirichlet(torch.full((10,), 0.3)).sample((2000,)).double()
    labels = torch.randint(0, 10, (2000,))
    assert F.cross_entropy(anywhere, labels, reduction="none").min().item() >= floor - 1e-12
    assert F.cross_entropy(probabilities, torch.arange(4)).item() >= floor


def _blocks(model):
    return [m for m in model.modules() if isinstance(m, Block)]


def test_coursework_architectures_follow_their_reports():
    s0, s1, s2, s4 = (build_model(n) for n in ("seed000_net", "seed001_net", "seed002_net", "seed004_net"))
    b0 = _blocks(s0)
    assert len(b0) == 11
    assert all(b.num_branches == 3 and b.shortcut is not None for b in b0)
    assert all(isinstance(b.act, nn.LeakyReLU) and isinstance(b.bn, nn.BatchNorm2d) for b in b0)
    assert any(isinstance(m, nn.MaxPool2d) for m in s0.modules())

    b1 = _blocks(s1)
    assert [b.out_channels for b in b1] == [64, 128, 256, 512]
    assert all(b.num_branches == 3 and b.gate.function == "softmax" for b in b1)
    assert all(b.gate.pool_size == 8 for b in b1)
    head_linears = [m for m in s1.classifier.modules() if isinstance(m, nn.Linear)]
    assert len(head_linears) == 3 and head_linears[0].out_features == 4096
    assert any(isinstance(m, nn.Dropout) and m.p == 0.5 for m in s1.classifier.modules())

    b2 = _blocks(s2)
    assert len(b2) == 8 and all(b.shortcut is not None and isinstance(b.act, nn.ReLU) for b in b2)

    b4 = _blocks(s4)
    assert len(b4) == 6 and all(b.kernel_sizes == (1, 3, 5) for b in b4)
    assert all(isinstance(b.gate.fc, nn.Sequential) for b in b4)  # an MLP gate
    # MaxPool after Blocks 2, 4 and 5.
    seq = list(s4.backbone)
    pools_after = [sum(isinstance(m, Block) for m in seq[:i]) for i, m in enumerate(seq) if isinstance(m, nn.MaxPool2d)]
    assert pools_after == [2, 4, 5]
    assert any(isinstance(m, nn.BatchNorm1d) for m in s4.classifier.modules())


# ------------------------------------------------------------------------------- introspection


def test_summarize_rows_cover_every_layer_and_parameter():
    model = build_model("resnet20").train()
    rows = summarize(model)
    assert model.training  # the mode is restored
    assert [r["layer"] for r in rows[:3]] == ["conv", "bn", "blocks.0"]
    assert rows[0]["output_shape"] == (1, 16, 32, 32)
    assert rows[-1] == {"layer": "fc", "type": "Linear", "output_shape": (1, 10), "parameters": 64 * 10 + 10}
    assert sum(r["parameters"] for r in rows) == count_parameters(model)
    assert sum(r["type"] == "BasicBlock" for r in rows) == 9


def test_summarize_a_net_expands_the_backbone():
    backbone = Backbone([8, "M", 16], kernel_sizes=(1, 3))
    model = Net(backbone, Classifier(16, 10, hidden=(12,)))
    rows = summarize(model, (2, 3, 32, 32))
    assert [r["layer"] for r in rows] == ["backbone.0", "backbone.1", "backbone.2", "classifier"]
    assert [r["output_shape"] for r in rows] == [(2, 8, 32, 32), (2, 8, 16, 16), (2, 16, 16, 16), (2, 10)]
    assert sum(r["parameters"] for r in rows) == count_parameters(model)


def test_collect_branch_weights_shapes_and_softmax_normalisation():
    torch.manual_seed(0)
    backbone = Backbone([8, "M", 8, 16], kernel_sizes=(1, 3, 5))
    model = Net(backbone, Classifier(16, 10)).train()
    weights = collect_branch_weights(model, torch.randn(4, 3, 32, 32))
    assert model.training
    assert len(weights) == 3
    for a in weights:
        assert a.shape == (4, 3)
        torch.testing.assert_close(a.sum(1), torch.ones(4))
    assert not any(m._forward_hooks for m in model.modules())  # hooks removed
    assert collect_branch_weights(build_model("resnet20"), torch.randn(1, 3, 32, 32)) == []


def test_branch_weight_entropy():
    assert branch_weight_entropy([torch.full((4, 3), 1 / 3)]) == pytest.approx(math.log(3))
    assert branch_weight_entropy([torch.tensor([[1.0, 0.0, 0.0]])]) == pytest.approx(0.0, abs=1e-6)
    assert math.isnan(branch_weight_entropy([]))


def test_kaiming_init_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(64, 128, 3, bias=True), nn.BatchNorm2d(128), nn.Flatten(), nn.Linear(256, 512))
    with torch.no_grad():
        model[1].weight.fill_(3.0)
        model[1].bias.fill_(2.0)
    kaiming_init(model)
    conv, bn, _, linear = model
    fan_out = 128 * 3 * 3
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.05)
    # Linear layers keep PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)): std 1/sqrt(3 * fan_in).
    assert linear.weight.std().item() == pytest.approx(1 / math.sqrt(3 * 256), rel=0.05)
    assert conv.bias.abs().max() == 0
    assert (bn.weight == 1).all() and (bn.bias == 0).all()


def test_kaiming_init_for_leaky_relu_uses_its_slope():
    """The gain is sqrt(2 / (1 + slope^2)) for the LeakyReLU the Blocks build, not ReLU's sqrt(2)."""
    weights = {}
    for nonlinearity in ("relu", "leaky_relu"):
        torch.manual_seed(0)
        weights[nonlinearity] = kaiming_init(nn.Conv2d(8, 16, 3), nonlinearity).weight.detach()
    assert isinstance(make_activation("leaky_relu"), nn.LeakyReLU)
    slope = make_activation("leaky_relu").negative_slope
    torch.testing.assert_close(weights["leaky_relu"], weights["relu"] / math.sqrt(1 + slope ** 2))


def test_initial_logits_are_small_enough_to_learn_from():
    """He init on the classifier gave seed000_net logits of std ~15 (loss ~20 at the start)."""
    torch.manual_seed(0)
    images = torch.randn(32, 3, 32, 32)
    for name in ("seed000_net", "seed001_net", "resnet32"):
        with torch.no_grad():
            logits = build_model(name).train()(images)
        assert logits.std().item() < 3, name


def test_kaiming_init_is_applied_where_the_reports_use_it():
    torch.manual_seed(0)
    resnet = build_model("resnet32")
    conv = resnet.blocks[-1].conv2  # 64 -> 64, 3x3: He fan_out std 0.059, PyTorch's default 0.024
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.1)
    seed000 = build_model("seed000_net")
    conv = _blocks(seed000)[-1].convs[0]  # 512 -> 512, 3x3
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (512 * 9)), rel=0.1)


def test_branch_labels_name_each_branch_once():
    labels = {kernels: Block(3, 4, kernel_sizes=kernels).branch_labels for kernels in [(3, 1), (3, 3, 3), (3, 1, 3)]}
    assert labels == {(3, 1): ("3x3", "1x1"), (3, 3, 3): ("3x3 #1", "3x3 #2", "3x3 #3"),
                      (3, 1, 3): ("3x3 #1", "1x1", "3x3 #2")}


def test_all_architectures_are_buildable_names():
    assert {"seed000_net", "seed001_net", "seed002_net", "seed004_net", "resnet20", "resnet32", "resnet44",
            "resnet56"} <= set(ARCHITECTURES)
    assert models.GATES == ("softmax", "sigmoid", "relu")


# ------------------------------------------------------------------------- speed-relevant properties


@pytest.mark.parametrize("kernel_sizes", [(3, 1), (3, 3, 3), (1, 3, 5), (3, 1, 3)])
@pytest.mark.parametrize("pool, residual", [(1, False), (2, False), (1, True), (2, True)])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_block_output_keeps_the_channels_last_format(kernel_sizes, pool, residual, precision):
    torch.manual_seed(0)
    block = Block(4, 6, kernel_sizes, pool=pool, residual=residual).to(memory_format=torch.channels_last)
    x = torch.randn(2, 4, 8, 8).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        out = block(x)
    assert out.shape == (2, 6, 8 // pool, 8 // pool)
    assert out.is_contiguous(memory_format=torch.channels_last)


class _RecordIndexing(TorchFunctionMode):
    """Records the type of every index item passed to ``Tensor.__getitem__``."""

    def __init__(self):
        super().__init__()
        self.kinds: list[type] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.Tensor.__getitem__:
            index = args[1]
            self.kinds += [type(i) for i in (index if isinstance(index, tuple) else (index,))]
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("kernel_sizes", [(3, 1), (3, 1, 3), (1, 3, 5)])
@pytest.mark.parametrize("fused", [True, False])
def test_block_forward_indexes_only_with_slices_and_integers(kernel_sizes, fused):
    block = Block(4, 4, kernel_sizes, fused=fused)
    with _RecordIndexing() as recorder:
        block(torch.randn(2, 4, 8, 8))
        torch.randn(3)[[0, 2]]  # the recorder sees a list index when there is one
    assert recorder.kinds[-1] is list
    assert set(recorder.kinds[:-1]) <= {slice, int, type(None), type(Ellipsis)}  # no lists or index tensors


class _RecordOperators(TorchDispatchMode):
    """Records the name of every aten operator dispatched (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("kernel_sizes", [(3, 1), (3, 3, 1)])
def test_block_step_has_no_per_branch_copies_and_no_division_by_one(kernel_sizes):
    # A GPU step of the fast presets is launch-bound: a slice per branch weight costs a zero-filled copy
    # and an add in backward, and a softmax temperature of 1 a division each way.
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    divisions = {}
    for temperature in (1.0, 2.0):
        with _RecordOperators() as recorder:
            Block(4, 6, kernel_sizes, temperature=temperature, activation="gelu", pool=2)(x).sum().backward()
        assert "convolution_backward" in recorder.names  # the recorder saw the backward pass
        assert "slice_backward" not in recorder.names, recorder.names
        divisions[temperature] = recorder.names.count("div")  # the gate's mean divides in backward too
    assert divisions[2.0] == divisions[1.0] + 2  # a real temperature divides once each way, 1 not at all


@pytest.mark.parametrize("residual", [False, True])
def test_pooling_block_pools_the_mixed_output_before_batchnorm_and_activation(residual):
    torch.manual_seed(0)
    block = Block(4, 4, (3, 1), residual=residual, pool=2).train()
    x = torch.randn(3, 4, 8, 8)
    expected = block.act(block.bn(F.max_pool2d(block.mix_reference(x, block.gate(x)), 2)))
    if residual:
        expected = expected + F.max_pool2d(x, 2)
    torch.testing.assert_close(block(x), expected, **TOL)
