"""The key names otel-usecase reads and writes, and nothing else.

Baggage keys and span attribute keys are the same strings on purpose: a value
that travels as W3C baggage lands on the span under the very same name, so a
collector, a tracing backend and the cost engine all look for one key.
"""

from __future__ import annotations

from typing import Final

USE_CASE_NAME: Final = "usecase.name"
"""A named scenario, e.g. ``document_summarization``."""
USE_CASE_ID: Final = "usecase.id"
"""One instance ("run") of a use case."""
USE_CASE_VERSION: Final = "usecase.version"
"""A version of the use case (prompt or pipeline revision)."""
USE_CASE_STEP: Final = "usecase.step"
"""A named part of a run (``retrieve``, ``summarize``); never starts a new run."""
EXPERIENCE_NAME: Final = "experience.name"
"""A user-facing journey, e.g. ``support_chat``."""
EXPERIENCE_ID: Final = "experience.id"
"""One instance of an experience (a GUID); may contain many runs."""
USER_ID: Final = "user.id"
"""The user a run belongs to."""
EXPERIENCE_VERSION: Final = "experience.version"
"""A version of the experience (``v2`` of ``support_chat``): belongs to the experience name, as
``usecase.version`` belongs to the use case, so an inner scope of another experience starts without it."""
EXPERIENCE_ID_ORIGINAL: Final = "experience.id.original"
"""The experience id the application gave when it was not stored as is: a session id such as
``sess_9f8a7b`` (``experience.id`` is then its UUIDv5) or a GUID in another case or format."""

TAG_PREFIX: Final = "usecase.tag."
"""A scope's tag ``<key>`` travels as baggage ``usecase.tag.<key>`` and is stamped on LLM spans under the
same key (``usecase.tag.tenant=acme``)."""
TAG_KEYS: Final = "usecase.tag.*"
"""Every tag key at once, in the trust settings (``OTEL_USECASE_INBOUND_KEYS=usecase.id,usecase.tag.*``)."""
TAG_NAMES: Final = "usecase.tags"
"""On an LLM span with tags: their keys, sorted, comma-separated (``team,tenant``), stamped by the span
processor beside the ``usecase.tag.<key>`` attributes, so that the cost engine reads a span's tags with one
lookup instead of a scan of every attribute. Not a baggage key (each service stamps its own)."""
MAX_TAGS: Final = 10
"""The most tags a scope holds (after merging with the enclosing scope's); more are dropped with a warning."""

ALL_KEYS: Final[tuple[str, ...]] = (
    USE_CASE_NAME,
    USE_CASE_ID,
    USE_CASE_VERSION,
    USE_CASE_STEP,
    EXPERIENCE_NAME,
    EXPERIENCE_ID,
    USER_ID,
    EXPERIENCE_ID_ORIGINAL,
    EXPERIENCE_VERSION,
)
"""Every key, in the order of :class:`otel_usecase.Scope`'s fields."""

CALL_SPAN_ID: Final = "usecase.call.span_id"
"""On an LLM span nested in another LLM span (two instrumentations of one request):
the outermost LLM span's id in hex, so that the cost engine counts the request once.
Set by the span processor; not a baggage key."""
CALL_DUPLICATE_OF: Final = "usecase.call.duplicate_of"
"""On a framework's model span (OpenInference LangChain) that the processor saw a client
instrumentation's span of the same request start inside: that span's id in hex. The cost
engine counts the request once, from that span. Set by the span processor; not a baggage key."""

OUTCOME_NAME: Final = "usecase.outcome.name"
"""On an outcome span (:func:`otel_usecase.record_outcome`): the outcome's name. Not a baggage key."""
OUTCOME_VALUE: Final = "usecase.outcome.value"
"""On an outcome span: the outcome's value (a finite float). Not a baggage key."""

__all__ = [
    "ALL_KEYS",
    "CALL_DUPLICATE_OF",
    "CALL_SPAN_ID",
    "EXPERIENCE_ID",
    "EXPERIENCE_ID_ORIGINAL",
    "EXPERIENCE_NAME",
    "EXPERIENCE_VERSION",
    "MAX_TAGS",
    "OUTCOME_NAME",
    "OUTCOME_VALUE",
    "TAG_KEYS",
    "TAG_NAMES",
    "TAG_PREFIX",
    "USER_ID",
    "USE_CASE_ID",
    "USE_CASE_NAME",
    "USE_CASE_STEP",
    "USE_CASE_VERSION",
]
