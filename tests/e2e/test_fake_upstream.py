"""The fake upstream speaks the real wire protocols: proven with the official OpenAI and Anthropic
Python SDKs, plus raw-HTTP checks of the switchable faults (stdlib http.client only)."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import time
import uuid
from urllib.parse import urlparse

import pytest

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")

SEARCH_TOOL_OPENAI = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search the web",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
    },
}
SEARCH_TOOL_ANTHROPIC = {
    "name": "search",
    "description": "Search the web",
    "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
}


def oai(base: str, **kw) -> "openai.OpenAI":
    kw.setdefault("max_retries", 0)
    return openai.OpenAI(api_key="sk-test", base_url=base + "/v1", timeout=10, **kw)


def ant(base: str, **kw) -> "anthropic.Anthropic":
    kw.setdefault("max_retries", 0)
    return anthropic.Anthropic(api_key="sk-ant-test", base_url=base, timeout=10, **kw)


def key() -> dict:
    """A fresh x-fake-key, so fail counters never leak between tests."""
    return {"x-fake-key": uuid.uuid4().hex}


# ------------------------------------------------------------------------------------------
# raw HTTP helpers
# ------------------------------------------------------------------------------------------


def conn(base: str, timeout: float = 10) -> http.client.HTTPConnection:
    u = urlparse(base)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)


def post(base: str, path: str, body, headers: dict | None = None):
    c = conn(base)
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    c.request("POST", path, body=json.dumps(body) if not isinstance(body, bytes) else body, headers=h)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r, data


OAI_H = {"Authorization": "Bearer sk-test"}
ANT_H = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}


def chat_body(text="hello world", **kw):
    b = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
    b.update(kw)
    return b


def msg_body(text="hello world", **kw):
    b = {"model": "claude-haiku-4-5", "max_tokens": 256, "messages": [{"role": "user", "content": text}]}
    b.update(kw)
    return b


def get_json(base: str, path: str):
    c = conn(base)
    c.request("GET", path)
    r = c.getresponse()
    data = json.loads(r.read())
    c.close()
    return data


# ------------------------------------------------------------------------------------------
# OpenAI SDK
# ------------------------------------------------------------------------------------------


def test_openai_non_streaming(fake_upstream):
    r = oai(fake_upstream).chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "hello world"},
        ],
    )
    assert r.object == "chat.completion"
    assert r.id.startswith("chatcmpl-")
    assert r.model == "gpt-4o-mini"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == "echo: hello world"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == 5  # ceil(len("echo: hello world") / 4)
    assert r.usage.prompt_tokens == (len("You are terse.firstokhello world") + 3) // 4
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_openai_content_parts(fake_upstream):
    r = oai(fake_upstream).chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": [{"type": "text", "text": "part one"}, {"type": "text", "text": "two"}]}],
    )
    assert r.choices[0].message.content == "echo: part one\ntwo"


def test_openai_streaming_with_usage(fake_upstream):
    stream = oai(fake_upstream).chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "the quick brown fox"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: the quick brown fox"
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) >= 3
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 7
    assert all(c.usage is None for c in chunks[:-1])


def test_openai_streaming_without_usage(fake_upstream):
    chunks = list(
        oai(fake_upstream).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "echo: hi"


def test_openai_stream_is_real_sse(fake_upstream):
    c = conn(fake_upstream)
    c.request("POST", "/v1/chat/completions", body=json.dumps(chat_body(stream=True)), headers=OAI_H)
    r = c.getresponse()
    assert r.status == 200
    assert r.getheader("Content-Type").startswith("text/event-stream")
    raw = r.read().decode()
    events = [e for e in raw.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    for e in events[:-1]:
        json.loads(e[len("data: ") :])


def test_openai_tool_call_round_trip(fake_upstream):
    client = oai(fake_upstream)
    messages = [{"role": "user", "content": "weather in Paris"}]
    r = client.chat.completions.create(model="gpt-4o+tool", messages=messages, tools=[SEARCH_TOOL_OPENAI])
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "search"
    assert json.loads(call.function.arguments) == {"q": "weather in Paris"}

    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"},
    ]
    r2 = client.chat.completions.create(model="gpt-4o+tool", messages=messages, tools=[SEARCH_TOOL_OPENAI])
    assert r2.choices[0].finish_reason == "stop"
    assert r2.choices[0].message.content == "tool said: sunny, 21C"


def test_openai_streamed_tool_call(fake_upstream):
    chunks = list(
        oai(fake_upstream).chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "look this up"}],
            tools=[SEARCH_TOOL_OPENAI],
            stream=True,
            extra_headers={"x-fake-behavior": "tool"},
        )
    )
    first = chunks[0].choices[0].delta.tool_calls[0]
    assert first.index == 0 and first.id.startswith("call_") and first.type == "function"
    assert first.function.name == "search"
    args = "".join(
        tc.function.arguments or "" for c in chunks for tc in (c.choices[0].delta.tool_calls or []) if tc.function
    )
    assert json.loads(args) == {"q": "look this up"}
    arg_chunks = [c for c in chunks if c.choices[0].delta.tool_calls and c.choices[0].delta.tool_calls[0].function.arguments]
    assert len(arg_chunks) >= 2
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_openai_stream_helper_accumulates(fake_upstream):
    """The SDK's own stream helper (which parses every event) accepts the stream."""
    client = oai(fake_upstream)
    helper = getattr(client.chat.completions, "stream", None) or client.beta.chat.completions.stream
    with helper(
        model="gpt-4o", messages=[{"role": "user", "content": "abc def"}], tools=[SEARCH_TOOL_OPENAI],
        extra_headers={"x-fake-behavior": "tool"},
    ) as s:
        final = s.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert call.function.name == "search" and json.loads(call.function.arguments) == {"q": "abc def"}


def test_openai_fail_503_then_ok(fake_upstream):
    client = oai(fake_upstream)
    h = key()
    with pytest.raises(openai.APIStatusError) as ei:
        client.chat.completions.create(
            model="gpt-4o+fail:503:1", messages=[{"role": "user", "content": "x"}], extra_headers=h
        )
    assert ei.value.status_code == 503
    assert ei.value.body["type"] == "server_error"  # the SDK unwraps OpenAI's {"error": {...}}
    r = client.chat.completions.create(model="gpt-4o+fail:503:1", messages=[{"role": "user", "content": "x"}], extra_headers=h)
    assert r.choices[0].message.content == "echo: x"


def test_openai_429_retry_after_and_sdk_retry(fake_upstream):
    h = key()
    with pytest.raises(openai.RateLimitError) as ei:
        oai(fake_upstream).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}], extra_headers={**h, "x-fake-behavior": "fail:429:2"}
        )
    assert ei.value.response.headers["retry-after"] == "1"
    assert ei.value.body["code"] == "rate_limit_exceeded"
    # One failure left on this key: an SDK with retries honours Retry-After and succeeds.
    t0 = time.monotonic()
    r = oai(fake_upstream, max_retries=2).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "y"}], extra_headers={**h, "x-fake-behavior": "fail:429:2"}
    )
    assert r.choices[0].message.content == "echo: y"
    assert time.monotonic() - t0 >= 0.9
    stats = get_json(fake_upstream, "/_fake/stats")
    assert stats["fail_counters"][h["x-fake-key"]] == 3


def test_openai_fail_counter_keyed_by_model(fake_upstream):
    model = "gpt-" + uuid.uuid4().hex[:8] + "+fail:500:1"
    client = oai(fake_upstream)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
    assert client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}]).choices
    # reset clears the counters: it fails again
    post(fake_upstream, "/_fake/reset", b"")
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])


def test_openai_max_tokens_length(fake_upstream):
    r = oai(fake_upstream).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "x"}], max_tokens=3, extra_headers={"x-fake-behavior": "long:50"}
    )
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 3 and len(r.choices[0].message.content) == 12


def test_openai_models_list(fake_upstream):
    ids = [m.id for m in oai(fake_upstream).models.list()]
    assert "gpt-4o-mini" in ids


def test_openai_auth_required(fake_upstream):
    r, data = post(fake_upstream, "/v1/chat/completions", chat_body())
    assert r.status == 401
    err = json.loads(data)["error"]
    assert set(err) == {"message", "type", "param", "code"}
    r, _ = post(fake_upstream, "/v1/chat/completions", chat_body(), {"Authorization": "Bearer "})
    assert r.status == 401


def test_openai_bad_requests(fake_upstream):
    r, data = post(fake_upstream, "/v1/chat/completions", b"{not json", OAI_H)
    assert r.status == 400 and json.loads(data)["error"]["type"] == "invalid_request_error"
    r, data = post(fake_upstream, "/v1/chat/completions", {"model": "m"}, OAI_H)
    assert r.status == 400
    r, data = post(fake_upstream, "/v1/chat/completions", chat_body(), {**OAI_H, "x-fake-behavior": "bogus"})
    assert r.status == 400 and "bogus" in json.loads(data)["error"]["message"]


# ------------------------------------------------------------------------------------------
# Anthropic SDK
# ------------------------------------------------------------------------------------------


def test_anthropic_non_streaming(fake_upstream):
    m = ant(fake_upstream).messages.create(
        model="claude-haiku-4-5",
        max_tokens=256,
        system="Be brief.",
        messages=[{"role": "user", "content": "hello world"}],
    )
    assert m.type == "message" and m.role == "assistant" and m.id.startswith("msg_")
    assert m.model == "claude-haiku-4-5"
    assert [b.type for b in m.content] == ["text"]
    assert m.content[0].text == "echo: hello world"
    assert m.stop_reason == "end_turn"
    assert m.usage.output_tokens == 5
    assert m.usage.input_tokens == (len("Be brief.hello world") + 3) // 4


def test_anthropic_streaming_text(fake_upstream):
    client = ant(fake_upstream)
    with client.messages.stream(
        model="claude-sonnet-4-6", max_tokens=256, messages=[{"role": "user", "content": "the quick brown fox"}]
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(pieces) == "echo: the quick brown fox"
    assert len(pieces) >= 3
    assert final.stop_reason == "end_turn"
    assert final.content[0].text == "echo: the quick brown fox"
    assert final.usage.output_tokens == 7


def test_anthropic_raw_event_sequence(fake_upstream):
    events = list(
        ant(fake_upstream).messages.create(
            model="claude-sonnet-4-6", max_tokens=256, messages=[{"role": "user", "content": "a b"}], stream=True
        )
    )
    types = [e.type for e in events]
    assert types[0] == "message_start" and types[1] == "content_block_start"
    assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert {e.delta.type for e in events if e.type == "content_block_delta"} == {"text_delta"}
    assert events[-2].delta.stop_reason == "end_turn"
    # ping is a real SSE event on the wire (the SDK drops it): check on the raw stream
    c = conn(fake_upstream)
    c.request("POST", "/v1/messages", body=json.dumps(msg_body(stream=True)), headers=ANT_H)
    r = c.getresponse()
    assert r.getheader("Content-Type").startswith("text/event-stream")
    raw = r.read().decode()
    names = [e.split("\n")[0] for e in raw.split("\n\n") if e]
    assert names[:3] == ["event: message_start", "event: content_block_start", "event: ping"]
    assert names[-1] == "event: message_stop"


def test_anthropic_tool_use_round_trip(fake_upstream):
    client = ant(fake_upstream)
    messages = [{"role": "user", "content": "weather in Paris"}]
    m = client.messages.create(
        model="claude-haiku-4-5+tool", max_tokens=256, tools=[SEARCH_TOOL_ANTHROPIC], messages=messages
    )
    assert m.stop_reason == "tool_use"
    (block,) = m.content
    assert block.type == "tool_use" and block.id.startswith("toolu_")
    assert block.name == "search" and block.input == {"q": "weather in Paris"}

    messages += [
        {"role": "assistant", "content": [block.model_dump()]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "sunny"}]},
    ]
    m2 = client.messages.create(
        model="claude-haiku-4-5+tool", max_tokens=256, tools=[SEARCH_TOOL_ANTHROPIC], messages=messages
    )
    assert m2.stop_reason == "end_turn" and m2.content[0].text == "tool said: sunny"


def test_anthropic_streamed_tool_use(fake_upstream):
    with ant(fake_upstream).messages.stream(
        model="claude-haiku-4-5",
        max_tokens=256,
        tools=[SEARCH_TOOL_ANTHROPIC],
        messages=[{"role": "user", "content": "look this up"}],
        extra_headers={"x-fake-behavior": "tool"},
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert any(e.type == "content_block_delta" and e.delta.type == "input_json_delta" for e in events)
    assert final.stop_reason == "tool_use"
    assert final.content[0].type == "tool_use" and final.content[0].input == {"q": "look this up"}


def test_anthropic_max_tokens(fake_upstream):
    m = ant(fake_upstream).messages.create(
        model="claude-haiku-4-5+long:100", max_tokens=5, messages=[{"role": "user", "content": "x"}]
    )
    assert m.stop_reason == "max_tokens" and m.usage.output_tokens == 5


def test_anthropic_fail_then_ok(fake_upstream):
    client = ant(fake_upstream)
    h = {**key(), "x-fake-behavior": "fail:529:1"}
    with pytest.raises(anthropic.APIStatusError) as ei:
        client.messages.create(model="c", max_tokens=10, messages=[{"role": "user", "content": "x"}], extra_headers=h)
    assert ei.value.status_code == 529
    assert ei.value.body["type"] == "error" and ei.value.body["error"]["type"] == "overloaded_error"
    m = client.messages.create(model="c", max_tokens=10, messages=[{"role": "user", "content": "x"}], extra_headers=h)
    assert m.content[0].text == "echo: x"


def test_anthropic_auth_and_version_required(fake_upstream):
    r, data = post(fake_upstream, "/v1/messages", msg_body(), {"anthropic-version": "2023-06-01"})
    assert r.status == 401
    body = json.loads(data)
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
    r, data = post(fake_upstream, "/v1/messages", msg_body(), {"x-api-key": "k"})
    assert r.status == 400 and json.loads(data)["error"]["type"] == "invalid_request_error"
    # current official SDKs send the key as a Bearer token: accepted too
    r, data = post(fake_upstream, "/v1/messages", msg_body(), {"Authorization": "Bearer k", "anthropic-version": "2023-06-01"})
    assert r.status == 200
    # and the classic x-api-key header
    r, data = post(fake_upstream, "/v1/messages", msg_body(), ANT_H)
    assert r.status == 200
    r, data = post(fake_upstream, "/v1/messages", {"model": "c", "messages": [{"role": "user", "content": "x"}]}, ANT_H)
    assert r.status == 400 and "max_tokens" in json.loads(data)["error"]["message"]


def test_anthropic_models_list(fake_upstream):
    ids = [m.id for m in ant(fake_upstream).models.list()]
    assert "claude-sonnet-4-6" in ids


# ------------------------------------------------------------------------------------------
# Faults and control endpoints (raw HTTP)
# ------------------------------------------------------------------------------------------


def test_health(fake_upstream):
    assert get_json(fake_upstream, "/health") == {"status": "ok"}


def test_stats_record_forwarded_headers(fake_upstream):
    post(fake_upstream, "/v1/chat/completions", chat_body(), {**OAI_H, "X-Custom": "abc"})
    post(fake_upstream, "/v1/messages", msg_body(), ANT_H)
    post(fake_upstream, "/v1/messages", msg_body(), ANT_H)
    s = get_json(fake_upstream, "/_fake/stats")
    assert s["requests_by_path"] == {"/v1/chat/completions": 1, "/v1/messages": 2}
    assert s["requests_by_model"] == {"gpt-4o-mini": 1, "claude-haiku-4-5": 2}
    assert s["total_requests"] == 3
    last = s["last_request"]
    assert last["path"] == "/v1/messages" and last["headers"]["x-api-key"] == "sk-ant-test"
    assert last["body"]["model"] == "claude-haiku-4-5"
    post(fake_upstream, "/v1/chat/completions", chat_body(), {**OAI_H, "X-Custom": "abc"})
    h = get_json(fake_upstream, "/_fake/stats")["last_request"]["headers"]
    assert h["authorization"] == "Bearer sk-test" and h["x-custom"] == "abc"


def test_keep_alive_and_pipelining(fake_upstream):
    c = conn(fake_upstream)
    for i in range(3):
        c.request("POST", "/v1/chat/completions", body=json.dumps(chat_body(f"n{i}")), headers=OAI_H)
        r = c.getresponse()
        assert json.loads(r.read())["choices"][0]["message"]["content"] == f"echo: n{i}"
    c.close()
    # two requests in one write, answered in order on the same connection
    u = urlparse(fake_upstream)
    body = json.dumps(chat_body("p")).encode()
    one = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )
    with socket.create_connection((u.hostname, u.port), timeout=5) as s:
        s.sendall(one + one.replace(b"HTTP/1.1\r\n", b"HTTP/1.1\r\nConnection: close\r\n", 1))
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 2


def test_chunked_request_body(fake_upstream):
    c = conn(fake_upstream)
    body = json.dumps(chat_body("chunky")).encode()
    c.request("POST", "/v1/chat/completions", body=iter([body[:10], body[10:]]), headers=OAI_H, encode_chunked=True)
    r = c.getresponse()
    assert json.loads(r.read())["choices"][0]["message"]["content"] == "echo: chunky"


def test_slow_delays_first_byte(fake_upstream):
    t0 = time.monotonic()
    r, data = post(fake_upstream, "/v1/chat/completions", chat_body(model="gpt-4o+slow:300"), OAI_H)
    assert r.status == 200 and time.monotonic() - t0 >= 0.3
    assert json.loads(data)["choices"][0]["message"]["content"] == "echo: hello world"


def test_stall_mid_stream(fake_upstream):
    c = conn(fake_upstream)
    t0 = time.monotonic()
    c.request("POST", "/v1/chat/completions", body=json.dumps(chat_body(stream=True)), headers={**OAI_H, "x-fake-behavior": "stall:400"})
    r = c.getresponse()
    first = r.readline()
    t_first = time.monotonic() - t0
    assert first.startswith(b"data: ") and t_first < 0.3
    rest = r.read()
    assert time.monotonic() - t0 >= 0.4
    assert rest.rstrip().endswith(b"data: [DONE]")


def test_stall_non_streaming_sends_headers_first(fake_upstream):
    c = conn(fake_upstream)
    t0 = time.monotonic()
    c.request("POST", "/v1/messages", body=json.dumps(msg_body()), headers={**ANT_H, "x-fake-behavior": "stall:300"})
    r = c.getresponse()
    assert r.status == 200 and time.monotonic() - t0 < 0.25
    assert json.loads(r.read())["content"][0]["text"] == "echo: hello world"
    assert time.monotonic() - t0 >= 0.3


@pytest.mark.parametrize("path,body,headers,end", [
    ("/v1/chat/completions", chat_body(stream=True, model="gpt-4o+long:40"), OAI_H, b"[DONE]"),
    ("/v1/messages", msg_body(stream=True, model="claude+long:40"), ANT_H, b"message_stop"),
])
def test_cut_closes_mid_stream(fake_upstream, path, body, headers, end):
    c = conn(fake_upstream)
    c.request("POST", path, body=json.dumps(body), headers={**headers, "x-fake-behavior": "cut"})
    r = c.getresponse()
    assert r.status == 200
    with pytest.raises(http.client.IncompleteRead) as ei:
        r.read()
    partial = ei.value.partial
    assert b"data: " in partial and end not in partial


def test_cut_seen_by_openai_sdk(fake_upstream):
    stream = oai(fake_upstream).chat.completions.create(
        model="gpt-4o+long:40+cut", messages=[{"role": "user", "content": "x"}], stream=True
    )
    got = []
    with pytest.raises(Exception):
        for c in stream:
            got.append(c)
    assert got  # some content arrived before the cut


@pytest.mark.parametrize("path,body,headers", [
    ("/v1/chat/completions", chat_body(stream=True), OAI_H),
    ("/v1/messages", msg_body(stream=True), ANT_H),
])
def test_malformed_sse_line(fake_upstream, path, body, headers):
    r, data = post(fake_upstream, path, body, {**headers, "x-fake-behavior": "malformed"})
    bad = []
    for ev in data.decode().split("\n\n"):
        for line in ev.split("\n"):
            if line.startswith("data: ") and line != "data: [DONE]":
                try:
                    json.loads(line[6:])
                except ValueError:
                    bad.append(line)
    assert len(bad) == 1


def test_sse_error_event(fake_upstream):
    r, data = post(fake_upstream, "/v1/messages", msg_body(stream=True), {**ANT_H, "x-fake-behavior": "sse_error"})
    assert b"event: error" in data and b"message_stop" not in data
    with pytest.raises(anthropic.APIStatusError):
        with ant(fake_upstream).messages.stream(
            model="c", max_tokens=10, messages=[{"role": "user", "content": "x"}], extra_headers={"x-fake-behavior": "sse_error"}
        ) as s:
            list(s)


@pytest.mark.parametrize("path,body,headers", [
    ("/v1/chat/completions", chat_body(), OAI_H),
    ("/v1/messages", msg_body(), ANT_H),
])
def test_error_json(fake_upstream, path, body, headers):
    r, data = post(fake_upstream, path, body, {**headers, "x-fake-behavior": "error_json"})
    assert r.status == 200
    with pytest.raises(ValueError):
        json.loads(data)


def test_long_answer_words(fake_upstream):
    r, data = post(fake_upstream, "/v1/chat/completions", chat_body(model="x+long:25"), OAI_H)
    assert len(json.loads(data)["choices"][0]["message"]["content"].split(" ")) == 25


def test_header_behavior_wins_over_model(fake_upstream):
    # model says tool, header says plain long:3 -> no tool call
    r, data = post(
        fake_upstream,
        "/v1/chat/completions",
        chat_body(model="gpt-4o+tool", tools=[SEARCH_TOOL_OPENAI]),
        {**OAI_H, "x-fake-behavior": "long:3"},
    )
    msg = json.loads(data)["choices"][0]["message"]
    assert "tool_calls" not in msg and len(msg["content"].split(" ")) == 3


def test_drip_and_client_abort_counted(fake_upstream):
    c = conn(fake_upstream)
    c.request("POST", "/v1/chat/completions", body=json.dumps(chat_body(stream=True, model="m+long:50+drip:50")), headers=OAI_H)
    r = c.getresponse()
    r.readline()
    assert get_json(fake_upstream, "/_fake/stats")["active_streams"] == 1
    c.sock.shutdown(socket.SHUT_RDWR)
    c.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        s = get_json(fake_upstream, "/_fake/stats")
        if s["client_aborts"] == 1 and s["active_streams"] == 0:
            break
        time.sleep(0.05)
    assert s["client_aborts"] == 1 and s["active_streams"] == 0


def test_cut_non_streaming_json(fake_upstream):
    c = conn(fake_upstream)
    c.request("POST", "/v1/chat/completions", body=json.dumps(chat_body()), headers={**OAI_H, "x-fake-behavior": "cut"})
    r = c.getresponse()
    assert r.status == 200
    with pytest.raises(http.client.IncompleteRead):
        r.read()


def test_slow_applies_to_injected_failures(fake_upstream):
    t0 = time.monotonic()
    r, data = post(fake_upstream, "/v1/messages", msg_body(), {**ANT_H, **key(), "x-fake-behavior": "slow:200,fail:429:1"})
    assert r.status == 429 and r.getheader("Retry-After") == "1"
    assert json.loads(data)["error"]["type"] == "rate_limit_error"
    assert time.monotonic() - t0 >= 0.2


def test_http_1_0_closes(fake_upstream):
    u = urlparse(fake_upstream)
    with socket.create_connection((u.hostname, u.port), timeout=5) as s:
        s.sendall(b"GET /health HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK") and data.endswith(b'{"status":"ok"}')


def test_many_concurrent_stalled_streams(fake_upstream):
    """Hundreds of streams held open at once (stall:500 each) all complete."""
    u = urlparse(fake_upstream)
    body = json.dumps(chat_body(stream=True)).encode()
    req = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n"
        b"x-fake-behavior: stall:500\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )

    async def one():
        reader, writer = await asyncio.open_connection(u.hostname, u.port)
        writer.write(req)
        data = await reader.read()  # until the server closes (Connection: close)
        writer.close()
        return data

    async def main():
        return await asyncio.gather(*(one() for _ in range(400)))

    t0 = time.monotonic()
    results = asyncio.run(main())
    assert all(b"data: [DONE]" in r for r in results)
    assert time.monotonic() - t0 < 5
