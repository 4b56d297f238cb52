//! `gatherd nodes`: the fleet's nodes — through the daemon's control API
//! (`GET /nodes`), or with `--store URL` straight from the PostgreSQL
//! history, with no daemon.

use chrono::{DateTime, Utc};
use clap::Args;
use serde_json::Value;

use super::client::{ApiArgs, Client, TableArgs};
use super::out::out;
use super::{exit, render};
use crate::store::{self, PostgresHistory};

/// Arguments of `gatherd nodes`.
#[derive(Debug, Args)]
pub struct NodesArgs {
    /// Print JSON (`{"nodes": [...]}`, as `GET /nodes`).
    #[arg(long)]
    pub json: bool,
    /// Read the nodes in this PostgreSQL database (a postgres:// URL)
    /// instead of asking the daemon: a fleet's nodes, with no daemon.
    #[arg(long, value_name = "URL", env = "GATHERD_STORE", hide_env_values = true)]
    pub store: Option<String>,
    #[command(flatten)]
    pub table: TableArgs,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// `gatherd nodes`: a table of nodes, alive first.
pub async fn nodes(args: NodesArgs) -> anyhow::Result<u8> {
    let nodes: Value = match &args.store {
        Some(url) => {
            let url = store::postgres_url(url).map_err(super::invalid)?;
            let history = PostgresHistory::open(url).await?;
            serde_json::json!({ "nodes": history.nodes().await? })
        }
        None => Client::new(&args.api)?.json(reqwest::Method::GET, "/nodes").await?,
    };
    if args.json {
        super::out::json(&nodes)?;
        return Ok(exit::OK);
    }
    let list = nodes["nodes"].as_array().map_or(&[][..], Vec::as_slice);
    out!("{}", nodes_table(list, args.table.fit(), args.table.clock(), Utc::now()))?;
    Ok(exit::OK)
}

/// The human table of `gatherd nodes` at `now`: STARTED shown by `clock`,
/// HEARTBEAT as how long ago (as `jobs`' PASSED), fitted to `fit` columns
/// (LABEL is cut first, then TAKEN OVER BY).
fn nodes_table(list: &[Value], fit: Option<usize>, clock: super::clock::Clock, now: DateTime<Utc>) -> String {
    use render::Column;
    let columns = [
        Column::new("NODE"),
        Column::new("LABEL").shrink(1),
        Column::new("VERSION"),
        Column::new("STATE"),
        Column::new("STARTED"),
        Column::new("HEARTBEAT"),
        Column::new("RUNS").right(),
        Column::new("SKEW").right(),
        Column::new("TAKEN OVER BY").shrink(0),
    ];
    let time = |v: &Value| v.as_str().and_then(|t| t.parse::<DateTime<Utc>>().ok());
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|n| {
            let text = |key: &str| n[key].as_str().unwrap_or("-").to_string();
            vec![
                text("id"),
                text("label"),
                text("version"),
                text("state"),
                time(&n["started_at"]).map_or_else(|| "-".into(), |t| clock.show(t)),
                time(&n["heartbeat_at"]).map_or_else(|| "-".into(), |t| super::clock::passed(t, now)),
                n["runs_in_flight"].as_u64().map_or_else(|| "-".into(), |r| r.to_string()),
                n["skewed_jobs"].as_u64().map_or_else(|| "-".into(), |r| r.to_string()),
                text("taken_over_by"),
            ]
        })
        .collect();
    let mut out = String::new();
    for line in render::table(&columns, &rows, fit) {
        out.push_str(&line);
        out.push('\n');
    }
    if list.is_empty() {
        out.push_str("(no nodes)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_show_their_state_heartbeat_age_runs_and_taker() {
        let now: DateTime<Utc> = "2026-11-29T17:05:00Z".parse().unwrap();
        let list = serde_json::json!([
            {"id": "web2-8c01d4aa", "label": "web2", "version": "0.1.0", "state": "alive",
             "started_at": "2026-11-29T16:01:12Z", "heartbeat_at": "2026-11-29T17:04:58Z",
             "runs_in_flight": 3, "lease_ms": 15000, "taken_over_by": null, "skewed_jobs": 1},
            {"id": "web1-3f9a2c7e", "label": "web1", "version": "0.1.0", "state": "dead",
             "started_at": "2026-11-29T15:58:40Z", "heartbeat_at": "2026-11-29T17:04:18Z",
             "runs_in_flight": 2, "lease_ms": 15000, "taken_over_by": "web2-8c01d4aa"}
        ]);
        let table = nodes_table(list.as_array().unwrap(), None, super::super::clock::Clock::new(true), now);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("NODE") && lines[0].ends_with("TAKEN OVER BY"), "{table}");
        assert!(
            lines[1].contains("web2-8c01d4aa") && lines[1].contains("alive") && lines[1].contains("2s ago"),
            "{table}"
        );
        assert!(lines[1].contains("2026-11-29 16:01:12 UTC"), "{table}");
        assert!(lines[0].contains("SKEW"), "{table}");
        assert!(
            lines[2].contains("dead") && lines[2].contains("42s ago") && lines[2].ends_with("web2-8c01d4aa"),
            "{table}"
        );
        assert_eq!(
            nodes_table(&[], None, super::super::clock::Clock::new(true), now).lines().last(),
            Some("(no nodes)")
        );
    }
}
