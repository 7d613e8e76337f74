"""``sftp://`` and ``scp://`` over SFTP, with paramiko for SSH.

Both schemes name a path on an SSH server (``scp://user@host:port/abs/path``
as Pegasus writes it); both are served over SFTP. One SSH connection
(paramiko ``Transport``) per (host, port, user) is shared by every thread,
with a small pool of SFTP channels on it so that parallel transfers do not
wait for each other. A dead connection is replaced once, transparently.

SFTP itself is spoken here, on the paramiko channel (a few hundred lines of
protocol version 3): paramiko's ``SFTPClient`` waits for a reply after almost
every request, and its read-ahead keeps 32 KiB requests in a list it scans
per read. This module keeps many large requests in flight (sizes from the
server's ``limits@openssh.com``), writes and closes a file in one round trip,
renames with ``posix-rename@openssh.com``, and reads replies straight into
the engine's sink. Uploads go to ``<name>.ferry-part-<hex>`` and are renamed
into place only after :meth:`Source.verify`; parents are created only when an
open fails with "no such file".

Host keys are checked against ``~/.ssh/known_hosts`` and the configured
``known_hosts``; an unknown or changed key is refused unless the credentials
file says ``host_key_policy = accept-new`` (or ``auto-add``). paramiko is
imported only when :class:`SftpProtocol` is built. Its exceptions are mapped
once, in :func:`map_paramiko_exceptions`.
"""

from __future__ import annotations

import base64
import contextlib
import getpass
import hashlib
import logging
import os
import queue
import re
import secrets
import shlex
import socket
import stat as stat_mod
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import (
    AuthError,
    ConfigError,
    ConnectError,
    IncompleteTransfer,
    NotFound,
    PermanentError,
    PermissionDenied,
    TransferError,
    TransferTimeout,
    UnsupportedScheme,
)
from .protocol import Protocol, ProtocolContext, Sink, Source, Stat, current_site, site_variable
from .url import URL, parse_url

if TYPE_CHECKING:
    import paramiko

__all__ = ["SftpProtocol", "map_paramiko_exceptions"]

log = logging.getLogger("ferry.plugins.sftp")


class _SkipInvoke:
    """A meta path finder that makes ``import invoke`` fail while paramiko is first imported.

    paramiko.config imports invoke (and its vendored yaml) only to run
    ``Match exec`` lines of an ssh_config, which ferry never reads; that import
    is ~0.1 s of paramiko's ~0.3 s start-up on a node. The finder is removed
    right after, so a later ``import invoke`` works as usual.
    """

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "invoke" or name.startswith("invoke."):
            raise ModuleNotFoundError(f"{name} skipped while ferry imports paramiko")
        return None


def _import_paramiko() -> None:
    """Import paramiko (once) without its optional invoke dependency."""
    if "paramiko" in sys.modules or "invoke" in sys.modules:
        import paramiko  # noqa: F401

        return
    finder = _SkipInvoke()
    sys.meta_path.insert(0, finder)
    try:
        import paramiko  # noqa: F401
    finally:
        sys.meta_path.remove(finder)


# -- tuning (measured against OpenSSH 9.2 on 127.0.0.1, see benchmarks/SFTP.md) -------

#: SSH channel receive window and the largest SSH packet we accept
WINDOW = 16 << 20
MAX_PACKET = 256 << 10
#: request sizes without ``limits@openssh.com`` (what every server takes)
SAFE_REQUEST = 32 << 10
#: upper bound for read/write request sizes when the server announces larger ones
MAX_REQUEST = 255 << 10
#: the largest SFTP message accepted from a server (OpenSSH sends at most 256 KiB)
MAX_MESSAGE = 1 << 24
#: bytes of read requests in flight per download
READ_AHEAD = 8 << 20
#: bytes of write requests not yet acknowledged per upload
WRITE_BEHIND = 8 << 20
#: ask the channel for this much per recv (everything it holds)
DRAIN = 1 << 30
#: a last write smaller than this shares its SSH packets with the close
QUEUE_WRITE_BELOW = 128 << 10
#: local read size for uploads, and buffers a reader thread fills ahead
CHUNK = 1 << 20
READ_BUFFERS = 3
#: uploads larger than this read and hash the source on a second thread
THREADED_READ_AFTER = 4 << 20
#: SFTP channels per connection (OpenSSH's MaxSessions defaults to 10)
MAX_CHANNELS = 8
#: ciphers tried first: AES-GCM needs no separate MAC pass (fastest in paramiko)
FAST_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes256-ctr")
HOST_KEY_POLICIES = ("reject", "accept-new", "auto-add")

# -- SFTP version 3 (draft-ietf-secsh-filexfer-02) ------------------------------------

FXP_INIT, FXP_VERSION, FXP_OPEN, FXP_CLOSE, FXP_READ, FXP_WRITE = 1, 2, 3, 4, 5, 6
FXP_LSTAT, FXP_FSTAT, FXP_OPENDIR, FXP_READDIR, FXP_REMOVE = 7, 8, 11, 12, 13
FXP_MKDIR, FXP_RMDIR, FXP_STAT, FXP_RENAME = 14, 15, 17, 18
FXP_STATUS, FXP_HANDLE, FXP_DATA, FXP_NAME, FXP_ATTRS = 101, 102, 103, 104, 105
FXP_EXTENDED, FXP_EXTENDED_REPLY = 200, 201

FXF_READ, FXF_WRITE, FXF_CREAT, FXF_TRUNC = 0x01, 0x02, 0x08, 0x10

FX_OK, FX_EOF, FX_NO_SUCH_FILE, FX_PERMISSION_DENIED, FX_FAILURE = 0, 1, 2, 3, 4
FX_BAD_MESSAGE, FX_NO_CONNECTION, FX_CONNECTION_LOST, FX_OP_UNSUPPORTED = 5, 6, 7, 8

ATTR_SIZE, ATTR_UIDGID, ATTR_PERMISSIONS, ATTR_ACMODTIME = 0x1, 0x2, 0x4, 0x8
ATTR_EXTENDED = 0x80000000

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_HEAD = struct.Struct(">IBI")  # length, type, request id


class SftpStatus(Exception):
    """An SFTP request failed with a status code (``FX_*``)."""

    def __init__(self, code: int, message: str, op: str = "", path: str = "") -> None:
        super().__init__(message or f"status {code}")
        self.code = code
        self.op = op
        self.path = path


class ConnectionLost(Exception):
    """The SSH channel or connection went away in the middle of an operation."""


class ShortFile(Exception):
    """The file ended before the size its stat announced (it changed while read)."""


class LocalIOError(Exception):
    """Reading the local source or writing the local sink failed (not the network)."""

    def __init__(self, exc: OSError, what: str, path: str) -> None:
        super().__init__(str(exc))
        self.exc = exc
        self.what = what
        self.path = path


class NoSftp(Exception):
    """The server does not run an SFTP subsystem for this account."""


class HostKeyRejected(Exception):
    """The server's host key is unknown or changed; the message says what to do."""


# -- error mapping ---------------------------------------------------------------------


def _cause(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


@contextlib.contextmanager
def map_paramiko_exceptions(url: URL, what: str, *, connecting: bool = False) -> Iterator[None]:
    """Turn paramiko, socket and SFTP errors into the ferry error tree.

    ``what`` says what was being done ("get", "put", "stat", ...); with
    ``connecting`` network errors are :class:`ConnectError` (nothing moved
    yet), otherwise a lost connection is an :class:`IncompleteTransfer`.
    """
    import paramiko

    kw: dict[str, Any] = {"url": str(url), "plugin": "sftp"}
    where = f"{what} {url}"
    try:
        yield
    except TransferError:
        raise
    except SftpStatus as exc:
        msg = f"{where}: {_cause(exc)}"
        if exc.code in (FX_NO_SUCH_FILE, FX_EOF):
            raise NotFound(msg, **kw) from exc
        if exc.code == FX_PERMISSION_DENIED:
            raise PermissionDenied(msg, **kw) from exc
        if exc.code in (FX_NO_CONNECTION, FX_CONNECTION_LOST):
            raise IncompleteTransfer(f"{where}: connection lost: {_cause(exc)}", **kw) from exc
        if exc.code == FX_OP_UNSUPPORTED:
            raise UnsupportedScheme(f"{where}: the server does not support it", **kw) from exc
        raise PermanentError(msg, **kw) from exc
    except LocalIOError as exc:
        from .file import map_os_exceptions

        with map_os_exceptions(f"file://{exc.path}", exc.what):
            raise exc.exc from None
    except NoSftp as exc:
        raise PermanentError(f"{where}: {exc}", **kw) from exc
    except ShortFile as exc:
        raise IncompleteTransfer(f"{where}: {exc} (it changed while read)", **kw) from exc
    except HostKeyRejected as exc:
        raise AuthError(f"{where}: {exc}", **kw) from exc
    except paramiko.BadHostKeyException as exc:
        raise AuthError(f"{where}: host key changed: {_cause(exc)}", **kw) from exc
    except paramiko.AuthenticationException as exc:
        raise AuthError(f"{where}: authentication failed: {_cause(exc)}", **kw) from exc
    except FileNotFoundError as exc:
        raise NotFound(f"{where}: {exc.strerror or _cause(exc)}", **kw) from exc
    except PermissionError as exc:
        raise PermissionDenied(f"{where}: {exc.strerror or _cause(exc)}", **kw) from exc
    except TimeoutError as exc:
        if connecting:
            raise ConnectError(f"{where}: cannot connect: timed out", **kw) from exc
        raise TransferTimeout(f"{where}: the server stopped answering", **kw) from exc
    except paramiko.ChannelException as exc:
        raise ConnectError(f"{where}: cannot open an SSH channel: {_cause(exc)}", **kw) from exc
    except (ConnectionLost, EOFError) as exc:
        raise IncompleteTransfer(f"{where}: connection lost: {_cause(exc)}", **kw) from exc
    except (paramiko.SSHException, OSError) as exc:
        # NoValidConnectionsError, refused, reset, "Error reading SSH protocol banner", ...
        if connecting:
            raise ConnectError(f"{where}: cannot connect: {_cause(exc)}", **kw) from exc
        raise IncompleteTransfer(f"{where}: connection lost: {_cause(exc)}", **kw) from exc


# -- settings ---------------------------------------------------------------------------


def _flag(value: str | None, default: bool) -> bool:
    if value is None or not str(value).strip():
        return default
    return str(value).strip().lower() in ("1", "yes", "true", "on")


@dataclass(frozen=True)
class _Settings:
    """What the credentials file says about one endpoint (secrets stay ``Secret``)."""

    username: str | None = None
    key: str | None = None
    passphrase: str | None = None  # a Secret
    password: str | None = None  # a Secret
    known_hosts: str | None = None
    host_key_policy: str = "reject"
    allow_agent: bool = True
    look_for_keys: bool = True

    @classmethod
    def from_section(cls, section: dict[str, str], url: URL) -> _Settings:
        policy = str(section.get("host_key_policy") or "reject").strip().lower()
        if policy not in HOST_KEY_POLICIES:
            raise ConfigError(
                f"{url}: host_key_policy {policy!r} in the credentials file is not one of"
                f" {', '.join(HOST_KEY_POLICIES)}"
            )
        key = section.get("key") or section.get("key_file") or section.get("private_key")
        known = section.get("known_hosts")
        return cls(
            username=section.get("username") or None,
            key=os.path.expanduser(str(key)) if key else None,
            passphrase=section.get("passphrase") or None,
            password=section.get("password") or None,
            known_hosts=os.path.expanduser(str(known)) if known else None,
            host_key_policy=policy,
            allow_agent=_flag(section.get("allow_agent"), True),
            look_for_keys=_flag(section.get("look_for_keys"), True),
        )


def _reveal(value: str | None) -> str | None:
    if value is None:
        return None
    reveal = getattr(value, "reveal", None)
    return reveal() if callable(reveal) else str.__str__(value)


def _load_key(path: str, passphrase: bytes | None) -> paramiko.PKey:
    """The private key at ``path``; a passphrase is ignored for an unencrypted key
    (as OpenSSH does: one ``passphrase`` may be meant for another of the keys tried)."""
    import paramiko

    try:
        return paramiko.PKey.from_path(path, passphrase)
    except TypeError:  # cryptography: "Password was given but private key is not encrypted"
        if passphrase is None:
            raise
        return paramiko.PKey.from_path(path, None)


# -- host keys --------------------------------------------------------------------------

_KNOWN_HOSTS_LOCK = threading.Lock()


def fingerprint(key: paramiko.PKey) -> str:
    """``SHA256:<base64>`` as ``ssh-keygen -l`` prints it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _host_name(host: str, port: int) -> str:
    """The known_hosts name: ``host`` on port 22, else ``[host]:port``."""
    host = host.strip("[]")
    return host if port == 22 else f"[{host}]:{port}"


def _host_patterns_match(patterns: list[str], name: str) -> bool:
    """OpenSSH's known_hosts host patterns: ``*`` and ``?`` wildcards, case-insensitive,
    and a matching ``!pattern`` rules the line out."""
    hit = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = pattern[1:] if negated else pattern
        regex = "".join(
            ".*" if c == "*" else "." if c == "?" else re.escape(c) for c in body.lower()
        )
        if re.fullmatch(regex, name.lower()):
            if negated:
                return False
            hit = True
    return hit


def _load_known_hosts(
    path: str,
) -> tuple[paramiko.HostKeys, list[tuple[list[str], paramiko.PKey]], list[str]]:
    """A known_hosts file: its keys by host name, its lines with host patterns
    (wildcards or negations), and the base64 blobs of its ``@revoked`` lines.

    Line by line, skipping what cannot be read (paramiko's own ``load`` gives up on
    the whole file at the first malformed or marker line)."""
    import paramiko

    table = paramiko.HostKeys()
    wild: list[tuple[list[str], paramiko.PKey]] = []
    revoked = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            if fields[0].startswith("@"):  # @revoked, @cert-authority
                if fields[0] == "@revoked" and len(fields) >= 4:
                    revoked.append(fields[3])
                continue
            try:
                entry = paramiko.hostkeys.HostKeyEntry.from_line(" ".join(fields[:3]))
            except Exception:  # a malformed line or unknown key type: skipped, as ssh does
                continue
            if entry is None or entry.key is None:
                continue
            if any(c in host for host in entry.hostnames for c in "*?!"):
                wild.append((entry.hostnames, entry.key))
                continue
            for host in entry.hostnames:
                table.add(host, entry.key.get_name(), entry.key)
    return table, wild, revoked


class _HostKeys:
    """known_hosts files for one endpoint: lookup, policy, and accept-new writes.

    As OpenSSH, a key is accepted when any file lists it for the host (a stale line
    in one file does not veto the right key in another), and refused when a file
    marks it ``@revoked``."""

    def __init__(self, settings: _Settings) -> None:
        import paramiko

        self.settings = settings
        self.user_file = os.path.expanduser("~/.ssh/known_hosts")
        # OpenSSH's default GlobalKnownHostsFile and UserKnownHostsFile, then ferry's own
        defaults = (
            "/etc/ssh/ssh_known_hosts",
            "/etc/ssh/ssh_known_hosts2",
            self.user_file,
            self.user_file + "2",
        )
        self.files = [
            p for p in dict.fromkeys((*defaults, settings.known_hosts)) if p and os.path.isfile(p)
        ]
        self.tables: list[tuple[str, paramiko.HostKeys]] = []
        self.wild: list[tuple[str, list[str], paramiko.PKey]] = []  # (file, patterns, key)
        self.revoked: set[str] = set()  # base64 key blobs under @revoked markers
        for path in self.files:
            try:
                table, wild, revoked = _load_known_hosts(path)
            except OSError:
                continue
            self.tables.append((path, table))
            self.wild += [(path, patterns, key) for patterns, key in wild]
            self.revoked.update(revoked)
        self.accepted = paramiko.HostKeys()  # accepted by the policy in this process
        self.tables.append(("", self.accepted))

    def _known(self, name: str) -> list[tuple[str, paramiko.PKey]]:
        """(file, key) for every key the files list for ``name``."""
        found = []
        for path, table in self.tables:
            entry = table.lookup(name)
            if entry:
                found += [(path, entry[kind]) for kind in entry.keys()]
        found += [(path, key) for path, pats, key in self.wild if _host_patterns_match(pats, name)]
        return found

    def known_types(self, name: str) -> list[str]:
        return list(dict.fromkeys(key.get_name() for _, key in self._known(name)))

    def check(self, name: str, key: paramiko.PKey) -> None:
        """Accept ``key`` for ``name`` or raise :class:`HostKeyRejected`."""
        kind = key.get_name()
        if key.get_base64() in self.revoked:
            raise HostKeyRejected(
                f"host key for {name} ({kind} {fingerprint(key)}) is marked @revoked in"
                " known_hosts; refusing to connect"
            )
        same_kind = [(path, k) for path, k in self._known(name) if k.get_name() == kind]
        if any(k.asbytes() == key.asbytes() for _, k in same_kind):
            return
        if not same_kind and name.startswith("["):
            # as OpenSSH: on another port than 22, the same key listed for the bare host
            # is accepted too (a different one there makes the host unknown, not changed)
            bare = name[1:].partition("]:")[0]
            if any(k.asbytes() == key.asbytes() for _, k in self._known(bare)):
                return
        if same_kind:
            path, known = same_kind[0]
            raise HostKeyRejected(
                f"host key for {name} CHANGED: the server offers {kind} {fingerprint(key)},"
                f" {path} has {fingerprint(known)}; if the change is expected, remove the"
                f" old entry (ssh-keygen -R '{name}' -f {path}) and accept the new one"
            )
        policy = self.settings.host_key_policy
        if policy == "reject":
            host, _, port = name.strip("[").partition("]:")
            scan = f"ssh-keyscan -p {port} {host}" if port else f"ssh-keyscan {host}"
            target = self.settings.known_hosts or "~/.ssh/known_hosts"
            raise HostKeyRejected(
                f"host key for {name} is not known ({kind} {fingerprint(key)}); check the"
                f" fingerprint and add it ({scan} >> {target}) or set host_key_policy ="
                " accept-new in the credentials file"
            )
        self.accepted.add(name, kind, key)
        if policy == "accept-new":
            self._append(name, key)
        log.warning("sftp: accepted new host key for %s: %s %s", name, kind, fingerprint(key))

    def _append(self, name: str, key: paramiko.PKey) -> None:
        path = self.settings.known_hosts or self.user_file
        line = f"{name} {key.get_name()} {key.get_base64()}\n"
        with _KNOWN_HOSTS_LOCK:
            parent = os.path.dirname(path)
            if parent:
                os.makedirs(parent, mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a") as f:
                f.write(line)


# -- the SFTP session on one channel ----------------------------------------------------


class _Reader:
    """Reads SFTP fields from a reply body."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: memoryview, pos: int = 0) -> None:
        self.buf = buf
        self.pos = pos

    def u32(self) -> int:
        (v,) = _U32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return v

    def u64(self) -> int:
        (v,) = _U64.unpack_from(self.buf, self.pos)
        self.pos += 8
        return v

    def string(self) -> memoryview:
        n = self.u32()
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def text(self) -> str:
        return bytes(self.string()).decode("utf-8", "replace")

    def name(self) -> str:
        """A file name: bytes that are not UTF-8 survive the round trip (surrogateescape)."""
        return bytes(self.string()).decode("utf-8", "surrogateescape")

    def attrs(self) -> dict[str, int]:
        flags = self.u32()
        out: dict[str, int] = {}
        if flags & ATTR_SIZE:
            out["size"] = self.u64()
        if flags & ATTR_UIDGID:
            out["uid"] = self.u32()
            out["gid"] = self.u32()
        if flags & ATTR_PERMISSIONS:
            out["mode"] = self.u32()
        if flags & ATTR_ACMODTIME:
            out["atime"] = self.u32()
            out["mtime"] = self.u32()
        if flags & ATTR_EXTENDED:
            for _ in range(self.u32()):
                self.string()
                self.string()
        return out


def _s(data: bytes | str) -> bytes:
    """An SFTP string: uint32 length + bytes."""
    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
    return _U32.pack(len(raw)) + raw


_NO_ATTRS = _U32.pack(0)


class _Session:
    """SFTP v3 on one SSH channel, used by one thread at a time.

    Requests are sent without waiting; :meth:`wait` reads replies until the
    one asked for arrives, keeping others for later and dropping replies to
    requests nobody waits for (an asynchronous close, reads past the end).
    """

    def __init__(self, channel: paramiko.Channel, generation: int) -> None:
        self.ch = channel
        self.generation = generation
        self.broken = False
        self.extensions: dict[str, bytes] = {}
        self.max_read = SAFE_REQUEST
        self.max_write = SAFE_REQUEST
        self._next = 1
        self._buf: bytes = b""
        self._mv = memoryview(b"")
        self._pos = 0
        self._stash: dict[int, tuple[int, memoryview]] = {}
        self._drop: set[int] = set()
        self._out: list[bytes] = []  # small requests not sent yet (see queue)

    # -- framing -------------------------------------------------------------

    def start(self) -> None:
        self._sendall(_U32.pack(5) + bytes([FXP_INIT]) + _U32.pack(3))
        (n,) = _U32.unpack(self._take(4))
        body = memoryview(self._take(n)) if 5 <= n <= MAX_MESSAGE else None
        if body is None or body[0] != FXP_VERSION:
            self.broken = True
            raise NoSftp(
                "the sftp subsystem did not answer with SFTP (does a login script print"
                " text, or is SFTP disabled for this account?)"
            )
        r = _Reader(body, 5)
        while r.pos < len(body):
            name = r.text()
            self.extensions[name] = bytes(r.string())
        if "limits@openssh.com" in self.extensions:
            t, body = self.wait(self.send(FXP_EXTENDED, _s("limits@openssh.com")))
            if t == FXP_EXTENDED_REPLY:
                r = _Reader(body, 5)
                r.u64()  # max packet length
                max_read, max_write = r.u64(), r.u64()
                if max_read:
                    self.max_read = min(max_read, MAX_REQUEST)
                if max_write:
                    self.max_write = min(max_write, MAX_REQUEST)

    def _take(self, n: int) -> memoryview | bytes:
        """Exactly ``n`` bytes from the channel."""
        avail = len(self._buf) - self._pos
        if avail >= n:
            out = self._mv[self._pos : self._pos + n]
            self._pos += n
            return out
        parts: list[memoryview | bytes] = [self._mv[self._pos :]] if avail else []
        need = n - avail
        self._buf, self._mv, self._pos = b"", memoryview(b""), 0
        recv = self.ch.recv
        while need > 0:
            # take everything buffered: paramiko's pipe deletes what a smaller read
            # takes from the front of an array (a memmove of the rest, per read)
            chunk = recv(DRAIN)
            if not chunk:
                self.broken = True
                raise ConnectionLost("the SSH channel closed")
            if len(chunk) > need:
                self._buf, self._mv, self._pos = chunk, memoryview(chunk), need
                parts.append(self._mv[:need])
                need = 0
            else:
                parts.append(chunk)
                need -= len(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _packet(self) -> memoryview:
        (n,) = _U32.unpack(self._take(4))
        if not 5 <= n <= MAX_MESSAGE:
            self.broken = True
            raise ConnectionLost(f"garbled SFTP stream (a message of {n} bytes)")
        return memoryview(self._take(n))

    def queue(self, kind: int, payload: bytes) -> int:
        """Pack a small request to go out with the next :meth:`flush` (or :meth:`wait`):
        several requests then share one SSH packet."""
        rid = self._next
        self._next = (rid + 1) & 0xFFFFFFFF or 1
        self._out.append(_HEAD.pack(len(payload) + 5, kind, rid) + payload)
        return rid

    def flush(self) -> None:
        if self._out:
            data = self._out[0] if len(self._out) == 1 else b"".join(self._out)
            self._out.clear()
            self._sendall(data)

    def send(self, kind: int, payload: bytes) -> int:
        rid = self.queue(kind, payload)
        self.flush()
        return rid

    def _sendall(self, data: bytes) -> None:
        """``channel.sendall`` without its copy of the rest after every packet."""
        view = memoryview(data)
        pos, end = 0, len(data)
        send = self.ch.send
        try:
            while pos < end:
                # paramiko trims to the window and packet size; a memoryview slice is free
                sent = send(view[pos:])
                if not sent:
                    raise ConnectionLost("the SSH channel closed")
                pos += sent
        except Exception:
            self.broken = True
            raise

    def wait(self, rid: int) -> tuple[int, memoryview]:
        """The reply (type, body) to request ``rid``; the body starts at the type byte."""
        got = self._stash.pop(rid, None)
        if got is not None:
            return got
        self.flush()
        try:
            while True:
                body = self._packet()
                kind = body[0]
                (num,) = _U32.unpack_from(body, 1)
                if num == rid:
                    return kind, body
                if num in self._drop:
                    self._drop.discard(num)
                else:
                    self._stash[num] = (kind, body)
        except (ConnectionLost, SftpStatus):
            raise
        except Exception:
            self.broken = True
            raise

    def forget(self, rid: int) -> None:
        """Nobody will wait for ``rid``: drop its reply when it comes."""
        if self._stash.pop(rid, None) is None:
            self._drop.add(rid)

    @staticmethod
    def status(body: memoryview, op: str, path: str) -> None:
        """Raise :class:`SftpStatus` unless ``body`` is FX_OK."""
        if body[0] != FXP_STATUS:
            raise SftpStatus(FX_BAD_MESSAGE, f"unexpected reply type {body[0]}", op, path)
        r = _Reader(body, 5)
        code = r.u32()
        if code == FX_OK:
            return
        try:
            text = r.text()
        except struct.error:
            text = ""
        raise SftpStatus(code, _status_text(code, text), op, path)

    def call(self, kind: int, payload: bytes, op: str, path: str) -> tuple[int, memoryview]:
        t, body = self.wait(self.send(kind, payload))
        if t == FXP_STATUS:
            self.status(body, op, path)
        return t, body

    # -- operations --------------------------------------------------------------

    def open(self, path: str, flags: int) -> bytes:
        t, body = self.call(FXP_OPEN, _s(path) + _U32.pack(flags) + _NO_ATTRS, "open", path)
        if t != FXP_HANDLE:
            raise SftpStatus(FX_BAD_MESSAGE, "OPEN did not return a handle", "open", path)
        return bytes(_Reader(body, 5).string())

    def close_async(self, handle: bytes) -> None:
        """Close ``handle`` without waiting; sent at once (with anything queued), so the
        server frees it now rather than at this session's next use."""
        self.forget(self.send(FXP_CLOSE, _s(handle)))

    def stat(self, path: str, *, follow: bool = True) -> dict[str, int]:
        t, body = self.call(FXP_STAT if follow else FXP_LSTAT, _s(path), "stat", path)
        if t != FXP_ATTRS:
            raise SftpStatus(FX_BAD_MESSAGE, "STAT did not return attributes", "stat", path)
        return _Reader(body, 5).attrs()

    def simple(self, kind: int, payload: bytes, op: str, path: str) -> None:
        self.call(kind, payload, op, path)

    def rename(self, old: str, new: str) -> None:
        """Rename ``old`` onto ``new``, replacing it."""
        if "posix-rename@openssh.com" in self.extensions:
            payload = _s("posix-rename@openssh.com") + _s(old) + _s(new)
            self.call(FXP_EXTENDED, payload, "rename", new)
            return
        try:
            self.call(FXP_RENAME, _s(old) + _s(new), "rename", new)
        except SftpStatus as exc:  # v3 RENAME does not overwrite: remove, then again
            if exc.code not in (FX_FAILURE, FX_PERMISSION_DENIED):
                raise
            with contextlib.suppress(SftpStatus):
                self.call(FXP_REMOVE, _s(new), "remove", new)
            self.call(FXP_RENAME, _s(old) + _s(new), "rename", new)

    def listdir(self, path: str) -> list[tuple[str, dict[str, int]]]:
        t, body = self.call(FXP_OPENDIR, _s(path), "opendir", path)
        handle = bytes(_Reader(body, 5).string())
        out: list[tuple[str, dict[str, int]]] = []
        try:
            while True:
                t, body = self.wait(self.send(FXP_READDIR, _s(handle)))
                if t == FXP_STATUS:
                    try:
                        self.status(body, "readdir", path)
                    except SftpStatus as exc:
                        if exc.code == FX_EOF:
                            break
                        raise
                    break
                r = _Reader(body, 5)
                for _ in range(r.u32()):
                    name = r.name()
                    r.string()  # long name
                    attrs = r.attrs()
                    if name not in (".", ".."):
                        out.append((name, attrs))
        finally:
            if not self.broken:
                self.close_async(handle)
        return out

    def download(
        self,
        path: str,
        sink: Sink,
        progress: Callable[[int], None] | None,
    ) -> None:
        """Read ``path`` into ``sink`` from ``sink.offset`` on, many reads in flight."""
        handle = self.open(path, FXF_READ)
        inflight: deque[tuple[int, int, int]] = deque()  # (request id, offset, length)
        size_known = False
        try:
            step = self.max_read
            hs = _s(handle)
            # ask for the size and the first bytes in one round trip
            fstat_id = self.queue(FXP_FSTAT, hs)
            pos = sink.offset
            for _ in range(2):
                inflight.append((self._read(hs, pos, step), pos, step))
                pos += step
            t, body = self.wait(fstat_id)
            if t == FXP_STATUS:
                self.status(body, "fstat", path)
            attrs = _Reader(body, 5).attrs()
            if stat_mod.S_ISDIR(attrs.get("mode", 0)):
                raise SftpStatus(FX_FAILURE, "is a directory", "open", path)
            size = attrs.get("size")
            size_known = size is not None
            if size is not None:
                if sink.offset > size:  # the file changed since the last try: start over
                    for rid, _, _ in inflight:
                        self.forget(rid)
                    inflight.clear()
                    sink.reset()
                    pos = 0
                sink.set_size(size)
            window = max(2, READ_AHEAD // step)
            batch = max(1, window // 4)  # top up a quarter of the window at once
            done = sink.offset
            write = sink.write
            while inflight:
                if size is not None and pos < size and len(inflight) <= window - batch:
                    while pos < size and len(inflight) < window:
                        n = min(step, size - pos)
                        inflight.append((self._read(hs, pos, n), pos, n))
                        pos += n
                rid, off, length = inflight.popleft()
                t, body = self.wait(rid)
                if t == FXP_STATUS:
                    try:
                        self.status(body, "read", path)
                    except SftpStatus as exc:
                        if exc.code != FX_EOF:
                            raise
                    if size is None:  # no size from fstat: EOF is the end
                        size = done
                    elif off < size:
                        raise ShortFile(f"the file ended at byte {done} of {size}")
                    continue  # a read past the end, sent before the size was known
                if t != FXP_DATA:
                    raise SftpStatus(FX_BAD_MESSAGE, f"unexpected reply type {t}", "read", path)
                data = _Reader(body, 5).string()
                if off != done:  # cannot happen: replies are taken in request order
                    raise SftpStatus(FX_BAD_MESSAGE, "out-of-order data", "read", path)
                try:
                    write(data)
                except OSError as exc:
                    raise LocalIOError(exc, "write", sink.path) from exc
                got = len(data)
                done += got
                if progress is not None and got:
                    progress(got)
                if got < length and (size is None or done < size):
                    # a short read: fetch the rest before anything after it
                    rest = length - got
                    inflight.appendleft((self._read(hs, done, rest), done, rest))
                elif size is None and got == length:
                    # size unknown: keep asking until EOF
                    inflight.append((self._read(hs, pos, step), pos, step))
                    pos += step
            if size_known and size is not None and done < size:
                raise ShortFile(f"the file ended at byte {done} of {size}")
        finally:
            for rid, _, _ in inflight:
                self.forget(rid)
            if not self.broken:
                with contextlib.suppress(Exception):
                    self.close_async(handle)

    def _read(self, hs: bytes, offset: int, length: int) -> int:
        return self.queue(FXP_READ, hs + _U64.pack(offset) + _U32.pack(length))

    def upload(
        self,
        handle: bytes,
        path: str,
        reader: Any,
        size: int,
        progress: Callable[[int], None] | None,
    ) -> None:
        """Write ``reader`` to ``handle`` with writes in flight, then close it.

        The close goes out right behind the last write, so a small file costs
        one round trip; every write and the close are confirmed on return.
        """
        hs = _s(handle)
        step = self.max_write
        window = max(2, WRITE_BEHIND // step)
        pending: deque[int] = deque()
        offset = 0
        closed = False
        chunks = _read_ahead(reader, size)
        try:
            for view in chunks:
                n = len(view)
                for i in range(0, n, step):
                    piece = view[i : min(i + step, n)]
                    head = _HEAD.pack(len(piece) + 21 + len(handle), FXP_WRITE, self._next)
                    packet = b"".join((head, hs, _U64.pack(offset), _U32.pack(len(piece)), piece))
                    if offset + len(piece) >= size and len(packet) < QUEUE_WRITE_BELOW:
                        # the last, small write of the file: goes out with the close
                        rid = self.queue_raw(packet)
                    else:
                        rid = self.send_raw(packet)
                    pending.append(rid)
                    offset += len(piece)
                    while len(pending) > window:
                        self._ack(pending.popleft(), "write", path)
                if progress is not None:
                    progress(n)
            pending.append(self.send(FXP_CLOSE, hs))
            closed = True
            while pending:
                self._ack(pending.popleft(), "write", path)
        finally:
            chunks.close()
            for rid in pending:
                self.forget(rid)
            if not closed and not self.broken:
                with contextlib.suppress(Exception):
                    self.close_async(handle)

    def queue_raw(self, packet: bytes) -> int:
        """Like :meth:`queue`, for a request packed with id ``self._next``."""
        rid = self._next
        self._next = (rid + 1) & 0xFFFFFFFF or 1
        self._out.append(packet)
        return rid

    def send_raw(self, packet: bytes) -> int:
        """Send a request whose header (with id ``self._next``) is already packed."""
        self.flush()
        rid = self._next
        self._next = (rid + 1) & 0xFFFFFFFF or 1
        self._sendall(packet)
        return rid

    def _ack(self, rid: int, op: str, path: str) -> None:
        _, body = self.wait(rid)
        self.status(body, op, path)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ch.close()


def _read_ahead(reader: Any, size: int) -> Generator[memoryview, None, None]:
    """The bytes of ``reader`` (``size`` expected) in chunks; each view is valid
    until the next one.

    Above :data:`THREADED_READ_AFTER` bytes a second thread reads (and, through
    the :class:`Source` reader, hashes) the next chunks while this one sends:
    sha256 releases the GIL, so a 2-core node hashes and encrypts at once.
    """
    name = getattr(reader, "name", "source")
    if size <= THREADED_READ_AFTER:
        buf = bytearray(min(CHUNK, max(size, 0) + 1))
        view = memoryview(buf)
        while True:
            try:
                n = reader.readinto(buf)
            except OSError as exc:
                raise LocalIOError(exc, "read", name) from exc
            if not n:
                return
            yield view[:n]
    ring = [bytearray(CHUNK) for _ in range(READ_BUFFERS)]
    free: queue.SimpleQueue[int | None] = queue.SimpleQueue()
    full: queue.SimpleQueue[tuple[int, int] | BaseException] = queue.SimpleQueue()
    for i in range(READ_BUFFERS):
        free.put(i)

    def fill() -> None:
        try:
            while (i := free.get()) is not None:
                n = reader.readinto(ring[i])
                full.put((i, n or 0))
                if not n:
                    return
        except BaseException as exc:  # handed to the consumer
            full.put(exc)

    thread = threading.Thread(target=fill, name="ferry-sftp-read", daemon=True)
    thread.start()
    try:
        while True:
            item = full.get()
            if isinstance(item, BaseException):
                if isinstance(item, OSError):
                    raise LocalIOError(item, "read", name) from item
                raise item
            i, n = item
            if not n:
                return
            yield memoryview(ring[i])[:n]
            free.put(i)
    finally:
        free.put(None)
        thread.join()


_STATUS_TEXT = {
    FX_EOF: "end of file",
    FX_NO_SUCH_FILE: "no such file",
    FX_PERMISSION_DENIED: "permission denied",
    FX_FAILURE: "failure",
    FX_BAD_MESSAGE: "bad message",
    FX_NO_CONNECTION: "no connection",
    FX_CONNECTION_LOST: "connection lost",
    FX_OP_UNSUPPORTED: "operation unsupported",
}


def _status_text(code: int, text: str) -> str:
    text = " ".join(text.split())
    base = _STATUS_TEXT.get(code, f"status {code}")
    return text if text and text.lower() != base else base


# -- one SSH connection and its channel pool --------------------------------------------


class _Connection:
    """One SSH transport to (host, port, user) and a pool of SFTP sessions on it."""

    def __init__(
        self,
        host: str,
        port: int,
        user: str,
        settings: _Settings,
        timeout: float,
        max_channels: int,
    ) -> None:
        self.host, self.port, self.user = host, port, user
        self.settings = settings
        self.timeout = timeout
        self.limit = max(1, max_channels)
        self.transport: paramiko.Transport | None = None
        self.generation = 0
        self.connects = 0
        self._cond = threading.Condition()
        self._connect_lock = threading.Lock()
        self._idle: list[_Session] = []
        self._open = 0  # sessions alive: idle + checked out
        self.dirs: set[str] = set()
        self.exec_allowed = True
        self.closed = False

    @property
    def name(self) -> str:
        return _host_name(self.host, self.port)

    # -- connecting ------------------------------------------------------------------

    def alive(self) -> bool:
        t = self.transport
        return t is not None and t.is_active()

    def settle(self, wait: float = 0.5) -> None:
        """After a channel died: give the transport a moment to notice if it died too."""
        t = self.transport
        deadline = time.monotonic() + wait
        while t is not None and t.is_active() and time.monotonic() < deadline:
            time.sleep(0.01)

    def ensure(self) -> paramiko.Transport:
        """The live transport, connecting (again) if there is none."""
        t = self.transport
        if t is not None and t.is_active():
            return t
        with self._connect_lock:
            t = self.transport
            if t is not None and t.is_active():
                return t
            if t is not None:
                with contextlib.suppress(Exception):
                    t.close()
                self._drop_idle()
            t = self._connect()
            self.transport = t
            self.generation += 1
            self.connects += 1
            return t

    def _connect(self) -> paramiko.Transport:
        import paramiko

        address = self.host.strip("[]")  # an IPv6 literal comes in brackets
        sock = socket.create_connection((address, self.port), timeout=self.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            t = paramiko.Transport(
                sock, default_window_size=WINDOW, default_max_packet_size=MAX_PACKET
            )
        except BaseException:
            sock.close()
            raise
        try:
            t.banner_timeout = self.timeout
            t.handshake_timeout = self.timeout
            t.auth_timeout = self.timeout
            opts = t.get_security_options()
            available = list(opts.ciphers)
            opts.ciphers = [c for c in FAST_CIPHERS if c in available] + [
                c for c in available if c not in FAST_CIPHERS
            ]
            hostkeys = _HostKeys(self.settings)
            known = hostkeys.known_types(self.name)
            if "ssh-rsa" in known:  # known_hosts names RSA keys by key type, kex by signature
                known += ["rsa-sha2-512", "rsa-sha2-256"]
            if known:  # prefer a host key type we can check (as OpenSSH does)
                types = list(opts.key_types)
                opts.key_types = [k for k in types if k in known] + [
                    k for k in types if k not in known
                ]
            t.start_client(timeout=self.timeout)
            server_key = t.get_remote_server_key()
            hostkeys.check(self.name, server_key)
            self._authenticate(t)
            t.set_keepalive(30)
            return t
        except BaseException:
            t.close()
            raise

    def _keys(self) -> Generator[tuple[str, paramiko.PKey | None, str | None], None, None]:
        """(label, key or None, why not) for each key to try, in order."""
        import paramiko

        s = self.settings
        secret = _reveal(s.passphrase)
        passphrase = secret.encode("utf-8") if secret is not None else None
        explicit: list[tuple[str, str]] = []
        if s.key:
            explicit.append(("key", s.key))
        # pegasus-transfer's: the site's own key first, then the general one
        site = current_site.get()
        env_keys = [(f"SSH_PRIVATE_KEY_{site}", site_variable("SSH_PRIVATE_KEY"))] if site else []
        env_keys.append(("SSH_PRIVATE_KEY", os.environ.get("SSH_PRIVATE_KEY")))
        for name, env_key in env_keys:
            if env_key and os.path.expanduser(env_key) not in (s.key, *(p for _, p in explicit)):
                explicit.append((name, os.path.expanduser(env_key)))
        for label, path in explicit:
            try:
                yield f"{label} {path}", _load_key(path, passphrase), None
            except paramiko.PasswordRequiredException:
                yield f"{label} {path}", None, "encrypted, no passphrase given"
            except FileNotFoundError:
                yield f"{label} {path}", None, "no such file"
            except (OSError, paramiko.SSHException, ValueError, TypeError) as exc:
                why = "wrong passphrase or unreadable key" if passphrase else _cause(exc)
                yield f"{label} {path}", None, why
        if s.allow_agent and os.environ.get("SSH_AUTH_SOCK"):
            agent = None
            try:
                agent = paramiko.Agent()
                agent_keys = agent.get_keys()
            except (OSError, paramiko.SSHException):
                agent_keys = ()
            try:
                for i, key in enumerate(agent_keys):
                    yield f"ssh-agent key {i + 1}", key, None
            finally:  # the agent signs while we authenticate: close it only after
                if agent is not None:
                    agent.close()
        if s.look_for_keys:
            for base in ("id_ed25519", "id_ecdsa", "id_rsa"):
                path = os.path.expanduser(f"~/.ssh/{base}")
                if not os.path.isfile(path) or any(path == p for _, p in explicit):
                    continue
                try:
                    yield f"~/.ssh/{base}", _load_key(path, passphrase), None
                except (OSError, paramiko.SSHException, ValueError, TypeError):
                    continue

    def _authenticate(self, t: paramiko.Transport) -> None:
        import paramiko

        tried: list[str] = []
        keys = self._keys()
        try:
            self._try_keys(t, keys, tried)
        finally:
            keys.close()
        if t.is_authenticated():
            return
        password = _reveal(self.settings.password)
        if password is not None and t.is_active():
            try:
                t.auth_password(self.user, password)
                return
            except paramiko.AuthenticationException:
                tried.append("password (refused)")
        if not tried:
            tried.append("no key: set key in the credentials file, SSH_PRIVATE_KEY or ssh-agent")
        raise paramiko.AuthenticationException(
            f"as {self.user} on {self.name}; tried {'; '.join(tried)}"
        )

    def _try_keys(
        self,
        t: paramiko.Transport,
        keys: Iterator[tuple[str, paramiko.PKey | None, str | None]],
        tried: list[str],
    ) -> None:
        import paramiko

        for label, key, why in keys:
            if key is None:
                tried.append(f"{label} ({why})")
                continue
            try:
                remaining = t.auth_publickey(self.user, key)
            except paramiko.AuthenticationException:
                tried.append(f"{label} (refused)")
                if not t.is_active():
                    break
                continue
            if not remaining:
                return
            tried.append(f"{label} (needs more: {', '.join(remaining)})")

    # -- the pool ---------------------------------------------------------------------

    @contextlib.contextmanager
    def session(self) -> Iterator[_Session]:
        """A session for this thread alone; returned to the pool unless it broke."""
        s = self._checkout()
        try:
            yield s
        except BaseException as exc:
            # these leave the stream between messages; anything else may not have
            if not isinstance(exc, (SftpStatus, ShortFile, LocalIOError, TransferError)):
                s.broken = True
            raise
        finally:
            self._checkin(s)

    def _checkout(self) -> _Session:
        while True:
            with self._cond:
                while True:
                    if self.closed:
                        raise ConnectionLost("the protocol was closed")
                    while self._idle:
                        s = self._idle.pop()
                        if (
                            s.generation == self.generation
                            and not s.broken
                            and not s.ch.closed
                            and self.alive()
                        ):
                            return s
                        self._discard(s)
                    if self._open < self.limit:
                        self._open += 1
                        break
                    self._cond.wait(1.0)
            try:
                return self._new_session()
            except _TooManyChannels:
                continue
            except BaseException:
                with self._cond:
                    self._open -= 1
                    self._cond.notify()
                raise

    def _new_session(self) -> _Session:
        import paramiko

        t = self.ensure()
        gen = self.generation
        try:
            ch = t.open_session(window_size=WINDOW, max_packet_size=MAX_PACKET)
        except paramiko.ChannelException:
            with self._cond:
                if self._open > 1 and t.is_active():
                    # the server allows fewer channels (MaxSessions): stay below that
                    self._open -= 1
                    self.limit = self._open
                    log.info("sftp: %s allows %d channels per connection", self.name, self.limit)
                    self._cond.notify()
                    raise _TooManyChannels() from None
            raise
        ch.settimeout(self.timeout)
        try:
            try:
                ch.invoke_subsystem("sftp")
            except paramiko.SSHException as exc:
                if t.is_active():
                    raise NoSftp(f"the server refused the sftp subsystem ({_cause(exc)})") from exc
                raise
            s = _Session(ch, gen)
            s.start()
        except BaseException:
            ch.close()
            raise
        return s

    def _checkin(self, s: _Session) -> None:
        with self._cond:
            if s.broken or s.generation != self.generation or self.closed or not self.alive():
                self._discard(s)
            else:
                self._idle.append(s)
            self._cond.notify()

    def _discard(self, s: _Session) -> None:
        """Close ``s`` (caller holds the lock)."""
        s.close()
        self._open -= 1

    def _drop_idle(self) -> None:
        with self._cond:
            for s in self._idle:
                self._discard(s)
            self._idle.clear()
            self._cond.notify_all()

    def run(self, command: str, timeout: float) -> tuple[int, bytes]:
        """Run ``command`` on an exec channel; (exit status, stdout)."""
        t = self.ensure()
        ch = t.open_session()
        try:
            ch.settimeout(timeout)
            ch.exec_command(command)
            ch.shutdown_write()  # an sftp-only account's forced command sees EOF and ends
            out = bytearray()
            while len(out) < 1 << 16:
                data = ch.recv(4096)
                if not data:
                    break
                out += data
            if not ch.status_event.wait(timeout):
                return -1, bytes(out)
            return ch.exit_status, bytes(out)
        finally:
            ch.close()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            for s in self._idle:
                s.close()
            self._idle.clear()
            self._cond.notify_all()
        t = self.transport
        if t is not None:
            with contextlib.suppress(Exception):
                t.close()


class _TooManyChannels(Exception):
    """The server refused one more channel; wait for a free one."""


# -- the protocol -------------------------------------------------------------------------


def _local_user(url: URL) -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        raise ConfigError(
            f"{url}: no user in the URL, no username in the credentials file,"
            " and the local user name is unknown"
        ) from None


def _remote_path(url: URL) -> str:
    """The path on the server: absolute, or relative to the login directory for ``/~/x``."""
    path = url.path or "/"
    if path == "/~" or path.startswith("/~/"):
        return path[3:] or "."
    return path


def _parent(path: str) -> str:
    head = path.rstrip("/").rsplit("/", 1)[0]
    return head if head else ("/" if path.startswith("/") else ".")


class SftpProtocol(Protocol):
    """SFTP for ``sftp://`` and ``scp://`` URLs over shared, pooled SSH connections."""

    name = "sftp"
    schemes = ("sftp", "scp")

    def __init__(self, context: ProtocolContext | None = None) -> None:
        super().__init__(context)
        _import_paramiko()  # fail here, clearly, if it is missing
        from .settings import check_keys

        check_keys(self.context, "sftp", {"channels"})
        raw = self.context.settings.get("sftp.channels") or os.environ.get("FERRY_SFTP_CHANNELS")
        try:
            channels = int(raw) if raw else MAX_CHANNELS
        except ValueError:
            raise ConfigError(f"sftp.channels must be a whole number, not {raw!r}") from None
        if channels < 1:
            raise ConfigError(f"sftp.channels must be at least 1, not {channels}")
        #: SFTP channels per connection: the engine's concurrency, at most ``sftp.channels``
        self.max_channels = min(channels, max(1, self.context.concurrency))
        self._conns: dict[tuple[str, int, str], _Connection] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(connections={len(self._conns)})"

    # -- connections -------------------------------------------------------------

    def _connection(self, url: URL) -> _Connection:
        if not url.host:
            raise ConfigError(f"{url}: no host in the URL")
        settings = _Settings.from_section(self._section(url), url)
        user = url.user or settings.username or _local_user(url)
        port = url.port or 22
        key = (url.host.lower(), port, user)
        conn = self._conns.get(key)
        if conn is None:
            with self._lock:
                conn = self._conns.get(key)
                if conn is None:
                    conn = _Connection(
                        url.host, port, user, settings, self.context.timeout, self.max_channels
                    )
                    self._conns[key] = conn
        return conn

    def _section(self, url: URL) -> dict[str, str]:
        """The credentials for ``url``; an scp:// URL also reads the sftp:// sections
        (each right after its scp:// twin, so the more specific still wins)."""
        creds = self.context.credentials
        names = creds.candidates(url)
        if url.scheme == "scp":
            names = [
                twin
                for name in names
                for twin in ((name, "sftp" + name[3:]) if name.startswith("scp://") else (name,))
            ]
        merged: dict[str, str] = {}
        for name in reversed(names):
            merged.update(creds.section(name))
        return merged

    def _with_session(self, url: URL, what: str, fn: Callable[[_Connection, _Session], Any]) -> Any:
        """Run ``fn`` on a pooled session. If the channel or connection died
        under it, run it once more on a fresh one (reconnecting if needed)."""
        import paramiko

        lost = (ConnectionLost, EOFError, OSError, paramiko.SSHException)
        conn = self._connection(url)
        for attempt in (1, 2):
            with map_paramiko_exceptions(url, what, connecting=True):
                conn.ensure()
            try:
                with map_paramiko_exceptions(url, what):
                    with conn.session() as s:
                        return fn(conn, s)
            except IncompleteTransfer as exc:
                cause = exc.__cause__
                if attempt == 2 or conn.closed or not isinstance(cause, lost):
                    raise
                log.info("sftp: %s: %s; trying once more", conn.name, exc)
                conn.settle()
        raise AssertionError("unreachable")

    # -- operations ------------------------------------------------------------------

    def get(self, url: URL, sink: Sink, progress: Callable[[int], None] | None = None) -> None:
        url = parse_url(url)
        path = _remote_path(url)
        self._with_session(url, "get", lambda c, s: s.download(path, sink, progress))

    def put(self, source: Source, url: URL, progress: Callable[[int], None] | None = None) -> None:
        url = parse_url(url)
        path = _remote_path(url)
        if path.endswith("/"):
            raise ConfigError(f"put {url}: the URL names a directory, not a file")
        tmp = f"{path}.ferry-part-{secrets.token_hex(4)}"
        sent = [0]

        def counted(n: int) -> None:
            sent[0] += n
            if progress is not None:
                progress(n)

        def attempt(conn: _Connection, s: _Session) -> None:
            if sent[0] and progress is not None:
                progress(-sent[0])  # the second try starts over
            sent[0] = 0
            self._put(conn, s, source, path, tmp, counted)

        self._with_session(url, "put", attempt)

    def _put(
        self,
        conn: _Connection,
        s: _Session,
        source: Source,
        path: str,
        tmp: str,
        progress: Callable[[int], None],
    ) -> None:
        flags = FXF_WRITE | FXF_CREAT | FXF_TRUNC
        try:
            handle = s.open(tmp, flags)
        except SftpStatus as exc:
            if exc.code != FX_NO_SUCH_FILE:
                raise
            self._mkdirs(conn, s, _parent(path), trust_cache=False)
            handle = s.open(tmp, flags)
        renamed = False
        try:
            with source.reader() as reader:
                s.upload(handle, tmp, reader, source.size, progress)
            source.verify()
            try:
                s.rename(tmp, path)
            except SftpStatus as exc:
                if exc.code == FX_FAILURE and self._is_dir(s, path):
                    raise SftpStatus(FX_FAILURE, "is a directory", "rename", path) from None
                raise
            renamed = True
        finally:
            if not renamed and not s.broken:
                with contextlib.suppress(Exception):
                    s.call(FXP_REMOVE, _s(tmp), "remove", tmp)

    def _mkdirs(self, conn: _Connection, s: _Session, path: str, *, trust_cache: bool) -> None:
        """``mkdir -p path``: the deepest first, going up only while parents are missing."""
        path = path.rstrip("/") or "/"
        if path in ("/", ".") or (trust_cache and path in conn.dirs):
            return
        try:
            s.simple(FXP_MKDIR, _s(path) + _NO_ATTRS, "mkdir", path)
        except SftpStatus as exc:
            if exc.code == FX_NO_SUCH_FILE:
                self._mkdirs(conn, s, _parent(path), trust_cache=trust_cache)
                try:
                    s.simple(FXP_MKDIR, _s(path) + _NO_ATTRS, "mkdir", path)
                except SftpStatus as again:
                    if not self._is_dir(s, path):
                        raise again from None
            elif not self._is_dir(s, path):  # FX_FAILURE is how v3 says "exists"
                if exc.code == FX_FAILURE and self._exists(s, path):
                    raise SftpStatus(
                        FX_FAILURE, f"{path} exists and is not a directory", "mkdir", path
                    ) from None
                raise
        conn.dirs.add(path)

    @staticmethod
    def _exists(s: _Session, path: str) -> bool:
        try:
            s.stat(path)
        except SftpStatus:
            return False
        return True

    @staticmethod
    def _is_dir(s: _Session, path: str) -> bool:
        try:
            return stat_mod.S_ISDIR(s.stat(path).get("mode", 0))
        except SftpStatus:
            return False

    def stat(self, url: URL) -> Stat:
        url = parse_url(url)
        path = _remote_path(url)
        attrs = self._with_session(url, "stat", lambda c, s: s.stat(path))
        mtime = attrs.get("mtime")
        return Stat(
            size=attrs.get("size"),
            mtime=float(mtime) if mtime is not None else None,
            is_dir=stat_mod.S_ISDIR(attrs.get("mode", 0)),
        )

    def mkdir(self, url: URL) -> None:
        url = parse_url(url)
        path = _remote_path(url)
        self._with_session(url, "mkdir", lambda c, s: self._mkdirs(c, s, path, trust_cache=True))

    def remove(self, url: URL, recursive: bool = False) -> None:
        url = parse_url(url)
        path = _remote_path(url).rstrip("/") or "/"

        def run(conn: _Connection, s: _Session) -> None:
            try:
                s.simple(FXP_REMOVE, _s(path), "remove", path)
                return
            except SftpStatus as exc:
                if exc.code == FX_NO_SUCH_FILE:
                    return
                try:
                    attrs = s.stat(path, follow=False)
                except SftpStatus as gone:
                    if gone.code == FX_NO_SUCH_FILE:
                        return
                    raise exc from None
                if not stat_mod.S_ISDIR(attrs.get("mode", 0)):
                    raise
            if recursive:
                self._rmtree(s, path)
            else:
                s.simple(FXP_RMDIR, _s(path), "rmdir", path)
            conn.dirs = {d for d in conn.dirs if d != path and not d.startswith(path + "/")}

        self._with_session(url, "remove", run)

    def _rmtree(self, s: _Session, path: str) -> None:
        for name, attrs in s.listdir(path):
            child = f"{path.rstrip('/')}/{name}"
            if stat_mod.S_ISDIR(attrs.get("mode", 0)):
                self._rmtree(s, child)
            else:
                with contextlib.suppress(SftpStatus):
                    s.simple(FXP_REMOVE, _s(child), "remove", child)
        try:
            s.simple(FXP_RMDIR, _s(path), "rmdir", path)
        except SftpStatus as exc:
            if exc.code != FX_NO_SUCH_FILE:
                raise

    def checksum(self, url: URL) -> str | None:
        """sha256 by running ``sha256sum`` on the server, if it lets us; else None.

        Costs an exec channel and a full read on the server: not for the hot
        path. A server that allows SFTP only (or has no sha256sum) gives None,
        and is not asked again on this connection.
        """
        import paramiko

        url = parse_url(url)
        conn = self._connection(url)
        if not conn.exec_allowed:
            return None
        path = _remote_path(url)
        with map_paramiko_exceptions(url, "checksum", connecting=True):
            conn.ensure()
        try:
            code, out = conn.run(f"sha256sum -b -- {shlex.quote(path)}", self.context.timeout)
        except paramiko.ChannelException:
            return None  # no channel free now (MaxSessions); not a verdict on exec
        except (paramiko.SSHException, OSError, EOFError):
            conn.exec_allowed = False
            return None
        first = out.split(b"\n", 1)[0].split()
        if code == 0 and first and len(first[0]) == 64:
            digest = first[0].lstrip(b"\\").decode("ascii", "replace").lower()
            if all(c in "0123456789abcdef" for c in digest):
                return digest
        if code != 1:  # 1: sha256sum ran and could not read the file
            conn.exec_allowed = False
        return None

    def connections(self) -> int:
        """SSH connections made so far (for tests and diagnostics)."""
        return sum(c.connects for c in list(self._conns.values()))

    def close(self) -> None:
        with self._lock:
            conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            conn.close()
