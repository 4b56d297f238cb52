//! What a job file's new version does to the job table: an invalid version
//! is reported (the last valid one keeps running), a one-shot runs unless
//! this version already ran, a scheduled job is (re)scheduled — continuing
//! from its last recorded fire at start, with missed fires caught up.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::catch_up;
use super::describe;
use super::notify::Input as NotifyInput;
use super::supervisor::Supervisor;
use super::table::{Hash, Loaded};
use crate::job::{Job, Trigger};
use crate::load::LoadError;
use crate::schedule::{Schedule, stable_jitter};
use crate::store::{JobRecord, Missed, RecordedStatus, RunTrigger};
use crate::watch::JobId;

impl Supervisor {
    /// A job file was read: take the new version (or report why not) and
    /// (re)schedule it.
    pub async fn apply(&mut self, id: JobId, loaded: Loaded) {
        let entry = self.table.entry(id.clone()).or_default();
        // Saved again, unchanged — unless only its validity changed, as
        // when a refused file's mode or owner is fixed (`load::load_to_run`).
        if entry.hash == Some(loaded.hash) && entry.invalid.is_some() == loaded.job.is_err() {
            return;
        }
        entry.hash = Some(loaded.hash);
        entry.source = loaded.source;
        self.store.record_job(JobRecord {
            job: id.to_string(),
            kind: id.format(),
            content_hash: loaded.hash,
            valid: loaded.job.is_ok(),
            diagnostic: loaded.job.as_ref().err().map(ToString::to_string),
        });
        match loaded.job {
            Ok(job) => self.apply_valid(id, loaded.hash, job).await,
            Err(e) => self.apply_invalid(&id, e),
        }
    }

    /// An invalid version: reported; the last valid one keeps its schedule.
    pub(super) fn apply_invalid(&mut self, id: &JobId, e: LoadError) {
        for d in e.diagnostics() {
            tracing::warn!(job = %id, diagnostic = %d.one_line(), "invalid job file");
        }
        let entry = self.table.entry(id.clone()).or_default();
        // A refusal to read says so after this (`unreadable`); any other error is not one.
        entry.refused = None;
        if entry.job.is_some() {
            tracing::warn!(job = %id, "keeping the last valid version until the file is fixed or removed");
        }
        let error = e.diagnostics().first().map(|d| d.one_line());
        if entry.invalid.replace(e).is_none() {
            self.invalid_jobs += 1;
            let settings = self.notify_settings(id.as_str());
            let event = crate::job::NotifyEvent::Invalid;
            self.notify(NotifyInput::Event { job: id.to_string(), run_id: None, event, error, settings });
        }
    }

    /// A valid version: it replaces the last one, then runs or is scheduled
    /// by its trigger.
    async fn apply_valid(&mut self, id: JobId, hash: Hash, job: Job) {
        let entry = self.table.entry(id.clone()).or_default();
        let was_invalid = entry.invalid.take().is_some();
        if was_invalid {
            self.invalid_jobs -= 1;
        }
        let first_version = entry.job.is_none();
        let same_timing = entry.job.as_ref().is_some_and(|old| old.trigger == job.trigger && old.jitter == job.jitter);
        tracing::info!(job = %id, trigger = %describe(&job.trigger), fixed = was_invalid, "job loaded");
        let trigger = job.trigger.clone();
        let settings = job.notify.clone();
        entry.job = Some(Arc::new(job));
        self.notify(NotifyInput::Job { job: id.to_string(), settings });
        let Some(entry) = self.table.get_mut(&id) else { return };
        entry.valid_hash = Some(hash);
        let scheduled = entry.timer.is_some();
        match trigger {
            Trigger::OnChange => self.apply_one_shot(id, hash).await,
            // Same timing, already scheduled: the timer stands.
            _ if same_timing && scheduled => {}
            trigger => self.apply_scheduled(id, &trigger, first_version).await,
        }
    }

    /// A one-shot version runs once: now, unless it ran already (this
    /// daemon saw it, or — at start — the history says so).
    async fn apply_one_shot(&mut self, id: JobId, hash: Hash) {
        self.cancel_timer(&id);
        let entry = self.table.entry(id.clone()).or_default();
        if entry.last_run_hash == Some(hash) {
            return;
        }
        let paused = self.paused.contains(id.as_str());
        if paused && self.started {
            // Not run now, nor marked run: `resume` runs it.
            return tracing::info!(job = %id, "the job is paused: this version runs when it is resumed");
        }
        entry.last_run_hash = Some(hash);
        if self.started {
            // Appeared (again) while the daemon runs: run it — instead of
            // an older version still queued for a slot, which never starts.
            self.drop_queued(|w| w.job == id, super::supervisor::SUPERSEDED_WHILE_QUEUED);
            return self.fire(id, RunTrigger::File, Utc::now(), None);
        }
        // At start, a version that ran before the restart does not run again.
        match self.store.one_shot_status(id.as_str(), &hash).await {
            Ok(Some(RecordedStatus::Interrupted)) => tracing::warn!(
                job = %id,
                "this version's run was interrupted when the daemon stopped; not retried (save a new version to run it)"
            ),
            Ok(Some(_)) => tracing::info!(job = %id, "this version already ran to the end; not running it again"),
            Ok(None) if paused => {
                tracing::info!(job = %id, "the job is paused: this version runs when it is resumed");
                if let Some(entry) = self.table.get_mut(&id) {
                    entry.last_run_hash = None;
                }
            }
            Ok(None) => self.fire(id, RunTrigger::File, Utc::now(), None),
            // Fail closed: a version that cannot be proved new is not run
            // (a broken history must not re-run every one-shot that ran).
            Err(e) => {
                tracing::error!(
                    job = %id,
                    error = %e,
                    "cannot ask the run history whether this version ran; not running it (save a new version to run it)"
                );
                // Until a restart: the one-shots it skipped are in the log.
                let why = format!(
                    "the run history could not be read at start ({e}): one-shots it could not vouch for were not run"
                );
                self.metrics.set_problem("history", Some(why));
            }
        }
    }

    /// A scheduled version: (re)schedules it. A job the store saw fire
    /// before the daemon stopped continues from its last fire: `every` keeps
    /// its grid, and the fires missed in between are caught up or recorded
    /// missed.
    async fn apply_scheduled(&mut self, id: JobId, trigger: &Trigger, first_version: bool) {
        let last = if first_version && !self.started {
            self.store.last_fire(id.as_str()).await.unwrap_or_else(|e| {
                tracing::error!(job = %id, error = %e, "cannot read the job's last fire from the store");
                None
            })
        } else {
            None
        };
        // A fleet's nodes must fire the same slots, whenever each loaded the
        // file: an `every` job's grid starts at the Unix epoch there (one
        // daemon keeps its own: from its last fire, or from now).
        let anchor = if self.store.shared() { DateTime::UNIX_EPOCH } else { last.unwrap_or_else(Utc::now) };
        match Schedule::new(trigger, anchor) {
            Ok(Some(schedule)) => {
                if let Some(last) = last {
                    self.catch_up(&id, &schedule, last).await;
                }
                let entry = self.table.entry(id.clone()).or_default();
                entry.schedule = Some(schedule);
                entry.slot = None;
                self.schedule_next(&id);
            }
            Ok(None) => {}
            Err(e) => tracing::error!(job = %id, error = %e, "cannot schedule the job"),
        }
    }

    /// At start: records the fires missed since `last` and runs the ones the
    /// job's `catch_up` asks for, one after another.
    async fn catch_up(&mut self, id: &JobId, schedule: &Schedule, last: DateTime<Utc>) {
        let Some(entry) = self.table.get_mut(id) else { return };
        let (Some(job), Some(hash)) = (entry.job.clone(), entry.valid_hash) else { return };
        // A paused job catches nothing up: every fire it missed is recorded.
        let policy = if self.paused.contains(id.as_str()) { crate::job::CatchUp::Skip } else { job.catch_up };
        let plan = catch_up::plan(schedule, last, Utc::now(), policy, job.catch_up_window);
        let cause = scheduled_cause(&job.trigger);
        if let (Some(&first), Some(&latest)) = (plan.missed.first(), plan.missed.last()) {
            tracing::warn!(job = %id, count = plan.missed.len(), first = %first, last = %latest, more = plan.uncounted, "fires missed while the daemon was down; recorded as missed");
            let missed = Missed {
                job: id.to_string(),
                trigger: cause,
                fire_times: plan.missed,
                content_hash: hash,
                node: self.node.clone(),
            };
            let error = Some(format!("{} fires missed, from {first} to {latest}", missed.fire_times.len()));
            match self.store.record_missed(missed).await {
                // A fleet's other node recorded (and tells) them.
                Ok(0) => return tracing::info!(job = %id, "the missed fires were recorded by another node"),
                Ok(_) => {}
                Err(e) => tracing::error!(job = %id, error = %e, "cannot record the missed fires"),
            }
            let settings = job.notify.clone();
            let event = crate::job::NotifyEvent::Missed;
            self.notify(NotifyInput::Event { job: id.to_string(), run_id: None, event, error, settings });
        }
        if plan.run.is_empty() {
            return;
        }
        tracing::info!(job = %id, count = plan.run.len(), policy = ?job.catch_up, "catching up missed fires");
        let mut queue: std::collections::VecDeque<_> = plan.run.into();
        let first = queue.pop_front();
        let Some(entry) = self.table.get_mut(id) else { return };
        entry.catch_up = queue;
        entry.catch_up_cause = Some(cause);
        if let Some(due) = first {
            self.fire(id.clone(), cause, due, None);
        }
    }

    pub fn cancel_timer(&mut self, id: &JobId) {
        if let Some(entry) = self.table.get_mut(id) {
            if let Some(key) = entry.timer.take() {
                self.timers.remove(&key);
            }
            entry.schedule = None;
            entry.slot = None;
        }
    }

    /// Sets the job's timer for its next slot after the last one (or now).
    pub fn schedule_next(&mut self, id: &JobId) {
        let Some(entry) = self.table.get_mut(id) else { return };
        let (Some(schedule), Some(job)) = (&entry.schedule, &entry.job) else { return };
        let now = Utc::now();
        let jitter = job.jitter.map_or(Duration::ZERO, |max| stable_jitter(id.as_str(), max));
        // The next slot after the last one, so an interval never drifts; but
        // when the daemon fell behind (busy, suspended), the next one after now.
        let after = entry.slot.unwrap_or(now);
        let mut next = schedule.next_after(after);
        let mut skipped = Vec::new();
        if let Some(n) = next
            && n + jitter < now
        {
            // The slots passed meanwhile are recorded `missed` (in a fleet,
            // each claimed as it is recorded: a slot another node ran is
            // left to its run), so the history has a row for every slot.
            // The next is the first slot still due, even if only by its
            // jitter (past `now` by the slot alone, it would be lost).
            let mut slot = Some(n);
            while let Some(s) = slot.filter(|s| *s + jitter < now) {
                if skipped.len() == catch_up::MAX_MISSED {
                    slot = schedule.next_after(now);
                    break;
                }
                skipped.push(s);
                slot = schedule.next_after(s);
            }
            tracing::warn!(job = %id, missed_since = %n, missed = skipped.len(), "fell behind the schedule; skipping to the next slot");
            next = slot;
        }
        let skipped = entry.valid_hash.filter(|_| !skipped.is_empty()).map(|content_hash| Missed {
            job: id.to_string(),
            trigger: scheduled_cause(&job.trigger),
            fire_times: skipped,
            content_hash,
            node: self.node.clone(),
        });
        if let Some(key) = entry.timer.take() {
            self.timers.remove(&key);
        }
        entry.slot = next;
        if let Some(slot) = next {
            let due = slot + jitter;
            let delay = (due - now).to_std().unwrap_or(Duration::ZERO);
            entry.timer = Some(self.timers.insert(id.clone(), delay));
            tracing::debug!(job = %id, next = %due, "scheduled");
        }
        if let Some(missed) = skipped {
            let store = self.store.clone();
            self.chores.spawn(async move {
                if let Err(e) = store.record_missed(missed).await {
                    tracing::error!(error = %e, "cannot record the fires skipped when the daemon fell behind");
                }
            });
        }
    }
}

/// Why a scheduled job's fire runs: its cron schedule or its interval.
pub(super) fn scheduled_cause(trigger: &Trigger) -> RunTrigger {
    match trigger {
        Trigger::Cron { .. } => RunTrigger::Schedule,
        _ => RunTrigger::Interval,
    }
}
