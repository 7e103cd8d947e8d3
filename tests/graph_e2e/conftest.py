"""Fixtures for the end-to-end graph tests: one fake model per module, a fresh proxy per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_upstream import FakeUpstream
from tests.proxyserver import ProxyServer


@pytest.fixture(scope="module")
def model() -> Iterator[FakeUpstream]:
    """The fake model; each test sets `model.responder` to script its agents."""
    with FakeUpstream() as up:
        yield up


@pytest.fixture
def px(tmp_path: Path, model: FakeUpstream) -> Iterator[ProxyServer]:
    """A live proxy with full content storage (to map calls back to scripted steps).

    `encodings_dir` points at an empty folder: token counting falls back to its approximation
    (irrelevant to the graph) and start-up skips parsing the BPE files, ~1 s per proxy.
    """
    model.reset()
    with ProxyServer(tmp_path, model.url, content_policy="full", encodings_dir=tmp_path / "no-encodings") as proxy:
        yield proxy
    model.responder = None

