//! Live progress on a terminal while `gatherd run` goes: a bar of finished steps
//! and the names of the ones running, fed by the run's events.

use std::collections::BTreeSet;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::exec::RunEvent;

/// An indicatif bar on stderr, or nothing at all when stderr is not a
/// terminal (then events cost nothing here: a 100,000-step run with `--json`
/// must not pay for a bar nobody sees).
pub struct Progress {
    live: Option<Live>,
}

struct Live {
    bar: ProgressBar,
    running: BTreeSet<std::sync::Arc<str>>,
}

impl Progress {
    /// A bar for `steps` steps (a counter when a script decides how many),
    /// drawn only when `visible`.
    pub fn new(steps: Option<usize>, visible: bool) -> Progress {
        if !visible {
            return Progress { live: None };
        }
        let bar = match steps {
            Some(n) => ProgressBar::new(n as u64),
            None => ProgressBar::no_length(),
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
        Progress { live: Some(Live { bar, running: BTreeSet::new() }) }
    }

    /// Updates the bar from one event.
    pub fn apply(&mut self, event: &RunEvent) {
        let Some(live) = &mut self.live else { return };
        match event {
            // Scripts' lines; a process's output only with `--follow`.
            RunEvent::Log { text, stream, .. } => {
                if !stream.is_output() {
                    live.bar.println(text);
                }
                return;
            }
            RunEvent::NodeStarted { path, kind, .. } if !kind.is_group() => {
                live.running.insert(path.clone());
            }
            RunEvent::NodeFinished { path, kind, .. } if !kind.is_group() => {
                live.running.remove(path);
                live.bar.inc(1);
            }
            _ => return,
        }
        let mut names: Vec<&str> = live.running.iter().take(4).map(|p| &**p).collect();
        if live.running.len() > 4 {
            names.push("…");
        }
        live.bar.set_message(format!("running: {}", names.join(", ")));
    }

    /// Prints `line` above the bar.
    pub fn println(&self, line: &str) {
        if let Some(live) = &self.live {
            live.bar.println(line);
        }
    }

    /// Removes the bar so the report prints on a clean screen.
    pub fn finish(&self) {
        if let Some(live) = &self.live {
            live.bar.finish_and_clear();
        }
    }
}
