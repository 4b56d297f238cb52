//! `read_file` and `write_file`: the aiofiles of gatherd.
//!
//! The file work itself is ordinary `std::fs`, done off the async threads: on
//! tokio's blocking threads by default (what `tokio::fs` and aiofiles do), or
//! with `blocking = true` on the run's bounded [`crate::exec::BlockingPool`].
//!
//! A write is atomic: the text goes to a temp file in the same folder
//! (`.NAME.gatherd-tmp-PID-N`), is flushed to disk, then renamed over the
//! target, so a reader (or the daemon's folder watcher) sees the old file or
//! the new one, never half of it.
//!
//! Architecture Invariant: a write never leaves its temp file behind — not on
//! error, not on cancel. A cancel that arrives before the rename leaves the
//! target untouched.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio_util::sync::CancellationToken;

use super::capture::{Head, os_error};
use super::{StepEnv, StepError, StepOutput};
use crate::exec::pool::PoolError;
use crate::job::{ReadFileStep, WriteFileStep};

/// Runs one attempt of a `read_file` step.
pub(super) async fn read(
    step: &ReadFileStep,
    blocking: bool,
    env: &StepEnv<'_>,
    cancel: &CancellationToken,
) -> Result<StepOutput, StepError> {
    super::identity::refuse_file_step("read_file", env.job)?;
    let path = env.resolve(&env.render("path", &step.path, cancel).await?);
    let limit = env.ctx.limits.output_bytes;
    // A read has no effect to undo: on cancel the attempt returns at once and
    // the thread finishes its read in the background.
    let work = move || read_bounded(&path, limit);
    off_thread(work, blocking, env, cancel, None).await
}

/// Runs one attempt of a `write_file` step. Its output is the path as given
/// (after rendering), not the resolved one.
pub(super) async fn write(
    step: &WriteFileStep,
    blocking: bool,
    env: &StepEnv<'_>,
    cancel: &CancellationToken,
) -> Result<StepOutput, StepError> {
    super::identity::refuse_file_step("write_file", env.job)?;
    let given = env.render("path", &step.path, cancel).await?;
    let content = env.render("content", &step.content, cancel).await?;
    let path = env.resolve(&given);
    let stop = Arc::new(AtomicBool::new(false));
    let work = {
        let stop = Arc::clone(&stop);
        move || {
            write_atomic(&path, content.as_bytes(), &stop)?;
            Ok(StepOutput::whole(given))
        }
    };
    off_thread(work, blocking, env, cancel, Some(stop)).await
}

/// Runs `work` on tokio's blocking threads or, when `blocking`, on the run's
/// pool. On cancel: without `stop`, returns at once; with `stop`, raises it and
/// waits for `work` to clean up (a write's temp file) before returning.
async fn off_thread<F>(
    work: F,
    blocking: bool,
    env: &StepEnv<'_>,
    cancel: &CancellationToken,
    stop: Option<Arc<AtomicBool>>,
) -> Result<StepOutput, StepError>
where
    F: FnOnce() -> Result<StepOutput, StepError> + Send + 'static,
{
    let mut handle = if blocking {
        let permit = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(StepError::Cancelled),
            permit = env.ctx.pool.acquire() => permit,
        };
        permit.spawn(work)
    } else {
        tokio::task::spawn_blocking(work)
    };
    let joined = tokio::select! {
        biased;
        _ = cancel.cancelled() => {
            if let Some(stop) = stop {
                stop.store(true, Ordering::SeqCst);
                let _ = (&mut handle).await;
            }
            return Err(StepError::Cancelled);
        }
        joined = &mut handle => joined.map_err(PoolError::from),
    };
    joined.map_err(|e| StepError::Failed(e.to_string()))?
}

/// The file's text (lossy UTF-8), at most `limit` bytes of it.
fn read_bounded(path: &Path, limit: usize) -> Result<StepOutput, StepError> {
    let fail = |e: io::Error| StepError::Failed(format!("cannot read `{}`: {}", path.display(), os_error(&e)));
    let mut file = File::open(path).map_err(fail)?;
    if file.metadata().map_err(fail)?.is_dir() {
        return Err(StepError::Failed(format!("cannot read `{}`: it is a folder", path.display())));
    }
    let mut head = Head::new(limit);
    let mut buf = vec![0u8; 64 * 1024];
    // Read one byte past the bound at most, enough to know it was cut.
    while !head.full() || !head.truncated() {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.push(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(fail(e)),
        }
    }
    let (text, truncated) = head.into_text();
    Ok(StepOutput { value: text.into(), truncated })
}

/// Makes temp-file names unique within this process.
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Writes `content` to `path` through a temp file and a rename; stops (and
/// cleans up) before the rename when `stop` is raised.
fn write_atomic(path: &Path, content: &[u8], stop: &AtomicBool) -> Result<(), StepError> {
    let fail = |what: String| StepError::Failed(format!("cannot write `{}`: {what}", path.display()));
    let Some(name) = path.file_name() else {
        return Err(fail("the path names no file".into()));
    };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match fs::metadata(parent) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(fail(format!("`{}` is not a folder", parent.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(fail(format!("the folder `{}` does not exist", parent.display())));
        }
        Err(e) => return Err(fail(format!("`{}`: {}", parent.display(), os_error(&e)))),
    }
    let temp = parent.join(format!(
        ".{}.gatherd-tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        TEMP_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .map_err(|e| fail(format!("creating `{}`: {}", temp.display(), os_error(&e))))?;
    let guard = TempGuard(Some(temp));
    // Keep the target's permissions when replacing it.
    if let Ok(m) = fs::metadata(path) {
        let _ = file.set_permissions(m.permissions());
    }
    file.write_all(content).and_then(|()| file.sync_all()).map_err(|e| fail(os_error(&e)))?;
    drop(file);
    if stop.load(Ordering::SeqCst) {
        return Err(StepError::Cancelled);
    }
    let temp = guard.path();
    fs::rename(temp, path).map_err(|e| fail(os_error(&e)))?;
    guard.disarm();
    Ok(())
}

/// Removes the temp file unless the rename consumed it.
struct TempGuard(Option<PathBuf>);

impl TempGuard {
    fn path(&self) -> &Path {
        self.0.as_deref().expect("the guard holds its path until disarmed")
    }

    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::atomic::AtomicBool;

    use tokio_util::sync::CancellationToken;

    use super::write_atomic;
    use crate::exec::step::testing::{attempt, attempt_with, limits, step};
    use crate::exec::step::{StepError, StepOutput};
    use crate::exec::{BlockingPool, Limits};
    use crate::job::{ReadFileStep, StepKind, Template, WriteFileStep};

    fn t(s: &str) -> Template {
        Template::parse(s).unwrap()
    }

    fn read(path: &str) -> StepKind {
        StepKind::ReadFile(ReadFileStep { path: t(path) })
    }

    fn write(path: &str, content: &str) -> StepKind {
        StepKind::WriteFile(Box::new(WriteFileStep { path: t(path), content: t(content) }))
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn write_then_read_round_trips_relative_to_the_jobs_folder() {
        for blocking in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let out = attempt(write("out.txt", "got {{ input }}"), blocking, dir.path()).await;
            assert_eq!(out, Ok(StepOutput::whole("out.txt")));
            assert_eq!(std::fs::read_to_string(dir.path().join("out.txt")).unwrap(), "got IN");
            let out = attempt(read("out.txt"), blocking, dir.path()).await;
            assert_eq!(out, Ok(StepOutput::whole("got IN")));
            assert_eq!(entries(dir.path()), ["out.txt"], "no temp file left");
        }
    }

    #[tokio::test]
    async fn absolute_paths_are_used_as_given() {
        let dir = tempfile::tempdir().unwrap();
        let abs = dir.path().join("abs.txt");
        let abs = abs.to_str().unwrap();
        let out = attempt(write(abs, "x"), false, Path::new("/nonexistent")).await;
        assert_eq!(out, Ok(StepOutput::whole(abs)));
        let out = attempt(read(abs), false, Path::new("/nonexistent")).await;
        assert_eq!(out, Ok(StepOutput::whole("x")));
    }

    #[tokio::test]
    async fn write_replaces_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), "old old old").unwrap();
        attempt(write("f", "new"), true, dir.path()).await.unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("f")).unwrap(), "new");
        assert_eq!(entries(dir.path()), ["f"]);
    }

    #[tokio::test]
    async fn missing_file_error_names_the_resolved_path() {
        for blocking in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let r = attempt(read("missing.txt"), blocking, dir.path()).await;
            let want = format!("cannot read `{}`: No such file or directory", dir.path().join("missing.txt").display());
            assert_eq!(r, Err(StepError::Failed(want)));
        }
    }

    #[tokio::test]
    async fn write_into_a_missing_folder_fails_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let r = attempt(write("no/such/f.txt", "x"), false, dir.path()).await;
        let want = format!(
            "cannot write `{}`: the folder `{}` does not exist",
            dir.path().join("no/such/f.txt").display(),
            dir.path().join("no/such").display()
        );
        assert_eq!(r, Err(StepError::Failed(want)));
        assert!(entries(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn failed_rename_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        // Renaming a file over a non-empty folder fails after the temp exists.
        std::fs::create_dir(dir.path().join("target")).unwrap();
        std::fs::write(dir.path().join("target/keep"), "").unwrap();
        let r = attempt(write("target", "x"), false, dir.path()).await;
        assert!(matches!(r, Err(StepError::Failed(ref m)) if m.starts_with("cannot write")), "{r:?}");
        assert_eq!(entries(dir.path()), ["target"]);
    }

    #[test]
    fn a_write_stopped_before_the_rename_leaves_the_target_alone() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, "old").unwrap();
        let r = write_atomic(&f, b"new", &AtomicBool::new(true));
        assert_eq!(r, Err(StepError::Cancelled));
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "old");
        assert_eq!(entries(dir.path()), ["f"]);
    }

    #[tokio::test]
    async fn reads_past_the_bound_are_truncated() {
        for blocking in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("big"), "x".repeat(200_000)).unwrap();
            std::fs::write(dir.path().join("exact"), "12345").unwrap();
            let limits = Limits { output_bytes: 5, ..limits() };
            let cancel = CancellationToken::new();
            let pool = BlockingPool::new(1);
            let s = step(read("big"), blocking);
            let out = attempt_with(&s, dir.path(), pool.clone(), limits.clone(), &cancel).await.unwrap();
            assert_eq!(out.value, "xxxxx");
            assert!(out.truncated);
            let s = step(read("exact"), blocking);
            let out = attempt_with(&s, dir.path(), pool, limits, &cancel).await;
            assert_eq!(out, Ok(StepOutput::whole("12345")));
        }
    }

    #[tokio::test]
    async fn invalid_utf8_is_read_lossily() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bin"), b"a\xffb").unwrap();
        let out = attempt(read("bin"), false, dir.path()).await;
        assert_eq!(out, Ok(StepOutput::whole("a\u{fffd}b")));
    }

    #[tokio::test]
    async fn a_cancelled_read_returns_cancelled() {
        let dir = tempfile::tempdir().unwrap();
        let cancel = CancellationToken::new();
        cancel.cancel();
        let s = step(read("whatever"), true);
        let r = attempt_with(&s, dir.path(), BlockingPool::new(1), limits(), &cancel).await;
        assert_eq!(r, Err(StepError::Cancelled));
    }
}
