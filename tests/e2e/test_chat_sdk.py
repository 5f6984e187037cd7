"""The official OpenAI Python SDK against the real `hearth` binary, through both upstream protocols.

The upstream is the fake (OpenAI and Anthropic wire protocols); everything else is real: the SDK,
the hearth binary, its SQLite file, HTTP between them.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid

import httpx
import openai
import pytest

from hearth_proc import KEY, Hearth

PROVIDERS = ["openai", "anthropic"]


@pytest.fixture(scope="module")
def hearth(fake_upstream_server: str):
    with Hearth(fake_upstream_server, HEARTH_UPSTREAM_RETRIES="2", HEARTH_UPSTREAM_TIMEOUT_S="2") as h:
        yield h


@pytest.fixture
def client(hearth: Hearth) -> openai.OpenAI:
    return openai.OpenAI(base_url=hearth.base_url + "/v1", api_key=KEY, max_retries=0, timeout=30)


def model(provider: str, *behaviours: str) -> str:
    """A model name unique to the test (the fake keys its fault counters by model name)."""
    base = "gpt-e2e" if provider == "openai" else "claude-e2e"
    return f"{provider}/{base}-{uuid.uuid4().hex[:8]}" + "".join(f"+{b}" for b in behaviours)


def fake_stats(upstream: str) -> dict:
    with urllib.request.urlopen(upstream + "/_fake/stats", timeout=5) as r:
        return json.load(r)


WEATHER = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                               "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_non_streaming_turn(client: openai.OpenAI, provider: str) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=model(provider), messages=[{"role": "user", "content": "hello there"}])
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "echo: hello there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
    assert raw.headers["x-run-id"].startswith("run_") and raw.headers["x-session-id"].startswith("ses_")
    assert "hearth;dur=" in raw.headers["server-timing"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_streaming_turn_with_usage(client: openai.OpenAI, provider: str) -> None:
    chunks = list(client.chat.completions.create(
        model=model(provider, "long:12"), stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "stream please"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 12
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 2, "streamed in pieces"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_client_tools_are_returned(client: openai.OpenAI, provider: str) -> None:
    completion = client.chat.completions.create(
        model=model(provider, "tool"), tools=WEATHER, messages=[{"role": "user", "content": "Oslo"}])
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"q": "Oslo"}
    streamed = list(client.chat.completions.create(
        model=model(provider, "tool"), tools=WEATHER, stream=True, messages=[{"role": "user", "content": "Rome"}]))
    deltas = [tc for c in streamed if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas and deltas[0].function.name == "get_weather"
    assert [c.choices[0].finish_reason for c in streamed if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    # The client answers the call and the next turn goes on.
    follow = client.chat.completions.create(model=model(provider, "tool"), tools=WEATHER, messages=[
        {"role": "user", "content": "Oslo"},
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ])
    assert follow.choices[0].message.content == "tool said: sunny"


def test_typed_errors(client: openai.OpenAI, hearth: Hearth) -> None:
    bad_key = openai.OpenAI(base_url=hearth.base_url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad_key.chat.completions.create(model="echo", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.NotFoundError) as nf:
        client.chat.completions.create(model="openai-nope/none", messages=[{"role": "user", "content": "x"}])
    assert nf.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as br:
        client.chat.completions.create(model="echo", n=2, messages=[{"role": "user", "content": "x"}])
    assert br.value.param == "n"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="echo", messages=[{"role": "wizard", "content": "x"}])
    with pytest.raises(openai.APIStatusError) as upstream:
        client.chat.completions.create(model=model("openai", "fail:500:10"), messages=[{"role": "user", "content": "x"}])
    assert upstream.value.status_code == 502
    with pytest.raises(openai.APIStatusError) as slow:
        client.chat.completions.create(model=model("anthropic", "slow:4000"), messages=[{"role": "user", "content": "x"}])
    assert slow.value.status_code == 504


def test_rate_limit_is_a_typed_error(fake_upstream_server: str) -> None:
    with Hearth(fake_upstream_server, HEARTH_KEY_RPM="2") as limited:
        c = openai.OpenAI(base_url=limited.base_url + "/v1", api_key=KEY, max_retries=0)
        for _ in range(2):
            c.chat.completions.create(model="echo", messages=[{"role": "user", "content": "x"}])
        with pytest.raises(openai.RateLimitError) as e:
            c.chat.completions.create(model="echo", messages=[{"role": "user", "content": "x"}])
        assert int(e.value.response.headers["retry-after"]) >= 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_retry_before_first_byte_is_invisible(client: openai.OpenAI, fake_upstream: str, provider: str) -> None:
    name = model(provider, "fail:503:1")
    completion = client.chat.completions.create(model=name, messages=[{"role": "user", "content": "again"}])
    assert completion.choices[0].message.content == "echo: again"
    path = "/v1/chat/completions" if provider == "openai" else "/v1/messages"
    assert fake_stats(fake_upstream)["requests_by_path"][path] == 2, "one failure, one retry"


def test_retry_after_is_honoured(client: openai.OpenAI) -> None:
    started = time.monotonic()
    completion = client.chat.completions.create(model=model("openai", "fail:429:1"),
                                                messages=[{"role": "user", "content": "wait"}])
    assert completion.choices[0].message.content == "echo: wait"
    assert time.monotonic() - started >= 0.9, "the fake's Retry-After: 1 was waited for"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_stream_cut_after_content_ends_with_an_error_not_a_second_attempt(
        client: openai.OpenAI, fake_upstream: str, provider: str) -> None:
    text = ""
    with pytest.raises(openai.APIError):
        for chunk in client.chat.completions.create(model=model(provider, "long:30", "cut"), stream=True,
                                                    messages=[{"role": "user", "content": "cut me"}]):
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
    assert text, "some content arrived before the cut"
    assert len(text.split()) < 30, "the answer was cut, and no second attempt's text was appended"
    path = "/v1/chat/completions" if provider == "openai" else "/v1/messages"
    assert fake_stats(fake_upstream)["requests_by_path"][path] == 1, "no retry once content reached the client"


def test_a_chat_turn_is_a_run(client: openai.OpenAI, hearth: Hearth) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=model("openai"), messages=[{"role": "user", "content": "as a run"}])
    run_id = raw.headers["x-run-id"]
    headers = {"Authorization": f"Bearer {KEY}"}
    run = httpx.get(f"{hearth.base_url}/v1/runs/{run_id}", headers=headers).json()
    assert run["status"] == "completed" and run["output"]["content"] == "echo: as a run"
    assert run["session_id"] == raw.headers["x-session-id"]
    events = httpx.get(f"{hearth.base_url}/v1/runs/{run_id}/events?offset=-1", headers=headers)
    kinds = [e["type"] for e in events.json()]
    assert kinds[0] == "run.queued" and kinds[-1] == "run.completed" and "text.delta" in kinds
    assert events.headers["stream-closed"] == "true"
    middle = httpx.get(f"{hearth.base_url}/v1/runs/{run_id}/events?offset=2", headers=headers).json()
    assert [e["seq"] for e in middle] == list(range(3, len(kinds) + 1))
    # The session continues with X-Session-Id, and its history reaches the model.
    second = client.chat.completions.with_raw_response.create(
        model=model("openai"), messages=[{"role": "user", "content": "second turn"}],
        extra_headers={"X-Session-Id": raw.headers["x-session-id"]})
    assert second.headers["x-session-id"] == raw.headers["x-session-id"]
    session = httpx.get(f"{hearth.base_url}/v1/sessions/{raw.headers['x-session-id']}", headers=headers).json()
    assert [m["content"] for m in session["messages"]] == [
        "as a run", "echo: as a run", "second turn", "echo: second turn"]


def test_server_timing_separates_hearth_from_upstream(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=model("openai", "slow:300"), messages=[{"role": "user", "content": "timing"}])
    timing = dict(part.strip().split(";dur=") for part in raw.headers["server-timing"].split(","))
    assert float(timing["upstream"]) >= 250, timing
    assert 0 <= float(timing["hearth"]) < 250, timing


def test_a_client_that_disconnects_cancels_the_run_and_the_upstream_call(hearth: Hearth, fake_upstream: str) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    body = {"model": model("openai", "long:50", "drip:200"), "stream": True,
            "messages": [{"role": "user", "content": "go slowly"}]}
    with httpx.Client(timeout=30) as http:
        with http.stream("POST", f"{hearth.base_url}/v1/chat/completions", json=body, headers=headers) as r:
            run_id = r.headers["x-run-id"]
            for line in r.iter_lines():
                if '"content":"' in line and '"content":""' not in line:
                    break  # the first words arrived; now hang up
        run = http.get(f"{hearth.base_url}/v1/runs/{run_id}?wait=10", headers=headers).json()
    assert run["status"] == "cancelled", run
    deadline = time.monotonic() + 10
    while fake_stats(fake_upstream)["client_aborts"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake_stats(fake_upstream)["client_aborts"] >= 1, "the upstream call was dropped too"


def test_a_streamed_turn_is_stored_before_its_first_chunk_and_survives_a_crash(fake_upstream: str) -> None:
    """A streamed turn on a new session is not written at dispatch (docs/ARCHITECTURE.md), but
    always before its answer starts: killed right after the first words reached the client, the
    server comes back with the run, its session and its first events."""
    headers = {"Authorization": f"Bearer {KEY}"}
    body = {"model": model("openai", "long:6", "drip:150"), "stream": True,
            "messages": [{"role": "user", "content": "keep me"}]}
    first = Hearth(fake_upstream)
    db = first.dir.name + "/hearth.db"
    try:
        with httpx.Client(timeout=30) as http:
            with http.stream("POST", f"{first.base_url}/v1/chat/completions", json=body, headers=headers) as r:
                assert r.status_code == 200
                run_id, session_id = r.headers["x-run-id"], r.headers["x-session-id"]
                for line in r.iter_lines():
                    if '"content":"' in line and '"content":""' not in line:
                        break  # the first words arrived: crash now
                first.proc.kill()
                first.proc.wait()
        with Hearth(fake_upstream, HEARTH_DB=db) as second:
            run = httpx.get(f"{second.base_url}/v1/runs/{run_id}", headers=headers)
            assert run.status_code == 200, run.text
            assert run.json()["session_id"] == session_id
            events = httpx.get(f"{second.base_url}/v1/runs/{run_id}/events?offset=-1", headers=headers).json()
            assert [e["type"] for e in events][:3] == ["run.queued", "run.started", "text.delta"]
            session = httpx.get(f"{second.base_url}/v1/sessions/{session_id}", headers=headers)
            assert session.status_code == 200, session.text
    finally:
        first.dir.cleanup()


def test_models_lists_echo(client: openai.OpenAI) -> None:
    assert "echo" in [m.id for m in client.models.list().data]


def test_a_client_that_hangs_up_on_a_whole_answer_cancels_the_run_and_the_upstream_call(
        hearth: Hearth, fake_upstream: str) -> None:
    """A non-streamed turn runs on the request itself: hanging up must still end the run."""
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(timeout=30) as http:
        first = http.post(f"{hearth.base_url}/v1/chat/completions", headers=headers,
                          json={"model": "echo", "messages": [{"role": "user", "content": "hi"}]})
        session = first.headers["x-session-id"]
        aborts = fake_stats(fake_upstream)["client_aborts"]
        with pytest.raises(httpx.ReadTimeout):
            http.post(f"{hearth.base_url}/v1/chat/completions", timeout=0.5,
                      headers={**headers, "X-Session-Id": session},
                      json={"model": model("openai", "slow:5000"),
                            "messages": [{"role": "user", "content": "take your time"}]})
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            view = http.get(f"{hearth.base_url}/v1/sessions/{session}", headers=headers).json()
            if len(view["runs"]) == 2 and view["runs"][1]["status"] != "running":
                break
            time.sleep(0.05)
        runs = view["runs"]
        assert [r["status"] for r in runs] == ["completed", "cancelled"], runs
        assert runs[1]["error"]["code"] == "cancelled", runs[1]
        assert view["status"] == "idle", view
        events = http.get(f"{hearth.base_url}/v1/runs/{runs[1]['id']}/events?offset=-1", headers=headers).json()
        assert [e["type"] for e in events] == ["run.queued", "run.started", "run.cancelled"], events
    while fake_stats(fake_upstream)["client_aborts"] <= aborts and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake_stats(fake_upstream)["client_aborts"] > aborts, "the upstream call was dropped too"
