"""The one error a bad recipe raises: what is wrong, at which key, in which file and line."""
from __future__ import annotations

from typing import NamedTuple


class Origin(NamedTuple):
    """Where a recipe value was written: a file and a 1-based line, or a ``--set`` override."""

    file: str
    line: int | None = None

    def __str__(self):
        return f"{self.file}:{self.line}" if self.line is not None else self.file


def key_path(path):
    """``("strategies", "prune", "losses", 0)`` -> ``"strategies.prune.losses[0]"``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(recipe)"


class RecipeError(ValueError):
    """A recipe that cannot run. ``key`` is the key path, ``origin`` where it was written;
    the message is one line (line breaks in a cause's words become spaces)."""

    def __init__(self, path, origin, message):
        self.key = key_path(path)
        self.origin = origin
        self.message = " ".join(str(message).split())
        super().__init__(f"{origin}: {self.key}: {self.message}")


def reason(exc):
    """The words of ``exc`` (a ``KeyError``'s key without the quotes ``str`` adds)."""
    return exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)


def describe(exc):
    """``"TypeName: first line of the message"`` of an exception."""
    text = str(reason(exc)).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
