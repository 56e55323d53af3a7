"""Realistic LLM spans for the exporter, memory and receiver benchmarks.

The attributes are what ``opentelemetry-instrumentation-openai`` (Traceloop,
0.62) and its siblings write on a chat span, plus the seven keys that
``UseCaseSpanProcessor`` stamps: 22 to 24 attributes per span. Models come from
a list of 22 priced models of five providers (dated response names, as the APIs
return them); runs are drawn from a pool of run ids.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

# (gen_ai.system as instrumentations write it, request model, response model, operation)
MODELS: tuple[tuple[str, str, str, str], ...] = (
    ("openai", "gpt-4o", "gpt-4o-2024-08-06", "chat"),
    ("openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", "chat"),
    ("openai", "gpt-4.1", "gpt-4.1-2025-04-14", "chat"),
    ("openai", "gpt-4.1-mini", "gpt-4.1-mini-2025-04-14", "chat"),
    ("openai", "gpt-4.1-nano", "gpt-4.1-nano-2025-04-14", "chat"),
    ("openai", "o3", "o3-2025-04-16", "chat"),
    ("openai", "o3-mini", "o3-mini-2025-01-31", "chat"),
    ("openai", "o4-mini", "o4-mini-2025-04-16", "chat"),
    ("openai", "gpt-5", "gpt-5-2025-08-07", "chat"),
    ("openai", "gpt-5-mini", "gpt-5-mini-2025-08-07", "chat"),
    ("openai", "text-embedding-3-small", "text-embedding-3-small", "embeddings"),
    ("openai", "gpt-3.5-turbo", "gpt-3.5-turbo-0125", "chat"),
    ("anthropic", "claude-3-5-sonnet-latest", "claude-3-5-sonnet-20241022", "chat"),
    ("anthropic", "claude-sonnet-4-0", "claude-sonnet-4-20250514", "chat"),
    ("anthropic", "claude-3-5-haiku-latest", "claude-3-5-haiku-20241022", "chat"),
    ("anthropic", "claude-opus-4-1", "claude-opus-4-1-20250805", "chat"),
    ("gcp.vertex_ai", "gemini-2.5-pro", "gemini-2.5-pro", "chat"),
    ("gcp.vertex_ai", "gemini-2.5-flash", "gemini-2.5-flash", "chat"),
    ("gcp.vertex_ai", "gemini-2.0-flash", "gemini-2.0-flash", "chat"),
    ("mistral_ai", "mistral-large-latest", "mistral-large-latest", "chat"),
    ("aws.bedrock", "anthropic.claude-3-5-sonnet-20240620-v1:0", "anthropic.claude-3-5-sonnet-20240620-v1:0", "chat"),
    ("azure.ai.openai", "gpt-4o", "gpt-4o", "chat"),
)

USE_CASES = (
    "document_summarization",
    "document_chatbot",
    "ticket_triage",
    "code_review",
    "email_drafting",
    "search_answers",
    "meeting_notes",
    "translation",
    "sales_research",
    "data_extraction",
)

_API_BASE = {
    "openai": "https://api.openai.com/v1/",
    "azure.ai.openai": "https://contoso.openai.azure.com/openai/deployments/gpt-4o/",
}


def run_pool(n: int, rng: random.Random) -> list[dict[str, str]]:
    """``n`` runs: each a use case, a run id, a user, and (half of them) an experience."""
    runs = []
    for i in range(n):
        run = {
            "usecase.name": USE_CASES[i % len(USE_CASES)],
            "usecase.id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "usecase.version": f"2025.{1 + i % 12:02d}",
            "usecase.step": rng.choice(("plan", "retrieve", "answer", "review")),
            "user.id": f"user-{rng.randrange(5000):05d}",
        }
        if i % 2 == 0:
            run["experience.name"] = "support_chat"
            run["experience.id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        runs.append(run)
    return runs


def llm_attributes(rng: random.Random, run: dict[str, str], model: tuple[str, str, str, str] | None = None) -> dict[str, Any]:
    """The attributes of one finished LLM span of ``run``."""
    system, request_model, response_model, operation = model or rng.choice(MODELS)
    input_tokens = rng.randrange(50, 12000)
    output_tokens = rng.randrange(1, 1500) if operation == "chat" else 0
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": operation,
        "gen_ai.system": system,
        "gen_ai.provider.name": system,
        "llm.request.type": "chat" if operation == "chat" else "embedding",
        "gen_ai.request.model": request_model,
        "gen_ai.response.model": response_model,
        "gen_ai.response.id": f"chatcmpl-{rng.getrandbits(96):024x}",
        "llm.is_streaming": rng.random() < 0.3,
        "gen_ai.openai.api_base": _API_BASE.get(system, "https://llm-gateway.internal/v1/"),
        "gen_ai.request.temperature": 0.2,
        "gen_ai.request.max_tokens": 2048,
        "gen_ai.usage.input_tokens": input_tokens,
        "gen_ai.usage.output_tokens": output_tokens,
        "llm.usage.total_tokens": input_tokens + output_tokens,
        "gen_ai.response.finish_reasons": ("stop",),
    }
    if rng.random() < 0.4:
        attributes["gen_ai.usage.cache_read.input_tokens"] = rng.randrange(0, input_tokens // 2 + 1)
    if request_model.startswith(("o3", "o4", "gpt-5")):
        attributes["gen_ai.usage.reasoning_tokens"] = rng.randrange(0, output_tokens + 1)
    attributes.update(run)
    return attributes


def readable_llm_span(
    trace_id: int,
    span_id: int,
    attributes: dict[str, Any],
    start_ns: int,
    *,
    parent_span_id: int | None = None,
    resource: Any = None,
    scope: Any = None,
) -> Any:
    """A finished LLM ``ReadableSpan`` built directly (cheap: no tracer, no processors)."""
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

    sampled = TraceFlags(TraceFlags.SAMPLED)
    return ReadableSpan(
        "openai.chat",
        context=SpanContext(trace_id, span_id, is_remote=False, trace_flags=sampled),
        parent=(
            SpanContext(trace_id, parent_span_id, is_remote=False, trace_flags=sampled)
            if parent_span_id is not None
            else None
        ),
        resource=resource,
        attributes=attributes,
        kind=SpanKind.CLIENT,
        start_time=start_ns,
        end_time=start_ns + 850_000_000,
        instrumentation_scope=scope,
    )
