//! The watcher against real files in temporary folders. These are OS-event
//! tests: an expected event is awaited for up to [`WAIT`], and "nothing
//! happens" is checked over a fixed [`QUIET`]; no test asserts speed.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RemoveKind, RenameMode};
use notify::{Event, EventKind, event::Flag};
use tokio::sync::mpsc::Receiver;

use super::debounce::Fact;
use super::watcher::{Renames, facts};
use super::*;

const DEBOUNCE: Duration = Duration::from_millis(100);
/// How long an expected event may take to arrive.
const WAIT: Duration = Duration::from_secs(5);
/// How long to listen to make sure nothing (more) arrives.
const QUIET: Duration = Duration::from_millis(800);

fn changed(id: &str) -> JobFileEvent {
    JobFileEvent::Changed { id: JobId::from_rel(id.to_owned()) }
}

fn removed(id: &str) -> JobFileEvent {
    JobFileEvent::Removed { id: JobId::from_rel(id.to_owned()) }
}

/// A jobs folder inside a temporary folder (so there is a same-filesystem
/// "outside" to move things from and to), watched.
struct Folder {
    tmp: tempfile::TempDir,
    watcher: Option<Watcher>,
    events: Receiver<JobFileEvent>,
}

impl Folder {
    /// Creates the jobs folder with `files` (name, content) in it, then starts watching.
    fn with(files: &[(&str, &str)]) -> Folder {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("jobs")).unwrap();
        for (name, content) in files {
            let path = tmp.path().join("jobs").join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, content).unwrap();
        }
        let (watcher, events) = Watcher::start(&tmp.path().join("jobs"), DEBOUNCE, Links::Anywhere).unwrap();
        Folder { tmp, watcher: Some(watcher), events }
    }

    fn jobs(&self) -> std::path::PathBuf {
        self.tmp.path().join("jobs")
    }

    fn path(&self, rel: &str) -> std::path::PathBuf {
        self.jobs().join(rel)
    }

    /// Waits up to [`WAIT`] for the first event, then gathers whatever else
    /// arrives within [`QUIET`] of the last one.
    async fn events(&mut self) -> Vec<JobFileEvent> {
        let mut got = Vec::new();
        match tokio::time::timeout(WAIT, self.events.recv()).await {
            Ok(Some(event)) => got.push(event),
            Ok(None) => panic!("the watcher stopped"),
            Err(_) => return got,
        }
        got.extend(self.quiet().await);
        got
    }

    /// Every event that arrives within [`QUIET`] of the last one (none: empty).
    async fn quiet(&mut self) -> Vec<JobFileEvent> {
        let mut got = Vec::new();
        while let Ok(Some(event)) = tokio::time::timeout(QUIET, self.events.recv()).await {
            got.push(event);
        }
        got
    }
}

fn sorted(mut events: Vec<JobFileEvent>) -> Vec<JobFileEvent> {
    events.sort_by_key(|e| format!("{e:?}"));
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_then_rename_reports_one_change() {
    let mut f = Folder::with(&[]);
    fs::write(f.path("job.toml.tmp"), "description = \"x\"\n").unwrap();
    fs::rename(f.path("job.toml.tmp"), f.path("job.toml")).unwrap();
    assert_eq!(f.events().await, [changed("job.toml")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_write_is_reported_once_after_the_close_with_its_full_content() {
    let mut f = Folder::with(&[]);
    let parts = ["description = \"slow\"\n", "timeout = \"30s\"\n", "[[step]]\nname = \"s\"\nsleep = \"1s\"\n"];
    let mut file = fs::File::create(f.path("slow.toml")).unwrap();
    for (i, part) in parts.iter().enumerate() {
        file.write_all(part.as_bytes()).unwrap();
        file.flush().unwrap();
        if i + 1 < parts.len() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    assert_eq!(f.quiet().await, [], "nothing while the writer has the file open");
    drop(file);
    assert_eq!(f.events().await, [changed("slow.toml")]);
    assert_eq!(fs::read_to_string(f.path("slow.toml")).unwrap(), parts.concat());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modifying_without_closing_reports_nothing_until_the_close() {
    let mut f = Folder::with(&[("job.toml", "description = \"a\"\n")]);
    let mut file = fs::OpenOptions::new().append(true).open(f.path("job.toml")).unwrap();
    file.write_all(b"timeout = \"1s\"\n").unwrap();
    file.flush().unwrap();
    assert_eq!(f.quiet().await, []);
    drop(file);
    assert_eq!(f.events().await, [changed("job.toml")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewriting_identical_content_is_still_a_change() {
    let mut f = Folder::with(&[("job.toml", "description = \"a\"\n")]);
    fs::write(f.path("job.toml"), "description = \"a\"\n").unwrap();
    assert_eq!(f.events().await, [changed("job.toml")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_job_file_removes_it() {
    let mut f = Folder::with(&[("job.rhai", "print(1);\n")]);
    fs::remove_file(f.path("job.rhai")).unwrap();
    assert_eq!(f.events().await, [removed("job.rhai")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renaming_a_to_b_removes_a_and_changes_b() {
    let mut f = Folder::with(&[("a.toml", "")]);
    fs::rename(f.path("a.toml"), f.path("b.toml")).unwrap();
    assert_eq!(sorted(f.events().await), sorted(vec![removed("a.toml"), changed("b.toml")]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renaming_out_of_the_folder_removes_and_into_it_changes() {
    let mut f = Folder::with(&[("a.toml", "")]);
    fs::rename(f.path("a.toml"), f.tmp.path().join("a.toml")).unwrap();
    assert_eq!(f.events().await, [removed("a.toml")]);
    fs::rename(f.tmp.path().join("a.toml"), f.path("in.toml")).unwrap();
    assert_eq!(f.events().await, [changed("in.toml")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignored_and_non_job_names_report_nothing() {
    let mut f = Folder::with(&[]);
    fs::create_dir(f.path(".hidden")).unwrap();
    for name in [
        ".x.toml",
        "x.toml~",
        "x.swp",
        "x.toml.swp",
        "x.tmp",
        "x.part",
        "#x#",
        "#x.toml#",
        "notes.txt",
        ".hidden/y.toml",
    ] {
        fs::write(f.path(name), "a").unwrap();
        fs::write(f.path(name), "b").unwrap();
        fs::rename(f.path(name), f.path(&format!("{name}.old~"))).unwrap();
        fs::remove_file(f.path(&format!("{name}.old~"))).unwrap();
    }
    fs::write(f.path("notes.txt"), "kept").unwrap();
    assert_eq!(f.quiet().await, []);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subfolder_created_later_is_watched() {
    let mut f = Folder::with(&[]);
    fs::create_dir(f.path("sub")).unwrap();
    fs::write(f.path("sub/x.toml"), "").unwrap();
    // The file's own close (reported at once) and the new folder's scan (after
    // the delay) can both find it on a loaded box: a repeated report, which
    // the daemon ignores (same content). Never none, never another path.
    let mut got = f.events().await;
    got.dedup();
    assert_eq!(got, [changed("sub/x.toml")]);
    // and its files' later changes are seen too
    fs::write(f.path("sub/y.toml"), "").unwrap();
    assert_eq!(f.events().await, [changed("sub/y.toml")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_moved_in_changes_each_job_and_moved_out_removes_each() {
    let mut f = Folder::with(&[]);
    let outside = f.tmp.path().join("team");
    fs::create_dir_all(outside.join("deep")).unwrap();
    for name in ["a.toml", "deep/b.rhai", "notes.txt", ".c.toml"] {
        fs::write(outside.join(name), "").unwrap();
    }
    fs::rename(&outside, f.path("team")).unwrap();
    assert_eq!(f.events().await, [changed("team/a.toml"), changed("team/deep/b.rhai")]);
    // a file written in the moved-in folder afterwards is seen
    fs::write(f.path("team/deep/d.toml"), "").unwrap();
    assert_eq!(f.events().await, [changed("team/deep/d.toml")]);
    fs::rename(f.path("team"), &outside).unwrap();
    assert_eq!(f.events().await, [removed("team/a.toml"), removed("team/deep/b.rhai"), removed("team/deep/d.toml")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_moved_out_and_straight_back_keeps_its_jobs() {
    let mut f = Folder::with(&[("team/a.toml", ""), ("team/deep/b.rhai", "")]);
    let outside = f.tmp.path().join("team");
    fs::rename(f.path("team"), &outside).unwrap();
    fs::rename(&outside, f.path("team")).unwrap();
    let events = f.events().await;
    // However the two renames were taken (together or apart), each job's last
    // word is that it is there.
    for job in ["team/a.toml", "team/deep/b.rhai"] {
        let last = events
            .iter()
            .rev()
            .find(|e| matches!(e, JobFileEvent::Changed { id } | JobFileEvent::Removed { id } if id.as_str() == job));
        assert_eq!(last, Some(&changed(job)), "{events:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_deleted_removes_each_job() {
    let mut f = Folder::with(&[("sub/a.toml", ""), ("sub/deep/b.toml", ""), ("c.toml", "")]);
    fs::remove_dir_all(f.path("sub")).unwrap();
    assert_eq!(f.events().await, [removed("sub/a.toml"), removed("sub/deep/b.toml")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vim_style_save_reports_only_the_job_file() {
    let mut f = Folder::with(&[("x.toml", "description = \"old\"\n")]);
    fs::write(f.path(".x.toml.swp"), "swap").unwrap(); // the swap file
    fs::write(f.path("x.toml~"), "description = \"old\"\n").unwrap(); // the backup
    fs::write(f.path("4913"), "").unwrap(); // vim's "can I create files here" probe
    fs::remove_file(f.path("4913")).unwrap();
    fs::write(f.path("x.toml.tmp"), "description = \"new\"\n").unwrap();
    fs::rename(f.path("x.toml.tmp"), f.path("x.toml")).unwrap();
    fs::remove_file(f.path("x.toml~")).unwrap();
    fs::remove_file(f.path(".x.toml.swp")).unwrap();
    assert_eq!(f.events().await, [changed("x.toml")]);
    assert_eq!(fs::read_to_string(f.path("x.toml")).unwrap(), "description = \"new\"\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_by_rename_save_reports_one_change() {
    // vim with `backupcopy=no`: x.toml → x.toml~, then a new x.toml is written.
    let mut f = Folder::with(&[("x.toml", "description = \"old\"\n")]);
    fs::rename(f.path("x.toml"), f.path("x.toml~")).unwrap();
    fs::write(f.path("x.toml"), "description = \"new\"\n").unwrap();
    assert_eq!(f.events().await, [changed("x.toml")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_dropped_in_is_a_change() {
    let mut f = Folder::with(&[]);
    let target = f.tmp.path().join("target.toml");
    fs::write(&target, "").unwrap();
    std::os::unix::fs::symlink(&target, f.path("link.toml")).unwrap();
    assert_eq!(f.events().await, [changed("link.toml")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_watcher_closes_the_channel() {
    let mut f = Folder::with(&[]);
    drop(f.watcher.take());
    let end = tokio::time::timeout(WAIT, f.events.recv()).await;
    assert_eq!(end, Ok(None));
}

#[test]
fn scan_finds_nested_job_files_sorted_and_skips_ignored_ones() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for f in [
        "b.toml",
        "a.rhai",
        "sub/deep/c.toml",
        "sub/a.toml",
        "sub.toml",
        ".h.toml",
        "x.toml~",
        "#x.toml#",
        "x.swp",
        "n.txt",
        ".git/y.toml",
    ] {
        fs::create_dir_all(d.join(f).parent().unwrap()).unwrap();
        fs::write(d.join(f), "").unwrap();
    }
    let ids: Vec<String> = scan(d).unwrap().ids.iter().map(|id| id.to_string()).collect();
    assert_eq!(ids, ["a.rhai", "b.toml", "sub.toml", "sub/a.toml", "sub/deep/c.toml"]);
}

#[test]
fn scan_and_start_name_a_missing_folder() {
    let err = scan(Path::new("/no/such/jobs")).unwrap_err();
    assert!(err.to_string().starts_with("/no/such/jobs: "), "{err}");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let err = rt.block_on(async { Watcher::start(Path::new("/no/such/jobs"), DEBOUNCE, Links::Anywhere).unwrap_err() });
    assert!(err.to_string().starts_with("/no/such/jobs: "), "{err}");
}

#[test]
fn overflow_and_watcher_errors_mean_rescan() {
    let root = Path::new("/jobs");
    let overflow = Event::new(EventKind::Other).set_flag(Flag::Rescan);
    assert!(matches!(&facts(root, Ok(overflow))[..], [Fact::Lost(_)]));
    let error = notify::Error::generic("boom");
    assert!(matches!(&facts(root, Err(error))[..], [Fact::Lost(r)] if r.contains("boom")));
    let root_gone = Event::new(EventKind::Remove(RemoveKind::Folder)).add_path("/jobs".into());
    assert!(matches!(&facts(root, Ok(root_gone))[..], [Fact::Lost(_)]));
}

#[test]
fn event_kinds_map_to_facts() {
    let root = Path::new("/jobs");
    let ev = |kind, paths: &[&str]| {
        let mut e = Event::new(kind);
        for p in paths {
            e = e.add_path(p.into());
        }
        facts(root, Ok(e))
    };
    let s = |x: &str| x.to_owned();
    assert_eq!(
        ev(EventKind::Access(AccessKind::Close(AccessMode::Write)), &["/jobs/a.toml"]),
        [Fact::Closed(s("a.toml"))]
    );
    assert_eq!(
        ev(EventKind::Modify(ModifyKind::Data(notify::event::DataChange::Any)), &["/jobs/a.toml"]),
        [Fact::Written(s("a.toml"))]
    );
    assert_eq!(ev(EventKind::Create(CreateKind::File), &["/jobs/a.toml"]), [Fact::Created(s("a.toml"))]);
    assert_eq!(ev(EventKind::Create(CreateKind::Folder), &["/jobs/sub"]), [Fact::FolderCreated(s("sub"))]);
    assert_eq!(
        ev(EventKind::Modify(ModifyKind::Name(RenameMode::To)), &["/jobs/a.toml"]),
        [Fact::Arrived(s("a.toml"))]
    );
    assert_eq!(ev(EventKind::Modify(ModifyKind::Name(RenameMode::From)), &["/jobs/a.toml"]), [Fact::Gone(s("a.toml"))]);
    assert_eq!(
        ev(EventKind::Modify(ModifyKind::Name(RenameMode::Both)), &["/jobs/a.toml.tmp", "/jobs/a.toml"]),
        [Fact::Arrived(s("a.toml"))]
    );
    assert_eq!(ev(EventKind::Remove(RemoveKind::File), &["/jobs/a.toml"]), [Fact::Gone(s("a.toml"))]);
    // not job files, or nothing to do with completeness
    assert_eq!(ev(EventKind::Access(AccessKind::Close(AccessMode::Write)), &["/jobs/notes.txt"]), []);
    assert_eq!(ev(EventKind::Access(AccessKind::Close(AccessMode::Write)), &["/jobs/.a.toml.swp"]), []);
    assert_eq!(ev(EventKind::Access(AccessKind::Open(AccessMode::Any)), &["/jobs/a.toml"]), []);
    // chmod (IN_ATTRIB): a file that could not be read may be readable now.
    assert_eq!(
        ev(EventKind::Modify(ModifyKind::Metadata(notify::event::MetadataKind::Any)), &["/jobs/a.toml"]),
        [Fact::Attrib(s("a.toml"))]
    );
}

#[test]
fn the_both_event_repeating_a_rename_is_dropped_and_others_are_kept() {
    let rename = |mode, tracker: usize, paths: &[&str]| {
        let mut e = Event::new(EventKind::Modify(ModifyKind::Name(mode))).set_tracker(tracker);
        for p in paths {
            e = e.add_path(p.into());
        }
        Ok(e)
    };
    let mut r = Renames::default();
    // notify's inotify backend: From, To, then Both, all with the cookie.
    assert!(!r.is_repeat(&rename(RenameMode::From, 7, &["/jobs/.a.tmp"])));
    assert!(!r.is_repeat(&rename(RenameMode::To, 7, &["/jobs/a.toml"])));
    assert!(r.is_repeat(&rename(RenameMode::Both, 7, &["/jobs/.a.tmp", "/jobs/a.toml"])));
    // A Both without its To (another backend) is the only report: kept.
    assert!(!r.is_repeat(&rename(RenameMode::Both, 8, &["/jobs/b.tmp", "/jobs/b.toml"])));
    assert!(!r.is_repeat(&Ok(Event::new(EventKind::Modify(ModifyKind::Name(RenameMode::Both))))));
    assert!(!r.is_repeat(&Err(notify::Error::generic("boom"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saving_again_right_after_a_drop_reports_the_drop_and_then_the_last_save() {
    let mut f = Folder::with(&[]);
    fs::write(f.path(".job.toml.tmp"), "description = \"one\"\n").unwrap();
    fs::rename(f.path(".job.toml.tmp"), f.path("job.toml")).unwrap();
    fs::write(f.path("job.toml"), "description = \"two\"\n").unwrap();
    fs::write(f.path("job.toml"), "description = \"three\"\n").unwrap();
    let events = f.events().await;
    // The drop is reported at once; the saves that follow are coalesced. How
    // many reports that makes depends on when the task saw each event (one to
    // three: never more than the completions), but the last always follows
    // the last save.
    assert!(!events.is_empty() && events.len() <= 3, "{events:?}");
    assert!(events.iter().all(|e| *e == changed("job.toml")), "{events:?}");
    assert_eq!(fs::read_to_string(f.path("job.toml")).unwrap(), "description = \"three\"\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chmod_has_the_file_looked_at_again() {
    use std::os::unix::fs::PermissionsExt;
    let mut f = Folder::with(&[("x.toml", "a"), ("sub/y.toml", "b")]);
    fs::set_permissions(f.path("x.toml"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(f.events().await, [changed("x.toml")], "a file made readable is read again");
    fs::set_permissions(f.path("sub"), fs::Permissions::from_mode(0o700)).unwrap();
    // The folder's attributes change under two watches (its own and its
    // parent's); when the task sees them more than a debounce apart (a busy
    // machine), the folder is scanned twice. A report is a prompt to read the
    // file, which the daemon does only if its content changed.
    let events = f.events().await;
    assert!(!events.is_empty() && events.len() <= 2, "a folder made searchable is scanned again: {events:?}");
    assert!(events.iter().all(|e| *e == changed("sub/y.toml")), "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_is_not_text_coming_or_going_means_a_rescan() {
    use std::os::unix::ffi::OsStrExt;
    let mut f = Folder::with(&[]);
    let bad = f.jobs().join(std::ffi::OsStr::from_bytes(b"caf\xe9.toml"));
    fs::write(&bad, "x").unwrap();
    assert!(matches!(f.events().await.as_slice(), [JobFileEvent::Rescan { reason }] if reason.contains("not UTF-8")));
    fs::remove_file(&bad).unwrap();
    assert!(matches!(f.events().await.as_slice(), [JobFileEvent::Rescan { .. }]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_or_a_symlink_loop_dropped_in_is_reported_for_the_daemon_to_refuse() {
    let mut f = Folder::with(&[]);
    nix::unistd::mkfifo(&f.path("pipe.toml"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    assert_eq!(f.events().await, [changed("pipe.toml")]);
    std::os::unix::fs::symlink("loop.toml", f.path("loop.toml")).unwrap();
    assert_eq!(f.events().await, [changed("loop.toml")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlinked_subfolder_is_watched_from_the_start_and_when_linked_later() {
    let mut f = Folder::with(&[]);
    let elsewhere = f.tmp.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    fs::write(elsewhere.join("a.toml"), "a").unwrap();
    std::os::unix::fs::symlink(&elsewhere, f.path("linked")).unwrap();
    assert_eq!(f.events().await, [changed("linked/a.toml")], "linked while running: its jobs");
    fs::write(elsewhere.join("b.toml"), "b").unwrap();
    assert_eq!(f.events().await, [changed("linked/b.toml")], "and it is watched");
    // Pointed elsewhere: the old target's jobs go, the new one's come.
    let other = f.tmp.path().join("other");
    fs::create_dir(&other).unwrap();
    fs::write(other.join("c.toml"), "c").unwrap();
    std::os::unix::fs::symlink(&other, f.path(".linked.tmp")).unwrap();
    fs::rename(f.path(".linked.tmp"), f.path("linked")).unwrap();
    assert_eq!(
        sorted(f.events().await),
        sorted(vec![changed("linked/c.toml"), removed("linked/a.toml"), removed("linked/b.toml")])
    );
    fs::write(elsewhere.join("d.toml"), "d").unwrap();
    fs::write(other.join("e.toml"), "e").unwrap();
    assert_eq!(f.events().await, [changed("linked/e.toml")], "only the new target is watched");
    // Unlinked: its jobs go.
    fs::remove_file(f.path("linked")).unwrap();
    assert_eq!(sorted(f.events().await), sorted(vec![removed("linked/c.toml"), removed("linked/e.toml")]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlinked_subfolder_present_at_start_is_watched() {
    let tmp = tempfile::tempdir().unwrap();
    let elsewhere = tmp.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    fs::create_dir(tmp.path().join("jobs")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, tmp.path().join("jobs/linked")).unwrap();
    let (_watcher, events) = Watcher::start(&tmp.path().join("jobs"), DEBOUNCE, Links::Anywhere).unwrap();
    let mut f = Folder { tmp, watcher: None, events };
    fs::write(elsewhere.join("a.toml"), "a").unwrap();
    assert_eq!(f.events().await, [changed("linked/a.toml")]);
    drop(_watcher);
}

/// The threads that did blocking work (stats, registering watches) for any
/// of `paths`.
fn disk_work_for(paths: &[std::path::PathBuf]) -> Vec<std::thread::ThreadId> {
    let work = super::watcher::DISK_WORK.lock().unwrap();
    work.iter().filter(|(p, _)| paths.contains(p)).map(|(_, thread)| *thread).collect()
}

// A current-thread runtime: the watcher's task is polled on this test's own
// thread, so blocking work done on the task is done here, and work sent to
// the blocking pool is done on another thread.
#[tokio::test]
async fn following_a_link_and_rearming_a_replaced_folder_block_no_async_task() {
    let mut f = Folder::with(&[]);
    let elsewhere = f.tmp.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    fs::write(elsewhere.join("a.toml"), "a").unwrap();
    std::os::unix::fs::symlink(&elsewhere, f.path("linked")).unwrap();
    assert_eq!(f.events().await, [changed("linked/a.toml")]);
    fs::rename(f.jobs(), f.tmp.path().join("jobs.old")).unwrap();
    fs::create_dir(f.jobs()).unwrap();
    assert!(f.events().await.iter().any(|e| matches!(e, JobFileEvent::Rescan { .. })));
    let here = std::thread::current().id();
    let link_work = disk_work_for(&[f.path("linked")]);
    let rearm_work = disk_work_for(&[f.jobs()]);
    assert!(!link_work.is_empty() && !rearm_work.is_empty(), "{link_work:?} {rearm_work:?}");
    assert!(
        link_work.iter().chain(&rearm_work).all(|thread| *thread != here),
        "blocking work done on the watcher's task (this runtime's only thread, {here:?}): \
         following the link on {link_work:?}, re-arming on {rearm_work:?}"
    );
}

/// How many inotify watches this process holds on the folders at `paths`,
/// whichever watcher placed them: the `inotify wd:` lines of every inotify
/// descriptor's `/proc/self/fdinfo`, matched by inode and device.
fn inotify_watches_on(paths: &[&Path]) -> usize {
    use std::os::unix::fs::MetadataExt;
    // fdinfo's `sdev` is the kernel's encoding of a device number.
    let kernel_dev = |dev: u64| (u64::from(libc::major(dev)) << 20) | u64::from(libc::minor(dev));
    let wanted: Vec<(u64, u64)> =
        paths.iter().map(|p| fs::metadata(p).unwrap()).map(|meta| (meta.ino(), kernel_dev(meta.dev()))).collect();
    let mut count = 0;
    for fd in fs::read_dir("/proc/self/fd").unwrap().flatten() {
        if !fs::read_link(fd.path()).is_ok_and(|target| target == Path::new("anon_inode:inotify")) {
            continue;
        }
        // Another test's watcher may close its descriptor meanwhile.
        let info = fs::read_to_string(Path::new("/proc/self/fdinfo").join(fd.file_name())).unwrap_or_default();
        for line in info.lines().filter(|l| l.starts_with("inotify wd:")) {
            let field = |name: &str| {
                line.split_whitespace().find_map(|w| w.strip_prefix(name)).and_then(|v| u64::from_str_radix(v, 16).ok())
            };
            if let (Some(ino), Some(dev)) = (field("ino:"), field("sdev:"))
                && wanted.contains(&(ino, dev))
            {
                count += 1;
            }
        }
    }
    count
}

/// A jobs folder with a link `out` to a tree outside it (`out`, `out/a`,
/// `out/a/b`), watched with `links`.
fn folder_linked_out(links: Links) -> Folder {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir_all(tmp.path().join("jobs")).unwrap();
    fs::create_dir_all(tmp.path().join("out/a/b")).unwrap();
    std::os::unix::fs::symlink(tmp.path().join("out"), tmp.path().join("jobs/out")).unwrap();
    let (watcher, events) = Watcher::start(&tmp.path().join("jobs"), DEBOUNCE, links).unwrap();
    Folder { tmp, watcher: Some(watcher), events }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfined_a_link_out_of_the_folder_is_watched() {
    // What the confined watcher must not do, and that the count sees it.
    let mut f = folder_linked_out(Links::Anywhere);
    let out = f.tmp.path().join("out");
    assert_eq!(inotify_watches_on(&[&out, &out.join("a"), &out.join("a/b")]), 3);
    fs::write(out.join("a/b/x.toml"), "x").unwrap();
    assert_eq!(f.events().await, [changed("out/a/b/x.toml")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confined_to_the_folder_no_watch_is_placed_out_of_it_and_links_within_are_still_watched() {
    let mut f = folder_linked_out(Links::WithinFolder);
    let out = f.tmp.path().join("out");
    let out2 = f.tmp.path().join("out2");
    fs::create_dir_all(out2.join("c")).unwrap();
    let outside = [&out, &out.join("a"), &out.join("a/b"), &out2, &out2.join("c")].map(|p| p.to_path_buf());
    let outside: Vec<&Path> = outside.iter().map(|p| p.as_path()).collect();
    assert_eq!(inotify_watches_on(&outside), 0, "watches on the target of a link out of the jobs folder, at start");

    // Linked while running: not watched either, and a rescan (which lists it
    // refused, as the start-up scan does).
    std::os::unix::fs::symlink(&out2, f.path("out2")).unwrap();
    let events = f.events().await;
    assert!(matches!(events.as_slice(), [JobFileEvent::Rescan { reason }] if reason.contains("outside")), "{events:?}");
    assert_eq!(inotify_watches_on(&outside), 0, "watches on the target of a link out of the jobs folder, linked later");
    fs::write(out.join("a/x.toml"), "x").unwrap();
    fs::write(out2.join("c/y.toml"), "y").unwrap();
    assert_eq!(f.quiet().await, [], "files dropped out of the folder are not seen");
    // Unlinked: a rescan again, so the listing drops it.
    fs::remove_file(f.path("out2")).unwrap();
    assert!(matches!(f.events().await.as_slice(), [JobFileEvent::Rescan { .. }]));

    // In a folder moved in: not watched, not listed (its jobs would be
    // refused one by one), a rescan lists the link.
    let moving = f.tmp.path().join("moving");
    fs::create_dir(&moving).unwrap();
    std::os::unix::fs::symlink(&out2, moving.join("link")).unwrap();
    fs::rename(&moving, f.path("moving")).unwrap();
    let events = f.events().await;
    assert!(matches!(events.as_slice(), [JobFileEvent::Rescan { reason }] if reason.contains("outside")), "{events:?}");
    assert_eq!(inotify_watches_on(&outside), 0, "watches on the target of a link out of the folder, moved in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confined_to_the_folder_links_within_it_are_watched_at_start_when_linked_and_when_moved_in() {
    // Targets in a hidden folder, as the README tells a root daemon's users.
    let tmp = tempfile::tempdir().unwrap();
    let jobs = tmp.path().join("jobs");
    let store = jobs.join(".store");
    for dir in ["team/sub", "inner", "later", "moved"] {
        fs::create_dir_all(store.join(dir)).unwrap();
    }
    std::os::unix::fs::symlink(store.join("team"), jobs.join("team")).unwrap();
    std::os::unix::fs::symlink(store.join("inner"), store.join("team/inner")).unwrap();
    let (watcher, events) = Watcher::start(&jobs, DEBOUNCE, Links::WithinFolder).unwrap();
    let mut f = Folder { tmp, watcher: Some(watcher), events };
    fs::write(store.join("team/sub/a.toml"), "a").unwrap();
    assert_eq!(f.events().await, [changed("team/sub/a.toml")], "a link there at start, and its subfolders");
    fs::write(store.join("inner/b.toml"), "b").unwrap();
    assert_eq!(f.events().await, [changed("team/inner/b.toml")], "a link inside a linked folder");

    fs::write(store.join("later/c.toml"), "c").unwrap();
    std::os::unix::fs::symlink(store.join("later"), jobs.join("later")).unwrap();
    assert_eq!(f.events().await, [changed("later/c.toml")], "linked while running: its jobs");
    fs::write(store.join("later/d.toml"), "d").unwrap();
    assert_eq!(f.events().await, [changed("later/d.toml")], "and it is watched");

    // A folder moved in with a link inside: the link is watched too.
    let moving = f.tmp.path().join("moving");
    fs::create_dir(&moving).unwrap();
    std::os::unix::fs::symlink(store.join("moved"), moving.join("link")).unwrap();
    fs::rename(&moving, jobs.join("moving")).unwrap();
    assert_eq!(f.quiet().await, [], "nothing in it yet");
    fs::write(store.join("moved/e.toml"), "e").unwrap();
    assert_eq!(f.events().await, [changed("moving/link/e.toml")], "a link in a folder moved in");

    fs::remove_file(jobs.join("later")).unwrap();
    assert_eq!(f.events().await, [removed("later/c.toml"), removed("later/d.toml")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confined_a_jobs_folder_that_is_itself_a_symlink_is_watched() {
    // `/var/spool/gatherd -> /srv/jobs`: notify, following no link, would
    // not even watch the folder it is given.
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("real");
    fs::create_dir_all(real.join("sub")).unwrap();
    std::os::unix::fs::symlink(&real, tmp.path().join("jobs")).unwrap();
    let (watcher, events) = Watcher::start(&tmp.path().join("jobs"), DEBOUNCE, Links::WithinFolder).unwrap();
    let mut f = Folder { tmp, watcher: Some(watcher), events };
    fs::write(real.join("a.toml"), "a").unwrap();
    assert_eq!(f.events().await, [changed("a.toml")]);
    fs::write(real.join("sub/b.toml"), "b").unwrap();
    assert_eq!(f.events().await, [changed("sub/b.toml")]);
    fs::remove_file(real.join("a.toml")).unwrap();
    assert_eq!(f.events().await, [removed("a.toml")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confined_a_link_back_to_a_folder_that_holds_it_is_not_watched_again() {
    // Watched again under the link's longer name, the folders would report
    // their jobs under that name (one inode, one inotify watch, one name).
    let tmp = tempfile::tempdir().unwrap();
    let jobs = tmp.path().join("jobs");
    fs::create_dir_all(jobs.join("sub")).unwrap();
    std::os::unix::fs::symlink(&jobs, jobs.join("itself")).unwrap();
    let (watcher, events) = Watcher::start(&jobs, DEBOUNCE, Links::WithinFolder).unwrap();
    let mut f = Folder { tmp, watcher: Some(watcher), events };
    fs::write(jobs.join("a.toml"), "a").unwrap();
    assert_eq!(f.events().await, [changed("a.toml")], "a link there at start");
    std::os::unix::fs::symlink(jobs.join("sub"), jobs.join("sub/up")).unwrap();
    assert_eq!(f.quiet().await, []);
    fs::write(jobs.join("sub/b.toml"), "b").unwrap();
    assert_eq!(f.events().await, [changed("sub/b.toml")], "a link made while running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confined_a_job_file_linked_out_in_a_folder_moved_in_is_still_reported_for_the_daemon_to_refuse() {
    let tmp = tempfile::tempdir().unwrap();
    let jobs = tmp.path().join("jobs");
    fs::create_dir(&jobs).unwrap();
    fs::write(tmp.path().join("elsewhere.toml"), "x").unwrap();
    let (watcher, events) = Watcher::start(&jobs, DEBOUNCE, Links::WithinFolder).unwrap();
    let mut f = Folder { tmp, watcher: Some(watcher), events };
    let moving = f.tmp.path().join("moving");
    fs::create_dir(&moving).unwrap();
    std::os::unix::fs::symlink(f.tmp.path().join("elsewhere.toml"), moving.join("x.toml")).unwrap();
    fs::rename(&moving, jobs.join("moving")).unwrap();
    assert_eq!(f.events().await, [changed("moving/x.toml")]);
}
