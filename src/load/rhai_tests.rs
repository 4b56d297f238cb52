//! Rhai in job files, as specs: what a `.rhai` job's settings mean, TOML
//! `script` and `script_file` steps, and what each mistake looks like
//! (snapshots of the rendered diagnostics).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::job::{CatchUp, LimitOverrides, Node, Overlap, ScriptSource, ScriptStep, StepKind, Trigger};

const RHAI: &str = "jobs/test.rhai";
const TOML: &str = "jobs/test.toml";

fn load_rhai(src: &str) -> Job {
    match load_str(Path::new(RHAI), src) {
        Ok(job) => job,
        Err(e) => panic!("expected the job to load, got:\n{}", e.render(false)),
    }
}

/// The rendering of the only diagnostic of loading `src` from `file`.
fn render(file: &str, src: &str) -> String {
    let e = match load_str(Path::new(file), src) {
        Ok(job) => panic!("expected an error, got {job:#?}"),
        Err(e) => e,
    };
    assert_eq!(e.diagnostics().len(), 1, "expected one diagnostic, got:\n{e}");
    e.diagnostics()[0].render(false)
}

fn script_node(job: &Job) -> &crate::job::ScriptNode {
    match &job.root {
        Node::Script(s) => s,
        other => panic!("expected a script node, got {}", other.name()),
    }
}

/// The script steps of a TOML job with no groups, in order.
fn script_steps(job: &Job) -> Vec<&ScriptStep> {
    let Node::Group(g) = &job.root else { panic!("expected a group") };
    g.children
        .iter()
        .filter_map(|c| match c {
            Node::Step(s) => match &s.kind {
                StepKind::Script(script) => Some(&**script),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

// ---- Rhai jobs: what files mean ------------------------------------------

const ALL_SETTINGS: &str = r#"// a job with every setting
const description = "fetch and report";
const timeout = "1m 30s";
const schedule = "*/10 * * * * *";
const timezone = "Europe/Berlin";
const overlap = "queue";
const semaphore = "backup";
const jitter = "10s";
const max_operations = 1_000;
const max_call_depth = 16;
const max_expr_depth = 32;
const max_string_bytes = 4096;
const max_array_len = 100;
const max_map_len = 10;
const wall_time = "5s";
const retries_of_mine = 3;     // the script's own constant

let r = gather([sleep(0.1, "a"), sleep(0.2, "b")]);
print(r);
"#;

#[test]
fn a_rhai_job_reads_every_setting_into_the_model() {
    let job = load_rhai(ALL_SETTINGS);
    assert_eq!(job.name, "test");
    assert_eq!(job.file, PathBuf::from(RHAI));
    assert_eq!(job.dir, PathBuf::from("jobs"));
    assert_eq!(job.description.as_deref(), Some("fetch and report"));
    assert_eq!(job.timeout, Some(Duration::from_secs(90)));
    assert_eq!(job.trigger, Trigger::Cron { expr: "*/10 * * * * *".into(), timezone: Some(chrono_tz::Europe::Berlin) });
    assert_eq!(job.overlap, Overlap::Queue);
    assert_eq!(job.semaphore.as_deref(), Some("backup"));
    assert_eq!(job.jitter, Some(Duration::from_secs(10)));
    let node = script_node(&job);
    assert_eq!(node.name, "main");
    assert_eq!(&*node.code, ALL_SETTINGS);
    assert_eq!(node.source, ScriptSource::File(PathBuf::from(RHAI)));
    assert_eq!(
        node.limits,
        LimitOverrides {
            max_operations: Some(1_000),
            max_call_depth: Some(16),
            max_expr_depth: Some(32),
            max_string_bytes: Some(4096),
            max_array_len: Some(100),
            max_map_len: Some(10),
            wall_time: Some(Duration::from_secs(5)),
        }
    );
}

#[test]
fn a_rhai_job_without_settings_runs_on_change_with_default_limits() {
    let job = load_rhai("print(await_step(sleep(1)));\n");
    assert_eq!(job.trigger, Trigger::OnChange);
    assert_eq!(job.timeout, None);
    assert_eq!(job.description, None);
    assert_eq!(job.semaphore, None);
    assert_eq!(job.jitter, None);
    assert_eq!(script_node(&job).limits, LimitOverrides::default());
}

#[test]
fn on_node_loss_is_a_rhai_setting_too() {
    let job = load_rhai("export const every = \"30s\";\nconst on_node_loss = \"rerun\";\nsleep(1)\n");
    assert_eq!(job.on_node_loss, crate::job::OnNodeLoss::Rerun);
    assert_eq!(load_rhai("sleep(1)\n").on_node_loss, crate::job::OnNodeLoss::Record);
}

#[test]
fn every_is_an_interval() {
    let job = load_rhai("export const every = \"30s\";\nconst overlap = \"allow\";\nsleep(1)\n");
    assert_eq!(job.trigger, Trigger::Every(Duration::from_secs(30)));
    assert_eq!(job.overlap, Overlap::Allow);
}

#[test]
fn a_script_whose_body_would_fail_still_loads_with_its_schedule() {
    let job = load_rhai(
        "const schedule = \"0 3 * * *\";\nno_such_function(1, 2);\nthrow \"boom\";\nlet x = 1 / 0;\nloop { }\n",
    );
    assert_eq!(job.trigger, Trigger::Cron { expr: "0 3 * * *".into(), timezone: None });
}

#[test]
fn only_top_level_statements_are_settings() {
    let job = load_rhai("fn f() { const timeout = 5; timeout }\nif true { let schedule = 3; }\nf()\n");
    assert_eq!(job.timeout, None);
    assert_eq!(job.trigger, Trigger::OnChange);
}

#[test]
fn the_scripts_own_constants_are_left_alone() {
    // Short or far from every setting's name; upper case is a constant's style.
    let job = load_rhai("const url = \"x\";\nconst every_n = 5;\nconst TIMEOUT = 3;\nconst overlap_ok = [1];\nurl\n");
    assert_eq!(job.timeout, None);
    assert_eq!(job.trigger, Trigger::OnChange);
}

#[test]
fn a_lower_expression_depth_is_checked_at_load() {
    let deep = format!("const max_expr_depth = 8;\nlet x = {}1{};\n", "(".repeat(20), ")".repeat(20));
    let e = load_str(Path::new(RHAI), &deep).unwrap_err();
    assert!(e.diagnostics()[0].message().starts_with("invalid Rhai script"), "{e}");
    let fine = format!("const max_expr_depth = 100;\nlet x = {}1{};\n", "(".repeat(40), ")".repeat(40));
    assert_eq!(script_node(&load_rhai(&fine)).limits.max_expr_depth, Some(100));
}

#[test]
fn a_rhai_job_reads_catch_up_and_retention() {
    let job = load_rhai(
        "const every = \"1h\";\nconst catch_up = \"all\";\nconst catch_up_window = \"6h\";\nconst keep_runs = 100;\nconst keep_for = \"30d\";\nsleep(1)\n",
    );
    assert_eq!(job.catch_up, CatchUp::All);
    assert_eq!(job.catch_up_window, Some(Duration::from_secs(6 * 3600)));
    assert_eq!(job.keep_runs, Some(100));
    assert_eq!(job.keep_for, Some(Duration::from_secs(30 * 86400)));

    let job = load_rhai("print(1);\n");
    assert_eq!((job.catch_up, job.catch_up_window, job.keep_runs, job.keep_for), (CatchUp::Skip, None, None, None));
}

#[test]
fn rhai_catch_up_mistakes() {
    let e = load_str(
        Path::new(RHAI),
        "const catch_up = \"lastest\";\nconst catch_up_window = \"6h\";\nconst keep_runs = 0;\nconst keep_fro = \"30d\";\nsleep(1)\n",
    )
    .unwrap_err();
    let messages: Vec<_> = e.diagnostics().iter().map(|d| d.one_line()).collect();
    assert_eq!(
        messages,
        [
            "jobs/test.rhai:1:7: `catch_up` without `schedule` or `every`; add `const schedule = \"...\";` or `const every = \"...\";`, or remove `catch_up`",
            "jobs/test.rhai:1:18: invalid `catch_up` value \"lastest\"; did you mean `latest`?",
            "jobs/test.rhai:3:19: `keep_runs` must be at least 1, found 0; `keep_runs` is how many runs of this job the history keeps; remove it for the default retention",
            "jobs/test.rhai:4:7: unknown setting `keep_fro`; did you mean `keep_for`? (if `keep_fro` is the script's own constant, give it a name less like a setting's)",
        ]
    );
}

#[test]
fn rhai_catch_up_window_without_catch_up() {
    insta::assert_snapshot!(render(RHAI, "const every = \"1h\";\nconst catch_up_window = \"6h\";\nsleep(1)\n"));
}

#[test]
fn a_setting_value_is_checked_like_in_toml() {
    let e = load_str(Path::new(RHAI), "const timeout = 30;\nconst max_call_depth = 0;\nsleep(1)\n").unwrap_err();
    let messages: Vec<_> = e.diagnostics().iter().map(|d| d.one_line()).collect();
    assert_eq!(
        messages,
        [
            "jobs/test.rhai:1:17: `timeout` must be a duration with a unit, found a bare number; write `const timeout = \"30s\";` (or \"30ms\", \"30m\", ...)",
            "jobs/test.rhai:2:24: `max_call_depth` must be a positive integer, found 0",
        ]
    );
}

// ---- Rhai jobs: mistakes --------------------------------------------------

#[test]
fn rhai_syntax_error() {
    insta::assert_snapshot!(render(RHAI, "const every = \"1m\";\nlet x = 1\nlet y = 2;\nprint(x + y);\n"));
}

#[test]
fn rhai_import() {
    insta::assert_snapshot!(render(RHAI, "const every = \"1m\";\nlet x = 1;\nimport \"tools\" as t;\nt::run(x);\n"));
}

#[test]
fn inline_script_import() {
    insta::assert_snapshot!(render(
        TOML,
        "[[step]]\nname = \"calc\"\nscript = \"\"\"\nfn f() { import \"m\" as m; 1 }\nf()\n\"\"\"\n"
    ));
}

#[test]
fn rhai_non_literal_setting() {
    insta::assert_snapshot!(render(RHAI, "const timeout = \"3\" + \"0s\";\nsleep(1)\n"));
}

#[test]
fn rhai_setting_computed_by_a_call() {
    let e = load_str(Path::new(RHAI), "fn compute() { \"30s\" }\nconst every = compute();\n").unwrap_err();
    let d = &e.diagnostics()[0];
    assert_eq!(d.line_col(), Some((2, 1)));
    assert_eq!(
        d.message(),
        "settings are read without running the script, so `every` must be a literal such as \"30s\""
    );
}

#[test]
fn rhai_setting_declared_with_let() {
    insta::assert_snapshot!(render(RHAI, "let schedule = \"0 * * * *\";\nsleep(1)\n"));
}

#[test]
fn rhai_misspelt_setting() {
    insta::assert_snapshot!(render(RHAI, "const shedule = \"0 * * * *\";\nsleep(1)\n"));
}

#[test]
fn rhai_misspelt_limit() {
    let e = load_str(Path::new(RHAI), "const timout = \"5s\";\nconst max_operatons = 5;\n1\n").unwrap_err();
    let helps: Vec<_> = e.diagnostics().iter().map(|d| d.help_text().unwrap_or("").split('?').next()).collect();
    assert_eq!(helps, [Some("did you mean `timeout`"), Some("did you mean `max_operations`")]);
}

#[test]
fn rhai_misspelt_semaphore_and_jitter() {
    let e = load_str(Path::new(RHAI), "const semaphor = \"db\";\nconst jiter = \"5s\";\n1\n").unwrap_err();
    let helps: Vec<_> = e.diagnostics().iter().map(|d| d.help_text().unwrap_or("").split('?').next()).collect();
    assert_eq!(helps, [Some("did you mean `semaphore`"), Some("did you mean `jitter`")]);
}

#[test]
fn rhai_jitter_without_a_trigger() {
    insta::assert_snapshot!(render(RHAI, "const jitter = \"30s\";\nsleep(1)\n"));
}

#[test]
fn rhai_invalid_semaphore_name() {
    insta::assert_snapshot!(render(RHAI, "const every = \"1h\";\nconst semaphore = \"nightly backup\";\nsleep(1)\n"));
}

#[test]
fn rhai_invalid_schedule() {
    insta::assert_snapshot!(render(RHAI, "// nightly\nconst schedule = \"0 25 * * *\";\nsleep(1)\n"));
}

#[test]
fn rhai_setting_set_twice() {
    insta::assert_snapshot!(render(RHAI, "const every = \"1m\";\nconst every = \"2m\";\nsleep(1)\n"));
}

#[test]
fn rhai_schedule_and_every() {
    insta::assert_snapshot!(render(RHAI, "const schedule = \"0 * * * *\";\nconst every = \"2m\";\nsleep(1)\n"));
}

#[test]
fn rhai_empty_file() {
    insta::assert_snapshot!(render(RHAI, "// nothing yet\n"));
}

// ---- TOML script steps ------------------------------------------------------

#[test]
fn an_inline_script_step_records_where_it_starts() {
    let src = "[[step]]\nname = \"a\"\nsleep = \"1s\"\n\n[[step]]\nname = \"b\"\nblocking = true\nscript = \"\"\"\nlet x = steps.a.output;\nx + 1\n\"\"\"\n";
    let job = super::load_str(Path::new(TOML), src).unwrap();
    let steps = script_steps(&job);
    assert_eq!(steps.len(), 1);
    assert_eq!(&*steps[0].code, "let x = steps.a.output;\nx + 1\n");
    assert_eq!(steps[0].source, ScriptSource::Inline { line: 9 });
    assert_eq!(steps[0].limits, LimitOverrides::default());

    let job = super::load_str(Path::new(TOML), "[[step]]\nname = \"a\"\nscript = \"40 + 2\"\n").unwrap();
    assert_eq!(script_steps(&job)[0].source, ScriptSource::Inline { line: 3 });
}

#[test]
fn script_limits_apply_to_every_script_step() {
    let src = "[script_limits]\nmax_operations = 500\nwall_time = \"2s\"\n\n[[step]]\nname = \"a\"\nscript = \"1\"\n\n[[step]]\nname = \"b\"\nscript = '2'\n";
    let job = super::load_str(Path::new(TOML), src).unwrap();
    let expected = LimitOverrides {
        max_operations: Some(500),
        wall_time: Some(Duration::from_secs(2)),
        ..LimitOverrides::default()
    };
    let steps = script_steps(&job);
    assert_eq!(steps.len(), 2);
    assert!(steps.iter().all(|s| s.limits == expected));
}

#[test]
fn script_limits_keys_are_checked() {
    let e = load_str(Path::new(TOML), "[script_limits]\nmax_ops = 5\n[[step]]\nname = \"a\"\nscript = \"1\"\n")
        .unwrap_err();
    assert_eq!(e.diagnostics()[0].message(), "unknown key `max_ops` in `[script_limits]`");
}

#[test]
fn a_script_file_step_reads_the_file_next_to_the_job() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("lib")).unwrap();
    std::fs::write(dir.path().join("lib/sum.rhai"), "let n = 40;\nn + 2\n").unwrap();
    let job_file = dir.path().join("job.toml");
    std::fs::write(&job_file, "[[step]]\nname = \"sum\"\nscript_file = \"lib/sum.rhai\"\n").unwrap();
    let job = load_file(&job_file).unwrap();
    let steps = script_steps(&job);
    assert_eq!(&*steps[0].code, "let n = 40;\nn + 2\n");
    assert_eq!(steps[0].source, ScriptSource::File(dir.path().join("lib/sum.rhai")));
}

#[test]
fn script_steps_reading_later_steps_are_refused_like_templates() {
    let e = load_str(
        Path::new(TOML),
        "[[step]]\nname = \"a\"\nscript = \"\"\"\nlet x = 1;\nsteps.b.output + x\n\"\"\"\n[[step]]\nname = \"b\"\nsleep = \"1s\"\n",
    )
    .unwrap_err();
    let d = &e.diagnostics()[0];
    assert_eq!(d.line_col(), Some((5, 1)), "{e}");
    assert_eq!(d.message(), "`b` has not run yet when `a` starts: it comes later in sequence `main`");
}

#[test]
fn escapes_in_an_inline_script_still_point_at_the_right_place() {
    let e = load_str(Path::new(TOML), "[[step]]\nname = \"a\"\nscript = \"let s = \\\"\\u00e9\\\";\\nlet = 2;\"\n")
        .unwrap_err();
    // Rhai's 2:5 (the `=` of `let = 2`) is after `\"`, `\u00e9` and `\n` on file line 3.
    let d = &e.diagnostics()[0];
    assert_eq!(d.line_col(), Some((3, 36)), "{}", d.render(false));
}

#[test]
fn inline_script_syntax_error() {
    insta::assert_snapshot!(render(
        TOML,
        "description = \"report\"\n\n[[step]]\nname = \"report\"\nscript = \"\"\"\nlet total = 0;\nfor x in [1, 2, 3] {\n    total += x\n    total *= 2;\n}\ntotal\n\"\"\"\n"
    ));
}

/// Renders with the temp folder replaced by `[TMP]`, for stable snapshots.
fn render_in(dir: &Path, e: &LoadError) -> String {
    assert_eq!(e.diagnostics().len(), 1, "{e}");
    e.diagnostics()[0].render(false).replace(&dir.display().to_string(), "[TMP]")
}

#[test]
fn script_file_syntax_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("broken.rhai"), "// sums\nlet n = [1, 2;\nn\n").unwrap();
    let job_file = dir.path().join("job.toml");
    std::fs::write(&job_file, "[[step]]\nname = \"sum\"\nscript_file = \"broken.rhai\"\n").unwrap();
    let e = load_file(&job_file).unwrap_err();
    insta::assert_snapshot!(render_in(dir.path(), &e));
}

#[test]
fn missing_script_file() {
    let dir = tempfile::tempdir().unwrap();
    let job_file = dir.path().join("job.toml");
    std::fs::write(&job_file, "[[step]]\nname = \"sum\"\nscript_file = \"gone.rhai\"\n").unwrap();
    let e = load_file(&job_file).unwrap_err();
    insta::assert_snapshot!(render_in(dir.path(), &e));
}

mod never_panics {
    //! Whatever a `.rhai` file or a `script` step holds, loading it returns a
    //! job or diagnostics.

    use std::path::Path;

    use proptest::prelude::*;

    use crate::load::load_str;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn on_arbitrary_rhai(text in "\\PC{0,300}") {
            let _ = load_str(Path::new("fuzz.rhai"), &text);
        }

        #[test]
        fn on_rhai_like_settings(text in "((const|let|export const) [a-z_]{1,14} = (\"[^\"\\n]{0,12}\"|-?[0-9_.e]{1,6}|\\[[0-9, \"a]{0,8}\\]|#\\{ ?[a-z]{0,3}: ?[0-9]{0,2} ?\\}|'.'|`[^`]{0,5}`|[a-z]+\\(\\)|true);?\\n|[a-z(){}\\[\\];. \"]{0,12}\\n){0,12}") {
            let _ = load_str(Path::new("fuzz.rhai"), &text);
        }

        #[test]
        fn on_inline_scripts(body in "[^\"\\\\]{0,80}|(\\\\[ntu\"\\\\]|[a-z{}();. =\\n])*") {
            let src = format!("[[step]]\nname = \"a\"\nscript = \"\"\"\n{body}\"\"\"\n[[step]]\nname = \"b\"\nscript = \"{}\"\n", body.replace('\n', "\\n"));
            let _ = load_str(Path::new("fuzz.toml"), &src);
        }
    }
}

#[test]
fn rhai_unknown_user() {
    insta::assert_snapshot!(render(RHAI, "const user = \"no-such-user-gatherd\";\nsleep(1)\n"));
}

#[test]
#[allow(clippy::print_stderr)] // a skipped test says so
fn rhai_user_is_read_like_the_toml_key() {
    let Some(uid) = nix::unistd::User::from_name("nobody").ok().flatten().map(|u| u.uid.as_raw()) else {
        eprintln!("SKIPPED: this host has no user `nobody`");
        return;
    };
    let job = load_rhai("const user = \"nobody\";\nsleep(1)\n");
    assert_eq!(job.identity.and_then(|i| i.user.as_ref().map(|u| u.uid)), Some(uid));
}

#[test]
fn max_output_is_a_setting_of_rhai_jobs_too() {
    let job = load_rhai("const max_output = #{ head: 20, tail: 30 };\nawait_step(shell(\"seq 1 9\"))\n");
    assert_eq!(job.max_output, crate::job::MaxOutput { head: Some(20), tail: Some(30) });
    let e = load_str(Path::new(RHAI), "const max_output = #{ head: 2000000000 };\n1\n").unwrap_err();
    let messages: Vec<_> = e.diagnostics().iter().map(|d| d.one_line()).collect();
    assert_eq!(
        messages,
        ["jobs/test.rhai:1:29: `max_output.head` must be a number of bytes from 0 to 1073741824, found 2000000000"]
    );
}

#[test]
fn top_level_handler_functions_with_one_parameter_are_handlers() {
    let job = load_rhai("fn on_exit(run) { run.status }\nfn on_failure() { 1 }\nfn helper(run) { 2 }\nsleep(1)\n");
    let Some(Node::Script(exit)) = job.handlers.on_exit.as_deref() else { panic!("no on_exit: {:?}", job.handlers) };
    assert_eq!((exit.name.as_str(), exit.entry.as_deref()), ("on_exit", Some("on_exit")));
    // Without its `run` parameter it is an ordinary function.
    assert!(job.handlers.on_failure.is_none() && job.handlers.on_success.is_none());
    assert_eq!(script_node(&job).entry, None);
}
