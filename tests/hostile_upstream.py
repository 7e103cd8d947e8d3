"""A model upstream that misbehaves on purpose, on a real loopback socket (raw asyncio streams,
so it can send what no HTTP server library would): floods, lies, garbage and resets.

    with HostileUpstream() as up:  # up.url; the case is picked by the request path
        GET  /v1/files/big/content?mb=N          N MiB of bytes, Content-Length (a file download)
        POST /v1/embeddings          {"model": "big-N"}  N MiB of JSON, chunked, usage at the end
        POST /v1/chat/completions    {"model": "flood-N", "stream": true}  N MiB of SSE chat chunks,
                                     then finish + usage + [DONE]; "flood-forever": never ends
        POST /v1/chat/completions    {"model": "huge-event-N", "stream": true}  one N MiB event, then
                                     usage + [DONE]
        POST /v1/chat/completions    {"model": "cut-N", "stream": true}  N events, then the
                                     connection closes mid-stream (no terminating chunk)
        GET  /v1/hostile/bad-chunked        chunked body with a chunk size that is not hex
        GET  /v1/hostile/length-lie?kb=N    Content-Length: N KiB + 1 MiB, N KiB sent, then close
        GET  /v1/hostile/garbage-status     a status line that is not HTTP
        GET  /v1/hostile/reset?kb=N         N KiB of a 100 MiB body, then a TCP reset
        anything else                        a small JSON answer (keep-alive)

Also used by bench/edge_flood.py.  `served_bytes` counts what was written.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

MIB = 1024 * 1024
_PIECE = b"x" * MIB


class HostileUpstream:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.served_bytes = 0
        self.requests = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ready = threading.Event()

    def __enter__(self) -> HostileUpstream:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._conn, sock=self.sock)
        self._ready.set()
        async with server:
            await self._stop.wait()

    # -------------------------------------------------- one connection

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests += 1
                if not await self._answer(method, target, body, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def _answer(self, method: str, target: str, body: bytes, w: asyncio.StreamWriter) -> bool:
        """Write one answer; False when the connection must end (the case closes it)."""
        parts = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        path = parts.path
        model = str((orjson.loads(body) if body.startswith(b"{") else {}).get("model", ""))
        if path == "/v1/files/big/content":
            await self._bytes(w, int(query.get("mb", "300")) * MIB)
        elif path == "/v1/embeddings" and model.startswith("big-"):
            await self._big_json(w, int(model[4:]) * MIB)
        elif path == "/v1/chat/completions" and model.startswith("flood-"):
            mb = model[6:]
            await self._flood(w, None if mb == "forever" else int(mb) * MIB)
        elif path == "/v1/chat/completions" and model.startswith("huge-event-"):
            await self._huge_event(w, int(model[11:]) * MIB)
        elif path == "/v1/chat/completions" and model.startswith("cut-"):
            await self._cut_stream(w, int(model[4:]))
            return False
        elif path.startswith("/v1/hostile/"):
            await self._hostile(w, path[12:], query)
            return False
        else:
            self._write(w, _json_answer({"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model"}]}))
        return True

    def _write(self, w: asyncio.StreamWriter, data: bytes) -> None:
        self.served_bytes += len(data)
        w.write(data)

    async def _bytes(self, w: asyncio.StreamWriter, size: int) -> None:
        self._write(w, b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: %d\r\n\r\n" % size)
        while size > 0:
            self._write(w, _PIECE[: min(size, MIB)])
            size -= MIB
            await w.drain()

    async def _big_json(self, w: asyncio.StreamWriter, size: int) -> None:
        self._write(w, b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
        row = b'{"object":"embedding","index":0,"embedding":[' + b"0.0123456789," * 8000 + b"0.5]},"
        head = b'{"object":"list","data":['
        self._write(w, _chunk(head))
        sent = len(head)
        while sent < size:
            self._write(w, _chunk(row))
            sent += len(row)
            await w.drain()
        tail = b'{"object":"embedding","index":1,"embedding":[0.5]}],"model":"text-embedding-3-small",' \
               b'"usage":{"prompt_tokens":4242,"total_tokens":4242}}'
        self._write(w, _chunk(tail) + b"0\r\n\r\n")

    async def _flood(self, w: asyncio.StreamWriter, size: int | None) -> None:
        self._write(w, b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        text = "lorem ipsum " * 340  # ~4 KiB of content per event
        event = _sse({"id": "c1", "object": "chat.completion.chunk", "model": "flood", "choices": [
            {"index": 0, "delta": {"content": text}, "finish_reason": None}], "usage": None})
        batch = _chunk(event * 16)
        sent = 0
        while size is None or sent < size:
            self._write(w, batch)
            sent += len(batch)
            await w.drain()
        end = _sse({"id": "c1", "object": "chat.completion.chunk", "model": "flood", "choices": [
            {"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": None})
        usage = _sse({"id": "c1", "object": "chat.completion.chunk", "model": "flood", "choices": [],
                      "usage": {"prompt_tokens": 11, "completion_tokens": 777, "total_tokens": 788}})
        self._write(w, _chunk(end + usage + b"data: [DONE]\n\n") + b"0\r\n\r\n")

    async def _huge_event(self, w: asyncio.StreamWriter, size: int) -> None:
        self._write(w, b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        event = _sse({"id": "c1", "object": "chat.completion.chunk", "model": "huge", "choices": [
            {"index": 0, "delta": {"content": "z" * size}, "finish_reason": "stop"}], "usage": None})
        for i in range(0, len(event), 64 * 1024):
            self._write(w, _chunk(event[i : i + 64 * 1024]))
            await w.drain()
        usage = _sse({"id": "c1", "object": "chat.completion.chunk", "model": "huge", "choices": [],
                      "usage": {"prompt_tokens": 3, "completion_tokens": 99, "total_tokens": 102}})
        self._write(w, _chunk(usage + b"data: [DONE]\n\n") + b"0\r\n\r\n")

    async def _cut_stream(self, w: asyncio.StreamWriter, n: int) -> None:
        self._write(w, b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        for i in range(n):
            self._write(w, _chunk(_sse({"id": "c1", "object": "chat.completion.chunk", "model": "cut", "choices": [
                {"index": 0, "delta": {"content": f"part {i} "}, "finish_reason": None}]})))
            await w.drain()
        await asyncio.sleep(0.05)

    async def _hostile(self, w: asyncio.StreamWriter, case: str, query: dict[str, str]) -> None:
        if case == "bad-chunked":
            self._write(w, b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
                           b"zz\r\n{\"a\":1}\r\n0\r\n\r\n")
        elif case == "length-lie":
            kb = int(query.get("kb", "1"))
            self._write(w, b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
                        % (kb * 1024 + MIB))
            self._write(w, b"{" + b" " * (kb * 1024 - 1))
        elif case == "garbage-status":
            self._write(w, b"HTTP/1.1 OK-ish maybe\r\n\x00\x01\x02 garbage\r\n\r\n")
        elif case == "reset":
            kb = int(query.get("kb", "1"))
            self._write(w, b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: %d\r\n\r\n"
                        % (100 * MIB))
            self._write(w, b"y" * (kb * 1024))
            await w.drain()
            await asyncio.sleep(0.05)
            sock = w.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            w.transport.abort()
            return
        await w.drain()
        await asyncio.sleep(0.05)


def _json_answer(obj: Any) -> bytes:
    body = orjson.dumps(obj)
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _sse(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


def main() -> None:
    """`python -m tests.hostile_upstream`: serve until killed; prints the URL on the first line."""
    with HostileUpstream() as up:
        print(up.url, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
