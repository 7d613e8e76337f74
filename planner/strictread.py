"""A strict reader for jobs and dependencies exactly as pegasus-wms-api lays them out.

The API writes with PyYAML's block style and a fixed key order, so most jobs of a
workflow match one regular expression. This module reads such a job straight into
the model, with no parser and no intermediate dicts. It is strict: a job with
anything it does not fully understand (a double-quoted or multi-line scalar, a
scalar that YAML would read as something other than a plain string, a comment,
hooks, an unknown key, a value the builder would reject) is *refused*, and the
caller reads that job with a real YAML parser and the general builder instead.
So the strict reader only ever decides cases whose outcome is certain, and it
produces what the general path would (the tests compare the two).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ferry.planner.model import USE_TYPES, Job, Use

if TYPE_CHECKING:  # pragma: no cover
    from ferry.planner.pegasus import _Reader

__all__ = [
    "DEP",
    "JOB",
    "apply_dep",
    "apply_job",
    "parse_dep",
    "parse_job",
    "plain",
    "scan",
]

JOB = re.compile(
    r"- type: job\n"
    r"(?:  namespace: ([^\n]*)\n)?"
    r"(?:  version: ([^\n]*)\n)?"
    r"  name: ([^\n]*)\n"
    r"  id: ([^\n]*)\n"
    r"(?:  stdin: ([^\n]*)\n)?"
    r"(?:  stdout: ([^\n]*)\n)?"
    r"(?:  stderr: ([^\n]*)\n)?"
    r"(?:  nodeLabel: ([^\n]*)\n)?"
    r"  arguments:(?: \[\]\n|\n((?:  - [^\n]*\n)*))"
    r"  uses:(?: \[\]\n|\n((?:  - lfn: [^\n]*\n(?:    [^\n]*\n)*)*))"
    r"(  profiles:\n(?:    [^\n]*\n)+)?"
    r"(  metadata:\n(?:    [^\n]*\n)+)?"
)
DEP = re.compile(r"- id: ([^\n]*)\n  children:(?: \[\]\n|\n((?:  - [^\n]*\n)*))")

_WORDS = frozenset(
    "yes Yes YES no No NO true True TRUE false False FALSE on On ON off Off OFF"
    " null Null NULL ~".split()
)
_BOOLS = {"true": True, "false": False}
_BAD_FIRST = frozenset("?:,[]{}#&*!|>\"%@`<=~ \t'")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")
_ID = re.compile(r"[-0-9a-zA-Z_]+")
_DEFAULTS = (True, True, False, False, False)
# the lines of a use entry after its lfn: line -> (-1, type) or (flag index, value)
_USE_LINES: dict[str, tuple[int, object]] = {f"type: {k}": (-1, v) for k, v in USE_TYPES.items()}
for _i, _flag in enumerate(("stageOut", "registerReplica", "optional", "executable", "bypass")):
    for _text, _b in (("true", True), ("false", False)):
        _USE_LINES[f"{_flag}: {_text}"] = (_i, _b)


def plain(tok: str) -> str | None:
    """The string a YAML parser reads from ``tok`` (a whole scalar on one line), when
    that is certain and a string or a number whose text is ``tok``; else None.

    The caller has checked that the text holds no `` #``, tab or CR (:func:`clean`).
    """
    if not tok:
        return None
    c = tok[0]
    if c == "'":
        if len(tok) < 2 or tok[-1] != "'":
            return None
        inner = tok[1:-1]
        if "'" in inner:
            if "'" in inner.replace("''", ""):
                return None
            inner = inner.replace("''", "'")
        return inner or None  # '' is never a valid name, id or LFN: the builder says so
    if c in _BAD_FIRST:
        return None
    last = tok[-1]
    if last == " " or last == ":" or ": " in tok:
        return None
    if c in "0123456789+." or (c == "-" and len(tok) > 1 and tok[1] in "0123456789."):
        # a number reads back as its own text only when written the plain way
        if not _NUMBER.fullmatch(tok):
            return None
        value: object = float(tok) if "." in tok else int(tok)
        return tok if str(value) == tok else None
    if c == "-" and (len(tok) == 1 or tok[1] == " "):
        return None
    if tok in _WORDS:
        return None
    return tok


def clean(item: str) -> bool:
    """No comments, tabs or CRs anywhere in an item: :func:`plain` need not look for them."""
    return " #" not in item and "\t" not in item and "\r" not in item


def _value(tok: str) -> object:
    """A profile or metadata value: a plain number, true/false, or a string (None: refuse)."""
    b = _BOOLS.get(tok)
    if b is not None:
        return b
    c = tok[:1]
    if c and (c in "0123456789" or (c == "-" and tok[1:2].isdigit())):
        if not _NUMBER.fullmatch(tok):
            return None
        return float(tok) if "." in tok else int(tok)
    return plain(tok)


def _key(tok: str) -> str | None:
    """A mapping key: a plain string that no parser reads as a number."""
    if not tok or tok[0] in "0123456789+-.":
        return None
    return plain(tok)


def _mapping2(block: str) -> dict | None:
    """``profiles:`` lines: ``    ns:`` then ``      key: value``."""
    out: dict = {}
    current: dict | None = None
    for line in block.split("\n")[1:-1]:
        if line[4:5] != " ":
            if line[-1] != ":":
                return None
            ns = _key(line[4:-1])
            if ns is None or ns in out:
                return None
            current = out[ns] = {}
        else:
            if current is None or line[4:6] != "  " or line[6:7] in (" ", ""):
                return None
            key, sep, tok = line[6:].partition(": ")
            k = _key(key)
            v = _value(tok) if sep else None
            if k is None or v is None or k in current:
                return None
            current[k] = v
    if not out or any(not v for v in out.values()):
        return None
    return out


def _mapping1(block: str) -> dict | None:
    """``metadata:`` lines: ``    key: value``."""
    out: dict = {}
    for line in block.split("\n")[1:-1]:
        if line[4:5] in (" ", ""):
            return None
        key, sep, tok = line[4:].partition(": ")
        k = _key(key)
        v = _value(tok) if sep else None
        if k is None or v is None or k in out:
            return None
        out[k] = v
    return out or None


def parse_job(m: re.Match) -> tuple | None:
    """The job in ``m`` (a :data:`JOB` match) as a record for :func:`apply_job`; None to refuse.

    Pure: it touches no model, so it can run in another process.
    """
    ns_t, ver_t, name_t, id_t, in_t, out_t, err_t, label_t, args_t, uses_t, prof_t, md_t = (
        m.groups()
    )
    if not clean(m.group(0)):
        return None
    jid = plain(id_t)
    if jid is None or not _ID.fullmatch(jid):
        return None
    name = plain(name_t)
    if name is None:
        return None
    namespace = version = None
    if ns_t is not None:
        namespace = plain(ns_t)
        if namespace is None:
            return None
    if ver_t is not None:
        version = plain(ver_t)
        if version is None:
            return None
    args: list[str] = []
    if args_t:
        for line in args_t[:-1].split("\n"):
            a = plain(line[4:])
            if a is None:
                return None
            args.append(a)
    stdio = None
    if in_t is not None or out_t is not None or err_t is not None:
        stdio = [None, None, None]
        for k, t in enumerate((in_t, out_t, err_t)):
            if t is not None:
                v = plain(t)
                if v is None:
                    return None
                stdio[k] = v  # type: ignore[call-overload]
    label = None
    if label_t is not None:
        label = plain(label_t)
        if label is None:
            return None
    prof = None
    if prof_t is not None:
        prof = _mapping2(prof_t)
        if prof is None:
            return None
    md = None
    if md_t is not None:
        md = _mapping1(md_t)
        if md is None:
            return None
    uses = []
    if uses_t:
        for entry in uses_t[9:-1].split("\n  - lfn: "):
            lines = entry.split("\n    ")
            lfn = plain(lines[0])
            if lfn is None:
                return None
            t = None
            flags = None
            size = None
            for line in lines[1:]:
                known = _USE_LINES.get(line)
                if known is not None:
                    i, v = known
                    if i < 0:
                        t = v
                    elif v is not _DEFAULTS[i]:
                        if flags is None:
                            flags = [True, True, False, False, False]
                        flags[i] = v
                    continue
                key, sep, tok = line.partition(": ")
                if key != "size" or not _NUMBER.fullmatch(tok) or "." in tok:
                    return None
                size = int(tok)
            if t is None:
                return None
            uses.append((lfn, t, flags, size))
    return (jid, name, namespace, version, args, uses, stdio, prof, label, md)


def apply_job(r: _Reader, rec: tuple) -> bool:
    """Add the job of a :func:`parse_job` record to the reader's workflow."""
    jid, name, namespace, version, args, parsed, stdio, prof, label, md = rec
    names = r.names
    name = names.setdefault(name, name)
    if namespace is not None:
        namespace = names.setdefault(namespace, namespace)
    if version is not None:
        version = names.setdefault(version, version)
    if prof is not None:
        prof = r._profiles(prof, jid) or None
    wf = r.wf
    lfn_index = wf.lfn_index
    lfns = wf.lfns
    uses = []
    for lfn, t, flags, size in parsed:
        idx = lfn_index.get(lfn)
        if idx is None:
            idx = len(lfns)
            lfns.append(lfn)
            lfn_index[lfn] = idx
        if flags is None and size is None:
            uses.append(Use(idx, t))
        else:
            f = flags or _DEFAULTS
            uses.append(Use(idx, t, f[0], f[1], f[2], f[3], f[4], size))
    if stdio is not None:
        r.add(jid, name, namespace, version, args, uses, stdio, prof, label, "job", md)
        return True
    # r.add without the stdio part, inline: this runs a million times
    job_index = wf.job_index
    if jid in job_index:
        r._duplicate(jid)
    jobs = wf.jobs
    job_index[jid] = len(jobs)
    jobs.append(
        Job(jid, name, namespace, version, args, uses, None, None, None, prof, label, "job", md)
    )
    wf.children.append([])
    return True


def parse_dep(m: re.Match) -> tuple | None:
    """The entry in ``m`` (a :data:`DEP` match) as ``(parent, [children])``; None to refuse."""
    if not clean(m.group(0)):
        return None
    pid = plain(m.group(1))
    if pid is None:
        return None
    kids_t = m.group(2)
    kids = []
    if kids_t:
        for line in kids_t[:-1].split("\n"):
            c = plain(line[4:])
            if c is None:
                return None
            kids.append(c)
    return (pid, kids)


def apply_dep(r: _Reader, rec: tuple) -> bool:
    """Add the edges of a :func:`parse_dep` record; False (nothing added) for unknown ids."""
    job_index = r.wf.job_index
    pid, kids = rec
    p = job_index.get(pid)
    if p is None:
        return False  # the general path reports it, with its line
    out = []
    for c in kids:
        ci = job_index.get(c)
        if ci is None:
            return False
        out.append(ci)
    r.wf.children[p].extend(out)
    return True


def scan(text: str, bs: int, be: int, pattern: re.Pattern, parse: Any) -> list[tuple]:
    """Parse the items of ``text[bs:be]`` (items start with ``-`` at column 0).

    Each item becomes its record, or ``(None, start, end)`` when refused.
    """
    match = pattern.match
    find = text.find
    out: list[tuple] = []
    pos = bs
    while pos < be:
        nxt = find("\n-", pos, be)
        end = be if nxt < 0 else nxt + 1
        m = match(text, pos, end)
        rec = parse(m) if m is not None and m.end() == end else None
        out.append(rec if rec is not None else (None, pos, end))
        pos = end
    return out
