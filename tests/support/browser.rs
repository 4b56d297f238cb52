//! A real headless Chromium for the dashboard's end-to-end tests
//! (`tests/ui_browser.rs`): Debian's `chromium`, driven over WebDriver by
//! `chromedriver`, through fantoccini.
//!
//! - [`Browser::start`] starts `chromedriver --port=P` on 127.0.0.1 (a free
//!   port), in a process group of its own, waits until it answers, and opens
//!   one session: Chromium headless, with the flags `.ci/run` documents and a
//!   fresh profile (`--user-data-dir`, a temp folder) per browser.
//! - Chromium is chromedriver's child, in the same process group, so killing
//!   the group ends both. [`Browser::quit`] ends the session, then the group,
//!   and says which processes were left (none, or the test fails);
//!   dropping a browser (a test that panicked) kills the group too.
//! - [`Browser::screenshot`] saves the page as `target/ui-screenshots/NAME.png`;
//!   [`Browser::scenario`] saves `FAILED-NAME.png` there when a scenario panics,
//!   and names it in the failure message. `.ci/run` keeps that folder.
//!
//! Not in `support/mod.rs`: only the browser tests pull fantoccini in, so
//! every other test binary stays as small as it was. They include it with
//! `#[path = "support/browser.rs"] mod browser;`.
#![allow(dead_code)]

use std::future::Future;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt;
use serde_json::json;

/// Debian's Chromium (a wrapper script that execs the real binary, so its pid
/// and process group stay chromedriver's child's).
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's `chromium-driver`, the WebDriver server matching [`CHROMIUM`].
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The viewport the tests (and the README's screenshots) use.
pub const WIDTH: u32 = 1280;
/// See [`WIDTH`].
pub const HEIGHT: u32 = 800;
/// How long a page may take to show what a test waits for: generous, for a
/// loaded two-core CI box; a wait returns as soon as the condition holds.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Where screenshots go: `target/ui-screenshots/` (CI keeps it as an artifact).
pub fn screenshot_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is `<target>/tmp` for integration tests, so this
    // follows CARGO_TARGET_DIR wherever it points.
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("ui-screenshots")
}

/// Removes the `FAILED-*.png` an earlier run left in [`screenshot_dir`], so
/// the folder shows this run's failures only.
pub fn clear_failure_screenshots() {
    let Ok(entries) = std::fs::read_dir(screenshot_dir()) else { return };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with("FAILED-") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// One headless Chromium session over its own chromedriver.
pub struct Browser {
    /// The WebDriver session: `None` only before it is opened and after
    /// [`Browser::quit`] closed it.
    session: Option<Client>,
    driver: Option<Child>,
    /// chromedriver's process group (its pid): Chromium is in it too.
    pgid: i32,
    /// The profile (`--user-data-dir`) and chromedriver's log.
    dir: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile.
    /// A machine without them fails here, saying what to install: these
    /// tests are never skipped.
    pub async fn start() -> Browser {
        for program in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(program).exists(),
                "{program} is missing: the browser tests need Debian's `chromium` and `chromium-driver` \
                 (`apt-get install chromium chromium-driver`; .ci/run installs them)"
            );
        }
        let dir = tempfile::tempdir().expect("a temp folder for the browser profile");
        let profile = dir.path().join("profile");
        let log_path = dir.path().join("chromedriver.log");
        let log = std::fs::File::create(&log_path).expect("chromedriver's log file");
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            // Its own group, with Chromium in it: one killpg ends both.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("{CHROMEDRIVER} did not start: {e}"));
        let pgid = i32::try_from(driver.id()).expect("a pid fits in i32");
        let mut browser = Browser { session: None, driver: Some(driver), pgid, dir };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        browser.wait_listening(addr, &log_path).await;

        let args = [
            "--headless".to_string(),
            "--no-sandbox".to_string(),
            "--disable-gpu".to_string(),
            "--disable-background-networking".to_string(),
            "--no-first-run".to_string(),
            format!("--user-data-dir={}", profile.display()),
            format!("--window-size={WIDTH},{HEIGHT}"),
            // /dev/shm is small in containers; Chromium falls back to /tmp.
            "--disable-dev-shm-usage".to_string(),
        ];
        let capabilities = json!({
            "browserName": "chrome",
            // An alert a page opens stays open, so the test sees it
            // (`get_alert_text`) instead of chromedriver dismissing it.
            "unhandledPromptBehavior": "ignore",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
        });
        let capabilities = capabilities.as_object().cloned().expect("an object literal");
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://{addr}"))
            .await
            .unwrap_or_else(|e| {
                panic!("no Chromium session from chromedriver: {e}\nchromedriver's log:\n{}", read(&log_path))
            });
        browser.session = Some(client);
        browser.size_viewport().await;
        browser
    }

    /// Makes the viewport (what a screenshot shows) [`WIDTH`]×[`HEIGHT`]:
    /// `--window-size` sizes the window, and headless Chromium still keeps
    /// some of it for its (invisible) toolbar.
    async fn size_viewport(&self) {
        let inner = || async {
            let size = self.js("return [window.innerWidth, window.innerHeight]").await;
            let side = |i: usize| size[i].as_u64().unwrap_or_else(|| panic!("the viewport's size: {size}"));
            (side(0), side(1))
        };
        let (width, height) = inner().await;
        let (outer_w, outer_h) = self.client().get_window_size().await.expect("the window's size");
        let grow = |outer: u64, want: u32, have: u64| {
            u32::try_from(outer + u64::from(want)).expect("fits") - u32::try_from(have).expect("fits")
        };
        self.client()
            .set_window_size(grow(outer_w, WIDTH, width), grow(outer_h, HEIGHT, height))
            .await
            .expect("resize the window");
        let now = inner().await;
        assert_eq!(now, (u64::from(WIDTH), u64::from(HEIGHT)), "the viewport after resizing the window");
    }

    /// Waits (up to 20 s) until chromedriver accepts connections on `addr`;
    /// fails with its log if it exits or never listens.
    async fn wait_listening(&mut self, addr: SocketAddr, log: &Path) {
        let start = Instant::now();
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if let Some(status) = self.driver.as_mut().and_then(|d| d.try_wait().ok().flatten()) {
                panic!("chromedriver exited ({status}) before listening on {addr}:\n{}", read(log));
            }
            assert!(start.elapsed() < Duration::from_secs(20), "chromedriver never listened on {addr}:\n{}", read(log));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The WebDriver session.
    pub fn client(&self) -> &Client {
        self.session.as_ref().expect("the session is open between start and quit")
    }

    /// chromedriver's process group, which Chromium shares.
    pub fn pgid(&self) -> i32 {
        self.pgid
    }

    /// The folder holding this browser's profile (its command lines name it).
    pub fn folder(&self) -> String {
        self.dir.path().to_string_lossy().into_owned()
    }

    /// Ends the session (Chromium quits), then the process group, and returns
    /// the processes still alive after 10 s: in the group, or naming this
    /// browser's profile (a helper that left the group). Empty when all is well.
    pub async fn quit(mut self) -> Vec<String> {
        if let Some(client) = self.session.take() {
            let _ = client.close().await;
        }
        self.kill();
        let profile = self.folder();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = leftovers(self.pgid, &profile);
            if left.is_empty() || Instant::now() > deadline {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL to the group, then reaps chromedriver.
    fn kill(&mut self) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(self.pgid), nix::sys::signal::Signal::SIGKILL);
        if let Some(mut driver) = self.driver.take() {
            let _ = driver.wait();
        }
    }

    /// Saves what the page shows as `target/ui-screenshots/NAME.png` and
    /// returns the path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client().screenshot().await.unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, &png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// Runs one named scenario. If it panics, saves a screenshot
    /// (`FAILED-NAME.png`) and panics again with the scenario's name, the
    /// page's URL, the screenshot's path and the original message.
    pub async fn scenario<F, Fut>(&self, name: &str, f: F)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = ()>,
    {
        let Err(panic) = AssertUnwindSafe(f()).catch_unwind().await else { return };
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "(a panic without a message)".to_string());
        let url = self.client().current_url().await.map(|u| u.to_string()).unwrap_or_else(|e| format!("(no URL: {e})"));
        let shot = match AssertUnwindSafe(self.screenshot(&format!("FAILED-{name}"))).catch_unwind().await {
            Ok(path) => path.display().to_string(),
            Err(_) => "(no screenshot could be taken)".to_string(),
        };
        panic!("scenario `{name}` failed at {url} (screenshot: {shot}):\n{message}");
    }

    /// Opens `url` and returns once it has loaded.
    pub async fn goto(&self, url: &str) {
        self.client().goto(url).await.unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The path (and query) of the page shown.
    pub async fn path(&self) -> String {
        let url = self.client().current_url().await.expect("the current URL");
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        }
    }

    /// The one element matching `css`, waiting for it up to [`PATIENCE`].
    pub async fn find(&self, css: &str) -> Element {
        let found =
            self.client().wait().at_most(PATIENCE).every(Duration::from_millis(50)).for_element(Locator::Css(css));
        match found.await {
            Ok(element) => element,
            Err(e) => panic!("no `{css}` on {} after {PATIENCE:?}: {e}", self.path().await),
        }
    }

    /// Every element matching `css` now (no waiting; may be empty).
    pub async fn all(&self, css: &str) -> Vec<Element> {
        self.client().find_all(Locator::Css(css)).await.unwrap_or_else(|e| panic!("find `{css}`: {e}"))
    }

    /// The text of the element matching `css` (waiting for it to exist).
    pub async fn text(&self, css: &str) -> String {
        let element = self.find(css).await;
        element.text().await.unwrap_or_else(|e| panic!("the text of `{css}`: {e}"))
    }

    /// Attribute `name` of `element`, which must have it.
    pub async fn attr(element: &Element, name: &str) -> String {
        element
            .attr(name)
            .await
            .unwrap_or_else(|e| panic!("attribute {name}: {e}"))
            .unwrap_or_else(|| panic!("the element has no attribute {name}"))
    }

    /// Waits (up to `limit`) until the text of the element matching `css`
    /// is `expected`, without navigating: the page must change by itself.
    /// Returns how long it took; fails with the last text seen.
    pub async fn wait_text(&self, css: &str, expected: &str, limit: Duration) -> Duration {
        let start = Instant::now();
        let mut last = String::from("(no such element)");
        while start.elapsed() < limit {
            if let Ok(element) = self.client().find(Locator::Css(css)).await {
                // A stale element (the page replaced it) is read again.
                if let Ok(text) = element.text().await {
                    if text.trim() == expected {
                        return start.elapsed();
                    }
                    last = text;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("`{css}` on {} still says {last:?}, not {expected:?}, after {limit:?}", self.path().await)
    }

    /// Waits (up to [`PATIENCE`]) until the page's path is `path`, whatever
    /// its query (after a form's POST and its 303, say).
    pub async fn wait_path(&self, path: &str) {
        let start = Instant::now();
        loop {
            let now = self.path().await;
            if now.split('?').next() == Some(path) {
                return;
            }
            assert!(start.elapsed() < PATIENCE, "the browser is at {now}, not {path}, after {PATIENCE:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs `script` in the page (WebDriver's execute, which the page's
    /// Content-Security-Policy does not govern) and returns its result.
    pub async fn js(&self, script: &str) -> serde_json::Value {
        self.client().execute(script, vec![]).await.unwrap_or_else(|e| panic!("run {script:?} in the page: {e}"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port on 127.0.0.1 free a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    listener.local_addr().expect("local addr").port()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("(unreadable: {e})"))
}

/// Live processes in group `pgid`, or whose command line names `profile`:
/// `pid (comm) command line` each. Zombies are dead (PID 1 reaps them later).
pub fn leftovers(pgid: i32, profile: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut left = Vec::new();
    for entry in entries.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let Some((head, rest)) = stat.rsplit_once(')') else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() < 3 || fields[0] == "Z" {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if fields[2] == pgid.to_string() || cmdline.contains(profile) {
            left.push(format!("{head}) {}", cmdline.trim()));
        }
    }
    left
}
