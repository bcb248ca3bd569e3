"""Writing files so that nothing is ever half-written: temp file in the same folder, then rename."""
from __future__ import annotations

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
