//! [`NodeKind`]: what a node of the run tree is, named the way job files,
//! reports, JSON, logs and the run history all name it.

use super::word::word_enum;
use super::{GroupMode, StepKind};

word_enum! {
    /// A step kind (`sleep`, `exec`, …) or a group mode (`gather`, `race`, …):
    /// the one list of kinds. One byte, so events and report lines that carry
    /// it stay small.
    pub enum NodeKind {
        /// [`StepKind::Sleep`].
        Sleep = "sleep",
        /// [`StepKind::Exec`].
        Exec = "exec",
        /// [`StepKind::Shell`].
        Shell = "shell",
        /// [`StepKind::Http`].
        Http = "http",
        /// [`StepKind::ReadFile`].
        ReadFile = "read_file",
        /// [`StepKind::WriteFile`].
        WriteFile = "write_file",
        /// [`StepKind::Script`], and a Rhai job's script node.
        Script = "script",
        /// [`StepKind::Call`]: a Rhai job's `to_thread`.
        ToThread = "to_thread",
        /// [`GroupMode::Gather`].
        Gather = "gather",
        /// [`GroupMode::AsCompleted`].
        AsCompleted = "as_completed",
        /// [`GroupMode::Race`].
        Race = "race",
        /// [`GroupMode::Sequence`].
        Sequence = "sequence",
        /// A kind this version does not know (read from a newer history).
        Other = "other",
    }
}

impl NodeKind {
    /// Whether this names a group mode rather than a step kind.
    pub fn is_group(self) -> bool {
        matches!(self, NodeKind::Gather | NodeKind::AsCompleted | NodeKind::Race | NodeKind::Sequence)
    }

    /// The kind named `word`, or [`NodeKind::Other`]: what the history and
    /// older or newer documents may hold.
    pub fn parse_or_other(word: &str) -> NodeKind {
        NodeKind::parse(word).unwrap_or(NodeKind::Other)
    }
}

impl GroupMode {
    /// This mode as a [`NodeKind`].
    pub fn node_kind(self) -> NodeKind {
        match self {
            GroupMode::Gather => NodeKind::Gather,
            GroupMode::AsCompleted => NodeKind::AsCompleted,
            GroupMode::Race => NodeKind::Race,
            GroupMode::Sequence => NodeKind::Sequence,
        }
    }

    /// The key that selects this mode in a job file (`gather`, `as_completed`, …).
    pub fn key(self) -> &'static str {
        self.node_kind().as_str()
    }
}

impl StepKind {
    /// This kind as a [`NodeKind`].
    pub fn node_kind(&self) -> NodeKind {
        match self {
            StepKind::Sleep(_) => NodeKind::Sleep,
            StepKind::Exec(_) => NodeKind::Exec,
            StepKind::Shell(_) => NodeKind::Shell,
            StepKind::Http(_) => NodeKind::Http,
            StepKind::ReadFile(_) => NodeKind::ReadFile,
            StepKind::WriteFile(_) => NodeKind::WriteFile,
            StepKind::Script(_) => NodeKind::Script,
            StepKind::Call(_) => NodeKind::ToThread,
        }
    }

    /// The kind's key in a job file, also shown in reports (`sleep`, `exec`, …).
    pub fn key(&self) -> &'static str {
        self.node_kind().as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::NodeKind;

    #[test]
    fn every_kind_reads_back_from_its_word() {
        for &kind in NodeKind::ALL {
            assert_eq!(NodeKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(NodeKind::parse_or_other("teleport"), NodeKind::Other);
    }

    #[test]
    fn only_group_modes_are_groups() {
        let groups: Vec<&str> = NodeKind::ALL.iter().filter(|k| k.is_group()).map(|k| k.as_str()).collect();
        assert_eq!(groups, ["gather", "as_completed", "race", "sequence"]);
    }
}
