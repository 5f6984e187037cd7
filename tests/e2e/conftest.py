"""Fixtures for the end-to-end tests: the fake upstream LLM server, started on a free port."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

FAKE = Path(__file__).with_name("fake_upstream.py")


def start_fake(*extra: str) -> tuple[subprocess.Popen, str]:
    """Start fake_upstream.py on port 0; returns (process, base URL without a trailing slash)."""
    proc = subprocess.Popen(
        [sys.executable, str(FAKE), "--port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=None,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until "LISTENING <port>" (or EOF if it died)
    if not line.startswith("LISTENING "):
        proc.kill()
        raise RuntimeError(f"fake upstream did not start: {line!r}")
    return proc, f"http://127.0.0.1:{int(line.split()[1])}"


def stop_fake(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@pytest.fixture(scope="session")
def fake_upstream_server():
    """One fake upstream for the whole session: yields its base URL (e.g. http://127.0.0.1:PORT)."""
    extra = ["--no-uvloop"] if os.environ.get("FAKE_UPSTREAM_NO_UVLOOP") == "1" else []
    proc, base = start_fake(*extra)
    try:
        yield base
    finally:
        stop_fake(proc)


@pytest.fixture
def fake_upstream(fake_upstream_server: str) -> str:
    """The fake's base URL, with its counters and stats reset before the test."""
    req = urllib.request.Request(fake_upstream_server + "/_fake/reset", data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        assert json.load(r) == {"ok": True}
    return fake_upstream_server
