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
use super::{JobFileEvent, JobId, WatchError, scan_with};

/// How many raw notify events may wait for the task before notify's thread
/// blocks (and the kernel's own queue takes the excess, overflowing into a
/// rescan rather than into unbounded memory).
const RAW_CAPACITY: usize = 4096;

/// How many [`JobFileEvent`]s may wait for the daemon.
const EVENT_CAPACITY: usize = 1024;

/// Which symlinked subfolders the watcher follows into (watches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// Every one, wherever it points: a daemon that is not root.
    Anywhere,
    /// Only those whose target is inside the jobs folder
    /// (`load::leads_outside`): a daemon running as root, which reads
    /// nothing out of the folder (`load::daemon_confines_links`), so places
    /// no watch out of it either.
    WithinFolder,
}

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
    /// `links` says which symlinked subfolders are watched: all of them, or
    /// (a daemon running as root, which reads nothing out of the folder) only
    /// those whose target is inside the jobs folder.
    ///
    /// Must be called within a tokio runtime. It blocks briefly while the
    /// watches are registered (one per folder) and the folder is scanned to learn
    /// which jobs exist; a file written meanwhile may be both in the daemon's own
    /// [`scan`](super::scan) and reported, never missed.
    pub fn start(
        root: &Path,
        debounce: Duration,
        links: Links,
    ) -> Result<(Watcher, mpsc::Receiver<JobFileEvent>), WatchError> {
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
        // Confined, notify's own walks (at each recursive watch, and for each
        // folder created) follow no symlink: the links within the folder are
        // watched by `Arming`, the others not at all.
        let config = notify::Config::default().with_follow_symlinks(links == Links::Anywhere);
        let notify = notify::RecommendedWatcher::new(handler, config).map_err(watch_err)?;
        let confine = match links {
            Links::Anywhere => None,
            Links::WithinFolder => {
                Some(std::fs::canonicalize(&root).map_err(|source| WatchError::Io { path: root.clone(), source })?)
            }
        };
        let mut arming = Arming {
            notify,
            root: root.clone(),
            confine,
            waiting_in: None,
            links: BTreeSet::new(),
            outside: BTreeSet::new(),
        };
        arming.watch_tree(&root).map_err(watch_err)?;
        arming.watch_links_under(&root);
        // After the watches are in place, so nothing falls between the two.
        let known = scan_with(&root, links == Links::WithinFolder)?.all_ids(&root);
        let debouncer = Debouncer::new(debounce, known.into_iter().map(|id| id.as_str().to_owned()));

        let (tx, rx) = mpsc::channel(EVENT_CAPACITY);
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
            for event in settle(&root, &arming, &mut debouncer, due).await {
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
/// pool ([`work_through`], [`settle`]'s look), never on the watcher's task
/// (before it exists, [`Watcher::start`] blocks briefly, as it says). It is
/// shared with those closures behind a mutex, one at a time (the task
/// awaits each).
struct Arming {
    notify: notify::RecommendedWatcher,
    /// The jobs folder's path, as watched.
    root: PathBuf,
    /// With [`Links::WithinFolder`], the jobs folder's canonical path: only
    /// links that lead inside it are watched.
    confine: Option<PathBuf>,
    /// The parent watched while the jobs folder is missing.
    waiting_in: Option<PathBuf>,
    /// Symlinked subfolders watched by `Arming` (those linked while running;
    /// confined, every one within the folder).
    links: BTreeSet<PathBuf>,
    /// Confined: the symlinks to folders out of the jobs folder seen, not
    /// watched (their coming and going means a rescan, which lists them).
    outside: BTreeSet<PathBuf>,
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
///
/// Confined ([`Links::WithinFolder`]), notify follows no link at all — its
/// walks at start, for a re-armed folder and for each new folder would
/// otherwise watch a link's target wherever it is (`jobs/x -> /`: a watch
/// per folder of the system) — so every link to a folder within the jobs
/// folder is watched here: those there at start, those linked later, those
/// in a folder that arrives (when it is looked at, before it is listed),
/// and those under another link's target. A link whose target is out of
/// the folder is not watched and means a rescan when it comes or goes,
/// which lists it refused, as the start-up scan does.
impl Arming {
    fn follow_link(&mut self, event: &notify::Result<Event>) -> Vec<Fact> {
        let Ok(event) = event else { return vec![] };
        let path = match event.kind {
            EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(RenameMode::To)) => event.paths.first(),
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => event.paths.get(1),
            EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(RenameMode::From)) => {
                let Some(gone) = event.paths.first() else { return vec![] };
                self.unwatch_links(gone);
                if self.forget_outside(gone) {
                    return vec![Fact::Lost(format!("a symlink to outside the jobs folder went: {}", gone.display()))];
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
        self.unwatch_links(path);
        let was_outside = self.forget_outside(path);
        if self.leads_outside(path) {
            self.outside.insert(path.clone());
            // The rescan drops the old target's jobs and lists the link refused.
            return vec![Fact::Lost(format!(
                "`{rel}` was linked to a folder outside the jobs folder, which is not watched"
            ))];
        }
        if self.confine.is_some() && loops_back(path) {
            return vec![Fact::Gone(rel)];
        }
        match self.watch_tree(path) {
            Ok(()) => {
                self.links.insert(path.clone());
            }
            Err(e) => tracing::error!(path = %path.display(), error = %e, "cannot watch a symlinked subfolder"),
        }
        // The old target's jobs go, unless the new one has them too (and
        // the links under it are watched when it is looked at).
        let mut facts = vec![Fact::Gone(rel.clone()), Fact::Arrived(rel)];
        if was_outside {
            facts
                .push(Fact::Lost(format!("a symlink to outside the jobs folder now leads inside: {}", path.display())));
        }
        facts
    }

    /// Confined, whether `path` (under the jobs folder), with every link
    /// resolved, is out of it: the rule the daemon reads by
    /// (`load::leads_outside`).
    fn leads_outside(&self, path: &Path) -> bool {
        self.confine.as_deref().is_some_and(|within| crate::load::leads_outside(within, path))
    }

    /// What to give notify to watch `path`: itself, or — confined, when it is
    /// a symlink — `path/.`. notify's walk without `follow_symlinks` does
    /// not even watch the link it is given (walkdir reports the root as a
    /// link, not a folder, and notify keeps folders only), while `path/.` is
    /// the folder it points to, still under the link's name: events come as
    /// `path/./x`, which [`place`] reads as `path/x`, and notify's maps key
    /// paths by component, so `path/.` is `path` to `unwatch`.
    fn notify_path(&self, path: &Path) -> PathBuf {
        if self.confine.is_some() && std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
            path.join(".")
        } else {
            path.to_path_buf()
        }
    }

    /// Watches `path` and every folder under it (notify's recursive watch).
    fn watch_tree(&mut self, path: &Path) -> notify::Result<()> {
        let target = self.notify_path(path);
        self.notify.watch(&target, RecursiveMode::Recursive)
    }

    /// Confined, watches the symlinked folders within the jobs folder found
    /// under `dir` (itself under it), following them — notify follows none
    /// — and notes those that lead out of it, unwatched. Whether one of
    /// those was new: the daemon's listing needs a rescan.
    fn watch_links_under(&mut self, dir: &Path) -> bool {
        let Some(within) = self.confine.clone() else { return false };
        let (inside, outside) = links_under(&within, dir);
        for link in inside {
            if self.links.contains(&link) {
                continue;
            }
            match self.watch_tree(&link) {
                Ok(()) => {
                    self.links.insert(link);
                }
                Err(e) => tracing::error!(path = %link.display(), error = %e, "cannot watch a symlinked subfolder"),
            }
        }
        let mut new = false;
        for link in outside {
            new |= self.outside.insert(link);
        }
        new
    }

    /// Drops the watches of the links at or under `path` (gone, or pointed
    /// elsewhere).
    fn unwatch_links(&mut self, path: &Path) {
        let under: Vec<PathBuf> =
            self.links.range(path.to_path_buf()..).take_while(|l| l.starts_with(path)).cloned().collect();
        for link in under {
            self.links.remove(&link);
            let _ = self.notify.unwatch(&link);
        }
    }

    /// Forgets the links out of the folder at or under `path`; whether there
    /// were any.
    fn forget_outside(&mut self, path: &Path) -> bool {
        let under: Vec<PathBuf> =
            self.outside.range(path.to_path_buf()..).take_while(|l| l.starts_with(path)).cloned().collect();
        for link in &under {
            self.outside.remove(link);
        }
        !under.is_empty()
    }

    /// Whether a link at or under `path` is watched or noted out of the folder.
    fn knows_links_under(&self, path: &Path) -> bool {
        let under =
            |set: &BTreeSet<PathBuf>| set.range(path.to_path_buf()..).next().is_some_and(|l| l.starts_with(path));
        under(&self.links) || under(&self.outside)
    }
}

/// Whether the link at `path` leads to a folder that holds it (its own, or
/// one above): its folders are watched already, and watched again under the
/// link's longer name they would report their jobs under it (one inode, one
/// inotify watch, one name). notify's following walk skips such a loop too.
fn loops_back(path: &Path) -> bool {
    let parent = path.parent().map(std::fs::canonicalize);
    matches!((std::fs::canonicalize(path), parent), (Ok(target), Some(Ok(parent))) if parent.starts_with(&target))
}

/// Confined: the symlinks to folders under `dir` whose target is within the
/// jobs folder (`within`, canonical), sorted, each followed to find those
/// under it, and apart those that lead out of it. Hidden and editor names
/// and names that are not text are skipped, as the scan skips them (no job
/// is ever there); a folder that cannot be read is skipped (the scan says
/// why). Each folder is walked once (a loop of links ends).
fn links_under(within: &Path, dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (mut inside, mut outside) = (Vec::new(), Vec::new());
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        if !std::fs::canonicalize(&dir).is_ok_and(|canonical| seen.insert(canonical)) {
            continue;
        }
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name.to_str().is_none_or(crate::load::is_ignored_name) {
                continue;
            }
            let Ok(kind) = entry.file_type() else { continue };
            let path = entry.path();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_symlink() && std::fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
                if crate::load::leads_outside(within, &path) {
                    outside.push(path);
                } else if !loops_back(&path) {
                    inside.push(path.clone());
                    stack.push(path);
                }
            }
        }
    }
    inside.sort();
    (inside, outside)
}

impl std::fmt::Debug for Arming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arming")
            .field("root", &self.root)
            .field("confine", &self.confine)
            .field("waiting_in", &self.waiting_in)
            .field("links", &self.links)
            .field("outside", &self.outside)
            .finish()
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
                on_root || event.paths.first().is_some_and(|p| self.knows_links_under(p))
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
        self.outside.clear();
        let root = self.root.clone();
        if root.is_dir() && self.watch_tree(&root).is_ok() {
            // Confined, the links within it are watched by the rescan that
            // follows (`look`), against the folder now at the path.
            if let Some(within) = &mut self.confine
                && let Ok(canonical) = std::fs::canonicalize(&root)
            {
                *within = canonical;
            }
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
    /// Confined, a symlink out of the jobs folder was found in a folder that
    /// arrived: a rescan lists it refused, as the start-up scan does.
    LinkedOut(String),
}

/// Turns due reports into events: looks at the disk (off the runtime) where a
/// report needs it, drops folder-scan finds that have a report of their own
/// (coming, or just sent), and orders them: a rescan, then removals, then changes.
async fn settle(
    root: &Path,
    arming: &Arc<Mutex<Arming>>,
    debouncer: &mut Debouncer,
    due: Vec<Due>,
) -> Vec<JobFileEvent> {
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
        let arming = arming.clone();
        match tokio::task::spawn_blocking(move || look(&root_owned, &mut lock(&arming), to_look, rescanning)).await {
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
                        Seen::Unlisted(reason) | Seen::LinkedOut(reason) => rescan = rescan.or(Some(reason)),
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

/// Looks at the disk for reports that need it (blocking; run off the
/// runtime). Confined, a folder that arrived has the links within the jobs
/// folder under it watched first (notify's own watch of a new folder
/// follows none), then is listed, so no file dropped meanwhile is missed;
/// a rescan has every link looked for again (events may have been lost).
fn look(root: &Path, arming: &mut Arming, due: Vec<Due>, rescanning: bool) -> Vec<Seen> {
    let mut seen = Vec::new();
    if rescanning {
        arming.outside.clear();
        arming.watch_links_under(root);
    }
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
                // Confined, a folder out of the jobs folder (through a link)
                // is neither watched nor listed: the rescan lists the link.
                Ok(meta) if meta.is_dir() && arming.leads_outside(&root.join(&rel)) => {
                    seen.push(Seen::LinkedOut(format!("`{rel}` leads outside the jobs folder, which is not watched")));
                }
                Ok(meta) if meta.is_dir() => {
                    if arming.watch_links_under(&root.join(&rel)) {
                        let reason =
                            format!("`{rel}` holds a symlink to outside the jobs folder, which is not watched");
                        seen.push(Seen::LinkedOut(reason));
                    }
                    // Refused entries too (a symlink loop): the daemon says why.
                    // Confined, not what lies through a folder linked out of
                    // the folder: the rescan lists that link, as the scan
                    // does. (A job file linked out is listed and refused
                    // when read, as when dropped alone.)
                    match crate::load::discover_all(&[root.join(&rel)]) {
                        Ok(found) => seen.extend(
                            found
                                .files
                                .iter()
                                .chain(found.refused.iter().map(|r| &r.path))
                                .filter(|f| !f.ancestors().any(|a| arming.outside.contains(a)))
                                .filter_map(|f| JobId::from_path(root, f))
                                .map(|id| Seen::InFolder(id.as_str().to_owned())),
                        ),
                        Err(err) => {
                            seen.push(Seen::Unlisted(format!("a folder that appeared could not be listed: {err}")))
                        }
                    }
                }
                _ if !is_job_name(&rel) => {}
                Err(err) if err.kind() == ErrorKind::NotFound => seen.push(Seen::Removed(rel)),
                // A file, or unreadable: the daemon's loader will say why.
                _ => seen.push(Seen::Changed(rel)),
            },
            Due::Changed(_) | Due::Removed(_) | Due::Rescan(_) => {}
        }
    }
    if rescanning && let Ok(found) = scan_with(root, arming.confine.is_some()) {
        seen.push(Seen::Known(found.all_ids(root).into_iter().map(|id| id.as_str().to_owned()).collect()));
    }
    seen
}
