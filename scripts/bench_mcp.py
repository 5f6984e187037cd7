"""Scenario (i) of scripts/bench: the time hearth adds to one MCP tool call over calling the MCP
server directly (`scripts/bench --mcp-only` runs only this).

Two MCP servers, each when installed: tests/e2e/mcp_server.py (the official MCP Python SDK's
MCPServer, tool `add`; it needs the e2e venv, `.venv`, that scripts/test creates), and the MCP
project's server-everything (Node, tool `get-sum`; tests/mcp-peers, installed by
scripts/test). Rounds, each of `n` sequential calls of every kind:

- direct MCP: one session, `tools/call add` as raw HTTP POSTs on one kept-alive connection;
- direct model: one non-streaming call to the fake upstream;
- hearth, no tool: a chat turn (one model call);
- hearth, one tool: a chat turn whose model calls `calc__add` once (two model calls and the tool).

hearth's tool step = (one tool − no tool) − direct model: the MCP call as hearth makes it plus
everything hearth does around it (session lookup, rmcp, the tool events written, the second
model call's own overhead). Overhead = hearth's tool step − direct MCP.
"""

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER = os.path.join(ROOT, "tests", "e2e", "mcp_server.py")
VENV_PYTHON = os.path.join(ROOT, ".venv", "bin", "python")
MCP_HEADERS = ["Accept: application/json, text/event-stream"]


def start_mcp_server(*flags):
    python = VENV_PYTHON if os.path.exists(VENV_PYTHON) else sys.executable
    proc = subprocess.Popen([python, SERVER, "--port", "0", *flags], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline().split()
    if len(line) != 2 or line[0] != "LISTENING":
        proc.kill()
        return None, None
    return proc, int(line[1])


def rpc(method, params=None, id_=1):
    msg = {"jsonrpc": "2.0", "method": method}
    if id_ is not None:
        msg["id"] = id_
    if params is not None:
        msg["params"] = params
    return msg


async def direct_mcp(request, port, n, tool="add", path="/mcp"):
    """`n` sequential tools/call on one session, one connection: latencies in ms."""
    init = rpc("initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                              "clientInfo": {"name": "bench", "version": "1"}})
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    # The session id comes back as a header, which the bench's client does not return: read it raw.
    body = json.dumps(init).encode()
    writer.write((f"POST /mcp HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                  f"Accept: application/json, text/event-stream\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body)
    session, length, chunked = None, 0, False
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        name = name.lower()
        if name == "mcp-session-id":
            session = value.strip()
        elif name == "content-length":
            length = int(value)
        elif name == "transfer-encoding" and "chunked" in value:
            chunked = True
    if chunked:  # drain the body
        while (size := int((await reader.readline()).strip() or b"0", 16)) > 0:
            await reader.readexactly(size + 2)
        await reader.readline()
    else:
        await reader.readexactly(length)
    conn = (reader, writer)
    headers = MCP_HEADERS + [f"mcp-session-id: {session}", "mcp-protocol-version: 2025-11-25"]
    _, _, conn = await request("127.0.0.1", port, "POST", "/mcp", rpc("notifications/initialized", id_=None),
                               headers=headers, conn=conn)
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        status, payload, conn = await request("127.0.0.1", port, "POST", "/mcp",
                                              rpc("tools/call", {"name": tool, "arguments": {"a": 2, "b": 3}}, i + 2),
                                              headers=headers, conn=conn)
        times.append((time.perf_counter() - t0) * 1000)
        if status != 200 or b"5" not in payload:
            raise RuntimeError(f"direct MCP call failed: {status} {payload[:200]!r}")
    conn[1].close()
    return times


async def sequential(request, port, path, body, headers, n, check):
    conn = await asyncio.open_connection("127.0.0.1", port)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        status, payload, conn = await request("127.0.0.1", port, "POST", path, body, headers=headers, conn=conn)
        times.append((time.perf_counter() - t0) * 1000)
        if status != 200 or check not in payload:
            raise RuntimeError(f"{path} failed: {status} {payload[:300]!r}")
    conn[1].close()
    return times


EVERYTHING = os.path.join(ROOT, "tests", "mcp-peers", "node_modules", "@modelcontextprotocol",
                          "server-everything", "dist", "index.js")


def start_everything():
    """server-everything (Node), when scripts/test installed it: (process, port) or (None, None)."""
    if not os.path.exists(EVERYTHING):
        return None, None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["node", EVERYTHING, "streamableHttp"], env=dict(os.environ, PORT=str(port)),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.perf_counter() + 20
    while "listening" not in proc.stdout.readline():
        if time.perf_counter() > deadline or proc.poll() is not None:
            proc.kill()
            return None, None
    return proc, port


# (label, how to start it, its tool's name, the text of a right answer)
SERVERS = [
    ("Python SDK MCPServer", start_mcp_server, "add", b"tool said: 5"),
    ("server-everything (Node)", start_everything, "get-sum", b"is 5."),
]


def register_script(fake_port, name, tool):
    spec = {"name": name, "calls": [{"name": tool, "arguments": {"a": 2, "b": 3}}]}
    req = urllib.request.Request(f"http://127.0.0.1:{fake_port}/_fake/script", data=json.dumps(spec).encode(),
                                 method="POST")
    urllib.request.urlopen(req, timeout=5).read()


def mcp_overhead(Hearth, request, median, row, fake_port, data_dir, rounds, n):
    for i, (label, start, tool, answer) in enumerate(SERVERS):
        server, port = start()
        if server is None:
            print(f"| (i) MCP tool call, {label}: skipped (run scripts/test once: it installs the e2e venv "
                  "and tests/mcp-peers)")
            continue
        try:
            one_server(Hearth, request, median, row, fake_port, os.path.join(data_dir, str(i)), rounds, n,
                       (label, port, tool, answer))
        finally:
            server.terminate()
            server.wait(timeout=10)


def one_server(Hearth, request, median, row, fake_port, data_dir, rounds, n, spec):
    label, mcp_port, tool, answer = spec
    os.makedirs(data_dir, exist_ok=True)
    config = json.dumps({"mcpServers": {"calc": {"url": f"http://127.0.0.1:{mcp_port}/mcp"}}})
    hearth = Hearth(data_dir, fake_port, extra_env={"MCP_CONFIG_JSON": config})
    try:
        register_script(fake_port, f"bench-mcp-{tool}", f"calc__{tool}")
        messages = [{"role": "user", "content": "2+3"}]
        tool_turn = {"model": f"openai/gpt-bench+script:bench-mcp-{tool}", "messages": messages}
        plain_turn = {"model": "openai/gpt-bench", "messages": messages}
        deadline = time.perf_counter() + 30
        while True:  # hearth lists the server's tools in the background
            try:
                asyncio.run(sequential(request, hearth.port, "/v1/chat/completions", tool_turn, [], 1, answer))
                break
            except RuntimeError:
                if time.perf_counter() > deadline:
                    raise
                time.sleep(0.2)
        model_direct = {"model": "gpt-bench", "messages": messages}
        direct, model, plain, called = [], [], [], []
        for _ in range(rounds):
            direct += asyncio.run(direct_mcp(request, mcp_port, n, tool))
            model += asyncio.run(sequential(request, fake_port, "/v1/chat/completions", model_direct,
                                            ["Authorization: Bearer bench"], n, b"echo:"))
            plain += asyncio.run(sequential(request, hearth.port, "/v1/chat/completions", plain_turn, [], n, b"echo:"))
            called += asyncio.run(sequential(request, hearth.port, "/v1/chat/completions", tool_turn, [], n, answer))
        step = median(called) - median(plain) - median(model)
        row(f"(i) MCP call, {label[:22]}", median(direct), step)
        print(f"|     medians of {len(direct)} each: direct MCP call {median(direct):.3f} ms; direct model call "
              f"{median(model):.3f} ms; hearth turn without tool {median(plain):.3f} ms, with one MCP call "
              f"{median(called):.3f} ms")
    finally:
        hearth.stop()
