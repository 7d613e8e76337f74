"""Real servers on 127.0.0.1 for the tests, started and stopped by PID.

* :func:`start_nginx` - nginx with its own config, pid file, temp paths and
  logs in a work directory, serving a docroot.
* :func:`start_wsgidav` - wsgidav served by cheroot in a child process
  (``python servers.py wsgidav CONFIG``), anonymous or with one user.
* :class:`FaultServer` - a stdlib HTTP server in a thread that serves
  registered bytes and misbehaves on request: cuts bodies short, ignores
  ``Range``, answers an error status; it counts what it was asked.

A missing server binary or library raises :class:`ServerUnavailable`: tests
that need a server fail, they never skip. Every wait has a timeout.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

__all__ = [
    "FaultServer",
    "NginxServer",
    "Route",
    "ServerUnavailable",
    "WebdavServer",
    "free_port",
    "start_nginx",
    "start_wsgidav",
]

HOST = "127.0.0.1"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


class ServerUnavailable(RuntimeError):
    """A server the tests need is not installed (the message says what to install)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return "(no log)"


@dataclass
class ServerProcess:
    """A server child process, in its own process group, with its log file."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @classmethod
    def spawn(cls, name: str, argv: list[str], port: int, log: Path, cwd: Path) -> ServerProcess:
        """Start ``argv`` and wait until it accepts connections on ``port``."""
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = cls(name, proc, port, log)
        deadline = time.monotonic() + START_TIMEOUT
        while not _port_open(port):
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with status {proc.returncode} before it listened on"
                    f" {HOST}:{port}; its log:\n{_tail(log)}"
                )
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(
                    f"{name} did not listen on {HOST}:{port} within {START_TIMEOUT:g}s;"
                    f" its log:\n{_tail(log)}"
                )
            time.sleep(0.05)
        return server

    def stop(self) -> None:
        """SIGTERM the child, then SIGKILL its process group if it lingers."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)  # group id == our child's pid
                self.proc.wait(STOP_TIMEOUT)


def _spawn_on_free_port(
    name: str, make_argv: Callable[[int], list[str]], log: Path, cwd: Path, attempts: int = 3
) -> ServerProcess:
    """Spawn on a fresh free port, again if another process took the port meanwhile."""
    error: Exception | None = None
    for _ in range(attempts):
        port = free_port()
        try:
            return ServerProcess.spawn(name, make_argv(port), port, log, cwd)
        except RuntimeError as exc:
            error = exc
            if "in use" not in str(exc):
                raise
    assert error is not None
    raise error


# -- nginx ---------------------------------------------------------------------


@dataclass
class NginxServer:
    """nginx serving ``root`` at ``url`` (``http://127.0.0.1:PORT``)."""

    root: Path
    url: str
    port: int
    workdir: Path
    process: ServerProcess

    def stop(self) -> None:
        self.process.stop()


def nginx_binary() -> str:
    """``$FERRY_NGINX``, ``nginx`` on PATH, or the Debian package's /usr/sbin/nginx."""
    for candidate in (os.environ.get("FERRY_NGINX"), shutil.which("nginx"), "/usr/sbin/nginx"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise ServerUnavailable(
        "nginx is not installed: apt-get install nginx-light (or set FERRY_NGINX to its path)"
    )


_NGINX_CONF = """\
{user}daemon off;
master_process on;
worker_processes {workers};
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {work}/access.log combined buffer=64k flush=1s;
    client_body_temp_path {work}/tmp/client_body;
    proxy_temp_path {work}/tmp/proxy;
    fastcgi_temp_path {work}/tmp/fastcgi;
    uwsgi_temp_path {work}/tmp/uwsgi;
    scgi_temp_path {work}/tmp/scgi;
    types {{ text/html html; text/plain txt; }}
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    keepalive_timeout 60s;
    server {{
        listen {host}:{port};
        root {root};
        location / {{ autoindex on; }}
        # plain PUT and DELETE (no WebDAV collections), as an upload endpoint takes them
        location /upload/ {{
            dav_methods PUT DELETE;
            create_full_put_path on;
            client_max_body_size 0;
        }}
    }}
}}
"""


def start_nginx(workdir: Path, *, root: Path | None = None, workers: int = 1) -> NginxServer:
    """Start nginx on a free port with everything it writes under ``workdir``."""
    binary = nginx_binary()
    workdir = workdir.resolve()
    root = (root or workdir / "docroot").resolve()
    root.mkdir(parents=True, exist_ok=True)
    (workdir / "tmp").mkdir(parents=True, exist_ok=True)
    conf = workdir / "nginx.conf"
    # as root, nginx's workers would switch to "nobody", who cannot read a 0700 tmp dir
    user = "user root;\n" if os.geteuid() == 0 else ""

    def argv(port: int) -> list[str]:
        conf.write_text(
            _NGINX_CONF.format(
                user=user, workers=workers, work=workdir, host=HOST, port=port, root=root
            )
        )
        return [binary, "-p", f"{workdir}/", "-c", str(conf), "-e", str(workdir / "error.log")]

    process = _spawn_on_free_port("nginx", argv, workdir / "error.log", workdir)
    return NginxServer(root, f"http://{HOST}:{process.port}", process.port, workdir, process)


# -- wsgidav -------------------------------------------------------------------


@dataclass
class WebdavServer:
    """wsgidav serving ``root`` at ``url`` (``webdav://127.0.0.1:PORT``)."""

    root: Path
    url: str
    port: int
    user: str | None
    password: str | None
    process: ServerProcess

    @property
    def http_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def auth_url(self, user: str | None = None, password: str | None = None) -> str:
        """``webdav://user:password@127.0.0.1:PORT`` (the server's own user by default)."""
        return f"webdav://{user or self.user}:{password or self.password}@{HOST}:{self.port}"

    def stop(self) -> None:
        self.process.stop()


def start_wsgidav(
    workdir: Path, *, user: str | None = None, password: str | None = None
) -> WebdavServer:
    """Start wsgidav on cheroot; anonymous read/write unless ``user`` is given."""
    for module, package in (("wsgidav", "wsgidav"), ("cheroot", "cheroot")):
        if importlib.util.find_spec(module) is None:
            raise ServerUnavailable(f"{module} is not installed: pip install {package}")
    workdir = workdir.resolve()
    root = workdir / "root"
    root.mkdir(parents=True, exist_ok=True)
    users: object = True if user is None else {user: {"password": password or ""}}
    config_path = workdir / "wsgidav.json"

    def argv(port: int) -> list[str]:
        config = {
            "host": HOST,
            "port": port,
            "provider_mapping": {"/": str(root)},
            "simple_dc": {"user_mapping": {"*": users}},
            "http_authenticator": {
                "domain_controller": None,
                "accept_basic": True,
                "accept_digest": False,
                "default_to_digest": False,
            },
            "dir_browser": {"enable": False},
            "verbose": 2,
            "logging": {"enable": True},
        }
        config_path.write_text(json.dumps(config, indent=2))
        return [sys.executable, str(Path(__file__).resolve()), "wsgidav", str(config_path)]

    process = _spawn_on_free_port("wsgidav", argv, workdir / "wsgidav.log", workdir)
    return WebdavServer(
        root, f"webdav://{HOST}:{process.port}", process.port, user, password, process
    )


def _serve_wsgidav(config_path: str) -> None:
    """Child process: serve the wsgidav app in ``config_path`` with cheroot until killed."""
    from cheroot import wsgi
    from wsgidav.wsgidav_app import WsgiDAVApp

    config = json.loads(Path(config_path).read_text())
    app = WsgiDAVApp(config)
    server = wsgi.Server((config["host"], config["port"]), app, numthreads=16)
    server.start()  # until SIGTERM ends the process (nothing to clean up)


# -- fault-injecting HTTP server ------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One request the fault server received."""

    method: str
    range: str | None
    authorization: bool


@dataclass
class Route:
    """Bytes served at one path, and how to misbehave while serving them.

    ``drop_after``/``drop_times``: the first ``drop_times`` GETs announce the
    full Content-Length but the connection is closed after ``drop_after``
    body bytes. ``ranges``: honour ``Range`` (206) or ignore it (200, whole
    body); ``advertise_ranges`` sends ``Accept-Ranges: bytes`` (default: as
    ``ranges``). ``status``/``status_times``: the first ``status_times``
    requests get ``status`` with ``status_headers`` (e.g. Retry-After).
    ``delay``: seconds the server waits before it answers (a far or busy server).
    """

    data: bytes = b""
    drop_after: int | None = None
    drop_times: int = 0
    ranges: bool = True
    advertise_ranges: bool | None = None
    status: int | None = None
    status_times: int = 0
    status_headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    requests: list[Seen] = field(default_factory=list)
    _gets: int = 0

    @property
    def count(self) -> int:
        return len(self.requests)

    @property
    def range_requests(self) -> list[str]:
        return [r.range for r in self.requests if r.range]


class FaultServer:
    """A threaded HTTP/1.1 server on 127.0.0.1 whose paths misbehave as told."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.lock = threading.Lock()
        self._injected: list[tuple[int | None, int | None, dict[str, str]]] = []
        handler = type("Handler", (_FaultHandler,), {"fault": self})
        self._httpd = ThreadingHTTPServer((HOST, 0), handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = f"http://{HOST}:{self.port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()

    def add(self, path: str, data: bytes = b"", **behaviour: object) -> Route:
        """Serve ``data`` at ``path`` (decoded, e.g. ``/a b``) with the :class:`Route`
        ``behaviour``; return the route."""
        route = Route(data=data, **behaviour)  # type: ignore[arg-type]
        with self.lock:
            self.routes[path] = route
        return route

    @contextlib.contextmanager
    def inject(
        self,
        n: int,
        *,
        status: int | None = None,
        drop_after: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> Iterator[None]:
        """While open, the next ``n`` requests to any path fail: their GET body is
        cut after ``drop_after`` bytes, or they get ``status`` (503 by default)."""
        if drop_after is None and status is None:
            status = 503
        with self.lock:
            self._injected = [(status, drop_after, headers or {})] * n
        try:
            yield
        finally:
            with self.lock:
                self._injected = []

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(STOP_TIMEOUT)


class _FaultHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fault: FaultServer
    timeout = 30  # a stuck client cannot hold a handler thread forever

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:
        self._serve(body=True)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_PUT(self) -> None:
        """Store the body at the path (a new route, or new bytes for an existing one),
        unless an injected fault answers instead."""
        data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = unquote(urlsplit(self.path).path)
        fault = self.fault
        with fault.lock:
            injected = fault._injected.pop() if fault._injected else None
            if injected is None or injected[0] is None:
                route = fault.routes.setdefault(path, Route())
                route.data = data
                route.requests.append(Seen("PUT", None, "Authorization" in self.headers))
        if injected is not None and injected[0] is not None:
            self._reply(injected[0], b"injected fault\n", injected[2])
            return
        self._reply(201, b"")

    def do_DELETE(self) -> None:
        path = unquote(urlsplit(self.path).path)
        with self.fault.lock:
            route = self.fault.routes.pop(path, None)
        self._reply(404 if route is None else 204, b"")

    def _reply(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _serve(self, body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        fault = self.fault
        with fault.lock:
            injected = fault._injected.pop() if fault._injected else None
            route = fault.routes.get(path)
            if route is not None:
                route.requests.append(
                    Seen(self.command, self.headers.get("Range"), "Authorization" in self.headers)
                )
                nth = route.count
                if body:
                    route._gets += 1
                gets = route._gets
        if route is not None and route.delay:
            time.sleep(route.delay)
        if route is None:
            self._reply(404, b"not found\n")
            return
        status, status_headers = route.status, route.status_headers
        if status is None or nth > route.status_times:
            status = None
        cut = route.drop_after if gets <= route.drop_times else None
        if injected is not None:
            status = injected[0] or status
            cut = injected[1] if injected[1] is not None else cut
            status_headers = injected[2] or status_headers
        if status is not None:
            self._reply(status, b"injected fault\n", status_headers)
            return
        data = route.data
        total = len(data)
        headers = {"Last-Modified": "Tue, 01 Jul 2025 12:00:00 GMT"}
        advertise = route.ranges if route.advertise_ranges is None else route.advertise_ranges
        if advertise:
            headers["Accept-Ranges"] = "bytes"
        code, start, end = 200, 0, total
        wanted = self.headers.get("Range")
        if wanted and route.ranges:
            span = _parse_range(wanted, total)
            if span is None:
                self._reply(416, b"", {"Content-Range": f"bytes */{total}"})
                return
            start, end = span
            code = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{total}"
        payload = data[start:end]
        self.send_response(code)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if not body:
            return
        if cut is not None and cut < len(payload):
            self.wfile.write(payload[:cut])
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(payload)


def _parse_range(value: str, total: int) -> tuple[int, int] | None:
    """``bytes=a-b``, ``bytes=a-`` or ``bytes=-n`` as [start, end); None if unsatisfiable."""
    unit, _, spec = value.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        return None
    first, _, last = spec.strip().partition("-")
    if not first:
        n = int(last)
        return (max(0, total - n), total) if n else None
    start = int(first)
    end = min(total, int(last) + 1) if last else total
    if start >= total or start >= end:
        return None
    return start, end


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "wsgidav":
        _serve_wsgidav(sys.argv[2])
    else:
        sys.exit(f"usage: {sys.argv[0]} wsgidav CONFIG.json")


# -- a forward HTTP proxy (an Open Science Grid site's Squid, or $http_proxy) ---------


class ForwardProxy:
    """A forward proxy on 127.0.0.1 for plain http: it fetches each absolute-form
    ``GET http://host/path`` from the origin and relays the answer; ``seen``
    lists the URLs it was asked for. ``broken``: answer every request with 502."""

    def __init__(self, *, broken: bool = False) -> None:
        self.seen: list[str] = []
        self.broken = broken
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:
                import http.client

                proxy.seen.append(self.path)
                if proxy.broken or not self.path.startswith("http://"):
                    body = b"proxy says no\n"
                    self.send_response(502)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                parts = urlsplit(self.path)
                conn = http.client.HTTPConnection(parts.netloc, timeout=30)
                try:
                    target = parts.path + (f"?{parts.query}" if parts.query else "")
                    headers = {
                        k: v for k, v in self.headers.items() if k.lower() != "proxy-connection"
                    }
                    conn.request("GET", target or "/", headers=headers)
                    answer = conn.getresponse()
                    body = answer.read()
                finally:
                    conn.close()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._httpd = ThreadingHTTPServer((HOST, 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.location = f"{HOST}:{self.port}"  # as $OSG_SQUID_LOCATION names it
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
