"""URL parsing as pegasus-transfer does it, and redaction of secrets."""

from __future__ import annotations

import os

import pytest

from ferry.plugins.errors import ConfigError
from ferry.plugins.url import parse_url, redact


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("file:///data/a", "/data/a"),
        ("file://localhost/data/a", "/data/a"),
        ("file:/data/a", "/data/a"),
        ("/data//a", "/data/a"),
        ("symlink:///x/y", "/x/y"),
    ],
)
def test_local_forms(text: str, path: str) -> None:
    url = parse_url(text)
    assert url.is_local and url.path == path


def test_relative_and_env_vars(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv("FERRY_T", "/base")
    assert parse_url("file://${FERRY_T}/x").path == "/base/x"
    assert parse_url("file:$FERRY_T/y").path == "/base/y"
    assert parse_url("rel/p").path == os.path.abspath("rel/p")
    monkeypatch.delenv("FERRY_UNSET", raising=False)
    assert parse_url("file:///a$FERRY_UNSET/b").path == "/a/b"


def test_remote_parts() -> None:
    u = parse_url("s3://alice@osn:9000/bucket//key/x?versionId=3")
    assert (u.scheme, u.user, u.host, u.port, u.path, u.query) == (
        "s3",
        "alice",
        "osn",
        9000,
        "/bucket/key/x",
        "versionId=3",
    )
    assert parse_url("http://[::1]:8080/a").host == "[::1]"


def test_secrets_are_masked() -> None:
    u = parse_url("webdav://bob:s3cr%40t@h/x?X-Amz-Signature=deadbeef&part=1")
    assert u.password == "s3cr@t"
    for text in (str(u), repr(u), u.redacted()):
        assert "s3cr" not in text and "deadbeef" not in text
        assert "part=1" in text
    assert "pw" not in redact("failed: http://u:pw@h/x then")


def test_bad_urls() -> None:
    with pytest.raises(ConfigError, match="bad port"):
        parse_url("http://h:99999/x")
    with pytest.raises(ConfigError, match="malformed URL"):
        parse_url("http:nohost")
    # the password of a URL that does not parse is masked in the error too
    for bad in ("http:u:pw-secret@h/x", "s3://u:pw-secret@h:99999/b", "http://u:pw@secret@h:x/y"):
        with pytest.raises(ConfigError) as info:
            parse_url(bad)
        assert "secret" not in str(info.value)
    with pytest.raises(ConfigError):
        parse_url("")


@pytest.mark.parametrize("path", ["/x/a%41 b", "/x/q?uery#frag", "/x/$HOME", "/x/plain.dat"])
@pytest.mark.parametrize("base", ["file:///a/b", "http://u:p@h:8080/a?q=1", "sftp://h/a"])
def test_with_path_keeps_the_path_as_given(base: str, path: str) -> None:
    # the path is decoded already: a "%", "?", "#" or "$" in it is part of a name
    moved = parse_url(base).with_path(path)
    assert moved.path == path and moved.scheme == parse_url(base).scheme
    assert parse_url(moved.raw).path == path
