"""What a built recipe is checked for before it trains: everything training would find
out later, found on one sample instead.

:func:`slimhub.recipe.load_recipe` runs these checks after building the model, data,
teacher and callbacks (``slimhub run --check`` is that and nothing more), so a recipe
that loads does not fail before its first training step for a reason the recipe could
have said: folders that cannot be written, data without a batch, a checkpoint to resume
that does not load into the recipe's network, strategies and optimizer, a model that does
not take the data's samples or has fewer outputs than the data has classes, a pruning
``input_shape`` the model does not take, ``include`` / ``exclude`` patterns that match
nothing or leave nothing to prune, a ``pruned_flops`` the model cannot reach,
distillation taps on layers that do not exist or losses that cannot be computed on the
networks' features, and ``skip`` patterns that leave nothing to quantize. Each is a
:class:`slimhub.recipe.RecipeError` naming the key. Nothing is left written and no random
state changes (checks that create layers restore Paddle's, numpy's and Python's).
"""
from __future__ import annotations

import contextlib
import copy
import fnmatch
import math
import os
import random
import warnings

import numpy as np
import paddle

from slimhub import validate
from slimhub.callbacks.callback_list import CallbackList
from slimhub.callbacks.prune import SENSITIVITY_FILE
from slimhub.checkpoint import LAST_CHECKPOINT, load_checkpoint, nearest_existing, probe_write
from slimhub.distill.distiller import Distiller, parse_losses
from slimhub.distill.taps import UnknownLayerError, find_layer
from slimhub.quant.wrap import layers_to_quantize
from slimhub.recipe import build
from slimhub.recipe.errors import describe
from slimhub.trainer import Trainer


@contextlib.contextmanager
def kept_random_state():
    """Run the block and put Paddle's, numpy's and Python's random state back."""
    states = paddle.get_rng_state(), np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        paddle.set_rng_state(states[0])
        np.random.set_state(states[1])
        random.setstate(states[2])


@contextlib.contextmanager
def evaluating(*networks):
    """Eval mode and no gradients for the block; each network's mode is put back."""
    modes = [net.training for net in networks]
    for net in networks:
        net.eval()
    try:
        with paddle.no_grad():
            yield
    finally:
        for net, mode in zip(networks, modes):
            if mode:
                net.train()


# ------------------------------------------------------------------ folders
def _unwritable(folder):
    """Why files cannot be written in ``folder`` (made if missing), or None; a file is
    created and removed in its nearest existing folder."""
    probe = nearest_existing(folder)
    if not os.path.isdir(probe):
        return f"{probe} is a file, not a folder"
    try:
        probe_write(probe)
    except OSError as exc:
        return f"{probe} is not writable ({exc.strerror or exc})"
    return None


def check_folders(located, config):
    """``save_dir``, the export's folder and each ``sensitivity_cache``'s folder can be written."""
    places = [(("trainer", "save_dir"), config["trainer"]["save_dir"])]
    if config["export"]["path"] is not None:
        places.append((("export", "path"), os.path.dirname(os.path.abspath(config["export"]["path"]))))
    for name, spec in config["strategies"].items():
        if spec.get("sensitivity_cache"):
            cache = os.path.abspath(spec["sensitivity_cache"])
            if os.path.isdir(cache):
                raise located.error(("strategies", name, "sensitivity_cache"),
                                    f"{cache} is a folder; give a file path (e.g. {cache}/sensitivity.json)")
            places.append((("strategies", name, "sensitivity_cache"), os.path.dirname(cache)))
    for path, folder in places:
        if folder is None:
            continue
        reason = _unwritable(folder)
        if reason:
            raise located.error(path, f"cannot write files in {os.path.abspath(folder)}: {reason}")


# -------------------------------------------------------------- one sample
def _label_count(dataset):
    """Classes the labels of ``dataset`` name (highest label + 1), where it says cheaply."""
    indices = None
    while isinstance(dataset, paddle.io.Subset):
        own = np.asarray(dataset.indices)
        indices = own if indices is None else own[indices]
        dataset = dataset.dataset
    labels = getattr(dataset, "labels", None)
    if labels is None and isinstance(getattr(dataset, "classes", None), (list, tuple)):
        return len(dataset.classes)
    if labels is None and isinstance(getattr(dataset, "data", None), list):
        labels = [item[1] for item in dataset.data if isinstance(item, tuple) and len(item) == 2]
    if labels is None:
        return None
    labels = np.asarray(labels).reshape(len(labels), -1)[:, 0] if len(labels) else np.zeros(0)
    if indices is not None and len(labels):
        labels = labels[indices]
    return int(labels.max()) + 1 if len(labels) else None


def first_sample(located, data, what):
    """The first input of ``data`` as a batch of one."""
    try:
        x = data[0][0]
    except Exception as exc:  # noqa: BLE001
        raise located.error(("data",), f"cannot read the first {what} sample: {describe(exc)}") from None
    return paddle.to_tensor(np.asarray(x, dtype="float32")[None])


def _outputs(network, x):
    out = network(x)
    return out[0] if isinstance(out, (list, tuple)) else out


def check_model(located, config, model, train_data, eval_data, input_shape):
    """The model takes one training sample and has an output per class of the data;
    returns ``(number of outputs, the sample)``."""
    dataset = config["data"]["dataset"]
    x = first_sample(located, train_data, "training")
    shape = list(x.shape[1:])
    if shape != list(input_shape):
        raise located.error(("data",), f"data.dataset {dataset!r} promises inputs of shape "
                            f"{list(input_shape)} but its first training sample has shape {shape}")
    try:
        with evaluating(model):
            classes = int(_outputs(model, x).shape[-1])
    except Exception as exc:  # noqa: BLE001  (any failure here means the model and the data do not fit)
        raise located.error(("model",), f"the model does not accept the inputs of data.dataset "
                            f"{dataset!r} (shape {list(input_shape)}): {describe(exc)}") from None
    for data, what in ((train_data, "training"), (eval_data, "eval")):
        labels = _label_count(data)
        if labels is not None and labels > classes:
            path = ("model", "args", "num_classes") if "num_classes" in config["model"]["args"] else ("model",)
            raise located.error(path, f"the model has {classes} outputs but the {what} data's labels "
                                f"go up to {labels - 1}: it needs at least {labels} (num_classes: {labels})")
    return classes, x


def check_batches(located, config, train_data, eval_data):
    """An epoch holds a batch of training data (with ``drop_last``, a full one), and the eval
    data a sample."""
    trainer = config["trainer"]
    for data, what, drop_last in ((train_data, "training", trainer["drop_last"]), (eval_data, "eval", False)):
        try:
            validate.count_batches(data, trainer["batch_size"], drop_last, f"the {what} data")
        except (TypeError, ValueError) as exc:
            key = ("trainer", "drop_last") if drop_last and len(data) else ("data",)
            raise located.error(key, str(exc)) from None


# ----------------------------------------------------------------- resume
def check_resume(located, config, model, callbacks, make_optimizer):
    """With ``resume: true``, the checkpoint in ``save_dir`` (if one is there) loads as ``fit``
    will load it: into copies of the network, the strategies' callbacks and the optimizer
    (``make_optimizer(network)``), holding no state of a strategy the recipe lacks."""
    trainer = config["trainer"]
    path = os.path.join(trainer["save_dir"] or "", LAST_CHECKPOINT)
    if not trainer["resume"] or not os.path.exists(path):
        return
    try:
        state = load_checkpoint(path)
        strategies = {cls.__name__ for cls in build.STRATEGIES.values()}
        own = CallbackList(callbacks).keys()
        foreign = [k for k in state["callbacks"] if k.partition(".")[0] in strategies and k not in own]
        if foreign:
            raise ValueError(f"it holds the state of {foreign}, which no strategy of the recipe has")
        network = copy.deepcopy(model)
        with kept_random_state():
            Trainer(network, make_optimizer(network)).load(path, callbacks=copy.deepcopy(callbacks))
    except Exception as exc:  # noqa: BLE001  (whatever fails here fails fit's resume too)
        raise located.error(("trainer", "resume"), f"cannot resume from {path}: "
                            f"{describe(exc)}; delete it to start afresh, or resume: false") from None


# ------------------------------------------------------------------ prune
def _patterns(value):
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def check_prune(located, name, spec, callback, model, sample_shape, keep):
    """The strategy's input shape, scope and target fit the model; returns the fraction
    of the MACs left after it (``keep`` is that fraction before it)."""
    from slimhub.prune.graph import build_graph  # noqa: PLC0415  (slimhub.prune imports paddle heavily)

    path = ("strategies", name)
    shape = list(callback.input_shape)
    if shape != list(sample_shape):
        if shape[0] != sample_shape[0]:
            raise located.error(path + ("input_shape",), f"got {shape}; the data's samples have "
                                f"{sample_shape[0]} channels ({list(sample_shape)}): input_shape must "
                                "have as many (or be null: the data's shape)")
        try:
            with evaluating(model):
                model(paddle.zeros([1, *shape]))
        except Exception as exc:  # noqa: BLE001
            raise located.error(path + ("input_shape",), f"got {shape}; the model does not accept an "
                                f"input of that shape: {describe(exc)}") from None
    layers = [n for n, _ in model.named_sublayers()]
    for key in ("include", "exclude"):
        patterns = _patterns(spec.get(key))
        for i, pattern in enumerate(patterns):
            if not any(fnmatch.fnmatchcase(layer, pattern) for layer in layers):
                where = path + (key, i) if isinstance(spec[key], list) else path + (key,)
                raise located.error(where, f"pattern {pattern!r} matches no layer of the model; layers: "
                                    f"{layers[:12]}{' ...' if len(layers) > 12 else ''}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the pruning step itself warns about groups left whole
            graph = build_graph(model, shape, include=callback.include, exclude=callback.exclude,
                                round_to=callback.round_to)
    except ValueError as exc:
        where = path + ("round_to",) if "round_to" in str(exc) else path
        raise located.error(where, str(exc)) from None
    if not graph.groups:
        key = "include" if spec.get("include") else "exclude" if spec.get("exclude") else None
        left = "; ".join(f"{g}: {why}" for g, why in list(graph.left_out.items())[:6])
        raise located.error(path + ((key,) if key else ()), f"leaves no group of channels to prune "
                            f"({left or 'the model has no prunable layers'})")
    smallest = graph.flops({g.name: g.removals[-1] for g in graph.groups})
    after = keep * (1.0 - callback.pruned_flops)
    if smallest > after * graph.base_flops:
        most = 1 - smallest / graph.base_flops
        rounding = f", keeping multiples of round_to={callback.round_to} channels" if callback.round_to > 1 else ""
        before = f" after earlier pruning leaves {keep:.1%} of them" if keep < 1 else ""
        allowed = math.floor((1 - (1 - most) / keep) * 1e4) / 1e4
        raise located.error(path + ("pruned_flops",),
                            f"got {callback.pruned_flops!r}; allowed: at most {max(allowed, 0):.4f} for this "
                            f"model{before} (pruning every prunable group as far as allowed{rounding} "
                            f"removes {most:.1%} of its MACs)")
    return after


class _Unscored(Exception):
    """Raised by the scorer :func:`check_sensitivity_cache` gives the scan: nothing is scored."""


def _unscored(network):
    raise _Unscored


def check_sensitivity_cache(located, config, name, callback, model):
    """The sensitivity file a ``sensitive`` pruning reads (``sensitivity_cache``, else
    ``save_dir/sensitivity.json``), if there is one, fits the model: the scan that pruning
    starts is begun on it, and stopped before it scores anything or writes."""
    from slimhub.prune import scan_sensitivity  # noqa: PLC0415  (as in check_prune)

    key = ("strategies", name, "sensitivity_cache")
    cache = callback.sensitivity_cache
    if cache is None and config["trainer"]["save_dir"] is not None:
        key, cache = ("trainer", "save_dir"), os.path.join(config["trainer"]["save_dir"], SENSITIVITY_FILE)
    if callback.method != "sensitive" or cache is None or not os.path.exists(cache):
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scan_sensitivity(model, callback.input_shape, _unscored, criterion=callback.criterion,
                             cache_path=cache, include=callback.include, exclude=callback.exclude)
    except _Unscored:
        pass
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise located.error(key, f"strategies.{name} cannot use the sensitivity file {cache}: "
                            f"{describe(exc)}; delete it to scan again") from None


# ---------------------------------------------------------------- distill
def check_taps(located, name, losses, teacher, student):
    """Every layer a distillation loss taps exists in its network (before the callback is
    built, so that the error names the loss and the side)."""
    try:
        terms = parse_losses(losses)
    except (TypeError, ValueError, KeyError):
        return  # the callback names what is wrong with the list itself
    for i, term in enumerate(terms):
        for side, network in (("teacher", teacher), ("student", student)):
            for layer in term.layers(side):
                try:
                    find_layer(network, layer, side)
                except UnknownLayerError as exc:
                    raise located.error(("strategies", name, "losses", i, side), str(exc)) from None


def check_distill(located, name, callback, student, x, dataset):
    """The teacher takes the sample, and the losses compute on both networks' features."""
    path = ("strategies", name)
    try:
        callback.check_student(student)
    except TypeError as exc:
        raise located.error(path + ("losses",), str(exc)) from None
    teacher = callback.teacher
    try:
        with evaluating(teacher):
            _outputs(teacher, x)
    except Exception as exc:  # noqa: BLE001
        raise located.error(path + ("teacher",), f"the teacher does not accept the inputs of data.dataset "
                            f"{dataset!r} (shape {list(x.shape[1:])}): {describe(exc)}") from None
    distiller = None
    try:
        with kept_random_state(), evaluating(student, teacher):
            distiller = Distiller(teacher, student, callback.losses)
            _outputs(student, x)
            distiller.loss(x)
    except Exception as exc:  # noqa: BLE001
        raise located.error(path + ("losses",), f"the distillation losses cannot be computed on one "
                            f"training sample: {describe(exc)}") from None
    finally:
        if distiller is not None:
            distiller.close()


# -------------------------------------------------------------------- qat
def check_qat(located, name, spec, callback, model):
    """``skip`` patterns match layers and leave some to quantize."""
    path = ("strategies", name, "skip")
    skip = list(callback.config.skip)
    try:
        layers = layers_to_quantize(model, callback.config)
    except ValueError as exc:
        bad = next((i for i, p in enumerate(skip) if str(p) in str(exc)), None)
        where = path + (bad,) if bad is not None and isinstance(spec.get("skip"), list) else path
        raise located.error(where, str(exc).removeprefix("quantize: ")) from None
    if not layers:
        raise located.error(path if skip else ("strategies", name),
                            "leaves no Conv2D or Linear layer to quantize" if skip else
                            "the model has no Conv2D or Linear layer to quantize")


# ------------------------------------------------------------------- all
def preflight(located, config, model, train_data, eval_data, input_shape, callbacks, make_optimizer):
    """The checks of the built recipe; ``callbacks`` maps strategy names to their callbacks
    (in the order they run), ``make_optimizer(network)`` builds the recipe's optimizer.
    Returns the model's number of outputs."""
    check_batches(located, config, train_data, eval_data)
    classes, x = check_model(located, config, model, train_data, eval_data, input_shape)
    check_resume(located, config, model, list(callbacks.values()), make_optimizer)
    keep = 1.0
    strategies = config["strategies"]
    for name in sorted(strategies, key=lambda n: strategies[n].get("start_epoch", 0)):
        spec, callback = strategies[name], callbacks[name]
        if spec["type"] == "prune":
            if keep == 1.0:  # a later pruning scans the network earlier ones pruned
                check_sensitivity_cache(located, config, name, callback, model)
            keep = check_prune(located, name, spec, callback, model, list(x.shape[1:]), keep)
        elif spec["type"] == "distill":
            check_distill(located, name, callback, model, x, config["data"]["dataset"])
        elif spec["type"] == "qat":
            check_qat(located, name, spec, callback, model)
    return classes
