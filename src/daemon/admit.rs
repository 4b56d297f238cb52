//! Admission: whether a due run may start now, given the global
//! `max_concurrent_runs` and the named semaphores; runs that may not start wait
//! in a queue, in the order they came, and start as soon as their turn allows.
//!
//! Overlap with the same job's previous run is decided before this (in the
//! supervisor); this module only counts.
//!
//! Architecture Invariant: pure bookkeeping, no I/O and no tokio — the
//! supervisor asks and acts, so every rule here is unit-tested.

use std::collections::{HashMap, VecDeque};

/// Counts runs in flight and holds the ones waiting for a slot.
#[derive(Debug)]
pub struct Admission<T> {
    max: usize,
    running: usize,
    /// Semaphore name → (count, in use).
    semaphores: HashMap<String, (usize, usize)>,
    waiting: VecDeque<(Option<String>, T)>,
}

impl<T> Admission<T> {
    /// At most `max` runs at once; semaphore counts from `counts` (name → count,
    /// 1 when absent).
    pub fn new(max: usize, counts: impl IntoIterator<Item = (String, usize)>) -> Admission<T> {
        let semaphores = counts.into_iter().map(|(name, count)| (name, (count, 0))).collect();
        Admission { max: max.max(1), running: 0, semaphores, waiting: VecDeque::new() }
    }

    /// New limits (a reloaded config); runs in flight keep their slots.
    pub fn set_limits(&mut self, max: usize, counts: impl IntoIterator<Item = (String, usize)>) {
        self.max = max.max(1);
        let counts: HashMap<String, usize> = counts.into_iter().collect();
        for (name, (count, _)) in self.semaphores.iter_mut() {
            *count = counts.get(name).copied().unwrap_or(1);
        }
        for (name, count) in counts {
            self.semaphores.entry(name).or_insert((count, 0)).0 = count;
        }
    }

    fn free(&self, semaphore: Option<&str>) -> bool {
        self.running < self.max
            && semaphore.is_none_or(|s| self.semaphores.get(s).is_none_or(|(count, used)| used < count))
    }

    fn take(&mut self, semaphore: Option<&str>) {
        self.running += 1;
        if let Some(s) = semaphore {
            self.semaphores.entry(s.to_string()).or_insert((1, 0)).1 += 1;
        }
    }

    /// Asks to start `item` now: `Some(item)` back when it may (its slot is
    /// taken), `None` when it waits its turn — [`Admission::release`] hands it
    /// back later. Nothing jumps its queue: while a run with the same
    /// semaphore waits, a new arrival waits behind it. (While slots are free,
    /// whatever waits waits for its semaphore only, so others may start.)
    pub fn admit(&mut self, semaphore: Option<&str>, item: T) -> Option<T> {
        if self.admit_now(semaphore) {
            Some(item)
        } else {
            self.enqueue(semaphore, item);
            None
        }
    }

    /// [`admit`](Admission::admit)'s first half: takes a slot (and
    /// `semaphore`) and says `true` when a run may start now; `false` when it
    /// must wait, and then [`enqueue`](Admission::enqueue) puts it in line
    /// (the supervisor makes the waiting item, a queued run, only then).
    pub fn admit_now(&mut self, semaphore: Option<&str>) -> bool {
        let queued_ahead = semaphore.is_some() && self.waiting.iter().any(|(s, _)| s.as_deref() == semaphore);
        if !queued_ahead && self.free(semaphore) {
            self.take(semaphore);
            true
        } else {
            false
        }
    }

    /// Puts `item` at the back of the line, after [`admit_now`](Admission::admit_now) said no.
    pub fn enqueue(&mut self, semaphore: Option<&str>, item: T) {
        self.waiting.push_back((semaphore.map(str::to_string), item));
    }

    /// A run that held a slot (and `semaphore`) ended: returns the waiting items
    /// that may start now, in queue order, their slots taken.
    pub fn release(&mut self, semaphore: Option<&str>) -> Vec<T> {
        self.running = self.running.saturating_sub(1);
        if let Some((_, used)) = semaphore.and_then(|s| self.semaphores.get_mut(s)) {
            *used = used.saturating_sub(1);
        }
        self.start_waiting()
    }

    /// The waiting items that may start now (after a release or a new limit).
    pub fn start_waiting(&mut self) -> Vec<T> {
        let mut started = Vec::new();
        let mut i = 0;
        while i < self.waiting.len() {
            let semaphore = self.waiting[i].0.clone();
            // An item blocked only by its own semaphore does not hold up others.
            if self.free(semaphore.as_deref()) {
                if let Some((s, item)) = self.waiting.remove(i) {
                    self.take(s.as_deref());
                    started.push(item);
                }
            } else if self.running >= self.max {
                break;
            } else {
                i += 1;
            }
        }
        started
    }

    /// Removes waiting items for which `drop` says so (a job removed), and
    /// returns them.
    pub fn forget(&mut self, mut drop: impl FnMut(&T) -> bool) -> Vec<T> {
        let (gone, kept): (VecDeque<_>, VecDeque<_>) = self.waiting.drain(..).partition(|(_, item)| drop(item));
        self.waiting = kept;
        gone.into_iter().map(|(_, item)| item).collect()
    }

    /// Calls `each` with every waiting item, in line order.
    pub fn for_each_waiting(&self, each: impl FnMut(&T)) {
        self.waiting.iter().map(|(_, item)| item).for_each(each);
    }

    /// Whether anything waits for which `matches` holds.
    pub fn is_waiting(&self, mut matches: impl FnMut(&T) -> bool) -> bool {
        self.waiting.iter().any(|(_, item)| matches(item))
    }

    /// Runs holding a slot.
    pub fn running(&self) -> usize {
        self.running
    }

    /// Runs waiting for one.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(max: usize) -> Admission<&'static str> {
        Admission::new(max, [("backup".to_string(), 1), ("uploads".to_string(), 2)])
    }

    #[test]
    fn runs_beyond_the_global_limit_wait_in_order() {
        let mut a = admission(2);
        assert_eq!(a.admit(None, "a"), Some("a"));
        assert_eq!(a.admit(None, "b"), Some("b"));
        assert_eq!(a.admit(None, "c"), None);
        assert_eq!(a.admit(None, "d"), None);
        assert_eq!(a.release(None), vec!["c"]);
        assert_eq!(a.release(None), vec!["d"]);
        assert_eq!(a.running(), 2);
        assert_eq!(a.waiting(), 0);
    }

    #[test]
    fn jobs_sharing_a_semaphore_never_overlap() {
        let mut a = admission(10);
        assert_eq!(a.admit(Some("backup"), "backup"), Some("backup"));
        assert_eq!(a.admit(Some("backup"), "vacuum"), None);
        // Others go on meanwhile.
        assert_eq!(a.admit(None, "report"), Some("report"));
        assert_eq!(a.admit(Some("backup"), "again"), None, "nothing jumps its semaphore's queue");
        assert_eq!(a.release(Some("backup")), vec!["vacuum"]);
        assert_eq!(a.release(Some("backup")), vec!["again"]);
    }

    #[test]
    fn a_semaphore_counts_as_configured() {
        let mut a = admission(10);
        assert_eq!(a.admit(Some("uploads"), "u1"), Some("u1"));
        assert_eq!(a.admit(Some("uploads"), "u2"), Some("u2"));
        assert_eq!(a.admit(Some("uploads"), "u3"), None);
        assert_eq!(a.admit(Some("other"), "o1"), Some("o1"), "an unlisted semaphore counts 1 and is free");
        assert_eq!(a.admit(Some("other"), "o2"), None);
        assert_eq!(a.release(Some("uploads")), vec!["u3"]);
    }

    #[test]
    fn a_blocked_semaphore_does_not_hold_up_other_semaphores() {
        let mut a = admission(10);
        assert_eq!(a.admit(Some("backup"), "b1"), Some("b1"));
        assert_eq!(a.admit(Some("backup"), "b2"), None);
        assert_eq!(a.admit(Some("uploads"), "u1"), Some("u1"));
        assert_eq!(a.release(Some("uploads")), Vec::<&str>::new());
        assert_eq!(a.release(Some("backup")), vec!["b2"]);
    }

    #[test]
    fn forgetting_a_job_drops_its_waiting_runs() {
        let mut a = admission(1);
        assert_eq!(a.admit(None, "a"), Some("a"));
        assert_eq!(a.admit(None, "b"), None);
        assert_eq!(a.admit(None, "c"), None);
        assert_eq!(a.forget(|x| *x == "b"), vec!["b"]);
        assert!(!a.is_waiting(|x| *x == "b"));
        assert_eq!(a.release(None), vec!["c"]);
    }

    #[test]
    fn raising_the_limit_starts_waiting_runs() {
        let mut a = admission(1);
        assert_eq!(a.admit(None, "a"), Some("a"));
        assert_eq!(a.admit(None, "b"), None);
        a.set_limits(2, [("backup".to_string(), 1)]);
        assert_eq!(a.start_waiting(), vec!["b"]);
    }
}
