"""The web console: static files served at /ui behind the admin API's auth.

    GET /ui                  index.html (a single page; views are #/runs, #/runs/{id}, #/calls/{id}, #/guards;
                             `/ui/` is the same path: the app folds trailing slashes, proxy/paths.py)
    GET /ui/static/{file}    the page's modules, styles and vendor/ (cytoscape, committed; see vendor.sh)

The page reads everything from /api with the browser's credentials: on loopback without a
token nothing is asked; with INTERLOCK_ADMIN_TOKEN set, a 401 here challenges with HTTP Basic,
so the browser prompts once (any user name, the token as password) and sends the same
credentials to /api.  Files are read from the installed package: no build step, nothing fetched.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, Response

STATIC = Path(__file__).parent / "static"
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".svg": "image/svg+xml", ".png": "image/png", ".txt": "text/plain; charset=utf-8"}
_HEADERS = {"cache-control": "no-cache", "x-content-type-options": "nosniff",
            "content-security-policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                                       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"}


def ui_router(guard: Callable[[Request], None]) -> APIRouter:
    """Routes of the console; `guard` is the admin API's auth check (raises 401/403)."""
    router = APIRouter(include_in_schema=False)

    def authorised(request: Request) -> None:
        try:
            guard(request)
        except HTTPException as exc:
            if exc.status_code == 401:  # ask the browser to prompt: Bearer has no prompt
                raise HTTPException(401, exc.detail, headers={"WWW-Authenticate": 'Basic realm="Interlock"'}) from None
            raise

    @router.get("/ui")
    async def ui_index(request: Request) -> Response:
        authorised(request)
        return _file(STATIC / "index.html")

    @router.get("/ui/static/{name:path}")
    async def ui_static(name: str, request: Request) -> Response:
        authorised(request)
        found = _resolve(name)
        if found is None:
            raise HTTPException(404, f"no console file {name!r}")
        return _file(found)

    return router


def _resolve(name: str) -> Path | None:
    """The file under static/ that `name` names; None for anything outside it or unknown types."""
    path = (STATIC / name).resolve()
    if not path.is_relative_to(STATIC.resolve()) or not path.is_file() or path.suffix not in _TYPES:
        return None
    return path


def _file(path: Path) -> Response:
    return FileResponse(path, media_type=_TYPES[path.suffix], headers=_HEADERS)
