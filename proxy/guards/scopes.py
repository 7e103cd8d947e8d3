"""Who a counter belongs to: the value of a rule's `scope` for a call, and how to say it."""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter

from proxy.call import Call
from proxy.guards.facts import digest

_MAX_VALUE = 200


def _bounded(value: str) -> str:
    return value if len(value) <= _MAX_VALUE else "#" + digest(value)


def scope_value(
    scope: str, call: Call, *, thread: str | None = None, missing: str | None = None
) -> str | None:
    """The call's value for `scope` (run, agent, agent_run, api_key, model, thread, global).
    A part the call lacks becomes `missing`; when `missing` is None such a call has no value."""
    if scope == "global":
        return "*"
    if scope == "thread":
        return _bounded(thread) if thread is not None else missing
    if scope == "agent_run":
        agent, run = call.agent or missing, call.run_id or missing
        return None if agent is None or run is None else _bounded(f"{agent}@{run}")
    value = {
        "run": call.run_id,
        "agent": call.agent,
        "api_key": call.api_key_hash,
        "model": call.model_requested,
    }[scope] or missing
    return None if value is None else _bounded(value)


def _run_of(call: Call) -> str:
    """A call the request path placed in no run is its run's first call: the graph names that
    run after it, so a budget counts the call there (and the rest of the run with it)."""
    return call.run_id or call.id


def scope_getter(scope: str) -> Callable[[Call], str | None]:
    """`scope_value` for one scope, resolved once (for hot paths); missing parts → None, except
    the run: a call in no run yet is its run's first call (`_run_of`)."""
    if scope == "run":
        return lambda call: _bounded(_run_of(call))
    if scope == "agent_run":
        return lambda call: None if call.agent is None else _bounded(f"{call.agent}@{_run_of(call)}")
    attr = {"agent": "agent", "api_key": "api_key_hash", "model": "model_requested"}.get(scope)
    if attr is None:
        return lambda call: scope_value(scope, call)
    get = attrgetter(attr)

    def value(call: Call) -> str | None:
        v = get(call)
        return v if not v or len(v) <= _MAX_VALUE else _bounded(v)

    return value


def describe_scope(scope: str, call: Call) -> str:
    """`run 'r1'`, `agent 'writer' in run 'r1'`, `all traffic`... for reason sentences."""
    if scope == "global":
        return "all traffic"
    if scope in ("run", "agent_run") and call.run_id is None:
        # counted under the run this call starts (`_run_of`), never in a shared '?' bucket
        run = f"the new run this call starts ('{call.id}')"
        return run if scope == "run" else f"agent '{call.agent or '?'}' in {run}"
    if scope == "agent_run":
        return f"agent '{call.agent or '?'}' in run '{call.run_id}'"
    if scope == "thread":
        return f"this conversation of agent '{call.agent or '?'}'"
    labels = {"run": "run", "agent": "agent", "api_key": "API key", "model": "model"}
    value = scope_value(scope, call, missing="?")
    return f"{labels[scope]} '{value}'"
