"""Provider names as instrumentations write them -> genai-prices provider ids.

Its own module because both the price book (:mod:`otel_usecase.cost.prices`) and
the overrides file reader (:mod:`otel_usecase.cost.prices_file`) name providers
the same way, and neither may import the other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from genai_prices import data_snapshot

__all__ = ["map_provider", "provider_key"]

_PROVIDER_ALIASES: Final[Mapping[str, str]] = {
    # GenAI semconv gen_ai.provider.name / gen_ai.system values, Traceloop's
    # GenAISystem, OpenInference's llm.provider / llm.system, and common spellings.
    "openai": "openai",
    "azure": "azure",
    "azure.ai.openai": "azure",
    "az.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "az.ai.inference": "azure",
    "azure_openai": "azure",
    "aws": "aws",
    "aws.bedrock": "aws",
    "bedrock": "aws",
    "amazon_bedrock": "aws",
    "google": "google",
    "gcp.vertex_ai": "google",
    "vertex_ai": "google",
    "vertexai": "google",
    "gcp.gemini": "google",
    "gemini": "google",
    "gcp.gen_ai": "google",
    "google_genai": "google",
    "anthropic": "anthropic",
    "openrouter": "openrouter",
    "mistral": "mistral",
    "mistral_ai": "mistral",
    "mistralai": "mistral",
    "groq": "groq",
    "cohere": "cohere",
    "deepseek": "deepseek",
    "x-ai": "x-ai",
    "x_ai": "x-ai",
    "xai": "x-ai",
    "perplexity": "perplexity",
    "together": "together",
    "together_ai": "together",
    "together-ai": "together",
    "togetherai": "together",
    "fireworks": "fireworks",
    "fireworks_ai": "fireworks",
    "fireworks-ai": "fireworks",
    "cerebras": "cerebras",
    "moonshot": "moonshotai",
    "moonshotai": "moonshotai",
    "novita": "novita",
    "meta": "meta",
    "zai": "zai",
    "minimax": "minimax",
}
"""Instrumentation provider names -> genai-prices provider ids."""

_FALLBACK_PROVIDER: Final[Mapping[str, str]] = {"azure": "openai"}
"""Where to look when a mapped provider is missing from the price data."""


def map_provider(name: str | None) -> str | None:
    """The genai-prices provider id for an instrumentation's provider name, or None.

    Known spellings come from a table (``azure.ai.openai`` -> ``azure``; plain
    genai-prices matching would take it for ``openai``); anything else goes
    through genai-prices' own provider matching.
    """
    if not name:
        return None
    key = name.strip().lower()
    providers = data_snapshot.get_snapshot().providers
    known = {provider.id for provider in providers}
    mapped = _PROVIDER_ALIASES.get(key)
    if mapped is not None:
        if mapped in known:
            return mapped
        fallback = _FALLBACK_PROVIDER.get(mapped)
        if fallback in known:
            return fallback
    found = data_snapshot.find_provider_by_id(providers, key)
    return found.id if found is not None else None


def provider_key(name: str | None) -> str | None:
    """How overrides name a provider: its genai-prices id, else its own lower-cased name."""
    if not name:
        return None
    return map_provider(name) or name.strip().lower()
