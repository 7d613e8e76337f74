"""ferry as an HTCondor multi-file transfer plugin (protocol version 2).

HTCondor's starter runs ``ferry_plugin -classad`` to learn the schemes, then
``ferry_plugin -infile IN -outfile OUT [-upload]`` with one ad per file
(``Url``, ``LocalFileName``). Each file goes through ferry's engine: retries,
replica-free but resumable downloads, atomic commits, sha256 computed on the
way. A URL may end in ``#sha256=<hex>``: the fragment is never sent to a
server, and the file is kept only if its sum matches.

One result ad per file (``TransferSuccess``, ``TransferError``,
``TransferErrorData``, ``TransferUrl``, ``TransferFileName``, byte counts and
times); exit 0 only when every file succeeded, 1 otherwise (HTCondor holds
the job on a non-zero exit; a failed ad alone would not). See docs/htcondor.md.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ferry.plugins.credentials import Credentials, Secret
from ferry.plugins.errors import ConfigError
from ferry.plugins.protocol import ProtocolContext
from ferry.plugins.registry import Registry
from ferry.plugins.url import IMAGE_SCHEMES, LOCAL_SCHEMES, URL, parse_url, redact

from .classad import ClassAdError, Value, format_ad, format_old, iter_file_ads, lookup, parse_ads
from .engine import Engine, Subscriber, TransferConfig, TransferResult
from .request import Endpoint, TransferRequest, normalize_sha256

__all__ = ["capabilities", "main", "transfer_ads"]

PLUGIN_VERSION = "1.0.0"
EXIT_SUCCESS = 0
EXIT_FAILURE = 1
_FRAGMENT = re.compile(r"#sha256=([0-9a-fA-F]{64})$")
#: ``NAME+https://...``: HTCondor's prefix naming the job credential $_CONDOR_CREDS/NAME.use
#: a full disk or quota on this node (ENOSPC, EDQUOT), which HTCondor wants told apart
_NO_SPACE = re.compile(r"\[Errno 28\]|No space left on device")
_QUOTA = re.compile(r"\[Errno 122\]|Disk quota exceeded")
#: a host name that did not resolve: EAI_NONAME/EAI_NODATA say it does not exist,
#: EAI_AGAIN that no name server answered
_NO_NAME = re.compile(r"\[Errno -[25]\]|Name or service not known|No address associated")
_NAME_AGAIN = re.compile(r"\[Errno -3\]|Temporary failure in name resolution")
_CRED_PREFIX = re.compile(r"^([A-Za-z0-9_.-]+)\+((?:https?|webdavs?)://.*)$", re.DOTALL)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("ferry")
    except Exception:  # pragma: no cover - running from a checkout
        return PLUGIN_VERSION


def supported_methods(registry: Registry) -> list[str]:
    """Schemes to claim: ``$FERRY_CONDOR_METHODS`` if set, else every remote scheme ferry
    serves but container image references (``docker://``...: HTCondor and the container
    runtimes take those themselves)."""
    chosen = os.environ.get("FERRY_CONDOR_METHODS")
    if chosen:
        return [m.strip() for m in chosen.split(",") if m.strip()]
    return [s for s in registry.schemes() if s not in LOCAL_SCHEMES and s not in IMAGE_SCHEMES]


def capabilities(registry: Registry) -> dict[str, Value]:
    return {
        "MultipleFileSupport": True,
        "PluginType": "FileTransfer",
        "PluginVersion": _version(),
        "ProtocolVersion": 2,
        "SupportedMethods": ",".join(supported_methods(registry)),
    }


def _split_sha(url: str) -> tuple[str, str | None]:
    m = _FRAGMENT.search(url)
    if m is None:
        return url, None
    return url[: m.start()], normalize_sha256(m.group(1))


def _split_cred(url: str) -> tuple[str, str | None]:
    """The URL without an HTCondor credential prefix (``NAME+https://``), and NAME."""
    m = _CRED_PREFIX.match(url)
    return (url, None) if m is None else (m.group(2), m.group(1))


def _read_token(name: str) -> str:
    """The bearer token in ``$_CONDOR_CREDS/NAME.use`` (``.`` in NAME is ``_`` in the
    file name): the file's ``access_token`` when it holds JSON, else its text."""
    folder = os.environ.get("_CONDOR_CREDS")
    if not folder:
        raise ConfigError(f"credential {name!r} asked for, but $_CONDOR_CREDS is not set")
    path = os.path.join(folder, name.replace(".", "_") + ".use")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read().strip()
    except OSError as exc:
        raise ConfigError(f"credential {path}: {exc.strerror}") from None
    if text.startswith("{"):
        try:
            text = str(json.loads(text).get("access_token") or "")
        except (ValueError, AttributeError):
            text = ""
    if not text:
        raise ConfigError(f"credential {path} holds no token")
    return text


def _add_token(context: ProtocolContext, url: URL, token: str) -> None:
    """Send ``Authorization: Bearer TOKEN`` to the URL's server (as the credentials file's
    ``header.Authorization`` key for ``scheme://host:port`` would)."""
    creds = context.credentials
    sections = {name: dict(creds[name]) for name in creds}
    section = sections.setdefault(f"{url.scheme}://{url.netloc}", {})
    section["header.Authorization"] = Secret(f"Bearer {token}")
    context._credentials = Credentials(sections, creds.path)


def _error_data(result: TransferResult, url: str) -> list[Value]:
    """TransferErrorData for a failed file, from the class of its last error."""
    kind = result.error_type or "TransferError"
    try:
        server = parse_url(_split_cred(url)[0]).host or "localhost"
    except Exception:
        server = "unknown"
    last = result.attempts[-1] if result.attempts else None
    transient = bool(last and last.transient)
    # the server's own code where it gave one (an HTTP status), as the curl plugin reports
    status = last.details.get("status", "") if last else ""
    data: dict[str, Value] = {
        "ErrorCode": int(status) if status.isdigit() else 1,
        "ErrorString": redact(result.error or kind),
        "Retryable": 0 if transient else -1,
        "DeveloperData": {"FerryErrorType": kind},
    }
    message = result.error or ""
    no_space = status == "507" or bool(_NO_SPACE.search(message))  # 507 Insufficient Storage
    if no_space or _QUOTA.search(message):
        data.update(
            ErrorType="Transfer",
            FailedServer=server,
            FailureType="NoSpace" if no_space else "Quota",
            Retryable=-1,
        )
    elif _NO_NAME.search(message) or _NAME_AGAIN.search(message):
        definitive = bool(_NO_NAME.search(message))
        data.update(
            ErrorType="Resolution",
            FailedName=server,
            FailureType="Definitive" if definitive else "PreContact",
        )
        if definitive:
            data["Retryable"] = -1
    elif kind in ("AuthError", "PermissionDenied"):
        data.update(
            ErrorType="Authorization",
            FailedServer=server,
            FailureType="Authentication" if kind == "AuthError" else "Authorization",
            ShouldRefresh=False,
        )
    elif kind == "ConnectError":
        data.update(ErrorType="Contact", FailedServer=server)
    elif kind in ("TransferTimeout", "ThrottledError", "IncompleteTransfer", "TransientError"):
        data.update(ErrorType="Transfer", FailedServer=server, FailureType="TimedOut")
    elif kind in ("UnsupportedScheme", "PluginUnavailable", "ConfigError"):
        data.update(ErrorType="Parameter", PluginVersion=_version(), PluginLaunched=True)
    else:  # NotFound, IntegrityError, PermanentError: the server gave a definite answer
        data.update(ErrorType="Specification", FailedServer=server)
    return [data]


def _result_ad(
    result: TransferResult | None,
    url: str,
    local: str,
    upload: bool,
    start: float,
    end: float,
    error: str | None = None,
) -> dict[str, Value]:
    bare = _split_cred(url)[0]
    scheme = bare.split(":", 1)[0].lower() if ":" in bare else ""
    ad: dict[str, Value] = {
        "TransferSuccess": bool(result and result.ok),
        "TransferProtocol": scheme,
        "TransferType": "upload" if upload else "download",
        "TransferUrl": url,
        "TransferFileName": local,
        "TransferStartTime": int(start),
        "TransferEndTime": int(end),
        "ConnectionTimeSeconds": round(end - start, 3),
    }
    if result is not None and result.ok:
        ad["TransferFileBytes"] = result.bytes
        ad["TransferTotalBytes"] = result.bytes
        if result.sha256:
            ad["DeveloperData"] = {"sha256": result.sha256, "Attempts": len(result.attempts)}
        return ad
    message = error or (result.error if result else None) or "transfer failed"
    ad["TransferError"] = redact(message)
    if result is not None:
        ad["TransferErrorData"] = _error_data(result, url)
    else:
        ad["TransferErrorData"] = [
            {
                "ErrorType": "Parameter",
                "ErrorCode": 1,
                "ErrorString": redact(message),
                "PluginVersion": _version(),
                "PluginLaunched": True,
            }
        ]
    return ad


def _local_url(path: str) -> URL:
    """``LocalFileName`` is a path, not a URL: no ``$VAR`` expansion, no ``%XX`` decoding."""
    path = os.path.abspath(path)
    return URL(raw=f"file://{path}", scheme="file", path=path)


def transfer_ads(
    ads: Sequence[Mapping[str, Value]], *, upload: bool, engine: Engine
) -> list[dict[str, Value]]:
    """Transfer every file ad; return one result ad per input ad, in order."""
    jobs: list[tuple[int, str, str, TransferRequest | None, str | None]] = []
    for i, ad in enumerate(ads):
        url_value, local_value = lookup(ad, "Url"), lookup(ad, "LocalFileName")
        url_text = url_value if isinstance(url_value, str) else ""
        local = local_value if isinstance(local_value, str) else ""
        missing = [n for n, v in (("Url", url_text), ("LocalFileName", local)) if not v]
        if missing:
            error = f"input ad {i + 1} has no string {' or '.join(missing)}"
            jobs.append((i, url_text, local, None, error))
            continue
        try:
            url, sha = _split_sha(url_text)
            url, cred = _split_cred(url)
            remote = Endpoint(parse_url(url))
            if cred is not None:
                _add_token(engine.registry.context, remote.url, _read_token(cred))
            path = Endpoint(_local_url(local))
            req = TransferRequest(
                sources=[path if upload else remote],
                dest=remote if upload else path,
                lfn=os.path.basename(local),
                sha256=sha,
            )
            jobs.append((i, url_text, local, req, None))
        except Exception as exc:
            jobs.append((i, url_text, local, None, f"{url_text}: {exc}"))
    start = time.time()
    reqs = [j[3] for j in jobs if j[3] is not None]
    ends = _EndTimes()
    engine.subscribers.append(ends)
    results = iter(engine.run(reqs)) if reqs else iter(())
    end = time.time()
    out = []
    for _, url_text, local, req, error in jobs:
        result = next(results) if req is not None else None
        if result is not None and id(req) in ends.at:
            # the file's own times: it ran for its duration, up to when it was done
            file_end = ends.at[id(req)]
            file_start = max(start, file_end - result.duration)
        else:
            file_start, file_end = start, end
        out.append(_result_ad(result, url_text, local, upload, file_start, file_end, error))
    return out


class _EndTimes(Subscriber):
    """When each request was done (wall clock), by ``id`` of the request."""

    def __init__(self) -> None:
        self.at: dict[int, float] = {}

    def on_done(self, result: TransferResult) -> None:
        self.at[id(result.request)] = time.time()


def _write_outfile(path: str, ads: Sequence[Mapping[str, Value]]) -> None:
    """Write from offset 0 without truncating (HTCondor pre-fills the file with spaces)."""
    data = "".join(format_ad(ad) + "\n" for ad in ads).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if len(data) < size:
            data += b" " * (size - len(data))  # keep the file parseable: blanks only after
        os.write(fd, data)
    finally:
        os.close(fd)


def _args(argv: Sequence[str]) -> dict[str, Any]:
    opts: dict[str, Any] = {"classad": False, "upload": False, "infile": None, "outfile": None}
    it = iter(argv)
    for arg in it:
        if arg == "-classad":
            opts["classad"] = True
        elif arg == "-upload":
            opts["upload"] = True
        elif arg in ("-infile", "-outfile"):
            opts[arg[1:]] = next(it, None)
        else:
            raise SystemExit(f"ferry_plugin: unknown argument {arg!r}")
    return opts


def main(argv: Sequence[str] | None = None) -> int:
    opts = _args(sys.argv[1:] if argv is None else argv)
    registry = Registry(
        ProtocolContext(concurrency=int(os.environ.get("FERRY_CONDOR_THREADS", "4")))
    )
    if opts["classad"]:
        sys.stdout.write(format_old(capabilities(registry)))
        return EXIT_SUCCESS
    if not opts["infile"] or not opts["outfile"]:
        print("usage: ferry_plugin -classad | -infile IN -outfile OUT [-upload]", file=sys.stderr)
        return EXIT_FAILURE
    try:
        with open(opts["infile"], encoding="utf-8") as f:
            ads = list(iter_file_ads(parse_ads(f.read())))
    except (OSError, ClassAdError) as exc:
        _write_outfile(
            opts["outfile"],
            [
                _result_ad(
                    None,
                    "",
                    "",
                    opts["upload"],
                    time.time(),
                    time.time(),
                    f"cannot read {opts['infile']}: {exc}",
                )
            ],
        )
        return EXIT_FAILURE
    config = TransferConfig(
        threads=int(os.environ.get("FERRY_CONDOR_THREADS", "4")),
        max_attempts=int(os.environ.get("FERRY_CONDOR_ATTEMPTS", "3")),
        backoff_initial=float(os.environ.get("FERRY_CONDOR_BACKOFF", "1")),
    )
    with registry:
        results = transfer_ads(ads, upload=opts["upload"], engine=Engine(registry, config))
    _write_outfile(opts["outfile"], results)
    return EXIT_SUCCESS if all(r["TransferSuccess"] for r in results) else EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
