//! Container lifecycle through the Engine API: create+start, inspect, stop, remove, list, exec.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use bollard::exec::StartExecResults;
use bollard::models::{ContainerInspectResponse, ExecConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
    StartContainerOptions, StopContainerOptionsBuilder,
};
use chrono::{DateTime, Datelike, Utc};
use futures::StreamExt;

use super::error::Target;
use super::spec::{DockerSpec, Owner, LABEL_SPEC_HASH, LABEL_UID};
use super::{DockerDriver, DockerError};

/// What `inspect` observes about one container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerInfo {
    /// Full container id.
    pub id: String,
    /// Name without Docker's leading `/`.
    pub name: String,
    /// True while the process runs.
    pub running: bool,
    /// Docker's status word: created, running, exited, dead, …
    pub status: String,
    /// Exit code of the last run (meaningful once it stopped).
    pub exit_code: Option<i64>,
    /// The kernel OOM killer ended the last run.
    pub oom_killed: bool,
    /// Host pid of the workload while running.
    pub pid: Option<u32>,
    /// When the last run started; `None` if it never did.
    pub started_at: Option<DateTime<Utc>>,
    /// When the last run ended; `None` if it has not.
    pub finished_at: Option<DateTime<Utc>>,
    /// The image reference the container was created from (`Config.Image`).
    pub image: Option<String>,
    /// All labels on the container.
    pub labels: HashMap<String, String>,
    /// The owner from tend's labels; `None` for containers tend does not own.
    pub owner: Option<Owner>,
    /// `dev.tend.spec-hash`, if present.
    pub spec_hash: Option<String>,
    /// Memory limit in bytes, as Docker applied it.
    pub memory: Option<i64>,
    /// CPU limit in nano CPUs.
    pub nano_cpus: Option<i64>,
    /// Pids limit.
    pub pids_limit: Option<i64>,
    /// Endpoints on Docker networks.
    pub networks: Vec<EndpointInfo>,
}

/// One network endpoint of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointInfo {
    /// Docker network name.
    pub network: String,
    /// The container's IPv4 address on it.
    pub ipv4: Option<Ipv4Addr>,
}

/// A container carrying `dev.tend.uid`, as listed by `list_owned`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedContainer {
    /// Full container id.
    pub id: String,
    /// Name without the leading `/`.
    pub name: String,
    /// The owner from the labels.
    pub owner: Owner,
    /// `dev.tend.spec-hash`, if present.
    pub spec_hash: Option<String>,
    /// True while running.
    pub running: bool,
}

/// The result of running a command in a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// The command's exit code.
    pub exit_code: i64,
    /// stdout and stderr, interleaved as they arrived.
    pub output: String,
}

impl DockerDriver {
    /// Creates the container `owner.container_name()` (`tend-<uid>`) from `spec`, labelled for
    /// `owner`, and starts it. Returns the container id. If start fails the created container is
    /// removed again, so no half-made container is left behind.
    ///
    /// # Errors
    /// `ImageNotFound` when the image is not local (tend never pulls); `Conflict` when the name is
    /// taken (the caller should inspect and adopt or replace); `Unavailable`.
    pub async fn create_and_start(
        &self,
        owner: &Owner,
        spec: &DockerSpec,
    ) -> Result<String, DockerError> {
        let name = owner.container_name();
        let body = spec.to_create_body(owner);
        let ctx = self.ctx("create container", &spec.image, Target::CreateContainer);
        let opts = CreateContainerOptionsBuilder::default().name(&name).build();
        let id = self
            .call(&ctx, |d| async move {
                d.create_container(Some(opts), body).await
            })
            .await?
            .id;
        let ctx = self.ctx("start container", &name, Target::Container);
        let started = self
            .call(&ctx, |d| async move {
                d.start_container(&id, None::<StartContainerOptions>)
                    .await
                    .map(|_| id)
            })
            .await;
        if started.is_err() {
            let _ = self.remove(&name, true).await;
        }
        started
    }

    /// Observes one container by id or name.
    ///
    /// # Errors
    /// `NotFound` when it does not exist; `Unavailable`.
    pub async fn inspect(&self, id: &str) -> Result<ContainerInfo, DockerError> {
        let ctx = self.ctx("inspect container", id, Target::Container);
        let raw = self
            .call(&ctx, |d| async move { d.inspect_container(id, None).await })
            .await?;
        Ok(info_from(raw))
    }

    /// Stops a container: SIGTERM, then SIGKILL after `grace`. Stopping a stopped container is
    /// fine. The call timeout is extended by `grace`.
    ///
    /// # Errors
    /// `NotFound` when it does not exist; `Unavailable`.
    pub async fn stop(&self, id: &str, grace: Duration) -> Result<(), DockerError> {
        let ctx = self.ctx("stop container", id, Target::Container);
        let t = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        let opts = StopContainerOptionsBuilder::default().t(t).build();
        let limit = self.timeouts.call + grace;
        self.call_within(&ctx, limit, |d| async move {
            d.stop_container(id, Some(opts)).await
        })
        .await
    }

    /// Removes a container (`force` kills it first). Idempotent: returns false when it was
    /// already gone.
    pub async fn remove(&self, id: &str, force: bool) -> Result<bool, DockerError> {
        let ctx = self.ctx("remove container", id, Target::Container);
        let opts = RemoveContainerOptionsBuilder::default()
            .force(force)
            .build();
        match self
            .call(
                &ctx,
                |d| async move { d.remove_container(id, Some(opts)).await },
            )
            .await
        {
            Ok(()) => Ok(true),
            Err(DockerError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Every container (running or not) carrying `dev.tend.uid`; never an unlabelled one.
    pub async fn list_owned(&self) -> Result<Vec<OwnedContainer>, DockerError> {
        let ctx = self.ctx("list containers", LABEL_UID, Target::Container);
        let filters = HashMap::from([("label", vec![LABEL_UID])]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let list = self
            .call(&ctx, |d| async move { d.list_containers(Some(opts)).await })
            .await?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.unwrap_or_default();
                let owner = Owner::from_labels(&labels)?;
                Some(OwnedContainer {
                    id: c.id?,
                    name: first_name(c.names.unwrap_or_default()),
                    owner,
                    spec_hash: labels.get(LABEL_SPEC_HASH).cloned(),
                    running: c.state.is_some_and(|s| s.to_string() == "running"),
                })
            })
            .collect())
    }

    /// Runs `argv` in a running container and collects its output and exit code, bounded by the
    /// exec timeout.
    ///
    /// # Errors
    /// `NotFound` for a missing container; `Conflict` when it is not running; `Unavailable`.
    pub async fn exec(&self, id: &str, argv: &[&str]) -> Result<ExecOutput, DockerError> {
        let ctx = self.ctx("exec", id, Target::Container);
        let config = ExecConfig {
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            cmd: Some(argv.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        };
        let limit = self.timeouts.exec;
        self.call_within(&ctx, limit, |d| async move {
            let exec_id = d.create_exec(id, config).await?.id;
            let mut output = String::new();
            if let StartExecResults::Attached {
                output: mut out, ..
            } = d.start_exec(&exec_id, None).await?
            {
                while let Some(chunk) = out.next().await {
                    output.push_str(&String::from_utf8_lossy(chunk?.as_ref()));
                }
            }
            let exit_code = d.inspect_exec(&exec_id).await?.exit_code.unwrap_or(-1);
            Ok(ExecOutput { exit_code, output })
        })
        .await
    }
}

fn first_name(names: Vec<String>) -> String {
    names
        .into_iter()
        .next()
        .map(|n| n.trim_start_matches('/').to_string())
        .unwrap_or_default()
}

/// Docker writes `0001-01-01T00:00:00Z` for "never"; that becomes `None`.
fn parse_time(s: Option<String>) -> Option<DateTime<Utc>> {
    let t = DateTime::parse_from_rfc3339(s.as_deref()?).ok()?;
    (t.year() > 1).then(|| t.with_timezone(&Utc))
}

fn info_from(raw: ContainerInspectResponse) -> ContainerInfo {
    let state = raw.state.unwrap_or_default();
    let config = raw.config.unwrap_or_default();
    let labels = config.labels.unwrap_or_default();
    let hc = raw.host_config.unwrap_or_default();
    let mut networks: Vec<EndpointInfo> = raw
        .network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default()
        .into_iter()
        .map(|(network, ep)| EndpointInfo {
            network,
            ipv4: ep.ip_address.and_then(|ip| ip.parse().ok()),
        })
        .collect();
    networks.sort_by(|a, b| a.network.cmp(&b.network));
    ContainerInfo {
        id: raw.id.unwrap_or_default(),
        name: raw
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        running: state.running.unwrap_or(false),
        status: state.status.map(|s| s.to_string()).unwrap_or_default(),
        exit_code: state.exit_code,
        oom_killed: state.oom_killed.unwrap_or(false),
        pid: state
            .pid
            .filter(|p| *p > 0)
            .and_then(|p| u32::try_from(p).ok()),
        started_at: parse_time(state.started_at),
        finished_at: parse_time(state.finished_at),
        owner: Owner::from_labels(&labels),
        spec_hash: labels.get(LABEL_SPEC_HASH).cloned(),
        image: config.image.filter(|i| !i.is_empty()),
        labels,
        memory: hc.memory.filter(|m| *m > 0),
        nano_cpus: hc.nano_cpus.filter(|n| *n > 0),
        pids_limit: hc.pids_limit.filter(|p| *p > 0),
        networks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_is_none() {
        assert_eq!(parse_time(Some("0001-01-01T00:00:00Z".into())), None);
        let t = parse_time(Some("2024-05-01T10:00:00.123456789Z".into())).unwrap();
        assert_eq!(t.year(), 2024);
    }
}
