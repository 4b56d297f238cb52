//! What the supervisor's loop does with the heartbeat task's findings.

use super::FleetNote;
use crate::daemon::notify::Input as NotifyInput;
use crate::daemon::supervisor::{CANCELLED_WHILE_QUEUED, Supervisor};
use crate::job::{NotifyEvent, OnNodeLoss};
use crate::store::{JobRecord, TakenOver};

impl Supervisor {
    /// A note of the heartbeat task.
    pub(in crate::daemon) fn on_fleet_note(&mut self, note: FleetNote) {
        match note {
            FleetNote::TakenOver(taken) => self.on_taken_over(taken),
            FleetNote::Rejoined { old, new } => self.on_rejoined(&old, new),
            FleetNote::Skew(skew) => self.skew = skew,
            FleetNote::LastSuccesses(found) => {
                for (job, at) in found {
                    self.metrics.set_last_success(&job, at.into());
                }
            }
            FleetNote::Paused { paused, resumed } => {
                for job in paused {
                    self.pause_here(&job, true, Some("the fleet's history"));
                }
                for job in resumed {
                    self.pause_here(&job, false, Some("the fleet's history"));
                }
            }
        }
        self.report_status();
    }

    /// Runs of a lost node, now `interrupted`: told like runs a crash
    /// interrupted, and run again here when their job says
    /// `on_node_loss = "rerun"` (a new run, the same trigger and nominal
    /// time; at least once).
    fn on_taken_over(&mut self, taken: TakenOver) {
        match taken.last_heartbeat {
            Some(last) => tracing::warn!(
                dead_node = %taken.node,
                last_heartbeat = %last,
                runs = taken.runs.len(),
                "took a dead node over: it stopped heartbeating past its lease"
            ),
            None => {
                tracing::warn!(dead_node = %taken.node, runs = taken.runs.len(), "took over runs left under a node id that is not alive")
            }
        }
        for run in taken.runs {
            tracing::warn!(job = %run.job, run_id = run.id, dead_node = %run.node, reason = run.error.as_deref().unwrap_or(""), "run interrupted: taken over");
            let settings = self.notify_settings(&run.job);
            let event = NotifyEvent::Interrupted;
            let input =
                NotifyInput::Event { job: run.job.clone(), run_id: Some(run.id), event, error: run.error, settings };
            self.notify(input);
            let id = self.table.keys().find(|k| k.as_str() == run.job).cloned();
            let rerun = id.as_ref().and_then(|id| self.table.get(id)?.job.as_ref()).map(|j| j.on_node_loss);
            match (id, rerun) {
                (Some(id), Some(OnNodeLoss::Rerun)) => {
                    tracing::info!(job = %id, taken_run_id = run.id, trigger = run.trigger.as_str(), "running it again (on_node_loss = \"rerun\")");
                    self.unclaimed = true;
                    self.fire(id, run.trigger, run.fire_time, None);
                    self.unclaimed = false;
                }
                (None, _) => tracing::debug!(job = %run.job, "not run again: this node has no such job"),
                _ => {}
            }
        }
    }

    /// This node was declared dead and rejoined as `new`: every run in
    /// flight was begun under the old id and was taken over (or will be),
    /// so it is cancelled; what they record is refused by the history's
    /// fencing. New runs record `new`.
    fn on_rejoined(&mut self, old: &str, new: String) {
        self.node = new;
        let queued = self.drop_queued(|_| true, CANCELLED_WHILE_QUEUED);
        let mut running = 0;
        for run in self.in_flight.values().filter(|r| !r.queued && !r.ended) {
            run.cancel.cancel();
            running += 1;
        }
        tracing::warn!(old_node = %old, node = %self.node, cancelled = running, dropped = queued, "rejoined the fleet under a new id; the old id's runs are cancelled");
        // The new id has no job versions yet (version skew): every job's.
        for (id, entry) in &self.table {
            if let Some(hash) = entry.hash {
                self.store.record_job(JobRecord {
                    job: id.to_string(),
                    kind: id.format(),
                    content_hash: hash,
                    valid: entry.invalid.is_none(),
                    diagnostic: entry.invalid.as_ref().map(ToString::to_string),
                });
            }
        }
    }

    /// `node`'s version of a removed job no longer counts for skew.
    pub(in crate::daemon) fn forget_node_job(&mut self, job: &str) {
        if !self.store.shared() {
            return;
        }
        let (store, node, job) = (self.store.clone(), self.node.clone(), job.to_string());
        self.chores.spawn(async move {
            if let Err(e) = store.forget_node_job(&node, &job).await {
                tracing::debug!(job = %job, error = %e, "cannot forget this node's version of a removed job");
            }
        });
    }
}
