"""The plugin declaration cache: a job's start-up reads what the plugins declared
last time instead of importing them and pluggy, and never serves a stale or
partial answer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PROBE = textwrap.dedent(
    """
    import json, sys
    from ferry.plugins.registry import Registry
    reg = Registry()
    print(json.dumps({
        "schemes": reg.schemes(),
        "entries": [[e.plugin, e.distribution, e.info.name, list(e.info.schemes),
                     sorted(map(str, e.info.capabilities)), e.info.implementation]
                    for e in reg.entries()],
        "failures": [list(f) for f in reg.failures],
        "pluggy": "pluggy" in sys.modules,
    }))
    """
)


def probe(cache: Path, extra_path: Path | None = None, **env: str) -> dict[str, object]:
    full_env = {**os.environ, "FERRY_CACHE_DIR": str(cache), **env}
    if extra_path is not None:
        full_env["PYTHONPATH"] = str(extra_path)
    p = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, env=full_env
    )
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def make_dist(root: Path, body: str) -> Path:
    """A one-module distribution `myplug` with a `ferry` entry point, importable from root."""
    info = root / "myplug-1.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: myplug\nVersion: 1.0\n\n")
    (info / "entry_points.txt").write_text("[ferry]\nmyplug = myplug\n")
    (root / "myplug.py").write_text(textwrap.dedent(body))
    return root


def declaring(scheme: str) -> str:
    return f"""
        from ferry.plugins.spec import Capability, ProtocolInfo, hookimpl

        @hookimpl
        def ferry_protocols():
            return [ProtocolInfo(name="{scheme}", schemes=("{scheme}",),
                                 capabilities=frozenset({{Capability.GET}}),
                                 implementation="myplug:Nothing")]
        """


def test_second_process_answers_from_the_cache_without_pluggy(tmp_path: Path) -> None:
    first = probe(tmp_path)
    assert first["pluggy"] is True
    assert len(list(tmp_path.glob("plugins-*.json"))) == 1
    second = probe(tmp_path)
    assert second["pluggy"] is False
    assert {k: v for k, v in second.items() if k != "pluggy"} == {
        k: v for k, v in first.items() if k != "pluggy"
    }
    assert "file" in second["schemes"] and "s3" in second["schemes"]


def test_a_changed_plugin_module_is_discovered_again(tmp_path: Path) -> None:
    cache, site = tmp_path / "cache", make_dist(tmp_path / "site", declaring("myp"))
    assert "myp" in probe(cache, site)["schemes"]
    cached = probe(cache, site)
    assert cached["pluggy"] is False and "myp" in cached["schemes"]
    (site / "myplug.py").write_text(textwrap.dedent(declaring("mynewscheme")))
    changed = probe(cache, site)
    assert changed["pluggy"] is True
    assert "mynewscheme" in changed["schemes"] and "myp" not in changed["schemes"]


def test_a_broken_plugin_is_never_cached(tmp_path: Path) -> None:
    cache, site = tmp_path / "cache", make_dist(tmp_path / "site", "raise ImportError('boom')\n")
    for _ in range(2):
        result = probe(cache, site)
        assert result["pluggy"] is True
        assert any(f[0] == "myplug" and "boom" in f[2] for f in result["failures"])
    assert not list(cache.glob("plugins-*.json"))


@pytest.mark.parametrize("damage", ["not json", '{"format": 1, "plugins": [{"name": 3}]}'])
def test_a_damaged_cache_is_ignored_and_rewritten(tmp_path: Path, damage: str) -> None:
    good = probe(tmp_path)
    (path,) = tmp_path.glob("plugins-*.json")
    path.write_text(damage)
    again = probe(tmp_path)
    assert again["pluggy"] is True and again["schemes"] == good["schemes"]
    assert json.loads(path.read_text())["format"] == 1


def test_the_cache_can_be_turned_off(tmp_path: Path) -> None:
    for _ in range(2):
        assert probe(tmp_path, FERRY_PLUGIN_CACHE="0")["pluggy"] is True
    assert not list(tmp_path.glob("plugins-*.json"))
