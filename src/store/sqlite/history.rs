//! Reading the history without a daemon: the CLI's fallback. A read-only
//! connection, no writer, no migrations — safe beside a running daemon.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::Connection;

use super::{read, schema};
use crate::store::{LogFilter, NumberedLine, RunDetail, RunFilter, RunId, RunRow, StoreError};

/// A read-only view of a run store.
#[derive(Clone)]
pub struct History {
    conn: Arc<Mutex<Connection>>,
}

impl History {
    /// Opens the database at `path` read-only; it must exist.
    pub async fn open(path: impl AsRef<Path>) -> Result<History, StoreError> {
        let path = path.as_ref().to_path_buf();
        let conn = tokio::task::spawn_blocking(move || schema::open_reader(&path))
            .await
            .map_err(|e| StoreError::Worker(e.to_string()))??;
        Ok(History { conn: Arc::new(Mutex::new(conn)) })
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || f(&conn.lock().unwrap_or_else(PoisonError::into_inner)))
            .await
            .map_err(|e| StoreError::Worker(e.to_string()))?
    }

    /// Runs matching `filter`, newest first.
    pub async fn runs(&self, filter: RunFilter) -> Result<Vec<RunRow>, StoreError> {
        self.read(move |conn| read::runs(conn, &filter)).await
    }

    /// Every job the history knows (seen by a daemon, or with runs), sorted.
    pub async fn job_names(&self) -> Result<Vec<String>, StoreError> {
        self.read(read::job_names).await
    }

    /// One run with its steps and log lines.
    pub async fn run(&self, id: RunId) -> Result<Option<RunDetail>, StoreError> {
        self.read(move |conn| read::run(conn, id)).await
    }

    /// A run's lines matching `filter`, numbered (see `RunStore::logs`).
    pub async fn logs(&self, id: RunId, filter: LogFilter) -> Result<Option<Vec<NumberedLine>>, StoreError> {
        self.read(move |conn| read::logs(conn, id, &filter)).await
    }
}
