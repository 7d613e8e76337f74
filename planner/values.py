"""Checks and conversions of parsed YAML values, shared by the workflow and catalog readers.

Each raises :class:`~ferry.planner.yamlread.Invalid` with the path of the bad value,
which the caller turns into a ``file:line:col: message`` error.
"""

from __future__ import annotations

from typing import Any

from ferry.planner.model import Profiles
from ferry.planner.yamlread import Invalid

__all__ = [
    "as_bool",
    "as_int",
    "as_list",
    "as_map",
    "as_str",
    "opt_str",
    "profiles",
    "sha256_of",
    "type_name",
]


def type_name(v: object) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, dict):
        return "a mapping"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, (int, float)):
        return "a number"
    return "a string" if isinstance(v, str) else type(v).__name__


def as_str(v: Any, what: str, path: tuple[object, ...]) -> str:
    """A string; numbers become their text (``version: 1.0`` reads as ``"1.0"``)."""
    t = type(v)
    if t is str:
        if not v:
            raise Invalid(f"{what} is empty", path)
        return v
    if t is int or t is float:
        return str(v)
    raise Invalid(f"{what} must be a string, not {type_name(v)}", path)


def opt_str(d: dict, key: str, what: str, path: tuple[object, ...]) -> str | None:
    v = d.get(key)
    if v is None:
        return None
    return as_str(v, what, (*path, key))


def as_bool(v: Any, what: str, path: tuple[object, ...]) -> bool:
    if type(v) is bool:
        return v
    raise Invalid(f"{what} must be true or false, not {type_name(v)} {v!r}", path)


def as_int(v: Any, what: str, path: tuple[object, ...]) -> int:
    if type(v) is int:
        return v
    if type(v) is str:
        try:
            return int(v.strip())
        except ValueError:
            pass
    raise Invalid(f"{what} must be an integer, not {type_name(v)} {v!r}", path)


def as_map(v: Any, what: str, path: tuple[object, ...]) -> dict:
    if type(v) is dict:
        return v
    raise Invalid(f"{what} must be a mapping, not {type_name(v)}", path)


def as_list(v: Any, what: str, path: tuple[object, ...]) -> list:
    if type(v) is list:
        return v
    raise Invalid(f"{what} must be a list, not {type_name(v)}", path)


def sha256_of(v: Any, what: str, path: tuple[object, ...]) -> str | None:
    """The ``checksum: {sha256: HEX}`` of a replica, transformation or container."""
    if v is None:
        return None
    d = as_map(v, f"{what} checksum", path)
    if not d:
        return None
    unknown = [k for k in d if k != "sha256"]
    if unknown:
        raise Invalid(f"{what} checksum: only sha256 is supported, not {unknown[0]!r}", path)
    s = as_str(d["sha256"], f"{what} checksum.sha256", (*path, "sha256")).lower()
    if len(s) != 64 or any(c not in "0123456789abcdef" for c in s):
        raise Invalid(f"{what} checksum.sha256 is not 64 hex digits: {s!r}", (*path, "sha256"))
    return s


def profiles(v: Any, what: str, path: tuple[object, ...]) -> Profiles:
    """``{namespace: {key: value}}`` with namespaces lower-cased and dagman keys too.

    Values stay as read (string, number or boolean). Two spellings of one namespace
    (``ENV`` and ``env``) are merged.
    """
    if v is None:
        return {}
    d = as_map(v, f"{what} profiles", path)
    out: Profiles = {}
    for ns, kv in d.items():
        if kv is None:
            continue
        ns_name = as_str(ns, f"{what} profile namespace", path).lower()
        sub = as_map(kv, f"{what} profiles.{ns_name}", (*path, ns))
        target = out.setdefault(ns_name, {})
        for k, val in sub.items():
            key = as_str(k, f"{what} profile key", (*path, ns))
            if ns_name == "dagman":
                key = key.lower()
            if val is None or isinstance(val, (dict, list)):
                raise Invalid(
                    f"{what} profile {ns_name}.{key} must be a string or number,"
                    f" not {type_name(val)}",
                    (*path, ns, k),
                )
            target[key] = val
    return out
