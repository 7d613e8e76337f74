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
nothing behind, and an old object in place; that ``stat`` and ``checksum``
report the right sha256; that every declared capability is implemented;
resuming a partial download (when ``resume`` is declared); concurrent gets;
and, when the endpoint can inject faults, that a fault surfaces as a
``TransientError`` (which the engine retries) or is absorbed with the right
bytes. Read-only protocols (plain HTTP) give a ``seed`` function that places
bytes on the server by other means.

The kit calls the protocol as the engine does (``progress`` passed, the sink
committed, its announced size checked), and fails a test by name when the
protocol lets an exception other than ferry's escape: the engine takes those
for permanent failures and never retries them.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import os
import secrets
import socket
import threading
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .errors import FerryError, IntegrityError, NotFound, TransientError
from .protocol import Capability, Protocol, Sink, Source
from .registry import Registry
from .url import parse_url

__all__ = ["ConformanceEndpoint", "FaultProxy", "ProtocolConformance"]


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


class FaultProxy:
    """A TCP proxy on 127.0.0.1 in front of your server, for ``fault=``.

    Point ``base_url`` at ``proxy.port`` and pass ``fault=proxy.cut``: within
    ``with proxy.cut(n, after=40_000):`` the next ``n`` connections that carry
    more than ``after`` bytes (either way, counted from the call; pooled
    connections too) are closed right there, mid-transfer, as a dropped
    connection would be::

        proxy = FaultProxy(("127.0.0.1", server.port))
        ConformanceEndpoint(base_url=f"myproto://127.0.0.1:{proxy.port}/kit",
                            fault=proxy.cut)
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self._lock = threading.Lock()
        self._pending = 0
        self._after = 0
        self._since: dict[int, int] = {}  # connection number -> bytes since cut() began
        self._connections = 0
        self.cuts = 0  #: connections cut so far
        threading.Thread(target=self._accept, name="ferry-fault-proxy", daemon=True).start()

    @contextlib.contextmanager
    def cut(self, n: int, after: int = 40_000) -> Iterator[None]:
        with self._lock:
            self._pending, self._after = n, after
            self._since = dict.fromkeys(self._since, 0)
        try:
            yield
        finally:
            with self._lock:
                self._pending = 0

    def close(self) -> None:
        self._sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._sock.accept()
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                if self._sock.fileno() == -1:
                    return  # closed
                continue
            server.settimeout(None)
            with self._lock:
                self._connections += 1
                conn = self._connections
                self._since[conn] = 0
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(src, dst, conn), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, conn: int) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                with self._lock:
                    seen = self._since.get(conn, 0) + len(data)
                    self._since[conn] = seen
                    cut = self._pending > 0 and seen > self._after
                    if cut:
                        self._pending -= 1
                        self.cuts += 1
                if cut:
                    dst.sendall(data[: max(0, len(data) - (seen - self._after))])
                    break
                dst.sendall(data)
        with self._lock:
            self._since.pop(conn, None)
        for sock in (src, dst):  # one side ended or was cut: end both
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


#: the method that implements each capability (RESUME is a way of doing ``get``)
_METHODS = {
    Capability.GET: "get",
    Capability.PUT: "put",
    Capability.COPY: "copy",
    Capability.STAT: "stat",
    Capability.MKDIR: "mkdir",
    Capability.REMOVE: "remove",
    Capability.CHECKSUM: "checksum",
}
#: how the engine calls each method (placeholders: only the signature is checked)
_CALLS: dict[str, tuple[tuple[object, ...], dict[str, object]]] = {
    "get": (("url", "sink", "progress"), {}),
    "put": (("source", "url", "progress"), {}),
    "copy": (("src", "dst", "sha256"), {}),
    "stat": (("url",), {}),
    "mkdir": (("url",), {}),
    "remove": (("url",), {"recursive": True}),
    "checksum": (("url",), {}),
    "close": ((), {}),
}


class ProtocolConformance:
    """The shared tests. Subclasses provide the ``endpoint`` fixture."""

    __test__ = False

    def __init_subclass__(cls, **kwargs: object) -> None:
        """A subclass is collected by pytest unless it says ``__test__ = False``
        (forgetting ``__test__ = True`` used to run none of the tests, silently)."""
        super().__init_subclass__(**kwargs)
        if "__test__" not in cls.__dict__:
            cls.__test__ = True

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
                kit.proto.get(parse_url(kit.url("nope.bin")), sink, None)
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
            kit.proto.put(Source(str(src), expected_sha256="0" * 64), parse_url(url), None)
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

    def test_declared_capabilities_are_implemented(self, kit: _Kit) -> None:
        """The engine plans routes from the declaration: a declared capability whose
        method is ``Protocol``'s (which raises ``UnsupportedScheme``, or for
        ``checksum`` knows nothing) fails every transfer that relies on it."""
        cls = type(kit.unchecked)
        missing = [
            f"{cap} ({method})"
            for cap, method in _METHODS.items()
            if kit.can(cap) and getattr(cls, method) is getattr(Protocol, method)
        ]
        assert not missing, f"{cls.__name__} declares but does not implement: {', '.join(missing)}"
        for method, (args, kwargs) in _CALLS.items():  # the engine's calls must bind
            signature = inspect.signature(getattr(kit.unchecked, method))
            try:
                signature.bind(*args, **kwargs)
            except TypeError as exc:
                want = inspect.signature(getattr(Protocol(), method))
                pytest.fail(f"{cls.__name__}.{method}{signature}: {exc}; ferry's is {method}{want}")

    def test_checksums_are_the_objects(self, kit: _Kit, tmp_path: Path) -> None:
        """``stat`` and ``checksum`` report the sha256 of the bytes (hex), or nothing;
        a protocol that declares ``checksum`` knows it for an object it stored, also
        after an overwrite."""
        if not (kit.can(Capability.STAT) or kit.can(Capability.CHECKSUM)):
            pytest.skip("protocol has neither stat nor checksum")
        kit.need_place()
        url = None
        for version in (os.urandom(70_000), os.urandom(60_000)):
            url = kit.place("summed.bin", version, tmp_path, url=url)
            want = _sha(version)
            if kit.can(Capability.STAT):
                st = kit.proto.stat(parse_url(url))
                assert (st.size, st.is_dir) == (len(version), False)
                assert st.checksums.get("sha256") in (None, want), "stat: wrong sha256"
            if kit.can(Capability.CHECKSUM):
                got = kit.proto.checksum(parse_url(url))
                if kit.endpoint.seed is None:  # stored through put: it must know the sum
                    assert got == want, "checksum() does not give the sha256 of the stored object"
                assert got in (None, want), "checksum(): wrong sha256"

    def test_failed_overwrite_keeps_the_old_object(self, kit: _Kit, tmp_path: Path) -> None:
        """An upload that fails its sha256 check publishes nothing: the object that
        was there stays, whole (no truncate-then-write, no delete on failure)."""
        if not kit.can(Capability.PUT):
            pytest.skip("protocol cannot put")
        old = os.urandom(20_000)
        url = kit.place("kept.bin", old, tmp_path)
        src = tmp_path / "new.bin"
        src.write_bytes(os.urandom(50_000))
        with pytest.raises(IntegrityError):
            kit.proto.put(Source(str(src), expected_sha256="0" * 64), parse_url(url), None)
        assert kit.get(url, tmp_path) == (old, _sha(old))

    def test_resume_continues_a_partial_download(self, kit: _Kit, tmp_path: Path) -> None:
        """A protocol that declares ``resume`` continues a sink that already holds the
        first bytes (or resets it and starts over): the result is the object."""
        if not kit.can(Capability.RESUME):
            pytest.skip("protocol does not declare resume")
        kit.need_place()
        data = os.urandom(150_000)
        url = kit.place("resumed.bin", data, tmp_path)
        got = kit.get(url, tmp_path, held=data[:50_000])
        assert got == (data, _sha(data)), "not the object: did get() continue from sink.offset?"

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

    def test_transient_fault_during_put_publishes_nothing_partial(
        self, kit: _Kit, tmp_path: Path
    ) -> None:
        """An upload that a fault interrupts raises a ``TransientError`` (or absorbs
        the fault); either way the URL holds the whole object or nothing."""
        if kit.endpoint.fault is None:
            pytest.skip("endpoint cannot inject faults")
        if not kit.can(Capability.PUT):
            pytest.skip("protocol cannot put")
        data = os.urandom(100_000)
        src = tmp_path / "flaky-src.bin"
        src.write_bytes(data)
        url = kit.url("flaky-put.bin")
        with kit.endpoint.fault(1), contextlib.suppress(TransientError):
            kit.proto.put(Source(str(src), expected_sha256=_sha(data)), parse_url(url), None)
        try:
            got = kit.get(url, tmp_path)
        except NotFound:
            return
        assert got == (data, _sha(data)), "an interrupted put published a partial object"


class _Kit:
    """Helpers the tests share: unique URLs, placing and fetching bytes."""

    def __init__(self, endpoint: ConformanceEndpoint) -> None:
        self.endpoint = endpoint
        self.prefix = f"kit-{secrets.token_hex(4)}"
        self.scheme = parse_url(endpoint.base_url).scheme
        serving = endpoint.registry.entry_for(self.scheme)
        others = [
            f"{e.info.name} ({e.distribution})"
            for e in endpoint.registry.entries()
            if self.scheme in e.info.schemes and e is not serving
        ]
        if others:  # the author's own protocol may be one that is not tested
            warnings.warn(
                f"{self.scheme}:// is also declared by {', '.join(others)}; the kit tests"
                f" {serving.info.name} ({serving.distribution}), the one ferry uses",
                stacklevel=2,
            )
        self.unchecked = endpoint.registry.protocol(self.scheme)
        self.proto: Protocol = _Checked(self.unchecked)  # type: ignore[assignment]
        self.caps = endpoint.registry.capabilities(self.scheme)

    def can(self, cap: Capability) -> bool:
        return cap in self.caps

    def need_place(self) -> None:
        if self.endpoint.seed is None and not self.can(Capability.PUT):
            pytest.skip("no way to place objects: the protocol cannot put and there is no seed")

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
        reported: list[int] = []
        self.proto.put(source, parse_url(url), reported.append)  # as the engine calls it
        assert source.bytes_read == len(data), (
            f"put() read {source.bytes_read} of {len(data)} bytes through the Source:"
            " read source.reader() or source.chunks() (ferry hashes the bytes as they are"
            " read), not source.path"
        )
        assert source.verify() == _sha(data)
        assert sum(reported) >= len(data), (
            f"progress() was told of {sum(reported)} bytes, the put sent {len(data)}:"
            " call progress(n) for the n bytes of each write"
        )
        return url

    def get(self, url: str, tmp_path: Path, *, held: bytes = b"") -> tuple[bytes, str]:
        """The object's bytes and sha256, fetched as the engine fetches them: into a
        sink beside the destination (``held``: bytes it holds already), the size
        the protocol announced checked, then committed."""
        path = tmp_path / f"get-{secrets.token_hex(4)}"
        sink = Sink.beside(str(path), f"{path}.part")
        try:
            if held:
                sink.write(held)
            reported: list[int] = []
            self.proto.get(parse_url(url), sink, reported.append)
            announced = sink.expected_size
            assert announced is None or announced == sink.offset, (
                f"the protocol announced {announced} bytes (sink.set_size) but wrote"
                f" {sink.offset}: the engine fails that download as incomplete"
            )
            fetched = sink.offset if sink.restarts else sink.offset - len(held)
            assert sum(reported) == fetched or (sink.restarts and sum(reported) > fetched), (
                f"progress() was told of {sum(reported)} bytes, the get wrote {fetched}:"
                " call progress(n) for the n bytes of each write"
            )
            sink.commit(str(path))
        finally:
            sink.discard()
        data = path.read_bytes()
        path.unlink()
        return data, sink.sha256


class _Checked:
    """A protocol whose calls fail the test, by name, when they raise an exception
    that is none of ferry's: the engine reports it as a permanent failure (never
    retried, whatever the cause) and ``mkdir``/``remove`` requests stop on it."""

    def __init__(self, proto: Protocol) -> None:
        self._proto = proto

    def __getattr__(self, name: str) -> object:
        attr = getattr(self._proto, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args: object, **kwargs: object) -> object:
            try:
                return attr(*args, **kwargs)
            except FerryError:
                raise
            except Exception as exc:
                pytest.fail(
                    f"{type(self._proto).__name__}.{name}() raised {type(exc).__name__}: {exc}"
                    " - raise ferry's errors instead (TransientError to be retried), mapped"
                    " once from the library's exceptions"
                )

        return call
