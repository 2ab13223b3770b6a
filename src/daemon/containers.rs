//! Wiring of Containers: the cgroup driver probed once, the native runtime with its limits
//! watch, the Docker runtime (connected lazily), and the Container controller over both.

use std::path::Path;
use std::sync::Arc;

use tend_controllers::container::{
    Attachments, ContainerConfig, ContainerReconciler, ContainerRuntime, Runtimes,
};
use tend_controllers::snapshot::SnapshotDriver;
use tend_controllers::{Context, Runtime, Trigger};

use super::DaemonConfig;
use crate::runtime_docker::DockerRuntime;
use crate::runtime_native::limits_watch::LimitsWatch;
use crate::runtime_native::usage::UsageSampler;
use crate::runtime_native::NativeRuntime;

/// Connects the Docker runtime (`TEND_DOCKER_SOCKET`, else `DOCKER_HOST`, else the default
/// socket), lazily: nothing is asked of dockerd until a docker Container needs it.
pub fn connect_docker(cfg: &DaemonConfig, ctx: Context) -> anyhow::Result<Arc<DockerRuntime>> {
    let socket = std::env::var("TEND_DOCKER_SOCKET")
        .ok()
        .filter(|s| !s.is_empty());
    let rt = DockerRuntime::new(socket.as_deref(), &cfg.instance, ctx)?;
    tracing::info!(
        socket = rt.driver().socket(),
        "container controller: docker runtime (connects on first use)"
    );
    Ok(rt)
}

/// Probes the host's cgroups, builds the native runtime and registers the Container controller
/// over both runtimes; Docker's events and cgroup limit writes wake it.
pub fn register_containers(
    runtime: &mut Runtime,
    cfg: &DaemonConfig,
    attachments: Arc<dyn Attachments>,
    snapshots: Arc<dyn SnapshotDriver>,
) -> anyhow::Result<Runtimes> {
    let docker = connect_docker(cfg, runtime.context())?;
    let cgroups = Arc::new(crate::cgroup::detect(Path::new("/sys/fs/cgroup"))?);
    tracing::info!(
        cgroups = cgroups.version(),
        "container controller: native runtime"
    );
    let watch = LimitsWatch::new(cgroups.clone())?;
    let usage = Arc::new(UsageSampler::new(cgroups.clone(), &cfg.instance));
    tokio::spawn(usage.clone().run(cfg.usage_interval));
    let native: Arc<dyn ContainerRuntime> = Arc::new(
        NativeRuntime::new(
            cfg.exe.clone(),
            cfg.layout.containers(),
            &cfg.instance,
            cgroups,
        )
        .with_limits_watch(watch.clone())
        .with_log_limits(cfg.log)
        .with_usage(usage),
    );
    let probes = Arc::new(crate::probe::HostProbes::new()?.with_timings(cfg.probe_timings.clone()));
    let set = Runtimes {
        native,
        docker: Some(docker.clone() as Arc<dyn ContainerRuntime>),
    };
    let trigger: Trigger = runtime.register_with(
        tend_schema::Kind::Container,
        |trigger| {
            Arc::new(
                ContainerReconciler::new(
                    set.native.clone(),
                    set.docker.clone(),
                    attachments,
                    ContainerConfig {
                        id_pool: cfg.id_pool,
                        ..ContainerConfig::default()
                    },
                    Some(trigger),
                )
                .with_probes(probes)
                .with_snapshots(snapshots),
            )
        },
        cfg.controller.clone(),
    );
    tokio::spawn(watch.run(trigger.clone()));
    docker.watch_events(trigger);
    Ok(set)
}
