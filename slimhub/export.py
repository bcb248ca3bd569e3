"""Exporters: one name per deployable format, each writing atomically."""
from __future__ import annotations

import os
import shutil
import tempfile

import paddle

EXPORTERS = {}


def register_exporter(name):
    def deco(fn):
        EXPORTERS[name] = fn
        return fn
    return deco


def export(network, path, input_spec, format="inference"):
    """Export ``network`` to ``path`` in ``format``; returns the list of files written."""
    if format not in EXPORTERS:
        raise ValueError(f"export: unknown format {format!r}; valid formats: {sorted(EXPORTERS)}")
    if not input_spec or not all(isinstance(s, paddle.static.InputSpec) for s in input_spec):
        raise TypeError("export: input_spec must be a non-empty list of paddle.static.InputSpec, "
                        f"got {input_spec!r}")
    was_training = network.training
    network.eval()
    try:
        return EXPORTERS[format](network, path, input_spec)
    finally:
        if was_training:
            network.train()


def publish(tmp_dir, path):
    """Move every file of ``tmp_dir`` (named by the temp prefix) to ``path`` + suffix."""
    written = []
    for name in sorted(os.listdir(tmp_dir)):
        target = path + name[len("model"):]
        os.replace(os.path.join(tmp_dir, name), target)
        written.append(target)
    return written


@register_exporter("inference")
def save_inference(network, path, input_spec):
    """Paddle inference format via ``paddle.jit.save`` (``path.json``/``.pdmodel`` + ``.pdiparams``)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=".tmp-export-", dir=folder)
    try:
        paddle.jit.save(network, os.path.join(tmp_dir, "model"), input_spec=input_spec)
        return publish(tmp_dir, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
