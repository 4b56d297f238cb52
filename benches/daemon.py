#!/usr/bin/env python3
"""Daemon figures: drop -> run-start latency, a burst of dropped files, idle cost, a large fan-out.

Runs the release binary (built first) on temp folders and reads its JSON log
lines. Standard library only.

    python3 benches/daemon.py            # full: a 10,000-step run recorded, 1,000 drops,
                                         # 10,000 files, 60 s idle, a 1,000,000-step gather
    python3 benches/daemon.py --quick    # a few seconds: proves the harness works
    python3 benches/daemon.py --only latency --only burst --repeat 3
                                         # some parts, several times (medians printed)
    python3 benches/daemon.py --binary /tmp/old-gatherd --only burst
                                         # another build (no cargo build), for before/after
    python3 benches/daemon.py --only fanout --fanout-steps 100000
                                         # the fan-out at another size
    python3 benches/daemon.py --only output --only chatty
                                         # a step printing 200 MB; a day of a chatty job

The numbers are for one run on one machine; the latency includes reading the
log line back through a pipe, so it is an upper bound of the daemon's own.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BINARY = ROOT / "target" / "release" / "gatherd"  # --binary replaces it
ONE_SHOT = '[[step]]\nname = "t"\nsleep = "0s"\n'
binary = BINARY


class Daemon:
    """`gatherd daemon` on `jobs`, with every JSON log line timestamped on arrival."""

    def __init__(self, jobs, state):
        self.lines = []
        self.cond = threading.Condition()
        self.proc = subprocess.Popen(
            [str(binary), "daemon", "--jobs", str(jobs), "--state", str(state),
             "--log-format", "json", "--log-level", "info"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={k: v for k, v in os.environ.items() if k not in ("RUST_LOG", "NOTIFY_SOCKET")},
        )
        threading.Thread(target=self._read, daemon=True).start()
        self.wait(lambda l: l.get("message") == "ready", 1, timeout=120)

    def _read(self):
        for line in self.proc.stderr:
            now = time.monotonic()
            if '"message":"step finished"' in line:
                continue  # no part waits on these; a large fan-out logs one per step
            try:
                value = json.loads(line)
            except ValueError:
                value = {"message": line.strip()}
            with self.cond:
                self.lines.append((now, value))
                self.cond.notify_all()

    def wait(self, pred, count, timeout):
        """Waits until `count` lines match; returns the arrival time of the last one."""
        deadline = time.monotonic() + timeout
        hits, seen = [], 0
        with self.cond:
            while True:
                while seen < len(self.lines):  # only the lines not yet looked at
                    t, l = self.lines[seen]
                    seen += 1
                    if pred(l):
                        hits.append(t)
                if len(hits) >= count:
                    return hits[count - 1]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"only {len(hits)} of {count} lines after {timeout} s")
                self.cond.wait(left)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=120)


def drop(jobs, name, text):
    tmp = jobs / f".{name}.tmp"
    tmp.write_text(text)
    os.rename(tmp, jobs / name)


def latency(n):
    with tempfile.TemporaryDirectory() as jobs, tempfile.TemporaryDirectory() as state:
        jobs = Path(jobs)
        d = Daemon(jobs, state)
        samples = []
        try:
            for i in range(n):
                name = f"drop{i}.toml"
                t0 = time.monotonic()
                drop(jobs, name, ONE_SHOT)
                t1 = d.wait(lambda l, name=name: l.get("job") == name and l.get("message") == "run started", 1, 30)
                samples.append((t1 - t0) * 1000)
        finally:
            d.stop()
    samples.sort()
    return {
        "drops": n,
        "p50_ms": round(statistics.median(samples), 2),
        "p99_ms": round(samples[max(0, int(len(samples) * 0.99) - 1)], 2),
        "max_ms": round(samples[-1], 2),
    }


def burst(n):
    with tempfile.TemporaryDirectory() as jobs, tempfile.TemporaryDirectory() as state:
        jobs = Path(jobs)
        staging = jobs / ".staging"
        staging.mkdir()
        for i in range(n):
            (staging / f"b{i}.toml").write_text(ONE_SHOT)
        d = Daemon(jobs, state)
        try:
            t0 = time.monotonic()
            for i in range(n):
                os.rename(staging / f"b{i}.toml", jobs / f"b{i}.toml")
            t1 = d.wait(lambda l: l.get("message") == "run finished" and l.get("status") == "succeeded", n, 600)
        finally:
            d.stop()
    return {"files": n, "all_ran_s": round(t1 - t0, 2)}


def recording(n):
    """A gather of `n` instant steps under the daemon: the time from its "run
    finished" log line until the store shows the run and every step."""
    import sqlite3
    steps = "".join(f'[[step]]\nname = "s{i}"\nsleep = "0s"\n' for i in range(n))
    names = ", ".join(f'"s{i}"' for i in range(n))
    job = f'[[group]]\nname = "main"\ngather = [{names}]\n' + steps
    with tempfile.TemporaryDirectory() as jobs, tempfile.TemporaryDirectory() as state:
        jobs = Path(jobs)
        d = Daemon(jobs, state)
        try:
            drop(jobs, "big.toml", job)
            t_done = d.wait(lambda l: l.get("job") == "big.toml" and l.get("message") == "run finished", 1, 300)
            db = sqlite3.connect(f"file:{Path(state) / 'gatherd.db'}?mode=ro", uri=True)
            while True:
                row = db.execute(
                    "SELECT r.status, (SELECT count(*) FROM steps s WHERE s.run_id = r.id AND s.status <> 'running') "
                    "FROM runs r WHERE r.job = 'big.toml'").fetchone()
                if row and row[0] == "succeeded" and row[1] == n + 1:
                    break
                time.sleep(0.005)
            t_recorded = time.monotonic()
            db.close()
        finally:
            d.stop()
    return {"steps": n, "recorded_after_finish_ms": round((t_recorded - t_done) * 1000, 1)}


def gather_job(n):
    """A Rhai job: one gather of `n` sleep-0 steps (as TOML, 1,000,000 steps
    would be over the 8 MiB a job file may have)."""
    return f"const max_operations = 1000000000;\ngather((0..{n}).map(|i| sleep(0)));\n"


def fanout(n):
    """A gather of `n` sleep-0 steps: `gatherd run` of the file, then the same
    file dropped into the daemon. For each, the run's own duration (its
    recorded `duration_ms`: start to end); for `run` also the process's wall
    time (load, run, JSON report); for the daemon also the time from its "run
    started" line until the run and all its steps are in the history."""
    import sqlite3
    job = gather_job(n)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fanout.rhai"
        path.write_text(job)
        t0 = time.monotonic()
        proc = subprocess.Popen([str(binary), "run", "--json", str(path)], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
        run_ms = None
        for line in proc.stdout:  # the report's head has the run's duration
            if line.strip().startswith(b'"duration_ms":'):
                run_ms = int(line.split(b":")[1].strip().rstrip(b","))
                break
        while proc.stdout.read(1 << 20):  # the steps: drained
            pass
        proc.wait()
        run_wall = time.monotonic() - t0
        if proc.returncode != 0 or run_ms is None:
            raise RuntimeError(f"gatherd run failed ({proc.returncode})")
    with tempfile.TemporaryDirectory() as jobs, tempfile.TemporaryDirectory() as state:
        jobs = Path(jobs)
        d = Daemon(jobs, state)
        try:
            drop(jobs, "fanout.rhai", job)
            mine = lambda m: lambda l: l.get("job") == "fanout.rhai" and l.get("message") == m
            t_started = d.wait(mine("run started"), 1, 600)
            d.wait(mine("run finished"), 1, 1800)
            with d.cond:
                finished = next(l for _, l in d.lines if mine("run finished")(l))
            daemon_ms = finished["duration_ms"]
            db = sqlite3.connect(f"file:{Path(state) / 'gatherd.db'}?mode=ro", uri=True)
            while True:  # the run's row says succeeded once its steps are written; count them then
                row = db.execute("SELECT id, status FROM runs WHERE job = 'fanout.rhai'").fetchone()
                if row and row[1] == "succeeded" and db.execute(
                        "SELECT count(*) FROM steps WHERE run_id = ? AND status = 'succeeded'",
                        (row[0],)).fetchone()[0] >= n + 1:  # the steps, the gather, the script
                    break
                time.sleep(0.02)
            t_recorded = time.monotonic()
            db.close()
        finally:
            d.stop()
    in_history_s = t_recorded - t_started
    return {"steps": n, "run_ms": run_ms, "run_wall_s": round(run_wall, 2), "daemon_ms": daemon_ms,
            "daemon_in_history_s": round(in_history_s, 2), "ratio": round(daemon_ms / max(run_ms, 1), 2),
            "ratio_in_history": round(in_history_s * 1000 / max(run_ms, 1), 2)}


def proc_stats(pid):
    rss_kb = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu_s = (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    return rss_kb, cpu_s


def idle(n, seconds):
    with tempfile.TemporaryDirectory() as jobs, tempfile.TemporaryDirectory() as state:
        jobs = Path(jobs)
        for i in range(n):
            (jobs / f"s{i}.toml").write_text(f'schedule = "0 {i % 60} 3 * * *"\n' + ONE_SHOT)
        d = Daemon(jobs, state)
        try:
            time.sleep(1)
            rss0, cpu0 = proc_stats(d.proc.pid)
            time.sleep(seconds)
            rss1, cpu1 = proc_stats(d.proc.pid)
        finally:
            d.stop()
    return {"scheduled_jobs": n, "rss_mib": round(rss1 / 1024, 1), "idle_seconds": seconds,
            "cpu_ms_while_idle": round((cpu1 - cpu0) * 1000, 1)}


# ~80-byte lines, as fast as `yes` writes them; `head -c` bounds the total.
FLOOD = "yes 'gatherd output bench: a line of about eighty bytes, printed as fast as it can be' | head -c {n}"


def vm(pid, key):
    """A /proc/PID/status figure in KiB (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def step_ms(db_path, job, step):
    import sqlite3
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        while True:
            row = db.execute(
                "SELECT s.end_ms - s.start_ms, r.duration_ms, "
                "(SELECT count(*) FROM logs l WHERE l.run_id = r.id), "
                "(SELECT coalesce(sum(length(l.text)), 0) FROM logs l WHERE l.run_id = r.id) "
                "FROM runs r JOIN steps s ON s.run_id = r.id "
                "WHERE r.job = ? AND s.name = ? AND r.status <> 'running' ORDER BY r.id DESC LIMIT 1",
                (job, step)).fetchone()
            if row and row[0] is not None:
                return row
            time.sleep(0.02)
    finally:
        db.close()


def output(total):
    """A step printing `total` bytes of lines as fast as it can: its time
    against the same command writing to /dev/null and into a pipe read by
    `cat` (under `gatherd run` and the daemon), the daemon's RSS above idle, what the history keeps, and
    whether a run beside it is slowed (a sequence of 20 × 10 ms sleeps,
    alone and during the flood)."""
    cmd = FLOOD.format(n=total)

    def fastest(command):  # of 3, milliseconds
        runs = []
        for _ in range(3):
            t0 = time.monotonic()
            subprocess.run(["sh", "-c", command], stdout=subprocess.DEVNULL, check=True)
            runs.append(time.monotonic() - t0)
        return min(runs) * 1000
    devnull_ms = fastest(cmd)
    # The floor of any capture through a pipe: the same bytes into a pipe
    # read by `cat`, which keeps nothing.
    cat_ms = fastest(f"{cmd} | cat")
    flood = f'[[step]]\nname = "flood"\nshell = "{cmd}"\n'
    probe = "".join(f'[[step]]\nname = "p{i}"\nsleep = "10ms"\n' for i in range(20))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "flood.toml"
        path.write_text(flood)
        out = subprocess.run([str(binary), "run", "--json", str(path)], capture_output=True, check=True)
        report = json.loads(out.stdout)
        s = next(x for x in report["steps"] if x["name"] == "flood")
        run_step_ms = s["end_ms"] - s["start_ms"]
    with tempfile.TemporaryDirectory() as jobs, tempfile.TemporaryDirectory() as state:
        jobs = Path(jobs)
        db_path = Path(state) / "gatherd.db"
        d = Daemon(jobs, state)
        try:
            mine = lambda job, m: lambda l: l.get("job") == job and l.get("message") == m
            drop(jobs, "probe-alone.toml", probe)
            d.wait(mine("probe-alone.toml", "run finished"), 1, 60)
            time.sleep(0.5)
            idle_kb = vm(d.proc.pid, "VmRSS")
            drop(jobs, "flood.toml", flood)
            d.wait(mine("flood.toml", "run started"), 1, 60)
            drop(jobs, "probe-during.toml", probe)
            d.wait(mine("flood.toml", "run finished"), 1, 600)
            d.wait(mine("probe-during.toml", "run finished"), 1, 60)
            peak_kb = vm(d.proc.pid, "VmHWM")
            daemon_step_ms, _, lines, kept = step_ms(db_path, "flood.toml", "flood")
            probe_alone = step_ms(db_path, "probe-alone.toml", "p0")[1]
            probe_during = step_ms(db_path, "probe-during.toml", "p0")[1]
        finally:
            d.stop()
    return {"bytes": total, "devnull_ms": round(devnull_ms), "cat_pipe_ms": round(cat_ms), "run_step_ms": run_step_ms,
            "daemon_step_ms": daemon_step_ms, "ratio_run": round(run_step_ms / devnull_ms, 2),
            "ratio_daemon": round(daemon_step_ms / devnull_ms, 2), "ratio_cat": round(cat_ms / devnull_ms, 2), "idle_rss_mib": round(idle_kb / 1024, 1),
            "peak_rss_mib": round(peak_kb / 1024, 1), "above_idle_mib": round((peak_kb - idle_kb) / 1024, 1),
            "lines_kept": lines, "bytes_kept": kept, "probe_alone_ms": probe_alone,
            "probe_during_ms": probe_during}


def chatty(runs, lines):
    """What the history weighs per run of a job printing `lines` lines of
    about 80 bytes (`every = "100ms"`, stopped after `runs` runs), and so per
    day for such a job every minute (1,440 runs)."""
    import sqlite3
    awk = ("awk 'BEGIN { for (i = 0; i < %d; i++) printf \\\"chatty job line %%06d: the quick brown fox "
           "jumps over the lazy dog, again\\\\n\\\", i }'" % lines)
    job = f'every = "100ms"\n[[step]]\nname = "chat"\nshell = "{awk}"\n'
    with tempfile.TemporaryDirectory() as jobs, tempfile.TemporaryDirectory() as state:
        jobs = Path(jobs)
        db_path = Path(state) / "gatherd.db"
        d = Daemon(jobs, state)
        try:
            empty = db_size(db_path)
            drop(jobs, "chatty.toml", job)
            d.wait(lambda l: l.get("job") == "chatty.toml" and l.get("message") == "run finished", runs, 600)
            os.unlink(jobs / "chatty.toml")
            time.sleep(1)
        finally:
            d.stop()
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        n, kept = db.execute("SELECT count(*), (SELECT count(*) FROM logs) FROM runs WHERE job = 'chatty.toml'").fetchone()
        db.close()
        grown = db_size(db_path) - empty
    per_run = grown / max(n, 1)
    return {"runs": n, "lines_per_run": lines, "lines_kept": kept, "bytes_per_run": round(per_run),
            "mib_per_day_every_minute": round(per_run * 1440 / 2**20, 1)}


def db_size(path):
    """The database's size with its WAL folded in (what a checkpoint leaves)."""
    import sqlite3
    if not path.exists():
        return 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        pages, size, free = (db.execute(f"PRAGMA {p}").fetchone()[0]
                             for p in ("page_count", "page_size", "freelist_count"))
    finally:
        db.close()
    return (pages - free) * size


PARTS = ("recording", "latency", "burst", "idle", "fanout", "output", "chatty")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small numbers, a few seconds")
    parser.add_argument("--only", action="append", choices=PARTS, help="run this part only (repeatable)")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="run each part N times; with N > 1 every run and the median of each figure are printed")
    parser.add_argument("--binary", type=Path, help="run this gatherd instead of building target/release/gatherd")
    parser.add_argument("--fanout-steps", type=int, metavar="N",
                        help="the fan-out's size (default 1,000,000; 2,000 with --quick)")
    args = parser.parse_args()
    global binary
    if args.binary:
        binary = args.binary.resolve()
    else:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    drops, files, jobs, seconds, steps = (50, 200, 100, 2, 500) if args.quick else (1000, 10000, 1000, 60, 10000)
    parts = {
        "recording": lambda: recording(steps),
        "latency": lambda: latency(drops),
        "burst": lambda: burst(files),
        "idle": lambda: idle(jobs, seconds),
        "fanout": lambda: fanout(args.fanout_steps or (2000 if args.quick else 1_000_000)),
        "output": lambda: output(2_000_000 if args.quick else 200_000_000),
        "chatty": lambda: chatty(5 if args.quick else 100, 1000),
    }
    results = {}
    for name in args.only or PARTS:
        runs = [parts[name]() for _ in range(max(1, args.repeat))]
        results[name] = runs[0] if len(runs) == 1 else {
            "runs": runs,
            "median": {k: statistics.median(r[k] for r in runs) for k in runs[0]},
        }
    results["cores"] = os.cpu_count()
    print(json.dumps(results, indent=2))
    if not all(results[k] for k in args.only or PARTS):
        sys.exit(1)


if __name__ == "__main__":
    main()
