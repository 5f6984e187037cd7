"""hearth's MCP client against the MCP project's reference server, server-everything (npm, pinned in
tests/mcp-peers/package.json, installed by scripts/test), over Streamable HTTP: a chat turn
through the OpenAI SDK calls each of its tools below through hearth.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import openai
import pytest

from hearth_proc import KEY, Hearth
from mcp_support import free_port, listed, mcp_config, script

ENTRY = Path(__file__).resolve().parents[1] / "mcp-peers/node_modules/@modelcontextprotocol/server-everything/dist/index.js"

# (tool, arguments, text the answer must contain); an error is prefixed "error: ".
SCENARIOS = [
    ("echo", {"message": "hi from hearth"}, "Echo: hi from hearth"),
    ("get-sum", {"a": 2, "b": 3}, "The sum of 2 and 3 is 5."),
    ("get-structured-content", {"location": "Chicago"}, "temperature"),
    ("get-annotated-message", {"messageType": "success", "includeImage": False}, "Operation completed successfully"),
    ("get-tiny-image", {}, '"type":"image"'),
    ("get-resource-links", {"count": 2}, "resource links"),
    ("trigger-long-running-operation", {"duration": 1, "steps": 2}, "Long running operation completed"),
    ("get-sum", {"a": "two", "b": 3}, "error: "),  # invalid arguments, refused by the server
    # hearth's client offers neither sampling nor elicitation: a clear error, not a hang.
    ("trigger-sampling-request", {"prompt": "hello", "maxTokens": 10}, "error: "),
    ("trigger-elicitation-request", {}, "error: "),
]


@pytest.fixture(scope="module")
def everything():
    if not ENTRY.exists():
        pytest.skip("tests/mcp-peers is not installed (scripts/test runs `npm ci` there)")
    port = free_port()
    proc = subprocess.Popen(["node", str(ENTRY), "streamableHttp"], env={**os.environ, "PORT": str(port)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 20
    while "listening" not in proc.stdout.readline():
        assert time.monotonic() < deadline and proc.poll() is None, "server-everything did not start"
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def hearth(fake_upstream_server: str, everything: str):
    config = mcp_config(ev={"url": everything, "timeout_ms": 15000})
    with Hearth(fake_upstream_server, MCP_CONFIG_JSON=config) as h:
        assert listed(h.lines, "ev"), "\n".join(h.lines)
        yield h


@pytest.mark.parametrize("tool,arguments,expected", SCENARIOS, ids=[f"{s[0]}-{i}" for i, s in enumerate(SCENARIOS)])
def test_server_everything_tool_through_hearth(hearth, fake_upstream, tool, arguments, expected):
    client = openai.OpenAI(base_url=hearth.base_url + "/v1", api_key=KEY, max_retries=0, timeout=60)
    model = script(fake_upstream, (f"ev__{tool}", arguments))
    answer = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "go"}])
    text = answer.choices[0].message.content.removeprefix("tool said: ")
    assert expected in text, text
    if not expected.startswith("error: "):
        assert not text.startswith("error: "), text
