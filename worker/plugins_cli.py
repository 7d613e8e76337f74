"""``ferry plugins``: which protocols are loaded, what they can do, and what is broken."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys

from ferry.plugins.errors import FerryError
from ferry.plugins.registry import ProtocolEntry, Registry

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the list as JSON")


def _runtimes(registry: Registry) -> tuple[list[tuple[str, str, str | None]], list[str]]:
    """Each container runtime: name, binary (or ""), why it is unavailable (or None);
    and what went wrong with runtime plugins."""
    from ferry.containers.runtimes import load_runtimes

    problems: list[str] = []
    found = []
    for name, cls in sorted(load_runtimes(registry, failures=problems).items()):
        rt = cls()
        found.append((name, rt.binary or "", rt.unavailable_reason()))
    return found, problems


def _shadowed(registry: Registry, entry: ProtocolEntry) -> dict[str, ProtocolEntry]:
    """The schemes of an available ``entry`` that another protocol serves instead."""
    if not entry.available:
        return {}
    others = {}
    for scheme in entry.info.schemes:
        try:
            winner = registry.entry_for(scheme)
        except FerryError:
            continue
        if winner is not entry:
            others[scheme] = winner
    return others


def _unavailable(entry: ProtocolEntry) -> str | None:
    """Why the protocol cannot run here: its library is missing, or its implementation
    module (found, not imported: a typo shows here, not at the first transfer)."""
    if not entry.available:
        return entry.unavailable
    module = entry.info.implementation.partition(":")[0]
    try:
        found = importlib.util.find_spec(module) is not None
    except Exception as exc:  # a parent package failed to import
        return f"{module} cannot be found: {type(exc).__name__}: {exc}"
    return None if found else f"{module} (its implementation) is not installed"


def _status(entry: ProtocolEntry, shadowed: dict[str, ProtocolEntry]) -> str:
    reason = _unavailable(entry)
    if reason:
        return f"unavailable: {reason}"
    if not shadowed:
        return "ok"
    taken = ", ".join(
        f"{s}:// served by {w.info.name} ({w.distribution})" for s, w in shadowed.items()
    )
    return f"shadowed: {taken}" if len(shadowed) == len(entry.info.schemes) else f"ok; {taken}"


def run(args: argparse.Namespace) -> int:
    registry = Registry(use_cache=False)  # always the full discovery (it refreshes the cache)
    entries = registry.entries()
    shadowed = {id(e): _shadowed(registry, e) for e in entries}
    runtimes, runtime_problems = _runtimes(registry)
    if args.json:
        data = {
            "protocols": [
                {
                    "name": e.info.name,
                    "plugin": e.plugin,
                    "distribution": e.distribution,
                    "schemes": list(e.info.schemes),
                    "capabilities": sorted(str(c) for c in e.info.capabilities),
                    "available": _unavailable(e) is None,
                    "reason": _unavailable(e),
                    "shadowed": {s: w.info.name for s, w in shadowed[id(e)].items()},
                    "description": e.info.description,
                }
                for e in entries
            ],
            "failures": [
                {"plugin": f.plugin, "source": f.source, "reason": f.reason}
                for f in registry.failures
            ],
            "runtimes": [
                {"name": n, "binary": b or None, "available": r is None, "reason": r}
                for n, b, r in runtimes
            ],
            "runtime_failures": runtime_problems,
        }
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    rows = [("PROTOCOL", "PLUGIN", "SCHEMES", "CAPABILITIES", "STATUS")]
    for e in entries:
        rows.append(
            (
                e.info.name,
                f"{e.plugin} ({e.distribution})",
                ", ".join(e.info.schemes),
                ", ".join(sorted(str(c) for c in e.info.capabilities)),
                _status(e, shadowed[id(e)]),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4])
    for f in registry.failures:
        print(f"failed to load plugin {f.plugin!r} from {f.source}: {f.reason}")
    print()
    rows = [("RUNTIME", "STATUS")]
    rows += [(n, f"ok ({b})" if r is None else f"unavailable: {r}") for n, b, r in runtimes]
    width = max(len(r[0]) for r in rows)
    for name, status in rows:
        print(f"{name.ljust(width)}  {status}")
    for problem in runtime_problems:
        print(f"runtime plugin problem: {problem}")
    return 0
