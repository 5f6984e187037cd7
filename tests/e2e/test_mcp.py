"""MCP tools end to end: the real hearth binary calls tools on a real MCP server (the official MCP
Python SDK's MCPServer, Streamable HTTP on loopback), driven by the fake upstream's scripted tool
calls, and the official OpenAI Python SDK sees the answers.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from hearth_proc import KEY, Hearth
from mcp_support import (JWT_SECRET, McpServer, listed, mcp_config, run_events, script, user_jwt)


@pytest.fixture(scope="module")
def mcp(tmp_path_factory):
    log = str(tmp_path_factory.mktemp("mcp") / "requests.jsonl")
    with McpServer(log=log) as server:
        server.log = log
        yield server


@pytest.fixture(scope="module")
def hearth(fake_upstream_server: str, mcp: McpServer):
    config = mcp_config(
        calc={"url": mcp.url, "timeout_ms": 3000},
        me={"url": mcp.url, "user_assertion": True, "allowed_tools": ["whoami"], "default": True},
    )
    with Hearth(fake_upstream_server, MCP_CONFIG_JSON=config, HEARTH_JWT_SECRET=JWT_SECRET) as h:
        assert listed(h.lines, "calc") and listed(h.lines, "me"), "\n".join(h.lines)
        mcp.tell_jwks(h.base_url)
        yield h


@pytest.fixture
def client(hearth: Hearth) -> openai.OpenAI:
    return openai.OpenAI(base_url=hearth.base_url + "/v1", api_key=KEY, max_retries=0, timeout=60)


def as_user(client: openai.OpenAI, sub: str) -> openai.OpenAI:
    return client.with_options(default_headers={"X-Runtime-User": user_jwt(sub)})


def tool_events(hearth: Hearth, run_id: str) -> list[dict]:
    return [e for e in run_events(hearth.base_url, KEY, run_id) if e["type"].startswith("tool.")]


def test_a_tool_call_runs_on_the_mcp_server_and_the_sdk_sees_the_answer(client, hearth, fake_upstream):
    model = script(fake_upstream, ("calc__add", {"a": 2, "b": 3}))
    raw = client.chat.completions.with_raw_response.create(model=model, messages=[{"role": "user", "content": "2+3?"}])
    completion = raw.parse()
    assert completion.choices[0].message.content == "tool said: 5"
    assert completion.choices[0].finish_reason == "stop"
    events = tool_events(hearth, raw.headers["x-run-id"])
    assert [e["type"] for e in events] == ["tool.started", "tool.finished"]
    finished = events[1]["data"]
    assert finished["name"] == "calc__add" and finished["is_error"] is False and finished["result"] == "5"
    assert isinstance(finished["duration_ms"], int)


def test_streaming_turn_with_a_tool_call(client, fake_upstream):
    model = script(fake_upstream, ("calc__add", {"a": 40, "b": 2}))
    chunks = list(client.chat.completions.create(model=model, stream=True,
                                                 messages=[{"role": "user", "content": "sum"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "tool said: 42"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]


def test_a_streaming_turn_shows_tool_progress_as_sse_comments(hearth, fake_upstream):
    model = script(fake_upstream, ("calc__sleep", {"ms": 200}))
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "wait"}]}
    with httpx.stream("POST", hearth.base_url + "/v1/chat/completions", json=body, timeout=30,
                      headers={"authorization": f"Bearer {KEY}"}) as response:
        lines = [line for line in response.iter_lines() if line]
    comments = [line for line in lines if line.startswith(":")]
    assert any("tool calc__sleep started" in c for c in comments), lines
    assert any("tool calc__sleep finished" in c for c in comments), lines
    assert lines[-1] == "data: [DONE]"


def test_parallel_calls_overlap(client, fake_upstream):
    model = script(fake_upstream, ("calc__sleep", {"ms": 1200}), ("calc__sleep", {"ms": 1200}),
                   ("calc__add", {"a": 1, "b": 1}))
    started = time.monotonic()
    completion = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "wait"}])
    elapsed = time.monotonic() - started
    assert completion.choices[0].message.content == "tool said: slept 1200 | slept 1200 | 2"
    assert elapsed < 2.2, f"two 1.2 s sleeps took {elapsed:.2f} s: not in parallel"


def test_every_failure_is_a_tool_error_and_the_run_completes(client, hearth, fake_upstream):
    model = script(
        fake_upstream,
        ("calc__fail", {"message": "boom"}),            # the tool raises: isError
        ("calc__add", {"a": "two", "b": 3}),            # invalid arguments (the server validates)
        ("calc__nope", {}),                             # unknown tool
        ("calc__sleep", {"ms": 10000}),                 # past timeout_ms (3000)
    )
    raw = client.chat.completions.with_raw_response.create(model=model, messages=[{"role": "user", "content": "x"}])
    content = raw.parse().choices[0].message.content
    parts = content.removeprefix("tool said: ").split(" | ")
    assert len(parts) == 4 and all(p.startswith("error: ") for p in parts), content
    assert "boom" in parts[0]
    assert "unknown tool `calc__nope`" in parts[2]
    assert "timed out after 3000 ms" in parts[3] and "do not repeat it blindly" in parts[3]
    finished = [e["data"] for e in tool_events(hearth, raw.headers["x-run-id"]) if e["type"] == "tool.finished"]
    assert len(finished) == 4 and all(f["is_error"] for f in finished)


def test_user_assertion_is_verified_by_the_server_against_the_jwks(client, fake_upstream):
    model = script(fake_upstream, ("me__whoami", {}))
    completion = as_user(client, "alice").chat.completions.create(
        model=model, messages=[{"role": "user", "content": "who am I?"}])
    who = json.loads(completion.choices[0].message.content.removeprefix("tool said: "))
    assert who["sub"] == "alice" and who["iss"] == "hearth" and who["org"].startswith("org_")
    assert 0 < who["ttl"] <= 300


def test_two_users_at_once_get_their_own_identity_and_session(client, fake_upstream):
    model = script(fake_upstream, ("me__whoami", {}), ("calc__sleep", {"ms": 300}), ("me__whoami", {}))

    def ask(sub: str) -> list[dict]:
        completion = as_user(client, sub).chat.completions.create(
            model=model, messages=[{"role": "user", "content": "who?"}])
        parts = completion.choices[0].message.content.removeprefix("tool said: ").split(" | ")
        return [json.loads(parts[0]), json.loads(parts[2])]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(ask, ["bob", "carol", "bob", "carol"]))
    sessions: dict[str, set] = {}
    for sub, answers in zip(["bob", "carol", "bob", "carol"], results):
        for who in answers:
            assert who["sub"] == sub, (sub, who)
            sessions.setdefault(sub, set()).add(who["session"])
    assert sessions["bob"].isdisjoint(sessions["carol"]), sessions


def test_the_callers_credentials_never_reach_the_mcp_server(client, mcp, fake_upstream):
    token = user_jwt("dave")
    model = script(fake_upstream, ("me__whoami", {}), ("calc__add", {"a": 1, "b": 2}))
    client.with_options(default_headers={"X-Runtime-User": token}).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "x"}])
    seen = open(mcp.log).read()
    assert seen, "the server logged the requests it was sent"
    assert KEY not in seen and token not in seen
    assertions = [json.loads(line)["headers"].get("authorization", "") for line in seen.splitlines()]
    assert any(a.startswith("Bearer ey") for a in assertions), "the assertion server got assertions"


def test_mixed_turn_runs_server_tools_and_returns_client_tools(client, hearth, fake_upstream):
    weather = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    model = script(fake_upstream, ("calc__add", {"a": 1, "b": 1}), ("get_weather", {"city": "Oslo"}))
    raw = client.chat.completions.with_raw_response.create(
        model=model, tools=weather, messages=[{"role": "user", "content": "x"}])
    choice = raw.parse().choices[0]
    assert choice.finish_reason == "tool_calls"
    assert [c.function.name for c in choice.message.tool_calls] == ["get_weather"]
    finished = [e["data"] for e in tool_events(hearth, raw.headers["x-run-id"]) if e["type"] == "tool.finished"]
    assert [(f["name"], f["result"]) for f in finished] == [("calc__add", "2")]


def test_a_client_tool_named_like_a_server_tool_is_refused(client):
    tools = [{"type": "function", "function": {"name": "calc__add", "parameters": {"type": "object"}}}]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="echo", tools=tools, messages=[{"role": "user", "content": "x"}])
    assert "calc__add" in err.value.message and err.value.body["param"] == "tools"


def test_jwks_publishes_the_assertion_key(hearth):
    jwks = httpx.get(hearth.base_url + "/.well-known/jwks.json").json()
    (key,) = jwks["keys"]
    assert key["kty"] == "OKP" and key["crv"] == "Ed25519" and key["alg"] == "EdDSA" and key["kid"]
