"""Starts the real `hearth` binary for end-to-end tests, pointed at the fake upstream."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KEY = "e2e-static-key-0123456789"


def binary() -> str:
    return os.environ.get("HEARTH_BIN") or str(ROOT / "target" / "debug" / "hearth")


class Hearth:
    """A running `hearth serve` on a free port with its own data directory."""

    def __init__(self, upstream: str, **env: str) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="hearth-e2e-")
        full = {k: v for k, v in os.environ.items() if not k.startswith(("HEARTH_", "OPENAI_", "ANTHROPIC_"))}
        full.update({
            "PORT": "0", "HEARTH_HOST": "127.0.0.1", "HEARTH_DB": os.path.join(self.dir.name, "hearth.db"),
            "GATEWAY_API_KEY": KEY, "HEARTH_ADMIN_TOKEN": "e2e-admin-token-0123456789",
            "OPENAI_BASE_URL": upstream + "/v1", "OPENAI_API_KEY": "upstream-openai-key",
            "ANTHROPIC_BASE_URL": upstream, "ANTHROPIC_API_KEY": "upstream-anthropic-key",
            "HEARTH_LOG_FORMAT": "json",
        })
        full.update(env)
        self.proc = subprocess.Popen([binary(), "serve"], env=full, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.port: int | None = None
        ready = threading.Event()
        threading.Thread(target=self._read, args=(ready,), daemon=True).start()
        if not ready.wait(30) or self.port is None:
            self.stop()
            raise RuntimeError("hearth did not start:\n" + "\n".join(self.lines))
        self.base_url = f"http://127.0.0.1:{self.port}"

    def _read(self, ready: threading.Event) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip())
            if self.port is None and '"listening"' in line:
                try:
                    self.port = int(json.loads(line)["addr"].rsplit(":", 1)[1])
                except (ValueError, KeyError):
                    pass
                ready.set()
        ready.set()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.dir.cleanup()

    def __enter__(self) -> "Hearth":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False
