"""Find protocol plugins, tell which work, and build protocols on first use.

Plugins come from the ``ferry`` entry-point group (built-in ones too) and from
objects passed in by the caller (tests, embedding applications). A plugin that
fails to import, or whose hook raises, is recorded with the reason and skipped:
the others keep working. A protocol whose library is missing stays listed as
unavailable, and only URLs of its schemes fail, with an install hint.
"""

from __future__ import annotations

import importlib
import threading
from typing import TYPE_CHECKING, NamedTuple

from . import declcache
from .entrypoints import find_entry_points
from .errors import FerryError, PluginError, PluginUnavailable, UnsupportedScheme
from .protocol import Capability, Protocol, ProtocolContext, ProtocolInfo

if TYPE_CHECKING:
    import pluggy

#: the entry-point group and pluggy project name (as in :mod:`.spec`, which imports pluggy)
PROJECT = "ferry"
#: :data:`ferry.plugins.spec.API_VERSION`, part of the declaration cache's key
API_VERSION = 1

__all__ = ["LoadFailure", "ProtocolEntry", "Registry"]


class LoadFailure(NamedTuple):
    """A plugin that could not be loaded, and why."""

    plugin: str
    source: str
    reason: str


class ProtocolEntry:
    """A declared protocol, with the plugin that declared it and whether it can run here.

    Whether the protocol's library is installed is looked up on first use of
    :attr:`unavailable`, so a process that never meets a scheme never searches
    for its library.
    """

    __slots__ = ("plugin", "distribution", "info", "_unavailable")

    _UNKNOWN = object()

    def __init__(self, plugin: str, distribution: str, info: ProtocolInfo) -> None:
        self.plugin = plugin
        self.distribution = distribution
        self.info = info
        self._unavailable: object = self._UNKNOWN

    @property
    def unavailable(self) -> str | None:
        """None when usable, else the reason (a missing library, with the pip extra)."""
        if self._unavailable is self._UNKNOWN:
            missing = _missing_modules(self.info)
            reason = None
            if missing:
                extra = self.info.extra
                # the extra is the declaring distribution's (ferry's for the built-ins)
                dist = self.distribution if self.distribution not in _NOT_DISTS else PROJECT
                hint = f"pip install '{dist}[{extra}]'" if extra else "install it"
                reason = f"{', '.join(missing)} is not installed ({hint})"
            self._unavailable = reason
        return self._unavailable  # type: ignore[return-value]

    @property
    def available(self) -> bool:
        return self.unavailable is None

    def __repr__(self) -> str:
        return f"ProtocolEntry({self.plugin!r}, {self.distribution!r}, {self.info.name!r})"


#: what :attr:`ProtocolEntry.distribution` holds for a plugin that is no installed distribution
_NOT_DISTS = frozenset({"(in process)", "?"})


def _missing_modules(info: ProtocolInfo) -> list[str]:
    import importlib.util

    missing = []
    for mod in info.requires:
        try:
            found = importlib.util.find_spec(mod) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(mod)
    return missing


def _check_info(info: object) -> None:
    """Raise :class:`PluginError` for a declaration ferry would misread.

    ``schemes=("myproto")`` is a string, not a tuple: ``in`` would then match any
    part of it ("my" too); an unknown capability ("copy") would never match.
    """
    if not isinstance(info, ProtocolInfo):
        raise PluginError(f"returned {type(info).__name__}, not ProtocolInfo")
    what = f"protocol {info.name!r}:"
    if isinstance(info.schemes, str) or not info.schemes:
        raise PluginError(f"{what} schemes must be a non-empty tuple, not {info.schemes!r}")
    for scheme in info.schemes:
        if not _is_scheme(scheme):
            raise PluginError(f"{what} {scheme!r} is not a lower-case URL scheme")
    if isinstance(info.capabilities, str):
        raise PluginError(f"{what} capabilities must be a set, not {info.capabilities!r}")
    known = [c.value for c in Capability]
    for cap in info.capabilities:
        if cap not in known:
            raise PluginError(f"{what} unknown capability {cap!r} (known: {', '.join(known)})")
    module, colon, attr = info.implementation.partition(":")
    if not (module and colon and attr):
        raise PluginError(
            f"{what} implementation must be 'module:Class', not {info.implementation!r}"
        )


def _reason(exc: BaseException) -> str:
    """Why a plugin failed, on one line (pluggy's validation errors span lines)."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _is_scheme(s: object) -> bool:
    """A lower-case URL scheme (RFC 3986: a letter, then letters, digits, + . -)."""
    return (
        isinstance(s, str)
        and s.isascii()
        and s[:1].isalpha()
        and s == s.lower()
        and all(c.isalnum() or c in "+.-" for c in s)
    )


def _plugin_manager() -> pluggy.PluginManager:
    import pluggy

    from .spec import FerrySpec

    class _PluginManager(pluggy.PluginManager):
        """pluggy's manager, minus the look at dunder attributes when registering.

        pluggy inspects every name in ``dir(plugin)`` (with ``getattr_static``),
        and an object's dir is mostly dunders, which can never be hook
        implementations. Skipping them halves the cost of registering.
        """

        def parse_hookimpl_opts(self, plugin: object, name: str) -> pluggy.HookimplOpts | None:
            if name.startswith("__") and name.endswith("__"):
                return None
            return super().parse_hookimpl_opts(plugin, name)

    pm = _PluginManager(PROJECT)
    pm.add_hookspecs(FerrySpec)
    return pm


class Registry:
    """The protocols ferry can use in this process.

    Plugins are found through the ``ferry`` entry points. When the same
    plugins were found cleanly before, their declarations come from
    :mod:`.declcache` and pluggy is only loaded if something asks for
    :attr:`pm` (the container runtimes' hook, :meth:`register`).
    """

    def __init__(
        self,
        context: ProtocolContext | None = None,
        *,
        plugins: dict[str, object] | None = None,
        load_entrypoints: bool = True,
        use_cache: bool = True,
    ) -> None:
        self.context = context or ProtocolContext()
        self._pm: pluggy.PluginManager | None = None
        self._load_eps = load_entrypoints
        self._failures: list[LoadFailure] = []  # import / register failures
        self._hook_failures: list[LoadFailure] = []  # ferry_protocols() failures
        self._dists: dict[str, str] = {}
        self._sources: dict[str, str] = {}  # plugin -> "distribution (module)", for failures
        self._entries: list[ProtocolEntry] | None = None
        self._instances: dict[str, Protocol] = {}
        self._lock = threading.Lock()  # building protocol instances
        self._discovery = threading.RLock()  # building the plugin manager and the entries
        self._cache_file: str | None = None
        if load_entrypoints and not plugins:
            eps = find_entry_points(PROJECT)
            self._cache_file = declcache.cache_file(eps, API_VERSION)
            cached = declcache.read(self._cache_file) if use_cache and self._cache_file else None
            if cached is not None:
                self._entries = [
                    ProtocolEntry(p.name, p.dist, info) for p in cached for info in p.protocols
                ]
                return
        for name, plugin in (plugins or {}).items():
            self.register(plugin, name)

    @property
    def pm(self) -> pluggy.PluginManager:
        """The pluggy manager, with every entry-point plugin registered (built on first use)."""
        pm = self._pm
        if pm is None:
            with self._discovery:
                if self._pm is None:  # published only once complete: other threads wait
                    pm = _plugin_manager()
                    if self._load_eps:
                        self._load_entrypoints(pm)
                    self._pm = pm
                pm = self._pm
        return pm

    # -- discovery ---------------------------------------------------------

    def _load_entrypoints(self, pm: pluggy.PluginManager) -> None:
        for ep in find_entry_points(PROJECT):
            if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
                continue
            dist = ep.dist
            try:
                plugin = ep.load()
                pm.register(plugin, name=ep.name)
            except Exception as exc:  # a broken plugin must not stop the others
                self._failures.append(LoadFailure(ep.name, f"{dist} ({ep.value})", _reason(exc)))
                continue
            self._dists[ep.name] = dist
            self._sources[ep.name] = f"{dist} ({ep.value})"

    @property
    def failures(self) -> list[LoadFailure]:
        """Plugins that failed to import, register or declare their protocols."""
        self.entries()
        return self._failures + self._hook_failures

    def register(self, plugin: object, name: str) -> None:
        """Register a plugin object (module or instance with hook implementations)."""
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:
            self._failures.append(LoadFailure(name, "registered in code", _reason(exc)))
            return
        self._dists[name] = "(in process)"
        self._entries = None

    def entries(self) -> list[ProtocolEntry]:
        """Every declared protocol, in registration order."""
        if self._entries is not None:
            return self._entries
        with self._discovery:
            if self._entries is None:
                self._entries = self._discover()
            return self._entries

    def _discover(self) -> list[ProtocolEntry]:
        entries: list[ProtocolEntry] = []
        self._hook_failures = []
        names: list[str] = []
        # get_hookimpls() is in registration order: earlier plugins are preferred
        for impl in self.pm.hook.ferry_protocols.get_hookimpls():
            name = impl.plugin_name
            names.append(name)
            try:
                infos = impl.function()
                if isinstance(infos, ProtocolInfo):
                    raise PluginError("returned a ProtocolInfo, not a list of them")
                infos = list(infos or [])
                for info in infos:
                    _check_info(info)
            except Exception as exc:
                source = self._sources.get(name) or self._dists.get(name, "?")
                reason = f"ferry_protocols(): {_reason(exc)}"
                self._hook_failures.append(LoadFailure(name, source, reason))
                continue
            dist = self._dists.get(name, "?")
            entries.extend(ProtocolEntry(name, dist, info) for info in infos)
        if self._cache_file and not self._failures and not self._hook_failures:
            if all(name in self._dists and self._dists[name] != "(in process)" for name in names):
                by_plugin: dict[str, declcache.CachedPlugin] = {}
                for e in entries:
                    by_plugin.setdefault(
                        e.plugin, declcache.CachedPlugin(e.plugin, e.distribution, [])
                    ).protocols.append(e.info)
                declcache.write(self._cache_file, list(by_plugin.values()))
        return entries

    def entry_for(self, scheme: str) -> ProtocolEntry:
        """The protocol serving ``scheme``: the first available one declared, ferry's
        own before any other (a plugin cannot take over file:// or http:// by the
        name of its distribution sorting first); ``ferry plugins`` shows the others
        as shadowed."""
        scheme = scheme.lower()
        candidates = [e for e in self.entries() if scheme in e.info.schemes]
        if len(candidates) > 1:
            candidates.sort(key=lambda e: e.distribution != PROJECT)  # stable
        if not candidates:
            known = sorted({s for e in self.entries() for s in e.info.schemes})
            message = f"no plugin serves {scheme}:// (known schemes: {', '.join(known)})"
            if self.failures:  # one of them may be the plugin that serves it
                broken = "; ".join(f"{f.plugin} ({f.reason})" for f in self.failures)
                message += f"; plugins that failed to load: {broken}"
            raise UnsupportedScheme(message)
        for entry in candidates:
            if entry.available:
                return entry
        entry = candidates[0]
        raise PluginUnavailable(
            f"{scheme}:// needs plugin {entry.plugin!r}: {entry.unavailable}", plugin=entry.plugin
        )

    def capabilities(self, scheme: str) -> frozenset[Capability]:
        try:
            return self.entry_for(scheme).info.capabilities
        except (UnsupportedScheme, PluginUnavailable):
            return frozenset()

    def schemes(self) -> list[str]:
        return sorted({s for e in self.entries() if e.available for s in e.info.schemes})

    # -- instances ---------------------------------------------------------

    def protocol(self, scheme: str) -> Protocol:
        """The (shared, thread-safe) protocol instance for ``scheme``, built on first use."""
        entry = self.entry_for(scheme)
        key = entry.info.implementation
        proto = self._instances.get(key)
        if proto is not None:
            return proto
        with self._lock:
            proto = self._instances.get(key)
            if proto is None:
                proto = self._build(entry)
                self._instances[key] = proto
        return proto

    def _build(self, entry: ProtocolEntry) -> Protocol:
        module_name, _, attr = entry.info.implementation.partition(":")
        try:
            module = importlib.import_module(module_name)
            cls = getattr(module, attr)
            proto = cls(self.context)
        except FerryError:
            raise
        except ImportError as exc:
            raise PluginUnavailable(
                f"plugin {entry.plugin!r} cannot load {module_name}: {exc}", plugin=entry.plugin
            ) from exc
        except Exception as exc:
            raise PluginError(
                f"plugin {entry.plugin!r} failed to start {entry.info.implementation}:"
                f" {type(exc).__name__}: {exc}",
                plugin=entry.plugin,
            ) from exc
        if not isinstance(proto, Protocol):
            raise PluginError(
                f"{entry.info.implementation} is not a ferry Protocol", plugin=entry.plugin
            )
        return proto

    def close(self) -> None:
        with self._lock:
            for proto in self._instances.values():
                try:
                    proto.close()
                except Exception:  # closing is best effort
                    pass
            self._instances.clear()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
