"""ferry's conformance kit run against the example plugin: this is the whole test."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferry.plugins.testing import ConformanceEndpoint, ProtocolConformance


class TestStoreConformance(ProtocolConformance):
    __test__ = True

    @pytest.fixture
    def endpoint(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ConformanceEndpoint:
        monkeypatch.setenv("FERRY_STORE_KIT", str(tmp_path / "store-root"))
        return ConformanceEndpoint(base_url="store://kit/objects")
