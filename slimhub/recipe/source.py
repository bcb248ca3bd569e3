"""Reading recipe YAML: values with the file and line of every key, ``include:`` and ``--set``.

The YAML is composed to nodes first, so that each key keeps its line; the nodes are
then constructed into plain Python values. Floats follow YAML 1.2 (``4e-5`` is a number,
not the string YAML 1.1 makes of it).
"""
from __future__ import annotations

import os
import re

import yaml

from slimhub.recipe.errors import Origin, RecipeError


class RecipeLoader(yaml.SafeLoader):
    """Safe YAML with YAML 1.2 floats (``1e-4``, ``.5``, ``-inf``)."""


RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                |[-+]?\.(?:inf|Inf|INF)
                |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


class Located:
    """Recipe values (nested dicts and lists) and the :class:`Origin` of every key path."""

    def __init__(self, data, origins, file):
        self.data = data
        self.origins = origins
        self.file = file

    def origin(self, path):
        """Where ``path`` (or its nearest written ancestor) was written."""
        path = tuple(path)
        while path:
            if path in self.origins:
                return self.origins[path]
            path = path[:-1]
        return Origin(self.file)

    def error(self, path, message):
        return RecipeError(path, self.origin(path), message)


def _walk(node, path, file, origins):
    """Record the line of every mapping key and sequence item under ``node``."""
    if isinstance(node, yaml.MappingNode):
        seen = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                raise RecipeError(path + (key,), Origin(file, line),
                                  f"duplicate key (first written at line {seen[key]})")
            seen[key] = line
            origins[path + (key,)] = Origin(file, line)
            _walk(value_node, path + (key,), file, origins)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            origins[path + (i,)] = Origin(file, item.start_mark.line + 1)
            _walk(item, path + (i,), file, origins)


def parse_yaml(text, file):
    """``(data, origins)`` of one YAML document; a syntax error names its line."""
    loader = RecipeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else {}
    except yaml.YAMLError as exc:
        context, problem = getattr(exc, "context_mark", None), getattr(exc, "problem_mark", None)
        mark = context or problem
        detail = " ".join(f"{text} (line {m.line + 1})" if m else text
                          for text, m in ((getattr(exc, "context", None), context),
                                          (getattr(exc, "problem", None), problem)) if text)
        raise RecipeError((), Origin(file, mark.line + 1 if mark else None),
                          f"not valid YAML: {detail or exc}") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise RecipeError((), Origin(file, 1), "a recipe must be a mapping of sections "
                          f"(model:, data:, trainer:, ...), got {type(data).__name__}")
    origins = {}
    _walk(node, (), file, origins)
    return data, origins


SELECTORS = ("type", "dataset")
"""Keys that pick what a section is; a section that picks another thing replaces the included one."""


def _same_kind(a, b):
    return all(k not in b or a.get(k) == b[k] for k in SELECTORS)


def _merge(base, over, base_origins, over_origins, path=()):
    """``over`` on top of ``base``: mappings merge key by key (unless ``over`` changes their
    ``type``/``dataset``), anything else replaces."""
    for key, value in over.items():
        sub = path + (key,)
        if isinstance(value, dict) and isinstance(base.get(key), dict) and _same_kind(base[key], value):
            _merge(base[key], value, base_origins, over_origins, sub)
            base_origins[sub] = over_origins.get(sub, base_origins.get(sub))
        else:
            base[key] = value
            for p in [p for p in base_origins if p[:len(sub)] == sub]:
                del base_origins[p]
            base_origins.update({p: o for p, o in over_origins.items() if p[:len(sub)] == sub})


def read_recipe_file(path, _stack=()):
    """Read ``path`` and the recipes it includes (``include:`` a path or a list of paths,
    relative to the including file; later files and the file itself win)."""
    file = os.path.abspath(path)
    with open(file, encoding="utf-8") as f:
        data, origins = parse_yaml(f.read(), file)
    includes = data.pop("include", None)
    if includes is None:
        return Located(data, origins, file)
    here = Located(data, origins, file)
    listed = includes if isinstance(includes, list) else [includes]
    merged, merged_origins = {}, {}
    for i, name in enumerate(listed):
        where = ("include", i) if isinstance(includes, list) else ("include",)
        if not isinstance(name, str) or not name:
            raise RecipeError(where, here.origin(where), f"must be a recipe file path, got {name!r}")
        target = os.path.normpath(os.path.join(os.path.dirname(file), os.path.expanduser(name)))
        if not os.path.isfile(target):
            raise RecipeError(where, here.origin(where), f"included recipe {name!r} not found: looked "
                              f"for {target} (include paths are relative to the including file)")
        if target in _stack or target == file:
            chain = " -> ".join(list(_stack) + [file, target])
            raise RecipeError(where, here.origin(where), f"recipes include each other in a cycle: {chain}")
        base = read_recipe_file(target, _stack + (file,))
        _merge(merged, base.data, merged_origins, base.origins)
    _merge(merged, data, merged_origins, origins)
    return Located(merged, merged_origins, file)


def apply_overrides(located, overrides):
    """Set ``"a.b.c=value"`` entries (values parsed as YAML) on ``located``, in order."""
    for text in overrides or ():
        origin = Origin(f"--set {text}")
        if not isinstance(text, str) or "=" not in text:
            raise RecipeError((), origin, f"an override must look like key.path=value, got {text!r}")
        key, _, value_text = text.partition("=")
        path = tuple(part.strip() for part in key.strip().split("."))
        if not all(path):
            raise RecipeError((), origin, f"an override's key must be a dotted key path like "
                              f"trainer.epochs, got {key!r}")
        try:
            value = yaml.load(value_text, Loader=RecipeLoader) if value_text.strip() else None
        except yaml.YAMLError as exc:
            raise RecipeError(path, origin, f"value {value_text!r} is not valid YAML: {exc}") from None
        node = located.data
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise RecipeError(path[:i + 1], origin, f"is {child!r}, not a mapping; cannot set "
                                  f"{'.'.join(path[i + 1:])} inside it")
            node = child
        node[path[-1]] = value
        for p in [p for p in located.origins if p[:len(path)] == path]:
            del located.origins[p]
        located.origins[path] = origin
    return located
