"""Shared fixtures: real servers on 127.0.0.1, one of each per test session.

The start/stop code lives in :mod:`tests.servers`; these fixtures only pick a
work directory and stop the server at teardown. A missing server binary makes
the tests that need it fail (never skip).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.servers import (
    FaultServer,
    NginxServer,
    WebdavServer,
    start_nginx,
    start_wsgidav,
)

WEBDAV_USER = "alice"
WEBDAV_PASSWORD = "s3cret-Pa55word"


@pytest.fixture(scope="session", autouse=True)
def _plugin_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep ferry's plugin declaration cache (and child processes') out of ~/.cache."""
    old = os.environ.get("FERRY_CACHE_DIR")
    os.environ["FERRY_CACHE_DIR"] = str(tmp_path_factory.mktemp("ferry-cache"))
    yield
    if old is None:
        os.environ.pop("FERRY_CACHE_DIR", None)
    else:
        os.environ["FERRY_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def nginx_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxServer]:
    """nginx serving ``.root`` (a directory) at ``.url`` (``http://127.0.0.1:PORT``)."""
    server = start_nginx(tmp_path_factory.mktemp("nginx"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def webdav_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebdavServer]:
    """wsgidav with anonymous read/write on ``.root``, at ``.url`` (``webdav://...``)."""
    server = start_wsgidav(tmp_path_factory.mktemp("webdav"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def webdav_auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebdavServer]:
    """wsgidav that needs basic auth as ``.user``/``.password``; ``.auth_url()`` carries them."""
    server = start_wsgidav(
        tmp_path_factory.mktemp("webdav-auth"), user=WEBDAV_USER, password=WEBDAV_PASSWORD
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def fault_server() -> Iterator[FaultServer]:
    """An HTTP server whose paths misbehave as a test registers them (``.add(path, ...)``)."""
    server = FaultServer()
    try:
        yield server
    finally:
        server.stop()
