"""What a recipe may say: sections, keys, defaults and allowed values.

Keys of typed sections (``data``, ``trainer.optimizer``, ``trainer.lr_schedule``, each
strategy) are the keyword arguments of the callable the section names, read with
:mod:`inspect`; so a strategy's keys are its callback's constructor arguments and their
defaults. What a signature cannot say (ranges, choices) comes from a strategy's
``contract`` (:mod:`slimhub.rules`, declared beside its callback), and for the
other sections from :data:`CHECKS`; a key without a rule is checked by the type of its
default and then by the callable itself. Every name a recipe uses is looked up in the
registries of :mod:`slimhub.recipe.build`.
"""
from __future__ import annotations

import difflib
import inspect
import math
import numbers

from slimhub.rules import (ANYTHING, BOOLEAN, MAPPING, MAX_EPOCHS, MAX_SIZE, STRING, ArgumentError, Check, choice,
                           integer, list_of, nullable, number)
from slimhub.recipe.build import DATASETS, EXPORT_FORMATS, LR_SCHEDULES, OPTIMIZERS, STRATEGIES, TRAINER

REQUIRED = object()


class Field:
    """A key: its default (or :data:`REQUIRED`), its check, or a nested section."""

    def __init__(self, default, check=ANYTHING, section=None):
        self.default, self.check, self.section = default, check, section


MODEL = {
    "name": Field(REQUIRED, STRING),
    "pretrained": Field(False, Check(lambda v: BOOLEAN(v) or STRING(v), "true, false or a tag")),
    "args": Field({}, MAPPING),
    "weights": Field(None, nullable(STRING)),
}
"""A model: zoo name (``arch`` / ``arch.tag``) or ``module:function``, its keyword
arguments, and a weights file (``.pdparams`` or a slimhub checkpoint)."""

CHECKS = {
    # data
    "root": nullable(STRING), "archive": STRING, "train_limit": nullable(integer(1)),
    "eval_limit": nullable(integer(1)), "image_size": integer(1, MAX_SIZE),
    # trainer (Trainer.fit / Trainer)
    "epochs": integer(1, MAX_EPOCHS), "batch_size": integer(1, 65536),
    "seed": nullable(integer(0, 2**32 - 1)),  # numpy's seeds
    "eval_freq": integer(1, MAX_EPOCHS), "num_workers": integer(0, 256), "verbose": choice([0, 1, 2]),
    "save_dir": nullable(STRING), "amp": choice([False, "O1", "O2"]),
    # optimizers and schedules
    "learning_rate": number(0, open_lo=True), "momentum": number(0, 1),
    "weight_decay": nullable(number(0)), "beta1": number(0, 1, open_hi=True),
    "beta2": number(0, 1, open_hi=True), "epsilon": number(0, open_lo=True),
    "eta_min": number(0), "milestones": list_of(integer(1, MAX_EPOCHS), 1), "gamma": number(0, open_lo=True),
}
"""Rules of the keys of the data, trainer, optimizer and schedule sections (a strategy's
are its callback's ``contract``)."""

NOT_IN_RECIPES = {"parameters", "grad_clip", "name", "lr_ratio", "apply_decay_param_fun",
                  "train_data", "eval_data", "callbacks", "model", "optimizer", "loss", "metrics"}
"""Arguments a recipe does not write: Python objects, or supplied from other sections."""


def _default_check(default):
    if isinstance(default, bool):
        return BOOLEAN
    if isinstance(default, numbers.Integral):
        return integer()
    if isinstance(default, numbers.Real):
        return number()
    if isinstance(default, str):
        return STRING
    return ANYTHING


def signature_fields(fn, supplied=(), rules=CHECKS, models=()):
    """``{argument: Field}`` for ``fn``'s keyword arguments, checked by ``rules``, minus the
    ``supplied`` ones (given otherwise: by another section, or only in Python); ``models``
    are arguments written as a model section."""
    fields = {}
    for name, p in inspect.signature(fn).parameters.items():
        if name in supplied or name in NOT_IN_RECIPES or name == "self" or \
                p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        default = REQUIRED if p.default is p.empty else p.default
        if name in models:
            fields[name] = Field(default, MAPPING, MODEL)
        else:
            fields[name] = Field(default, rules.get(name) or _default_check(default))
    return fields


def _typed(registry, supplied=()):
    """Fields of a section whose ``type`` picks a callable from ``registry``."""
    return lambda kind: signature_fields(registry[kind], supplied)


def strategy_fields(kind):
    """Fields of a strategy: its callback's constructor arguments, by its ``contract``."""
    contract = STRATEGIES[kind].contract
    return signature_fields(STRATEGIES[kind].__init__, contract.python_only, contract.rules, contract.models)


SECTIONS = {
    "description": Field("", Check(lambda v: isinstance(v, str), "a string")),
    "model": Field(REQUIRED, MAPPING, MODEL),
    "data": Field({}, MAPPING),
    "trainer": Field({}, MAPPING),
    "strategies": Field({}, Check(lambda v: v is None or isinstance(v, dict),
                                  "a mapping of strategy name -> its keys")),
    "export": Field({}, MAPPING, {
        "path": Field(None, nullable(STRING)),
        "formats": Field(["inference"], list_of(choice(EXPORT_FORMATS), 1)),
    }),
}
DATA_FIELDS = _typed(DATASETS)
OPTIMIZER_FIELDS = _typed(OPTIMIZERS)
SCHEDULE_FIELDS = _typed(LR_SCHEDULES, supplied=("learning_rate", "epochs"))


def trainer_fields():
    """``Trainer(...)`` and ``Trainer.fit(...)`` arguments, plus the optimizer and schedule."""
    fields = {**signature_fields(TRAINER.__init__), **signature_fields(TRAINER.fit)}
    fields["optimizer"] = Field({"type": "momentum"}, MAPPING)
    fields["lr_schedule"] = Field({"type": "constant"}, MAPPING)
    return fields


# ---------------------------------------------------------------- validation
def _unknown(located, path, key, valid, what):
    close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return located.error(path + (key,), f"unknown key in {what}; {hint}valid keys: {sorted(valid)}")


def shown(value, limit=200):
    """``repr(value)``, cut to ``limit`` characters (a value may be a list of thousands)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def check_value(located, path, value, check):
    if check(value):
        return
    item = getattr(check, "item", None)
    if item is not None and isinstance(value, list):
        for i, v in enumerate(value):
            if not item(v):
                raise located.error(path + (i,), f"got {shown(v)}; allowed: {item.text}")
    raise located.error(path, f"got {shown(value)}; allowed: {check.text}")


def validate_section(located, path, value, fields, what):
    """``value`` with every key checked and defaults filled in."""
    value = {} if value is None else value
    if not isinstance(value, dict):
        raise located.error(path, f"must be a mapping of keys ({sorted(fields)}), got {shown(value)}")
    for key in value:
        if key not in fields:
            raise _unknown(located, path, key, list(fields), what)
    out = {}
    for key, field in fields.items():
        if key not in value:
            if field.default is REQUIRED:
                raise located.error(path, f"missing required key {key!r} in {what}")
            value_or_default = field.default
            out[key] = validate_section(located, path + (key,), value_or_default, field.section, key) \
                if field.section and value_or_default is not None else value_or_default
            continue
        check_value(located, path + (key,), value[key], field.check)
        out[key] = validate_section(located, path + (key,), value[key], field.section, key) \
            if field.section else value[key]
    return out


def validate_typed(located, path, value, registry, fields_of, what, default_type=None, key="type"):
    """A section whose ``key`` (``type``) names a callable in ``registry``; its other keys are
    that callable's arguments."""
    value = {} if value is None else value
    if not isinstance(value, dict):
        raise located.error(path, f"must be a mapping with {key!r} and its keys, got {shown(value)}")
    kind = value.get(key, default_type)
    if not isinstance(kind, str) or kind not in registry:
        close = difflib.get_close_matches(str(kind), list(registry), n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        where = path + (key,) if key in value else path
        label = what if key == what else f"{what} {key}"
        raise located.error(where, f"unknown {label} {shown(kind)}; {hint}valid names: {sorted(registry)}")
    fields = {key: Field(kind, STRING), **fields_of(kind)}
    return validate_section(located, path, value, fields, f"{what} {kind!r}")


def validate(located):
    """The recipe's full configuration (defaults filled in), or a :class:`RecipeError`."""
    root = validate_section(located, (), located.data, SECTIONS, "a recipe")
    root["data"] = validate_typed(located, ("data",), root["data"], DATASETS, DATA_FIELDS,
                                  "dataset", "fashion_mnist", key="dataset")
    trainer = validate_section(located, ("trainer",), root["trainer"], trainer_fields(), "trainer")
    trainer["optimizer"] = validate_typed(located, ("trainer", "optimizer"), trainer["optimizer"],
                                          OPTIMIZERS, OPTIMIZER_FIELDS, "optimizer", "momentum")
    trainer["lr_schedule"] = validate_typed(located, ("trainer", "lr_schedule"), trainer["lr_schedule"],
                                            LR_SCHEDULES, SCHEDULE_FIELDS, "lr_schedule", "constant")
    root["trainer"] = trainer
    strategies = {}
    for name, spec in (root["strategies"] or {}).items():
        if spec is None:  # `name: null` (e.g. in --set) switches off an included strategy
            continue
        if not isinstance(name, str):
            raise located.error(("strategies", name), "a strategy name must be a string")
        spec = dict(spec) if isinstance(spec, dict) else spec
        if isinstance(spec, dict) and "type" not in spec and name in STRATEGIES:
            spec["type"] = name
        if isinstance(spec, dict) and "type" not in spec:
            close = difflib.get_close_matches(name, list(STRATEGIES), n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise located.error(("strategies", name), f"unknown strategy {name!r}: a strategy's key is "
                                f"its type, or it says 'type:'; {hint}valid types: {sorted(STRATEGIES)}")
        strategies[name] = validate_typed(located, ("strategies", name), spec, STRATEGIES,
                                          strategy_fields, "strategy")
    root["strategies"] = strategies
    check_finite(located, located.data)
    check_windows(located, root)
    check_combinations(located, root)
    return root


def check_finite(located, value, path=()):
    """No number in the recipe, checked key or not (a loss's ``temperature``, a model
    argument), is infinite or NaN: YAML reads ``.inf`` and ``.nan``, no setting takes them."""
    if isinstance(value, dict):
        for key, item in value.items():
            check_finite(located, item, path + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_finite(located, item, path + (i,))
    elif isinstance(value, float) and not math.isfinite(value):
        raise located.error(path, f"got {value}; allowed: a finite number")


# ------------------------------------------------------------ epoch windows
def window(spec, epochs):
    """First and last epoch (inclusive) in which a strategy acts, as its contract computes
    them; an :class:`ArgumentError` when its keys contradict each other."""
    return STRATEGIES[spec["type"]].contract.window(spec, epochs)


def check_windows(located, config):
    """Each strategy's keys make a window inside the training; pruning windows do not
    overlap; quantization starts after every pruning step (pruning cannot reshape quantized
    layers)."""
    epochs = config["trainer"]["epochs"]
    strategies = config["strategies"]

    def at(name, key="start_epoch"):
        return located.origin(("strategies", name, key))

    windows = {}
    for name, spec in strategies.items():
        try:
            first, last = windows[name] = window(spec, epochs)
        except ArgumentError as exc:
            raise located.error(("strategies", name, exc.key), f"got {shown(exc.value)}; {exc.reason}") from None
        if first >= epochs:
            raise located.error(("strategies", name, "start_epoch"),
                                f"{name} starts at epoch {first} but trainer.epochs is {epochs} "
                                f"(epochs 0..{epochs - 1} run): it would never run")
        if spec["type"] == "prune" and last >= epochs:
            raise located.error(("strategies", name, "end_epoch"),
                                f"{name}'s last pruning step is at epoch {last} but trainer.epochs is "
                                f"{epochs} (epochs 0..{epochs - 1} run): it would never be reached")
    prunes = [(n, windows[n]) for n, s in strategies.items() if s["type"] == "prune"]
    quants = [(n, windows[n][0]) for n, s in strategies.items() if s["type"] == "qat"]
    for i, (a, (a0, a1)) in enumerate(prunes):
        for b, (b0, b1) in prunes[i + 1:]:
            if a0 <= b1 and b0 <= a1:
                raise located.error(
                    ("strategies", b, "start_epoch"),
                    f"pruning windows overlap: strategies.{a} prunes in epochs {a0}..{a1} ({at(a)}) "
                    f"and strategies.{b} in epochs {b0}..{b1}; one pruning must end before the next starts")
    if len(quants) > 1:
        (a, a0), (b, b0) = quants[:2]
        raise located.error(("strategies", b), f"two quantization strategies, strategies.{a} ({at(a)}) "
                            f"and strategies.{b}: a network is quantized once")
    for q, q0 in quants:
        for p, (_, p1) in prunes:
            if q0 <= p1:
                raise located.error(
                    ("strategies", q, "start_epoch"),
                    f"quantization (strategies.{q}) starts at epoch {q0}, before pruning "
                    f"(strategies.{p}, {at(p)}) ends with its last step at epoch {p1}; pruning cannot "
                    f"reshape quantized layers: start {q} at epoch {p1 + 1} or later")


INT8_SUFFIX = "_int8"
"""Formats whose name ends so write a quantized network (``paddle_int8``, ``onnx_int8``, ...)."""
FLOAT_FORMATS = ("inference", "onnx", "openvino")
"""Formats for float networks only (they refuse a fake-quantized one)."""
NEED_DYGRAPH = ("prune", "qat", "distill")
"""Strategies whose callbacks need a dygraph Trainer (``static: false``): they hook the
network's layers (pruning counts MACs with forward hooks, which a to_static program skips)."""


def check_combinations(located, config):
    """Keys that are each valid but do not go together: ``resume`` without ``save_dir``, a
    static trainer with a strategy (they hook the network eagerly), and export formats that
    do not fit the network training leaves (int8 formats need a ``qat`` strategy, float
    formats refuse one)."""
    trainer, strategies = config["trainer"], config["strategies"]
    if trainer["resume"] and trainer["save_dir"] is None:
        raise located.error(("trainer", "resume"), "resume: true continues from save_dir/last.pdckpt, "
                            "but trainer.save_dir is not set: set save_dir, or resume: false")
    if trainer["static"]:
        for name, spec in strategies.items():
            if spec["type"] in NEED_DYGRAPH:
                raise located.error(("trainer", "static"), f"static: true runs the network through "
                                    f"paddle.jit.to_static, but strategies.{name} "
                                    f"({located.origin(('strategies', name))}) needs a dygraph trainer "
                                    f"({spec['type']} hooks the network eagerly): set static: false")
    export = config["export"]
    if export["path"] is None and ("export", "formats") not in located.origins:
        return  # nothing is exported, and no format was asked for
    qat = next((name for name, spec in strategies.items() if spec["type"] == "qat"), None)
    for i, fmt in enumerate(export["formats"]):
        where = ("export", "formats", i)
        if fmt.endswith(INT8_SUFFIX) and qat is None:
            raise located.error(where, f"{fmt!r} writes a quantized network, but no strategy quantizes "
                                "it: add a qat strategy (strategies.qat) or export a float format "
                                f"({', '.join(FLOAT_FORMATS)})")
        if fmt in FLOAT_FORMATS and qat is not None:
            int8 = ", ".join(sorted(f for f in EXPORT_FORMATS if f.endswith(INT8_SUFFIX)))
            raise located.error(where, f"{fmt!r} is for float networks, but strategies.{qat} "
                                f"({located.origin(('strategies', qat))}) quantizes the network: export "
                                f"an int8 format ({int8})")


def schedule(config):
    """``[(strategy name, type, first epoch, last epoch)]`` in the order they start."""
    epochs = config["trainer"]["epochs"]
    rows = [(name, spec["type"], *window(spec, epochs)) for name, spec in config["strategies"].items()]
    return sorted(rows, key=lambda row: row[2])


def schema_keys():
    """Every key path a recipe may write, for docs; ``data[image_folder].root`` is the key
    ``root`` of a ``data`` section whose dataset is ``image_folder``."""
    keys = [k for k in SECTIONS if k not in ("model", "export", "data", "trainer", "strategies")]
    keys += [f"model.{k}" for k in MODEL] + [f"export.{k}" for k in SECTIONS["export"].section]
    for kind in DATASETS:
        keys += [f"data[{kind}].{k}" for k in DATA_FIELDS(kind)]
    keys += [f"trainer.{k}" for k in trainer_fields()]
    for section, registry, fields in (("trainer.optimizer", OPTIMIZERS, OPTIMIZER_FIELDS),
                                      ("trainer.lr_schedule", LR_SCHEDULES, SCHEDULE_FIELDS),
                                      ("strategies", STRATEGIES, strategy_fields)):
        for kind in registry:
            keys += [f"{section}[{kind}].{k}" for k in fields(kind)]
    return keys
