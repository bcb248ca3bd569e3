"""Rules for settings, each declared once: the library's own (:data:`slimhub.prune.graph.PRUNED_FLOPS`,
...) and what a strategy accepts, declared beside its callback (``PruneCallback.contract``, ...):
a rule for each argument and the epoch window the arguments make.

The callback checks its arguments with these rules, and the recipe schema
(:mod:`slimhub.recipe.schema`) checks a recipe's strategy section with the same ones, so
both refuse the same values: the callback's error names the argument, the recipe's the
key path, file and line. A rule (:class:`Check`) is a test and the words that say what
passes it; values are as a recipe writes them (lists, ``null``).
"""
from __future__ import annotations

import math
import numbers


class Check:
    """A rule for one value and the words that describe it in an error (``text`` may be a
    function, for choices from a registry that grows)."""

    def __init__(self, test, text):
        self.test, self._text = test, text

    @property
    def text(self):
        return self._text() if callable(self._text) else self._text

    def __call__(self, value):
        return self.test(value)

    def require(self, value, owner, key):
        """``value`` if it passes, else a ``ValueError`` ``"{owner}: {key} must be {text}, got {value!r}"``
        (no ``"{owner}: "`` when ``owner`` is None)."""
        if not self.test(value):
            where = f"{owner}: " if owner else ""
            raise ValueError(f"{where}{key} must be {self.text}, got {value!r}")
        return value


def _is_int(v):
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v):
    """A finite real number (``.inf`` and ``.nan`` are numbers YAML reads, never a setting)."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def integer(lo=None, hi=None):
    text = "an integer" + (f" in [{lo}, {hi}]" if lo is not None and hi is not None else
                           f" >= {lo}" if lo is not None else "")
    return Check(lambda v: _is_int(v) and (lo is None or v >= lo) and (hi is None or v <= hi), text)


def number(lo=None, hi=None, open_lo=False, open_hi=False):
    if lo is not None and hi is not None:
        text = f"a number in {'(' if open_lo else '['}{lo}, {hi}{')' if open_hi else ']'}"
    elif lo is not None:
        text = f"a number {'>' if open_lo else '>='} {lo} (finite)"
    else:
        text = "a number (finite)"

    def test(v):
        return _is_number(v) and (lo is None or (v > lo if open_lo else v >= lo)) and \
            (hi is None or (v < hi if open_hi else v <= hi))
    return Check(test, text)


def choice(values):
    """One of ``values`` (a collection, or a registry read when checking); ``1`` is not ``True``."""
    return Check(lambda v: any(v == c and type(v) is type(c) for c in values),
                 lambda: f"one of {sorted(values, key=str)}")


def nullable(check):
    return Check(lambda v: v is None or check(v), f"null or {check.text}")


def list_of(check, min_len=0):
    at_least = f" of at least {min_len} item{'s' if min_len > 1 else ''}" if min_len else ""
    rule = Check(lambda v: isinstance(v, list) and len(v) >= min_len and all(map(check, v)),
                 lambda: f"a list{at_least}, each item {check.text}")
    rule.item = check
    return rule


BOOLEAN = Check(lambda v: isinstance(v, bool), "true or false")
STRING = Check(lambda v: isinstance(v, str) and v != "", "a non-empty string")
MAPPING = Check(lambda v: isinstance(v, dict), "a mapping")
ANYTHING = Check(lambda v: True, "any value")
NAMES = Check(lambda v: STRING(v) or list_of(STRING)(v), "a name pattern or a list of them")
MAX_EPOCHS = 10_000
"""The most epochs a recipe trains (and so the latest epoch a window names)."""
MAX_SIZE = 2048
"""The largest image side or channel count of an input shape (a larger one would make the
model's first forward allocate gigabytes)."""
SHAPE = Check(lambda v: isinstance(v, list) and len(v) == 3 and all(_is_int(s) and 0 < s <= MAX_SIZE for s in v),
              f"a list of three sizes [C, H, W], each in [1, {MAX_SIZE}]")
EPOCH_RULES = {"start_epoch": integer(0, MAX_EPOCHS - 1), "end_epoch": nullable(integer(1, MAX_EPOCHS))}
"""The rules of the window arguments, part of every contract."""


class ArgumentError(ValueError):
    """Arguments that each pass their rule but not together: ``key`` is the argument to
    change, ``value`` its value, ``reason`` what the others need of it."""

    def __init__(self, key, value, reason):
        super().__init__(f"{reason}, got {key}={value!r}")
        self.key, self.value, self.reason = key, value, reason


def active_epochs(start_epoch, end_epoch, epochs):
    """First and last epoch (inclusive) of a strategy that acts from ``start_epoch`` up to
    ``end_epoch`` (exclusive; None: to the end of ``epochs``)."""
    if end_epoch is not None and end_epoch <= start_epoch:
        raise ArgumentError("end_epoch", end_epoch, f"the strategy starts at epoch {start_epoch} (start_epoch) "
                            f"and stops before epoch end_epoch, so end_epoch must be greater than {start_epoch}")
    return start_epoch, (epochs if end_epoch is None else end_epoch) - 1


def _active_window(args, epochs):
    return active_epochs(args.get("start_epoch", 0), args.get("end_epoch"), epochs)


class StrategyContract:
    """A strategy's arguments as a recipe writes them, and its epoch window.

    ``rules``: ``{argument: Check}`` (with :data:`EPOCH_RULES`); an argument without a rule
    is checked by the type of its default, then by the callback. ``window(args, epochs)``:
    the first and last epoch the strategy acts in when training runs ``epochs`` epochs
    (default: from ``start_epoch`` up to ``end_epoch``), an :class:`ArgumentError` when the
    arguments contradict each other. ``models``: arguments that take a Layer, written as a
    model section. ``python_only``: arguments a recipe does not write (Python objects).
    """

    def __init__(self, rules=None, window=_active_window, models=(), python_only=()):
        self.rules = {**EPOCH_RULES, **(rules or {})}
        self._window = window
        self.models, self.python_only = tuple(models), tuple(python_only)

    def window(self, args, epochs):
        return self._window(args, epochs)

    def check(self, owner, **args):
        """The callback's check of ``args`` by their rules and their window: a ``ValueError``
        starting ``"{owner}: "`` that names the argument and its value."""
        for key, value in args.items():
            self.rules[key].require(value, owner, key)
        try:
            self.window(args, MAX_EPOCHS)  # whether the arguments agree does not depend on the training's length
        except ArgumentError as exc:
            raise ValueError(f"{owner}: {exc}") from None
