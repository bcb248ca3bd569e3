"""Exporters: one name per deployable format. Every export is written into a temporary
folder beside its target, run in the runtimes of its format and compared with the network
(:mod:`slimhub.deploy.verify`), and only then renamed into place."""
from __future__ import annotations

import os
import shutil
import tempfile

import paddle

from slimhub.deploy.verify import random_samples, verify
from slimhub.modes import eval_mode

EXPORTERS = {}  # format -> function(network, prefix, input_spec) -> (files written, network they compute)
VERIFIED_BY = {}  # format -> the runtimes its files are checked in


def register_exporter(name, runtimes):
    """Register ``fn(network, prefix, input_spec) -> (files, computed)`` as format ``name``,
    whose files are verified in ``runtimes`` (names of :data:`slimhub.deploy.RUNTIMES`)
    against ``computed``: ``network`` itself, or the copy of it that the files compute where
    the format rounds something by design (the int32 biases of ``onnx_int8``)."""
    def deco(fn):
        EXPORTERS[name] = fn
        VERIFIED_BY[name] = tuple(runtimes)
        return fn
    return deco


def _model_file(files):
    """The file a runtime opens among an export's files."""
    for suffix in (".onnx", ".xml", ".json", ".pdmodel"):
        for f in files:
            if f.endswith(suffix):
                return f
    raise RuntimeError(f"export: no model file among {files}")


def export(network, path, input_spec, format="inference", samples=None, on_mismatch="raise"):
    """Export ``network`` to ``path`` (a file prefix) in ``format``; returns the files written,
    the one a runtime opens first.

    The files are checked first: run in each runtime of the format on ``samples`` (a batch
    of real inputs, numpy or Tensor; default: 100 standard-normal inputs), their argmax must
    agree with the network's on 99% of them, or :class:`slimhub.deploy.ExportMismatch` is
    raised and nothing is written (``on_mismatch="warn"``: warn and write). For ``onnx_int8``
    and ``openvino_int8`` the network compared is the one the file computes: biases moved
    onto the int32 grid of the int8 kernels (at most 1% of an output step per channel).
    """
    if format not in EXPORTERS:
        raise ValueError(f"export: unknown format {format!r}; valid formats: {sorted(EXPORTERS)}")
    if not input_spec or not all(isinstance(s, paddle.static.InputSpec) for s in input_spec):
        raise TypeError("export: input_spec must be a non-empty list of paddle.static.InputSpec, "
                        f"got {input_spec!r}")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=".tmp-export-", dir=folder)
    try:
        with eval_mode(network):
            files, computed = EXPORTERS[format](network, os.path.join(tmp_dir, "model"), input_spec)
            verify(computed, _model_file(files), VERIFIED_BY[format],
                   random_samples(input_spec) if samples is None else samples, on_mismatch)
        written = publish(tmp_dir, path)
        first = _model_file(written)
        return [first] + [f for f in written if f != first]
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def publish(tmp_dir, path):
    """Move every file of ``tmp_dir`` (named by the temp prefix) to ``path`` + suffix."""
    written = []
    for name in sorted(os.listdir(tmp_dir)):
        target = path + name[len("model"):]
        os.replace(os.path.join(tmp_dir, name), target)
        written.append(target)
    return written


@register_exporter("inference", runtimes=["paddle"])
def save_inference(network, prefix, input_spec):
    """Float Paddle inference format via ``paddle.jit.save`` (``.json``/``.pdmodel`` + ``.pdiparams``)."""
    from slimhub.quant.wrap import quantized_layers  # slimhub.quant registers its formats here

    if quantized_layers(network):
        raise TypeError("export: format 'inference' is for float networks; this one is fake-quantized: "
                        "use 'onnx_int8', 'openvino_int8' or 'paddle_int8' for int8 files "
                        "(or slimhub.quant.strip_quant for a float copy)")
    paddle.jit.save(network, prefix, input_spec=input_spec)
    return [f for f in (prefix + s for s in (".json", ".pdmodel", ".pdiparams")) if os.path.exists(f)], network
