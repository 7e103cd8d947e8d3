"""The provider registry: every module in `proxy/providers/` that declares a `PROVIDER`.

Adding a provider is adding one module here (its `ProviderSpec`); nothing else names providers.
Discovery imports the package's modules once, when the app is built (not on the request path).
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from types import MappingProxyType

from proxy.providers.base import ProviderSpec

_NOT_PROVIDERS = frozenset({"base", "registry"})


def discover() -> tuple[ProviderSpec, ...]:
    """All provider specs, in `order` then name; two specs with one name are refused."""
    package = __name__.rpartition(".")[0]  # proxy.providers, without importing it from here (no circle)
    found: dict[str, ProviderSpec] = {}
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name.startswith("_") or info.name in _NOT_PROVIDERS:
            continue
        spec = getattr(importlib.import_module(f"{package}.{info.name}"), "PROVIDER", None)
        if not isinstance(spec, ProviderSpec):
            continue
        if spec.name in found:
            raise ValueError(f"proxy/providers/{info.name}.py: provider name {spec.name!r} is already declared")
        found[spec.name] = spec
    return tuple(sorted(found.values(), key=lambda s: (s.order, s.name)))


class Registry:
    """The discovered providers, looked up by upstream name or by `gen_ai.provider.name`."""

    def __init__(self, specs: tuple[ProviderSpec, ...] | None = None) -> None:
        self.specs = specs if specs is not None else discover()
        self.by_name = MappingProxyType({s.name: s for s in self.specs})
        self.by_system = MappingProxyType({s.system: s for s in self.specs})

    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    def default_upstreams(self) -> dict[str, str]:
        """{provider name: default upstream origin}, for Settings.all_upstreams."""
        return {s.name: s.default_upstream for s in self.specs if s.default_upstream is not None}

    def prefixes(self) -> tuple[str, ...]:
        """Path prefixes any provider claims: what the app hands to the relay."""
        return tuple(sorted({p for s in self.specs for p in s.prefixes}))

    def key_headers(self) -> frozenset[bytes]:
        return frozenset(h for s in self.specs for h in s.key_headers)

    def marker_headers(self) -> frozenset[bytes]:
        return frozenset(h for s in self.specs for h in s.marker_headers)
