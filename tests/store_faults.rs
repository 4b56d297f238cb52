//! The run history against hostile values: whatever a job returns, every
//! reader of the history keeps working.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{Daemon, finished, gatherd, http};

const LONG: Duration = Duration::from_secs(30);

#[test]
fn a_result_nested_200_deep_leaves_every_history_reader_working() {
    let daemon = Daemon::start(&[("deep.rhai", "let a = []; for i in 0..200 { a = [a]; } a\n")], &[], &[]);
    assert!(daemon.wait_for(LONG, |l| finished(l, "deep.rhai", "succeeded")), "{}", daemon.dump());
    let addr = daemon.api().to_string();
    let state = daemon.state.path().to_str().expect("a UTF-8 temp path").to_string();
    let cli = |args: &[&str], place: [&str; 2]| {
        let out = gatherd().args(args).args(place).output().expect("gatherd runs");
        assert!(out.status.success(), "gatherd {args:?} {place:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    for place in [["--addr", addr.as_str()], ["--state", state.as_str()]] {
        let runs: Value = serde_json::from_slice(&cli(&["runs", "--json"], place)).expect("runs --json is JSON");
        let id = runs[0]["id"].as_i64().expect("the run is listed");
        let shown: Value =
            serde_json::from_slice(&cli(&["show", &id.to_string(), "--json"], place)).expect("show --json is JSON");
        assert!(shown["result"].to_string().contains("nested deeper than 64 levels"), "{shown}");
        cli(&["runs"], place);
        cli(&["show", &id.to_string()], place);
    }
    cli(&["jobs", "--json"], ["--addr", addr.as_str()]);
    let api = daemon.api();
    for path in ["/runs", "/runs/1", "/jobs"] {
        let (status, body) = http(api, "GET", path, &[], "");
        assert_eq!(status, 200, "GET {path}: {body}");
    }
}
