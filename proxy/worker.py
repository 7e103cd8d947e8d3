"""One worker process under `interlock serve --workers N` (proxy/supervisor.py starts it).

    inherited listen socket ──▶ Server(app)           the proxy, as in a single process
    inherited private port  ──▶ Server(local metrics)  127.0.0.1, this worker's own /metrics text,
                                                        only with the supervisor's per-start secret
    control socket          ──▶ "ready" once listening; EOF (supervisor gone) ─▶ drain and exit

`/metrics` on the shared port is answered by whichever worker accepted the scrape: it asks every
peer's private port for its text and merges (`merge`): counters and histograms are summed per
label set, gauges keep one series per worker (label `worker`), so a scrape never sees one random
worker's numbers.  `interlock_workers` and `interlock_workers_reporting` say how many took part.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from proxy.server import ASGIApp, Limits, Message, Server
from proxy.settings import WorkerSlot
from proxy.supervisor import READY

SECRET_HEADER = b"x-interlock-worker-secret"
_SUMMED = ("counter", "histogram", "summary", "gaugehistogram")


def local_metrics_app(scrape: Callable[[], Awaitable[bytes]], secret: str) -> ASGIApp:
    """This worker's own metrics text, for its peers (any path; the secret or 403)."""
    want = secret.encode()

    async def app(scope: Any, receive: Callable[[], Awaitable[Message]], send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            return
        ok = dict(scope["headers"]).get(SECRET_HEADER) == want
        body = await scrape() if ok else b"forbidden\n"
        await send({"type": "http.response.start", "status": 200 if ok else 403,
                    "headers": [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8"),
                                (b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})

    return app


class PeerMetrics:
    """The merged /metrics of every worker of this process group.  Runs on the event loop
    at scrape time (never on the request path); a peer that does not answer within `timeout_s`
    is left out and counted as not reporting."""

    def __init__(self, slot: WorkerSlot, own: Callable[[], Awaitable[bytes]], *, timeout_s: float = 5.0) -> None:
        self.slot, self.own, self.timeout_s = slot, own, timeout_s

    async def __call__(self) -> bytes:
        texts = await asyncio.gather(*(self._fetch(i, port) for i, port in enumerate(self.slot.peers)))
        return await asyncio.to_thread(merge, [(i, t) for i, t in enumerate(texts) if t is not None],
                                       len(self.slot.peers))

    async def _fetch(self, index: int, port: int) -> str | None:
        if index == self.slot.index:
            return (await self.own()).decode()
        try:
            return await asyncio.wait_for(fetch_local(port, self.slot.secret), self.timeout_s)
        except (OSError, TimeoutError, ValueError):  # restarting: left out, seen in interlock_workers_reporting
            return None

    async def aclose(self) -> None:
        pass


async def fetch_local(port: int, secret: str) -> str:
    """One HTTP/1.0 GET of a peer's private metrics port (loopback, our own server; no client
    library needed for a request whose answer is read to EOF)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /metrics HTTP/1.0\r\nhost: 127.0.0.1\r\n%s: %s\r\n\r\n" % (SECRET_HEADER, secret.encode()))
        raw = await reader.read()
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")):
        raise ValueError(f"peer metrics port {port} answered {head[:40]!r}")
    return body.decode()


def merge(texts: Iterable[tuple[int, str]], workers: int) -> bytes:
    """Prometheus text of several workers as one exposition (see the module docstring)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.metrics_core import GaugeMetricFamily, Metric
    from prometheus_client.parser import text_string_to_metric_families
    from prometheus_client.registry import Collector

    families: dict[str, Metric] = {}
    sums: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    reporting = 0
    for index, text in texts:
        reporting += 1
        for fam in text_string_to_metric_families(text):
            merged = families.setdefault(fam.name, Metric(fam.name, fam.documentation, fam.type, fam.unit))
            acc = sums.setdefault(fam.name, {})
            for sample in fam.samples:
                labels = dict(sample.labels)
                if fam.type not in _SUMMED:
                    labels["worker"] = str(index)
                key = (sample.name, tuple(sorted(labels.items())))
                if sample.name.endswith("_created"):  # a start time: the earliest
                    acc[key] = min(acc.get(key, sample.value), sample.value)
                else:
                    acc[key] = acc.get(key, 0.0) + sample.value
    for name, merged in families.items():
        for (sample_name, pairs), value in sums[name].items():
            merged.add_sample(sample_name, dict(pairs), value)
    count = GaugeMetricFamily("interlock_workers", "Worker processes behind this port (interlock serve --workers)")
    count.add_metric([], workers)
    seen = GaugeMetricFamily("interlock_workers_reporting", "Workers whose metrics this scrape merged")
    seen.add_metric([], reporting)

    class _Merged(Collector):
        def collect(self) -> Iterable[Metric]:
            return [*families.values(), count, seen]

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged())
    return generate_latest(registry)


async def serve(app: Any, slot: WorkerSlot, *, graceful_timeout_s: float, limits: Limits) -> None:
    """Serve `app` on the inherited socket until SIGTERM/SIGINT or the supervisor goes away."""
    listen = socket.socket(fileno=slot.listen_fd)
    private = socket.socket(fileno=slot.metrics_fd)
    control = socket.socket(fileno=slot.control_fd)
    control.setblocking(False)
    runtime = app.runtime

    async def own() -> bytes:
        return await runtime.metrics.scrape() if runtime.metrics is not None else b""

    def ready() -> None:
        control.send(READY)

    server = Server(app, sock=listen, graceful_timeout_s=graceful_timeout_s, limits=limits, on_started=ready)
    side = Server(local_metrics_app(own, slot.secret), sock=private, lifespan=False, graceful_timeout_s=1.0)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, server.request_exit)

    def on_control() -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            if control.recv(64) == b"":  # the supervisor is gone
                loop.remove_reader(control.fileno())
                server.request_exit()

    loop.add_reader(control.fileno(), on_control)
    side_task = asyncio.create_task(side.serve(), name="interlock-worker-metrics")
    try:
        await server.serve()
    finally:
        side.request_exit()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(side_task, 5.0)  # cancelled if it never got to listen
        with contextlib.suppress(Exception):
            loop.remove_reader(control.fileno())
        control.close()
