"""Writing files so that nothing is ever half-written: temp file in the same folder, then rename."""
from __future__ import annotations

import json
import os
import tempfile

import paddle


def atomic_path(path, write):
    """Call ``write(tmp_path)`` then rename ``tmp_path`` onto ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
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
