//! `gatherd check` end to end: every bad-input case the loader knows, through
//! the real binary: exit 1, the file:line:col and the reason on stderr, and
//! nothing run.

mod support;

use support::*;

#[test]
fn the_example_jobs_folder_is_valid() {
    let output = gatherd().arg("check").arg(jobs_dir()).output().expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    for job in [
        "seed-sequential",
        "seed-gather",
        "seed-as-completed",
        "seed-to-thread",
        "health-check",
        "system-report",
        "check-disks",
    ] {
        assert!(stdout.contains(&format!("ok      {}", jobs_dir().join(format!("{job}.toml")).display())), "{stdout}");
    }
}

const STEP_A: &str = "[[step]]\nname = \"a\"\nsleep = \"1s\"\n";

/// (what, file content, place, words the message must contain).
const CASES: &[(&str, &str, &str, &str)] = &[
    ("unknown key", "[[step]]\nname = \"a\"\nsleep = \"1s\"\ncolour = \"red\"\n", ":4:1", "unknown key `colour`"),
    ("misspelt key", "[[step]]\nname = \"a\"\nsleep = \"1s\"\nretires = 3\n", ":4:1", "did you mean `retries`?"),
    ("two kind keys", "[[step]]\nname = \"a\"\nsleep = \"1s\"\nexec = [\"true\"]\n", ":4:1", "two kinds"),
    ("no kind key", "[[step]]\nname = \"a\"\nretries = 1\n", ":1:1", "has no kind"),
    (
        "unknown name in a group",
        "[[group]]\nname = \"main\"\ngather = [\"raed\"]\n[[step]]\nname = \"read\"\nsleep = \"1s\"\n",
        ":3:11",
        "did you mean `read`?",
    ),
    (
        "used in two places",
        "[[group]]\nname = \"main\"\ngather = [\"a\", \"a\"]\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n",
        ":3:",
        "used in two places",
    ),
    (
        "cycle among groups",
        "[[group]]\nname = \"r\"\nsequence = [\"s\"]\n[[group]]\nname = \"x\"\ngather = [\"y\"]\n[[group]]\nname = \"y\"\ngather = [\"x\"]\n[[step]]\nname = \"s\"\nsleep = \"1s\"\n",
        ":9:11",
        "cycle",
    ),
    (
        "duplicate names",
        "[[step]]\nname = \"a\"\nsleep = \"1s\"\n[[step]]\nname = \"a\"\nsleep = \"2s\"\n",
        ":5:8",
        "two steps are named `a`",
    ),
    ("empty group", "[[group]]\nname = \"main\"\ngather = []\n", ":3:", "is empty"),
    (
        "two group modes",
        "[[group]]\nname = \"main\"\ngather = [\"a\"]\nrace = [\"a\"]\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n",
        ":4:1",
        "both `gather` and `race`",
    ),
    ("invalid duration", "[[step]]\nname = \"a\"\nsleep = \"1 fortnight\"\n", ":3:9", "invalid duration for `sleep`"),
    (
        "invalid cron",
        "schedule = \"61 * * * *\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n",
        ":1:13",
        "invalid cron schedule",
    ),
    (
        "unknown timezone",
        "schedule = \"0 * * * *\"\ntimezone = \"Europe/Berln\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n",
        ":2:12",
        "unknown timezone",
    ),
    (
        "limit = 0",
        "[[group]]\nname = \"main\"\ngather = [\"a\"]\nlimit = 0\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n",
        ":4:9",
        "`limit` must be at least 1",
    ),
    (
        "negative retries",
        "[[step]]\nname = \"a\"\nsleep = \"1s\"\nretries = -1\n",
        ":4:11",
        "`retries` must be 0 or more",
    ),
    (
        "each on a gather group",
        "[[group]]\nname = \"main\"\ngather = [\"a\"]\neach = \"e\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n[[step]]\nname = \"e\"\nsleep = \"1s\"\n",
        ":4:",
        "only allowed on `as_completed` groups",
    ),
    (
        "template referencing an unknown step",
        "[[step]]\nname = \"a\"\nsleep = \"1s\"\n[[step]]\nname = \"b\"\nshell = \"echo {{ steps.z.output }}\"\n",
        ":6:",
        "no step or group is named `z`",
    ),
    (
        "template referencing a step that may not have finished",
        "[[group]]\nname = \"main\"\ngather = [\"a\", \"b\"]\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n[[step]]\nname = \"b\"\nshell = \"echo {{ steps.a.output }}\"\n",
        ":9:",
        "may not have finished",
    ),
    (
        "template reading an earlier child of a sequence with on_error = continue",
        "[[group]]\nname = \"main\"\nsequence = [\"a\", \"b\"]\non_error = \"continue\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n[[step]]\nname = \"b\"\nshell = \"echo {{ steps.a.output }}\"\n",
        ":10:18",
        "`a` may have failed when `b` starts",
    ),
    (
        "template with a misspelt attribute",
        "[[step]]\nname = \"a\"\nsleep = \"1s\"\n[[step]]\nname = \"b\"\nshell = \"echo {{ steps.a.outptu }}\"\n",
        ":6:26",
        "did you mean `steps.a.output`?",
    ),
    (
        "template with an unknown filter",
        "[[step]]\nname = \"a\"\nsleep = \"1s\"\n[[step]]\nname = \"b\"\nshell = \"echo {{ steps.a.output | uper }}\"\n",
        ":6:35",
        "unknown filter `uper`",
    ),
    ("invalid TOML syntax", "[[step]]\nname = \"a\nsleep = \"1s\"\n", ":2:", "invalid TOML"),
    ("wrong value type", "[[step]]\nname = \"a\"\nsleep = \"1s\"\nretries = \"3\"\n", ":4:11", "must be an integer"),
];

#[test]
fn every_bad_input_gets_a_placed_message_and_exit_1() {
    let dir = tempfile::tempdir().expect("temp");
    let mut failures = Vec::new();
    for (i, (what, text, place, words)) in CASES.iter().enumerate() {
        let file = write(dir.path(), &format!("case{i}.toml"), text);
        let output = gatherd().arg("check").arg(&file).output().expect("runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let located = format!("case{i}.toml{place}");
        if output.status.code() != Some(1) || !stderr.contains(&located) || !stderr.contains(words) {
            failures.push(format!(
                "{what}: exit {:?}, wanted `{located}` and `{words}` in:\n{stderr}",
                output.status.code()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn a_non_utf8_file_is_refused_with_its_place() {
    let dir = tempfile::tempdir().expect("temp");
    let file = dir.path().join("latin1.toml");
    std::fs::write(&file, b"[[step]]\nname = \"caf\xe9\"\nsleep = \"1s\"\n").expect("write");
    let output = gatherd().arg("check").arg(&file).output().expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not valid UTF-8") && stderr.contains("line 2"), "{stderr}");
}

#[test]
fn an_empty_file_is_refused() {
    let dir = tempfile::tempdir().expect("temp");
    let file = write(dir.path(), "empty.toml", "");
    let output = gatherd().arg("check").arg(&file).output().expect("runs");
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("the file is empty"));
}

#[test]
fn a_10_mb_file_is_refused_by_its_size() {
    let dir = tempfile::tempdir().expect("temp");
    let file = dir.path().join("huge.toml");
    let mut text = String::from(STEP_A);
    text.push_str(&"# padding\n".repeat(1_000_000));
    std::fs::write(&file, text).expect("write");
    let output = gatherd().arg("check").arg(&file).output().expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("too large") && stderr.contains("huge.toml"), "{stderr}");
}

#[test]
fn one_bad_file_does_not_hide_the_good_ones() {
    let dir = tempfile::tempdir().expect("temp");
    write(dir.path(), "good.toml", STEP_A);
    write(dir.path(), "bad.toml", "[[step]]\nname = \"a\"\n");
    write(dir.path(), ".hidden.toml", "not toml at all [");
    write(dir.path(), "draft.toml~", "not toml at all [");
    let output = gatherd().arg("check").arg(dir.path()).output().expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("ok      ") && stdout.contains("good.toml"), "{stdout}");
    assert!(stdout.contains("invalid ") && stdout.contains("bad.toml"), "{stdout}");
    assert!(!stdout.contains("hidden") && !stdout.contains("draft"), "{stdout}");
}

#[test]
fn check_runs_nothing() {
    let dir = tempfile::tempdir().expect("temp");
    let file =
        write(dir.path(), "w.toml", "[[step]]\nname = \"w\"\nwrite_file = { path = \"touched\", content = \"x\" }\n");
    let output = gatherd().arg("check").arg(&file).output().expect("runs");
    assert_eq!(output.status.code(), Some(0));
    assert!(!dir.path().join("touched").exists());
}

#[test]
fn a_job_file_whose_name_is_not_text_is_invalid() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().expect("temp dir");
    write(dir.path(), "a.toml", STEP_A);
    std::fs::write(dir.path().join(std::ffi::OsStr::from_bytes(b"caf\xe9.toml")), STEP_A).expect("write");
    let output = gatherd().arg("check").arg(dir.path()).output().expect("runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("invalid ") && stdout.contains("caf\u{fffd}.toml"), "{stdout}");
    assert!(stderr.contains("not valid UTF-8"), "{stderr}");
    assert!(stderr.contains("1 of 2 job files invalid"), "{stderr}");
}

#[test]
fn a_symlink_out_of_the_folder_is_refused_and_its_content_never_printed() {
    let outside = tempfile::tempdir().expect("temp dir");
    let secret = write(outside.path(), "secret.toml", "root:SECRET-HASH:19000:0:99999:7:::\n");
    let dir = tempfile::tempdir().expect("temp dir");
    write(dir.path(), "a.toml", STEP_A);
    std::os::unix::fs::symlink(&secret, dir.path().join("shadow.toml")).expect("symlink");
    let output = gatherd().arg("check").arg(dir.path()).output().expect("runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(!stdout.contains("SECRET") && !stderr.contains("SECRET"), "{stdout}\n{stderr}");
    assert!(stdout.contains(&format!("invalid {}", dir.path().join("shadow.toml").display())), "{stdout}");
    assert!(stderr.contains("outside the folder"), "{stderr}");
}

/// `check --config FILE`: five kinds of mistake, each at its FILE:LINE:COL
/// with what was expected, exit 1; the shipped example is valid, exit 0.
#[test]
fn check_config_places_each_mistake_and_passes_the_example() {
    let dir = tempfile::tempdir().expect("temp dir");
    // (what, config text, place, words the message must contain).
    let cases: &[(&str, &str, &str, &str)] = &[
        ("misspelt key", "[script_limits]\nmax_operatons = 5\n", ":2:1", "did you mean `max_operations`?"),
        ("wrong type", "node = \"n\"\nmax_concurrent_runs = \"ten\"\n", ":2:23", "expected a whole number"),
        (
            "script limit out of range",
            "[script_limits]\nmax_expr_depth = 1000\n",
            ":2:18",
            "`script_limits.max_expr_depth` must be from 1 to 128, found 1000",
        ),
        ("bad duration", "shutdown_grace = \"soon\"\n", ":1:18", "invalid duration \"soon\""),
        ("TOML syntax", "node = \"n\"\nkeep_runs = = 3\n", ":2:13", "×"),
    ];
    for (what, text, place, words) in cases {
        let file = dir.path().join(format!("{}.toml", what.replace(' ', "-")));
        std::fs::write(&file, text).expect("write");
        let output = gatherd().arg("check").arg("--config").arg(&file).output().expect("runs");
        let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert_eq!(output.status.code(), Some(1), "{what}: {stdout}\n{stderr}");
        assert!(stdout.contains(&format!("invalid {}", file.display())), "{what}: {stdout}");
        let located = format!("{}{place}", file.display());
        assert!(stderr.contains(&located), "{what}: no {located} in\n{stderr}");
        assert!(stderr.contains(words), "{what}: no {words:?} in\n{stderr}");
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    }
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/config.toml");
    let output = gatherd().arg("check").arg("--config").arg(&example).output().expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains(&format!("ok      {} (config)", example.display())), "{stdout}");
}

/// `check --next 5`: a Berlin job's fires across the 2027-03-28
/// spring-forward, in Berlin time, with the DST rule named where it applied;
/// `--after` fixes "now", so the output is known.
#[test]
fn check_next_lists_known_fire_times_and_the_dst_rule_applied() {
    let dir = tempfile::tempdir().expect("temp dir");
    let job = write(
        dir.path(),
        "nightly.toml",
        "schedule = \"30 2 * * *\"\ntimezone = \"Europe/Berlin\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n",
    );
    let output =
        gatherd().args(["check", "--next", "5", "--after", "2027-03-25T12:00:00Z"]).arg(&job).output().expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let expected = format!(
        "ok      {file} (1 steps)\n\
         {file}: schedule \"30 2 * * *\" in Europe/Berlin, the next 5 fires after 2027-03-25 12:00:00 UTC:\n  \
         Fri 2027-03-26 02:30:00 CET   (2027-03-26 01:30:00 UTC)\n  \
         Sat 2027-03-27 02:30:00 CET   (2027-03-27 01:30:00 UTC)\n  \
         Sun 2027-03-28 03:00:00 CEST  (2027-03-28 01:00:00 UTC)  02:30 does not exist (spring forward): runs once, when the gap ends\n  \
         Mon 2027-03-29 02:30:00 CEST  (2027-03-29 00:30:00 UTC)\n  \
         Tue 2027-03-30 02:30:00 CEST  (2027-03-30 00:30:00 UTC)\n",
        file = job.display()
    );
    assert_eq!(stdout, expected);
    // Fall back: the first pass only, said.
    let output =
        gatherd().args(["check", "--next", "1", "--after", "2027-10-30T12:00:00Z"]).arg(&job).output().expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(
            "Sun 2027-10-31 02:30:00 CEST  (2027-10-31 00:30:00 UTC)  02:30 comes twice (fall back): runs in the first pass only"
        ),
        "{stdout}"
    );
    // A bad instant is the command line's mistake: exit 2, saying the form.
    let output = gatherd().args(["check", "--next", "1", "--after", "tomorrow"]).arg(&job).output().expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("RFC 3339"), "{stderr}");
}

/// `check --json`: one JSON document on stdout (files, valid, each
/// diagnostic's file/line/col and text), nothing on stderr; `check -q`:
/// only the invalid files and their diagnostics, nothing when all is well.
#[test]
fn check_json_is_one_document_and_quiet_prints_only_the_invalid() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = write(dir.path(), "good.toml", STEP_A);
    let bad = write(dir.path(), "bad.toml", "[[step]]\nname = \"a\"\nsleep = \"1s\"\nretires = 3\n");
    let config = write(dir.path(), "config.conf", "[script_limits]\nmax_operatons = 5\n");
    let output =
        gatherd().arg("check").arg("--json").arg("--config").arg(&config).arg(dir.path()).output().expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr, "", "--json says everything on stdout");
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}): {}", String::from_utf8_lossy(&output.stdout)));
    assert_eq!(doc["valid"], false, "{doc}");
    let files = doc["files"].as_array().expect("files");
    let entry = |path: &std::path::Path| {
        files.iter().find(|f| f["path"] == path.display().to_string()).unwrap_or_else(|| panic!("{path:?} in {doc}"))
    };
    assert_eq!(
        (&entry(&good)["valid"], &entry(&good)["kind"], &entry(&good)["steps"]),
        (&true.into(), &"job".into(), &1.into())
    );
    assert_eq!(entry(&good)["diagnostics"], serde_json::json!([]));
    let d = &entry(&bad)["diagnostics"][0];
    assert_eq!(entry(&bad)["valid"], false);
    assert_eq!((&d["file"], &d["line"], &d["col"]), (&bad.display().to_string().into(), &4.into(), &1.into()), "{d}");
    assert_eq!(d["help"], "did you mean `retries`?");
    assert!(d["text"].as_str().is_some_and(|t| t.contains("retires = 3") && !t.contains('\u{1b}')), "{d}");
    let c = &entry(&config);
    assert_eq!(
        (&c["kind"], &c["valid"], &c["diagnostics"][0]["line"]),
        (&"config".into(), &false.into(), &2.into()),
        "{c}"
    );
    assert_eq!(files.len(), 3, "{doc}");

    let output = gatherd().arg("check").arg("-q").arg(dir.path()).output().expect("runs");
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&output.stdout), format!("invalid {}\n", bad.display()));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("{}:4:1", bad.display())), "{stderr}");
    assert!(!stderr.contains("job files invalid"), "no summary under -q: {stderr}");
    let output = gatherd().arg("check").arg("--quiet").arg(&good).output().expect("runs");
    assert_eq!(output.status.code(), Some(0));
    assert_eq!((output.stdout.as_slice(), output.stderr.as_slice()), (&b""[..], &b""[..]));
}
