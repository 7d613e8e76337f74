"""Where a plan's files go: compute sites, staging locations, output locations.

Without a site catalog there is one site, ``local``: this machine, with its
staging area (scratch) at ``DIR/scratch`` and its outputs in ``--output-dir``
(default ``./outputs``). With a site catalog:

* compute sites are ``--sites`` (default ``local``); a name the catalog lacks
  is an error, except ``local`` and ``condorpool``, which get the defaults
  above, as pegasus-plan adds them;
* each compute site stages through its ``sharedScratch`` directory's file
  server (``--staging-site`` picks another site's), in a subdirectory
  ``<workflow>/<run id>`` so runs never collide; a site without one stages
  through the ``local`` site's, else ``DIR/scratch``;
* outputs go to each ``--output-sites`` site (default ``local``): its
  ``localStorage``, else ``sharedStorage`` file server; ``--output-dir``
  replaces that directory; a site with neither writes to ``./outputs``.

A file server may be any URL a ferry protocol serves (``file://``, ``https://``,
``s3://``, ...). For writing, a server with operation ``put`` or ``all`` is
used; for reading, ``get`` or ``all``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from urllib.parse import quote

from .graph import PlanError
from .model import Directory, Site, SiteCatalog

__all__ = ["Location", "SiteLayout", "file_url", "lfn_url", "resolve_sites", "to_url"]

_SAFE = "/:=,+@~"
DEFAULT_SITES = ("local", "condorpool")
_PLAIN = re.compile(r"[A-Za-z0-9_.\-/]+")


def file_url(path: str) -> str:
    return "file://" + quote(os.path.abspath(path), safe=_SAFE)


def to_url(pfn: str) -> str:
    """A PFN as a URL: paths become ``file://`` URLs (relative ones from the current dir)."""
    if "://" in pfn:
        return pfn
    if pfn[:1] == "/" and _PLAIN.fullmatch(pfn) and "/." not in pfn and "//" not in pfn:
        return "file://" + pfn
    if pfn.startswith("file:"):
        return file_url(pfn[5:])
    return file_url(pfn)


def lfn_url(base: str, lfn: str) -> str:
    if not _PLAIN.fullmatch(lfn) or lfn[:1] == "/":
        lfn = quote(lfn.lstrip("/"), safe=_SAFE)
    return base.rstrip("/") + "/" + lfn


@dataclass
class Location:
    """A directory of one site, as URLs for reading and for writing."""

    site: str
    get_url: str
    put_url: str

    def __post_init__(self) -> None:
        self.get_url = self.get_url.rstrip("/")
        self.put_url = self.put_url.rstrip("/")

    def get(self, lfn: str) -> str:
        if _PLAIN.fullmatch(lfn) and lfn[:1] != "/":
            return self.get_url + "/" + lfn
        return lfn_url(self.get_url, lfn)

    def put(self, lfn: str) -> str:
        if _PLAIN.fullmatch(lfn) and lfn[:1] != "/":
            return self.put_url + "/" + lfn
        return lfn_url(self.put_url, lfn)

    def to_json(self) -> dict[str, str]:
        """For plan.json, which nothing reads these back from: a password or a signed
        query in a file server's URL is masked (the job specs carry the real URLs)."""
        return {"site": self.site, "get": _shown(self.get_url), "put": _shown(self.put_url)}


def _shown(url: str) -> str:
    """``url`` with its password and signed query parameters masked (as it is otherwise)."""
    from ferry.plugins.errors import ConfigError
    from ferry.plugins.url import parse_url

    try:
        parsed = parse_url(url)
    except ConfigError:
        return url
    return parsed.redacted() if parsed.password is not None or parsed.query else url


@dataclass
class SiteLayout:
    compute_sites: list[str]
    #: compute site -> where its jobs' intermediate files go
    staging: dict[str, Location]
    outputs: list[Location]
    sites: dict[str, Site] = field(default_factory=dict)

    def profiles(self, site: str) -> dict | None:
        s = self.sites.get(site)
        return s.profiles if s is not None else None

    def to_json(self) -> dict[str, object]:
        return {
            "compute_sites": self.compute_sites,
            "staging": {k: v.to_json() for k, v in self.staging.items()},
            "outputs": [o.to_json() for o in self.outputs],
        }


def _servers(d: Directory) -> tuple[str | None, str | None]:
    get = put = None
    for fs in d.file_servers:
        op = (fs.operation or "all").lower()
        if get is None and op in ("all", "get"):
            get = fs.url
        if put is None and op in ("all", "put"):
            put = fs.url
    if get is None and put is None and d.path:
        get = put = file_url(d.path)
    return get, put


def _location(site: Site, types: tuple[str, ...], sub: str | None) -> Location | None:
    for t in types:
        for d in site.directories:
            if d.type != t:
                continue
            get, put = _servers(d)
            if get is None or put is None:
                if get is None and put is None:
                    continue
                raise PlanError(
                    f"site {site.name}: the {t} directory has no file server for"
                    f" {'reading' if get is None else 'writing'} (operation get/put/all)"
                )
            if sub:
                get, put = lfn_url(get, sub), lfn_url(put, sub)
            return Location(site.name, get.rstrip("/"), put.rstrip("/"))
    return None


def resolve_sites(
    catalog: SiteCatalog,
    *,
    run_dir: str,
    run_id: str,
    workflow: str,
    sites: list[str] | None = None,
    output_sites: list[str] | None = None,
    output_dir: str | None = None,
    staging_sites: dict[str, str] | None = None,
) -> SiteLayout:
    """Work out the compute sites, their staging locations and the output locations."""
    known = catalog.sites
    compute = list(sites or ["local"])
    for s in compute:
        if s not in known and s not in DEFAULT_SITES:
            raise PlanError(f"compute site {s!r} is not in the site catalog ({_names(known)})")
    default_scratch = file_url(os.path.join(run_dir, "scratch"))
    sub = f"{workflow}/{run_id}"
    staging: dict[str, Location] = {}
    chosen = staging_sites or {}
    for s in compute:
        stage_site = chosen.get(s) or chosen.get("*") or s
        loc = None
        if stage_site in known:
            loc = _location(known[stage_site], ("sharedScratch",), sub)
            if loc is None and stage_site != s:
                raise PlanError(f"staging site {stage_site!r} has no sharedScratch directory")
        elif stage_site != s:
            raise PlanError(f"staging site {stage_site!r} is not in the site catalog")
        if loc is None and "local" in known:
            loc = _location(known["local"], ("sharedScratch",), sub)
        staging[s] = loc or Location("local", default_scratch, default_scratch)
    outs: list[Location] = []
    for o in output_sites or ["local"]:
        if output_dir is not None:
            url = file_url(output_dir)
            outs.append(Location(o, url, url))
            continue
        loc = None
        if o in known:
            loc = _location(known[o], ("localStorage", "sharedStorage"), None)
        elif o not in DEFAULT_SITES:
            raise PlanError(f"output site {o!r} is not in the site catalog ({_names(known)})")
        if loc is None:
            url = file_url("outputs")
            loc = Location(o, url, url)
        outs.append(loc)
    return SiteLayout(compute_sites=compute, staging=staging, outputs=outs, sites=dict(known))


def _names(known: dict[str, Site]) -> str:
    return "sites: " + ", ".join(sorted(known)) if known else "it is empty"
