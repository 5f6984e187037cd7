"""MCP faults end to end: a server down at start, killed mid-call, answering garbage, or offering a
tool with a malformed schema. Each gives the model a clear tool error; hearth and the run go on.
"""

from __future__ import annotations

import os
import threading
import time

import openai

from hearth_proc import KEY, Hearth
from mcp_support import McpServer, free_port, listed, mcp_config, script, wait_for_log


def chat(hearth: Hearth, model: str) -> str:
    client = openai.OpenAI(base_url=hearth.base_url + "/v1", api_key=KEY, max_retries=0, timeout=60)
    completion = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "go"}])
    return completion.choices[0].message.content


def count(lines: list[str], needle: str) -> int:
    return sum(needle in line for line in list(lines))


def test_a_server_down_at_start_is_logged_once_and_its_tools_appear_when_it_comes_up(fake_upstream):
    port = free_port()
    config = mcp_config(calc={"url": f"http://127.0.0.1:{port}/mcp"})
    with Hearth(fake_upstream, MCP_CONFIG_JSON=config, HEARTH_MCP_REFRESH_S="1") as hearth:
        assert wait_for_log(hearth.lines, "MCP server unreachable"), "\n".join(hearth.lines)
        time.sleep(2.5)  # several retries later
        assert count(hearth.lines, "MCP server unreachable") == 1, "one line, not one per retry"
        model = script(fake_upstream, ("calc__add", {"a": 2, "b": 3}))
        assert chat(hearth, model).startswith("tool said: error: unknown tool `calc__add`")
        with McpServer(port=port):
            assert listed(hearth.lines, "calc"), "\n".join(hearth.lines)
            assert count(hearth.lines, "MCP server is up again") == 1
            assert chat(hearth, model) == "tool said: 5"


def test_a_server_killed_mid_call_gives_a_tool_error_and_the_run_completes(fake_upstream):
    server = McpServer()
    config = mcp_config(calc={"url": server.url, "timeout_ms": 15000})
    try:
        with Hearth(fake_upstream, MCP_CONFIG_JSON=config) as hearth:
            assert listed(hearth.lines, "calc")
            threading.Timer(1.0, server.kill).start()
            started = time.monotonic()
            answer = chat(hearth, script(fake_upstream, ("calc__sleep", {"ms": 8000}), ("calc__add", {"a": 1, "b": 1})))
            parts = answer.removeprefix("tool said: ").split(" | ")
            assert parts[0].startswith("error: ") and "unknown" in parts[0], answer
            assert parts[1] == "2", "the call that finished before the kill kept its result"
            assert time.monotonic() - started < 14, "the broken call ended before its timeout"
            assert hearth.proc.poll() is None
    finally:
        server.stop()


def test_a_malformed_tool_schema_is_skipped_and_calling_it_says_why(fake_upstream):
    with McpServer("--malformed-schema") as server:
        config = mcp_config(calc={"url": server.url})
        with Hearth(fake_upstream, MCP_CONFIG_JSON=config) as hearth:
            assert listed(hearth.lines, "calc")
            assert wait_for_log(hearth.lines, "skipping an MCP tool")
            assert any("calc__broken" in line for line in hearth.lines if "skipping" in line)
            answer = chat(hearth, script(fake_upstream, ("calc__broken", {"x": "y"}), ("calc__add", {"a": 2, "b": 2})))
            parts = answer.removeprefix("tool said: ").split(" | ")
            assert "`calc__broken` is not available" in parts[0] and "malformed" in parts[0], answer
            assert parts[1] == "4"


def test_a_server_answering_garbage_gives_tool_errors_and_hearth_goes_on(fake_upstream):
    with McpServer() as good, McpServer("--garbage") as junk:
        config = mcp_config(calc={"url": good.url}, junk={"url": junk.url})
        with Hearth(fake_upstream, MCP_CONFIG_JSON=config) as hearth:
            assert listed(hearth.lines, "calc")
            assert wait_for_log(hearth.lines, "MCP server unreachable")
            # Garbage once the tools are listed: the calls themselves get garbage.
            good.garbage()
            answer = chat(hearth, script(fake_upstream, ("calc__add", {"a": 1, "b": 2}), ("junk__add", {})))
            parts = answer.removeprefix("tool said: ").split(" | ")
            assert len(parts) == 2 and all(p.startswith("error: ") for p in parts), answer
            assert "calc" in parts[0] and "unknown tool `junk__add`" in parts[1], answer
            assert hearth.proc.poll() is None


def test_a_tool_added_while_the_server_runs_is_offered_after_the_refresh(fake_upstream):
    with McpServer() as server:
        config = mcp_config(calc={"url": server.url})
        with Hearth(fake_upstream, MCP_CONFIG_JSON=config, HEARTH_MCP_REFRESH_S="1") as hearth:
            assert listed(hearth.lines, "calc")
            model = script(fake_upstream, ("calc__extra", {}))
            assert chat(hearth, model) == "tool said: error: unknown tool `calc__extra`"
            server.grow()
            deadline = time.monotonic() + 10
            while chat(hearth, model) != "tool said: extra":
                assert time.monotonic() < deadline, "the new tool was never offered"
                time.sleep(0.3)


def test_a_call_interrupted_by_a_crash_is_not_replayed_blindly(fake_upstream):
    """hearth dies (SIGKILL) during an MCP call; restarted on the same database, it gives the run
    a new attempt, and the model is told that the call started and its outcome is unknown."""
    import json
    import urllib.request

    with McpServer() as server:
        config = mcp_config(calc={"url": server.url, "timeout_ms": 20000})
        first = Hearth(fake_upstream, MCP_CONFIG_JSON=config)
        db = os.path.join(first.dir.name, "hearth.db")
        try:
            assert listed(first.lines, "calc")
            model = script(fake_upstream, ("calc__sleep", {"ms": 1500}))
            body = json.dumps({"model": model, "messages": [{"role": "user", "content": "go"}]}).encode()
            req = urllib.request.Request(first.base_url + "/v1/runs", data=body, method="POST",
                                         headers={"authorization": f"Bearer {KEY}", "content-type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as r:
                run_id = json.load(r)["id"]
            time.sleep(0.6)  # the call is under way on the MCP server
            first.proc.kill()
            first.proc.wait(timeout=10)
            with Hearth(fake_upstream, MCP_CONFIG_JSON=config, HEARTH_DB=db) as second:
                req = urllib.request.Request(f"{second.base_url}/v1/runs/{run_id}?wait=30",
                                             headers={"authorization": f"Bearer {KEY}"})
                with urllib.request.urlopen(req, timeout=40) as r:
                    run = json.load(r)
                assert run["status"] == "completed" and run["attempt"] == 2, run
                with urllib.request.urlopen(fake_upstream + "/_fake/stats", timeout=5) as r:
                    sent = json.load(r)["last_request"]["body"]["messages"]
                notes = [m["content"] for m in sent if m["role"] == "system" and "interrupted" in (m["content"] or "")]
                assert notes and "calc__sleep" in notes[0] and "Do not repeat them blindly" in notes[0], sent
        finally:
            first.proc.kill()
            first.dir.cleanup()


def test_an_https_mcp_server_is_reached_when_its_ca_is_trusted_and_refused_otherwise(fake_upstream, tmp_path):
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("localhost")
    cert, key, ca_pem = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    leaf.private_key_and_cert_chain_pem.write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_pem))
    with McpServer("--tls-cert", str(cert), "--tls-key", str(key)) as server:
        config = mcp_config(calc={"url": f"https://localhost:{server.port}/mcp"})
        with Hearth(fake_upstream, MCP_CONFIG_JSON=config, SSL_CERT_FILE=str(ca_pem)) as hearth:
            assert listed(hearth.lines, "calc"), "\n".join(hearth.lines)
            assert chat(hearth, script(fake_upstream, ("calc__add", {"a": 20, "b": 22}))) == "tool said: 42"
        with Hearth(fake_upstream, MCP_CONFIG_JSON=config) as hearth:
            assert wait_for_log(hearth.lines, "MCP server unreachable")
            line = next(x for x in hearth.lines if "MCP server unreachable" in x)
            assert "certificate" in line.lower(), line
