"""Run and call ids as clients give them: the full id or any unique prefix (API handlers)."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException

import proxy.store.queries as queries


async def full_id(engine: Any, kind: str, given: str) -> str:
    """The id `given` names; 400 when the prefix is ambiguous, 404 when nothing matches."""
    found = await _resolve(engine, kind, given)
    if found is None:
        raise HTTPException(404, f"no {kind} with id {given!r} (or starting with it)")
    return found


async def filter_id(engine: Any, kind: str, given: str | None) -> str | None:
    """For a filter: the id a unique prefix names, else `given` as is (it then matches nothing)."""
    if given is None:
        return None
    return await _resolve(engine, kind, given) or given


async def _resolve(engine: Any, kind: str, given: str) -> str | None:
    try:
        return await queries.resolve_id(engine, kind, given)
    except queries.AmbiguousId as exc:
        raise HTTPException(400, str(exc)) from None
