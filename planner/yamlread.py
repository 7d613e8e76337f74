"""The YAML layer under the Pegasus readers: one loader, errors with line numbers, splitting.

Scalars are read the way Pegasus's own loader (``Pegasus.yaml``) reads them: YAML 1.1
as PyYAML does, except that only ``true``/``false`` (any case) are booleans (``yes``,
``no``, ``on``, ``off`` stay strings) and dates stay strings. Every parser used here
gives that reading: PyYAML through :class:`PegasusLoader`, and yaml-rs (``yaml_rs``,
optional) only on text that :func:`fast_ok` has cleared, where the two agree.

Large documents are not parsed whole. :func:`split_document` cuts the text at its
top-level keys; :func:`iter_items` cuts a block sequence (``jobs:``) at its items, so
a batch of items can be parsed, turned into the model and dropped. Any surprise in
that shape raises :class:`Irregular` and the caller parses the whole document instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import yaml

from ferry.plugins.errors import ConfigError

try:  # optional: a Rust YAML parser, some 15x faster than PyYAML's C loader
    import yaml_rs as _yaml_rs
except ImportError:  # pragma: no cover - depends on the environment
    _yaml_rs = None

__all__ = [
    "Block",
    "Invalid",
    "Irregular",
    "PegasusLoader",
    "fast_available",
    "fast_loads",
    "fast_ok",
    "iter_items",
    "locate",
    "non_printable",
    "parse",
    "split_document",
]

_BaseLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class PegasusLoader(_BaseLoader):  # type: ignore[misc,valid-type]
    """PyYAML's safe loader with Pegasus's booleans and no dates."""


def _construct_bool(loader: Any, node: yaml.ScalarNode) -> object:
    value = loader.construct_scalar(node)
    low = value.lower()
    if low == "true":
        return True
    if low == "false":
        return False
    return value


PegasusLoader.add_constructor("tag:yaml.org,2002:bool", _construct_bool)
PegasusLoader.add_constructor("tag:yaml.org,2002:timestamp", yaml.SafeLoader.construct_yaml_str)
# Pegasus.yaml changes these on PyYAML's own loaders when it is imported; fix ours so
# that importing pegasus-wms-api before or after this module changes nothing.
for _tag in ("int", "float", "null", "str", "seq", "map"):
    _key = f"tag:yaml.org,2002:{_tag}"
    PegasusLoader.add_constructor(_key, yaml.SafeLoader.yaml_constructors[_key])


class Invalid(Exception):
    """A value of the wrong type or form; ``path`` leads to it from the parsed root."""

    def __init__(self, message: str, path: tuple[object, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.path = path


class Irregular(Exception):
    """The text is not in the shape the splitter expects: parse it whole."""


def parse(text: str, source: str, line_offset: int = 0) -> Any:
    """Parse one YAML document; a syntax error becomes a one-line ConfigError."""
    try:
        return yaml.load(text, Loader=PegasusLoader)  # noqa: S506 - a safe loader
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(_yaml_message(exc, source, line_offset)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: YAML error: {exc}") from None


def _yaml_message(exc: yaml.MarkedYAMLError, source: str, line_offset: int) -> str:
    mark = exc.problem_mark or exc.context_mark
    what = " ".join(p for p in (exc.context, exc.problem) if p) or "malformed YAML"
    if mark is None:
        return f"{source}: YAML syntax error: {what}"
    where = f"{source}:{mark.line + 1 + line_offset}:{mark.column + 1}"
    ctx = exc.context_mark
    also = ""
    if ctx is not None and exc.problem_mark is not None and ctx.line != mark.line:
        also = f" (started at line {ctx.line + 1 + line_offset})"
    return f"{where}: YAML syntax error: {what}{also}"


def locate(text: str, path: tuple[object, ...]) -> tuple[int, int] | None:
    """The (line, column), 1-based, of the node at ``path`` in ``text``; None if not found.

    Used only on the error path: it composes the text again with PyYAML.
    """
    try:
        node = yaml.compose(text, Loader=PegasusLoader)  # noqa: S506
    except yaml.YAMLError:
        return None
    best = node
    for step in path:
        if node is None:
            break
        nxt = None
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == str(step):
                    nxt = v
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int):
            if 0 <= step < len(node.value):
                nxt = node.value[step]
        if nxt is None:
            break
        node = best = nxt
    if best is None:
        return None
    return best.start_mark.line + 1, best.start_mark.column + 1


_PRINTABLE_ASCII = bytes(range(0x20, 0x7F)) + b"\t\n\r"
# PyYAML's Reader.NON_PRINTABLE
_NON_PRINTABLE = re.compile(
    "[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)


def non_printable(raw: bytes, text: str) -> int | None:
    """The index in ``text`` of the first character YAML does not allow, or None.

    ``raw`` is ``text`` in UTF-8; the common all-printable-ASCII case costs one
    ``bytes.translate``.
    """
    rest = raw.translate(None, _PRINTABLE_ASCII)
    if not rest:
        return None
    m = _NON_PRINTABLE.search(text)
    return m.start() if m else None


# --- the fast parser -------------------------------------------------------------

# Things on which yaml-rs and PyYAML may read differently (or PyYAML reads specially):
# anchors, aliases, tags, merge keys, complex keys, block scalars, directives, flow
# collections other than [] and {}, backslash escapes, tabs and CRs. A cheap look for
# the characters first; the exact pattern only when one is there.
_RISKY_CHARS = "&*!|>?%@`<\\\t\r"
_RISKY = re.compile(r"[\s,\[{](?:[&*!|>?%@`]|<<)|[\\\t\r]")
_EMPTY_KEY = re.compile(r"^[ ]*(?:- )*:(?:[ ]|$)", re.M)
_FLOW = re.compile(r"\[(?!\][ ]*$)|\{(?!\}[ ]*$)", re.M)
# a plain scalar that starts like a number: only plain decimal ints and simple
# decimal floats read the same in both parsers
_NUMBER_START = re.compile(r" [-+]?\.?[0-9]")
_PLAIN_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?[ ]*")
_SPECIAL_FLOAT = re.compile(r"[:-] [-+]?\.(?:inf|nan|Inf|NaN|INF|NAN)[ ]*$", re.M)


def fast_available() -> bool:
    return _yaml_rs is not None


def fast_ok(text: str) -> bool:
    """True when yaml-rs reads ``text`` exactly as :class:`PegasusLoader` does."""
    if _yaml_rs is None or not text:
        return False
    if text[0] in '&*!|>?%@`[{"':
        return False
    for ch in _RISKY_CHARS:
        if ch in text:
            if _RISKY.search(text):
                return False
            break
    if ("[" in text or "{" in text) and _FLOW.search(text):
        return False
    if (" :" in text or "\n:" in text or text[0] == ":") and _EMPTY_KEY.search(text):
        return False
    if (" ." in text or " -." in text or " +." in text) and _SPECIAL_FLOAT.search(text):
        return False
    find = text.find
    for m in _NUMBER_START.finditer(text):
        s = m.start()
        prev = text[s - 1] if s else "\n"
        if prev == ":" or prev == "-":
            end = find("\n", s)
            token = text[s + 1 : end if end >= 0 else len(text)]
        elif prev == " " or prev == "\n":
            # an indented key that starts like a number?
            ls = text.rfind("\n", 0, s) + 1
            if text[ls:s].strip(" "):
                continue
            end = find("\n", s)
            line = text[s + 1 : end if end >= 0 else len(text)]
            colon = line.find(": ")
            if colon < 0:
                if not line.endswith(":"):
                    continue
                colon = len(line) - 1
            token = line[:colon]
        else:
            continue
        if not _PLAIN_NUMBER.fullmatch(token):
            return False
    return True


def fast_loads(text: str) -> Any:
    """Parse with yaml-rs (call only when :func:`fast_ok`); None when it refuses."""
    assert _yaml_rs is not None
    try:
        return _yaml_rs.loads(
            text,
            parse_datetime=False,
            duplicate_key_policy=_yaml_rs.DuplicateKeyPolicy.LastWins,
        )
    except Exception:  # noqa: BLE001 - any refusal: PyYAML decides
        return None


# --- splitting -----------------------------------------------------------------------

# a line that starts a top-level key: column 0, not blank, not a comment, not an item
# (consuming the line's first characters, not looking ahead: 25% faster in `re`)
_TOP_LINE = re.compile(r"\n(?:[^\s#-]|-\S)")
_DOC_MARK = re.compile(r"\n(?:---|\.\.\.)(?:[ \t\n]|$)")
_BIG_KEY = re.compile(r"([A-Za-z][A-Za-z0-9_]*):[ ]*(?:#[^\n]*)?\n")


class Block:
    """One top-level key of a document: its text span and first line (1-based)."""

    __slots__ = ("end", "key", "line", "start", "value_start")

    def __init__(self, key: str | None, start: int, end: int, line: int, value_start: int):
        self.key = key
        self.start = start
        self.end = end
        self.line = line
        self.value_start = value_start


def split_document(text: str) -> list[Block]:
    """Cut a block-style document at its top-level keys.

    ``Block.key`` is set (and ``value_start`` points after the key's line) only for
    keys whose value is a block on the following lines; other blocks have key None
    and are parsed as small documents. Raises :class:`Irregular` for anything else:
    directives, several documents, a root that is not a block mapping at column 0.
    """
    start = 0
    line = 1
    if text.startswith("---"):
        nl = text.find("\n")
        if nl < 0 or text[3:nl].strip():
            raise Irregular("document start with content")
        start = nl + 1
        line = 2
    if text.startswith("%") or (
        ("\n---" in text or "\n..." in text) and _DOC_MARK.search(text, start - 1 if start else 0)
    ):
        raise Irregular("directives or several documents")
    starts = [m.start() + 1 for m in _TOP_LINE.finditer(text, start - 1 if start else 0)]
    if start == 0 and _TOP_LINE.match("\n" + text[:2]):
        starts.insert(0, 0)
    if not starts:
        raise Irregular("no top-level keys at column 0")
    lead = text[start : starts[0]]
    if any(ln.strip() and not ln.lstrip().startswith("#") for ln in lead.split("\n")):
        raise Irregular("content before the first top-level key")
    line += lead.count("\n")
    blocks = []
    for i, s in enumerate(starts):
        e = starts[i + 1] if i + 1 < len(starts) else len(text)
        key = None
        value_start = s
        m = _BIG_KEY.match(text, s)
        if m is not None:
            key = m.group(1)
            value_start = m.end()
        blocks.append(Block(key, s, e, line, value_start))
        line += text.count("\n", s, e)
    return blocks


_ITEM0 = re.compile(r"\n-(?:[ ]|$)", re.M)
_SPACES = re.compile(r" *")


def iter_items(
    text: str, start: int, end: int, line: int, batch: int, size: int = 0
) -> Iterator[tuple[int, int, int, int]]:
    """Batches of the items of a block sequence in ``text[start:end]``.

    ``line`` is the 1-based line at ``start``. Yields ``(batch_start, batch_end,
    first_line, count)``; raises :class:`Irregular` when the block holds anything but
    items at one indentation (and comments or blank lines before the first).
    With ``size``, a sequence at column 0 is cut into batches of about ``size``
    characters instead (whole items; ``count`` is then 0: not counted).
    """
    pos = start
    # skip blank and comment lines before the first item
    while pos < end:
        nl = text.find("\n", pos, end)
        nl = end if nl < 0 else nl + 1
        stripped = text[pos:nl].strip()
        if stripped and not stripped.startswith("#"):
            break
        line += 1
        pos = nl
    if pos >= end:
        return
    indent = _SPACES.match(text, pos, end).end() - pos  # type: ignore[union-attr]
    if not text.startswith("-", pos + indent) or text[pos + indent + 1 : pos + indent + 2] not in (
        " ",
        "\n",
        "",
    ):
        raise Irregular("a block sequence was expected")
    item = re.compile(r"^" + " " * indent + r"-(?:[ ]|$)", re.M)
    # anything at a smaller indentation than the items (other than blank/comment lines)
    # means the block is not one plain sequence
    if indent:
        outdent = re.compile(rf"^ {{0,{indent - 1}}}(?=[^\s#])", re.M)
        if outdent.search(text, pos, end):
            raise Irregular("a line outdented from the sequence")
    first = pos
    if size and not indent:
        # item starts are the lines that start with "- " (or are "-"): jump, then find one
        while True:
            m = _ITEM0.search(text, min(first + size, end) - 1, end) if first + size < end else None
            if m is None:
                yield first, end, line, 0
                return
            s = m.start() + 1
            yield first, s, line, 0
            line += text.count("\n", first, s)
            first = s
    count = 0
    for m in item.finditer(text, pos, end):
        count += 1
        if count > batch:
            s = m.start()
            yield first, s, line, batch
            line += text.count("\n", first, s)
            first = s
            count = 1
    if count:
        yield first, end, line, count
