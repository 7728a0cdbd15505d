"""Presets flag every choice their report left open (issue 13) and carry the report's own recipe (faithful)."""

from __future__ import annotations

import pytest

from cifar_utils.config import field_names
from cifar_utils.errors import ConfigError
from cifar_utils.presets import PRESETS, faithful_presets, from_preset

REFERENCE = [name for name, preset in PRESETS.items() if preset.from_report]
OURS = [name for name, preset in PRESETS.items() if not preset.from_report]
TEST_SET_VALIDATION = ("seed000", "seed001", "seed002", "seed004")  # reports that validated on the test set


def test_the_reference_and_our_presets_are_told_apart():
    assert REFERENCE == ["seed000", "seed001", "seed002", "seed003", "seed004"]
    assert OURS == ["cpu", "fast", "fast_best"]


@pytest.mark.parametrize("name", REFERENCE)
def test_every_reference_preset_flags_its_choices_with_a_reason(name):
    chosen = PRESETS[name].chosen
    assert chosen
    assert set(chosen) <= set(field_names()), set(chosen) - set(field_names())
    assert all(isinstance(reason, str) and reason.strip() for reason in chosen.values())
    # Choices every reference preset makes: bf16 autocast on CUDA, and a held-out validation split.
    assert {"precision", "validation_split"} <= set(chosen)


def test_the_choices_issue_13_names_are_flagged():
    assert {"model", "augmentation"} <= set(PRESETS["seed002"].chosen)  # 8 Blocks, K=3, widths; added flip
    assert "flip" in PRESETS["seed002"].chosen["augmentation"]
    assert "model" in PRESETS["seed004"].chosen  # 1/3/5 kernels, gate width, head
    assert {"plateau_factor", "plateau_patience"} <= set(PRESETS["seed003"].chosen)
    assert {"scheduler", "augmentation", "epochs"} <= set(PRESETS["seed001"].chosen)
    assert "scheduler" in PRESETS["seed004"].chosen
    for name in TEST_SET_VALIDATION:
        assert "test set" in PRESETS[name].chosen["validation_split"]


# What each report states (issue 2's appendix of the five reports): the preset sets it and does not flag it
# as chosen. Normalisation: report 003 normalises with training statistics, the others with 0.5.
STATED_BY_REPORT = {
    "seed000": ("loss", "label_smoothing", "kl_weight", "optimizer", "lr", "weight_decay", "scheduler", "cosine_t_max",
                "min_lr", "accumulation_steps", "batch_size", "eval_batch_size", "augmentation", "normalization",
                "epochs", "print_every"),
    "seed001": ("optimizer", "lr", "normalization"),
    "seed002": ("optimizer", "lr", "scheduler", "batch_size", "eval_batch_size", "normalization", "epochs"),
    "seed003": ("model", "optimizer", "lr", "momentum", "weight_decay", "scheduler", "batch_size", "augmentation",
                "normalization", "epochs", "keep_best"),
    "seed004": ("optimizer", "lr", "momentum", "weight_decay", "batch_size", "augmentation", "normalization", "epochs"),
}


@pytest.mark.parametrize("name", REFERENCE)
def test_what_the_report_states_is_set_and_not_flagged_as_chosen(name):
    preset = PRESETS[name]
    stated = set(STATED_BY_REPORT[name])
    assert stated <= set(preset.overrides), stated - set(preset.overrides)
    assert not stated & set(preset.chosen), stated & set(preset.chosen)


@pytest.mark.parametrize("name", ["seed000", "seed001", "seed002", "seed004"])
def test_the_block_networks_flag_the_sizes_their_report_left_open(name):
    assert "the report gives" in PRESETS[name].chosen["model"]  # widths, kernel sizes or pooling: ours, and why


@pytest.mark.parametrize("name", OURS)
def test_our_presets_have_no_report_and_nothing_to_flag(name):
    preset = PRESETS[name]
    assert preset.chosen == {} and preset.faithful == {}
    assert preset.reported == "none (no report)"


def test_report_001_is_quoted_without_the_unsupported_30_epochs():
    reported = PRESETS["seed001"].reported
    assert "82.84% test" in reported and "15 epochs" in reported
    assert "30" not in reported


def test_the_presets_with_a_faithful_variant():
    assert faithful_presets() == REFERENCE
    for name in TEST_SET_VALIDATION:
        assert PRESETS[name].faithful["validation_split"] == 0
    for name in REFERENCE:
        assert set(PRESETS[name].faithful) <= set(field_names())
    assert PRESETS["seed001"].faithful["epochs"] == 15
    assert PRESETS["seed003"].faithful == {"stem_kernel": 1}  # its plateau schedule needs validation
    assert PRESETS["seed004"].faithful["head_softmax"] is True


def test_asking_a_preset_without_one_for_its_faithful_variant_names_those_that_have_one():
    with pytest.raises(ConfigError) as info:
        from_preset("cpu", faithful=True)
    message = str(info.value)
    assert "cpu" in message
    for name in REFERENCE:
        assert name in message


@pytest.mark.parametrize("name", TEST_SET_VALIDATION)
def test_faithful_applies_the_report_recipe_and_overrides_still_win(name):
    config = from_preset(name, faithful=True)
    for field, value in PRESETS[name].faithful.items():
        assert getattr(config, field) == value, field
    assert from_preset(name, faithful=True, epochs=2).epochs == 2
    assert from_preset(name).validation_split is None  # the plain preset keeps its held-out split
