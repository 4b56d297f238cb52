//! Start-up: everything the supervisor needs before its loop — the state
//! folder and its lock, the run history (with the runs a crash left
//! `running` marked interrupted), the folder watcher, signals, the control
//! API — then the first scan of the jobs folder, after which the daemon is
//! ready.

use std::sync::Arc;

use anyhow::{Context, bail};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use super::control::DaemonControl;
use super::notify::Input as NotifyInput;
use super::processes::{self, ProcessRecords, Swept};
use super::supervisor::{Inputs, Supervisor};
use super::{DEBOUNCE, Options};
use crate::store::{self, RunStore};
use crate::watch::{Links, Watcher};

/// Why runs found `running` at start are marked interrupted.
const INTERRUPTED: &str = "the daemon stopped while it ran (crash, kill -9 or power loss); it was not retried";

/// Starts everything and loads the jobs folder; the supervisor is ready.
pub(super) async fn start(opts: Options) -> anyhow::Result<(Supervisor, Inputs)> {
    if !opts.jobs.is_dir() {
        bail!("the jobs folder {} does not exist or is not a folder", opts.jobs.display());
    }
    std::fs::create_dir_all(&opts.state)
        .with_context(|| format!("cannot create the state folder {}", opts.state.display()))?;
    super::listen::raise_open_files_limit();
    let lock = lock_state(&opts.state)?;
    // Blocking work (every /proc entry, the records, the kills): off the
    // runtime's workers.
    let state = opts.state.clone();
    let process_records = tokio::task::spawn_blocking(move || kill_left_processes(&state))
        .await
        .context("the sweep of process records failed")??;
    let store: Arc<dyn RunStore> = match opts.store.as_deref().or(opts.config.store.as_deref()) {
        Some(url) => store::open_store(Some(url), &opts.state).await.context("cannot open the run store")?,
        None => {
            let db = opts.state.join(store::DB_FILE);
            store::open_store(None, &opts.state)
                .await
                .with_context(|| format!("cannot open the run store {}", db.display()))?
        }
    };
    // A new node id at each start (ARCHITECTURE.md "Fleets"). SQLite's
    // recover takes every run left running (one daemon per state folder);
    // a fleet's takes none of a live node's (the takeover does, later).
    let fleet_node = Arc::new(super::fleet::Node::new(opts.config.node_label(), opts.config.lease()));
    let node = fleet_node.id();
    if store.shared() {
        store.register_node(&fleet_node.row()).await.context("cannot register this node in the fleet's history")?;
        tracing::info!(node = %node, lease = %humantime::format_duration(fleet_node.lease), "joined the fleet");
    }
    let recovered = store.recover(&node, INTERRUPTED).await.context("cannot recover runs left running")?;
    let mut interrupted = Vec::new();
    for run in recovered {
        if run.status == crate::store::RecordedStatus::Interrupted {
            tracing::warn!(job = %run.job, run_id = run.id, started_at = %run.started_at, reason = INTERRUPTED, "run interrupted");
            interrupted.push(run);
        } else {
            tracing::warn!(job = %run.job, run_id = run.id, queued_at = %run.started_at, "a run queued when the daemon stopped never started; recorded cancelled");
        }
    }
    // Before the first scan: a paused job's fires and new versions wait.
    let paused = store.paused().await.context("cannot read the paused jobs from the run history")?;
    for (job, since) in &paused {
        tracing::info!(job = %job, since = %since, "paused (`gatherd resume` resumes it)");
    }
    // A root daemon reads nothing through a link out of the jobs folder, so
    // it watches nothing out of it either.
    let links = if crate::load::daemon_confines_links() { Links::WithinFolder } else { Links::Anywhere };
    let (watcher, file_events) = Watcher::start(&opts.jobs, DEBOUNCE, links)
        .with_context(|| format!("cannot watch the jobs folder {}", opts.jobs.display()))?;
    let sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let sighup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;

    let listeners = super::listen::bind(&opts).await?;

    let mut sup = Supervisor::new(opts, store, node);
    if sup.store.shared() {
        let paused = paused.iter().map(|(job, _)| job.clone()).collect();
        sup.heartbeats = Some(super::fleet::Heartbeats::start(fleet_node.clone(), sup.store.clone(), paused));
    }
    sup.fleet_node = Some(fleet_node.clone());
    sup.paused = paused.into_iter().map(|(job, _)| job).collect();
    // `gatherd_last_success_timestamp_seconds` from the history, so it
    // survives restarts (before `ready`: a scrape after it sees them).
    match sup.store.last_successes().await {
        Ok(found) => {
            for (job, at) in found {
                sup.metrics.set_last_success(&job, at.into());
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot read the jobs' last successes from the run history"),
    }
    sup.lock = Some(lock);
    sup.processes = Some(process_records);
    sup.api = listeners.tcp.as_ref().map(|(_, addr)| (*addr, listeners.token.clone()));
    let (commands_tx, commands) = tokio::sync::mpsc::channel(64);
    let control = Arc::new(DaemonControl { commands: commands_tx, live: sup.live.clone(), node: fleet_node });
    let api_stop = CancellationToken::new();
    // Owned by the loop's inputs and awaited when the loop ends.
    let api = tokio::spawn(super::listen::serve(
        listeners,
        sup.opts.config.api_hosts.clone(),
        control,
        sup.store.clone(),
        sup.metrics.clone(),
        api_stop.clone(),
    ));
    tracing::info!(jobs = %sup.opts.jobs.display(), state = %sup.opts.state.display(), "gatherd daemon starting");
    sup.rescan().await;
    // Told once the jobs (and their subscriptions) are loaded.
    for run in interrupted {
        let settings = sup.notify_settings(&run.job);
        let event = crate::job::NotifyEvent::Interrupted;
        let input = NotifyInput::Event { job: run.job, run_id: Some(run.id), event, error: run.error, settings };
        sup.notify(input);
    }
    sup.started = true;
    sup.systemd.ready(&sup.status_line());
    tracing::info!(jobs = sup.table.len(), "ready");
    let inputs =
        Inputs { file_events: Some(file_events), commands, sigterm, sigint, sighup, watcher, api: (api, api_stop) };
    Ok((sup, inputs))
}

/// Kills what the steps of a daemon that did not stop cleanly (`kill -9`,
/// a crash) left running — their leaders died with it, what they started in
/// the background did not — and returns the records for this daemon's runs.
/// Holding the state's lock, so no other daemon's groups are touched.
/// Blocking: run it with `spawn_blocking`.
fn kill_left_processes(state: &std::path::Path) -> anyhow::Result<ProcessRecords> {
    let records = ProcessRecords::open(state).with_context(|| {
        format!("cannot create the folder of process records {}", state.join(processes::PROCESSES_DIR).display())
    })?;
    for swept in processes::sweep(&records) {
        match swept {
            Swept::Killed { job, pgid, processes } => tracing::warn!(
                job = %job,
                pgid,
                processes,
                "killed the processes a step left running when the last daemon stopped without cleaning up"
            ),
            Swept::Gone { pgid } => tracing::debug!(pgid, "a recorded process group is gone"),
            Swept::Unreadable { path, error } => {
                tracing::warn!(path = %path.display(), error = %error, "cannot handle a process record")
            }
        }
    }
    Ok(records)
}

/// Takes an exclusive lock on the state folder, so two daemons never share it.
fn lock_state(state: &std::path::Path) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    let path = state.join("gatherd.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        anyhow::anyhow!(
            "another gatherd daemon uses the state folder {} ({}): stop it or pass another --state",
            state.display(),
            e.desc()
        )
    })
}
