"""Reading recipe YAML: values with the file and line of every key, ``include:`` and ``--set``.

The YAML is composed to nodes first, so that each key keeps its line; the nodes are
then constructed into plain Python values. Floats follow YAML 1.2 (``4e-5`` is a number,
not the string YAML 1.1 makes of it).

A recipe file is read within fixed limits, each a one-line :class:`RecipeError` naming
the file and line: at most :data:`MAX_FILE_BYTES` of UTF-8 text, values nested at most
:data:`MAX_DEPTH` deep, at most :data:`MAX_VALUES` values once aliases are expanded
(an alias counts as the whole value it repeats, so an alias bomb stops at the line
that passes the limit, after reading the file once), no recursive aliases, and at most
:data:`MAX_FILES` files read through ``include:`` for one recipe.
"""
from __future__ import annotations

import os
import re

import yaml

from slimhub.recipe.errors import Origin, RecipeError


MAX_FILE_BYTES = 1 << 20
"""A recipe file holds at most 1 MiB."""
MAX_DEPTH = 64
"""Values nest at most this deep (a recipe needs about 6 levels)."""
MAX_VALUES = 10_000
"""Values (scalars, lists, mappings) one file or override holds, aliases expanded."""
MAX_FILES = 32
"""Files read for one recipe: the recipe and everything it includes, repeats counted."""


class _Limit(Exception):
    """A limit passed or an error met while reading YAML: ``(key path, 1-based line, message)``."""


class RecipeLoader(yaml.SafeLoader):
    """Safe YAML with YAML 1.2 floats (``1e-4``, ``.5``, ``-inf``), composed within
    :data:`MAX_DEPTH` and :data:`MAX_VALUES`; a value that cannot be constructed
    (an integer of more digits than Python reads, a date that does not exist) is a
    YAML error at its line."""

    def __init__(self, stream):
        super().__init__(stream)
        self._parts = []  # key path of the node being composed (None: a mapping key)
        self._sizes = {}  # id(node) -> values it holds, aliases expanded
        self._nodes = []  # keeps composed nodes alive, so that their ids stay theirs
        self._paths = {}  # id(node) -> key path where it was first written

    def _path(self):
        return tuple(p for p in self._parts if p is not None)

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(index, yaml.ScalarNode):
            part = index.value
        elif isinstance(index, yaml.Node):
            part = "?"
        else:
            part = index  # a sequence position, or None for a mapping key
        self._parts.append(part)
        try:
            if len(self._parts) > MAX_DEPTH:
                raise _Limit(self._path()[:4], event.start_mark.line + 1,
                             f"values are nested more than {MAX_DEPTH} levels deep; a recipe nests "
                             f"at most {MAX_DEPTH}")
            try:
                node = super().compose_node(parent, index)
            except yaml.YAMLError as exc:  # a syntax error inside this value: name its key path
                line, detail = _yaml_problem(exc, None)
                raise _Limit(self._path(), line, f"not valid YAML: {detail}") from None
            size = self._sizes.get(id(node))
            if size is None:
                if isinstance(event, yaml.AliasEvent):
                    raise _Limit(self._path(), event.start_mark.line + 1,
                                 f"alias *{event.anchor} repeats a value that contains it; "
                                 "a recipe cannot be recursive")
                if isinstance(node, yaml.SequenceNode):
                    size = 1 + sum(self._sizes[id(item)] for item in node.value)
                elif isinstance(node, yaml.MappingNode):
                    size = 1 + sum(self._sizes[id(k)] + self._sizes[id(v)] for k, v in node.value)
                else:
                    size = 1
                self._sizes[id(node)] = size
                self._paths[id(node)] = self._path()
                self._nodes.append(node)
            if size > MAX_VALUES:
                raise _Limit(self._path(), event.start_mark.line + 1,
                             f"holds more than {MAX_VALUES} values with its aliases expanded "
                             f"({size}); a recipe holds at most {MAX_VALUES}")
            return node
        finally:
            self._parts.pop()

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except yaml.constructor.ConstructorError as exc:
            raise _Limit(self._paths.get(id(node), ()), (exc.problem_mark or node.start_mark).line + 1,
                         f"not valid YAML: {' '.join(str(exc.problem).split())}") from None
        except (ValueError, OverflowError, TypeError) as exc:
            reason = str(exc).split(";")[0].strip() or type(exc).__name__
            raise _Limit(self._paths.get(id(node), ()), node.start_mark.line + 1,
                         f"cannot read this value: {' '.join(reason.split())}") from None


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


def _yaml_problem(exc, text):
    """``(1-based line or None, one-line description)`` of a YAML error."""
    if isinstance(exc, yaml.reader.ReaderError):  # raised before composing, on the whole text
        line = text.count("\n", 0, exc.position) + 1 if text is not None else None
        char = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
        return line, f"unacceptable character {char} ({exc.reason}) at line {line}"
    context, problem = getattr(exc, "context_mark", None), getattr(exc, "problem_mark", None)
    mark = context or problem
    detail = " ".join(f"{words} (line {m.line + 1})" if m else words
                      for words, m in ((getattr(exc, "context", None), context),
                                       (getattr(exc, "problem", None), problem)) if words)
    return (mark.line + 1 if mark else None), " ".join((detail or str(exc)).split())


def load_yaml(text, origin_of, path=()):
    """``(value, node)`` of the one YAML document in ``text`` within the limits of this
    module; ``origin_of(line)`` is the :class:`Origin` errors name, ``path`` the key path
    ``text`` is the value of."""
    loader = None
    try:
        loader = RecipeLoader(text)
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except _Limit as limit:
        where, line, message = limit.args
        raise RecipeError(path + where, origin_of(line), message) from None
    except yaml.YAMLError as exc:
        line, detail = _yaml_problem(exc, text)
        raise RecipeError(path, origin_of(line), f"not valid YAML: {detail}") from None
    finally:
        if loader is not None:
            loader.dispose()
    return data, node


def read_text(file):
    """The text of recipe ``file``: at most :data:`MAX_FILE_BYTES` of UTF-8."""
    try:
        with open(file, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise RecipeError((), Origin(file), f"cannot read the recipe: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        line = raw.count(b"\n", 0, MAX_FILE_BYTES) + 1
        raise RecipeError((), Origin(file, line), f"the file passes {MAX_FILE_BYTES} bytes (1 MiB) at "
                          f"this line; a recipe is at most {MAX_FILE_BYTES} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise RecipeError((), Origin(file, line), f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at "
                          f"column {column} cannot be decoded; a recipe is UTF-8 YAML") from None


def parse_yaml(text, file):
    """``(data, origins)`` of one YAML document; a syntax error names its line."""
    data, node = load_yaml(text, lambda line: Origin(file, line))
    if node is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError((), Origin(file, node.start_mark.line + 1), "a recipe must be a mapping of sections "
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


def read_recipe_file(path, _stack=(), _read=None):
    """Read ``path`` and the recipes it includes (``include:`` a path or a list of paths,
    relative to the including file; later files and the file itself win)."""
    file = os.path.abspath(path)
    data, origins = parse_yaml(read_text(file), file)
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
        _read = [1] if _read is None else _read
        _read[0] += 1
        if _read[0] > MAX_FILES:
            raise RecipeError(where, here.origin(where), f"the recipe reads more than {MAX_FILES} files "
                              f"through include: (repeats counted); a recipe reads at most {MAX_FILES}")
        base = read_recipe_file(target, _stack + (file,), _read)
        _merge(merged, base.data, merged_origins, base.origins)
    _merge(merged, data, merged_origins, origins)
    return Located(merged, merged_origins, file)


def apply_overrides(located, overrides):
    """Set ``"a.b.c=value"`` entries (values parsed as YAML) on ``located``, in order."""
    for text in overrides or ():
        shown = " ".join(str(text).split())  # on one line, at most 120 characters
        origin = Origin(f"--set {shown if len(shown) <= 120 else shown[:120] + '...'}")
        if not isinstance(text, str) or "=" not in text:
            raise RecipeError((), origin, f"an override must look like key.path=value, got {text!r}")
        key, _, value_text = text.partition("=")
        path = tuple(part.strip() for part in key.strip().split("."))
        if not all(path):
            raise RecipeError((), origin, f"an override's key must be a dotted key path like "
                              f"trainer.epochs, got {key!r}")
        if len(text) > MAX_FILE_BYTES:
            raise RecipeError(path, origin, f"the override is longer than {MAX_FILE_BYTES} bytes")
        value = load_yaml(value_text, lambda line: origin, path)[0] if value_text.strip() else None
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
