"""The file protocol passes the conformance kit."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferry.plugins.testing import ConformanceEndpoint, ProtocolConformance


class TestFileConformance(ProtocolConformance):
    __test__ = True

    @pytest.fixture
    def endpoint(self, tmp_path: Path) -> ConformanceEndpoint:
        return ConformanceEndpoint(base_url=f"file://{tmp_path}/store")
