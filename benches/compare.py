#!/usr/bin/env python3
"""gatherd against Python asyncio and raw tokio, side by side (issue 7, workloads 1-5).

Builds the release binary and the raw-tokio example, generates every workload for
every side in a temp dir, runs each side several times and writes
benches/RESULTS.md. Standard library only.

    python3 benches/compare.py            # full: N up to 100,000, median of 3 runs
    python3 benches/compare.py --quick    # small N, one run each: proves the harness works

Sides: Python asyncio (python3, standard library), raw tokio
(examples/raw_tokio.rs: JoinSet, spawn_blocking behind a Semaphore,
tokio::process), gatherd TOML and gatherd Rhai (`gatherd run FILE --json
--blocking-threads 8`). Wall time is time.monotonic() around the whole process
(start-up and job loading included); peak RSS is the process's ru_maxrss
from `/usr/bin/time -f %M` (os.wait4 if it is missing). Workloads 6 (recording) and 7 (daemon) are measured by benches/daemon.py.

It checks that every side ran, succeeded and produced a number; it never asserts
a speed. Exit 1 if anything failed.
"""

import argparse
import datetime
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GATHERD = ROOT / "target" / "release" / "gatherd"
RAW_TOKIO = ROOT / "target" / "release" / "examples" / "raw_tokio"
RESULTS = ROOT / "benches" / "RESULTS.md"
NOTES = ROOT / "benches" / "NOTES.md"
SIDES = ["Python asyncio", "raw tokio", "gatherd TOML", "gatherd Rhai"]
POOL = 8
TIMEOUT = 600  # seconds per process
SEED = 7
# /usr/bin/time reports the child's own ru_maxrss. os.wait4 straight from this
# harness would not: the forked child's high-water mark starts at this Python
# process's RSS (about 16 MiB) and survives the exec.
TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


# ---------------------------------------------------------------- generators
# Each generator returns {side: argv} for one workload, writing files into `d`.

def py_script(d, name, body):
    path = d / f"{name}.py"
    path.write_text("import asyncio, sys, time\n"
                    "from concurrent.futures import ThreadPoolExecutor\n\n"
                    + body + "\n\nasyncio.run(main())\n")
    return [sys.executable, str(path)]


def toml_job(d, name, groups, steps):
    """groups: [(name, mode, children, extra)], steps: [(name, body)] -> argv."""
    out = []
    for gname, mode, children, extra in groups:
        out.append(f'[[group]]\nname = "{gname}"\n{mode} = [{", ".join(chr(34) + c + chr(34) for c in children)}]\n{extra}')
    for sname, body in steps:
        out.append(f'[[step]]\nname = "{sname}"\n{body}')
    path = d / f"{name}.toml"
    path.write_text("\n".join(out))
    return gatherd_argv(path)


def rhai_job(d, name, code):
    path = d / f"{name}.rhai"
    path.write_text(code)
    return gatherd_argv(path)


def gatherd_argv(path):
    return [str(GATHERD), "run", str(path), "--json", "--blocking-threads", str(POOL)]


def seed_sequential(d):
    name = "w1_sequential"
    return {
        "Python asyncio": py_script(d, name, "async def main():\n    await asyncio.sleep(1)\n    await asyncio.sleep(1)"),
        "raw tokio": [str(RAW_TOKIO), "seq"],
        "gatherd TOML": toml_job(d, name, [], [("fetch", 'sleep = "1s"\n'), ("read", 'sleep = "1s"\n')]),
        "gatherd Rhai": rhai_job(d, name, "await_step(sleep(1));\nawait_step(sleep(1));\n"),
    }


def gather_sleeps(n, ms):
    def gen(d):
        name = f"gather_{n}_{ms}ms"
        secs = ms / 1000
        return {
            "Python asyncio": py_script(d, name,
                f"async def main():\n    r = await asyncio.gather(*[asyncio.sleep({secs}) for _ in range({n})])\n"
                f"    assert len(r) == {n}"),
            "raw tokio": [str(RAW_TOKIO), "gather", str(n), str(ms)],
            "gatherd TOML": toml_job(d, name, [("main", "gather", [f"s{i}" for i in range(n)], "")],
                                     [(f"s{i}", f'sleep = "{ms}ms"\n') for i in range(n)]),
            "gatherd Rhai": rhai_job(d, name,
                f"let r = gather((0..{n}).map(|i| sleep({secs:.3f})));\nr.len()\n"),
        }
    return gen


def random_ms(n):
    rng = random.Random(SEED)
    return [rng.randint(0, 1000) for _ in range(n)]


def as_completed_random(n):
    def gen(d):
        name = f"as_completed_{n}"
        ms = random_ms(n)
        (d / f"{name}.ms").write_text("\n".join(map(str, ms)) + "\n")
        floats = ", ".join(f"{m / 1000:.3f}" for m in ms)
        return {
            "Python asyncio": py_script(d, name,
                f"MS = [{', '.join(map(str, ms))}]\n\n"
                "async def main():\n    seen = 0\n"
                "    for c in asyncio.as_completed([asyncio.sleep(m / 1000) for m in MS]):\n"
                "        await c\n        seen += 1\n"
                f"    assert seen == {n}"),
            "raw tokio": [str(RAW_TOKIO), "as_completed", str(d / f"{name}.ms")],
            "gatherd TOML": toml_job(d, name, [("main", "as_completed", [f"s{i}" for i in range(n)], "")],
                                     [(f"s{i}", f'sleep = "{m}ms"\n') for i, m in enumerate(ms)]),
            "gatherd Rhai": rhai_job(d, name,
                f"let ms = [{floats}];\n"
                f"let seen = 0;\nfor r in as_completed(ms.map(|m| sleep(m))) {{ seen += 1; }}\nseen\n"),
        }
    return gen


def pool_workload(blocking, asyncs, ms):
    def gen(d):
        name = "pool"
        secs = ms / 1000
        return {
            "Python asyncio": py_script(d, name,
                "async def main():\n"
                f"    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers={POOL}))\n"
                "    start = time.monotonic()\n"
                "    async def asyncs():\n"
                f"        await asyncio.gather(*[asyncio.sleep({secs}) for _ in range({asyncs})])\n"
                "        print(f'ASYNC_DONE_MS {(time.monotonic() - start) * 1000:.1f}', file=sys.stderr)\n"
                f"    jobs = [asyncio.to_thread(time.sleep, {secs}) for _ in range({blocking})]\n"
                "    await asyncio.gather(*jobs, asyncs())"),
            "raw tokio": [str(RAW_TOKIO), "pool", str(blocking), str(POOL), str(ms), str(asyncs)],
            "gatherd TOML": toml_job(d, name,
                [("main", "gather", ["blocking", "async"], ""),
                 ("blocking", "gather", [f"b{i}" for i in range(blocking)], ""),
                 ("async", "gather", [f"a{i}" for i in range(asyncs)], "")],
                [(f"b{i}", f'sleep = "{ms}ms"\nblocking = true\n') for i in range(blocking)]
                + [(f"a{i}", f'sleep = "{ms}ms"\n') for i in range(asyncs)]),
            "gatherd Rhai": rhai_job(d, name,
                f"let steps = [];\n"
                f"for i in 0..{blocking} {{ steps.push(to_thread(|| {{ sleep_blocking({secs}); () }})); }}\n"
                f"for i in 0..{asyncs} {{ steps.push(sleep({secs})); }}\n"
                f"let r = gather(steps);\nr.len()\n"),
        }
    return gen


def exec_fanout(n, limit):
    def gen(d):
        name = f"exec_{n}"
        return {
            "Python asyncio": py_script(d, name,
                f"async def one(sem):\n    async with sem:\n"
                "        p = await asyncio.create_subprocess_exec('true')\n"
                "        assert await p.wait() == 0\n\n"
                f"async def main():\n    sem = asyncio.Semaphore({limit})\n"
                f"    await asyncio.gather(*[one(sem) for _ in range({n})])"),
            "raw tokio": [str(RAW_TOKIO), "exec", str(n), str(limit)],
            "gatherd TOML": toml_job(d, name, [("main", "gather", [f"x{i}" for i in range(n)], f"limit = {limit}\n")],
                                     [(f"x{i}", 'exec = ["true"]\n') for i in range(n)]),
            # Rhai's gather has no limit: a window of `limit` spawned steps, the oldest awaited first.
            "gatherd Rhai": rhai_job(d, name,
                f"let hs = [];\nfor i in 0..{n} {{\n"
                f"    if hs.len() >= {limit} {{ let h = hs.shift(); h.result(); }}\n"
                f"    hs.push(spawn(exec([\"true\"])));\n}}\n"
                "for h in hs { h.result(); }\n" f"{n}\n"),
        }
    return gen


def workloads(quick):
    ws = [
        ("1a", "Seed: 2 × 1 s sequential", 2.0, seed_sequential, None),
        ("1b", "Seed: 2 × 1 s under gather", 1.0, gather_sleeps(2, 1000), None),
    ]
    for n in ([1_000] if quick else [1_000, 10_000, 100_000]):
        ws.append(("2", f"gather of N = {n:,} sleeps of 1 s", 1.0, gather_sleeps(n, 1000), n))
    for n in ([1_000] if quick else [10_000, 100_000]):
        ideal = max(random_ms(n)) / 1000
        ws.append(("3", f"as_completed of N = {n:,} random sleeps in [0, 1 s] (seed {SEED})", ideal,
                   as_completed_random(n), n))
    n = 1_000 if quick else 100_000
    ws.append(("3b", f"Pure overhead: gather of N = {n:,} sleeps of 0", 0.0, gather_sleeps(n, 0), n))
    ws.append(("4", f"Blocking pool: 64 blocking sleeps of 0.1 s on a pool of {POOL}, beside 1,000 async sleeps of 0.1 s",
               0.8, pool_workload(64, 1_000, 100), None))
    n = 50 if quick else 1_000
    ws.append(("5", f"exec fan-out: {n:,} × `true`, limit 64", None, exec_fanout(n, 64), n))
    return ws


# ---------------------------------------------------------------- running

def run_once(argv, side, tmp):
    """One process: (wall seconds, peak RSS KiB, error or None)."""
    out_path, err_path, rss_path = tmp / "stdout", tmp / "stderr", tmp / "rss"
    rss_path.unlink(missing_ok=True)
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        start = time.monotonic()
        wrapped = [TIME, "-f", "%M", "-o", str(rss_path)] + argv if TIME else argv
        proc = subprocess.Popen(wrapped, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                env={k: v for k, v in os.environ.items() if k != "RUST_LOG"})
        timer = threading.Timer(TIMEOUT, proc.kill)
        timer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - start
        timer.cancel()
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    error = None
    kib = usage.ru_maxrss
    if TIME:
        try:
            kib = int(rss_path.read_text().split()[-1])
        except (OSError, ValueError, IndexError):
            kib = None
    async_ms = None
    if code != 0:
        tail = err_path.read_bytes()[-400:].decode(errors="replace").strip()
        error = f"exit {code}: {tail}"
    elif side.startswith("gatherd"):
        try:
            doc = json.loads(out_path.read_bytes())
            if doc.get("status") != "succeeded":
                error = f"status {doc.get('status')}: {doc.get('error')}"
            async_ms = async_done_ms(doc)
        except ValueError as e:
            error = f"no JSON on stdout: {e}"
    else:
        for line in err_path.read_text(errors="replace").splitlines():
            if line.startswith("ASYNC_DONE_MS "):
                async_ms = float(line.split()[1])
    return wall, kib, error, async_ms


def async_done_ms(doc):
    """Workload 4 in a gatherd report: when the async sleeps were all done (the
    TOML job's `async` group, or a Rhai job's last `sleep`); None elsewhere."""
    steps = doc.get("steps", [])
    for s in steps:
        if s.get("path") == "main/async":
            return s.get("end_ms")
    if any(s.get("kind") == "to_thread" for s in steps):
        ends = [s.get("end_ms") for s in steps if s.get("kind") == "sleep" and s.get("end_ms") is not None]
        return max(ends) if ends else None
    return None


def measure(argv, side, runs, tmp):
    walls, rss, errors, asyncs = [], [], [], []
    for _ in range(runs):
        wall, kib, error, async_ms = run_once(argv, side, tmp)
        if error:
            errors.append(error)
        elif kib is None:
            errors.append("no peak RSS from /usr/bin/time")
        else:
            walls.append(wall)
            rss.append(kib)
            if async_ms is not None:
                asyncs.append(async_ms)
    return {
        "wall": statistics.median(walls) if walls else None,
        "walls": walls,
        "rss": statistics.median(rss) if rss else None,
        "async_ms": statistics.median(asyncs) if asyncs else None,
        "errors": errors,
    }


# ---------------------------------------------------------------- report

def cmd_out(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine():
    cores = os.cpu_count()
    mem = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return cores, mem, cpu


def tokio_version():
    lock = (ROOT / "Cargo.lock").read_text().split("[[package]]")
    for block in lock:
        if '\nname = "tokio"\n' in block:
            for line in block.splitlines():
                if line.startswith("version"):
                    return line.split('"')[1]
    return "unknown"


def fmt_s(x):
    if x is None:
        return "—"
    return f"{x * 1000:.0f} ms" if abs(x) < 1 else f"{x:.3f} s"


def fmt_ratio(a, b, floor=0.0):
    if a is None or b is None or b <= floor:
        return "—"
    return f"{a / b:.2f}×"


def fmt_mib(kib):
    return "—" if kib is None else f"{kib / 1024:.1f} MiB"


def report(results, args, total):
    cores, mem, cpu = machine()
    lines = [
        "# gatherd against Python asyncio and raw tokio",
        "",
        f"Written by `python3 benches/compare.py{' --quick' if args.quick else ''}` "
        f"on {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}; "
        f"one run of the harness on one machine ({total:.0f} s in all, build excluded).",
        "",
        f"- Machine: {cores} cores ({cpu}), {mem} memory, {platform.system()} {platform.release()}",
        f"- Versions: {cmd_out(['rustc', '--version'])}; tokio {tokio_version()}; "
        f"Python {platform.python_version()}; {cmd_out([str(GATHERD), '--version'])}",
        f"- Runs per side: {args.runs} ({'median' if args.runs > 1 else 'single run'}); "
        "wall = time.monotonic() around the whole process (start-up, job loading and "
        "for gatherd the JSON report included); peak RSS = " + ("ru_maxrss of the process as `/usr/bin/time -f %M` reports it (wall includes its exec, ~1 ms)."
        if TIME else "ru_maxrss from os.wait4 (floored at the harness's own ~16 MiB: no /usr/bin/time here)."),
        f"- Sides: Python asyncio = a generated script run by python3 (standard library; "
        f"`to_thread` on `ThreadPoolExecutor(max_workers={POOL})`, `create_subprocess_exec` behind "
        f"`asyncio.Semaphore(64)`); raw tokio = `examples/raw_tokio.rs` (multi-thread runtime, one task "
        f"per step in a JoinSet, `spawn_blocking` behind `Semaphore({POOL})`, `tokio::process::Command` "
        f"behind `Semaphore(64)`); gatherd TOML / Rhai = generated job files run by "
        f"`gatherd run FILE --json --blocking-threads {POOL}` (status checked).",
        "- Excess = median wall − the ideal time (the longest sleep, or ceil(64/8) × 0.1 s for workload 4). "
        "Ratios: wall (and excess) of the side ÷ raw tokio's and ÷ Python's; — where the denominator is under 1 ms.",
        "- Workloads 6 (recording) and 7 (daemon) are measured by `python3 benches/daemon.py`, not here.",
        "",
    ]
    for (wid, title, ideal, _, n), res in results:
        lines += [f"## {wid}. {title}", ""]
        if ideal is not None:
            lines += [f"Ideal: {fmt_s(ideal)}.", ""]
        head = "| side | median wall | excess | peak RSS |"
        rule = "| --- | ---: | ---: | ---: |"
        if n:
            head += " RSS / step |"
            rule += " ---: |"
        pool = wid == "4"
        if pool:
            head += " async sleeps done |"
            rule += " ---: |"
        head += " wall ÷ tokio | wall ÷ Python | excess ÷ tokio | excess ÷ Python | runs |"
        rule += " ---: | ---: | ---: | ---: | --- |"
        lines += [head, rule]
        tok, py = res["raw tokio"], res["Python asyncio"]
        exc = lambda r: None if ideal is None or r["wall"] is None else r["wall"] - ideal
        for side in SIDES:
            r = res[side]
            row = f"| {side} | {fmt_s(r['wall'])} | {fmt_s(exc(r))} | {fmt_mib(r['rss'])} |"
            if n:
                row += " —" if r["rss"] is None else f" {r['rss'] * 1024 / n:,.0f} B"
                row += " |"
            if pool:
                row += " —" if r.get("async_ms") is None else f" {r['async_ms']:.1f} ms"
                row += " |"
            row += (f" {fmt_ratio(r['wall'], tok['wall'])} | {fmt_ratio(r['wall'], py['wall'])} |"
                    f" {fmt_ratio(exc(r), exc(tok), 0.001)} | {fmt_ratio(exc(r), exc(py), 0.001)} |")
            runs = ", ".join(f"{w:.3f}" for w in r["walls"])
            if r["errors"]:
                runs += f" **FAILED {len(r['errors'])}×: {r['errors'][0][:160]}**".replace("|", "\\|").replace("\n", " ")
            row += f" {runs} |"
            lines.append(row)
        lines.append("")
    # The quick mode proves the harness works; it must not overwrite the
    # committed figures.
    out = RESULTS.with_name("RESULTS.quick.md") if args.quick else RESULTS
    # The hand-written part (daemon figures, the optimisation log, the
    # targets missed and why) lives in NOTES.md and follows the tables.
    if not args.quick and NOTES.exists():
        lines += ["", NOTES.read_text()]
    out.write_text("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small N, one run per side")
    parser.add_argument("--runs", type=int, help="runs per side (default 3, or 1 with --quick)")
    parser.add_argument("--no-build", action="store_true", help="use the binaries already built")
    args = parser.parse_args()
    args.runs = args.runs or (1 if args.quick else 3)

    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "gatherd", "--example", "raw_tokio"],
                       cwd=ROOT, check=True)
    started = time.monotonic()
    failed = False
    results = []
    with tempfile.TemporaryDirectory(prefix="gatherd-compare-") as tmp:
        tmp = Path(tmp)
        for wl in workloads(args.quick):
            wid, title, ideal, gen, _ = wl
            d = tmp / f"w{len(results)}"
            d.mkdir()
            argvs = gen(d)
            res = {}
            for side in SIDES:
                r = measure(argvs[side], side, args.runs, tmp)
                res[side] = r
                status = "; ".join(r["errors"][:1]) if r["errors"] else "ok"
                print(f"{wid:>3} {title[:60]:<60} {side:<15} {fmt_s(r['wall']):>10} {fmt_mib(r['rss']):>10}  {status}",
                      flush=True)
                if r["errors"] or r["wall"] is None or r["rss"] is None:
                    failed = True
            results.append((wl, res))
    total = time.monotonic() - started
    report(results, args, total)
    print(f"wrote {(RESULTS.with_name('RESULTS.quick.md') if args.quick else RESULTS).relative_to(ROOT)} in {total:.1f} s", flush=True)
    if failed:
        print("some side failed or produced no number", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
