"""A real OTLP/HTTP trace receiver on a loopback port, decoding the protobuf payload it gets.

    with OtlpReceiver() as rx:          rx.url → give it as INTERLOCK_OTLP_ENDPOINT
        ...                             POST {rx.url}/v1/traces ─▶ ExportTraceServiceRequest
        spans = rx.wait_spans(5)        resource → scope → span, flattened to ReceivedSpan
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue


def value(v: AnyValue) -> Any:
    """An OTLP AnyValue as the Python value it carries."""
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return attributes(v.kvlist_value.values)
    return getattr(v, kind) if kind else None


def attributes(kvs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in kvs:
        assert isinstance(kv, KeyValue)
        out[kv.key] = value(kv.value)
    return out


@dataclass
class ReceivedSpan:
    """One span as it arrived: ids as hex, attributes decoded, with its resource and scope."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    start_ns: int
    end_ns: int
    status_code: int
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    links: list[tuple[str, str, dict[str, Any]]]  # (trace id, span id, attributes)
    resource: dict[str, Any] = field(default_factory=dict)
    scope: str = ""


def flatten(request: ExportTraceServiceRequest) -> list[ReceivedSpan]:
    out = []
    for rs in request.resource_spans:
        resource = attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append(ReceivedSpan(
                    s.name, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(), s.kind,
                    s.start_time_unix_nano, s.end_time_unix_nano, s.status.code, attributes(s.attributes),
                    [(e.name, attributes(e.attributes)) for e in s.events],
                    [(ln.trace_id.hex(), ln.span_id.hex(), attributes(ln.attributes)) for ln in s.links],
                    resource, ss.scope.name,
                ))
    return out


class OtlpReceiver:
    """An http.server in a thread on 127.0.0.1:<free port>; `requests` holds decoded exports."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.other_paths: list[str] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver._receive(self.path, _decoded(body, self.headers.get("Content-Encoding")))
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def _receive(self, path: str, body: bytes) -> None:
        with self._lock:
            if path != "/v1/traces":
                self.other_paths.append(path)
                return
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            self.requests.append(request)

    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return [s for r in self.requests for s in flatten(r)]

    def wait_spans(self, n: int, timeout: float = 15.0) -> list[ReceivedSpan]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            spans = self.spans()
            if len(spans) >= n:
                return spans
            time.sleep(0.05)
        raise AssertionError(f"expected {n} spans at the receiver, got {[s.name for s in self.spans()]}")

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _decoded(body: bytes, encoding: str | None) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    return body
