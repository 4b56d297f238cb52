//! The loader's behaviour, as specs: what each job file means, and what each
//! mistake in one looks like (snapshots of the rendered diagnostics).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::job::{CatchUp, GroupMode, Node, OnError, Overlap, StepKind, Trigger};

const FILE: &str = "jobs/test.toml";

fn load(src: &str) -> Job {
    match load_str(Path::new(FILE), src) {
        Ok(job) => job,
        Err(e) => panic!("expected the job to load, got:\n{}", e.render(false)),
    }
}

fn error(src: &str) -> LoadError {
    match load_str(Path::new(FILE), src) {
        Ok(job) => panic!("expected an error, got {job:#?}"),
        Err(e) => e,
    }
}

/// The rendering of the only diagnostic.
fn render(src: &str) -> String {
    let e = error(src);
    assert_eq!(e.diagnostics().len(), 1, "expected one diagnostic, got:\n{e}");
    e.diagnostics()[0].render(false)
}

fn group(node: &Node) -> &crate::job::Group {
    match node {
        Node::Group(g) => g,
        other => panic!("expected a group, got {}", other.name()),
    }
}

fn step(node: &Node) -> &crate::job::Step {
    match node {
        Node::Step(s) => s,
        other => panic!("expected a step, got {}", other.name()),
    }
}

fn names(g: &crate::job::Group) -> Vec<&str> {
    g.children.iter().map(Node::name).collect()
}

// ---- what files mean ----------------------------------------------------

const SPEC_EXAMPLE: &str = r#"
description = "fetch a page and read a file at the same time"
timeout = "30s"

[[group]]
name = "main"
gather = ["fetch", "read", "foo"]

[[step]]
name = "fetch"
http = { url = "http://127.0.0.1:8080/", timeout = "15s" }

[[step]]
name = "read"
read_file = "example.txt"

[[step]]
name = "foo"
exec = ["sleep", "1"]
blocking = true
"#;

#[test]
fn spec_example_loads_into_the_model() {
    let job = load(SPEC_EXAMPLE);
    assert_eq!(job.name, "test");
    assert_eq!(job.file, PathBuf::from(FILE));
    assert_eq!(job.dir, PathBuf::from("jobs"));
    assert_eq!(job.description.as_deref(), Some("fetch a page and read a file at the same time"));
    assert_eq!(job.timeout, Some(Duration::from_secs(30)));
    assert_eq!(job.trigger, Trigger::OnChange);
    assert_eq!(job.overlap, Overlap::Skip);
    let root = group(&job.root);
    assert_eq!(root.name, "main");
    assert_eq!(root.mode, GroupMode::Gather);
    assert_eq!(names(root), ["fetch", "read", "foo"]);
    assert_eq!(root.limit, None);
    assert_eq!(root.on_error, OnError::Cancel);

    let StepKind::Http(http) = &step(&root.children[0]).kind else { panic!() };
    assert_eq!(http.method, "GET");
    assert_eq!(http.url.source(), "http://127.0.0.1:8080/");
    assert_eq!(http.timeout, Some(Duration::from_secs(15)));
    assert!(http.expect_status.is_empty());

    let StepKind::ReadFile(read) = &step(&root.children[1]).kind else { panic!() };
    assert_eq!(read.path.source(), "example.txt");

    let foo = step(&root.children[2]);
    assert!(foo.blocking);
    let StepKind::Exec(exec) = &foo.kind else { panic!() };
    let argv: Vec<_> = exec.argv.iter().map(|t| t.source()).collect();
    assert_eq!(argv, ["sleep", "1"]);
    assert_eq!(foo.retry, crate::job::Retry::default());
}

#[test]
fn no_groups_means_steps_in_sequence_in_file_order() {
    let job = load("[[step]]\nname = \"b\"\nsleep = \"1s\"\n\n[[step]]\nname = \"a\"\nsleep = \"2s\"\n");
    let root = group(&job.root);
    assert_eq!(root.name, "main");
    assert_eq!(root.mode, GroupMode::Sequence);
    assert_eq!(names(root), ["b", "a"]);
    assert_eq!(root.limit, None);
    assert_eq!(root.on_error, OnError::Cancel);
    assert_eq!(root.timeout, None);
    assert!(root.each.is_none());
}

#[test]
fn a_bare_file_name_has_dot_as_its_folder() {
    let job = load_str(Path::new("solo.toml"), "[[step]]\nname = \"a\"\nsleep = \"0s\"\n").unwrap();
    assert_eq!(job.name, "solo");
    assert_eq!(job.dir, PathBuf::from("."));
}

#[test]
fn triggers_and_overlap() {
    let job = load(
        "schedule = \"*/10 * * * * *\"\ntimezone = \"Europe/Berlin\"\noverlap = \"queue\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n",
    );
    assert_eq!(job.trigger, Trigger::Cron { expr: "*/10 * * * * *".into(), timezone: Some(chrono_tz::Europe::Berlin) });
    assert_eq!(job.overlap, Overlap::Queue);

    let job = load("schedule = \"0 3 * * *\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n");
    assert_eq!(job.trigger, Trigger::Cron { expr: "0 3 * * *".into(), timezone: None });

    let job = load("every = \"1m 30s\"\noverlap = \"allow\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n");
    assert_eq!(job.trigger, Trigger::Every(Duration::from_secs(90)));
    assert_eq!(job.overlap, Overlap::Allow);

    for (word, want) in [("skip", Overlap::Skip), ("replace", Overlap::Replace)] {
        let job = load(&format!("overlap = \"{word}\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n"));
        assert_eq!(job.overlap, want);
    }
}

#[test]
fn step_settings_and_sleep_output() {
    let job = load(
        r#"
[[step]]
name = "s"
sleep = "250ms"
retries = 3
retry_delay = "2s"
backoff = 1.5
timeout = "5s"
blocking = true
output = { ok = true, items = [1, 2.5, "x"], nested = { a = "b" } }

[[step]]
name = "t"
sleep = "0s"
backoff = 2
output = "plain"
"#,
    );
    let root = group(&job.root);
    let s = step(&root.children[0]);
    assert_eq!(s.retry.retries, 3);
    assert_eq!(s.retry.delay, Duration::from_secs(2));
    assert_eq!(s.retry.backoff, 1.5);
    assert_eq!(s.timeout, Some(Duration::from_secs(5)));
    assert!(s.blocking);
    let StepKind::Sleep(sleep) = &s.kind else { panic!() };
    assert_eq!(sleep.duration, Duration::from_millis(250));
    assert_eq!(sleep.output, Some(serde_json::json!({"ok": true, "items": [1, 2.5, "x"], "nested": {"a": "b"}})));
    let t = step(&root.children[1]);
    assert_eq!(t.retry.backoff, 2.0);
    let StepKind::Sleep(sleep) = &t.kind else { panic!() };
    assert_eq!(sleep.duration, Duration::ZERO);
    assert_eq!(sleep.output, Some(serde_json::json!("plain")));
}

#[test]
fn process_kinds_in_table_form() {
    let job = load(
        r#"
[[step]]
name = "e"
exec = { argv = ["env"], env = { A = "1", B = "two" }, cwd = "sub", stdin = "hello" }

[[step]]
name = "sh"
shell = "echo hi | tr a-z A-Z"

[[step]]
name = "sh2"
shell = { command = "cat", env = { X = "y" }, stdin = "data" }
"#,
    );
    let root = group(&job.root);
    let StepKind::Exec(e) = &step(&root.children[0]).kind else { panic!() };
    assert_eq!(e.argv[0].source(), "env");
    let env: Vec<_> = e.process.env.iter().map(|(k, v)| (k.as_str(), v.source())).collect();
    assert_eq!(env, [("A", "1"), ("B", "two")]);
    assert_eq!(e.process.cwd.as_ref().map(|t| t.source()), Some("sub"));
    assert_eq!(e.process.stdin.as_ref().map(|t| t.source()), Some("hello"));
    let StepKind::Shell(sh) = &step(&root.children[1]).kind else { panic!() };
    assert_eq!(sh.command.source(), "echo hi | tr a-z A-Z");
    assert!(sh.process.env.is_empty());
    let StepKind::Shell(sh2) = &step(&root.children[2]).kind else { panic!() };
    assert_eq!(sh2.command.source(), "cat");
    assert_eq!(sh2.process.env.len(), 1);
    assert_eq!(sh2.process.stdin.as_ref().map(|t| t.source()), Some("data"));
}

#[test]
fn http_and_file_kinds() {
    let job = load(
        r#"
[[step]]
name = "post"
http = { url = "http://x/api", method = "post", headers = { Content-Type = "application/json" }, body = "{}", timeout = "2s", expect_status = [200, 204] }

[[step]]
name = "get"
http = { url = "http://x/", expect_status = 201 }

[[step]]
name = "plain"
http = "http://x/plain"

[[step]]
name = "r"
read_file = { path = "in.txt" }

[[step]]
name = "w"
write_file = { path = "out.txt", content = "hello" }
"#,
    );
    let root = group(&job.root);
    let StepKind::Http(post) = &step(&root.children[0]).kind else { panic!() };
    assert_eq!(post.method, "POST");
    assert_eq!(post.headers[0].0, "Content-Type");
    assert_eq!(post.headers[0].1.source(), "application/json");
    assert_eq!(post.body.as_ref().map(|b| b.source()), Some("{}"));
    assert_eq!(post.timeout, Some(Duration::from_secs(2)));
    assert_eq!(post.expect_status, [200, 204]);
    let StepKind::Http(get) = &step(&root.children[1]).kind else { panic!() };
    assert_eq!(get.expect_status, [201]);
    let StepKind::Http(plain) = &step(&root.children[2]).kind else { panic!() };
    assert_eq!(plain.url.source(), "http://x/plain");
    assert_eq!(plain.method, "GET");
    let StepKind::ReadFile(r) = &step(&root.children[3]).kind else { panic!() };
    assert_eq!(r.path.source(), "in.txt");
    let StepKind::WriteFile(w) = &step(&root.children[4]).kind else { panic!() };
    assert_eq!((w.path.source(), w.content.source()), ("out.txt", "hello"));
}

#[test]
fn nested_groups_with_settings_and_each() {
    let job = load(
        r#"
[[group]]
name = "main"
sequence = ["fan", "after"]
on_error = "continue"
timeout = "1m"

[[group]]
name = "fan"
as_completed = ["a", "b"]
limit = 2
each = "report"

[[step]]
name = "a"
sleep = "1s"

[[step]]
name = "b"
sleep = "2s"

[[step]]
name = "report"
shell = "echo {{ input }}"

[[step]]
name = "after"
shell = "echo after"
"#,
    );
    let root = group(&job.root);
    assert_eq!(root.mode, GroupMode::Sequence);
    assert_eq!(root.on_error, OnError::Continue);
    assert_eq!(root.timeout, Some(Duration::from_secs(60)));
    assert_eq!(names(root), ["fan", "after"]);
    let fan = group(&root.children[0]);
    assert_eq!(fan.mode, GroupMode::AsCompleted);
    assert_eq!(fan.limit.map(|l| l.get()), Some(2));
    assert_eq!(names(fan), ["a", "b"]);
    let each = fan.each.as_ref().expect("each step");
    assert_eq!(&*each.name, "report");
    assert_eq!(job.root.step_count(), Some(4));
}

#[test]
fn templates_may_use_results_that_finished_before() {
    let job = load(
        r#"
[[group]]
name = "main"
sequence = ["first", "pair", "winner", "last"]

[[step]]
name = "first"
sleep = "1s"
output = "x"

[[group]]
name = "pair"
gather = ["p", "q"]

[[step]]
name = "p"
shell = "echo {{ steps.first.output }}"

[[step]]
name = "q"
exec = ["echo", "{{ steps.first.output }}"]

[[group]]
name = "winner"
race = ["r1", "r2"]

[[step]]
name = "r1"
http = "http://a/{{ steps.p.output }}"

[[step]]
name = "r2"
http = "http://b/"

[[step]]
name = "last"
write_file = { path = "out-{{ steps.pair.output }}.txt", content = "{{ steps.winner.output }} {{ steps.q.output }}" }
"#,
    );
    assert_eq!(job.root.step_count(), Some(6));
}

#[test]
fn an_each_step_may_use_what_finished_before_its_group() {
    load(
        r#"
[[group]]
name = "main"
sequence = ["setup", "fan"]

[[group]]
name = "fan"
as_completed = ["a"]
each = "e"

[[step]]
name = "setup"
sleep = "0s"

[[step]]
name = "a"
sleep = "0s"

[[step]]
name = "e"
shell = "echo {{ steps.setup.output }} {{ input }}"
"#,
    );
}

#[test]
fn templates_are_checked_in_the_synthetic_sequence() {
    load("[[step]]\nname = \"a\"\nsleep = \"1s\"\n[[step]]\nname = \"b\"\nshell = \"echo {{ steps.a.output }}\"\n");
    let e = error(
        "[[step]]\nname = \"a\"\nshell = \"echo {{ steps.b.output }}\"\n[[step]]\nname = \"b\"\nsleep = \"1s\"\n",
    );
    assert!(e.diagnostics()[0].message().contains("has not run yet"), "{e}");
}

#[test]
fn a_hundred_thousand_steps_load() {
    let n = 100_000;
    let mut src = String::with_capacity(n * 40);
    src.push_str("[[group]]\nname = \"main\"\ngather = [");
    for i in 0..n {
        src.push_str(&format!("\"s{i}\","));
    }
    src.push_str("]\n");
    for i in 0..n {
        src.push_str(&format!("[[step]]\nname = \"s{i}\"\nsleep = \"1ms\"\n"));
    }
    let job = load(&src);
    assert_eq!(group(&job.root).children.len(), n);
}

#[test]
fn load_file_reads_toml_and_rhai_and_refuses_other_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let ok = dir.path().join("ok.toml");
    std::fs::write(&ok, "[[step]]\nname = \"a\"\nsleep = \"1s\"\n").unwrap();
    let job = load_file(&ok).unwrap();
    assert_eq!(job.name, "ok");
    assert_eq!(job.dir, dir.path());

    let rhai = dir.path().join("job.rhai");
    std::fs::write(&rhai, "sleep(1)").unwrap();
    let job = load_file(&rhai).unwrap();
    assert_eq!(job.name, "job");
    assert_eq!(job.dir, dir.path());
    assert!(matches!(job.root, Node::Script(_)));

    let txt = dir.path().join("job.txt");
    std::fs::write(&txt, "").unwrap();
    let e = load_file(&txt).unwrap_err();
    assert_eq!(e.diagnostics()[0].message(), "not a job file (`.txt`): job files end in `.toml` or `.rhai`");
    assert_eq!(e.file(), txt);

    let missing = load_file(&dir.path().join("gone.toml")).unwrap_err();
    assert!(missing.diagnostics()[0].message().starts_with("cannot read the file"), "{missing}");
}

#[test]
fn one_line_forms_name_file_line_and_column() {
    let e = error("[[step]]\nname = \"a\"\nsleep = \"1s\"\nretires = 3\n");
    let d = &e.diagnostics()[0];
    assert_eq!(d.line_col(), Some((4, 1)));
    assert_eq!(d.message(), "unknown key `retires` in a step");
    assert_eq!(d.one_line(), "jobs/test.toml:4:1: unknown key `retires` in a step; did you mean `retries`?");
    assert_eq!(e.to_string(), "jobs/test.toml:4:1: unknown key `retires` in a step (did you mean `retries`?)");
    assert!(d.render(true).contains('\u{1b}'), "colour rendering uses ANSI escapes");
    assert!(!d.render(false).contains('\u{1b}'));
}

#[test]
fn columns_count_characters_not_bytes() {
    let e = error("description = \"äöü\" ; oops\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n");
    let d = &e.diagnostics()[0];
    assert_eq!(d.line_col(), Some((1, 21)));
    assert!(d.render(false).contains("jobs/test.toml:1:21"), "{}", d.render(false));
}

#[test]
fn every_problem_is_reported_in_file_order() {
    let e =
        error("timeout = 5\n[[step]]\nname = \"a\"\nsleep = \"1s\"\nretries = -1\n[[step]]\nname = \"b\"\nexec = []\n");
    let lines: Vec<_> = e.diagnostics().iter().map(|d| d.line_col().unwrap().0).collect();
    assert_eq!(lines, [1, 5, 8], "{e}");
}

#[test]
fn a_broken_group_list_does_not_also_report_unused_steps() {
    let e = error(
        "[[group]]\nname = \"main\"\ngather = [\"a\", 3]\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n[[step]]\nname = \"b\"\nsleep = \"1s\"\n",
    );
    assert_eq!(e.diagnostics().len(), 1, "{e}");
}

// ---- what mistakes look like ---------------------------------------------

#[test]
fn unknown_key() {
    insta::assert_snapshot!(render("[[step]]\nname = \"a\"\nsleep = \"1s\"\ncolour = \"red\"\n"));
}

#[test]
fn misspelt_key() {
    insta::assert_snapshot!(render("[[step]]\nname = \"a\"\nsleep = \"1s\"\nretires = 3\n"));
}

#[test]
fn misspelt_top_level_key() {
    insta::assert_snapshot!(render("shedule = \"* * * * *\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n"));
}

#[test]
fn step_key_at_the_top_level() {
    insta::assert_snapshot!(render("sleep = \"1s\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n"));
}

#[test]
fn two_kind_keys() {
    insta::assert_snapshot!(render("[[step]]\nname = \"a\"\nsleep = \"1s\"\nexec = [\"true\"]\n"));
}

#[test]
fn no_kind_key() {
    insta::assert_snapshot!(render("[[step]]\nname = \"a\"\nretries = 2\n"));
}

#[test]
fn missing_name() {
    insta::assert_snapshot!(render("[[step]]\nsleep = \"1s\"\n"));
}

#[test]
fn invalid_name() {
    insta::assert_snapshot!(render("[[step]]\nname = \"fetch-page\"\nsleep = \"1s\"\n"));
}

#[test]
fn unknown_name_in_group() {
    insta::assert_snapshot!(render(
        "[[group]]\nname = \"main\"\ngather = [\"fetch\", \"raed\"]\n\n[[step]]\nname = \"fetch\"\nsleep = \"1s\"\n\n[[step]]\nname = \"read\"\nread_file = \"x.txt\"\n"
    ));
}

#[test]
fn used_in_two_places() {
    insta::assert_snapshot!(render(
        "[[group]]\nname = \"main\"\nsequence = [\"a\", \"inner\"]\n\n[[group]]\nname = \"inner\"\ngather = [\"a\", \"b\"]\n\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n\n[[step]]\nname = \"b\"\nsleep = \"1s\"\n"
    ));
}

#[test]
fn cycle_among_groups() {
    insta::assert_snapshot!(render(
        "[[group]]\nname = \"main\"\ngather = [\"s\"]\n\n[[group]]\nname = \"a\"\nsequence = [\"b\"]\n\n[[group]]\nname = \"b\"\ngather = [\"a\"]\n\n[[step]]\nname = \"s\"\nsleep = \"1s\"\n"
    ));
}

#[test]
fn group_listing_itself() {
    insta::assert_snapshot!(render(
        "[[group]]\nname = \"main\"\ngather = [\"s\"]\n\n[[group]]\nname = \"a\"\nsequence = [\"a\"]\n\n[[step]]\nname = \"s\"\nsleep = \"1s\"\n"
    ));
}

#[test]
fn root_listed_in_a_group() {
    insta::assert_snapshot!(render(
        "[[group]]\nname = \"main\"\ngather = [\"inner\"]\n\n[[group]]\nname = \"inner\"\nsequence = [\"s\", \"main\"]\n\n[[step]]\nname = \"s\"\nsleep = \"1s\"\n"
    ));
}

#[test]
fn duplicate_names() {
    insta::assert_snapshot!(render(
        "[[step]]\nname = \"fetch\"\nsleep = \"1s\"\n\n[[step]]\nname = \"fetch\"\nsleep = \"2s\"\n"
    ));
}

#[test]
fn step_and_group_with_one_name() {
    insta::assert_snapshot!(render(
        "[[group]]\nname = \"main\"\ngather = [\"x\"]\n\n[[step]]\nname = \"main\"\nsleep = \"2s\"\n\n[[step]]\nname = \"x\"\nsleep = \"2s\"\n"
    ));
}

#[test]
fn unused_step() {
    insta::assert_snapshot!(render(
        "[[group]]\nname = \"main\"\ngather = [\"a\"]\n\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n\n[[step]]\nname = \"b\"\nsleep = \"1s\"\n"
    ));
}

#[test]
fn empty_group() {
    insta::assert_snapshot!(render("[[group]]\nname = \"main\"\ngather = []\n"));
}

#[test]
fn two_group_modes() {
    insta::assert_snapshot!(render(
        "[[group]]\nname = \"main\"\ngather = [\"a\"]\nrace = [\"a\"]\n\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n"
    ));
}

#[test]
fn group_without_mode() {
    insta::assert_snapshot!(render(
        "[[group]]\nname = \"main\"\nlimit = 2\n\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n"
    ));
}

#[test]
fn invalid_duration() {
    insta::assert_snapshot!(render("[[step]]\nname = \"a\"\nsleep = \"1 fortnight\"\n"));
}

#[test]
fn bare_number_duration() {
    insta::assert_snapshot!(render("timeout = 5\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n"));
}

#[test]
fn zero_timeout() {
    insta::assert_snapshot!(render("[[step]]\nname = \"a\"\nsleep = \"1s\"\ntimeout = \"0s\"\n"));
}

#[test]
fn invalid_cron() {
    insta::assert_snapshot!(render("schedule = \"61 * * * *\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n"));
}

#[test]
fn cron_nicknames_load() {
    for nick in ["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"] {
        let job = load(&format!("schedule = \"{nick}\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n"));
        assert!(matches!(job.trigger, Trigger::Cron { ref expr, .. } if expr == nick), "{nick}");
    }
}

#[test]
fn cron_reboot_nickname() {
    insta::assert_snapshot!(render("schedule = \"@reboot\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n"));
}

#[test]
fn every_below_the_floor() {
    insta::assert_snapshot!(render("every = \"1ns\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n"));
}

#[test]
fn every_at_the_floor_loads() {
    let job = load("every = \"100ms\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n");
    assert_eq!(job.trigger, Trigger::Every(Duration::from_millis(100)));
}

#[test]
fn cron_with_wrong_field_count() {
    insta::assert_snapshot!(render("schedule = \"* * *\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n"));
}

#[test]
fn unknown_timezone() {
    insta::assert_snapshot!(render(
        "schedule = \"0 3 * * *\"\ntimezone = \"Europe/Berln\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n"
    ));
}

#[test]
fn timezone_without_schedule() {
    insta::assert_snapshot!(render("timezone = \"UTC\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n"));
}

#[test]
fn semaphore_and_jitter() {
    let job = load(
        "schedule = \"0 3 * * *\"\nsemaphore = \"db_backup-2\"\njitter = \"5m\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n",
    );
    assert_eq!(job.semaphore.as_deref(), Some("db_backup-2"));
    assert_eq!(job.jitter, Some(Duration::from_secs(300)));

    let job = load("every = \"30s\"\njitter = \"1m 30s\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n");
    assert_eq!(job.jitter, Some(Duration::from_secs(90)));
    assert_eq!(job.semaphore, None);

    // A semaphore needs no trigger: a dropped file may share one too.
    let job = load("semaphore = \"db\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n");
    assert_eq!(job.semaphore.as_deref(), Some("db"));
    assert_eq!(job.jitter, None);
}

#[test]
fn catch_up_and_retention() {
    let job = load(
        "schedule = \"0 3 * * *\"\ncatch_up = \"latest\"\ncatch_up_window = \"6h\"\nkeep_runs = 100\nkeep_for = \"30d\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n",
    );
    assert_eq!(job.catch_up, CatchUp::Latest);
    assert_eq!(job.catch_up_window, Some(Duration::from_secs(6 * 3600)));
    assert_eq!(job.keep_runs, Some(100));
    assert_eq!(job.keep_for, Some(Duration::from_secs(30 * 86400)));

    let job = load("every = \"1h\"\ncatch_up = \"all\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n");
    assert_eq!(job.catch_up, CatchUp::All);
    assert_eq!(job.catch_up_window, None);

    let job = load("every = \"1h\"\ncatch_up = \"skip\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n");
    assert_eq!(job.catch_up, CatchUp::Skip);

    // Retention needs no trigger; catch-up defaults to skip.
    let job = load("keep_runs = 1\nkeep_for = \"1h\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n");
    assert_eq!((job.catch_up, job.catch_up_window), (CatchUp::Skip, None));
    assert_eq!((job.keep_runs, job.keep_for), (Some(1), Some(Duration::from_secs(3600))));
}

#[test]
fn misspelt_catch_up() {
    insta::assert_snapshot!(render("every = \"1h\"\ncatch_up = \"lastest\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n"));
}

#[test]
fn catch_up_without_a_trigger() {
    insta::assert_snapshot!(render("catch_up = \"all\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n"));
}

#[test]
fn catch_up_window_without_catch_up() {
    insta::assert_snapshot!(render(
        "every = \"1h\"\ncatch_up_window = \"6h\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n"
    ));
}

#[test]
fn catch_up_window_with_catch_up_skip() {
    insta::assert_snapshot!(render(
        "every = \"1h\"\ncatch_up = \"skip\"\ncatch_up_window = \"6h\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n"
    ));
}

#[test]
fn zero_catch_up_window() {
    insta::assert_snapshot!(render(
        "every = \"1h\"\ncatch_up = \"all\"\ncatch_up_window = \"0s\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n"
    ));
}

#[test]
fn keep_runs_zero() {
    insta::assert_snapshot!(render("keep_runs = 0\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n"));
}

#[test]
fn keep_for_zero_and_quoted_keep_runs() {
    let e = error("keep_runs = \"5\"\nkeep_for = \"0d\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n");
    let messages: Vec<_> = e.diagnostics().iter().map(|d| d.one_line()).collect();
    assert_eq!(
        messages,
        [
            "jobs/test.toml:1:13: `keep_runs` must be an integer, found a string; remove the quotes: `keep_runs = 5`",
            "jobs/test.toml:2:12: `keep_for` must be longer than zero; remove `keep_for` for the default retention",
        ]
    );
}

#[test]
fn invalid_semaphore_name() {
    insta::assert_snapshot!(render("semaphore = \"db/backup\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n"));
}

#[test]
fn empty_semaphore_name() {
    insta::assert_snapshot!(render("semaphore = \"\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n"));
}

#[test]
fn semaphore_of_the_wrong_type() {
    insta::assert_snapshot!(render("semaphore = 2\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n"));
}

#[test]
fn misspelt_semaphore() {
    insta::assert_snapshot!(render("semaphor = \"db\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n"));
}

#[test]
fn jitter_without_a_trigger() {
    insta::assert_snapshot!(render("jitter = \"30s\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n"));
}

#[test]
fn invalid_jitter_duration() {
    insta::assert_snapshot!(render(
        "every = \"1h\"\njitter = \"30 secs or so\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n"
    ));
}

#[test]
fn bare_number_jitter() {
    insta::assert_snapshot!(render("every = \"1h\"\njitter = 30\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n"));
}

#[test]
fn zero_jitter() {
    insta::assert_snapshot!(render("every = \"1h\"\njitter = \"0s\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n"));
}

#[test]
fn schedule_and_every() {
    insta::assert_snapshot!(render(
        "schedule = \"0 3 * * *\"\nevery = \"1h\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n"
    ));
}

#[test]
fn on_node_loss_is_record_by_default_or_rerun_and_a_misspelling_is_refused_with_the_choices() {
    let job = load("[[step]]\nname = \"a\"\nsleep = \"1s\"\n");
    assert_eq!(job.on_node_loss, crate::job::OnNodeLoss::Record);
    let job = load("on_node_loss = \"rerun\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n");
    assert_eq!(job.on_node_loss, crate::job::OnNodeLoss::Rerun);
    let job = load("on_node_loss = \"record\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n");
    assert_eq!(job.on_node_loss, crate::job::OnNodeLoss::Record);
    let shown = render("on_node_loss = \"retry\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n");
    assert!(shown.contains("on_node_loss") && shown.contains("record") && shown.contains("rerun"), "{shown}");
}

#[test]
fn misspelt_overlap() {
    insta::assert_snapshot!(render("overlap = \"skipp\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n"));
}

#[test]
fn limit_zero() {
    insta::assert_snapshot!(render(
        "[[group]]\nname = \"main\"\ngather = [\"a\"]\nlimit = 0\n\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n"
    ));
}

#[test]
fn negative_retries() {
    insta::assert_snapshot!(render("[[step]]\nname = \"a\"\nsleep = \"1s\"\nretries = -1\n"));
}

#[test]
fn wrong_value_type() {
    insta::assert_snapshot!(render("[[step]]\nname = \"a\"\nsleep = \"1s\"\nretries = \"3\"\n"));
}

#[test]
fn backoff_below_one() {
    insta::assert_snapshot!(render("[[step]]\nname = \"a\"\nsleep = \"1s\"\nretries = 2\nbackoff = 0.5\n"));
}

#[test]
fn each_on_a_gather_group() {
    insta::assert_snapshot!(render(
        "[[group]]\nname = \"main\"\ngather = [\"a\"]\neach = \"e\"\n\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n\n[[step]]\nname = \"e\"\nsleep = \"1s\"\n"
    ));
}

#[test]
fn template_referencing_an_unknown_step() {
    insta::assert_snapshot!(render(
        "[[step]]\nname = \"fetch\"\nhttp = \"http://x/\"\n\n[[step]]\nname = \"show\"\nshell = \"echo {{ steps.fecth.output }}\"\n"
    ));
}

#[test]
fn template_referencing_a_sibling_in_a_gather() {
    insta::assert_snapshot!(render(
        "[[group]]\nname = \"main\"\ngather = [\"fetch\", \"show\"]\n\n[[step]]\nname = \"fetch\"\nhttp = \"http://x/\"\n\n[[step]]\nname = \"show\"\nshell = \"echo {{ steps.fetch.output }}\"\n"
    ));
}

#[test]
fn template_referencing_a_later_step() {
    insta::assert_snapshot!(render(
        "[[group]]\nname = \"main\"\nsequence = [\"show\", \"fetch\"]\n\n[[step]]\nname = \"fetch\"\nhttp = \"http://x/\"\n\n[[step]]\nname = \"show\"\nshell = \"echo {{ steps.fetch.output }}\"\n"
    ));
}

/// A `sequence` with `on_error = "continue"` goes on after a child failed,
/// so a later child may not read an earlier one's result (issue 14: `check`
/// accepted it, and the run failed rendering the failed step's output).
#[test]
fn template_referencing_an_earlier_child_of_a_continue_sequence() {
    insta::assert_snapshot!(render(
        "[[group]]\nname = \"main\"\nsequence = [\"fetch\", \"show\"]\non_error = \"continue\"\n\n[[step]]\nname = \"fetch\"\nhttp = \"http://x/\"\n\n[[step]]\nname = \"show\"\nshell = \"echo {{ steps.fetch.output }}\"\n"
    ));
}

#[test]
fn template_referencing_a_step_nested_in_an_earlier_child_of_a_continue_sequence() {
    insta::assert_snapshot!(render(
        "[[group]]\nname = \"main\"\nsequence = [\"facts\", \"show\"]\non_error = \"continue\"\n\n[[group]]\nname = \"facts\"\ngather = [\"a\", \"b\"]\n\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n\n[[step]]\nname = \"b\"\nsleep = \"1s\"\n\n[[step]]\nname = \"show\"\nshell = \"echo {{ steps.a.output }}\"\n"
    ));
}

/// What stays accepted around `on_error = "continue"`: a `continue` group
/// inside a `cancel` sequence (it fails at its end, and the sequence stops),
/// a `continue` sequence's child reading within its own `cancel` sequence,
/// and a `continue` sequence reading what finished before it.
#[test]
fn a_continue_group_below_a_cancel_sequence_may_still_be_read() {
    load(
        r#"
[[group]]
name = "main"
sequence = ["setup", "facts", "steps2", "report"]

[[group]]
name = "facts"
gather = ["a", "b"]
on_error = "continue"

[[group]]
name = "steps2"
sequence = ["inner", "after"]
on_error = "continue"

[[group]]
name = "inner"
sequence = ["c", "d"]

[[step]]
name = "setup"
sleep = "0s"

[[step]]
name = "a"
sleep = "0s"

[[step]]
name = "b"
sleep = "0s"

[[step]]
name = "c"
sleep = "0s"

[[step]]
name = "d"
shell = "echo {{ steps.c.output }} {{ steps.a.output }}"

[[step]]
name = "after"
shell = "echo {{ steps.setup.output }} {{ steps.facts.output }}"

[[step]]
name = "report"
shell = "echo {{ steps.a.output }} {{ steps.steps2.output }} {{ steps.d.output }}"
"#,
    );
}

#[test]
fn template_referencing_a_race_loser() {
    insta::assert_snapshot!(render(
        "[[group]]\nname = \"main\"\nsequence = [\"fastest\", \"show\"]\n\n[[group]]\nname = \"fastest\"\nrace = [\"a\", \"b\"]\n\n[[step]]\nname = \"a\"\nhttp = \"http://a/\"\n\n[[step]]\nname = \"b\"\nhttp = \"http://b/\"\n\n[[step]]\nname = \"show\"\nshell = \"echo {{ steps.a.output }}\"\n"
    ));
}

#[test]
fn input_outside_an_each_step() {
    insta::assert_snapshot!(render("[[step]]\nname = \"a\"\nshell = \"echo {{ input }}\"\n"));
}

#[test]
fn each_step_referencing_its_groups_children() {
    insta::assert_snapshot!(render(
        "[[group]]\nname = \"main\"\nas_completed = [\"a\", \"b\"]\neach = \"e\"\n\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n\n[[step]]\nname = \"b\"\nsleep = \"1s\"\n\n[[step]]\nname = \"e\"\nshell = \"echo {{ steps.a.output }}\"\n"
    ));
}

/// Template typos are caught by `check`, placed inside the string (issue 14).
#[test]
fn template_misspelt_attribute_of_a_step() {
    insta::assert_snapshot!(render(
        "[[step]]\nname = \"a\"\nsleep = \"1s\"\n\n[[step]]\nname = \"b\"\nshell = \"echo {{ steps.a.outptu }}\"\n"
    ));
}

#[test]
fn template_unknown_variable() {
    insta::assert_snapshot!(render(
        "[[step]]\nname = \"a\"\nsleep = \"1s\"\n\n[[step]]\nname = \"b\"\nexec = [\"echo\", \"{{ stpes.a.output }}\"]\n"
    ));
}

#[test]
fn template_misspelt_attribute_of_job() {
    insta::assert_snapshot!(render("[[step]]\nname = \"a\"\nshell = \"echo {{ job.nmae }}\"\n"));
}

#[test]
fn template_unknown_filter() {
    insta::assert_snapshot!(render(
        "[[step]]\nname = \"a\"\nsleep = \"1s\"\n\n[[step]]\nname = \"b\"\nwrite_file = { path = \"out.txt\", content = \"\"\"\ntotal: {{ steps.a.output }}\nname: {{ steps.a.output | uper }}\n\"\"\" }\n"
    ));
}

#[test]
fn template_unknown_test() {
    insta::assert_snapshot!(render(
        "[[step]]\nname = \"a\"\nsleep = \"1s\"\n\n[[step]]\nname = \"b\"\nshell = \"{% if steps.a.output is od %}odd{% endif %}\"\n"
    ));
}

/// What a template may read and call stays accepted.
#[test]
fn templates_reading_the_allowed_names_and_builtin_filters_load() {
    load(
        r#"
[[group]]
name = "main"
sequence = ["a", "fan", "b"]

[[group]]
name = "fan"
as_completed = ["c"]
each = "e"

[[step]]
name = "a"
sleep = "0s"
output = { items = [1, 2] }

[[step]]
name = "c"
sleep = "0s"

[[step]]
name = "e"
shell = "echo {{ input.x | default('none') }} {{ input }}"

[[step]]
name = "b"
shell = """echo {{ steps.a.output.items | join(",") }} {{ job.name }} {{ run.id }} {{ run.started_at }} {{ secrets.TOKEN }}
{% filter upper %}{{ steps.a.output | tojson }}{% endfilter %} {{ "a | nope is nothing" }}
{% if steps.a.output is not none and steps.a.output.items is sequence %}{{ steps.fan.output | length }}{% endif %}
{# a comment: {{ x | nothing }} #}{% raw %}{{ y | nothing }}{% endraw %}
{% for x in steps.a.output.items if x is odd %}{{ loop.index }}{{ x | string | trim }}{% endfor %}"""
"#,
    );
}

#[test]
fn template_syntax_error() {
    insta::assert_snapshot!(render("[[step]]\nname = \"a\"\nshell = \"echo {{ steps.a.output \"\n"));
}

#[test]
fn blocking_http() {
    insta::assert_snapshot!(render("[[step]]\nname = \"a\"\nhttp = \"http://x/\"\nblocking = true\n"));
}

#[test]
fn output_on_a_non_sleep_step() {
    insta::assert_snapshot!(render("[[step]]\nname = \"a\"\nshell = \"true\"\noutput = 1\n"));
}

#[test]
fn exec_given_a_command_line() {
    insta::assert_snapshot!(render("[[step]]\nname = \"a\"\nexec = \"ls -l\"\n"));
}

#[test]
fn empty_argv() {
    insta::assert_snapshot!(render("[[step]]\nname = \"a\"\nexec = { argv = [] }\n"));
}

#[test]
fn single_bracket_step_table() {
    insta::assert_snapshot!(render("[step]\nname = \"a\"\nsleep = \"1s\"\n"));
}

#[test]
fn invalid_toml_syntax() {
    insta::assert_snapshot!(render("[[step]]\nname = \"a\nsleep = \"1s\"\n"));
}

#[test]
fn empty_file() {
    insta::assert_snapshot!(render(""));
}

#[test]
fn file_of_only_comments() {
    insta::assert_snapshot!(render("# nothing here yet\n\n# still nothing\n"));
}

#[test]
fn settings_but_no_steps() {
    insta::assert_snapshot!(render("description = \"soon\"\n"));
}

/// Renders with the temp folder replaced by `[TMP]`, for stable snapshots.
fn render_file_error(dir: &Path, e: &LoadError) -> String {
    assert_eq!(e.diagnostics().len(), 1, "{e}");
    e.diagnostics()[0].render(false).replace(&dir.display().to_string(), "[TMP]")
}

#[test]
fn non_utf8_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latin1.toml");
    std::fs::write(&path, b"[[step]]\nname = \"caf\xe9\"\nsleep = \"1s\"\n").unwrap();
    let e = load_file(&path).unwrap_err();
    assert_eq!(e.diagnostics()[0].line_col(), Some((2, 12)));
    insta::assert_snapshot!(render_file_error(dir.path(), &e));
}

#[test]
fn file_over_eight_mib() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.toml");
    // Sparse: 10 MB of size, no data written; the loader must refuse it from
    // the metadata alone.
    std::fs::File::create(&path).unwrap().set_len(10_000_000).unwrap();
    let e = load_file(&path).unwrap_err();
    assert!(e.diagnostics()[0].line_col().is_none());
    insta::assert_snapshot!(render_file_error(dir.path(), &e));
}

#[test]
fn several_problems_render_together() {
    let e = error("timeout = \"5\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\nretries = -2\n");
    insta::assert_snapshot!(e.render(false));
}

#[test]
fn an_empty_step_array_has_no_steps() {
    let e = error("step = []\n");
    assert_eq!(e.diagnostics()[0].message(), "this job has no steps", "{e}");
}

#[test]
fn inline_tables_and_dotted_keys_work_too() {
    let job = load("step = [{ name = \"a\", sleep = \"1s\" }]\n");
    assert_eq!(names(group(&job.root)), ["a"]);
    let job = load("[[step]]\nname = \"b\"\nhttp.url = \"http://x/\"\nhttp.method = \"put\"\n");
    let StepKind::Http(h) = &step(&group(&job.root).children[0]).kind else { panic!() };
    assert_eq!(h.method, "PUT");
}

#[test]
fn integers_with_underscores_and_a_byte_order_mark() {
    let job = load("\u{feff}[[step]]\nname = \"a\"\nsleep = \"1s\"\nretries = 1_0\n");
    assert_eq!(step(&group(&job.root).children[0]).retry.retries, 10);
}

#[test]
fn deeply_nested_values_do_not_crash() {
    let depth = 50_000;
    let src = format!("[[step]]\nname = \"a\"\nsleep = \"1s\"\noutput = {}1{}\n", "[".repeat(depth), "]".repeat(depth));
    let _ = load_str(Path::new(FILE), &src);
}

mod never_panics {
    //! Whatever a file holds, loading it returns a job or diagnostics: the
    //! daemon must survive any file dropped into its folder.

    use std::path::Path;

    use proptest::prelude::*;

    use crate::load::load_str;

    const SEED: &str = include_str!("../../jobs/system-report.toml");

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn on_arbitrary_text(text in "\\PC{0,400}") {
            let _ = load_str(Path::new("fuzz.toml"), &text);
        }

        #[test]
        fn on_toml_like_text(text in "(\\[\\[(step|group)\\]\\]\\n|[a-z_]{1,8} = (\"[^\"\\n]{0,12}\"|[0-9-]{1,3}|\\[\"[a-z]{1,3}\"\\]|\\{ [a-z]+ = \"[a-z]*\" \\})\\n){0,30}") {
            let _ = load_str(Path::new("fuzz.toml"), &text);
        }

        #[test]
        fn on_a_valid_job_with_a_slice_replaced(at in 0usize..4096, len in 0usize..40, insert in "\\PC{0,20}") {
            let mut chars: Vec<char> = SEED.chars().collect();
            let at = at % (chars.len() + 1);
            let end = (at + len).min(chars.len());
            chars.splice(at..end, insert.chars());
            let text: String = chars.into_iter().collect();
            let _ = load_str(Path::new("fuzz.toml"), &text);
        }
    }
}

// ---- user / group ---------------------------------------------------------

/// `nobody`'s uid, or `None` (said aloud) on a host without the account.
#[allow(clippy::print_stderr)]
fn nobody() -> Option<u32> {
    let found = nix::unistd::User::from_name("nobody").ok().flatten().map(|u| u.uid.as_raw());
    if found.is_none() {
        eprintln!("SKIPPED: this host has no user `nobody`");
    }
    found
}

#[test]
fn user_and_group_resolve_to_ids_and_the_users_groups() {
    let Some(uid) = nobody() else { return };
    let job = load("user = \"nobody\"\n[[step]]\nname = \"a\"\nexec = [\"id\"]\n");
    let identity = job.identity.expect("an identity");
    let user = identity.user.as_ref().expect("a user");
    assert_eq!((user.name.as_str(), user.uid), ("nobody", uid));
    assert!(user.groups.contains(&identity.gid), "{identity:?}");

    let job = load("user = \"nobody\"\nuser_group = \"root\"\n[[step]]\nname = \"a\"\nexec = [\"id\"]\n");
    let identity = job.identity.expect("an identity");
    assert_eq!(identity.gid, 0);
    assert!(identity.user.as_ref().expect("a user").groups.contains(&0), "{identity:?}");

    let job = load("user_group = \"root\"\n[[step]]\nname = \"a\"\nexec = [\"id\"]\n");
    let identity = job.identity.expect("an identity");
    assert_eq!((identity.user.is_none(), identity.gid), (true, 0));
}

#[test]
fn unknown_user() {
    insta::assert_snapshot!(render("user = \"no-such-user-gatherd\"\n[[step]]\nname = \"a\"\nexec = [\"id\"]\n"));
}

#[test]
fn unknown_group() {
    insta::assert_snapshot!(render(
        "user_group = \"no-such-group-gatherd\"\n[[step]]\nname = \"a\"\nexec = [\"id\"]\n"
    ));
}

#[test]
fn user_when_gatherd_is_not_root() {
    if nobody().is_none() {
        return;
    }
    let src = "description = \"x\"\nuser = \"nobody\"\n[[step]]\nname = \"a\"\nexec = [\"id\"]\n";
    let e = match load_source(Path::new(FILE), src, Purpose::Run { uid: 1000, gid: 1000, owner: 1000 }) {
        Ok(job) => panic!("expected an error, got {job:#?}"),
        Err(e) => e,
    };
    assert_eq!(e.diagnostics().len(), 1, "{e}");
    insta::assert_snapshot!(e.diagnostics()[0].render(false));
    // `check` (and a root gatherd) accept it.
    assert!(load_source(Path::new(FILE), src, Purpose::Run { uid: 0, gid: 0, owner: 0 }).is_ok());
    assert!(load_str(Path::new(FILE), src).is_ok());
}

#[test]
fn file_step_in_a_job_with_a_user() {
    if nobody().is_none() {
        return;
    }
    insta::assert_snapshot!(render("user = \"nobody\"\n[[step]]\nname = \"a\"\nread_file = \"x.txt\"\n"));
}

#[test]
fn max_output_is_read_inline_or_as_a_table() {
    let step = "[[step]]\nname = \"a\"\nshell = \"true\"\n";
    let job = load(&format!("max_output = {{ head = 100, tail = 0 }}\n{step}"));
    assert_eq!(job.max_output, crate::job::MaxOutput { head: Some(100), tail: Some(0) });
    let job = load(&format!("{step}[max_output]\ntail = 4096\n"));
    assert_eq!(job.max_output, crate::job::MaxOutput { head: None, tail: Some(4096) });
    assert_eq!(load(step).max_output, crate::job::MaxOutput::default());
}

#[test]
fn max_output_mistakes_are_diagnostics_at_their_place() {
    let e = error("[max_output]\nhead = -1\ntial = 5\ntail = \"1MiB\"\n[[step]]\nname = \"a\"\nshell = \"true\"\n");
    let messages: Vec<_> = e.diagnostics().iter().map(|d| d.one_line()).collect();
    assert_eq!(
        messages,
        [
            "jobs/test.toml:2:8: `max_output.head` must be a number of bytes from 0 to 1073741824, found -1",
            "jobs/test.toml:3:1: unknown key `tial` in `max_output`; did you mean `tail`?",
            "jobs/test.toml:4:8: `max_output.tail` must be an integer, found a string",
        ]
    );
    let e = error("max_output = 5\n[[step]]\nname = \"a\"\nshell = \"true\"\n");
    assert_eq!(
        e.diagnostics()[0].one_line(),
        "jobs/test.toml:1:14: `max_output` must be a table such as { head = 1048576, tail = 1048576 }, found an integer"
    );
}

// ---- handlers and finally ------------------------------------------------

/// A race whose loser `a` a handler, a finally and a later step read.
const OUTCOME_JOB: &str = r#"
timeout = "1m"

[handlers]
on_failure = "alert"
on_exit = "bye"

[[group]]
name = "main"
sequence = ["fastest", "fan"]

[[group]]
name = "fastest"
race = ["a", "b"]

[[group]]
name = "fan"
gather = ["c", "d"]
on_error = "continue"
finally = "summary"

[[step]]
name = "a"
sleep = "1s"

[[step]]
name = "b"
sleep = "2s"

[[step]]
name = "c"
sleep = "1s"

[[step]]
name = "d"
shell = "exit 1"

[[step]]
name = "summary"
shell = "echo {{ steps.c.status }} {{ steps.d.error }} {{ steps.a.output }} {{ run.status }}"

[[step]]
name = "alert"
shell = "echo {{ run.status }} {{ run.error }} {{ steps.a.output | default('lost') }} {{ steps.summary.status }}"
timeout = "5s"

[[step]]
name = "bye"
shell = "echo {{ job.name }} {{ run.id }} {{ run.started_at | date('%Y%m%d') }}"
"#;

#[test]
fn handlers_and_a_finally_load_outside_the_main_tree() {
    let job = load(OUTCOME_JOB);
    let main = group(&job.root);
    assert_eq!(names(main), ["fastest", "fan"]);
    let fan = group(&main.children[1]);
    assert_eq!(fan.finally.as_deref().map(Node::name), Some("summary"));
    let alert = job.handlers.on_failure.as_deref().expect("on_failure");
    let bye = job.handlers.on_exit.as_deref().expect("on_exit");
    assert_eq!((alert.name(), bye.name()), ("alert", "bye"));
    assert!(job.handlers.on_success.is_none());
    // A handler's own timeout wins; without one it takes the job's.
    assert_eq!(step(alert).timeout, Some(Duration::from_secs(5)));
    assert_eq!(step(bye).timeout, Some(Duration::from_secs(60)));
    assert_eq!(job.root.step_count(), Some(5), "the finally counts, the handlers do not");
}

#[test]
fn without_groups_the_steps_a_handler_names_are_not_in_main() {
    let job = load(
        "[handlers]\non_failure = \"alert\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n\
         [[step]]\nname = \"alert\"\nshell = \"echo {{ steps.a.status }}\"\n[[step]]\nname = \"b\"\nsleep = \"1s\"\n",
    );
    assert_eq!(names(group(&job.root)), ["a", "b"]);
    assert_eq!(job.handlers.on_failure.as_deref().map(Node::name), Some("alert"));
}

#[test]
fn check_lets_handlers_and_finally_read_steps_that_may_have_failed_but_not_the_main_tree() {
    // Accepted in a handler and a finally (above); the same read of the race's
    // loser from the main tree is still refused.
    let inside = OUTCOME_JOB
        .replace("sequence = [\"fastest\", \"fan\"]", "sequence = [\"fastest\", \"fan\", \"show\"]")
        + "\n[[step]]\nname = \"show\"\nshell = \"echo {{ steps.a.output }}\"\n";
    let e = error(&inside);
    assert_eq!(e.diagnostics().len(), 1, "{e}");
    assert!(e.to_string().contains("`a` is inside race group `fastest`"), "{e}");
}

#[test]
fn run_status_outside_a_handler_or_finally() {
    insta::assert_snapshot!(render(
        "[[step]]\nname = \"a\"\nsleep = \"1s\"\n[[step]]\nname = \"b\"\nshell = \"echo {{ run.status }}\"\n"
    ));
}

#[test]
fn step_status_outside_a_handler_or_finally() {
    let e =
        error("[[step]]\nname = \"a\"\nsleep = \"1s\"\n[[step]]\nname = \"b\"\nshell = \"echo {{ steps.a.error }}\"\n");
    assert!(e.to_string().contains("`steps.a.error` is only defined in a handler or a `finally`"), "{e}");
}

#[test]
fn reading_a_finally_from_the_main_tree() {
    insta::assert_snapshot!(render(
        "[[group]]\nname = \"main\"\nsequence = [\"fan\", \"next\"]\n[[group]]\nname = \"fan\"\ngather = [\"a\"]\nfinally = \"sum\"\n\
         [[step]]\nname = \"a\"\nsleep = \"1s\"\n[[step]]\nname = \"sum\"\nsleep = \"1s\"\n\
         [[step]]\nname = \"next\"\nshell = \"echo {{ steps.sum.output }}\"\n"
    ));
}

#[test]
fn a_handler_reading_a_later_handler() {
    insta::assert_snapshot!(render(
        "[handlers]\non_failure = \"alert\"\non_exit = \"bye\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n\
         [[step]]\nname = \"alert\"\nshell = \"echo {{ steps.bye.status }}\"\n[[step]]\nname = \"bye\"\nsleep = \"1s\"\n"
    ));
}

#[test]
fn a_finally_listed_in_a_group_too() {
    insta::assert_snapshot!(render(
        "[[group]]\nname = \"main\"\ngather = [\"a\", \"b\"]\nfinally = \"b\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n\
         [[step]]\nname = \"b\"\nsleep = \"1s\"\n"
    ));
}

#[test]
fn a_finally_that_contains_its_group() {
    insta::assert_snapshot!(render(
        "[[group]]\nname = \"main\"\ngather = [\"a\"]\n[[group]]\nname = \"outer\"\nsequence = [\"inner\"]\n\
         [[group]]\nname = \"inner\"\ngather = [\"b\"]\nfinally = \"outer\"\n\
         [[step]]\nname = \"a\"\nsleep = \"1s\"\n[[step]]\nname = \"b\"\nsleep = \"1s\"\n"
    ));
}

#[test]
fn an_unknown_handler_key_and_name() {
    let e = error("[handlers]\non_fail = \"a\"\non_exit = \"nope\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n");
    let text = e.to_string();
    assert!(text.contains("unknown key `on_fail`") && text.contains("did you mean `on_failure`?"), "{text}");
    assert!(text.contains("no step or group is named `nope`"), "{text}");
}

/// A job-level `env` is set before anything ran: `run.status` there would
/// fail every exec/shell step when it renders, so `check` refuses it.
#[test]
fn a_job_level_env_may_not_read_how_the_run_ended() {
    let text = error("env = { S = \"{{ run.status }}\" }\n[[step]]\nname = \"a\"\nshell = \"true\"\n").to_string();
    assert!(text.contains("cannot read other steps' results, `input` or how the run ended"), "{text}");
}
