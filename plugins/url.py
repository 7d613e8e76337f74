"""URLs as pegasus-transfer reads them, with secrets kept out of every printout.

Rules (pegasus-transfer 5.1.3, see docs/transfer.md):

* a string with no ``:`` is a local path, ``file://`` is prepended;
* ``file:``, ``symlink:`` and ``moveto:`` URLs may be written ``file:///p``,
  ``file://localhost/p``, ``file:/p`` or ``file:p`` (relative paths allowed), and
  ``$VAR`` / ``${VAR}`` are expanded from the environment (unset -> empty);
* any other URL is ``scheme://[user[:password]@]host[:port]/path[?query]``; runs
  of ``/`` in the path collapse to one.

``str(url)`` and ``repr(url)`` never show a password or a signed query
parameter; ``url.raw`` is the URL as given, for the plugin that needs it.
"""

from __future__ import annotations

import os
import re

import msgspec

from .errors import ConfigError

__all__ = ["IMAGE_SCHEMES", "LOCAL_SCHEMES", "URL", "parse_url", "redact"]

#: schemes whose path is a path on this machine
LOCAL_SCHEMES = frozenset({"file", "symlink", "moveto"})
#: container image references (``docker://ubuntu:22.04``): the part after ``//`` is an
#: image name, whose ``:tag`` is not a port
IMAGE_SCHEMES = frozenset({"docker", "shub", "library", "oras"})

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):(.*)$", re.DOTALL)
_VAR_RE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
_SLASHES = re.compile(r"/{2,}")

# query parameters that carry credentials (S3/GCS presigned URLs, SAS tokens, OAuth)
_SECRET_PARAMS = frozenset(
    {
        "x-amz-signature",
        "x-amz-credential",
        "x-amz-security-token",
        "x-goog-signature",
        "x-goog-credential",
        "signature",
        "sig",
        "token",
        "access_token",
        "authz",
        "password",
        "secret",
        "key",
        "upload_id",
        # OAuth and API-key parameters
        "refresh_token",
        "id_token",
        "session_token",
        "client_secret",
        "api_key",
        "apikey",
        "passwd",
        "passphrase",
        "auth",
        "authorization",
        "jwt",
    }
)
REDACTED = "***"
_SECRET_QUERY = re.compile(
    r"([?&](?:" + "|".join(re.escape(p) for p in sorted(_SECRET_PARAMS)) + r")=)[^&#\s'\"<>]*",
    re.IGNORECASE,
)


def _expand_vars(text: str) -> str:
    if "$" not in text:
        return text
    return _VAR_RE.sub(lambda m: os.environ.get(m.group(1) or m.group(2), ""), text)


class URL(msgspec.Struct, frozen=True):
    """A parsed URL. Its ``repr`` and ``str`` never show the password or a signed query.

    (A msgspec Struct rather than a dataclass: cheaper to create at import, and
    the worker pays its imports on every job.)
    """

    raw: str
    scheme: str
    host: str = ""
    port: int | None = None
    user: str | None = None
    password: str | None = None
    path: str = ""
    query: str = ""

    @property
    def is_local(self) -> bool:
        return self.scheme in LOCAL_SCHEMES

    @property
    def local_path(self) -> str:
        """The path on this machine for file/symlink/moveto URLs."""
        if not self.is_local:
            raise ConfigError(f"{self} is not a local URL")
        return self.path

    @property
    def netloc(self) -> str:
        """``host[:port]`` without the user part."""
        return f"{self.host}:{self.port}" if self.port else self.host

    @property
    def basename(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    def with_path(self, path: str) -> URL:
        """The same URL with another path (used for parents and sibling temp names)."""
        return parse_url(self._rebuild(path=path, query=""))

    def with_scheme(self, scheme: str) -> URL:
        return parse_url(self._rebuild(scheme=scheme))

    def parent(self) -> URL:
        parent = self.path.rstrip("/").rsplit("/", 1)[0] or "/"
        return self.with_path(parent)

    def _rebuild(
        self, *, scheme: str | None = None, path: str | None = None, query: str | None = None
    ) -> str:
        from urllib.parse import quote

        scheme = scheme or self.scheme
        # the path is decoded: quoted again, it parses back to itself (a "%", "?", "#"
        # or "$" in a name stays part of the name)
        path = quote(self.path if path is None else path, safe="/:@!&'()*+,;=~")
        query = self.query if query is None else query
        if scheme in LOCAL_SCHEMES:
            return f"{scheme}://{path}"
        auth = ""
        if self.user is not None:
            auth = quote(self.user, safe="")
            if self.password is not None:
                auth += ":" + quote(self.password, safe="")
            auth += "@"
        text = f"{scheme}://{auth}{self.netloc}{path}"
        return f"{text}?{query}" if query else text

    def redacted(self) -> str:
        """The URL with its password and signed query parameters masked."""
        if self.scheme in LOCAL_SCHEMES:
            return f"{self.scheme}://{self.path}"
        auth = ""
        if self.user is not None:
            auth = self.user + (":" + REDACTED if self.password is not None else "") + "@"
        text = f"{self.scheme}://{auth}{self.netloc}{self.path}"
        if self.query:
            from urllib.parse import parse_qsl, urlencode

            pairs = [
                (k, REDACTED if k.lower() in _SECRET_PARAMS else v)
                for k, v in parse_qsl(self.query, keep_blank_values=True)
            ]
            text += "?" + urlencode(pairs, safe="*")
        return text

    def __str__(self) -> str:
        return self.redacted()

    def __repr__(self) -> str:
        return f"URL({self.redacted()!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, URL) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)


def _unquote(text: str) -> str:
    """``urllib.parse.unquote``, imported only for text that has escapes (most paths have none)."""
    if "%" not in text:
        return text
    from urllib.parse import unquote

    return unquote(text)


def parse_url(text: str | URL) -> URL:
    """Parse a URL or a local path the way pegasus-transfer does."""
    if isinstance(text, URL):
        return text
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"not a URL: {text!r}")
    text = text.strip()
    match = _SCHEME_RE.match(text)
    if match is None or (len(match.group(1)) == 1 and os.name == "nt"):
        return _local("file", text, text)
    scheme, rest = match.group(1).lower(), match.group(2)
    if scheme in LOCAL_SCHEMES:
        return _local(scheme, rest, text)
    if not rest.startswith("//"):
        raise ConfigError(f"malformed URL (expected {scheme}://host/path): {_mask(text)}")
    rest = rest[2:]
    query = ""
    if "?" in rest:
        rest, query = rest.split("?", 1)
    if "#" in query:
        query = query.split("#", 1)[0]
    netloc, _, path = rest.partition("/")
    path = "/" + path if path or rest.endswith("/") else ""
    if "//" in path:
        path = _SLASHES.sub("/", path)
    user = password = None
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
        user, sep, pw = userinfo.partition(":")
        user = _unquote(user)
        password = _unquote(pw) if sep else None
    host, port = netloc, None
    if scheme in IMAGE_SCHEMES:
        pass  # ubuntu:22.04, registry:5000/img: the tag (or registry port) stays in the name
    elif netloc.startswith("["):  # IPv6 literal
        end = netloc.find("]")
        host, tail = netloc[: end + 1], netloc[end + 1 :]
        if tail.startswith(":") and tail[1:]:
            port = _port(tail[1:], text)
    elif ":" in netloc:
        host, p = netloc.rsplit(":", 1)
        port = _port(p, text) if p else None
    return URL(
        raw=text,
        scheme=scheme,
        host=host,
        port=port,
        user=user,
        password=password,
        path=_unquote(path),
        query=query,
    )


def _port(text: str, url: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        # with an "@" in the URL, what looks like the port may be a piece of the password
        shown = "" if "@" in url else f" {text!r}"
        raise ConfigError(f"bad port{shown} in URL {_mask(url)}")
    return int(text)


def _local(scheme: str, rest: str, raw: str) -> URL:
    rest = _expand_vars(rest)
    if rest.startswith("//"):
        rest = rest[2:]
        if rest.startswith("localhost/"):
            rest = rest[len("localhost") :]
        elif not rest.startswith("/"):
            # file://relative/path is relative (pegasus-transfer accepts it)
            pass
    path = _unquote(rest)
    if not path:
        raise ConfigError(f"empty path in URL {raw!r}")
    if not path.startswith("/"):
        path = os.path.abspath(path)
    elif "//" in path:
        path = _SLASHES.sub("/", path)
    return URL(raw=raw, scheme=scheme, path=path)


def _mask(text: str) -> str:
    """Mask the password in a URL that did not parse."""
    # up to the last @: a password may hold "/" or "@" that were not %-escaped
    text = re.sub(r"(//[^/@:]*:).*@", r"\1" + REDACTED + "@", text)
    # without the // (which parse_url refuses): all of scheme:user:pw@ but the scheme
    text = re.sub(r"^([A-Za-z][A-Za-z0-9+.\-]*:)(?!//).*@", r"\1" + REDACTED + "@", text)
    # and the signed query parameters, as URL.redacted masks them
    return _SECRET_QUERY.sub(r"\1" + REDACTED, text)


def redact(text: str) -> str:
    """Mask passwords and signed query parameters of every URL inside ``text``."""

    def one(m: re.Match[str]) -> str:
        try:
            return parse_url(m.group(0)).redacted()
        except ConfigError:
            return _mask(m.group(0))

    return re.sub(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+", one, text)
