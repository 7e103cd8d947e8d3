from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_upstream import FakeUpstream
from tests.proxyserver import ProxyServer
from tests.topology import Topology


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        yield up


@pytest.fixture
def proxy(tmp_path: Path, upstream: FakeUpstream) -> Iterator[ProxyServer]:
    with ProxyServer(tmp_path, upstream.url) as px:
        yield px


@pytest.fixture
def topology(tmp_path: Path, upstream: FakeUpstream) -> Iterator[Topology]:
    """2 replicas × 2 workers of `interlock serve` behind HAProxy (tests/topology.py)."""
    with Topology(tmp_path, upstream.url, replicas=2, workers=2) as topo:
        yield topo
