"""Job spec JSON written from per-template fragments, without a struct tree per job.

:meth:`ferry.planner.specs.SpecBuilder.build` makes one ``JobSpec`` (with its
``Input``/``Output``/``SourceURL``/``Destination`` structs) per job for msgspec to
encode; for a million jobs that build is most of the cost of writing the specs.
Jobs of one template (transformation, compute site, profile set) share every
field but ``id``, ``arguments``, ``stdin``/``stdout``/``stderr``, ``inputs``,
``outputs`` and ``checkpoints``. So :class:`SpecJSON` encodes, once per template,
a prototype spec with those fields empty, cuts the encoded JSON at them (by
decoding it into ``msgspec.Raw`` values, field by field, in the struct's field
order), and writes each job as those fragments with its own fields between.

The per-job fields are written the way msgspec writes them (same field order,
same ``omit_defaults`` rule: a value is left out when it *is* the field's
default, or is an empty list for a ``[]`` default), so the bytes are the same as
``msgspec.json.encode(builder.build(j))``; the tests compare the two byte for
byte and decode both with the worker's loader. Anything not covered here (a job
with checkpoint files, an input whose sources come from data reuse at the output
site) is written through the builder as before.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import msgspec

from ferry.worker.jobspec import (
    JOBSPEC_VERSION,
    Destination,
    Input,
    JobSpec,
    Output,
    SourceURL,
)

from .model import USE_CHECKPOINT, USE_INOUT, USE_INPUT, USE_OUTPUT
from .sites import Location, to_url
from .specs import PRIO_FILE, PRIO_OTHER, PRIO_SITE, _pfn_parts

if TYPE_CHECKING:  # pragma: no cover
    from .specs import SpecBuilder, _Template

__all__ = ["SpecJSON"]

_ENCODE = msgspec.json.Encoder().encode
#: printable ASCII but '"' and '\': such a string is its own JSON body
_SAFE = re.compile(r"[ !#-\[\]-~]*").fullmatch
#: LFNs a Location writes as they are (sites._PLAIN); also JSON-safe
_PLAIN = re.compile(r"[A-Za-z0-9_.\-/]+").fullmatch
_PLAIN_ALL = re.compile(r"[A-Za-z0-9_.\-/]*").fullmatch
#: the JobSpec fields that differ from job to job of one template
_PER_JOB = ("id", "arguments", "stdin", "stdout", "stderr", "inputs", "outputs", "checkpoints")


def _default(struct: type, name: str) -> Any:
    for f in msgspec.structs.fields(struct):
        if f.name == name:
            return f.default
    raise LookupError(name)


def _factory(struct: type, name: str) -> Any:
    for f in msgspec.structs.fields(struct):
        if f.name == name:
            return f.default_factory
    raise LookupError(name)


def _js(s: str) -> str:
    """``s`` as a JSON string."""
    if _SAFE(s):
        return '"' + s + '"'
    return _ENCODE(s).decode()


def _layout_ok() -> bool:
    """Whether JobSpec still looks the way this module writes it (else: the builder)."""
    fields = msgspec.structs.fields(JobSpec)
    if fields[0].name != "version" or fields[1].name != "id":
        return False
    for f in fields:
        # the per-job fields are left out when empty (a [] default) or None
        if f.name in _PER_JOB[1:] and f.default is not None and f.default_factory is not list:
            return False
        if f.name in _PER_JOB and f.encode_name != f.name:
            return False
    checks = (
        [f.name for f in msgspec.structs.fields(SourceURL)] == ["url", "priority", "site"],
        [f.name for f in msgspec.structs.fields(Destination)] == ["url", "site"],
        [f.name for f in msgspec.structs.fields(Input)][:2] == ["lfn", "sources"],
        [f.name for f in msgspec.structs.fields(Output)]
        == ["lfn", "destinations", "path", "required"],
        _default(Input, "sha256") is None and _default(Input, "executable") is False,
        _default(Input, "size") is None and _default(Output, "required") is True,
        _factory(Output, "destinations") is list,
    )
    return all(checks)


_SITE_DEFAULT_SRC = _default(SourceURL, "site")
_SITE_DEFAULT_DEST = _default(Destination, "site")
_FLOATS: dict[float, str] = {}


def _float(x: float) -> str:
    s = _FLOATS.get(x)
    if s is None:
        s = _FLOATS[x] = _ENCODE(x).decode()
    return s


class _Where:
    """A Location's URLs as JSON fragments: ``{"url":"<prefix>/LFN"<suffix>``."""

    __slots__ = ("get_prefix", "loc", "put_prefix", "src_suffix", "dest_suffix")

    def __init__(self, loc: Location) -> None:
        self.loc = loc
        # JSON escapes character by character: the JSON of prefix + LFN is the prefix's
        # (without its closing quote) + the LFN, for an LFN that needs no escaping
        self.get_prefix = '{"url":' + _js(loc.get_url + "/")[:-1]
        self.put_prefix = '{"url":' + _js(loc.put_url + "/")[:-1]
        # SourceURL(url, priority=PRIO_FILE, site=loc.site) after its url
        site = "" if loc.site is _SITE_DEFAULT_SRC else ',"site":' + _js(loc.site)
        self.src_suffix = '","priority":' + _float(PRIO_FILE) + site + "}"
        site = "" if loc.site is _SITE_DEFAULT_DEST else ',"site":' + _js(loc.site)
        self.dest_suffix = site + "}"

    def source(self, lfn: str) -> str:
        """SourceURL(url=loc.get(lfn), priority=PRIO_FILE, site=loc.site) as JSON."""
        if _PLAIN(lfn) and lfn[0] != "/":
            return self.get_prefix + lfn + self.src_suffix
        return '{"url":' + _js(self.loc.get(lfn)) + self.src_suffix[1:]

    def source_pieces(self) -> list[str]:
        """Input(lfn=L, sources=[source(L)]) cut at L (for a plain L)."""
        return ['{"lfn":"', '","sources":[' + self.get_prefix, self.src_suffix + "]}"]

    def destination(self, lfn: str) -> str:
        """Destination(url=loc.put(lfn), site=loc.site) as JSON."""
        if _PLAIN(lfn) and lfn[0] != "/":
            return self.put_prefix + lfn + '"' + self.dest_suffix
        return '{"url":' + _js(self.loc.put(lfn)) + self.dest_suffix


class _Frame:
    """The fixed parts of one template's specs, around the per-job fields."""

    __slots__ = ("after_args", "after_id", "head", "stage", "tail")

    def __init__(self, proto: JobSpec, stage: Input | None) -> None:
        raw = msgspec.json.decode(_ENCODE(proto), type=dict[str, msgspec.Raw])
        # the fields in struct order, cut into the runs between per-job fields
        runs: list[list[str]] = [[]]
        for f in msgspec.structs.fields(JobSpec):
            if f.name in _PER_JOB:
                runs.append([])
                continue
            value = raw.get(f.encode_name)
            if value is not None:
                runs[-1].append(_js(f.encode_name) + ":" + bytes(value).decode())
        texts = [",".join(r) for r in runs]
        # runs: [version], [] id [executable] args [name, environment] stdin [] stdout []
        # stderr [] inputs [] outputs [] checkpoints [the rest]
        if len(texts) != 9 or any(texts[k] for k in (3, 4, 5, 6, 7)) or not texts[0]:
            raise ValueError("unexpected job spec layout")
        self.head = "{" + texts[0]
        self.after_id = "," + texts[1] if texts[1] else ""
        self.after_args = "," + texts[2] if texts[2] else ""
        self.tail = ("," + texts[8] if texts[8] else "") + "}"
        self.stage = _ENCODE(stage).decode() if stage is not None else None


class SpecJSON:
    """Writes the spec of a planned job as :meth:`SpecBuilder.build` + msgspec would."""

    def __init__(self, builder: SpecBuilder) -> None:
        self.b = builder
        self.enabled = _layout_ok()
        self._frames: dict[int, _Frame | None] = {}
        self._where: dict[int, _Where] = {}
        self._outs = [_Where(o) for o in builder.layout.outputs]
        # what every job looks up, bound once
        wf = builder.wf
        self.jobs = wf.jobs
        self.lfns = wf.lfns
        self.rc = wf.replica_catalog
        self.producer = builder.graph.producer
        self.kept = builder.kept
        self.staged = builder.staged
        self.no_tc = not builder.has_tc
        # plain mode: every LFN made of plain characters and every id JSON-safe (checked
        # in one go; validation has refused empty and absolute LFNs of planned jobs): then
        # a URL is prefix + LFN and the JSON of a use is LFN.join(pieces)
        self.plain = (
            self.enabled
            and not self.no_tc
            and _PLAIN_ALL("".join(self.lfns)) is not None
            and _SAFE("".join([job.id for job in self.jobs])) is not None
        )
        self._src_pieces: dict[str, list[str]] = {}
        self._out_pieces: dict[tuple[str, bool, bool, bool], list[str]] = {}
        # the last template, its frame, its site and its Output pieces by flags
        self._last: tuple[Any, Any, str, list] = (None, None, "", [])
        self.by_job = builder.templates()
        # the regex replica entries: (fullmatch, its one replica or None, the PFN's parts,
        # the JSON around the PFN when it is a plain path: a file:// URL)
        self._regex = [
            (p.fullmatch, reps[0], _pfn_parts(reps[0].pfn), _around_pfn(reps[0]))
            if len(reps) == 1
            else (p.fullmatch, None, [], ("", ""))
            for p, reps in self.rc.regex
        ]

    def __call__(self, j: int) -> bytes:
        job = self.jobs[j]
        text = None
        if self.plain:
            text = self._spec_plain(j, job)
        if text is None and self.enabled:
            text = self._spec(j, job)
        if text is None:
            return _ENCODE(self.b.build(j))
        return text.encode()

    # -- plain mode -----------------------------------------------------------------

    def _spec_plain(self, j: int, job: Any) -> str | None:
        """The common case, faster: inputs and outputs of plain LFNs, no stdio, no
        checkpoints, no per-use executable or size, one replica (or a producer) per
        input; None for anything else (then :meth:`_spec`)."""
        if job.stdin is not None or job.stdout is not None or job.stderr is not None:
            return None
        b = self.b
        t = self.by_job[j] or b.template(j)
        if t is not self._last[0]:  # consecutive jobs mostly share their template
            frame = self._frame(t)
            if frame is None:  # pragma: no cover
                return None
            self._last = (t, frame, t.labels["site"], [None] * 8)
        _, frame, site, out_table = self._last
        lfns = self.lfns
        producer = self.producer
        kept = self.kept
        staged = self.staged
        site_of = b.site_of if b.job_site is not None else None
        inputs = [frame.stage] if frame.stage is not None else []
        outputs = []
        for u in job.uses:
            t_ = u.type
            li = u.lfn
            if t_ == USE_INPUT or t_ == USE_INOUT:
                if u.executable or u.size is not None:
                    return None
                pj = producer[li]
                if pj >= 0 and pj != j and kept[pj]:
                    psite = site_of(pj) if site_of is not None else site
                    pieces = self._src_pieces.get(psite)
                    if pieces is None:
                        pieces = self._src_pieces[psite] = self._staging(psite).source_pieces()
                    inputs.append(lfns[li].join(pieces))
                else:
                    inp = self._replica_input(lfns[li], site)
                    if inp is None:
                        return None
                    inputs.append(inp)
            if t_ == USE_OUTPUT or t_ == USE_INOUT:
                code = (staged[li] << 2) | (u.stage_out << 1) | u.optional
                pieces = out_table[code]
                if pieces is None:
                    key = (site, bool(staged[li]), u.stage_out, u.optional)
                    pieces = self._out_pieces.get(key)
                    if pieces is None:
                        pieces = self._out_pieces[key] = self._output_pieces(*key)
                    out_table[code] = pieces
                outputs.append(lfns[li].join(pieces))
            elif t_ == USE_CHECKPOINT:
                return None
        args = ',"arguments":' + _ENCODE(job.arguments).decode() if job.arguments else ""
        ins = ',"inputs":[' + ",".join(inputs) + "]" if inputs else ""
        outs = ',"outputs":[' + ",".join(outputs) + "]" if outputs else ""
        return (
            f'{frame.head},"id":"{job.id}"{frame.after_id}{args}{frame.after_args}'
            f"{ins}{outs}{frame.tail}"
        )

    def _output_pieces(self, site: str, staged: bool, stage_out: bool, optional: bool) -> list[str]:
        """Output(lfn=L, ...) as JSON cut at L: what :meth:`_spec` writes for a plain L."""
        dests = [self._staging(site)] if staged else []
        if stage_out:
            dests.extend(self._outs)
        end = ',"required":false}' if optional else "}"
        if not dests:
            return ['{"lfn":"', '"' + end]
        pieces = ['{"lfn":"', '","destinations":[']
        for k, w in enumerate(dests):
            pieces[-1] += ("," if k else "") + w.put_prefix
            pieces.append('"' + w.dest_suffix)
        pieces[-1] += "]" + end
        return pieces

    def _replica_input(self, lfn: str, site: str) -> str | None:
        """Input(lfn) from its one replica, a regex entry's, with a plain path as PFN."""
        rc = self.rc
        if rc.entries and lfn in rc.entries:
            return None
        found = None
        for fullmatch, r1, parts1, around1 in self._regex:
            m1 = fullmatch(lfn)
            if m1 is None:
                continue
            if found is not None or r1 is None:
                return None
            found = m1, r1, parts1, around1
        if found is None:
            return None
        m, r, parts, around = found
        if r.sha256 or (rc.checksums and rc.checksums.get(lfn)):
            return None
        if len(parts) == 3 and 0 < parts[1] <= m.re.groups:  # type: ignore[operator]
            pfn = parts[0] + (m.group(parts[1]) or "") + parts[2]  # type: ignore[operator]
        else:
            groups = (m.group(0), *m.groups())
            pfn = "".join(
                p if isinstance(p, str) else ((groups[p] or "") if p < len(groups) else f"[{p}]")
                for p in parts
            )
        # to_url's own test for a path that is its URL after file://
        if pfn[:1] != "/" or not _PLAIN(pfn) or "/." in pfn or "//" in pfn:
            return None
        return '{"lfn":"' + lfn + around[0] + pfn + around[1]

    # -- pieces ------------------------------------------------------------------

    def _frame(self, t: _Template) -> _Frame | None:
        key = id(t)  # the builder keeps its templates for as long as it lives
        if key in self._frames:
            return self._frames[key]
        exe = t.exe
        proto = JobSpec(
            version=JOBSPEC_VERSION,
            id="",
            name=t.labels["transformation"],
            executable=exe.executable,
            environment=t.environment,
            container=exe.container,
            resources=t.resources,
            timeout=t.timeout,
            records_dir=self.b.records_dir,
            labels=t.labels,
        )
        if t.kill_grace is not None:
            proto.kill_grace = t.kill_grace
        if t.success is not None:
            proto.success = t.success
        if t.transfer is not None:
            proto.transfer = t.transfer
        try:
            f: _Frame | None = _Frame(proto, exe.stage)
        except ValueError:  # pragma: no cover - JobSpec changed: the builder's way
            f = None
        self._frames[key] = f
        return f

    def _staging(self, site: str) -> _Where:
        loc = self.b.layout.staging[site]
        w = self._where.get(id(loc))
        if w is None:
            w = self._where[id(loc)] = _Where(loc)
        return w

    def _input(self, j: int, li: int, site: str, executable: bool, size: int | None) -> str | None:
        """Input(...) of :meth:`SpecBuilder._input` as JSON; None: the builder's way."""
        lfn = self.lfns[li]
        pj = self.producer[li]
        tail = "}"
        if executable or size is not None:
            tail = (',"executable":true' if executable else "") + (
                ',"size":' + str(int(size)) + "}" if size is not None else "}"
            )
        head = (
            '{"lfn":"' + lfn + '","sources":['
            if _SAFE(lfn)
            else ('{"lfn":' + _js(lfn) + ',"sources":[')
        )
        if pj >= 0 and pj != j and self.kept[pj]:
            return head + self._staging(self.b.site_of(pj)).source(lfn) + "]" + tail
        rc = self.rc
        reps = _replicas(rc, lfn)
        if not reps:
            if li in self.b.reused_sources:
                return None
            return head + "]" + tail
        if len(reps) == 1:
            r_site, pfn, sha, prio = reps[0]
            return (
                head
                + _source(pfn, r_site, prio, site)
                + "]"
                + _sha(sha or rc.checksums.get(lfn))
                + tail
            )
        sha = None
        for r in reps:
            if r[2]:
                sha = r[2]
                break
        else:
            sha = rc.checksums.get(lfn)
        srcs = []
        for r_site, pfn, _s, prio in reps:
            url = to_url(pfn)
            srcs.append((_priority(url, r_site, prio, site), url, r_site))
        srcs.sort(key=lambda s: -(s[0] or 0.0))
        parts = []
        for pr, url, r_site in srcs:
            text = '{"url":' + _js(url) + ',"priority":' + _float(pr)
            if r_site is not _SITE_DEFAULT_SRC:
                text += ',"site":' + _js(r_site)
            parts.append(text + "}")
        return head + ",".join(parts) + "]" + _sha(sha) + tail

    def _spec(self, j: int, job: Any) -> str | None:
        b = self.b
        lfns = self.lfns
        t = b.template(j)
        site = t.labels["site"]
        frame = self._frame(t)
        if frame is None:  # pragma: no cover
            return None
        staged = self.staged
        no_tc = self.no_tc
        stage = self._staging(site)
        outs = self._outs

        inputs: list[str] = []
        outputs: list[str] = []
        if frame.stage is not None:
            inputs.append(frame.stage)
        seen_stdin = job.stdin is None
        seen_out = 0
        for u in job.uses:
            t_ = u.type
            li = u.lfn
            if t_ == USE_INPUT or t_ == USE_INOUT:
                inp = self._input(
                    j, li, site, u.executable or (no_tc and lfns[li] == job.name), u.size
                )
                if inp is None:
                    return None
                inputs.append(inp)
                if li == job.stdin:
                    seen_stdin = True
            if t_ == USE_OUTPUT or t_ == USE_INOUT:
                lfn = lfns[li]
                out = '{"lfn":"' + lfn + '"' if _SAFE(lfn) else '{"lfn":' + _js(lfn)
                if staged[li]:
                    out += ',"destinations":[' + stage.destination(lfn)
                    if u.stage_out:
                        for o in outs:
                            out += "," + o.destination(lfn)
                    out += "]"
                elif u.stage_out and outs:
                    out += ',"destinations":[' + ",".join([o.destination(lfn) for o in outs]) + "]"
                outputs.append(out + (',"required":false}' if u.optional else "}"))
                if li == job.stdout or li == job.stderr:
                    seen_out += 1
            elif t_ == USE_CHECKPOINT:
                return None  # the builder's way
        if not seen_stdin:
            inp = self._input(j, job.stdin, site, False, None)
            if inp is None:
                return None
            inputs.append(inp)
        if seen_out < (job.stdout is not None) + (job.stderr is not None):
            # the stdout/stderr outputs that uses lacks (compared by LFN, as the builder does)
            have = set()
            for u in job.uses:
                if u.type == USE_OUTPUT or u.type == USE_INOUT:
                    have.add(lfns[u.lfn])
            for std in (job.stdout, job.stderr):
                if std is not None and lfns[std] not in have:
                    outputs.append(
                        '{"lfn":'
                        + _js(lfns[std])
                        + ',"destinations":['
                        + stage.destination(lfns[std])
                        + "]}"
                    )
        parts = [frame.head, ',"id":', _js(job.id), frame.after_id]
        if job.arguments:
            parts.append(',"arguments":')
            parts.append(_ENCODE(job.arguments).decode())
        parts.append(frame.after_args)
        if job.stdin is not None or job.stdout is not None or job.stderr is not None:
            for key, x in (("stdin", job.stdin), ("stdout", job.stdout), ("stderr", job.stderr)):
                if x is not None:
                    parts.append(f',"{key}":')
                    parts.append(_js(lfns[x]))
        if inputs:
            parts.append(',"inputs":[')
            parts.append(",".join(inputs))
            parts.append("]")
        if outputs:
            parts.append(',"outputs":[')
            parts.append(",".join(outputs))
            parts.append("]")
        parts.append(frame.tail)
        return "".join(parts)


def _around_pfn(r: Any) -> tuple[str, str]:
    """What comes before and after a plain path PFN (a file:// URL, so a file's
    priority whatever the compute site) in ``Input(lfn, sources=[that replica])``."""
    pr = float(r.priority) if r.priority is not None else PRIO_FILE
    tail = ',"site":' + _js(r.site) if r.site is not _SITE_DEFAULT_SRC else ""
    return '","sources":[{"url":"file://', '","priority":' + _float(pr) + tail + "}]}"


def _priority(url: str, r_site: str, prio: int | None, site: str) -> float:
    """A replica's priority as :func:`ferry.planner.specs.replica_sources` gives it."""
    if prio is not None:
        return float(prio)
    if url.startswith("file:"):
        return PRIO_FILE
    return PRIO_SITE if r_site == site else PRIO_OTHER


def _source(pfn: str, r_site: str, prio: int | None, site: str) -> str:
    """SourceURL(url=to_url(pfn), priority=..., site=r_site) as JSON."""
    url = to_url(pfn)
    text = '{"url":"' + url + '"' if _SAFE(url) else '{"url":' + _js(url)
    text += ',"priority":' + _float(_priority(url, r_site, prio, site))
    if r_site is not _SITE_DEFAULT_SRC:
        text += ',"site":' + _js(r_site)
    return text + "}"


def _sha(sha: str | None) -> str:
    return "" if sha is None else ',"sha256":' + _js(sha)


def _replicas(rc: Any, lfn: str) -> list[tuple[str, str, str | None, int | None]]:
    """(site, pfn, sha256, priority) of every replica of ``lfn``, as
    :func:`ferry.planner.specs._replicas` has them (exact entries, then regex ones)."""
    exact = rc.entries.get(lfn)
    out = [(r.site, r.pfn, r.sha256, r.priority) for r in exact] if exact else []
    for pattern, reps in rc.regex:
        m = pattern.fullmatch(lfn)
        if m is None:
            continue
        groups = (m.group(0), *m.groups())
        for r in reps:
            parts = _pfn_parts(r.pfn)
            if len(parts) == 1:
                pfn = parts[0]
            else:
                pfn = "".join(
                    p
                    if isinstance(p, str)
                    else ((groups[p] or "") if p < len(groups) else f"[{p}]")
                    for p in parts
                )
            out.append((r.site, pfn, r.sha256, r.priority))
    return out
