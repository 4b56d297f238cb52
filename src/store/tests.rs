//! The store as a sink of real runs, crash recovery, batching and claims.

use std::sync::Arc;
use std::time::Duration;

use chrono::{SubsecRound, Utc};
use serde_json::{Value, json};

use super::*;
use crate::exec::{self, BlockingPool, NodeKind, RunContext, RunEvent, RunReport, Status, Stream};
use crate::job::*;

fn sleep(name: &str, ms: u64, output: Value) -> Node {
    Node::Step(Step {
        name: name.into(),
        kind: StepKind::Sleep(SleepStep { duration: Duration::from_millis(ms), output: Some(output) }),
        blocking: false,
        timeout: None,
        retry: Retry::default(),
    })
}

fn group(name: &str, mode: GroupMode, children: Vec<Node>) -> Node {
    Node::Group(Group {
        name: name.into(),
        mode,
        children,
        limit: None,
        on_error: OnError::Continue,
        timeout: None,
        each: None,
        finally: None,
    })
}

fn start(job: &str, trigger: RunTrigger, hash: u8) -> RunStart {
    RunStart {
        job: job.into(),
        trigger,
        fire_time: Utc::now(),
        content_hash: [hash; 32],
        node: "node-a".into(),
        queued: false,
    }
}

async fn open(dir: &tempfile::TempDir) -> SqliteStore {
    open_sqlite(dir.path().join(DB_FILE)).await.expect("open the store")
}

/// The backends the behaviour tests run against: each test below written
/// `async fn NAME(backend: Backend)` is listed in `both!`, which makes it
/// two tests, `NAME::sqlite` and `NAME::postgres`. What is about SQLite's
/// internals (its file, its writer's bursts, its migrations) stays a plain
/// SQLite test.
#[derive(Debug, Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

/// Where a test's history lives: a temp folder (SQLite's file, and the jobs'
/// folder of tests that run jobs) and, for PostgreSQL, a fresh database of
/// the process's throwaway cluster.
struct Place {
    dir: tempfile::TempDir,
    db: Option<(String, String)>,
}

impl Backend {
    fn place(self) -> Place {
        let dir = tempfile::tempdir().unwrap();
        let db = match self {
            Backend::Sqlite => None,
            Backend::Postgres => {
                let url = postgres::cluster::Cluster::fresh_db();
                let name = url.rsplit('/').next().unwrap().to_string();
                Some((name, url))
            }
        };
        Place { dir, db }
    }
}

impl Place {
    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Opens the history (again: the same file or database).
    async fn open(&self) -> Arc<dyn RunStore> {
        match &self.db {
            None => Arc::new(open(&self.dir).await),
            Some((_, url)) => Arc::new(open_postgres(url).await.expect("open the PostgreSQL store")),
        }
    }

    /// `SELECT count(*) FROM {from}`, read beside the store.
    fn count(&self, from: &str) -> i64 {
        let sql = format!("SELECT count(*) FROM {from}");
        match &self.db {
            None => rusqlite::Connection::open(self.dir.path().join(DB_FILE))
                .unwrap()
                .query_row(&sql, [], |r| r.get(0))
                .unwrap(),
            Some((name, _)) => postgres::cluster::Cluster::shared().psql(name, &sql).parse().unwrap(),
        }
    }

    /// How many rows of each table belong to run `id`.
    fn rows_of(&self, id: RunId) -> [i64; 4] {
        ["runs WHERE id", "steps WHERE run_id", "attempts WHERE run_id", "logs WHERE run_id"]
            .map(|t| self.count(&format!("{t} = {id}")))
    }
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name(super::Backend::Sqlite).await;
            }

            #[tokio::test]
            async fn postgres() {
                super::$name(super::Backend::Postgres).await;
            }
        }
    )*};
}

both!(
    recorded_rows_match_the_report_folded_from_the_same_events,
    logs_are_kept_in_order_and_big_outputs_are_bounded,
    recover_interrupts_what_was_running_and_leaves_the_rest,
    runs_are_listed_newest_first_and_filtered,
    jobs_are_upserted,
    a_claim_belongs_to_one_node_until_its_lease_ends,
    reopening_keeps_the_history_and_ids_go_on,
    missed_fires_are_listed_and_survive_recover,
    last_fire_is_the_latest_scheduled_fire_whatever_its_status,
    prune_by_count_keeps_the_newest_and_running_runs_with_their_steps,
    prune_by_age_removes_old_finished_runs_only,
    a_value_nested_200_deep_is_stored_cut_at_the_depth_bound_and_every_read_works,
    a_run_in_flight_says_running_in_its_history_document,
    the_history_document_is_the_report_plus_the_run_record,
    a_runs_lines_read_in_sql_are_the_timelines_lines_for_every_filter,
    the_sql_step_filter_is_wants_path_for_every_short_path_and_step,
    a_queued_run_is_recorded_queued_starts_running_and_a_dead_daemons_is_cancelled_as_never_started
);

/// Runs `job` for real and returns its events.
async fn events_of(job: Job) -> Vec<RunEvent> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    exec::run(Arc::new(job), RunContext::new(BlockingPool::new(2)), tx).await;
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    events
}

/// Records `events` as run `id` and waits until they are written.
async fn record_all(store: &dyn RunStore, id: RunId, events: &[RunEvent]) {
    let recorder = store.recorder();
    for e in events {
        recorder.record(id, e.clone());
    }
    recorder.flush().await.expect("flush");
}

async fn recorded_rows_match_the_report_folded_from_the_same_events(backend: Backend) {
    let dir = backend.place();
    let store = dir.open().await;
    let failing = Step {
        name: "missing".into(),
        kind: StepKind::ReadFile(ReadFileStep { path: Template::literal("no-such-file.txt") }),
        blocking: false,
        timeout: None,
        retry: Retry { retries: 2, delay: Duration::from_millis(1), backoff: 1.0 },
    };
    let stuck = Step {
        name: "stuck".into(),
        kind: StepKind::Sleep(SleepStep { duration: Duration::from_secs(5), output: None }),
        blocking: false,
        timeout: Some(Duration::from_millis(5)),
        retry: Retry::default(),
    };
    let root = group(
        "main",
        GroupMode::Gather,
        vec![
            sleep("a", 8, json!("A")),
            sleep("b", 3, json!({"n": 1, "list": [1, 2]})),
            group("seq", GroupMode::Sequence, vec![sleep("c", 2, json!("C")), sleep("d", 1, json!(null))]),
            Node::Step(failing),
            Node::Step(stuck),
        ],
    );
    let job = Job::for_test("mixed", dir.path(), root);
    let events = events_of(job.clone()).await;
    let mut report = RunReport::new(job.name.clone(), job.file.clone());
    events.iter().for_each(|e| report.apply(e));

    let id = store.begin_run(start("mixed.toml", RunTrigger::Manual, 1)).await.unwrap();
    record_all(&*store, id, &events).await;
    let detail = store.run(id).await.unwrap().expect("the run is there");

    assert_eq!(detail.run.status, RecordedStatus::from(report.status.finished().expect("finished")));
    assert_eq!(detail.run.duration_ms, Some(report.duration_ms));
    assert_eq!(detail.run.error, report.error);
    assert_eq!(detail.run.result, report.result);
    assert_eq!(detail.run.started_at, report.started_at.expect("started").trunc_subsecs(6), "kept to the µs");
    assert!(detail.run.finished_at.is_some());
    let paths = |v: Vec<&str>| v.into_iter().map(String::from).collect::<Vec<_>>();
    assert_eq!(
        paths(detail.steps.iter().map(|s| &*s.path).collect()),
        paths(report.steps.iter().map(|s| &*s.path).collect()),
        "same lines in the same order"
    );
    for (row, line) in detail.steps.iter().zip(&report.steps) {
        assert_eq!(*row.name, *line.name, "{}", line.path);
        assert_eq!(row.kind, line.kind, "{}", line.path);
        assert_eq!(Some(row.status), line.status.finished().map(RecordedStatus::from), "{}", line.path);
        assert_eq!(row.attempts, line.attempts, "{}", line.path);
        assert_eq!(row.start_ms, line.start_ms, "{}", line.path);
        assert_eq!(row.end_ms, line.end_ms, "{}", line.path);
        assert_eq!(row.output, line.output, "{}", line.path);
        assert_eq!(row.error, line.error, "{}", line.path);
        assert_eq!(row.truncated, line.truncated, "{}", line.path);
        let retried: Vec<(u32, &str, u64)> =
            row.retried.iter().map(|a| (a.attempt, a.error.as_str(), a.at_ms)).collect();
        let expected: Vec<(u32, &str, u64)> =
            line.retried.iter().map(|a| (a.attempt, a.error.as_str(), a.at_ms)).collect();
        assert_eq!(retried, expected, "{}", line.path);
    }
    // The run really exercised retries, a timeout and a failure.
    let row = |p: &str| detail.steps.iter().find(|s| &*s.path == p).unwrap_or_else(|| panic!("{p}"));
    assert_eq!(
        (row("main/missing").status, row("main/missing").attempts),
        (RecordedStatus::Finished(Status::Failed), 3)
    );
    assert_eq!(row("main/missing").retried.len(), 2);
    assert_eq!(row("main/stuck").status, RecordedStatus::Finished(Status::TimedOut));
    assert_eq!(row("main/b").output, json!({"n": 1, "list": [1, 2]}));
    assert_eq!(detail.run.status, RecordedStatus::Finished(Status::Failed));
    // The document the API serves reads back into the same types without
    // losing anything (the CLI renders `show` and `trigger --wait` from it).
    let served = serde_json::to_value(detail.document()).unwrap();
    assert!(served["steps"].as_array().unwrap().iter().any(|s| s["retried"].is_array()), "{served:#}");
    let read: RunDocument = serde_json::from_value(served.clone()).unwrap();
    assert_eq!(read.report.steps, detail.steps);
    assert_eq!(serde_json::to_value(&read).unwrap(), served);
    store.close().await.unwrap();
}

async fn logs_are_kept_in_order_and_big_outputs_are_bounded(backend: Backend) {
    let dir = backend.place();
    let store = dir.open().await;
    let id = store.begin_run(start("s.rhai", RunTrigger::Manual, 1)).await.unwrap();
    let path: exec::NodePath = "main/big".into();
    let big = "é".repeat(OUTPUT_BOUND); // 2 bytes each: twice the bound
    let events = vec![
        RunEvent::RunStarted { job: "s".into(), started_at: Utc::now() },
        RunEvent::NodeStarted { path: path.clone(), name: "big".into(), kind: NodeKind::Script, at: Duration::ZERO },
        RunEvent::Log { path: path.clone(), stream: Stream::Print, text: "one".into(), at: Duration::from_millis(1) },
        RunEvent::Log { path: path.clone(), stream: Stream::Debug, text: "two".into(), at: Duration::from_millis(2) },
        RunEvent::NodeFinished {
            path: path.clone(),
            name: "big".into(),
            kind: NodeKind::Script,
            status: Status::Succeeded,
            attempts: 1,
            started: Some(Duration::ZERO),
            at: Duration::from_millis(3),
            output: Some(json!(big)),
            error: None,
            truncated: false,
        },
        RunEvent::RunFinished {
            status: Status::Succeeded,
            result: Some(json!([1, 2])),
            error: None,
            duration: Duration::from_millis(3),
        },
    ];
    record_all(&*store, id, &events).await;
    let detail = store.run(id).await.unwrap().unwrap();
    let logs: Vec<(&str, u64, &str)> =
        detail.logs.iter().map(|l| (l.text.as_str(), l.at_ms, l.stream.as_str())).collect();
    assert_eq!(logs, [("one", 1, "print"), ("two", 2, "debug")]);
    let step = &detail.steps[0];
    assert!(step.truncated);
    let kept = step.output.as_str().expect("still a string");
    assert!(kept.len() <= OUTPUT_BOUND && kept.len() > OUTPUT_BOUND - 4, "{}", kept.len());
    assert!(big.starts_with(kept));
    assert_eq!(detail.run.result, json!([1, 2]));
    store.close().await.unwrap();
}

async fn recover_interrupts_what_was_running_and_leaves_the_rest(backend: Backend) {
    let dir = backend.place();
    let (done, crashed, elsewhere, one_shot);
    {
        let store = dir.open().await;
        done = store.begin_run(start("a.toml", RunTrigger::File, 1)).await.unwrap();
        crashed = store.begin_run(start("a.toml", RunTrigger::File, 2)).await.unwrap();
        let mut other = start("b.toml", RunTrigger::Schedule, 3);
        other.node = "node-b".into();
        elsewhere = store.begin_run(other).await.unwrap();
        one_shot = store.begin_run(start("c.toml", RunTrigger::Schedule, 4)).await.unwrap();
        let finished =
            |status| RunEvent::RunFinished { status, result: None, error: None, duration: Duration::from_millis(5) };
        let started = |name: &str| RunEvent::NodeStarted {
            path: format!("main/{name}").into(),
            name: name.into(),
            kind: NodeKind::Sleep,
            at: Duration::from_millis(1),
        };
        let recorder = store.recorder();
        recorder.record(done, started("x"));
        recorder.record(done, finished(Status::Failed));
        recorder.record(crashed, started("x"));
        recorder.record(crashed, started("y"));
        recorder.record(
            crashed,
            RunEvent::NodeFinished {
                path: "main/y".into(),
                name: "y".into(),
                kind: NodeKind::Sleep,
                status: Status::Succeeded,
                attempts: 1,
                started: Some(Duration::from_millis(1)),
                at: Duration::from_millis(2),
                output: None,
                error: None,
                truncated: false,
            },
        );
        recorder.record(one_shot, finished(Status::Succeeded));
        store.close().await.unwrap(); // like a kill -9 after the last commit: `crashed` never finished
    }
    let store = dir.open().await;
    let recovered = store.recover("node-a", "the daemon stopped while it ran").await.unwrap();
    // SQLite: one daemon per state folder, whose node id is new at each
    // start, so every run left running is its; a fleet's history: only the
    // node's own (a live node's runs are taken over by leases, never here).
    let want = match backend {
        Backend::Sqlite => vec![crashed, elsewhere],
        Backend::Postgres => vec![crashed],
    };
    assert_eq!(recovered.iter().map(|r| r.id).collect::<Vec<_>>(), want);
    assert_eq!(recovered[0].status, RecordedStatus::Interrupted);
    assert_eq!(recovered[0].error.as_deref(), Some("the daemon stopped while it ran"));
    assert!(recovered[0].finished_at.is_some());

    let detail = store.run(crashed).await.unwrap().unwrap();
    assert_eq!(detail.run, recovered[0]);
    let steps: Vec<(&str, RecordedStatus)> = detail.steps.iter().map(|s| (&*s.path, s.status)).collect();
    assert_eq!(
        steps,
        [("main/x", RecordedStatus::Interrupted), ("main/y", RecordedStatus::Finished(Status::Succeeded))]
    );
    let status_of = async |id| store.run(id).await.unwrap().unwrap().run.status;
    assert_eq!(status_of(done).await, RecordedStatus::Finished(Status::Failed));
    let elsewhere_now = match backend {
        Backend::Sqlite => RecordedStatus::Interrupted,
        Backend::Postgres => RecordedStatus::Running,
    };
    assert_eq!(
        status_of(elsewhere).await,
        elsewhere_now,
        "another node's run: the folder's (SQLite), its own (a fleet)"
    );
    assert_eq!(store.run(done).await.unwrap().unwrap().steps[0].status, RecordedStatus::Running);

    assert_eq!(
        store.one_shot_status("a.toml", &[1; 32]).await.unwrap(),
        Some(RecordedStatus::Finished(Status::Failed)),
        "finished, even failed"
    );
    assert_eq!(store.one_shot_status("a.toml", &[2; 32]).await.unwrap(), Some(RecordedStatus::Interrupted));
    assert_eq!(store.one_shot_status("a.toml", &[9; 32]).await.unwrap(), None, "another version");
    assert_eq!(store.one_shot_status("c.toml", &[4; 32]).await.unwrap(), None, "not file-triggered");
    assert!(store.recover("node-a", "again").await.unwrap().is_empty());
    store.close().await.unwrap();
}

#[tokio::test]
async fn ten_thousand_steps_are_written_in_few_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let id = store.begin_run(start("big.toml", RunTrigger::Interval, 1)).await.unwrap();
    let recorder = store.recorder();
    let events = many_step_events(10_000);
    let n = events.len() as u64;
    for e in events {
        recorder.record(id, e);
    }
    store.close().await.unwrap();
    let batches = store.batches_written();
    assert_eq!(store.events_written(), n);
    assert!(batches <= 2 * n / BATCH_EVENTS as u64 + 2, "{batches} transactions for {n} events");
    let detail = store.run(id).await.unwrap().unwrap();
    assert_eq!(detail.steps.len(), 10_000);
    assert!(detail.steps.iter().all(|s| s.status == RecordedStatus::Finished(Status::Succeeded) && s.attempts == 1));
    assert_eq!(detail.run.status, RecordedStatus::Finished(Status::Succeeded));
    assert!(matches!(recorder.flush().await, Err(StoreError::Closed)));
}

/// The events of a run of `n` sleep steps.
fn many_step_events(n: usize) -> Vec<RunEvent> {
    let mut events = vec![RunEvent::RunStarted { job: "big".into(), started_at: Utc::now() }];
    for i in 0..n {
        let path: exec::NodePath = format!("main/s{i}").into();
        let name: Arc<str> = format!("s{i}").into();
        let at = Duration::from_millis(i as u64);
        events.push(RunEvent::NodeStarted { path: path.clone(), name: name.clone(), kind: NodeKind::Sleep, at });
        events.push(RunEvent::NodeFinished {
            path,
            name,
            kind: NodeKind::Sleep,
            status: Status::Succeeded,
            attempts: 1,
            started: Some(at),
            at: at + Duration::from_millis(1),
            output: Some(json!(i)),
            error: None,
            truncated: false,
        });
    }
    events.push(RunEvent::RunFinished {
        status: Status::Succeeded,
        result: Some(json!("done")),
        error: None,
        duration: Duration::from_millis(n as u64 + 1),
    });
    events
}

async fn runs_are_listed_newest_first_and_filtered(backend: Backend) {
    let dir = backend.place();
    let store = dir.open().await;
    let mut ids = Vec::new();
    for job in ["a.toml", "b.toml", "a.toml", "a.toml"] {
        ids.push(store.begin_run(start(job, RunTrigger::Manual, 1)).await.unwrap());
    }
    let recorder = store.recorder();
    recorder.record(
        ids[0],
        RunEvent::RunFinished { status: Status::Succeeded, result: None, error: None, duration: Duration::ZERO },
    );
    recorder.flush().await.unwrap();
    let list = |filter| async { store.runs(filter).await.unwrap().into_iter().map(|r| r.id).collect::<Vec<_>>() };
    assert_eq!(list(RunFilter::default()).await, [ids[3], ids[2], ids[1], ids[0]]);
    let a = RunFilter { job: Some("a.toml".into()), ..RunFilter::default() };
    assert_eq!(list(a.clone()).await, [ids[3], ids[2], ids[0]]);
    assert_eq!(list(RunFilter { limit: 1, ..a.clone() }).await, [ids[3]]);
    assert_eq!(list(RunFilter { before: Some(ids[3]), limit: 1, ..a.clone() }).await, [ids[2]]);
    assert_eq!(list(RunFilter { status: Some(RecordedStatus::Finished(Status::Succeeded)), ..a }).await, [ids[0]]);
    assert!(store.run(9999).await.unwrap().is_none());
    store.close().await.unwrap();
}

async fn jobs_are_upserted(backend: Backend) {
    let dir = backend.place();
    let store = dir.open().await;
    let mut job =
        JobRecord { job: "a.toml".into(), kind: JobFormat::Toml, content_hash: [1; 32], valid: true, diagnostic: None };
    store.record_job(job.clone());
    job.valid = false;
    job.diagnostic = Some("a.toml:1:1: expected a table".into());
    store.record_job(job);
    store.close().await.unwrap();
    assert_eq!(dir.count("jobs"), 1);
    assert_eq!(dir.count("jobs WHERE NOT valid AND diagnostic = 'a.toml:1:1: expected a table'"), 1);
}

async fn a_claim_belongs_to_one_node_until_its_lease_ends(backend: Backend) {
    let dir = backend.place();
    let store = dir.open().await;
    let key = ClaimKey::fire("a.toml", Utc::now());
    let long = Duration::from_secs(60);
    assert!(store.claim(&key, "node-a", long).await.unwrap());
    assert!(!store.claim(&key, "node-b", long).await.unwrap(), "held by node-a");
    assert!(store.claim(&key, "node-a", long).await.unwrap(), "a node may claim again what it holds");
    let one_shot = ClaimKey::one_shot("b.toml", &[7; 32]);
    assert!(store.claim(&one_shot, "node-a", Duration::ZERO).await.unwrap());
    tokio::time::sleep(Duration::from_millis(2)).await;
    assert!(store.claim(&one_shot, "node-b", long).await.unwrap(), "node-a's lease ran out: taken over");
    store.renew_claims("node-b", long).await.unwrap();
    assert!(!store.claim(&one_shot, "node-a", long).await.unwrap());
    store.close().await.unwrap();
}

async fn reopening_keeps_the_history_and_ids_go_on(backend: Backend) {
    let dir = backend.place();
    let first = {
        let store = dir.open().await;
        let id = store.begin_run(start("a.toml", RunTrigger::Manual, 1)).await.unwrap();
        store.close().await.unwrap();
        id
    };
    let store = dir.open().await;
    assert_eq!(store.runs(RunFilter::default()).await.unwrap().len(), 1);
    let second = store.begin_run(start("a.toml", RunTrigger::Manual, 1)).await.unwrap();
    assert!(second > first);
    store.close().await.unwrap();
    assert!(matches!(store.begin_run(start("a.toml", RunTrigger::Manual, 1)).await, Err(StoreError::Closed)));
}

/// Holds the writer thread busy until the returned sender is dropped (or
/// sent to), so that what is queued meanwhile waits for it.
async fn hold_writer(store: &SqliteStore) -> std::sync::mpsc::Sender<()> {
    let (release, held) = std::sync::mpsc::channel::<()>();
    let (busy_tx, busy) = tokio::sync::oneshot::channel();
    store
        .recorder()
        .send(recorder::Msg::Call(Box::new(move |_conn| {
            let _ = busy_tx.send(());
            let _ = held.recv();
        })))
        .unwrap();
    busy.await.unwrap();
    release
}

#[tokio::test]
async fn runs_begun_together_share_one_commit_and_each_gets_its_own_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let release = hold_writer(&store).await;
    let before = store.batches_written();
    let mut begins: Vec<_> =
        (0..50u8).map(|i| store.begin_run(start(&format!("j{i}.toml"), RunTrigger::File, i))).collect();
    for b in &mut begins {
        assert!(futures::poll!(b).is_pending(), "answered only after the commit");
    }
    drop(release);
    let ids: Vec<RunId> = futures::future::join_all(begins).await.into_iter().map(Result::unwrap).collect();
    assert_eq!(store.batches_written() - before, 1, "one commit for the 50 runs queued together");
    let distinct: std::collections::BTreeSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), 50);
    // Committed when answered: another connection sees every row.
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    let running: i64 = conn.query_row("SELECT count(*) FROM runs WHERE status = 'running'", [], |r| r.get(0)).unwrap();
    assert_eq!(running, 50);
    let job: String = conn.query_row("SELECT job FROM runs WHERE id = ?1", [ids[7]], |r| r.get(0)).unwrap();
    assert_eq!(job, "j7.toml", "each answer is its own run's id");
    store.close().await.unwrap();
}

/// A one-shot gives up (its file removed, a shutdown) in the instant its row
/// is being committed: the commit goes through, but its answer finds no one.
/// It never started, so it must not stay `running` — read `interrupted` after
/// a restart, that version would never run again.
#[tokio::test]
async fn a_one_shot_that_gives_up_while_its_row_commits_is_recorded_not_started_and_runs_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let (committed, resume) = store.pause_after_next_commit();
    let mut begin = store.begin_run(start("once.toml", RunTrigger::File, 5));
    assert!(futures::poll!(&mut begin).is_pending(), "answered only after the commit");
    committed.recv_timeout(Duration::from_secs(30)).expect("the writer commits the row");
    drop(begin); // the run task gives up: its file was removed as the row committed
    drop(resume);
    store.recorder().flush().await.unwrap();
    let runs = store.runs(RunFilter::default()).await.unwrap();
    let rows: Vec<_> = runs.iter().map(|r| (r.status, r.error.as_deref())).collect();
    assert_eq!(
        rows,
        [(RecordedStatus::Finished(Status::Cancelled), Some(NOT_STARTED_ERROR))],
        "a one-shot that never got its id is recorded as not started"
    );
    // A restart (recover) leaves it as it is, and that version runs then.
    assert!(store.recover("node-a", "the daemon stopped").await.unwrap().is_empty());
    assert_eq!(store.one_shot_status("once.toml", &[5; 32]).await.unwrap(), None, "it never ran: it runs again");
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_job_version_recorded_without_waiting_is_committed_with_the_next_run_begun() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let job =
        JobRecord { job: "a.toml".into(), kind: JobFormat::Toml, content_hash: [3; 32], valid: true, diagnostic: None };
    store.record_job(job);
    store.begin_run(start("a.toml", RunTrigger::File, 3)).await.unwrap();
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    let hash: Vec<u8> = conn.query_row("SELECT content_hash FROM jobs WHERE job = 'a.toml'", [], |r| r.get(0)).unwrap();
    assert_eq!(hash, [3; 32]);
    store.close().await.unwrap();
    let late =
        JobRecord { job: "b.toml".into(), kind: JobFormat::Toml, content_hash: [4; 32], valid: true, diagnostic: None };
    store.record_job(late); // closed: dropped, not a panic
    let jobs: i64 = conn.query_row("SELECT count(*) FROM jobs", [], |r| r.get(0)).unwrap();
    assert_eq!(jobs, 1);
}

/// The log lines `fan_out_events` has half way (a step's captured output).
const LOG_BURST: usize = 70;

/// The events of a fan-out as the daemon streams them, numbered: every
/// step starts before the first ends; one step is retried (a failed attempt
/// between its start and its end), one is skipped (an end with no start), and
/// [`LOG_BURST`] log lines come between.
fn fan_out_events(n: usize) -> Vec<RunEvent> {
    let mut events = vec![RunEvent::RunStarted { job: "fan".into(), started_at: Utc::now() }];
    let paths: Vec<exec::NodePath> = (0..n).map(|i| format!("main/gather_1/s{i}").into()).collect();
    let name = |i: usize| -> Arc<str> { format!("s{i}").into() };
    for (i, path) in paths.iter().enumerate() {
        let at = Duration::from_millis(i as u64);
        events.push(RunEvent::NodeStarted { path: path.clone(), name: name(i), kind: NodeKind::Sleep, at });
    }
    events.push(RunEvent::AttemptFailed {
        path: paths[1].clone(),
        attempt: 1,
        error: "boom".into(),
        retry_in: Duration::from_millis(5),
        at: Duration::from_millis(7),
    });
    for line in 0..LOG_BURST {
        events.push(RunEvent::Log {
            path: "main".into(),
            stream: if line % 2 == 0 { Stream::Print } else { Stream::Debug },
            text: format!("line {line}"),
            at: Duration::from_millis(8),
        });
    }
    for (i, path) in paths.iter().enumerate() {
        events.push(RunEvent::NodeFinished {
            path: path.clone(),
            name: name(i),
            kind: NodeKind::Sleep,
            status: if i == 1 { Status::Failed } else { Status::Succeeded },
            attempts: if i == 1 { 2 } else { 1 },
            started: Some(Duration::from_millis(i as u64)),
            at: Duration::from_millis(i as u64 + 10),
            output: Some(json!({ "i": i })),
            error: (i == 1).then(|| "boom again".to_string()),
            truncated: false,
        });
    }
    events.push(RunEvent::NodeFinished {
        path: "main/never".into(),
        name: "never".into(),
        kind: NodeKind::Sleep,
        status: Status::Skipped,
        attempts: 0,
        started: None,
        at: Duration::from_millis(20),
        output: None,
        error: None,
        truncated: false,
    });
    events.push(RunEvent::RunFinished {
        status: Status::Failed,
        result: Some(json!("done")),
        error: Some("one failed".into()),
        duration: Duration::from_millis(30),
    });
    events
}

/// Every column of the rows a run's events leave (not the run's own finish
/// time, which is the clock's).
fn stored_rows(dir: &tempfile::TempDir, id: RunId) -> Vec<Vec<rusqlite::types::Value>> {
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    let mut rows = Vec::new();
    for sql in [
        "SELECT * FROM steps WHERE run_id = ?1 ORDER BY id",
        "SELECT * FROM attempts WHERE run_id = ?1 ORDER BY path, attempt",
        "SELECT * FROM logs WHERE run_id = ?1 ORDER BY id",
        "SELECT status, start_seq, end_seq, result, error FROM runs WHERE id = ?1",
    ] {
        let mut stmt = conn.prepare(sql).unwrap();
        let columns = stmt.column_count();
        rows.extend(
            stmt.query_map([id], |r| (0..columns).map(|i| r.get(i)).collect::<rusqlite::Result<Vec<_>>>())
                .unwrap()
                .map(Result::unwrap),
        );
    }
    rows
}

/// A writer behind the run (a large fan-out) writes its bursts of step
/// starts and of step ends many rows to a statement; the rows — ids (the
/// order steps were first seen), event numbers, a retried step's attempts —
/// are those the writes one by one leave.
#[tokio::test]
async fn bursts_of_step_starts_and_ends_are_written_many_rows_to_a_statement_with_the_same_rows() {
    let n = 300;
    let apart = tempfile::tempdir().unwrap();
    let together = tempfile::tempdir().unwrap();
    let (a, b) = (open(&apart).await, open(&together).await);
    let id_a = a.begin_run(start("fan.rhai", RunTrigger::Manual, 1)).await.unwrap();
    let id_b = b.begin_run(start("fan.rhai", RunTrigger::Manual, 1)).await.unwrap();
    assert_eq!(id_a, id_b);
    // Apart: each event written before the next is sent.
    for (seq, e) in fan_out_events(n).into_iter().enumerate() {
        a.recorder().record_numbered(id_a, seq as u64, e);
        a.recorder().flush().await.unwrap();
    }
    // Together: all queued while the writer is busy, as behind a fan-out.
    let release = hold_writer(&b).await;
    for (seq, e) in fan_out_events(n).into_iter().enumerate() {
        b.recorder().record_numbered(id_b, seq as u64, e);
    }
    drop(release);
    b.recorder().flush().await.unwrap();
    assert_eq!(a.bulk_statements(), 0, "one event at a time: one row per statement");
    let bursts = (2 * (n / sqlite::ROWS_PER_STATEMENT) + LOG_BURST / sqlite::ROWS_PER_STATEMENT) as u64;
    assert_eq!(
        b.bulk_statements(),
        bursts,
        "the starts, the log lines, then the ends, {} rows to a statement",
        sqlite::ROWS_PER_STATEMENT
    );
    assert_eq!(a.events_written(), b.events_written());
    a.close().await.unwrap();
    b.close().await.unwrap();
    let rows = stored_rows(&apart, id_a);
    assert_eq!(rows.len(), n + 1 + 1 + LOG_BURST + 1, "the steps, the skipped one, an attempt, the log lines, the run");
    assert_eq!(rows, stored_rows(&together, id_b));
}

/// One row SQLite refuses in a burst (here a step of a run that does not
/// exist: the foreign key) fails its statement: the burst is written again
/// row by row, and only that row is lost.
#[tokio::test]
async fn a_refused_row_in_a_burst_of_steps_is_lost_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let id = store.begin_run(start("fan.rhai", RunTrigger::Manual, 1)).await.unwrap();
    let n = sqlite::ROWS_PER_STATEMENT;
    let release = hold_writer(&store).await;
    let recorder = store.recorder();
    for (seq, e) in fan_out_events(n).into_iter().enumerate() {
        // The 10th step's start names a run that does not exist.
        let run = if seq == 10 { id + 1000 } else { id };
        recorder.record_numbered(run, seq as u64, e);
    }
    drop(release);
    recorder.flush().await.unwrap();
    assert_eq!(
        store.bulk_statements(),
        2,
        "the log lines' and the ends' statements; the starts' was refused and written row by row"
    );
    let detail = store.run(id).await.unwrap().unwrap();
    assert_eq!(detail.steps.len(), n + 1, "every step (and the skipped one), the refused start's from its end");
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    let started: i64 =
        conn.query_row("SELECT count(*) FROM steps WHERE start_seq IS NOT NULL", [], |r| r.get(0)).unwrap();
    assert_eq!(started, n as i64 - 1, "only the refused start is lost");
    store.close().await.unwrap();
}

/// `cargo test --release recording_throughput -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a test"]
async fn recording_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let id = store.begin_run(start("big.toml", RunTrigger::Interval, 1)).await.unwrap();
    let recorder = store.recorder();
    let events = many_step_events(10_000);
    let began = std::time::Instant::now();
    for e in events {
        recorder.record(id, e);
    }
    let queued = began.elapsed();
    recorder.flush().await.unwrap();
    let all = began.elapsed();
    println!(
        "10,000 steps (20,002 events): queued in {queued:?}, recorded in {all:?} ({:.0} steps/s), {} transactions",
        10_000.0 / all.as_secs_f64(),
        store.batches_written()
    );
    store.close().await.unwrap();
    let size = std::fs::metadata(dir.path().join(DB_FILE)).map(|m| m.len()).unwrap_or(0);
    println!("database file after one 10,000-step run: {size} bytes");
}

fn missed(job: &str, trigger: RunTrigger, fire_times: Vec<chrono::DateTime<Utc>>) -> Missed {
    Missed { job: job.into(), trigger, fire_times, content_hash: [5; 32], node: "node-a".into() }
}

async fn missed_fires_are_listed_and_survive_recover(backend: Backend) {
    let dir = backend.place();
    let t0 = Utc::now().trunc_subsecs(6) - chrono::Duration::hours(3);
    let fires = vec![t0, t0 + chrono::Duration::hours(1)];
    {
        let store = dir.open().await;
        store.record_missed(missed("a.toml", RunTrigger::Schedule, fires.clone())).await.unwrap();
        store.record_missed(missed("a.toml", RunTrigger::Schedule, Vec::new())).await.unwrap();
        let refused = store.record_missed(missed("a.toml", RunTrigger::Manual, fires.clone())).await;
        assert!(matches!(refused, Err(StoreError::Invalid(_))), "{refused:?}");
        store.close().await.unwrap();
    }
    let store = dir.open().await;
    assert!(store.recover("node-a", "down").await.unwrap().is_empty(), "a missed run is not running");
    let rows = store.runs(RunFilter { job: Some("a.toml".into()), ..RunFilter::default() }).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows.iter().rev().map(|r| r.fire_time).collect::<Vec<_>>(), fires);
    for row in &rows {
        assert_eq!(row.status, RecordedStatus::Missed);
        assert_eq!(row.trigger, RunTrigger::Schedule);
        assert_eq!(row.error.as_deref(), Some(MISSED_ERROR));
        assert_eq!(row.duration_ms, Some(0));
        assert_eq!(row.finished_at, Some(row.started_at));
        assert_eq!((row.content_hash, row.node.as_str()), ([5; 32], "node-a"));
    }
    let only_missed = RunFilter { status: Some(RecordedStatus::Missed), ..RunFilter::default() };
    assert_eq!(store.runs(only_missed).await.unwrap(), rows);
    store.close().await.unwrap();
}

async fn last_fire_is_the_latest_scheduled_fire_whatever_its_status(backend: Backend) {
    let dir = backend.place();
    let store = dir.open().await;
    let t0 = Utc::now().trunc_subsecs(6) - chrono::Duration::hours(10);
    let hours = |h| t0 + chrono::Duration::hours(h);
    assert_eq!(store.last_fire("a.toml").await.unwrap(), None, "no runs at all");

    // A finished interval run, then an interrupted schedule run, then misses.
    let mut run = start("a.toml", RunTrigger::Interval, 1);
    run.fire_time = hours(1);
    let done = store.begin_run(run).await.unwrap();
    store.recorder().record(
        done,
        RunEvent::RunFinished { status: Status::Succeeded, result: None, error: None, duration: Duration::ZERO },
    );
    store.recorder().flush().await.unwrap();
    assert_eq!(store.last_fire("a.toml").await.unwrap(), Some(hours(1)));
    let mut run = start("a.toml", RunTrigger::Schedule, 1);
    run.fire_time = hours(3);
    store.begin_run(run).await.unwrap();
    store.recover("node-a", "down").await.unwrap();
    assert_eq!(store.last_fire("a.toml").await.unwrap(), Some(hours(3)), "interrupted counts");
    store.record_missed(missed("a.toml", RunTrigger::Schedule, vec![hours(4), hours(5)])).await.unwrap();
    assert_eq!(store.last_fire("a.toml").await.unwrap(), Some(hours(5)), "missed counts");

    // Runs of other triggers and of other jobs do not count.
    for trigger in [RunTrigger::Manual, RunTrigger::File] {
        let mut run = start("a.toml", trigger, 1);
        run.fire_time = hours(9);
        store.begin_run(run).await.unwrap();
    }
    store.record_missed(missed("b.toml", RunTrigger::Interval, vec![hours(8)])).await.unwrap();
    assert_eq!(store.last_fire("a.toml").await.unwrap(), Some(hours(5)));
    assert_eq!(store.last_fire("b.toml").await.unwrap(), Some(hours(8)));
    let mut run = start("c.toml", RunTrigger::Manual, 1);
    run.fire_time = hours(2);
    store.begin_run(run).await.unwrap();
    assert_eq!(store.last_fire("c.toml").await.unwrap(), None, "manual runs only");
    store.close().await.unwrap();
}

/// Begins a run of `job` with one step and one log line, finished unless
/// `running`; returns its id.
async fn run_with_step(store: &dyn RunStore, job: &str, running: bool) -> RunId {
    let id = store.begin_run(start(job, RunTrigger::Schedule, 1)).await.unwrap();
    let path: exec::NodePath = "main/x".into();
    let mut events = vec![
        RunEvent::NodeStarted { path: path.clone(), name: "x".into(), kind: NodeKind::Script, at: Duration::ZERO },
        RunEvent::Log { path: path.clone(), stream: Stream::Print, text: "hi".into(), at: Duration::from_millis(1) },
        RunEvent::AttemptFailed {
            path: path.clone(),
            attempt: 1,
            error: "no".into(),
            at: Duration::from_millis(1),
            retry_in: Duration::ZERO,
        },
    ];
    if !running {
        events.push(RunEvent::RunFinished {
            status: Status::Succeeded,
            result: None,
            error: None,
            duration: Duration::from_millis(2),
        });
    }
    record_all(store, id, &events).await;
    id
}

async fn prune_by_count_keeps_the_newest_and_running_runs_with_their_steps(backend: Backend) {
    let dir = backend.place();
    let store = dir.open().await;
    let running = run_with_step(&*store, "a.toml", true).await;
    let mut finished = Vec::new();
    for _ in 0..4 {
        finished.push(run_with_step(&*store, "a.toml", false).await);
    }
    store.record_missed(missed("a.toml", RunTrigger::Schedule, vec![Utc::now()])).await.unwrap();
    let other = run_with_step(&*store, "b.toml", false).await;
    assert_eq!(dir.rows_of(finished[0]), [1, 1, 1, 1]);

    assert_eq!(store.prune("a.toml", None, None).await.unwrap(), 0, "no limits: nothing");
    assert_eq!(store.prune("a.toml", Some(2), None).await.unwrap(), 3);
    let ids: Vec<RunId> = store
        .runs(RunFilter { job: Some("a.toml".into()), ..RunFilter::default() })
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    let missed_id = ids[0];
    assert_eq!(ids, [missed_id, finished[3], running], "the newest two finished, and the running one");
    for &gone in &finished[..3] {
        assert_eq!(dir.rows_of(gone), [0, 0, 0, 0], "run {gone} and its steps, attempts, logs");
    }
    assert_eq!(dir.rows_of(running), [1, 1, 1, 1]);
    assert_eq!(dir.rows_of(other), [1, 1, 1, 1], "another job's runs are not touched");

    assert_eq!(store.prune("a.toml", Some(0), None).await.unwrap(), 2);
    assert_eq!(dir.rows_of(running), [1, 1, 1, 1], "a running run is never pruned");
    assert_eq!(store.runs(RunFilter::default()).await.unwrap().len(), 2);
    store.close().await.unwrap();
}

async fn prune_by_age_removes_old_finished_runs_only(backend: Backend) {
    let dir = backend.place();
    let store = dir.open().await;
    let old = run_with_step(&*store, "a.toml", false).await;
    let old_running = run_with_step(&*store, "a.toml", true).await;
    // Wide margins: under a loaded CI box the writes and flushes between
    // `new`'s row and the prune took over 150 ms (it was 300/150).
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let new = run_with_step(&*store, "a.toml", false).await;

    assert_eq!(store.prune("a.toml", None, Some(Duration::from_secs(3600))).await.unwrap(), 0, "all recent");
    assert_eq!(store.prune("a.toml", Some(10), Some(Duration::from_millis(1000))).await.unwrap(), 1);
    assert_eq!(dir.rows_of(old), [0, 0, 0, 0]);
    assert_eq!(dir.rows_of(old_running), [1, 1, 1, 1], "running: kept however old");
    assert_eq!(dir.rows_of(new), [1, 1, 1, 1]);
    assert_eq!(store.prune("a.toml", None, Some(Duration::MAX)).await.unwrap(), 0, "forever keeps all");
    store.close().await.unwrap();
}

/// The words the schema's CHECK constraints accept for `column` in `table`
/// (as the latest migration that creates the table writes them).
fn checked_words(table: &str, column: &str) -> Vec<String> {
    let create = format!("CREATE TABLE {table} (");
    let migrations = [
        include_str!("migrations/sqlite/0004_runs_queued.sql").replace("runs_v4", "runs"),
        include_str!("migrations/sqlite/0003_steps_check.sql").to_string(),
        include_str!("migrations/sqlite/0001_init.sql").to_string(),
    ];
    let sql = migrations.iter().find(|sql| sql.contains(&create)).expect("a migration creating the table");
    let body = sql.split(&create).nth(1).expect("the table").split("\n);").next().unwrap();
    let after = body.split(&format!("\n    {column} ")).nth(1).expect("the column");
    let list = after.split("CHECK (").nth(1).expect("a CHECK").split(')').next().unwrap();
    list.split('\'').skip(1).step_by(2).map(str::to_string).collect()
}

#[test]
fn the_schema_and_the_enums_spell_the_same_words() {
    let words = |it: &mut dyn Iterator<Item = &'static str>| it.map(str::to_string).collect::<Vec<_>>();
    let all: Vec<String> = words(&mut RecordedStatus::all().map(RecordedStatus::as_str));
    let except = |skip: &[&str]| all.iter().filter(|w| !skip.contains(&w.as_str())).cloned().collect::<Vec<_>>();
    assert_eq!(checked_words("runs", "status"), except(&["skipped"]), "a run is never skipped");
    assert_eq!(checked_words("steps", "status"), except(&["missed", "queued"]), "a step is never missed nor queued");
    assert_eq!(checked_words("runs", "trigger"), words(&mut RunTrigger::ALL.iter().map(|t| t.as_str())));
    assert_eq!(checked_words("jobs", "kind"), words(&mut JobFormat::ALL.iter().map(|k| k.as_str())));
}

/// `[[[…]]]`, `depth` arrays deep.
fn nested(depth: usize) -> Value {
    (0..depth).fold(json!([]), |v, _| json!([v]))
}

/// How deep `value` nests (a scalar or an empty array is 1).
fn depth_of(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth_of).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth_of).max().unwrap_or(0),
        _ => 1,
    }
}

async fn a_value_nested_200_deep_is_stored_cut_at_the_depth_bound_and_every_read_works(backend: Backend) {
    let dir = backend.place();
    let store = dir.open().await;
    let id = store.begin_run(start("deep.rhai", RunTrigger::Manual, 1)).await.unwrap();
    let path: exec::NodePath = "main".into();
    let events = vec![
        RunEvent::NodeStarted { path: path.clone(), name: "main".into(), kind: NodeKind::Script, at: Duration::ZERO },
        RunEvent::NodeFinished {
            path: path.clone(),
            name: "main".into(),
            kind: NodeKind::Script,
            status: Status::Succeeded,
            attempts: 1,
            started: Some(Duration::ZERO),
            at: Duration::from_millis(1),
            output: Some(nested(200)),
            error: None,
            truncated: false,
        },
        RunEvent::RunFinished {
            status: Status::Succeeded,
            result: Some(nested(200)),
            error: None,
            duration: Duration::from_millis(1),
        },
    ];
    record_all(&*store, id, &events).await;
    let runs = store.runs(RunFilter::default()).await.expect("the run list reads");
    assert_eq!(runs.len(), 1);
    let detail = store.run(id).await.expect("the run reads").expect("it exists");
    for value in [&runs[0].result, &detail.run.result, &detail.steps[0].output] {
        assert_eq!(depth_of(value), JSON_DEPTH_BOUND, "cut at the bound");
        assert!(value.to_string().contains(&format!("nested deeper than {JSON_DEPTH_BOUND} levels")), "{value}");
    }
    assert!(detail.steps[0].truncated, "the step says its output was cut");
    serde_json::from_value::<RunDocument>(serde_json::to_value(detail.document()).unwrap())
        .expect("the document reads back");
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_stored_value_that_is_not_readable_json_reads_as_a_marker() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let id = run_with_step(&store, "old.rhai", false).await;
    let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
    {
        // As an older gatherd (or a hand edit) could have left them.
        let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.execute("UPDATE runs SET result = ?2 WHERE id = ?1", rusqlite::params![id, deep]).unwrap();
        conn.execute("UPDATE steps SET output = 'not {json' WHERE run_id = ?1", [id]).unwrap();
    }
    let runs = store.runs(RunFilter::default()).await.expect("the run list reads");
    let detail = store.run(id).await.expect("the run reads").expect("it exists");
    for value in [&runs[0].result, &detail.run.result, &detail.steps[0].output] {
        let marker = value.as_str().unwrap_or_else(|| panic!("a marker string, not {value}"));
        assert!(marker.starts_with("unreadable stored JSON"), "{marker}");
    }
    store.close().await.unwrap();
}

async fn a_run_in_flight_says_running_in_its_history_document(backend: Backend) {
    let dir = backend.place();
    let store = dir.open().await;
    let id = run_with_step(&*store, "slow.rhai", true).await;
    let detail = store.run(id).await.unwrap().unwrap();
    let served = serde_json::to_value(detail.document()).unwrap();
    assert_eq!(served["status"], "running", "{served:#}");
    assert_eq!(served["steps"][0]["status"], "running", "{served:#}");
    let read: RunDocument = serde_json::from_value(served.clone()).unwrap();
    assert_eq!(read.report.status, RecordedStatus::Running);
    assert_eq!(serde_json::to_value(&read).unwrap(), served);
    // `gatherd run --json`'s shape is unchanged: a report not yet ended has no status.
    assert_eq!(serde_json::to_value(detail.report()).unwrap()["status"], Value::Null);
    store.close().await.unwrap();
}

async fn the_history_document_is_the_report_plus_the_run_record(backend: Backend) {
    let dir = backend.place();
    let store = dir.open().await;
    let id = run_with_step(&*store, "done.rhai", false).await;
    let detail = store.run(id).await.unwrap().unwrap();
    let mut served = serde_json::to_value(detail.document()).unwrap();
    let record = served.as_object_mut().unwrap();
    for key in ["id", "trigger", "fire_time", "node"] {
        assert!(record.remove(key).is_some(), "{key}");
    }
    // The run ended but its step did not: compare with the step said `running`.
    let mut report = serde_json::to_value(detail.report()).unwrap();
    report["steps"][0]["status"] = json!("running");
    assert_eq!(served, report);
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_damaged_database_is_refused_at_open_with_the_file_and_the_way_out() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    for n in 0..200 {
        run_with_step(&store, &format!("job-{n}.toml"), false).await;
    }
    store.close().await.unwrap();
    let path = dir.path().join(DB_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 16 * 4096, "{} bytes: too small to damage past its first pages", bytes.len());
    let middle = bytes.len() / 2;
    bytes[middle..middle + 8192].fill(0x5a);
    std::fs::write(&path, &bytes).unwrap();
    let err = open_sqlite(&path).await.expect_err("a damaged file is refused").to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("move it aside"), "{err}");
}

/// A run's events, by hand, with enough bytes (log lines and a result) that
/// writing them needs new pages of the file.
fn bulky_run_events(job: &str) -> Vec<RunEvent> {
    let path: exec::NodePath = "main/chatty".into();
    let mut events = vec![
        RunEvent::RunStarted { job: job.into(), started_at: Utc::now() },
        RunEvent::NodeStarted { path: path.clone(), name: "chatty".into(), kind: NodeKind::Script, at: Duration::ZERO },
    ];
    for n in 0..20 {
        let text = format!("line {n} {}", "x".repeat(4000));
        events.push(RunEvent::Log { path: path.clone(), stream: Stream::Print, text, at: Duration::from_millis(n) });
    }
    events.push(RunEvent::NodeFinished {
        path,
        name: "chatty".into(),
        kind: NodeKind::Script,
        status: Status::Succeeded,
        attempts: 1,
        started: Some(Duration::ZERO),
        at: Duration::from_millis(30),
        output: Some(json!("y".repeat(20_000))),
        error: None,
        truncated: false,
    });
    events.push(RunEvent::RunFinished {
        status: Status::Succeeded,
        result: Some(json!("z".repeat(20_000))),
        error: None,
        duration: Duration::from_millis(31),
    });
    events
}

/// Waits until the store says it can write again (its health clears after the
/// commit that wrote everything kept): not a poll with a deadline, which the
/// writer's back-off (up to 30 s between retries) could outlast.
async fn recovered(store: &SqliteStore) {
    let mut health = store.health();
    let waited = tokio::time::timeout(Duration::from_secs(120), health.wait_for(Option::is_none)).await.is_ok();
    assert!(waited, "the store did not recover: {:?}", *health.borrow());
}

#[tokio::test]
async fn a_run_that_ends_while_the_disk_is_full_is_written_with_its_real_status_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let id = store.begin_run(start("full.rhai", RunTrigger::Manual, 1)).await.unwrap();
    store.cap_size(true).await;
    let recorder = store.recorder();
    for e in bulky_run_events("full") {
        recorder.record(id, e);
    }
    assert!(recorder.flush().await.is_err(), "a flush while the disk is full fails");
    assert_eq!(store.run(id).await.unwrap().unwrap().run.status, RecordedStatus::Running);
    store.cap_size(false).await;
    recovered(&store).await;
    let status = store.run(id).await.unwrap().expect("the run is stored").run.status;
    assert_eq!(status, RecordedStatus::Finished(Status::Succeeded), "the run's end was lost while the disk was full");
    let detail = store.run(id).await.unwrap().unwrap();
    assert_eq!(detail.logs.len(), 20, "the log lines kept in memory are written too");
    store.close().await.unwrap();
}

#[tokio::test]
async fn past_the_memory_bound_log_lines_are_dropped_but_the_runs_end_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let mut health = store.health();
    let id = store.begin_run(start("chatty.rhai", RunTrigger::Manual, 1)).await.unwrap();
    store.cap_size(true).await;
    let recorder = store.recorder();
    let path: exec::NodePath = "main".into();
    let line = |n: u64| RunEvent::Log {
        path: path.clone(),
        stream: Stream::Print,
        text: format!("{n:08} {}", "x".repeat(64 * 1024)),
        at: Duration::from_millis(n),
    };
    recorder.record(id, line(0));
    assert!(recorder.flush().await.is_err(), "the capped file cannot take a 64 KiB line");
    assert!(health.borrow_and_update().as_deref().is_some_and(|why| why.contains("full")), "{:?}", *health.borrow());
    let lines = 2 * KEPT_DETAIL_BYTES as u64 / (64 * 1024);
    for n in 1..lines {
        recorder.record(id, line(n));
    }
    recorder.record(
        id,
        RunEvent::RunFinished {
            status: Status::Failed,
            result: None,
            error: Some("boom".into()),
            duration: Duration::ZERO,
        },
    );
    store.cap_size(false).await;
    recovered(&store).await;
    let status = store.run(id).await.unwrap().expect("the run is stored").run.status;
    assert_eq!(status, RecordedStatus::Finished(Status::Failed));
    let kept = store.run(id).await.unwrap().unwrap().logs.len() as u64;
    assert!(kept > lines / 3 && kept < lines, "{kept} of {lines} lines kept");
    store.close().await.unwrap();
}

/// The statements that write a step's row, as the writer runs them (the
/// schema's CHECKs are part of each).
const STEP_WRITES: [&str; 3] = [
    "INSERT INTO steps (run_id, path, name, kind, status, attempts, start_ms) VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6) \
     ON CONFLICT (run_id, path) DO UPDATE SET attempts = 1, start_ms = excluded.start_ms",
    "INSERT INTO steps (run_id, path, name, kind, status, attempts, start_ms, end_ms, output, truncated, error) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) ON CONFLICT (run_id, path) DO UPDATE SET \
     status = excluded.status, attempts = excluded.attempts, start_ms = excluded.start_ms, end_ms = excluded.end_ms, \
     output = excluded.output, truncated = excluded.truncated, error = excluded.error",
    "UPDATE steps SET attempts = ?3 WHERE run_id = ?1 AND path = ?2",
];

/// A step's row is written two or three times per step; SQLite checks a
/// CHECK's `IN` list of more than two words by building a temporary b-tree of
/// it for every row, which was half of the writer's time at a 1,000,000-step
/// fan-out. The schema writes those CHECKs as comparisons (migration 0002).
#[tokio::test]
async fn writing_a_steps_row_builds_no_temporary_table() {
    let dir = tempfile::tempdir().unwrap();
    open(&dir).await.close().await.unwrap();
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    conn.pragma_update(None, "foreign_keys", true).unwrap();
    for sql in STEP_WRITES {
        let mut stmt = conn.prepare(&format!("EXPLAIN {sql}")).unwrap();
        let nulls = vec![rusqlite::types::Null; stmt.parameter_count()];
        let ops: Vec<String> =
            stmt.query_map(rusqlite::params_from_iter(nulls), |r| r.get(1)).unwrap().map(Result::unwrap).collect();
        let temporary = ops.iter().filter(|op| *op == "OpenEphemeral").count();
        assert_eq!(temporary, 0, "{sql}\nbuilds {temporary} temporary tables per row");
    }
}

/// Migration 0003 rebuilds `steps`: a history written by version 1 reads back
/// identically (ids, so the order steps were first seen, included), and the
/// status CHECK still refuses what it refused.
#[tokio::test]
async fn a_version_1_history_reads_back_identically_after_the_steps_table_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    let rows = |conn: &rusqlite::Connection| -> Vec<Vec<rusqlite::types::Value>> {
        // Version 1's columns (version 2 added the event numbers, NULL here).
        let mut stmt = conn
            .prepare(
                "SELECT id, run_id, path, name, kind, status, attempts, start_ms, end_ms, output, truncated, error \
                 FROM steps ORDER BY id",
            )
            .unwrap();
        let columns = stmt.column_count();
        stmt.query_map([], |r| (0..columns).map(|i| r.get(i)).collect()).unwrap().map(Result::unwrap).collect()
    };
    let before = {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(include_str!("migrations/sqlite/0001_init.sql")).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute_batch(
            "INSERT INTO runs (id, job, trigger, fire_time, content_hash, node, started_at) \
             VALUES (7, 'a.toml', 'manual', '2026-11-29T09:00:00.000000Z', zeroblob(32), 'n', \
             '2026-11-29T09:00:00.000000Z'); \
             INSERT INTO steps (id, run_id, path, name, kind, status, attempts, start_ms) \
             VALUES (3, 7, 'z', 'z', 'sleep', 'running', 1, 5); \
             INSERT INTO steps (id, run_id, path, name, kind, status, attempts, start_ms, end_ms, output, truncated, error) \
             VALUES (9, 7, 'a', 'a', 'sleep', 'failed', 2, 1, 4, '[1,\"x\"]', 1, 'boom'), \
                    (12, 7, 'm', 'm', 'group', 'skipped', 0, NULL, NULL, NULL, 0, NULL);",
        )
        .unwrap();
        rows(&conn)
    };
    assert_eq!(before.len(), 3);
    let store = open(&dir).await;
    let detail = store.run(7).await.unwrap().expect("the run");
    assert_eq!(detail.steps.iter().map(|s| &*s.path).collect::<Vec<_>>(), ["z", "a", "m"], "first-seen order");
    store.close().await.unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    assert_eq!(rows(&conn), before);
    let version: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert!(version >= 3, "migrated past 0003: {version}");
    let bad = conn.execute(
        "INSERT INTO steps (run_id, path, name, kind, status, attempts) VALUES (7, 'b', 'b', 'sleep', 'missed', 1)",
        [],
    );
    assert!(bad.unwrap_err().to_string().contains("CHECK constraint failed"), "a step is never missed");
    let good = "INSERT INTO steps (run_id, path, name, kind, status, attempts) VALUES (7, ?1, 'b', 'sleep', ?1, 1)";
    for status in ["running", "succeeded", "failed", "timed_out", "cancelled", "skipped", "interrupted"] {
        conn.execute(good, [status]).unwrap();
    }
}

async fn a_runs_lines_read_in_sql_are_the_timelines_lines_for_every_filter(backend: Backend) {
    let dir = backend.place();
    let store = dir.open().await;
    let id = store.begin_run(start("lines.rhai", RunTrigger::Manual, 1)).await.expect("begin");
    let line = |path: &str, stream, text: &str| RunEvent::Log {
        path: path.into(),
        stream,
        text: text.into(),
        at: Duration::from_millis(5),
    };
    let events = [
        line("main", Stream::Print, "script"),
        line("main/fetch", Stream::Stdout, "out"),
        line("main/g_1/fetch", Stream::Stderr, "err"),
        line("main/prefetch", Stream::Stdout, "not fetch"),
        line("main/a_b", Stream::Stdout, "underscore"),
        line("main/axb", Stream::Stdout, "not a_b"),
    ];
    let recorder = store.recorder();
    for (seq, e) in events.iter().enumerate() {
        recorder.record_numbered(id, seq as u64 + 1, e.clone());
    }
    recorder.flush().await.expect("flush");
    let texts = |lines: &[NumberedLine]| lines.iter().map(|l| l.text.clone()).collect::<Vec<_>>();
    let mut cases = Vec::new();
    for step in [None, Some("fetch"), Some("main/fetch"), Some("g_1/fetch"), Some("a_b"), Some("main"), Some("x")] {
        for after in [None, Some(0), Some(2), Some(6)] {
            for limit in [None, Some(1), Some(2)] {
                cases.push(LogFilter { step: step.map(String::from), after, limit });
            }
        }
    }
    for filter in cases {
        let sql = store.logs(id, filter.clone()).await.expect("read").expect("the run");
        let timeline = store.timeline(id).await.expect("read").expect("the run").lines(&filter);
        assert_eq!(texts(&sql), texts(&timeline), "{filter:?}");
        assert_eq!(sql, timeline, "{filter:?}");
    }
    let by_name =
        store.logs(id, LogFilter { step: Some("fetch".into()), after: None, limit: None }).await.expect("read");
    assert_eq!(texts(&by_name.expect("the run")), ["out", "err"], "a name is the path's last part, `_` no wildcard");
    let after =
        store.logs(id, LogFilter { step: Some("a_b".into()), after: Some(4), limit: None }).await.expect("read");
    assert_eq!(after.expect("the run").iter().map(|l| l.seq).collect::<Vec<_>>(), [Some(5)]);
    assert_eq!(store.logs(id + 1000, LogFilter::default()).await.expect("read"), None, "no such run");
}

/// `LogFilter::wants_path` (the trait's default, and `logs --follow`'s
/// filter) and the SQL `substr` rule in `sqlite::read::logs` are one rule
/// written twice: every path and every step of up to 4 characters from
/// `a`, `/`, `_` (a `LIKE` wildcard) and `é` (two bytes, one character in
/// SQLite's `length`) is kept by both or by neither.
async fn the_sql_step_filter_is_wants_path_for_every_short_path_and_step(backend: Backend) {
    let alphabet = ["a", "/", "_", "é"];
    let mut all = vec![String::new()];
    let mut last = vec![String::new()];
    for _ in 0..4 {
        last = last.iter().flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}"))).collect();
        all.extend(last.iter().cloned());
    }
    assert_eq!(all.len(), 341);
    let dir = backend.place();
    let store = dir.open().await;
    let id = store.begin_run(start("paths.rhai", RunTrigger::Manual, 1)).await.expect("begin");
    let recorder = store.recorder();
    for (seq, path) in all.iter().enumerate() {
        let event = RunEvent::Log {
            path: path.as_str().into(),
            stream: Stream::Stdout,
            text: path.clone(),
            at: Duration::from_millis(1),
        };
        recorder.record_numbered(id, seq as u64 + 1, event);
    }
    recorder.flush().await.expect("flush");
    let mut kept = 0;
    for step in &all {
        let filter = LogFilter { step: Some(step.clone()), after: None, limit: None };
        let sql: Vec<String> =
            store.logs(id, filter.clone()).await.expect("read").expect("the run").into_iter().map(|l| l.path).collect();
        let rust: Vec<String> = all.iter().filter(|p| filter.wants_path(p)).cloned().collect();
        assert_eq!(sql, rust, "step {step:?}");
        kept += rust.len();
    }
    assert!(kept > all.len(), "the filters keep more than exact matches: {kept}");
}

/// Migration 0004 rebuilds `runs` (its status CHECK takes `queued`): a
/// version 3 history keeps every run, and every step, attempt, log line and
/// claim that refers to one (dropping the old table must not cascade), ids
/// included; an id pruned from the top is still never reused; and foreign
/// keys hold again afterwards.
#[tokio::test]
async fn a_version_3_history_keeps_its_runs_and_their_children_when_runs_is_rebuilt_for_queued() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    let counts = |conn: &rusqlite::Connection| -> Vec<i64> {
        ["runs", "steps", "attempts", "logs", "claims WHERE run_id IS NOT NULL"]
            .map(|t| conn.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0)).unwrap())
            .to_vec()
    };
    let runs = |conn: &rusqlite::Connection| -> Vec<Vec<rusqlite::types::Value>> {
        let mut stmt = conn.prepare("SELECT * FROM runs ORDER BY id").unwrap();
        let columns = stmt.column_count();
        stmt.query_map([], |r| (0..columns).map(|i| r.get(i)).collect()).unwrap().map(Result::unwrap).collect()
    };
    let before = {
        let conn = rusqlite::Connection::open(&path).unwrap();
        for sql in [
            include_str!("migrations/sqlite/0001_init.sql"),
            include_str!("migrations/sqlite/0002_event_seq.sql"),
            include_str!("migrations/sqlite/0003_steps_check.sql"),
        ] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 3).unwrap();
        conn.execute_batch(
            "INSERT INTO runs (id, job, trigger, fire_time, content_hash, node, status, started_at, error, start_seq) \
             VALUES (7, 'a.toml', 'manual', '2026-11-29T09:00:00.000000Z', zeroblob(32), 'n', 'failed', \
             '2026-11-29T09:00:00.000000Z', 'boom', 0), \
                    (40, 'a.toml', 'schedule', '2026-11-29T10:00:00.000000Z', zeroblob(32), 'n', 'running', \
             '2026-11-29T10:00:00.000000Z', NULL, NULL); \
             INSERT INTO steps (id, run_id, path, name, kind, status, attempts, start_ms) \
             VALUES (3, 7, 'z', 'z', 'sleep', 'failed', 2, 5), (4, 40, 'y', 'y', 'sleep', 'running', 1, 5); \
             INSERT INTO attempts (run_id, path, attempt, error, at_ms) VALUES (7, 'z', 1, 'no', 3); \
             INSERT INTO logs (run_id, path, at_ms, level, text) VALUES (7, 'z', 4, 'stdout', 'hi'); \
             INSERT INTO claims (job, slot, node, claimed_at, lease_until, run_id) \
             VALUES ('a.toml', 'fire:x', 'n', 't', 't', 40); \
             UPDATE sqlite_sequence SET seq = 99 WHERE name = 'runs';",
        )
        .unwrap();
        (counts(&conn), runs(&conn))
    };
    assert_eq!(before.0, [2, 2, 1, 1, 1]);
    let store = open(&dir).await;
    let id = store.begin_run(RunStart { queued: true, ..start("b.toml", RunTrigger::Manual, 1) }).await.unwrap();
    assert_eq!(id, 100, "the high-water mark of AUTOINCREMENT is kept: ids above a pruned top are never reused");
    store.close().await.unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute("DELETE FROM runs WHERE id = 100", []).unwrap();
    assert_eq!((counts(&conn), runs(&conn)), before, "every run and every row that refers to one is kept");
    let version: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert!(version >= 4, "migrated past 0004: {version}");
    let fks: Vec<String> = conn
        .prepare("SELECT \"table\" FROM pragma_foreign_key_list('steps')")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(fks, ["runs"], "steps refer to the new runs table");
    conn.pragma_update(None, "foreign_keys", true).unwrap();
    let orphan = conn.execute(
        "INSERT INTO steps (run_id, path, name, kind, status, attempts) VALUES (12345, 'b', 'b', 'sleep', 'running', 1)",
        [],
    );
    assert!(orphan.unwrap_err().to_string().contains("FOREIGN KEY"), "steps still refer to runs");
    let bad = conn.execute("UPDATE runs SET status = 'skipped' WHERE id = 7", []);
    assert!(bad.unwrap_err().to_string().contains("CHECK constraint failed"), "a run is never skipped");
    conn.execute("UPDATE runs SET status = 'queued' WHERE id = 7", []).unwrap();
}

/// A queued run is recorded at once, becomes `running` when it starts, is
/// neither pruned nor counted as a one-shot that ran while queued, and one
/// left queued by a daemon that died is cancelled at the next start as
/// never started (so a one-shot's version runs then).
async fn a_queued_run_is_recorded_queued_starts_running_and_a_dead_daemons_is_cancelled_as_never_started(
    backend: Backend,
) {
    let dir = backend.place();
    let store = dir.open().await;
    let queued = |job: &str, trigger| RunStart { queued: true, ..start(job, trigger, 5) };
    let starts = store.begin_run(queued("a.toml", RunTrigger::Manual)).await.unwrap();
    let left = store.begin_run(queued("once.toml", RunTrigger::File)).await.unwrap();
    assert_eq!(status_of(&*store, starts).await, RecordedStatus::Queued);
    assert_eq!(store.one_shot_status("once.toml", &[5; 32]).await.unwrap(), None, "queued is not run");
    assert_eq!(store.prune("a.toml", Some(0), Some(Duration::ZERO)).await.unwrap(), 0, "a queued run is kept");
    store.recorder().record(starts, RunEvent::RunStarted { job: "a".into(), started_at: Utc::now() });
    store.recorder().flush().await.unwrap();
    assert_eq!(status_of(&*store, starts).await, RecordedStatus::Running);

    let recovered = store.recover("node-a", "the daemon stopped while it ran").await.unwrap();
    let marked: Vec<(RunId, RecordedStatus, Option<String>)> =
        recovered.into_iter().map(|r| (r.id, r.status, r.error)).collect();
    assert_eq!(
        marked,
        [
            (starts, RecordedStatus::Interrupted, Some("the daemon stopped while it ran".into())),
            (left, Status::Cancelled.into(), Some(QUEUED_AT_STOP_ERROR.into())),
        ]
    );
    assert_eq!(status_of(&*store, left).await, Status::Cancelled.into());
    assert_eq!(store.one_shot_status("once.toml", &[5; 32]).await.unwrap(), None, "it never started: it runs again");
    store.close().await.unwrap();
}

async fn status_of(store: &dyn RunStore, id: RunId) -> RecordedStatus {
    store.run(id).await.unwrap().expect("the run").run.status
}
