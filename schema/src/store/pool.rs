//! Connection pools: deadpool's managed pool over rusqlite connections.
//!
//! deadpool-sqlite's manager runs `SELECT $1` on every checkout to "recycle" a connection — one
//! more trip to the blocking pool per read, which doubled point-read latency. This manager
//! checks only what can actually break a SQLite connection here (a panic that poisoned its
//! mutex) and configures each new connection once.

use super::sqlite::{configure, OpenOptions};
use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use deadpool::Runtime;
use deadpool_sync::SyncWrapper;
use rusqlite::Connection;
use std::path::PathBuf;

pub struct Manager {
    path: PathBuf,
    opts: OpenOptions,
    read_only: bool,
}

impl managed::Manager for Manager {
    type Type = SyncWrapper<Connection>;
    type Error = rusqlite::Error;

    async fn create(&self) -> Result<Self::Type, Self::Error> {
        let (path, opts, ro) = (self.path.clone(), self.opts.clone(), self.read_only);
        SyncWrapper::new(Runtime::Tokio1, move || {
            let c = Connection::open(path)?;
            configure(&c, &opts, ro)?;
            Ok(c)
        })
        .await
    }

    async fn recycle(&self, conn: &mut Self::Type, _: &Metrics) -> RecycleResult<Self::Error> {
        if conn.is_mutex_poisoned() {
            return Err(RecycleError::message(
                "connection mutex poisoned by a panic",
            ));
        }
        Ok(())
    }
}

pub type Pool = managed::Pool<Manager>;

/// A pool of `size` connections to `path`; `read_only` ones refuse writes (`query_only`).
pub fn build(
    path: PathBuf,
    size: usize,
    opts: &OpenOptions,
    read_only: bool,
) -> Result<Pool, managed::BuildError> {
    let manager = Manager {
        path,
        opts: opts.clone(),
        read_only,
    };
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .build()
}
