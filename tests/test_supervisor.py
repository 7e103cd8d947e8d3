"""`interlock serve --workers N`: start, refuse, drain (real processes on loopback)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from proxy.settings import SettingsError, cpu_count, load_settings
from proxy.supervisor import worker_dirs
from tests.proxyserver import create_test_database, drop_test_database
from tests.services import redis_url
from tests.topology import free_port


def _serve(tmp: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "proxy.cli", "serve", *args], cwd=tmp, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "INTERLOCK_RULES_DIR": str(tmp), **env})


def test_workers_auto_means_the_cpus_this_process_may_use() -> None:
    assert load_settings(workers="auto").workers == cpu_count() >= 1
    with pytest.raises(SettingsError, match="workers"):
        load_settings(workers=0)


def test_each_worker_gets_its_own_spool_and_wal_directory(tmp_path: Path) -> None:
    s = load_settings(spool_dir=tmp_path / "spool")
    assert worker_dirs(s, 1) == (tmp_path / "spool" / "worker-1", tmp_path / "spool" / "worker-1" / "wal")
    s = load_settings(spool_dir=tmp_path / "spool", wal_dir=tmp_path / "wal")
    assert worker_dirs(s, 0)[1] == tmp_path / "wal" / "worker-0"


def test_more_than_one_worker_without_redis_is_refused_in_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "INTERLOCK_REDIS_URL"}
    out = subprocess.run([sys.executable, "-m", "proxy.cli", "serve", "--workers", "2"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0
    assert "INTERLOCK_REDIS_URL" in out.stderr and "workers" in out.stderr


def test_a_worker_that_cannot_start_stops_the_group_with_a_clear_line(tmp_path: Path) -> None:
    proc = _serve(tmp_path, "--workers", "2", "--port", str(free_port()), INTERLOCK_REDIS_URL=redis_url(),
                  INTERLOCK_ENCODINGS_DIR=str(tmp_path / "no-such-dir"))
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert "exited with code 2 before it was ready" in out
    assert "encodings" in out.lower()  # the worker's own reason is shown above it


def test_a_busy_port_is_refused_once_by_the_supervisor(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = _serve(tmp_path, "--workers", "2", "--port", str(port), INTERLOCK_REDIS_URL=redis_url())
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in out


def test_sigterm_drains_every_worker_and_exits_zero(tmp_path: Path) -> None:
    db = create_test_database()
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "proxy.cli", "serve", "--workers", "2", "--port", str(port)],
                                cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "INTERLOCK_RULES_DIR": str(tmp_path), "INTERLOCK_REDIS_URL": redis_url(),
                                     "INTERLOCK_DATABASE_URL": db, "INTERLOCK_SPOOL_DIR": str(tmp_path / "spool")})
    try:
        deadline = time.monotonic() + 90
        while "2 workers ready" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        assert sorted(p.name for p in (tmp_path / "spool").iterdir()) == ["worker-0", "worker-1"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
    finally:
        if proc.poll() is None:
            proc.kill()
        drop_test_database(db)
