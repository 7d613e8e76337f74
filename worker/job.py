"""The node-side job wrapper: ferry's pegasus-lite.

``JobWorker(spec).run()`` goes through the steps of docs/worker.md: work
directory, container image, stage-in with sha256 checks, checkpoint restore,
run, success checks, stage-out, invocation record. Its return value is the
worker's exit code, which tells the failed step apart.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import time
from collections.abc import Iterator, Mapping
from types import FrameType

import msgspec

from ferry.plugins.errors import ConfigError, FerryError, IntegrityError
from ferry.plugins.protocol import Capability, ProtocolContext
from ferry.plugins.registry import Registry
from ferry.plugins.url import parse_url, redact

from .engine import Engine, TransferConfig, TransferResult, hash_file
from .execute import ProcessResult, Runner
from .jobspec import JobSpec
from .record import InvocationRecord, TransferEntry, next_attempt, write_record
from .request import Endpoint, TransferRequest, normalize_sha256

__all__ = ["EXIT_CODES", "JobWorker", "choose_workdir_base"]

log = logging.getLogger("ferry.worker")

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_WORKER_ERROR = 2
EXIT_STAGE_IN = 3
EXIT_INTEGRITY = 4
EXIT_STAGE_OUT = 5
EXIT_CONTAINER = 6
EXIT_EVICTED = 143

#: exit code -> meaning, for docs and ``ferry analyze``
EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_JOB_FAILED: "the job failed (exit code, signal, timeout, missing output or output check)",
    EXIT_WORKER_ERROR: "worker error (bad job spec, no usable work directory, internal error)",
    EXIT_STAGE_IN: "stage-in failed (an input or checkpoint could not be fetched)",
    EXIT_INTEGRITY: "integrity failure (an input's sha256 did not match)",
    EXIT_STAGE_OUT: "stage-out failed (an output could not be stored)",
    EXIT_CONTAINER: "the container image could not be staged or prepared",
    EXIT_EVICTED: "the worker was sent TERM (eviction): the job was stopped and its checkpoints"
    " staged out, or it had not started",
}

_TAIL = 4096
_FERRY_DIR = ".ferry"
#: where a container job's credential files are copied, in the work directory
CREDENTIALS_DIR = f"{_FERRY_DIR}/credentials"

#: credential variables pegasus-lite fixes up for its job (``pegasus_lite_init``) and
#: carries into its container (``container_env``): every name starting with one of these
CREDENTIAL_PREFIXES = (
    "PEGASUS_CREDENTIALS",
    "FERRY_CREDENTIALS",
    "X509_USER_PROXY",
    "S3CFG",
    "BOTO_CONFIG",
    "SSH_PRIVATE_KEY",
    "IRODS_ENVIRONMENT_FILE",
    "GOOGLE_PKCS12",
)


def credential_files(environ: Mapping[str, str], start_dir: str) -> dict[str, str]:
    """The credential variables of ``environ`` whose file exists, as absolute paths.

    As pegasus-lite: a relative path is taken from the directory the worker started in
    (the job runs in its own work directory), and an absolute path that does not exist
    is looked for by its name there (HTCondor brought it into the sandbox).
    """
    out = {}
    for name, value in environ.items():
        if not value or not name.startswith(CREDENTIAL_PREFIXES):
            continue
        path = os.path.join(start_dir, value)
        if not os.path.exists(path):
            path = os.path.join(start_dir, os.path.basename(value))
        if os.path.isfile(path):
            out[name] = os.path.abspath(path)
    return out


def choose_workdir_base() -> str:
    """First of $FERRY_WORK_DIR, $_CONDOR_SCRATCH_DIR, $TMPDIR, the current directory."""
    for var in ("FERRY_WORK_DIR", "_CONDOR_SCRATCH_DIR", "TMPDIR"):
        value = os.environ.get(var)
        if value and os.path.isdir(value) and os.access(value, os.W_OK | os.X_OK):
            return value
    return os.getcwd()


def _tail(path: str) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - _TAIL))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


class _Outcome(msgspec.Struct):
    code: int
    step: str | None = None


def _user_name() -> str:
    """Who runs the job, as ``getpass.getuser()`` tells (without importing termios)."""
    for var in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        if os.environ.get(var):
            return os.environ[var]
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


class _Stop(Exception):
    """A step failed; the record already says why."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class JobWorker:
    """Runs one job spec on this node and writes its invocation record."""

    def __init__(
        self,
        spec: JobSpec,
        *,
        records_dir: str,
        registry: Registry | None = None,
        keep_workdir: bool | None = None,
        workdir_base: str | None = None,
    ) -> None:
        self.spec = spec
        self.records_dir = records_dir
        self.keep_workdir = spec.keep_workdir_on_failure if keep_workdir is None else keep_workdir
        self.registry = registry or Registry(
            ProtocolContext(concurrency=max(1, spec.transfer.threads))
        )
        self.engine = Engine(
            self.registry,
            TransferConfig(
                threads=max(1, spec.transfer.threads),
                max_attempts=max(1, spec.transfer.max_attempts),
                backoff_initial=spec.transfer.backoff,
            ),
        )
        self.workdir_base = workdir_base
        self.workdir = ""
        self.runner = Runner()
        self.evicted = False
        attempt_env = os.environ.get("FERRY_ATTEMPT", "")
        attempt = int(attempt_env) if attempt_env.isdigit() else next_attempt(records_dir, spec.id)
        self.record = InvocationRecord(
            job_id=spec.id,
            name=spec.name,
            attempt=attempt,
            host=os.uname().nodename,
            user=_user_name(),
            start=time.time(),
            executable=spec.executable,
            arguments=list(spec.arguments),
            labels=dict(spec.labels),
        )

    # -- the steps ---------------------------------------------------------

    def run(self) -> int:
        t0 = time.monotonic()
        with self._signals():
            try:
                outcome = self._steps()
            except _Stop as stop:
                outcome = _Outcome(stop.code)
            except Exception as exc:  # the record must still be written
                log.exception("worker error")
                self.record.fail("worker", f"{type(exc).__name__}: {exc}")
                outcome = _Outcome(EXIT_WORKER_ERROR)
        ok = outcome.code == EXIT_OK
        self.record.status = "succeeded" if ok else "failed"
        self.record.worker_exit_code = outcome.code
        self._cleanup(ok)
        self.record.end = time.time()
        self.record.wall_time = time.monotonic() - t0
        self.registry.close()
        try:
            path = write_record(self.record, self.records_dir)
            log.debug("record written to %s", path)
        except OSError as exc:
            log.error("cannot write the invocation record to %s: %s", self.records_dir, exc)
            return EXIT_WORKER_ERROR if ok else outcome.code
        return outcome.code

    def _steps(self) -> _Outcome:
        self._make_workdir()
        prepared = self._phase("container", self._container)
        self._stop_if_evicted("container")
        self._phase("stage_in", self._stage_in)
        self._stop_if_evicted("stage-in")
        self._phase("checkpoint_restore", self._restore_checkpoints)
        self._stop_if_evicted("stage-in")
        result = self._phase("run", lambda: self._run(prepared))
        if self.evicted or result.terminated:
            self.record.evicted = True
            self.record.fail("run", "the worker was sent TERM (eviction); the job was stopped")
            self._phase("checkpoint_out", lambda: self._stage_checkpoints(final=True))
            return _Outcome(EXIT_EVICTED)
        if not self._check_success(result):
            self._phase("checkpoint_out", lambda: self._stage_checkpoints(final=True))
            return _Outcome(EXIT_JOB_FAILED)
        try:
            self._phase("stage_out", self._stage_out)
        except _Stop:  # the attempt fails after all: keep its progress for the next one
            self._phase("checkpoint_out", lambda: self._stage_checkpoints(final=True))
            raise
        return _Outcome(EXIT_OK)

    def _stop_if_evicted(self, step: str) -> None:
        """A TERM that came before the job started: record it, and do not start the job."""
        if self.evicted:
            self.record.evicted = True
            self.record.fail(
                step, f"the worker was sent TERM (eviction) during {step}; the job did not run"
            )
            raise _Stop(EXIT_EVICTED)

    def _phase(self, name: str, fn):  # type: ignore[no-untyped-def]
        t0 = time.monotonic()
        self._phase_now = name
        try:
            return fn()
        finally:
            self._phase_now = ""
            self.record.phases[name] = round(time.monotonic() - t0, 6)

    def _make_workdir(self) -> None:
        base = self.workdir_base or choose_workdir_base()
        need = sum(i.size or 0 for i in self.spec.inputs)
        try:
            fs = os.statvfs(base)  # what shutil.disk_usage reports as free
            free = fs.f_bavail * fs.f_frsize
            if need and free < need:
                self.record.fail(
                    "stage-in",
                    f"not enough free space in {base}: inputs need {need} bytes, {free} free",
                )
                raise _Stop(EXIT_STAGE_IN)
            self.workdir = _mkdtemp(base, f"ferry-{_safe(self.spec.id)}-")
            os.makedirs(os.path.join(self.workdir, _FERRY_DIR))
        except OSError as exc:
            self.record.fail("worker", f"cannot create a work directory in {base}: {exc}")
            raise _Stop(EXIT_WORKER_ERROR) from None
        self.record.workdir = self.workdir

    def _path(self, rel: str) -> str:
        return os.path.join(self.workdir, rel)

    def _container(self) -> object | None:
        if self.spec.container is None:
            return None
        from .containers import prepare_container

        try:
            return prepare_container(self)
        except FerryError as exc:
            self._stop_if_evicted("container")  # cancelled by the TERM, not failed
            self.record.fail(
                "container",
                str(exc),
                url=redact(self.spec.container.image),
                expected=getattr(exc, "expected", None),
                actual=getattr(exc, "actual", None),
            )
            raise _Stop(EXIT_CONTAINER) from None

    def _stage_in(self) -> None:
        reqs = [
            TransferRequest(
                sources=[
                    Endpoint(parse_url(s.url), site=s.site, priority=s.priority) for s in i.sources
                ],
                dest=Endpoint(parse_url(f"file://{self._path(i.path or i.lfn)}")),
                lfn=i.lfn,
                sha256=i.sha256,
                executable=i.executable,
                # a link to a host path would dangle inside a container (which binds
                # only the work directory): copy, as pegasus-lite does not --symlink there
                symlink=i.symlink and self.spec.container is None,
            )
            for i in self.spec.inputs
        ]
        results = self.engine.run(reqs) if reqs else []
        code = EXIT_OK
        for res in results:
            self._note(res, "input")
            if not res.ok and not self.evicted:  # after a TERM: cancelled, not failed
                integrity = res.error_type == "IntegrityError" or any(
                    a.error_type == "IntegrityError" for a in res.attempts
                )
                step = "integrity" if integrity else "stage-in"
                req = res.request
                assert isinstance(req, TransferRequest)
                expected, actual = _sums_from(res) if integrity else (None, None)
                self.record.fail(
                    step,
                    res.error or "failed",
                    lfn=req.lfn,
                    url=res.attempts[-1].source if res.attempts else None,
                    expected=expected,
                    actual=actual,
                )
                if integrity and code == EXIT_OK:
                    code = EXIT_INTEGRITY
                elif code == EXIT_OK:
                    code = EXIT_STAGE_IN
        self._stop_if_evicted("stage-in")
        if code != EXIT_OK:
            raise _Stop(code)
        if self.engine.error_rate:
            self._verify_inputs_on_disk()
        for i in self.spec.inputs:
            if i.executable:
                _chmod_x(self._path(i.path or i.lfn))

    def _verify_inputs_on_disk(self) -> None:
        """pegasus-lite's check of the staged inputs (pegasus-integrity --verify), made
        only while ``$PEGASUS_TRANSFER_ERROR_RATE`` spoils files after their transfer:
        otherwise each input's sum was checked on the bytes as they were written."""
        for i in self.spec.inputs:
            if not i.sha256:
                continue
            try:
                hash_file(self._path(i.path or i.lfn), normalize_sha256(i.sha256))
            except IntegrityError as exc:
                self.record.fail("integrity", str(exc), lfn=i.lfn,
                                 expected=exc.expected, actual=exc.actual)  # fmt: skip
                raise _Stop(EXIT_INTEGRITY) from None

    def _restore_checkpoints(self) -> None:
        reqs = []
        unprobed: set[str] = set()  # kept where the protocol cannot stat: fetched if there
        for ck in self.spec.checkpoints:
            url = parse_url(ck.url)
            caps = self.registry.capabilities(url.scheme)  # empty: no (working) plugin
            if caps and Capability.STAT not in caps:
                unprobed.add(ck.lfn)
            else:
                try:
                    self.registry.protocol(url.scheme).stat(url)
                except FerryError:
                    continue  # no checkpoint yet (or not reachable): start fresh
                except Exception as exc:  # a plugin's bug: as unreachable, but say so
                    log.warning("%s: stat failed (%s: %s); starting without it",
                                redact(ck.url), type(exc).__name__, redact(str(exc)))  # fmt: skip
                    continue
            reqs.append(
                TransferRequest(
                    sources=[Endpoint(url)],
                    dest=Endpoint(parse_url(f"file://{self._path(ck.path or ck.lfn)}")),
                    lfn=ck.lfn,
                )
            )
        for res in self.engine.run(reqs) if reqs else []:
            req = res.request
            assert isinstance(req, TransferRequest)
            if not res.ok and req.lfn in unprobed and res.error_type == "NotFound":
                continue  # there was none yet
            self._note(res, "checkpoint-in")
            self._stop_if_evicted("stage-in")
            if not res.ok:
                self.record.fail("stage-in", res.error or "failed", lfn=req.lfn)
                raise _Stop(EXIT_STAGE_IN)

    def _argv(self) -> list[str]:
        exe = self.spec.executable
        local = self._path(exe)
        if not os.path.isabs(exe) and os.path.exists(local):
            exe = local
        return [exe, *self.spec.arguments]

    def _run(self, prepared: object | None) -> ProcessResult:
        spec = self.spec
        ferry_dir = self._path(_FERRY_DIR)
        stdout = self._path(spec.stdout) if spec.stdout else os.path.join(ferry_dir, "stdout")
        stderr = self._path(spec.stderr) if spec.stderr else os.path.join(ferry_dir, "stderr")
        stdin = self._path(spec.stdin) if spec.stdin else None
        for p in (stdout, stderr):
            os.makedirs(os.path.dirname(p), exist_ok=True)
        env = dict(os.environ)
        env.update(credential_files(os.environ, os.getcwd()))
        env.update(spec.environment)
        env.update(FERRY_JOB_ID=spec.id, FERRY_WORK_DIR=self.workdir)
        argv = self._argv()
        if prepared is not None:
            try:
                argv, env = prepared.command(argv, env=env)  # type: ignore[attr-defined]
            except FerryError as exc:
                image = spec.container.image if spec.container else ""
                self.record.fail("container", str(exc), url=redact(image))
                raise _Stop(EXIT_CONTAINER) from None
        if stdin and not os.path.exists(stdin):
            self.record.fail("run", f"stdin file {spec.stdin} is not in the work directory")
            raise _Stop(EXIT_JOB_FAILED)
        tick = None
        if spec.checkpoints and spec.checkpoint_interval:
            tick = self._stage_checkpoints
        try:
            result = self.runner.run(
                argv,
                cwd=self.workdir,
                env=env,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                timeout=spec.timeout,
                kill_grace=spec.kill_grace,
                tick=tick,
                tick_interval=spec.checkpoint_interval,
            )
        except OSError as exc:
            what = exc.strerror or str(exc)
            if exc.filename and exc.filename != argv[0]:  # stdin, stdout or stderr
                what = f"{exc.filename}: {what}"
            self.record.fail("run", f"cannot start {argv[0]}: {what}")
            raise _Stop(EXIT_JOB_FAILED) from None
        if prepared is not None and (
            result.timed_out or result.terminated or result.signal is not None
        ):
            prepared.cleanup()  # type: ignore[attr-defined]
        rec = self.record
        rec.exit_code, rec.signal = result.exit_code, result.signal
        rec.timed_out = result.timed_out
        rec.job_wall_time = result.wall
        rec.cpu_user, rec.cpu_system = result.cpu_user, result.cpu_system
        rec.peak_memory_bytes = result.peak_memory_bytes
        rec.stdout_tail, rec.stderr_tail = _tail(stdout), _tail(stderr)
        self._stdout_path, self._stderr_path = stdout, stderr
        return result

    def _check_success(self, result: ProcessResult) -> bool:
        spec, rec = self.spec, self.record
        ok = True
        if result.timed_out:
            rec.fail("run", f"timed out after {spec.timeout} s; the job was killed")
            ok = False
        elif result.signal is not None:
            rec.fail("run", f"the job was killed by signal {result.signal}")
            ok = False
        elif result.exit_code not in spec.success.exit_codes:
            rec.fail("run", f"the job exited with code {result.exit_code}")
            ok = False
        for out in spec.outputs:
            if out.required and not os.path.exists(self._path(out.path or out.lfn)):
                rec.fail("success-check", f"required output {out.lfn} was not created", lfn=out.lfn)
                ok = False
        checks = [
            (self._stdout_path, "stdout", spec.success.stdout_must, True),
            (self._stdout_path, "stdout", spec.success.stdout_must_not, False),
            (self._stderr_path, "stderr", spec.success.stderr_must, True),
            (self._stderr_path, "stderr", spec.success.stderr_must_not, False),
        ]
        for path, name, patterns, must in checks:
            if not patterns:
                continue
            text = _read_text(path)
            for pattern in patterns:
                found = re.search(pattern, text, re.MULTILINE) is not None
                if found != must:
                    what = "does not match" if must else "matches"
                    rec.fail("success-check", f"{name} {what} {pattern!r}")
                    ok = False
        return ok

    def _stage_out(self) -> None:
        reqs = []
        for out in self.spec.outputs:
            path = self._path(out.path or out.lfn)
            if not os.path.exists(path):
                continue  # an optional output the job did not write
            for dest in out.destinations:
                reqs.append(
                    TransferRequest(
                        sources=[Endpoint(parse_url(f"file://{path}"))],
                        dest=Endpoint(parse_url(dest.url), site=dest.site),
                        lfn=out.lfn,
                    )
                )
        failed = False
        for res in self.engine.run(reqs) if reqs else []:
            self._note(res, "output")
            if not res.ok:
                req = res.request
                assert isinstance(req, TransferRequest)
                self.record.fail(
                    "stage-out", res.error or "failed", lfn=req.lfn, url=str(req.dest.url)
                )
                failed = True
        if failed:
            raise _Stop(EXIT_STAGE_OUT)

    def _stage_checkpoints(self, final: bool = False) -> None:
        reqs = []
        for ck in self.spec.checkpoints:
            path = self._path(ck.path or ck.lfn)
            if os.path.exists(path):
                reqs.append(
                    TransferRequest(
                        sources=[Endpoint(parse_url(f"file://{path}"))],
                        dest=Endpoint(parse_url(ck.url)),
                        lfn=ck.lfn,
                    )
                )
        for res in self.engine.run(reqs) if reqs else []:
            if final or not res.ok:
                self._note(res, "checkpoint-out")

    # -- bookkeeping -------------------------------------------------------

    def _note(self, res: TransferResult, direction: str) -> None:
        req = res.request
        assert isinstance(req, TransferRequest)
        self.record.transfers.append(
            TransferEntry(
                direction=direction,
                lfn=req.lfn or req.label,
                ok=res.ok,
                source=res.source,
                dest=str(req.dest.url),
                bytes=res.bytes,
                duration=round(res.duration, 6),
                attempts=len(res.attempts),
                sha256=f"sha256:{res.sha256}" if res.sha256 else None,
                expected_sha256=f"sha256:{req.sha256}" if req.sha256 else None,
                route=res.route,
                error=res.error,
                tried=[a.to_json() for a in res.attempts if not a.ok],
            )
        )

    def _cleanup(self, ok: bool) -> None:
        if not self.workdir:
            return
        import shutil

        if not ok and self.keep_workdir:
            self.record.workdir_kept = True
            # the copies of credentials a container job was given do not stay behind
            shutil.rmtree(self._path(CREDENTIALS_DIR), ignore_errors=True)
            return

        shutil.rmtree(self.workdir, ignore_errors=True)

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        def on_term(signum: int, frame: FrameType | None) -> None:
            self.evicted = True
            if self._phase_now in _STAGING_PHASES:
                # the job will not run: no new tries of its inputs (the byte streams
                # running end by themselves); nothing is staged out after this
                self.engine.cancel()
            self.runner.terminate()

        previous = {s: signal.signal(s, on_term) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    _stdout_path = ""
    _stderr_path = ""
    _phase_now = ""


#: the phases before the job runs: a TERM during them cancels the transfers left
_STAGING_PHASES = frozenset({"container", "stage_in", "checkpoint_restore"})


def _chmod_x(path: str) -> None:
    """``chmod +x`` (x where r is) a staged executable that we cannot run yet, as
    pegasus-lite does: a symlinked input keeps its target's mode (HTCondor's sandbox
    copy may have lost the bit)."""
    if os.access(path, os.X_OK):
        return
    try:
        mode = os.stat(path).st_mode
        os.chmod(path, mode | (mode & 0o444) >> 2)
    except OSError as exc:
        log.warning("cannot make %s executable: %s", path, exc)


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:60]


def _sums_from(res: TransferResult) -> tuple[str | None, str | None]:
    for a in res.attempts:
        if a.error_type == "IntegrityError" and a.details:
            return a.details.get("expected"), a.details.get("actual")
    return None, None


def spec_file_part(ref: str) -> str:
    """The file of a spec reference: ``PATH`` or ``PATH@OFFSET`` (a line of a packed shard)."""
    base, sep, offset = ref.rpartition("@")
    if sep and offset.isdigit() and not os.path.exists(ref):
        return base
    return ref


def load_spec_file(ref: str) -> JobSpec:
    """Load a job spec from ``PATH``, or from ``PATH@OFFSET``: the JSON line starting at
    that byte offset of a packed shard (docs/rundir.md)."""
    from .jobspec import load_jobspec

    path = spec_file_part(ref)
    try:
        with open(path, "rb") as f:
            if path != ref:
                f.seek(int(ref.rpartition("@")[2]))
                data = f.readline()
            else:
                data = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read job spec {path}: {exc.strerror}") from None
    return load_jobspec(data, source=ref)


def _mkdtemp(base: str, prefix: str) -> str:
    """``tempfile.mkdtemp(prefix=prefix, dir=base)`` (mode 0700) without importing
    tempfile and random, which are ~3 ms of every job's start-up."""
    for _ in range(100):
        path = os.path.join(base, prefix + os.urandom(5).hex())
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"no unused name for a work directory in {base}")
