"""Read Pegasus 5 workflows (YAML or JSON, as pegasus-wms-api writes them) into the model.

Public API (what the planning passes call)::

    load_workflow(path, *, replica_files=(), transformation_files=(), site_files=(),
                  conf=None, properties=None, cwd=None, fast=True) -> Workflow
    parse_workflow(text, source="<workflow>", *, fast=True) -> Workflow
    load_catalogs(wf, *, replica_files=(), transformation_files=(), site_files=(),
                  conf=None, properties=None, cwd=None) -> None
    ferry.planner.catalogs.replicas_for(rc, lfn) -> list[Replica]
    ferry.planner.properties.load_properties(cwd=None, conf=None, overrides=None) -> dict

Every problem in the input raises :class:`ferry.plugins.errors.ConfigError` with one
line: ``FILE:LINE:COL: message`` (or ``FILE: message`` when no line applies).

What is read, and how:

- ``pegasus:`` may be a string or a number; its major version must be 5. ``x-*``
  keys are ignored. Unknown keys elsewhere in the top level or in a job are reported
  in :attr:`Workflow.warnings` (one line per key), not silently dropped.
- Jobs of ``type: job`` become :class:`~ferry.planner.model.Job`. Sub-workflows
  (``pegasusWorkflow``/``condorWorkflow``, with ``Job.kind`` set and ``Job.name`` the
  file) and hooks (workflow or job) are read but not supported yet: each gets a
  warning naming the jobs. Job ids must match ``[-0-9a-zA-Z_]+`` (they become file
  names), and must be unique.
- ``arguments``: each list item is **one argv element**, kept as written (numbers
  become their decimal text, booleans ``true``/``false``). Pegasus instead joins the
  items with spaces into one string that the node splits again, so an item holding
  blanks (``add_args("-c", "a; b")``) is one argument under ferry and several under
  Pegasus. ferry's reading is the one the API's author sees in the Python code.
- ``uses``: every type (input, output, inout, checkpoint, none) and flag (stageOut,
  registerReplica, optional, executable, bypass, size). ``stdin``/``stdout``/
  ``stderr`` name LFNs; one missing from ``uses`` is added (input for stdin, output
  with stageOut and registerReplica for the others), as the API would have done.
  ``forPlanning``, and a use's ``namespace``/``version`` are not kept; of its
  ``metadata``, only ``checksum.value`` (``Workflow.use_sums``), the file's sha256.
- ``profiles``: namespaces lower-cased, dagman keys lower-cased (``RETRY`` ->
  ``retry``); values as read. Jobs with equal profiles share one dict: read-only.
- ``jobDependencies``: ``Workflow.children[parent]`` lists child indexes (duplicates
  removed). An id no job has is an error naming it. Cycles, undefined
  transformations and missing inputs are checked by the planning passes.
- Catalogs: see :func:`load_catalogs`.

Speed (1M jobs are read in well under a minute, see benchmarks/PLANNER.md): a
block-style document (what the API writes) is cut at its top-level keys, and
``jobs``/``jobDependencies`` at their items (:mod:`~ferry.planner.yamlread`). Jobs
and dependency entries laid out exactly as the API writes them are read by
:mod:`~ferry.planner.strictread` with one regular expression each, straight into the
model; any item it is not certain of goes, with its neighbours, through a YAML
parser (yaml-rs when installed and the text is plain enough, else PyYAML's C
loader) and the general builder. Nothing keeps the parsed document: memory holds
the model. Above 16 MB of jobs, forked worker processes do the strict parsing
(sharing the text copy-on-write) while this process applies their records in
order; that needs ``os.fork`` and a single-threaded process (else it stays in one
process). The cyclic GC is off while reading (the caller may ``gc.freeze()`` the
model afterwards). Anything irregular (flow style, anchors across jobs,
directives) is parsed whole; every way gives the same model (``fast=False``
forces the whole-document parse; the tests compare them). JSON is read with
msgspec, one job at a time.
"""

from __future__ import annotations

import gc
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ferry.planner import catalogs as cat
from ferry.planner import forkscan
from ferry.planner import strictread as strict
from ferry.planner.model import (
    USE_INPUT,
    USE_OUTPUT,
    USE_TYPES,
    Job,
    ReplicaCatalog,
    SiteCatalog,
    TransformationCatalog,
    Use,
    Workflow,
)
from ferry.planner.properties import load_properties
from ferry.planner.values import as_bool, as_int, as_list, as_map, as_str, profiles, type_name
from ferry.planner.yamlread import (
    Block,
    Invalid,
    Irregular,
    fast_loads,
    fast_ok,
    iter_items,
    locate,
    non_printable,
    parse,
    split_document,
)
from ferry.plugins.errors import ConfigError

__all__ = ["load_catalogs", "load_workflow", "parse_workflow"]

#: jobs per parsed batch on the fast path
BATCH = 1000
#: the strict reader's batches: BATCH * BATCH_CHARS characters (about BATCH jobs)
BATCH_CHARS = 256
#: read jobs in the API's exact layout with :mod:`ferry.planner.strictread`
STRICT = True
#: below this size a split-parse syntax error is confirmed by parsing the whole text
CONFIRM_LIMIT = 8 << 20

_ID = re.compile(r"[-0-9a-zA-Z_]+")
_TOP_KEYS = frozenset(
    {
        "pegasus",
        "name",
        "version",
        "hooks",
        "profiles",
        "metadata",
        "siteCatalog",
        "replicaCatalog",
        "transformationCatalog",
        "jobs",
        "jobDependencies",
    }
)
_JOB_KEYS = frozenset(
    {
        "type",
        "name",
        "namespace",
        "version",
        "id",
        "file",
        "stdin",
        "stdout",
        "stderr",
        "nodeLabel",
        "arguments",
        "uses",
        "profiles",
        "metadata",
        "hooks",
    }
)
_USE_KEYS = frozenset(
    {
        "lfn",
        "type",
        "stageOut",
        "registerReplica",
        "optional",
        "executable",
        "bypass",
        "size",
        "forPlanning",
        "metadata",
        "namespace",
        "version",
    }
)
_USE_FLAGS = (
    ("stageOut", "stage_out"),
    ("registerReplica", "register_replica"),
    ("optional", "optional"),
    ("executable", "executable"),
    ("bypass", "bypass"),
)
_SUBWF = ("pegasusWorkflow", "condorWorkflow")


# --- public entry points ------------------------------------------------------------


def load_workflow(
    path: str | os.PathLike[str],
    *,
    replica_files: Iterable[str | os.PathLike[str]] = (),
    transformation_files: Iterable[str | os.PathLike[str]] = (),
    site_files: Iterable[str | os.PathLike[str]] = (),
    conf: str | os.PathLike[str] | None = None,
    properties: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    fast: bool = True,
) -> Workflow:
    """Read a workflow file and its catalogs (see :func:`load_catalogs`)."""
    p = Path(path)
    if cwd is not None and not p.is_absolute():
        p = Path(cwd) / p
    source = str(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read the workflow: {exc.strerror}") from None
    holder = [raw]
    del raw
    wf = _parse_bytes(holder, source, fast=fast)
    load_catalogs(
        wf,
        replica_files=replica_files,
        transformation_files=transformation_files,
        site_files=site_files,
        conf=conf,
        properties=properties,
        cwd=cwd,
    )
    return wf


def parse_workflow(text: str | bytes, source: str = "<workflow>", *, fast: bool = True) -> Workflow:
    """Read a workflow from text (only its embedded catalogs; no files, no properties)."""
    raw = text.encode("utf-8") if isinstance(text, str) else text
    return _parse_bytes([raw], source, fast=fast)


def load_catalogs(
    wf: Workflow,
    *,
    replica_files: Iterable[str | os.PathLike[str]] = (),
    transformation_files: Iterable[str | os.PathLike[str]] = (),
    site_files: Iterable[str | os.PathLike[str]] = (),
    conf: str | os.PathLike[str] | None = None,
    properties: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> None:
    """Add the catalog files to ``wf``'s embedded catalogs, and set ``wf.properties``.

    For each kind (replica, transformation, site) the files are, first match wins:
    the ones given here (several are read in order, later entries adding to earlier
    ones); else the one the properties name (``pegasus.catalog.replica.file``,
    ``pegasus.catalog.transformation.file``, ``pegasus.catalog.site.file``; relative
    paths from ``cwd``); else ``replicas.yml`` / ``transformations.yml`` /
    ``sites.yml`` in ``cwd`` if present (as pegasus-plan looks for them). The
    properties are ``cwd/pegasus.properties``, then ``conf``, then ``properties``.

    Then the workflow's embedded catalogs are laid over the files': an embedded
    replica entry replaces every file entry of its LFN (pegasus-plan's default,
    ``pegasus.catalog.replica.dax.asrc = false``; with ``true`` the two are merged,
    embedded first); embedded transformations, containers and sites replace the
    file's of the same key or name.
    """
    base = Path(cwd) if cwd is not None else Path(os.getcwd())
    props = load_properties(base, conf, properties)
    wf.properties = props

    def files(given: Iterable[Any], prop: str, default: str) -> list[Path]:
        out = [Path(f) if Path(f).is_absolute() else base / f for f in given]
        if out:
            return out
        named = props.get(prop)
        if named:
            f = Path(os.path.expanduser(named))
            return [f if f.is_absolute() else base / f]
        f = base / default
        return [f] if f.is_file() else []

    rc = ReplicaCatalog()
    file_rc = props.get("pegasus.catalog.replica", "").strip().lower() == "file"
    default_rc = "rc.txt" if file_rc else "replicas.yml"  # the File format's default name
    for f in files(replica_files, "pegasus.catalog.replica.file", default_rc):
        cat.load_catalog_file(f, "replica", rc)
    tc = TransformationCatalog()
    for f in files(
        transformation_files, "pegasus.catalog.transformation.file", "transformations.yml"
    ):
        cat.load_catalog_file(f, "transformation", tc)
    sc = SiteCatalog()
    for f in files(site_files, "pegasus.catalog.site.file", "sites.yml"):
        cat.load_catalog_file(f, "site", sc)
    asrc = props.get("pegasus.catalog.replica.dax.asrc", "false").strip().lower() == "true"
    cat.merge_replicas(rc, wf.replica_catalog, merge=asrc)
    for lfn, sha in wf.use_sums.items():  # a catalog's own sum wins
        rc.checksums.setdefault(lfn, sha)
    cat.merge_transformations(tc, wf.transformation_catalog)
    cat.merge_sites(sc, wf.site_catalog)
    msg = cat.check_containers(tc)
    if msg:
        raise ConfigError(f"{wf.source}: {msg}")
    wf.replica_catalog, wf.transformation_catalog, wf.site_catalog = rc, tc, sc


# --- reading ------------------------------------------------------------------------


def _parse_bytes(holder: list[bytes], source: str, *, fast: bool) -> Workflow:
    """Parse the bytes in ``holder`` (taken out of it, so they can be freed once decoded)."""
    # the reader makes millions of objects and no garbage cycles: the cyclic
    # collector would only rescan the growing model again and again
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _parse_bytes_gc_off(holder, source, fast=fast)
    finally:
        if enabled:
            gc.enable()


def _parse_bytes_gc_off(holder: list[bytes], source: str, *, fast: bool) -> Workflow:
    raw = holder.pop()
    head = raw[:4096].lstrip()
    if head.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
        head = head[3:]
    if head.startswith(b"{"):
        from ferry.planner.jsonread import read_json

        wf = read_json(raw, source)
        if wf is not None:
            return wf
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{source}:{line}: not UTF-8 text ({exc.reason})") from None
    bad = non_printable(raw, text)
    del raw
    if bad is not None:
        line = text.count("\n", 0, bad) + 1
        col = bad - (text.rfind("\n", 0, bad) + 1) + 1
        raise ConfigError(
            f"{source}:{line}:{col}: YAML syntax error: special characters are not allowed"
            f" (U+{ord(text[bad]):04X})"
        )
    reader = _Reader(source, text)
    if fast:
        try:
            return reader.read_split()
        except Irregular:
            reader = _Reader(source, text)
    return reader.read_whole()


class _Reader:
    """Builds one Workflow from one document; the split and whole ways share the builders."""

    def __init__(self, source: str, text: str) -> None:
        self.source = source
        self.text = text
        self.wf = Workflow(name="", source=source)
        self.names: dict[str, str] = {}
        self.profile_cache: dict[Any, dict] = {}
        self.subworkflows: list[str] = []
        self.hook_jobs: list[str] = []
        self.unknown_job_keys: dict[str, str] = {}
        self.unknown_use_keys: dict[str, str] = {}
        self.job_lines: Any = None  # callable: job index -> line, for duplicate ids
        self.unknown_deps: list[str] = []
        self.unknown_dep_where = ""
        self.strict = STRICT

    # -- the two ways -----------------------------------------------------------------

    def read_whole(self) -> Workflow:
        data = parse(self.text, self.source)
        text = self.text
        try:
            if not isinstance(data, dict):
                raise Invalid(f"a workflow must be a mapping, not {type_name(data)}", ())
            self.header(data)
        except Invalid as exc:
            raise ConfigError(cat.located(self.source, text, exc)) from None
        jobs = data.get("jobs")
        self.job_lines = lambda i: _line_of(text, ("jobs", i))
        try:
            for i, d in enumerate(as_list(jobs, "jobs", ("jobs",))):
                try:
                    self.job(d)
                except Invalid as exc:
                    raise Invalid(exc.message, ("jobs", i, *exc.path)) from None
        except Invalid as exc:
            raise ConfigError(cat.located(self.source, text, exc)) from None
        deps = data.get("jobDependencies")
        if deps is not None:
            try:
                for k, e in enumerate(as_list(deps, "jobDependencies", ("jobDependencies",))):
                    self.dependency(e, ("jobDependencies", k), text, 0)
            except Invalid as exc:
                raise ConfigError(cat.located(self.source, text, exc)) from None
        try:
            self.catalogs(data)
        except Invalid as exc:
            raise ConfigError(cat.located(self.source, text, exc)) from None
        return self.finish()

    def read_split(self) -> Workflow:
        text = self.text
        blocks = split_document(text)
        top: dict[str, Any] = {}
        where: dict[str, tuple[str, int]] = {}
        big: dict[str, Block] = {}
        for b in blocks:
            if b.key in ("jobs", "jobDependencies") and _has_content(text, b):
                if b.key in big or b.key in top:
                    raise Irregular("a key twice")
                big[b.key] = b
                continue
            chunk = text[b.start : b.end]
            data = self._parse_chunk(chunk, b.line - 1)
            if data is None:
                continue
            if not isinstance(data, dict):
                raise Irregular("a top-level block that is not a mapping")
            for k, v in data.items():
                if k in top or k in big:
                    raise Irregular("a key twice")
                top[k] = v
                where[k] = (chunk, b.line - 1)
        header_text, header_off = where.get("pegasus", where.get("name", ("", 0)))
        try:
            self.header(top, has_jobs="jobs" in big)
        except Invalid as exc:
            src_text, off = (
                where.get(str(exc.path[0]), (header_text, header_off))
                if exc.path
                else (
                    header_text,
                    header_off,
                )
            )
            raise ConfigError(cat.located(self.source, src_text, exc, off)) from None
        if "jobs" in big:
            self._read_big(big["jobs"], self._jobs_batch, strict.scan_jobs, strict.apply_job)
        elif "jobs" in top:
            jtext, joff = where["jobs"]
            self.job_lines = lambda i: _line_of(jtext, ("jobs", i), joff)
            try:
                for i, d in enumerate(as_list(top["jobs"], "jobs", ("jobs",))):
                    try:
                        self.job(d)
                    except Invalid as exc:
                        raise Invalid(exc.message, ("jobs", i, *exc.path)) from None
            except Invalid as exc:
                raise ConfigError(cat.located(self.source, jtext, exc, joff)) from None
        if "jobDependencies" in big:
            self._read_big(
                big["jobDependencies"], self._deps_batch, strict.scan_deps, strict.apply_dep
            )
        elif top.get("jobDependencies") is not None:
            dtext, doff = where["jobDependencies"]
            try:
                deps = as_list(top["jobDependencies"], "jobDependencies", ("jobDependencies",))
                for k, e in enumerate(deps):
                    self.dependency(e, ("jobDependencies", k), dtext, doff)
            except Invalid as exc:
                raise ConfigError(cat.located(self.source, dtext, exc, doff)) from None
        try:
            self.catalogs(top)
        except Invalid as exc:
            ctext, coff = where.get(str(exc.path[0]), ("", 0)) if exc.path else ("", 0)
            raise ConfigError(cat.located(self.source, ctext, exc, coff)) from None
        return self.finish()

    def _parse_chunk(self, chunk: str, line_offset: int) -> Any:
        data = None
        if fast_ok(chunk):
            data = fast_loads(chunk)
        if data is None:
            try:
                data = parse(chunk, self.source, line_offset)
            except ConfigError:
                # a syntax error in a piece: the whole text decides, unless it is huge
                if len(self.text) <= CONFIRM_LIMIT:
                    raise Irregular("syntax error in a piece") from None
                raise
        return data

    def _read_big(self, b: Block, handle: Any, scanner: Any, apply: Any) -> None:
        text = self.text
        # the strict reader takes batches cut by size (cheaper than counting items)
        size = BATCH * BATCH_CHARS if self.strict else 0
        batches = list(iter_items(text, b.value_start, b.end, b.line + 1, BATCH, size))
        first_jobs: list[tuple[int, int, int]] = []  # (job index, batch start, line)
        if b.key == "jobs":

            def job_line(i: int) -> int | None:
                k = max(j for j, (idx, _, _) in enumerate(first_jobs) if idx <= i)
                idx, start, line = first_jobs[k]
                for _bs, _be, bl, _n in iter_items(text, start, b.end, line, 1):
                    if idx == i:
                        return bl
                    idx += 1
                return None

            self.job_lines = job_line
        if not batches:
            return
        if self.strict and text.startswith("-", batches[0][0]):
            scanned = _scan_batches(text, batches, scanner)
            try:
                for bs, _be, bl, _n in batches:
                    first_jobs.append((len(self.wf.jobs), bs, bl))
                    self._consume(next(scanned), bs, bl, handle, apply)
            finally:
                scanned.close()
        else:
            for bs, be, bl, n in batches:
                first_jobs.append((len(self.wf.jobs), bs, bl))
                self._batch(bs, be, bl, n, handle)

    def _consume(self, entries: list[tuple], bs: int, bl: int, handle: Any, apply: Any) -> None:
        """Apply the strict reader's records; runs of refused items go to the YAML parser."""
        i = 0
        n = len(entries)
        while i < n:
            i = apply(self, entries, i)  # applies records until one it cannot
            if i >= n:
                break
            rec = entries[i]
            if rec[0] is not None:
                # refused late (a dependency on an unknown id): the general path says why
                start, end = self._span_of(rec, entries, bs)
                self._run(start, end, bs, bl, handle)
                i += 1
                continue
            # a run of refused items: (None, start, end) each
            run = rec[1]
            while i < n and entries[i][0] is None:
                run_end = entries[i][2]
                i += 1
            self._run(run, run_end, bs, bl, handle)

    def _span_of(self, rec: tuple, entries: list[tuple], bs: int) -> tuple[int, int]:
        """Where the item of a record lies: from its neighbours' spans, else by rescanning."""
        text = self.text
        pos = bs
        for e in entries:
            nxt = text.find("\n-", pos)
            end = len(text) if nxt < 0 else nxt + 1
            if e is rec:
                return pos, end
            pos = end
        raise AssertionError("record not in its batch")

    def _run(self, rs: int, re_: int, bs: int, bl: int, handle: Any) -> None:
        n = self.text.count("\n-", rs, re_ - 1) + 1
        line = bl + self.text.count("\n", bs, rs)
        self._batch(rs, re_, line, n, handle)

    def _batch(self, bs: int, be: int, bl: int, n: int, handle: Any) -> None:
        chunk = self.text[bs:be]
        data = self._parse_chunk(chunk, bl - 1)
        if type(data) is not list or len(data) != n:
            raise Irregular("a batch did not parse into its items")
        try:
            handle(data, chunk, bl - 1)
        except Invalid as exc:
            raise ConfigError(cat.located(self.source, chunk, exc, bl - 1)) from None

    def _jobs_batch(self, items: list, chunk: str, off: int) -> None:
        job = self.job
        for k, d in enumerate(items):
            try:
                job(d)
            except Invalid as exc:
                raise Invalid(exc.message, (k, *exc.path)) from None

    def _deps_batch(self, items: list, chunk: str, off: int) -> None:
        dep = self.dependency
        for k, e in enumerate(items):
            dep(e, (k,), chunk, off)

    # -- builders ---------------------------------------------------------------------

    def header(self, d: dict, has_jobs: bool = False) -> None:
        wf = self.wf
        cat.check_pegasus_version(d.get("pegasus"))
        if "name" not in d:
            raise Invalid("the workflow has no name", ())
        wf.name = as_str(d["name"], "workflow name", ("name",))
        if "jobs" not in d and not has_jobs:
            raise Invalid("the workflow has no 'jobs:' list", ())
        unknown = [k for k in d if k not in _TOP_KEYS and not str(k).startswith("x-")]
        for k in unknown:
            wf.warnings.append(f"{self.source}: unknown top-level key {k!r} ignored")
        if d.get("profiles") is not None:
            wf.profiles = profiles(d["profiles"], "workflow", ("profiles",))
        if d.get("metadata") is not None:
            wf.metadata = dict(as_map(d["metadata"], "workflow metadata", ("metadata",)))
        hooks = d.get("hooks")
        if hooks:
            events = _hook_events(hooks)
            wf.warnings.append(
                f"{self.source}: workflow hooks ({events}) are not supported yet and are ignored"
            )

    def catalogs(self, d: dict) -> None:
        wf = self.wf
        v = d.get("replicaCatalog")
        if v is not None:
            cat.build_replicas(
                as_map(v, "replicaCatalog", ("replicaCatalog",)),
                wf.replica_catalog,
                ("replicaCatalog",),
            )
        v = d.get("transformationCatalog")
        if v is not None:
            cat.build_transformations(
                as_map(v, "transformationCatalog", ("transformationCatalog",)),
                wf.transformation_catalog,
                ("transformationCatalog",),
            )
        v = d.get("siteCatalog")
        if v is not None:
            v = as_map(v, "siteCatalog", ("siteCatalog",))
            if "$ref" in v:
                raise Invalid(
                    "siteCatalog: {$ref: ...} is not supported; give the file instead",
                    ("siteCatalog",),
                )
            cat.build_sites(v, wf.site_catalog, ("siteCatalog",))

    def job(self, d: Any) -> None:
        """Add one job from its parsed mapping; Invalid paths are relative to it."""
        if type(d) is not dict:
            raise Invalid(f"a job must be a mapping, not {type_name(d)}", ())
        wf = self.wf
        kind = d.get("type", "job")
        jid = d.get("id")
        if type(jid) is not str:
            if jid is None:
                raise Invalid("a job has no id", ())
            jid = as_str(jid, "job id", ("id",))
        if not _ID.fullmatch(jid):
            raise Invalid(f"job id {jid!r} may hold only letters, digits, '-' and '_'", ("id",))
        if kind == "job":
            name = d.get("name")
            if type(name) is not str or not name:
                if name is None:
                    raise Invalid(f"job {jid!r} has no name (its transformation)", ())
                name = as_str(name, f"job {jid!r} name", ("name",))
        elif kind in _SUBWF:
            name = as_str(d.get("file"), f"sub-workflow {jid!r} file", ("file",))
            self.subworkflows.append(jid)
        else:
            raise Invalid(
                f"job {jid!r}: unknown type {kind!r} (job, pegasusWorkflow or condorWorkflow)",
                ("type",),
            )
        name = self.names.setdefault(name, name)
        namespace = d.get("namespace")
        if namespace is not None:
            namespace = as_str(namespace, f"job {jid!r} namespace", ("namespace",))
            namespace = self.names.setdefault(namespace, namespace)
        version = d.get("version")
        if version is not None:
            version = as_str(version, f"job {jid!r} version", ("version",))
            version = self.names.setdefault(version, version)

        args = d.get("arguments")
        if args is None:
            args = []
        elif type(args) is not list:
            raise Invalid(
                f"job {jid!r}: arguments must be a list, not {type_name(args)}", ("arguments",)
            )
        else:
            for a in args:
                if type(a) is not str:
                    args = [_arg(a, jid, i) for i, a in enumerate(args)]
                    break

        lfn_index = wf.lfn_index
        lfns = wf.lfns
        uses = []
        raw_uses = d.get("uses")
        if raw_uses is not None:
            if type(raw_uses) is not list:
                raise Invalid(
                    f"job {jid!r}: uses must be a list, not {type_name(raw_uses)}", ("uses",)
                )
            for j, u in enumerate(raw_uses):
                if type(u) is not dict:
                    raise Invalid(f"job {jid!r}: uses[{j}] must be a mapping", ("uses", j))
                lfn = u.get("lfn")
                if type(lfn) is not str or not lfn:
                    if lfn is None:
                        raise Invalid(f"job {jid!r}: uses[{j}] has no lfn", ("uses", j))
                    lfn = as_str(lfn, f"job {jid!r}: uses[{j}].lfn", ("uses", j, "lfn"))
                ut = u.get("type")
                t = USE_TYPES.get(ut) if type(ut) is str else None
                if t is None:
                    raise Invalid(
                        f"job {jid!r}: uses[{j}] ({lfn}): unknown type {u.get('type')!r}"
                        " (one of input, output, inout, checkpoint, none)",
                        ("uses", j, "type") if "type" in u else ("uses", j),
                    )
                idx = lfn_index.get(lfn)
                if idx is None:
                    idx = len(lfns)
                    lfns.append(lfn)
                    lfn_index[lfn] = idx
                use = Use(idx, t)
                if len(u) > 2:
                    self._use_flags(use, u, jid, j)
                    if "metadata" in u:
                        self._use_sum(lfn, u["metadata"], jid, j)
                uses.append(use)

        stdio = []
        for key in ("stdin", "stdout", "stderr"):
            v = d.get(key)
            stdio.append(None if v is None else as_str(v, f"job {jid!r} {key}", (key,)))

        prof = d.get("profiles")
        if prof is not None:
            prof = self._profiles(prof, jid)
        md = d.get("metadata")
        if md is not None:
            md = as_map(md, f"job {jid!r} metadata", ("metadata",))
        label = d.get("nodeLabel")
        if label is not None:
            label = as_str(label, f"job {jid!r} nodeLabel", ("nodeLabel",))
        if d.get("hooks"):
            self.hook_jobs.append(jid)
        if not d.keys() <= _JOB_KEYS:
            for k in d:
                if (
                    k not in _JOB_KEYS
                    and k not in self.unknown_job_keys
                    and not str(k).startswith("x-")
                ):
                    self.unknown_job_keys[k] = jid

        self.add(jid, name, namespace, version, args, uses, stdio, prof or None, label, kind, md)

    def add(
        self,
        jid: str,
        name: str,
        namespace: str | None,
        version: str | None,
        args: list[str],
        uses: list[Use],
        stdio: list[str | None] | None,
        prof: dict | None,
        label: str | None,
        kind: str,
        md: dict | None,
    ) -> None:
        """Register one checked job: stdio LFNs interned (and added to uses if missing)."""
        wf = self.wf
        lfn_index = wf.lfn_index
        lfns = wf.lfns
        io = [None, None, None]
        for k, lfn in enumerate(stdio or ()):
            if lfn is None:
                continue
            idx = lfn_index.get(lfn)
            if idx is None:
                idx = len(lfns)
                lfns.append(lfn)
                lfn_index[lfn] = idx
            io[k] = idx
            for u in uses:
                if u.lfn == idx:
                    break
            else:
                uses.append(Use(idx, USE_INPUT if k == 0 else USE_OUTPUT))
        job = Job(
            jid, name, namespace, version, args, uses, io[0], io[1], io[2], prof, label, kind, md
        )
        k = len(wf.jobs)
        if wf.job_index.setdefault(jid, k) != k:
            self._duplicate(jid)
        wf.jobs.append(job)
        wf.children.append([])

    def _use_flags(self, use: Use, u: dict, jid: str, j: int) -> None:
        for key, attr in _USE_FLAGS:
            v = u.get(key)
            if v is not None:
                setattr(use, attr, as_bool(v, f"job {jid!r}: uses[{j}].{key}", ("uses", j, key)))
        size = u.get("size")
        if size is not None:
            use.size = as_int(size, f"job {jid!r}: uses[{j}].size", ("uses", j, "size"))
        for k in u:
            if (
                k not in _USE_KEYS
                and k not in self.unknown_use_keys
                and not str(k).startswith("x-")
            ):
                self.unknown_use_keys[k] = jid

    def _use_sum(self, lfn: str, md: Any, jid: str, j: int) -> None:
        """A ``checksum.value`` in a use's metadata (``File.add_metadata``): the file's sum."""
        where = ("uses", j, "metadata")
        md = as_map(md, f"job {jid!r}: uses[{j}].metadata", where)
        value = md.get("checksum.value")
        if value is None:
            return
        kind = str(md.get("checksum.type", "sha256")).lower()
        if kind != "sha256":
            raise Invalid(
                f"job {jid!r}: uses[{j}] ({lfn}): only checksum.type sha256 is supported,"
                f" not {kind!r}",
                (*where, "checksum.type"),
            )
        sha = str(value).strip().lower().removeprefix("sha256:")
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise Invalid(
                f"job {jid!r}: uses[{j}] ({lfn}): checksum.value is not 64 hex digits: {value!r}",
                (*where, "checksum.value"),
            )
        self.wf.use_sums.setdefault(lfn, sha)

    def _profiles(self, prof: Any, jid: str) -> dict:
        try:
            key = tuple(
                (ns, tuple((k, v.__class__, v) for k, v in kv.items())) for ns, kv in prof.items()
            )
            hit = self.profile_cache.get(key)
        except (AttributeError, TypeError):
            key, hit = None, None
        if hit is not None:
            return hit
        out = profiles(prof, f"job {jid!r}", ("profiles",))
        if key is not None and len(self.profile_cache) < 10000:
            self.profile_cache[key] = out
        return out

    def _duplicate(self, jid: str) -> None:
        first = self.wf.job_index[jid]
        second = len(self.wf.jobs)
        l1 = self.job_lines(first) if self.job_lines else None
        l2 = self.job_lines(second) if self.job_lines else None
        where = f"{self.source}:{l2}" if l2 else self.source
        also = f" (first defined at line {l1})" if l1 else ""
        raise ConfigError(f"{where}: duplicate job id {jid!r}{also}")

    def dependency(self, e: Any, path: tuple[object, ...], text: str, off: int) -> None:
        if type(e) is not dict:
            raise Invalid(f"a jobDependencies entry must be a mapping, not {type_name(e)}", path)
        job_index = self.wf.job_index
        pid = e.get("id")
        if type(pid) is not str:
            if pid is None:
                raise Invalid("a jobDependencies entry has no id", path)
            pid = as_str(pid, "jobDependencies id", (*path, "id"))
        p = job_index.get(pid)
        if p is None:
            self._unknown_dep(pid, (*path, "id"), text, off)
        kids = e.get("children")
        if kids is None:
            return
        if type(kids) is not list:
            raise Invalid(
                f"jobDependencies of {pid!r}: children must be a list", (*path, "children")
            )
        lst = self.wf.children[p] if p is not None else []
        for m, c in enumerate(kids):
            if type(c) is not str:
                c = as_str(c, "jobDependencies child", (*path, "children", m))
            ci = job_index.get(c)
            if ci is None:
                self._unknown_dep(c, (*path, "children", m), text, off)
            else:
                lst.append(ci)

    def _unknown_dep(self, jid: str, path: tuple[object, ...], text: str, off: int) -> None:
        if not self.unknown_deps:
            where = locate(text, path)
            self.unknown_dep_where = (
                f"{self.source}:{where[0] + off}:{where[1]}" if where else self.source
            )
        if jid not in self.unknown_deps:
            self.unknown_deps.append(jid)

    def finish(self) -> Workflow:
        wf = self.wf
        if self.unknown_deps:
            names = ", ".join(repr(j) for j in self.unknown_deps[:5])
            more = len(self.unknown_deps) - 5
            tail = f" and {more} more" if more > 0 else ""
            raise ConfigError(
                f"{self.unknown_dep_where}: jobDependencies names jobs the workflow does not"
                f" have: {names}{tail}"
            )
        for i, lst in enumerate(wf.children):
            if len(lst) > 1:
                uniq = list(dict.fromkeys(lst))
                if len(uniq) != len(lst):
                    wf.children[i] = uniq
        if self.subworkflows:
            wf.warnings.append(
                f"{self.source}: sub-workflow jobs are not supported yet:"
                f" {_some(self.subworkflows)}"
            )
        if self.hook_jobs:
            wf.warnings.append(
                f"{self.source}: job hooks are not supported yet and are ignored:"
                f" {_some(self.hook_jobs)}"
            )
        for k, jid in self.unknown_job_keys.items():
            wf.warnings.append(
                f"{self.source}: unknown job key {k!r} ignored (first in job {jid!r})"
            )
        for k, jid in self.unknown_use_keys.items():
            wf.warnings.append(
                f"{self.source}: unknown uses key {k!r} ignored (first in job {jid!r})"
            )
        return wf


# --- the strict reader, in this process or in forked workers ----------------------

#: jobs text above which the strict reader runs in worker processes
PARALLEL_MIN = 16 << 20


def _scan_batches(text: str, batches: list, scanner: Any) -> Any:
    """Yield ``scanner`` (:func:`strictread.scan_jobs`, ``scan_deps``) results for
    ``batches``, in order.

    A large text is scanned by forked workers (:mod:`ferry.planner.forkscan`: they
    share ``text`` copy-on-write and send back marshalled records); the caller
    applies the records in order meanwhile.
    """
    workers = _workers()
    size = batches[-1][1] - batches[0][0]
    procs = None
    if workers >= 2 and size >= PARALLEL_MIN:
        spans = [(bs, be) for bs, be, _bl, _n in batches]
        procs = forkscan.fork_scanners(text, spans, scanner, workers)
    if procs is None:
        for bs, be, _bl, _n in batches:
            yield scanner(text, bs, be)
        return
    done = False
    try:
        yield from forkscan.results(procs, len(batches))
        done = True
    finally:
        forkscan.stop(procs, kill=not done)


def _workers() -> int:
    import threading

    if not hasattr(os, "fork") or threading.active_count() > 1:
        return 1
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return min(n, 4)


def _arg(a: Any, jid: str, i: int) -> str:
    t = type(a)
    if t is str:
        return a
    if t is bool:
        return "true" if a else "false"
    if t is int or t is float:
        return str(a)
    raise Invalid(
        f"job {jid!r}: arguments[{i}] must be a string or number, not {type_name(a)}",
        ("arguments", i),
    )


def _some(ids: list[str], n: int = 10) -> str:
    shown = ", ".join(ids[:n])
    return f"{shown} and {len(ids) - n} more" if len(ids) > n else shown


def _hook_events(hooks: Any) -> str:
    events: list[str] = []
    if isinstance(hooks, dict):
        for kind, lst in hooks.items():
            for h in lst if isinstance(lst, list) else []:
                on = h.get("_on") if isinstance(h, dict) else None
                events.append(f"{kind}: {on}" if on else str(kind))
    return ", ".join(events) or "hooks"


def _has_content(text: str, b: Block) -> bool:
    """Whether a block holds more than its key line (and blank or comment lines)."""
    pos = b.value_start
    while pos < b.end:
        nl = text.find("\n", pos, b.end)
        nl = b.end if nl < 0 else nl + 1
        line = text[pos:nl].strip()
        if line and not line.startswith("#"):
            return True
        pos = nl
    return False


def _line_of(text: str, path: tuple[object, ...], off: int = 0) -> int | None:
    where = locate(text, path)
    return where[0] + off if where else None
