"""Writing files so that nothing is ever half-written: temp file in the same folder, then rename."""
from __future__ import annotations

import json
import os
import re
import stat
import tempfile

import paddle

from slimhub import validate

LAST_CHECKPOINT = "last.pdckpt"
"""The checkpoint written after every epoch, in the training folder; ``resume`` continues from it."""
BEST_CHECKPOINT = "best.pdckpt"
"""The checkpoint of the best monitored epoch, in the training folder."""
TMP_PREFIX = ".tmp-"
TMP_NAME = re.compile(r"\.tmp-[a-z0-9_]{8}")
"""The names of the temporary files :func:`atomic_path` writes (``tempfile.mkstemp``'s
eight random characters after :data:`TMP_PREFIX`); a write killed before its rename leaves one."""


def atomic_path(path, write):
    """Call ``write(tmp_path)`` then rename ``tmp_path`` onto ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=folder)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes files private; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def remove_stale_tmp(folder):
    """Delete the temporary files that interrupted :func:`atomic_path` writes left in ``folder``
    (regular files named like :data:`TMP_NAME` only, in that folder only)."""
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if TMP_NAME.fullmatch(name) and stat.S_ISREG(os.lstat(path).st_mode):
            os.remove(path)


def nearest_existing(path):
    """``path`` if it exists, else its nearest existing parent (what is in the way of creating it)."""
    probe = os.path.abspath(path)
    while not os.path.lexists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    return probe


def probe_write(folder):
    """Create and remove a temporary file in ``folder``; the ``OSError`` if that fails
    (``os.access`` says yes to root where the file system says no)."""
    fd, probe = tempfile.mkstemp(prefix=TMP_PREFIX, dir=folder)
    os.close(fd)
    os.remove(probe)


def prepare_folder(folder, what):
    """Make sure files can be written in ``folder`` (created if missing) and remove stale
    temporary files there; returns its absolute path. ``what`` names the argument in errors,
    e.g. ``"Trainer.fit: save_dir"``; every failure is a one-line error."""
    folder = validate.folder(folder, what)
    path = os.path.abspath(folder)
    existing = nearest_existing(path)
    if not os.path.isdir(existing):
        if existing == path:
            raise ValueError(f"{what} {folder!r} is a file, not a folder")
        raise ValueError(f"{what} {folder!r} cannot be created: {existing} is a file, not a folder")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{what} {folder!r} cannot be created: {exc.strerror or exc}") from None
    try:
        probe_write(path)
    except OSError as exc:
        raise ValueError(f"{what} {folder!r} is not writable: {exc.strerror or exc}") from None
    remove_stale_tmp(path)
    return path


def atomic_save(obj, path):
    """``paddle.save`` ``obj`` to ``path`` atomically."""
    atomic_path(path, lambda tmp: paddle.save(obj, tmp))


def write_json(obj, path):
    """Write ``obj`` to ``path`` as indented JSON, atomically."""
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=1)
            f.write("\n")
    atomic_path(path, write)


def read_json(path, what):
    """The JSON content of ``path``; errors name ``what`` the file should be."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path!r} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{what} {path!r} could not be read: {exc}") from None


def load_checkpoint(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    try:
        state = paddle.load(path)
    except Exception as exc:
        raise ValueError(f"checkpoint {path!r} could not be read: {exc}") from exc
    if not isinstance(state, dict) or "network" not in state:
        raise ValueError(f"{path!r} is not a slimhub checkpoint (no 'network' entry)")
    return state


def set_fitting_state(network, state, what, hint):
    """Load ``state`` into ``network`` when it fits every parameter and buffer by name and
    shape; else a ValueError ``"{what} do not fit the network (missing k; unexpected k;
    k: network [..] vs file [..]); {hint}"``, nothing loaded."""
    own = {k: list(v.shape) for k, v in network.state_dict().items()}
    given = {k: list(v.shape) for k, v in state.items() if hasattr(v, "shape")}
    problems = [f"missing {k}" for k in own if k not in given]
    problems += [f"unexpected {k}" for k in given if k not in own]
    problems += [f"{k}: network {own[k]} vs file {given[k]}" for k in own if k in given and own[k] != given[k]]
    if problems:
        shown = "; ".join(problems[:6]) + (f"; ... {len(problems) - 6} more" if len(problems) > 6 else "")
        raise ValueError(f"{what} do not fit the network ({shown}); {hint}")
    network.set_state_dict(state)
