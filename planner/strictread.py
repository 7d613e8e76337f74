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

It has two tiers. :func:`scan_jobs` and :func:`scan_deps` first run one regular
expression over a whole batch (:data:`FAST_JOB`, :data:`FAST_DEP`) that accepts
only items whose every value is a *token*: letters, digits and ``_./-``,
starting with a letter, ``_``, ``/`` or ``-`` and a letter, and not a short word
that starts like a YAML 1.1 boolean or null (``yes``, ``No``, ``off``, ``null``,
... and, to keep the test cheap, every word of up to five letters starting with
one of ``yYnNtTfFoO``). Every YAML parser reads such a token as the string it
is, so these items need no check at all. The items in between go through
:func:`parse_job` / :func:`parse_dep`, which check each scalar (:func:`plain`),
and what those refuse goes to a YAML parser.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ferry.planner.model import USE_TYPES, Job, Use

if TYPE_CHECKING:  # pragma: no cover
    from ferry.planner.pegasus import _Reader

__all__ = [
    "DEP",
    "FAST_DEP",
    "FAST_JOB",
    "JOB",
    "apply_dep",
    "apply_job",
    "parse_dep",
    "parse_job",
    "plain",
    "scan",
    "scan_deps",
    "scan_jobs",
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

# -- the first tier: items made of tokens only ---------------------------------------

#: not a word a YAML 1.1 parser could read as a boolean or null (and some more)
_NOT_WORD = r"(?![yYnNtTfFoO][a-zA-Z]{0,4}\n)"
#: a scalar that every YAML parser reads as itself, a string (see the module doc)
#: (possessive: a token always runs to its line's end, so no backtracking into it)
_TOKEN = _NOT_WORD + r"(?:[A-Za-z_/]|-(?=[A-Za-z_]))[A-Za-z0-9_./-]*+"
#: a token that is also a valid job id
_ID_TOKEN = _NOT_WORD + r"[A-Za-z_][-0-9A-Za-z_]*+"
_USE_FLAG_LINE = (
    r"    (?:(?:stageOut|registerReplica|optional|executable|bypass): (?:true|false)"
    r"|size: -?(?:0|[1-9][0-9]*))\n"
)
FAST_JOB = re.compile(
    r"^- type: job\n"
    rf"(?:  namespace: ({_TOKEN})\n)?"
    rf"(?:  version: ({_TOKEN})\n)?"
    rf"  name: ({_TOKEN})\n"
    rf"  id: ({_ID_TOKEN})\n"
    rf"(?:  stdin: ({_TOKEN})\n)?"
    rf"(?:  stdout: ({_TOKEN})\n)?"
    rf"(?:  stderr: ({_TOKEN})\n)?"
    rf"(?:  nodeLabel: ({_TOKEN})\n)?"
    rf"  arguments:(?: \[\]\n|\n((?:  - {_TOKEN}\n)*))"
    r"  uses:(?: \[\]\n|\n("
    rf"(?:  - lfn: {_TOKEN}\n    type: (?:input|output|inout|checkpoint|none)\n"
    rf"(?:{_USE_FLAG_LINE})*)*))"
    r"(?=-|\Z)",
    re.M,
)
_FAST_USE = re.compile(r"  - lfn: ([^\n]*)\n    type: ([a-z]*)\n((?:    [^\n]*\n)*)")
FAST_DEP = re.compile(
    rf"^- id: ({_ID_TOKEN})\n  children:(?: \[\]\n|\n((?:  - {_ID_TOKEN}\n)*))(?=-|\Z)",
    re.M,
)

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


def apply_job(r: _Reader, entries: list[tuple], i: int) -> int:
    """Add the jobs of :func:`parse_job` records ``entries[i:]`` to the reader's workflow,
    up to the first refused one; return its index (``len(entries)``: all added)."""
    names = r.names
    wf = r.wf
    lfn_index = wf.lfn_index
    lfns = wf.lfns
    job_index = wf.job_index
    jobs = wf.jobs
    children = wf.children
    n = len(entries)
    while i < n:
        rec = entries[i]
        if rec[0] is None:  # refused: (None, start, end)
            return i
        jid, name, namespace, version, args, parsed, stdio, prof, label, md = rec
        i += 1
        name = names.setdefault(name, name)
        if namespace is not None:
            namespace = names.setdefault(namespace, namespace)
        if version is not None:
            version = names.setdefault(version, version)
        if prof is not None:
            prof = r._profiles(prof, jid) or None
        uses = []
        for lfn, t, flags, size in parsed:
            k = len(lfns)
            idx = lfn_index.setdefault(lfn, k)
            if idx == k:
                lfns.append(lfn)
            if flags is None and size is None:
                uses.append(Use(idx, t))
            else:
                f = flags or _DEFAULTS
                uses.append(Use(idx, t, f[0], f[1], f[2], f[3], f[4], size))
        if stdio is not None:
            r.add(jid, name, namespace, version, args, uses, stdio, prof, label, "job", md)
            continue
        # r.add without the stdio part, inline: this runs a million times
        k = len(jobs)
        if job_index.setdefault(jid, k) != k:  # one lookup in a table of a million ids
            r._duplicate(jid)
        jobs.append(
            Job(jid, name, namespace, version, args, uses, None, None, None, prof, label, "job", md)
        )
        children.append([])
    return i


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


def apply_dep(r: _Reader, entries: list[tuple], i: int) -> int:
    """Add the edges of :func:`parse_dep` records ``entries[i:]`` up to the first refused
    one, or one that names an unknown job (nothing of it added); return its index."""
    job_index = r.wf.job_index
    children = r.wf.children
    n = len(entries)
    while i < n:
        rec = entries[i]
        if rec[0] is None:  # refused: (None, start, end)
            return i
        pid, kids = rec
        p = job_index.get(pid)
        if p is None:
            return i  # the general path reports it, with its line
        out = list(map(job_index.get, kids))
        if None in out:
            return i
        children[p].extend(out)
        i += 1
    return i


_FLAG_BLOCKS: dict[str, tuple[list[bool] | None, int | None]] = {"": (None, None)}


def _flags(block: str) -> tuple[list[bool] | None, int | None]:
    """(flags, size) from the lines after a use's type (as :func:`parse_job` has them)."""
    hit = _FLAG_BLOCKS.get(block)
    if hit is not None:
        return hit
    flags = None
    size = None
    for line in block[4:-1].split("\n    "):
        known = _USE_LINES.get(line)
        if known is None:  # size: N (FAST_JOB let nothing else through)
            size = int(line[6:])
            continue
        i, v = known
        if v is not _DEFAULTS[i]:
            if flags is None:
                flags = [True, True, False, False, False]
            flags[i] = v
    if size is None and len(_FLAG_BLOCKS) < 1000:
        _FLAG_BLOCKS[block] = (flags, None)
    return flags, size


def _fast_job(groups: tuple, names: dict[str, str]) -> tuple:
    """The :func:`parse_job` record of a :data:`FAST_JOB` match's groups (an optional
    part absent is None from ``finditer``, "" from ``findall``: a token is never "")."""
    ns, ver, name, jid, stdin, stdout, stderr, label, args_t, uses_t = groups
    # one object per distinct name: marshal then sends it once per batch
    name = names.setdefault(name, name)
    stdio = None
    if stdin or stdout or stderr:
        stdio = [stdin or None, stdout or None, stderr or None]
    uses = []
    if uses_t:
        types = USE_TYPES
        for lfn, t, block in _FAST_USE.findall(uses_t):
            if block:
                flags, size = _flags(block)
                uses.append((lfn, types[t], flags, size))
            else:
                uses.append((lfn, types[t], None, None))
    return (
        jid,
        name,
        ns or None,
        ver or None,
        args_t[4:-1].split("\n  - ") if args_t else [],
        uses,
        stdio,
        None,
        label or None,
        None,
    )


def _all_items(found: list, text: str, bs: int, be: int) -> bool:
    """Whether the first tier matched every item of ``text[bs:be]`` (items start with
    "-" at a line start; a match is always one whole item, so counting is enough)."""
    return len(found) == text.count("\n-", bs, be) + 1


def scan_jobs(text: str, bs: int, be: int) -> list[tuple]:
    """:func:`scan` of jobs, with the token-only tier first."""
    names: dict[str, str] = {}
    found = FAST_JOB.findall(text, bs, be)
    if _all_items(found, text, bs, be):  # the common case: no positions needed
        return [_fast_job(g, names) for g in found]
    out: list[tuple] = []
    pos = bs
    for m in FAST_JOB.finditer(text, bs, be):
        s = m.start()
        if s != pos:  # whole items between: the checking tier
            out.extend(scan(text, pos, s, JOB, parse_job))
        out.append(_fast_job(m.groups(), names))
        pos = m.end()
    if pos < be:
        out.extend(scan(text, pos, be, JOB, parse_job))
    return out


def scan_deps(text: str, bs: int, be: int) -> list[tuple]:
    """:func:`scan` of jobDependencies entries, with the token-only tier first."""
    found = FAST_DEP.findall(text, bs, be)
    if _all_items(found, text, bs, be):
        return [(pid, kids[4:-1].split("\n  - ") if kids else []) for pid, kids in found]
    out: list[tuple] = []
    pos = bs
    for m in FAST_DEP.finditer(text, bs, be):
        s = m.start()
        if s != pos:
            out.extend(scan(text, pos, s, DEP, parse_dep))
        pid, kids = m.groups()
        out.append((pid, kids[4:-1].split("\n  - ") if kids else []))
        pos = m.end()
    if pos < be:
        out.extend(scan(text, pos, be, DEP, parse_dep))
    return out


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
