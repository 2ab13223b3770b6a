//! From a Container's workload to what Docker runs: the [`DockerSpec`] (command, env, limits,
//! labels), the image (a local name or a State imported once per State generation), and back
//! from Docker's inspect to the controller's [`Observed`].

use super::DockerRuntimeError;
use crate::docker::{ContainerInfo, DockerSpec, Owner};
use std::collections::BTreeMap;
use tend_controllers::container::{Exit, Observed, Running, WorkloadSpec};
use tend_controllers::Context;
use tend_schema::kinds::container::{ContainerSpec, ImageRef};
use tend_schema::kinds::security::{SeccompProfile, DEFAULT_CAPABILITIES};
use tend_schema::kinds::state::StateStatus;
use tend_schema::{Kind, ObjectKey};

/// Label carrying the daemon instance, so orphan sweeps stay per instance.
pub const LABEL_INSTANCE: &str = "dev.tend.instance";
/// Label carrying the generation of the Container the Docker container was created for.
pub const LABEL_GENERATION: &str = "dev.tend.generation";

/// The Docker owner (labels, container name `tend-<uid>`) of a workload.
pub fn owner(w: &WorkloadSpec) -> Owner {
    let (namespace, name) = w.name.split_once('/').unwrap_or(("default", &w.name));
    Owner {
        uid: w.uid.clone(),
        namespace: namespace.to_string(),
        name: name.to_string(),
    }
}

/// The Docker container name of `uid`.
pub fn container_name(uid: &str) -> String {
    format!("tend-{uid}")
}

/// The Docker spec for `w` with the image already resolved to a local reference. Docker's own
/// network is `none`: networks come from tend (see `netns`).
pub fn docker_spec(w: &WorkloadSpec, image: String, instance: &str) -> DockerSpec {
    let s = &w.spec;
    let res = s.resources.clone().unwrap_or_default();
    DockerSpec {
        image,
        cmd: s.command.clone(),
        env: s
            .env
            .iter()
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect(),
        working_dir: s.working_dir.clone(),
        hostname: s.hostname.clone(),
        user: s.user.map(|u| (u.uid, u.gid)),
        memory: res
            .memory
            .map(|m| i64::try_from(m.value()).unwrap_or(i64::MAX)),
        cpu_millicores: res
            .cpu
            .map(|c| i64::try_from(c.millis()).unwrap_or(i64::MAX)),
        pids: res.pids.map(i64::from),
        network: None,
        init: s.init,
        labels: BTreeMap::from([
            (LABEL_INSTANCE.to_string(), instance.to_string()),
            (LABEL_GENERATION.to_string(), w.generation.to_string()),
        ]),
        log_max_size: s
            .logs
            .as_ref()
            .and_then(|l| l.max_size.as_ref())
            .map(|q| q.value()),
        log_max_files: s.logs.as_ref().and_then(|l| l.max_files),
        ..security(s)
    }
}

/// The securityContext and hostNetwork as Engine API fields: capabilities relative to Docker's
/// default set (which is tend's), `no-new-privileges` unless turned off, `seccomp=unconfined`.
fn security(s: &ContainerSpec) -> DockerSpec {
    let sc = s.security();
    let caps = sc.effective_capabilities();
    let mut security_opt = Vec::new();
    if sc.no_new_privileges() {
        security_opt.push("no-new-privileges".to_string());
    }
    if sc.seccomp() == SeccompProfile::Unconfined {
        security_opt.push("seccomp=unconfined".to_string());
    }
    let (cap_add, cap_drop) = if sc.privileged {
        (vec![], vec![])
    } else {
        (
            caps.iter()
                .filter(|c| !DEFAULT_CAPABILITIES.contains(c))
                .map(|c| c.to_string())
                .collect(),
            DEFAULT_CAPABILITIES
                .iter()
                .filter(|c| !caps.contains(c))
                .map(|c| c.to_string())
                .collect(),
        )
    };
    DockerSpec {
        host_network: s.host_network,
        privileged: sc.privileged,
        cap_add,
        cap_drop,
        security_opt,
        readonly_rootfs: sc.read_only_root_filesystem,
        ..Default::default()
    }
}

/// Where the image of `w` comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// A local image, used as is.
    Local(String),
    /// A State's tree at `path`, imported as `tag` (unique per State uid and generation).
    State { tag: String, path: String },
}

impl ImageSource {
    /// The local reference the container is created from.
    pub fn reference(&self) -> &str {
        match self {
            ImageSource::Local(r) | ImageSource::State { tag: r, .. } => r,
        }
    }
}

/// The repository State images are imported under (`tend-state/<uid>:g<generation>`).
pub const STATE_IMAGE_REPO: &str = "tend-state/";

/// Resolves `spec.image`: a name is used as is; `{state: NAME}` must name a Ready State of the
/// Container's namespace, whose `status.path` is imported as `tend-state/<uid>:g<generation>`.
pub async fn resolve_image(
    ctx: &Context,
    w: &WorkloadSpec,
) -> Result<ImageSource, DockerRuntimeError> {
    let state = match &w.spec.image {
        Some(ImageRef::Name(n)) => return Ok(ImageSource::Local(n.clone())),
        Some(ImageRef::State { state }) => state,
        None => {
            return Err(DockerRuntimeError::NoImage { uid: w.uid.clone() });
        }
    };
    let namespace = w.name.split_once('/').map_or("default", |(ns, _)| ns);
    let key = ObjectKey::new(Kind::State, namespace, state.clone());
    let waiting = |why: &str| DockerRuntimeError::StateNotReady {
        state: key.to_string(),
        why: why.to_string(),
    };
    let obj = ctx
        .get(&key)
        .await
        .map_err(|e| waiting(&e.to_string()))?
        .ok_or_else(|| waiting("not found"))?;
    let st: StateStatus = serde_json::from_value(obj.status.clone()).unwrap_or_default();
    // The tag names the generation whose content is at `status.path`: the one Ready was
    // observed for (a newer generation still importing keeps the older content there).
    let ready = st
        .common
        .condition("Ready")
        .filter(|c| c.status == tend_schema::ConditionStatus::True && c.observed_generation > 0);
    match (ready, st.path) {
        (Some(c), Some(path)) => Ok(ImageSource::State {
            tag: format!(
                "{STATE_IMAGE_REPO}{}:g{}",
                obj.metadata.uid.clone().unwrap_or_default(),
                c.observed_generation
            ),
            path,
        }),
        _ => Err(waiting("not Ready")),
    }
}

fn time_nanos(t: Option<tend_schema::Time>) -> u64 {
    t.and_then(|t| t.timestamp_nanos_opt())
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0)
}

/// The generation label of a container (0 when missing: treated as out of date).
pub fn generation_of(info: &ContainerInfo) -> i64 {
    info.labels
        .get(LABEL_GENERATION)
        .and_then(|g| g.parse().ok())
        .unwrap_or(0)
}

/// What the controller sees in Docker's inspect of a container.
pub fn observed(info: &ContainerInfo) -> Observed {
    let generation = generation_of(info);
    match info.status.as_str() {
        _ if info.running => Observed::Running(Running {
            generation,
            pid: info.pid.unwrap_or(0),
            start_time: time_nanos(info.started_at),
            started_at: info.started_at,
        }),
        "removing" => Observed::Exiting { generation },
        status => {
            let code = info.exit_code.and_then(|c| i32::try_from(c).ok());
            let never = status == "created" || info.started_at.is_none();
            Observed::Exited(Exit {
                generation,
                exit_code: code,
                // Docker reports a death by signal as 128 + signal.
                signal: code.filter(|c| (129..160).contains(c)).map(|c| c - 128),
                oom_killed: info.oom_killed,
                started_at: info.started_at,
                finished_at: info.finished_at,
                error: never.then(|| format!("docker container {} never started", info.name)),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn workload() -> WorkloadSpec {
        let spec: ContainerSpec = serde_json::from_value(serde_json::json!({
            "runtime": "docker", "image": "busybox:local", "command": ["sleep", "9"],
            "env": [{"name": "A", "value": "1"}], "workingDir": "/tmp", "hostname": "h1",
            "user": {"uid": 7, "gid": 8},
            "resources": {"memory": "64Mi", "cpu": "250m", "pids": 32}
        }))
        .unwrap();
        WorkloadSpec {
            uid: "u1".into(),
            name: "ns1/web".into(),
            generation: 3,
            spec,
            rootfs: None,
            netns: None,
            user_namespace: None,
        }
    }

    #[test]
    fn security_context_maps_onto_engine_fields() {
        let mut w = workload();
        let d = docker_spec(&w, "busybox:local".into(), "i");
        assert_eq!(d.security_opt, ["no-new-privileges"]);
        assert!(d.cap_add.is_empty() && d.cap_drop.is_empty() && !d.host_network);
        w.spec = serde_json::from_value(serde_json::json!({
            "runtime": "docker", "image": "busybox:local", "hostNetwork": true,
            "securityContext": {"capabilities": {"add": ["NET_ADMIN"], "drop": ["MKNOD"]},
                "seccompProfile": "Unconfined", "noNewPrivileges": false,
                "readOnlyRootFilesystem": true}
        }))
        .unwrap();
        let d = docker_spec(&w, "busybox:local".into(), "i");
        assert_eq!(
            (d.cap_add.clone(), d.cap_drop.clone()),
            (
                vec!["CAP_NET_ADMIN".to_string()],
                vec!["CAP_MKNOD".to_string()]
            )
        );
        assert_eq!(d.security_opt, ["seccomp=unconfined"]);
        assert!(d.host_network && d.readonly_rootfs && !d.privileged);
        let body = d.to_create_body(&owner(&w));
        assert_eq!(
            body.host_config.unwrap().network_mode.as_deref(),
            Some("host")
        );
    }

    #[test]
    fn spec_maps_every_field_and_labels_instance_and_generation() {
        let w = workload();
        let d = docker_spec(&w, "busybox:local".into(), "abcd1234");
        assert_eq!(d.cmd, ["sleep", "9"]);
        assert_eq!(d.env["A"], "1");
        assert_eq!(d.working_dir.as_deref(), Some("/tmp"));
        assert_eq!(d.hostname.as_deref(), Some("h1"));
        assert_eq!(d.user, Some((7, 8)));
        assert_eq!(d.memory, Some(64 << 20));
        assert_eq!(d.cpu_millicores, Some(250));
        assert_eq!(d.pids, Some(32));
        assert_eq!(d.labels[LABEL_INSTANCE], "abcd1234");
        assert_eq!(d.labels[LABEL_GENERATION], "3");
        let o = owner(&w);
        assert_eq!((o.namespace.as_str(), o.name.as_str()), ("ns1", "web"));
    }

    fn info(running: bool, status: &str, code: i64, oom: bool) -> ContainerInfo {
        ContainerInfo {
            id: "c1".into(),
            name: "tend-u1".into(),
            running,
            status: status.into(),
            exit_code: Some(code),
            oom_killed: oom,
            pid: running.then_some(42),
            started_at: Some(chrono::Utc::now()),
            finished_at: None,
            image: None,
            labels: HashMap::from([(LABEL_GENERATION.to_string(), "5".to_string())]),
            owner: None,
            spec_hash: None,
            memory: None,
            nano_cpus: None,
            pids_limit: None,
            networks: vec![],
        }
    }

    #[test]
    fn inspect_maps_to_observed() {
        match observed(&info(true, "running", 0, false)) {
            Observed::Running(r) => assert_eq!((r.generation, r.pid), (5, 42)),
            o => panic!("{o:?}"),
        }
        match observed(&info(false, "exited", 137, true)) {
            Observed::Exited(e) => {
                assert!(e.oom_killed);
                assert_eq!(e.signal, Some(9));
                assert_eq!(e.reason(), "OOMKilled");
            }
            o => panic!("{o:?}"),
        }
    }
}
