//! The control API is its owners' only (issue 12): by default a unix socket
//! in the state folder (mode 0660) and no TCP port at all; a TCP listener
//! only when asked for, and then never without a token, on any route; the
//! daemon raises its open-files limit.

mod support;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;
use support::{Daemon, gatherd, http, open_files_limit, refused_start, write};

const LONG: Duration = Duration::from_secs(30);

const QUICK: &str = "schedule = \"0 0 3 1 1 *\"\n[[step]]\nname = \"t\"\nsleep = \"10ms\"\noutput = \"done\"\n";

/// The inodes of the TCP sockets in LISTEN state on this machine.
fn listening_tcp_inodes() -> Vec<String> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local remote st ... uid timeout inode
            if fields.len() > 9 && fields[3] == "0A" {
                inodes.push(fields[9].to_string());
            }
        }
    }
    inodes
}

/// The inodes of the sockets process `pid` holds open.
fn socket_inodes(pid: i32) -> Vec<String> {
    let entries = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("the daemon's fds");
    entries
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            target.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']')).map(str::to_string)
        })
        .collect()
}

#[test]
fn by_default_the_api_is_a_unix_socket_of_mode_0660_and_no_tcp_port_is_opened() {
    let d = Daemon::start(&[("quick.toml", QUICK)], &[], &[]);
    let socket = d.state.path().join("gatherd.sock");
    let meta = std::fs::symlink_metadata(&socket).unwrap_or_else(|e| panic!("no {}: {e}", socket.display()));
    assert!(meta.file_type().is_socket(), "{} is not a socket", socket.display());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o660, "the socket's mode");
    let listening = listening_tcp_inodes();
    let held = socket_inodes(d.pid());
    assert!(
        !held.iter().any(|inode| listening.contains(inode)),
        "the daemon listens on TCP without being asked to: {}",
        d.dump()
    );
    let state = d.state.path().to_str().expect("a UTF-8 temp path");
    // The CLI finds the socket from --state, GATHERD_STATE or the config's state folder.
    let jobs = gatherd().args(["jobs", "--state", state]).output().expect("runs");
    assert_eq!(jobs.status.code(), Some(0), "{}", String::from_utf8_lossy(&jobs.stderr));
    assert!(String::from_utf8_lossy(&jobs.stdout).contains("quick.toml"));
    let waited = gatherd()
        .args(["trigger", "quick.toml", "--wait", "--json"])
        .env("GATHERD_STATE", state)
        .output()
        .expect("runs");
    assert_eq!(waited.status.code(), Some(0), "{}", String::from_utf8_lossy(&waited.stderr));
    let doc: Value = serde_json::from_slice(&waited.stdout).expect("the run's document");
    assert_eq!(doc["status"], "succeeded", "{doc}");
    let dir = tempfile::tempdir().expect("temp");
    let config = write(dir.path(), "config.toml", &format!("state_dir = {}\n", toml_string(state)));
    let listed =
        gatherd().args(["runs", "--json", "--config"]).arg(&config).env_remove("GATHERD_STATE").output().expect("runs");
    assert_eq!(listed.status.code(), Some(0), "{}", String::from_utf8_lossy(&listed.stderr));
    let rows: Value = serde_json::from_slice(&listed.stdout).expect("runs JSON");
    assert!(rows.as_array().is_some_and(|r| r.iter().any(|r| r["id"] == doc["id"])), "{rows}");
    // A clean stop takes the socket away (the folders outlive the daemon here).
    let (_jobs, state) = d.end_with(Signal::SIGTERM);
    assert!(!state.path().join("gatherd.sock").exists(), "the socket outlived the daemon");
}

fn toml_string(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

#[test]
fn a_tcp_listener_without_a_token_refuses_to_start_with_the_way_out() {
    let (jobs, state) = (tempfile::tempdir().expect("temp"), tempfile::tempdir().expect("temp"));
    let (code, stderr) = refused_start(jobs.path(), state.path(), &["--api-listen", "127.0.0.1:0"]);
    assert_eq!(code, Some(1), "a TCP listener without a token started: {stderr}");
    assert!(stderr.contains("needs a token") && stderr.contains("api_token_file"), "{stderr}");
}

#[test]
fn over_tcp_every_route_needs_the_token_from_the_token_file_which_reloads_on_sighup() {
    let dir = tempfile::tempdir().expect("temp");
    // A relative token file lives in the state folder; gatherd creates it at
    // its first start.
    let config = write(dir.path(), "config.toml", "api_token_file = \"api-token\"\n");
    let config = config.to_str().expect("utf-8").to_string();
    let d = Daemon::start(&[("quick.toml", QUICK)], &["--config", &config, "--api-listen", "127.0.0.1:0"], &[]);
    let file = d.state.path().join("api-token");
    let meta = std::fs::metadata(&file).unwrap_or_else(|e| panic!("no token file {}: {e}", file.display()));
    assert_eq!(meta.permissions().mode() & 0o777, 0o640, "the token file's mode");
    let token = std::fs::read_to_string(&file).expect("token").trim().to_string();
    assert!(token.len() >= 32, "a short token: {token:?}");
    let tcp = d.tcp_api();
    let routes = [
        ("GET", "/healthz"),
        ("GET", "/metrics"),
        ("GET", "/jobs"),
        ("GET", "/jobs/quick.toml"),
        ("GET", "/runs"),
        ("GET", "/runs/1"),
        ("GET", "/runs/1/events"),
        ("POST", "/jobs/quick.toml/trigger"),
        ("POST", "/trigger/quick.toml"),
        ("POST", "/runs/1/cancel"),
    ];
    let bearer = |t: &str| format!("Bearer {t}");
    for (method, path) in routes {
        assert_eq!(http(tcp, method, path, &[], "").0, 401, "{method} {path} without a token");
        let wrong = bearer("wrong");
        assert_eq!(http(tcp, method, path, &[("authorization", &wrong)], "").0, 401, "{method} {path}, wrong token");
    }
    let right = bearer(&token);
    assert_eq!(http(tcp, "GET", "/runs", &[("authorization", &right)], "").0, 200);
    assert_eq!(http(tcp, "GET", "/healthz", &[("authorization", &right)], "").0, 200);
    // The socket needs no token: its mode is the gate.
    assert_eq!(http(d.api(), "GET", "/runs", &[], "").0, 200);
    // The CLI over TCP finds the token in the same file.
    let state = d.state.path().to_str().expect("utf-8");
    let jobs = gatherd()
        .args(["jobs", "--addr", &tcp.to_string(), "--config", &config, "--state", state])
        .env_remove("GATHERD_TOKEN")
        .output()
        .expect("runs");
    assert_eq!(jobs.status.code(), Some(0), "{}", String::from_utf8_lossy(&jobs.stderr));

    // A new token in the file applies on SIGHUP; the old one stops working.
    std::fs::write(&file, "rotated-token-0123456789\n").expect("rotate");
    d.signal(Signal::SIGHUP);
    assert!(d.wait_for(LONG, |l| l["message"] == "config reloaded"), "{}", d.dump());
    assert_eq!(http(tcp, "GET", "/runs", &[("authorization", &right)], "").0, 401, "a revoked token");
    let rotated = bearer("rotated-token-0123456789");
    assert_eq!(http(tcp, "GET", "/runs", &[("authorization", &rotated)], "").0, 200);
}

#[test]
fn the_daemon_raises_its_soft_open_files_limit_to_the_hard_one() {
    let (_, hard) = open_files_limit(std::process::id());
    if hard.parse::<u64>().is_ok_and(|h| h <= 256) {
        eprintln!("skipped: the hard limit ({hard}) leaves nothing to raise");
        return;
    }
    let d = Daemon::start_via(
        &["sh", "-c", "ulimit -S -n 256 && exec \"$0\" \"$@\""],
        tempfile::tempdir().expect("temp"),
        tempfile::tempdir().expect("temp"),
        &[],
        &[],
    );
    let limits = open_files_limit(u32::try_from(d.pid()).expect("a pid"));
    assert_eq!(limits, (hard.clone(), hard), "the daemon's open-files limit (soft, hard)");
}

/// Out of file descriptors, the accept loop neither spins nor dies: it
/// logs once, backs off, and serves again once descriptors are free.
#[test]
fn out_of_file_descriptors_the_api_logs_once_backs_off_and_serves_again() {
    // 64 descriptors: the idle daemon needs about 20.
    let d = Daemon::start_via(
        &["sh", "-c", "ulimit -n 64 && exec \"$0\" \"$@\""],
        tempfile::tempdir().expect("temp"),
        tempfile::tempdir().expect("temp"),
        &[],
        &[],
    );
    let says = |text: &'static str| move |l: &Value| l["message"].as_str().is_some_and(|m| m.contains(text));
    let socket = d.state.path().join("gatherd.sock");
    let held: Vec<_> = (0..80)
        .map(|_| std::os::unix::net::UnixStream::connect(&socket).expect("connect (the backlog takes it)"))
        .collect();
    let failing = d.wait_for(LONG, says("cannot accept connections"));
    // Still out of descriptors for five retries (10 + 20 + 40 + 80 + 160
    // ms of back-off): one warning for the whole episode, not one per try.
    std::thread::sleep(Duration::from_millis(600));
    let warnings = d.count(says("cannot accept connections"));
    let recovered_early = d.count(says("accepts connections again"));
    // Dropping the clients ends the episode. (The daemon then accepts the
    // closed connections left in the backlog, which can start a second,
    // shorter episode of its own — itself logged once.)
    drop(held);
    let status = if failing { http(d.api(), "GET", "/healthz", &[], "").0 } else { 0 };
    let recovered = d.wait_for(LONG, says("accepts connections again"));
    assert!(failing, "the daemon never ran out of descriptors: {}", d.dump());
    assert_eq!(warnings, 1, "logged once per episode: {}", d.dump());
    assert_eq!(recovered_early, 0, "recovered while every descriptor was still held: {}", d.dump());
    assert_eq!(status, 200, "the API does not serve after descriptors came back: {}", d.dump());
    assert!(recovered, "{}", d.dump());
}
