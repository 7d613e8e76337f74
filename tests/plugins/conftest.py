"""Fixtures shared by the protocol tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ferry.plugins.registry import Registry


@pytest.fixture(scope="module")
def registry() -> Iterator[Registry]:
    """One registry (and so one client per protocol) for a test module."""
    reg = Registry()
    yield reg
    reg.close()


def secret_free(exc: BaseException, secret: str) -> None:
    """Assert ``secret`` shows in no str/repr/url of ``exc`` or the exceptions it chains."""
    seen: BaseException | None = exc
    while seen is not None:
        for text in (str(seen), repr(seen), str(getattr(seen, "url", ""))):
            assert secret not in text
        seen = seen.__cause__ or seen.__context__
