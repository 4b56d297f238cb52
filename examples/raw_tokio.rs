//! The raw-tokio side of `benches/compare.py`: the same workloads with nothing
//! but tokio (JoinSet, spawn_blocking behind a Semaphore, tokio::process).
//! Prints nothing; exits 0 on success.
//!
//!     raw_tokio seq                 two 1 s sleeps, one after the other
//!     raw_tokio gather N MS         N tasks sleeping MS ms, joined
//!     raw_tokio as_completed FILE   one task per line of FILE (ms), taken as they finish
//!     raw_tokio pool B POOL MS A    B blocking sleeps of MS ms behind Semaphore(POOL),
//!                                   beside A async sleeps of MS ms
//!     raw_tokio exec N LIMIT        N × `true`, at most LIMIT at once

// A benchmark tool run by compare.py: its usage and timings go to stderr.
#![allow(clippy::print_stderr)]

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> T {
    args.get(i).and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        eprintln!("raw_tokio: bad or missing argument {i}");
        std::process::exit(2)
    })
}

async fn drain(mut set: JoinSet<bool>) -> bool {
    let mut ok = true;
    while let Some(r) = set.join_next().await {
        ok &= matches!(r, Ok(true));
    }
    ok
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let ok = match args.get(1).map(String::as_str) {
        Some("seq") => {
            tokio::time::sleep(Duration::from_secs(1)).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            true
        }
        Some("gather") => {
            let n: usize = arg(&args, 2);
            let ms: u64 = arg(&args, 3);
            let mut set = JoinSet::new();
            for _ in 0..n {
                set.spawn(async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    true
                });
            }
            drain(set).await
        }
        Some("as_completed") => {
            let path: String = arg(&args, 2);
            let text = std::fs::read_to_string(path).expect("read the sleeps file");
            let mut set = JoinSet::new();
            for ms in text.split_whitespace().map(|s| s.parse::<u64>().expect("ms")) {
                set.spawn(async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    true
                });
            }
            drain(set).await // join_next hands them on in the order they finish
        }
        Some("pool") => {
            let blocking: usize = arg(&args, 2);
            let pool: usize = arg(&args, 3);
            let ms: u64 = arg(&args, 4);
            let asyncs: usize = arg(&args, 5);
            let sem = Arc::new(Semaphore::new(pool));
            let mut set = JoinSet::new();
            for _ in 0..blocking {
                let sem = sem.clone();
                set.spawn(async move {
                    let _permit = sem.acquire_owned().await.expect("semaphore");
                    tokio::task::spawn_blocking(move || std::thread::sleep(Duration::from_millis(ms))).await.is_ok()
                });
            }
            // When the last async sleep ended, from the start: the pool must
            // not delay them (printed for benches/compare.py).
            let start = std::time::Instant::now();
            let async_done = Arc::new(std::sync::atomic::AtomicU64::new(0));
            for _ in 0..asyncs {
                let async_done = async_done.clone();
                set.spawn(async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    let us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
                    async_done.fetch_max(us, std::sync::atomic::Ordering::Relaxed);
                    true
                });
            }
            let code = drain(set).await;
            eprintln!("ASYNC_DONE_MS {:.1}", async_done.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1000.0);
            code
        }
        Some("exec") => {
            let n: usize = arg(&args, 2);
            let limit: usize = arg(&args, 3);
            let sem = Arc::new(Semaphore::new(limit));
            let mut set = JoinSet::new();
            for _ in 0..n {
                let sem = sem.clone();
                set.spawn(async move {
                    let _permit = sem.acquire_owned().await.expect("semaphore");
                    matches!(tokio::process::Command::new("true").status().await, Ok(s) if s.success())
                });
            }
            drain(set).await
        }
        _ => {
            eprintln!("usage: raw_tokio seq | gather N MS | as_completed FILE | pool B POOL MS A | exec N LIMIT");
            std::process::exit(2)
        }
    };
    std::process::exit(if ok { 0 } else { 1 })
}
