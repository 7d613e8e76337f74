"""A conformance kit for protocol plugins, run with pytest against a live endpoint.

Subclass :class:`ProtocolConformance`, set ``__test__ = True``, and provide the
``endpoint`` fixture; every built-in protocol passes the same tests::

    import pytest
    from ferry.plugins.testing import ConformanceEndpoint, ProtocolConformance

    class TestMyProto(ProtocolConformance):
        __test__ = True

        @pytest.fixture
        def endpoint(self, my_server):            # a fixture that starts a real server
            return ConformanceEndpoint(base_url=f"myproto://127.0.0.1:{my_server.port}/kit")

The kit checks put -> stat -> get -> sha256 -> remove; 0-byte, 1-byte and large
objects; names with spaces and unicode; overwrite; ``NotFound`` for a missing
object (and nothing written); that an upload with the wrong sha256 leaves
nothing behind; concurrent gets; and, when the endpoint can inject faults, that
a fault surfaces as a ``TransientError`` (which the engine retries) or is
absorbed with the right bytes. Read-only protocols (plain HTTP) give a
``seed`` function that places bytes on the server by other means.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .errors import IntegrityError, NotFound, TransientError
from .protocol import Capability, Sink, Source
from .registry import Registry
from .url import parse_url

__all__ = ["ConformanceEndpoint", "ProtocolConformance"]


@dataclass
class ConformanceEndpoint:
    """Where and how the kit may test a protocol.

    ``base_url``: a writable (or, with ``seed``, readable) location; each test
    works under a fresh sub-path of it. ``seed(url, data)`` puts bytes at a URL
    by other means, for read-only protocols. ``fault(n)`` returns a context
    manager during which the next ``n`` requests to the server fail
    transiently (optional). ``large_size`` should exceed the protocol's chunk
    or multipart threshold.
    """

    base_url: str
    registry: Registry = field(default_factory=Registry)
    seed: Callable[[str, bytes], None] | None = None
    fault: Callable[[int], AbstractContextManager[None]] | None = None
    large_size: int = 9 * (1 << 20) + 123
    #: tests that cannot apply to this protocol, with the reason (name -> why)
    unimplementable: dict[str, str] = field(default_factory=dict)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ProtocolConformance:
    """The shared tests. Subclasses provide the ``endpoint`` fixture."""

    __test__ = False

    @pytest.fixture
    def endpoint(self) -> ConformanceEndpoint:
        raise NotImplementedError("provide an `endpoint` fixture returning ConformanceEndpoint")

    @pytest.fixture
    def kit(self, endpoint: ConformanceEndpoint, request: pytest.FixtureRequest) -> Iterator[_Kit]:
        name = request.node.originalname
        if name in endpoint.unimplementable:
            pytest.skip(f"not applicable: {endpoint.unimplementable[name]}")
        kit = _Kit(endpoint)
        yield kit
        endpoint.registry.close()

    # -- the tests ---------------------------------------------------------

    def test_roundtrip(self, kit: _Kit, tmp_path: Path) -> None:
        data = os.urandom(200_000)
        url = kit.place("roundtrip.bin", data, tmp_path)
        if kit.can(Capability.STAT):
            st = kit.proto.stat(parse_url(url))
            assert st.size == len(data)
        got, sha = kit.get(url, tmp_path)
        assert got == data and sha == _sha(data)
        if kit.can(Capability.REMOVE):
            kit.proto.remove(parse_url(url))
            with pytest.raises(NotFound):
                kit.get(url, tmp_path)

    @pytest.mark.parametrize("size", [0, 1])
    def test_tiny_objects(self, kit: _Kit, tmp_path: Path, size: int) -> None:
        data = os.urandom(size)
        url = kit.place(f"tiny-{size}", data, tmp_path)
        assert kit.get(url, tmp_path) == (data, _sha(data))

    def test_large_object(self, kit: _Kit, tmp_path: Path) -> None:
        data = os.urandom(kit.endpoint.large_size)
        url = kit.place("large.bin", data, tmp_path)
        got, sha = kit.get(url, tmp_path)
        assert len(got) == len(data) and sha == _sha(data)

    def test_awkward_names(self, kit: _Kit, tmp_path: Path) -> None:
        data = b"awkward\n"
        url = kit.place("with space/ünïcødé name.txt", data, tmp_path)
        assert kit.get(url, tmp_path)[0] == data

    def test_overwrite(self, kit: _Kit, tmp_path: Path) -> None:
        url = kit.place("over.txt", b"first version", tmp_path)
        kit.place("over.txt", b"second", tmp_path, url=url)
        assert kit.get(url, tmp_path)[0] == b"second"

    def test_missing_is_not_found(self, kit: _Kit, tmp_path: Path) -> None:
        url = parse_url(kit.url("does-not-exist.bin"))
        with pytest.raises(NotFound) as info:
            kit.get(url.raw, tmp_path)  # str(url) is redacted: no password
        assert str(url).split("://", 1)[1].split("/", 1)[-1] in str(info.value)
        if kit.can(Capability.STAT):
            with pytest.raises(NotFound):
                kit.proto.stat(url)

    def test_missing_writes_nothing(self, kit: _Kit, tmp_path: Path) -> None:
        sink = Sink(str(tmp_path / "sink"))
        try:
            with pytest.raises(NotFound):
                kit.proto.get(parse_url(kit.url("nope.bin")), sink)
        finally:
            sink.close()
        assert sink.offset == 0 and (tmp_path / "sink").stat().st_size == 0

    def test_put_with_wrong_sum_leaves_nothing(self, kit: _Kit, tmp_path: Path) -> None:
        if not kit.can(Capability.PUT):
            pytest.skip("protocol cannot put")
        src = tmp_path / "src.bin"
        src.write_bytes(os.urandom(50_000))
        url = kit.url("guarded.bin")
        with pytest.raises(IntegrityError):
            kit.proto.put(Source(str(src), expected_sha256="0" * 64), parse_url(url))
        with pytest.raises(NotFound):
            kit.get(url, tmp_path)

    def test_concurrent_gets(self, kit: _Kit, tmp_path: Path) -> None:
        blobs = {f"c{i}.bin": os.urandom(30_000 + i) for i in range(12)}
        urls = {n: kit.place(n, d, tmp_path) for n, d in blobs.items()}
        with ThreadPoolExecutor(6) as pool:
            got = dict(
                zip(urls, pool.map(lambda u: kit.get(u, tmp_path), urls.values()), strict=True)
            )
        for n, d in blobs.items():
            assert got[n] == (d, _sha(d))

    def test_mkdir_and_remove_missing(self, kit: _Kit, tmp_path: Path) -> None:
        if kit.can(Capability.MKDIR):
            kit.proto.mkdir(parse_url(kit.url("a/b/c")))
            kit.proto.mkdir(parse_url(kit.url("a/b/c")))  # again: fine
        if kit.can(Capability.REMOVE):
            kit.proto.remove(parse_url(kit.url("never-was")))  # missing: fine

    def test_transient_fault_is_transient(self, kit: _Kit, tmp_path: Path) -> None:
        """A fault surfaces as a TransientError (so the engine retries) or is absorbed."""
        if kit.endpoint.fault is None:
            pytest.skip("endpoint cannot inject faults")
        data = os.urandom(100_000)
        url = kit.place("flaky.bin", data, tmp_path)
        with kit.endpoint.fault(1):
            try:
                got = kit.get(url, tmp_path)
            except TransientError:
                got = None
        if got is not None:  # the plugin retried or resumed by itself: bytes must be right
            assert got == (data, _sha(data))
        assert kit.get(url, tmp_path) == (data, _sha(data))


class _Kit:
    """Helpers the tests share: unique URLs, placing and fetching bytes."""

    def __init__(self, endpoint: ConformanceEndpoint) -> None:
        self.endpoint = endpoint
        self.prefix = f"kit-{secrets.token_hex(4)}"
        self.scheme = parse_url(endpoint.base_url).scheme
        self.proto = endpoint.registry.protocol(self.scheme)
        self.caps = endpoint.registry.capabilities(self.scheme)

    def can(self, cap: Capability) -> bool:
        return cap in self.caps

    def url(self, name: str) -> str:
        return f"{self.endpoint.base_url.rstrip('/')}/{self.prefix}/{name}"

    def place(self, name: str, data: bytes, tmp_path: Path, *, url: str | None = None) -> str:
        url = url or self.url(name)
        if self.endpoint.seed is not None:
            self.endpoint.seed(url, data)
            return url
        src = tmp_path / f"put-{secrets.token_hex(4)}"
        src.write_bytes(data)
        source = Source(str(src), expected_sha256=_sha(data))
        self.proto.put(source, parse_url(url))
        assert source.verify() == _sha(data)
        return url

    def get(self, url: str, tmp_path: Path) -> tuple[bytes, str]:
        path = tmp_path / f"get-{secrets.token_hex(4)}"
        sink = Sink(str(path))
        try:
            self.proto.get(parse_url(url), sink)
        finally:
            sink.close()
        data = path.read_bytes()
        path.unlink()
        return data, sink.sha256
