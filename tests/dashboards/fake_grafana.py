"""A recorded-contract Grafana HTTP API for `interlock dashboards push` tests.

Real HTTP on 127.0.0.1 (http.server in a thread), with the state and answers of Grafana 10/11
for the calls push makes, and a log of every request (method, path, query, JSON body, auth):

    GET  /api/health                     no auth; {"commit", "database", "version"}
    GET  /api/datasources/uid/{uid}      200 datasource | 404 {"message": "Data source not found"}
    GET  /api/datasources/name/{name}    the same, by name
    POST /api/datasources                409 on a taken name or uid; {"datasource", "id", "message", "name"}
    PUT  /api/datasources/uid/{uid}      404 when missing; {"datasource", "id", "message", "name"}
    GET  /api/folders                    [{"id", "uid", "title"}]
    POST /api/folders                    409 on a taken uid or title; the folder
    POST /api/dashboards/db              400 without a dashboard uid/title or with an unknown folderUid,
                                         412 when the uid exists and overwrite is not true,
                                         404 when dashboard.id names no dashboard; {"id", "uid", "url",
                                         "status", "version", "slug"}

Anything else is a 404, so an unexpected call fails the test.  Every call but /api/health needs
`Authorization: Bearer <token>` (401 {"message": "invalid API key"} otherwise); paths listed in
`forbidden` answer 403.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

Json = dict[str, Any]


@dataclass(frozen=True)
class Exchange:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    auth: str | None
    status: int


@dataclass
class GrafanaState:
    version: str = "11.6.0"
    token: str = "glsa_test_token"
    prefix: str = ""
    datasources: dict[str, Json] = field(default_factory=dict)  # uid → datasource
    folders: dict[str, Json] = field(default_factory=dict)  # uid → folder
    dashboards: dict[str, Json] = field(default_factory=dict)  # uid → {"dashboard", "folderUid", "version"}
    forbidden: set[str] = field(default_factory=set)  # "METHOD /api/path" answering 403
    log: list[Exchange] = field(default_factory=list)
    next_id: int = 1

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id


class FakeGrafana:
    """`with FakeGrafana() as g:` — g.url, g.state (datasources, folders, dashboards, log)."""

    def __init__(self, state: GrafanaState | None = None) -> None:
        self.state = state or GrafanaState()
        self.lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"grafana": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{self.state.prefix}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)

    def __enter__(self) -> FakeGrafana:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def calls(self) -> list[tuple[str, str]]:
        return [(e.method, e.path) for e in self.state.log]

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: Any,
               headers: dict[str, str]) -> tuple[int, Any]:
        with self.lock:
            status, answer = self._route(method, path, body, headers)
            self.state.log.append(Exchange(method, path, query, body, headers.get("authorization"), status))
            return status, answer

    def _route(self, method: str, path: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
        s = self.state
        if not path.startswith(s.prefix + "/api/"):
            return 404, {"message": "Not found"}
        api = path[len(s.prefix) + len("/api"):]
        if method == "GET" and api == "/health":
            return 200, {"commit": "abc1234", "database": "ok", "version": s.version}
        if headers.get("authorization") != f"Bearer {s.token}":
            return 401, {"message": "invalid API key", "traceID": ""}
        if f"{method} /api{api}" in s.forbidden:
            return 403, {"message": "You'll need additional permissions to perform this action."}
        if method in ("POST", "PUT") and not headers.get("content-type", "").startswith("application/json"):
            return 415, {"message": "Unsupported Media Type"}
        return _ROUTES.dispatch(self.state, method, api, body)


class _Handler(BaseHTTPRequestHandler):
    grafana: FakeGrafana

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, answer = self.grafana.handle(self.command, unquote(parts.path), parse_qs(parts.query), body, headers)
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Routes:
    """Method + path pattern → handler(state, body, *groups)."""

    def __init__(self) -> None:
        self.routes: list[tuple[str, re.Pattern[str], Any]] = []

    def add(self, method: str, pattern: str) -> Any:
        def register(fn: Any) -> Any:
            self.routes.append((method, re.compile(pattern + "$"), fn))
            return fn

        return register

    def dispatch(self, state: GrafanaState, method: str, api: str, body: Any) -> tuple[int, Any]:
        for m, pattern, fn in self.routes:
            found = pattern.match(api)
            if m == method and found:
                return fn(state, body, *found.groups())  # type: ignore[no-any-return]
        return 404, {"message": "Not found"}


_ROUTES = _Routes()
NOT_FOUND = (404, {"message": "Data source not found"})


@_ROUTES.add("GET", r"/datasources/uid/([^/]+)")
def _ds_by_uid(s: GrafanaState, _: Any, uid: str) -> tuple[int, Any]:
    return (200, s.datasources[uid]) if uid in s.datasources else NOT_FOUND


@_ROUTES.add("GET", r"/datasources/name/(.+)")
def _ds_by_name(s: GrafanaState, _: Any, name: str) -> tuple[int, Any]:
    found = [d for d in s.datasources.values() if d["name"] == name]
    return (200, found[0]) if found else NOT_FOUND


def _ds_invalid(body: Any) -> str | None:
    if not isinstance(body, dict) or not body.get("name") or not body.get("type"):
        return "Required name and type"
    if body.get("access") not in ("proxy", "direct"):
        return "access must be proxy or direct"
    return None


@_ROUTES.add("POST", r"/datasources")
def _ds_create(s: GrafanaState, body: Any) -> tuple[int, Any]:
    if (problem := _ds_invalid(body)) is not None:
        return 400, {"message": problem}
    if any(d["name"] == body["name"] for d in s.datasources.values()) or body.get("uid") in s.datasources:
        return 409, {"message": "data source with the same name already exists"}
    ds = _stored_ds(body, s.new_id(), body.get("uid") or f"gen{s.next_id}")
    s.datasources[ds["uid"]] = ds
    return 200, {"datasource": ds, "id": ds["id"], "message": "Datasource added", "name": ds["name"]}


@_ROUTES.add("PUT", r"/datasources/uid/([^/]+)")
def _ds_update(s: GrafanaState, body: Any, uid: str) -> tuple[int, Any]:
    if uid not in s.datasources:
        return NOT_FOUND
    if (problem := _ds_invalid(body)) is not None:
        return 400, {"message": problem}
    ds = _stored_ds(body, s.datasources[uid]["id"], uid)
    s.datasources[uid] = ds
    return 200, {"datasource": ds, "id": ds["id"], "message": "Datasource updated", "name": ds["name"]}


def _stored_ds(body: Json, ds_id: int, uid: str) -> Json:
    stored = {k: v for k, v in body.items() if k != "secureJsonData"}
    fields = {k: True for k in body.get("secureJsonData") or {}}
    return {**stored, "id": ds_id, "uid": uid, "secureJsonFields": fields, "readOnly": False}


@_ROUTES.add("GET", r"/folders")
def _folders(s: GrafanaState, _: Any) -> tuple[int, Any]:
    return 200, [{"id": f["id"], "uid": f["uid"], "title": f["title"]} for f in s.folders.values()]


@_ROUTES.add("POST", r"/folders")
def _folder_create(s: GrafanaState, body: Any) -> tuple[int, Any]:
    if not isinstance(body, dict) or not body.get("title"):
        return 400, {"message": "folder title cannot be empty"}
    if body.get("uid") in s.folders or any(f["title"] == body["title"] for f in s.folders.values()):
        return 409, {"message": "a folder with the same name already exists"}
    folder = {"id": s.new_id(), "uid": body.get("uid") or f"f{s.next_id}", "title": body["title"], "version": 1}
    s.folders[folder["uid"]] = folder
    return 200, folder


@_ROUTES.add("POST", r"/dashboards/db")
def _dashboard_save(s: GrafanaState, body: Any) -> tuple[int, Any]:
    dash = body.get("dashboard") if isinstance(body, dict) else None
    if not isinstance(dash, dict) or not dash.get("uid") or not dash.get("title"):
        return 400, {"message": "Dashboard title cannot be empty"}
    if body.get("folderUid") not in s.folders:
        return 400, {"message": "folder not found"}
    existing = s.dashboards.get(dash["uid"])
    if dash.get("id") is not None and (existing is None or existing["id"] != dash["id"]):
        return 404, {"message": "Dashboard not found"}
    if existing is not None and body.get("overwrite") is not True:
        return 412, {"message": "A dashboard with the same uid already exists", "status": "name-exists"}
    version = existing["version"] + 1 if existing else 1
    ds_id = existing["id"] if existing else s.new_id()
    s.dashboards[dash["uid"]] = {"dashboard": dash, "folderUid": body["folderUid"], "version": version, "id": ds_id}
    return 200, {"id": ds_id, "uid": dash["uid"], "url": f"/d/{dash['uid']}/x", "status": "success",
                 "version": version, "slug": "x"}
