//! The dashboard (issue 17) in a real headless Chromium, against a real
//! daemon serving its API on 127.0.0.1 with the token required: what an
//! operator does, click by click, through the DOM hooks of the dashboard's
//! contract (README "The dashboard").
//!
//! One test function runs the scenarios in order on one browser: Chromium's
//! start is most of the cost, and the scenarios build on each other (log in
//! once, then act). Each scenario is a named helper with its own assertion
//! messages; a failing one saves `target/ui-screenshots/FAILED-NAME.png`.

#[path = "support/browser.rs"]
mod browser;
mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use browser::{Browser, HEIGHT, PATIENCE, WIDTH};
use serde_json::Value;
use support::{Daemon, gatherd, http};

/// The token the daemon requires over TCP (its config's `api_token`).
const TOKEN: &str = "browser-test-token-0123456789abcdef";

/// The step output that must render as text and never run.
const XSS: &str = "<script>alert(1)</script>";

/// Three steps in sequence: `gate` waits for a file the test creates once
/// the run page shows the run running (so the page is open before the run
/// ends, on any machine), then prints a line; then 300 ms and 900 ms.
fn steps_job(gate: &Path) -> String {
    format!(
        "description = \"three steps in sequence\"\nschedule = \"@yearly\"\n\n\
         [[step]]\nname = \"gate\"\nshell = \"while [ ! -e '{}' ]; do sleep 0.02; done; echo gate open\"\n\n\
         [[step]]\nname = \"short\"\nsleep = \"300ms\"\n\n\
         [[step]]\nname = \"long\"\nsleep = \"900ms\"\n",
        gate.display()
    )
}

/// A run that lasts until cancelled.
const LONG: &str = "schedule = \"@yearly\"\n\n[[step]]\nname = \"wait\"\nsleep = \"10m\"\n";
/// A job to pause and resume.
const QUIET: &str = "schedule = \"@yearly\"\n\n[[step]]\nname = \"nap\"\nsleep = \"10ms\"\n";
/// A step whose output is markup.
const XSS_JOB: &str =
    "schedule = \"@yearly\"\n\n[[step]]\nname = \"xss\"\nshell = \"echo '<script>alert(1)</script>'\"\n";

/// What the scenarios share: the daemon, its address, the browser.
struct Ui {
    daemon: Daemon,
    tcp: SocketAddr,
    base: String,
    browser: Browser,
    gate: tempfile::TempDir,
}

impl Ui {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET path` on the JSON API with the token: the parsed body.
    fn api(&self, path: &str) -> Value {
        let bearer = format!("Bearer {TOKEN}");
        let (status, body) = http(self.tcp, "GET", path, &[("authorization", &bearer)], "");
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path} is not JSON ({e}): {body}"))
    }

    /// The ids of `job`'s runs in the history (newest first).
    fn run_ids(&self, job: &str) -> Vec<u64> {
        let runs = self.api(&format!("/runs?job={job}"));
        runs["runs"]
            .as_array()
            .unwrap_or_else(|| panic!("no runs array: {runs}"))
            .iter()
            .filter_map(|r| r["id"].as_u64())
            .collect()
    }

    /// The one run of `job` in the history (the one a button started, long
    /// since recorded).
    fn only_run(&self, job: &str) -> u64 {
        let ids = self.run_ids(job);
        assert_eq!(ids.len(), 1, "{job} should have exactly one run, the one the button started: {ids:?}");
        ids[0]
    }

    /// The id of the one run of `job` in flight, which a button just
    /// started: read from `GET /jobs/{job}`'s `running` (the supervisor's
    /// table), waiting for it up to [`PATIENCE`]. Not from the history: a
    /// trigger is answered once the run is spawned, and its row may land a
    /// moment later.
    async fn started_run(&self, job: &str) -> u64 {
        let start = std::time::Instant::now();
        loop {
            let view = self.api(&format!("/jobs/{job}"));
            let running: Vec<u64> = view["running"]
                .as_array()
                .map(|ids| ids.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default();
            if !running.is_empty() {
                assert_eq!(running.len(), 1, "the button should start exactly one run of {job}: {view}");
                return running[0];
            }
            assert!(start.elapsed() < PATIENCE, "no run of {job} in flight after its trigger button: {view}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until run `id` is in the history (its row lands a moment after
    /// the trigger is answered), so its page exists.
    async fn recorded(&self, id: u64) {
        let start = std::time::Instant::now();
        let bearer = format!("Bearer {TOKEN}");
        loop {
            let (code, body) = http(self.tcp, "GET", &format!("/runs/{id}"), &[("authorization", &bearer)], "");
            if code == 200 {
                return;
            }
            assert!(code == 404 && start.elapsed() < PATIENCE, "run {id} is not in the history: {code} {body}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the API has run `id` with `status` (the run may not be in
    /// the history yet: 404 until it is); returns the run.
    async fn api_run_status(&self, id: u64, status: &str) -> Value {
        let start = std::time::Instant::now();
        let bearer = format!("Bearer {TOKEN}");
        loop {
            let (code, body) = http(self.tcp, "GET", &format!("/runs/{id}"), &[("authorization", &bearer)], "");
            assert!(code == 200 || code == 404, "GET /runs/{id}: {code} {body}");
            if code == 200 {
                let run: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
                if run["status"] == status {
                    return run;
                }
            }
            assert!(
                start.elapsed() < PATIENCE,
                "run {id} is not {status} in the API after {PATIENCE:?}: {code} {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The path of the step named `name` in run `run` (as the API has it).
    fn step_path(run: &Value, name: &str) -> String {
        run["steps"]
            .as_array()
            .and_then(|steps| steps.iter().find(|s| s["name"] == name))
            .and_then(|s| s["path"].as_str())
            .unwrap_or_else(|| panic!("no step {name} in {run:#}"))
            .to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_a_real_browser_with_the_token_required() {
    browser::clear_failure_screenshots();
    let gate = tempfile::tempdir().expect("gate dir");
    let config_dir = tempfile::tempdir().expect("config dir");
    let config = support::write(config_dir.path(), "config.toml", &format!("api_token = \"{TOKEN}\"\n"));
    let config = config.to_str().expect("utf-8 path").to_string();
    let steps = steps_job(&gate.path().join("open"));
    let daemon = Daemon::start(
        &[("steps.toml", &steps), ("long.toml", LONG), ("quiet.toml", QUIET), ("xss.toml", XSS_JOB)],
        &["--config", &config, "--api-listen", "127.0.0.1:0"],
        &[],
    );
    let tcp = daemon.tcp_api();
    let browser = Browser::start().await;
    let pgid = browser.pgid();
    let ui = Ui { daemon, tcp, base: format!("http://{tcp}"), browser, gate };
    let b = &ui.browser;

    b.scenario("pages_refuse_without_login", || pages_refuse_without_login(&ui)).await;
    b.scenario("log_in_with_the_token", || log_in_with_the_token(&ui)).await;
    b.scenario("jobs_page_lists_every_job", || jobs_page_lists_every_job(&ui)).await;
    b.scenario("trigger_and_follow_the_run_live", || trigger_and_follow_the_run_live(&ui)).await;
    b.scenario("a_group_folds_from_the_keyboard", || a_group_folds_from_the_keyboard(&ui)).await;
    b.scenario("cancel_a_long_run_from_its_page", || cancel_a_long_run_from_its_page(&ui)).await;
    b.scenario("pause_and_resume_from_the_job_page", || pause_and_resume_from_the_job_page(&ui)).await;
    b.scenario("step_output_renders_as_text", || step_output_renders_as_text(&ui)).await;
    b.scenario("screenshots_at_1280x800", || screenshots_at_1280x800(&ui)).await;
    b.scenario("logged_out_pages_refuse_again", || logged_out_pages_refuse_again(&ui)).await;

    let Ui { daemon, browser, .. } = ui;
    let left = browser.quit().await;
    assert!(left.is_empty(), "chromedriver or Chromium outlived the browser (group {pgid}): {left:#?}");
    let (code, _) = daemon.stop();
    assert_eq!(code, Some(0), "the daemon's exit");
}

/// Without the session cookie (and with no token header, as a browser
/// sends none), no page shows data and no form changes anything: the
/// browser lands on the login page, and the raw requests are refused.
async fn pages_refuse_without_login(ui: &Ui) {
    let b = &ui.browser;
    b.goto(&ui.url("/ui/")).await;
    assert!(b.all("table#jobs").await.is_empty(), "the jobs page showed without a login, at {}", b.path().await);
    let source = b.client().source().await.expect("page source");
    assert!(!source.contains("steps.toml"), "a page without a login names a job:\n{source}");
    // The login page is there to use.
    b.goto(&ui.url("/ui/login")).await;
    b.find("form#login input[name=\"token\"]").await;

    for path in ["/", "/ui/", "/ui/jobs/steps.toml", "/ui/runs", "/ui/runs/1"] {
        let (status, body) = http(ui.tcp, "GET", path, &[], "");
        // `/` may redirect to /ui/ before anything is checked; nothing may be a page.
        assert!(!(200..300).contains(&status), "GET {path} without a login answered {status}:\n{body}");
        assert!(!body.contains("steps.toml"), "GET {path} without a login named a job:\n{body}");
    }
    // A form posted without a session (from the dashboard's own origin, so
    // only the missing login stops it) starts nothing.
    let origin = ui.base.clone();
    let headers = [("origin", origin.as_str()), ("content-type", "application/x-www-form-urlencoded")];
    let (status, body) = http(ui.tcp, "POST", "/ui/jobs/quiet.toml/trigger", &headers, "");
    assert!(!(200..300).contains(&status), "a trigger without a login answered {status}: {body}");
    assert!(ui.run_ids("quiet.toml").is_empty(), "a trigger without a login started a run");
    let job = ui.api("/jobs/quiet.toml");
    assert_eq!(job["running"], serde_json::json!([]), "a trigger without a login started a run: {job}");

    // A wrong token does not log in either.
    b.find("form#login input[name=\"token\"]").await.send_keys("not-the-token").await.expect("type a token");
    b.client()
        .form(fantoccini::Locator::Css("form#login"))
        .await
        .expect("the login form")
        .submit()
        .await
        .expect("submit");
    b.find("form#login").await;
    assert!(b.all("table#jobs").await.is_empty(), "a wrong token showed the jobs page");
    let cookies = b.client().get_all_cookies().await.expect("cookies");
    assert!(cookies.iter().all(|c| c.name() != "gatherd_session"), "a wrong token got a session: {cookies:?}");
}

/// The token typed into the login form gives a session cookie (HttpOnly,
/// SameSite=Strict, Path=/, not Secure on http) and the jobs page.
async fn log_in_with_the_token(ui: &Ui) {
    let b = &ui.browser;
    b.goto(&ui.url("/ui/login")).await;
    b.find("form#login input[name=\"token\"]").await.send_keys(TOKEN).await.expect("type the token");
    b.client()
        .form(fantoccini::Locator::Css("form#login"))
        .await
        .expect("the login form")
        .submit()
        .await
        .expect("submit");
    b.find("table#jobs").await;
    let cookie = b.client().get_named_cookie("gatherd_session").await.expect("a gatherd_session cookie after login");
    assert_eq!(cookie.http_only(), Some(true), "the session cookie is not HttpOnly: {cookie:?}");
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Strict)", "the session cookie's SameSite: {cookie:?}");
    assert_eq!(cookie.path(), Some("/"), "the session cookie's Path: {cookie:?}");
    assert_ne!(cookie.secure(), Some(true), "a Secure cookie is never sent back over http://: {cookie:?}");
    let visible = b.js("return document.cookie").await;
    assert!(!visible.as_str().unwrap_or("").contains("gatherd_session"), "scripts can read the session: {visible}");
}

/// One row per job file, each with its status, next fire and trigger button.
async fn jobs_page_lists_every_job(ui: &Ui) {
    let b = &ui.browser;
    b.goto(&ui.url("/ui/")).await;
    for job in ["steps.toml", "long.toml", "quiet.toml", "xss.toml"] {
        let row = format!("table#jobs tr[data-job=\"{job}\"]");
        b.find(&row).await;
        for part in ["td.status", "td.next", "button[data-action=\"trigger\"]"] {
            assert_eq!(b.all(&format!("{row} {part}")).await.len(), 1, "{job}'s row should have one {part}");
        }
        let next = b.text(&format!("{row} td.next")).await;
        assert!(next.contains("2027") || next.contains("in "), "{job}'s next fire (@yearly) reads {next:?}");
    }
}

/// The trigger button starts a run; its page follows it live (no reload)
/// to succeeded, with one timeline bar per step, widths in proportion to
/// the durations the API recorded.
async fn trigger_and_follow_the_run_live(ui: &Ui) {
    let b = &ui.browser;
    b.goto(&ui.url("/ui/")).await;
    b.find("tr[data-job=\"steps.toml\"] button[data-action=\"trigger\"]").await.click().await.expect("click trigger");
    b.wait_path("/ui/").await;
    let id = ui.started_run("steps.toml").await;
    ui.recorded(id).await;

    b.goto(&ui.url(&format!("/ui/runs/{id}"))).await;
    // The gate is shut: the run cannot end before the test opens it.
    b.wait_text("#run-status", "running", PATIENCE).await;
    let status = b.find("#run-status").await;
    assert_eq!(Browser::attr(&status, "data-status").await, "running", "#run-status's data-status while running");
    assert_eq!(b.all("button[data-action=\"cancel\"]").await.len(), 1, "a running run has a cancel button");
    // A mark in this document: a reload (or a meta refresh) would lose it.
    b.js("window.gatherdTestMark = 'same document'; return true").await;
    std::fs::write(ui.gate.path().join("open"), "").expect("open the gate");

    b.wait_text("#run-status", "succeeded", PATIENCE).await;
    assert_eq!(
        b.js("return window.gatherdTestMark || null").await,
        "same document",
        "the page reloaded to show the end: it must update live (SSE)"
    );
    let status = b.find("#run-status").await;
    assert_eq!(Browser::attr(&status, "data-status").await, "succeeded", "#run-status's data-status at the end");

    let run = ui.api_run_status(id, "succeeded").await;
    assert_eq!(ui.run_ids("steps.toml"), [id], "the history has the one run the button started");
    let gate_path = Ui::step_path(&run, "gate");
    let printed = b.text(&format!("pre.output[data-path=\"{gate_path}\"]")).await;
    assert!(printed.contains("gate open"), "the gate step's line did not appear live: {printed:?}");
    check_timeline(b, &run).await;
}

/// One `rect.bar` per step and group of `run` (the API's document), each
/// with its status, one `table#steps` row each, and the bars' widths (and
/// starts) on one axis in proportion to the recorded durations (±10 %).
async fn check_timeline(b: &Browser, run: &Value) {
    let steps = run["steps"].as_array().unwrap_or_else(|| panic!("no steps: {run:#}"));
    let bars = b.all("svg#timeline rect.bar").await;
    assert_eq!(bars.len(), steps.len(), "one bar per step (and group) of {run:#}");
    assert_eq!(b.all("table#steps tr[data-path]").await.len(), steps.len(), "one steps-table row per step");
    let mut measured = Vec::new();
    for step in steps {
        let path = step["path"].as_str().expect("a step path");
        let bar = b.find(&format!("svg#timeline rect.bar[data-path=\"{path}\"]")).await;
        assert_eq!(Browser::attr(&bar, "data-status").await, step["status"].as_str().expect("status"), "{path}'s bar");
        let number =
            |text: String| text.trim().parse::<f64>().unwrap_or_else(|e| panic!("{path}'s bar: {text:?}: {e}"));
        let x = number(Browser::attr(&bar, "x").await);
        let width = number(Browser::attr(&bar, "width").await);
        let start = step["start_ms"].as_f64().expect("start_ms");
        let duration = step["end_ms"].as_f64().expect("end_ms") - start;
        measured.push((path.to_string(), x, width, start, duration));
    }
    let (_, _, widest, _, longest) =
        measured.iter().cloned().max_by(|a, b| a.4.total_cmp(&b.4)).expect("at least one step");
    let x0 = measured.iter().map(|m| m.1).fold(f64::INFINITY, f64::min);
    assert!(widest > 0.0 && longest > 0.0, "the longest step has no width: {measured:?}");
    for (path, x, width, start, duration) in &measured {
        let want = duration / longest;
        let got = width / widest;
        assert!(
            (got - want).abs() <= 0.10 * want,
            "{path}: width {width} is {got:.3} of the widest bar, its duration {duration} ms is {want:.3} of the \
             longest (±10 %): {measured:?}"
        );
        let (want_x, got_x) = (start / longest, (x - x0) / widest);
        assert!(
            (got_x - want_x).abs() <= 0.10,
            "{path}: starts at {got_x:.3} of the axis, at {want_x:.3} by the API: {measured:?}"
        );
    }
}

/// The timeline's groups fold from the keyboard: Enter on a group's bar
/// (focusable) hides the bars of its steps, Enter again shows them.
async fn a_group_folds_from_the_keyboard(ui: &Ui) {
    let b = &ui.browser;
    let id = ui.only_run("steps.toml");
    let run = ui.api_run_status(id, "succeeded").await;
    b.goto(&ui.url(&format!("/ui/runs/{id}"))).await;
    let group = b.find("svg#timeline rect.bar[data-kind=\"group\"][data-path=\"main\"]").await;
    let children: Vec<String> = run["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["path"].as_str())
        .filter(|p| p.starts_with("main/"))
        .map(|p| format!("svg#timeline rect.bar[data-path=\"{p}\"]"))
        .collect();
    assert!(!children.is_empty(), "main has steps: {run:#}");
    let shown = |css: String| async move {
        let bar = b.find(&css).await;
        bar.is_displayed().await.unwrap_or_else(|e| panic!("is {css} displayed: {e}"))
    };
    for css in &children {
        assert!(shown(css.clone()).await, "{css} is hidden before folding");
    }
    group.send_keys(&fantoccini::key::Key::Enter).await.expect("Enter on main's bar");
    for css in &children {
        assert!(!shown(css.clone()).await, "{css} still shows after folding main from the keyboard");
    }
    group.send_keys(&fantoccini::key::Key::Enter).await.expect("Enter on main's bar again");
    for css in &children {
        assert!(shown(css.clone()).await, "{css} stays hidden after unfolding main");
    }
}

/// A long run is cancelled with its page's button: the page and the API
/// say cancelled, and the button is gone.
async fn cancel_a_long_run_from_its_page(ui: &Ui) {
    let b = &ui.browser;
    b.goto(&ui.url("/ui/jobs/long.toml")).await;
    b.find("button[data-action=\"trigger\"]").await.click().await.expect("click trigger");
    b.wait_path("/ui/jobs/long.toml").await;
    let id = ui.started_run("long.toml").await;
    ui.recorded(id).await;
    b.goto(&ui.url(&format!("/ui/runs/{id}"))).await;
    b.wait_text("#run-status", "running", PATIENCE).await;
    b.find("button[data-action=\"cancel\"]").await.click().await.expect("click cancel");
    b.wait_text("#run-status", "cancelled", PATIENCE).await;
    ui.api_run_status(id, "cancelled").await;
    assert_eq!(ui.run_ids("long.toml"), [id], "the history has the one run the button started");
    b.goto(&ui.url(&format!("/ui/runs/{id}"))).await;
    b.wait_text("#run-status", "cancelled", PATIENCE).await;
    assert!(b.all("button[data-action=\"cancel\"]").await.is_empty(), "a cancelled run still has a cancel button");
}

/// Pause from the job page: the page shows it, and the API and
/// `gatherd jobs --json` agree; resume undoes it.
async fn pause_and_resume_from_the_job_page(ui: &Ui) {
    let b = &ui.browser;
    let page = "/ui/jobs/quiet.toml";
    b.goto(&ui.url(page)).await;
    assert!(b.text("h1").await.contains("quiet"), "the job page's title names the job");
    assert!(b.all("#paused").await.is_empty(), "a job never paused shows #paused");
    b.find("button[data-action=\"pause\"]").await.click().await.expect("click pause");
    b.wait_path(page).await;
    b.find("#paused").await;
    assert_eq!(ui.api("/jobs/quiet.toml")["paused"], true, "the API after pausing from the page");
    assert_eq!(cli_paused(ui, "quiet.toml"), Some(true), "gatherd jobs --json after pausing from the page");

    b.find("button[data-action=\"resume\"]").await.click().await.expect("click resume");
    b.wait_path(page).await;
    b.find("h1").await;
    assert!(b.all("#paused").await.is_empty(), "a resumed job still shows #paused");
    assert_eq!(ui.api("/jobs/quiet.toml")["paused"], false, "the API after resuming from the page");
    assert_eq!(cli_paused(ui, "quiet.toml"), Some(false), "gatherd jobs --json after resuming from the page");
}

/// `paused` of `job` as `gatherd jobs --json --addr` prints it.
fn cli_paused(ui: &Ui, job: &str) -> Option<bool> {
    let out = gatherd()
        .args(["jobs", "--json", "--addr", &ui.tcp.to_string(), "--token", TOKEN])
        .env_remove("GATHERD_TOKEN")
        .env_remove("GATHERD_ADDR")
        .output()
        .expect("gatherd jobs runs");
    assert_eq!(out.status.code(), Some(0), "gatherd jobs: {}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("gatherd jobs --json prints JSON");
    doc["jobs"].as_array()?.iter().find(|j| j["job"] == job)?["paused"].as_bool()
}

/// A step that prints `<script>alert(1)</script>`: its run page shows that
/// line as text, no script element is made of it, and no alert opened; the
/// job page shows the same text in its source.
async fn step_output_renders_as_text(ui: &Ui) {
    let b = &ui.browser;
    let bearer = format!("Bearer {TOKEN}");
    let (status, body) = http(ui.tcp, "POST", "/jobs/xss.toml/trigger", &[("authorization", &bearer)], "");
    assert_eq!(status, 201, "trigger xss.toml: {body}");
    let id = serde_json::from_str::<Value>(&body).expect("JSON")["run_id"].as_u64().expect("run_id");
    let run = ui.api_run_status(id, "succeeded").await;
    let path = Ui::step_path(&run, "xss");

    b.goto(&ui.url(&format!("/ui/runs/{id}"))).await;
    no_alert(b).await;
    b.wait_text("#run-status", "succeeded", PATIENCE).await;
    let output = format!("pre.output[data-path=\"{path}\"]");
    assert_eq!(b.text(&output).await.trim(), XSS, "the step's output, as text");
    assert!(b.all(&format!("{output} script")).await.is_empty(), "the output became a <script> element");
    no_alert(b).await;

    b.goto(&ui.url("/ui/jobs/xss.toml")).await;
    no_alert(b).await;
    assert!(b.text("pre#source").await.contains(XSS), "the job's source, as text");
    assert!(b.all("pre#source script").await.is_empty(), "the job's source became a <script> element");
}

/// No alert dialog is open (fantoccini's `get_alert_text` fails with "no
/// such alert").
async fn no_alert(b: &Browser) {
    match b.client().get_alert_text().await {
        Ok(text) => panic!("an alert opened on {}: {text:?}", b.path().await),
        Err(e) => assert!(e.is_no_such_alert(), "asking for an alert failed otherwise: {e}"),
    }
}

/// The jobs page and a run page, at 1280×800, into target/ui-screenshots
/// (the README's copies in docs/screenshots/ are taken from these).
async fn screenshots_at_1280x800(ui: &Ui) {
    let b = &ui.browser;
    b.goto(&ui.url("/ui/")).await;
    b.find("table#jobs").await;
    check_png(&b.screenshot("jobs").await);
    let id = ui.only_run("steps.toml");
    b.goto(&ui.url(&format!("/ui/runs/{id}"))).await;
    b.find("svg#timeline").await;
    check_png(&b.screenshot("run").await);
}

/// The file at `path` is a PNG of [`WIDTH`]×[`HEIGHT`].
fn check_png(path: &Path) {
    let png = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert_eq!(png_size(&png), (WIDTH, HEIGHT), "{}'s size", path.display());
}

/// A PNG's width and height (IHDR, big-endian, at bytes 16 and 20).
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(png.len() > 24 && png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let dim = |at: usize| u32::from_be_bytes([png[at], png[at + 1], png[at + 2], png[at + 3]]);
    (dim(16), dim(20))
}

/// The harness itself: a page served on 127.0.0.1 loads, a screenshot is
/// a 1280×800 PNG, and a browser dropped without `quit` (as a failing test
/// unwinds) leaves neither chromedriver nor Chromium behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_harness_screenshots_at_1280x800_and_leaves_no_process_behind() {
    let page = support::http_server(support::Reply::Ok("<!doctype html><title>t</title><h1>gatherd</h1>"));
    let b = Browser::start().await;
    b.goto(&format!("http://{page}/")).await;
    assert_eq!(b.text("h1").await, "gatherd", "the served page");
    let png = b.client().screenshot().await.expect("a screenshot");
    assert_eq!(png_size(&png), (WIDTH, HEIGHT), "the screenshot's size");
    let (pgid, folder) = (b.pgid(), b.folder());
    assert!(!browser::leftovers(pgid, &folder).is_empty(), "the check sees no browser while it runs");
    drop(b);
    let gone = support::eventually(Duration::from_secs(10), || browser::leftovers(pgid, &folder).is_empty());
    assert!(gone, "a dropped browser left processes: {:#?}", browser::leftovers(pgid, &folder));
}

/// After the session cookie is gone, the pages refuse again.
async fn logged_out_pages_refuse_again(ui: &Ui) {
    let b = &ui.browser;
    b.client().delete_all_cookies().await.expect("delete cookies");
    let id = ui.only_run("steps.toml");
    b.goto(&ui.url(&format!("/ui/runs/{id}"))).await;
    assert!(b.all("#run-status").await.is_empty(), "a run page showed without a session, at {}", b.path().await);
    b.goto(&ui.url("/ui/")).await;
    assert!(b.all("table#jobs").await.is_empty(), "the jobs page showed without a session, at {}", b.path().await);
    // The same run, its stream and its step's output, asked for without a
    // session or token.
    for path in [format!("/ui/runs/{id}"), format!("/runs/{id}/events"), format!("/runs/{id}")] {
        let (status, body) = http(ui.tcp, "GET", &path, &[], "");
        assert!(!(200..300).contains(&status), "GET {path} without a session answered {status}:\n{body}");
        assert!(!body.contains("gate open"), "GET {path} without a session showed the run's output:\n{body}");
    }
}

/// The README's screenshots (copies of the ones `screenshots_at_1280x800`
/// takes) are there, 1280×800 PNGs, and small: under 200 KB each.
#[test]
fn the_readmes_screenshots_are_1280x800_pngs_under_200_kb() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).expect("README");
    for name in ["jobs.png", "run.png"] {
        let path = dir.join(name);
        check_png(&path);
        let size = std::fs::metadata(&path).expect("metadata").len();
        assert!(size < 200 * 1024, "{} is {size} bytes: keep it under 200 KB", path.display());
        assert!(readme.contains(&format!("(docs/screenshots/{name})")), "the README does not show {name}");
    }
}
