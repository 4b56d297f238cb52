#!/usr/bin/env python3
"""kill -9 of the daemon with N runs in flight: processes left, rows by status.

Writes N one-shot job files, each a shell step `sleep S & sleep S` (a leader
and a background child, tagged by an environment variable), starts the daemon
with `max_concurrent_runs = N`, waits until every process is up, `kill -9`s
the daemon, and counts the tagged processes still alive: soon after the kill
(the leaders die with the daemon), then after a restart is ready (the next
start kills what they left in the background). Then it stops the second
daemon and counts the history's rows by status (`gatherd runs --json
--state DIR`). Python 3 stdlib only; Linux (/proc).

    python3 benches/kill9.py                  # 1,000 runs, target/debug/gatherd
    python3 benches/kill9.py -n 200 --binary target/release/gatherd

Measured 2026-11-29 (debug build, 2 shared cores, `--sleep 120`): 1,000 runs,
3,000 processes in flight; 0.3–0.8 s after the kill 0 of 1,000 leaders alive
and 2,000 background sleeps left; the restart is ready in 1.0–1.7 s having
killed 1,000 groups: 0 processes left; history 1,000 rows, all
`interrupted`. (One run before the fix in the sweep that no longer asks a
leader being reaped for its group missed 1 group of 1,000.)
Again at the end of the session (release build, 2 cores shared with a CI
run): 0 of 1,000 leaders alive 0.40 s after the kill, 1,000 records, the
restart ready in 0.86 s having killed 1,000 groups: 0 processes left;
1,000 rows, all `interrupted`.
"""

import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def tagged(marker):
    """{pid: ppid} of live (not zombie) processes whose environment holds the marker."""
    needle = f"GATHERD_BENCH_MARK={marker}".encode()
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                env = f.read().split(b"\0")
            with open(f"/proc/{name}/stat") as f:
                state, ppid = f.read().rsplit(")", 1)[1].split()[:2]
        except OSError:
            continue
        if needle in env and state != "Z":
            found[int(name)] = int(ppid)
    return found


class Daemon:
    def __init__(self, binary, jobs, state, config):
        self.lines = []
        self.proc = subprocess.Popen(
            [str(binary), "daemon", "--jobs", jobs, "--state", state, "--config", config,
             "--log-format", "json"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={k: v for k, v in os.environ.items() if k not in ("RUST_LOG", "NOTIFY_SOCKET")},
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stderr:
            try:
                self.lines.append(json.loads(line))
            except ValueError:
                self.lines.append({"message": line.strip()})

    def count(self, message):
        return sum(1 for l in list(self.lines) if l.get("message") == message)


def wait(cond, timeout, step=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return cond()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="runs in flight (default 1000)")
    parser.add_argument("--sleep", type=int, default=30, help="seconds each process sleeps (default 30)")
    parser.add_argument("--binary", type=Path, default=ROOT / "target" / "debug" / "gatherd")
    args = parser.parse_args()
    n, marker = args.n, f"{os.getpid()}-{time.time_ns()}"
    with tempfile.TemporaryDirectory() as tmp:
        jobs, state, config = f"{tmp}/jobs", f"{tmp}/state", f"{tmp}/config.toml"
        os.mkdir(jobs)
        with open(config, "w") as f:
            f.write(f"max_concurrent_runs = {n}\n")
        for i in range(n):
            with open(f"{jobs}/job-{i:05}.toml", "w") as f:
                f.write(f'[[step]]\nname = "s"\nshell = {{ command = "sleep {args.sleep} & sleep {args.sleep}", '
                        f'env = {{ GATHERD_BENCH_MARK = "{marker}" }} }}\n')
        d = Daemon(args.binary, jobs, state, config)
        if not wait(lambda: len(tagged(marker)) >= 3 * n, 300, 0.5):
            sys.exit(f"only {len(tagged(marker))} of {3 * n} processes started")
        print(f"in flight: {n} runs, {len(tagged(marker))} processes (sh + sleep + background sleep each)")
        # Each group's record is written just after its spawn returns.
        wait(lambda: len(os.listdir(f"{state}/processes")) >= n, 30, 0.1)
        leaders = {pid for pid, ppid in tagged(marker).items() if ppid == d.proc.pid}
        os.kill(d.proc.pid, signal.SIGKILL)
        d.proc.wait()
        killed = time.monotonic()
        wait(lambda: not leaders & set(tagged(marker)), 10)
        left = tagged(marker)
        print(f"after kill -9: {len(leaders & set(left))} of {len(leaders)} leaders (the daemon's children) alive "
              f"after {time.monotonic() - killed:.2f} s; {len(left)} processes left (their children, for the next start)")
        records = os.listdir(f"{state}/processes")
        print(f"process records left by the first daemon: {len(records)}")
        started = time.monotonic()
        d2 = Daemon(args.binary, jobs, state, config)
        if not wait(lambda: d2.count("ready") > 0, 120):
            sys.exit("the second daemon never got ready")
        ready = time.monotonic() - started
        wait(lambda: not tagged(marker), 10)
        for who, dd in (("first", d), ("second", d2)):
            for l in list(dd.lines):
                expected = ("killed the processes", "this version's run was interrupted", "run interrupted")
                if l.get("level") in ("WARN", "ERROR") and not l.get("message", "").startswith(expected):
                    print(f"  {who} daemon: {l.get('level')} {l.get('message')} {l.get('error', '')}")
        for pid, ppid in tagged(marker).items():
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read().rsplit(")", 1)[1].split()
            pgrp = stat[2]
            recorded = [r for r in records if r.split("-")[0] == pgrp]
            print(f"  left: pid {pid} ppid {ppid} state {stat[0]} pgrp {pgrp} session {stat[3]} "
                  f"start {stat[19]}; records of its group: {recorded}")
        swept = d2.count("killed the processes a step left running when the last daemon stopped without cleaning up")
        print(f"after the restart (ready in {ready:.2f} s): {len(tagged(marker))} left; {swept} groups killed at start")
        d2.proc.send_signal(signal.SIGTERM)
        d2.proc.wait(timeout=120)
        out = subprocess.run([str(args.binary), "runs", "--json", "--state", state, "--limit", str(2 * n + 10)],
                             capture_output=True, text=True, check=True)
        rows = json.loads(out.stdout)
        rows = rows if isinstance(rows, list) else rows.get("runs", rows)
        by_status = collections.Counter(r.get("status") for r in rows)
        print(f"history: {len(rows)} rows, by status: {dict(by_status)}")
        for pid in tagged(marker):  # only ours, by marker: nothing should be here
            os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
