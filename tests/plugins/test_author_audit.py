"""What a third-party protocol plugin's author runs into: declarations ferry would
misread, clashes with ferry's schemes, messages about broken plugins, and the
conformance kit failing broken plugins (and passing correct ones)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ferry.plugins.errors import PluginError, UnsupportedScheme
from ferry.plugins.protocol import Capability, ProtocolInfo
from ferry.plugins.registry import ProtocolEntry, Registry

from .test_declcache import make_dist
from .test_registry import plugin_module


def ferry(*args: str, site: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    """The ferry CLI with the distributions under ``site`` first on sys.path."""
    env = {**os.environ, "PYTHONPATH": str(site), "FERRY_CACHE_DIR": str(cache)}
    return subprocess.run([sys.executable, "-m", "ferry.planner.cli", *args], capture_output=True,
                          text=True, timeout=120, env=env)


def info(**kw: object) -> ProtocolInfo:
    fields: dict[str, object] = {
        "name": "mine",
        "schemes": ("mine",),
        "capabilities": frozenset({Capability.GET}),
        "implementation": "mine.protocol:Mine",
    }
    return ProtocolInfo(**{**fields, **kw})  # type: ignore[arg-type]


# -- declarations and discovery ---------------------------------------------------------


def test_a_plugin_cannot_take_over_a_builtin_scheme_and_is_listed_as_shadowed(
    tmp_path: Path,
) -> None:
    """A distribution found before ferry's (first on sys.path, or a name sorting
    first) that also declares file:// used to serve every local copy."""
    site = make_dist(tmp_path / "site", """
        from ferry.plugins.spec import Capability, ProtocolInfo, hookimpl

        @hookimpl
        def ferry_protocols():
            return [ProtocolInfo(name="mine", schemes=("file", "mine"),
                                 capabilities=frozenset({Capability.GET}),
                                 implementation="myplug:Nothing")]
        """)
    (tmp_path / "in.txt").write_text("local bytes")
    p = ferry("transfer", str(tmp_path / "in.txt"), str(tmp_path / "out.txt"), site=site,
              cache=tmp_path / "cache")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "out.txt").read_text() == "local bytes"
    listing = ferry("plugins", "--json", site=site, cache=tmp_path / "cache")
    mine = next(x for x in json.loads(listing.stdout)["protocols"] if x["name"] == "mine")
    assert mine["shadowed"] == {"file": "file"}
    table = ferry("plugins", site=site, cache=tmp_path / "cache").stdout
    row = next(line for line in table.splitlines() if line.startswith("mine "))
    assert row.endswith("ok; file:// served by file (ferry)")


def test_load_failures_are_one_line_and_name_the_module(tmp_path: Path) -> None:
    """A hook with a wrong signature (pluggy's message spans lines) and a hook that
    raises: each failure is one line, with the module and the exception's type."""
    site = make_dist(tmp_path / "site", """
        from ferry.plugins.spec import hookimpl

        @hookimpl
        def ferry_protocols():
            raise KeyError("MYPLUG_HOME")
        """)
    other = site / "otherplug-1.0.dist-info"
    other.mkdir()
    (other / "METADATA").write_text("Metadata-Version: 2.1\nName: otherplug\nVersion: 1.0\n\n")
    (other / "entry_points.txt").write_text("[ferry]\notherplug = otherplug\n")
    (site / "otherplug.py").write_text(
        "from ferry.plugins.spec import hookimpl\n\n"
        "@hookimpl\ndef ferry_protocols(config):\n    return []\n"
    )
    p = ferry("plugins", site=site, cache=tmp_path / "cache")
    assert p.returncode == 0, p.stderr
    failed = {
        line.split("'")[1]: line
        for line in p.stdout.splitlines()
        if line.startswith("failed to load plugin")
    }
    assert "from myplug (myplug): ferry_protocols(): KeyError: 'MYPLUG_HOME'" in failed["myplug"]
    assert "from otherplug (otherplug): PluginValidationError:" in failed["otherplug"]
    assert "{'config'} are declared in the hookimpl" in failed["otherplug"]
    assert "file" in p.stdout  # the others still load


@pytest.mark.parametrize(
    ("declared", "why"),
    [
        ({"schemes": "mine"}, "schemes must be a non-empty tuple"),  # ("mine") is a str
        ({"schemes": ("Mine",)}, "'Mine' is not a lower-case URL scheme"),
        ({"schemes": ("my proto",)}, "'my proto' is not a lower-case URL scheme"),
        ({"capabilities": frozenset({"get", "copy"})}, "unknown capability 'copy'"),
        ({"implementation": "mine.protocol.Mine"}, "implementation must be 'module:Class'"),
    ],
)
def test_a_declaration_ferry_would_misread_is_a_load_failure(
    declared: dict[str, object], why: str
) -> None:
    reg = Registry(plugins={"mine": plugin_module(a=info(**declared))}, load_entrypoints=False)
    assert [f.plugin for f in reg.failures] == ["mine"]
    assert why in reg.failures[0].reason
    for scheme in ("mine", "m", "in"):  # a str's parts matched as schemes before
        with pytest.raises(UnsupportedScheme):
            reg.entry_for(scheme)


def test_capabilities_given_as_their_string_values_are_accepted() -> None:
    reg = Registry(plugins={"mine": plugin_module(a=info(capabilities=frozenset({"get"})))},
                   load_entrypoints=False)
    assert not reg.failures and Capability.GET in reg.capabilities("mine")


def test_a_missing_library_suggests_the_extra_of_the_plugins_own_distribution() -> None:
    declared = info(requires=("ferry_audit_absent_sdk",), extra="sdk")
    third_party = ProtocolEntry("mine", "ferry-mine", declared)
    assert "pip install 'ferry-mine[sdk]'" in (third_party.unavailable or "")
    builtin = ProtocolEntry("mine", "ferry", declared)
    assert "pip install 'ferry[sdk]'" in (builtin.unavailable or "")


def test_a_protocol_that_fails_to_start_names_the_exception(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "audit_initfails.py").write_text(
        "from ferry.plugins.spec import Protocol\n\n"
        "class Proto(Protocol):\n"
        "    def __init__(self, context=None):\n"
        "        super().__init__(context)\n"
        "        raise KeyError('SDK_TOKEN')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    declared = info(implementation="audit_initfails:Proto")
    reg = Registry(plugins={"mine": plugin_module(a=declared)}, load_entrypoints=False)
    with pytest.raises(PluginError, match=r"failed to start audit_initfails:Proto: KeyError: "):
        reg.protocol("mine")
