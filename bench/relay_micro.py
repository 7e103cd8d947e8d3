"""Relay micro-benchmark: CPU per request of `Relay` alone (no server, no network, no recording).

    .venv/bin/python bench/relay_micro.py [--requests 20000] [--rounds 5]
    PYTHONPATH=DIR .venv/bin/python bench/relay_micro.py     # DIR's `proxy` package instead

Drives `proxy.relay.Relay` as an ASGI app, one request after another on one uvloop loop, with
an in-memory forwarder that answers at once: a small non-streamed chat completion (one body
piece, as the raw client hands a small answer over) and a 50-chunk stream (one piece per read of
10 events).  No guards, tokens or run resolution: what is measured is the relay's own path,
the part bounded response buffering changed.  Reported: CPU µs per request
(`time.process_time`), the median over rounds, each round after a 1,000-request warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import uvloop

from proxy.providers import Router
from proxy.relay import Relay
from proxy.server import DISCONNECT_HOOK
from proxy.settings import Settings

BODY = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "system", "content": "Be brief."},
                                                          {"role": "user", "content": "Say hello."}]})
ANSWER = orjson.dumps({"id": "c1", "object": "chat.completion", "model": "gpt-4o-mini", "choices": [
    {"index": 0, "message": {"role": "assistant", "content": "Hello there, how can I help you today?"},
     "finish_reason": "stop"}], "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}})
EVENT = b"data: " + orjson.dumps({"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4o-mini", "choices": [
    {"index": 0, "delta": {"content": "word "}, "finish_reason": None}]}) + b"\n\n"
STREAM = [EVENT * 10] * 5 + [b'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":50}}\n\n'
                             b"data: [DONE]\n\n"]


class _Answer:
    def __init__(self, sse: bool) -> None:
        self.status = 200
        kind = b"text/event-stream" if sse else b"application/json"
        self.headers = [(b"content-type", kind), (b"content-length", b"%d" % len(ANSWER))]
        self._pieces = STREAM if sse else [ANSWER]

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        for piece in self._pieces:
            yield piece

    async def aclose(self, abort: bool = False) -> None:
        return None


class _Forwarder:
    """The in-memory twin of proxy.forward.Forwarder: every answer ready at once."""

    def __init__(self, sse: bool) -> None:
        self.sse = sse

    async def send(self, method: str, url: str, headers: list[tuple[bytes, bytes]], body: bytes) -> Any:
        return _Answer(self.sse)

    async def aclose(self) -> None:
        return None


async def _run(relay: Relay, n: int, stream: bool) -> float:
    body = orjson.dumps({**orjson.loads(BODY), "stream": True}) if stream else BODY
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
             "query_string": b"", "headers": [(b"content-type", b"application/json"),
                                             (b"authorization", b"Bearer sk-bench")],
             "extensions": {DISCONNECT_HOOK: lambda callback: None}}  # as Interlock's server: no watcher task

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    t0 = time.process_time()
    for _ in range(n):
        await relay(dict(scope), receive, send)
    return (time.process_time() - t0) / n * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    router = Router(settings.all_upstreams())
    loop = uvloop.new_event_loop()
    for label, stream in (("non-streamed", False), ("stream", True)):
        relay = Relay(settings, router, _Forwarder(stream), record=lambda call: None)  # type: ignore[arg-type]
        loop.run_until_complete(_run(relay, 1000, stream))
        per = [loop.run_until_complete(_run(relay, args.requests, stream)) for _ in range(args.rounds)]
        print(f"{label:13} {statistics.median(per):7.1f} µs/request  (rounds: {', '.join(f'{x:.1f}' for x in per)})")


if __name__ == "__main__":
    main()
