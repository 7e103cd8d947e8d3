"""A TCP relay to a real service that a test can cut: the network between Interlock and Redis,
not a fake Redis.  `open` forwards bytes both ways; `cut` closes every connection and answers
new ones by closing them; `hang` accepts and never answers (a stalled server)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Literal

Mode = Literal["open", "cut", "hang"]


class NetCut:
    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.mode: Mode = "open"
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def __aenter__(self) -> NetCut:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._drop()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def set(self, mode: Mode) -> None:
        self.mode = mode
        if mode != "open":
            self._drop()

    def _drop(self) -> None:
        for w in list(self._writers):
            w.close()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "cut":
            writer.close()
            return
        self._writers.add(writer)
        if self.mode == "hang":
            return  # held open, never answered, until cut or closed
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers.add(up_writer)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()
