//! Small shared helpers for the drivers: running blocking calls off the executor, watching
//! directories for names that come and go.

/// Runs a blocking closure (a syscall, an ioctl, file I/O) on tokio's blocking pool, like
/// containerd's `asyncify`, so the executor threads never stall.
pub async fn blocking<T, F>(f: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("blocking task cancelled: {e}"),
    }
}

pub mod dirwatch;
