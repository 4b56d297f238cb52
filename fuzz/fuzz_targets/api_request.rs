//! Any bytes as a request to the control API, over its unix socket (no
//! token, no `Host` rule) or over TCP on 127.0.0.1 with a token (first
//! byte odd): the real server (`gatherd::api::serve`: hyper, the connection
//! guard, the Host/Origin and token checks, the routes' path and query
//! parsing) over a real SQLite store, with a daemon that knows one job.
//!
//! Every request gets an answer or a clean close within 5 s, and never a
//! 5xx: a panic in a handler, a hang or an internal error is a finding.
#![no_main]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
use gatherd::api::control::Numbered;
use gatherd::api::{ApiConfig, Control, ControlError, JobDetail, JobView, Metrics, SharedToken, Started, serve};
use gatherd::store::{DB_FILE, RunId, RunStore, open_sqlite};
use libfuzzer_sys::fuzz_target;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "fuzz-token";

/// A daemon with one job, `a.toml`, whose runs are never started.
struct OneJob;

impl Control for OneJob {
    fn jobs(&self) -> BoxFuture<'_, Vec<JobView>> {
        Box::pin(async { vec![view()] })
    }
    fn trigger<'a>(&'a self, job: &'a str) -> BoxFuture<'a, Result<Started, ControlError>> {
        Box::pin(async move {
            match job {
                "a.toml" => Err(ControlError::NotStarted("overlap = skip and a run is going".into())),
                other => Err(ControlError::NoSuchJob(other.into())),
            }
        })
    }
    fn pause<'a>(&'a self, job: &'a str, _paused: bool) -> BoxFuture<'a, Result<(), ControlError>> {
        Box::pin(async move {
            match job {
                "a.toml" => Ok(()),
                other => Err(ControlError::NoSuchJob(other.into())),
            }
        })
    }
    fn job_detail<'a>(&'a self, job: &'a str, _fires: usize) -> BoxFuture<'a, Option<JobDetail>> {
        Box::pin(async move { (job == "a.toml").then(JobDetail::default) })
    }
    fn cancel(&self, run: RunId) -> BoxFuture<'_, Result<(), ControlError>> {
        Box::pin(async move { Err(ControlError::NotRunning(run)) })
    }
    fn events(&self, _run: RunId) -> Option<broadcast::Receiver<Numbered>> {
        None
    }
}

fn view() -> JobView {
    JobView {
        job: "a.toml".into(),
        trigger: "every 1m".into(),
        next_fire: None,
        timezone: None,
        valid: true,
        diagnostic: None,
        runnable: true,
        running: vec![],
        queued: vec![],
        paused: false,
        skew: Vec::new(),
    }
}

/// The two servers, started once per fuzzing process.
struct Servers {
    socket: PathBuf,
    tcp: SocketAddr,
}

fn servers() -> &'static Servers {
    static SERVERS: OnceLock<Servers> = OnceLock::new();
    SERVERS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("gatherd-fuzz-api-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temp folder");
        let socket = dir.join("gatherd.sock");
        let (tx, rx) = std::sync::mpsc::channel();
        let socket_path = socket.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async move {
                let store: Arc<dyn RunStore> =
                    Arc::new(open_sqlite(dir.join(DB_FILE)).await.expect("a store"));
                let control: Arc<dyn Control> = Arc::new(OneJob);
                let metrics = Arc::new(Metrics::new());
                let shutdown = CancellationToken::new();
                let unix = tokio::net::UnixListener::bind(&socket_path).expect("the socket");
                let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
                let addr = tcp.local_addr().expect("its address");
                let tcp_config = ApiConfig {
                    listen: addr,
                    token: SharedToken::new(Some(TOKEN.into())),
                    ..ApiConfig::default()
                };
                let a = tokio::spawn(serve(
                    unix,
                    ApiConfig::default(),
                    control.clone(),
                    store.clone(),
                    metrics.clone(),
                    shutdown.clone(),
                ));
                let b = tokio::spawn(serve(tcp, tcp_config, control, store, metrics, shutdown));
                tx.send(addr).expect("the fuzzer waits");
                let _ = tokio::join!(a, b);
            });
        });
        let tcp = rx.recv().expect("the servers start");
        Servers { socket, tcp }
    })
}

/// Sends `request`, closes the writing half, and reads the answer to the end.
fn exchange(mut stream: impl Read + Write, request: &[u8], close_writing: impl FnOnce()) -> Vec<u8> {
    // The server may answer (and close) before it read everything: a refused
    // write is part of the exchange, not a finding.
    let _ = stream.write_all(request);
    close_writing();
    let mut answer = Vec::new();
    if let Err(e) = stream.read_to_end(&mut answer) {
        assert!(
            e.kind() == std::io::ErrorKind::ConnectionReset,
            "no answer within 5 s for {:?}: {e}",
            String::from_utf8_lossy(request)
        );
    }
    answer
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, request)) = data.split_first() else { return };
    let servers = servers();
    let timeout = Some(Duration::from_secs(5));
    let answer = if selector % 2 == 0 {
        let stream = UnixStream::connect(&servers.socket).expect("the socket answers");
        stream.set_read_timeout(timeout).expect("a timeout");
        let half = stream.try_clone().expect("a second handle");
        exchange(stream, request, move || {
            let _ = half.shutdown(std::net::Shutdown::Write);
        })
    } else {
        let stream = TcpStream::connect(servers.tcp).expect("the port answers");
        stream.set_read_timeout(timeout).expect("a timeout");
        let half = stream.try_clone().expect("a second handle");
        exchange(stream, request, move || {
            let _ = half.shutdown(std::net::Shutdown::Write);
        })
    };
    // Every answer on the connection: "HTTP/1.1 NNN".
    let text = String::from_utf8_lossy(&answer);
    for status in text.match_indices("HTTP/1.1 ").filter_map(|(i, _)| text.get(i + 9..i + 12)) {
        assert!(
            !status.starts_with('5'),
            "a {status} answer to {:?}:\n{text}",
            String::from_utf8_lossy(request)
        );
    }
});
