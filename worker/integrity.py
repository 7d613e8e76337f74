"""sha256 metadata in the forms Pegasus reads and writes.

* ``*.meta`` files: a JSON array of ``{"_id": LFN, "_type": "file",
  "_attributes": {"checksum.type": "sha256", "checksum.value": HEX, ...}}``
  with string values (reference: Pegasus integrity metadata). ferry reads them
  the way pegasus-integrity does (every ``*.meta`` in a directory, the entry of
  an LFN with a checksum value; a value may be upper case or carry ``sha256:``),
  except that entries disagreeing on an LFN's sum are reported, not picked
  from, and writes them as pegasus-exitcode does, atomically.
* the ``$KICKSTART_INTEGRITY_DATA`` YAML fragment that
  ``pegasus-integrity --generate-fullstat-yaml`` appends, so a kickstart
  wrapping ``ferry transfer`` picks the sums up as it would pegasus-transfer's.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import pwd
import stat
import tempfile
import time
from collections.abc import Iterable
from datetime import datetime, timezone

import msgspec

__all__ = [
    "FileSum",
    "MetaSums",
    "append_kickstart_fragment",
    "clean_sum",
    "read_meta_dir",
    "read_meta_file",
    "write_meta",
]


class FileSum(msgspec.Struct, frozen=True):
    """A file's sha256 as recorded: LFN, size, hex digest and the seconds hashing took."""

    lfn: str
    sha256: str
    size: int | None = None
    timing: float | None = None
    path: str | None = None


def clean_sum(value: object) -> str:
    """A ``checksum.value`` as ferry compares it: trimmed, lowercase, ``sha256:`` dropped.

    Not validated: a value that is no sha256 stays as it is, for the caller to name.
    """
    text = str(value).strip().lower()
    return text.removeprefix("sha256:").strip()


def _meta_sums(path: str) -> list[tuple[str, str]]:
    """(LFN, sum) of every entry of one ``.meta`` file that has a ``checksum.value``."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) <= 2:
        return []  # pegasus-integrity skips "[]" and empty files
    entries = json.loads(data)
    if not isinstance(entries, list):
        kind = {dict: "an object", str: "a string"}.get(type(entries), "a scalar")
        raise ValueError(f"a .meta file holds a JSON array, not {kind}")
    found = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        lfn = entry.get("_id")
        attrs = entry.get("_attributes")
        value = attrs.get("checksum.value") if isinstance(attrs, dict) else None
        if isinstance(lfn, str) and value is not None and str(value).strip():
            found.append((lfn, clean_sum(value)))
    return found


def read_meta_file(path: str) -> dict[str, str]:
    """LFN -> sha256 from one ``.meta`` file (first entry per LFN wins)."""
    sums: dict[str, str] = {}
    for lfn, value in _meta_sums(path):
        sums.setdefault(lfn, value)
    return sums


class MetaSums(dict[str, str]):
    """LFN -> sha256 from the ``*.meta`` files of a directory, with where each came from.

    ``conflicts`` names the LFNs whose entries disagree (``"a.meta: X, b.meta: Y"``):
    pegasus-integrity's pick among them depends on the directory's listing order, so
    ferry trusts none of them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.origin: dict[str, str] = {}
        self.conflicts: dict[str, str] = {}


def read_meta_dir(directory: str = ".") -> MetaSums:
    """LFN -> sha256 from every ``*.meta`` file in ``directory`` (read in name order)."""
    sums = MetaSums()
    seen: dict[str, list[tuple[str, str]]] = {}
    for path in sorted(glob.glob(os.path.join(glob.escape(directory), "*.meta"))):
        try:
            found = _meta_sums(path)
        except (OSError, ValueError) as exc:  # pegasus-integrity logs and skips it too
            why = exc.strerror if isinstance(exc, OSError) else exc
            logging.getLogger("ferry.transfer").warning("%s: skipped: %s", path, why)
            continue
        name = os.path.basename(path)
        for lfn, value in found:
            if lfn not in sums:
                sums[lfn], sums.origin[lfn] = value, name
            seen.setdefault(lfn, []).append((name, value))
    for lfn, values in seen.items():
        if len({v for _, v in values}) > 1:
            sums.conflicts[lfn] = ", ".join(f"{n}: {v}" for n, v in values)
    return sums


def _user_name() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def _file_facts(s: FileSum) -> tuple[int | None, float | None]:
    """The size and ctime of the local file a sum was taken of (None when unknown)."""
    if s.path is None:
        return s.size, None
    try:
        st = os.stat(s.path)
    except OSError:
        return s.size, None
    return (s.size if s.size is not None else st.st_size), st.st_ctime


def write_meta(path: str, sums: Iterable[FileSum]) -> None:
    """Write a Pegasus ``.meta`` file (mode 0644) atomically, as pegasus-exitcode does:
    string attributes ``user``, ``size``, ``ctime`` (the file's when it is local, else
    now), ``checksum.type``, ``checksum.value`` (64 lowercase hex digits) and
    ``checksum.timing`` (seconds spent on the sum apart from the copy). An LFN with the
    same sum twice gets one entry; different sums all stay, for a reader to see."""
    user = _user_name()
    now = time.time()
    entries = []
    written: set[tuple[str, str]] = set()
    for s in sums:
        if (s.lfn, clean_sum(s.sha256)) in written:
            continue  # one entry per file, as kickstart's record has (copies to two places)
        written.add((s.lfn, clean_sum(s.sha256)))
        size, ctime = _file_facts(s)
        stamp = datetime.fromtimestamp(ctime or now, timezone.utc).astimezone()
        attrs = {"user": user}  # in pegasus-exitcode's order
        if size is not None:
            attrs["size"] = str(size)
        attrs["ctime"] = stamp.isoformat(timespec="seconds")
        attrs.update({"checksum.type": "sha256", "checksum.value": clean_sum(s.sha256)})
        # 0 when the sum was taken as the bytes streamed: no time of its own
        attrs["checksum.timing"] = f"{s.timing or 0.0:.3f}"
        entries.append({"_id": s.lfn, "_type": "file", "_attributes": attrs})
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".meta-", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(entries, f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")


def _quoted(text: str) -> str:
    """A YAML double-quoted scalar: ``"f.a"`` as pegasus-integrity writes it, with ``"``,
    ``\\`` and control characters escaped (pegasus-integrity leaves them raw, which
    breaks the kickstart record's YAML)."""
    return json.dumps(text, ensure_ascii=False)


def kickstart_fragment(s: FileSum) -> str:
    """The YAML fragment ``pegasus-integrity --generate-fullstat-yaml`` writes for a file.

    Without a local file (``path`` None: a transfer between two remote ends, which
    pegasus-transfer checksums in its temporary file) the stat fields describe a
    regular file of ``size`` bytes owned by this process, made now.
    """
    if s.path is not None:
        path = os.path.abspath(s.path)
        st = os.stat(path)
        mode, size, ino, nlink = st.st_mode, st.st_size, st.st_ino, st.st_nlink
        times, uid, gid = (st.st_mtime, st.st_atime, st.st_ctime), st.st_uid, st.st_gid
    else:
        path = s.lfn
        mode, size, ino, nlink = stat.S_IFREG | 0o644, s.size or 0, 0, 1
        times, uid, gid = (time.time(),) * 3, os.getuid(), os.getgid()
    try:
        group = __import__("grp").getgrgid(gid).gr_name
    except KeyError:
        group = str(gid)
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    lines = [
        f"    {_quoted(s.lfn)}:",
        "      comment: entry generated by ferry",
        f"      file_name: {_quoted(path)}",
        f"      mode: 0o{stat.S_IMODE(mode) | stat.S_IFMT(mode):o}",
        f"      size: {size}",
        f"      inode: {ino}",
        f"      nlink: {nlink}",
        f"      mtime: {_iso(times[0])}",
        f"      atime: {_iso(times[1])}",
        f"      ctime: {_iso(times[2])}",
        f"      uid: {uid}",
        f"      user: {user}",
        f"      gid: {gid}",
        f"      group: {group}",
        "      output: True",
        f"      sha256: {clean_sum(s.sha256)}",
        f"      checksum_timing: {s.timing or 0.0:.3f}",
    ]
    return "\n".join(lines) + "\n"


def append_kickstart_fragment(s: FileSum, target: str | None = None) -> str:
    """Append the fragment to ``$KICKSTART_INTEGRITY_DATA`` (or ``target``); return it."""
    text = kickstart_fragment(s)
    target = target or os.environ.get("KICKSTART_INTEGRITY_DATA")
    if target:
        with open(target, "a") as f:
            f.write(text)
    return text
