"""`interlock serve --workers N`: one supervisor process, N worker processes on one port.

    supervisor ── binds host:port once (and one private loopback port per worker for /metrics)
        │  starts worker i as `python -m proxy.cli serve` with INTERLOCK_WORKER={index, fds, peers}
        │  and its own INTERLOCK_SPOOL_DIR / INTERLOCK_WAL_DIR (<dir>/worker-<i>: their locks
        │  refuse a shared directory); the sockets are inherited, so the kernel hands each
        │  connection to whichever worker accepts first
        ├─ waits until every worker reports ready on its control socket, else exits 1 with one line
        ├─ a worker that dies is started again in the same slot (same index, spool and WAL: the
        │  new one replays what its predecessor answered but had not yet written)
        └─ SIGTERM/SIGINT: forwarded to every worker (graceful drain), SIGKILL after the deadline

A worker whose supervisor vanishes (killed) sees its control socket close and drains on its own.
The supervisor imports nothing heavy and takes no requests: its memory is a few MiB.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from proxy.settings import Settings

READY = b"ready\n"
_RESTART_BACKOFF_S = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0)  # by consecutive early deaths
_STABLE_S = 10.0  # a worker that lived this long resets the backoff


def worker_dirs(settings: Settings, index: int) -> tuple[Path, Path]:
    """The spool and WAL directories of worker `index` (stable across restarts)."""
    spool = settings.spool_dir / f"worker-{index}"
    wal = settings.wal_dir / f"worker-{index}" if settings.wal_dir is not None else spool / "wal"
    return spool, wal


@dataclass
class _Slot:
    index: int
    metrics: socket.socket
    proc: subprocess.Popen[bytes] | None = None
    control: socket.socket | None = None
    ready: bool = False
    started_at: float = 0.0
    early_deaths: int = 0
    restart_at: float | None = None
    restarts: int = field(default=0)


class Supervisor:
    """Runs the worker processes until a signal; `run()` returns the exit code."""

    def __init__(self, settings: Settings, *, out: TextIO | None = None, ready_timeout_s: float = 120.0,
                 graceful_timeout_s: float = 10.0) -> None:
        self.settings = settings
        self.out = out or sys.stderr
        self.ready_timeout_s = ready_timeout_s
        self.graceful_timeout_s = graceful_timeout_s
        self.secret = secrets.token_hex(16)
        self.listener: socket.socket | None = None
        self.slots: list[_Slot] = []
        self._stop: int | None = None

    def run(self, banner: str) -> int:
        try:
            self._bind()
        except OSError as exc:
            s = self.settings
            self._say(f"cannot listen on {s.host}:{s.port}: {exc.strerror or exc}")
            return 2
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        try:
            for slot in self.slots:
                self._start(slot)
            failed = self._await_ready()
            if failed is not None:
                self._say(failed)
                return 1
            if self._stop is not None:  # asked to stop while starting
                return 0
            print(banner, file=self.out, flush=True)
            self._say(f"{len(self.slots)} workers ready (pids {', '.join(str(self._pid(s)) for s in self.slots)})")
            self._watch()
            return 0
        finally:
            self._shutdown()

    def _bind(self) -> None:
        s = self.settings
        family = socket.AF_INET6 if ":" in s.host else socket.AF_INET
        # IPPROTO_TCP: asyncio then sets TCP_NODELAY on accepted connections (proxy/serving.py)
        self.listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((s.host, s.port))
        self.listener.listen(2048)
        self.listener.set_inheritable(True)
        for i in range(s.workers):
            m = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            m.bind(("127.0.0.1", 0))
            m.listen(64)
            m.set_inheritable(True)
            self.slots.append(_Slot(i, m))

    def _env(self, slot: _Slot, control_fd: int) -> dict[str, str]:
        s = self.settings
        assert self.listener is not None
        spool, wal = worker_dirs(s, slot.index)
        spec = {"index": slot.index, "count": len(self.slots), "listen_fd": self.listener.fileno(),
                "metrics_fd": slot.metrics.fileno(), "control_fd": control_fd, "secret": self.secret,
                "peers": [x.metrics.getsockname()[1] for x in self.slots]}
        env = dict(os.environ)
        env.update({"INTERLOCK_WORKER": json.dumps(spec), "INTERLOCK_WORKERS": "1",
                    "INTERLOCK_HOST": s.host, "INTERLOCK_PORT": str(s.port),
                    "INTERLOCK_DATABASE_URL": s.database_url, "INTERLOCK_RULES_DIR": str(s.rules_dir),
                    "INTERLOCK_SPOOL_DIR": str(spool), "INTERLOCK_WAL_DIR": str(wal)})
        return env

    def _start(self, slot: _Slot) -> None:
        assert self.listener is not None
        ours, theirs = socket.socketpair()
        theirs.set_inheritable(True)
        fds = (self.listener.fileno(), slot.metrics.fileno(), theirs.fileno())
        slot.proc = subprocess.Popen([sys.executable, "-m", "proxy.cli", "serve"], pass_fds=fds,
                                     env=self._env(slot, theirs.fileno()))
        theirs.close()
        ours.setblocking(False)
        slot.control, slot.ready, slot.started_at, slot.restart_at = ours, False, time.monotonic(), None

    def _await_ready(self) -> str | None:
        deadline = time.monotonic() + self.ready_timeout_s
        while not all(s.ready for s in self.slots):
            if self._stop is not None:
                return None
            for slot in self.slots:
                self._poll_ready(slot)
                rc = slot.proc.poll() if slot.proc is not None else None
                if rc is not None and not slot.ready:
                    return (f"worker {slot.index} exited with code {rc} before it was ready "
                            "(its error is above); stopping the others")
            if time.monotonic() > deadline:
                return f"workers not ready after {self.ready_timeout_s:g} s; stopping them"
            time.sleep(0.02)
        return None

    def _poll_ready(self, slot: _Slot) -> None:
        if slot.ready or slot.control is None:
            return
        with contextlib.suppress(BlockingIOError, InterruptedError):
            if slot.control.recv(64).startswith(READY):
                slot.ready = True

    def _watch(self) -> None:
        while self._stop is None:
            now = time.monotonic()
            for slot in self.slots:
                self._poll_ready(slot)
                if slot.restart_at is not None:
                    if now >= slot.restart_at:
                        self._start(slot)
                    continue
                rc = slot.proc.poll() if slot.proc is not None else None
                if rc is not None:
                    self._died(slot, rc, now)
            time.sleep(0.05)

    def _died(self, slot: _Slot, rc: int, now: float) -> None:
        slot.early_deaths = 0 if now - slot.started_at >= _STABLE_S else slot.early_deaths + 1
        delay = _RESTART_BACKOFF_S[min(slot.early_deaths, len(_RESTART_BACKOFF_S) - 1)]
        how = f"signal {-rc}" if rc < 0 else f"code {rc}"
        self._say(f"worker {slot.index} (pid {self._pid(slot)}) exited with {how}; restarting it"
                  + (f" in {delay:g} s" if delay else ""))
        if slot.control is not None:
            slot.control.close()
            slot.control = None
        slot.restarts += 1
        slot.restart_at = now + delay

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._stop = signum

    def _shutdown(self) -> None:
        live = [s.proc for s in self.slots if s.proc is not None and s.proc.poll() is None]
        for proc in live:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.graceful_timeout_s + 5.0
        for proc in live:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._say(f"worker pid {proc.pid} did not drain in time; killing it")
                proc.kill()
                proc.wait()
        for slot in self.slots:
            if slot.control is not None:
                slot.control.close()
            slot.metrics.close()
        if self.listener is not None:
            self.listener.close()

    @staticmethod
    def _pid(slot: _Slot) -> int | None:
        return slot.proc.pid if slot.proc is not None else None

    def _say(self, line: str) -> None:
        print(f"interlock: {line}", file=self.out, flush=True)
