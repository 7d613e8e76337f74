"""Pegasus's ``File`` replica catalog: the plain-text ``rc.txt`` format.

One replica per line, ``#`` starting a comment::

    # LFN        PFN                               attributes
    f.a          file:///data/input/f.a            site="local"
    f.b          http://example.org/f.b            site="web" priority="10"
    "a name"     "file:///data/a name"             site="local"
    f\\.(\\d+)    file:///data/in/f.[1]             site="local" regex="true"
    f.c          file:///data/f.c    site="local" checksum.type="sha256" checksum.value="HEX"

The LFN and the PFN may be quoted (``"..."``, with ``\\"`` and ``\\\\`` escapes);
attributes are ``key="value"`` (or ``key=value``). ``site`` (or its old name
``pool``) names the replica's site, ``local`` when absent. ``regex="true"``
makes the LFN a regular expression whose groups fill ``[n]`` in the PFN.
``priority`` orders replicas, ``checksum.type="sha256"`` with
``checksum.value`` gives the sum checked on stage-in. Other attributes are kept
as the LFN's metadata.

Used when ``pegasus.catalog.replica`` is ``File``, or when a replica catalog
file reads as this format rather than YAML (see :func:`looks_like_file_rc`).
"""

from __future__ import annotations

import re

from ferry.plugins.errors import ConfigError

from .model import Replica, ReplicaCatalog

__all__ = ["looks_like_file_rc", "read_file_rc"]

# a token: a double-quoted string with escapes, or a run of non-blank characters
_TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"|(\S+)')
_ATTR = re.compile(r'([A-Za-z_][\w.\-]*)=(?:"((?:[^"\\]|\\.)*)"|(\S*))')
_UNESCAPE = re.compile(r"\\(.)")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def looks_like_file_rc(text: str) -> bool:
    """True when the first line that is not blank or a comment is ``LFN PFN ...``,
    not a YAML key (``pegasus: 5.0.4``, ``replicas:``) or a YAML/JSON document start."""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("---", "{", "[", "-")):
            return False
        first = _TOKEN.match(line)
        if first is None or first.group(2) is not None and first.group(2).endswith(":"):
            return False
        return len(line[first.end() :].split()) >= 1
    return False


def _unquote(quoted: str | None, bare: str | None) -> str:
    if quoted is not None:
        return _UNESCAPE.sub(r"\1", quoted)
    return bare or ""


def read_file_rc(text: str, source: str, rc: ReplicaCatalog | None = None) -> ReplicaCatalog:
    """Add the replicas of an ``rc.txt`` text to ``rc`` (a new catalog if None).

    Errors name ``source`` and the line: ``rc.txt:7: ...``.
    """
    rc = rc if rc is not None else ReplicaCatalog()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source}:{number}"
        tokens = []
        pos = 0
        for _ in range(2):
            m = _TOKEN.match(line, pos)
            if m is None:
                break
            tokens.append(_unquote(m.group(1), m.group(2)))
            pos = m.end()
            while pos < len(line) and line[pos].isspace():
                pos += 1
        if len(tokens) < 2:
            raise ConfigError(f"{where}: expected 'LFN PFN [key=\"value\" ...]', got {raw!r}")
        lfn, pfn = tokens
        attrs: dict[str, str] = {}
        rest = line[pos:]
        while rest:
            m = _ATTR.match(rest)
            if m is None:
                raise ConfigError(
                    f"{where}: replica {lfn!r}: attributes must be key=\"value\", got {rest!r}"
                )
            attrs[m.group(1)] = _unquote(m.group(2), m.group(3))
            rest = rest[m.end() :].lstrip()
        rc_add(rc, lfn, pfn, attrs, where)
    return rc


def rc_add(rc: ReplicaCatalog, lfn: str, pfn: str, attrs: dict[str, str], where: str) -> None:
    """One replica line into the catalog, with its attributes checked."""
    site = attrs.pop("site", None) or attrs.pop("pool", None) or "local"
    attrs.pop("pool", None)
    priority = None
    if "priority" in attrs:
        text = attrs.pop("priority")
        try:
            priority = int(text)
        except ValueError:
            raise ConfigError(
                f"{where}: replica {lfn!r}: priority {text!r} is not a whole number"
            ) from None
    sha256 = None
    ctype, cvalue = attrs.pop("checksum.type", None), attrs.pop("checksum.value", None)
    if ctype is not None or cvalue is not None:
        # a value without a type is a sha256: Pegasus reads checksum.value alone
        if (ctype or "sha256").lower() != "sha256" or cvalue is None:
            raise ConfigError(
                f"{where}: replica {lfn!r}: only checksum.type=\"sha256\" with a checksum.value"
                " is supported"
            )
        sha256 = cvalue.lower()
        if not _HEX64.fullmatch(sha256):
            raise ConfigError(
                f"{where}: replica {lfn!r}: checksum.value is not 64 hex digits: {cvalue!r}"
            )
    regex = attrs.pop("regex", "false").lower()
    if regex not in ("true", "false"):
        raise ConfigError(f"{where}: replica {lfn!r}: regex must be \"true\" or \"false\"")
    replica = Replica(site=site, pfn=pfn, sha256=sha256, priority=priority)
    if regex == "true":
        try:
            pattern = re.compile(lfn)
        except re.error as exc:
            raise ConfigError(f"{where}: replica regex {lfn!r} does not compile: {exc}") from None
        rc.regex.append((pattern, [replica]))
        return
    rc.entries.setdefault(lfn, []).append(replica)
    if sha256:
        rc.checksums[lfn] = sha256
    if attrs:
        rc.metadata.setdefault(lfn, {}).update(attrs)
