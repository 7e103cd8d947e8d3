"""Route an incoming path to a provider adapter and an upstream.

Anthropic is told apart from OpenAI by path (`/v1/messages*`) and, for other paths, by the
`anthropic-version` / `x-api-key` headers.  Named upstreams claim models by glob.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from proxy.providers.anthropic import AnthropicCountTokens, AnthropicGeneric, AnthropicMessages
from proxy.providers.base import Provider
from proxy.providers.openai import OpenAIChat, OpenAIGeneric, OpenAIResponses
from proxy.settings import UpstreamSpec


@dataclass(frozen=True, slots=True)
class Route:
    provider: Provider
    operation: str  # chat | responses | messages | count_tokens | embeddings | models | other
    json_body: bool  # the body must be JSON (refused with a native 400 otherwise)


class Router:
    """Built once per app; `route()` runs on the request path and only does dict lookups."""

    def __init__(self, upstreams: dict[str, UpstreamSpec]) -> None:
        self.upstreams = upstreams
        chat, responses = OpenAIChat(), OpenAIResponses()
        messages, count = AnthropicMessages(), AnthropicCountTokens()
        self._exact: dict[str, Route] = {
            "/v1/chat/completions": Route(chat, "chat", True),
            "/v1/responses": Route(responses, "responses", True),
            "/v1/messages": Route(messages, "messages", True),
            "/v1/messages/count_tokens": Route(count, "count_tokens", True),
        }
        self._openai_generic = OpenAIGeneric()
        self._anthropic_generic = AnthropicGeneric()
        self._globs = [(name, spec) for name, spec in upstreams.items() if spec.models]

    def route(self, path: str, anthropic_headers: bool) -> Route:
        exact = self._exact.get(path)
        if exact is not None:
            return exact
        op = "embeddings" if path == "/v1/embeddings" else "models" if path.startswith("/v1/models") else "other"
        return Route(self.generic(anthropic_headers), op, False)

    def generic(self, anthropic: bool) -> Provider:
        """The adapter for a request no route claims (its errors take that provider's shape)."""
        return self._anthropic_generic if anthropic else self._openai_generic

    def upstream_for(self, provider: str, model: str | None) -> tuple[str, UpstreamSpec]:
        """Named upstream whose model globs match, else the provider's default upstream."""
        if model:
            for name, spec in self._globs:
                if any(fnmatchcase(model, g) for g in spec.models):
                    return name, spec
        name = "anthropic" if provider == "anthropic" else "openai"
        return name, self.upstreams[name]
