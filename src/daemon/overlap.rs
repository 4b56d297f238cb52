//! The overlap decision: what a due run of a job does while the job's last
//! run is still going (README "Overlap"). Pure: the supervisor says how busy
//! the job is and carries the decision out (logs it, answers a trigger,
//! cancels, queues).

use crate::job::Overlap;

/// How busy a job is when one of its runs is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Busy {
    /// Its runs in flight.
    pub running: usize,
    /// Its runs waiting in admission for a slot (they count as going).
    pub waiting: usize,
    /// Whether a run is already kept for when the running one ends
    /// (`overlap = "queue"`).
    pub queued: bool,
}

impl Busy {
    /// Nothing of the job is going or waiting.
    pub fn idle(&self) -> bool {
        self.running == 0 && self.waiting == 0
    }
}

/// What to do with the run that is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Hand it to admission now.
    Start,
    /// Cancel the runs in flight, forget the waiting ones, then hand it to
    /// admission (`replace`).
    Replace,
    /// Keep it for when the running one ends (`queue`).
    Queue,
    /// Drop it.
    Drop(Dropped),
}

/// Why a due run was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// `skip`: the last run is still going.
    StillGoing,
    /// `queue`: one run already waits for the running one.
    AlreadyQueued,
}

impl Dropped {
    /// The reason, for the log and for the one who triggered it.
    pub fn reason(self) -> &'static str {
        match self {
            Dropped::StillGoing => "the last run is still going (overlap = \"skip\")",
            Dropped::AlreadyQueued => "a run already waits for the last one (overlap = \"queue\")",
        }
    }
}

/// Decides what a due run does, given the job's policy and how busy it is.
pub fn decide(policy: Overlap, busy: Busy) -> Decision {
    if busy.idle() {
        return Decision::Start;
    }
    match policy {
        Overlap::Skip => Decision::Drop(Dropped::StillGoing),
        Overlap::Queue if busy.queued => Decision::Drop(Dropped::AlreadyQueued),
        Overlap::Queue => Decision::Queue,
        Overlap::Replace => Decision::Replace,
        Overlap::Allow => Decision::Start,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Busy = Busy { running: 0, waiting: 0, queued: false };
    const RUNNING: Busy = Busy { running: 1, waiting: 0, queued: false };
    const WAITING: Busy = Busy { running: 0, waiting: 1, queued: false };
    const QUEUED: Busy = Busy { running: 1, waiting: 0, queued: true };
    const ALL: [Overlap; 4] = [Overlap::Skip, Overlap::Queue, Overlap::Replace, Overlap::Allow];

    #[test]
    fn an_idle_job_starts_whatever_its_policy() {
        for policy in ALL {
            assert_eq!(decide(policy, IDLE), Decision::Start, "{policy:?}");
        }
    }

    #[test]
    fn skip_drops_a_fire_while_a_run_goes_on_or_waits_for_a_slot() {
        assert_eq!(decide(Overlap::Skip, RUNNING), Decision::Drop(Dropped::StillGoing));
        assert_eq!(decide(Overlap::Skip, WAITING), Decision::Drop(Dropped::StillGoing));
    }

    #[test]
    fn queue_keeps_one_fire_and_drops_the_next() {
        assert_eq!(decide(Overlap::Queue, RUNNING), Decision::Queue);
        assert_eq!(decide(Overlap::Queue, WAITING), Decision::Queue);
        assert_eq!(decide(Overlap::Queue, QUEUED), Decision::Drop(Dropped::AlreadyQueued));
    }

    #[test]
    fn replace_cancels_what_goes_on_or_waits() {
        assert_eq!(decide(Overlap::Replace, RUNNING), Decision::Replace);
        assert_eq!(decide(Overlap::Replace, WAITING), Decision::Replace);
        assert_eq!(decide(Overlap::Replace, Busy { running: 3, waiting: 2, queued: false }), Decision::Replace);
    }

    #[test]
    fn allow_starts_beside_the_runs_in_flight() {
        assert_eq!(decide(Overlap::Allow, RUNNING), Decision::Start);
        assert_eq!(decide(Overlap::Allow, Busy { running: 5, waiting: 1, queued: false }), Decision::Start);
    }

    #[test]
    fn drop_reasons_name_the_policy() {
        assert!(Dropped::StillGoing.reason().contains("\"skip\""));
        assert!(Dropped::AlreadyQueued.reason().contains("\"queue\""));
    }
}
