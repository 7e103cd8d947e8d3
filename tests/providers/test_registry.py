"""The provider registry and the router built on it (proxy/providers/registry.py, __init__.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from proxy.providers import Router
from proxy.providers.registry import Registry
from proxy.settings import SettingsError, UpstreamSpec, load_settings

README = Path(__file__).parents[2] / "README.md"


@pytest.fixture(scope="module")
def router() -> Router:
    return Router(load_settings().all_upstreams())


def test_every_provider_module_is_discovered_once() -> None:
    specs = Registry().specs
    names = [s.name for s in specs]
    assert len(names) == len(set(names))
    assert {"openai", "anthropic", "gemini", "azure"} <= set(names)
    modules = {p.stem for p in (Path(__file__).parents[2] / "proxy" / "providers").glob("*.py")} - {
        "__init__", "base", "registry"}
    assert set(names) == modules, "a provider module without a PROVIDER (or a spec named unlike its module)"


def test_the_readme_table_has_a_row_per_provider_with_its_setting_and_semconv_name() -> None:
    table = README.read_text().split("<!-- providers-table -->", 1)[1].split("\n\n", 1)[0]
    for spec in Registry().specs:
        row = next((line for line in table.splitlines() if f"(`{spec.system}`)" in line), None)
        assert row is not None, f"README providers table has no row for {spec.name}"
        assert f"INTERLOCK_UPSTREAM_{spec.name.upper()}" in row
        assert spec.default_upstream is None or spec.default_upstream in row


@pytest.mark.parametrize(("path", "markers", "provider", "operation", "model", "stream"), [
    ("/v1/chat/completions", (), "openai", "chat", None, False),
    ("/v1/messages", (), "anthropic", "messages", None, False),
    ("/v1/models", (), "openai", "models", None, False),
    ("/v1/models", (b"anthropic-version",), "anthropic", "models", None, False),
    ("/v1/files", (b"x-api-key",), "anthropic", "other", None, False),
    ("/v1/files", (), "openai", "other", None, False),
    ("/v1beta/models/gemini-2.0-flash:generateContent", (), "gemini", "chat", "gemini-2.0-flash", False),
    ("/v1/models/gemini-2.5-pro:streamGenerateContent", (), "gemini", "chat", "gemini-2.5-pro", True),
    ("/v1beta/models/gemini-2.0-flash:countTokens", (), "gemini", "count_tokens", "gemini-2.0-flash", False),
    ("/v1/models/gemini-2.0-flash", (b"x-goog-api-key",), "gemini", "models", "gemini-2.0-flash", False),
    ("/v1beta/cachedContents", (), "gemini", "other", None, False),
    ("/openai/deployments/prod-4o/chat/completions", (), "azure", "chat", "prod-4o", False),
    ("/openai/v1/responses", (), "azure", "responses", None, False),
    ("/openai/files", (), "azure", "other", None, False),
])
def test_paths_route_to_their_provider(router: Router, path: str, markers: tuple[bytes, ...], provider: str,
                                       operation: str, model: str | None, stream: bool) -> None:
    route = router.route(path, markers)
    assert (route.spec.name, route.operation, route.model, route.stream) == (provider, operation, model, stream)


def test_a_model_parameter_is_one_segment(router: Router) -> None:
    assert router.route("/v1beta/models/a/b:generateContent").operation == "other"
    assert not router.relays("/api/calls") and router.relays("/v1beta/models")


def test_an_upstream_of_an_unknown_provider_is_refused_naming_it() -> None:
    with pytest.raises(SettingsError, match=re.escape("upstreams.gpu.provider has value 'vertex'")):
        Router({**load_settings().all_upstreams(), "gpu": UpstreamSpec(url="http://gpu:1", provider="vertex")})


def test_model_globs_only_claim_their_own_providers_models() -> None:
    ups = {**load_settings().all_upstreams(), "local": UpstreamSpec(url="http://gpu:1", models=["*"])}
    router = Router(ups)
    registry = router.registry
    assert router.upstream_for(registry.by_name["openai"], "llama-3")[0] == "local"
    assert router.upstream_for(registry.by_name["gemini"], "gemini-2.0-flash")[0] == "gemini"
    assert router.upstream_for(registry.by_name["azure"], "prod")[1] is None  # no default: must be set
