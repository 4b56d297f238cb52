#!/bin/bash
# The dashboard's figures (issue 17): server time and bytes of the jobs page
# with 1,000 jobs (20 runs each in their strips) and of a 10,000-step run's
# page, served by the release binary over its unix socket.
#
#   cargo build --release && bash benches/dashboard.sh [BINARY]
#
# Needs python3 and curl. Everything lives in a temporary folder, removed at
# the end; the daemon started here is stopped by its pid.
set -euo pipefail
bin=${1:-target/release/gatherd}
bin=$(realpath "$bin")
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
mkdir -p "$dir/jobs/many" "$dir/state"
python3 - "$dir" <<'PY'
import sys
root = sys.argv[1]
for i in range(1000):
    with open(f"{root}/jobs/many/job{i:04}.toml", "w") as f:
        f.write(f'# job {i}\nevery = "1h"\n[[step]]\nname = "t"\nsleep = "0s"\n')
n = 10000
with open(f"{root}/jobs/big.toml", "w") as f:
    f.write('[[group]]\nname = "main"\ngather = [' + ", ".join(f'"s{i}"' for i in range(n)) + ']\nlimit = 64\n\n')
    for i in range(n):
        f.write(f'[[step]]\nname = "s{i}"\nexec = ["echo", "step {i} says hello"]\n\n')
PY
"$bin" daemon --jobs "$dir/jobs" --state "$dir/state" --log-level warn >"$dir/daemon.log" 2>&1 &
pid=$!
sock="$dir/state/gatherd.sock"
api() { curl -sf --unix-socket "$sock" "$@"; }
for _ in $(seq 100); do api http://localhost/healthz >/dev/null 2>&1 && break; sleep 0.2; done
# The one-shot big.toml runs at start: wait for its end.
for _ in $(seq 600); do
  status=$(api "http://localhost/runs?job=big.toml" | python3 -c 'import json,sys; r=json.load(sys.stdin)["runs"]; print(r[0]["status"] if r else "none")')
  [ "$status" != running ] && [ "$status" != none ] && break
  sleep 1
done
big=$(api "http://localhost/runs?job=big.toml" | python3 -c 'import json,sys; print(json.load(sys.stdin)["runs"][0]["id"])')
echo "big run $big: $status"
# 20 runs of each of the 1,000 jobs, 50 triggers at a time.
python3 - "$sock" <<'PY'
import socket, sys, concurrent.futures
sock = sys.argv[1]
def trigger(i):
    s = socket.socket(socket.AF_UNIX); s.connect(sock)
    s.sendall(f"POST /jobs/many/job{i % 1000:04}.toml/trigger HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
    while s.recv(65536): pass
    s.close()
with concurrent.futures.ThreadPoolExecutor(50) as pool:
    list(pool.map(trigger, range(20000)))
PY
sleep 2
measure() {
  local url=$1
  api -o /dev/null "http://localhost$url" # warm the page cache
  for _ in 1 2 3 4 5; do
    curl -s --unix-socket "$sock" -o /dev/null -w '%{time_total} %{size_download}\n' "http://localhost$url"
  done | sort -n | awk -v u="$url" '{t[NR]=$1; b=$2} END {printf "%-28s median %.3f s (min %.3f, max %.3f), %d bytes\n", u, t[3], t[1], t[5], b}'
}
measure "/ui/"
measure "/ui/runs/$big"
measure "/ui/runs/$big?page=20"
measure "/ui/runs"
measure "/ui/jobs/big.toml"
