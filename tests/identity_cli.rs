//! Per-job identity end to end: `user` / `user_group` under `gatherd run` and
//! the daemon, and cron's rule for the files a root gatherd runs.
//!
//! Switching users needs root (CI runs as root): each test that needs it
//! says so on stderr and passes without asserting anything when not root.
// A skipped test says so on stderr.
#![allow(clippy::print_stderr)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::*;

const LONG: Duration = Duration::from_secs(20);

/// `nobody`'s uid, gid, home, and whether the test can switch to it;
/// `None` (said aloud) when not root or the host has no `nobody`.
fn nobody() -> Option<(u32, u32, String)> {
    if !is_root() {
        eprintln!("SKIPPED: switching users needs root, and this test runs as uid {}", nix::unistd::geteuid());
        return None;
    }
    match nix::unistd::User::from_name("nobody") {
        Ok(Some(u)) => Some((u.uid.as_raw(), u.gid.as_raw(), u.dir.display().to_string())),
        _ => {
            eprintln!("SKIPPED: this host has no user `nobody`");
            None
        }
    }
}

/// A job that reports who its processes are, as `user = "nobody"`.
const WHOAMI: &str = r#"
user = "nobody"

[[step]]
name = "uid"
exec = ["id", "-u"]

[[step]]
name = "gid"
exec = ["id", "-g"]

[[step]]
name = "groups"
exec = ["id", "-G"]

[[step]]
name = "env"
shell = "echo $HOME $USER $LOGNAME"

[[step]]
name = "own_home"
exec = { argv = ["sh", "-c", "echo $HOME"], env = { HOME = "/elsewhere" } }

[[step]]
name = "pooled"
exec = ["id", "-u"]
blocking = true
"#;

/// The outputs of [`WHOAMI`]'s steps, by name.
fn whoami_outputs(doc: &Value) -> Vec<String> {
    ["uid", "gid", "groups", "env", "own_home", "pooled"]
        .iter()
        .map(|name| step(doc, &format!("main/{name}"))["output"].as_str().unwrap_or("<none>").to_string())
        .collect()
}

/// What [`WHOAMI`] prints when it runs as `nobody`.
fn as_nobody(uid: u32, gid: u32, home: &str) -> Vec<String> {
    let groups = nix::unistd::getgrouplist(c"nobody", nix::unistd::Gid::from_raw(gid)).expect("nobody's groups");
    let groups: Vec<String> = groups.iter().map(|g| g.as_raw().to_string()).collect();
    vec![
        uid.to_string(),
        gid.to_string(),
        groups.join(" "),
        format!("{home} nobody nobody"),
        "/elsewhere".to_string(),
        uid.to_string(),
    ]
}

#[test]
fn gatherd_run_runs_every_process_step_as_the_jobs_user() {
    let Some((uid, gid, home)) = nobody() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let file = write(dir.path(), "whoami.toml", WHOAMI);
    let (code, doc, out) = run_json(&file);
    assert_eq!(code, 0, "{doc:#}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(whoami_outputs(&doc), as_nobody(uid, gid, &home), "{doc:#}");
}

#[test]
fn user_group_sets_the_gid_and_joins_the_supplementary_groups() {
    let Some((uid, _, _)) = nobody() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let job = "user = \"nobody\"\nuser_group = \"root\"\n[[step]]\nname = \"ids\"\nshell = \"id -u; id -g; id -G\"\n";
    let (code, doc, _) = run_json(&write(dir.path(), "g.toml", job));
    assert_eq!(code, 0, "{doc:#}");
    let output = step(&doc, "main/ids")["output"].as_str().unwrap_or_default().to_string();
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(lines[..2], [uid.to_string().as_str(), "0"], "{output}");
    let groups: Vec<&str> = lines[2].split(' ').collect();
    assert!(groups.contains(&"0") && groups.len() >= 2, "{output}");
}

#[test]
fn a_rhai_job_with_a_user_runs_its_processes_as_it_and_refuses_file_steps() {
    let Some((uid, _, _)) = nobody() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let job = "const user = \"nobody\";\nlet id = await_step(exec([\"id\", \"-u\"]));\n\
               let r = \"read\";\ntry { await_step(read_file(\"x.txt\")); } catch (e) { r = `${id} ${e}`; }\nr\n";
    let (code, doc, _) = run_json(&write(dir.path(), "r.rhai", job));
    assert_eq!(code, 0, "{doc:#}");
    let result = doc["result"].as_str().unwrap_or_default();
    assert!(result.starts_with(&format!("{uid} ")), "{doc:#}");
    assert!(result.contains("`read_file` is refused in a job with `user = \"nobody\"`"), "{doc:#}");
}

#[test]
fn the_daemon_runs_every_process_step_as_the_jobs_user() {
    let Some((uid, gid, home)) = nobody() else { return };
    let d = Daemon::start(&[("whoami.toml", WHOAMI)], &[], &[]);
    assert!(d.wait_for(LONG, |l| finished(l, "whoami.toml", "succeeded")), "{}", d.dump());
    let run_id = d
        .lines()
        .iter()
        .find(|l| finished(l, "whoami.toml", "succeeded"))
        .and_then(|l| l["run_id"].as_i64())
        .expect("a run id");
    let (status, body) = http(d.api(), "GET", &format!("/runs/{run_id}"), &[], "");
    assert_eq!(status, 200, "{body}");
    let doc: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(whoami_outputs(&doc), as_nobody(uid, gid, &home), "{doc:#}");
}

/// `gatherd run` on `file`: its exit code and stderr.
fn run_stderr(file: &Path) -> (Option<i32>, String) {
    let out = gatherd().arg("run").arg(file).output().expect("gatherd runs");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn as_root_a_group_writable_job_file_or_one_of_another_user_is_refused_with_the_reason() {
    let Some((uid, gid, _)) = nobody() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let plain = "[[step]]\nname = \"a\"\nexec = [\"true\"]\n";

    let writable = write(dir.path(), "writable.toml", plain);
    std::fs::set_permissions(&writable, std::fs::Permissions::from_mode(0o664)).expect("chmod");
    let (code, stderr) = run_stderr(&writable);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("the file is group-writable (mode 0664), and gatherd"), "{stderr}");

    let theirs = write(dir.path(), "theirs.toml", plain);
    nix::unistd::chown(&theirs, Some(nix::unistd::Uid::from_raw(uid)), Some(nix::unistd::Gid::from_raw(gid)))
        .expect("chown");
    let (code, stderr) = run_stderr(&theirs);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains(&format!("the file belongs to uid {uid}, and gatherd")), "{stderr}");

    // Owned by the job's own user: accepted.
    let own = write(dir.path(), "own.toml", &format!("user = \"nobody\"\n{plain}"));
    nix::unistd::chown(&own, Some(nix::unistd::Uid::from_raw(uid)), None).expect("chown");
    let (code, stderr) = run_stderr(&own);
    assert_eq!(code, Some(0), "{stderr}");

    // The daemon refuses it too, and counts it as an invalid job file.
    let d = Daemon::start(&[], &[], &[]);
    let path = d.jobs.path().join(".writable.toml.tmp");
    std::fs::write(&path, plain).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    std::fs::rename(&path, d.jobs.path().join("writable.toml")).expect("rename");
    assert!(
        d.wait_for(LONG, |l| l["job"] == "writable.toml"
            && l["message"] == "invalid job file"
            && l["diagnostic"].as_str().is_some_and(|m| m.contains("group- and world-writable (mode 0666)"))),
        "{}",
        d.dump()
    );
    let (_, metrics) = http(d.api(), "GET", "/metrics", &[], "");
    assert!(metrics.contains("gatherd_invalid_job_files 1\n"), "{metrics}");
    assert_eq!(d.count(|l| is(l, "writable.toml", "run started")), 0, "{}", d.dump());
    // Fixed (same content, only the mode): taken at the next rescan.
    std::fs::set_permissions(d.jobs.path().join("writable.toml"), std::fs::Permissions::from_mode(0o644))
        .expect("chmod");
    d.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(d.wait_for(LONG, |l| finished(l, "writable.toml", "succeeded")), "{}", d.dump());
}

#[test]
fn an_unknown_user_is_a_diagnostic_at_its_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file =
        write(dir.path(), "u.toml", "\nuser = \"no-such-user-gatherd\"\n[[step]]\nname = \"a\"\nexec = [\"true\"]\n");
    let (code, stderr) = run_stderr(&file);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("no user `no-such-user-gatherd` on this system") && stderr.contains("u.toml:2:8"),
        "{stderr}"
    );
    let out = gatherd().arg("check").arg(&file).output().expect("gatherd check");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn a_gatherd_that_is_not_root_refuses_another_user_at_its_key_and_takes_its_own() {
    let Some((uid, gid, _)) = nobody() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let file = write(dir.path(), "as-root.toml", "user = \"root\"\n[[step]]\nname = \"a\"\nexec = [\"true\"]\n");
    // `gatherd run` started as nobody: the same binary, not root.
    use std::os::unix::process::CommandExt;
    let out = gatherd().uid(uid).gid(gid).arg("run").arg(&file).output().expect("gatherd runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("`user = \"root\"` needs gatherd to run as root; it runs as uid {uid}"))
            && stderr.contains("as-root.toml:1:1"),
        "{stderr}"
    );
    // Its own user is no switch: allowed, and the environment is the user's.
    let own =
        write(dir.path(), "own.toml", "user = \"nobody\"\n[[step]]\nname = \"a\"\nshell = \"id -u; echo $USER\"\n");
    let out = gatherd().uid(uid).gid(gid).arg("run").arg(&own).arg("--json").output().expect("gatherd runs");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(step(&doc, "main/a")["output"], format!("{uid}\nnobody"), "{doc:#}");
}

#[test]
fn as_root_a_writable_script_file_is_refused_like_the_job_file() {
    if nobody().is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let script = write(dir.path(), "s.rhai", "40 + 2\n");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let job = write(dir.path(), "j.toml", "[[step]]\nname = \"s\"\nscript_file = \"s.rhai\"\n");
    let (code, stderr) = run_stderr(&job);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("the script file \"s.rhai\" is refused: the file is group- and world-writable"),
        "{stderr}"
    );
    // `check` only checks what the file says.
    let out = gatherd().arg("check").arg(&job).output().expect("gatherd check");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (code, stderr) = run_stderr(&job);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn as_root_a_job_file_not_owned_by_root_may_not_set_a_group_its_user_is_not_in() {
    let Some((uid, _, _)) = nobody() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let job = "user = \"nobody\"\nuser_group = \"root\"\n[[step]]\nname = \"ids\"\nshell = \"id -g\"\n";
    let chown = |path: &Path, owner: u32| {
        nix::unistd::chown(path, Some(nix::unistd::Uid::from_raw(owner)), None).expect("chown");
    };
    // nobody may write a job that runs as nobody, but not one with root's group.
    let theirs = write(dir.path(), "theirs.toml", job);
    chown(&theirs, uid);
    let (code, stderr) = run_stderr(&theirs);
    assert_eq!(code, Some(2), "{stderr}");
    // The message is wrapped to the terminal's width.
    let flat = stderr.replace("\n  │ ", " ");
    assert!(
        flat.contains("`user_group = \"root\"` is refused: `nobody` is not a member of group `root`")
            && flat.contains(&format!("the file belongs to uid {uid}, not root"))
            && stderr.contains("theirs.toml:2:1"),
        "{stderr}"
    );
    // The daemon refuses it the same way, at the key.
    let jobs = tempfile::tempdir().expect("jobs dir");
    chown(&write(jobs.path(), "theirs.toml", job), uid);
    // A file of nobody's with no `user` at all would run as root: refused.
    chown(&write(jobs.path(), "rootless.toml", "[[step]]\nname = \"a\"\nexec = [\"true\"]\n"), uid);
    let d = Daemon::start_in(jobs, &[], &[]);
    let refused = |job: &'static str, why: &'static str| {
        move |l: &Value| {
            l["job"] == job
                && l["message"] == "invalid job file"
                && l["diagnostic"].as_str().is_some_and(|m| m.contains(why))
        }
    };
    assert!(d.wait_for(LONG, refused("theirs.toml", "is not a member of group `root`")), "{}", d.dump());
    assert!(
        d.wait_for(LONG, refused("rootless.toml", "must belong to root, since its commands run as root")),
        "{}",
        d.dump()
    );
    d.barrier();
    let ours = |l: &Value| l["job"] == "theirs.toml" || l["job"] == "rootless.toml";
    assert_eq!(d.count(|l| ours(l) && l["message"] == "run started"), 0, "{}", d.dump());
    // The same file owned by root: root chose the group, so it runs.
    chown(&theirs, 0);
    let (code, doc, out) = run_json(&theirs);
    assert_eq!(code, 0, "{doc:#}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(step(&doc, "main/ids")["output"], "0", "{doc:#}");
}
