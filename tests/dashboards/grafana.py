"""What Grafana does to a query before its datasource runs it, for tests.

    template variables   $name ${name} ${name:fmt} [[name]]  → the selection, formatted per datasource:
                           SQL: "All" with a custom all value → that value verbatim; otherwise
                                quoted 'v' (joined with , ) when the variable is multi or has
                                "All", the raw value when it is neither
                           PromQL: custom all value verbatim; multi/All values regex-escaped,
                                several as (a|b); a plain variable's value with \\ and ' escaped
    built-ins            $__interval $__interval_ms $__rate_interval $__range $__range_s
    SQL macros (PostgreSQL datasource, after variables)
      $__time(c)              c AS "time"
      $__timeEpoch(c)         extract(epoch from c) AS "time"
      $__timeFilter(c)        c BETWEEN 'from' AND 'to'        (RFC 3339, UTC, nanosecond form)
      $__timeFrom() $__timeTo()  'from'  'to'
      $__timeGroup(c, i)      floor(extract(epoch from c)/S)*S (S = seconds of interval i)
      $__timeGroupAlias(c, i) the same AS "time"
      $__unixEpochFilter(c)   c >= F AND c <= T                (epoch seconds)
      $__unixEpochFrom() $__unixEpochTo()
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

ALL = "$__all"
_VAR = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^}]+))?(?::([^}]+))?\}")
_MACRO = re.compile(r"\$__(\w+)\(([^()]*)\)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_PROM_SPECIAL = set("$^*{}[]'+?.()|")


@dataclass(frozen=True)
class Context:
    """A time range, the interval Grafana picked, and each variable's selection (ALL or values)."""

    start: datetime
    end: datetime
    interval: str = "1m"
    rate_interval: str = "15s"
    selection: Mapping[str, str | Sequence[str]] = field(default_factory=dict)

    @property
    def range_s(self) -> int:
        return int((self.end - self.start).total_seconds())


def seconds(interval: str) -> float:
    """Grafana's interval syntax (`30s`, `1m`, `1h`, `500ms`, `1d`...) in seconds."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)", interval.strip())
    if m is None:
        raise ValueError(f"not a Grafana interval: {interval!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def rfc3339nano(t: datetime) -> str:
    """Go's time.RFC3339Nano for a UTC time: fraction without trailing zeros, `Z`."""
    t = t.astimezone(UTC)
    frac = f"{t.microsecond:06d}".rstrip("0")
    return t.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "") + "Z"


def go_float(x: float) -> str:
    """Go's %v for a positive float64: shortest digits, %e form when the exponent is < -4 or >= 6."""
    digits_t = Decimal(repr(x)).normalize().as_tuple()
    digits = "".join(map(str, digits_t.digits))
    exp = len(digits) + int(digits_t.exponent) - 1
    if exp < -4 or exp >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{mantissa}e{'+' if exp >= 0 else '-'}{abs(exp):02d}"
    return format(Decimal(repr(x)).normalize(), "f")


# ---------------------------------------------------------------- variables


def interpolate(text: str, ctx: Context, variables: Sequence[Mapping[str, Any]], dialect: str) -> str:
    """Replace built-ins and template variables as Grafana's frontend does for `dialect`
    ("sql" or "prometheus").  Unknown names are left alone, as Grafana leaves them."""
    defs = {v["name"]: v for v in variables}

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(4)
        builtin = _builtin(name, ctx)
        if builtin is not None:
            return builtin
        if name not in defs or name not in ctx.selection:
            return m.group(0)
        return _format(defs[name], ctx.selection[name], dialect)

    return _VAR.sub(repl, text)


def _builtin(name: str, ctx: Context) -> str | None:
    values = {
        "__interval": ctx.interval,
        "__interval_ms": str(int(seconds(ctx.interval) * 1000)),
        "__rate_interval": ctx.rate_interval,
        "__range": f"{ctx.range_s}s",
        "__range_s": str(ctx.range_s),
        "__range_ms": str(ctx.range_s * 1000),
    }
    return values.get(name)


def _format(var: Mapping[str, Any], chosen: str | Sequence[str], dialect: str) -> str:
    if chosen == ALL or (not isinstance(chosen, str) and list(chosen) == [ALL]):
        if var.get("allValue"):
            return str(var["allValue"])
        raise ValueError(f"variable {var['name']}: All without a custom all value is not modelled here")
    values = [chosen] if isinstance(chosen, str) else list(chosen)
    listed = bool(var.get("multi") or var.get("includeAll"))
    if dialect == "sql":
        return ",".join(_quote(v) for v in values) if listed else ",".join(values)
    if not listed:
        return ",".join(v.replace("\\", "\\\\").replace("'", "\\\\'") for v in values)
    escaped = [_prom_regex_escape(v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _prom_regex_escape(value: str) -> str:
    out = []
    for ch in value:
        if ch == "\\":
            out.append("\\\\\\\\")
        elif ch in _PROM_SPECIAL:
            out.append("\\\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


# ---------------------------------------------------------------- SQL macros


def expand_macros(sql: str, ctx: Context) -> str:
    """Grafana's PostgreSQL macros, as its backend expands them."""

    def repl(m: re.Match[str]) -> str:
        args = [a.strip() for a in m.group(2).split(",")] if m.group(2).strip() else []
        return _macro(m.group(1), args, ctx)

    return _MACRO.sub(repl, sql)


def _macro(name: str, args: list[str], ctx: Context) -> str:
    start, end = rfc3339nano(ctx.start), rfc3339nano(ctx.end)
    simple = {
        "timeFrom": f"'{start}'",
        "timeTo": f"'{end}'",
        "unixEpochFrom": str(int(ctx.start.timestamp())),
        "unixEpochTo": str(int(ctx.end.timestamp())),
    }
    if name in simple:
        return simple[name]
    if not args:
        raise ValueError(f"macro $__{name} needs a column argument")
    col = args[0]
    if name == "time":
        return f'{col} AS "time"'
    if name == "timeEpoch":
        return f'extract(epoch from {col}) AS "time"'
    if name == "timeFilter":
        return f"{col} BETWEEN '{start}' AND '{end}'"
    if name == "unixEpochFilter":
        return f"{col} >= {int(ctx.start.timestamp())} AND {col} <= {int(ctx.end.timestamp())}"
    if name in ("timeGroup", "timeGroupAlias"):
        if len(args) < 2:
            raise ValueError(f"macro $__{name} needs a time column and an interval")
        s = go_float(seconds(args[1].strip("'")))
        group = f"floor(extract(epoch from {col})/{s})*{s}"
        return group + ' AS "time"' if name == "timeGroupAlias" else group
    raise ValueError(f"undefined macro: $__{name}")


def render_sql(sql: str, ctx: Context, variables: Sequence[Mapping[str, Any]]) -> str:
    """The SQL PostgreSQL receives for a panel's rawSql; fails on anything left unexpanded."""
    out = expand_macros(interpolate(sql, ctx, variables, "sql"), ctx)
    leftover = re.search(r"\$\{?\w+|\[\[\w+", out)
    if leftover:
        raise ValueError(f"unexpanded {leftover.group(0)!r} in: {out}")
    return out


def render_promql(expr: str, ctx: Context, variables: Sequence[Mapping[str, Any]]) -> str:
    """The PromQL Prometheus receives for a panel's expr; fails on anything left unexpanded."""
    out = interpolate(expr, ctx, variables, "prometheus")
    leftover = re.search(r"\$\{?\w+|\[\[\w+", out)
    if leftover:
        raise ValueError(f"unexpanded {leftover.group(0)!r} in: {out}")
    return out
