"""Distillation losses between teacher and student features, and their registry.

A loss is called as ``fn(teacher, student, names=None, **options)``: ``teacher`` and
``student`` are the captured features (one tensor, or a list for ``fsp``); ``names``
are the matching layer names, used only in error messages.
"""
from __future__ import annotations

import numbers

import paddle
import paddle.nn.functional as F


class UnknownLossError(KeyError):
    """A loss type that is not in :data:`LOSSES`."""

    def __str__(self):
        return self.args[0]


def _tensor(feature, role, label):
    if not isinstance(feature, paddle.Tensor):
        raise TypeError(f"{role} layer {label!r} gave a {type(feature).__name__}, not a Tensor; tap a layer "
                        f"that returns one tensor, or use a custom loss")
    return feature


def _labels(names, role, count):
    if names is None:
        return [f"{role}[{i}]" for i in range(count)] if count > 1 else [role]
    return [names] if isinstance(names, str) else list(names)


def _pair(features, names, role):
    if not isinstance(features, (list, tuple)) or len(features) != 2:
        raise ValueError(f"fsp needs two {role} feature maps (a pair of layers), got {features!r:.80}")
    labels = _labels(names, role, 2)
    for feature, label in zip(features, labels):
        if _tensor(feature, role, label).ndim != 4:
            raise ValueError(
                f"fsp needs NCHW feature maps; {role} layer {label!r} gave shape {list(feature.shape)}")
    (a, b), (la, lb) = features, labels
    if a.shape[2:] != b.shape[2:] or a.shape[0] != b.shape[0]:
        raise ValueError(
            f"fsp pairs two maps of the same batch and spatial size; {role} layers {la!r} "
            f"{list(a.shape)} and {lb!r} {list(b.shape)} differ")
    return a, b


def fsp_matrix(a, b):
    """G = a·bᵀ / (h·w) per sample: ``[N, c1, h, w]`` and ``[N, c2, h, w]`` → ``[N, c1, c2]``."""
    n, c1, h, w = a.shape
    flat_a = a.reshape([n, c1, h * w])
    flat_b = b.reshape([n, b.shape[1], h * w])
    return paddle.matmul(flat_a, flat_b, transpose_y=True) / (h * w)


def fsp(teacher, student, names=None):
    """Mean squared difference of the teacher's and the student's FSP matrices.

    ``teacher`` and ``student`` are pairs of feature maps; each pair shares its h×w.
    """
    t_names, s_names = names if names is not None else (None, None)
    g_teacher = fsp_matrix(*_pair(teacher, t_names, "teacher"))
    g_student = fsp_matrix(*_pair(student, s_names, "student"))
    if g_teacher.shape != g_student.shape:
        raise ValueError(
            f"fsp matrices differ in shape: teacher {_labels(t_names, 'teacher', 2)} gives "
            f"{list(g_teacher.shape)}, student {_labels(s_names, 'student', 2)} gives "
            f"{list(g_student.shape)}; pick layers with the same channel counts")
    return ((g_teacher - g_student) ** 2).mean()


def l2(teacher, student, names=None):
    """Mean squared difference of two feature maps of the same shape."""
    t_name, s_name = names if names is not None else ("teacher", "student")
    _tensor(teacher, "teacher", t_name)
    _tensor(student, "student", s_name)
    if teacher.shape != student.shape:
        hint = ""
        if teacher.ndim == 4 and student.ndim == 4 and teacher.shape[2:] == student.shape[2:]:
            hint = "; the channels differ: set \"adapter\": True to learn a 1x1 conv on the student side"
        raise ValueError(
            f"l2 needs features of the same shape: teacher layer {t_name!r} gives "
            f"{list(teacher.shape)}, student layer {s_name!r} gives {list(student.shape)}{hint}")
    return ((teacher - student) ** 2).mean()


def _check_temperature(value, option):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"soft_label option {option!r} must be a number > 0, got {value!r}")


def soft_label(teacher, student, names=None, temperature=1.0, student_temperature=None):
    """Cross-entropy between softmax(teacher/T) and log_softmax(student/Ts), times T².

    Classes are on axis 1; the result is averaged over the other axes.
    ``student_temperature`` (Ts) defaults to ``temperature`` (T).
    """
    if student_temperature is None:
        student_temperature = temperature
    _check_temperature(temperature, "temperature")
    _check_temperature(student_temperature, "student_temperature")
    t_name, s_name = names if names is not None else ("teacher", "student")
    _tensor(teacher, "teacher", t_name)
    _tensor(student, "student", s_name)
    if teacher.shape != student.shape or teacher.ndim < 2:
        raise ValueError(
            f"soft_label needs logits of the same shape [N, classes, ...]: teacher layer {t_name!r} "
            f"gives {list(teacher.shape)}, student layer {s_name!r} gives {list(student.shape)}")
    target = F.softmax(teacher / temperature, axis=1)
    log_prob = F.log_softmax(student / student_temperature, axis=1)
    return -(target * log_prob).sum(axis=1).mean() * temperature ** 2


LOSSES = {"fsp": fsp, "l2": l2, "soft_label": soft_label}


def get_loss(name):
    """The registered loss called ``name``."""
    if name not in LOSSES:
        raise UnknownLossError(
            f"unknown distillation loss type {name!r}; valid types: {', '.join(sorted(LOSSES))}, "
            f"or a callable (teacher_features, student_features) -> scalar")
    return LOSSES[name]
