//! The [`Watcher`]: notify's recursive inotify watch on the jobs folder, bridged
//! to one tokio task that turns raw events into [`Fact`]s, debounces them and
//! sends [`JobFileEvent`]s.
//!
//! Which notify 8 event kinds mean what (inotify's masks in brackets):
//! - `Access(Close(Write))` [`IN_CLOSE_WRITE`]: a writer closed the file — complete.
//! - `Modify(Data(_))` [`IN_MODIFY`]: written, possibly still open — remembered, not reported.
//! - `Create(File)` [`IN_CREATE`]: new and open for writing, or a new link (probed).
//! - `Modify(Name(To))` [`IN_MOVED_TO`], `Modify(Name(Both))` (a matched pair):
//!   something complete arrived — a file, or a folder to scan. notify sends
//!   `Both` right after the `To` (and the `From`) of the same rename, with the
//!   same tracker (inotify's cookie); that repeat is dropped, so one rename is
//!   one report even when the first is reported at once.
//! - `Create(Folder)`: a folder arrived — scanned after the debounce delay, as
//!   its files may still be being written.
//! - `Modify(Name(From))` [`IN_MOVED_FROM`], `Remove(_)` [`IN_DELETE`]: gone,
//!   with every job under it if it was a folder.
//! - `Other` with `Flag::Rescan` [`IN_Q_OVERFLOW`], any notify error, the jobs
//!   folder itself removed or moved: [`JobFileEvent::Rescan`].
//! - `Modify(Metadata(_))` [`IN_ATTRIB`]: `chmod`, `chown`, `touch`: looked
//!   at again (a file that could not be read may be readable now), unless a
//!   writer has it open.
//! - An event on a name that is not text (not UTF-8): a rescan, which lists
//!   it as refused (or drops it when it is gone) — such a name cannot be a
//!   job's id, and it is rare, so the general mechanism is enough.
//! - Everything else (`Access(Open)`, ...) is ignored.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
use notify::{Event, EventKind, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::debounce::{Debouncer, Due, Fact};
use super::id::{Place, is_job_name, place};
use super::{JobFileEvent, JobId, WatchError, scan};

/// How many raw notify events may wait for the task before notify's thread
/// blocks (and the kernel's own queue takes the excess, overflowing into a
/// rescan rather than into unbounded memory).
const RAW_CAPACITY: usize = 4096;

/// How many [`JobFileEvent`]s may wait for the daemon.
const EVENT_CAPACITY: usize = 1024;

/// Watches a jobs folder and reports its job files' comings and goings.
///
/// Owns everything it starts: the tokio task that debounces (aborted on
/// drop), which owns notify's watcher (its inotify thread stops when the task
/// is gone — or, if the task was waiting for blocking work on the watches
/// when it was aborted, once that work is done — as the task re-arms the
/// watch when the folder is replaced). After the drop the receiver yields
/// `None`.
#[derive(Debug)]
pub struct Watcher {
    task: JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Watcher {
    /// Starts watching `root` and every folder under it, now and later;
    /// [`JobFileEvent`]s arrive on the returned receiver: a file complete
    /// (closed after writing, renamed in) at once, and what follows for the
    /// same path within `debounce` once the path has been quiet for it; a
    /// removal, a new folder or lost events after `debounce`.
    ///
    /// Must be called within a tokio runtime. It blocks briefly while the
    /// watches are registered (one per folder) and the folder is scanned to learn
    /// which jobs exist; a file written meanwhile may be both in the daemon's own
    /// [`scan`] and reported, never missed.
    pub fn start(root: &Path, debounce: Duration) -> Result<(Watcher, mpsc::Receiver<JobFileEvent>), WatchError> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| WatchError::NoRuntime { path: root.to_path_buf() })?;
        let root = std::path::absolute(root).map_err(|source| WatchError::Io { path: root.to_path_buf(), source })?;
        let meta = std::fs::metadata(&root).map_err(|source| WatchError::Io { path: root.clone(), source })?;
        if !meta.is_dir() {
            return Err(WatchError::NotAFolder { path: root });
        }

        let (raw_tx, raw_rx) = mpsc::channel(RAW_CAPACITY);
        let handler = move |event: notify::Result<Event>| {
            // Runs on notify's own thread, never a runtime's. An error means the
            // task is gone (the Watcher is being dropped).
            let _ = raw_tx.blocking_send(event);
        };
        let watch_err = |source| WatchError::Watch { path: root.clone(), source };
        let mut notify = notify::recommended_watcher(handler).map_err(watch_err)?;
        notify.watch(&root, RecursiveMode::Recursive).map_err(watch_err)?;
        // After the watch is in place, so nothing falls between the two.
        let known = scan(&root)?.all_ids(&root).into_iter().map(|id| id.as_str().to_owned());
        let debouncer = Debouncer::new(debounce, known);

        let (tx, rx) = mpsc::channel(EVENT_CAPACITY);
        let arming = Arming { notify, root: root.clone(), waiting_in: None, links: BTreeSet::new() };
        let task = runtime.spawn(run(root, arming, debouncer, raw_rx, tx));
        Ok((Watcher { task }, rx))
    }
}

/// How many raw events are taken in one go (those already waiting) before the
/// reports they made due are sent: a burst is settled in batches, and a steady
/// stream of events cannot hold reports back.
const DRAIN: usize = 256;

/// The task: raw events in, debounced job file events out, until the daemon
/// drops its receiver or the Watcher is dropped. Sleeps only while a report is
/// waiting for its deadline; otherwise it waits for an event and nothing else.
async fn run(
    root: PathBuf,
    arming: Arming,
    mut debouncer: Debouncer,
    mut raw: mpsc::Receiver<notify::Result<Event>>,
    out: mpsc::Sender<JobFileEvent>,
) {
    let arming = Arc::new(Mutex::new(arming));
    let mut renames = Renames::default();
    loop {
        let deadline = debouncer.next_deadline();
        if deadline.is_some_and(|at| at <= Instant::now()) {
            let due = debouncer.take_due(Instant::now());
            for event in settle(&root, &mut debouncer, due).await {
                tracing::debug!(?event, "job file event");
                if out.send(event).await.is_err() {
                    return;
                }
            }
            continue;
        }
        tokio::select! {
            event = raw.recv() => match event {
                Some(event) => {
                    // This event and those already waiting behind it, so that
                    // what one write or rename caused is reported together.
                    let now = Instant::now();
                    let mut batch = Vec::new();
                    let mut next = Some(event);
                    for _ in 0..DRAIN {
                        let Some(event) = next.take().or_else(|| raw.try_recv().ok()) else { break };
                        if !renames.is_repeat(&event) {
                            batch.push(event);
                        }
                    }
                    for fact in work_through(&root, &arming, batch).await {
                        tracing::trace!(?fact, "watch");
                        debouncer.observe(fact, now);
                    }
                }
                None => {
                    // notify's thread ended without being asked to: no more events will come.
                    let reason = "the file watcher stopped; changes are no longer seen".to_owned();
                    let _ = out.send(JobFileEvent::Rescan { reason }).await;
                    return;
                }
            },
            () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {}
            () = out.closed() => return,
        }
    }
}

/// The facts a batch of raw events says, in the order of the events: for
/// each, what [`Arming`] made of it (the jobs folder replaced, a symlinked
/// subfolder linked), then [`facts`]. When an event may need the disk (a
/// stat, registering or dropping watches: blocking, and notify's recursive
/// watch walks the whole tree it is given), the whole batch is worked
/// through on the blocking pool, so the order is kept and the task never
/// blocks; a batch of plain job files (a burst of drops) stays on the task.
async fn work_through(root: &Path, arming: &Arc<Mutex<Arming>>, batch: Vec<notify::Result<Event>>) -> Vec<Fact> {
    if !batch.iter().any(|event| lock(arming).needs_disk(event)) {
        return batch.into_iter().flat_map(|event| facts(root, event)).collect();
    }
    let (root, arming) = (root.to_path_buf(), arming.clone());
    let work = move || {
        let mut arming = lock(&arming);
        let mut out = Vec::new();
        for event in batch {
            if let Some(reason) = arming.follow(&event) {
                out.push(Fact::Lost(reason));
                continue;
            }
            out.extend(arming.follow_link(&event));
            out.extend(facts(&root, event));
        }
        out
    };
    match tokio::task::spawn_blocking(work).await {
        Ok(facts) => facts,
        Err(err) => vec![Fact::Lost(format!("following the jobs folder's links and moves failed: {err}"))],
    }
}

/// The [`Arming`], whoever held it last: a panic while it was held leaves
/// its watches as they were, still worth using.
fn lock(arming: &Mutex<Arming>) -> MutexGuard<'_, Arming> {
    arming.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Keeps the jobs folder's path watched when the folder itself is replaced:
/// `mv jobs jobs.old; mv new jobs`, or `rm -rf jobs; mkdir jobs` (a deploy).
/// An inotify watch follows the folder's inode, not its path: once the
/// folder is moved away or deleted, nothing more would be seen. So when the
/// folder goes, its old watch is dropped and its path watched again at once
/// if something is there already, else its parent is watched (one folder,
/// not recursively) until the path appears again. Either way a rescan
/// follows, which reports what changed between the two folders.
///
/// Watching registers inotify watches (blocking I/O, once per folder, and
/// notify's recursive watch walks the whole tree), and the link checks
/// stat: so every method but [`Arming::needs_disk`] runs on the blocking
/// pool ([`work_through`]), never on the watcher's task. It is
/// shared with those closures behind a mutex, one at a time (the task
/// awaits each).
struct Arming {
    notify: notify::RecommendedWatcher,
    /// The jobs folder's path, as watched.
    root: PathBuf,
    /// The parent watched while the jobs folder is missing.
    waiting_in: Option<PathBuf>,
    /// Symlinked subfolders watched since they were linked.
    links: BTreeSet<PathBuf>,
}

/// Symlinked subfolders (`jobs/linked -> /elsewhere/dir`). notify follows
/// them when it walks the folder at start, but a link made (or pointed
/// elsewhere) later is a new *file* to inotify, which watches nothing for it:
/// the files dropped into its target would never be seen. So a link to a
/// folder that appears under the jobs folder is watched here (its target,
/// recursively, under the link's path) and reported like a folder that
/// arrived; a link pointed elsewhere drops the old target's watch and
/// reports the old jobs gone (those also in the new target come back at
/// once); a link removed drops its watch. Only names that are not job
/// names are looked at (a stat each), so a burst of dropped job files costs
/// nothing here.
impl Arming {
    fn follow_link(&mut self, event: &notify::Result<Event>) -> Vec<Fact> {
        let Ok(event) = event else { return vec![] };
        let path = match event.kind {
            EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(RenameMode::To)) => event.paths.first(),
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => event.paths.get(1),
            EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(RenameMode::From)) => {
                if let Some(gone) = event.paths.first()
                    && self.links.remove(gone)
                {
                    let _ = self.notify.unwatch(gone);
                }
                return vec![];
            }
            _ => return vec![],
        };
        let Some(path) = path else { return vec![] };
        let rel = match place(&self.root, path) {
            Place::Inside(rel) if !is_job_name(&rel) => rel,
            _ => return vec![],
        };
        disk_work(path);
        let link_to_folder = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
            && std::fs::metadata(path).is_ok_and(|m| m.is_dir());
        if !link_to_folder {
            return vec![];
        }
        // Whatever was watched at this path (an old target) is dropped.
        let _ = self.notify.unwatch(path);
        match self.notify.watch(path, RecursiveMode::Recursive) {
            Ok(()) => {
                self.links.insert(path.clone());
            }
            Err(e) => tracing::error!(path = %path.display(), error = %e, "cannot watch a symlinked subfolder"),
        }
        // The old target's jobs go, unless the new one has them too.
        vec![Fact::Gone(rel.clone()), Fact::Arrived(rel)]
    }
}

impl std::fmt::Debug for Arming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arming").field("root", &self.root).field("waiting_in", &self.waiting_in).finish()
    }
}

impl Arming {
    /// Whether [`Arming::follow`] or [`Arming::follow_link`] may have
    /// something to do for `event` (and so need the disk): an event on the
    /// jobs folder itself, anything while it is missing, a new name that is
    /// not a job file's (a link to a folder?), a link watched going away.
    /// Pure: it looks only at the event and what is watched.
    fn needs_disk(&self, event: &notify::Result<Event>) -> bool {
        let Ok(event) = event else { return false };
        if self.waiting_in.is_some() {
            return true;
        }
        let new_name = |path: Option<&PathBuf>| {
            path.is_some_and(|p| matches!(place(&self.root, p), Place::Inside(rel) if !is_job_name(&rel)))
        };
        let on_root = event.paths.first().is_some_and(|p| p == &self.root);
        match event.kind {
            EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(RenameMode::From)) => {
                on_root || event.paths.first().is_some_and(|p| self.links.contains(p))
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => on_root || new_name(event.paths.get(1)),
            EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(RenameMode::To)) => new_name(event.paths.first()),
            _ => false,
        }
    }

    /// Looks at one event for the jobs folder itself: gone (then re-arms and
    /// says why a rescan is due) or back while it was awaited (the same).
    /// `None` for every other event, which goes on to [`facts`].
    fn follow(&mut self, event: &notify::Result<Event>) -> Option<String> {
        let Ok(event) = event else { return None };
        let on_root = event.paths.first().is_some_and(|p| p == &self.root);
        let target_is_root = event.paths.get(1).is_some_and(|p| p == &self.root);
        match event.kind {
            EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(RenameMode::From)) if on_root => {
                Some(self.rearm(format!("the jobs folder {} was removed or moved away", self.root.display())))
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) if on_root => {
                Some(self.rearm(format!("the jobs folder {} was moved away", self.root.display())))
            }
            EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(_))
                if self.waiting_in.is_some() && (on_root || target_is_root) =>
            {
                Some(self.rearm(format!("the jobs folder {} is back", self.root.display())))
            }
            _ => None,
        }
    }

    /// Drops the watches of what is no longer the jobs folder and watches its
    /// path again, or its parent until it comes back; returns `why`, with
    /// what it did.
    fn rearm(&mut self, why: String) -> String {
        disk_work(&self.root);
        // The old folder's watches (moved away: still alive on its inode).
        let _ = self.notify.unwatch(&self.root);
        for link in std::mem::take(&mut self.links) {
            let _ = self.notify.unwatch(&link);
        }
        if let Some(parent) = self.waiting_in.take() {
            let _ = self.notify.unwatch(&parent);
        }
        if self.root.is_dir() && self.notify.watch(&self.root, RecursiveMode::Recursive).is_ok() {
            tracing::warn!(jobs = %self.root.display(), reason = %why, "watching the jobs folder now at its path");
            return why;
        }
        let parent = self.root.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
        match self.notify.watch(&parent, RecursiveMode::NonRecursive) {
            Ok(()) => {
                tracing::error!(jobs = %self.root.display(), reason = %why, "the jobs folder is missing: waiting for it to come back");
                self.waiting_in = Some(parent);
            }
            Err(e) => tracing::error!(
                jobs = %self.root.display(),
                reason = %why,
                error = %e,
                "the jobs folder is missing and its parent cannot be watched: changes are no longer seen until a restart"
            ),
        }
        why
    }
}

/// Which thread did blocking work (a stat, registering watches) for which
/// path: the test that keeps it off the watcher's task reads it.
#[cfg(test)]
pub(super) static DISK_WORK: std::sync::Mutex<Vec<(PathBuf, std::thread::ThreadId)>> =
    std::sync::Mutex::new(Vec::new());

/// Notes blocking work about to be done for `path` (tests only).
fn disk_work(_path: &Path) {
    #[cfg(test)]
    DISK_WORK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push((_path.to_path_buf(), std::thread::current().id()));
}

/// Tells notify's `Both` event that repeats a rename already seen as `From`
/// and `To` (inotify's backend sends all three, the last two with the same
/// tracker): reported twice, one rename would make two reports.
#[derive(Debug, Default)]
pub(super) struct Renames {
    /// The tracker of the last `To`.
    last_to: Option<usize>,
}

impl Renames {
    /// Whether `event` only repeats what was already seen.
    pub(super) fn is_repeat(&mut self, event: &notify::Result<Event>) -> bool {
        let Ok(event) = event else { return false };
        match event.kind {
            EventKind::Modify(ModifyKind::Name(RenameMode::To)) => {
                self.last_to = event.tracker();
                false
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
                event.tracker().is_some() && self.last_to.take() == event.tracker()
            }
            _ => false,
        }
    }
}

/// What one notify event says, as facts about paths under the jobs folder.
pub(super) fn facts(root: &Path, event: notify::Result<Event>) -> Vec<Fact> {
    let event = match event {
        Ok(event) => event,
        Err(err) => return vec![Fact::Lost(format!("the file watcher reported an error: {err}"))],
    };
    if event.need_rescan() {
        return vec![Fact::Lost("the kernel's event queue overflowed, so events were lost".to_owned())];
    }
    let at = |i: usize| event.paths.get(i).map_or(Place::Elsewhere, |p| place(root, p));
    let job = |i: usize| match at(i) {
        Place::Inside(rel) if is_job_name(&rel) => Some(rel),
        _ => None,
    };
    let inside = |i: usize| match at(i) {
        Place::Inside(rel) => Some(rel),
        _ => None,
    };
    let root_gone = || Fact::Lost(format!("the jobs folder {} was removed or moved away", root.display()));
    let not_text = at(0) == Place::NotText || at(1) == Place::NotText;
    let says_something = !matches!(event.kind, EventKind::Access(_) | EventKind::Modify(ModifyKind::Data(_)));
    if not_text && says_something {
        let path = event.paths.iter().map(|p| p.to_string_lossy()).collect::<Vec<_>>().join(" -> ");
        return vec![Fact::Lost(format!("a name that is not UTF-8 came or went ({path})"))];
    }

    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => job(0).map(Fact::Closed).into_iter().collect(),
        EventKind::Modify(ModifyKind::Data(_)) => job(0).map(Fact::Written).into_iter().collect(),
        EventKind::Modify(ModifyKind::Metadata(_)) => inside(0).map(Fact::Attrib).into_iter().collect(),
        EventKind::Create(CreateKind::File) => job(0).map(Fact::Created).into_iter().collect(),
        EventKind::Create(_) => inside(0).map(Fact::FolderCreated).into_iter().collect(),
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
            inside(0).map(Fact::Gone).into_iter().chain(inside(1).map(Fact::Arrived)).collect()
        }
        EventKind::Modify(ModifyKind::Name(RenameMode::From)) | EventKind::Remove(_) => match at(0) {
            Place::Root => vec![root_gone()],
            Place::Inside(rel) => vec![Fact::Gone(rel)],
            Place::Elsewhere | Place::NotText => vec![],
        },
        // `To`, and `Any`/`Other` (not sent on Linux): look at what is there now.
        EventKind::Modify(ModifyKind::Name(_)) => inside(0).map(Fact::Arrived).into_iter().collect(),
        _ => vec![],
    }
}

/// What [`look`] found on disk for a due report.
enum Seen {
    /// A complete job file.
    Changed(String),
    /// A job file that is not there.
    Removed(String),
    /// A job file inside a folder that arrived.
    InFolder(String),
    /// The job ids present after a rescan.
    Known(Vec<String>),
    /// A folder that arrived could not be listed.
    Unlisted(String),
}

/// Turns due reports into events: looks at the disk (off the runtime) where a
/// report needs it, drops folder-scan finds that have a report of their own
/// (coming, or just sent), and orders them: a rescan, then removals, then changes.
async fn settle(root: &Path, debouncer: &mut Debouncer, due: Vec<Due>) -> Vec<JobFileEvent> {
    let mut rescan = None;
    let mut removed = BTreeSet::new();
    let mut changed = BTreeSet::new();
    let mut to_look = Vec::new();
    for d in due {
        match d {
            Due::Changed(rel) => {
                changed.insert(rel);
            }
            Due::Removed(rel) => {
                removed.insert(rel);
            }
            Due::Rescan(reason) => rescan = Some(reason),
            Due::Probe(..) | Due::Arrived(_) => to_look.push(d),
        }
    }
    if !to_look.is_empty() || rescan.is_some() {
        let root_owned = root.to_path_buf();
        let rescanning = rescan.is_some();
        match tokio::task::spawn_blocking(move || look(&root_owned, to_look, rescanning)).await {
            Ok(seen) => {
                let now = Instant::now();
                for s in seen {
                    match s {
                        Seen::Changed(rel) => {
                            changed.insert(rel);
                        }
                        Seen::Removed(rel) => {
                            removed.insert(rel);
                        }
                        Seen::InFolder(rel) => {
                            if debouncer.found_in_folder(&rel, now) {
                                changed.insert(rel);
                            }
                        }
                        Seen::Known(known) => debouncer.set_known(known),
                        Seen::Unlisted(reason) => rescan = rescan.or(Some(reason)),
                    }
                }
            }
            Err(err) => rescan = Some(format!("looking at the jobs folder failed: {err}")),
        }
    }

    let mut events = Vec::new();
    if let Some(reason) = rescan {
        events.push(JobFileEvent::Rescan { reason });
    }
    for rel in removed {
        debouncer.record(&rel, false);
        events.push(JobFileEvent::Removed { id: JobId::from_rel(rel) });
    }
    for rel in changed {
        debouncer.record(&rel, true);
        events.push(JobFileEvent::Changed { id: JobId::from_rel(rel) });
    }
    events
}

/// Looks at the disk for reports that need it (blocking; run off the runtime).
fn look(root: &Path, due: Vec<Due>, rescanning: bool) -> Vec<Seen> {
    let mut seen = Vec::new();
    for d in due {
        match d {
            Due::Probe(rel, removed) => {
                // Created, then neither written nor closed: a link is complete,
                // and so is what is not a file at all (a FIFO: the daemon says
                // it cannot be a job); a file still has its writer (and the
                // file it replaced is gone).
                let link = std::fs::symlink_metadata(root.join(&rel)).is_ok_and(|meta| {
                    meta.file_type().is_symlink()
                        || (meta.is_file() && meta.nlink() > 1)
                        || !(meta.is_file() || meta.is_dir())
                });
                if link {
                    seen.push(Seen::Changed(rel));
                } else if removed {
                    seen.push(Seen::Removed(rel));
                }
            }
            Due::Arrived(rel) => match std::fs::metadata(root.join(&rel)) {
                // Refused entries too (a symlink loop): the daemon says why.
                Ok(meta) if meta.is_dir() => match crate::load::discover_all(&[root.join(&rel)]) {
                    Ok(found) => seen.extend(
                        found
                            .files
                            .iter()
                            .chain(found.refused.iter().map(|r| &r.path))
                            .filter_map(|f| JobId::from_path(root, f))
                            .map(|id| Seen::InFolder(id.as_str().to_owned())),
                    ),
                    Err(err) => seen.push(Seen::Unlisted(format!("a folder that appeared could not be listed: {err}"))),
                },
                _ if !is_job_name(&rel) => {}
                Err(err) if err.kind() == ErrorKind::NotFound => seen.push(Seen::Removed(rel)),
                // A file, or unreadable: the daemon's loader will say why.
                _ => seen.push(Seen::Changed(rel)),
            },
            Due::Changed(_) | Due::Removed(_) | Due::Rescan(_) => {}
        }
    }
    if rescanning && let Ok(found) = scan(root) {
        seen.push(Seen::Known(found.all_ids(root).into_iter().map(|id| id.as_str().to_owned()).collect()));
    }
    seen
}
