"""The lean request path of the s3 plugin: SigV4 by hand over one urllib3 pool.

botocore costs ~3 ms of CPU per ``PutObject``/``GetObject`` on the reference
machine (endpoint-ruleset resolution for every key, its generic serializer
and parser, hooks, User-Agent, retries) and 0.25 s to import and build a
client. For the hot operations (GetObject, ranged GetObject, PutObject,
HeadObject) the s3 plugin instead signs requests itself (:class:`Signer`, AWS
Signature Version 4 with the signing key cached per day) and sends them over
one shared :class:`urllib3.PoolManager` (keep-alive, a pool as large as the
engine's concurrency). Where a request goes (scheme, host, path prefix,
signing region) and which keys sign it is decided once per site and bucket by
the plugin (:class:`Target`); everything else (multipart, copies, listings,
bucket management) stays on botocore.

Nothing here logs or formats a secret: :class:`S3ResponseError` carries the
status, S3's error code and message, and the response headers.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import urllib3

__all__ = [
    "EMPTY_SHA256",
    "LeanS3",
    "S3ResponseError",
    "Signer",
    "Target",
    "UNSIGNED",
]

UNSIGNED = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_ALGORITHM = "AWS4-HMAC-SHA256"
_CODE = re.compile(rb"<Code>([^<]*)</Code>")
_MESSAGE = re.compile(rb"<Message>([^<]*)</Message>")

#: (access key, secret key, session token or None)
Keys = tuple[str, str, "str | None"]


class S3ResponseError(Exception):
    """An S3 error response, shaped like botocore's ``ClientError.response``.

    The s3 plugin maps it exactly as it maps a botocore ``ClientError``.
    """

    def __init__(self, op: str, status: int, code: str, message: str, headers: dict[str, str]):
        super().__init__(f"{op}: {code or status} {message}".strip())
        self.operation_name = op
        self.response: dict[str, Any] = {
            "Error": {"Code": code or str(status), "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers},
        }


class Signer:
    """AWS Signature Version 4 for S3 with the signing key cached per day.

    ``keys`` returns the current (access key, secret key, token): a constant
    for keys from the credentials file or the environment, botocore's
    refreshable credentials otherwise (re-read on every request, so a
    refreshed role is picked up).
    """

    def __init__(self, keys: Callable[[], Keys], region: str) -> None:
        self._keys = keys
        self.region = region
        self._cache: tuple[str, str, bytes] | None = None  # (date, secret digest, key)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Signer(region={self.region!r})"

    def _signing_key(self, secret: str, date: str) -> bytes:
        digest = hashlib.sha1(secret.encode()).hexdigest()  # never the secret itself
        cached = self._cache
        if cached is not None and cached[0] == date and cached[1] == digest:
            return cached[2]
        k = hmac.new(f"AWS4{secret}".encode(), date.encode(), hashlib.sha256).digest()
        for part in (self.region, "s3", "aws4_request"):
            k = hmac.new(k, part.encode(), hashlib.sha256).digest()
        with self._lock:
            self._cache = (date, digest, k)
        return k

    def sign(
        self,
        method: str,
        host: str,
        path: str,
        query: str,
        headers: dict[str, str],
        payload: str = UNSIGNED,
    ) -> dict[str, str]:
        """Add ``Host``, ``x-amz-*`` and ``Authorization`` to ``headers``; return it.

        ``path`` and ``query`` are already URI-encoded (S3 encodes the path
        once); every header given is signed (keep them few: x-amz-*, range).
        """
        access, secret, token = self._keys()
        now = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        date = now[:8]
        headers["Host"] = host
        headers["x-amz-date"] = now
        headers["x-amz-content-sha256"] = payload
        if token:
            headers["x-amz-security-token"] = token
        items = sorted((k.lower(), " ".join(str(v).split())) for k, v in headers.items())
        signed = ";".join(k for k, _ in items)
        canonical = "\n".join(
            (
                method,
                path,
                query,
                "".join(f"{k}:{v}\n" for k, v in items),
                signed,
                payload,
            )
        )
        scope = f"{date}/{self.region}/s3/aws4_request"
        to_sign = f"{_ALGORITHM}\n{now}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(
            self._signing_key(secret, date), to_sign.encode(), hashlib.sha256
        ).hexdigest()
        headers["Authorization"] = (
            f"{_ALGORITHM} Credential={access}/{scope}, SignedHeaders={signed},"
            f" Signature={signature}"
        )
        return headers


@dataclass(frozen=True)
class Target:
    """Where the requests for one bucket go: ``scheme://host[:port]prefix<key>``."""

    scheme: str
    hostname: str
    port: int | None
    host: str  # as sent in the Host header (with a non-default port)
    prefix: str  # the encoded path before the key: "/bucket/" (path style) or "/"
    region: str


class LeanS3:
    """Signed S3 requests over a shared pool, for one site (endpoint and keys).

    ``target(bucket)`` tells where a bucket's requests go (computed by the
    plugin once per bucket and cached here). ``on_request(op)`` is called for
    every request sent (the tests count them).
    """

    def __init__(
        self,
        pool: urllib3.PoolManager,
        keys: Callable[[], Keys],
        target: Callable[[str], Target],
        *,
        timeout: float,
        payload_signing: bool = False,
        on_request: Callable[[str], None] | None = None,
    ) -> None:
        self._pool = pool
        self._keys = keys
        self._target_of = target
        self._targets: dict[str, tuple[Target, Any, Signer]] = {}
        self._signers: dict[str, Signer] = {}
        self._timeout = urllib3.Timeout(connect=timeout, read=timeout)
        # stale keep-alive connections and refused connects are retried here,
        # the rest (status codes, broken bodies) by the plugin and the engine
        self._retries = urllib3.Retry(
            total=3, connect=2, read=1, status=0, other=0, redirect=False, raise_on_status=False
        )
        self.payload_signing = payload_signing
        self.on_request = on_request

    def __repr__(self) -> str:
        return f"LeanS3(buckets={len(self._targets)})"

    def _bucket(self, bucket: str) -> tuple[Target, Any, Signer]:
        entry = self._targets.get(bucket)
        if entry is None:
            target = self._target_of(bucket)
            signer = self._signers.get(target.region)
            if signer is None:
                signer = self._signers.setdefault(target.region, Signer(self._keys, target.region))
            conn = self._pool.connection_from_host(
                target.hostname, port=target.port, scheme=target.scheme
            )
            entry = self._targets[bucket] = (target, conn, signer)
        return entry

    def request(
        self,
        op: str,
        method: str,
        bucket: str,
        key: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | memoryview | None = None,
        stream: bool = False,
    ) -> Any:
        """Send one signed request; return the urllib3 response (2xx only).

        With ``stream`` the body is left unread (the caller reads it and
        releases the connection); an error status raises
        :class:`S3ResponseError` after reading the (small) error body.
        """
        target, conn, signer = self._bucket(bucket)
        path = target.prefix + quote(key, safe="/~")
        if body is not None and self.payload_signing:
            payload = hashlib.sha256(body).hexdigest()
        elif self.payload_signing:
            payload = EMPTY_SHA256
        else:
            payload = UNSIGNED
        hdrs = signer.sign(method, target.host, path, "", dict(headers or {}), payload)
        if self.on_request is not None:
            self.on_request(op)
        resp = conn.urlopen(
            method,
            path,
            body=body,
            headers=hdrs,
            retries=self._retries,
            timeout=self._timeout,
            preload_content=False,
            decode_content=False,
            assert_same_host=False,
        )
        status = resp.status
        if status < 300:
            if not stream:
                resp.drain_conn()
                resp.release_conn()
            return resp
        data = b"" if method == "HEAD" else resp.read()
        resp.release_conn()
        code = _CODE.search(data)
        message = _MESSAGE.search(data)
        raise S3ResponseError(
            op,
            status,
            code.group(1).decode(errors="replace") if code else "",
            message.group(1).decode(errors="replace") if message else "",
            {k.lower(): v for k, v in resp.headers.items()},
        )


def read_into(resp: Any, view: memoryview) -> int:
    """Read a streamed response body into ``view``; return the count (short at EOF).

    ``readinto`` on the http.client response under urllib3's (no copies, no
    per-chunk bytes); the connection goes back to the pool when the body was
    read to its end, and is closed otherwise.
    """
    fp = resp._fp
    n = 0
    try:
        while n < len(view):
            k = fp.readinto(view[n:])
            if not k:
                break
            n += k
    except BaseException:
        resp.close()
        raise
    if fp.isclosed():  # the whole body was read: the connection can be reused
        resp.release_conn()
    return n


def finish(resp: Any) -> None:
    """Done with a streamed response: reuse its connection if its body was read."""
    fp = getattr(resp, "_fp", None)
    if fp is not None and not fp.isclosed():
        resp.close()
    else:
        resp.release_conn()
