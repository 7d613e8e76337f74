"""A cache of what the installed plugins declare, so a job's start-up skips pluggy.

Finding the plugins means importing each entry point's module, pluggy (about
15 ms with ``inspect``, which it imports) and calling every plugin's
``ferry_protocols()`` hook. The answer only changes when the installed
plugins change, and the worker asks it once per job, on every node. So a
discovery that went cleanly is saved as JSON, and the next process with the
same plugins reads it back instead.

The key covers what can change the answer: the ``ferry`` entry points read
from the installed metadata (names, targets, distributions), the path, size
and modification time of each entry point's module file, ferry's plugin API
version and the Python version. ``ferry plugins`` always does the full
discovery and rewrites the file. A discovery with any failure (a plugin that
cannot be imported, a hook that raises) is never cached: its report must stay
exact. A hook must therefore depend on the installed code only, not on the
environment (docs/plugins.md says so).

The file is ``plugins-<key>.json`` under ``$FERRY_CACHE_DIR``, else
``$XDG_CACHE_HOME/ferry``, else ``~/.cache/ferry``. ``FERRY_PLUGIN_CACHE=0``
turns the cache off. It is written atomically; a cache that cannot be
written (no home directory on a node, a read-only file system) is skipped
without a word, and one that cannot be read is ignored.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Sequence

import msgspec

from .entrypoints import EntryPoint
from .protocol import ProtocolInfo

__all__ = ["CachedPlugin", "cache_file", "read", "write"]

#: bump when the file's layout changes
_FORMAT = 1


class CachedPlugin(msgspec.Struct):
    """One plugin as its discovery found it."""

    name: str
    dist: str
    protocols: list[ProtocolInfo]


class _File(msgspec.Struct):
    format: int
    plugins: list[CachedPlugin]


def _cache_dir() -> str | None:
    if os.environ.get("FERRY_PLUGIN_CACHE", "1").strip().lower() in ("0", "no", "off", "false"):
        return None
    explicit = os.environ.get("FERRY_CACHE_DIR")
    if explicit:
        return explicit
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return os.path.join(xdg, "ferry")
    home = os.environ.get("HOME")
    return os.path.join(home, ".cache", "ferry") if home else None


def _module_file(module: str) -> str:
    """Where an entry point's module lives, found without importing the module itself."""
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        raise LookupError(module)
    return spec.origin


def cache_file(entry_points: Sequence[EntryPoint], api_version: int) -> str | None:
    """The cache file for this set of plugins, or None when there can be none."""
    base = _cache_dir()
    if base is None:
        return None
    digest = hashlib.sha256()
    digest.update(f"{_FORMAT} {api_version} {sys.version_info[:2]}\n".encode())
    files: dict[str, str] = {}  # by module: the built-ins share one
    try:
        for ep in entry_points:
            module = ep.value.partition(":")[0].strip()
            if module not in files:
                origin = _module_file(module)
                st = os.stat(origin)
                files[module] = f"{origin} {st.st_size} {st.st_mtime_ns}"
            digest.update(f"{ep.name}={ep.value} {ep.dist} {files[module]}\n".encode())
    except Exception:  # an entry point that cannot be located: the full discovery reports it
        return None
    return os.path.join(base, f"plugins-{digest.hexdigest()[:32]}.json")


def read(path: str) -> list[CachedPlugin] | None:
    """The cached discovery, or None when the file is missing or unreadable."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        return msgspec.json.decode(data, type=_File).plugins
    except (OSError, msgspec.MsgspecError):
        return None


def write(path: str, plugins: list[CachedPlugin]) -> None:
    """Save a discovery atomically; any error leaves things as they were."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(msgspec.json.encode(_File(_FORMAT, plugins)))
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
