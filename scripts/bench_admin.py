"""Scenario (h) of scripts/bench: the admin pages at scale. Bulk-inserts sessions straight into
SQLite (one prepared INSERT in one transaction, spread over organizations, users, statuses,
runners and 30 days), logs in through the login form like a browser, and measures the sessions
page, filtered pages and a deep keyset page through the real binary, one request at a time
over one keep-alive connection. Run alone with `scripts/bench --admin-only`."""

import http.client
import os
import random
import re
import sqlite3
import subprocess
import tempfile
import time

ADMIN = "bench-admin-0123456789"
CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
PROFILE = ('{"runner":"%s","model":"echo","provider":"echo","tools":[],"max_steps":8,'
           '"auth_mode":"api-key","runner_reason":"bench"}')


def encode_id(prefix, value):
    """An id as hearth writes one: prefix, `_`, the 128-bit value in 26 Crockford digits."""
    digits = []
    for _ in range(26):
        digits.append(CROCKFORD[value & 0x1F])
        value >>= 5
    return prefix + "_" + "".join(reversed(digits))


def bulk_sessions(db_path, count, orgs, rng):
    """Inserts `count` sessions created over the last 30 days, oldest first (ids in time order,
    as hearth's UUIDv7 ids are)."""
    now = int(time.time() * 1000)
    span = 30 * 86_400_000
    step = span / count
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA synchronous = OFF")
    rows = []
    for i in range(count):
        at = now - span + int(i * step)
        sid = encode_id("ses", (at << 80) | rng.getrandbits(80))
        org = orgs[rng.randrange(len(orgs))] if rng.random() < 0.9 else orgs[0]
        user = f"user-{rng.randrange(5000)}" if rng.random() < 0.7 else None
        status = "running" if rng.random() < 0.002 else "idle"
        runner = "go" if rng.random() < 0.3 else "ts"
        rows.append((sid, org, user, status, runner, PROFILE % runner, at, at + rng.randrange(60_000)))
    t0 = time.perf_counter()
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO agent_sessions (id, organization_id, user_id, status, runner, resolved_profile,"
                     " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    conn.commit()
    conn.execute("ANALYZE")
    conn.close()
    return time.perf_counter() - t0


class Browser:
    """One keep-alive connection with the login cookie."""

    def __init__(self, port):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.cookies = {}

    def request(self, method, path, body=None):
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        payload = response.read()
        for header in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = header.partition("=")
            value = rest.split(";", 1)[0]
            if value:
                self.cookies[name] = value
        return response.status, payload.decode()

    def login(self):
        status, page = self.request("GET", "/admin/login")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        status, _ = self.request("POST", "/admin/login", f"csrf_token={csrf}&token={ADMIN}")
        assert status == 303, status


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def measure(browser, path, n):
    times = []
    rows = 0
    for _ in range(n):
        t0 = time.perf_counter()
        status, page = browser.request("GET", path)
        times.append((time.perf_counter() - t0) * 1000)
        assert status == 200, (path, status, page[:300])
        rows = page.count('<a class="mono" href="/admin/sessions/ses_')
    return percentile(times, 0.5), percentile(times, 0.95), rows


def admin_pages(hearth_cls, fake_port, count, n):
    data = tempfile.mkdtemp(prefix="hearth-bench-admin-")
    db = os.path.join(data, "hearth.db")
    hearth = hearth_cls(data, fake_port)  # migrates and creates `default`
    hearth.stop()
    binary = os.environ["HEARTH_BIN"]
    slugs = [f"org-{i:02d}" for i in range(20)]
    for slug in slugs:
        subprocess.run([binary, "--db", db, "orgs", "create", slug], capture_output=True, check=True)
    with sqlite3.connect(db) as c:
        ids = dict(c.execute("SELECT slug, id FROM organizations"))
    rng = random.Random(16)
    took = bulk_sessions(db, count, [ids[s] for s in ["default", *slugs]], rng)
    size = os.path.getsize(db) / 1e6
    print(f"| (h) admin pages: {count:,} sessions bulk-inserted in {took:.1f} s (one transaction, "
          f"prepared INSERT; database {size:.0f} MB)")
    hearth.__init__(data, fake_port)
    try:
        browser = Browser(hearth.port)
        browser.login()
        _, first = browser.request("GET", "/admin/sessions")
        # A cursor halfway down: the 500,000th newest session.
        with sqlite3.connect(db) as c:
            mid = c.execute("SELECT id FROM agent_sessions ORDER BY id DESC LIMIT 1 OFFSET ?",
                            (count // 2,)).fetchone()[0]
            user = c.execute("SELECT user_id FROM agent_sessions WHERE user_id IS NOT NULL LIMIT 1").fetchone()[0]
        ten_days_ago = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() - 10 * 86400))
        cases = [
            ("sessions, first page", "/admin/sessions"),
            ("filtered: org", "/admin/sessions?org=org-07"),
            ("filtered: org + runner go", "/admin/sessions?org=org-07&runner=go"),
            ("filtered: status running (rare)", "/admin/sessions?status=running"),
            ("filtered: user", f"/admin/sessions?user={user}"),
            ("filtered: created before 10 days ago", f"/admin/sessions?until={ten_days_ago}"),
            ("deep page (cursor at the middle)", f"/admin/sessions?cursor={mid}"),
            ("filtered: org + status running", "/admin/sessions?org=org-07&status=running"),
            # Worst case: the leading index (the organization's ~43,000 sessions) is read whole
            # because the other filter matches none of them.
            ("worst: org + a runner it never used", "/admin/sessions?org=org-07&runner=rust"),
        ]
        for name, path in cases:
            measure(browser, path, 5)  # warm
            p50, p95, rows = measure(browser, path, n)
            print(f"| (h) {name:<38} p50 {p50:6.2f} ms  p95 {p95:6.2f} ms  ({rows} rows a page, n={n})")
    finally:
        hearth.stop()
