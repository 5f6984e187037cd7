#!/usr/bin/env python3
"""mcp_server.py — a real MCP server for the end-to-end tests, built with the official MCP Python
SDK (PyPI ``mcp``, its ``MCPServer``), over Streamable HTTP on loopback.

Tools: ``add(a, b)``, ``sleep(ms)`` (answers ``slept MS``), ``fail(message)`` (raises: an
``isError`` result), ``whoami()`` (the ``sub`` and ``org`` of the ``Authorization: Bearer`` user
assertion, verified against hearth's JWKS with the audience checked, plus the MCP session id).

Usage::

    python3 mcp_server.py [--port 0] [--malformed-schema] [--garbage] [--log PATH]
    # prints "LISTENING <port>" on stdout once ready; the endpoint is http://127.0.0.1:PORT/mcp

``--malformed-schema`` adds a tool ``broken`` whose input schema gives a property the type ``nonsense``.
``--garbage`` serves no MCP at all: every request is answered 200 with a body that is not JSON
(``POST /_control/garbage`` turns that on later, e.g. after hearth listed the tools).
``--tls-cert``/``--tls-key`` serve HTTPS (the endpoint is then https://localhost:PORT/mcp).
``--json-response`` answers each POST with a JSON body instead of an SSE stream. ``--log PATH`` appends one JSON line per HTTP request: its method, path and headers (so a test
can check what the server was sent). ``POST /_control/grow`` adds a tool ``extra``. ``POST /_control/jwks`` with ``{"url": …}`` tells ``whoami``
where hearth's JWKS is (hearth starts after this server).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys

import jwt
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import Tool

JWKS: dict[str, str] = {}
# Answer every MCP request with garbage (--garbage, or POST /_control/garbage).
GARBAGE = {"on": False}
# Adds the tool ``extra`` (POST /_control/grow): a tool list that changes while the server runs.
GROW: list = []


def build_app(args: argparse.Namespace, endpoint: str):
    server = MCPServer("hearth-e2e")

    @server.tool(description="Adds two numbers.")
    def add(a: float, b: float) -> str:
        total = a + b
        return str(int(total)) if total == int(total) else str(total)

    @server.tool(description="Waits ms milliseconds, then answers `slept MS`.")
    async def sleep(ms: int) -> str:
        await asyncio.sleep(ms / 1000)
        return f"slept {ms}"

    @server.tool(description="Always fails with its message.")
    def fail(message: str) -> str:
        raise ToolError(message)

    @server.tool(description="Who hearth says the caller is: the verified sub of the user assertion.")
    def whoami(ctx: Context) -> str:
        headers = ctx.headers or {}
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            raise ValueError("no user assertion")
        if "url" not in JWKS:
            raise ValueError("the test did not POST /_control/jwks")
        token = auth[len("Bearer "):]
        key = jwt.PyJWKClient(JWKS["url"]).get_signing_key_from_jwt(token)
        claims = jwt.decode(token, key.key, algorithms=["EdDSA"], audience=endpoint,
                            options={"require": ["sub", "exp", "iat", "aud", "jti"]})
        return json.dumps({"sub": claims["sub"], "org": claims.get("org"), "iss": claims.get("iss"),
                           "ttl": claims["exp"] - claims["iat"], "session": headers.get("mcp-session-id")})

    if args.malformed_schema:
        listed = server.list_tools

        async def with_broken():
            tools = await listed()
            tools.append(Tool(name="broken", description="Its schema is not an object schema.",
                              input_schema={"type": "object", "properties": {"x": {"type": "nonsense"}}}))
            return tools

        server.list_tools = with_broken  # type: ignore[method-assign]

    def grow() -> None:
        def extra() -> str:
            return "extra"
        server.add_tool(extra, name="extra", description="Added while the server runs.")

    GROW.append(grow)
    security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    return server.streamable_http_app(transport_security=security, json_response=args.json_response)


class Wrapper:
    """ASGI: logs every request's headers, serves /_control/jwks, else the MCP app (or garbage)."""

    def __init__(self, app, log_path: str | None) -> None:
        self.app, self.log_path = app, log_path

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            if self.log_path:
                with open(self.log_path, "a") as f:
                    f.write(json.dumps({"method": scope["method"], "path": scope["path"], "headers": headers}) + "\n")
            if scope["path"] == "/_control/jwks":
                body = b""
                while True:
                    msg = await receive()
                    body += msg.get("body", b"")
                    if not msg.get("more_body"):
                        break
                JWKS["url"] = json.loads(body)["url"]
                return await respond(send, 200, b'{"ok":true}', b"application/json")
            if scope["path"] == "/_control/grow":
                GROW[0]()
                return await respond(send, 200, b'{"ok":true}', b"application/json")
            if scope["path"] == "/_control/garbage":
                GARBAGE["on"] = True
                return await respond(send, 200, b'{"ok":true}', b"application/json")
            if GARBAGE["on"]:
                return await respond(send, 200, b"<<this is not json-rpc>>{", b"application/json")
        await self.app(scope, receive, send)


async def respond(send, status: int, body: bytes, ctype: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--malformed-schema", action="store_true")
    parser.add_argument("--garbage", action="store_true")
    parser.add_argument("--log")
    parser.add_argument("--json-response", action="store_true", help="answer POSTs with JSON, not SSE")
    parser.add_argument("--tls-cert", help="serve HTTPS with this PEM certificate chain (with --tls-key)")
    parser.add_argument("--tls-key", help="the PEM private key of --tls-cert")
    args = parser.parse_args()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(128)
    port = sock.getsockname()[1]
    endpoint = f"{'https://localhost' if args.tls_cert else 'http://127.0.0.1'}:{port}/mcp"
    GARBAGE["on"] = args.garbage
    app = build_app(args, endpoint)
    config = uvicorn.Config(Wrapper(app, args.log), log_level="warning", lifespan="on",
                            ssl_certfile=args.tls_cert, ssl_keyfile=args.tls_key)
    server = uvicorn.Server(config)
    print(f"LISTENING {port}", flush=True)
    server.run(sockets=[sock])


if __name__ == "__main__":
    sys.exit(main())
