"""Checkpoints kept where the protocol cannot ``stat``: fetched when there, a fresh
start when not (the job worker in-process, with a test protocol that lacks stat)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from ferry.plugins.errors import NotFound
from ferry.plugins.protocol import Capability, Protocol, ProtocolInfo, Sink, Source
from ferry.plugins.registry import Registry
from ferry.plugins.spec import hookimpl
from ferry.plugins.url import URL
from ferry.worker.job import EXIT_JOB_FAILED, JobWorker
from ferry.worker.jobspec import load_jobspec


class NoStatProtocol(Protocol):
    """``nostat://h/<key>``: get and put on a dict, and no stat."""

    name = "nostat"
    objects: dict[str, bytes] = {}

    def get(self, url: URL, sink: Sink, progress=None) -> None:  # type: ignore[no-untyped-def]
        data = self.objects.get(url.path)
        if data is None:
            raise NotFound(f"nostat: {url} not found", url=str(url))
        sink.set_size(len(data))
        sink.write(data)

    def put(self, source: Source, url: URL, progress=None) -> None:  # type: ignore[no-untyped-def]
        with source.reader() as f:
            data = f.read()
        source.verify()
        self.objects[url.path] = data


@hookimpl
def ferry_protocols() -> list[ProtocolInfo]:
    return [
        ProtocolInfo(
            name="nostat",
            schemes=("nostat",),
            capabilities=frozenset({Capability.GET, Capability.PUT}),
            implementation=f"{__name__}:NoStatProtocol",
        )
    ]


@pytest.fixture
def registry() -> Registry:
    NoStatProtocol.objects.clear()
    return Registry(plugins={"nostat-test": sys.modules[__name__]})


def failed_attempt(tmp_path: Path, registry: Registry) -> int:
    spec = load_jobspec(
        json.dumps(
            {
                "version": 1,
                "id": "ck",
                "executable": "/bin/sh",
                # resume from the checkpoint if there is one, write the next one, and fail
                # (a failed attempt stages its checkpoints out for the next one)
                "arguments": [
                    "-c",
                    "n=$(cat state 2>/dev/null || echo 0); echo $((n+1)) > state; exit 1",
                ],
                "checkpoints": [{"lfn": "state", "url": "nostat://h/run/state"}],
            }
        )
    )
    records = tmp_path / "records"
    records.mkdir(exist_ok=True)
    return JobWorker(
        spec, records_dir=str(records), registry=registry, workdir_base=str(tmp_path)
    ).run()


def test_no_checkpoint_yet_is_a_fresh_start(tmp_path: Path, registry: Registry) -> None:
    assert failed_attempt(tmp_path, registry) == EXIT_JOB_FAILED  # not a stage-in failure
    assert NoStatProtocol.objects["/run/state"] == b"1\n"


def test_a_kept_checkpoint_is_restored(tmp_path: Path, registry: Registry) -> None:
    NoStatProtocol.objects["/run/state"] = b"41\n"
    assert failed_attempt(tmp_path, registry) == EXIT_JOB_FAILED
    assert NoStatProtocol.objects["/run/state"] == b"42\n"
