#!/usr/bin/env python3
"""conformance_client.py SERVER_URL — hearth as the *client* under test of the MCP conformance
package (npm ``@modelcontextprotocol/conformance``, ``conformance client --command …``).

The package starts a test MCP server for a scenario (named in ``MCP_CONFORMANCE_SCENARIO``) and
runs this command with the server's URL. This starts the fake upstream and the real hearth binary
(``HEARTH_BIN``) with that server configured, waits until hearth has listed its tools (the
``initialize`` handshake and ``tools/list``), then, for a scenario about calling tools, drives
one chat turn whose model calls the scenario's tool through hearth. Exit status 0 when hearth
answered the turn.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from conftest import start_fake, stop_fake  # noqa: E402
from hearth_proc import KEY, Hearth  # noqa: E402
from mcp_support import listed, mcp_config, script  # noqa: E402

# The tool each scenario's server offers, and the arguments to call it with.
CALLS = {
    "tools_call": ("add_numbers", {"a": 2, "b": 3}),
    "sse-retry": ("test_reconnection", {}),
    "elicitation-sep1034-client-defaults": ("test_client_elicitation_defaults", {}),
}


def main() -> int:
    url = sys.argv[1]
    scenario = os.environ.get("MCP_CONFORMANCE_SCENARIO", "")
    fake, upstream = start_fake()
    try:
        with Hearth(upstream, MCP_CONFIG_JSON=mcp_config(conf={"url": url, "timeout_ms": 20000})) as hearth:
            if not listed(hearth.lines, "conf"):
                print("hearth did not list the server's tools:\n" + "\n".join(hearth.lines), file=sys.stderr)
                return 1
            if scenario not in CALLS:
                return 0
            tool, arguments = CALLS[scenario]
            model = script(upstream, (f"conf__{tool}", arguments))
            body = json.dumps({"model": model, "messages": [{"role": "user", "content": "go"}]}).encode()
            req = urllib.request.Request(hearth.base_url + "/v1/chat/completions", data=body, method="POST",
                                         headers={"authorization": f"Bearer {KEY}", "content-type": "application/json"})
            with urllib.request.urlopen(req, timeout=60) as r:
                answer = json.load(r)["choices"][0]["message"]["content"]
            print(f"{scenario}: {answer}", file=sys.stderr)
            return 0
    finally:
        stop_fake(fake)


if __name__ == "__main__":
    sys.exit(main())
