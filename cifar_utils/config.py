"""One typed training configuration, its validation, and overrides.

Usage::

    from cifar_utils.presets import from_preset
    config = from_preset("seed003", epochs=5, lr=0.05)   # unknown names are rejected
    config.validate()

Every field has a one-line comment saying what it does. Presets (``cifar_utils.presets``) are sets of
overrides on top of these defaults.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import io
import math
import tokenize
import types
import typing
from dataclasses import dataclass
from typing import Any, Optional

from .blocks import POOLS
from .errors import ConfigError
from .evaluation import TTA_MODES
from .preprocessing import AUGMENTATIONS, CROP_FILLS, CROP_PADDING, FLIPPING_AUGMENTATIONS, IMAGE_SIZE

NORMALIZATIONS = ("fixed", "train_stats")
PIPELINES = ("torchvision", "gpu")
DATASETS = ("auto", "cifar10", "folder", "synthetic")
LOSSES = ("cross_entropy", "kl_label_smoothing")
OPTIMIZERS = ("sgd", "adam", "adamw", "muon")
SCHEDULERS = ("cosine", "plateau", "onecycle", "warmup_cosine", "warmup_linear", "none")
WARMUP_SCHEDULERS = ("warmup_cosine", "warmup_linear")  # the ones with a warm-up (warmup_epochs, warmup_start)
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
PROGRESSIVE_STEP = 8  # pixels between progressive resizing's image sides
# Settings that say where the data lies, not what a run computes.
LOCATION_FIELDS = ("data_root", "download")
# Settings that change how a run goes (logging, loading, evaluation batches), never what it computes: a
# resumed run may change them, a finished run is reused whatever they say, the results table ignores them.
NOT_RESULT_FIELDS = ("print_every", "num_workers", "checkpoint_every_steps", "eval_batch_size")
# Settings that only some choices of another field read: (that field, those choices). Given (away from the
# preset's value) under another choice, such a setting would be silently ignored, so validate() refuses it.
USED_ONLY_WITH = {
    "kl_weight": ("loss", ("kl_label_smoothing",)),
    "momentum": ("optimizer", ("sgd", "muon")), "nesterov": ("optimizer", ("sgd", "muon")),
    "muon_lr_scale": ("optimizer", ("muon",)), "muon_momentum": ("optimizer", ("muon",)),
    "cosine_t_max": ("scheduler", ("cosine",)),
    "plateau_factor": ("scheduler", ("plateau",)), "plateau_patience": ("scheduler", ("plateau",)),
    "warmup_epochs": ("scheduler", WARMUP_SCHEDULERS),
    "warmup_start": ("scheduler", WARMUP_SCHEDULERS),
    "min_lr": ("scheduler", ("cosine", *WARMUP_SCHEDULERS, "plateau")),
    "crop_padding": ("augmentation", ("crop_flip",)), "crop_fill": ("augmentation", ("crop_flip",)),
}
# Augmentation settings only the GPU pipeline has: the torchvision one needs each at its default.
GPU_ONLY_SETTINGS = ("crop_padding", "crop_fill", "alternating_flip", "cutout", "progressive_start")
VALIDATION_FRACTION = 0.1  # held out when validation_split is None: 5,000 of CIFAR-10's 50,000 images


# The parameter groups' peak learning rates (Config.group_rates), each named by how it is set.
WEIGHTS_RATE, NORM_BIAS_RATE, FILTERS_RATE = "lr", "lr x norm_bias_lr_scale", "lr x muon_lr_scale"


@dataclass
class Config:
    # --- model
    preset: str = "custom"  # the preset these values start from (from_preset sets it; --set cannot rename it)
    model: str = "seed002_net"  # architecture name; see cifar_utils.models.ARCHITECTURES
    stem_kernel: int = 3  # CIFAR ResNets: kernel size of the first convolution (report 003's is 1)
    head_softmax: bool = False  # seed004_net: end in a Softmax, so the loss sees probabilities as report 004 did (slower; see seed004_net)
    head_pool: str = "avg"  # cpu_net, fast_net, fast_best_net: the head's global pooling, "avg" or "max" (airbench94's)
    identity_init: bool = False  # cpu_net, fast_net, fast_best_net: each Block's 3x3 branch starts as the identity (airbench94's dirac init)
    # --- data
    data_root: Optional[str] = None  # folder of the data (torchvision's CIFAR-10 or an image folder); none: $CIFAR10_ROOT, then ./data
    dataset: str = "auto"  # auto-detect, or force: cifar10 | folder | synthetic
    download: bool = False  # let torchvision download the official CIFAR-10 if it is missing
    skip_bad_files: bool = False  # skip unreadable images in an image folder, with a warning, instead of stopping
    validation_split: Optional[int] = None  # training images held out for validation (seeded, stratified by class); None: 10% of them; 0: none
    train_limit: Optional[int] = None  # seeded random subset of the training split, for quick runs
    validation_limit: Optional[int] = None  # seeded random subset of the validation split, for quick runs
    test_limit: Optional[int] = None  # seeded random subset of the test set, for quick runs
    augmentation: str = "crop_flip"  # affine_jitter | crop_flip | resized_crop_flip | none
    crop_padding: int = CROP_PADDING  # crop_flip: shift by up to this many pixels; other than 4 needs pipeline=gpu
    crop_fill: str = "zeros"  # crop_flip: what a shift brings in at the border, zeros or reflect (the mirrored image; needs pipeline=gpu)
    alternating_flip: bool = False  # gpu pipeline: flip each image on every other epoch (random start) instead of at random
    cutout: int = 0  # gpu pipeline: blank a random square of this side in each training image; 0: off
    progressive_start: int = 0  # gpu pipeline: progressive resizing, the first epochs train on augmented images shrunk to this side, then 8 px larger per stage up to full size (16: 16, then 24 px); 0: off
    progressive_fraction: float = 0.7  # progressive_start: share of the epochs trained below full size, in equal stages (the last epoch always trains at full size)
    normalization: str = "fixed"  # fixed: mean=std=0.5; train_stats: per-channel statistics of the training split
    pipeline: str = "torchvision"  # torchvision DataLoader, or gpu: whole uint8 dataset on the device
    batch_size: int = 128  # training mini-batch size (the optimizer steps every accumulation_steps of them)
    drop_last: bool = False  # leave out an epoch's last partial training mini-batch: one batch shape for every step
    eval_batch_size: int = 256  # validation and test batch size
    num_workers: Optional[int] = None  # DataLoader worker processes; None picks for the device
    # --- loss
    loss: str = "cross_entropy"  # cross_entropy | kl_label_smoothing (report 000)
    label_smoothing: float = 0.0  # label-smoothing epsilon, for both losses
    kl_weight: float = 0.0  # weight of the KL term in kl_label_smoothing
    # --- optimisation
    optimizer: str = "adam"  # sgd | adam | adamw | muon (SGD, with orthogonalised steps for conv filters)
    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 0.0  # L2 (sgd, adam) or decoupled (adamw) weight decay
    weight_decay_norm_bias: bool = True  # also decay BatchNorm parameters and biases (False: only conv/Linear weights)
    norm_bias_lr_scale: float = 1.0  # learning-rate multiplier of BatchNorm parameters and biases (decay per step kept)
    momentum: float = 0.9  # SGD momentum
    nesterov: bool = False  # SGD Nesterov momentum
    muon_lr_scale: float = 0.2  # muon: the conv filters' learning rate as a multiple of lr (their orthogonalised steps are large)
    muon_momentum: float = 0.6  # muon: momentum of the conv filters' steps (momentum: everything else)
    scheduler: str = "cosine"  # cosine | plateau | onecycle | warmup_cosine | warmup_linear (linear decay after the warm-up) | none
    cosine_t_max: Optional[int] = None  # cosine half-period in epochs; None: the number of epochs
    min_lr: float = 0.0  # every parameter group's floor in the cosine, warmup_cosine, warmup_linear and plateau schedules (eta_min)
    plateau_factor: float = 0.1  # ReduceLROnPlateau: multiply the LR by this on a plateau
    plateau_patience: int = 5  # ReduceLROnPlateau: epochs without validation improvement before a cut
    warmup_epochs: float = 0.0  # warmup_cosine, warmup_linear: linear warm-up length in epochs (fractions allowed)
    warmup_start: float = 0.0  # warmup_cosine, warmup_linear: the warm-up rises from this fraction of lr
    epochs: int = 30  # passes over the training split
    accumulation_steps: int = 1  # mini-batches per optimizer step (gradient accumulation)
    grad_clip: Optional[float] = None  # clip the global gradient norm to this; None: no clipping
    ema_decay: Optional[float] = None  # keep an exponential moving average of the weights for evaluation
    lookahead_decay: Optional[float] = None  # airbench94's lookahead: every 5 steps the weights restart from their average, whose decay per step ramps up to this; None: off
    precision: str = "auto"  # auto (CUDA: bf16, fp16 without it; CPU: bf16 where measured faster, else fp32) | bf16 | fp16 | fp32
    # --- run
    seed: int = 0  # seeds the split, subsets, initialisation, shuffling and augmentation
    print_every: int = 1  # print a summary line every this many epochs
    keep_best: bool = False  # keep checkpoint_best.pt (best validation accuracy) and test with it
    checkpoint_every_steps: int = 0  # also checkpoint every N optimizer steps within an epoch; 0: per epoch only
    tta: str = "none"  # test-time augmentation: none | flip | flip_translate
    channels_last: bool = False  # use channels_last memory format (faster convolutions on recent GPUs)
    compile: bool = False  # torch.compile the model (compile time is reported separately)
    deterministic: bool = False  # ask torch for deterministic kernels (slower on the GPU)
    sync_batchnorm: bool = False  # under torchrun, convert BatchNorm to SyncBatchNorm

    def validate(self) -> "Config":
        """Check types and values; raise :class:`ConfigError` naming the field and the fix."""
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            _check_type(field.name, value, _field_types()[field.name])
            # inf and nan pass every comparison below that they should fail, and would end up in metrics.json
            _require(not isinstance(value, float) or math.isfinite(value), field.name, value, "must be a finite number")
        choices = {
            "augmentation": AUGMENTATIONS, "normalization": NORMALIZATIONS, "pipeline": PIPELINES,
            "dataset": DATASETS, "loss": LOSSES, "optimizer": OPTIMIZERS, "scheduler": SCHEDULERS,
            "precision": PRECISIONS, "tta": TTA_MODES, "crop_fill": CROP_FILLS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}={getattr(self, name)!r} is not valid; choose one of {', '.join(allowed)}")
        from .models import ARCHITECTURES, model_options  # local import: models imports Config from here

        if self.model not in ARCHITECTURES:
            raise ConfigError(f"model={self.model!r} is unknown; choose one of {', '.join(sorted(ARCHITECTURES))}")
        _require(self.lr > 0, "lr", self.lr, "must be > 0 (try 1e-3 for Adam or 0.1 for SGD)")
        _require(self.epochs >= 1, "epochs", self.epochs, "must be at least 1")
        _require(0 <= self.seed < 2**32, "seed", self.seed, "must be in [0, 2**32), the range every random generator here takes")
        _require(self.batch_size >= 1, "batch_size", self.batch_size, "must be at least 1")
        _require(self.eval_batch_size >= 1, "eval_batch_size", self.eval_batch_size, "must be at least 1")
        _require(self.accumulation_steps >= 1, "accumulation_steps", self.accumulation_steps, "must be at least 1")
        _require(self.validation_split is None or self.validation_split >= 0, "validation_split", self.validation_split,
                 "must be 0 or more, or None: validation images are held out of the training set (never the test set)")
        _require(self.train_limit is None or self.train_limit >= 1, "train_limit", self.train_limit, "must be at least 1, or None")
        for name in ("validation_limit", "test_limit"):
            _require(getattr(self, name) is None or getattr(self, name) >= 1, name, getattr(self, name),
                     "must be at least 1, or None")
        _require(0 <= self.momentum < 1, "momentum", self.momentum, "must be in [0, 1)")
        _require(self.muon_lr_scale > 0, "muon_lr_scale", self.muon_lr_scale, "must be > 0 (try 0.2)")
        _require(0 <= self.muon_momentum < 1, "muon_momentum", self.muon_momentum, "must be in [0, 1)")
        _require(not self.nesterov or self.momentum > 0, "nesterov", self.nesterov,
                 "needs momentum > 0 (Nesterov momentum with momentum=0 is undefined)")
        _require(0 < self.plateau_factor < 1, "plateau_factor", self.plateau_factor, "must be in (0, 1)")
        _require(self.plateau_patience >= 0, "plateau_patience", self.plateau_patience, "must be 0 or more")
        _require(self.weight_decay >= 0, "weight_decay", self.weight_decay, "must be 0 or more")
        _require(self.norm_bias_lr_scale > 0, "norm_bias_lr_scale", self.norm_bias_lr_scale, "must be > 0")
        _require(0 <= self.label_smoothing < 1, "label_smoothing", self.label_smoothing, "must be in [0, 1)")
        _require(self.kl_weight >= 0, "kl_weight", self.kl_weight, "must be 0 or more")
        _require(self.min_lr >= 0, "min_lr", self.min_lr, "must be 0 or more")
        _require(self.print_every >= 1, "print_every", self.print_every, "must be at least 1")
        _require(self.checkpoint_every_steps >= 0, "checkpoint_every_steps", self.checkpoint_every_steps, "must be 0 or more")
        _require(self.warmup_epochs >= 0, "warmup_epochs", self.warmup_epochs, "must be 0 or more")
        _require(0 <= self.warmup_start < 1, "warmup_start", self.warmup_start, "must be in [0, 1)")
        _require(self.grad_clip is None or self.grad_clip > 0, "grad_clip", self.grad_clip, "must be > 0, or None")
        _require(self.ema_decay is None or 0 < self.ema_decay < 1, "ema_decay", self.ema_decay, "must be in (0, 1), or None")
        _require(self.lookahead_decay is None or 0 < self.lookahead_decay < 1, "lookahead_decay", self.lookahead_decay,
                 "must be in (0, 1), or None")
        _require(self.ema_decay is None or self.lookahead_decay is None, "lookahead_decay", self.lookahead_decay,
                 "cannot be combined with ema_decay (both average the weights): set one of them to None")
        _require(self.num_workers is None or self.num_workers >= 0, "num_workers", self.num_workers, "must be 0 or more, or None")
        _require(self.cosine_t_max is None or self.cosine_t_max >= 1, "cosine_t_max", self.cosine_t_max, "must be at least 1, or None")
        _require(0 <= self.crop_padding <= 16, "crop_padding", self.crop_padding, "must be between 0 and 16")
        _require(0 <= self.cutout <= IMAGE_SIZE, "cutout", self.cutout, f"must be between 0 and {IMAGE_SIZE} (pixels)")
        _require(0 < self.progressive_fraction < 1, "progressive_fraction", self.progressive_fraction, "must be in (0, 1)")
        _require(self.progressive_start in (0, 16, 24), "progressive_start", self.progressive_start,
                 f"must be 0 (off), 16 or 24 pixels: the stages grow by {PROGRESSIVE_STEP} px up to the full {IMAGE_SIZE}, "
                 "and the fast networks' three 2x2 poolings need at least 16")
        _require(self.stem_kernel >= 1 and self.stem_kernel % 2 == 1, "stem_kernel", self.stem_kernel,
                 "must be an odd number of pixels (1, 3, 5, ...), so that the stem keeps the image size")
        _require(self.head_pool in POOLS, "head_pool", self.head_pool, f"must be one of {', '.join(POOLS)}")
        model_options(self)  # refuses an architecture option the chosen model does not take
        from .fast_models import ARCHITECTURES as ANY_SIZE  # global pooling: they take smaller images too

        _require(not self.progressive_start or self.model in ANY_SIZE, "progressive_start", self.progressive_start,
                 f"needs a network that takes smaller images ({', '.join(ANY_SIZE)}); model={self.model!r} does not: "
                 "leave progressive_start at 0")
        self._check_used_settings()
        rates = self.group_rates()
        lowest = min(rates, key=rates.get)
        _require("min_lr" in ignored_settings(self) or self.min_lr < rates[lowest], "min_lr", self.min_lr,
                 f"must be below {lowest} ({rates[lowest]:g}): it is the floor that every parameter group's "
                 "learning rate decays to")
        self._check_needs_validation()
        self._check_gpu_only_augmentations()
        return self

    def group_rates(self) -> dict[str, float]:
        """The peak learning rate of each parameter group (:func:`cifar_utils.optim.parameter_groups`), keyed by
        how it is set: :data:`WEIGHTS_RATE`, :data:`NORM_BIAS_RATE` and, for Muon, :data:`FILTERS_RATE`."""
        rates = {WEIGHTS_RATE: self.lr, NORM_BIAS_RATE: self.lr * self.norm_bias_lr_scale}
        if self.optimizer == "muon":
            rates[FILTERS_RATE] = self.lr * self.muon_lr_scale
        return rates

    def _check_used_settings(self) -> None:
        """Refuse the settings (:data:`USED_ONLY_WITH`) given away from the preset's values that the chosen loss,
        optimizer, scheduler or augmentation never reads. The preset's own values stay where a switch leaves them unread
        (``fast`` with ``scheduler=cosine`` keeps its warm-up settings, unused), so a switch needs no resets."""
        baseline = preset_values(self.preset)
        given = [name for name in ignored_settings(self) if getattr(self, name) != baseline[name]]
        if given:
            why = "; ".join(f"{name} only with {field}={' or '.join(map(repr, choices))}"
                            for name, (field, choices) in USED_ONLY_WITH.items() if name in given)
            chosen = ", ".join(sorted({f"{USED_ONLY_WITH[name][0]}={getattr(self, USED_ONLY_WITH[name][0])!r}"
                                       for name in given}))
            raise ConfigError(f"{', '.join(f'{name}={getattr(self, name)!r}' for name in given)} would be ignored: "
                              f"{chosen} never reads {'it' if len(given) == 1 else 'them'} (this kit reads {why}). "
                              f"Change that choice, or set {'it' if len(given) == 1 else 'them'} back to "
                              f"{'the default' if baseline == field_defaults() else 'the preset'}'s value: "
                              + " ".join(f"--set {name}={cli_value(baseline[name])}" for name in given))

    def _check_needs_validation(self) -> None:
        """validation_split=0 leaves no validation set: refuse the settings that decide on validation results."""
        if self.validation_split != 0:
            return
        deciders = {"keep_best": (self.keep_best, "keeps the checkpoint with the best validation accuracy",
                                  "set keep_best=False"),
                    "scheduler": (self.scheduler == "plateau", "cuts the learning rate when the validation loss "
                                  "stops improving", "choose another scheduler (cosine, onecycle, warmup_cosine, warmup_linear, none)")}
        for name, (used, why, fix) in deciders.items():
            if used:
                raise ConfigError(f"{name}={getattr(self, name)!r} {why}, but validation_split=0 holds out no "
                                  f"validation images: {fix}, or hold out some (validation_split=N, or None for "
                                  f"{VALIDATION_FRACTION:.0%})")

    def _check_gpu_only_augmentations(self) -> None:
        """The torchvision pipeline has none of the GPU pipeline's extra augmentation settings."""
        if self.pipeline != "gpu":
            defaults = field_defaults()
            used = [(name, getattr(self, name), defaults[name]) for name in GPU_ONLY_SETTINGS
                    if getattr(self, name) != defaults[name]]
            if used:
                from .presets import PRESETS  # local import: presets builds on this module

                preset = PRESETS.get(self.preset)
                from_preset = [name for name, _, _ in used if preset is not None and name in preset.overrides]
                names = ", ".join(f"{name}={value!r}" for name, value, _ in used)
                resets = " ".join(f"--set {name}={cli_value(default)}" for name, _, default in used)
                origin = f" (preset {self.preset!r} sets {', '.join(from_preset)})" if from_preset else ""
                raise ConfigError(f"{names} {'needs' if len(used) == 1 else 'need'} pipeline='gpu', the "
                                  f"only one that has {'it' if len(used) == 1 else 'them'}{origin}: add --pipeline gpu, or for "
                                  f"pipeline={self.pipeline!r} set {'it' if len(used) == 1 else 'them'} back to "
                                  f"the default: {resets}")
        if self.alternating_flip and self.augmentation not in FLIPPING_AUGMENTATIONS:
            raise ConfigError("alternating_flip=True needs an augmentation that flips; augmentation='none' has no flip")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def progressive_schedule(config: Config, full: int = IMAGE_SIZE) -> list[int]:
    """The training image side of each of the first epochs (0-based) below ``full`` size, from
    ``progressive_start`` and ``progressive_fraction``; later epochs train at full size. With 10 epochs,
    16 and 0.7: [16, 16, 16, 16, 24, 24, 24]."""
    sides = list(range(config.progressive_start, full, PROGRESSIVE_STEP)) if config.progressive_start else []
    # rounded before the floor, so that 0.57 x 100 epochs (56.999... in floating point) gives 57
    low = min(math.floor(round(config.progressive_fraction * config.epochs, 9)), config.epochs - 1)
    if not sides or low < 1:
        return []
    return [sides[epoch * len(sides) // low] for epoch in range(low)]


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(Config)]


@functools.cache
def field_help() -> dict[str, str]:
    """What each :class:`Config` field does: the comment beside its definition, read from the source, so that
    the command line's help and ``presets --fields`` say what the code says."""
    source = inspect.getsource(Config)
    lines = {node.target.id: node.end_lineno for node in ast.parse(source).body[0].body
             if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)}
    comments = {token.start[0]: token.string.lstrip("#").strip()
                for token in tokenize.generate_tokens(io.StringIO(source).readline) if token.type == tokenize.COMMENT}
    return {name: comments.get(line, "") for name, line in lines.items()}


def with_defaults(saved: dict[str, Any]) -> dict[str, Any]:
    """A whole config saved with :meth:`Config.to_dict`, in today's fields (:func:`upgrade_saved`), each
    field it lacks (it predates the field) at its default, which is what that run did."""
    return {**Config().to_dict(), **upgrade_saved(saved)}


def upgrade_saved(saved: dict[str, Any]) -> dict[str, Any]:
    """A config saved by an earlier version, its renamed fields in today's terms: ``eval_limit`` is both
    ``validation_limit`` and ``test_limit``; ``muon_lr`` (the filters' own rate) is ``muon_lr_scale`` times
    ``lr``, and meant nothing in a run that did not train with Muon."""
    values = dict(saved)
    if "eval_limit" in values:
        limit = values.pop("eval_limit")
        values.setdefault("validation_limit", limit)
        values.setdefault("test_limit", limit)
    if "muon_lr" in values:
        rate = values.pop("muon_lr")
        if values.get("optimizer") == "muon" and values.get("lr"):
            values.setdefault("muon_lr_scale", rate / values["lr"])
    return values


def preset_values(preset: str) -> dict[str, Any]:
    """Every field's value before a user's overrides: preset ``preset``'s (its recipe, not its faithful
    variant), else :class:`Config`'s defaults."""
    from .presets import PRESETS  # local import: presets builds on this module

    return {**field_defaults(), **(PRESETS[preset].overrides if preset in PRESETS else {})}


def field_defaults() -> dict[str, Any]:
    """Every :class:`Config` field's default, by name."""
    return {f.name: f.default for f in dataclasses.fields(Config)}


def ignored_settings(config: Config) -> list[str]:
    """The :data:`USED_ONLY_WITH` settings that ``config``'s loss, optimizer, scheduler and augmentation never
    read."""
    return [name for name, (field, choices) in USED_ONLY_WITH.items() if getattr(config, field) not in choices]


def without_ignored(config: Config) -> Config:
    """``config`` with its :func:`ignored_settings` at the preset's values: two runs that differ only there
    computed the same thing (a run saved before such settings were refused may carry one)."""
    baseline = preset_values(config.preset)
    return dataclasses.replace(config, **{name: baseline[name] for name in ignored_settings(config)})


def cli_value(value: Any) -> str:
    """``value`` as ``--set FIELD=VALUE`` writes it: none, true, false, or the value."""
    return "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def replace(config: Config, **overrides: Any) -> Config:
    """A copy of ``config`` with ``overrides``; unknown field names are rejected with the valid ones."""
    unknown = sorted(set(overrides) - set(field_names()))
    if unknown:
        raise ConfigError(
            f"unknown config field(s): {', '.join(unknown)}. Valid fields: {', '.join(field_names())}"
        )
    return dataclasses.replace(config, **overrides)


def config_from_dict(values: dict[str, Any]) -> Config:
    """Rebuild a config saved with :meth:`Config.to_dict` (for example inside a checkpoint)."""
    values = upgrade_saved(values)
    return replace(Config(), **values)


def parse_value(name: str, text: str) -> Any:
    """Parse a command-line string for field ``name`` into the field's type ("none" gives None)."""
    if name not in field_names():
        raise ConfigError(f"unknown config field: {name}. Valid fields: {', '.join(field_names())}")
    kind = _field_types()[name]
    allowed = _allowed_types(kind)
    if not text:  # an unset shell variable, say: never a silent "none", which means the whole data set
        raise ConfigError(f"{name} was given an empty value; give a value, or 'none' where the field allows it")
    if type(None) in allowed and text.lower() in ("none", "null"):
        return None
    try:
        if bool in allowed:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if int in allowed:
            return int(text)
        if float in allowed:
            return float(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not a valid {_type_name(kind)}") from None
    return text


def _require(ok: bool, name: str, value: Any, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{name}={value!r} is invalid: it {rule}")


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(Config)


def _allowed_types(kind: Any) -> tuple:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return typing.get_args(kind)
    return (kind,)


def _type_name(kind: Any) -> str:
    return " or ".join("None" if t is type(None) else t.__name__ for t in _allowed_types(kind))


def _check_type(name: str, value: Any, kind: Any) -> None:
    allowed = _allowed_types(kind)
    if value is None and type(None) in allowed:
        return
    if isinstance(value, bool):
        ok = bool in allowed
    elif isinstance(value, int):
        ok = int in allowed or float in allowed  # an int is a fine float
    else:
        ok = any(t is not type(None) and isinstance(value, t) for t in allowed)
    if not ok:
        raise ConfigError(
            f"{name}={value!r} has type {type(value).__name__}, but {name} must be {_type_name(kind)}"
        )
