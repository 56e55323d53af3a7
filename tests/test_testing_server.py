"""Tests for ``otel_usecase.testing.FakeOpenAI``, driven by the real ``openai`` client.

Using the real client (not hand-made HTTP) is the point: these tests prove the
fake server is wire-compatible with what the instrumentation will observe.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

import otel_usecase.testing as testing_module
from otel_usecase.testing import FakeOpenAI, FakeUsage, RecordedRequest

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello"}]


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def client(server: FakeOpenAI) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0, timeout=5) as c:
        yield c


def _port_is_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# -- chat completions -------------------------------------------------------


def test_non_streaming_usage_includes_cached_and_reasoning_details() -> None:
    usage = FakeUsage(prompt_tokens=120, completion_tokens=40, cached_tokens=100, reasoning_tokens=25)
    with (
        FakeOpenAI(usage=usage) as fake,
        openai.OpenAI(base_url=fake.base_url, api_key="test", max_retries=0) as client,
    ):
        completion = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert completion.id.startswith("chatcmpl-")
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o-mini"
    assert len(completion.choices) == 1
    choice = completion.choices[0]
    assert choice.index == 0
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 120
    assert completion.usage.completion_tokens == 40
    assert completion.usage.total_tokens == 160
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 100
    assert completion.usage.completion_tokens_details is not None
    assert completion.usage.completion_tokens_details.reasoning_tokens == 25


def test_content_is_deterministic(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(model="m", messages=MESSAGES)
    second = client.chat.completions.create(model="m", messages=MESSAGES)
    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.id != second.id


def test_streaming_with_include_usage_ends_with_usage_chunk(
    client: openai.OpenAI, server: FakeOpenAI
) -> None:
    server.respond(
        usage=FakeUsage(prompt_tokens=50, completion_tokens=20, cached_tokens=30, reasoning_tokens=7)
    )
    stream = client.chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk.id for chunk in chunks}) == 1
    assert all(chunk.model == "gpt-4o" for chunk in chunks)

    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.prompt_tokens == 50
    assert last.usage.completion_tokens == 20
    assert last.usage.total_tokens == 70
    assert last.usage.prompt_tokens_details is not None
    assert last.usage.prompt_tokens_details.cached_tokens == 30
    assert last.usage.completion_tokens_details is not None
    assert last.usage.completion_tokens_details.reasoning_tokens == 7
    # Only the final chunk carries usage, as with the real API.
    assert all(chunk.usage is None for chunk in chunks[:-1])

    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) > 1, "content should be split across several chunks"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert content_chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None for c in content_chunks[:-1])

    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    plain = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert streamed == plain.choices[0].message.content


def test_streaming_without_include_usage_has_no_usage(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    assert chunks
    assert all(chunk.usage is None for chunk in chunks)
    assert all(chunk.choices for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_stream_is_valid_sse_and_connection_is_reused(server: FakeOpenAI) -> None:
    """Raw check of the SSE framing, plus keep-alive after a chunked stream."""
    with httpx.Client(base_url=server.base_url, timeout=5) as http:
        response = http.post(
            "/chat/completions",
            json={
                "model": "x",
                "messages": MESSAGES,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        )
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [e for e in response.text.split("\n\n") if e]
        assert all(e.startswith("data: ") for e in events)
        assert events[-1] == "data: [DONE]"
        final = json.loads(events[-2].removeprefix("data: "))
        assert final["choices"] == [] and final["usage"]["total_tokens"] == 15

        # A second request on the same client must work after the stream.
        again = http.post("/chat/completions", json={"model": "x", "messages": MESSAGES})
        assert again.status_code == 200
        assert "usage" in again.json()


@pytest.mark.asyncio
async def test_async_client_streaming_with_usage(server: FakeOpenAI) -> None:
    server.respond(usage=FakeUsage(prompt_tokens=9, completion_tokens=3))
    async with openai.AsyncOpenAI(
        base_url=server.base_url, api_key="test", max_retries=0, timeout=5
    ) as client:
        completion = await client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
        stream = await client.chat.completions.create(
            model="gpt-4.1",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]

    assert completion.usage is not None and completion.usage.total_tokens == 12
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == 9
    assert chunks[-1].usage.completion_tokens == 3


# -- embeddings ---------------------------------------------------------------


def test_embeddings_single_string_default_base64(client: openai.OpenAI) -> None:
    # The client asks for base64 by default and decodes it back to floats.
    result = client.embeddings.create(model="text-embedding-3-small", input="hello")
    assert result.object == "list"
    assert result.model == "text-embedding-3-small"
    assert len(result.data) == 1
    assert result.data[0].index == 0
    assert result.data[0].object == "embedding"
    assert len(result.data[0].embedding) == 8
    assert all(isinstance(v, float) for v in result.data[0].embedding)
    assert result.usage.prompt_tokens == 10
    assert result.usage.total_tokens == 10


def test_embeddings_list_input_float_format(client: openai.OpenAI, server: FakeOpenAI) -> None:
    result = client.embeddings.create(
        model="text-embedding-3-large", input=["a", "b", "a"], encoding_format="float"
    )
    assert [d.index for d in result.data] == [0, 1, 2]
    assert all(len(d.embedding) == 8 for d in result.data)
    # Deterministic per input.
    assert result.data[0].embedding == result.data[2].embedding
    assert result.data[0].embedding != result.data[1].embedding
    assert server.requests[-1].body is not None
    assert server.requests[-1].body["encoding_format"] == "float"


# -- Responses API (minimal) -----------------------------------------------------


def test_responses_endpoint(server: FakeOpenAI, client: openai.OpenAI) -> None:
    server.respond(
        usage=FakeUsage(prompt_tokens=30, completion_tokens=12, cached_tokens=10, reasoning_tokens=4)
    )
    response = client.responses.create(model="o4-mini", input="Hi")
    assert response.model == "o4-mini"
    assert response.output_text
    assert response.usage is not None
    assert response.usage.input_tokens == 30
    assert response.usage.output_tokens == 12
    assert response.usage.total_tokens == 42
    assert response.usage.input_tokens_details.cached_tokens == 10
    assert response.usage.output_tokens_details.reasoning_tokens == 4


def test_audio_tokens_in_chat_and_responses_usage(server: FakeOpenAI, client: openai.OpenAI) -> None:
    """The gpt-4o-audio-preview usage shape: audio counts are parts of the prompt and completion counts."""
    server.respond(
        usage=FakeUsage(
            prompt_tokens=1_000, completion_tokens=500, input_audio_tokens=800, output_audio_tokens=400
        )
    )
    chat = client.chat.completions.create(model="gpt-audio", messages=MESSAGES)
    assert chat.usage is not None
    assert chat.usage.prompt_tokens_details is not None and chat.usage.completion_tokens_details is not None
    assert (chat.usage.prompt_tokens, chat.usage.prompt_tokens_details.audio_tokens) == (1_000, 800)
    assert (chat.usage.completion_tokens, chat.usage.completion_tokens_details.audio_tokens) == (500, 400)
    response = json.loads(client.responses.with_raw_response.create(model="gpt-audio", input="Hi").text)
    assert response["usage"]["input_tokens_details"] == {"cached_tokens": 0, "audio_tokens": 800}
    assert response["usage"]["output_tokens_details"] == {"reasoning_tokens": 0, "audio_tokens": 400}
    server.respond(usage=None)  # no audio: the documented Responses shape, unchanged
    plain = json.loads(client.responses.with_raw_response.create(model="gpt-5", input="Hi").text)
    assert plain["usage"]["input_tokens_details"] == {"cached_tokens": 0}


def test_service_tier_is_the_scripted_one_whatever_was_requested(
    server: FakeOpenAI, client: openai.OpenAI
) -> None:
    assert client.chat.completions.create(model="gpt-5", messages=MESSAGES).service_tier == "default"
    server.respond(service_tier="priority")
    assert client.chat.completions.create(model="gpt-5", messages=MESSAGES).service_tier == "priority"
    assert client.responses.create(model="gpt-5", input="Hi").service_tier == "priority"
    chunks = list(
        client.chat.completions.create(
            model="gpt-5", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    assert {chunk.service_tier for chunk in chunks} == {"priority"}
    server.respond(service_tier="default")  # asked for priority, served at the standard tier
    served = client.chat.completions.create(model="gpt-5", messages=MESSAGES, service_tier="priority")
    assert served.service_tier == "default"
    assert server.requests[-1].body is not None and server.requests[-1].body["service_tier"] == "priority"
    server.respond(service_tier=None)
    raw = client.chat.completions.with_raw_response.create(model="gpt-5", messages=MESSAGES)
    assert "service_tier" not in json.loads(raw.text)
    with pytest.raises(ValueError, match="service_tier"):
        server.respond(service_tier="")
    with pytest.raises(ValueError, match="service_tier"):
        FakeOpenAI(service_tier=3)  # type: ignore[arg-type]


def test_openrouter_billed_cost_in_usage(server: FakeOpenAI, client: openai.OpenAI) -> None:
    details = {"upstream_inference_cost": None, "upstream_inference_prompt_cost": 0.0002}
    server.respond(
        model="openai/gpt-4o-mini",
        usage=FakeUsage(prompt_tokens=1_000, completion_tokens=100, cost=0.000231, cost_details=details),
        service_tier=None,
    )
    chat = client.chat.completions.with_raw_response.create(model="openai/gpt-4o-mini", messages=MESSAGES)
    usage = json.loads(chat.text)["usage"]
    assert (usage["cost"], usage["is_byok"], usage["cost_details"]) == (0.000231, False, details)
    response = client.responses.with_raw_response.create(model="openai/gpt-4o-mini", input="Hi")
    assert json.loads(response.text)["usage"]["cost"] == 0.000231
    stream = client.chat.completions.create(
        model="openai/gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    last = list(stream)[-1]
    assert last.usage is not None and last.usage.model_dump()["cost"] == 0.000231
    server.respond(usage=None)  # OpenAI itself sends no cost
    plain = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    assert "cost" not in json.loads(plain.text)["usage"]


# -- scripting: model, respond(), fail_next() ----------------------------------


def test_model_is_echoed_by_default(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert completion.model == "gpt-4o-mini"


def test_fixed_model_overrides_request_model() -> None:
    with (
        FakeOpenAI(model="gpt-4o-2024-08-06") as fake,
        openai.OpenAI(base_url=fake.base_url, api_key="test", max_retries=0) as client,
    ):
        completion = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        embedding = client.embeddings.create(model="text-embedding-3-small", input="x")
    assert completion.model == "gpt-4o-2024-08-06"
    assert embedding.model == "gpt-4o-2024-08-06"


def test_respond_changes_later_responses(client: openai.OpenAI, server: FakeOpenAI) -> None:
    before = client.chat.completions.create(model="a", messages=MESSAGES)
    assert before.usage is not None and before.usage.prompt_tokens == 10

    server.respond(model="fixed-model", usage=FakeUsage(prompt_tokens=1000, completion_tokens=1))
    after = client.chat.completions.create(model="a", messages=MESSAGES)
    assert after.model == "fixed-model"
    assert after.usage is not None and after.usage.prompt_tokens == 1000

    # Omitted arguments keep their value; model=None goes back to echoing.
    server.respond(model=None)
    echoed = client.chat.completions.create(model="b", messages=MESSAGES)
    assert echoed.model == "b"
    assert echoed.usage is not None and echoed.usage.prompt_tokens == 1000

    server.respond(usage=None)
    reset = client.chat.completions.create(model="b", messages=MESSAGES)
    assert reset.usage is not None and reset.usage.prompt_tokens == FakeUsage().prompt_tokens


def test_fail_next_raises_then_recovers(client: openai.OpenAI, server: FakeOpenAI) -> None:
    server.fail_next()
    with pytest.raises(openai.InternalServerError) as excinfo:
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert excinfo.value.status_code == 500
    assert isinstance(excinfo.value.body, dict)
    assert excinfo.value.body["message"] == "injected failure"
    assert excinfo.value.body["type"] == "server_error"
    assert "code" in excinfo.value.body

    ok = client.chat.completions.create(model="m", messages=MESSAGES)
    assert ok.choices[0].finish_reason == "stop"
    assert len(server.requests) == 2  # the failed request is recorded too


def test_fail_next_status_and_times(client: openai.OpenAI, server: FakeOpenAI) -> None:
    server.fail_next(status=429, times=2, message="slow down")
    for _ in range(2):
        with pytest.raises(openai.RateLimitError, match="slow down"):
            client.embeddings.create(model="e", input="x")
    client.embeddings.create(model="e", input="x")


# -- request recording ---------------------------------------------------------------


def test_requests_records_headers_and_body(client: openai.OpenAI, server: FakeOpenAI) -> None:
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES, temperature=0.5)
    client.embeddings.create(model="emb", input=["x", "y"])

    recorded = server.requests
    assert len(recorded) == 2
    chat, emb = recorded
    assert isinstance(chat, RecordedRequest)
    assert chat.method == "POST"
    assert chat.path == "/v1/chat/completions"
    assert chat.headers["authorization"] == "Bearer test"
    assert chat.headers["content-type"] == "application/json"
    assert all(key == key.lower() for key in chat.headers)
    assert chat.body == {"model": "gpt-4o", "messages": MESSAGES, "temperature": 0.5}
    assert emb.path == "/v1/embeddings"
    assert emb.body is not None and emb.body["input"] == ["x", "y"]

    # The property returns a copy.
    server.requests.clear()
    assert len(server.requests) == 2


# -- errors ---------------------------------------------------------------------------


def test_unknown_path_is_404_openai_style(client: openai.OpenAI, server: FakeOpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.models.list()
    response = httpx.post(f"{server.base_url}/nope", json={})
    assert response.status_code == 404
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "code"}


def test_malformed_json_is_400(server: FakeOpenAI) -> None:
    response = httpx.post(
        f"{server.base_url}/chat/completions",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert server.requests[-1].body is None


def test_fake_usage_rejects_negative_values() -> None:
    with pytest.raises(ValueError):
        FakeUsage(prompt_tokens=-1)
    with pytest.raises(ValueError, match="output_audio_tokens"):
        FakeUsage(output_audio_tokens=-1)
    for bad in (-0.01, float("nan"), float("inf"), True, "0.1"):
        with pytest.raises(ValueError, match="FakeUsage.cost"):
            FakeUsage(cost=bad)  # type: ignore[arg-type]
    assert FakeUsage(cost=0).cost == 0
    assert FakeUsage(prompt_tokens=3, completion_tokens=4).total_tokens == 7


def test_wildcard_host_is_refused() -> None:
    with pytest.raises(ValueError):
        FakeOpenAI(host="0.0.0.0")


# -- lifecycle ------------------------------------------------------------------------


def test_binds_loopback_and_stop_closes_port() -> None:
    fake = FakeOpenAI().start()
    assert fake.start() is fake  # idempotent
    base_url = fake.base_url
    url = httpx.URL(base_url)
    assert url.host == "127.0.0.1"
    assert url.path == "/v1"
    assert _port_is_open("127.0.0.1", url.port or 0)

    with httpx.Client(timeout=2) as http:
        assert http.post(f"{base_url}/embeddings", json={"model": "m", "input": "x"}).status_code == 200
        fake.stop()
        # Even the kept-alive connection is gone.
        with pytest.raises(httpx.TransportError):
            http.post(f"{base_url}/embeddings", json={"model": "m", "input": "x"})

    assert not _port_is_open("127.0.0.1", url.port or 0)
    fake.stop()  # idempotent
    with pytest.raises(RuntimeError):
        _ = fake.base_url


def test_main_serves_until_interrupted() -> None:
    src = str(Path(testing_module.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    with subprocess.Popen(
        [sys.executable, "-m", "otel_usecase.testing", "--port", "0", "--model", "demo-model"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert "base_url=" in line
            base_url = line.strip().split("base_url=", 1)[1]
            with openai.OpenAI(base_url=base_url, api_key="test", max_retries=0, timeout=5) as client:
                completion = client.chat.completions.create(model="x", messages=MESSAGES)
            assert completion.model == "demo-model"
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=5) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
