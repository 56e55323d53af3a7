"""Which spans are one model request, and when two spans are the same request.

One module so that the span processor (at span start) and the cost engine (at
export) decide "is this parent the same model request as its child" with the
same function. It imports nothing heavy: the processor loads it, and the
processor must not load the price data.

**Same request.** Two instrumentations of one client call (e.g.
``opentelemetry-instrumentation-openai`` and ``-openai-v2``, or an agent SDK's
``generation`` span and the OpenAI client span inside it) nest one model span in
another, and both carry the same operation. A chain, agent, tool, workflow or
task span is never a request, nor is an OpenInference ``EMBEDDING`` span that
has no GenAI operation (frameworks such as LlamaIndex use it for a batch that
sends several embedding requests). So a span is merged into its parent only when
:func:`call_class` gives both the same, non-None class.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

__all__ = [
    "CALL_MARK_KEYS",
    "MODEL_OPERATIONS",
    "NOT_CALL_OPERATIONS",
    "OI_KIND",
    "OI_MODEL_KINDS",
    "OPERATION",
    "call_class",
    "same_request",
]

OPERATION: Final = "gen_ai.operation.name"
OI_KIND: Final = "openinference.span.kind"

_GENERATE: Final = "generate"
_EMBEDDINGS: Final = "embeddings"

_CLASS_OF_OPERATION: Final[Mapping[str, str]] = {
    "chat": _GENERATE,
    "text_completion": _GENERATE,
    "completion": _GENERATE,
    "generate_content": _GENERATE,
    "responses": _GENERATE,
    "response": _GENERATE,
    "embeddings": _EMBEDDINGS,
    "embedding": _EMBEDDINGS,
    "rerank": "rerank",
    "image_generation": "image_generation",
    "speech": "speech",
    "transcription": "transcription",
}

MODEL_OPERATIONS: Final = frozenset(_CLASS_OF_OPERATION)
"""``gen_ai.operation.name`` values that are one model request each."""
NOT_CALL_OPERATIONS: Final = frozenset(
    {"invoke_agent", "create_agent", "execute_tool", "invoke_workflow", "workflow", "task", "tool"}
)
"""Operations that are never a model request, even when they carry summed usage."""
OI_MODEL_KINDS: Final = frozenset({"LLM", "EMBEDDING"})
"""OpenInference span kinds that are model requests."""

CALL_MARK_KEYS: Final[tuple[str, ...]] = (OPERATION, "gen_ai.system", "gen_ai.provider.name", OI_KIND)
"""Attributes that say, at span start, what kind of GenAI span it is."""


def call_class(attributes: Mapping[str, object]) -> str | None:
    """The class of model request a span is (``"generate"``, ``"embeddings"``, ...), else None.

    Judged only from what marks a span as one request (its GenAI operation or
    its OpenInference kind ``LLM``), never from usage: the processor asks at span
    start, before any usage exists. An OpenInference ``EMBEDDING`` span without a
    GenAI operation is None (see the module docstring).
    """
    operation = attributes.get(OPERATION)
    if operation is not None:
        return _CLASS_OF_OPERATION.get(operation) if type(operation) is str else None
    kind = attributes.get(OI_KIND)
    if kind == "LLM" or (type(kind) is str and kind.upper() == "LLM"):
        return _GENERATE
    return None


def same_request(parent: Mapping[str, object], child: Mapping[str, object]) -> bool:
    """Whether ``child`` (a model span) nested in ``parent`` is the same model request.

    True only when both are request spans of the same class: two instrumentations
    of one call. A parent that is a chain, agent, tool, workflow, task or an
    embedding batch is never the same request, so every call under it counts.
    """
    kind = call_class(child)
    return kind is not None and kind == call_class(parent)
