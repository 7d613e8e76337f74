"""The third-party example plugin (examples/ferry-store), installed by the test command,
found through its entry point and used by `ferry transfer` like any built-in."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path


def ferry(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ferry.planner.cli", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **env})


def test_listed_from_its_own_distribution() -> None:
    p = ferry("plugins", "--json", env={})
    entry = next(x for x in json.loads(p.stdout)["protocols"] if x["name"] == "store")
    assert entry["distribution"] == "ferry-store" and entry["available"]
    assert entry["schemes"] == ["store"]


def test_round_trip_through_ferry_transfer(tmp_path: Path) -> None:
    env = {"FERRY_STORE_DEMO": str(tmp_path / "root")}
    data = os.urandom(3 << 20)
    digest = hashlib.sha256(data).hexdigest()
    (tmp_path / "in.bin").write_bytes(data)
    up = ferry("transfer", "--json", str(tmp_path / "in.bin"), "store://demo/a/b/in.bin",
               "--sha256", digest, env=env)
    assert up.returncode == 0, up.stderr
    assert json.loads(up.stdout)["transfers"][0]["route"] == "upload"
    assert (tmp_path / "root" / "a" / "b" / "in.bin").read_bytes() == data
    down = ferry("transfer", "store://demo/a/b/in.bin", str(tmp_path / "back.bin"),
                 "--sha256", digest, env=env)
    assert down.returncode == 0 and (tmp_path / "back.bin").read_bytes() == data
    bad = ferry("transfer", str(tmp_path / "in.bin"), "store://demo/c/bad.bin", "--sha256", "0" * 64,
                env=env)
    assert bad.returncode == 1 and not (tmp_path / "root" / "c" / "bad.bin").exists()
    unset = ferry("transfer", str(tmp_path / "in.bin"), "store://nowhere/x", env=env)
    assert unset.returncode == 1 and "FERRY_STORE_NOWHERE" in unset.stderr
