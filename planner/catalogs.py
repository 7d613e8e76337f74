"""Replica, transformation and site catalogs: Pegasus 5 YAML into the model.

Each ``build_*`` function takes the parsed mapping of a catalog (standalone, with
its ``pegasus:`` key, or embedded in a workflow, without) and fills a model catalog,
raising :class:`~ferry.planner.yamlread.Invalid` with the path of a bad value.
:func:`load_catalog_file` reads a standalone file and turns those into
``file:line:col`` errors. :func:`replicas_for` answers "where is this LFN", regex
entries included.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ferry.planner.model import (
    Container,
    Directory,
    FileServer,
    Replica,
    ReplicaCatalog,
    Site,
    SiteCatalog,
    Transformation,
    TransformationCatalog,
    TransformationSite,
)
from ferry.planner.rctext import looks_like_file_rc, read_file_rc
from ferry.planner.values import (
    as_bool,
    as_int,
    as_list,
    as_map,
    as_str,
    opt_str,
    profiles,
    sha256_of,
)
from ferry.planner.yamlread import Invalid, locate, parse
from ferry.plugins.errors import ConfigError

__all__ = [
    "build_replicas",
    "check_containers",
    "located",
    "build_sites",
    "build_transformations",
    "check_pegasus_version",
    "load_catalog_file",
    "merge_replicas",
    "merge_sites",
    "merge_transformations",
    "replicas_for",
]

Path_ = tuple[object, ...]

CONTAINER_TYPES = ("docker", "singularity", "shifter")
TC_SITE_TYPES = ("installed", "stageable")
DIRECTORY_TYPES = ("sharedScratch", "sharedStorage", "localScratch", "localStorage")
OPERATIONS = ("all", "get", "put")


def check_pegasus_version(v: Any, path: Path_ = ("pegasus",)) -> str:
    """``pegasus:`` as a string or number whose major version is 5."""
    if v is None:
        raise Invalid("missing 'pegasus:' version (this reader takes Pegasus 5 YAML)", ())
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        raise Invalid(f"'pegasus:' must be a version such as 5.0.4, not {v!r}", path)
    text = str(v).strip()
    if not re.fullmatch(r"[0-9]+(\.[0-9]+(\.[0-9]+)?)?", text):
        raise Invalid(f"'pegasus:' is not a version number: {text!r}", path)
    if text.split(".")[0] != "5":
        raise Invalid(
            f"'pegasus: {text}' is not supported: this reader takes Pegasus 5 YAML"
            " (convert older DAX files with pegasus-dax2yaml... or the 5.x API)",
            path,
        )
    return text


# --- replicas -----------------------------------------------------------------------


def build_replicas(d: dict, rc: ReplicaCatalog | None = None, path: Path_ = ()) -> ReplicaCatalog:
    """Read ``{replicas: [...]}`` into ``rc`` (a new catalog if None)."""
    rc = rc if rc is not None else ReplicaCatalog()
    items = d.get("replicas")
    if items is None:
        return rc
    for i, e in enumerate(as_list(items, "replicas", (*path, "replicas"))):
        p = (*path, "replicas", i)
        e = as_map(e, "a replica entry", p)
        if "lfn" not in e:
            raise Invalid("replica entry has no lfn", p)
        lfn = as_str(e["lfn"], "replica lfn", (*p, "lfn"))
        md = e.get("metadata")
        md = None if md is None else as_map(md, "replica metadata", (*p, "metadata"))
        sha = sha256_of(e.get("checksum"), f"replica {lfn!r}", (*p, "checksum"))
        if sha is None and md:
            sha = _metadata_sha256(md, lfn, (*p, "metadata"))
        if "pfns" not in e:
            raise Invalid(f"replica {lfn!r} has no pfns", p)
        reps = []
        for j, pf in enumerate(as_list(e["pfns"], f"replica {lfn!r} pfns", (*p, "pfns"))):
            pp = (*p, "pfns", j)
            pf = as_map(pf, f"replica {lfn!r} pfn", pp)
            for key in ("site", "pfn"):
                if key not in pf:
                    raise Invalid(f"replica {lfn!r}: a pfn entry has no {key}", pp)
            prio = pf.get("priority")
            reps.append(
                Replica(
                    site=as_str(pf["site"], f"replica {lfn!r} site", (*pp, "site")),
                    pfn=as_str(pf["pfn"], f"replica {lfn!r} pfn", (*pp, "pfn")),
                    sha256=sha,
                    priority=None
                    if prio is None
                    else as_int(prio, "replica priority", (*pp, "priority")),
                )
            )
        regex = e.get("regex", False)
        if as_bool(regex, f"replica {lfn!r} regex", (*p, "regex")):
            try:
                pattern = re.compile(lfn)
            except re.error as exc:
                raise Invalid(
                    f"replica regex {lfn!r} does not compile: {exc}", (*p, "lfn")
                ) from None
            rc.regex.append((pattern, reps))
        else:
            rc.entries.setdefault(lfn, []).extend(reps)
            if sha:
                rc.checksums[lfn] = sha
        if md is not None:
            rc.metadata.setdefault(lfn, {}).update(md)
    return rc


def _metadata_sha256(md: dict, lfn: str, path: Path_) -> str | None:
    """A sum given as the attributes ``checksum.value`` (and ``checksum.type``) in a
    replica's metadata, the way Pegasus keeps ``checksum: {sha256: X}`` itself."""
    value = md.get("checksum.value")
    if value is None:
        return None
    kind = str(md.get("checksum.type", "sha256")).lower()
    if kind != "sha256":
        raise Invalid(f"replica {lfn!r}: only checksum.type sha256 is supported, not {kind!r}",
                      (*path, "checksum.type"))  # fmt: skip
    return sha256_of({"sha256": str(value)}, f"replica {lfn!r}", (*path, "checksum.value"))


def merge_replicas(base: ReplicaCatalog, embedded: ReplicaCatalog, *, merge: bool = False) -> None:
    """Add the workflow's embedded replicas to ``base``, the catalog read from files.

    As pegasus-plan does with ``pegasus.catalog.replica.dax.asrc = false`` (the
    default), an embedded entry replaces every file entry of the same LFN. With
    ``merge`` (the property set to true) the embedded replicas come first and the
    file's follow. Regex entries of both are kept, embedded ones first.
    """
    for lfn, reps in embedded.entries.items():
        if merge and lfn in base.entries:
            base.entries[lfn] = reps + base.entries[lfn]
        else:
            base.entries[lfn] = list(reps)
        if lfn in embedded.checksums:
            base.checksums[lfn] = embedded.checksums[lfn]
        elif not merge:
            base.checksums.pop(lfn, None)
    base.regex[:0] = embedded.regex
    for lfn, md in embedded.metadata.items():
        base.metadata.setdefault(lfn, {}).update(md)


_GROUP = re.compile(r"\[(\d+)\]")


def replicas_for(rc: ReplicaCatalog, lfn: str) -> list[Replica]:
    """Every replica of ``lfn``: exact entries first, then regex entries that match it whole.

    In a regex entry's PFN, ``[0]`` is the whole LFN and ``[n]`` the n-th group.
    """
    out = list(rc.entries.get(lfn, ()))
    for pattern, reps in rc.regex:
        m = pattern.fullmatch(lfn)  # type: ignore[attr-defined]
        if m is None:
            continue
        groups = (m.group(0), *m.groups())

        def sub(g: re.Match, groups: tuple = groups) -> str:
            n = int(g.group(1))
            return (groups[n] or "") if n < len(groups) else g.group(0)

        for r in reps:
            out.append(Replica(r.site, _GROUP.sub(sub, r.pfn), r.sha256, r.priority))
    return out


# --- transformations ------------------------------------------------------------------


def _tc_key(name: str, namespace: str | None, version: str | None) -> str:
    key = f"{namespace}::{name}" if namespace else name
    return f"{key}:{version}" if version else key


def build_transformations(
    d: dict, tc: TransformationCatalog | None = None, path: Path_ = ()
) -> TransformationCatalog:
    """Read ``{transformations: [...], containers: [...]}`` into ``tc``."""
    tc = tc if tc is not None else TransformationCatalog()
    own: set[str] = set()
    for i, c in enumerate(as_list(d.get("containers") or [], "containers", (*path, "containers"))):
        p = (*path, "containers", i)
        c = as_map(c, "a container", p)
        for key in ("name", "type", "image"):
            if key not in c:
                raise Invalid(f"container entry has no {key}", p)
        name = as_str(c["name"], "container name", (*p, "name"))
        ctype = as_str(c["type"], f"container {name!r} type", (*p, "type"))
        if ctype not in CONTAINER_TYPES:
            raise Invalid(
                f"container {name!r}: unknown type {ctype!r} (one of {', '.join(CONTAINER_TYPES)})",
                (*p, "type"),
            )
        mounts = [
            as_str(m, f"container {name!r} mount", (*p, "mounts", j))
            for j, m in enumerate(as_list(c.get("mounts") or [], "mounts", (*p, "mounts")))
        ]
        cprofiles = profiles(c.get("profiles"), f"container {name!r}", (*p, "profiles"))
        if c.get("arguments") not in (None, ""):
            # the API writes Container(arguments=...) as profiles.pegasus.container.arguments;
            # a hand-written catalog may give them as the container's own key (the
            # profile wins when both are there)
            args = as_str(c["arguments"], f"container {name!r} arguments", (*p, "arguments"))
            cprofiles.setdefault("pegasus", {}).setdefault("container.arguments", args)
        tc.containers[name] = Container(
            name=name,
            type=ctype,
            image=as_str(c["image"], f"container {name!r} image", (*p, "image")),
            image_site=opt_str(c, "image.site", f"container {name!r} image.site", p),
            mounts=mounts,
            sha256=sha256_of(c.get("checksum"), f"container {name!r}", (*p, "checksum")),
            bypass=as_bool(c.get("bypass", False), "bypass", (*p, "bypass")),
            profiles=cprofiles,
        )
    items = d.get("transformations")
    for i, t in enumerate(as_list(items or [], "transformations", (*path, "transformations"))):
        p = (*path, "transformations", i)
        t = as_map(t, "a transformation", p)
        if "name" not in t:
            raise Invalid("transformation entry has no name", p)
        name = as_str(t["name"], "transformation name", (*p, "name"))
        ns = opt_str(t, "namespace", "transformation namespace", p)
        ver = opt_str(t, "version", "transformation version", p)
        key = _tc_key(name, ns, ver)
        if key in own:
            raise Invalid(f"transformation {key!r} is defined twice", p)
        own.add(key)
        what = f"transformation {key!r}"
        sites = []
        if "sites" not in t:
            raise Invalid(f"{what} has no sites", p)
        for j, s in enumerate(as_list(t["sites"], f"{what} sites", (*p, "sites"))):
            sp = (*p, "sites", j)
            s = as_map(s, f"{what} site", sp)
            for k in ("name", "pfn", "type"):
                if k not in s:
                    raise Invalid(f"{what}: a site entry has no {k}", sp)
            stype = as_str(s["type"], f"{what} site type", (*sp, "type"))
            if stype not in TC_SITE_TYPES:
                raise Invalid(
                    f"{what}: unknown site type {stype!r} (installed or stageable)", (*sp, "type")
                )
            sites.append(
                TransformationSite(
                    name=as_str(s["name"], f"{what} site name", (*sp, "name")),
                    pfn=as_str(s["pfn"], f"{what} pfn", (*sp, "pfn")),
                    type=stype,
                    container=opt_str(s, "container", f"{what} container", sp),
                    bypass=as_bool(s.get("bypass", False), "bypass", (*sp, "bypass")),
                    profiles=profiles(s.get("profiles"), what, (*sp, "profiles")),
                )
            )
        tc.transformations[key] = Transformation(
            name=name,
            namespace=ns,
            version=ver,
            sites=sites,
            sha256=sha256_of(t.get("checksum"), what, (*p, "checksum")),
            requires=[
                as_str(r, f"{what} requires", (*p, "requires", j))
                for j, r in enumerate(
                    as_list(t.get("requires") or [], "requires", (*p, "requires"))
                )
            ],
            profiles=profiles(t.get("profiles"), what, (*p, "profiles")),
        )
    return tc


def check_containers(tc: TransformationCatalog) -> str | None:
    """A message for the first transformation site naming a container nobody defines."""
    for t in tc.transformations.values():
        for s in t.sites:
            if s.container and s.container not in tc.containers:
                return (
                    f"transformation {t.key!r} on site {s.name!r} uses container"
                    f" {s.container!r}, which the transformation catalog does not define"
                )
    return None


def merge_transformations(base: TransformationCatalog, embedded: TransformationCatalog) -> None:
    """Embedded transformations and containers replace file ones of the same key."""
    base.transformations.update(embedded.transformations)
    base.containers.update(embedded.containers)


# --- sites ------------------------------------------------------------------------------


def build_sites(d: dict, sc: SiteCatalog | None = None, path: Path_ = ()) -> SiteCatalog:
    """Read ``{sites: [...]}`` into ``sc``."""
    sc = sc if sc is not None else SiteCatalog()
    for i, s in enumerate(as_list(d.get("sites") or [], "sites", (*path, "sites"))):
        p = (*path, "sites", i)
        s = as_map(s, "a site", p)
        if "name" not in s:
            raise Invalid("site entry has no name", p)
        name = as_str(s["name"], "site name", (*p, "name"))
        dirs = []
        for j, dd in enumerate(
            as_list(s.get("directories") or [], "directories", (*p, "directories"))
        ):
            dp = (*p, "directories", j)
            dd = as_map(dd, f"site {name!r} directory", dp)
            if "type" not in dd:
                raise Invalid(f"site {name!r}: a directory has no type", dp)
            dtype = as_str(dd["type"], "directory type", (*dp, "type"))
            if dtype not in DIRECTORY_TYPES:
                raise Invalid(
                    f"site {name!r}: unknown directory type {dtype!r}"
                    f" (one of {', '.join(DIRECTORY_TYPES)})",
                    (*dp, "type"),
                )
            servers = []
            fs_list = dd.get("fileServers") or []
            for k, fs in enumerate(as_list(fs_list, "fileServers", (*dp, "fileServers"))):
                fp = (*dp, "fileServers", k)
                fs = as_map(fs, f"site {name!r} file server", fp)
                if "url" not in fs:
                    raise Invalid(f"site {name!r}: a file server has no url", fp)
                op = as_str(fs.get("operation", "all"), "operation", (*fp, "operation"))
                if op not in OPERATIONS:
                    raise Invalid(
                        f"site {name!r}: unknown file server operation {op!r} (all, get or put)",
                        (*fp, "operation"),
                    )
                servers.append(FileServer(url=as_str(fs["url"], "url", (*fp, "url")), operation=op))
            path_v = dd.get("path")
            dirs.append(
                Directory(
                    type=dtype,
                    path="" if path_v in (None, "") else as_str(path_v, "path", (*dp, "path")),
                    file_servers=servers,
                    shared_file_system=as_bool(
                        dd.get("sharedFileSystem", False),
                        "sharedFileSystem",
                        (*dp, "sharedFileSystem"),
                    ),
                )
            )
        sc.sites[name] = Site(
            name=name,
            directories=dirs,
            profiles=profiles(s.get("profiles"), f"site {name!r}", (*p, "profiles")),
            arch=opt_str(s, "arch", "arch", p),
            os_type=opt_str(s, "os.type", "os.type", p),
        )
    return sc


def merge_sites(base: SiteCatalog, embedded: SiteCatalog) -> None:
    """Embedded sites replace file sites of the same name."""
    base.sites.update(embedded.sites)


# --- files -------------------------------------------------------------------------------

_KINDS = {
    "replica": ("replicas", build_replicas),
    "transformation": ("transformations", build_transformations),
    "site": ("sites", build_sites),
}


def load_catalog_file(path: str | Path, kind: str, into: Any = None) -> Any:
    """Read a standalone catalog file (YAML or JSON) of ``kind`` (replica,
    transformation or site) into ``into`` (a new catalog if None)."""
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read the {kind} catalog: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if kind == "replica" and looks_like_file_rc(text):  # Pegasus's "File" format (rc.txt)
        return read_file_rc(text, source, into)
    data = parse(text, source)
    top, build = _KINDS[kind]
    try:
        if data is None:
            raise Invalid(f"the {kind} catalog is empty", ())
        d = as_map(data, f"a {kind} catalog", ())
        check_pegasus_version(d.get("pegasus"))
        if top not in d:
            raise Invalid(f"a {kind} catalog needs a '{top}:' list", ())
        result = build(d, into)
        if kind == "transformation":
            msg = check_containers(result)
            if msg:
                raise Invalid(msg, ())
        return result
    except Invalid as exc:
        raise ConfigError(located(source, text, exc)) from None


def located(source: str, text: str, exc: Invalid, line_offset: int = 0) -> str:
    """``source:line:col: message`` for an :class:`Invalid` raised on ``text``."""
    where = locate(text, exc.path) if exc.path else None
    if where is None:
        return f"{source}: {exc.message}"
    return f"{source}:{where[0] + line_offset}:{where[1]}: {exc.message}"
