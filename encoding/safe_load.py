"""Bounded loading of the YAML and JSON files a user hands over, and short renderings of their values.

A hostile or broken file must end in `BadInput` naming it, within seconds, never in a MemoryError, a
RecursionError or an error message the size of the file. The bounds:

- size: `CONFIG_BYTES` (1 MiB) for hand-written files (experiment and optuna configs, prompt templates,
  class-name lists, a run's records), 400 times the largest shipped config (2.4 kB); `DATA_BYTES`
  (1 GiB) for data (dataset annotations, `metadata.json`, `splits.json`): Karpathy's `dataset_coco.json`
  is about 150 MB and an image id in `splits.json` takes about 20 bytes, so 1 GiB holds some 50
  million ids, while the parsed objects (several times the file) still fit in memory.
- YAML values: at most `MAX_VALUES` nodes in one document, aliases expanded (the shipped configs have
  about a hundred), so a few hundred bytes of nested aliases ("billion laughs") cannot stand for a
  billion values, and a long list cannot keep yaml's Python composer busy for minutes; an alias
  inside the node it names (a recursive structure) is refused.
- YAML nesting: `MAX_DEPTH` levels (configs use four or five).
  Both are checked while the document is composed, before any Python object exists; libyaml scans and
  parses when PyYAML has it.
- JSON nesting: Python's recursion limit (about 1000 levels); JSON has no aliases, so its size bounds the rest.
"""

import json
import reprlib

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

try:
    from yaml.cyaml import CParser
except ImportError:  # PyYAML built without libyaml
    CParser = None

from encoding.errors import BadInput

CONFIG_BYTES = 1 << 20
DATA_BYTES = 1 << 30
MAX_DEPTH = 32
MAX_VALUES = 50_000
SHOWN_CHARS = 200

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, SHOWN_CHARS, SHOWN_CHARS
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 10


def shown(value) -> str:
    """`repr(value)` for an error message: at most `SHOWN_CHARS` characters, however large or deep the value
    (`reprlib` abbreviates without rendering the whole)."""
    text = _REPR.repr(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


def _size(limit: int) -> str:
    """`limit` bytes in the unit a person would say: 1 GiB, 1 MiB, 10 bytes."""
    for unit, shift in (("GiB", 30), ("MiB", 20)):
        if limit >= 1 << shift and limit % (1 << shift) == 0:
            return f"{limit >> shift} {unit}"
    return f"{limit} bytes"


def read_capped(path, limit: int = DATA_BYTES) -> str:
    """The UTF-8 text of the file at `path`; `BadInput` naming it when it is larger than `limit` bytes,
    unreadable or not UTF-8. Reads at most `limit + 1` bytes, whatever the file claims to be."""
    try:
        with open(path, "rb") as file:
            data = file.read(limit + 1)
    except OSError as err:
        raise BadInput(f"{path}: cannot be read ({err.strerror or err})") from err
    if len(data) > limit:
        raise BadInput(f"{path}: larger than {_size(limit)}, the most this tool reads from such a file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BadInput(f"{path}: not UTF-8 text at byte {err.start} ({err.reason}); save it as UTF-8") from err


class _Refused(yaml.YAMLError):
    """A YAML document beyond the bounds; the message says which bound and where."""

    def __init__(self, problem: str, mark):
        super().__init__(f"{problem} (line {mark.line + 1}, column {mark.column + 1})")


_PARSERS = (Reader, Scanner, Parser) if CParser is None else (CParser,)


class _BoundedLoader(Composer, *_PARSERS, SafeConstructor, Resolver):
    """yaml's SafeLoader (libyaml's parser when present) that refuses, while composing, more than
    `MAX_VALUES` nodes (aliases expanded), nesting beyond `MAX_DEPTH` and an alias inside the node it names."""

    def __init__(self, stream):
        if CParser is None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)
        else:
            CParser.__init__(self, stream)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self.depth, self.values, self.open_anchors = 0, 0, set()

    def count(self, event) -> None:
        """One more value; `_Refused` past `MAX_VALUES`."""
        self.values += 1
        if self.values > MAX_VALUES:
            raise _Refused(f"more than {MAX_VALUES} values (aliases expanded)", event.start_mark)

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            self.count_alias(event)
            return super().compose_node(parent, index)
        self.count(event)
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Refused(f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
        if event.anchor is not None:
            self.open_anchors.add(event.anchor)
        node = super().compose_node(parent, index)
        self.open_anchors.discard(event.anchor)
        self.depth -= 1
        return node

    def count_alias(self, event) -> None:
        """Count the nodes the alias stands for (stopping at the bound) and check the depth they reach."""
        if event.anchor in self.open_anchors:
            problem = f"alias *{event.anchor} is inside the node it names (a recursive structure)"
            raise _Refused(problem, event.start_mark)
        target = self.anchors.get(event.anchor)
        stack = [(target, self.depth + 1)] if target is not None else []
        while stack:
            node, depth = stack.pop()
            self.count(event)
            if depth > MAX_DEPTH:
                raise _Refused(f"alias *{event.anchor} nests deeper than {MAX_DEPTH} levels", event.start_mark)
            if isinstance(node, yaml.MappingNode):
                stack.extend((child, depth + 1) for pair in node.value for child in pair)
            elif isinstance(node, yaml.SequenceNode):
                stack.extend((child, depth + 1) for child in node.value)


def parse_yaml(text: str, source: str):
    """The value of the YAML document `text`; `BadInput` starting with `source` when it is not valid
    YAML or passes the bounds."""
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # SafeConstructor: plain values only
    except _Refused as err:
        raise BadInput(f"{source}: refused: {err}") from err
    except (yaml.YAMLError, ValueError) as err:  # ValueError: an integer too long to convert
        raise BadInput(f"{source}: not valid YAML ({err})") from err


def load_yaml(path, limit: int = CONFIG_BYTES):
    """The value of the YAML file at `path` (at most `limit` bytes); `BadInput` naming it otherwise."""
    return parse_yaml(read_capped(path, limit), str(path))


def parse_json(text: str, source: str):
    """The value of the JSON document `text`; `BadInput` starting with `source` when it is not valid JSON
    or nested beyond Python's recursion limit."""
    try:
        return json.loads(text)
    except RecursionError as err:
        raise BadInput(f"{source}: refused: JSON nested too deeply to read") from err
    except ValueError as err:  # JSONDecodeError, or an integer too long to convert
        raise BadInput(f"{source}: not valid JSON ({err})") from err


def load_json(path, limit: int = DATA_BYTES):
    """The value of the JSON file at `path` (at most `limit` bytes); `BadInput` naming it otherwise."""
    return parse_json(read_capped(path, limit), str(path))
