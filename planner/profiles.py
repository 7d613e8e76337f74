"""Profiles in force for a job: layers merged in Pegasus's order, typed look-ups.

Pegasus documents the priority of profile sources, highest first, as
transformation catalog, site catalog, job (abstract workflow), properties.
ferry merges, lowest first (a later layer overrides a key of an earlier one):

1. properties (``env.X``, ``condor.X``, ``dagman.X``, ``pegasus.X`` keys),
2. the workflow's ``profiles``,
3. the job's ``profiles``,
4. the compute site's ``profiles`` (site catalog),
5. the transformation's ``profiles``, then its chosen site entry's, then its
   container's.

``dagman`` keys are compared without case (``retry`` and ``RETRY`` are one key),
as Pegasus upper-cases them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ferry.plugins.errors import ConfigError

from .model import Profiles

__all__ = [
    "NAMESPACES",
    "from_properties",
    "get",
    "get_float",
    "get_int",
    "merge",
]

NAMESPACES = ("env", "condor", "globus", "dagman", "pegasus", "hints", "selector", "stat")


def _norm(ns: str, key: str) -> str:
    return key.lower() if ns == "dagman" else key


def from_properties(props: dict[str, str]) -> Profiles:
    """The profile-shaped properties: ``ns.key = value`` for the profile namespaces."""
    out: Profiles = {}
    for name, value in props.items():
        ns, sep, key = name.partition(".")
        if sep and key and ns in NAMESPACES:
            out.setdefault(ns, {})[_norm(ns, key)] = value
    return out


def merge(layers: Iterable[Profiles | None]) -> Profiles:
    """Merge profile layers, lowest priority first; returns a new mapping."""
    out: Profiles = {}
    for layer in layers:
        if not layer:
            continue
        for ns, kv in layer.items():
            if not kv:
                continue
            target = out.setdefault(ns, {})
            if ns == "dagman":
                for k, v in kv.items():
                    target[k.lower()] = v
            else:
                target.update(kv)
    return out


def get(profiles: Profiles, ns: str, key: str) -> object | None:
    kv = profiles.get(ns)
    if not kv:
        return None
    return kv.get(_norm(ns, key))


def get_float(profiles: Profiles, ns: str, key: str, *, where: str = "") -> float | None:
    """A numeric profile (``"2"``, ``2``, ``"1.5"``); a non-number is a planning error."""
    v = get(profiles, ns, key)
    if v is None or v == "":
        return None
    if isinstance(v, bool):
        raise ConfigError(f"{where}profile {ns}.{key} must be a number, not {v!r}")
    if isinstance(v, (int, float)):
        return float(v)
    try:
        return float(str(v).strip())
    except ValueError:
        raise ConfigError(f"{where}profile {ns}.{key} must be a number, not {v!r}") from None


_SIZE_UNITS = {"": 1, "k": 1, "m": 1024, "g": 1024**2, "t": 1024**3}  # in KiB


def get_size(
    profiles: Profiles, ns: str, key: str, *, unit: str, where: str = ""
) -> float | None:
    """A size profile in MiB, read as HTCondor reads ``request_memory``/``request_disk``:
    a number in ``unit`` (``"m"``: MiB, ``"k"``: KiB), or with a K/M/G/T suffix (an
    optional B, any case, blanks allowed: ``"2 GB"``, ``"512M"``)."""
    v = get(profiles, ns, key)
    if v is None or v == "":
        return None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v) * _SIZE_UNITS[unit] / 1024
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)[bB]?\s*", str(v))
    if m is None or isinstance(v, bool):
        raise ConfigError(
            f"{where}profile {ns}.{key} must be a size (a number, or with K, M, G or T),"
            f" not {v!r}"
        )
    return float(m.group(1)) * _SIZE_UNITS[(m.group(2) or unit).lower()] / 1024


def get_int(profiles: Profiles, ns: str, key: str, *, where: str = "") -> int | None:
    v = get_float(profiles, ns, key, where=where)
    return None if v is None else int(v)
