//! The event stream of a run (`GET /runs/{id}/events`) as a real SSE client
//! sees it: the raw `text/event-stream` from the real daemon over 127.0.0.1,
//! parsed by the rules of the SSE spec (`id:`, `event:`, `data:` fields,
//! blocks ended by a blank line, `:` comments ignored). Issue 12, items 18
//! and 19: a stream opened right after the trigger starts at `run_started`,
//! every event has an `id:`, `Last-Event-ID` resumes exactly after it, and
//! the replay of a finished run is the live stream, event for event.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::*;

const LONG: Duration = Duration::from_secs(20);

/// A run with a gather (a group under the script's node), a step that fails,
/// is retried once and fails again (`attempt_failed`), and script log lines
/// before and after. Scheduled once a year, so it runs only when triggered.
const JOB: &str = r#"
const schedule = "0 0 3 1 1 *";
print("begin");
let r = gather([
    sleep(0.2, "a").named("a"),
    sleep(0.3, "b").named("b"),
    exec(["false"]).named("flaky").retries(1).retry_delay(0.1),
], true);
print(`done ${r.len()}`);
r.len()
"#;

/// One server-sent event: its `id:`, `event:` and `data:` (as JSON).
#[derive(Debug, Clone, PartialEq)]
struct Sse {
    id: Option<String>,
    event: String,
    data: Value,
}

/// The events of a raw `text/event-stream` body.
fn parse(body: &str) -> Vec<Sse> {
    let body = body.replace("\r\n", "\n");
    let mut events = Vec::new();
    for block in body.split("\n\n") {
        let (mut id, mut event, mut data) = (None, String::from("message"), String::new());
        let mut any = false;
        for line in block.lines() {
            if line.starts_with(':') || line.is_empty() {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            any = true;
            match field {
                "id" => id = Some(value.to_string()),
                "event" => event = value.to_string(),
                "data" => {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(value);
                }
                _ => {}
            }
        }
        if any {
            let data = serde_json::from_str(&data).unwrap_or_else(|e| panic!("data is not JSON ({e}): {data}"));
            events.push(Sse { id, event, data });
        }
    }
    events
}

/// The whole stream of a run (it ends after `run_finished`).
fn stream(d: &Daemon, path: &str, headers: &[(&str, &str)]) -> Vec<Sse> {
    let (status, body) = http(d.api(), "GET", path, headers, "");
    assert_eq!(status, 200, "{body}");
    parse(&body)
}

/// Triggers `job` and answers the trigger's JSON.
fn trigger(d: &Daemon, job: &str) -> Value {
    let (status, body) = http(d.api(), "POST", &format!("/jobs/{job}/trigger"), &[], "");
    assert_eq!(status, 201, "{body}");
    serde_json::from_str(&body).expect("JSON")
}

fn names(events: &[Sse]) -> Vec<&str> {
    events.iter().map(|e| e.event.as_str()).collect()
}

#[test]
fn a_stream_opened_right_after_the_trigger_starts_at_run_started_and_replays_the_same() {
    let d = Daemon::start(&[("mixed.rhai", JOB)], &[], &[]);
    let answer = trigger(&d, "mixed.rhai");
    let id = answer["run_id"].as_i64().expect("a run id");
    assert_eq!(answer["events"], format!("/runs/{id}/events?from=0"), "the trigger names the stream: {answer}");
    let live = stream(&d, &format!("/runs/{id}/events"), &[]);

    assert_eq!(live.first().map(|e| e.event.as_str()), Some("run_started"), "{:?}", names(&live));
    assert_eq!(live.last().map(|e| e.event.as_str()), Some("run_finished"), "{:?}", names(&live));
    let ids: Vec<Option<String>> = live.iter().map(|e| e.id.clone()).collect();
    let want: Vec<Option<String>> = (0..live.len()).map(|i| Some(i.to_string())).collect();
    assert_eq!(ids, want, "every event has an id: its place in the run: {:?}", names(&live));
    for kind in ["node_started", "attempt_failed", "node_finished", "log"] {
        assert!(live.iter().any(|e| e.event == kind), "no {kind} in {:?}", names(&live));
    }
    for e in &live {
        assert_eq!(e.data["event"], e.event.as_str(), "data names its event: {e:?}");
    }
    // A group ends after its children, and the log lines are where printed.
    let at = |event: &str, path: &str| {
        live.iter()
            .position(|e| e.event == event && e.data["path"].as_str().is_some_and(|p| p.ends_with(path)))
            .unwrap_or_else(|| panic!("no {event} of {path}: {live:?}"))
    };
    assert!(at("node_finished", "/a") < at("node_finished", "/gather_1"), "{:?}", names(&live));
    let done = live.iter().position(|e| e.data["text"] == "done 3").expect("the second log line");
    assert!(done < at("node_finished", "main"), "{:?}", names(&live));

    // Replayed after the run ended: the same sequence, ids and data included.
    assert!(d.wait_for(LONG, |l| finished(l, "mixed.rhai", "succeeded")), "{}", d.dump());
    let replay = stream(&d, &format!("/runs/{id}/events?from=0"), &[]);
    assert_eq!(replay.len(), live.len(), "live {:?}\nreplay {:?}", names(&live), names(&replay));
    for (l, r) in live.iter().zip(&replay) {
        assert_eq!(l, r, "replay differs from live");
    }

    // Last-Event-ID (the header a reconnecting EventSource sends) resumes
    // exactly after that event; `from` starts at one.
    let resumed = stream(&d, &format!("/runs/{id}/events?from=0"), &[("Last-Event-ID", "4")]);
    assert_eq!(resumed, live[5..].to_vec());
    let from = stream(&d, &format!("/runs/{id}/events?from=3"), &[]);
    assert_eq!(from, live[3..].to_vec());
}

#[test]
fn a_stream_of_a_running_run_resumed_with_last_event_id_misses_nothing() {
    // A slower run: the resumed stream joins it while it is in flight.
    let slow = r#"
const schedule = "0 0 3 1 1 *";
print("one");
await_step(sleep(0.5).named("first"));
print("two");
await_step(sleep(0.5).named("second"));
print("three");
"#;
    let d = Daemon::start(&[("slow.rhai", slow)], &[], &[]);
    let id = trigger(&d, "slow.rhai")["run_id"].as_i64().expect("a run id");
    assert!(d.wait_for(LONG, |l| l["text"] == "two"), "{}", d.dump());
    let resumed = stream(&d, &format!("/runs/{id}/events"), &[("Last-Event-ID", "1")]);
    let all = stream(&d, &format!("/runs/{id}/events?from=0"), &[]);
    assert_eq!(resumed, all[2..].to_vec(), "resumed {:?}\nall {:?}", names(&resumed), names(&all));
    let texts: Vec<&str> = all.iter().filter_map(|e| e.data["text"].as_str()).collect();
    assert_eq!(texts, ["one", "two", "three"]);
}

#[test]
fn bad_positions_are_a_clear_400() {
    let d = Daemon::start(&[("mixed.rhai", JOB)], &[], &[]);
    let id = trigger(&d, "mixed.rhai")["run_id"].as_i64().expect("a run id");
    let (status, body) = http(d.api(), "GET", &format!("/runs/{id}/events?from=x"), &[], "");
    assert_eq!((status, body.contains("from")), (400, true), "{body}");
    let (status, body) = http(d.api(), "GET", &format!("/runs/{id}/events"), &[("Last-Event-ID", "-1")], "");
    assert_eq!((status, body.contains("Last-Event-ID")), (400, true), "{body}");
    let (status, _) = http(d.api(), "GET", "/runs/99999/events?from=0", &[], "");
    assert_eq!(status, 404, "a run that never was");
}
