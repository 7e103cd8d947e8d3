"""`interlock dashboards push`: datasources, a folder and the dashboards, through Grafana's HTTP API.

    GET  /api/health                       version, no auth needed; Grafana 10.3 or newer
    GET  /api/datasources/uid/{uid}        found → PUT /api/datasources/uid/{uid}
    GET  /api/datasources/name/{name}      found → PUT /api/datasources/uid/{its uid}
                                           neither → POST /api/datasources
    GET  /api/folders                      same uid or title → reuse; else POST /api/folders
    POST /api/dashboards/db                {dashboard, folderUid, overwrite: true} per dashboard

Every step is an upsert, so pushing twice changes nothing.  A datasource found under another
UID (created by hand) is updated in place and the dashboards' datasource variables default to
its UID.  Errors name the step, the HTTP status and what to do (PushError).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote, unquote, urlsplit

from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException, GrafanaUnauthorizedError

from proxy.dashboards.build import all_dashboards
from proxy.dashboards.model import INTERLOCK_DB, PROMETHEUS, Datasource, Json
from proxy.redact import mask_url

MIN_VERSION = (10, 3, 0)  # the PostgreSQL plugin id `grafana-postgresql-datasource` dates from 10.2.3
T = TypeVar("T")


class PushError(Exception):
    """A push step failed; the message says which, why and what to do."""


@dataclass(frozen=True)
class PushOptions:
    grafana_url: str
    token: str
    folder: str = "Interlock"
    db_url: str | None = None
    prometheus_url: str | None = None
    timeout: float = 10.0


@dataclass(frozen=True)
class Placed:
    """Where a datasource ended up in Grafana and what push did to it."""

    uid: str
    name: str
    action: str  # "created" | "updated"


def prometheus_datasource(url: str) -> Json:
    """Datasource payload for Prometheus at `url` (as Grafana's server reaches it)."""
    return {"uid": PROMETHEUS.uid, "name": PROMETHEUS.name, "type": PROMETHEUS.type, "access": "proxy",
            "url": url.rstrip("/"), "isDefault": False, "jsonData": {"httpMethod": "POST", "timeInterval": "15s"}}


def postgres_datasource(db_url: str) -> Json:
    """Datasource payload for the Interlock database (`postgresql://user:pw@host:port/db`)."""
    parts = urlsplit(db_url)
    if not parts.scheme.startswith("postgres"):
        raise PushError(f"--db-url {mask_url(db_url)}: the SQL dashboards need PostgreSQL "
                        "(postgresql://user:password@host:5432/db), not " + (parts.scheme or "a bare name"))
    database = parts.path.lstrip("/")
    if not parts.hostname or not database:
        raise PushError(f"--db-url {mask_url(db_url)}: expected postgresql://user:password@host:5432/db")
    sslmode = parse_qs(parts.query).get("sslmode", ["disable"])[0]
    payload: Json = {"uid": INTERLOCK_DB.uid, "name": INTERLOCK_DB.name, "type": INTERLOCK_DB.type,
                     "access": "proxy", "url": f"{parts.hostname}:{parts.port or 5432}",
                     "user": unquote(parts.username or ""), "database": database, "isDefault": False,
                     "jsonData": {"database": database, "sslmode": sslmode, "postgresVersion": 1500,
                                  "timescaledb": False, "maxOpenConns": 10}}
    if parts.password:
        payload["secureJsonData"] = {"password": unquote(parts.password)}
    return payload


def push(options: PushOptions, say: Callable[[str], None] = print) -> None:
    """Create or update datasources, the folder and every dashboard; raises PushError."""
    api = GrafanaApi.from_url(_api_base(options.grafana_url), credential=options.token, timeout=options.timeout)
    step = _Steps(api, options.grafana_url)
    version = step.version()
    say(f"Grafana {version} at {mask_url(options.grafana_url)}")
    placed = {}
    for ds, payload in _datasources(options):
        placed[ds.variable] = where = step.datasource(payload)
        say(f"datasource {where.name!r} ({where.uid}): {where.action}")
    folder_uid = step.folder(options.folder)
    say(f"folder {options.folder!r} ({folder_uid})")
    for dashboard in all_dashboards():
        body = _pointed(dashboard.to_json(), placed)
        step.dashboard(body, folder_uid)
        say(f"dashboard {body['title']!r} ({body['uid']}): saved")


def _datasources(options: PushOptions) -> list[tuple[Datasource, Json]]:
    out = []
    if options.prometheus_url:
        out.append((PROMETHEUS, prometheus_datasource(options.prometheus_url)))
    if options.db_url:
        out.append((INTERLOCK_DB, postgres_datasource(options.db_url)))
    return out


def _pointed(dashboard: Json, placed: dict[str, Placed]) -> Json:
    """The dashboard with its datasource variables defaulting to the datasources push placed."""
    for var in dashboard["templating"]["list"]:
        where = placed.get(var["name"]) if var["type"] == "datasource" else None
        if where is not None:
            var["current"] = {"selected": False, "text": where.name, "value": where.uid}
    dashboard["id"] = None
    return dashboard


class _Steps:
    """The API calls of a push, each turned into a PushError that names it when it fails."""

    def __init__(self, api: GrafanaApi, url: str) -> None:
        self.api = api
        self.url = url

    def version(self) -> str:
        health = self._do("read the version (GET /api/health)", self.api.client.GET, "/health")
        version = str(health.get("version", "")) if isinstance(health, dict) else ""
        found = re.match(r"(\d+)\.(\d+)\.(\d+)", version)
        if found is None:
            raise PushError(f"Grafana at {mask_url(self.url)} did not report a version (GET /api/health answered "
                            f"{health!r}); is this a Grafana server?")
        if tuple(int(g) for g in found.groups()) < MIN_VERSION:
            raise PushError(f"Grafana {version} at {mask_url(self.url)} is too old: Interlock's dashboards need Grafana "
                            f"{'.'.join(map(str, MIN_VERSION))} or newer. Upgrade Grafana.")
        return version

    def datasource(self, payload: Json) -> Placed:
        uid, name = payload["uid"], payload["name"]
        found = self._find(f"look up datasource {uid!r}", f"/datasources/uid/{quote(uid, safe='')}")
        if found is None:
            found = self._find(f"look up datasource {name!r}", f"/datasources/name/{quote(name, safe='')}")
        if found is None:
            self._do(f"create datasource {name!r}", self.api.datasource.create_datasource, payload)
            return Placed(uid, name, "created")
        have = str(found.get("uid") or uid)
        self._do(f"update datasource {name!r}", self.api.datasource.update_datasource_by_uid, have,
                 {**payload, "uid": have})
        return Placed(have, name, "updated")

    def folder(self, title: str) -> str:
        uid = _slug(title)
        folders = self._do("list folders (GET /api/folders)", self.api.folder.get_all_folders) or []
        for f in folders:
            if f.get("uid") == uid or f.get("title") == title:
                return str(f["uid"])
        self._do(f"create folder {title!r}", self.api.folder.create_folder, title, uid)
        return uid

    def dashboard(self, body: Json, folder_uid: str) -> None:
        payload = {"dashboard": body, "folderUid": folder_uid, "overwrite": True,
                   "message": "interlock dashboards push"}
        self._do(f"save dashboard {body['title']!r}", self.api.dashboard.update_dashboard, payload)

    def _find(self, what: str, path: str) -> Any:
        try:
            return self.api.client.GET(path)
        except GrafanaClientError as exc:
            if exc.status_code == 404:
                return None
            raise self._error(what, exc) from exc
        except Exception as exc:
            raise self._error(what, exc) from exc

    def _do(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        except Exception as exc:
            raise self._error(what, exc) from exc

    def _error(self, what: str, exc: Exception) -> PushError:
        if isinstance(exc, GrafanaUnauthorizedError) or getattr(exc, "status_code", None) == 401:
            return PushError(f"Grafana at {mask_url(self.url)} rejected the token (HTTP 401) while trying to {what}: "
                             "pass a valid service-account token with --token (Administration → Users and "
                             "access → Service accounts).")
        if getattr(exc, "status_code", None) == 403:
            return PushError(f"Grafana at {mask_url(self.url)} refused to {what} (HTTP 403: {_message(exc)}): the token "
                             "lacks permission; give its service account the Admin role (datasources need it). "
                             "A provisioned (read-only) datasource is changed in its provisioning file instead.")
        if isinstance(exc, GrafanaException) and exc.status_code:
            return PushError(f"Grafana at {mask_url(self.url)} failed to {what}: HTTP {exc.status_code}: {exc.message}")
        return PushError(f"cannot {what}: Grafana at {mask_url(self.url)} is unreachable or answered oddly ({exc}).")


def _message(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and response.get("message"):
        return str(response["message"])
    return "forbidden"


def _api_base(url: str) -> str:
    """grafana-client appends `api` to the URL's path: keep a sub-path ending in one slash."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    return parts._replace(path=f"{path}/" if path else "").geturl()


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", title.lower()).strip("-")[:40] or "interlock"


