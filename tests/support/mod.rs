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
        let job = name.ends_with(".toml") || name.ends_with(".rhai");
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
