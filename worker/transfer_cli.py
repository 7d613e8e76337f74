"""``ferry transfer`` / ``ferry-transfer``: a drop-in for pegasus-transfer.

Reads pegasus-transfer's JSON list from stdin or ``-f FILE``, or takes
``SRC DEST``. Exit 0 only if every transfer succeeded, 1 otherwise (as
pegasus-transfer; bad input is 1 too). Logs go to stderr; ``--json`` prints a
machine-readable report on stdout.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence

from ferry.plugins.errors import ConfigError, FerryError
from ferry.plugins.protocol import ProtocolContext
from ferry.plugins.registry import Registry
from ferry.plugins.url import URL, parse_url, redact

from .engine import AttemptRecord, Engine, Subscriber, TransferConfig, TransferResult
from .progress import LogProgress, RichProgress, Summary, is_terminal
from .request import Endpoint, Request, TransferRequest, normalize_sha256, parse_transfer_list

__all__ = ["add_arguments", "main", "run"]

log = logging.getLogger("ferry.transfer")

DESCRIPTION = """\
Copy files between URLs with retries, replica fallback and sha256 checks.

Input is pegasus-transfer's JSON list (stdin, or -f FILE), or a single SRC DEST
pair. Every download lands under a temporary name and is renamed into place
only after its sha256 checks out; a failed transfer leaves nothing behind.
"""

EPILOG = """\
examples:
  ferry transfer data/in.dat file:///scratch/run1/in.dat --sha256 3b1f...e0
  ferry transfer https://example.org/f.a /tmp/f.a --json
  ferry transfer -f transfers.json -n 16 -m 5
  pegasus-plan ... | ferry transfer        # reads the JSON list from stdin

exit status: 0 when every transfer succeeded, 1 otherwise (also for bad input),
2 for a command-line usage error.
"""


def _number(kind: Callable[[str], float], low: float, what: str) -> Callable[[str], float]:
    """An argparse ``type`` for a number of at least ``low``: anything else is a usage error."""

    def convert(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    return convert


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", nargs="?", metavar="SRC", help="source URL or path")
    parser.add_argument("dest", nargs="?", metavar="DEST", help="destination URL or path")
    parser.add_argument(
        "-f",
        "--file",
        metavar="FILE",
        help="read the JSON transfer list from FILE ('-' or default: stdin)",
    )
    parser.add_argument(
        "-m",
        "--max-attempts",
        type=_number(int, 1, "a number of rounds (1 or more)"),
        default=3,
        metavar="N",
        help="rounds over all sources before a transfer fails (default: 3)",
    )
    parser.add_argument(
        "-n",
        "--threads",
        type=_number(int, 0, "a number of threads (0 or more)"),
        default=0,
        metavar="N",
        help="transfers at once, at most; 0 means $PEGASUS_TRANSFER_THREADS, else 8"
        " (default: 0). One per CPU runs at first; the others join while the transfers"
        " wait on servers rather than on this machine's CPU. A list of only local-to-local"
        " copies runs at most one per CPU, unless it is on a network file system (NFS,"
        " Lustre, ...)",
    )
    parser.add_argument(
        "-s",
        "--symlink",
        action="store_true",
        help="link local->local transfers instead of copying them",
    )
    parser.add_argument("-d", "--debug", action="store_true", help="log debug detail")
    parser.add_argument(
        "--sha256",
        metavar="HEX",
        help="expected sha256 of SRC (with SRC DEST): the copy is kept only if it matches",
    )
    parser.add_argument(
        "--executable", action="store_true", help="with SRC DEST: make DEST executable"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print a JSON report (per transfer: source, bytes, sha256, attempts) on stdout",
    )
    parser.add_argument(
        "--meta",
        metavar="FILE",
        help="write the sha256 of every transfer to FILE as a Pegasus .meta file, by LFN"
        " (a SRC DEST pair: by DEST's file name)",
    )
    parser.add_argument(
        "--backoff",
        type=_number(float, 0, "a number of seconds (0 or more)"),
        default=1.0,
        metavar="SECONDS",
        help="first pause before a retry round; doubles each round, with jitter (default: 1)",
    )
    parser.add_argument(
        "--tmpdir", metavar="DIR", help="where two-stage transfers keep temporary files"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a protocol setting, e.g. s3.part_size=16777216 (repeatable; see docs/protocols/)",
    )
    parser.add_argument(
        "--credentials",
        metavar="FILE",
        help="credentials file (default: $FERRY_CREDENTIALS, $PEGASUS_CREDENTIALS,"
        " ~/.ferry/credentials.conf); see docs/credentials.md",
    )
    parser.add_argument(
        "--progress",
        choices=("auto", "bar", "log", "none"),
        default="auto",
        help="bar on a terminal, log lines otherwise (default: auto)",
    )


class _PegasusFormatter(logging.Formatter):
    """pegasus-transfer's log line: ``2026-11-25 21:00:00,123   INFO:  message``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)7s:  %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        # a URL can only carry a secret in its user part (``@``) or its query (``?``):
        # skip the per-URL parse for the common line (one per transfer) that has neither
        if "@" not in text and "?" not in text:
            return text
        return redact(text)


def _setup_logging(debug: bool) -> None:
    # one line per transfer: skip the caller, thread and process lookups that the
    # format never shows (the "Optimization" section of the logging docs)
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_PegasusFormatter())
    root = logging.getLogger("ferry")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    root.propagate = False


def _threads(value: int) -> int:
    if value > 0:
        return value
    env = os.environ.get("PEGASUS_TRANSFER_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else 8


def _requests(args: argparse.Namespace) -> list[Request]:
    if args.src is not None or args.dest is not None:
        if args.file:
            raise ConfigError("give either SRC DEST or --file, not both")
        if args.src is None or args.dest is None:
            raise ConfigError("SRC DEST needs both a source and a destination")
        src = _cli_url(args.src, "SRC")
        dest = _cli_url(args.dest, "DEST")
        # DEST a directory (an existing local one, or any ending in "/"): keep SRC's name
        if args.dest.endswith("/") or (dest.is_local and os.path.isdir(dest.path)):
            if not src.basename:
                raise ConfigError(
                    f"DEST {dest} is a directory and SRC {src} has no file name to keep there:"
                    " give DEST's file name"
                )
            dest = dest.with_path(dest.path.rstrip("/") + "/" + src.basename)
        if args.sha256 is not None and not args.sha256.strip():
            raise ConfigError("--sha256 is empty: give the 64 hex digits of SRC's sha256")
        return [
            TransferRequest(
                sources=[Endpoint(src)],
                dest=Endpoint(dest),
                sha256=normalize_sha256(args.sha256, where="--sha256"),
                executable=args.executable,
            )
        ]
    if args.sha256 is not None or args.executable:
        raise ConfigError("--sha256 and --executable go with SRC DEST; put them in the JSON list")
    if args.file and args.file != "-":
        name = args.file
        try:
            with open(name, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise ConfigError(f"cannot read transfer list {name}: {exc.strerror}") from None
    else:
        name = "<stdin>"
        if sys.stdin is None or sys.stdin.isatty():
            raise ConfigError(
                "no transfers: give SRC DEST, --file FILE, or a JSON list on stdin"
                " (ferry transfer --help)"
            )
        data = sys.stdin.buffer.read()
    meta = None
    if b"verify_checksum_remote" in data:
        from .integrity import read_meta_dir

        meta = read_meta_dir(".")
    return parse_transfer_list(data, source=name, meta_lookup=meta)


def _cli_url(text: str, what: str) -> URL:
    try:
        url = parse_url(text)
        if "%" in text and url.scheme == "file" and not text.lstrip().lower().startswith("file:"):
            # a plain path names the file as it is: "a%41.txt" is not "aA.txt"
            url = parse_url(text.replace("%", "%25"))
        return url
    except ConfigError as exc:
        raise ConfigError(f"{what}: {exc}") from None


def _settings(pairs: Sequence[str]) -> dict[str, str]:
    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r}: expected KEY=VALUE")
        settings[key.strip()] = value.strip()
    return settings


def _report_failures(results: Sequence[TransferResult]) -> None:
    failed = [r for r in results if not r.ok]
    if not failed:
        return
    log.error("%d transfer(s) failed:", len(failed))
    for r in failed:
        log.error("  %s", r.error)


def _unverifiable(req: TransferRequest) -> TransferResult:
    """The failed result of a transfer whose ``verify_checksum_remote`` cannot be honoured."""
    return TransferResult(
        req,
        ok=False,
        error=f"{req.label} -> {req.dest.url}: {req.verify_error}",
        error_type="IntegrityError",
    )


class _AttemptClock(Subscriber):
    """Wall-clock start of every try, for ``$PEGASUS_MULTIPART_DIR``."""

    def __init__(self) -> None:
        self.starts: dict[int, float] = {}

    def on_attempt_failed(self, request: Request, record: AttemptRecord) -> None:
        self.starts[id(record)] = time.time() - record.duration

    def start_of(self, record: AttemptRecord) -> float:
        return self.starts.get(id(record), time.time() - record.duration)


def _write_multipart(results: Sequence[TransferResult], clock: _AttemptClock) -> None:
    """pegasus-transfer's ``$PEGASUS_MULTIPART_DIR/<ts>-transfer``: one item per try, which
    PegasusLite appends to the job's output for pegasus-monitord."""
    directory = os.environ.get("PEGASUS_MULTIPART_DIR")
    if not directory:
        return
    lines = ["- transfer_attempts:\n"]
    for r in results:
        req = r.request
        if not isinstance(req, TransferRequest):
            continue
        labels = {str(s.url): s.site for s in req.sources}
        for a in r.attempts:
            lines.append(
                f'  - src_url: "{redact(a.source)}"\n'
                f'    src_label: "{labels.get(a.source, req.sources[0].site)}"\n'
                f'    dst_url: "{redact(str(req.dest.url))}"\n'
                f'    dst_label: "{req.dest.site}"\n'
                f"    success: {a.ok}\n"
                f"    start: {clock.start_of(a):.0f}\n"
                f"    duration: {a.duration:.1f}\n"
            )
            if req.lfn:
                lines.append(f'    lfn: "{req.lfn}"\n')
            if a.bytes > 0:
                lines.append(f"    bytes: {a.bytes}\n")
    try:
        with open(os.path.join(directory, f"{int(time.time())}-transfer"), "w") as f:
            f.writelines(lines)
    except OSError as exc:
        log.error("Unable to write stats to $PEGASUS_MULTIPART_DIR: %s", exc)


def _log_integrity_metrics(results: Sequence[TransferResult]) -> None:
    """pegasus-transfer's ``int.metric`` line per linkage for ``verify_checksum_remote``
    checks (pegasus-monitord reads it from the job's output). The sum is checked while
    the bytes stream, so no time goes to a separate check."""
    import json

    counts: dict[str, list[int]] = {}
    for r in results:
        req = r.request
        if not (isinstance(req, TransferRequest) and req.verify_checksum_remote and req.lfn):
            continue
        if not r.ok and r.error_type not in ("IntegrityError", None):
            continue  # the transfer failed before there was anything to check
        counts.setdefault(req.linkage or "unknown", [0, 0])[0 if r.ok else 1] += 1
    for linkage, (succeeded, failed) in counts.items():
        data = {
            "ts": int(time.time()),
            "monitoring_event": "int.metric",
            "payload": [
                {
                    "event": "check",
                    "file_type": linkage,
                    "succeeded": succeeded,
                    "failed": failed,
                    "duration": "0.000",
                }
            ],
        }
        log.info(
            "@@@MONITORING_PAYLOAD - START@@@%s@@@MONITORING_PAYLOAD - END@@@", json.dumps(data)
        )


def _checksummed_path(r: TransferResult) -> str | None:
    """The local file pegasus-transfer checksums for ``generate_checksum``: the ``file://``
    source used (before the transfer), else a local destination; None when both ends are
    remote (pegasus-transfer then checksums its temporary file)."""
    req = r.request
    assert isinstance(req, TransferRequest)
    for s in req.sources:
        if str(s.url) == r.source and s.url.scheme == "file" and os.path.isfile(s.url.local_path):
            return s.url.local_path
    if req.dest.url.is_local and os.path.isfile(req.dest.url.local_path):
        return req.dest.url.local_path  # also what a moveto:// moved the source to
    return None


def _integrity_outputs(args: argparse.Namespace, results: Sequence[TransferResult]) -> None:
    generating = any(
        isinstance(r.request, TransferRequest) and r.request.generate_checksum for r in results
    )
    if not args.meta and not generating:
        return
    import hashlib

    from .integrity import FileSum, append_kickstart_fragment, kickstart_fragment, write_meta

    kickstart = bool(os.environ.get("KICKSTART_INTEGRITY_DATA"))
    sums = []
    done: set[str] = set()  # pegasus-transfer checksums each LFN once per run
    for r in results:
        req = r.request
        if not (r.ok and isinstance(req, TransferRequest)):
            continue
        if not req.lfn and req.id is not None:  # a list entry with no LFN to name its sum
            if req.generate_checksum:
                log.error("%s: lfn is required when enabling checksumming", req.label)
            continue
        lfn = req.lfn or req.dest.url.basename  # SRC DEST: DEST's file name
        path = req.dest.url.local_path if req.dest.url.is_local else None
        if req.generate_checksum and lfn not in done:
            path = _checksummed_path(r)
        digest, timing = r.sha256, None
        if digest is None and path is not None and os.path.isfile(path):
            t0 = time.monotonic()  # a link or a move streamed no bytes: hash the file
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            digest = h.hexdigest()
            timing = time.monotonic() - t0
        if digest is None:
            continue
        # a link or a move moved no bytes: the size is then the file's (write_meta)
        size = None if r.route in ("symlink", "move") else r.bytes
        s = FileSum(lfn, digest, size=size, timing=timing, path=path)
        sums.append(s)
        if req.generate_checksum and lfn not in done:
            done.add(lfn)
            if kickstart:
                append_kickstart_fragment(s)
            elif not args.json:  # as pegasus-integrity: stdout without kickstart
                sys.stdout.write(kickstart_fragment(s))
    if args.meta:
        try:
            write_meta(args.meta, sums)
        except OSError as exc:  # name --meta, not the temporary file write_meta failed on
            raise ConfigError(f"--meta {args.meta}: {exc.strerror}") from None


def run(args: argparse.Namespace) -> int:
    _setup_logging(args.debug)
    threads = _threads(args.threads)
    context = ProtocolContext(concurrency=threads, credentials_file=args.credentials)
    try:
        context.settings.update(_settings(args.set))
        if args.tmpdir and not os.path.isdir(args.tmpdir):
            raise ConfigError(f"--tmpdir {args.tmpdir}: not a directory")
        requests = _requests(args)
        context.credentials  # noqa: B018 - a bad credentials file fails the run up front
    except ConfigError as exc:
        log.critical("%s", exc)
        if args.json:
            _print_report(Summary().finish(), [], error=redact(str(exc)), error_type="ConfigError")
        return 1
    config = TransferConfig(
        threads=threads,
        max_attempts=args.max_attempts,
        backoff_initial=args.backoff,
        symlink=args.symlink,
        tmpdir=args.tmpdir,
    )
    mode = args.progress
    if mode == "auto":
        mode = "bar" if is_terminal() and not args.debug else "log"
    subscribers: list[Subscriber] = []
    bar: RichProgress | None = None
    if mode == "bar":
        bar = RichProgress(len(requests), redact, config.max_attempts)
        subscribers.append(bar)
    elif mode == "log":
        # per-transfer lines straight to stderr, formatted as _PegasusFormatter does
        subscribers.append(LogProgress(sys.stderr, redact, config.max_attempts))
    clock = _AttemptClock()
    subscribers.append(clock)
    summary = Summary()
    registry = Registry(context)
    engine = Engine(registry, config, subscribers)
    previous = signal.getsignal(signal.SIGTERM)
    caught = [signal.SIGINT]

    def on_term(signum: int, frame: object) -> None:
        caught[0] = signum
        engine.cancel()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    blocked = {
        id(r): _unverifiable(r)
        for r in requests
        if isinstance(r, TransferRequest) and r.verify_error
    }
    try:
        runnable = [r for r in requests if id(r) not in blocked]
        if bar is not None:
            with bar:
                ran = iter(engine.run(runnable))
        else:
            ran = iter(engine.run(runnable))
        results = [blocked.get(id(r)) or next(ran) for r in requests]
    except KeyboardInterrupt:
        # stop now, not when the running transfers have finished their streams (a large
        # file can take hours): what they write in named files goes first, unnamed ones
        # vanish with the process, and nothing they write from here on gets a name
        engine.abort()
        log.critical("Exiting due to signal %d; partial files were removed", caught[0])
        if args.json:  # scripts still get one JSON document
            _print_report(
                summary.finish(),
                [],
                error=f"interrupted by signal {caught[0]} before the transfers finished",
                error_type="Interrupted",
            )
        sys.stdout.flush()
        sys.stderr.flush()
        if caught[0] == signal.SIGTERM and previous in (signal.SIG_DFL, None):
            # pegasus-transfer has no SIGTERM handler: end as the signal ends a process
            registry.close()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
        me = threading.current_thread()
        if any(t is not me and t.is_alive() and not t.daemon for t in threading.enumerate()):
            registry.close()
            os._exit(1)  # the transfer threads would hold the exit until their streams end
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        registry.close()
    for r in results:
        summary.add(r)
    summary.threads = engine.threads_peak
    summary.finish()
    _write_multipart(results, clock)
    error = error_type = None
    try:
        _integrity_outputs(args, results)
    except (OSError, FerryError) as exc:
        # the transfers are done: still report them, but the run failed
        error, error_type = f"cannot write integrity metadata: {exc}", type(exc).__name__
        log.critical("%s", error)
    _log_integrity_metrics(results)
    _report_failures(results)
    log.info("%s", summary.line())
    ok = summary.failed == 0 and error is None
    if ok:
        log.info("All transfers completed successfully.")
    elif summary.failed:
        log.critical("Some transfers failed! See above, and possibly stderr.")
    else:
        log.critical("All transfers completed, but their integrity metadata was not written.")
    if args.json:
        _print_report(summary, results, error=error, error_type=error_type)
    return 0 if ok else 1


def _print_report(
    summary: Summary,
    results: Sequence[TransferResult],
    *,
    error: str | None = None,
    error_type: str | None = None,
) -> None:
    """The ``--json`` document: always the same shape, whether or not anything ran."""
    import json

    report: dict[str, object] = {
        "ok": error is None and summary.failed == 0,
        "summary": summary.to_json(),
        "transfers": [r.to_json() for r in results],
    }
    if error is not None:
        report.update(error=error, error_type=error_type)
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ferry-transfer",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except BrokenPipeError:  # `ferry-transfer --json ... | head`: as the `ferry` command does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes at exit
        os.close(devnull)
        return 141


if __name__ == "__main__":
    sys.exit(main())
