"""Just enough ClassAd syntax for HTCondor's file-transfer plugin protocol.

The plugin runs on execute points that may not have HTCondor's Python
bindings, so it reads and writes the few forms the protocol uses itself:
new-format ads (``[ A = "x"; B = 1 ]``, back to back), with string, integer,
real, boolean, ``undefined`` and list-of-ads values; and old-format
``Name = value`` lines for ``-classad``. The test suite checks both directions
against ``classad2``, HTCondor's own parser.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Union

__all__ = ["ClassAdError", "Value", "format_ad", "format_old", "parse_ads"]

Value = Union[str, int, float, bool, None, list["Value"], dict[str, "Value"]]  # noqa: UP007


class ClassAdError(ValueError):
    """The input is not in the ClassAd subset this module reads."""


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<str>"(?:[^"\\]|\\.)*")
      | (?P<num>[-+]?(?:\d+\.\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+|\d+))
      | (?P<name>[A-Za-z_][A-Za-z0-9_.]*)
      | (?P<punct>[\[\]{};=,])
    )""",
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "/": "/", "b": "\b", "f": "\f"}


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def peek(self) -> tuple[str, str] | None:
        m = _TOKEN.match(self.text, self.pos)
        if m is None:
            rest = self.text[self.pos :].strip()
            if not rest:
                return None
            raise ClassAdError(f"unexpected text at offset {self.pos}: {rest[:30]!r}")
        kind = m.lastgroup
        assert kind is not None
        return kind, m.group(kind)

    def next(self) -> tuple[str, str]:
        m = _TOKEN.match(self.text, self.pos)
        if m is None or m.lastgroup is None:
            raise ClassAdError(f"unexpected end or text at offset {self.pos}")
        self.pos = m.end()
        return m.lastgroup, m.group(m.lastgroup)

    def expect(self, punct: str) -> None:
        kind, tok = self.next()
        if kind != "punct" or tok != punct:
            raise ClassAdError(f"expected {punct!r}, found {tok!r} at offset {self.pos}")

    def ad(self) -> dict[str, Value]:
        self.expect("[")
        ad: dict[str, Value] = {}
        while True:
            tok = self.peek()
            if tok is None:
                raise ClassAdError("unterminated ClassAd")
            if tok == ("punct", "]"):
                self.next()
                return ad
            if tok == ("punct", ";"):
                self.next()
                continue
            kind, name = self.next()
            if kind != "name":
                raise ClassAdError(f"expected an attribute name, found {name!r}")
            self.expect("=")
            start = self.pos
            try:
                value = self.value()
                if self.peek() not in (("punct", ";"), ("punct", "]")):
                    raise ClassAdError("not a literal")
            except ClassAdError:
                # an expression (strcat(...), a + b, MY.x): not a value the protocol
                # needs, so skip it and read it as undefined
                self.pos = start
                self.skip_expression()
                value = None
            ad[name] = value

    def skip_expression(self) -> None:
        """Move past one expression: to the next ``;`` or ``]`` outside brackets and quotes."""
        text, i, depth = self.text, self.pos, 0
        while i < len(text):
            c = text[i]
            if c in "\"'":
                i += 1
                while i < len(text) and text[i] != c:
                    i += 2 if text[i] == "\\" else 1
            elif c in "([{":
                depth += 1
            elif c in ")]}":
                if depth == 0:
                    break
                depth -= 1
            elif c == ";" and depth == 0:
                break
            i += 1
        else:
            raise ClassAdError("unterminated ClassAd")
        self.pos = i

    def value(self) -> Value:
        tok = self.peek()
        if tok is None:
            raise ClassAdError("missing value")
        kind, text = tok
        if kind == "punct" and text == "[":
            return self.ad()
        if kind == "punct" and text == "{":
            self.next()
            items: list[Value] = []
            while self.peek() != ("punct", "}"):
                items.append(self.value())
                if self.peek() == ("punct", ","):
                    self.next()
            self.next()
            return items
        self.next()
        if kind == "str":
            return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), text[1:-1])
        if kind == "num":
            return float(text) if any(c in text for c in ".eE") else int(text)
        if kind == "name":
            low = text.lower()
            if low in ("true", "false"):
                return low == "true"
            if low in ("undefined", "error"):
                return None
        raise ClassAdError(f"unsupported value {text!r}")


def parse_ads(text: str) -> list[dict[str, Value]]:
    """Every new-format ad in ``text`` (trailing whitespace ignored)."""
    reader = _Reader(text)
    ads = []
    while reader.peek() is not None:
        ads.append(reader.ad())
    return ads


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _format_value(value: Value) -> str:
    if value is None:
        return "undefined"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, dict):
        return format_ad(value)
    if isinstance(value, list):
        return "{ " + ", ".join(_format_value(v) for v in value) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as a ClassAd value")


def format_ad(ad: Mapping[str, Value]) -> str:
    """One new-format ad on one line."""
    return "[ " + "; ".join(f"{k} = {_format_value(v)}" for k, v in ad.items()) + " ]"


def format_old(ad: Mapping[str, Value]) -> str:
    """Old-format ``Name = value`` lines (what ``-classad`` prints)."""
    return "".join(f"{k} = {_format_value(v)}\n" for k, v in ad.items())


def lookup(ad: Mapping[str, Value], name: str) -> Value:
    """Case-insensitive attribute lookup (ClassAd names are case-insensitive)."""
    low = name.lower()
    for k, v in ad.items():
        if k.lower() == low:
            return v
    return None


def iter_file_ads(ads: Iterable[Mapping[str, Value]]) -> Iterable[Mapping[str, Value]]:
    """The ads that name a file (protocol v4 also sends option-only ads, with neither
    ``Url`` nor ``LocalFileName``). An ad with only one of them is yielded: it is a
    malformed file ad, which must get a (failed) result, not be dropped."""
    for ad in ads:
        if lookup(ad, "Url") is not None or lookup(ad, "LocalFileName") is not None:
            yield ad
