"""The ``ferry`` entry points of the installed distributions, found cheaply.

:func:`importlib.metadata.entry_points` is the standard way, but importing
``importlib.metadata`` (with ``email``, ``zipfile`` and ``csv``) and parsing
every distribution's metadata costs 30 to 60 ms, and the worker pays its
start-up on every job. The entry points are plain text files, so this module
reads them directly: each ``*.dist-info`` or ``*.egg-info`` directory on
``sys.path``, in order, and its ``entry_points.txt``. The first distribution
of a name wins, as with ``importlib.metadata``. When ``sys.path`` holds
anything but directories (a zip file, an egg), it falls back to
``importlib.metadata``, which knows how to read those.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import NamedTuple

__all__ = ["EntryPoint", "find_entry_points"]


class EntryPoint(NamedTuple):
    """``name = value`` in a distribution's ``[group]``; ``value`` is ``module[:attr]``."""

    name: str
    value: str
    dist: str

    def load(self) -> object:
        """Import the module and follow the attribute path, as ``importlib.metadata`` does."""
        import importlib

        module_name, _, attrs = self.value.partition(":")
        obj: object = importlib.import_module(module_name.strip())
        for attr in filter(None, attrs.strip().split(".")):
            obj = getattr(obj, attr)
        return obj


def find_entry_points(group: str) -> list[EntryPoint]:
    """Every entry point of ``group``, distributions in ``sys.path`` order."""
    if not all(os.path.isdir(p or ".") for p in sys.path if os.path.exists(p or ".")):
        return _from_importlib(group)
    found: list[EntryPoint] = []
    seen: set[str] = set()
    for meta_dir in _metadata_dirs():
        stem = os.path.basename(meta_dir).rpartition(".")[0]
        key = _normalize(stem.partition("-")[0])
        if key in seen:
            continue
        seen.add(key)
        try:
            with open(os.path.join(meta_dir, "entry_points.txt"), encoding="utf-8") as f:
                text = f.read()
        except OSError:
            continue
        pairs = _section(text, group)
        if pairs:
            dist = _dist_name(meta_dir) or stem.partition("-")[0]
            found.extend(EntryPoint(name, value, dist) for name, value in pairs)
    return found


def _metadata_dirs() -> Iterator[str]:
    for entry in sys.path:
        path = entry or "."
        try:
            names = sorted(os.listdir(path))
        except OSError:
            continue
        for name in names:
            if name.endswith((".dist-info", ".egg-info")):
                yield os.path.join(path, name)


def _normalize(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


def _section(text: str, group: str) -> list[tuple[str, str]]:
    """The ``name = value`` pairs under ``[group]`` in an INI-style entry_points.txt."""
    pairs: list[tuple[str, str]] = []
    inside = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            inside = line[1:-1].strip() == group
            continue
        if inside:
            name, sep, value = line.partition("=")
            if sep:
                pairs.append((name.strip(), value.strip()))
    return pairs


def _dist_name(meta_dir: str) -> str | None:
    """The ``Name:`` header of the distribution's metadata (its spelling, not the file's)."""
    for fname in ("METADATA", "PKG-INFO"):
        try:
            with open(os.path.join(meta_dir, fname), encoding="utf-8") as f:
                for line in f:
                    if line.startswith("Name:"):
                        return line[5:].strip()
                    if not line.strip():
                        break
        except OSError:
            continue
    return None


def _from_importlib(group: str) -> list[EntryPoint]:
    from importlib.metadata import entry_points

    return [
        EntryPoint(ep.name, ep.value, ep.dist.name if ep.dist is not None else "?")
        for ep in entry_points(group=group)
    ]
