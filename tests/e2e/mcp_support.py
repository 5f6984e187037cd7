"""Helpers of the MCP end-to-end tests: the Python-SDK MCP server as a process, scripted tool
calls of the fake upstream, user JWTs, and reading a run's events."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import jwt

MCP_SERVER = Path(__file__).with_name("mcp_server.py")
JWT_SECRET = "e2e-user-jwt-secret-0123456789abcdef"


class McpServer:
    """tests/e2e/mcp_server.py on loopback (port 0, or the given one)."""

    def __init__(self, *flags: str, port: int = 0, log: str | None = None) -> None:
        args = [sys.executable, str(MCP_SERVER), "--port", str(port), *flags]
        if log:
            args += ["--log", log]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=None, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("LISTENING "):
            self.proc.kill()
            raise RuntimeError(f"mcp_server.py did not start: {line!r}")
        self.port = int(line.split()[1])
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = self.base + "/mcp"

    def tell_jwks(self, hearth_base: str) -> None:
        body = json.dumps({"url": hearth_base + "/.well-known/jwks.json"}).encode()
        req = urllib.request.Request(self.base + "/_control/jwks", data=body, method="POST",
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 200

    def grow(self) -> None:
        """Adds the tool `extra` to the running server."""
        req = urllib.request.Request(self.base + "/_control/grow", data=b"{}", method="POST")
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 200

    def garbage(self) -> None:
        """From now on, every MCP request is answered with garbage."""
        req = urllib.request.Request(self.base + "/_control/garbage", data=b"{}", method="POST")
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 200

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> "McpServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mcp_config(**servers: dict) -> str:
    return json.dumps({"mcpServers": servers})


def script(upstream: str, *calls: tuple[str, dict]) -> str:
    """Registers scripted tool calls with the fake upstream; returns a model name that plays them."""
    name = uuid.uuid4().hex[:10]
    body = json.dumps({"name": name, "calls": [{"name": n, "arguments": a} for n, a in calls]}).encode()
    req = urllib.request.Request(upstream + "/_fake/script", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        assert json.load(r) == {"ok": True}
    return f"openai/gpt-mcp+script:{name}"


def user_jwt(sub: str) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time()) + 600}, JWT_SECRET, algorithm="HS256")


def run_events(base: str, key: str, run_id: str) -> list[dict]:
    req = urllib.request.Request(f"{base}/v1/runs/{run_id}/events?offset=-1",
                                 headers={"authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def wait_for_log(lines: list[str], needle: str, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(needle in line for line in list(lines)):
            return True
        time.sleep(0.05)
    return False


def listed(lines: list[str], server: str) -> bool:
    """Waits until hearth logged that it listed `server`'s tools."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for line in list(lines):
            if "listed the MCP server" in line and f'"mcp.server":"{server}"' in line:
                return True
        time.sleep(0.05)
    return False


def env_without_proxies() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
