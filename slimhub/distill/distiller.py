"""Weighted distillation terms between a frozen teacher and a student, by layer name."""
from __future__ import annotations

import inspect
import numbers
from collections.abc import Mapping

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from slimhub.distill.losses import get_loss
from slimhub.distill.taps import FeatureTap, unwrap
from slimhub.modes import eval_mode

_KEYS = ("type", "teacher", "student", "weight", "name")


class Adapter(nn.Layer):
    """A learned 1x1 convolution from student channels to teacher channels.

    Deliberately not an ``nn.Conv2D``, so that quantization and pruning, which
    look for Conv2D layers, leave it alone.
    """

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.weight = self.create_parameter([out_channels, in_channels, 1, 1])
        self.bias = self.create_parameter([out_channels], is_bias=True)

    @property
    def channels(self):
        """``(in_channels, out_channels)``."""
        return self.weight.shape[1], self.weight.shape[0]

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias)


class _Term:
    """One parsed entry of ``losses``."""

    def __init__(self, spec, where, taken):
        if not isinstance(spec, Mapping):
            raise TypeError(f"{where} must be a dict like {{'type': 'l2', 'teacher': .., 'student': ..}}, "
                            f"got {type(spec).__name__}")
        if "type" not in spec:
            raise KeyError(f"{where} has no 'type'")
        kind = spec["type"]
        self.builtin = isinstance(kind, str)
        if self.builtin:
            self.fn = get_loss(kind)
            options = [p for p in inspect.signature(self.fn).parameters
                       if p not in ("teacher", "student", "names")]
            if kind == "l2":
                options.append("adapter")
        elif callable(kind):
            self.fn, options = kind, []
        else:
            raise TypeError(f"{where}['type'] must be a loss name or a callable, got {kind!r}")
        unknown = [k for k in spec if k not in _KEYS and k not in options]
        if unknown:
            raise KeyError(f"{where} has unknown keys {unknown}; valid keys: {list(_KEYS) + options}")
        for side in ("teacher", "student"):
            if side not in spec:
                raise KeyError(f"{where} has no {side!r} layer name(s)")
        self.teacher = _layer_names(spec["teacher"], f"{where}['teacher']", kind)
        self.student = _layer_names(spec["student"], f"{where}['student']", kind)
        self.weight = spec.get("weight", 1.0)
        if isinstance(self.weight, bool) or not isinstance(self.weight, numbers.Real) or self.weight < 0:
            raise ValueError(f"{where}['weight'] must be a number >= 0, got {self.weight!r}")
        self.options = {k: spec[k] for k in options if k in spec and k != "adapter"}
        self.adapter = spec.get("adapter", False)
        if not isinstance(self.adapter, bool):
            raise TypeError(f"{where}['adapter'] must be True or False, got {self.adapter!r}")
        if "name" in spec:
            self.name = spec["name"]
            if not isinstance(self.name, str) or not self.name or "." in self.name or self.name in taken:
                raise ValueError(f"{where}['name'] must be a new non-empty name without '.', got "
                                 f"{self.name!r} (names so far: {sorted(taken)})")
        else:
            default = kind if self.builtin else getattr(kind, "__name__", type(kind).__name__)
            self.name = _unique(f"distill_{'custom' if default == '<lambda>' else default}", taken)

    def layers(self, side):
        """The layer names of ``side`` ("teacher" or "student") as a list."""
        names = getattr(self, side)
        return names if isinstance(names, list) else [names]

    def features(self, tap, names):
        return [tap.get(n) for n in names] if isinstance(names, list) else tap.get(names)


def parse_losses(losses):
    """Check a ``losses`` list (see :class:`Distiller`) and return its parsed terms."""
    if isinstance(losses, Mapping) or not isinstance(losses, (list, tuple)) or not losses:
        raise TypeError(f"losses must be a non-empty list of dicts, got {losses!r:.100}")
    terms = []
    for i, spec in enumerate(losses):
        terms.append(_Term(spec, f"losses[{i}]", {t.name for t in terms}))
    return terms


def _layer_names(value, where, kind):
    if isinstance(value, str):
        names = value
    elif isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        names = list(value)
    else:
        raise TypeError(f"{where} must be a layer name or a list of layer names, got {value!r}")
    if kind == "fsp" and not (isinstance(names, list) and len(names) == 2):
        raise ValueError(f"{where} must name a pair of layers for fsp, got {value!r}")
    if kind in ("l2", "soft_label") and not isinstance(names, str):
        raise ValueError(f"{where} must be one layer name for {kind}, got {value!r}")
    return names


def _unique(name, taken):
    candidate, i = name, 2
    while candidate in taken:
        candidate, i = f"{name}_{i}", i + 1
    return candidate


def _forward(network, inputs):
    return network(*inputs) if isinstance(inputs, (list, tuple)) else network(inputs)


class Distiller:
    """Compute weighted distillation terms between ``teacher`` and ``student``.

    ``losses`` is a list of dicts: ``type`` (a name in
    :data:`slimhub.distill.losses.LOSSES` or a callable
    ``(teacher_features, student_features) -> scalar``), ``teacher`` and ``student``
    (a layer name, or a list of names; features come in the same form), ``weight``
    (default 1.0), ``name`` (the term's key, default ``distill_<type>``) and the
    loss's options (``temperature``, ``student_temperature`` for ``soft_label``;
    ``adapter`` for ``l2``).

    The teacher runs in eval mode under ``no_grad`` and is never updated. The
    student's features are those of its latest forward: run the student, then call
    :meth:`loss` with the same inputs. ``l2`` adapters are created on the first
    :meth:`loss` (or :meth:`build`) and re-created when the student's channel count
    changes (after pruning); their parameters are :attr:`adapters`.
    """

    def __init__(self, teacher, student, losses):
        for role, net in (("teacher", teacher), ("student", student)):
            if not isinstance(net, nn.Layer):
                raise TypeError(f"{role} must be a paddle.nn.Layer, got {type(net).__name__}")
        if any(layer is unwrap(teacher) for layer in unwrap(student).sublayers(include_self=True)):
            raise ValueError("teacher is the student or one of its sublayers; it would be trained with it")
        self.teacher, self.student = teacher, student
        self.terms = parse_losses(losses)
        self.adapters = nn.LayerDict()
        teacher.eval()
        self._teacher_tap = FeatureTap(
            teacher, [n for t in self.terms for n in t.layers("teacher")], "teacher")
        self._student_tap = FeatureTap(
            student, [n for t in self.terms for n in t.layers("student")], "student")

    def rebind(self, student):
        """Hook the (possibly rebuilt) ``student`` and the teacher again, by name."""
        self.student = student
        self._teacher_tap.attach(self.teacher)
        self._student_tap.attach(student)

    def close(self):
        """Remove every hook from the teacher and the student."""
        self._teacher_tap.remove()
        self._student_tap.remove()

    def loss(self, inputs):
        """``{name: weight * loss}`` for the student's latest forward on ``inputs``.

        ``inputs`` is what the student was called with: a tensor, or a list/tuple
        of positional tensors. The teacher is run on the same inputs.
        """
        if self.teacher.training:
            self.teacher.eval()
        with paddle.no_grad():
            _forward(self.teacher, inputs)
        try:
            return {term.name: self._term(term) * term.weight for term in self.terms}
        finally:
            self._teacher_tap.clear()
            self._student_tap.clear()

    def _term(self, term):
        teacher = term.features(self._teacher_tap, term.teacher)
        student = term.features(self._student_tap, term.student)
        if term.adapter:
            student = self._adapt(term, teacher, student)
        if term.builtin:
            return term.fn(teacher, student, names=(term.teacher, term.student), **term.options)
        value = term.fn(teacher, student)
        if not isinstance(value, paddle.Tensor) or value.size != 1:
            raise TypeError(f"custom distillation loss {term.name!r} must return a scalar Tensor, "
                            f"got {type(value).__name__} {list(getattr(value, 'shape', []))}")
        return value.reshape([])

    def _adapt(self, term, teacher, student):
        if teacher.ndim != 4 or student.ndim != 4:
            raise ValueError(
                f"loss {term.name!r}: an adapter maps NCHW feature maps; teacher layer {term.teacher!r} "
                f"gives {list(teacher.shape)}, student layer {term.student!r} gives {list(student.shape)}")
        channels = (student.shape[1], teacher.shape[1])
        if term.name not in self.adapters or self.adapters[term.name].channels != channels:
            self.adapters[term.name] = Adapter(*channels)
        return self.adapters[term.name](student)

    def build(self, inputs):
        """Create the adapters now: one eval-mode forward of the student on ``inputs``.

        Outside the Trainer, call it before giving ``adapters.parameters()`` to the
        optimizer. Training flags and batch-norm statistics are left as they were.
        """
        with eval_mode(self.student), paddle.no_grad():
            _forward(self.student, inputs)
            self.loss(inputs)

    def state_dict(self):
        """The adapters' weights (numpy) and parameter names, by term name."""
        return {"adapters": {
            name: {"weight": adapter.weight.numpy(), "bias": adapter.bias.numpy(),
                   "param_names": [adapter.weight.name, adapter.bias.name]}
            for name, adapter in self.adapters.items()}}

    def set_state_dict(self, state):
        """Re-create the adapters saved by :meth:`state_dict`, under their saved parameter
        names, so that optimizer state saved with them still applies."""
        names = {t.name for t in self.terms if t.adapter}
        for name, saved in state.get("adapters", {}).items():
            if name not in names:
                raise KeyError(f"saved adapter {name!r} matches no l2 term with an adapter; "
                               f"terms with adapters: {sorted(names)}")
            weight = np.asarray(saved["weight"])
            adapter = Adapter(weight.shape[1], weight.shape[0])
            adapter.weight.set_value(weight)
            adapter.bias.set_value(np.asarray(saved["bias"]))
            adapter.weight.name, adapter.bias.name = saved["param_names"]
            self.adapters[name] = adapter
