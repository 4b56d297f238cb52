#!/usr/bin/env python3
"""What the run history weighs per run of a health check (README "Retention").

Runs the real daemon on a copy of jobs/health-check.toml (an HTTP probe of a
local server this script starts, then a write_file step) at `every = "100ms"`
instead of 30 s, for SECONDS (default 60), stops it cleanly, and reads the
database: runs recorded, bytes on disk (the database after the daemon's
checkpoint at a clean stop), bytes per run. Then it extrapolates: a month of a
30-second check is 86,400 runs; the default retention keeps 10,000 of them.

    benches/retention.py [SECONDS] [path/to/gatherd]
"""

import http.server
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
binary = sys.argv[2] if len(sys.argv) > 2 else "target/release/gatherd"


class Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ok)
threading.Thread(target=server.serve_forever, daemon=True).start()
port = server.server_address[1]

with tempfile.TemporaryDirectory() as jobs, tempfile.TemporaryDirectory() as state:
    job = open("jobs/health-check.toml").read().replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    with open(os.path.join(jobs, "health-check.toml"), "w") as f:
        f.write('every = "100ms"\n' + job)
    daemon = subprocess.Popen(
        [binary, "daemon", "--jobs", jobs, "--state", state, "--log-level", "warn"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(seconds)
    daemon.send_signal(signal.SIGTERM)
    daemon.wait(timeout=60)
    db = os.path.join(state, "gatherd.db")
    conn = sqlite3.connect(db)
    runs, ok = conn.execute("SELECT count(*), sum(status = 'succeeded') FROM runs").fetchone()
    steps = conn.execute("SELECT count(*) FROM steps").fetchone()[0]
    lines = conn.execute("SELECT count(*) FROM logs").fetchone()[0]
    conn.close()
    size = sum(os.path.getsize(os.path.join(state, f)) for f in os.listdir(state) if f.startswith("gatherd.db"))
    per_run = size / max(runs, 1)
    print(f"{runs} runs ({ok} succeeded), {steps} step rows, {lines} line rows in {seconds:.0f} s")
    print(f"database: {size:,} bytes = {per_run:,.0f} bytes per run")
    print(f"a month of a 30 s check (86,400 runs): {per_run * 86_400 / 1e6:,.1f} MB")
    print(f"the default retention (10,000 runs per job): {per_run * 10_000 / 1e6:,.1f} MB")
