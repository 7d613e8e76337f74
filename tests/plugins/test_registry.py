"""Plugin discovery: entry points, unavailable libraries, broken plugins."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from ferry.plugins.errors import PluginUnavailable, UnsupportedScheme
from ferry.plugins.protocol import Capability, ProtocolInfo
from ferry.plugins.registry import Registry
from ferry.plugins.spec import hookimpl


def plugin_module(**infos: ProtocolInfo) -> types.SimpleNamespace:
    class P:
        @hookimpl
        def ferry_protocols(self) -> list[ProtocolInfo]:
            return list(infos.values())

    return P()  # type: ignore[return-value]


def test_builtins_come_from_the_entry_point_group() -> None:
    reg = Registry()
    names = {e.info.name: e for e in reg.entries()}
    assert {"file", "symlink"} <= set(names)
    assert names["file"].distribution == "ferry"
    assert Capability.GET in reg.capabilities("file")
    assert reg.protocol("file") is reg.protocol("file")  # built once, shared


def test_entry_point_scan_agrees_with_importlib_metadata() -> None:
    from importlib.metadata import entry_points

    from ferry.plugins.entrypoints import find_entry_points

    ours = {(e.name, e.value, e.dist) for e in find_entry_points("ferry")}
    theirs = {(e.name, e.value, e.dist.name if e.dist else "?") for e in entry_points(group="ferry")}
    assert ours == theirs
    assert ("file", "ferry.plugins.builtin:file", "ferry") in ours


def test_a_file_url_loads_no_other_protocol_and_no_client_library(tmp_path: Path) -> None:
    """Discovery reads declarations only: resolving file:// must not import the
    other protocols' modules or their libraries (the worker's start-up)."""
    code = textwrap.dedent(
        """
        import sys
        from ferry.plugins.registry import Registry
        reg = Registry()
        assert {"http", "s3", "gs", "sftp", "go", "webdav"} <= set(reg.schemes())
        reg.protocol("file")
        heavy = ["ferry.plugins." + m for m in ("http", "webdav", "s3", "gs", "sftp", "globus")]
        heavy += ["ferry.containers.runtimes", "httpx", "botocore", "paramiko", "globus_sdk",
                  "google.cloud.storage", "importlib.metadata"]
        print(sorted(m for m in heavy if m in sys.modules))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_missing_library_is_listed_with_reason_and_only_its_scheme_fails() -> None:
    info = ProtocolInfo(
        name="needs-lib",
        schemes=("needslib",),
        capabilities=frozenset({Capability.GET}),
        implementation="ferry_missing_client.proto:Proto",
        requires=("ferry_missing_client",),
        extra="needslib",
    )
    reg = Registry(plugins={"needs-lib": plugin_module(a=info)})
    entry = next(e for e in reg.entries() if e.info.name == "needs-lib")
    assert not entry.available
    assert "ferry_missing_client is not installed" in (entry.unavailable or "")
    assert "pip install 'ferry[needslib]'" in (entry.unavailable or "")
    with pytest.raises(PluginUnavailable, match="needslib:// needs plugin 'needs-lib'"):
        reg.protocol("needslib")
    assert reg.protocol("file") is not None  # others unaffected


def test_broken_hook_is_recorded_not_fatal() -> None:
    class Broken:
        @hookimpl
        def ferry_protocols(self) -> list[ProtocolInfo]:
            raise RuntimeError("boom")

    reg = Registry(plugins={"broken": Broken()})
    assert any(f.plugin == "broken" and "boom" in f.reason for f in reg.failures)
    assert "file" in reg.schemes()


def test_unknown_scheme_lists_known_ones() -> None:
    with pytest.raises(UnsupportedScheme, match=r"no plugin serves zz:// \(known schemes: .*file"):
        Registry().protocol("zz")


def test_plugins_command_lists_schemes_and_failures(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    p = subprocess.run(
        [sys.executable, "-m", "ferry.planner.cli", "plugins", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    file_entry = next(x for x in data["protocols"] if x["name"] == "file")
    assert file_entry["schemes"] == ["file"] and file_entry["available"]
    assert "get" in file_entry["capabilities"]
    p = subprocess.run(
        [sys.executable, "-m", "ferry.planner.cli", "plugins"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0 and "PROTOCOL" in p.stdout and "file" in p.stdout


def test_plugins_command_lists_container_runtimes(tmp_path: Path) -> None:
    """Runtimes too: found or not, and why not; FERRY_<NAME>_BIN moves a runtime's binary."""
    import json

    fake = tmp_path / "apptainer"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    env = {**os.environ, "FERRY_APPTAINER_BIN": str(fake), "FERRY_SINGULARITY_BIN": "/nowhere/x"}
    p = subprocess.run(
        [sys.executable, "-m", "ferry.planner.cli", "plugins", "--json"],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert p.returncode == 0, p.stderr
    runtimes = {r["name"]: r for r in json.loads(p.stdout)["runtimes"]}
    assert {"apptainer", "singularity", "docker", "podman", "charliecloud"} <= set(runtimes)
    assert runtimes["apptainer"]["available"] and runtimes["apptainer"]["binary"] == str(fake)
    assert not runtimes["singularity"]["available"]
    assert "FERRY_SINGULARITY_BIN" in runtimes["singularity"]["reason"]
    p = subprocess.run(
        [sys.executable, "-m", "ferry.planner.cli", "plugins"],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert p.returncode == 0 and "RUNTIME" in p.stdout
    assert re.search(rf"^apptainer +ok \({re.escape(str(fake))}\)$", p.stdout, re.M)


def test_threads_racing_to_discover_all_see_every_plugin() -> None:
    """The engine's threads may be the first to ask: none may see a half-built registry."""
    import threading

    for _ in range(5):
        reg = Registry(use_cache=False)
        barrier = threading.Barrier(8)
        found: list[object] = []

        def ask(
            reg: Registry = reg, barrier: threading.Barrier = barrier, found: list[object] = found
        ) -> None:
            barrier.wait()
            try:
                found.append(reg.entry_for("file").info.name)
            except Exception as exc:  # recorded, asserted below
                found.append(exc)

        threads = [threading.Thread(target=ask) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert found == ["file"] * 8


def test_msgspec_is_imported_without_typing_extensions_which_stays_importable() -> None:
    # typing_extensions (installed here with httpx) costs ~38 M instructions when
    # msgspec pulls it in at import; ferry imports msgspec first without it
    code = textwrap.dedent(
        """
        import sys
        import ferry.worker.transfer_cli
        import msgspec
        before = "typing_extensions" in sys.modules
        import typing_extensions
        class S(msgspec.Struct):
            n: int
        assert msgspec.json.decode(b'{"n": 3}', type=S) == S(3)
        print(before, typing_extensions.__name__)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "typing_extensions"]
