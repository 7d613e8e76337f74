"""Pegasus workflows written as JSON (``wf.write("x.json")``), read with msgspec.

The top level is decoded with its values left raw; each job is decoded on its own
and turned into the model at once, so a million jobs never exist as dicts together.
Errors point at lines: msgspec's byte offset for syntax errors, and for a bad value
the raw text of its job (or top-level value) composed again with PyYAML.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from ferry.planner.model import Workflow
from ferry.planner.yamlread import Invalid, locate
from ferry.plugins.errors import ConfigError

__all__ = ["read_json"]

_BYTE = re.compile(r"\(byte (\d+)\)")
_RAW_TOP = dict[str, msgspec.Raw]
_RAW_LIST = list[msgspec.Raw]


def read_json(buf: bytes, source: str) -> Workflow | None:
    """The workflow in ``buf``, or None when it is not JSON (then YAML decides)."""
    try:
        top = msgspec.json.decode(buf, type=_RAW_TOP)
    except msgspec.DecodeError:
        return None
    except msgspec.ValidationError as exc:  # valid JSON, but not an object
        raise ConfigError(f"{source}: a workflow must be a mapping ({exc})") from None
    from ferry.planner.pegasus import _Reader

    reader = _Reader(source, "")
    small: dict[str, Any] = {}
    for k, raw in top.items():
        if k in ("jobs", "jobDependencies"):
            continue
        small[k] = msgspec.json.decode(raw)

    def fail(exc: Invalid, raw: msgspec.Raw | None, start: int = 0) -> ConfigError:
        return ConfigError(_located(source, buf, raw, exc, start))

    try:
        reader.header(small, has_jobs="jobs" in top)
    except Invalid as exc:
        key = str(exc.path[0]) if exc.path else None
        raw = top.get(key) if key else None
        return_path = Invalid(exc.message, exc.path[1:]) if raw is not None else exc
        raise fail(return_path, raw) from None

    decode = msgspec.json.decode
    jobs_raw = top.get("jobs")
    if jobs_raw is not None:
        try:
            items = msgspec.json.decode(jobs_raw, type=_RAW_LIST)
        except msgspec.ValidationError:
            raise fail(Invalid("jobs must be a list", ()), jobs_raw) from None
        jobs_at = _offset(buf, jobs_raw, 0)

        def job_line(i: int) -> int | None:
            pos = jobs_at
            for r in items[: i + 1]:
                pos = buf.find(bytes(r), pos)
                if pos < 0:
                    return None
                if r is items[i]:
                    break
                pos += len(bytes(r))
            return buf.count(b"\n", 0, pos) + 1

        reader.job_lines = job_line
        job = reader.job
        for i, r in enumerate(items):
            try:
                job(decode(r))
            except Invalid as exc:
                line = job_line(i) or 1
                raise ConfigError(
                    _located_text(source, bytes(r).decode("utf-8"), exc, line - 1)
                ) from None
        del items
    deps_raw = top.get("jobDependencies")
    if deps_raw is not None:
        try:
            deps = msgspec.json.decode(deps_raw, type=_RAW_LIST)
        except msgspec.ValidationError:
            raise fail(Invalid("jobDependencies must be a list", ()), deps_raw) from None
        pos = _offset(buf, deps_raw, 0)
        line0 = buf.count(b"\n", 0, pos)
        for r in deps:
            b = bytes(r)
            found = buf.find(b, pos)
            if found >= 0:
                line0 += buf.count(b"\n", pos, found)
                pos = found
            try:
                reader.dependency(decode(r), (), b.decode("utf-8"), line0)
            except Invalid as exc:
                raise ConfigError(_located_text(source, b.decode("utf-8"), exc, line0)) from None
            line0 += b.count(b"\n")
            pos += len(b)
    try:
        reader.catalogs(small)
    except Invalid as exc:
        key = str(exc.path[0]) if exc.path else None
        raw = top.get(key) if key else None
        raise fail(Invalid(exc.message, exc.path[1:]) if raw is not None else exc, raw) from None
    return reader.finish()


def _offset(buf: bytes, raw: msgspec.Raw, start: int) -> int:
    pos = buf.find(bytes(raw), start)
    return max(pos, 0)


def _located(source: str, buf: bytes, raw: msgspec.Raw | None, exc: Invalid, start: int) -> str:
    if raw is None:
        return f"{source}: {exc.message}"
    pos = _offset(buf, raw, start)
    line0 = buf.count(b"\n", 0, pos)
    return _located_text(source, bytes(raw).decode("utf-8"), exc, line0)


def _located_text(source: str, text: str, exc: Invalid, line0: int) -> str:
    where = locate(text, exc.path)
    if where is None:
        return f"{source}:{line0 + 1}: {exc.message}"
    return f"{source}:{where[0] + line0}:{where[1]}: {exc.message}"


def json_syntax_line(buf: bytes, message: str) -> int | None:
    """The line of a msgspec syntax error, from the byte offset in its message."""
    m = _BYTE.search(message)
    return buf.count(b"\n", 0, int(m.group(1))) + 1 if m else None
