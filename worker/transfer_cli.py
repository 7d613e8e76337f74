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
from collections.abc import Sequence

from ferry.plugins.errors import ConfigError, FerryError
from ferry.plugins.protocol import ProtocolContext
from ferry.plugins.registry import Registry
from ferry.plugins.url import parse_url, redact

from .engine import Engine, Subscriber, TransferConfig, TransferResult
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

exit status: 0 when every transfer succeeded, 1 otherwise.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", nargs="?", metavar="SRC", help="source URL or path")
    parser.add_argument("dest", nargs="?", metavar="DEST", help="destination URL or path")
    parser.add_argument(
        "-f",
        "--file",
        metavar="FILE",
        help="read the JSON transfer list from FILE (default: stdin)",
    )
    parser.add_argument(
        "-m",
        "--max-attempts",
        type=int,
        default=3,
        metavar="N",
        help="rounds over all sources before a transfer fails (default: 3)",
    )
    parser.add_argument(
        "-n",
        "--threads",
        type=int,
        default=0,
        metavar="N",
        help="transfers at once; 0 means $PEGASUS_TRANSFER_THREADS, else 8 (default: 0);"
        " a list of only local-to-local copies runs at most one per CPU, unless it is on"
        " a network file system (NFS, Lustre, ...)",
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
        help="write the sha256 of every transfer with an LFN to FILE as a Pegasus .meta file",
    )
    parser.add_argument(
        "--backoff",
        type=float,
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
        dest = parse_url(args.dest)
        src = parse_url(args.src)
        if dest.scheme == "file" and (args.dest.endswith("/") or os.path.isdir(dest.path)):
            dest = parse_url(f"file://{os.path.join(dest.path, src.basename)}")
        return [
            TransferRequest(
                sources=[Endpoint(src)],
                dest=Endpoint(dest),
                sha256=normalize_sha256(args.sha256, where="--sha256"),
                executable=args.executable,
            )
        ]
    if args.sha256 or args.executable:
        raise ConfigError("--sha256 and --executable go with SRC DEST; put them in the JSON list")
    if args.file:
        name = args.file
        try:
            with open(name, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise ConfigError(f"cannot read transfer list {name}: {exc.strerror}") from None
    else:
        name = "<stdin>"
        if sys.stdin is None or sys.stdin.isatty():
            raise ConfigError("no transfers: give SRC DEST, --file FILE, or a JSON list on stdin")
        data = sys.stdin.buffer.read()
    meta = None
    if b"verify_checksum_remote" in data:
        from .integrity import read_meta_dir

        meta = read_meta_dir(".")
    return parse_transfer_list(data, source=name, meta_lookup=meta)


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


def _integrity_outputs(args: argparse.Namespace, results: Sequence[TransferResult]) -> None:
    kickstart = bool(os.environ.get("KICKSTART_INTEGRITY_DATA"))
    generating = any(
        isinstance(r.request, TransferRequest) and r.request.generate_checksum for r in results
    )
    if not args.meta and not (kickstart and generating):
        return
    from .integrity import FileSum, append_kickstart_fragment, write_meta

    sums = []
    for r in results:
        req = r.request
        if not (r.ok and r.sha256 and isinstance(req, TransferRequest) and req.lfn):
            continue
        path = req.dest.url.local_path if req.dest.url.is_local else None
        s = FileSum(req.lfn, r.sha256, size=r.bytes, path=path)
        sums.append(s)
        if req.generate_checksum and path and kickstart:
            append_kickstart_fragment(s)
    if args.meta:
        write_meta(args.meta, sums)


def run(args: argparse.Namespace) -> int:
    _setup_logging(args.debug)
    threads = _threads(args.threads)
    context = ProtocolContext(concurrency=threads, credentials_file=args.credentials)
    try:
        context.settings.update(_settings(args.set))
        requests = _requests(args)
        context.credentials  # noqa: B018 - a bad credentials file fails the run up front
    except ConfigError as exc:
        log.critical("%s", exc)
        if args.json:
            import json

            print(json.dumps({"ok": False, "error": redact(str(exc)), "transfers": []}))
        return 1
    config = TransferConfig(
        threads=threads,
        max_attempts=max(1, args.max_attempts),
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
        bar = RichProgress(len(requests))
        subscribers.append(bar)
    elif mode == "log":
        # per-transfer lines straight to stderr, formatted as _PegasusFormatter does
        subscribers.append(LogProgress(sys.stderr, redact))
    summary = Summary()
    registry = Registry(context)
    engine = Engine(registry, config, subscribers)
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: object) -> None:
        engine.cancel()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        if bar is not None:
            with bar:
                results = engine.run(requests)
        else:
            results = engine.run(requests)
    except KeyboardInterrupt:
        log.critical("Exiting due to signal; partial files were removed")
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        registry.close()
    for r in results:
        summary.add(r)
    summary.threads = engine.threads_peak
    summary.finish()
    try:
        _integrity_outputs(args, results)
    except (OSError, FerryError) as exc:
        log.critical("cannot write integrity metadata: %s", exc)
        return 1
    _report_failures(results)
    log.info("%s", summary.line())
    ok = summary.failed == 0
    if ok:
        log.info("All transfers completed successfully.")
    else:
        log.critical("Some transfers failed! See above.")
    if args.json:
        report = {
            "ok": ok,
            "summary": summary.to_json(),
            "transfers": [r.to_json() for r in results],
        }
        import json

        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ferry-transfer",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
