"""``ferry plugins``: which protocols are loaded, what they can do, and what is broken."""

from __future__ import annotations

import argparse
import json
import sys

from ferry.plugins.registry import Registry

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the list as JSON")


def run(args: argparse.Namespace) -> int:
    registry = Registry(use_cache=False)  # always the full discovery (it refreshes the cache)
    entries = registry.entries()
    if args.json:
        data = {
            "protocols": [
                {
                    "name": e.info.name,
                    "plugin": e.plugin,
                    "distribution": e.distribution,
                    "schemes": list(e.info.schemes),
                    "capabilities": sorted(str(c) for c in e.info.capabilities),
                    "available": e.available,
                    "reason": e.unavailable,
                    "description": e.info.description,
                }
                for e in entries
            ],
            "failures": [
                {"plugin": f.plugin, "source": f.source, "reason": f.reason}
                for f in registry.failures
            ],
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
                "ok" if e.available else f"unavailable: {e.unavailable}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4])
    for f in registry.failures:
        print(f"failed to load plugin {f.plugin!r} from {f.source}: {f.reason}")
    return 0
