//! The API against a fake daemon and a real SQLite store, over real HTTP.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::exec::{NodeKind, RecordedStatus, RunEvent, Status, Stream};
use crate::store::{DB_FILE, RunId, RunStart, RunTrigger, open_sqlite};

/// A daemon that knows `a.toml` and `sub/b.toml`; `busy.toml` is never
/// started; run 7 is the only one running.
#[derive(Default)]
struct FakeControl {
    live: Mutex<HashMap<RunId, broadcast::Sender<crate::api::control::Numbered>>>,
    triggered: Mutex<Vec<String>>,
}

fn job_view(job: &str) -> JobView {
    JobView {
        job: job.into(),
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

impl Control for FakeControl {
    fn jobs(&self) -> BoxFuture<'_, Vec<JobView>> {
        Box::pin(async { vec![job_view("a.toml"), job_view("sub/b.toml")] })
    }
    fn trigger<'a>(&'a self, job: &'a str) -> BoxFuture<'a, Result<Started, ControlError>> {
        self.triggered.lock().unwrap().push(job.to_string());
        let running = |run_id| Ok(Started { run_id, status: RecordedStatus::Running });
        Box::pin(async move {
            match job {
                "a.toml" => running(42),
                "sub/b.toml" => running(43),
                "waits.toml" => Ok(Started { run_id: 44, status: RecordedStatus::Queued }),
                "busy.toml" => Err(ControlError::NotStarted("overlap = skip and a run is going".into())),
                other => Err(ControlError::NoSuchJob(other.into())),
            }
        })
    }
    fn job_detail<'a>(&'a self, job: &'a str, _fires: usize) -> BoxFuture<'a, Option<JobDetail>> {
        Box::pin(async move { ["a.toml", "sub/b.toml"].contains(&job).then(JobDetail::default) })
    }
    fn cancel(&self, run: RunId) -> BoxFuture<'_, Result<(), ControlError>> {
        Box::pin(async move { if run == 7 { Ok(()) } else { Err(ControlError::NotRunning(run)) } })
    }
    fn pause<'a>(&'a self, job: &'a str, paused: bool) -> BoxFuture<'a, Result<(), ControlError>> {
        self.triggered.lock().unwrap().push(format!("{job} paused={paused}"));
        Box::pin(async move {
            match job {
                "a.toml" | "sub/b.toml" => Ok(()),
                other => Err(ControlError::NoSuchJob(other.into())),
            }
        })
    }
    fn events(&self, run: RunId) -> Option<broadcast::Receiver<crate::api::control::Numbered>> {
        self.live.lock().unwrap().get(&run).map(|tx| tx.subscribe())
    }
}

struct Api {
    addr: std::net::SocketAddr,
    store: Arc<dyn RunStore>,
    control: Arc<FakeControl>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Api {
    async fn start(token: Option<&str>) -> Api {
        Api::start_with(token, vec![]).await
    }

    async fn start_with(token: Option<&str>, hosts: Vec<String>) -> Api {
        Api::start_config(ApiConfig {
            token: SharedToken::new(token.map(String::from)),
            max_body: 1024,
            hosts,
            ..ApiConfig::default()
        })
        .await
    }

    async fn start_config(config: ApiConfig) -> Api {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn RunStore> = Arc::new(open_sqlite(dir.path().join(DB_FILE)).await.unwrap());
        let control = Arc::new(FakeControl::default());
        let metrics = Arc::new(Metrics::new());
        let shutdown = CancellationToken::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = ApiConfig { listen: addr, ..config };
        let server =
            tokio::spawn(serve(listener, config, control.clone(), store.clone(), metrics.clone(), shutdown.clone()));
        Api { addr, store, control, metrics, shutdown, server, _dir: dir }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Client::new().get(self.url(path))).await
    }

    async fn post(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Client::new().post(self.url(path))).await
    }

    /// Records a finished run of `job` with one step `main/s` and returns its id.
    async fn finished_run(&self, job: &str, status: Status) -> RunId {
        let start = RunStart {
            job: job.into(),
            trigger: RunTrigger::Manual,
            fire_time: Utc::now(),
            content_hash: [1; 32],
            node: "node-a".into(),
            queued: false,
        };
        let id = self.store.begin_run(start).await.unwrap();
        let recorder = self.store.recorder();
        for event in run_events(job, status) {
            recorder.record(id, event);
        }
        recorder.flush().await.unwrap();
        id
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.server.await.unwrap().unwrap();
    }
}

fn run_events(job: &str, status: Status) -> Vec<RunEvent> {
    let error = (status != Status::Succeeded).then(|| "boom".to_string());
    vec![
        RunEvent::RunStarted { job: job.into(), started_at: Utc::now() },
        RunEvent::NodeStarted {
            path: "main".into(),
            name: "main".into(),
            kind: NodeKind::Sequence,
            at: Duration::ZERO,
        },
        RunEvent::NodeStarted { path: "main/s".into(), name: "s".into(), kind: NodeKind::Sleep, at: Duration::ZERO },
        RunEvent::NodeFinished {
            path: "main/s".into(),
            name: "s".into(),
            kind: NodeKind::Sleep,
            status,
            attempts: 1,
            started: Some(Duration::ZERO),
            at: Duration::from_millis(10),
            output: Some(json!("out")),
            error: error.clone(),
            truncated: false,
        },
        RunEvent::NodeFinished {
            path: "main".into(),
            name: "main".into(),
            kind: NodeKind::Sequence,
            status,
            attempts: 1,
            started: Some(Duration::ZERO),
            at: Duration::from_millis(10),
            output: None,
            error: error.clone(),
            truncated: false,
        },
        RunEvent::RunFinished { status, result: None, error, duration: Duration::from_millis(10) },
    ]
}

#[tokio::test]
async fn healthz_answers_ok() {
    let api = Api::start(None).await;
    assert_eq!(api.get("/healthz").await, (200, json!({"status": "ok"})));
    let (status, body) = api.get("/nope").await;
    assert_eq!(status, 404);
    assert!(body["error"].is_string());
    api.stop().await;
}

#[tokio::test]
async fn runs_are_paginated_newest_first_and_filtered() {
    let api = Api::start(None).await;
    let mut a = Vec::new();
    for _ in 0..5 {
        a.push(api.finished_run("a.toml", Status::Succeeded).await);
    }
    let b = api.finished_run("sub/b.toml", Status::Failed).await;

    let (status, page) = api.get("/runs?job=a.toml&limit=2").await;
    assert_eq!(status, 200);
    let ids =
        |page: &Value| page["runs"].as_array().unwrap().iter().map(|r| r["id"].as_i64().unwrap()).collect::<Vec<_>>();
    assert_eq!(ids(&page), vec![a[4], a[3]]);
    assert_eq!(page["next_before"], json!(a[3]));
    let (_, page) = api.get(&format!("/runs?job=a.toml&limit=2&before={}", a[3])).await;
    assert_eq!(ids(&page), vec![a[2], a[1]]);
    let (_, page) = api.get(&format!("/runs?job=a.toml&limit=2&before={}", a[1])).await;
    assert_eq!(ids(&page), vec![a[0]]);
    assert_eq!(page["next_before"], Value::Null);

    let (_, page) = api.get("/runs?status=failed").await;
    assert_eq!(ids(&page), vec![b]);
    let (_, page) = api.get("/runs").await;
    assert_eq!(ids(&page).len(), 6);

    for bad in ["/runs?status=great", "/runs?limit=0", "/runs?limit=1001", "/runs?before=x"] {
        let (status, body) = api.get(bad).await;
        assert_eq!(status, 400, "{bad}");
        assert!(body["error"].is_string(), "{bad}");
    }
    api.stop().await;
}

#[tokio::test]
async fn a_run_has_the_shape_of_run_json_and_an_unknown_one_is_404() {
    let api = Api::start(None).await;
    let id = api.finished_run("a.toml", Status::Succeeded).await;
    let (status, run) = api.get(&format!("/runs/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(run["id"], json!(id));
    assert_eq!(run["job"], "a.toml");
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["trigger"], "manual");
    assert_eq!(run["node"], "node-a");
    assert!(run["fire_time"].is_string());
    let step = run["steps"].as_array().unwrap().iter().find(|s| s["path"] == "main/s").unwrap();
    for key in ["name", "path", "kind", "status", "attempts", "start_ms", "end_ms", "output"] {
        assert!(step.get(key).is_some(), "step lacks {key}: {step}");
    }
    assert_eq!(step["output"], "out");

    let (status, body) = api.get("/runs/999").await;
    assert_eq!((status, body["error"].as_str().unwrap()), (404, "no run 999"));
    assert_eq!(api.get("/runs/abc").await.0, 400);
    api.stop().await;
}

#[tokio::test]
async fn jobs_are_listed_with_their_last_run_and_nested_ids_work() {
    let api = Api::start(None).await;
    let id = api.finished_run("sub/b.toml", Status::Failed).await;
    let (status, body) = api.get("/jobs").await;
    assert_eq!(status, 200);
    let jobs = body["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[0]["last_run"], Value::Null);
    assert_eq!(jobs[1]["last_run"]["id"], json!(id));
    let (status, job) = api.get("/jobs/sub/b.toml").await;
    assert_eq!((status, job["job"].as_str().unwrap()), (200, "sub/b.toml"));
    assert_eq!(job["last_run"]["status"], "failed");
    assert_eq!(api.get("/jobs/c.toml").await.0, 404);
    api.stop().await;
}

#[tokio::test]
async fn trigger_returns_the_run_id_and_a_run_not_started_is_409() {
    let api = Api::start(None).await;
    // The answer names the run's event stream from its first event.
    let answer =
        |id: i64| (201, json!({"run_id": id, "status": "running", "events": format!("/runs/{id}/events?from=0")}));
    assert_eq!(api.post("/jobs/a.toml/trigger").await, answer(42));
    assert_eq!(api.post("/jobs/sub/b.toml/trigger").await, answer(43));
    assert_eq!(api.post("/trigger/sub/b.toml").await, answer(43));
    let (status, body) = api.post("/jobs/busy.toml/trigger").await;
    assert_eq!(status, 409);
    assert!(body["error"].as_str().unwrap().starts_with("not started"), "{body}");
    assert_eq!(api.post("/trigger/c.toml").await.0, 404);
    assert_eq!(api.post("/jobs/a.toml").await.0, 404);
    api.stop().await;
}

#[tokio::test]
async fn pause_and_resume_answer_the_saved_state_and_a_cross_origin_pause_is_refused() {
    let api = Api::start(None).await;
    assert_eq!(api.post("/jobs/sub/b.toml/pause").await, (200, json!({"job": "sub/b.toml", "paused": true})));
    assert_eq!(api.post("/jobs/a.toml/resume").await, (200, json!({"job": "a.toml", "paused": false})));
    // Named as everywhere: without the extension too; an unknown name is
    // answered with a did-you-mean and never reaches the daemon.
    assert_eq!(api.post("/jobs/a/pause").await, (200, json!({"job": "a.toml", "paused": true})));
    let (status, body) = api.post("/jobs/nope.toml/pause").await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].as_str().unwrap().starts_with("no job `nope.toml`"), "{body}");
    let evil = reqwest::Client::new().post(api.url("/jobs/a.toml/pause")).header("Origin", "http://evil.example");
    assert_eq!(api.send(evil).await.0, 403);
    let asked = api.control.triggered.lock().unwrap().clone();
    assert_eq!(asked, ["sub/b.toml paused=true", "a.toml paused=false", "a.toml paused=true"], "nothing else");
    api.stop().await;
}

#[tokio::test]
async fn a_trigger_that_must_wait_for_a_slot_is_answered_202_queued_with_its_run_id() {
    let api = Api::start(None).await;
    let queued = json!({"run_id": 44, "status": "queued", "events": "/runs/44/events?from=0"});
    assert_eq!(api.post("/jobs/waits.toml/trigger").await, (202, queued));
    api.stop().await;
}

#[tokio::test]
async fn cancel_is_accepted_and_a_run_not_running_is_409() {
    let api = Api::start(None).await;
    assert_eq!(api.post("/runs/7/cancel").await.0, 202);
    let done = api.finished_run("a.toml", Status::Succeeded).await;
    let (status, body) = api.post(&format!("/runs/{done}/cancel")).await;
    assert_eq!((status, body["error"].as_str().unwrap()), (409, format!("run {done} is not running").as_str()));
    assert_eq!(api.post("/runs/999/cancel").await.0, 404);
    assert_eq!(api.get("/runs/7/cancel").await.0, 405);
    api.stop().await;
}

#[tokio::test]
async fn with_a_token_every_request_needs_it() {
    let api = Api::start(Some("s3cret")).await;
    let client = reqwest::Client::new();
    let (status, body) = api.get("/healthz").await;
    assert_eq!(status, 401);
    assert!(body["error"].is_string());
    assert_eq!(api.send(client.get(api.url("/runs")).bearer_auth("wrong")).await.0, 401);
    assert_eq!(api.send(client.get(api.url("/healthz")).bearer_auth("s3cret")).await.0, 200);
    assert_eq!(api.send(client.get(api.url("/metrics")).bearer_auth("s3cret")).await.0, 200);
    api.stop().await;
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    // RFC 7235 §2.1: the auth-scheme is case-insensitive.
    let api = Api::start(Some("s3cret")).await;
    let client = reqwest::Client::new();
    for scheme in ["bearer", "BEARER", "Bearer", "bEaReR"] {
        let request = client.get(api.url("/healthz")).header("Authorization", format!("{scheme} s3cret"));
        assert_eq!(api.send(request).await.0, 200, "scheme {scheme:?}");
    }
    let wrong = client.get(api.url("/healthz")).header("Authorization", "bearer wrong");
    assert_eq!(api.send(wrong).await.0, 401);
    let basic = client.get(api.url("/healthz")).header("Authorization", "Basic s3cret");
    assert_eq!(api.send(basic).await.0, 401);
    api.stop().await;
}

#[tokio::test]
async fn an_oversized_body_is_413() {
    let api = Api::start(None).await;
    let client = reqwest::Client::new();
    let (status, body) = api.send(client.post(api.url("/trigger/a.toml")).body(vec![b'x'; 2048])).await;
    assert_eq!(status, 413);
    assert!(body["error"].is_string());
    // Chunked (no Content-Length) is held to the same limit: a raw request.
    let mut raw = format!(
        "POST /trigger/a.toml HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        api.addr
    );
    for _ in 0..8 {
        raw.push_str(&format!("200\r\n{}\r\n", "x".repeat(512)));
    }
    raw.push_str("0\r\n\r\n");
    assert!(raw_status(api.addr, &raw).await.starts_with("HTTP/1.1 413"));
    assert_eq!(api.send(client.post(api.url("/trigger/a.toml")).body("small")).await.0, 201);
    api.stop().await;
}

/// A web page the user visits must not drive the loopback API: a browser's
/// cross-origin POST carries `Origin` (and a text/plain one needs no
/// preflight), a DNS-rebound name arrives as a foreign `Host`.
#[tokio::test]
async fn a_cross_origin_post_is_refused_and_nothing_is_triggered() {
    let api = Api::start(None).await;
    let client = reqwest::Client::new();
    let evil = client
        .post(api.url("/jobs/a.toml/trigger"))
        .header("Origin", "http://evil.example")
        .header("Content-Type", "text/plain")
        .body("x");
    let (status, body) = api.send(evil).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("Origin"), "{body}");
    let (status, _) = api.send(client.post(api.url("/runs/7/cancel")).header("Origin", "null")).await;
    assert_eq!(status, 403);
    assert!(api.control.triggered.lock().unwrap().is_empty(), "triggered anyway");
    // The CLI's way (no Origin) and a same-origin page still work.
    assert_eq!(api.post("/jobs/a.toml/trigger").await.0, 201);
    let same = client.post(api.url("/trigger/a.toml")).header("Origin", format!("http://{}", api.addr));
    assert_eq!(api.send(same).await.0, 201);
    let local =
        client.post(api.url("/trigger/a.toml")).header("Origin", format!("http://localhost:{}", api.addr.port()));
    assert_eq!(api.send(local).await.0, 201);
    // A GET with an Origin reads nothing it could not read anyway.
    assert_eq!(api.send(client.get(api.url("/healthz")).header("Origin", "http://evil.example")).await.0, 200);
    api.stop().await;
}

#[tokio::test]
async fn a_foreign_host_is_refused() {
    let api = Api::start(None).await;
    let port = api.addr.port();
    let request = |host: &str| format!("GET /runs HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let refused = raw_status(api.addr, &request(&format!("evil.example:{port}"))).await;
    assert!(refused.starts_with("HTTP/1.1 421") || refused.starts_with("HTTP/1.1 403"), "{refused}");
    assert!(raw_status(api.addr, &request("evil.example")).await.starts_with("HTTP/1.1 4"));
    assert!(raw_status(api.addr, "GET /runs HTTP/1.0\r\n\r\n").await.starts_with("HTTP/1.0 4"));
    assert!(raw_status(api.addr, &request(&api.addr.to_string())).await.starts_with("HTTP/1.1 200"));
    assert!(raw_status(api.addr, &request(&format!("localhost:{port}"))).await.starts_with("HTTP/1.1 200"));
    assert!(raw_status(api.addr, &request(&format!("LocalHost:{port}"))).await.starts_with("HTTP/1.1 200"));
    assert!(raw_status(api.addr, &request(&format!("127.0.0.1:{}", port + 1))).await.starts_with("HTTP/1.1 4"));
    api.stop().await;

    // A configured name is allowed, with or without a port (a proxy in front).
    let api = Api::start_with(None, vec!["gatherd.example".into()]).await;
    assert!(raw_status(api.addr, &request("gatherd.example")).await.starts_with("HTTP/1.1 200"));
    assert!(raw_status(api.addr, &request(&format!("gatherd.example:{port}"))).await.starts_with("HTTP/1.1 200"));
    let trusted = reqwest::Client::new().post(api.url("/trigger/a.toml")).header("Origin", "https://gatherd.example");
    assert_eq!(api.send(trusted).await.0, 201);
    api.stop().await;
}

/// An idle connection (no request at all, or a kept-alive one) must not hold
/// a file descriptor forever.
#[tokio::test]
async fn an_idle_connection_is_closed() {
    use tokio::io::AsyncReadExt;
    let idle = Duration::from_millis(200);
    let api = Api::start_config(ApiConfig { idle_timeout: idle, ..ApiConfig::default() }).await;
    let mut silent = tokio::net::TcpStream::connect(api.addr).await.unwrap();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "a silent connection still open after 10 s (idle_timeout {idle:?})");
    // Kept alive after an answer: closed too, once idle.
    let mut kept = tokio::net::TcpStream::connect(api.addr).await.unwrap();
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", api.addr);
    tokio::io::AsyncWriteExt::write_all(&mut kept, request.as_bytes()).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(10), kept.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "a kept-alive connection still open after 10 s");
    assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"));
    api.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let api = Api::start_config(ApiConfig { max_connections: 1, ..ApiConfig::default() }).await;
    let first = tokio::net::TcpStream::connect(api.addr).await.unwrap();
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", api.addr);
    let second = tokio::spawn(async move { raw_status(api.addr, &request).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished(), "a second connection was served while the only slot was taken");
    drop(first);
    let status = tokio::time::timeout(Duration::from_secs(10), second).await.unwrap().unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    api.stop().await;
}

/// A client that trickles a request line forever never lets the idle clock
/// run out (a byte every 50 ms); the header timeout closes it all the same.
#[tokio::test]
async fn a_request_line_trickled_forever_is_closed_at_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let header_timeout = Duration::from_millis(300);
    let api = Api::start_config(ApiConfig { header_timeout, ..ApiConfig::default() }).await;
    let mut slow = tokio::net::TcpStream::connect(api.addr).await.unwrap();
    slow.write_all(b"GET /heal").await.unwrap();
    let mut closed = false;
    // At most 10 s: a bound for the server to act, not a speed assertion.
    for _ in 0..200 {
        if slow.write_all(b"t").await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 256];
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(50), slow.read(&mut buf)).await {
            closed = true;
            break;
        }
    }
    assert!(closed, "a request line trickled for 10 s is still open (header_timeout {header_timeout:?})");
    // A whole request on a fresh connection is served as ever.
    assert_eq!(api.get("/healthz").await.0, 200);
    api.stop().await;
}

/// On the unix socket the mode is the gate: no token, any `Host`; but a
/// state change still needs an `Origin` that names its own `Host`.
#[tokio::test]
async fn on_the_socket_no_token_is_asked_and_a_foreign_origin_still_cannot_change_state() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn RunStore> = Arc::new(open_sqlite(dir.path().join(DB_FILE)).await.unwrap());
    let control = Arc::new(FakeControl::default());
    let path = dir.path().join(SOCKET_FILE);
    let listener = bind_socket(&path).unwrap();
    let shutdown = CancellationToken::new();
    let config = ApiConfig { token: SharedToken::new(Some("s3cret".into())), ..ApiConfig::default() };
    let server =
        tokio::spawn(serve(listener, config, control.clone(), store, Arc::new(Metrics::new()), shutdown.clone()));
    let status = |raw: String| {
        let path = path.clone();
        async move {
            let mut stream = tokio::net::UnixStream::connect(&path).await.unwrap();
            stream.write_all(raw.as_bytes()).await.unwrap();
            let mut response = Vec::new();
            let _ = stream.read_to_end(&mut response).await;
            String::from_utf8_lossy(&response).lines().next().unwrap_or("").to_string()
        }
    };
    let get = |host: &str| format!("GET /runs HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    assert!(status(get("localhost")).await.starts_with("HTTP/1.1 200"));
    assert!(status(get("anything.example")).await.starts_with("HTTP/1.1 200"));
    let post = |origin: &str| {
        format!(
            "POST /trigger/a.toml HTTP/1.1\r\nHost: localhost\r\nOrigin: {origin}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
    };
    assert!(status(post("http://evil.example")).await.starts_with("HTTP/1.1 403"));
    assert!(control.triggered.lock().unwrap().is_empty(), "triggered anyway");
    assert!(status(post("http://localhost")).await.starts_with("HTTP/1.1 201"));
    shutdown.cancel();
    server.await.unwrap().unwrap();
}

/// Sends `raw` as is and returns the response's status line.
async fn raw_status(addr: std::net::SocketAddr, raw: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may answer 413 and close before it has read everything.
    let _ = stream.write_all(raw.as_bytes()).await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response).lines().next().unwrap_or("").to_string()
}

#[test]
fn off_loopback_needs_a_token() {
    let open = ApiConfig {
        listen: "0.0.0.0:7327".parse().unwrap(),
        token: SharedToken::default(),
        max_body: 1024,
        ..ApiConfig::default()
    };
    let err = check(&open).unwrap_err();
    assert_eq!(err, "the API listens on 0.0.0.0:7327, which is not loopback: set api_token (or listen on 127.0.0.1)");
    assert!(check(&ApiConfig { token: SharedToken::new(Some(String::new())), ..open.clone() }).is_err());
    assert!(check(&ApiConfig { token: SharedToken::new(Some("t".into())), ..open.clone() }).is_ok());
    assert!(check(&ApiConfig::default()).is_ok());
    assert!(check(&ApiConfig { listen: "[::1]:7327".parse().unwrap(), ..open }).is_ok());
}

#[tokio::test]
async fn serve_refuses_a_non_loopback_listener_without_a_token() {
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn RunStore> = Arc::new(open_sqlite(dir.path().join(DB_FILE)).await.unwrap());
    let config = ApiConfig {
        listen: listener.local_addr().unwrap(),
        token: SharedToken::default(),
        max_body: 1024,
        ..ApiConfig::default()
    };
    let served = serve(
        listener,
        config,
        Arc::new(FakeControl::default()),
        store,
        Arc::new(Metrics::new()),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(served.unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_count_runs() {
    let api = Api::start(None).await;
    api.metrics.run_started("a.toml");
    api.metrics.run_finished("a.toml", "succeeded", Duration::from_secs(1));
    let response = reqwest::get(api.url("/metrics")).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    let text = response.text().await.unwrap();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        assert!(value.parse::<f64>().is_ok(), "value of {line}");
        let name = series.split('{').next().unwrap();
        assert!(name.starts_with("gatherd_") && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{line}");
        if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
            assert!(labels.starts_with('{') && labels.ends_with('}'), "labels of {line}");
            for pair in labels[1..labels.len() - 1].split(',') {
                let (key, value) = pair.split_once('=').unwrap_or_else(|| panic!("label of {line}"));
                assert!(!key.is_empty() && value.starts_with('"') && value.ends_with('"'), "{line}");
            }
        }
    }
    assert!(text.contains("\ngatherd_runs_total{job=\"a.toml\",status=\"succeeded\"} 1\n"), "{text}");
    assert!(text.contains("\ngatherd_run_duration_seconds_count{job=\"a.toml\"} 1\n"), "{text}");
    api.stop().await;
}

/// Reads SSE frames until the stream ends: (event name, data JSON).
async fn read_sse(response: reqwest::Response) -> Vec<(String, Value)> {
    let text = tokio::time::timeout(Duration::from_secs(10), response.text()).await.expect("the stream ends").unwrap();
    text.split("\n\n")
        .filter_map(|frame| {
            let mut name = None;
            let mut data = None;
            for line in frame.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_string());
                }
                if let Some(d) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str(d).unwrap());
                }
            }
            Some((name?, data?))
        })
        .collect()
}

#[tokio::test]
async fn live_events_stream_in_order_and_end_with_the_run() {
    let api = Api::start(None).await;
    let (tx, _keep) = broadcast::channel(16);
    api.control.live.lock().unwrap().insert(7, tx.clone());
    let response = reqwest::get(api.url("/runs/7/events")).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    // The handler subscribed before it answered, so nothing sent now is lost.
    let events = run_events("a.toml", Status::Succeeded);
    for (seq, e) in events.iter().enumerate().skip(3) {
        tx.send((seq as u64, e.clone())).unwrap();
    }
    let got = read_sse(response).await;
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["node_finished", "node_finished", "run_finished"]);
    assert_eq!(got[0].1["path"], "main/s");
    assert_eq!(got[0].1["output"], "out");
    assert_eq!(got[0].1["end_ms"], 10);
    assert_eq!(got[2].1["status"], "succeeded");
    api.stop().await;
}

#[tokio::test]
async fn a_late_client_gets_the_stored_run_replayed() {
    let api = Api::start(None).await;
    let id = api.finished_run("a.toml", Status::Failed).await;
    let got = read_sse(reqwest::get(api.url(&format!("/runs/{id}/events"))).await.unwrap()).await;
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["node_finished", "node_finished", "run_finished"]);
    assert_eq!(got[2].1["status"], "failed");
    assert_eq!(got[2].1["error"], "boom");
    assert_eq!(api.get("/runs/999/events").await.0, 404);
    api.stop().await;
}

#[tokio::test]
async fn shutdown_ends_open_event_streams() {
    let api = Api::start(None).await;
    let (tx, _keep) = broadcast::channel::<crate::api::control::Numbered>(16);
    api.control.live.lock().unwrap().insert(7, tx);
    let response = reqwest::get(api.url("/runs/7/events")).await.unwrap();
    api.shutdown.cancel();
    assert!(read_sse(response).await.is_empty());
    tokio::time::timeout(Duration::from_secs(10), api.server).await.expect("the server stops").unwrap().unwrap();
}

/// A run in flight whose two steps printed (numbered as the daemon numbers
/// a run's events): `main/fetch` on stdout and stderr, the script `main`
/// with `print`. Returns its id.
async fn run_with_lines(api: &Api) -> RunId {
    let start = RunStart {
        job: "lines.rhai".into(),
        trigger: RunTrigger::Manual,
        fire_time: Utc::now(),
        content_hash: [2; 32],
        node: "node-a".into(),
        queued: false,
    };
    let id = api.store.begin_run(start).await.unwrap();
    let line = |path: &str, stream, text: &str, ms| RunEvent::Log {
        path: path.into(),
        stream,
        text: text.into(),
        at: Duration::from_millis(ms),
    };
    let events = vec![
        RunEvent::RunStarted { job: "lines.rhai".into(), started_at: Utc::now() },
        RunEvent::NodeStarted { path: "main".into(), name: "main".into(), kind: NodeKind::Script, at: Duration::ZERO },
        line("main", Stream::Print, "begin", 1),
        RunEvent::NodeStarted {
            path: "main/fetch".into(),
            name: "fetch".into(),
            kind: NodeKind::Exec,
            at: Duration::from_millis(2),
        },
        line("main/fetch", Stream::Stdout, "one", 3),
        line("main/fetch", Stream::Stderr, "warn: two", 4),
        line("main/fetch", Stream::Stdout, "three", 5),
        line("main", Stream::Print, "after", 6),
    ];
    let recorder = api.store.recorder();
    for (seq, event) in events.into_iter().enumerate() {
        recorder.record_numbered(id, seq as u64, event);
    }
    recorder.flush().await.unwrap();
    id
}

/// The answer of `GET path` as (status, content type, body).
async fn get_raw(api: &Api, path: &str) -> (u16, String, String) {
    let response = reqwest::get(api.url(path)).await.unwrap();
    let status = response.status().as_u16();
    let kind = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    (status, kind, response.text().await.unwrap())
}

#[tokio::test]
async fn a_runs_lines_are_json_lines_with_their_event_ids_by_step_and_after_a_seq() {
    let api = Api::start(None).await;
    let id = run_with_lines(&api).await;
    let lines = |body: &str| -> Vec<Value> { body.lines().map(|l| serde_json::from_str(l).unwrap()).collect() };
    let (status, kind, body) = get_raw(&api, &format!("/runs/{id}/logs")).await;
    assert_eq!((status, kind.as_str()), (200, "application/x-ndjson"), "{body}");
    let all = lines(&body);
    assert_eq!(
        all[1],
        json!({"seq": 4, "path": "main/fetch", "at_ms": 3, "stream": "stdout", "text": "one"}),
        "one object per line, numbered as its SSE event: {body}"
    );
    let seqs: Vec<u64> = all.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [2, 4, 5, 6, 7]);
    let texts = |v: &[Value]| v.iter().map(|l| l["text"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(texts(&all), ["begin", "one", "warn: two", "three", "after"]);

    // A step by name or by path; only lines after a seq.
    let (_, _, by_name) = get_raw(&api, &format!("/runs/{id}/logs?step=fetch")).await;
    assert_eq!(texts(&lines(&by_name)), ["one", "warn: two", "three"]);
    let (_, _, by_path) = get_raw(&api, &format!("/runs/{id}/logs?step=main/fetch")).await;
    assert_eq!(by_path, by_name);
    let (_, _, script) = get_raw(&api, &format!("/runs/{id}/logs?step=main")).await;
    assert_eq!(texts(&lines(&script)), ["begin", "after"]);
    let (_, _, after) = get_raw(&api, &format!("/runs/{id}/logs?after=4")).await;
    assert_eq!(texts(&lines(&after)), ["warn: two", "three", "after"]);
    let (_, _, both) = get_raw(&api, &format!("/runs/{id}/logs?step=fetch&after=5")).await;
    assert_eq!(texts(&lines(&both)), ["three"]);
    let (status, _, none) = get_raw(&api, &format!("/runs/{id}/logs?step=etch")).await;
    assert_eq!((status, none.as_str()), (200, ""), "a name is a whole part of the path");

    // Mistakes: a clear 400; a run that never was: 404.
    let (status, body) = api.get(&format!("/runs/{id}/logs?after=x")).await;
    assert_eq!((status, body["error"].as_str().unwrap()), (400, "after must be an event id (a number ≥ 0), not `x`"));
    let (status, body) = api.get("/runs/999/logs").await;
    assert_eq!((status, body["error"].as_str().unwrap()), (404, "no run 999"));
    assert_eq!(api.get("/runs/abc/logs").await.0, 400);
    api.stop().await;
}

/// Reads a live SSE response frame by frame: `(id, event name, data)`.
struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

impl SseReader {
    async fn open(api: &Api, path: &str, last_event_id: Option<u64>) -> SseReader {
        let mut request = reqwest::Client::new().get(api.url(path));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
        SseReader { response, buffer: String::new() }
    }

    /// The next event, or `None` when the stream ends.
    async fn next(&mut self) -> Option<(u64, String, Value)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut name, mut data) = (None, None, None);
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = v.parse().ok();
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        name = Some(v.to_string());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = serde_json::from_str(v).ok();
                    }
                }
                match (id, name, data) {
                    (Some(id), Some(name), Some(data)) => return Some((id, name, data)),
                    _ => continue, // a keep-alive comment
                }
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.response.chunk()).await.expect("an event");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap()?));
        }
    }
}

#[tokio::test]
async fn a_client_reconnecting_with_last_event_id_mid_run_gets_the_rest_of_the_output_with_no_gap_or_repeat() {
    let api = Api::start(None).await;
    let start = RunStart {
        job: "chatty.toml".into(),
        trigger: RunTrigger::Manual,
        fire_time: Utc::now(),
        content_hash: [3; 32],
        node: "node-a".into(),
        queued: false,
    };
    let id = api.store.begin_run(start).await.unwrap();
    let (tx, _keep) = broadcast::channel(64);
    api.control.live.lock().unwrap().insert(id, tx.clone());
    // The daemon's order: record the event with its number, then broadcast it.
    let recorder = api.store.recorder();
    let mut seq = 0u64;
    let mut emit = |event: RunEvent| {
        recorder.record_numbered(id, seq, event.clone());
        let _ = tx.send((seq, event));
        seq += 1;
    };
    let line = |stream, text: String, ms| RunEvent::Log {
        path: "main/chatty".into(),
        stream,
        text,
        at: Duration::from_millis(ms),
    };
    emit(RunEvent::RunStarted { job: "chatty.toml".into(), started_at: Utc::now() });
    emit(RunEvent::NodeStarted {
        path: "main/chatty".into(),
        name: "chatty".into(),
        kind: NodeKind::Shell,
        at: Duration::ZERO,
    });
    for i in 0..4 {
        emit(line(if i % 2 == 0 { Stream::Stdout } else { Stream::Stderr }, format!("line {i}"), i));
    }

    // A client reads up to the third line, then its connection drops.
    let mut first = SseReader::open(&api, &format!("/runs/{id}/events"), None).await;
    let mut seen = Vec::new();
    while let Some(event) = first.next().await {
        let done = event.2["text"] == "line 2";
        seen.push(event);
        if done {
            break;
        }
    }
    drop(first);
    // While it is away the run goes on: these come from the history.
    for i in 4..7 {
        emit(line(Stream::Stdout, format!("line {i}"), i));
    }
    emit(line(Stream::Print, "a script line".into(), 7));
    let last = seen.last().map(|e| e.0).unwrap();
    let mut second = SseReader::open(&api, &format!("/runs/{id}/events?from=0"), Some(last)).await;
    // Once it is back, live ones.
    let resumed = second.next().await.expect("the rest");
    for i in 8..10 {
        emit(line(Stream::Stderr, format!("line {i}"), i));
    }
    emit(RunEvent::RunFinished {
        status: Status::Succeeded,
        result: None,
        error: None,
        duration: Duration::from_millis(10),
    });
    seen.push(resumed);
    while let Some(event) = second.next().await {
        seen.push(event);
    }

    let ids: Vec<u64> = seen.iter().map(|e| e.0).collect();
    assert_eq!(ids, (0..seq).collect::<Vec<_>>(), "every event once, in order, across the reconnect");
    let lines: Vec<(&str, &str, &str)> = seen
        .iter()
        .filter(|e| e.1 == "output" || e.1 == "log")
        .map(|e| (e.1.as_str(), e.2["stream"].as_str().unwrap(), e.2["text"].as_str().unwrap()))
        .collect();
    let want: Vec<(&str, &str, String)> = (0..10)
        .map(|i| match i {
            7 => ("log", "print", "a script line".to_string()),
            8 | 9 => ("output", "stderr", format!("line {i}")),
            i if i < 4 && i % 2 == 1 => ("output", "stderr", format!("line {i}")),
            _ => ("output", "stdout", format!("line {i}")),
        })
        .collect();
    let want: Vec<(&str, &str, &str)> = want.iter().map(|(a, b, c)| (*a, *b, c.as_str())).collect();
    assert_eq!(lines, want);
    assert_eq!(seen.last().unwrap().1, "run_finished");
    api.stop().await;
}

#[tokio::test]
async fn a_runs_lines_are_read_in_pages_of_limit_with_no_gap_and_no_repeat() {
    let api = Api::start(None).await;
    let id = run_with_lines(&api).await;
    let mut after = None::<String>;
    let mut seqs = Vec::new();
    let mut pages = 0;
    loop {
        let query = match &after {
            Some(a) => format!("/runs/{id}/logs?limit=2&after={a}"),
            None => format!("/runs/{id}/logs?limit=2"),
        };
        let response = reqwest::get(api.url(&query)).await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let next = response.headers().get("x-next-after").map(|v| v.to_str().unwrap().to_string());
        let body = response.text().await.unwrap();
        let page: Vec<u64> =
            body.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["seq"].as_u64().unwrap()).collect();
        assert!(page.len() <= 2, "at most `limit` lines in a page: {page:?}");
        seqs.extend(&page);
        pages += 1;
        match next {
            Some(n) => {
                assert_eq!(n, page.last().unwrap().to_string(), "x-next-after is the page's last seq");
                after = Some(n);
            }
            None => break,
        }
        assert!(pages < 10, "paging ends");
    }
    assert_eq!((seqs, pages), (vec![2, 4, 5, 6, 7], 3), "every line once, in order, in pages of 2");
    let (_, _, all) = get_raw(&api, &format!("/runs/{id}/logs?limit=5")).await;
    assert_eq!(all.lines().count(), 5);

    for bad in ["0", "100001", "x"] {
        let (status, body) = api.get(&format!("/runs/{id}/logs?limit={bad}")).await;
        assert_eq!(
            (status, body["error"].as_str().unwrap()),
            (400, format!("limit must be a number from 1 to 100000, not `{bad}`").as_str())
        );
    }
    api.stop().await;
}
