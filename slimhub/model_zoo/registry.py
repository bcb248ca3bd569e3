"""Model names, pretrained entries and model creation.

A name is ``"arch"`` (an architecture registered with :func:`register_model`) or
``"arch.tag"`` (pretrained weights for it, an entry of ``manifest.json``).
"""
from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import json
import os
import warnings
from pathlib import Path

import paddle

from slimhub.checkpoint import set_fitting_state, write_json
from slimhub.flops import flops as count_flops
from slimhub.model_zoo import hub
from slimhub.modes import eval_mode
from slimhub.prune import apply_plan
from slimhub.quant import QuantConfig, quantize
from slimhub.quant.wrap import add_output_quanters, fill_in_grids, output_quanter_layers

MANIFEST_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "manifest.json")
MANIFEST_FORMAT = 1

_ARCHITECTURES = {}


class UnknownModelError(KeyError):
    """An architecture or pretrained tag that is not registered."""

    def __str__(self):
        return str(self.args[0])


@dataclasses.dataclass(frozen=True)
class PretrainedEntry:
    """One pretrained weight file of an architecture and what was measured on it.

    ``model_kwargs`` are the architecture's arguments for these weights; ``input_size``
    is (C, H, W); ``flops`` are MACs per sample as counted by :func:`slimhub.flops`;
    ``top1``/``top5`` are fractions in [0, 1]; ``file_size`` is in bytes. Exactly one of
    ``sha256`` / ``md5`` is set (md5 only for Paddle's official files). A URL without a
    scheme is a path relative to the manifest's directory (weights shipped in the package).
    ``quant_format`` is the :class:`slimhub.quant.QuantConfig` (as a dict) of int8 QAT
    weights: the network is wrapped with it before the weights, scales included, load.
    """

    urls: tuple
    dataset: str
    input_size: tuple
    num_classes: int
    model_kwargs: dict = dataclasses.field(default_factory=dict)
    sha256: str | None = None
    md5: str | None = None
    file_size: int | None = None
    top1: float | None = None
    top5: float | None = None
    flops: int | None = None
    params: int | None = None
    recipe: str | None = None
    pruning_plan: dict | None = None
    quant_format: str | None = None

    @classmethod
    def from_dict(cls, data, where):
        """Build from a manifest record; ``where`` names the record in error messages."""
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected an object, got {type(data).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {unknown}; valid fields: {sorted(fields)}")
        try:
            entry = cls(**data)
        except TypeError as e:
            raise ValueError(f"{where}: {e}") from None
        entry = dataclasses.replace(entry, urls=tuple(entry.urls), input_size=tuple(entry.input_size))
        if (entry.sha256 is None) == (entry.md5 is None):
            raise ValueError(f"{where}: exactly one of sha256 / md5 must be set")
        if not entry.urls or not all(isinstance(u, str) and u for u in entry.urls):
            raise ValueError(f"{where}: urls must be a non-empty list of URLs, got {list(entry.urls)}")
        if len(entry.input_size) != 3:
            raise ValueError(f"{where}: input_size must be [C, H, W], got {list(entry.input_size)}")
        if entry.quant_format is not None:
            if not isinstance(entry.quant_format, dict):
                raise ValueError(f"{where}: quant_format must be a QuantConfig object or null, "
                                 f"got {entry.quant_format!r}")
            try:
                QuantConfig(**entry.quant_format)
            except (TypeError, ValueError) as e:
                raise ValueError(f"{where}: quant_format: {e}") from None
        return entry

    def to_dict(self):
        data = dataclasses.asdict(self)
        data["urls"] = list(self.urls)
        data["input_size"] = list(self.input_size)
        return data


def register_model(fn):
    """Decorator: register an architecture function under its ``__name__``."""
    name = fn.__name__
    if "." in name:
        raise ValueError(f"register_model: architecture name {name!r} must not contain '.'")
    if name in _ARCHITECTURES:
        raise ValueError(f"register_model: architecture {name!r} is already registered")
    _ARCHITECTURES[name] = fn
    return fn


def load_manifest(path=None):
    """``{"arch.tag": PretrainedEntry}`` from a manifest file (default: the package's)."""
    path = path or MANIFEST_PATH
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT or not isinstance(data.get("models"), dict):
        raise ValueError(f"{path}: expected an object with \"format\": {MANIFEST_FORMAT} and \"models\": {{...}}")
    return {
        name: PretrainedEntry.from_dict(record, f"{path}: entry {name!r}")
        for name, record in data["models"].items()
    }


def list_models(pattern=None, pretrained=False):
    """Sorted architecture names, or ``"arch.tag"`` names of pretrained entries if ``pretrained``.

    ``pattern`` is an fnmatch wildcard such as ``"resnet*"`` or ``"*.imagenet"``.
    """
    names = load_manifest() if pretrained else _ARCHITECTURES
    return sorted(n for n in names if pattern is None or fnmatch.fnmatchcase(n, pattern))


def model_info(name):
    """A dict describing ``name``.

    For ``"arch"``: name, architecture, description, and the pretrained tags.
    For ``"arch.tag"``: name, architecture, tag and every field of its pretrained entry.
    """
    arch, tag = _split(name)
    if tag is None:
        doc = (_ARCHITECTURES[arch].__doc__ or "").strip()
        return {
            "name": arch,
            "architecture": arch,
            "description": doc.splitlines()[0] if doc else "",
            "pretrained_tags": _tags(arch, load_manifest()),
        }
    entry = _entry(arch, tag, load_manifest())
    return {"name": name, "architecture": arch, "tag": tag, **entry.to_dict()}


def create_model(name, pretrained=False, **kwargs):
    """Build a model by name; load pretrained weights if asked.

    ``name`` is ``"arch"`` or ``"arch.tag"``; a tag selects a pretrained entry, whose
    ``model_kwargs`` are used (``kwargs`` override them) and whose pruning plan, if any,
    is applied (:func:`slimhub.prune.apply_plan`). ``pretrained``: False builds
    with random weights; True loads the weights of the name's tag, or of the
    architecture's only entry; a string is the tag to load. An int8 entry is wrapped
    for quantization (:func:`slimhub.quant.quantize` with its ``quant_format``). Weights
    are downloaded through :func:`slimhub.model_zoo.hub.download` and must match every
    parameter.
    """
    arch, tag = _split(name)
    if isinstance(pretrained, str):
        if tag is not None and tag != pretrained:
            raise ValueError(f"create_model: name {name!r} names tag {tag!r} but pretrained={pretrained!r}")
        tag = pretrained
    elif not isinstance(pretrained, bool):
        raise TypeError(f"create_model: pretrained must be a bool or a tag string, got {pretrained!r}")
    entry = None
    if tag is not None or pretrained:
        manifest = load_manifest()
        if tag is None:
            tags = _tags(arch, manifest)
            if len(tags) != 1:
                raise ValueError(
                    f"create_model: {arch!r} has {len(tags)} pretrained entries {tags}; "
                    "name one with pretrained='tag' or 'arch.tag'"
                )
            tag = tags[0]
        entry = _entry(arch, tag, manifest)
    weights = _fetch_weights(f"{arch}.{tag}", entry) if pretrained else None
    model = _ARCHITECTURES[arch](**{**(entry.model_kwargs if entry else {}), **kwargs})
    if entry is not None and entry.pruning_plan is not None:
        apply_plan(model, entry.pruning_plan, source=f"pruning plan of {arch}.{tag}")
    state = paddle.load(weights) if weights is not None else None
    if entry is not None and entry.quant_format is not None:
        config = QuantConfig(**entry.quant_format)
        quantize(model, config)
        if state is not None:  # convs feeding residual sums were given output quanters in training
            add_output_quanters(model, output_quanter_layers(state), config)
    if state is not None:
        _load_weights(model, f"{arch}.{tag}", weights, state)
    return model


def record_pretrained(name, *, model, urls, dataset, input_size, model_kwargs, file=None, md5=None,
                      top1=None, top5=None, recipe=None, pruning_plan=None, quant_format=None,
                      manifest_path=None):
    """Add or replace the manifest entry ``name`` ("arch.tag") from measured values.

    ``model`` is the network the weights belong to: its FLOPs and parameters are counted
    with :func:`slimhub.flops` at ``input_size`` (C, H, W), and its number of classes is
    read from its output. ``file`` (a local copy of the weights) gives sha256 and size;
    without it, ``md5`` of the remote file must be given. The manifest is rewritten
    atomically. Returns the new entry.
    """
    _, tag = _split(name)
    if tag is None:
        raise ValueError(f"record_pretrained: name must be 'arch.tag', got {name!r}")
    if (file is None) == (md5 is None):
        raise ValueError("record_pretrained: give exactly one of file= (our weights) or md5= (external weights)")
    input_size = tuple(int(s) for s in input_size)
    counts = count_flops(model, input_size)
    with eval_mode(model), paddle.no_grad():
        num_classes = int(model(paddle.zeros([1, *input_size])).shape[-1])
    entry = PretrainedEntry(
        urls=tuple([urls] if isinstance(urls, str) else urls),
        dataset=dataset,
        input_size=input_size,
        num_classes=num_classes,
        model_kwargs=dict(model_kwargs),
        sha256=hub.file_digest(file, "sha256") if file is not None else None,
        md5=md5,
        file_size=os.path.getsize(file) if file is not None else None,
        top1=top1,
        top5=top5,
        flops=int(counts["flops"]),
        params=int(counts["params"]),
        recipe=recipe,
        pruning_plan=pruning_plan,
        quant_format=quant_format,
    )
    path = manifest_path or MANIFEST_PATH
    entries = load_manifest(path) if os.path.exists(path) else {}
    entries[name] = PretrainedEntry.from_dict(entry.to_dict(), f"record_pretrained: {name!r}")
    write_json({"format": MANIFEST_FORMAT,
                "models": {n: entries[n].to_dict() for n in sorted(entries)}}, path)
    return entries[name]


def _split(name):
    """``"arch.tag"`` -> (arch, tag), ``"arch"`` -> (arch, None); the arch must be registered."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"model name must be a non-empty string, got {name!r}")
    arch, _, tag = name.partition(".")
    if arch not in _ARCHITECTURES:
        close = difflib.get_close_matches(arch, list(_ARCHITECTURES), n=5, cutoff=0.5)
        hint = f"did you mean {close}? " if close else ""
        raise UnknownModelError(
            f"unknown model architecture {arch!r} (from {name!r}); {hint}"
            f"valid architectures: {sorted(_ARCHITECTURES)}"
        )
    return arch, (tag or None)


def _tags(arch, manifest):
    return sorted(n.partition(".")[2] for n in manifest if n.partition(".")[0] == arch)


def _entry(arch, tag, manifest):
    name = f"{arch}.{tag}"
    if name not in manifest:
        tags = _tags(arch, manifest)
        close = difflib.get_close_matches(tag, tags, n=5, cutoff=0.5)
        hint = f"did you mean {close}? " if close else ""
        raise UnknownModelError(f"no pretrained entry {name!r}; {hint}tags of {arch!r}: {tags}")
    return manifest[name]


def _fetch_weights(name, entry):
    """Local path of the entry's weight file, from the first of its URLs that works."""
    urls = [_absolute_url(u) for u in entry.urls]
    for url in urls[:-1]:
        try:
            return hub.download(url, sha256=entry.sha256, md5=entry.md5)
        except hub.DownloadError as e:
            warnings.warn(f"{e}; trying the next URL")
    return hub.download(urls[-1], sha256=entry.sha256, md5=entry.md5)


def _absolute_url(url):
    """A URL without a scheme names a file relative to the manifest's directory."""
    if "://" in url:
        return url
    return (Path(MANIFEST_PATH).resolve().parent / url).as_uri()


def _load_weights(model, name, path, state):
    """Load ``state`` (read from ``path``), which must fit every parameter and buffer of ``model``."""
    state = fill_in_grids(model, state)
    set_fitting_state(model, state, f"{name}: weights in {path}",
                      "were they saved from a network built with other arguments?")

