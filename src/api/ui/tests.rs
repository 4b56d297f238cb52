//! The dashboard's handlers over real HTTP, against a fake daemon and a real
//! SQLite store: status codes, the contract's hooks, escaping, the login,
//! the session cookie, CSRF and the security headers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures::future::BoxFuture;
use serde_json::json;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::api::control::Numbered;
use crate::api::{ApiConfig, Control, ControlError, JobDetail, JobView, Metrics, SharedToken, Started, serve};
use crate::exec::{NodeKind, RecordedStatus, RunEvent, Status, Stream};
use crate::store::{DB_FILE, RunId, RunStart, RunStore, RunTrigger, open_sqlite};

/// A daemon with the jobs it is given; `a.toml` triggers as run 42.
struct Fake {
    jobs: Vec<JobView>,
    detail: JobDetail,
    calls: Mutex<Vec<String>>,
}

fn view(job: &str) -> JobView {
    JobView {
        job: job.into(),
        trigger: "schedule 0 * * * *".into(),
        next_fire: Some(Utc::now() + chrono::Duration::minutes(5)),
        timezone: None,
        valid: true,
        diagnostic: None,
        runnable: true,
        running: vec![],
        queued: vec![],
        paused: false,
        skew: vec![],
    }
}

impl Control for Fake {
    fn jobs(&self) -> BoxFuture<'_, Vec<JobView>> {
        Box::pin(async { self.jobs.clone() })
    }
    fn trigger<'a>(&'a self, job: &'a str) -> BoxFuture<'a, Result<Started, ControlError>> {
        self.calls.lock().unwrap().push(format!("trigger {job}"));
        Box::pin(async move { Ok(Started { run_id: 42, status: RecordedStatus::Running }) })
    }
    fn pause<'a>(&'a self, job: &'a str, paused: bool) -> BoxFuture<'a, Result<(), ControlError>> {
        self.calls.lock().unwrap().push(format!("pause {job} {paused}"));
        Box::pin(async { Ok(()) })
    }
    fn job_detail<'a>(&'a self, job: &'a str, _fires: usize) -> BoxFuture<'a, Option<JobDetail>> {
        Box::pin(async move { self.jobs.iter().any(|j| j.job == job).then(|| self.detail.clone()) })
    }
    fn cancel(&self, run: RunId) -> BoxFuture<'_, Result<(), ControlError>> {
        self.calls.lock().unwrap().push(format!("cancel {run}"));
        Box::pin(async { Ok(()) })
    }
    fn events(&self, _run: RunId) -> Option<broadcast::Receiver<Numbered>> {
        None
    }
}

struct Ui {
    addr: std::net::SocketAddr,
    store: Arc<dyn RunStore>,
    control: Arc<Fake>,
    token: SharedToken,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Ui {
    async fn start(token: Option<&str>, jobs: Vec<JobView>) -> Ui {
        Ui::start_with(token, jobs, JobDetail::default()).await
    }

    async fn start_with(token: Option<&str>, jobs: Vec<JobView>, detail: JobDetail) -> Ui {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn RunStore> = Arc::new(open_sqlite(dir.path().join(DB_FILE)).await.unwrap());
        let control = Arc::new(Fake { jobs, detail, calls: Mutex::new(Vec::new()) });
        let shutdown = CancellationToken::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let token = SharedToken::new(token.map(String::from));
        let config = ApiConfig { listen: addr, token: token.clone(), ..ApiConfig::default() };
        let metrics = Arc::new(Metrics::new());
        tokio::spawn(serve(listener, config, control.clone(), store.clone(), metrics, shutdown.clone()));
        Ui { addr, store, control, token, shutdown, _dir: dir }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client that does not follow redirects (the tests look at them).
    fn client() -> reqwest::Client {
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> reqwest::Response {
        let mut request = Ui::client().get(self.url(path));
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        request.send().await.unwrap()
    }

    async fn page(&self, path: &str, cookie: Option<&str>) -> (u16, String) {
        let response = self.get(path, cookie).await;
        (response.status().as_u16(), response.text().await.unwrap())
    }

    async fn post_form(
        &self,
        path: &str,
        origin: Option<&str>,
        cookie: Option<&str>,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = Ui::client().post(self.url(path)).form(form);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        request.send().await.unwrap()
    }

    /// Logs in with `token`; the `name=value` of the session cookie.
    async fn login(&self, token: &str) -> String {
        let response = self.post_form("/ui/login", Some(&self.origin()), None, &[("token", token)]).await;
        assert_eq!(response.status().as_u16(), 303, "login with the right token");
        let cookie = response.headers().get("set-cookie").expect("a session cookie").to_str().unwrap().to_string();
        cookie.split(';').next().unwrap().to_string()
    }

    /// Records a run of `job` from `events` and returns its id.
    async fn run(&self, job: &str, events: Vec<RunEvent>) -> RunId {
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
        for (seq, event) in (0..).zip(events) {
            recorder.record_numbered(id, seq, event);
        }
        recorder.flush().await.unwrap();
        id
    }
}

impl Drop for Ui {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn started(path: &str, kind: NodeKind, at: u64) -> RunEvent {
    let name = path.rsplit('/').next().unwrap();
    RunEvent::NodeStarted { path: path.into(), name: name.into(), kind, at: ms(at) }
}

fn finished(path: &str, kind: NodeKind, status: Status, from: u64, to: u64, error: Option<&str>) -> RunEvent {
    let name = path.rsplit('/').next().unwrap();
    RunEvent::NodeFinished {
        path: path.into(),
        name: name.into(),
        kind,
        status,
        attempts: 1,
        started: Some(ms(from)),
        at: ms(to),
        output: None,
        error: error.map(String::from),
        truncated: false,
    }
}

/// A run of `main` (gather) with `fast` (100 ms) and `slow` (400 ms); `slow`
/// prints `<script>alert(1)</script>`; finished unless `running`.
fn two_steps(job: &str, running: bool) -> Vec<RunEvent> {
    let mut events = vec![
        RunEvent::RunStarted { job: job.into(), started_at: Utc::now() },
        started("main", NodeKind::Gather, 0),
        started("main/fast", NodeKind::Sleep, 0),
        started("main/slow", NodeKind::Shell, 0),
        RunEvent::Log {
            path: "main/slow".into(),
            stream: Stream::Stdout,
            text: "<script>alert(1)</script>".into(),
            at: ms(5),
        },
        RunEvent::Log {
            path: "main/slow".into(),
            stream: Stream::Stdout,
            text: "… 1,024 bytes dropped …".into(),
            at: ms(6),
        },
        finished("main/fast", NodeKind::Sleep, Status::Succeeded, 0, 100, None),
    ];
    if !running {
        events.extend([
            finished("main/slow", NodeKind::Shell, Status::Succeeded, 0, 400, None),
            finished("main", NodeKind::Gather, Status::Succeeded, 0, 400, None),
            RunEvent::RunFinished { status: Status::Succeeded, result: None, error: None, duration: ms(400) },
        ]);
    }
    events
}

/// The value of attribute `name` in the first element of `html` that
/// contains `marker` in its start tag.
fn attr(html: &str, marker: &str, name: &str) -> Option<String> {
    let at = html.find(marker)?;
    let tag_start = html[..at].rfind('<')?;
    let tag_end = at + html[at..].find('>')?;
    let tag = &html[tag_start..tag_end];
    let key = format!(" {name}=\"");
    let v = tag.find(&key)? + key.len();
    Some(tag[v..v + tag[v..].find('"')?].to_string())
}

#[tokio::test]
async fn root_redirects_to_the_dashboard_and_pages_carry_the_security_headers() {
    let ui = Ui::start(None, vec![view("a.toml")]).await;
    let response = ui.get("/", None).await;
    assert_eq!(response.status().as_u16(), 303);
    assert_eq!(response.headers()["location"], "/ui/");
    let run = ui.run("a.toml", two_steps("a.toml", false)).await;
    for path in ["/ui/", "/ui/jobs/a.toml", "/ui/runs", &format!("/ui/runs/{run}"), "/ui/login", "/ui/runs/999"] {
        let response = ui.get(path, None).await;
        let headers = response.headers();
        assert_eq!(headers["content-security-policy"], super::CSP, "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["referrer-policy"], "same-origin", "{path}");
        assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"), "{path}");
    }
    assert_eq!(ui.get("/ui/runs/999", None).await.status().as_u16(), 404);
    // The assets are embedded and cached for long under hashed names.
    let (_, html) = ui.page("/ui/", None).await;
    let css = attr(&html, "rel=\"stylesheet\"", "href").unwrap();
    let js = attr(&html, "defer", "src").unwrap();
    for asset in [&css, &js] {
        let response = ui.get(asset, None).await;
        assert_eq!(response.status().as_u16(), 200, "{asset}");
        assert!(response.headers()["cache-control"].to_str().unwrap().contains("immutable"));
    }
    assert_eq!(ui.get("/ui/assets/other.js", None).await.status().as_u16(), 404);
}

#[tokio::test]
async fn the_jobs_page_shows_each_job_its_strip_and_the_invalid_files() {
    let mut paused = view("sub/b.toml");
    paused.paused = true;
    let mut broken = view("broken.toml");
    broken.valid = false;
    broken.diagnostic = Some("broken.toml:2:1: unknown key `nmae`".into());
    let detail = JobDetail {
        excerpt: Some("  × unknown key `nmae`\n   ╭─[broken.toml:2:1]\n 2 │ nmae = 1\n   · ──┬─\n".into()),
        ..JobDetail::default()
    };
    let ui = Ui::start_with(None, vec![view("a.toml"), paused, broken], detail).await;
    let mut runs = Vec::new();
    for _ in 0..22 {
        runs.push(ui.run("a.toml", two_steps("a.toml", false)).await);
    }
    let (status, html) = ui.page("/ui/", None).await;
    assert_eq!(status, 200);
    assert!(html.contains("<table id=\"jobs\""), "{html}");
    assert!(html.contains("data-job=\"a.toml\""));
    assert!(html.contains("data-job=\"sub/b.toml\""));
    let strip = html.split("data-job=\"a.toml\"").nth(1).unwrap().split("</tr>").next().unwrap();
    assert_eq!(strip.matches("class=\"run\"").count(), 20, "the last 20 runs: {strip}");
    assert!(strip.contains(&format!("href=\"/ui/runs/{}\"", runs[21])), "the newest is in the strip");
    assert!(!strip.contains(&format!("href=\"/ui/runs/{}\"", runs[0])), "the oldest two are not");
    assert!(strip.contains("<td class=\"status\" data-status=\"succeeded\">succeeded</td>"), "{strip}");
    assert!(strip.contains("(in 4 min)") || strip.contains("(in 5 min)"), "next fire relative: {strip}");
    assert!(strip.contains("data-action=\"trigger\""));
    assert!(html.contains("paused"), "{html}");
    let invalid = html.split("<section id=\"invalid\">").nth(1).expect("the invalid files' section");
    assert!(invalid.contains("<pre class=\"diagnostic\">"), "{invalid}");
    assert!(invalid.contains("nmae = 1"), "the caret excerpt: {invalid}");
    // The filter: by name, and by status.
    let (_, html) = ui.page("/ui/?q=SUB", None).await;
    assert!(html.contains("data-job=\"sub/b.toml\"") && !html.contains("data-job=\"a.toml\""));
    let (_, html) = ui.page("/ui/?status=paused", None).await;
    assert!(html.contains("data-job=\"sub/b.toml\"") && !html.contains("data-job=\"a.toml\""));
    let (_, html) = ui.page("/ui/?status=succeeded", None).await;
    assert!(!html.contains("data-job=\"sub/b.toml\"") && html.contains("data-job=\"a.toml\""));
}

#[tokio::test]
async fn a_job_named_with_markup_and_output_with_a_script_render_as_text() {
    let ui = Ui::start(None, vec![view("<b>x</b>.toml")]).await;
    let (status, html) = ui.page("/ui/", None).await;
    assert_eq!(status, 200);
    assert!(html.contains("&lt;b&gt;x&lt;/b&gt;.toml"), "{html}");
    assert!(!html.contains("<b>x</b>"), "{html}");
    let run = ui.run("<b>x</b>.toml", two_steps("<b>x</b>.toml", false)).await;
    let (status, html) = ui.page(&format!("/ui/runs/{run}"), None).await;
    assert_eq!(status, 200);
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{html}");
    assert!(!html.contains("<script>alert"), "{html}");
    assert!(!html.contains("<b>x</b>"), "{html}");
    // The only script is our own file; no inline script, no style attribute.
    assert_eq!(html.matches("<script").count(), 1);
    assert!(!html.contains(" style=\""));
}

/// A step's error (stderr's tail: outside text) in the timeline's title and
/// label renders as text: no attribute or element made of it.
#[tokio::test]
async fn a_step_error_with_quotes_and_markup_renders_as_text_in_the_timeline() {
    let ui = Ui::start(None, vec![view("a.toml")]).await;
    let evil = r#""></rect></g></svg><meta http-equiv="refresh" content="0;url=https://example.invalid">"#;
    let events = vec![
        RunEvent::RunStarted { job: "a.toml".into(), started_at: Utc::now() },
        started("main", NodeKind::Sequence, 0),
        started("main/bad", NodeKind::Shell, 0),
        finished("main/bad", NodeKind::Shell, Status::Failed, 0, 100, Some(evil)),
        finished("main", NodeKind::Sequence, Status::Failed, 0, 100, Some(evil)),
        RunEvent::RunFinished { status: Status::Failed, result: None, error: Some(evil.into()), duration: ms(100) },
    ];
    let run = ui.run("a.toml", events).await;
    let (status, html) = ui.page(&format!("/ui/runs/{run}"), None).await;
    assert_eq!(status, 200);
    assert!(!html.contains("<meta http-equiv=\"refresh\""), "markup from a step's error: {html}");
    assert!(!html.contains("\"></rect>"), "an attribute closed by a step's error: {html}");
    assert!(html.contains("&lt;meta http-equiv="), "the error is shown, escaped: {html}");
}

#[tokio::test]
async fn the_run_page_draws_one_bar_per_step_in_proportion_and_lists_steps_and_output() {
    let ui = Ui::start(None, vec![view("a.toml")]).await;
    let run = ui.run("a.toml", two_steps("a.toml", false)).await;
    let (status, html) = ui.page(&format!("/ui/runs/{run}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(attr(&html, "id=\"run-status\"", "data-status").as_deref(), Some("succeeded"));
    assert!(html.contains("<svg id=\"timeline\""), "{html}");
    assert_eq!(html.matches("class=\"bar\"").count(), 3, "main, fast, slow");
    let width = |path: &str| -> f64 {
        attr(&html, &format!("class=\"bar\" data-path=\"{path}\""), "width").unwrap().parse().unwrap()
    };
    let ratio = width("main/slow") / width("main/fast");
    assert!((ratio - 4.0).abs() < 0.01, "slow took 4× fast: {ratio}");
    assert_eq!(attr(&html, "data-path=\"main\" data-kind", "data-kind").as_deref(), Some("group"));
    assert!(html.contains("<table id=\"steps\""));
    assert!(html.contains("<tr data-path=\"main/slow\""));
    assert!(html.contains("<pre class=\"output\" data-path=\"main/slow\">"));
    assert!(html.contains("class=\"line marker\""), "the head/tail marker is marked: {html}");
    assert!(!html.contains("data-action=\"cancel\""), "a finished run has no cancel button");
    assert_eq!(attr(&html, "id=\"run\"", "data-live").as_deref(), Some("false"));
}

#[tokio::test]
async fn a_running_run_has_a_cancel_form_and_follows_on_from_its_next_event() {
    let ui = Ui::start(None, vec![view("a.toml")]).await;
    let run = ui.run("a.toml", two_steps("a.toml", true)).await;
    let (_, html) = ui.page(&format!("/ui/runs/{run}"), None).await;
    assert_eq!(attr(&html, "id=\"run-status\"", "data-status").as_deref(), Some("running"));
    assert!(html.contains("data-action=\"cancel\""));
    assert_eq!(attr(&html, "id=\"run\"", "data-live").as_deref(), Some("true"));
    // 7 events were recorded (0..=6): the stream goes on from 7.
    assert_eq!(attr(&html, "id=\"run\"", "data-from").as_deref(), Some("7"));
    let csrf = attr(&html, "name=\"csrf\"", "value").unwrap();
    let here = format!("/ui/runs/{run}");
    let response =
        ui.post_form(&format!("{here}/cancel"), Some(&ui.origin()), None, &[("csrf", &csrf), ("back", &here)]).await;
    assert_eq!(response.status().as_u16(), 303);
    assert_eq!(response.headers()["location"], here.as_str());
    assert_eq!(ui.control.calls.lock().unwrap().as_slice(), [format!("cancel {run}")]);
}

#[tokio::test]
async fn with_a_token_pages_redirect_to_the_login_and_the_right_token_gives_a_session_cookie() {
    let ui = Ui::start(Some("s3cret"), vec![view("a.toml")]).await;
    let run = ui.run("a.toml", two_steps("a.toml", false)).await;
    for path in ["/ui/", "/ui/jobs/a.toml", "/ui/runs", &format!("/ui/runs/{run}")] {
        let response = ui.get(path, None).await;
        assert_eq!(response.status().as_u16(), 303, "{path}");
        assert_eq!(response.headers()["location"], "/ui/login", "{path}");
    }
    let (status, html) = ui.page("/ui/login", None).await;
    assert_eq!(status, 200);
    assert!(html.contains("<form id=\"login\"") && html.contains("name=\"token\""), "{html}");

    // A wrong token: 401, a message, no cookie.
    let response = ui.post_form("/ui/login", Some(&ui.origin()), None, &[("token", "guess")]).await;
    assert_eq!(response.status().as_u16(), 401);
    assert!(response.headers().get("set-cookie").is_none());
    assert!(response.text().await.unwrap().contains("Wrong token"));

    // The right one: an HttpOnly, SameSite=Strict cookie that opens the pages.
    let response = ui.post_form("/ui/login", Some(&ui.origin()), None, &[("token", "s3cret")]).await;
    assert_eq!(response.status().as_u16(), 303);
    let set = response.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(set.starts_with("gatherd_session="), "{set}");
    for part in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(part), "{set} lacks {part}");
    }
    assert!(!set.contains("Secure"), "plain http: {set}");
    let cookie = set.split(';').next().unwrap();
    for path in ["/ui/", "/ui/jobs/a.toml", "/ui/runs", &format!("/ui/runs/{run}")] {
        assert_eq!(ui.get(path, Some(cookie)).await.status().as_u16(), 200, "{path}");
    }
    // The cookie opens the run's event stream (the run page follows it)…
    let events = ui.get(&format!("/runs/{run}/events"), Some(cookie)).await;
    assert_eq!(events.status().as_u16(), 200);
    assert!(events.text().await.unwrap().contains("event: run_finished"));
    // …but not the JSON API, which keeps the bearer token.
    assert_eq!(ui.get("/jobs", Some(cookie)).await.status().as_u16(), 401);
    assert_eq!(ui.get(&format!("/runs/{run}"), Some(cookie)).await.status().as_u16(), 401);
    // A made-up session id opens nothing.
    assert_eq!(ui.get("/ui/", Some("gatherd_session=00ff")).await.status().as_u16(), 303);
    assert_eq!(ui.get(&format!("/runs/{run}/events"), Some("gatherd_session=00ff")).await.status().as_u16(), 401);
}

#[tokio::test]
async fn a_new_token_ends_the_sessions_opened_with_the_old_one() {
    let ui = Ui::start(Some("old-token"), vec![view("a.toml")]).await;
    let cookie = ui.login("old-token").await;
    assert_eq!(ui.get("/ui/", Some(&cookie)).await.status().as_u16(), 200);
    ui.token.set(Some("new-token".into()));
    let response = ui.get("/ui/", Some(&cookie)).await;
    assert_eq!(response.status().as_u16(), 303, "the old session is over");
    let cookie = ui.login("new-token").await;
    assert_eq!(ui.get("/ui/", Some(&cookie)).await.status().as_u16(), 200);
}

#[tokio::test]
async fn a_form_without_a_matching_origin_or_csrf_token_is_refused() {
    let ui = Ui::start(Some("tok"), vec![view("a.toml")]).await;
    let cookie = ui.login("tok").await;
    let (_, html) = ui.page("/ui/jobs/a.toml", Some(&cookie)).await;
    let csrf = attr(&html, "name=\"csrf\"", "value").expect("the form's CSRF token");
    let origin = ui.origin();
    let path = "/ui/jobs/a.toml/trigger";
    // No Origin (nor Referer); a foreign Origin; no token; a wrong token.
    type Case<'a> = (Option<&'a str>, &'a [(&'a str, &'a str)]);
    let cases: [Case; 4] = [
        (None, &[("csrf", &csrf)]),
        (Some("http://evil.example"), &[("csrf", &csrf)]),
        (Some(&origin), &[]),
        (Some(&origin), &[("csrf", "0000")]),
    ];
    for (i, (from, form)) in cases.into_iter().enumerate() {
        let response = ui.post_form(path, from, Some(&cookie), form).await;
        assert_eq!(response.status().as_u16(), 403, "case {i}");
    }
    assert!(ui.control.calls.lock().unwrap().is_empty(), "nothing was triggered");
    // The page's own form: 303 back, with the new run's id.
    let response = ui.post_form(path, Some(&origin), Some(&cookie), &[("csrf", &csrf), ("back", "/ui/")]).await;
    assert_eq!(response.status().as_u16(), 303);
    assert_eq!(response.headers()["location"], "/ui/?triggered=42");
    let response = ui.post_form("/ui/jobs/a.toml/pause", Some(&origin), Some(&cookie), &[("csrf", &csrf)]).await;
    assert_eq!(response.status().as_u16(), 303);
    assert_eq!(response.headers()["location"], "/ui/jobs/a.toml");
    // A back address off this dashboard is not followed.
    for back in ["//evil.example/", "/ui/jobs/é", "/ui/\r\nSet-Cookie: x=1"] {
        let form = [("csrf", csrf.as_str()), ("back", back)];
        let response = ui.post_form("/ui/jobs/a.toml/resume", Some(&origin), Some(&cookie), &form).await;
        assert_eq!(response.status().as_u16(), 303, "{back:?}");
        assert_eq!(response.headers()["location"], "/ui/jobs/a.toml", "{back:?}");
    }
    assert_eq!(
        ui.control.calls.lock().unwrap().as_slice(),
        ["trigger a.toml", "pause a.toml true", "pause a.toml false", "pause a.toml false", "pause a.toml false"]
    );
}

#[tokio::test]
async fn the_job_page_shows_source_next_fires_history_and_the_paused_state() {
    let mut job = view("a.toml");
    job.paused = true;
    let now = Utc::now();
    let detail = JobDetail {
        source: Some(Arc::from("# nightly <b>\nname = \"x\"\n")),
        next_fires: (1..=5).map(|h| now + chrono::Duration::hours(h)).collect(),
        excerpt: None,
    };
    let ui = Ui::start_with(None, vec![job], detail).await;
    let mut runs = Vec::new();
    for _ in 0..55 {
        runs.push(ui.run("a.toml", two_steps("a.toml", false)).await);
    }
    // With or without its extension, as everywhere.
    let (status, html) = ui.page("/ui/jobs/a", None).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("<h1>a.toml</h1>"), "{html}");
    assert!(html.contains("id=\"paused\""));
    assert!(html.contains("data-action=\"resume\"") && !html.contains("data-action=\"pause\""));
    assert!(html.contains("<pre id=\"source\""));
    assert!(html.contains("<span class=\"c\"># nightly &lt;b&gt;</span>"), "{html}");
    let fires = html.split("<ol id=\"next-fires\">").nth(1).unwrap().split("</ol>").next().unwrap();
    assert_eq!(fires.matches("<li>").count(), 5);
    let history = html.split("<table id=\"history\"").nth(1).unwrap().split("</table>").next().unwrap();
    assert_eq!(history.matches("data-run-id=").count(), 50);
    let older = attr(&html, "rel=\"next\"", "href").unwrap();
    assert_eq!(older, format!("/ui/jobs/a.toml?before={}", runs[5]));
    let (_, html) = ui.page(&older, None).await;
    assert_eq!(html.matches("data-run-id=").count(), 5);
    assert!(!html.contains("rel=\"next\""));
    assert_eq!(ui.page("/ui/jobs/nope.toml", None).await.0, 404);
}

#[tokio::test]
async fn the_runs_page_filters_by_job_status_and_node_and_pages_with_before() {
    let ui = Ui::start(None, vec![view("a.toml"), view("b.toml")]).await;
    let mut a = Vec::new();
    for _ in 0..3 {
        a.push(ui.run("a.toml", two_steps("a.toml", false)).await);
    }
    let b = ui.run("b.toml", two_steps("b.toml", true)).await;
    let (status, html) = ui.page("/ui/runs", None).await;
    assert_eq!(status, 200);
    assert!(html.contains("<table id=\"runs\""));
    assert_eq!(html.matches("data-run-id=").count(), 4);
    let (_, html) = ui.page("/ui/runs?job=a.toml", None).await;
    assert_eq!(html.matches("data-run-id=").count(), 3);
    let (_, html) = ui.page("/ui/runs?status=running", None).await;
    assert!(html.contains(&format!("data-run-id=\"{b}\"")) && html.matches("data-run-id=").count() == 1);
    let (_, html) = ui.page("/ui/runs?node=node-a", None).await;
    assert_eq!(html.matches("data-run-id=").count(), 4);
    let (_, html) = ui.page("/ui/runs?node=node-b", None).await;
    assert_eq!(html.matches("data-run-id=").count(), 0);
    let (_, html) = ui.page(&format!("/ui/runs?before={b}&job=a.toml"), None).await;
    assert_eq!(html.matches("data-run-id=").count(), 3);
    assert_eq!(ui.page("/ui/runs?status=great", None).await.0, 400);
    assert_eq!(ui.page("/ui/runs?before=x", None).await.0, 400);
    let _ = json!(null);
}

/// A run of `n` steps under one gather, each 1 ms apart and printing a line.
fn big_run(job: &str, n: u64) -> Vec<RunEvent> {
    let mut events = vec![RunEvent::RunStarted { job: job.into(), started_at: Utc::now() }];
    events.push(started("main", NodeKind::Gather, 0));
    for i in 0..n {
        let path = format!("main/s{i}");
        events.push(started(&path, NodeKind::Sleep, i));
        events.push(RunEvent::Log {
            path: path.as_str().into(),
            stream: Stream::Stdout,
            text: format!("line {i}"),
            at: ms(i),
        });
        events.push(finished(&path, NodeKind::Sleep, Status::Succeeded, i, i + 10, None));
    }
    events.push(finished("main", NodeKind::Gather, Status::Succeeded, 0, n + 10, None));
    events.push(RunEvent::RunFinished { status: Status::Succeeded, result: None, error: None, duration: ms(n + 10) });
    events
}

#[tokio::test]
async fn a_ten_thousand_step_run_is_aggregated_and_paged() {
    let ui = Ui::start(None, vec![view("big.toml")]).await;
    let run = ui.run("big.toml", big_run("big.toml", 10_000)).await;
    let (status, html) = ui.page(&format!("/ui/runs/{run}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(attr(&html, "<svg id=\"timeline\"", "data-aggregated").as_deref(), Some("true"));
    assert_eq!(html.matches("class=\"bar\"").count(), 1, "the group's bar; its steps are aggregated");
    assert!(html.matches("class=\"agg\"").count() <= 380);
    let table = html.split("<table id=\"steps\"").nth(1).unwrap().split("</table>").next().unwrap();
    assert_eq!(table.matches("<tr data-path=").count(), super::run::STEPS_PAGE);
    assert!(html.len() < 600_000, "the page is {} bytes", html.len());
    let (status, last) = ui.page(&format!("/ui/runs/{run}?page=21"), None).await;
    assert_eq!(status, 200);
    assert!(last.contains("data-path=\"main/s9999\""));
    assert_eq!(ui.page(&format!("/ui/runs/{run}?page=22"), None).await.0, 404);
}

#[tokio::test]
async fn a_retried_step_shows_its_failed_attempts_as_segments_with_their_errors() {
    let ui = Ui::start(None, vec![view("a.toml")]).await;
    let events = vec![
        RunEvent::RunStarted { job: "a.toml".into(), started_at: Utc::now() },
        started("main", NodeKind::Sequence, 0),
        started("main/flaky", NodeKind::Shell, 0),
        RunEvent::AttemptFailed {
            path: "main/flaky".into(),
            attempt: 1,
            error: "exit 1: <nope>".into(),
            retry_in: ms(100),
            at: ms(200),
        },
        RunEvent::NodeFinished {
            path: "main/flaky".into(),
            name: "flaky".into(),
            kind: NodeKind::Shell,
            status: Status::Succeeded,
            attempts: 2,
            started: Some(ms(0)),
            at: ms(500),
            output: None,
            error: None,
            truncated: false,
        },
        finished("main", NodeKind::Sequence, Status::Succeeded, 0, 500, None),
        RunEvent::RunFinished { status: Status::Succeeded, result: None, error: None, duration: ms(500) },
    ];
    let run = ui.run("a.toml", events).await;
    let (_, html) = ui.page(&format!("/ui/runs/{run}"), None).await;
    let bar = |path: &str, name: &str| -> f64 {
        attr(&html, &format!("class=\"bar\" data-path=\"{path}\""), name).unwrap().parse().unwrap()
    };
    let segment: f64 = attr(&html, "class=\"attempt\" data-attempt=\"1\"", "width").unwrap().parse().unwrap();
    assert!((segment / bar("main/flaky", "width") - 0.4).abs() < 0.01, "the first attempt: 200 of 500 ms");
    assert!(html.contains("<title>attempt 1 failed: exit 1: &lt;nope&gt;</title>"), "{html}");
    assert!(attr(&html, "data-path=\"main/flaky\" data-kind", "aria-label").unwrap().contains("2 attempts"));
}
