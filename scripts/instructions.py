#!/usr/bin/env python3
"""Instructions per turn of hearth under callgrind (run via scripts/instructions).

For each model: a fresh database, hearth started under `valgrind --tool=callgrind` against the
fake upstream, a warm-up, the counters zeroed (`callgrind_control -z`), N sequential chat turns,
a dump (`callgrind_control -d`), and the dump's total divided by N. The count covers every
thread of hearth (the request path, the writer, the checkpoint) in user space.
"""

import argparse
import glob
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import KEY, free_port, start_fake, wait_health  # noqa: E402

BODY = {"messages": [{"role": "system", "content": "You are terse."},
                     {"role": "user", "content": "Say hello to the benchmark, please."}]}


def turns(port, model, n):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    body = json.dumps(dict(BODY, model=model))
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    for _ in range(n):
        conn.request("POST", "/v1/chat/completions", body, headers)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            sys.exit(f"a turn answered {response.status}")


def measure(fake_port, model, n, warmup, keep=None):
    with tempfile.TemporaryDirectory() as data:
        port = free_port()
        env = dict(os.environ, PORT=str(port), HEARTH_HOST="127.0.0.1", HEARTH_DB=os.path.join(data, "h.db"),
                   GATEWAY_API_KEY=KEY, HEARTH_ADMIN_TOKEN="bench-admin-0123456789",
                   OPENAI_BASE_URL=f"http://127.0.0.1:{fake_port}/v1", OPENAI_API_KEY="bench", HEARTH_LOG="warn")
        out = os.path.join(data, "callgrind.out")
        proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                                 os.environ["HEARTH_BIN"], "serve"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_health(port, timeout=60.0)
            turns(port, model, warmup)
            subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True, capture_output=True)
            turns(port, model, n)
            subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True)
            deadline = time.time() + 30
            dumps = []
            while time.time() < deadline and not dumps:
                dumps = glob.glob(out + ".*")
                time.sleep(0.2)
            if keep:
                os.makedirs(keep, exist_ok=True)
                shutil.copy(dumps[0], os.path.join(keep, f"callgrind.{model.replace('/', '_')}.out"))
            with open(dumps[0]) as f:
                total = next(int(line.split()[1]) for line in f if line.startswith(("summary:", "totals:")))
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    return total / n


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--turns", type=int, default=1000, help="measured turns per model (default 1000)")
    p.add_argument("--warmup", type=int, default=200, help="turns before the counters are zeroed")
    p.add_argument("--model", action="append",
                   help="model to drive (repeatable; default: openai/gpt-bench through the fake, and echo)")
    p.add_argument("--keep", metavar="DIR",
                   help="keep each model's callgrind dump in DIR (read it with callgrind_annotate)")
    a = p.parse_args()
    models = a.model or ["openai/gpt-bench", "echo"]
    fake, fake_port = start_fake()
    try:
        print(f"hearth {os.environ['HEARTH_BIN']}; callgrind, 1 client, {a.turns} turns after {a.warmup}\n")
        print("| model                | instructions per turn |")
        print("|----------------------|-----------------------|")
        for model in models:
            print(f"| {model:<20} | {measure(fake_port, model, a.turns, a.warmup, a.keep):>21,.0f} |", flush=True)
    finally:
        fake.terminate()


if __name__ == "__main__":
    main()
