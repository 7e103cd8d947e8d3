"""Route an incoming path to a provider adapter and an upstream.

Every provider module declares what it claims (`ProviderSpec`: path patterns, prefixes, marker
headers; proxy/providers/base.py); the registry finds them.  A path is matched, in order, against
the exact paths, then the patterns with parameters (`/v1beta/models/{model}:generateContent`), then
the prefixes (anything else under `/v1/`, `/openai/`...: forwarded as-is, refused in that shape).
Where several providers claim one path (`/v1/models` is OpenAI's and Anthropic's), the one whose
marker header is present wins (`anthropic-version`), then the longer pattern, then `order`.
Named upstreams of the same provider claim models by glob.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from fnmatch import fnmatchcase

from proxy.providers.base import Endpoint, Provider, ProviderSpec
from proxy.providers.registry import Registry
from proxy.settings import SettingsError, UpstreamSpec


@dataclass(frozen=True, slots=True)
class Route:
    provider: Provider
    operation: str  # chat | responses | messages | generate_content | count_tokens | embeddings | models | other
    json_body: bool  # the body must be JSON (refused with a native 400 otherwise)
    spec: ProviderSpec
    model: str | None = None  # named by the path (`{model}`, `{deployment}`), not the body
    stream: bool = False  # the path asks for a stream


_MODEL_PARAMS = ("model", "deployment", "modelId")


class Router:
    """Built once per app; `route()` runs on the request path: a dict lookup for the known paths."""

    def __init__(self, upstreams: dict[str, UpstreamSpec], registry: Registry | None = None) -> None:
        self.registry = registry or Registry()
        known = self.registry.by_name
        for name, up in upstreams.items():
            if up.provider not in known:
                raise SettingsError(f"setting upstreams.{name}.provider has value {up.provider!r}: "
                                    f"not a provider Interlock knows ({', '.join(known)})")
        upstreams = dict(upstreams)
        for spec in self.registry.specs:  # a provider not configured goes to its default upstream, if any
            if spec.name not in upstreams and spec.default_upstream is not None:
                upstreams[spec.name] = UpstreamSpec(url=spec.default_upstream, provider=spec.name)
        self.upstreams = upstreams
        self._exact: dict[str, list[tuple[int, Route]]] = {}
        self._patterns: list[tuple[re.Pattern[str], int, Endpoint, ProviderSpec]] = []
        for spec in self.registry.specs:
            for ep in spec.endpoints:
                if ep.params:
                    self._patterns.append((ep.regex(), len(ep.pattern), ep, spec))
                else:
                    route = Route(ep.adapter, ep.operation, ep.json_body, spec, None, ep.stream)
                    self._exact.setdefault(ep.pattern, []).append((len(ep.pattern), route))
        self._prefixes = sorted(((p, s) for s in self.registry.specs for p in s.prefixes), key=lambda x: -len(x[0]))
        self._globs = [(name, up) for name, up in upstreams.items() if up.models]
        self.markers = self.registry.marker_headers()
        self.key_headers = self.registry.key_headers()
        self.prefixes = self.registry.prefixes()

    def route(self, path: str, markers: Collection[bytes] = ()) -> Route:
        """The route for a decoded path; `markers`: the marker headers the request carries."""
        exact = self._exact.get(path)
        if exact is not None and len(exact) == 1:
            return exact[0][1]
        found: list[tuple[int, Route]] = list(exact or ())
        for regex, size, ep, spec in self._patterns:
            m = regex.match(path)
            if m is not None:
                params = m.groupdict()
                model = next((params[p] for p in _MODEL_PARAMS if p in params), None)
                found.append((size, Route(ep.adapter, ep.operation, ep.json_body, spec, model, ep.stream)))
        if found:
            return min(found, key=lambda f: (not _marked(f[1].spec, markers), -f[0], f[1].spec.order))[1]
        spec = self.spec_for(path, markers)
        return Route(spec.generic, "other", False, spec)

    def spec_for(self, path: str, markers: Collection[bytes] = ()) -> ProviderSpec:
        """The provider whose prefix the path has (the marked one among equals), else the first."""
        best: ProviderSpec | None = None
        best_len = -1
        for prefix, spec in self._prefixes:
            if len(prefix) < best_len:
                break
            if path.startswith(prefix):
                if best is None or (_marked(spec, markers) and not _marked(best, markers)):
                    best, best_len = spec, len(prefix)
                elif spec.order < best.order and _marked(spec, markers) == _marked(best, markers):
                    best = spec
        return best or self.registry.specs[0]

    def generic(self, path: str, markers: Collection[bytes] = ()) -> Provider:
        """The adapter for a request no route claims (its errors take that provider's shape)."""
        return self.spec_for(path, markers).generic

    def relays(self, path: str) -> bool:
        """True when some provider claims paths like this one (the app hands it to the relay)."""
        return path.startswith(self.prefixes)

    def upstream_for(self, spec: ProviderSpec, model: str | None) -> tuple[str, UpstreamSpec | None]:
        """Named upstream of this provider whose model globs match, else the provider's own (None:
        the provider has no default and INTERLOCK_UPSTREAM_<NAME> is not set)."""
        if model:
            for name, up in self._globs:
                if up.provider == spec.name and any(fnmatchcase(model, g) for g in up.models):
                    return name, up
        return spec.name, self.upstreams.get(spec.name)


def _marked(spec: ProviderSpec, markers: Collection[bytes]) -> bool:
    return any(h in markers for h in spec.marker_headers)


__all__ = ["Route", "Router", "Registry"]
