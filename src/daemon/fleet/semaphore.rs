//! Named semaphores across a fleet: a job's `semaphore` counts the runs of
//! every node, not only this one's. The daemon's own admission
//! (`daemon/admit.rs`) still counts it first, locally; then the run task
//! takes one of the semaphore's slots in the shared history (a row of
//! `semaphore_slots`, whose primary key is `(name, slot)`), before its run
//! starts, and gives it back at its end. A run that finds every slot held
//! elsewhere is recorded `queued` and polls for one ([`POLL_FIRST`],
//! doubling to [`POLL_MAX`]) until it has one, it is cancelled, or the
//! daemon begins to stop (then it never starts, like a run queued locally).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::RunStore;

/// The first wait before a run asks again for a slot held elsewhere.
pub const POLL_FIRST: Duration = Duration::from_millis(50);

/// The longest wait between two asks (bounds how long a slot freed on
/// another node stays unused).
pub const POLL_MAX: Duration = Duration::from_millis(500);

/// A semaphore a run needs across the fleet: its name and count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needed {
    /// The semaphore's name (`semaphore = "NAME"` in the job).
    pub name: String,
    /// Its count (`[semaphores]` in the config; 1 unless set).
    pub count: usize,
}

/// A slot held: give it back with [`release`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    name: String,
    slot: u32,
}

/// One try: a free slot of `needed` for `node`, or `None` when every slot
/// is held (or the history could not be asked: logged, and tried again by
/// [`wait`]).
pub async fn try_take(store: &dyn RunStore, needed: &Needed, node: &str) -> Option<Held> {
    match store.acquire_semaphore(&needed.name, needed.count, node).await {
        Ok(slot) => slot.map(|slot| Held { name: needed.name.clone(), slot }),
        Err(e) => {
            tracing::warn!(semaphore = %needed.name, error = %e, "cannot take a semaphore slot in the fleet's history; trying again");
            None
        }
    }
}

/// How a wait for a slot held elsewhere ended.
#[derive(Debug)]
pub enum Waited {
    /// A slot is this run's now.
    Held(Held),
    /// The run was cancelled (its file removed, the API, shutdown's end).
    Cancelled,
    /// The daemon began to stop: a run that has not started never does.
    Stopping,
}

/// Polls until a slot of `needed` is free and takes it, or the run is
/// cancelled, or the daemon begins to stop (`stopping`).
pub async fn wait(
    store: &dyn RunStore,
    needed: &Needed,
    node: &str,
    cancel: &CancellationToken,
    stopping: &CancellationToken,
) -> Waited {
    let mut pause = POLL_FIRST;
    loop {
        if stopping.is_cancelled() {
            return Waited::Stopping;
        }
        if let Some(held) = try_take(store, needed, node).await {
            return Waited::Held(held);
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = cancel.cancelled() => return Waited::Cancelled,
            () = stopping.cancelled() => return Waited::Stopping,
        }
        pause = (pause * 2).min(POLL_MAX);
    }
}

/// Gives `held` back (logged if it cannot be: the takeover of the node —
/// or, once it stopped, any node's next look for dead nodes — frees it).
pub async fn release(store: &dyn RunStore, held: Held, node: &str) {
    if let Err(e) = store.release_semaphore(&held.name, held.slot, node).await {
        tracing::error!(semaphore = %held.name, slot = held.slot, error = %e, "cannot give a semaphore slot back in the fleet's history");
    }
}
