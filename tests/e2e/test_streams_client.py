"""An independently written Durable Streams client reads hearth's run event streams.

The client is the npm package `@durable-streams/client` (pinned in tests/streams-client), run
under Node by tests/streams-client/read.mjs, which checks what each read delivered (in order, no
gaps, no duplicates, one terminal event last, the stream reported closed) and prints it as JSON.
Everything else is real too: the hearth binary, its SQLite file, HTTP between them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import httpx
import pytest

from hearth_proc import KEY, ROOT, Hearth

CLIENT_DIR = ROOT / "tests" / "streams-client"
READ = CLIENT_DIR / "read.mjs"
# A run that stays live long enough for the client to catch up and then follow it.
LIVE = 'call:test__sleep {"ms":3000}'


@pytest.fixture(scope="module")
def node() -> str:
    """The `node` binary, with the client installed (scripts/test runs `npm ci` there)."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node not found: install Node 20 (CI machines have it), then `npm ci` in tests/streams-client")
    if not (CLIENT_DIR / "node_modules" / "@durable-streams" / "client").is_dir():
        pytest.fail("the Durable Streams client is not installed: run `npm ci` in tests/streams-client")
    return node


@pytest.fixture(scope="module")
def hearth(fake_upstream_server: str):
    with Hearth(fake_upstream_server, HEARTH_TEST_TOOLS="1") as h:
        yield h


@pytest.fixture
def http(hearth: Hearth):
    with httpx.Client(base_url=hearth.base_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as c:
        yield c


def start_run(http: httpx.Client, text: str) -> str:
    response = http.post("/v1/runs", json={"model": "echo", "messages": [{"role": "user", "content": text}]})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def wait_end(http: httpx.Client, run: str) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body = http.get(f"/v1/runs/{run}", params={"wait": 10}).json()
        if body["status"] in ("completed", "failed", "cancelled"):
            return body
    raise AssertionError(f"run {run} did not end")


def seqs_of(http: httpx.Client, run: str) -> list[int]:
    return [e["seq"] for e in http.get(f"/v1/runs/{run}/events", params={"offset": "-1"}).json()]


def read(node: str, hearth: Hearth, *reads: str) -> dict[str, dict]:
    """Runs read.mjs over `reads` (MODE:RUN[@OFFSET]); asserts it found no problem."""
    done = subprocess.run([node, str(READ), hearth.base_url, KEY, *reads], cwd=CLIENT_DIR,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"the client saw problems:\n{done.stderr}\n{done.stdout}"
    results = {r["read"]: r for r in json.loads(done.stdout)}
    for r in results.values():
        assert r["problems"] == [], r
        assert r["closed"] is True, r
        offsets = [b["offset"] for b in r["batches"]]
        assert offsets == sorted(offsets), f"offsets handed out sort as text in order: {offsets}"
    return results


def test_the_durable_streams_client_reads_whole_resumes_and_follows_live(node: str, hearth: Hearth,
                                                                         http: httpx.Client) -> None:
    finished = start_run(http, "call:test__loop {}")  # more than 20 events; ends failed (max_steps)
    wait_end(http, finished)
    polled, streamed = start_run(http, LIVE), start_run(http, LIVE)

    results = read(node, hearth, f"whole:{finished}", f"long-poll:{polled}", f"sse:{streamed}")

    # (a) a finished run's stream, read whole in one catch-up.
    whole = results[f"whole:{finished}"]
    assert len(whole["seqs"]) >= 10
    assert whole["seqs"] == seqs_of(http, finished) == list(range(1, len(whole["seqs"]) + 1))
    assert whole["types"][-1] == "run.failed"

    # (c, d) live runs followed to their end, by long-poll and by SSE.
    for mode, run in (("long-poll", polled), ("sse", streamed)):
        r = results[f"{mode}:{run}"]
        assert wait_end(http, run)["status"] == "completed"
        assert r["seqs"] == seqs_of(http, run) == list(range(1, len(r["seqs"]) + 1)), r
        assert r["types"][-1] == "run.completed"
        assert any(f"live={mode}" in url for url in r["requests"]), f"the run was not followed live: {r}"
        assert sum(1 for b in r["batches"] if b["count"]) >= 2, f"events came in one batch, not live: {r}"

    # (b) resuming from a mid offset the client was handed (and from a bare seq, still accepted).
    first = results[f"long-poll:{polled}"]["batches"][0]
    full = results[f"long-poll:{polled}"]["seqs"]
    mid, bare = f"whole:{polled}@{first['offset']}", f"sse:{finished}@3"
    resumed = read(node, hearth, mid, bare)
    assert resumed[mid]["seqs"] == full[first["count"]:], resumed[mid]
    assert resumed[bare]["seqs"] == whole["seqs"][3:], resumed[bare]
