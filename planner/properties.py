"""Pegasus properties files (``pegasus.properties``): ``key = value`` lines.

The syntax is Java's properties format as far as Pegasus uses it: ``key = value``,
``key: value`` or ``key value``; ``#`` and ``!`` start comment lines; a line ending
in a backslash continues on the next. Later ones override earlier ones, as
pegasus-plan loads them (``CommonProperties.java``): ``~/.pegasusrc``, then
``./pegasus.properties``, then ``--conf FILE``, then environment variables
``_PEGASUS__X__Y`` (the property ``pegasus.x.y``: the leading ``_`` dropped,
lower-cased, ``__`` read as ``.``), then explicit overrides (``-D key=value``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ferry.plugins.errors import ConfigError

__all__ = ["load_properties", "parse_properties"]

DEFAULT_NAME = "pegasus.properties"
USER_NAME = ".pegasusrc"
#: environment variables that set properties (``_PEGASUS__CATALOG__REPLICA__FILE``)
ENV_PREFIX = "_PEGASUS"


def parse_properties(text: str, source: str = "<properties>") -> dict[str, str]:
    """Parse properties text into a dict (values stripped; later keys win)."""
    out: dict[str, str] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        first = i + 1
        i += 1
        if not line or line[0] in "#!":
            continue
        while _continues(line) and i < len(lines):
            line = line[:-1] + lines[i].strip()
            i += 1
        if _continues(line):
            line = line[:-1]
        key, value = _split(line)
        if not key:
            raise ConfigError(f"{source}:{first}: a property line with no key: {line!r}")
        out[key] = value
    return out


def _continues(line: str) -> bool:
    n = len(line) - len(line.rstrip("\\"))
    return n % 2 == 1


def _split(line: str) -> tuple[str, str]:
    for i, c in enumerate(line):
        if c in "=:":
            return line[:i].strip(), line[i + 1 :].strip()
        if c in " \t":
            rest = line[i:].lstrip()
            if rest[:1] in ("=", ":"):
                rest = rest[1:]
            return line[:i], rest.strip()
    return line, ""


def load_properties(
    cwd: str | Path | None = None,
    conf: str | Path | None = None,
    overrides: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The properties in force: ``~/.pegasusrc``, ``cwd/pegasus.properties``, ``conf``,
    the ``_PEGASUS*`` variables of ``environ`` (default ``os.environ``), ``overrides``.

    ``conf`` must exist when given; the other files are optional.
    """
    base = Path(cwd) if cwd is not None else Path(os.getcwd())
    env = os.environ if environ is None else environ
    props: dict[str, str] = {}
    home = env.get("HOME")
    user = Path(home) / USER_NAME if home else None
    if user is not None and user.is_file():
        props.update(_read(user))
    default = base / DEFAULT_NAME
    if default.is_file():
        props.update(_read(default))
    if conf is not None:
        path = Path(conf)
        if not path.is_absolute():
            path = base / path
        props.update(_read(path))
    for key, value in env.items():
        if key.startswith(ENV_PREFIX):
            props[key.removeprefix("_").lower().replace("__", ".")] = value
    if overrides:
        props.update({str(k): str(v) for k, v in overrides.items()})
    return props


def _read(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the properties file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason})") from None
    return parse_properties(text, str(path))
