//! Shared pieces of the end-to-end tests: the real binary, a copy of the example
//! jobs folder, and a tiny HTTP server on 127.0.0.1 that the test itself starts.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod postgres;

/// Whether the tests run as root (as CI does): the one check for the tests
/// that switch users or that root's privileges change.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The `gatherd` binary cargo built for these tests.
pub fn gatherd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gatherd"))
}

/// The repository's `jobs/` folder.
pub fn jobs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs")
}

/// A temp copy of `jobs/`, so runs that write files leave the checkout clean.
pub fn jobs_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for entry in std::fs::read_dir(jobs_dir()).expect("jobs/ exists") {
        let entry = entry.expect("dir entry");
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let job = gatherd::job::JobFormat::of(&*name).is_some();
        let data =
            name.ends_with(".txt") && !name.contains("report") && !name.contains("last") && !name.contains("summary");
        if job || data {
            std::fs::copy(entry.path(), dir.path().join(&*name)).expect("copy");
        }
    }
    dir
}

/// `gatherd run FILE --json`: the exit code and the parsed document.
pub fn run_json(file: &Path) -> (i32, Value, Output) {
    let output = gatherd().arg("run").arg(file).arg("--json").output().expect("gatherd runs");
    let doc: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}):\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code().unwrap_or(-1), doc, output)
}

/// The step of a `--json` document at `path`.
pub fn step<'a>(doc: &'a Value, path: &str) -> &'a Value {
    doc["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["path"] == path))
        .unwrap_or_else(|| panic!("no step {path} in {doc:#}"))
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write job file");
    path
}

/// How the test server answers.
#[derive(Clone, Copy)]
pub enum Reply {
    /// 200 with this body.
    Ok(&'static str),
    /// This status with a short body.
    Status(u16),
    /// Read the request and never answer.
    Hang,
}

/// Starts a server on 127.0.0.1 (an OS-chosen port) answering every request
/// with `reply`; it lives as long as the test process.
pub fn http_server(reply: Reply) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("local addr");
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || answer(stream, reply));
        }
    });
    addr
}

fn answer(mut stream: TcpStream, reply: Reply) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let (status, text) = match reply {
        Reply::Ok(text) => (200, text),
        Reply::Status(code) => (code, "something broke"),
        Reply::Hang => {
            thread::sleep(Duration::from_secs(30));
            return;
        }
    };
    let _ = write!(stream, "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}", text.len());
}

/// A port on 127.0.0.1 where nothing listens (bound, then released).
pub fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// Whether any live process is left in process group `pgid`. Zombies don't
/// count: they are dead, just not reaped yet (PID 1 here reaps orphans lazily).
pub fn group_alive(pgid: i32) -> bool {
    if nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), None).is_err() {
        return false;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else { return true };
    entries.flatten().any(|entry| {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { return false };
        // pid (comm) state ppid pgrp ...: comm may hold spaces, so split after ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else { return false };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields.len() > 2 && fields[2] == pgid.to_string() && fields[0] != "Z"
    })
}

/// Waits (up to `limit`, polling) until `cond` holds; returns whether it did.
/// A bound for a process to wind down, not a speed assertion.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// A `gatherd daemon` started by a test on its own folders, logging JSON lines
/// that the test reads back; killed if the test ends without stopping it.
pub struct Daemon {
    child: Option<std::process::Child>,
    lines: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    /// Set by the reader thread at the end of the daemon's stderr: every
    /// line the daemon wrote is in `lines`.
    eof: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The jobs folder.
    pub jobs: tempfile::TempDir,
    /// The state folder.
    pub state: tempfile::TempDir,
    /// `STATE/gatherd.sock`, leaked once per daemon so [`Api`] stays `Copy`.
    socket: &'static Path,
}

impl Daemon {
    /// Starts a daemon on a fresh jobs folder (with `files` written into it
    /// first) and waits until it is ready.
    pub fn start(files: &[(&str, &str)], args: &[&str], envs: &[(&str, &str)]) -> Daemon {
        let jobs = tempfile::tempdir().expect("jobs dir");
        for (name, text) in files {
            write(jobs.path(), name, text);
        }
        Daemon::start_in(jobs, args, envs)
    }

    /// Starts a daemon on `jobs` and waits until it is ready.
    pub fn start_in(jobs: tempfile::TempDir, args: &[&str], envs: &[(&str, &str)]) -> Daemon {
        Daemon::start_with(jobs, tempfile::tempdir().expect("state dir"), args, envs)
    }

    /// Starts a daemon on `jobs` with the state folder `state` (e.g. one a
    /// previous daemon left) and waits until it is ready.
    pub fn start_with(
        jobs: tempfile::TempDir,
        state: tempfile::TempDir,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Daemon {
        Daemon::start_via(&[], jobs, state, args, envs)
    }

    /// [`Daemon::start_with`], started through `wrapper` (a program and its
    /// arguments, e.g. `setpriv ... --`) when it is not empty.
    pub fn start_via(
        wrapper: &[&str],
        jobs: tempfile::TempDir,
        state: tempfile::TempDir,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Daemon {
        use std::io::BufRead;
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut cmd = Command::new(program);
                cmd.args(rest).arg(env!("CARGO_BIN_EXE_gatherd"));
                cmd
            }
            None => gatherd(),
        };
        cmd.arg("daemon")
            .arg("--jobs")
            .arg(jobs.path())
            .arg("--state")
            .arg(state.path())
            .args(["--log-format", "json", "--log-level", "gatherd=debug"])
            .args(args)
            .env_remove("RUST_LOG")
            // A developer's own store must not turn every test's history
            // into theirs (a test that wants one passes it in `envs`).
            .env_remove("GATHERD_STORE")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("gatherd daemon starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        let eof = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let at_eof = eof.clone();
        thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line).unwrap_or_else(|_| serde_json::json!({ "message": line }));
                sink.lock().expect("log lines").push(value);
            }
            at_eof.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let socket: &'static Path = Box::leak(state.path().join("gatherd.sock").into_boxed_path());
        let daemon = Daemon { child: Some(child), lines, eof, jobs, state, socket };
        assert!(
            daemon.wait_for(Duration::from_secs(20), |l| l["message"] == "ready"),
            "never ready:\n{}",
            daemon.dump()
        );
        daemon
    }

    /// Every log line so far.
    pub fn lines(&self) -> Vec<Value> {
        self.lines.lock().expect("log lines").clone()
    }

    /// The log so far, for failure messages.
    pub fn dump(&self) -> String {
        self.lines().iter().map(|l| l.to_string()).collect::<Vec<_>>().join("\n")
    }

    /// How many log lines match.
    pub fn count(&self, pred: impl Fn(&Value) -> bool) -> usize {
        self.lines().iter().filter(|l| pred(l)).count()
    }

    /// Waits (up to `limit`) until a log line matches.
    pub fn wait_for(&self, limit: Duration, pred: impl Fn(&Value) -> bool) -> bool {
        eventually(limit, || self.count(&pred) > 0)
    }

    /// Waits (up to `limit`) until `n` log lines match.
    pub fn wait_for_n(&self, limit: Duration, n: usize, pred: impl Fn(&Value) -> bool) -> bool {
        eventually(limit, || self.count(&pred) >= n)
    }

    /// The daemon's pid.
    pub fn pid(&self) -> i32 {
        let pid = self.child.as_ref().map(|c| c.id()).expect("running");
        i32::try_from(pid).expect("pid")
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = self.child.as_ref().map(|c| c.id()).expect("running");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid")), signal).expect("signal");
    }

    /// SIGTERM, then waits for the exit (bounded) and returns the exit code.
    pub fn stop(mut self) -> (Option<i32>, Vec<Value>) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let mut child = self.child.take().expect("running");
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break Some(status);
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                break None;
            }
            thread::sleep(Duration::from_millis(20));
        };
        // The daemon is gone, so its stderr ends (steps' processes have pipes
        // of their own): wait for the reader thread to take the last lines.
        let eof = self.eof.clone();
        assert!(
            eventually(Duration::from_secs(20), || eof.load(std::sync::atomic::Ordering::SeqCst)),
            "the daemon's stderr never ended"
        );
        (status.and_then(|s| s.code()), self.lines())
    }

    /// Ends the daemon with `signal` (SIGKILL for a crash), waits for it, and
    /// hands back its folders for the next daemon.
    pub fn end_with(mut self, signal: nix::sys::signal::Signal) -> (tempfile::TempDir, tempfile::TempDir) {
        self.signal(signal);
        let mut child = self.child.take().expect("running");
        let _ = child.wait();
        let jobs = std::mem::replace(&mut self.jobs, tempfile::tempdir().expect("temp"));
        let state = std::mem::replace(&mut self.state, tempfile::tempdir().expect("temp"));
        (jobs, state)
    }

    /// Writes `text` to `name` in the jobs folder the safe way: a temp name
    /// (ignored by the daemon), then a rename into place.
    pub fn drop_file(&self, name: &str, text: &str) {
        let tmp = self.jobs.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).expect("write temp");
        std::fs::rename(&tmp, self.jobs.path().join(name)).expect("rename into place");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The name of every sentinel job [`Daemon::barrier`] drops: `zz-barrier-N.toml`.
/// `zz` sorts it after every job name the tests use (see `barrier`).
pub const BARRIER_PREFIX: &str = "zz-barrier-";

/// A log line about one of [`Daemon::barrier`]'s sentinel jobs: assertions
/// about "every run" leave these out.
pub fn is_barrier(line: &Value) -> bool {
    line["job"].as_str().is_some_and(|job| job.starts_with(BARRIER_PREFIX))
}

/// The watcher's debounce (`daemon::DEBOUNCE`): it holds a report back at
/// most this long after it observed the path's last event.
pub const WATCH_DEBOUNCE: Duration = Duration::from_millis(10);

impl Daemon {
    /// Returns once the daemon has handled every change the test made to the
    /// jobs folder before the call, and started every run those changes led
    /// to: the event-based replacement for "sleep, then check that nothing
    /// more happened", which passes vacuously on a slow box and wastes time on
    /// a fast one.
    ///
    /// How: it renames a fresh one-shot job `zz-barrier-N.toml` (N unused in
    /// the folder, so it is a new job even after a restart), whose one step
    /// sleeps twice the watcher's debounce, into the folder and waits for its
    /// `run finished`; then does the same with a second one. Why that proves
    /// it:
    /// - The kernel queues the folder's inotify events in the order things
    ///   happened, and the watcher observes them in that order, so it has
    ///   observed every earlier change by the time it observes the first
    ///   sentinel, and so before that sentinel runs and the test sees it end.
    /// - The watcher reports a file renamed in at once, but holds back a
    ///   removal, or a save of a path it reported less than the debounce ago,
    ///   until [`WATCH_DEBOUNCE`] after it observed it. The first sentinel's
    ///   run starts after the watcher observed it and lasts twice that (its
    ///   step sleeps on the daemon's own timer), and the second sentinel is
    ///   renamed only after that run ended: by the time the watcher observes
    ///   the second, every report held back has fallen due, so it goes out
    ///   no later than the second's. In one batch the watcher sends removals
    ///   first, then changes sorted by name, and `zz-barrier-` sorts after the
    ///   tests' job names.
    /// - The supervisor handles file events one at a time on its one loop, in
    ///   the order received: the second sentinel is read and applied, and its
    ///   run spawned, only after every earlier file event was applied,
    ///   including the runs those events started (a run is spawned on the
    ///   loop, while the event that caused it is handled).
    /// - Its `run finished` is logged at its run's end, so seeing it means the
    ///   loop is past all of that.
    ///
    /// What it does not order:
    /// - Timers. A fire that falls due while the barrier travels may be
    ///   handled before or after it; for "this job fires no more", let time
    ///   pass by events first (another job's fires), then use the barrier.
    /// - The `run started` line of a run spawned before the sentinels: its own
    ///   task logs it once its history row is begun. That task had a head
    ///   start over the sentinels' whole journey (watcher, read, apply, their
    ///   own rows, their runs) and waits for no timer, so its line comes first
    ///   in practice, but only the scheduler orders the two tasks.
    pub fn barrier(&self) {
        self.sentinel();
        self.sentinel();
    }

    /// Drops one fresh sentinel job, which runs for twice the watcher's
    /// debounce, and waits (up to 20 s) for its end.
    fn sentinel(&self) {
        let name = (0..)
            .map(|n| format!("{BARRIER_PREFIX}{n}.toml"))
            .find(|name| !self.jobs.path().join(name).exists())
            .expect("an unused barrier name");
        // Its daemon's pid makes it a version of its own: daemons of one
        // fleet (one history) each run their own sentinels, where the same
        // file would run once in the fleet (a one-shot version's claim).
        let job = format!(
            "# the barrier of daemon {}\n[[step]]\nname = \"barrier\"\nsleep = \"{}ms\"\n",
            self.pid(),
            (WATCH_DEBOUNCE * 2).as_millis()
        );
        self.drop_file(&name, &job);
        assert!(
            self.wait_for(Duration::from_secs(20), |l| finished(l, &name, "succeeded")),
            "the barrier {name} never finished: {}",
            self.dump()
        );
    }
}

/// A log line about `job` with this message.
pub fn is(line: &Value, job: &str, message: &str) -> bool {
    line["job"] == job && line["message"] == message
}

/// A `run finished` line of `job` with this status.
pub fn finished(line: &Value, job: &str, status: &str) -> bool {
    is(line, job, "run finished") && line["status"] == status
}

/// Starts `gatherd run FILE --json`, waits until its step has written `pgid`
/// (in `dir`), sends SIGINT, and returns the exit code, the JSON document and
/// the process group of the step.
pub fn interrupt_run(dir: &Path, file: &Path) -> (Option<i32>, Value, i32) {
    let child = gatherd()
        .arg("run")
        .arg(file)
        .arg("--json")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gatherd starts");
    let pgid_file = dir.join("pgid");
    assert!(
        eventually(Duration::from_secs(20), || std::fs::read_to_string(&pgid_file).is_ok_and(|s| s.ends_with('\n'))),
        "the step never started"
    );
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid fits"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("send SIGINT");
    let output = child.wait_with_output().expect("gatherd exits");
    let doc: Value = serde_json::from_slice(&output.stdout).expect("one JSON document");
    let pgid = std::fs::read_to_string(&pgid_file).expect("pgid").trim().parse().expect("a pid");
    (output.status.code(), doc, pgid)
}

/// Where a test reaches the control API: the daemon's unix socket (the
/// default, `STATE/gatherd.sock`) or a TCP address on loopback. Copy, so a
/// test can pass it to [`http`] again and again; its `Display` is what
/// `gatherd ... --addr` takes (`unix:PATH` or `IP:PORT`).
#[derive(Debug, Clone, Copy)]
pub enum Api {
    /// A TCP listener (`--api-listen`), 127.0.0.1 only.
    Tcp(SocketAddr),
    /// The unix socket.
    Unix(&'static Path),
}

impl From<SocketAddr> for Api {
    fn from(addr: SocketAddr) -> Api {
        Api::Tcp(addr)
    }
}

impl std::fmt::Display for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Api::Tcp(addr) => write!(f, "{addr}"),
            Api::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// A connected stream of either kind.
trait Duplex: Read + Write {}
impl<T: Read + Write> Duplex for T {}

impl Daemon {
    /// The control API: the daemon's unix socket in its state folder.
    pub fn api(&self) -> Api {
        Api::Unix(self.socket)
    }

    /// The TCP listener's address (`--api-listen`), from the daemon's log.
    pub fn tcp_api(&self) -> SocketAddr {
        self.lines()
            .iter()
            .find(|l| l["message"] == "control API listening" && l["addr"].is_string())
            .and_then(|l| l["addr"].as_str().and_then(|a| a.parse().ok()))
            .unwrap_or_else(|| panic!("no TCP API address in the log: {}", self.dump()))
    }
}

/// One HTTP/1.1 request to `api` (the unix socket, or TCP on 127.0.0.1
/// only); returns the status and the body (read until the server closes, so
/// it suits server-sent events too).
pub fn http(api: impl Into<Api>, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let api = api.into();
    let (mut stream, host): (Box<dyn Duplex>, String) = match api {
        Api::Tcp(addr) => {
            assert!(addr.ip().is_loopback(), "tests only talk to loopback");
            let stream = TcpStream::connect(addr).expect("connect to the API");
            stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
            (Box::new(stream), addr.to_string())
        }
        Api::Unix(socket) => {
            let stream = std::os::unix::net::UnixStream::connect(socket).expect("connect to the API's socket");
            stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
            (Box::new(stream), "localhost".to_string())
        }
    };
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\ncontent-length: {}\r\n", body.len());
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).expect("send");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    let chunked = response.to_ascii_lowercase().contains("transfer-encoding: chunked");
    (status, if chunked { dechunk(&body) } else { body })
}

/// The payload of a chunked body.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || after.len() < n {
            out.push_str(&after[..n.min(after.len())]);
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// The soft open-files limit of process `pid`, and its hard one.
pub fn open_files_limit(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("a Max open files line");
    let fields: Vec<&str> = line["Max open files".len()..].split_whitespace().collect();
    (fields[0].to_string(), fields[1].to_string())
}

/// Runs `gatherd daemon --jobs JOBS --state STATE ARGS`, expected to refuse
/// to start: its exit code and stderr (killed, and `None`, if it is still
/// running after 20 s).
pub fn refused_start(jobs: &Path, state: &Path, args: &[&str]) -> (Option<i32>, String) {
    let mut child = gatherd()
        .arg("daemon")
        .arg("--jobs")
        .arg(jobs)
        .arg("--state")
        .arg(state)
        .args(args)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("JOURNAL_STREAM")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starts");
    let exited = eventually(Duration::from_secs(20), || child.try_wait().expect("wait").is_some());
    if !exited {
        let _ = child.kill();
    }
    let output = child.wait_with_output().expect("exits");
    let code = if exited { output.status.code() } else { None };
    (code, String::from_utf8_lossy(&output.stderr).into_owned())
}

/// Runs a shell `command` with a terminal for its stdin, stdout and stderr
/// (a pty from util-linux's `script`, in Debian's essential `bsdutils`);
/// what the terminal showed comes back as the output's stdout. A machine
/// without `script` fails here, loudly: these tests are not skipped.
pub fn on_a_terminal(command: &str) -> std::process::Output {
    std::process::Command::new("script")
        .args(["-qec", command, "/dev/null"])
        .output()
        .expect("util-linux's `script` runs (package bsdutils): it gives gatherd a terminal")
}
