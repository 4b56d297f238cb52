//! The debounce state machine: [`Fact`]s about paths go in, [`Due`] reports come
//! out — at once for the first sign that a file is complete, and coalesced
//! after that.
//!
//! A close-after-write or a rename-into already says the file is complete, so
//! the first such fact for a path is reported at once (the leading edge): that
//! is what makes a dropped file start without waiting. Whatever follows for the
//! same path within the delay (another save, an editor's second write) is
//! coalesced into one report once the path has been quiet for the delay (the
//! trailing edge), so a burst of saves costs at most one report per delay.
//! Facts that do not say "complete" — a removal, a new folder, lost events —
//! always wait for the delay, as do all facts while a path is within its
//! window.
//!
//! Per path it remembers whether a writer may still have the file open (data
//! written, not yet closed), at most one report waiting for its deadline, and
//! until when the path's last report keeps coalescing. The last fact wins: a
//! file renamed away and back within the delay is reported as changed only;
//! data written after a close cancels the pending report until the next close.
//!
//! Reports are at least once, not exactly once: a file written into a folder
//! that just appeared can be reported by its own close and again by the
//! folder's scan when the box is slow (the scan's dedup window is the delay).
//! That is harmless by design: the supervisor acts on a change of content
//! (SHA-256), so a repeated report of the same bytes runs nothing.
//!
//! Architecture Invariant: pure — no I/O, no tasks, the clock is passed in. What
//! needs a look at the disk (was that rename a file or a folder?) comes out as a
//! [`Due`] for the caller to resolve.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

use super::id::is_job_name;

/// What one filesystem event says about one path under the jobs folder
/// (relative, `/`-separated, no ignored component).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Fact {
    /// A job file was created; its writer (if any) still has it open. It may
    /// also be a new symlink or hard link, which nobody will close: probe it.
    Created(String),
    /// Data was written to a job file; the writer may still have it open.
    Written(String),
    /// A writer closed a job file after writing: it is complete.
    Closed(String),
    /// Something was renamed here: complete, but whether it is a file or a
    /// folder is known only by looking.
    Arrived(String),
    /// A folder (or something that is not a plain file) was created here. Files
    /// may still be being written into it, so it is looked at (scanned) only
    /// after the delay.
    FolderCreated(String),
    /// This path — a file or a whole folder — is gone (deleted, renamed away).
    Gone(String),
    /// Its attributes changed (`chmod`, `chown`, `touch`, a link count): a
    /// file that could not be read may be readable now, so it is looked at
    /// again like something that arrived — unless a writer has it open, whose
    /// close will report it.
    Attrib(String),
    /// Events may have been lost; the reason.
    Lost(String),
}

/// A report whose deadline has passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Due {
    /// A complete job file.
    Changed(String),
    /// A job file that is gone.
    Removed(String),
    /// A job file created but neither written nor closed since: changed if it is
    /// a link, else its writer is still busy; `removed` if the file it replaced
    /// is gone (to report when it is not a link).
    Probe(String, bool),
    /// A path renamed or created: a file is changed, a folder is scanned, a
    /// missing path is removed.
    Arrived(String),
    /// Events may have been lost: everything must be rescanned.
    Rescan(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Report {
    Changed,
    Removed,
    /// Probe; whether a removal was pending before.
    Probe(bool),
    Arrived,
}

impl Report {
    /// Whether this report would tell the daemon the old file is gone.
    fn is_removal(self) -> bool {
        matches!(self, Report::Removed | Report::Probe(true))
    }
}

#[derive(Debug, Default)]
struct Pending {
    /// Data was written and no close has been seen since.
    writing: bool,
    /// What to report once the path has been quiet until the deadline.
    report: Option<(Report, Instant)>,
    /// A report for this path went out; until this time, further facts are
    /// coalesced (trailing edge) rather than reported at once.
    coalesce_until: Option<Instant>,
}

impl Pending {
    /// Whether this entry still means something at `now`.
    fn is_live(&self, now: Instant) -> bool {
        self.writing || self.report.is_some() || self.coalesce_until.is_some_and(|until| now < until)
    }
}

/// Per-path debounce state plus the job ids known to exist (so a folder that
/// disappears can be reported file by file).
#[derive(Debug)]
pub(super) struct Debouncer {
    delay: Duration,
    pending: BTreeMap<String, Pending>,
    known: BTreeSet<String>,
    rescan: Option<(String, Instant)>,
}

impl Debouncer {
    /// A debouncer that reports a complete file at once and coalesces what
    /// follows until the path has been quiet for `delay`; `known` is every job
    /// id present now.
    pub(super) fn new(delay: Duration, known: impl IntoIterator<Item = String>) -> Debouncer {
        Debouncer { delay, pending: BTreeMap::new(), known: known.into_iter().collect(), rescan: None }
    }

    /// Takes in one fact observed at `now`.
    pub(super) fn observe(&mut self, fact: Fact, now: Instant) {
        let deadline = now + self.delay;
        match fact {
            Fact::Created(rel) => {
                let p = self.pending.entry(rel).or_default();
                p.writing = true;
                let removal = p.report.is_some_and(|(r, _)| r.is_removal());
                p.report = Some((Report::Probe(removal), deadline));
            }
            Fact::Written(rel) => {
                let p = self.pending.entry(rel).or_default();
                p.writing = true;
                // Wait for the close; but a removal before this writer still stands.
                p.report = p.report.filter(|(r, _)| r.is_removal()).map(|(_, at)| (Report::Removed, at));
            }
            Fact::Closed(rel) => self.complete(rel, Report::Changed, now),
            Fact::Arrived(rel) => self.complete(rel, Report::Arrived, now),
            Fact::FolderCreated(rel) => self.set(rel, Report::Arrived, deadline),
            Fact::Attrib(rel) => {
                if !self.pending.get(&rel).is_some_and(|p| p.writing) {
                    self.complete(rel, Report::Arrived, now);
                }
            }
            Fact::Gone(rel) => {
                let prefix = format!("{rel}/");
                let under: Vec<String> = self
                    .known
                    .range(prefix.clone()..)
                    .take_while(|k| k.starts_with(&prefix))
                    .chain(self.pending.range(prefix.clone()..).map(|(k, _)| k).take_while(|k| k.starts_with(&prefix)))
                    .cloned()
                    .collect();
                for path in std::iter::once(rel).chain(under) {
                    if is_job_name(&path) {
                        self.set(path, Report::Removed, deadline);
                    } else {
                        self.pending.remove(&path);
                    }
                }
            }
            Fact::Lost(reason) => {
                let reason = self.rescan.take().map_or(reason, |(first, _)| first);
                self.rescan = Some((reason, deadline));
            }
        }
    }

    /// A fact that says the file is complete: due now (leading edge), unless a
    /// report for the path went out within the delay (then coalesced: due once
    /// the path has been quiet for the delay).
    fn complete(&mut self, rel: String, report: Report, now: Instant) {
        let coalescing = self.pending.get(&rel).and_then(|p| p.coalesce_until).is_some_and(|until| now < until);
        let deadline = if coalescing { now + self.delay } else { now };
        self.set(rel, report, deadline);
    }

    fn set(&mut self, rel: String, report: Report, deadline: Instant) {
        let p = self.pending.entry(rel).or_default();
        p.writing = false;
        p.report = Some((report, deadline));
    }

    /// The earliest deadline, if any report is waiting; `None` means nothing
    /// needs a timer.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let reports = self.pending.values().filter_map(|p| p.report.map(|(_, at)| at));
        reports.chain(self.rescan.as_ref().map(|(_, at)| *at)).min()
    }

    /// Every report whose deadline is at or before `now`, in path order (a
    /// rescan first); those paths forget their report and coalesce what comes
    /// within the delay from `now`.
    pub(super) fn take_due(&mut self, now: Instant) -> Vec<Due> {
        let mut due = Vec::new();
        if self.rescan.as_ref().is_some_and(|(_, at)| *at <= now) {
            let (reason, _) = self.rescan.take().expect("checked just above");
            due.push(Due::Rescan(reason));
        }
        let delay = self.delay;
        self.pending.retain(|rel, p| {
            if let Some((report, at)) = p.report
                && at <= now
            {
                p.report = None;
                p.coalesce_until = Some(now + delay);
                let rel = rel.clone();
                due.push(match report {
                    Report::Changed => Due::Changed(rel),
                    Report::Removed => Due::Removed(rel),
                    Report::Probe(removed) => Due::Probe(rel, removed),
                    Report::Arrived => Due::Arrived(rel),
                });
            }
            // A path that is only coalescing stays until a later call finds
            // its window over: no timer of its own, so no extra wakeup.
            p.is_live(now)
        });
        due
    }

    /// A scan of a folder that arrived found the job file `rel` at `now`:
    /// whether to report it changed. Not when it has something of its own
    /// going on — a writer, a report waiting, or a report that went out within
    /// the delay (reported at once on its close, before the scan) — so one file
    /// is one report. But a removal waiting (the folder went away and came
    /// back) is void: the file is here, reported changed, and the removal is
    /// not sent.
    pub(super) fn found_in_folder(&mut self, rel: &str, now: Instant) -> bool {
        let Some(p) = self.pending.get_mut(rel) else { return true };
        if !p.writing && p.report.is_some_and(|(r, _)| r.is_removal()) {
            p.report = None;
            p.coalesce_until = Some(now + self.delay);
            return true;
        }
        !(p.writing || p.report.is_some() || p.coalesce_until.is_some_and(|until| now < until))
    }

    /// Records that `rel` was reported present (`true`) or gone.
    pub(super) fn record(&mut self, rel: &str, present: bool) {
        if present {
            self.known.insert(rel.to_owned());
        } else {
            self.known.remove(rel);
        }
    }

    /// Replaces the known job ids after a rescan.
    pub(super) fn set_known(&mut self, known: impl IntoIterator<Item = String>) {
        self.known = known.into_iter().collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_millis(100);

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    fn s(x: &str) -> String {
        x.to_owned()
    }

    #[test]
    fn written_without_close_reports_nothing_and_close_reports_once() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(D, []);
        d.observe(Fact::Created(s("x.toml")), t0);
        d.observe(Fact::Written(s("x.toml")), ms(t0, 10));
        assert_eq!(d.next_deadline(), None, "a writer is busy: no timer");
        assert!(d.take_due(ms(t0, 5_000)).is_empty());
        d.observe(Fact::Written(s("x.toml")), ms(t0, 6_000));
        d.observe(Fact::Closed(s("x.toml")), ms(t0, 6_010));
        assert_eq!(d.next_deadline(), Some(ms(t0, 6_010)), "complete: due at once");
        assert_eq!(d.take_due(ms(t0, 6_010)), [Due::Changed(s("x.toml"))]);
        assert_eq!(d.next_deadline(), None);
        assert!(d.found_in_folder("x.toml", ms(t0, 6_200)), "nothing of its own going on any more");
        assert!(d.take_due(ms(t0, 6_500)).is_empty(), "reported once");
    }

    #[test]
    fn a_complete_file_is_reported_at_once_and_what_follows_within_the_delay_is_coalesced() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(D, []);
        d.observe(Fact::Arrived(s("x.toml")), t0);
        assert_eq!(d.take_due(t0), [Due::Arrived(s("x.toml"))], "the leading edge");
        // Saved again twice while the first report's window is open: one more
        // report, once the path has been quiet for the delay.
        d.observe(Fact::Closed(s("x.toml")), ms(t0, 30));
        d.observe(Fact::Closed(s("x.toml")), ms(t0, 60));
        assert!(d.take_due(ms(t0, 130)).is_empty(), "not quiet for the delay yet");
        assert_eq!(d.next_deadline(), Some(ms(t0, 160)));
        assert_eq!(d.take_due(ms(t0, 160)), [Due::Changed(s("x.toml"))], "the trailing edge");
        assert_eq!(d.next_deadline(), None, "a window alone needs no timer");
        // Quiet for the delay since that report: at once again.
        d.observe(Fact::Closed(s("x.toml")), ms(t0, 400));
        assert_eq!(d.take_due(ms(t0, 400)), [Due::Changed(s("x.toml"))]);
    }

    #[test]
    fn a_file_found_by_a_folder_scan_is_left_to_its_own_report() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(D, []);
        d.observe(Fact::FolderCreated(s("sub")), t0);
        d.observe(Fact::Created(s("sub/a.toml")), ms(t0, 1));
        d.observe(Fact::Closed(s("sub/a.toml")), ms(t0, 2));
        assert_eq!(d.take_due(ms(t0, 2)), [Due::Changed(s("sub/a.toml"))]);
        d.observe(Fact::Written(s("sub/b.toml")), ms(t0, 3));
        assert_eq!(d.take_due(ms(t0, 100)), [Due::Arrived(s("sub"))]);
        // The scan of sub finds all three.
        assert!(!d.found_in_folder("sub/a.toml", ms(t0, 100)), "reported just now");
        assert!(!d.found_in_folder("sub/b.toml", ms(t0, 100)), "still being written");
        assert!(d.found_in_folder("sub/c.toml", ms(t0, 100)), "nothing of its own: the scan reports it");
        assert!(d.found_in_folder("sub/a.toml", ms(t0, 200)), "its report is past the delay");
    }

    #[test]
    fn a_folder_moved_out_and_straight_back_keeps_its_files() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(D, [s("team/a.toml")]);
        d.observe(Fact::Gone(s("team")), t0);
        d.observe(Fact::Arrived(s("team")), ms(t0, 5));
        assert_eq!(d.take_due(ms(t0, 5)), [Due::Arrived(s("team"))]);
        assert!(d.found_in_folder("team/a.toml", ms(t0, 5)), "here again: changed");
        assert!(d.take_due(ms(t0, 500)).is_empty(), "and its removal is not sent");
    }

    #[test]
    fn complete_facts_taken_together_make_one_report_and_the_last_wins() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(D, []);
        d.observe(Fact::Closed(s("x.toml")), t0);
        d.observe(Fact::Arrived(s("x.toml")), t0);
        d.observe(Fact::Closed(s("y.toml")), t0);
        assert_eq!(d.take_due(t0), [Due::Arrived(s("x.toml")), Due::Changed(s("y.toml"))]);
        assert!(d.take_due(ms(t0, 500)).is_empty());
    }

    #[test]
    fn removals_new_folders_and_lost_events_wait_for_the_delay() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(D, [s("gone.toml")]);
        d.observe(Fact::Gone(s("gone.toml")), t0);
        d.observe(Fact::FolderCreated(s("sub")), t0);
        d.observe(Fact::Lost(s("overflow")), t0);
        assert!(d.take_due(ms(t0, 99)).is_empty());
        assert_eq!(
            d.take_due(ms(t0, 100)),
            [Due::Rescan(s("overflow")), Due::Removed(s("gone.toml")), Due::Arrived(s("sub"))]
        );
    }

    #[test]
    fn a_file_that_comes_back_right_after_its_removal_is_changed_only() {
        // A removal waits; the file renamed back into place before the delay
        // is over is complete at once, and the last fact wins.
        let t0 = Instant::now();
        let mut d = Debouncer::new(D, [s("x.toml")]);
        d.observe(Fact::Gone(s("x.toml")), t0);
        d.observe(Fact::Arrived(s("x.toml")), ms(t0, 5));
        assert_eq!(d.take_due(ms(t0, 5)), [Due::Arrived(s("x.toml"))]);
        assert!(d.take_due(ms(t0, 500)).is_empty());
    }

    #[test]
    fn writing_again_after_a_close_waits_for_the_next_close() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(D, []);
        d.observe(Fact::Closed(s("x.toml")), t0);
        d.observe(Fact::Written(s("x.toml")), ms(t0, 50));
        assert!(d.take_due(ms(t0, 1_000)).is_empty());
        d.observe(Fact::Closed(s("x.toml")), ms(t0, 1_000));
        assert_eq!(d.take_due(ms(t0, 1_100)), [Due::Changed(s("x.toml"))]);
    }

    #[test]
    fn the_last_fact_within_the_delay_wins() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(D, [s("x.toml")]);
        d.observe(Fact::Gone(s("x.toml")), t0); // vim: x.toml → x.toml~
        d.observe(Fact::Created(s("x.toml")), ms(t0, 10));
        d.observe(Fact::Written(s("x.toml")), ms(t0, 20));
        d.observe(Fact::Closed(s("x.toml")), ms(t0, 30));
        assert_eq!(d.take_due(ms(t0, 200)), [Due::Changed(s("x.toml"))]);
    }

    #[test]
    fn a_file_replaced_by_a_slow_writer_is_removed_until_the_close() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(D, [s("x.toml")]);
        d.observe(Fact::Gone(s("x.toml")), t0);
        d.observe(Fact::Created(s("x.toml")), ms(t0, 10));
        assert_eq!(d.take_due(ms(t0, 200)), [Due::Probe(s("x.toml"), true)]);
        d.observe(Fact::Gone(s("x.toml")), ms(t0, 300));
        d.observe(Fact::Created(s("x.toml")), ms(t0, 310));
        d.observe(Fact::Written(s("x.toml")), ms(t0, 320));
        assert_eq!(d.take_due(ms(t0, 500)), [Due::Removed(s("x.toml"))]);
        d.observe(Fact::Closed(s("x.toml")), ms(t0, 3_000));
        assert_eq!(d.take_due(ms(t0, 3_200)), [Due::Changed(s("x.toml"))]);
    }

    #[test]
    fn a_folder_gone_removes_every_job_known_or_pending_under_it() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(D, [s("a.toml"), s("sub/b.toml"), s("sub/deep/c.rhai"), s("subway.toml")]);
        d.observe(Fact::Written(s("sub/d.toml")), t0);
        d.observe(Fact::Gone(s("sub")), ms(t0, 10));
        assert_eq!(
            d.take_due(ms(t0, 200)),
            [Due::Removed(s("sub/b.toml")), Due::Removed(s("sub/d.toml")), Due::Removed(s("sub/deep/c.rhai"))]
        );
    }

    #[test]
    fn an_attribute_change_is_looked_at_unless_a_writer_has_the_file_open() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(D, [s("x.toml")]);
        d.observe(Fact::Attrib(s("x.toml")), t0);
        assert_eq!(d.take_due(t0), [Due::Arrived(s("x.toml"))], "chmod: looked at again at once");
        d.observe(Fact::Written(s("y.toml")), ms(t0, 500));
        d.observe(Fact::Attrib(s("y.toml")), ms(t0, 510));
        assert!(d.take_due(ms(t0, 1_000)).is_empty(), "a writer still has it open");
        d.observe(Fact::Closed(s("y.toml")), ms(t0, 1_000));
        assert_eq!(d.take_due(ms(t0, 1_000)), [Due::Changed(s("y.toml"))]);
    }

    #[test]
    fn lost_events_give_one_rescan() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(D, []);
        d.observe(Fact::Lost(s("overflow")), t0);
        d.observe(Fact::Lost(s("overflow again")), ms(t0, 10));
        assert_eq!(d.take_due(ms(t0, 200)), [Due::Rescan(s("overflow"))]);
        assert!(d.take_due(ms(t0, 400)).is_empty());
    }
}
