#!/usr/bin/env python3
"""Issue 13's output bench: a step writing 200 MB to stdout as fast as it can.

Runs `gatherd run FILE --json` (release build) on two one-step jobs:
  - `to_pipe`: the command writes to its stdout, which gatherd captures as
    lines (head + tail, everything in between only copied into the ring);
  - `to_null`: the same command redirected to /dev/null (nothing captured);
  - `to_cat`: the same command piped into `cat > /dev/null` inside the step
    (the cost of a pipe and its fastest reader, nothing captured).
and reports, per side, the median wall time of 3 runs and the peak RSS of the
gatherd process (`/usr/bin/time -f %M`), plus the ratio to_pipe / to_null and
the lines recorded. Usage: python3 benches/output.py [path/to/gatherd]
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

BYTES = 200_000_000
LINE = "gatherd output bench: one line of a chatty step, about a hundred bytes long ......................"
COMMAND = f"yes '{LINE}' | head -c {BYTES}"
RUNS = 5


def run(gatherd, job):
    start = time.monotonic()
    p = subprocess.run(
        ["/usr/bin/time", "-f", "%M", gatherd, "run", job, "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.monotonic() - start
    doc = json.loads(p.stdout)
    assert doc["status"] == "succeeded", doc
    rss_kib = int(p.stderr.strip().splitlines()[-1])
    return wall, rss_kib, doc


def main():
    gatherd = sys.argv[1] if len(sys.argv) > 1 else "target/release/gatherd"
    with tempfile.TemporaryDirectory() as d:
        jobs = {}
        sides = [("to_pipe", COMMAND), ("to_null", COMMAND + " > /dev/null"), ("to_cat", COMMAND + " | cat > /dev/null")]
        for name, cmd in sides:
            path = os.path.join(d, f"{name}.toml")
            with open(path, "w") as f:
                f.write(f'[[step]]\nname = "w"\nshell = "{cmd}"\n')
            jobs[name] = path
        results = {}
        # Interleaved, so a busy moment of a shared machine hits every side.
        all_samples = {name: [] for name in jobs}
        for _ in range(RUNS):
            for name, path in jobs.items():
                all_samples[name].append(run(gatherd, path))
        for name in jobs:
            samples = all_samples[name]
            walls = [s[0] for s in samples]
            rss = max(s[1] for s in samples)
            lines = len(samples[-1][2].get("logs", []))
            results[name] = (statistics.median(walls), walls, rss, lines)
        for name, (wall, walls, rss, lines) in results.items():
            runs = ", ".join(f"{w:.3f}" for w in walls)
            print(f"{name}: median wall {wall:.3f} s ({runs}), peak RSS {rss / 1024:.1f} MiB, {lines} lines recorded")
        ratio = results["to_pipe"][0] / results["to_null"][0]
        print(f"to_pipe / to_null: {ratio:.2f}x (issue 13's bound: 1.5x)")
        ratio = results["to_pipe"][0] / results["to_cat"][0]
        print(f"to_pipe / to_cat: {ratio:.2f}x (the same bytes through a pipe, read by cat, nothing kept)")


if __name__ == "__main__":
    main()
