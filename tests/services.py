"""Real service endpoints for tests: skip on a laptop without them, fail in CI (CI=true)."""

from __future__ import annotations

import os
import socket

import pytest

PG_URL = os.environ.get("INTERLOCK_TEST_PG", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("INTERLOCK_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _require(name: str, host: str, port: int) -> None:
    if _reachable(host, port):
        return
    msg = f"{name} is not reachable on {host}:{port}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{msg}, and CI=true makes it mandatory")
    pytest.skip(f"{msg}; start it to run this test")


def postgres_url() -> str:
    """Async SQLAlchemy URL of the test PostgreSQL; skips or fails when it is absent."""
    _require("PostgreSQL", "127.0.0.1", 5432)
    return PG_URL


def redis_url() -> str:
    _require("Redis", "127.0.0.1", 6379)
    return REDIS_URL
