//! A Container's health contract: `probes` (startup, liveness, readiness, with Kubernetes
//! semantics and defaults) and `dependsOn` (what must hold before it starts), their validation,
//! and the dependency-cycle search admission runs against the stored Containers.

use crate::field::{check_dns1123_label, FieldErrors};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::time::Duration;

/// `spec.probes`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Probes {
    /// Runs first; liveness and readiness wait until it has passed. Failure restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup: Option<Probe>,
    /// Failure restarts the workload per `restartPolicy` (reason `Unhealthy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<Probe>,
    /// Drives the `Ready` condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<Probe>,
}

impl Probes {
    /// True when no probe is declared.
    pub fn is_empty(&self) -> bool {
        self.startup.is_none() && self.liveness.is_none() && self.readiness.is_none()
    }
}

/// One probe: exactly one handler, and its timing (unset fields take Kubernetes' defaults).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Probe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGetAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpSocketAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<u32>,
}

/// Runs a command inside the container; exit 0 is success.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecAction {
    pub command: Vec<String>,
}

/// An HTTP GET inside the container's network namespace; 200–399 is success.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpGetAction {
    #[serde(default = "root_path")]
    pub path: String,
    pub port: u16,
    /// IPv4 address to connect to inside the namespace; default `127.0.0.1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

fn root_path() -> String {
    "/".into()
}

/// A TCP connect inside the container's network namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpSocketAction {
    pub port: u16,
    /// IPv4 address to connect to inside the namespace; default `127.0.0.1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// A probe's handler, once validation made sure there is exactly one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Handler<'a> {
    Exec(&'a ExecAction),
    HttpGet(&'a HttpGetAction),
    TcpSocket(&'a TcpSocketAction),
}

impl Probe {
    /// The one handler (the first set one; validation refuses more or fewer).
    pub fn handler(&self) -> Option<Handler<'_>> {
        if let Some(e) = &self.exec {
            return Some(Handler::Exec(e));
        }
        if let Some(h) = &self.http_get {
            return Some(Handler::HttpGet(h));
        }
        self.tcp_socket.as_ref().map(Handler::TcpSocket)
    }

    /// `initialDelaySeconds`, default 0.
    pub fn initial_delay(&self) -> Duration {
        Duration::from_secs(self.initial_delay_seconds.unwrap_or(0).into())
    }

    /// `periodSeconds`, default 10.
    pub fn period(&self) -> Duration {
        Duration::from_secs(self.period_seconds.unwrap_or(10).into())
    }

    /// `timeoutSeconds`, default 1.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_seconds.unwrap_or(1).into())
    }

    /// `successThreshold`, default 1.
    pub fn success_threshold(&self) -> u32 {
        self.success_threshold.unwrap_or(1)
    }

    /// `failureThreshold`, default 3.
    pub fn failure_threshold(&self) -> u32 {
        self.failure_threshold.unwrap_or(3)
    }

    fn validate(&self, errs: &mut FieldErrors, at: &str, single_success: bool) {
        let set = [
            self.exec.is_some(),
            self.http_get.is_some(),
            self.tcp_socket.is_some(),
        ];
        if set.iter().filter(|s| **s).count() != 1 {
            errs.push(at, "exactly one of exec, httpGet, tcpSocket must be set");
        }
        if let Some(e) = &self.exec {
            if e.command.is_empty() {
                errs.push(format!("{at}.exec.command"), "must not be empty");
            }
            for (i, a) in e.command.iter().enumerate() {
                if a.contains('\0') {
                    errs.push(format!("{at}.exec.command[{i}]"), "must not contain NUL");
                }
            }
        }
        if let Some(h) = &self.http_get {
            port(errs, &format!("{at}.httpGet.port"), h.port);
            host(errs, &format!("{at}.httpGet.host"), h.host.as_deref());
            let printable = h.path.bytes().all(|b| b.is_ascii_graphic());
            if !h.path.starts_with('/') || !printable {
                errs.push(
                    format!("{at}.httpGet.path"),
                    format!("{:?} must start with / and hold no spaces", h.path),
                );
            }
        }
        if let Some(t) = &self.tcp_socket {
            port(errs, &format!("{at}.tcpSocket.port"), t.port);
            host(errs, &format!("{at}.tcpSocket.host"), t.host.as_deref());
        }
        let at_least_one = [
            ("periodSeconds", self.period_seconds),
            ("timeoutSeconds", self.timeout_seconds),
            ("successThreshold", self.success_threshold),
            ("failureThreshold", self.failure_threshold),
        ];
        for (field, v) in at_least_one {
            if v == Some(0) {
                errs.push(format!("{at}.{field}"), "must be at least 1");
            }
        }
        if self.initial_delay_seconds.is_some_and(|d| d > 3600) {
            errs.push(format!("{at}.initialDelaySeconds"), "must be at most 3600");
        }
        if self.period_seconds.is_some_and(|d| d > 3600) {
            errs.push(format!("{at}.periodSeconds"), "must be at most 3600");
        }
        if single_success && self.success_threshold.is_some_and(|s| s != 1) {
            errs.push(
                format!("{at}.successThreshold"),
                "must be 1 for liveness and startup probes",
            );
        }
    }
}

fn port(errs: &mut FieldErrors, at: &str, p: u16) {
    if p == 0 {
        errs.push(at, "must be between 1 and 65535");
    }
}

fn host(errs: &mut FieldErrors, at: &str, h: Option<&str>) {
    if let Some(h) = h {
        if h.parse::<std::net::Ipv4Addr>().is_err() {
            errs.push(at, format!("{h:?} is not an IPv4 address"));
        }
    }
}

impl Probes {
    /// Pushes every bad field under `spec.probes`.
    pub fn validate(&self, errs: &mut FieldErrors) {
        if let Some(p) = &self.startup {
            p.validate(errs, "spec.probes.startup", true);
        }
        if let Some(p) = &self.liveness {
            p.validate(errs, "spec.probes.liveness", true);
        }
        if let Some(p) = &self.readiness {
            p.validate(errs, "spec.probes.readiness", false);
        }
    }
}

/// One entry of `spec.dependsOn`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Dependency {
    /// A Container in the same namespace.
    pub container: String,
    #[serde(default)]
    pub condition: DependencyCondition,
}

/// What a dependency must have reached before its dependent starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DependencyCondition {
    /// Its `Ready` condition is True (readiness probe passed, or running without one).
    #[default]
    Ready,
    /// Its `Started` condition is True (startup probe passed, or running without one).
    Started,
    /// It exited with code 0 for good (phase `Succeeded`).
    Completed,
}

impl DependencyCondition {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::Started => "Started",
            Self::Completed => "Completed",
        }
    }
}

/// Pushes every bad field under `spec.dependsOn`: names and duplicates. Cycles (a dependency
/// on itself included) need the other stored Containers: see [`find_cycle`].
pub fn validate_dependencies(deps: &[Dependency], errs: &mut FieldErrors) {
    let mut seen = BTreeSet::new();
    for (i, d) in deps.iter().enumerate() {
        let at = format!("spec.dependsOn[{i}].container");
        if let Err(m) = check_dns1123_label(&d.container) {
            errs.push(&at, m);
        }
        if !seen.insert(&d.container) {
            errs.push(&at, format!("{:?} is listed twice", d.container));
        }
    }
    if deps.len() > 64 {
        errs.push("spec.dependsOn", "at most 64 dependencies");
    }
}

/// Searches the dependency graph from `start` (whose own dependencies are `first`) for a path
/// back to `start`; `deps_of` gives the stored dependencies of another Container (empty when
/// it does not exist). Returns the cycle as names, `start` first and last
/// (`["a", "b", "a"]`), or `None`.
///
/// # Errors
/// Whatever `deps_of` fails with.
pub fn find_cycle<E>(
    start: &str,
    first: &[String],
    mut deps_of: impl FnMut(&str) -> Result<Vec<String>, E>,
) -> Result<Option<Vec<String>>, E> {
    // Depth-first, each name expanded once: a path back to `start` is a cycle through the
    // object being written; cycles elsewhere were refused when they were written.
    let mut visited = BTreeSet::new();
    let first: Vec<String> = first.to_vec();
    let mut stack: Vec<(Vec<String>, std::vec::IntoIter<String>)> =
        vec![(vec![start.to_string()], first.into_iter())];
    while let Some((path, next)) = stack.last_mut() {
        let Some(n) = next.next() else {
            stack.pop();
            continue;
        };
        let mut path = path.clone();
        path.push(n.clone());
        if n == start {
            return Ok(Some(path));
        }
        if !visited.insert(n.clone()) {
            continue;
        }
        let deps = deps_of(&n)?;
        stack.push((path, deps.into_iter()));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::Kind;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn cycle(graph: &[(&str, &[&str])], start: &str, first: &[&str]) -> Option<Vec<String>> {
        let g: BTreeMap<&str, Vec<String>> = graph
            .iter()
            .map(|(k, v)| (*k, v.iter().map(|s| s.to_string()).collect()))
            .collect();
        let first: Vec<String> = first.iter().map(|s| s.to_string()).collect();
        find_cycle::<()>(start, &first, |n| Ok(g.get(n).cloned().unwrap_or_default())).unwrap()
    }

    #[test]
    fn a_cycle_through_the_written_object_is_found_and_named() {
        assert_eq!(cycle(&[], "a", &["a"]).unwrap(), ["a", "a"]);
        assert_eq!(
            cycle(&[("b", &["a"])], "a", &["b"]).unwrap(),
            ["a", "b", "a"]
        );
        let g: &[(&str, &[&str])] = &[("b", &["x", "c"]), ("c", &["d"]), ("d", &["a"])];
        assert_eq!(cycle(g, "a", &["b"]).unwrap(), ["a", "b", "c", "d", "a"]);
    }

    #[test]
    fn a_diamond_and_a_missing_dependency_are_not_cycles() {
        let g: &[(&str, &[&str])] = &[("b", &["d"]), ("c", &["d"]), ("d", &[])];
        assert_eq!(cycle(g, "a", &["b", "c", "nowhere"]), None);
    }

    #[test]
    fn probe_defaults_are_kubernetes() {
        let p = Probe::default();
        assert_eq!(p.initial_delay(), Duration::ZERO);
        assert_eq!(p.period(), Duration::from_secs(10));
        assert_eq!(p.timeout(), Duration::from_secs(1));
        assert_eq!((p.success_threshold(), p.failure_threshold()), (1, 3));
    }

    #[test]
    fn a_probe_needs_exactly_one_handler_and_names_the_path() {
        let spec = json!({"command": ["sh"], "probes": {"readiness": {"periodSeconds": 1}}});
        let err = Kind::Container.validate_spec(&spec).unwrap_err();
        assert_eq!(err.0[0].field, "spec.probes.readiness");
        let spec = json!({"command": ["sh"], "probes": {"liveness": {
            "exec": {"command": ["true"]}, "tcpSocket": {"port": 1}}}});
        let err = Kind::Container.validate_spec(&spec).unwrap_err();
        assert_eq!(err.0[0].field, "spec.probes.liveness");
        let spec = json!({"command": ["sh"], "probes": {"liveness": {
            "httpGet": {"path": "/", "port": 0}, "successThreshold": 2}}});
        let err = Kind::Container.validate_spec(&spec).unwrap_err();
        let fields: Vec<&str> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.probes.liveness.httpGet.port",
                "spec.probes.liveness.successThreshold"
            ]
        );
        let spec = json!({"command": ["sh"], "probes": {"readiness": {"tcpSocket": {"port": 80}}}});
        Kind::Container.validate_spec(&spec).unwrap();
    }

    #[test]
    fn dependencies_are_names_listed_once() {
        let spec = json!({"command": ["sh"], "dependsOn": [
            {"container": "db"}, {"container": "db", "condition": "Started"}, {"container": "Bad_"}]});
        let err = Kind::Container.validate_spec(&spec).unwrap_err();
        let fields: Vec<&str> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["spec.dependsOn[1].container", "spec.dependsOn[2].container"]
        );
        let spec =
            json!({"command": ["sh"], "dependsOn": [{"container": "db", "condition": "Done"}]});
        let err = Kind::Container.validate_spec(&spec).unwrap_err();
        assert!(err.0[0].field.starts_with("spec.dependsOn[0]"), "{err}");
    }
}
