#!/usr/bin/env python3
"""Fleet figures: claim latency, runs/s by 1 and 3 daemons on one PostgreSQL, rows and bytes per run.

Starts its own throwaway PostgreSQL 15 cluster (initdb + pg_ctl in a temp
folder, 127.0.0.1 on a free port, as the `postgres` user when run as root:
the recipe of tests/support/postgres.rs), with the server's default
durability (fsync and synchronous_commit on, unlike the tests' cluster).
Runs the release binary (built first). Standard library only; the claim
latency is measured with the server's own `pgbench`.

    python3 benches/fleet.py             # full: 3,000 one-shots per side, 20 s of claims
    python3 benches/fleet.py --quick     # a few seconds: proves the harness works
    python3 benches/fleet.py --only claims --only runs
    python3 benches/fleet.py --binary /tmp/old-gatherd
    python3 benches/fleet.py --pg synchronous_commit=off   # a server setting

Parts:
- claims: pgbench runs the claim statement (the `claims` branch's, as its
  src/store/postgres/claims.rs sends it for a fire, with its 0003 columns:
  `WITH busy AS (SELECT ... FROM runs ...), won AS (INSERT INTO claims ...
  ON CONFLICT (job, slot) DO NOTHING RETURNING 1) SELECT ...`) against the
  schema a daemon created, over TCP on 127.0.0.1, by 1 client on fresh
  slots (every claim won) and by 3 clients racing for the same slots (as 3
  nodes claiming one fire: one wins, two lose); p50/p99 per claim.
- runs: N one-shot files (one `sleep = "0s"` step each) dropped at once
  into 1 daemon, then (N/3 each) into 3 daemons on one database; runs/s =
  N / the time until the database has all N finished rows. The same with 1
  daemon on SQLite, beside it.
- rows: rows and bytes (pg_total_relation_size: table, indexes, TOAST) per
  run in each of gatherd's tables after the runs part.
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PASSWORD = "gatherd-bench"
ONE_SHOT = '[[step]]\nname = "t"\nsleep = "0s"\n'
binary = ROOT / "target" / "release" / "gatherd"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A throwaway PostgreSQL cluster; `close()` stops it and removes its folder."""

    def __init__(self, settings=()):
        if not (PG_BIN / "initdb").exists():
            sys.exit(f"{PG_BIN}/initdb is missing: apt-get install -y postgresql-15")
        self.as_postgres = os.geteuid() == 0
        self.dir = Path(tempfile.mkdtemp(prefix="gatherd-bench-pg-"))
        if self.as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        pwfile = self.dir / "pwfile"
        pwfile.write_text(PASSWORD)
        if self.as_postgres:
            shutil.chown(pwfile, "postgres", "postgres")
        self.pg("initdb", "-D", str(self.dir / "data"), "-U", "postgres", "--pwfile", str(pwfile),
                "--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C")
        pwfile.unlink()
        for _ in range(5):
            self.port = free_port()
            options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c max_connections=100"
                       + "".join(f" -c {kv}" for kv in settings))
            out = self.pg("pg_ctl", "-D", str(self.dir / "data"), "-o", options, "-l", str(self.dir / "server.log"),
                          "-w", "-t", "60", "start", check=False)
            if out.returncode == 0:
                return
        raise RuntimeError(f"the cluster did not start: {(self.dir / 'server.log').read_text()}")

    def pg(self, program, *args, check=True):
        cmd = [str(PG_BIN / program), *args]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        out = subprocess.run(cmd, cwd=self.dir, capture_output=True, text=True)
        if check and out.returncode != 0:
            raise RuntimeError(f"{program} {args}: {out.stdout}{out.stderr}")
        return out

    def psql(self, db, sql):
        out = self.pg("psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", str(self.dir),
                      "-p", str(self.port), "-U", "postgres", "-d", db, "-c", sql)
        return out.stdout.strip()

    def create_db(self, db):
        self.psql("postgres", f'CREATE DATABASE "{db}"')
        return f"postgres://postgres:{PASSWORD}@127.0.0.1:{self.port}/{db}"

    def close(self):
        self.pg("pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


class Daemon:
    """`gatherd daemon` on `jobs`, its JSON log read until it is ready."""

    def __init__(self, jobs, state, store=None, node=None):
        args = [str(binary), "daemon", "--jobs", str(jobs), "--state", str(state),
                "--log-format", "json", "--log-level", "warn"]
        if store:
            args += ["--store", store]
        if node:
            config = Path(state) / "config.toml"
            config.write_text(f'node = "{node}"\n')
            args += ["--config", str(config)]
        env = {k: v for k, v in os.environ.items() if k not in ("RUST_LOG", "NOTIFY_SOCKET", "GATHERD_STORE")}
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        self.ready = threading.Event()
        self.log = []
        threading.Thread(target=self._read, daemon=True).start()
        # "ready" is logged at info: wait for the socket instead.
        sock = Path(state) / "gatherd.sock"
        deadline = time.monotonic() + 60
        while not sock.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the daemon did not start: {''.join(self.log)}")
            time.sleep(0.02)

    def _read(self):
        for line in self.proc.stderr:
            self.log.append(line)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=120)


def percentile(sorted_values, p):
    return sorted_values[max(0, min(len(sorted_values) - 1, int(round(len(sorted_values) * p)) - 1))]


def claims(cluster, url, seconds):
    """Claim latency with pgbench: each client walks the slots 1, 2, 3, ...
    (its own counter), so with 3 clients every slot is raced for by all three."""
    db = url.rsplit("/", 1)[1]
    with tempfile.TemporaryDirectory() as jobs, tempfile.TemporaryDirectory() as state:
        Daemon(jobs, state, store=url).stop()  # creates the schema
    # What the claims branch's 0003_claims.sql adds (a no-op once merged).
    cluster.psql(db, "ALTER TABLE claims ADD COLUMN IF NOT EXISTS content_hash BYTEA; "
                     "CREATE INDEX IF NOT EXISTS claims_job_claimed ON claims (job, claimed_at)")
    script = (
        "\\set i :i + 1\n"
        "WITH busy AS (SELECT node FROM runs WHERE false AND job = 'bench.toml' AND node <> 'n' || :client_id "
        "AND (status = 'running' OR status = 'queued') LIMIT 1), "
        "won AS (INSERT INTO claims (job, slot, node, claimed_at, lease_until, content_hash) "
        "VALUES ('bench.toml', 'fire:' || :i, 'n' || :client_id, now(), 'infinity', sha256('v1')) "
        "ON CONFLICT (job, slot) DO NOTHING RETURNING 1) "
        "SELECT EXISTS (SELECT 1 FROM won), (SELECT node FROM busy);\n"
    )
    out = {}
    workdir = Path(tempfile.mkdtemp(prefix="gatherd-bench-claims-"))
    if cluster.as_postgres:
        shutil.chown(workdir, "postgres", "postgres")
    path = workdir / "claim.sql"
    path.write_text(script)
    if cluster.as_postgres:
        shutil.chown(path, "postgres", "postgres")
    try:
        for name, clients in (("1 node, every claim won", 1), ("3 nodes racing for each slot", 3)):
            for old in workdir.glob("pgbench_log*"):
                old.unlink()
            cmd = [str(PG_BIN / "pgbench"), "-n", "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres",
                   "-c", str(clients), "-j", str(clients), "-T", str(seconds), "-M", "extended", "-D", "i=0",
                   "-f", str(path), "-l", "--log-prefix", str(workdir / "pgbench_log"), db]
            if cluster.as_postgres:
                cmd = ["runuser", "-u", "postgres", "--", *cmd]
            res = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True,
                                 env={**os.environ, "PGPASSWORD": PASSWORD})
            if res.returncode != 0:
                raise RuntimeError(f"pgbench: {res.stdout}{res.stderr}")
            latencies = []
            for log in workdir.glob("pgbench_log*"):
                for line in log.read_text().split("\n"):
                    fields = line.split()
                    if len(fields) >= 3:
                        latencies.append(int(fields[2]) / 1000)
            latencies.sort()
            won = int(cluster.psql(db, "SELECT count(*) FROM claims"))
            cluster.psql(db, "DELETE FROM claims")
            out[name] = {
                "claims": len(latencies),
                "won": won,
                "p50_ms": round(statistics.median(latencies), 3),
                "p99_ms": round(percentile(latencies, 0.99), 3),
                "per_s": round(len(latencies) / seconds),
            }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return out


def burst(n, nodes, store):
    """`n` one-shots dropped at once, split over `nodes` daemons; seconds until
    all `n` are recorded finished. `store`: a database URL, or None for SQLite."""
    import sqlite3
    dirs = [(tempfile.mkdtemp(), tempfile.mkdtemp()) for _ in range(nodes)]
    try:
        for i, (jobs, _) in enumerate(dirs):
            staging = Path(jobs) / ".staging"
            staging.mkdir()
            for k in range(i, n, nodes):
                (staging / f"b{k}.toml").write_text(ONE_SHOT)
        daemons = [Daemon(jobs, state, store=store, node=f"bench{i}") for i, (jobs, state) in enumerate(dirs)]
        try:
            t0 = time.monotonic()
            for i, (jobs, _) in enumerate(dirs):
                for k in range(i, n, nodes):
                    os.rename(Path(jobs) / ".staging" / f"b{k}.toml", Path(jobs) / f"b{k}.toml")

            if store:
                def done():
                    return int(store_count(store)) >= n
            else:
                db = sqlite3.connect(f"file:{Path(dirs[0][1]) / 'gatherd.db'}?mode=ro", uri=True)

                def done():
                    return db.execute("SELECT count(*) FROM runs WHERE status = 'succeeded'").fetchone()[0] >= n
            deadline = t0 + 600
            while not done():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"not all {n} runs recorded after 600 s")
                time.sleep(0.02)
            took = time.monotonic() - t0
        finally:
            for d in daemons:
                d.stop()
    finally:
        for jobs, state in dirs:
            shutil.rmtree(jobs, ignore_errors=True)
            shutil.rmtree(state, ignore_errors=True)
    return {"runs": n, "daemons": nodes, "all_recorded_s": round(took, 2), "runs_per_s": round(n / took)}


CLUSTER = None


def store_count(url):
    db = url.rsplit("/", 1)[1]
    return CLUSTER.psql(db, "SELECT count(*) FROM runs WHERE status = 'succeeded'")


def rows(cluster, url):
    db = url.rsplit("/", 1)[1]
    runs = int(cluster.psql(db, "SELECT count(*) FROM runs"))
    cluster.psql(db, "VACUUM ANALYZE")
    out = {"runs": runs}
    total_rows, total_bytes = 0, 0
    for table in ("runs", "steps", "attempts", "logs", "jobs", "claims"):
        count = int(cluster.psql(db, f"SELECT count(*) FROM {table}"))
        size = int(cluster.psql(db, f"SELECT pg_total_relation_size('{table}')"))
        out[table] = {"rows_per_run": round(count / runs, 2), "bytes_per_run": round(size / runs)}
        total_rows += count
        total_bytes += size
    out["all"] = {"rows_per_run": round(total_rows / runs, 2), "bytes_per_run": round(total_bytes / runs)}
    return out


PARTS = ["claims", "runs", "rows"]


def main():
    global binary, CLUSTER
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small numbers, a few seconds")
    parser.add_argument("--only", action="append", choices=PARTS, help="run this part only (repeatable)")
    parser.add_argument("--binary", type=Path, help="run this gatherd instead of building target/release/gatherd")
    parser.add_argument("--pg", action="append", default=[], metavar="KEY=VALUE",
                        help="a server setting for the cluster (repeatable), e.g. synchronous_commit=off")
    args = parser.parse_args()
    if args.binary:
        binary = args.binary.resolve()
    else:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    n, seconds = (60, 1) if args.quick else (3000, 20)
    parts = args.only or PARTS
    CLUSTER = Cluster(args.pg)
    results = {}
    try:
        if "claims" in parts:
            results["claims"] = claims(CLUSTER, CLUSTER.create_db("claims"), seconds)
        if "runs" in parts or "rows" in parts:
            one = CLUSTER.create_db("one")
            results["runs"] = {
                "sqlite, 1 daemon": burst(n, 1, None),
                "postgres, 1 daemon": burst(n, 1, one),
                "postgres, 3 daemons": burst(n, 3, CLUSTER.create_db("three")),
            }
            if "rows" in parts:
                results["rows"] = rows(CLUSTER, one)
    finally:
        CLUSTER.close()
    results["cores"] = os.cpu_count()
    results["server_settings"] = args.pg
    results["load_average"] = os.getloadavg()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
