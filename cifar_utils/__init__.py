"""cifar_utils: the CIFAR-10 coursework report kit.

The coursework network (Blocks that mix K convolutions with input-dependent weights), five reference
report presets, a training engine with safe checkpoints and resume, evaluation, plots, and a command
line (``python -m cifar_utils``). Start with::

    from cifar_utils import from_preset, train
    result = train(from_preset("seed000", epochs=1, train_limit=2000))
"""

from .config import Config, replace
from .data import load_dataset, make_splits
from .device import get_device, set_seed
from .engine import fit, train_epoch, validate_epoch
from .errors import CifarUtilsError
from .evaluation import evaluate, predict
from .experiment import evaluate_checkpoint, train
from .models import Block, build_model
from .presets import PRESETS, from_preset

__all__ = [
    "Block", "CifarUtilsError", "Config", "PRESETS", "build_model", "evaluate", "evaluate_checkpoint", "fit",
    "from_preset", "get_device", "load_dataset", "make_splits", "predict", "replace", "set_seed", "train",
    "train_epoch", "validate_epoch",
]
__version__ = "0.1.0"
