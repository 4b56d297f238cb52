//! `GET /nodes`: the fleet's nodes (a shared store's `nodes` table), or on a
//! single-node store this daemon's own node, from memory.

use axum::Json;
use axum::extract::State;

use super::{ApiError, AppState};

/// `GET /nodes`: `{"nodes": [NodeRow...]}`, alive first, then newest first.
pub(super) async fn list(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let nodes = match state.store.nodes().await? {
        Some(nodes) => nodes,
        None => state.control.node().into_iter().collect(),
    };
    Ok(Json(serde_json::json!({ "nodes": nodes })))
}
