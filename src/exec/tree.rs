//! Walking the run tree (stub).
use super::{RunContext, RunEvent, RunOutcome, Status};
use crate::job::Job;
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedSender;

pub(super) async fn run(
    job: Arc<Job>,
    ctx: RunContext,
    events: UnboundedSender<RunEvent>,
) -> RunOutcome {
    let _ = (job, ctx, events);
    RunOutcome {
        status: Status::Failed,
        result: None,
        error: Some("not implemented".into()),
    }
}
