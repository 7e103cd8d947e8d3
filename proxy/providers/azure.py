"""Azure OpenAI: the OpenAI wire formats on Azure's paths.

    /openai/deployments/{deployment}/chat/completions?api-version=...   chat (the deployment is the model)
    /openai/deployments/{deployment}/embeddings?api-version=...
    /openai/v1/chat/completions, /openai/v1/responses, /openai/v1/embeddings   (the v1 surface: model in the body)
    anything else under /openai/                                          forwarded as-is

The key is the `api-key` header (or an Entra ID bearer token in `Authorization`); `api-version`
stays in the query string forwarded upstream.  There is no default upstream: set
INTERLOCK_UPSTREAM_AZURE to the resource's origin (https://<resource>.openai.azure.com).
Bodies, streams and errors are OpenAI's (proxy/providers/openai.py), so the OpenAI SDK's
`AzureOpenAI` client raises its usual errors for Interlock's refusals; models are GPT models, so
tokens are counted exactly with tiktoken (by the deployment's name when the body names no model).
"""

from __future__ import annotations

from proxy.providers.base import Endpoint, ProviderSpec
from proxy.providers.openai import OpenAIChat, OpenAIGeneric, OpenAIResponses

_CHAT, _GENERIC = OpenAIChat(), OpenAIGeneric()

PROVIDER = ProviderSpec(
    name="azure",
    system="azure.ai.openai",
    default_upstream=None,
    endpoints=(
        Endpoint("/openai/deployments/{deployment}/chat/completions", "chat", _CHAT),
        Endpoint("/openai/deployments/{deployment}/embeddings", "embeddings", _GENERIC, json_body=False),
        Endpoint("/openai/v1/chat/completions", "chat", _CHAT),
        Endpoint("/openai/v1/responses", "responses", OpenAIResponses()),
        Endpoint("/openai/v1/embeddings", "embeddings", _GENERIC, json_body=False),
    ),
    generic=_GENERIC,
    prefixes=("/openai/",),
    key_headers=(b"api-key", b"authorization"),
    order=40,
)
