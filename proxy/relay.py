"""The per-request pipeline, as a raw ASGI callable (no framework on the hot path).

    receive body ─▶ route ─▶ parse (provider) ─▶ count tokens ─▶ resolve run ─▶ guards.on_request
        │ deny: native error                                               │
        ▼                                                                  ▼
    record ◀── guards.on_response ◀── relay bytes (SSE: as they arrive; tee to parser,
                                       guards.on_chunk per event) ◀── forward upstream

Every request ends in exactly one `record(call)` (a non-blocking enqueue), whatever happens:
refusal, upstream failure, upstream cut, client disconnect.

A relayed answer's `guards.on_response` runs before its end reaches the client (before a
whole body is sent; for a stream, before the read carrying its closing event, e.g. OpenAI's
`[DONE]`, after which SDKs stop reading, or else before the final chunk): what a loop detector stores about this
turn is in the shared store before the agent can send its next turn, to this replica or to
any other.  With in-memory guard state this costs nothing (no await of I/O); with Redis, one
round trip of latency at the end of the answer, no CPU.  Other endings settle in `_finish`.

Memory per exchange is bounded whatever the upstream sends: bytes are passed on as they arrive
(a body that came in one read goes out in one send, with its length); what is kept is capped:
content_max_bytes for the record, response_parse_max_bytes for a body to parse or one SSE event,
stream_text_max_chars for a stream's completion.  Past a cap the call is flagged (`Call.flags`).
A body cut after relaying began is not ended cleanly: the client sees the connection close.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Generator
from functools import partial
from typing import Any, Protocol
from urllib.parse import parse_qsl

import orjson
from starlette.types import Receive, Scope, Send

from proxy.call import Call, Chunk, new_id
from proxy.extensions import DISCONNECT_HOOK
from proxy.forward import Forwarder, UpstreamError, UpstreamResponse
from proxy.guards.base import Verdict
from proxy.providers import Route, Router
from proxy.providers.base import Provider, Splitter, StreamParser, usage_in_tail
from proxy.redact import api_key_hash, redact_text
from proxy.settings import Settings
from proxy.sse import Event

log = logging.getLogger("interlock.relay")


# Not forwarded upstream: hop-by-hop, recomputed, or Interlock's own.
_DROP_UP = frozenset(
    {b"connection", b"keep-alive", b"proxy-authorization", b"te", b"trailer", b"transfer-encoding",
     b"upgrade", b"host", b"content-length", b"accept-encoding", b"proxy-connection"}
)
# Not relayed to the client: hop-by-hop and what the ASGI server frames itself.
_DROP_DOWN = frozenset(
    {b"connection", b"keep-alive", b"proxy-authenticate", b"te", b"trailer", b"transfer-encoding",
     b"upgrade", b"content-length"}
)
# Connection options that name no header (`keep-alive` and `upgrade` are dropped anyway).
_CONNECTION_OPTIONS = frozenset({b"", b"close", b"keep-alive", b"upgrade"})


class GuardHooks(Protocol):
    """What the relay needs of a guard chain (proxy.guards.chain.GuardChain)."""

    async def on_request(self, call: Call) -> Verdict: ...
    def on_chunk(self, call: Call, chunk: Chunk) -> Verdict: ...
    async def on_response(self, call: Call) -> Verdict: ...


class TokenCounting(Protocol):
    def count_call(self, call: Call, factor: float | None = None) -> int: ...


class RunResolving(Protocol):
    async def resolve(self, call: Call) -> None:
        """Request path, before the guards: set call.agent (when unnamed) and call.run_id."""

    def note_response(self, call: Call) -> None: ...


class Relay:
    """Forwards one agent request and records it.  Built once in create_app()."""

    def __init__(
        self,
        settings: Settings,
        router: Router,
        forwarder: Forwarder,
        record: Callable[[Call], None],
        guards: Callable[[], GuardHooks | None] = lambda: None,
        tokens: TokenCounting | None = None,
        runs: RunResolving | None = None,
        metrics: Any = None,
    ) -> None:
        self.settings = settings
        self.router = router
        self.forwarder = forwarder
        self.record = record
        self.guards = guards
        self.tokens = tokens
        self.runs = runs
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        arrived = time.perf_counter()
        if self.metrics is not None:
            self.metrics.request_started()
        call, route, headers, target = self._new_call(scope)
        task = asyncio.current_task()
        unwatch: Callable[[], object] | None = None
        state = _Exchange(send, arrived)
        try:
            body = await _read_body(receive, self.settings.max_body_bytes)
            if body is None:
                await self._refuse_plain(call, state, route.provider, 413, "invalid_request_error",
                                         "interlock_body_too_large",
                                         f"Interlock: request body exceeds the {self.settings.max_body_bytes}-byte limit "
                                         "(INTERLOCK_MAX_BODY_BYTES).", "too_large")
                return
            call.request_bytes = body
            if task is not None:
                unwatch = _watch_disconnect(scope, receive, task, state)
            await self._handle(call, route, headers, target, body, state)
        except _ClientLeft:  # before the body ended (gone, or timed out by the server)
            call.outcome = "cancelled"
        except asyncio.CancelledError:
            if not state.client_gone:
                raise
            if task is not None:
                task.uncancel()
            call.outcome = "cancelled"
            if state.parser is not None:
                state.parser.finish()
                self._capture(call, _assembled(call))
        except Exception as exc:  # never let a bug drop the record
            log.exception("relay failure on %s", redact_text(call.path))
            call.outcome = call.outcome or "upstream_error"
            call.error = call.error or f"interlock internal error: {exc!r}"
            if not state.started:
                await self._send_error(state, route.provider, 500, "interlock_internal_error",
                                       None, "Interlock failed to relay this request; see the proxy log.")
        finally:
            if unwatch is not None:
                unwatch()
            now = time.perf_counter()
            call.overhead_s = state.overhead(now)
            await self._finish(call, state.guards)
            if self.metrics is not None:
                self.metrics.observe_call(call, now - arrived)

    # ---------------------------------------------------------------- stages

    def _new_call(self, scope: Scope) -> tuple[Call, Route, list[tuple[bytes, bytes]], str]:
        """The call, its route, the headers to forward and the request target to forward
        (`scope` holds the canonical path: decoded in `path`, as forwarded in `raw_path`)."""
        path: str = scope["path"]
        forward: str = scope["raw_path"].decode("ascii")
        agent: str | None = None
        source: str | None = None
        if path.startswith("/agents/"):
            name, _, tail = path[8:].partition("/")
            agent, source, path = name, "path", "/" + tail  # already decoded, once (proxy/paths.py)
            forward = "/" + (forward.split("/", 3)[3:] or [""])[0]  # the same segments, as received
        call = Call(new_id(), time.time(), "", "other", "", scope["method"], path,  # provider: once routed
                    agent=agent, agent_source=source)
        headers: list[tuple[bytes, bytes]] = []
        router = self.router
        key_headers, marker_headers = router.key_headers, router.markers
        keys: list[tuple[bytes, str]] = []  # API-key headers (and query parameters): hashed once routed
        markers: list[bytes] = []
        named: bytes = b""  # the Connection header's value: more hop-by-hop names
        for k, v in scope["headers"]:
            if k.startswith(b"x-interlock-"):
                self._interlock_header(call, k, v)
                continue
            if k in _DROP_UP:
                if k == b"connection":
                    named += b"," + v
                continue
            if k in key_headers:
                keys.append((k, v.decode("latin-1")))
            if k in marker_headers:
                markers.append(k)
            elif k == b"traceparent":
                call.traceparent = v.decode("latin-1")
            headers.append((k, v))
        if named:
            headers = _without_named(headers, named)
        headers.append((b"accept-encoding", b"identity"))
        call_route = router.route(path, markers)
        spec = call_route.spec
        query = scope.get("query_string")
        if query:
            forward += "?" + query.decode("latin-1")
            if spec.key_query:
                keys.extend(_query_keys(query, spec.key_query))
        if keys:
            wanted = spec.key_names
            key = spec.api_key([kv for kv in keys if kv[0] in wanted])
            if key:
                call.api_key_hash = api_key_hash(key)
        call.provider, call.upstream = spec.system, spec.name  # the upstream until a model glob says otherwise
        call.operation = call_route.operation
        return call, call_route, headers, forward

    def _interlock_header(self, call: Call, k: bytes, v: bytes) -> None:
        if k == b"x-interlock-agent" and call.agent is None:
            call.agent, call.agent_source = v.decode("utf-8", "replace"), "header"
        elif k == b"x-interlock-run":
            call.run_hint = call.run_id = v.decode("utf-8", "replace")

    async def _handle(self, call: Call, route: Route, headers: list[tuple[bytes, bytes]], target: str,
                      body: bytes, state: _Exchange) -> None:
        provider = route.provider
        parsed: Any = None
        if body and (route.json_body or body[:1] in (b"{", b"[")):
            try:
                parsed = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                if route.json_body:
                    await self._bad_json(call, provider, state, str(exc))
                    return
        elif route.json_body:
            await self._bad_json(call, provider, state, "empty body")
            return
        if isinstance(parsed, dict):
            call.request = parsed
            provider.parse_request(call, parsed)
        elif route.json_body:
            await self._bad_json(call, provider, state, "the body must be a JSON object")
            return
        if route.model is not None:
            call.model_requested = route.model  # the path names what the upstream serves
        if route.stream:
            call.stream = True
        call.upstream, spec = self.router.upstream_for(route.spec, call.model_requested)
        if spec is None:
            await self._refuse_plain(call, state, provider, 502, "interlock_upstream_error", "upstream_not_configured",
                                     f"Interlock: no upstream is configured for provider '{route.spec.name}'; set "
                                     f"INTERLOCK_UPSTREAM_{route.spec.name.upper()}. Nothing was sent upstream.",
                                     "unreachable")
            return
        self._count(call, route.spec.token_factor)
        if self.runs is not None and route.json_body:
            await self.runs.resolve(call)
        guards = self.guards()
        state.guards = guards
        if guards is not None:
            verdict = await guards.on_request(call)
            if verdict.action == "deny":
                await self._deny(call, provider, state, verdict)
                return
        upstream_body = provider.upstream_body(call, parsed, body) if isinstance(parsed, dict) else body
        await self._forward(call, provider, state, spec.url + target, headers, upstream_body)

    def _count(self, call: Call, factor: float | None) -> None:
        if self.tokens is None or not call.messages and call.system is None:
            return
        try:
            call.input_tokens_counted = self.tokens.count_call(call, factor)
        except Exception:
            log.exception("token counting failed")
            return
        if factor is not None:
            call.flags.append("input_tokens_estimated")

    async def _forward(self, call: Call, provider: Provider, state: _Exchange, url: str,
                       headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        state.upstream_at = time.perf_counter()
        try:
            resp = await self.forwarder.send(call.method, url, headers, body)
        except UpstreamError as exc:
            await self._upstream_failed(call, provider, state, exc)
            return
        clean = False
        try:
            call.status = resp.status
            if provider.is_stream(_content_type(resp.headers)):
                clean = await self._relay_stream(call, provider, state, resp)
            else:
                clean = await self._relay_body(call, provider, state, resp)
        finally:
            state.upstream_end = state.upstream_end or time.perf_counter()
            await resp.aclose(abort=not clean)

    async def _relay_body(self, call: Call, provider: Provider, state: _Exchange, resp: UpstreamResponse) -> bool:
        """A body that arrived whole in one read goes out in one send with its length (the common
        small answer); a longer one is passed on as it arrives, a bounded copy kept (`_BodyCopy`)."""
        pieces = aiter(resp.aiter_raw())
        try:
            first = await anext(pieces, b"")
            call.first_byte_at = call.first_byte_at or time.time()
            second = await anext(pieces, None) if first else None
        except UpstreamError as exc:
            await self._upstream_failed(call, provider, state, exc)
            return False
        if second is None:
            state.upstream_end = time.perf_counter()
            call.response_size = len(first)
            self._settle_body(call, provider, resp.status, first, first)
            headers = _down_headers(resp)
            headers.append((b"content-length", str(len(first)).encode()))
            await self._settle_guards(call, state)
            await state.start(resp.status, headers)
            await state.body(first, more=False)
            return True
        return await self._stream_body(call, provider, state, resp, pieces, (first, second))

    async def _stream_body(self, call: Call, provider: Provider, state: _Exchange, resp: UpstreamResponse,
                           pieces: AsyncIterator[bytes], head: tuple[bytes, bytes]) -> bool:
        copy = _BodyCopy(self.settings.response_parse_max_bytes)
        chunked = any(k.lower() == b"transfer-encoding" for k, _ in resp.headers)  # a length beside it lies
        await state.start(resp.status, _down_headers(resp, keep_length=not chunked))
        cut: UpstreamError | None = None
        try:
            for piece in head:
                copy.add(piece)
                self._capture(call, piece)
                await state.body(piece)
            async for piece in pieces:
                copy.add(piece)
                self._capture(call, piece)
                await state.body(piece)
        except UpstreamError as exc:  # the client's body ends short: the server closes the connection
            cut = exc
        state.upstream_end = time.perf_counter()
        call.response_size = copy.size
        whole = copy.whole()
        if whole is None:
            call.flags.append("response_unparsed")
            usage = usage_in_tail(copy.tail)
            if usage is not None:
                provider.parse_usage(call, usage)
        self._settle_body(call, provider, resp.status, whole, copy.head)
        if cut is not None:
            call.outcome = "upstream_cut"
            call.error = f"upstream {call.upstream} ended the body early: {cut}; the client got {copy.size} bytes"
            return False
        await self._settle_guards(call, state)
        await state.body(b"", more=False)
        return True

    def _settle_body(self, call: Call, provider: Provider, status: int, whole: bytes | None, head: bytes) -> None:
        """Outcome, usage and completion of a non-streamed answer (`whole` None: too large to parse)."""
        call.outcome = "ok" if status < 400 else "upstream_error"
        if whole is not None:
            if not call.response_bytes:
                self._capture(call, whole)
            if status < 400 or whole[:1] == b"{":
                provider.parse_body(call, whole)
        if status >= 400:
            call.error = head[:2000].decode("utf-8", "replace")

    async def _relay_stream(self, call: Call, provider: Provider, state: _Exchange, resp: UpstreamResponse) -> bool:
        await state.start(resp.status, _down_headers(resp))
        parser = state.parser = provider.stream_parser(call)
        parser.text_limit = self.settings.stream_text_max_chars
        splitter = provider.splitter(self.settings.response_parse_max_bytes)
        filtering = provider.needs_filter(call)
        guards = state.guards
        call.outcome = "ok" if resp.status < 400 else "upstream_error"
        end = parser.end_marker if guards is not None else None
        tail = b""  # from the read carrying the closing event on: sent once the guards settled
        try:
            async for raw in resp.aiter_raw():
                if call.first_byte_at is None:
                    call.first_byte_at = time.time()
                call.response_size += len(raw)
                events = splitter.feed(raw)
                out = raw if not filtering else b"".join(
                    b for b in (provider.filter_event(call, e) for e in events) if b)
                if tail or end is not None and end in raw:
                    tail += out
                elif out:
                    await state.body(out)
                for event in events:
                    chunk = parser.on_event(event)
                    if chunk is None or guards is None:
                        continue
                    chunk.output_tokens_so_far = call.usage.output_tokens or (parser.text_chars + 3) // 4
                    verdict = guards.on_chunk(call, chunk)
                    if verdict.action == "deny":
                        parser.finish()
                        tail = await self._flush(state, tail)
                        await self._cut(call, provider, state, verdict)
                        self._capture(call, _assembled(call))
                        return False
            if held := splitter.close():  # an unterminated last event: it follows the tail
                tail = await self._flush(state, tail)
                if not await self._on_events(call, provider, state, held, filtering):
                    return False
        except UpstreamError as exc:
            call.outcome = "upstream_cut"
            call.error = f"upstream {call.upstream} ended the stream early: {exc}"
            tail = await self._flush(state, tail)
            await state.body(provider.error_event("interlock_upstream_error", "upstream_stream_cut",
                                                  f"Interlock: {call.error}. The response above is incomplete."))
            clean = False
        else:
            clean = True
        state.upstream_end = time.perf_counter()
        parser.finish()
        self._stream_flags(call, parser, splitter)
        self._capture(call, _assembled(call))
        await self._settle_guards(call, state)
        await self._flush(state, tail)
        await state.body(b"", more=False)
        return clean

    @staticmethod
    async def _flush(state: _Exchange, tail: bytes) -> bytes:
        """Send the held-back end of a stream (before anything that must follow it)."""
        if tail:
            await state.body(tail)
        return b""

    async def _on_events(self, call: Call, provider: Provider, state: _Exchange, events: list[Event],
                         filtering: bool) -> bool:
        """Relay (when filtering), parse and guard the events the splitter's `close` gave (the same as
        the loop in `_relay_stream`, kept inline there: it runs per read); False once a guard cut the stream."""
        if filtering:
            out = b"".join(b for b in (provider.filter_event(call, e) for e in events) if b)
            if out:
                await state.body(out)
        parser, guards = state.parser, state.guards
        assert parser is not None
        for event in events:
            chunk = parser.on_event(event)
            if chunk is None or guards is None:
                continue
            chunk.output_tokens_so_far = call.usage.output_tokens or (parser.text_chars + 3) // 4
            verdict = guards.on_chunk(call, chunk)
            if verdict.action == "deny":
                parser.finish()
                await self._cut(call, provider, state, verdict)
                self._capture(call, _assembled(call))
                return False
        return True

    @staticmethod
    def _stream_flags(call: Call, parser: StreamParser, splitter: Splitter) -> None:
        if parser.capped:
            call.flags.append("completion_capped")
        if splitter.oversized:
            call.flags.append("sse_event_oversized")

    # ---------------------------------------------------------------- endings

    async def _cut(self, call: Call, provider: Provider, state: _Exchange, verdict: Verdict) -> None:
        call.outcome = "denied"
        call.error = verdict.reason
        await state.body(provider.error_event(verdict.code, verdict.code, verdict.reason))
        await state.body(b"", more=False)

    async def _deny(self, call: Call, provider: Provider, state: _Exchange, verdict: Verdict) -> None:
        call.outcome = "denied"
        call.error = verdict.reason
        await self._send_error(state, provider, verdict.status, verdict.code, verdict.code, verdict.reason,
                               verdict.refusal_headers())
        call.status = provider.error_status(verdict.status)

    async def _bad_json(self, call: Call, provider: Provider, state: _Exchange, why: str) -> None:
        await self._refuse_plain(call, state, provider, 400, "invalid_request_error", "interlock_invalid_json",
                                 f"Interlock: the request body is not valid JSON ({why}); nothing was sent upstream.",
                                 "bad_request")

    async def _refuse_plain(self, call: Call, state: _Exchange, provider: Provider, status: int, etype: str,
                            code: str, message: str, outcome: str) -> None:
        call.outcome, call.status, call.error = outcome, provider.error_status(status), message
        await self._send_error(state, provider, status, etype, code, message)

    async def _upstream_failed(self, call: Call, provider: Provider, state: _Exchange, exc: UpstreamError) -> None:
        timeout = exc.timeout
        status = 504 if timeout else 502
        call.outcome = "timeout" if timeout else "unreachable"
        spec = self.router.upstreams.get(call.upstream)
        where = f"upstream '{call.upstream}' ({spec.url if spec else '?'})"
        verb = "timed out waiting for" if timeout else "could not reach"
        call.error = f"Interlock {verb} {where}: {exc}"
        call.status = provider.error_status(status)
        log.warning("%s (call %s, answered %d)", call.error, call.id, status)
        if state.started:
            call.outcome = "upstream_cut"
            await state.body(provider.error_event("interlock_upstream_error", call.outcome, call.error))
            await state.body(b"", more=False)
            return
        code = "upstream_timeout" if timeout else "upstream_unreachable"
        await self._send_error(state, provider, status, "interlock_upstream_error", code, call.error)

    async def _send_error(self, state: _Exchange, provider: Provider, status: int, etype: str,
                          code: str | None, message: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
        body = provider.error_body(status, etype, code, message)
        await state.start(provider.error_status(status), [(b"content-type", b"application/json"),
                                   (b"content-length", str(len(body)).encode()),
                                   *provider.error_headers(status, etype, code), *(extra or ())])
        await state.body(body, more=False)

    def _capture(self, call: Call, data: bytes) -> None:
        room = self.settings.content_max_bytes - len(call.response_bytes)
        if room <= 0:
            call.response_truncated = call.response_truncated or bool(data)
            return
        call.response_bytes += data[:room]
        if len(data) > room:
            call.response_truncated = True

    async def _settle_guards(self, call: Call, state: _Exchange) -> None:
        """The guards' `on_response` for an answer about to end (see the module docstring);
        `_finish` then has nothing left to settle."""
        guards, state.guards = state.guards, None
        if guards is not None:
            call.ended_at = time.time()
            await self._on_response(call, guards)

    async def _on_response(self, call: Call, guards: GuardHooks) -> None:
        try:
            await _shielded(guards.on_response(call))
        except Exception:
            log.exception("guard on_response failed")

    async def _finish(self, call: Call, guards: GuardHooks | None) -> None:
        """Settle the same chain that admitted the call (a reload may have swapped it since)."""
        call.ended_at = time.time()
        if guards is not None:
            await self._on_response(call, guards)
        if self.runs is not None and call.outcome == "ok":
            self.runs.note_response(call)
        self.record(call)


class _Exchange:
    """The client side of one exchange: tracks whether headers went out and the client left."""

    __slots__ = ("send", "started", "done", "client_gone", "guards", "arrived", "upstream_at", "upstream_end",
                 "parser")

    def __init__(self, send: Send, arrived: float) -> None:
        self.send = send
        self.arrived = arrived
        self.upstream_at: float | None = None
        self.upstream_end: float | None = None
        self.started = False
        self.done = False
        self.client_gone = False
        self.guards: GuardHooks | None = None
        self.parser: StreamParser | None = None

    def overhead(self, now: float) -> float:
        """Proxy time: arrival → upstream send, plus upstream end → now (all when never sent)."""
        if self.upstream_at is None:
            return now - self.arrived
        return (self.upstream_at - self.arrived) + (now - (self.upstream_end or now))

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.started = True
        await self.send({"type": "http.response.start", "status": status, "headers": headers})

    async def body(self, data: bytes, more: bool = True) -> None:
        if not more:
            self.done = True
        await self.send({"type": "http.response.body", "body": data, "more_body": more})


async def _shielded(coro: Coroutine[Any, Any, Any]) -> Any:
    """`await asyncio.shield(coro)` without its task when `coro` returns before suspending (a
    chain whose guards only touch memory): what runs without yielding cannot be cancelled."""
    try:
        first = coro.send(None)
    except StopIteration as stop:
        return stop.value
    return await asyncio.shield(_Suspended(coro, first))


class _Suspended:
    """A coroutine stopped at its first suspension (it yielded `first`, the future it waits
    on): awaiting this hands that future to the awaiting task, then drives the coroutine on."""

    __slots__ = ("coro", "first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self.coro, self.first = coro, first

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, pending = self.coro, self.first
        while True:
            try:
                sent = yield pending
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # thrown into the awaiting task (cancelled): pass it on
                step = partial(coro.throw, exc)
            else:
                step = partial(coro.send, sent)
            try:
                pending = step()
            except StopIteration as stop:
                return stop.value


def _watch_disconnect(scope: Scope, receive: Receive, task: asyncio.Task[Any], state: _Exchange) -> Callable[[], object]:
    """Cancel `task` when the client leaves before the response ended; returns the undo.
    Interlock's server calls back (its DISCONNECT_HOOK extension: no task per request); under
    any other ASGI server a task waits in receive() for http.disconnect."""
    extensions = scope.get("extensions")
    hook = extensions.get(DISCONNECT_HOOK) if extensions else None
    if hook is None:
        return asyncio.create_task(_await_disconnect(receive, task, state)).cancel
    hook(lambda: _client_left(task, state))
    return lambda: hook(None)


async def _await_disconnect(receive: Receive, task: asyncio.Task[Any], state: _Exchange) -> None:
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            _client_left(task, state)
            return


def _client_left(task: asyncio.Task[Any], state: _Exchange) -> None:
    if not state.done:
        state.client_gone = True
        task.cancel()


class _ClientLeft(Exception):
    """The client left before its body ended.  Not a CancelledError: that would end the task
    with the exception stored, and its traceback (this frame, the body read so far, the task)
    a cycle only a full garbage collection frees (measured: every stalled upload's bytes kept)."""


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    msg = await receive()
    body: bytes = msg.get("body", b"")
    if not msg.get("more_body"):
        return body if len(body) <= limit else None
    parts = [body]
    size = len(body)
    while msg.get("more_body"):
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise _ClientLeft
        part = msg.get("body", b"")
        size += len(part)
        if size > limit:
            return None
        parts.append(part)
    return b"".join(parts)


class _BodyCopy:
    """What is kept of a body passed on as it arrives: all of it while under `limit` (to parse),
    else its last `_TAIL` bytes (where the usage is); and its first 2,000 (an error's text)."""

    __slots__ = ("limit", "parts", "size", "tail", "head")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[bytes] | None = []
        self.size = 0
        self.tail = b""
        self.head = b""

    def add(self, piece: bytes) -> None:
        self.size += len(piece)
        if len(self.head) < 2000:
            self.head += piece[: 2000 - len(self.head)]
        if self.parts is not None:
            self.parts.append(piece)
            if self.size <= self.limit:
                return
            self.tail = b"".join(self.parts)[-_TAIL:]
            self.parts = None
            return
        self.tail = piece[-_TAIL:] if len(piece) >= _TAIL else (self.tail + piece)[-_TAIL:]

    def whole(self) -> bytes | None:
        return b"".join(self.parts) if self.parts is not None else None


_TAIL = 64 * 1024


def _assembled(call: Call) -> bytes:
    """What a stream produced, stored instead of its raw events (smaller, and readable)."""
    c = call.completion
    out: dict[str, Any] = {"stream": True, "text": c.text, "finish_reason": call.finish_reason}
    if c.tool_calls:
        out["tool_calls"] = [{"id": t.id, "name": t.name, "arguments": t.arguments} for t in c.tool_calls]
    if c.response_id:
        out["id"] = c.response_id
    return orjson.dumps(out)


def _down_headers(resp: UpstreamResponse, keep_length: bool = False) -> list[tuple[bytes, bytes]]:
    """Headers to relay; `keep_length`: the upstream's Content-Length too (a body passed on as it
    arrives: the relayed bytes are exactly the upstream's, never decoded)."""
    out: list[tuple[bytes, bytes]] = []
    named = b""
    for k, v in resp.headers:
        low = k.lower()
        if low in _DROP_DOWN and not (keep_length and low == b"content-length"):
            if low == b"connection":
                named += b"," + v
            continue
        out.append((low, v))
    return _without_named(out, named) if named else out


def _without_named(headers: list[tuple[bytes, bytes]], connection: bytes) -> list[tuple[bytes, bytes]]:
    """Drop the headers a Connection header names: hop-by-hop too (RFC 9110 §7.6.1)."""
    names = {t.strip().lower() for t in connection.split(b",")} - _CONNECTION_OPTIONS
    if not names:
        return headers
    return [(k, v) for k, v in headers if k.lower() not in names]


def _content_type(headers: list[tuple[bytes, bytes]]) -> bytes:
    for k, v in headers:
        if k.lower() == b"content-type":
            return v
    return b""


def _query_keys(query: bytes, names: tuple[str, ...]) -> list[tuple[bytes, str]]:
    """(name, value) of the query parameters that hold an API key (`?key=` for Gemini)."""
    return [(k.encode(), v) for k, v in parse_qsl(query.decode("latin-1")) if k in names]
