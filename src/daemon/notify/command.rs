//! A `command = ["argv", ...]` target: the program runs once per attempt,
//! with the notification as JSON on its stdin and as `GATHERD_*`
//! variables, bounded by the target's `timeout` and then killed as a step
//! is: SIGTERM to its process group, a grace, SIGKILL.

use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Notice;

/// How long a timed-out command has between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(2);

/// How much of the command's stderr an error keeps (its end).
const STDERR_KEPT: usize = 2048;

/// The `GATHERD_*` variables of `notice`.
pub fn variables(notice: &Notice) -> Vec<(&'static str, String)> {
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    vec![
        ("GATHERD_EVENT", notice.event.as_str().to_string()),
        ("GATHERD_JOB", notice.job.clone()),
        ("GATHERD_RUN_ID", notice.run_id.map(|id| id.to_string()).unwrap_or_default()),
        ("GATHERD_STATUS", opt(&notice.status)),
        ("GATHERD_ERROR", opt(&notice.error)),
        ("GATHERD_FAILURES", notice.failures.to_string()),
        ("GATHERD_RUN_URL", opt(&notice.run_url)),
        ("GATHERD_MESSAGE", notice.message.clone()),
        ("GATHERD_TARGET", notice.target.clone()),
    ]
}

/// Kills a command's process group when dropped (the delivery given up at
/// shutdown, say), unless disarmed: `kill_on_drop` reaches the leader only.
struct GroupGuard(Option<Pid>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

/// Runs `argv` once for `notice`, with `base` as its environment (the
/// config's minimal set and `pass_env`, as a step gets; never gatherd's own)
/// and the `GATHERD_*` variables; `Ok` if it exits 0 within `timeout`.
pub async fn run(argv: &[String], notice: &Notice, timeout: Duration, base: &[(String, String)]) -> Result<(), String> {
    let Some((program, args)) = argv.split_first() else { return Err("the command is empty".into()) };
    let json = serde_json::to_vec(notice).map_err(|e| e.to_string())?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env_clear()
        .envs(base.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .envs(variables(notice))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {program:?}: {e}"))?;
    let pgid = child.id().and_then(|id| i32::try_from(id).ok()).filter(|id| *id > 1).map(Pid::from_raw);
    let _guard = GroupGuard(pgid);
    let mut stdin = child.stdin.take();
    let mut stderr = child.stderr.take();
    let work = async {
        if let Some(stdin) = stdin.as_mut() {
            // A command that does not read its stdin is fine.
            let _ = stdin.write_all(&json).await;
        }
        drop(stdin.take());
        // Only the end is kept: a command spewing stderr costs no memory.
        let mut err = Vec::new();
        if let Some(stderr) = stderr.as_mut() {
            let mut buf = [0u8; 8192];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                err.extend_from_slice(&buf[..n]);
                if err.len() > 2 * STDERR_KEPT {
                    err.drain(..err.len() - STDERR_KEPT);
                }
            }
        }
        (child.wait().await, err)
    };
    let (status, err) = match tokio::time::timeout(timeout, work).await {
        Ok(done) => done,
        Err(_) => {
            if let Some(pgid) = pgid {
                let _ = killpg(pgid, Signal::SIGTERM);
                if tokio::time::timeout(GRACE, child.wait()).await.is_err() {
                    let _ = killpg(pgid, Signal::SIGKILL);
                    let _ = child.wait().await;
                }
            }
            return Err(format!("{program:?} did not finish within {}; killed", humantime::format_duration(timeout)));
        }
    };
    // What the command left running in its group goes with it.
    if let Some(pgid) = pgid {
        let _ = killpg(pgid, Signal::SIGKILL);
    }
    let status = status.map_err(|e| format!("cannot wait for {program:?}: {e}"))?;
    if status.success() {
        return Ok(());
    }
    let tail = String::from_utf8_lossy(&err[err.len().saturating_sub(STDERR_KEPT)..]).trim().to_string();
    let why = if tail.is_empty() { String::new() } else { format!(": {tail}") };
    Err(format!("{program:?} exited with {status}{why}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::NotifyEvent;

    fn notice() -> Notice {
        Notice {
            event: NotifyEvent::Failure,
            job: "backup.toml".into(),
            run_id: Some(7),
            status: Some("failed".into()),
            error: Some("exit status 1".into()),
            failures: 2,
            run_url: Some("/runs/7".into()),
            at: chrono::Utc::now(),
            message: "backup.toml failed".into(),
            target: "script".into(),
        }
    }

    fn path() -> Vec<(String, String)> {
        vec![("PATH".to_string(), crate::exec::DEFAULT_PATH.to_string())]
    }

    /// A command target gets the base environment and its `GATHERD_*`
    /// variables, never gatherd's own; a stderr flood keeps only its end.
    #[tokio::test]
    async fn the_command_gets_no_variable_of_gatherds_own_and_a_bounded_stderr() {
        let dir = tempfile::tempdir().expect("temp");
        let out = dir.path().join("env");
        // HOME is in every test process's environment, never in `path()`.
        assert!(std::env::var_os("HOME").is_some(), "the test needs a variable of its own");
        let script = format!("env > {}; head -c 50000000 /dev/zero | tr '\\0' x >&2; exit 1", out.display());
        let err = run(&sh(&script), &notice(), Duration::from_secs(30), &path()).await.expect_err("exit 1");
        let env = std::fs::read_to_string(&out).expect("env");
        let names: Vec<&str> = env.lines().filter_map(|l| l.split_once('=').map(|(k, _)| k)).collect();
        assert!(!names.contains(&"HOME"), "gatherd's own environment leaked: {names:?}");
        assert!(names.contains(&"PATH") && names.contains(&"GATHERD_EVENT"), "{names:?}");
        assert!(err.len() < 3 * STDERR_KEPT, "the error keeps only the end of stderr: {} bytes", err.len());
    }

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    #[tokio::test]
    async fn the_command_gets_the_notice_as_json_on_stdin_and_as_variables() {
        let dir = tempfile::tempdir().expect("temp");
        let out = dir.path().join("out");
        let script = format!(
            "cat > {0}.json; echo \"$GATHERD_EVENT $GATHERD_JOB $GATHERD_RUN_ID $GATHERD_FAILURES\" > {0}",
            out.display()
        );
        run(&sh(&script), &notice(), Duration::from_secs(10), &path()).await.expect("ran");
        assert_eq!(std::fs::read_to_string(&out).expect("vars"), "failure backup.toml 7 2\n");
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("out.json")).expect("stdin")).expect("json");
        assert_eq!((json["event"].as_str(), json["run_id"].as_i64()), (Some("failure"), Some(7)));
    }

    #[tokio::test]
    async fn a_failing_command_says_its_status_and_stderr_and_a_slow_one_is_killed() {
        let err =
            run(&sh("echo nope >&2; exit 3"), &notice(), Duration::from_secs(10), &path()).await.expect_err("fails");
        assert!(err.contains("exit status: 3") && err.contains("nope"), "{err}");
        let started = std::time::Instant::now();
        let err =
            run(&sh("trap '' TERM; sleep 30"), &notice(), Duration::from_millis(200), &path()).await.expect_err("slow");
        assert!(err.contains("did not finish within 200ms; killed"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10), "killed after the grace, not waited for");
    }
}
