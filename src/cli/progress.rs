//! Live progress on a terminal while `gatherd run` goes: a bar of finished steps
//! and the names of the ones running, fed by the run's events.

use std::collections::BTreeSet;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::exec::{RunEvent, is_group_kind};

/// An indicatif bar on stderr, or nothing when stderr is not a terminal.
pub struct Progress {
    bar: ProgressBar,
    running: BTreeSet<std::sync::Arc<str>>,
}

impl Progress {
    /// A bar for `steps` steps (a counter when a script decides how many),
    /// drawn only when `visible`.
    pub fn new(steps: Option<usize>, visible: bool) -> Progress {
        let bar = match (visible, steps) {
            (false, _) => ProgressBar::hidden(),
            (true, Some(n)) => ProgressBar::new(n as u64),
            (true, None) => ProgressBar::no_length(),
        };
        let template = match steps {
            Some(_) => "{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} steps  {msg}",
            None => "{spinner} {elapsed_precise} {pos} steps done  {msg}",
        };
        let style = ProgressStyle::with_template(template).map(|s| s.progress_chars("=> "));
        if let Ok(style) = style {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(120));
        Progress { bar, running: BTreeSet::new() }
    }

    /// Updates the bar from one event.
    pub fn apply(&mut self, event: &RunEvent) {
        match event {
            RunEvent::Log { text, .. } => {
                self.bar.println(text);
                return;
            }
            RunEvent::NodeStarted { path, kind, .. } if !is_group_kind(kind) => {
                self.running.insert(path.clone());
            }
            RunEvent::NodeFinished { path, kind, .. } if !is_group_kind(kind) => {
                self.running.remove(path);
                self.bar.inc(1);
            }
            _ => return,
        }
        let mut names: Vec<&str> = self.running.iter().take(4).map(|p| &**p).collect();
        if self.running.len() > 4 {
            names.push("…");
        }
        self.bar.set_message(format!("running: {}", names.join(", ")));
    }

    /// Removes the bar so the report prints on a clean screen.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
