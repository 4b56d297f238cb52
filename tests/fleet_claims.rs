//! Several daemons on one PostgreSQL database (issue 16, the `claims`
//! part): each scheduled fire and each dropped file version runs once in
//! the fleet, a semaphore of 1 never has two holders. One throwaway
//! cluster for the file (`Cluster::shared`), a database per test.

mod support;

use std::time::{Duration, Instant};

use support::Daemon;
use support::postgres::Cluster;

/// The database name of a `Cluster::fresh_db` URL.
fn db_of(url: &str) -> String {
    url.rsplit('/').next().expect("a database in the URL").to_string()
}

/// `sql`'s answer on `db`, one line per row.
fn psql(db: &str, sql: &str) -> String {
    Cluster::shared().psql(db, sql)
}

/// Starts `n` daemons on `url`, each on its own jobs folder (with `files`)
/// and its own state folder, named `node1`..`nodeN` (`config` is added to
/// each one's config file).
fn fleet(n: usize, url: &str, files: &[(&str, &str)], config: &str) -> Vec<Daemon> {
    fleet_of(n, url, |_| files.iter().map(|(name, text)| (name.to_string(), text.to_string())).collect(), config)
}

/// [`fleet`], with the files of node `i` (from 1) given by `files(i)`. The
/// daemons start together (each on its own thread), as a fleet restarted
/// after an outage does: their start-up scans race.
fn fleet_of(n: usize, url: &str, files: impl Fn(usize) -> Vec<(String, String)> + Sync, config: &str) -> Vec<Daemon> {
    std::thread::scope(|scope| {
        let starting: Vec<_> = (1..=n)
            .map(|i| {
                let files = &files;
                scope.spawn(move || {
                    let jobs = tempfile::tempdir().expect("jobs dir");
                    for (name, text) in files(i) {
                        support::write(jobs.path(), &name, &text);
                    }
                    let state = tempfile::tempdir().expect("state dir");
                    let file = state.path().join("config.toml");
                    std::fs::write(&file, format!("node_name = \"node{i}\"\n{config}")).expect("write the config");
                    let file = file.to_str().expect("a UTF-8 path").to_string();
                    Daemon::start_with(jobs, state, &["--store", url, "--config", &file], &[])
                })
            })
            .collect();
        starting.into_iter().map(|t| t.join().expect("a daemon starts")).collect()
    })
}

/// Stops every daemon (SIGTERM), asserting each exits 0.
fn stop_all(daemons: Vec<Daemon>) {
    for d in daemons {
        let (code, lines) = d.stop();
        let log: Vec<String> = lines.iter().rev().take(20).map(ToString::to_string).collect();
        assert_eq!(code, Some(0), "a daemon did not stop cleanly: {log:#?}");
    }
}

/// Polls until `sql` answers at least `n` (bounded), returns the last answer.
fn wait_count(db: &str, sql: &str, n: u64, limit: Duration) -> u64 {
    let start = Instant::now();
    loop {
        let found: u64 = psql(db, sql).parse().unwrap_or(0);
        if found >= n || start.elapsed() > limit {
            return found;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn two_daemons_on_one_database_run_each_interval_slot_once() {
    let url = Cluster::fresh_db();
    let db = db_of(&url);
    let tick = "every = \"1s\"\n[[step]]\nname = \"t\"\nsleep = \"10ms\"\n";
    let daemons = fleet(2, &url, &[("tick.toml", tick)], "");
    let slots = "SELECT count(DISTINCT fire_time) FROM runs WHERE job = 'tick.toml'";
    let found = wait_count(&db, slots, 5, Duration::from_secs(30));
    assert!(found >= 5, "only {found} slots in 30 s");
    stop_all(daemons);
    let twice = psql(
        &db,
        "SELECT string_agg(fire_time::text || ' x' || n, ', ') FROM \
         (SELECT fire_time, count(*) AS n FROM runs WHERE job = 'tick.toml' GROUP BY fire_time HAVING count(*) > 1) d",
    );
    assert_eq!(twice, "", "slots with more than one run (or missed row) in the fleet");
    // One grid for the fleet: two nodes each on its own grid would run
    // every slot once and the job twice a second (hexpm/bob #257).
    let close = psql(
        &db,
        "SELECT string_agg(fire_time::text, ', ') FROM (SELECT fire_time, fire_time - lag(fire_time) OVER \
         (ORDER BY fire_time) AS gap FROM (SELECT DISTINCT fire_time FROM runs WHERE job = 'tick.toml') f) g \
         WHERE gap < interval '1 second'",
    );
    assert_eq!(close, "", "fires less than the interval apart: the fleet runs the job more often than `every`");
}

/// `(job, slot)` pairs of `jobs` (a SQL `LIKE` pattern) between each job's
/// first and last recorded fire whose count of rows (runs and `missed`) is
/// not one, on the 1 s grid: "exactly once" for every slot, holes included.
fn slots_not_once(db: &str, jobs: &str) -> String {
    psql(
        db,
        &format!(
            "WITH span AS (SELECT job, min(fire_time) AS a, max(fire_time) AS b FROM runs \
             WHERE job LIKE '{jobs}' AND trigger = 'interval' GROUP BY job), \
             slot AS (SELECT job, generate_series(a, b, interval '1 second') AS s FROM span), \
             n AS (SELECT slot.job, slot.s, count(runs.id) AS n FROM slot LEFT JOIN runs \
             ON runs.job = slot.job AND runs.fire_time = slot.s AND runs.trigger = 'interval' GROUP BY slot.job, slot.s) \
             SELECT count(*) || coalesce(': ' || string_agg(job || '@' || s::text || ' x' || n, ', ') \
             FILTER (WHERE k <= 20), '') FROM (SELECT *, row_number() OVER () AS k FROM n WHERE n <> 1) bad \
             HAVING count(*) > 0"
        ),
    )
}

/// Pairs of `jobs`' runs whose `[started_at, finished_at]` overlap.
fn overlapping_runs(db: &str, jobs: &str) -> String {
    psql(
        db,
        &format!(
            "WITH r AS (SELECT id, job, node, started_at, finished_at FROM runs WHERE job LIKE '{jobs}' \
             AND status = 'succeeded') \
             SELECT coalesce(string_agg(a.job || '#' || a.id || '@' || a.node || ' & ' || b.job || '#' || b.id || '@' \
             || b.node, ', '), '') FROM r a JOIN r b ON a.id < b.id \
             AND a.started_at < b.finished_at AND b.started_at < a.finished_at"
        ),
    )
}

#[test]
fn a_file_dropped_into_every_folder_of_the_fleet_runs_once_and_a_manual_trigger_on_each_node_runs_there() {
    let url = Cluster::fresh_db();
    let db = db_of(&url);
    let daemons = fleet(3, &url, &[], "");
    let hello = "[[step]]\nname = \"hi\"\nsleep = \"10ms\"\n";
    for d in &daemons {
        d.drop_file("hello.toml", hello);
    }
    for d in &daemons {
        d.barrier();
    }
    let runs = "SELECT count(*) FROM runs WHERE job = 'hello.toml'";
    assert_eq!(wait_count(&db, runs, 1, Duration::from_secs(20)), 1);
    // Not claimed: the node asked runs it, once each.
    for d in &daemons {
        let (code, body) = support::http(d.api(), "POST", "/jobs/hello.toml/trigger", &[], "");
        assert_eq!(code, 201, "{body}");
    }
    assert_eq!(
        wait_count(
            &db,
            "SELECT count(*) FROM runs WHERE job = 'hello.toml' AND trigger = 'manual'",
            3,
            Duration::from_secs(20)
        ),
        3
    );
    stop_all(daemons);
    assert_eq!(psql(&db, "SELECT count(*) FROM runs WHERE job = 'hello.toml' AND trigger = 'file'"), "1");
    assert_eq!(
        psql(
            &db,
            "SELECT string_agg(regexp_replace(node, '-[0-9a-f]{8}$', ''), ',' ORDER BY node) FROM runs \
             WHERE job = 'hello.toml' AND trigger = 'manual'"
        ),
        "node1,node2,node3"
    );
    assert_eq!(
        psql(&db, "SELECT count(*) FROM claims WHERE job = 'hello.toml' AND content_hash IS NOT NULL"),
        "1",
        "the claim says which version ran"
    );
}

#[test]
fn after_a_full_fleet_outage_each_missed_fire_is_recorded_once_and_caught_up_once() {
    let url = Cluster::fresh_db();
    let db = db_of(&url);
    let tick = "every = \"1s\"\ncatch_up = \"latest\"\nnotify = [\"told\"]\nnotify_on = [\"missed\"]\n\
                [[step]]\nname = \"t\"\nsleep = \"10ms\"\n";
    // Every node tells one file of the notifications it sends.
    let told = tempfile::NamedTempFile::new().expect("a temp file");
    let config =
        format!("[notify.told]\ncommand = [\"sh\", \"-c\", \"echo $GATHERD_EVENT >> '{}'\"]\n", told.path().display());
    let interval = "SELECT count(*) FROM runs WHERE job = 'tick.toml' AND status = 'succeeded'";
    let daemons = fleet(2, &url, &[("tick.toml", tick)], &config);
    assert!(wait_count(&db, interval, 2, Duration::from_secs(20)) >= 2);
    stop_all(daemons);
    let before: u64 = psql(&db, "SELECT count(*) FROM runs WHERE job = 'tick.toml'").parse().unwrap();
    std::thread::sleep(Duration::from_millis(3500)); // the whole fleet is down for three slots or more
    let daemons = fleet(2, &url, &[("tick.toml", tick)], &config);
    assert!(
        wait_count(&db, "SELECT count(*) FROM runs WHERE job = 'tick.toml'", before + 6, Duration::from_secs(20))
            >= before + 6
    );
    stop_all(daemons);
    assert_eq!(slots_not_once(&db, "tick.toml"), "", "slots without exactly one run or missed row");
    let missed: u64 =
        psql(&db, "SELECT count(*) FROM runs WHERE job = 'tick.toml' AND status = 'missed'").parse().unwrap();
    assert!(missed >= 2, "the outage's fires are recorded missed: {missed}");
    // Told once, by the node that recorded them (each daemon's stop waited
    // for its notifier).
    let notices = std::fs::read_to_string(told.path()).expect("read the notices");
    assert_eq!(notices.lines().filter(|l| *l == "missed").count(), 1, "missed notifications: {notices:?}");
}

#[test]
fn overlap_skip_holds_across_the_fleet_a_run_never_starts_while_one_goes_on_elsewhere() {
    let url = Cluster::fresh_db();
    let db = db_of(&url);
    let slow = "every = \"1s\"\n[[step]]\nname = \"slow\"\nsleep = \"2500ms\"\n";
    let daemons = fleet(2, &url, &[("slow.toml", slow)], "");
    let done = "SELECT count(*) FROM runs WHERE job = 'slow.toml' AND status = 'succeeded'";
    assert!(wait_count(&db, done, 2, Duration::from_secs(30)) >= 2);
    // The fleet's check acted: a node skipped a fire for the other's run
    // (not only one node running everything).
    let across = |l: &serde_json::Value| l["message"] == "skipped: the job's last run is still going on another node";
    let skipped_across: usize = daemons.iter().map(|d| d.count(across)).sum();
    stop_all(daemons);
    assert_eq!(overlapping_runs(&db, "slow.toml"), "", "runs of an overlap = \"skip\" job at once on two nodes");
    assert!(skipped_across > 0, "no fire was skipped for a run on the other node");
}

#[test]
fn a_semaphore_of_one_never_has_two_holders_in_the_fleet() {
    let url = Cluster::fresh_db();
    let db = db_of(&url);
    // A job of its own on each node, all three on one semaphore: 1.2 s of
    // work a second, so they contend.
    let job = "every = \"1s\"\noverlap = \"allow\"\nsemaphore = \"one\"\n[[step]]\nname = \"s\"\nsleep = \"400ms\"\n";
    let daemons = fleet_of(3, &url, |i| vec![(format!("sem{i}.toml"), job.to_string())], "[semaphores]\none = 1\n");
    let done = "SELECT count(*) FROM runs WHERE job LIKE 'sem%' AND status = 'succeeded'";
    assert!(wait_count(&db, done, 10, Duration::from_secs(40)) >= 10);
    stop_all(daemons);
    assert_eq!(overlapping_runs(&db, "sem%"), "", "two holders of a semaphore of 1");
    // Not vacuous: the semaphore went from node to node. (Which nodes win
    // the polls is not promised: a poll may miss a slot freed between two.)
    let nodes = psql(&db, "SELECT count(DISTINCT node) FROM runs WHERE job LIKE 'sem%' AND status = 'succeeded'");
    assert!(nodes.parse::<u32>().unwrap_or(0) >= 2, "runs on {nodes} node(s) only");
    assert_eq!(psql(&db, "SELECT count(*) FROM semaphore_slots"), "0", "every slot given back");
}

#[test]
fn a_node_at_its_run_limit_lets_a_node_with_room_take_the_fires() {
    let url = Cluster::fresh_db();
    let db = db_of(&url);
    let tick = "every = \"1s\"\n[[step]]\nname = \"t\"\nsleep = \"10ms\"\n";
    let daemons = fleet(2, &url, &[("tick.toml", tick)], "max_concurrent_runs = 1\nshutdown_grace = \"1s\"\n");
    // node1 is full: a long one-shot of its own holds its only slot.
    daemons[0].drop_file("hog.toml", "[[step]]\nname = \"hog\"\nsleep = \"30s\"\n");
    assert_eq!(
        wait_count(
            &db,
            "SELECT count(*) FROM runs WHERE job = 'hog.toml' AND status = 'running'",
            1,
            Duration::from_secs(20)
        ),
        1
    );
    let since = psql(&db, "SELECT now()");
    let after = format!("SELECT count(*) FROM runs WHERE job = 'tick.toml' AND fire_time > '{since}'");
    assert!(wait_count(&db, &after, 4, Duration::from_secs(20)) >= 4);
    let on_full = psql(
        &db,
        &format!("SELECT count(*) FROM runs WHERE job = 'tick.toml' AND fire_time > '{since}' AND node LIKE 'node1-%'"),
    );
    stop_all(daemons);
    assert_eq!(on_full, "0", "the full node took fires a node with room could run");
    assert_eq!(slots_not_once(&db, "tick.toml"), "");
}

/// The load: three daemons on one database, 50 jobs `every = "1s"`
/// on each (the same files), and 500 one-shot files dropped into all three
/// folders over 30 s. Every slot of every job has exactly one run or
/// `missed` row, every file exactly one run, nothing is left running.
#[test]
fn three_daemons_run_every_slot_of_50_interval_jobs_and_each_of_500_dropped_files_exactly_once() {
    let url = Cluster::fresh_db();
    let db = db_of(&url);
    // `allow`: a fire skipped for overlap records nothing, as on one node;
    // here every slot must have its row.
    let tick = "every = \"1s\"\noverlap = \"allow\"\n[[step]]\nname = \"t\"\nsleep = \"10ms\"\n";
    let jobs: Vec<(String, String)> = (0..50).map(|j| (format!("j{j:02}.toml"), tick.to_string())).collect();
    let daemons = fleet_of(3, &url, |_| jobs.clone(), "");
    let began = Instant::now();
    for f in 0..500 {
        let text = format!("# file {f}\n[[step]]\nname = \"f\"\nsleep = \"10ms\"\n");
        for d in &daemons {
            d.drop_file(&format!("f{f:03}.toml"), &text);
        }
        // 500 files over 30 s.
        let due = Duration::from_millis(60 * (f + 1));
        if let Some(left) = due.checked_sub(began.elapsed()) {
            std::thread::sleep(left);
        }
    }
    let files = "SELECT count(DISTINCT job) FROM runs WHERE job LIKE 'f%' AND status = 'succeeded'";
    let ran = wait_count(&db, files, 500, Duration::from_secs(60));
    let elapsed = began.elapsed();
    stop_all(daemons);
    assert_eq!(ran, 500, "dropped files that never ran");
    let twice = psql(
        &db,
        "SELECT coalesce(string_agg(job || ' x' || n, ', '), '') FROM \
         (SELECT job, count(*) AS n FROM runs WHERE job LIKE 'f%' GROUP BY job HAVING count(*) <> 1 LIMIT 20) d",
    );
    assert_eq!(twice, "", "dropped files not run exactly once");
    assert_eq!(slots_not_once(&db, "j%"), "", "slots without exactly one run or missed row");
    let left = psql(&db, "SELECT count(*) FROM runs WHERE status IN ('running', 'queued')");
    assert_eq!(left, "0", "runs left running or queued");
    let interval_runs = psql(&db, "SELECT count(*) FROM runs WHERE job LIKE 'j%'");
    let per_node = psql(
        &db,
        "SELECT string_agg(node || ' ' || n, ', ' ORDER BY node) FROM (SELECT node, count(*) AS n FROM runs GROUP BY node) c",
    );
    eprintln!("fleet: {interval_runs} interval rows and 500 files in {elapsed:?}; runs per node: {per_node}");
}
