"""``webdav://`` (over http) and ``webdavs://`` (over https).

Reads, ``HEAD`` fallbacks and error mapping come from :mod:`.http`. Uploads are
atomic: the body goes to a temporary sibling (``<name>.ferry-part-<hex>``),
:meth:`Source.verify` checks what was read, and only then a ``MOVE`` puts it
in place; on any failure the temporary is deleted. Parent collections are
created with ``MKCOL`` as needed, deepest first, and remembered so a run of
uploads into one collection costs no extra requests.
"""

from __future__ import annotations

import secrets
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import quote, unquote, urlsplit

from .errors import (
    NotFound,
    PermanentError,
)
from .http import HttpProtocol, parse_http_date
from .protocol import ProtocolContext, Source, Stat
from .url import URL, parse_url

if TYPE_CHECKING:
    import httpx

__all__ = ["WebdavProtocol"]


_DAV = "{DAV:}"
_PROPFIND_BODY = (
    b'<?xml version="1.0" encoding="utf-8"?>'
    b'<D:propfind xmlns:D="DAV:"><D:prop>'
    b"<D:resourcetype/><D:getcontentlength/><D:getlastmodified/>"
    b"</D:prop></D:propfind>"
)
#: characters left as they are in a request path (RFC 3986 pchar and "/")
_PATH_SAFE = "/:@!$&'()*+,;=~"


def _created_or_exists(status: int) -> bool:
    """MKCOL: 201 made it, 405 means something is already there."""
    return 200 <= status < 300 or status == 405


class WebdavProtocol(HttpProtocol):
    """WebDAV on top of :class:`HttpProtocol`'s client, GET, resume and error mapping."""

    name = "webdav"
    schemes = ("webdav", "webdavs")
    wire_schemes: ClassVar[dict[str, str]] = {
        "webdav": "http",
        "webdavs": "https",
        "http": "http",
        "https": "https",
    }

    def __init__(self, context: ProtocolContext | None = None) -> None:
        super().__init__(context)
        #: collections known to exist: (scheme, user, netloc, path)
        self._collections: set[tuple[str, str | None, str, str]] = set()
        self._collections_lock = threading.Lock()

    # -- URLs ------------------------------------------------------------------

    def href(self, url: URL, path: str) -> str:
        """The request URL of ``path`` on ``url``'s server (no user part, no query)."""
        return f"{self.wire_schemes[url.scheme]}://{url.netloc}{quote(path, safe=_PATH_SAFE)}"

    def target(self, url: URL) -> str:
        return self.href(url, url.path or "/")

    def _key(self, url: URL, path: str) -> tuple[str, str | None, str, str]:
        return (url.scheme, url.user, url.netloc, path.rstrip("/"))

    # -- collections -------------------------------------------------------------

    def _mkcol(self, url: URL, path: str) -> int:
        response = self.send(
            "MKCOL",
            url.with_path(path),
            self.href(url, path.rstrip("/") + "/"),
            ok=lambda s: _created_or_exists(s) or s == 409,
        )
        return response.status_code

    def _ensure_collection(self, url: URL, path: str) -> None:
        """MKCOL ``path`` and whatever parents are missing, deepest first."""
        path = path.rstrip("/")
        if not path:
            return
        key = self._key(url, path)
        if key in self._collections:
            return
        status = self._mkcol(url, path)
        if status == 409:  # a parent is missing (even if we thought it was there)
            parent = path.rsplit("/", 1)[0]
            with self._collections_lock:
                self._collections.discard(self._key(url, parent))
            self._ensure_collection(url, parent)
            status = self._mkcol(url, path)
            if status == 409:
                raise PermanentError(
                    f"MKCOL {url.with_path(path)}: 409 Conflict (a parent is not a collection)",
                    url=str(url),
                    plugin=self.name,
                )
        with self._collections_lock:
            self._collections.add(key)

    def _forget_collections(self, url: URL, path: str = "/") -> None:
        """Drop cached collections at or under ``path`` (after a DELETE or a 409)."""
        prefix = path.rstrip("/")
        with self._collections_lock:
            self._collections = {
                k
                for k in self._collections
                if not (
                    k[:3] == (url.scheme, url.user, url.netloc)
                    and (k[3] == prefix or k[3].startswith(prefix + "/"))
                )
            }

    def mkdir(self, url: URL) -> None:
        url = parse_url(url)
        self._ensure_collection(url, url.path)

    # -- upload --------------------------------------------------------------

    def put(self, source: Source, url: URL, progress: Callable[[int], None] | None = None) -> None:
        url = parse_url(url)
        name = url.basename
        if not name or url.path.endswith("/"):
            raise PermanentError(
                f"PUT {url}: the destination names a collection, not a file",
                url=str(url),
                plugin=self.name,
            )
        parent = url.path.rstrip("/").rsplit("/", 1)[0]
        tmp = self.href(url, f"{parent}/{name}.ferry-part-{secrets.token_hex(4)}")
        self._ensure_collection(url, parent)
        try:
            if self.put_body(source, url, tmp, progress, ok=_ok_or_conflict) == 409:
                # the cached parent went away since: make it again, once
                self._forget_collections(url, parent)
                self._ensure_collection(url, parent)
                self.put_body(source, url, tmp, progress)
            source.verify()
            self.send(
                "MOVE",
                url,
                tmp,
                headers={"Destination": self.href(url, url.path), "Overwrite": "T"},
            )
        except BaseException:
            self.delete_quietly(url, tmp)
            raise

    # -- metadata --------------------------------------------------------------

    def _propfind(self, url: URL, depth: str) -> httpx.Response | None:
        """PROPFIND; None when the server does not speak it (405, 501)."""
        response = self.send(
            "PROPFIND",
            url,
            headers={"Depth": depth, "Content-Type": 'application/xml; charset="utf-8"'},
            content=_PROPFIND_BODY,
            ok=lambda s: 200 <= s < 300 or s in (405, 501),
        )
        return None if response.status_code in (405, 501) else response

    def stat(self, url: URL) -> Stat:
        url = parse_url(url)
        response = self._propfind(url, "0")
        if response is None:
            return super().stat(url)
        entries = _parse_multistatus(response.content, url, self.name)
        if not entries:
            raise PermanentError(
                f"PROPFIND {url}: empty multistatus answer", url=str(url), plugin=self.name
            )
        return entries[0][1]

    def remove(self, url: URL, recursive: bool = False) -> None:
        url = parse_url(url)
        try:
            response = self._propfind(url, "0" if recursive else "1")
        except NotFound:
            return
        is_dir = False
        if response is not None:
            entries = _parse_multistatus(response.content, url, self.name)
            own = url.path.rstrip("/")
            is_dir = any(st.is_dir for href, st in entries if href.rstrip("/") == own)
            if is_dir and not recursive and len(entries) > 1:
                raise PermanentError(
                    f"DELETE {url}: the collection is not empty", url=str(url), plugin=self.name
                )
        path = url.path.rstrip("/") + "/" if is_dir else url.path
        self.send("DELETE", url, self.href(url, path), ok=lambda s: 200 <= s < 300 or s == 404)
        if is_dir:
            self._forget_collections(url, url.path)


def _ok_or_conflict(status: int) -> bool:
    """A 2xx, or 409 (a parent collection is missing) for the caller to handle."""
    return 200 <= status < 300 or status == 409


def _parse_multistatus(body: bytes, url: URL, plugin: str) -> list[tuple[str, Stat]]:
    """(path, Stat) of each ``response`` in a 207 multistatus body."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise PermanentError(
            f"PROPFIND {url}: unreadable answer ({exc})", url=str(url), plugin=plugin
        ) from exc
    entries = []
    for resp in root.iter(f"{_DAV}response"):
        href = unquote(urlsplit(resp.findtext(f"{_DAV}href", "")).path)
        size = mtime = None
        is_dir = False
        for propstat in resp.iter(f"{_DAV}propstat"):
            if " 200 " not in f"{propstat.findtext(f'{_DAV}status', '')} ":
                continue
            prop = propstat.find(f"{_DAV}prop")
            if prop is None:
                continue
            length = (prop.findtext(f"{_DAV}getcontentlength") or "").strip()
            if length.isdigit():
                size = int(length)
            mtime = parse_http_date(prop.findtext(f"{_DAV}getlastmodified")) or mtime
            rtype = prop.find(f"{_DAV}resourcetype")
            if rtype is not None and rtype.find(f"{_DAV}collection") is not None:
                is_dir = True
        entries.append((href, Stat(size=None if is_dir else size, mtime=mtime, is_dir=is_dir)))
    return entries
