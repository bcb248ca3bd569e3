"""What a recipe's names stand for: datasets, optimizers, learning-rate schedules,
strategies, export formats and the trainer; and building the model (a zoo name or
``module:function``) with its weights.

Each registry maps a name to a callable; a recipe section names one with ``type:``
(a strategy by its key) and its other keys are that callable's keyword arguments.
"""
from __future__ import annotations

import importlib
import os

import paddle

from slimhub.callbacks.distill import DistillCallback
from slimhub.callbacks.prune import PruneCallback
from slimhub.callbacks.qat import QATCallback
from slimhub.checkpoint import set_fitting_state
from slimhub.data import cifar10, fashion_mnist, image_folder
from slimhub.export import EXPORTERS
from slimhub.model_zoo import create_model
from slimhub.trainer import Trainer

importlib.import_module("slimhub.quant")  # registers the onnx and int8 export formats


# ------------------------------------------------------------------ datasets
# Each returns (train dataset, eval dataset, input shape C,H,W).

def _subset(dataset, limit):
    """``limit`` evenly spaced samples (a folder dataset is sorted by class)."""
    if limit is None or limit >= len(dataset):
        return dataset
    return paddle.io.Subset(dataset, [i * len(dataset) // limit for i in range(limit)])


def fashion_mnist_data(root=None, train_limit=None, eval_limit=None, augment=False):
    """Fashion-MNIST idx files in ``root`` (default: $SLIMHUB_DATA, then the system package);
    limits keep the first samples (classes are mixed); ``augment``: random crops (2-pixel
    padding) and horizontal flips of the training images."""
    return (fashion_mnist("train", data_dir=root, limit=train_limit, augment=augment),
            fashion_mnist("test", data_dir=root, limit=eval_limit), (1, 28, 28))


def image_folder_data(root, image_size=224, train_split="train", eval_split="val",
                      train_limit=None, eval_limit=None):
    """``root/<split>/<class>/<image>`` (ImageNet layout), RGB at ``image_size``."""
    return (_subset(image_folder(root, train_split, image_size), train_limit),
            _subset(image_folder(root, eval_split, image_size), eval_limit), (3, image_size, image_size))


def cifar10_data(archive, train_limit=None, eval_limit=None):
    """CIFAR-10 from the python-version tarball ``archive``."""
    return (_subset(cifar10(archive, "train"), train_limit),
            _subset(cifar10(archive, "test"), eval_limit), (3, 32, 32))


DATASETS = {"fashion_mnist": fashion_mnist_data, "image_folder": image_folder_data,
            "cifar10": cifar10_data}

# ---------------------------------------------------------------- optimizers
OPTIMIZERS = {"sgd": paddle.optimizer.SGD, "momentum": paddle.optimizer.Momentum,
              "adam": paddle.optimizer.Adam, "adamw": paddle.optimizer.AdamW}


# -------------------------------------------------- learning-rate schedules
# Each takes the optimizer's learning rate and the number of epochs (stepped once per epoch).

def constant(learning_rate, epochs):
    """The optimizer's learning rate throughout."""
    return learning_rate


def cosine(learning_rate, epochs, eta_min=0.0):
    """Cosine annealing from the learning rate to ``eta_min`` over all epochs."""
    return paddle.optimizer.lr.CosineAnnealingDecay(learning_rate, T_max=epochs, eta_min=eta_min)


def multistep(learning_rate, epochs, milestones, gamma=0.1):
    """Multiply the learning rate by ``gamma`` at each epoch in ``milestones``."""
    return paddle.optimizer.lr.MultiStepDecay(learning_rate, milestones=list(milestones), gamma=gamma)


LR_SCHEDULES = {"constant": constant, "cosine": cosine, "multistep": multistep}

# ---------------------------------------------------------------- strategies
STRATEGIES = {"prune": PruneCallback, "distill": DistillCallback, "qat": QATCallback}
"""Strategy type -> callback class; the callbacks are built in this order (pruning
before quantization, so a checkpoint re-applies a plan before re-wrapping layers). Each
class's ``contract`` says what its keys may be and when it acts."""

# ------------------------------------------------------ export and trainer
EXPORT_FORMATS = EXPORTERS
"""Export format -> exporter (:func:`slimhub.export.register_exporter`); ``export.formats``
names them."""
TRAINER = Trainer
"""The trainer of the ``trainer`` section, whose keys are ``Trainer(...)`` and
``Trainer.fit(...)`` arguments."""


# --------------------------------------------------------------------- model
def import_function(name):
    """The callable ``module.path:function``; ImportError/AttributeError say which part failed."""
    module_name, _, attr = name.partition(":")
    module = importlib.import_module(module_name)
    fn = module
    for part in attr.split("."):
        fn = getattr(fn, part)
    if not callable(fn):
        raise TypeError(f"{name!r} is a {type(fn).__name__}, not a callable that builds a model")
    return fn


def make_model(name, pretrained=False, args=None):
    """A zoo model (``"arch"`` / ``"arch.tag"``) or what ``"module:function"(**args)`` returns."""
    args = dict(args or {})
    if ":" in name:
        if pretrained:
            raise ValueError("pretrained applies to zoo names only; load a file with weights: instead")
        model = import_function(name)(**args)
    else:
        model = create_model(name, pretrained=pretrained, **args)
    if not isinstance(model, paddle.nn.Layer):
        raise TypeError(f"{name!r} built a {type(model).__name__}, not a paddle.nn.Layer")
    return model


def load_weights(model, path):
    """Load a state dict (``.pdparams``) or a slimhub checkpoint's network into ``model``;
    every parameter and buffer must match by name and shape."""
    state = paddle.load(path)
    if isinstance(state, dict) and isinstance(state.get("network"), dict):
        state = state["network"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict or a slimhub checkpoint")
    set_fitting_state(model, state, f"weights in {path}",
                      "was it saved after pruning or quantization? Start from the unpruned float weights")
    return model


def existing_file(path):
    """``path`` made absolute; FileNotFoundError says where it was looked for."""
    full = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(full):
        raise FileNotFoundError(f"file {path!r} not found: looked for {full} (relative paths are "
                                f"taken from the current directory, {os.getcwd()})")
    return full
