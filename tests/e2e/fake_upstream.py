#!/usr/bin/env python3
"""fake_upstream.py — the project's one fake: a fast local upstream LLM server.

It speaks the real wire protocols of

* the OpenAI Chat Completions API  (``POST /v1/chat/completions``, JSON and SSE streaming,
  tool calls, ``stream_options.include_usage``, OpenAI's error shape), and
* the Anthropic Messages API       (``POST /v1/messages``, JSON and the SSE event sequence
  ``message_start`` … ``message_stop``, ``tool_use`` blocks, Anthropic's error shape),

plus ``GET /v1/models`` (OpenAI's list, or Anthropic's when called with Anthropic headers),
``GET /health``, and the control endpoints ``GET /_fake/stats`` and ``POST /_fake/reset``.

Standard library only (``uvloop`` is used if it happens to be importable; ``--no-uvloop`` turns
that off). A hand-written HTTP/1.1 keep-alive server on ``asyncio.Protocol`` keeps it fast enough
to serve well over 10,000 non-streaming requests/s on one core.

Usage::

    python3 fake_upstream.py --port 0 [--host 127.0.0.1]
    # prints "LISTENING <port>" on stdout once ready

Auth
----
OpenAI side: ``Authorization: Bearer <non-empty>`` or 401 in OpenAI's error shape. Anthropic side:
``x-api-key`` (or ``Authorization: Bearer``, which current official SDKs send) or 401 in
Anthropic's error shape; ``anthropic-version`` or 400. ``GET /v1/models`` answers Anthropic's list
shape when the request carries ``anthropic-version`` (or only ``x-api-key``), else OpenAI's.

Default answer
--------------
The answer is ``"echo: <text of the last user message>"`` (text parts joined with ``"\\n"``).
Usage counts are honest estimates: ceil(characters / 4) over the prompt's text (system, messages,
tool results) and over the answer. If ``max_tokens`` / ``max_completion_tokens`` is smaller than
the answer's estimate, the answer is cut to ``4 * max_tokens`` characters and the finish reason is
``"length"`` (OpenAI) / stop reason ``"max_tokens"`` (Anthropic).

Behaviours
----------
Chosen by the request header ``x-fake-behavior`` (comma-separated), or — when that header is
absent — by ``+``/``,``-separated segments of the model name, as prefix or suffix:
``gpt-4o+tool``, ``tool+slow:50+gpt-4o``, ``claude-x+fail:429:2,stream_cut``… Segments that are not
behaviours stay part of the model name. When the header is present it alone decides (the model's
segments are ignored); an unknown behaviour in the header is a 400.

``tool`` / ``tool:NAME``
    Answer with a call to the first tool of the request's ``tools`` (or to NAME, or to the tool
    that ``tool_choice`` forces), arguments ``{"q": "<last user text>"}``, finish reason
    ``tool_calls`` / stop reason ``tool_use``. When the conversation already ends with tool
    results, answer ``"tool said: <result>"`` (several trailing results joined with ``" | "``).
    No tools in the request, or ``tool_choice`` "none" → the default answer.
``script:NAME``  Answer with the tool calls of the script NAME registered by ``POST /_fake/script``
    ``{"name": NAME, "calls": [{"name": TOOL, "arguments": {...}}, ...]}`` — several calls in one
    answer (parallel tool calls), whatever the request's ``tools`` say; when the conversation
    already ends with tool results, answer ``"tool said: <results joined with " | ">"`` as ``tool``
    does. OpenAI protocol only. Scripts survive ``/_fake/reset``.
``slow:MS``      wait MS ms before the first byte of the response (fail responses included).
``stall:MS``     send the headers and the first chunk/event (for JSON: the headers), then stall MS ms.
``drip:MS``      streaming: wait MS ms between events.
``fail:CODE:N``  the first N requests with the same ``x-fake-key`` header value (or, without it,
                 the same model name as sent) answer HTTP CODE in the provider's error shape
                 (429 with ``Retry-After: 1``); later ones succeed. ``POST /_fake/reset`` clears
                 the counters.
``cut``          streaming: send some content, then close the connection (no ``[DONE]`` /
                 ``message_stop``, no end of the chunked body). JSON: half the body, then close.
``malformed``    streaming: a garbage non-JSON ``data:`` line mid-stream. JSON: like error_json.
``sse_error``    streaming: an error event mid-stream (Anthropic ``event: error``, OpenAI
                 ``data: {"error": …}``), then the stream ends.
``error_json``   200 with an invalid JSON body.
``long:N``       the answer is N words.

``GET /_fake/stats`` → counts of requests by path and by model, fail counters, open connections,
active streams, client aborts, and ``last_request`` (method, path, headers, parsed body) of the last
request outside ``/_fake/``. ``POST /_fake/reset`` clears counters and stats.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import time

try:  # C-accelerated string encoder (falls back to the pure-Python one transparently)
    from _json import encode_basestring_ascii as _jstr  # type: ignore
except ImportError:  # pragma: no cover
    from json.encoder import encode_basestring_ascii as _jstr  # type: ignore

_decode = json.JSONDecoder().decode  # str in: skips json.loads' encoding detection


def _loads(body: bytes):
    return _decode(body.decode("utf-8"))


def _dumps(obj) -> str:
    return json.dumps(obj, separators=(",", ":"))


# --------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------


class State:
    __slots__ = (
        "by_path",
        "by_model",
        "fail_counters",
        "last_request",
        "total",
        "open_connections",
        "active_streams",
        "client_aborts",
    )

    def __init__(self) -> None:
        self.open_connections = 0
        self.active_streams = 0
        self.reset()

    def reset(self) -> None:
        self.by_path: dict[str, int] = {}
        self.by_model: dict[str, int] = {}
        self.fail_counters: dict[str, int] = {}
        self.last_request = None
        self.total = 0
        self.client_aborts = 0

    def snapshot(self) -> dict:
        lr = self.last_request
        last = None
        if lr is not None:
            method, path, headers, body = lr
            last = {"method": method, "path": path, "headers": headers, "body": body}
        return {
            "total_requests": self.total,
            "requests_by_path": self.by_path,
            "requests_by_model": self.by_model,
            "fail_counters": self.fail_counters,
            "open_connections": self.open_connections,
            "active_streams": self.active_streams,
            "client_aborts": self.client_aborts,
            "last_request": last,
        }


STATE = State()
_PFX = os.urandom(4).hex()
_ids = itertools.count(1)


def _new_id() -> str:
    return "%s%010d" % (_PFX, next(_ids))


# --------------------------------------------------------------------------------------------
# Behaviours
# --------------------------------------------------------------------------------------------


class Behavior:
    __slots__ = (
        "tool",
        "tool_name",
        "script",
        "slow",
        "stall",
        "drip",
        "fail_code",
        "fail_n",
        "cut",
        "malformed",
        "sse_error",
        "error_json",
        "long_n",
        "plain",
    )

    def __init__(self) -> None:
        self.tool = False
        self.tool_name = None
        self.script = None
        self.slow = 0.0
        self.stall = 0.0
        self.drip = 0.0
        self.fail_code = 0
        self.fail_n = 0
        self.cut = False
        self.malformed = False
        self.sse_error = False
        self.error_json = False
        self.long_n = -1
        self.plain = True

    def apply(self, token: str) -> bool:
        """Apply one behaviour token; False when the token is not a behaviour."""
        name, _, arg = token.partition(":")
        try:
            if name == "tool":
                self.tool = True
                self.tool_name = arg or None
            elif name == "script" and arg:
                self.script = arg
            elif name == "slow" and arg:
                self.slow = int(arg) / 1000.0
            elif name == "stall" and arg:
                self.stall = int(arg) / 1000.0
            elif name == "drip" and arg:
                self.drip = int(arg) / 1000.0
            elif name == "fail" and arg:
                code, _, n = arg.partition(":")
                code_i, n_i = int(code), (int(n) if n else 1)
                if not 100 <= code_i <= 599:
                    return False
                self.fail_code, self.fail_n = code_i, n_i
            elif name == "cut" and not arg:
                self.cut = True
            elif name == "malformed" and not arg:
                self.malformed = True
            elif name == "sse_error" and not arg:
                self.sse_error = True
            elif name == "error_json" and not arg:
                self.error_json = True
            elif name == "long" and arg:
                self.long_n = int(arg)
            else:
                return False
        except ValueError:
            return False
        self.plain = False
        return True


PLAIN = Behavior()
# Scripted tool calls by name (``script:NAME``), registered with POST /_fake/script.
SCRIPTS: dict[str, list[tuple[str, str]]] = {}
_model_cache: dict[str, tuple[str, Behavior]] = {}
_header_cache: dict[str, Behavior | str] = {}


def _split_tokens(s: str) -> list[str]:
    return [t.strip() for t in s.replace("+", ",").split(",")]


def model_behavior(model: str) -> tuple[str, Behavior]:
    """(model name without behaviour segments, behaviours) for a model name; cached."""
    hit = _model_cache.get(model)
    if hit is not None:
        return hit
    b = Behavior()
    rest = []
    for tok in _split_tokens(model):
        if tok and not b.apply(tok):
            rest.append(tok)
    res = ("+".join(rest) or model, PLAIN if b.plain else b)
    if len(_model_cache) > 10000:
        _model_cache.clear()
    _model_cache[model] = res
    return res


def header_behavior(value: str) -> Behavior | str:
    """A Behavior, or an error message string."""
    hit = _header_cache.get(value)
    if hit is not None:
        return hit
    b = Behavior()
    res: Behavior | str = b
    for tok in _split_tokens(value):
        if tok and not b.apply(tok):
            res = "unknown x-fake-behavior token %r" % tok
            break
    if len(_header_cache) > 10000:
        _header_cache.clear()
    _header_cache[value] = res
    return res


# --------------------------------------------------------------------------------------------
# HTTP helpers
# --------------------------------------------------------------------------------------------

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    413: "Payload Too Large",
    431: "Request Header Fields Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    529: "Overloaded",
}

MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024


def http_response(
    status: int,
    body: bytes,
    ctype: bytes = b"application/json",
    extra: bytes = b"",
    close: bool = False,
) -> bytes:
    return b"".join(
        (
            b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
            % (status, _REASONS.get(status, "Status").encode(), ctype, len(body)),
            extra,
            b"Connection: close\r\n\r\n" if close else b"\r\n",
            body,
        )
    )


def stream_head(extra: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
        b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n" + extra + b"\r\n"
    )


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


_CHUNK_END = b"0\r\n\r\n"


def openai_error(status: int, message: str, etype: str, code=None, extra: bytes = b"") -> bytes:
    body = '{"error":{"message":%s,"type":%s,"param":null,"code":%s}}' % (
        _jstr(message),
        _jstr(etype),
        "null" if code is None else _jstr(code),
    )
    return http_response(status, body.encode(), extra=extra + b"x-request-id: req_%s\r\n" % _new_id().encode())


_ANTHROPIC_ETYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def anthropic_error(status: int, message: str, etype: str | None = None, extra: bytes = b"") -> bytes:
    rid = "req_" + _new_id()
    body = '{"type":"error","error":{"type":%s,"message":%s},"request_id":%s}' % (
        _jstr(etype or _ANTHROPIC_ETYPES.get(status, "api_error")),
        _jstr(message),
        _jstr(rid),
    )
    return http_response(status, body.encode(), extra=extra + b"request-id: %s\r\n" % rid.encode())


def _openai_fail_type(code: int) -> tuple[str, str | None]:
    if code == 429:
        return "requests", "rate_limit_exceeded"
    if code == 401:
        return "invalid_request_error", "invalid_api_key"
    if code >= 500:
        return "server_error", None
    return "invalid_request_error", None


# --------------------------------------------------------------------------------------------
# Conversation helpers
# --------------------------------------------------------------------------------------------


def _text_of(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for p in content:
            if isinstance(p, dict):
                t = p.get("text")
                if isinstance(t, str):
                    parts.append(t)
                elif p.get("type") == "tool_result":
                    parts.append(_text_of(p.get("content")))
            elif isinstance(p, str):
                parts.append(p)
        return "\n".join(parts)
    return ""


def _chars(messages) -> int:
    n = 0
    for m in messages:
        if isinstance(m, dict):
            c = m.get("content")
            if isinstance(c, str):
                n += len(c)
            elif c is not None:
                n += len(_text_of(c))
            tcs = m.get("tool_calls")
            if tcs:
                n += len(_dumps(tcs))
    return n


def _tokens(nchars: int) -> int:
    return max(1, (nchars + 3) // 4)


_WORDS = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
    "incididunt ut labore et dolore magna aliqua"
).split()


def long_text(n: int) -> str:
    w = _WORDS
    lw = len(w)
    return " ".join(w[i % lw] for i in range(n))


def split_words(text: str) -> list[str]:
    """Content deltas: one word per chunk (leading space kept), at least two chunks."""
    parts = text.split(" ")
    out = [parts[0]]
    out.extend(" " + p for p in parts[1:])
    if len(out) == 1 and len(text) >= 2:
        h = len(text) // 2
        out = [text[:h], text[h:]]
    return out


def split_fixed(s: str, size: int = 8) -> list[str]:
    return [s[i : i + size] for i in range(0, len(s), size)] or [""]


def _int_or_none(v):
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


# --------------------------------------------------------------------------------------------
# Plans: what a handler decided to send
# --------------------------------------------------------------------------------------------


class StreamPlan:
    """A streaming answer: head, SSE events (bytes, unframed), and fault positions."""

    __slots__ = ("head", "events", "cut_at", "stall_at", "garbage_at", "garbage", "error_at", "error_event")

    def __init__(self, head: bytes, events: list[bytes]) -> None:
        self.head = head
        self.events = events
        self.cut_at = -1
        self.stall_at = -1
        self.garbage_at = -1
        self.garbage = b""
        self.error_at = -1
        self.error_event = b""


class Deferred:
    """A response that needs the event loop (delays, stalls, cuts)."""

    __slots__ = ("slow", "stall", "drip", "payload", "cut_json")

    def __init__(self, slow: float, payload, stall: float = 0.0, drip: float = 0.0, cut_json: bool = False):
        self.slow = slow
        self.stall = stall
        self.drip = drip
        self.payload = payload  # bytes or StreamPlan
        self.cut_json = cut_json


def finish(beh: Behavior, payload):
    """Turn a payload (bytes or StreamPlan) into bytes when it can go out at once."""
    if beh is PLAIN or (not beh.slow and not beh.stall and not beh.drip and not beh.cut):
        if isinstance(payload, StreamPlan) and payload.garbage_at < 0 and payload.error_at < 0:
            return payload.head + b"".join(chunk(e) for e in payload.events) + _CHUNK_END
        if isinstance(payload, bytes):
            return payload
    return Deferred(beh.slow, payload, beh.stall, beh.drip, beh.cut and isinstance(payload, bytes))


# --------------------------------------------------------------------------------------------
# OpenAI
# --------------------------------------------------------------------------------------------


def _openai_tools(req) -> list[str]:
    names = []
    tools = req.get("tools")
    if isinstance(tools, list):
        for t in tools:
            if isinstance(t, dict):
                f = t.get("function")
                if isinstance(f, dict) and isinstance(f.get("name"), str):
                    names.append(f["name"])
                elif isinstance(t.get("name"), str):
                    names.append(t["name"])
    return names


_OAI_USAGE = (
    '{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d,'
    '"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},'
    '"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,'
    '"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}'
)
_OAI_PLAIN_BODY = (
    '{"id":"chatcmpl-%s","object":"chat.completion","created":%d,"model":%s,'
    '"choices":[{"index":0,"message":{"role":"assistant","content":%s,"refusal":null,'
    '"annotations":[]},"logprobs":null,"finish_reason":"%s"}],"usage":'
    + _OAI_USAGE
    + ',"service_tier":"default","system_fingerprint":"fp_fake"}'
)
_OAI_PLAIN_HEAD = (
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
    "x-request-id: req_%s\r\nopenai-processing-ms: 1\r\n\r\n"
)


def _oai_plain(args: tuple) -> bytes:
    """The whole HTTP response of a plain non-streaming chat.completion (the benchmark's path)."""
    body = _OAI_PLAIN_BODY % args
    # every %s above is filled by _jstr (pure ASCII) or ASCII ids, so len(str) == len(bytes)
    return ((_OAI_PLAIN_HEAD % (len(body), args[0])) + body).encode()


def openai_chat(req: dict, headers: dict, beh: Behavior, model: str):
    messages = req.get("messages")
    if not isinstance(messages, list) or not messages:
        return openai_error(400, "'messages' must be a non-empty array", "invalid_request_error")
    stream = req.get("stream") is True
    prompt_tokens = _tokens(_chars(messages))

    # last user text, trailing tool results
    user_text = ""
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            user_text = _text_of(m.get("content"))
            break

    tool_call = None
    tool_calls = None
    content = None
    if beh.tool or beh.script:
        trailing = []
        for m in reversed(messages):
            if isinstance(m, dict) and m.get("role") == "tool":
                trailing.append(_text_of(m.get("content")))
            else:
                break
        if trailing:
            content = "tool said: " + " | ".join(reversed(trailing))
        elif beh.script:
            script = SCRIPTS.get(beh.script)
            if script is None:
                return openai_error(400, "fake upstream: no script %r (POST /_fake/script first)" % beh.script, "invalid_request_error")
            tool_calls = list(script)
        else:
            names = _openai_tools(req)
            tc = req.get("tool_choice")
            forced = None
            if isinstance(tc, dict):
                f = tc.get("function")
                if isinstance(f, dict) and isinstance(f.get("name"), str):
                    forced = f["name"]
            if names and tc != "none":
                name = forced or (beh.tool_name if beh.tool_name in names else None) or beh.tool_name or names[0]
                tool_call = (name, '{"q":%s}' % _jstr(user_text))
    if content is None and tool_call is None and tool_calls is None:
        if beh.long_n >= 0:
            content = long_text(beh.long_n)
        else:
            content = "echo: " + user_text

    if tool_call is not None:
        tool_calls = [tool_call]
    finish_reason = "stop"
    if tool_calls is not None:
        finish_reason = "tool_calls"
        completion_tokens = _tokens(sum(len(n) + len(a) for n, a in tool_calls))
    else:
        completion_tokens = _tokens(len(content))
        mt = _int_or_none(req.get("max_completion_tokens"))
        if mt is None:
            mt = _int_or_none(req.get("max_tokens"))
        if mt is not None and completion_tokens > mt:
            content = content[: mt * 4]
            completion_tokens = mt
            finish_reason = "length"

    rid = _new_id()
    created = int(time.time())
    jmodel = _jstr(model)

    if not stream and beh is PLAIN:  # the hot path: one template, one encode
        return _oai_plain(
            (rid, created, jmodel, _jstr(content), finish_reason, prompt_tokens, completion_tokens, prompt_tokens + completion_tokens)
        )

    cid = "chatcmpl-" + rid
    usage = _OAI_USAGE % (prompt_tokens, completion_tokens, prompt_tokens + completion_tokens)
    extra = b"x-request-id: req_%s\r\nopenai-processing-ms: 1\r\n" % rid.encode()

    if beh.error_json or (beh.malformed and not stream):
        return finish(beh, http_response(200, b'{"id":"' + cid.encode() + b'","object":"chat.completion","choices":[{', extra=extra))

    if not stream:
        if tool_calls is not None:
            calls = ",".join(
                '{"id":"call_%s_%d","type":"function","function":{"name":%s,"arguments":%s}}'
                % (rid, i, _jstr(n), _jstr(a))
                for i, (n, a) in enumerate(tool_calls)
            )
            msg = '{"role":"assistant","content":null,"tool_calls":[%s],"refusal":null,"annotations":[]}' % calls
        else:
            msg = '{"role":"assistant","content":%s,"refusal":null,"annotations":[]}' % _jstr(content)
        body = (
            '{"id":"%s","object":"chat.completion","created":%d,"model":%s,"choices":[{"index":0,'
            '"message":%s,"logprobs":null,"finish_reason":"%s"}],"usage":%s,'
            '"service_tier":"default","system_fingerprint":"fp_fake"}'
            % (cid, created, jmodel, msg, finish_reason, usage)
        )
        return finish(beh, http_response(200, body.encode(), extra=extra))

    # ---- streaming
    so = req.get("stream_options")
    include_usage = isinstance(so, dict) and so.get("include_usage") is True
    u = ',"usage":null' if include_usage else ""
    pre = (
        'data: {"id":"%s","object":"chat.completion.chunk","created":%d,"model":%s,'
        '"service_tier":"default","system_fingerprint":"fp_fake","choices":[{"index":0,"delta":'
        % (cid, created, jmodel)
    )
    events: list[bytes] = []
    ev = events.append
    if tool_calls is not None:
        for i, (name, args) in enumerate(tool_calls):
            ev(
                (
                    pre + '{%s"tool_calls":[{"index":%d,"id":"call_%s_%d",'
                    '"type":"function","function":{"name":%s,"arguments":""}}]%s},'
                    '"logprobs":null,"finish_reason":null}]%s}\n\n'
                    % ('"role":"assistant","content":null,' if i == 0 else "", i, cid[9:], i, _jstr(name),
                       ',"refusal":null' if i == 0 else "", u)
                ).encode()
            )
            for frag in split_fixed(args):
                ev(
                    (
                        pre + '{"tool_calls":[{"index":%d,"function":{"arguments":%s}}]},'
                        '"logprobs":null,"finish_reason":null}]%s}\n\n' % (i, _jstr(frag), u)
                    ).encode()
                )
    else:
        ev((pre + '{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]%s}\n\n' % u).encode())
        for piece in split_words(content):
            ev((pre + '{"content":%s},"logprobs":null,"finish_reason":null}]%s}\n\n' % (_jstr(piece), u)).encode())
    ev((pre + '{},"logprobs":null,"finish_reason":"%s"}]%s}\n\n' % (finish_reason, u)).encode())
    if include_usage:
        ev(
            (
                'data: {"id":"%s","object":"chat.completion.chunk","created":%d,"model":%s,'
                '"service_tier":"default","system_fingerprint":"fp_fake","choices":[],"usage":%s}\n\n'
                % (cid, created, jmodel, usage)
            ).encode()
        )
    ev(b"data: [DONE]\n\n")
    plan = StreamPlan(stream_head(extra), events)
    _faults(plan, beh, b'data: {"id": oops this is not json\n\n', openai_sse_error())
    return finish(beh, plan)


def openai_sse_error() -> bytes:
    return (
        b'data: {"error":{"message":"The server had an error while processing your request.",'
        b'"type":"server_error","param":null,"code":null}}\n\n'
    )


def _faults(plan: StreamPlan, beh: Behavior, garbage: bytes, error_event: bytes) -> None:
    n = len(plan.events)
    mid = max(1, min(n - 2, 2))  # after the first content event or so
    if beh.stall:
        plan.stall_at = 1
    if beh.cut:
        plan.cut_at = max(1, n // 2)
    if beh.malformed:
        plan.garbage_at = mid
        plan.garbage = garbage
    if beh.sse_error:
        plan.error_at = mid
        plan.error_event = error_event


def openai_models() -> bytes:
    data = ",".join(
        '{"id":"%s","object":"model","created":1700000000,"owned_by":"fake-upstream"}' % m
        for m in ("gpt-4o", "gpt-4o-mini", "fake-model")
    )
    return http_response(200, ('{"object":"list","data":[%s]}' % data).encode())


# --------------------------------------------------------------------------------------------
# Anthropic
# --------------------------------------------------------------------------------------------


def anthropic_messages(req: dict, headers: dict, beh: Behavior, model: str):
    messages = req.get("messages")
    if not isinstance(messages, list) or not messages:
        return anthropic_error(400, "messages: field required")
    max_tokens = _int_or_none(req.get("max_tokens"))
    if max_tokens is None:
        return anthropic_error(400, "max_tokens: field required")
    stream = req.get("stream") is True
    system = req.get("system")
    nchars = _chars(messages) + (len(_text_of(system)) if system else 0)
    input_tokens = _tokens(nchars)

    user_text = ""
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, list) and c and all(isinstance(p, dict) and p.get("type") == "tool_result" for p in c):
                continue  # a tool-result turn is not the user's text
            user_text = _text_of(c)
            break

    tool_call = None
    content = None
    if beh.tool:
        last = messages[-1]
        results = []
        if isinstance(last, dict) and last.get("role") == "user" and isinstance(last.get("content"), list):
            for p in last["content"]:
                if isinstance(p, dict) and p.get("type") == "tool_result":
                    results.append(_text_of(p.get("content")))
        if results:
            content = "tool said: " + " | ".join(results)
        else:
            names = [t["name"] for t in req.get("tools") or () if isinstance(t, dict) and isinstance(t.get("name"), str)]
            tc = req.get("tool_choice")
            forced = tc.get("name") if isinstance(tc, dict) and tc.get("type") == "tool" else None
            none = isinstance(tc, dict) and tc.get("type") == "none"
            if names and not none:
                name = forced or beh.tool_name or names[0]
                tool_call = (name, '{"q":%s}' % _jstr(user_text))
    if content is None and tool_call is None:
        content = long_text(beh.long_n) if beh.long_n >= 0 else "echo: " + user_text

    stop_reason = "end_turn"
    if tool_call is not None:
        stop_reason = "tool_use"
        output_tokens = _tokens(len(tool_call[0]) + len(tool_call[1]))
    else:
        output_tokens = _tokens(len(content))
        if output_tokens > max_tokens:
            content = content[: max_tokens * 4]
            output_tokens = max_tokens
            stop_reason = "max_tokens"

    mid = "msg_" + _new_id()
    jmodel = _jstr(model)
    extra = b"request-id: req_%s\r\nanthropic-organization-id: fake-org\r\n" % mid[4:].encode()
    if beh.error_json or (beh.malformed and not stream):
        return finish(beh, http_response(200, b'{"id":"' + mid.encode() + b'","type":"message","content":[{', extra=extra))

    usage_full = (
        '{"input_tokens":%d,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,'
        '"output_tokens":%d,"service_tier":"standard"}'
    )
    if not stream:
        if tool_call is not None:
            block = '{"type":"tool_use","id":"toolu_%s","name":%s,"input":%s}' % (mid[4:], _jstr(tool_call[0]), tool_call[1])
        else:
            block = '{"type":"text","text":%s}' % _jstr(content)
        body = (
            '{"id":"%s","type":"message","role":"assistant","model":%s,"content":[%s],'
            '"stop_reason":"%s","stop_sequence":null,"usage":%s}'
            % (mid, jmodel, block, stop_reason, usage_full % (input_tokens, output_tokens))
        )
        return finish(beh, http_response(200, body.encode(), extra=extra))

    events: list[bytes] = []
    ev = events.append
    ev(
        (
            'event: message_start\ndata: {"type":"message_start","message":{"id":"%s","type":"message",'
            '"role":"assistant","model":%s,"content":[],"stop_reason":null,"stop_sequence":null,'
            '"usage":%s}}\n\n' % (mid, jmodel, usage_full % (input_tokens, 1))
        ).encode()
    )
    if tool_call is not None:
        ev(
            (
                'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
                '"content_block":{"type":"tool_use","id":"toolu_%s","name":%s,"input":{}}}\n\n'
                % (mid[4:], _jstr(tool_call[0]))
            ).encode()
        )
        ev(b'event: ping\ndata: {"type": "ping"}\n\n')
        for frag in [""] + split_fixed(tool_call[1]):
            ev(
                (
                    'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
                    '"delta":{"type":"input_json_delta","partial_json":%s}}\n\n' % _jstr(frag)
                ).encode()
            )
    else:
        ev(
            b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
            b'"content_block":{"type":"text","text":""}}\n\n'
        )
        ev(b'event: ping\ndata: {"type": "ping"}\n\n')
        for piece in split_words(content):
            ev(
                (
                    'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
                    '"delta":{"type":"text_delta","text":%s}}\n\n' % _jstr(piece)
                ).encode()
            )
    ev(b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n')
    ev(
        (
            'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"%s",'
            '"stop_sequence":null},"usage":{"output_tokens":%d}}\n\n' % (stop_reason, output_tokens)
        ).encode()
    )
    ev(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    plan = StreamPlan(stream_head(extra), events)
    _faults(
        plan,
        beh,
        b"event: content_block_delta\ndata: {garbage, not json\n\n",
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n',
    )
    if beh.stall:
        plan.stall_at = 3  # after message_start, content_block_start, ping
    return finish(beh, plan)


def anthropic_models() -> bytes:
    ids = ("claude-sonnet-4-6", "claude-haiku-4-5", "fake-model")
    data = ",".join(
        '{"type":"model","id":"%s","display_name":"%s","created_at":"2025-01-01T00:00:00Z"}' % (m, m) for m in ids
    )
    body = '{"data":[%s],"has_more":false,"first_id":"%s","last_id":"%s"}' % (data, ids[0], ids[-1])
    return http_response(200, body.encode())


# --------------------------------------------------------------------------------------------
# Routing
# --------------------------------------------------------------------------------------------


def check_fail(beh: Behavior, headers: dict, model: str) -> bool:
    if not beh.fail_code:
        return False
    key = headers.get("x-fake-key") or model
    n = STATE.fail_counters.get(key, 0) + 1
    STATE.fail_counters[key] = n
    return n <= beh.fail_n


def _fail_response(provider: str, code: int) -> bytes:
    extra = b"Retry-After: 1\r\n" if code == 429 else b""
    if provider == "openai":
        etype, ecode = _openai_fail_type(code)
        return openai_error(code, "fake upstream: injected failure %d" % code, etype, ecode, extra)
    return anthropic_error(code, "fake upstream: injected failure %d" % code, extra=extra)


def handle(method: str, path: str, headers: dict, body: bytes):
    """Returns bytes or a Deferred."""
    st = STATE
    fake = path.startswith("/_fake/")
    if not fake:
        st.total += 1
        bp = st.by_path
        bp[path] = bp.get(path, 0) + 1

    if path == "/v1/chat/completions":
        if method != "POST":
            return openai_error(405, "Method not allowed", "invalid_request_error")
        st.last_request = (method, path, headers, None)
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            return openai_error(
                401,
                "You didn't provide an API key. You need to provide your API key in an Authorization "
                "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                "invalid_request_error",
            )
        try:
            req = _loads(body)
        except (ValueError, UnicodeDecodeError):
            return openai_error(400, "We could not parse the JSON body of your request.", "invalid_request_error")
        if not isinstance(req, dict):
            return openai_error(400, "The request body must be a JSON object.", "invalid_request_error")
        st.last_request = (method, path, headers, req)
        model = req.get("model")
        if not isinstance(model, str) or not model:
            return openai_error(400, "you must provide a model parameter", "invalid_request_error")
        _, beh = model_behavior(model)
        hb = headers.get("x-fake-behavior")
        if hb is not None:
            beh = header_behavior(hb)
            if isinstance(beh, str):
                return openai_error(400, beh, "invalid_request_error")
        bm = st.by_model
        bm[model] = bm.get(model, 0) + 1
        if beh is not PLAIN and check_fail(beh, headers, model):
            r = _fail_response("openai", beh.fail_code)
            return Deferred(beh.slow, r) if beh.slow else r
        return openai_chat(req, headers, beh, model)

    if path == "/v1/messages":
        if method != "POST":
            return anthropic_error(405, "Method not allowed", "invalid_request_error")
        st.last_request = (method, path, headers, None)
        if not headers.get("x-api-key"):
            # Recent official SDKs send the API key as "Authorization: Bearer <key>"; accept both.
            auth = headers.get("authorization", "")
            if not auth.startswith("Bearer ") or not auth[7:].strip():
                return anthropic_error(401, "x-api-key header is required")
        if not headers.get("anthropic-version"):
            return anthropic_error(400, "anthropic-version: header is required")
        try:
            req = _loads(body)
        except (ValueError, UnicodeDecodeError):
            return anthropic_error(400, "There was an issue with the JSON body of your request.")
        if not isinstance(req, dict):
            return anthropic_error(400, "The request body must be a JSON object.")
        st.last_request = (method, path, headers, req)
        model = req.get("model")
        if not isinstance(model, str) or not model:
            return anthropic_error(400, "model: field required")
        _, beh = model_behavior(model)
        hb = headers.get("x-fake-behavior")
        if hb is not None:
            beh = header_behavior(hb)
            if isinstance(beh, str):
                return anthropic_error(400, beh)
        bm = st.by_model
        bm[model] = bm.get(model, 0) + 1
        if beh is not PLAIN and check_fail(beh, headers, model):
            r = _fail_response("anthropic", beh.fail_code)
            return Deferred(beh.slow, r) if beh.slow else r
        return anthropic_messages(req, headers, beh, model)

    if path == "/v1/models":
        st.last_request = (method, path, headers, None)
        if headers.get("anthropic-version") or (headers.get("x-api-key") and "authorization" not in headers):
            if not headers.get("x-api-key") and not headers.get("authorization", "")[7:].strip():
                return anthropic_error(401, "x-api-key header is required")
            if not headers.get("anthropic-version"):
                return anthropic_error(400, "anthropic-version: header is required")
            return anthropic_models()
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            return openai_error(401, "You didn't provide an API key.", "invalid_request_error")
        return openai_models()

    if path == "/health":
        return http_response(200, b'{"status":"ok"}')

    if fake:
        if path == "/_fake/stats":
            return http_response(200, _dumps(st.snapshot()).encode())
        if path == "/_fake/script":
            if method != "POST":
                return openai_error(405, "Method not allowed", "invalid_request_error")
            try:
                spec = _loads(body)
                SCRIPTS[spec["name"]] = [(c["name"], _dumps(c.get("arguments", {}))) for c in spec["calls"]]
            except (ValueError, UnicodeDecodeError, KeyError, TypeError):
                return openai_error(400, 'expected {"name": ..., "calls": [{"name", "arguments"}]}', "invalid_request_error")
            return http_response(200, b'{"ok":true}')
        if path == "/_fake/reset":
            if method != "POST":
                return openai_error(405, "Method not allowed", "invalid_request_error")
            st.reset()
            return http_response(200, b'{"ok":true}')

    st.last_request = (method, path, headers, None)
    return openai_error(404, "Unknown request URL: %s %s" % (method, path), "invalid_request_error", "unknown_url")


# --------------------------------------------------------------------------------------------
# The HTTP/1.1 server
# --------------------------------------------------------------------------------------------


class Conn(asyncio.Protocol):
    __slots__ = ("t", "buf", "busy", "closed", "can_write", "task", "streaming")

    def __init__(self) -> None:
        self.t = None
        self.buf = bytearray()
        self.busy = False
        self.closed = False
        self.can_write = None  # asyncio.Event while paused
        self.task = None
        self.streaming = False

    # --- asyncio callbacks
    def connection_made(self, transport) -> None:
        self.t = transport
        STATE.open_connections += 1  # (asyncio and uvloop set TCP_NODELAY themselves)

    def connection_lost(self, exc) -> None:
        self.closed = True
        STATE.open_connections -= 1
        if self.task is not None and not self.task.done():
            self.task.cancel()
            STATE.client_aborts += 1
        if self.can_write is not None:
            self.can_write.set()

    def pause_writing(self) -> None:
        self.can_write = asyncio.Event()

    def resume_writing(self) -> None:
        if self.can_write is not None:
            self.can_write.set()
            self.can_write = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self.process()

    def eof_received(self):
        return False

    # --- request parsing and dispatch
    def process(self) -> None:
        buf = self.buf
        t = self.t
        while buf and not self.closed:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    self._bad(431, "request header too large")
                return
            try:
                head = buf[:end].decode("latin-1")
                lines = head.split("\r\n")
                method, target, version = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    k, _, v = line.partition(":")
                    headers[k.lower()] = v.strip()
            except ValueError:
                self._bad(400, "malformed request")
                return
            start = end + 4
            te = headers.get("transfer-encoding")
            if te is not None and "chunked" in te.lower():
                res = _dechunk(buf, start)
                if res is None:
                    if len(buf) > MAX_BODY:
                        self._bad(413, "request too large")
                    return
                if res is False:
                    self._bad(400, "bad chunked body")
                    return
                body, stop = res
            else:
                try:
                    clen = int(headers.get("content-length", 0))
                except ValueError:
                    self._bad(400, "bad content-length")
                    return
                if clen > MAX_BODY:
                    self._bad(413, "request too large")
                    return
                stop = start + clen
                if len(buf) < stop:
                    if headers.get("expect", "").lower() == "100-continue" and len(buf) == start:
                        t.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                        headers.pop("expect", None)
                    return
                body = bytes(buf[start:stop])
            del buf[:stop]

            conn_hdr = headers.get("connection", "").lower()
            keep = ("close" not in conn_hdr) if version == "HTTP/1.1" else ("keep-alive" in conn_hdr)
            q = target.find("?")
            path = target if q < 0 else target[:q]
            try:
                res = handle(method, path, headers, body)
            except Exception as e:  # never take the server down for one request
                res = openai_error(500, "fake upstream internal error: %r" % (e,), "server_error")
            if res.__class__ is bytes:
                t.write(res)
                if not keep:
                    t.close()
                    self.closed = True
                    return
                continue
            self.busy = True
            self.task = asyncio.get_running_loop().create_task(self.run_deferred(res, keep))
            return

    def _bad(self, status: int, msg: str) -> None:
        body = '{"error":{"message":%s,"type":"invalid_request_error","param":null,"code":null}}' % _jstr(msg)
        self.t.write(http_response(status, body.encode(), close=True))
        self.t.close()
        self.closed = True

    async def _drain(self) -> None:
        ev = self.can_write
        if ev is not None:
            await ev.wait()

    async def run_deferred(self, d: Deferred, keep: bool) -> None:
        t = self.t
        sleep = asyncio.sleep
        try:
            if d.slow:
                await sleep(d.slow)
            if self.closed:
                return
            p = d.payload
            if p.__class__ is bytes:
                if d.stall or d.cut_json:
                    hend = p.find(b"\r\n\r\n") + 4
                    t.write(p[:hend])
                    if d.stall:
                        await sleep(d.stall)
                        if self.closed:
                            return
                    if d.cut_json:
                        t.write(p[hend : hend + max(1, (len(p) - hend) // 2)])
                        t.close()
                        self.closed = True
                        return
                    t.write(p[hend:])
                else:
                    t.write(p)
            else:
                STATE.active_streams += 1
                self.streaming = True
                try:
                    t.write(p.head)
                    for i, e in enumerate(p.events):
                        if i == p.cut_at:
                            t.close()
                            self.closed = True
                            return
                        if i == p.garbage_at:
                            t.write(chunk(p.garbage))
                        if i == p.error_at:
                            t.write(chunk(p.error_event) + _CHUNK_END)
                            break
                        if i == p.stall_at and d.stall:
                            await sleep(d.stall)
                        elif d.drip and i:
                            await sleep(d.drip)
                        if self.closed:
                            return
                        t.write(chunk(e))
                        if self.can_write is not None:
                            await self._drain()
                            if self.closed:
                                return
                    else:
                        t.write(_CHUNK_END)
                finally:
                    STATE.active_streams -= 1
                    self.streaming = False
            if not keep:
                t.close()
                self.closed = True
                return
        except asyncio.CancelledError:
            return
        finally:
            self.task = None
            self.busy = False
        if not self.closed and self.buf:
            self.process()


def _dechunk(buf: bytearray, pos: int):
    """Decode a chunked body from buf[pos:]. None: incomplete; False: malformed; else (body, end)."""
    out = bytearray()
    while True:
        le = buf.find(b"\r\n", pos)
        if le < 0:
            return None
        try:
            size = int(bytes(buf[pos:le]).split(b";", 1)[0].strip(), 16)
        except ValueError:
            return False
        pos = le + 2
        if size == 0:
            # trailers until empty line
            while True:
                le = buf.find(b"\r\n", pos)
                if le < 0:
                    return None
                if le == pos:
                    return bytes(out), le + 2
                pos = le + 2
        if len(buf) < pos + size + 2:
            return None
        out += buf[pos : pos + size]
        pos += size + 2


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


async def serve(host: str, port: int, backlog: int, tls: "ssl.SSLContext | None" = None) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Conn, host, port, backlog=backlog, reuse_address=True, ssl=tls)
    actual = server.sockets[0].getsockname()[1]
    sys.stdout.write("LISTENING %d\n" % actual)
    sys.stdout.flush()
    async with server:
        await server.serve_forever()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Fast fake OpenAI / Anthropic upstream for tests and benchmarks.")
    ap.add_argument("--port", type=int, default=0, help="port to listen on (0 = pick a free one)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--backlog", type=int, default=4096)
    ap.add_argument("--no-uvloop", action="store_true", help="use the standard asyncio loop even if uvloop is installed")
    ap.add_argument("--tls-cert", help="serve HTTPS with this PEM certificate chain (with --tls-key)")
    ap.add_argument("--tls-key", help="the PEM private key of --tls-cert")
    args = ap.parse_args(argv)
    tls = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            ap.error("--tls-cert and --tls-key go together")
        import ssl

        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
    try:  # many concurrent streams need many descriptors: lift the soft limit to the hard one
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 1 << 20), hard))
    except (ImportError, ValueError, OSError):
        pass
    if not args.no_uvloop and os.environ.get("FAKE_UPSTREAM_NO_UVLOOP") != "1":
        try:
            import uvloop  # type: ignore

            uvloop.install()
        except ImportError:
            pass
    try:
        asyncio.run(serve(args.host, args.port, args.backlog, tls))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
