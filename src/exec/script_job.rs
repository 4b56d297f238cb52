//! Running a Rhai job's body (stub).
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::tree::{NodeResult, Runner};
use crate::job::ScriptNode;

impl Runner {
    pub(super) async fn script_node(&self, s: &ScriptNode, path: Arc<str>, token: CancellationToken) -> NodeResult {
        let _ = (s, path, token);
        Err(super::tree::Failure::new(super::Status::Failed, "Rhai jobs are not implemented yet"))
    }
}
