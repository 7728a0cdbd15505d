"""Config and presets: every preset is valid, overrides apply, unknown names are rejected, CLI strings parse."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from cifar_utils.config import (Config, config_from_dict, field_names, ignored_settings, parse_value, replace,
                                 without_ignored)
from cifar_utils.errors import ConfigError
from cifar_utils.models import ARCHITECTURES
from cifar_utils.presets import PRESETS, Preset, from_preset


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_builds_a_valid_config(name):
    preset = PRESETS[name]
    assert isinstance(preset, Preset)
    assert preset.description and preset.source and preset.reported
    config = from_preset(name)
    assert isinstance(config, Config)
    assert config.preset == name
    assert config.model in ARCHITECTURES
    for field, value in preset.overrides.items():
        assert getattr(config, field) == value, field
    assert config.validate() is config  # validate() returns the config, raising nothing


def test_seed_presets_follow_their_reports():
    s0, s1, s2, s3, s4 = (from_preset(f"seed00{i}") for i in range(5))
    assert (s0.model, s0.loss, s0.label_smoothing, s0.kl_weight) == ("seed000_net", "kl_label_smoothing", 0.2, 0.1)
    assert (s0.optimizer, s0.lr, s0.weight_decay) == ("adam", 1e-3, 1e-5)
    assert (s0.scheduler, s0.cosine_t_max, s0.min_lr) == ("cosine", 100, 1e-6)
    assert (s0.accumulation_steps, s0.batch_size, s0.eval_batch_size) == (5, 64, 50)
    assert (s0.augmentation, s0.normalization, s0.epochs, s0.print_every) == ("affine_jitter", "fixed", 40, 5)
    assert (s1.model, s1.optimizer, s1.lr, s1.loss, s1.epochs) == ("seed001_net", "adamw", 1e-3, "cross_entropy", 30)
    assert (s2.model, s2.optimizer, s2.lr, s2.scheduler) == ("seed002_net", "adam", 1e-3, "cosine")
    assert (s2.batch_size, s2.eval_batch_size, s2.augmentation, s2.epochs) == (75, 50, "affine_jitter", 50)
    assert (s3.model, s3.optimizer, s3.lr, s3.momentum, s3.weight_decay) == ("resnet32", "sgd", 0.1, 0.9, 1e-4)
    assert (s3.scheduler, s3.batch_size, s3.augmentation) == ("plateau", 128, "resized_crop_flip")
    assert (s3.normalization, s3.epochs, s3.keep_best) == ("train_stats", 50, True)
    assert (s4.model, s4.optimizer, s4.lr, s4.momentum, s4.weight_decay) == ("seed004_net", "sgd", 0.01, 0.9, 5e-4)
    assert (s4.augmentation, s4.batch_size, s4.epochs, s4.loss) == ("crop_flip", 128, 150, "cross_entropy")


def test_overrides_apply_and_do_not_leak_into_the_preset():
    before = dict(PRESETS["seed003"].overrides)
    config = from_preset("seed003", epochs=2, lr=0.05, train_limit=100, dataset="synthetic")
    assert (config.epochs, config.lr, config.train_limit, config.dataset) == (2, 0.05, 100, "synthetic")
    assert config.optimizer == "sgd"  # untouched preset values stay
    assert PRESETS["seed003"].overrides == before
    assert from_preset("seed003").epochs == 50


def test_validation_split_zero_is_allowed_when_nothing_decides_on_validation():
    config = from_preset("seed001", validation_split=0)
    assert config.validation_split == 0
    with pytest.raises(ConfigError, match="validation_split=-1 is invalid"):
        from_preset("seed001", validation_split=-1)


@pytest.mark.parametrize("overrides, setting", [
    (dict(keep_best=True), "keep_best=True"),
    (dict(scheduler="plateau"), "scheduler='plateau'"),
    (dict(keep_best=True, scheduler="plateau"), "keep_best=True"),  # one error, for the first setting
])
def test_validation_split_zero_refuses_settings_that_decide_on_validation(overrides, setting):
    with pytest.raises(ConfigError) as info:
        from_preset("seed001", validation_split=0, **overrides)
    message = str(info.value)
    assert message.startswith(setting) and "validation_split=0" in message and "validation_split=N" in message
    from_preset("seed001", validation_split=100, **overrides)  # fine with a validation split


@pytest.mark.parametrize("preset, overrides, message", [
    ("seed002", dict(nesterov=True), "nesterov=True would be ignored: optimizer='adam' never reads it"),
    ("seed002", dict(nesterov=True, muon_lr_scale=5.0),
     "nesterov=True, muon_lr_scale=5.0 would be ignored: optimizer='adam' never reads them (this kit reads "
     "nesterov only with optimizer='sgd' or 'muon'; muon_lr_scale only with optimizer='muon'). Change that choice, "
     "or set them back to the preset's value: --set nesterov=false --set muon_lr_scale=0.2"),
    ("seed003", dict(kl_weight=0.5), "kl_weight=0.5 would be ignored: loss='cross_entropy' never reads it"),
    ("seed003", dict(scheduler="onecycle", warmup_epochs=2.0), "warmup_epochs=2.0 would be ignored"),
    ("seed002", dict(cosine_t_max=10, scheduler="warmup_cosine"), "cosine_t_max=10 would be ignored"),
    ("seed003", dict(scheduler="onecycle", min_lr=1.0, lr=0.001), "min_lr=1.0 would be ignored"),
    ("seed003", dict(min_lr=1.0, lr=0.001), "min_lr=1.0 is invalid: it must be below lr (0.001)"),
    ("seed002", dict(pipeline="gpu", augmentation="affine_jitter", crop_padding=8),
     "crop_padding=8 would be ignored: augmentation='affine_jitter' never reads it"),
])
def test_a_setting_that_the_chosen_loss_optimizer_or_scheduler_ignores_is_refused(preset, overrides, message):
    with pytest.raises(ConfigError) as info:
        from_preset(preset, **overrides)
    assert message in str(info.value)


@pytest.mark.parametrize("preset, switch", [
    ("fast", dict(scheduler="cosine")), ("cpu", dict(optimizer="adam", scheduler="cosine")),
    ("seed000", dict(scheduler="none", loss="cross_entropy")), ("cpu", dict(augmentation="resized_crop_flip")),
])
def test_switching_a_presets_choice_leaves_its_own_now_unread_settings_alone(preset, switch):
    # The preset set them for its own choice: a switch needs no resets, and they change nothing.
    config = from_preset(preset, **switch)
    assert ignored_settings(config)  # some of the preset's settings go unread now
    assert all(getattr(config, name) == getattr(from_preset(preset), name) for name in ignored_settings(config))
    assert without_ignored(config) == config  # and they are the preset's: nothing to set back


def test_runs_that_differ_only_in_settings_neither_reads_compare_equal():
    saved = replace(from_preset("seed003"), kl_weight=0.5)  # saved before such a setting was refused
    assert without_ignored(saved) == from_preset("seed003")
    assert without_ignored(replace(from_preset("seed003"), loss="kl_label_smoothing", kl_weight=0.5)).kl_weight == 0.5


def test_every_preset_sets_only_what_its_loss_optimizer_and_scheduler_use():
    for name, preset in PRESETS.items():
        from_preset(name)
        if preset.faithful:
            from_preset(name, faithful=True)


@pytest.mark.parametrize("overrides, message", [
    (dict(model="resnet32", stem_kernel=2), "stem_kernel=2 is invalid: it must be an odd"),
    (dict(model="resnet32", stem_kernel=0), "stem_kernel=0 is invalid"),
    (dict(model="seed004_net", stem_kernel=1), "stem_kernel=1 does not apply to model='seed004_net', only to resnet20"),
    (dict(model="resnet32", head_softmax=True), "head_softmax=True does not apply to model='resnet32', only to seed004_net"),
])
def test_architecture_options_are_checked_against_the_model(overrides, message):
    with pytest.raises(ConfigError, match=message):
        Config(**overrides).validate()
    Config(model="resnet32", stem_kernel=1).validate()  # the options these models take: no error
    Config(model="seed004_net", head_softmax=True).validate()


@pytest.mark.parametrize("overrides, message", [
    (dict(lookahead_decay=1.0), "lookahead_decay=1.0 is invalid: it must be in \\(0, 1\\)"),
    (dict(lookahead_decay=0.95, ema_decay=0.99), "lookahead_decay=0.95 is invalid: it cannot be combined with ema_decay"),
])
def test_weight_averages_are_checked(overrides, message):
    with pytest.raises(ConfigError, match=message):
        Config(**overrides).validate()
    Config(lookahead_decay=0.95).validate()  # no error


@pytest.mark.parametrize("value", [-0.1, 1.0])
def test_warmup_start_is_a_fraction_below_one(value):
    with pytest.raises(ConfigError, match=f"warmup_start={value} is invalid: it must be in \\[0, 1\\)"):
        Config(warmup_start=value).validate()


def test_replace_returns_a_copy():
    base = Config()
    changed = replace(base, epochs=3, model="resnet20")
    assert (changed.epochs, changed.model) == (3, "resnet20")
    assert (base.epochs, base.model) == (Config().epochs, Config().model)


def test_unknown_preset_is_rejected_with_the_valid_names():
    with pytest.raises(ConfigError) as info:
        from_preset("seed999")
    message = str(info.value)
    assert "seed999" in message
    for name in PRESETS:
        assert name in message


@pytest.mark.parametrize("call", [
    lambda: from_preset("seed000", epocs=3),
    lambda: replace(Config(), epocs=3),
    lambda: config_from_dict({**Config().to_dict(), "epocs": 3}),
    lambda: parse_value("epocs", "3"),
])
def test_unknown_field_is_rejected_with_the_valid_fields(call):
    with pytest.raises(ConfigError) as info:
        call()
    message = str(info.value)
    assert "epocs" in message
    for name in ("epochs", "lr", "batch_size", "accumulation_steps", "data_root"):
        assert name in message


def test_invalid_value_is_rejected_naming_the_field():
    with pytest.raises(ConfigError, match="lr"):
        from_preset("seed000", lr=0.0)


@pytest.mark.parametrize("seed", [-1, 2**32, 2**50])
def test_a_seed_outside_the_generators_range_is_rejected(seed):
    with pytest.raises(ConfigError, match=r"seed=.* must be in \[0, 2\*\*32\)"):
        from_preset("cpu", seed=seed)
    assert from_preset("cpu", seed=2**32 - 1).seed == 2**32 - 1


def test_config_round_trips_through_a_dict():
    config = from_preset("seed000", epochs=2, train_limit=10)
    again = config_from_dict(config.to_dict())
    assert again == config
    assert set(config.to_dict()) == set(field_names())


def test_field_names_are_the_dataclass_fields():
    assert field_names() == [f.name for f in dataclasses.fields(Config)]


def test_every_field_has_a_one_line_comment():
    source = inspect.getsource(Config)
    for name in field_names():
        lines = [line for line in source.splitlines() if line.strip().startswith(f"{name}:")]
        assert len(lines) == 1, name
        comment = lines[0].partition("#")[2].strip()
        assert len(comment) > 5, f"field {name} has no comment"


@pytest.mark.parametrize("name, text, expected", [
    ("epochs", "5", 5),
    ("lr", "0.05", 0.05),
    ("lr", "1e-3", 1e-3),
    ("lr", "3", 3.0),
    ("train_limit", "100", 100),
    ("train_limit", "none", None),
    ("train_limit", "None", None),
    ("grad_clip", "1.5", 1.5),
    ("grad_clip", "null", None),
    ("ema_decay", "0.999", 0.999),
    ("warmup_epochs", "0.5", 0.5),
    ("data_root", "/tmp/cifar", "/tmp/cifar"),
    ("data_root", "none", None),
    ("dataset", "synthetic", "synthetic"),
    ("download", "true", True),
    ("download", "Yes", True),
    ("download", "1", True),
    ("download", "false", False),
    ("download", "off", False),
    ("keep_best", "0", False),
])
def test_parse_value_converts_cli_strings_to_the_field_type(name, text, expected):
    value = parse_value(name, text)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize("name, text", [("epochs", "five"), ("epochs", "2.5"), ("lr", "fast"), ("download", "maybe")])
def test_parse_value_rejects_text_of_the_wrong_type(name, text):
    with pytest.raises(ConfigError, match=name):
        parse_value(name, text)


def test_parsed_values_pass_validation():
    overrides = {name: parse_value(name, text) for name, text in
                 [("epochs", "2"), ("lr", "0.01"), ("train_limit", "none"), ("grad_clip", "1"), ("download", "no")]}
    config = from_preset("seed004", **overrides)
    values = (config.epochs, config.lr, config.train_limit, config.grad_clip, config.download)
    assert values == (2, 0.01, None, 1.0, False)


@pytest.mark.parametrize("overrides, field", [
    ({"momentum": -0.1}, "momentum"), ({"momentum": 1.0}, "momentum"),
    ({"nesterov": True, "momentum": 0.0}, "nesterov"), ({"plateau_factor": 1.0}, "plateau_factor"),
    ({"plateau_patience": -1}, "plateau_patience"),
])
def test_optimizer_and_scheduler_values_torch_would_reject_are_caught_early(overrides, field):
    from cifar_utils.errors import ConfigError
    from cifar_utils.presets import from_preset

    with pytest.raises(ConfigError, match=field):
        from_preset("seed003", **overrides)


def test_a_config_saved_with_eval_limit_loads_as_both_limits():
    from cifar_utils.config import config_from_dict

    config = config_from_dict({"eval_limit": 7})
    assert (config.validation_limit, config.test_limit) == (7, 7)


def test_a_saved_muon_rate_becomes_its_multiple_of_lr_and_means_nothing_without_muon():
    from cifar_utils.config import config_from_dict, with_defaults

    muon = config_from_dict({"optimizer": "muon", "lr": 0.25, "muon_lr": 0.05})
    assert muon.muon_lr_scale == pytest.approx(0.2)
    sgd = with_defaults({"optimizer": "sgd", "lr": 1.0, "muon_lr": 0.05})
    assert "muon_lr" not in sgd and sgd["muon_lr_scale"] == Config().muon_lr_scale
