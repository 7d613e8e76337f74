"""Protocol settings: one dataclass of tunables per plugin, filled from one place.

A plugin declares its tunables as a frozen dataclass with defaults; a field is
set from ``context.settings["<prefix>.<name>"]`` (``ferry transfer --set``, the
job spec), else from ``$FERRY_<PREFIX>_<NAME>``, else keeps its default. Fields
typed ``bool`` take yes/no/true/false/1/0/on/off, fields marked
``field(metadata={"size": True})`` take sizes such as ``8M``/``8MiB``/``512k``,
other fields are converted by their type (``int``, ``float``, ``str``). A bad
value is a :class:`ConfigError` naming the setting.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, TypeVar

from .errors import ConfigError
from .protocol import ProtocolContext

__all__ = ["check_keys", "load_settings", "parse_bool", "parse_size", "setting"]

T = TypeVar("T")

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)(?:i?[bB])?\s*")


def parse_size(text: str) -> int:
    """``8388608``, ``8M``, ``8MiB``, ``512k``, ``1G`` -> bytes (binary units)."""
    m = _SIZE.fullmatch(text)
    if m is None:
        raise ValueError(f"not a size: {text!r}")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]
    return int(float(m.group(1)) * scale)


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def setting(context: ProtocolContext, prefix: str, name: str) -> str | None:
    """The raw value of ``<prefix>.<name>``: the context's settings, else the environment."""
    raw = context.settings.get(f"{prefix}.{name}")
    if raw is None:
        raw = os.environ.get(f"FERRY_{prefix.upper()}_{name.upper()}")
    return None if raw is None or raw == "" else str(raw)


def check_keys(context: ProtocolContext, prefix: str, names: set[str]) -> None:
    """A ``<prefix>.<name>`` in the context's settings that is none of ``names`` is a
    :class:`ConfigError` naming the known ones (a misspelt ``--set`` would otherwise
    change nothing)."""
    for key in context.settings:
        head, dot, name = key.partition(".")
        if dot and head == prefix and name not in names:
            raise ConfigError(
                f"{key}: no such setting (the {prefix} settings: {', '.join(sorted(names))})"
            )


def load_settings(cls: type[T], context: ProtocolContext, prefix: str) -> T:
    """An instance of the dataclass ``cls`` with every field found for ``prefix`` set.

    A ``<prefix>.<name>`` in the context's settings that names no field is a
    :class:`ConfigError` (a misspelt ``--set`` would otherwise change nothing)."""
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    check_keys(context, prefix, {f.name for f in fields})
    values: dict[str, Any] = {}
    for f in fields:
        raw = setting(context, prefix, f.name)
        if raw is None:
            continue
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        try:
            if f.metadata.get("size"):
                values[f.name] = parse_size(raw)
            elif kind == "bool":
                values[f.name] = parse_bool(raw)
            elif kind == "int":
                values[f.name] = int(raw)
            elif kind == "float":
                values[f.name] = float(raw)
            else:
                values[f.name] = raw
        except ValueError as exc:
            raise ConfigError(f"{prefix}.{f.name}: {exc}") from None
    return cls(**values)
