"""Transfer requests: pegasus-transfer's JSON list in, typed requests out.

The accepted document is exactly pegasus-transfer's (docs/transfer.md): a JSON
array of ``transfer``, ``mkdir`` and ``remove`` entries. ferry also reads an
expected sha256 from, in this order: the entry's ``sha256`` field (a ferry
extension, bare hex or ``sha256:<hex>``), when ``verify_checksum_remote`` is
set the Pegasus ``*.meta`` files in the current directory (what
pegasus-integrity checks), and the planner's ``attributes``
(``checksum.type`` = ``sha256`` and ``checksum.value``). A
``verify_checksum_remote`` entry whose sum is unknown (no ``lfn``, or found
nowhere) or given differently by two ``*.meta`` files, and a ``.meta`` or
``attributes`` ``checksum.value`` that is no sha256, are not input errors: as in
pegasus-transfer, only that transfer fails (``TransferRequest.verify_error``).
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any, Union

import msgspec

from ferry.plugins.errors import ConfigError
from ferry.plugins.url import URL, parse_url

__all__ = [
    "Endpoint",
    "MkdirRequest",
    "RemoveRequest",
    "TransferRequest",
    "normalize_sha256",
    "parse_transfer_list",
]

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


# -- the wire format (pegasus-transfer's JSON) -------------------------------


class _UrlObj(msgspec.Struct):
    url: str
    site_label: str = "local"
    priority: Union[int, float, str, None] = None  # noqa: UP007 - msgspec on 3.10
    type: Union[str, None] = None  # noqa: UP007
    checkpoint: Union[str, bool, None] = None  # noqa: UP007


class _Target(msgspec.Struct):
    url: str
    site_label: str = "local"
    recursive: Union[bool, int, str, None] = None  # noqa: UP007


class _Transfer(msgspec.Struct, tag_field="type", tag="transfer"):
    src_urls: list[_UrlObj]
    dest_urls: list[_UrlObj]
    lfn: Union[str, None] = None  # noqa: UP007
    id: Union[int, str, None] = None  # noqa: UP007
    linkage: Union[str, None] = None  # noqa: UP007
    verify_symlink_source: bool = True
    generate_checksum: bool = False
    verify_checksum_remote: bool = False
    # pegasus-transfer ignores it: any JSON is accepted, only checksum.* is read
    attributes: Any = None
    sha256: Union[str, None] = None  # noqa: UP007
    executable: bool = False


class _Mkdir(msgspec.Struct, tag_field="type", tag="mkdir"):
    target: _Target
    id: Union[int, str, None] = None  # noqa: UP007


class _Remove(msgspec.Struct, tag_field="type", tag="remove"):
    target: _Target
    id: Union[int, str, None] = None  # noqa: UP007


_Entry = Union[_Transfer, _Mkdir, _Remove]  # noqa: UP007


@functools.cache
def _decoder() -> msgspec.json.Decoder[list[_Entry]]:
    """Built on first use: the worker, which never reads a transfer list, skips it."""
    return msgspec.json.Decoder(list[_Entry])


# -- what the engine works on ------------------------------------------------


class Endpoint(msgspec.Struct, frozen=True):
    """One candidate URL with its site and priority (higher is tried first)."""

    url: URL
    site: str = "local"
    priority: float | None = None
    type: str | None = None


class TransferRequest(msgspec.Struct):
    """Copy one file from the best working source to ``dest``."""

    sources: list[Endpoint]
    dest: Endpoint
    lfn: str | None = None
    id: str | None = None
    sha256: str | None = None
    executable: bool = False
    linkage: str = "unknown"
    verify_symlink_source: bool = True
    generate_checksum: bool = False
    verify_checksum_remote: bool = False
    #: why the expected sum cannot be known (``verify_checksum_remote`` without one, or
    #: a ``checksum.value`` that is no sha256); the transfer then fails without running
    verify_error: str | None = None
    symlink: bool = False  # make a symlink for local->local instead of copying
    user_data: dict[str, object] = msgspec.field(default_factory=dict)

    @property
    def label(self) -> str:
        """How messages name this transfer: its LFN, else its id, else its destination."""
        if self.lfn:
            return self.lfn
        if self.id is not None:
            return f"#{self.id}"
        return str(self.dest.url)

    def ordered_sources(self) -> list[Endpoint]:
        """Sources by priority, highest first; unprioritised ones after, in list order."""
        ranked = sorted(
            enumerate(self.sources),
            key=lambda p: (p[1].priority is None, -(p[1].priority or 0), p[0]),
        )
        return [s for _, s in ranked]


class MkdirRequest(msgspec.Struct):
    target: Endpoint
    id: str | None = None

    @property
    def label(self) -> str:
        return f"mkdir {self.target.url}"


class RemoveRequest(msgspec.Struct):
    target: Endpoint
    recursive: bool = False
    id: str | None = None

    @property
    def label(self) -> str:
        return f"remove {self.target.url}"


Request = Union[TransferRequest, MkdirRequest, RemoveRequest]  # noqa: UP007


def normalize_sha256(value: str | None, *, where: str = "sha256") -> str | None:
    """Accept ``<hex>`` or ``sha256:<hex>`` (any case); return lowercase hex or None."""
    if value is None or value == "":
        return None
    text = str(value).strip().lower()
    if text.startswith("sha256:"):
        text = text[len("sha256:") :]
    if not _HEX64.match(text):
        raise ConfigError(f"{where}: {value!r} is not a sha256 (64 hex digits)")
    return text


def _truthy(value: bool | int | str | None) -> bool:
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    text = str(value).strip().lower()
    if text in ("yes", "true", "t", "1"):
        return True
    if text in ("no", "false", "f", "0", ""):
        return False
    raise ConfigError(f"not a boolean: {value!r}")


def _priority(value: float | str | None, where: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"{where}: priority {value!r} is not a number") from None


def _endpoint(obj: _UrlObj | _Target, where: str) -> Endpoint:
    try:
        url = parse_url(obj.url)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return Endpoint(
        url=url,
        site=obj.site_label.replace("-", "_"),
        priority=_priority(getattr(obj, "priority", None), where),
        type=getattr(obj, "type", None),
    )


def _sha_from_attributes(attrs: object) -> tuple[str | None, str | None]:
    """(sum, None) from the planner's ``checksum.type``/``checksum.value`` attributes, or
    (None, why not) for a value that is no sha256: pegasus-transfer ignores attributes,
    so such a value fails that transfer only, not the whole list."""
    if not isinstance(attrs, dict):
        return None, None
    value = attrs.get("checksum.value")
    if str(attrs.get("checksum.type", "")).lower() == "sha256" and isinstance(value, str) and value:
        try:
            return normalize_sha256(value, where="attributes checksum.value"), None
        except ConfigError as exc:
            return None, str(exc)
    return None, None


def _sha_from_meta(meta: dict[str, str], lfn: str) -> tuple[str | None, str | None]:
    """(sum, None) for ``lfn`` from the ``*.meta`` sums, or (None, why it cannot be
    checked): the files disagree on it, or its ``checksum.value`` is no sha256. A value
    may be upper case or carry ``sha256:``."""
    conflict = getattr(meta, "conflicts", {}).get(lfn)
    if conflict:
        return None, f"the *.meta files give different sha256 for {lfn} ({conflict})"
    value = meta.get(lfn)
    if value is not None:
        value = value.strip().lower().removeprefix("sha256:").strip()
    if value is not None and not _HEX64.match(value):
        origin = getattr(meta, "origin", {}).get(lfn, "*.meta")
        return None, f"checksum.value of {lfn} in {origin} is not a sha256: {value!r}"
    return value, None


def _entry_name(data: bytes, message: str, source: str) -> str:
    """``<file>: entry N (id I) (lfn L): invalid entry: <msgspec's message>`` for an
    error at ``$[N-1]...``: the entry as pegasus-transfer users count them, and its path."""
    found = re.search(r" - at `\$\[(\d+)\]", message)
    if not found:
        return f"{source}: invalid transfer list: {message}"
    index = int(found.group(1))
    where = f"{source}: entry {index + 1}"
    try:
        entry = json.loads(data)[index]
    except (ValueError, IndexError, TypeError):
        entry = None
    if isinstance(entry, dict):
        if entry.get("id") is not None:
            where += f" (id {entry['id']})"
        if isinstance(entry.get("lfn"), str):
            where += f" (lfn {entry['lfn']})"
    return f"{where}: invalid entry: {message}"


_V1_COMMENT = re.compile(r"^# +\w+ +\w+ +([\w\-_]+)")


def _parse_v1(text: str, source: str) -> list[Request]:
    """pegasus-transfer's legacy text list (input that starts with ``# src``): pairs of a
    ``# src N SITE`` comment, a source URL, a ``# dst N SITE`` comment and a destination
    URL, read with pegasus-transfer's line states (a comment may be left out, lines of
    4 characters or fewer are skipped)."""
    requests: list[Request] = []
    state = 3  # 0: source comment seen, 1: source URL, 2: destination comment, 3: pair done
    src_site = dst_site = "local"
    src: Endpoint | None = None
    for n, line in enumerate(text.split("\n"), 1):
        if len(line) <= 4:
            continue
        line = line.rstrip("\r")
        where = f"{source}: line {n}"
        if line[0] == "#" and state in (3, 1):
            found = _V1_COMMENT.search(line)
            if not found:
                raise ConfigError(f"{where}: unable to parse the comment {line!r}")
            site = found.group(1).replace("-", "_")
            if state == 3:
                state, src_site = 0, site
            else:
                state, dst_site = 2, site
            continue
        try:
            url = parse_url(line)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if state in (0, 3):
            state, src = 1, Endpoint(url, site=src_site)
        else:
            assert src is not None
            state = 3
            ident = str(len(requests) + 1)
            requests.append(
                TransferRequest(sources=[src], dest=Endpoint(url, site=dst_site), id=ident)
            )
    return requests


def parse_transfer_list(
    data: bytes | str,
    *,
    source: str = "<stdin>",
    meta_lookup: dict[str, str] | None = None,
) -> list[Request]:
    """Parse pegasus-transfer's JSON list. Errors name ``source`` and the entry.

    ``meta_lookup`` maps LFN -> sha256 from Pegasus ``*.meta`` files, used for
    entries with ``verify_checksum_remote``.
    """
    if isinstance(data, str):
        data = data.encode()
    if not data.strip():
        raise ConfigError(f"{source}: empty transfer list")
    if data[:5] == b"# src":
        return _parse_v1(data.decode("utf-8", "replace"), source)
    try:
        entries = _decoder().decode(data)
    except msgspec.ValidationError as exc:
        raise ConfigError(_entry_name(data, str(exc), source)) from None
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{source}: malformed JSON: {exc}") from None
    requests: list[Request] = []
    for i, entry in enumerate(entries):
        where = f"{source}: entry {i + 1}" + (f" (id {entry.id})" if entry.id is not None else "")
        ident = None if entry.id is None else str(entry.id)
        if isinstance(entry, _Mkdir):
            requests.append(MkdirRequest(_endpoint(entry.target, where), id=ident))
            continue
        if isinstance(entry, _Remove):
            try:
                recursive = _truthy(entry.target.recursive)
            except ConfigError as exc:
                raise ConfigError(f"{where}: target.recursive: {exc}") from None
            requests.append(
                RemoveRequest(_endpoint(entry.target, where), recursive=recursive, id=ident)
            )
            continue
        if entry.lfn:
            where += f" (lfn {entry.lfn})"
        if not entry.src_urls:
            raise ConfigError(f"{where}: src_urls is empty")
        if not entry.dest_urls:
            raise ConfigError(f"{where}: dest_urls is empty")
        sources = [_endpoint(u, f"{where} src_urls[{j}]") for j, u in enumerate(entry.src_urls)]
        dests = [_endpoint(u, f"{where} dest_urls[{j}]") for j, u in enumerate(entry.dest_urls)]
        # pegasus-transfer always uses the highest-priority destination
        dest = sorted(dests, key=lambda d: -(d.priority or 0))[0]
        sha = normalize_sha256(entry.sha256, where=f"{where}.sha256")
        verify_error = None
        if sha is None and entry.verify_checksum_remote:
            # what pegasus-integrity --verify checks against: ./*.meta, by LFN
            if not entry.lfn:
                verify_error = "verify_checksum_remote is set but the entry has no lfn"
            else:
                sha, verify_error = _sha_from_meta(meta_lookup or {}, entry.lfn)
        if verify_error is None and sha is None:
            sha, verify_error = _sha_from_attributes(entry.attributes)
        if sha is None and entry.verify_checksum_remote and verify_error is None:
            verify_error = (
                f"verify_checksum_remote is set but no sha256 is known for {entry.lfn}"
                " (no checksum in ./*.meta or in the entry)"
            )
        requests.append(
            TransferRequest(
                sources=sources,
                dest=dest,
                lfn=entry.lfn,
                id=ident,
                sha256=sha,
                executable=entry.executable,
                linkage=entry.linkage or "unknown",
                # pegasus-transfer lets only a symlink:// destination dangle: its
                # file->file copy (or --symlink link) needs the source either way
                verify_symlink_source=entry.verify_symlink_source or dest.url.scheme != "symlink",
                generate_checksum=entry.generate_checksum,
                verify_checksum_remote=entry.verify_checksum_remote,
                verify_error=verify_error,
            )
        )
    return requests
