"""Baggage across services: A's scope reaches B's LLM span over real HTTP with W3C propagation."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import openai
import pytest
from opentelemetry import context, propagate

from otel_usecase.scope import keys as attr
from otel_usecase import current_scope, track_context

from .conftest import Traced
from .servers import LoopbackHTTPServer


class ServiceB(LoopbackHTTPServer):
    """A downstream service with no scope of its own: extracts the context and calls the LLM."""

    def __init__(self, llm: openai.OpenAI) -> None:
        self.llm = llm
        self.seen_scopes: list[Any] = []
        self.seen_headers: list[dict[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                outer.seen_headers.append({k.lower(): v for k, v in self.headers.items()})
                token = context.attach(propagate.extract(dict(self.headers)))
                try:
                    outer.seen_scopes.append(current_scope())
                    outer.llm.chat.completions.create(
                        model="gpt-4o-mini", messages=[{"role": "user", "content": "from B"}]
                    )
                finally:
                    context.detach(token)
                body = json.dumps({"ok": True}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        super().__init__(Handler, "/answer")


@pytest.fixture
def service_b(client: openai.OpenAI) -> Iterator[ServiceB]:
    with ServiceB(client) as service:
        yield service


def test_downstream_llm_span_is_attributed_to_upstream_instance(
    traced: Traced, service_b: ServiceB, instrumented_httpx: None
) -> None:
    exp = str(uuid.uuid4())
    with track_context(
        "document_chatbot", experience_name="support_chat", experience_id=exp, user_id="u-42"
    ) as scope:
        response = httpx.post(service_b.url, json={"q": "hello"})
    assert response.status_code == 200

    # B received W3C baggage and traceparent, and saw A's scope without entering one
    assert "baggage" in service_b.seen_headers[0] and "traceparent" in service_b.seen_headers[0]
    assert service_b.seen_scopes[0].use_case_id == scope.use_case_id

    (llm_span,) = traced.llm_spans()
    assert llm_span.attributes is not None
    assert llm_span.attributes[attr.USE_CASE_NAME] == "document_chatbot"
    assert llm_span.attributes[attr.USE_CASE_ID] == scope.use_case_id
    assert llm_span.attributes[attr.EXPERIENCE_ID] == exp
    assert llm_span.attributes[attr.USER_ID] == "u-42"
    # same trace as A's outbound HTTP span
    http_span = next(s for s in traced.spans() if s.kind.name == "CLIENT" and s is not llm_span)
    assert llm_span.context.trace_id == http_span.context.trace_id


def test_ids_with_separators_survive_the_trip(
    traced: Traced, service_b: ServiceB, instrumented_httpx: None
) -> None:
    odd_id = "ticket=7,priority;high % done"
    with track_context("ticket_triage", use_case_id=odd_id, user_id="user@example.com"):
        httpx.post(service_b.url, json={})
    (llm_span,) = traced.llm_spans()
    assert llm_span.attributes is not None
    assert llm_span.attributes[attr.USE_CASE_ID] == odd_id
    assert llm_span.attributes[attr.USER_ID] == "user@example.com"
