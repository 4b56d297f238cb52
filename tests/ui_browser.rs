//! The dashboard (issue 17) in a real headless Chromium (tests/support/browser.rs).
//! For now the harness's own test: the scenarios against the dashboard's
//! pages come with them.

#[path = "support/browser.rs"]
mod browser;
mod support;

use std::time::Duration;

use browser::{Browser, HEIGHT, WIDTH};

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
