#!/usr/bin/env python3
"""Side-by-side benchmark of hearth against the fake upstream it fronts (run via scripts/bench).

Every scenario runs the same load directly against the upstream and through hearth, interleaved
over several rounds, and reports medians and ratios: machines here are shared and noisy, so the
numbers are compared within one run, never asserted in tests.
"""

import argparse
import asyncio
import json
import os
import re
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_admin  # noqa: E402  (scenario h, beside this file)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAKE = os.path.join(ROOT, "tests", "e2e", "fake_upstream.py")
LUA = os.path.join(ROOT, "scripts", "bench_chat.lua")
KEY = "bench-key-0123456789"
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_fake():
    proc = subprocess.Popen([sys.executable, FAKE, "--port", "0"], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().split()
    if len(line) != 2 or line[0] != "LISTENING":
        sys.exit(f"fake upstream did not start: {line}")
    return proc, int(line[1])


def wait_health(port, timeout=20.0):
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return time.perf_counter()
        except OSError:
            pass
        time.sleep(0.002)
    sys.exit("hearth did not become healthy")


class Hearth:
    def __init__(self, data_dir, fake_port, extra_env=None, args=()):
        self.port = free_port()
        env = dict(os.environ)
        env.update({
            "PORT": str(self.port), "HEARTH_HOST": "127.0.0.1", "HEARTH_DB": os.path.join(data_dir, "hearth.db"),
            "GATEWAY_API_KEY": KEY, "HEARTH_ADMIN_TOKEN": "bench-admin-0123456789",
            "OPENAI_BASE_URL": f"http://127.0.0.1:{fake_port}/v1", "OPENAI_API_KEY": "bench",
            "HEARTH_LOG": os.environ.get("BENCH_HEARTH_LOG", "warn"),
        })
        env.update(extra_env or {})
        started = time.perf_counter()
        self.proc = subprocess.Popen([os.environ["HEARTH_BIN"], "serve", *args], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.startup_ms = (wait_health(self.port) - started) * 1000

    def cpu_s(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK

    def rss_mb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(port, model, key, conns, duration):
    threads = 1 if conns == 1 else 2
    env = dict(os.environ, BENCH_MODEL=model, BENCH_KEY=key)
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--latency", "-s", LUA,
                          f"http://127.0.0.1:{port}"], env=env, capture_output=True, text=True, check=True).stdout
    pct = {p: float(v) * UNITS[u] for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockerr = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sockerr.groups())) if sockerr else 0)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), "p50": pct.get("50"),
            "p99": pct.get("99"), "requests": requests, "errors": errors}


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")


def nonstreaming(hearth, fake_port, conns, rounds, duration, model="openai/gpt-bench"):
    direct, through, cpu = [], [], []
    for r in range(rounds):
        order = ["direct", "hearth"] if r % 2 == 0 else ["hearth", "direct"]
        for side in order:
            if side == "direct":
                direct.append(wrk(fake_port, "gpt-bench", "bench", conns, duration))
            else:
                before = hearth.cpu_s()
                res = wrk(hearth.port, model, KEY, conns, duration)
                res["cpu_ms"] = (hearth.cpu_s() - before) * 1000 / max(res["requests"], 1)
                res["rss"] = hearth.rss_mb()
                through.append(res)
    d = {k: median([x[k] for x in direct]) for k in ("rps", "p50", "p99")}
    h = {k: median([x[k] for x in through]) for k in ("rps", "p50", "p99", "cpu_ms", "rss")}
    h["errors"] = sum(x["errors"] for x in through)
    d["errors"] = sum(x["errors"] for x in direct)
    return d, h


# --- a minimal asyncio HTTP/1.1 client: enough for streams and the runs API -------------------

async def request(host, port, method, path, body=None, headers=(), on_line=None, conn=None):
    reader, writer = conn or await asyncio.open_connection(host, port)
    data = json.dumps(body).encode() if body is not None else b""
    head = [f"{method} {path} HTTP/1.1", "Host: bench", f"Authorization: Bearer {KEY}",
            f"Content-Length: {len(data)}", "Content-Type: application/json", *headers]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
    status = int((await reader.readline()).split()[1])
    length, chunked = None, False
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
        elif name.lower() == "transfer-encoding" and "chunked" in value:
            chunked = True
    payload = b""
    if chunked:
        buffer = b""
        while (size := int((await reader.readline()).strip() or b"0", 16)) > 0:
            chunk = await reader.readexactly(size + 2)
            buffer += chunk[:-2]
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if on_line:
                    on_line(line)
            payload += chunk[:-2]
        await reader.readline()
    elif length:
        payload = await reader.readexactly(length)
    return status, payload, (reader, writer)


async def ttft(port, model, key_header, n):
    """Sequential streamed turns: median time to the first non-empty content delta, and total."""
    firsts, totals = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        first = []

        def on_line(line, t0=t0, first=first):
            if not first and line.startswith(b"data: {") and b'"content":"' in line and b'"content":""' not in line:
                first.append(time.perf_counter() - t0)

        body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "Say hello, please."}]}
        _, _, (_, w) = await request("127.0.0.1", port, "POST", "/v1/chat/completions", body,
                                     headers=key_header, on_line=on_line)
        w.close()
        totals.append((time.perf_counter() - t0) * 1000)
        firsts.append(first[0] * 1000 if first else float("nan"))
    return median(firsts), median(totals)


async def runs_api(port, clients, seconds):
    """POST /v1/runs (echo), wait for it, read its events: completed turns per second."""
    done, errors = 0, 0
    deadline = time.perf_counter() + seconds

    async def client():
        nonlocal done, errors
        conn = await asyncio.open_connection("127.0.0.1", port)
        body = {"model": "echo", "messages": [{"role": "user", "content": "hello runs"}]}
        while time.perf_counter() < deadline:
            status, payload, conn = await request("127.0.0.1", port, "POST", "/v1/runs", body, conn=conn)
            run = json.loads(payload)["id"]
            status2, _, conn = await request("127.0.0.1", port, "GET", f"/v1/runs/{run}?wait=30", conn=conn)
            status3, events, conn = await request("127.0.0.1", port, "GET", f"/v1/runs/{run}/events?offset=-1",
                                                  conn=conn)
            ok = status == 202 and status2 == 200 and status3 == 200 and b"run.completed" in events
            done, errors = done + ok, errors + (not ok)
        conn[1].close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return done / (time.perf_counter() - t0), errors


async def held_streams(hearth, count, hold_s):
    """`count` concurrent streamed chat turns that drip for `hold_s` seconds: errors and RSS."""
    model = f"openai/gpt-bench+drip:1000+long:{hold_s}"
    completed, errors, peak = 0, 0, 0.0

    async def one():
        nonlocal completed, errors
        lines = []
        try:
            status, _, (_, w) = await request("127.0.0.1", hearth.port, "POST", "/v1/chat/completions",
                                              {"model": model, "stream": True,
                                               "messages": [{"role": "user", "content": "hold"}]},
                                              on_line=lines.append)
            w.close()
            ok = status == 200 and any(line.strip() == b"data: [DONE]" for line in lines)
            completed, errors = completed + ok, errors + (not ok)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            errors += 1

    async def sample():
        nonlocal peak
        while True:
            peak = max(peak, hearth.rss_mb())
            await asyncio.sleep(1)

    sampler = asyncio.ensure_future(sample())
    await asyncio.gather(*(one() for _ in range(count)))
    sampler.cancel()
    return completed, errors, peak


def prefill(db_path, events):
    """Adds `events` run events (in runs of 1,000) to an existing hearth database."""
    conn = sqlite3.connect(db_path)
    org = conn.execute("SELECT id FROM organizations WHERE slug = 'default'").fetchone()[0]
    now = int(time.time() * 1000)
    per_run = 1000
    conn.execute("BEGIN")
    for r in range(events // per_run):
        ses, run = f"ses_hist{r:012d}", f"run_hist{r:012d}"
        conn.execute("INSERT INTO agent_sessions (id, organization_id, status, created_at, updated_at)"
                     " VALUES (?, ?, 'idle', ?, ?)", (ses, org, now, now))
        conn.execute("INSERT INTO runs (id, session_id, organization_id, status, runner, resolved_profile,"
                     " input, created_at, updated_at) VALUES (?, ?, ?, 'completed', 'ts', '{}', '{}', ?, ?)",
                     (run, ses, org, now, now))
        conn.executemany("INSERT INTO run_events (run_id, seq, type, data, created_at) VALUES (?, ?, 'text.delta',"
                         " '{\"text\":\"history\"}', ?)", ((run, s, now) for s in range(1, per_run + 1)))
    conn.commit()
    conn.close()


def row(name, direct, hearth, unit="ms"):
    ratio = hearth / direct if direct else float("nan")
    print(f"| {name:<44} | {direct:>10.3f} | {hearth:>10.3f} | {hearth - direct:>+9.3f} | {ratio:>6.2f} | {unit:<5} |")


async def sequential_runs(port, count):
    """`count` runs one after another (POST, then wait for its end): claim latency is read from
    the database afterwards (claimed_at - created_at, ms)."""
    conn = await asyncio.open_connection("127.0.0.1", port)
    body = {"model": "echo", "messages": [{"role": "user", "content": "one at a time"}]}
    for _ in range(count):
        _, payload, conn = await request("127.0.0.1", port, "POST", "/v1/runs", body, conn=conn)
        run = json.loads(payload)["id"]
        _, _, conn = await request("127.0.0.1", port, "GET", f"/v1/runs/{run}?wait=30", conn=conn)
    conn[1].close()


def external_workers(fake_port, seconds, runs):
    """(g) `hearth serve --workers 0` with two `hearth worker` processes over the worker
    protocol: enqueue → claimed latency of runs one at a time, and turns/s through them."""
    data = tempfile.mkdtemp(prefix="hearth-bench-workers-")
    hearth = Hearth(data, fake_port, extra_env={"HEARTH_WORKERS": "0"})
    db = os.path.join(data, "hearth.db")
    bin_ = os.environ["HEARTH_BIN"]
    out = subprocess.run([bin_, "--db", db, "workers", "token", "create", "--name", "bench"],
                         capture_output=True, text=True, check=True)
    token = out.stdout.strip().splitlines()[-1]
    env = dict(os.environ, HEARTH_WORKER_TOKEN=token, HEARTH_LOG="warn",
               OPENAI_BASE_URL=f"http://127.0.0.1:{fake_port}/v1", OPENAI_API_KEY="bench")
    workers = [subprocess.Popen([bin_, "worker", "--server", f"http://127.0.0.1:{hearth.port}", "--runner", "ts",
                                 "--name", f"bench-{i}", "--concurrency", "64"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(2)]
    try:
        time.sleep(1.0)
        asyncio.run(sequential_runs(hearth.port, runs))
        with sqlite3.connect(db) as c:
            waits = sorted(r[0] for r in c.execute("SELECT claimed_at - created_at FROM runs WHERE claimed_at IS NOT NULL"))
        p50 = waits[len(waits) // 2] if waits else float("nan")
        p99 = waits[min(len(waits) - 1, int(len(waits) * 0.99))] if waits else float("nan")
        print(f"| (g) external workers (2 x hearth worker): enqueue -> claimed, runs one at a time: "
              f"p50 {p50} ms, p99 {p99} ms (of {len(waits)}; ms timestamps)")
        with sqlite3.connect(db) as c:
            before = c.execute("SELECT count(*) FROM runs WHERE claimed_at IS NOT NULL").fetchone()[0]
        t0 = time.perf_counter()
        rate, errors = asyncio.run(runs_api(hearth.port, 16, seconds))
        elapsed = time.perf_counter() - t0
        with sqlite3.connect(db) as c:
            claimed = c.execute("SELECT count(*) FROM runs WHERE claimed_at IS NOT NULL").fetchone()[0] - before
        print(f"| (g) external workers, runs API 16 clients: {rate:.0f} turns/s, {claimed / elapsed:.0f} claims/s "
              f"through the protocol, {errors} errors")
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            try:
                w.wait(timeout=30)
            except subprocess.TimeoutExpired:
                w.kill()
        hearth.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="short runs (smoke test of the script)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=8, help="seconds per load run")
    ap.add_argument("--history", type=int, default=10_000_000, help="events of history for scenario f (0: skip)")
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--hold", type=int, default=60, help="seconds each held stream lasts")
    ap.add_argument("--workers-only", action="store_true", help="only scenario (g): external workers")
    ap.add_argument("--admin-only", action="store_true", help="only scenario (h): admin pages at scale")
    ap.add_argument("--admin-sessions", type=int, default=1_000_000, help="sessions for scenario (h) (0: skip)")
    ap.add_argument("--mcp-only", action="store_true", help="only scenario (i): an MCP tool call's added time")
    a = ap.parse_args()
    if a.quick:
        a.rounds, a.duration, a.history, a.streams, a.hold = 1, 2, 100_000, 100, 5
        a.admin_sessions = min(a.admin_sessions, 20_000)
    fake, fake_port = start_fake()
    if a.admin_only:
        try:
            bench_admin.admin_pages(Hearth, fake_port, a.admin_sessions, 50 if a.quick else 200)
        finally:
            fake.terminate()
        return
    if a.mcp_only:
        try:
            mcp_scenario(a, fake_port)
        finally:
            fake.terminate()
        return
    if a.workers_only:
        try:
            external_workers(fake_port, a.duration, 50 if a.quick else 500)
        finally:
            fake.terminate()
        return
    data = tempfile.mkdtemp(prefix="hearth-bench-")
    hearth = Hearth(data, fake_port)
    try:
        run_all(a, hearth, fake_port, data)
    finally:
        hearth.stop()
        fake.terminate()


def mcp_scenario(a, fake_port):
    """(i): see scripts/bench_mcp.py."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_mcp

    print("| scenario                                     |     direct |     hearth |     added |  ratio | unit  |")
    print("|----------------------------------------------|------------|------------|-----------|--------|-------|")
    bench_mcp.mcp_overhead(Hearth, request, median, row, fake_port, tempfile.mkdtemp(prefix="hearth-bench-mcp-"),
                           a.rounds, 30 if a.quick else 200)


def run_all(a, hearth, fake_port, data):
    idle = hearth.rss_mb()
    print(f"hearth {os.environ['HEARTH_BIN']}; {os.cpu_count()} cores; rounds={a.rounds} duration={a.duration}s; "
          f"hearth log level {os.environ.get('BENCH_HEARTH_LOG', 'warn')} (BENCH_HEARTH_LOG)\n")
    print("| scenario                                     |     direct |     hearth |     added |  ratio | unit  |")
    print("|----------------------------------------------|------------|------------|-----------|--------|-------|")
    results = {}
    for conns in (1, 32, 128):
        d, h = nonstreaming(hearth, fake_port, conns, a.rounds, a.duration)
        results[conns] = (d, h)
        row(f"(a) non-streaming {conns:>3} clients: requests/s", d["rps"], h["rps"], "req/s")
        row(f"(a) non-streaming {conns:>3} clients: p50", d["p50"], h["p50"])
        row(f"(a) non-streaming {conns:>3} clients: p99", d["p99"], h["p99"])
        print(f"|     errors direct/hearth: {d['errors']}/{h['errors']}; hearth CPU per request "
              f"{h['cpu_ms']:.3f} ms; RSS under load {h['rss']:.1f} MB")
    n = 50 if a.quick else 300
    direct_first, direct_total = asyncio.run(ttft(fake_port, "gpt-bench", ["Authorization: Bearer bench"], n))
    hearth_first, hearth_total = asyncio.run(ttft(hearth.port, "openai/gpt-bench", [], n))
    row("(b) streaming 1 client: time to first token", direct_first, hearth_first)
    row("(b) streaming 1 client: total", direct_total, hearth_total)
    rate, errors = asyncio.run(runs_api(hearth.port, 16, a.duration))
    print(f"| (c) runs API (POST, wait, read events), 16 clients: {rate:.0f} turns/s, {errors} errors")
    d, h = nonstreaming(hearth, fake_port, 32, 1, a.duration, model="echo")
    print(f"| (e) whole path with echo, 32 clients: {h['rps']:.0f} turns/s, p99 {h['p99']:.3f} ms, "
          f"{h['errors']} errors, CPU {h['cpu_ms']:.3f} ms/turn")
    completed, errors, peak = asyncio.run(held_streams(hearth, a.streams, a.hold))
    print(f"| (d) {a.streams} concurrent streams held {a.hold} s: {completed} completed, {errors} errors, "
          f"peak RSS {peak:.1f} MB")
    if a.history:
        hearth.stop()
        t0 = time.perf_counter()
        prefill(os.path.join(data, "hearth.db"), a.history)
        print(f"| (f) prefilled {a.history:,} events in {time.perf_counter() - t0:.0f} s")
        hearth.__init__(data, fake_port)
        d2, h2 = nonstreaming(hearth, fake_port, 32, a.rounds, a.duration)
        empty_d, empty = results[32]
        # (a) ran minutes earlier, and a shared machine drifts: the share of direct, measured
        # interleaved in each phase, is the comparison that drift does not move.
        print(f"| (f) 32 clients with history: {h2['rps']:.0f} req/s ({h2['rps'] / empty['rps']:.2f}x empty), "
              f"p99 added {h2['p99'] - d2['p99']:.3f} ms (empty: {empty['p99'] - empty_d['p99']:.3f} ms); "
              f"share of direct {h2['rps'] / d2['rps']:.3f} (empty: {empty['rps'] / empty_d['rps']:.3f})")
    external_workers(fake_port, a.duration, 50 if a.quick else 500)
    if a.admin_sessions:
        bench_admin.admin_pages(Hearth, fake_port, a.admin_sessions, 50 if a.quick else 200)
    mcp_scenario(a, fake_port)
    starts = []
    for _ in range(5):
        hearth.stop()
        hearth.__init__(data, fake_port)
        starts.append(hearth.startup_ms)
    print(f"\nidle RSS after start: {idle:.1f} MB; start to healthy on an existing database: "
          f"median {median(starts):.0f} ms of {len(starts)}")
    binary = os.path.getsize(os.environ["HEARTH_BIN"]) / 1e6
    print(f"release binary: {binary:.1f} MB")


if __name__ == "__main__":
    main()
