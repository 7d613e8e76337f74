"""What a third-party protocol plugin's author runs into: declarations ferry would
misread, clashes with ferry's schemes, messages about broken plugins, and the
conformance kit failing broken plugins (and passing correct ones)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.client
import inspect
import json
import os
import subprocess
import sys
import threading
import types
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ferry.plugins.errors import (
    FerryError,
    IntegrityError,
    NotFound,
    PluginError,
    TransientError,
    UnsupportedScheme,
)
from ferry.plugins.protocol import (
    Capability,
    Protocol,
    ProtocolContext,
    ProtocolInfo,
    Sink,
    Source,
    Stat,
)
from ferry.plugins.registry import ProtocolEntry, Registry
from ferry.plugins.spec import hookimpl
from ferry.plugins.testing import ConformanceEndpoint, FaultProxy, ProtocolConformance, _Kit
from ferry.plugins.url import URL, parse_url

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


def test_plugins_lists_an_implementation_module_that_is_not_there(tmp_path: Path) -> None:
    """A typo in ``implementation`` showed as ok until the first transfer failed."""
    site = make_dist(tmp_path / "site", """
        from ferry.plugins.spec import Capability, ProtocolInfo, hookimpl

        @hookimpl
        def ferry_protocols():
            return [ProtocolInfo(name="mine", schemes=("mine",),
                                 capabilities=frozenset({Capability.GET}),
                                 implementation="myplug_protocl:Mine")]
        """)
    p = ferry("plugins", "--json", site=site, cache=tmp_path / "cache")
    protocols = {x["name"]: x for x in json.loads(p.stdout)["protocols"]}
    assert not protocols["mine"]["available"]
    assert protocols["mine"]["reason"] == "myplug_protocl (its implementation) is not installed"
    assert protocols["file"]["available"] and protocols["s3"]["available"]


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


def test_a_url_of_no_known_scheme_names_the_plugins_that_failed_to_load() -> None:
    """The plugin that would serve it may be one that failed: say which, and why."""

    class Broken:
        @hookimpl
        def ferry_protocols(self) -> list[ProtocolInfo]:
            raise ModuleNotFoundError("No module named 'mine_sdk'")

    reg = Registry(plugins={"mine": Broken()}, load_entrypoints=False)
    with pytest.raises(UnsupportedScheme) as info:
        reg.protocol("mine")
    assert str(info.value).endswith(
        "; plugins that failed to load: mine (ferry_protocols(): ModuleNotFoundError:"
        " No module named 'mine_sdk')"
    )


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


# -- the conformance kit ----------------------------------------------------------------


class DirStore(Protocol):
    """A correct little protocol: audit://NAME/key under the ``audit.root`` setting,
    each object's sha256 in a sidecar, published by rename after ``verify``."""

    name = "audit"
    schemes = ("audit",)
    faults = 0  # the next gets that fail transiently (the kit's ``fault``)

    def path(self, url: URL) -> Path:
        return Path(self.context.settings["audit.root"], url.host, url.path.lstrip("/"))

    def get(self, url: URL, sink: Sink, progress: Callable[[int], None] | None = None) -> None:
        if DirStore.faults:
            DirStore.faults -= 1
            raise TransientError(f"{url}: connection reset", url=str(url))
        try:
            data = self.path(url).read_bytes()
        except FileNotFoundError as exc:
            raise NotFound(f"{url}: no such object", url=str(url)) from exc
        sink.set_size(len(data))
        if sink.offset:  # resume: the sink holds the first bytes
            data = data[sink.offset :]
        sink.write(data)
        if progress:
            progress(len(data))

    def put(self, source: Source, url: URL, progress: Callable[[int], None] | None = None) -> None:
        path = self.path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(b"".join(source.chunks()))
        if progress:
            progress(source.size)
        try:
            sha = source.verify()
        except FerryError:
            tmp.unlink()
            raise
        path.with_name(path.name + ".sha256").write_text(sha)
        tmp.replace(path)

    def stat(self, url: URL) -> Stat:
        try:
            st = self.path(url).stat()
        except FileNotFoundError as exc:
            raise NotFound(f"{url}: no such object", url=str(url)) from exc
        sha = self.checksum(url)
        return Stat(size=st.st_size, checksums={"sha256": sha} if sha else {})

    def checksum(self, url: URL) -> str | None:
        sidecar = self.path(url).with_name(self.path(url).name + ".sha256")
        return sidecar.read_text() if sidecar.exists() else None

    def mkdir(self, url: URL) -> None:
        self.path(url).mkdir(parents=True, exist_ok=True)

    def remove(self, url: URL, recursive: bool = False) -> None:
        self.path(url).unlink(missing_ok=True)


class AnnouncesTooMuch(DirStore):
    def get(self, url: URL, sink: Sink, progress: Callable[[int], None] | None = None) -> None:
        super().get(url, sink, progress)
        sink.set_size(sink.offset + 1)


class NoProgressParameter(DirStore):
    def get(self, url: URL, sink: Sink) -> None:  # type: ignore[override]
        super().get(url, sink)


class StaleSidecar(DirStore):
    """Writes the sha256 sidecar only for a new object: an overwrite keeps the old sum."""

    def put(self, source: Source, url: URL, progress: Callable[[int], None] | None = None) -> None:
        sidecar = self.path(url).with_name(self.path(url).name + ".sha256")
        old = sidecar.read_text() if sidecar.exists() else None
        super().put(source, url, progress)
        if old:
            sidecar.write_text(old)


class WritesInPlace(DirStore):
    """Writes straight to the object's name and deletes it when ``verify`` fails."""

    def put(self, source: Source, url: URL, progress: Callable[[int], None] | None = None) -> None:
        path = self.path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"".join(source.chunks()))
        if progress:
            progress(source.size)
        try:
            source.verify()
        except FerryError:
            path.unlink()
            raise


class NoProgressReports(DirStore):
    def get(self, url: URL, sink: Sink, progress: Callable[[int], None] | None = None) -> None:
        super().get(url, sink)


class PartialOnFault(DirStore):
    """A dropped connection leaves the bytes sent so far under the object's name."""

    def put(self, source: Source, url: URL, progress: Callable[[int], None] | None = None) -> None:
        if not DirStore.faults:
            return super().put(source, url, progress)
        DirStore.faults -= 1
        self.path(url).parent.mkdir(parents=True, exist_ok=True)
        self.path(url).write_bytes(next(source.chunks(40_000)))
        raise TransientError(f"{url}: connection reset", url=str(url))


class PlainErrorOnFault(DirStore):
    def get(self, url: URL, sink: Sink, progress: Callable[[int], None] | None = None) -> None:
        if DirStore.faults:
            DirStore.faults -= 1
            raise ConnectionResetError(104, "Connection reset by peer")
        super().get(url, sink, progress)


class ReadsThePath(DirStore):
    """Uploads the file itself, not through the Source (which hashes what is read)."""

    def put(self, source: Source, url: URL, progress: Callable[[int], None] | None = None) -> None:
        self.path(url).parent.mkdir(parents=True, exist_ok=True)
        self.path(url).write_bytes(Path(source.path).read_bytes())


class NoPutProgress(DirStore):
    def put(self, source: Source, url: URL, progress: Callable[[int], None] | None = None) -> None:
        super().put(source, url)


class UnmappedErrors(DirStore):
    def stat(self, url: URL) -> Stat:
        return Stat(size=self.path(url).stat().st_size)  # FileNotFoundError escapes


class IgnoresOffset(DirStore):
    def get(self, url: URL, sink: Sink, progress: Callable[[int], None] | None = None) -> None:
        data = self.path(url).read_bytes()
        sink.write(data)
        if progress:
            progress(len(data))


ALL = frozenset({Capability.GET, Capability.PUT, Capability.STAT, Capability.MKDIR,
                 Capability.REMOVE, Capability.CHECKSUM})


def endpoint(root: Path, cls: type[Protocol], caps: frozenset[Capability] = ALL) -> ConformanceEndpoint:
    declared = ProtocolInfo(name="audit", schemes=("audit",), capabilities=caps,
                            implementation=f"{__name__}:{cls.__name__}")
    reg = Registry(ProtocolContext(settings={"audit.root": str(root)}),
                   plugins={"audit": plugin_module(a=declared)}, load_entrypoints=False)
    return ConformanceEndpoint(base_url="audit://kit/objects", registry=reg, fault=faulty)


class TestACorrectPluginPassesTheKit(ProtocolConformance):
    __test__ = True

    @pytest.fixture
    def endpoint(self, tmp_path: Path) -> ConformanceEndpoint:
        return endpoint(tmp_path / "root", DirStore, ALL | {Capability.RESUME})


@contextlib.contextmanager
def faulty(n: int) -> Iterator[None]:
    DirStore.faults = n
    try:
        yield
    finally:
        DirStore.faults = 0


def run_kit_test(name: str, ep: ConformanceEndpoint, tmp_path: Path) -> None:
    kit = _Kit(ep)
    try:
        test = getattr(ProtocolConformance(), name)
        test(kit, tmp_path) if "tmp_path" in inspect.signature(test).parameters else test(kit)
    finally:
        ep.registry.close()


@pytest.mark.parametrize(
    ("cls", "caps", "test", "why"),
    [
        (AnnouncesTooMuch, ALL, "test_roundtrip", "announced 200001 bytes"),
        (NoProgressParameter, ALL, "test_declared_capabilities_are_implemented",
         "NoProgressParameter.get(url: 'URL', sink: 'Sink') -> 'None': too many positional arguments;"
         " ferry's is get(url: 'URL', sink: 'Sink', progress:"),
        (NoProgressParameter, ALL, "test_roundtrip", "raised TypeError"),
        (NoProgressReports, ALL, "test_large_object", "progress() was told of 0 bytes"),
        (NoPutProgress, ALL, "test_large_object", "progress() was told of 0 bytes, the put"),
        (ReadsThePath, ALL, "test_roundtrip", "put() read 0 of 200000 bytes through the Source"),
        (StaleSidecar, ALL, "test_checksums_are_the_objects", "stat: wrong sha256"),
        (WritesInPlace, ALL, "test_failed_overwrite_keeps_the_old_object", "NotFound"),
        (PartialOnFault, ALL, "test_transient_fault_during_put_publishes_nothing_partial",
         "published a partial object"),
        (PlainErrorOnFault, ALL, "test_transient_fault_is_transient",
         "PlainErrorOnFault.get() raised ConnectionResetError"),
        (UnmappedErrors, ALL, "test_missing_is_not_found",
         "UnmappedErrors.stat() raised FileNotFoundError"),
        (DirStore, ALL | {Capability.COPY}, "test_declared_capabilities_are_implemented",
         "declares but does not implement: third-party-copy (copy)"),
        (IgnoresOffset, ALL | {Capability.RESUME}, "test_resume_continues_a_partial_download",
         "did get() continue from sink.offset"),
    ],
)
def test_the_kit_fails_a_broken_plugin(
    tmp_path: Path, cls: type[Protocol], caps: frozenset[Capability], test: str, why: str
) -> None:
    with pytest.raises((AssertionError, pytest.fail.Exception, FerryError)) as info:
        run_kit_test(test, endpoint(tmp_path / "root", cls, caps), tmp_path)
    assert why in f"{info.typename}: {info.value}"


# -- the example plugin (examples/ferry-store), the template authors copy -------------


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Protocol, Path]]:
    monkeypatch.setenv("FERRY_STORE_AUDIT", str(tmp_path / "root"))
    with Registry(use_cache=False) as reg:
        yield reg.protocol("store"), tmp_path / "root"


def put_bytes(proto: Protocol, url: str, data: bytes, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    proto.put(Source(str(src)), parse_url(url), None)


def test_example_get_checks_the_stored_sha256(
    store: tuple[Protocol, Path], tmp_path: Path
) -> None:
    """docs/plugins.md: a service that stores a sha256 compares it at the end of a get."""
    proto, root = store
    put_bytes(proto, "store://audit/a.bin", b"the bytes", tmp_path)
    (root / "a.bin").write_bytes(b"the bytez")  # changed behind the store's back
    sink = Sink(str(tmp_path / "got"))
    with pytest.raises(IntegrityError) as info:
        proto.get(parse_url("store://audit/a.bin"), sink, None)
    sink.close()
    assert info.value.expected == hashlib.sha256(b"the bytes").hexdigest()
    assert info.value.actual == hashlib.sha256(b"the bytez").hexdigest()


def test_example_stat_of_a_directory_says_so(store: tuple[Protocol, Path]) -> None:
    proto, _ = store
    proto.mkdir(parse_url("store://audit/sub/dir"))
    st = proto.stat(parse_url("store://audit/sub/dir"))
    assert st.is_dir and not st.checksums


def test_example_failed_put_leaves_no_sha256_sidecar(
    store: tuple[Protocol, Path], tmp_path: Path
) -> None:
    """The sum was written beside the object before the rename, and stayed when the
    rename failed: a later object there would report the wrong sha256."""
    proto, root = store
    (root / "taken.bin" / "inside").mkdir(parents=True)  # the rename onto it fails
    with pytest.raises(FerryError):
        put_bytes(proto, "store://audit/taken.bin", b"new bytes", tmp_path)
    assert sorted(p.name for p in root.iterdir()) == ["taken.bin"]


# -- docs/plugins.md --------------------------------------------------------------------

DOC = Path(__file__).parents[2] / "docs" / "plugins.md"


def doc_blocks() -> list[str]:
    blocks = DOC.read_text().split("```python\n")[1:]
    return [block.split("```", 1)[0] for block in blocks]


def test_the_docs_example_declaration_is_valid_and_its_message_quoted() -> None:
    space: dict[str, object] = {}
    exec(doc_blocks()[0], space)  # the hook module of section 1
    (declared,) = space["ferry_protocols"]()  # type: ignore[operator]
    reg = Registry(plugins={"myproto": plugin_module(a=declared)}, load_entrypoints=False)
    assert not reg.failures
    entry = ProtocolEntry("myproto", "ferry-myproto", declared)
    assert f"`unavailable: {entry.unavailable}`" in DOC.read_text()


def test_the_docs_example_protocol_implements_what_section_1_declares() -> None:
    space: dict[str, object] = {}
    exec(doc_blocks()[0], space)
    (declared,) = space["ferry_protocols"]()  # type: ignore[operator]
    exec(doc_blocks()[1], space)  # the protocol of section 3
    cls = space["MyProtocol"]
    kit = types.SimpleNamespace(
        unchecked=cls.__new__(cls),  # type: ignore[call-overload]  # (its __init__ needs the SDK)
        can=lambda cap: cap in declared.capabilities,
    )
    ProtocolConformance().test_declared_capabilities_are_implemented(kit)  # type: ignore[arg-type]


def test_a_kit_subclass_is_collected_without_saying_test_true() -> None:
    """Forgetting ``__test__ = True`` ran none of the kit's tests, without a word."""

    class TestForgot(ProtocolConformance):
        pass

    class Base(ProtocolConformance):
        __test__ = False

    assert TestForgot.__test__ is True and Base.__test__ is False
    assert ProtocolConformance.__test__ is False


# -- FaultProxy: a fault= for any TCP protocol ------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, FaultProxy]]:
    """A directory served over HTTP on 127.0.0.1, behind a FaultProxy."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proxy = FaultProxy(("127.0.0.1", server.server_address[1]))
    yield root, proxy
    proxy.close()
    server.shutdown()
    server.server_close()


def test_fault_proxy_cuts_the_next_connections_mid_transfer(
    served: tuple[Path, FaultProxy],
) -> None:
    root, proxy = served
    (root / "big.bin").write_bytes(os.urandom(200_000))
    url = f"http://127.0.0.1:{proxy.port}/big.bin"
    with proxy.cut(1, after=50_000):
        with pytest.raises(http.client.IncompleteRead) as info:
            urllib.request.urlopen(url, timeout=10).read()
        assert len(info.value.partial) < 50_000  # the response head came first
        assert urllib.request.urlopen(url, timeout=10).read() == (root / "big.bin").read_bytes()
    assert proxy.cuts == 1


def test_the_kit_retries_through_a_fault_proxy(
    served: tuple[Path, FaultProxy], tmp_path: Path
) -> None:
    """The http protocol behind a FaultProxy: the kit's fault test meets a real cut."""
    root, proxy = served

    def seed(url: str, data: bytes) -> None:
        path = root / urllib.parse.urlsplit(url).path.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    ep = ConformanceEndpoint(base_url=f"http://127.0.0.1:{proxy.port}/kit", seed=seed,
                             fault=proxy.cut)
    run_kit_test("test_transient_fault_is_transient", ep, tmp_path)
    assert proxy.cuts == 1


def test_the_kit_says_which_protocol_it_tests_when_a_scheme_is_declared_twice(
    tmp_path: Path,
) -> None:
    """An author whose protocol declares a scheme that another serves was testing the
    other one, without a word."""
    mine = ProtocolInfo(name="mine", schemes=("file",), capabilities=ALL,
                        implementation=f"{__name__}:DirStore")
    reg = Registry(plugins={"mine": plugin_module(a=mine)})
    ep = ConformanceEndpoint(base_url=f"file://{tmp_path}/kit", registry=reg)
    with pytest.warns(UserWarning, match=r"file:// is also declared by mine \(\(in process\)\);"
                      r" the kit tests file \(ferry\), the one ferry uses"):
        kit = _Kit(ep)
    assert type(kit.unchecked).__name__ == "FileProtocol"
