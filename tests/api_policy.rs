//! The admission policy over the real REST API: a namespace token cannot ask for host access
//! (privileged, hostNetwork, no seccomp, extra capabilities, the host filesystem, host paths
//! outside the allowed source dirs) on any write path; each refusal is a 403 `Forbidden` naming
//! the field, and nothing is written. Admin credentials may set everything. The admin socket
//! stays private even in a state dir that existed with looser permissions.

mod api;

use api::{get, post, send, Server};
use hyper::Method;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use tend::api::client::RawResponse;

fn containers(ns: &str) -> String {
    format!("/apis/tend.dev/v1/namespaces/{ns}/containers")
}

fn container(name: &str, extra: Value) -> Value {
    let mut spec = json!({"command": ["/bin/sh"], "rootfs": {"state": "base"}});
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    json!({"apiVersion": "tend.dev/v1", "kind": "Container",
           "metadata": {"name": name, "namespace": "team"}, "spec": spec})
}

fn state(name: &str, dir: &str) -> Value {
    json!({"apiVersion": "tend.dev/v1", "kind": "State",
           "metadata": {"name": name, "namespace": "team"},
           "spec": {"source": {"directory": dir}}})
}

/// A 403 `kind: Status` with reason Forbidden whose cause is `field`.
fn assert_forbidden(r: &RawResponse, field: &str) {
    let v = r.json();
    assert_eq!(r.status.as_u16(), 403, "{v}");
    assert_eq!(v["kind"], "Status");
    assert_eq!(v["reason"], "Forbidden");
    assert_eq!(v["details"]["causes"][0]["field"], field, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_token_cannot_ask_for_the_host_on_any_write_path() {
    let allowed = tempfile::tempdir().unwrap();
    let tree = allowed.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    let policy = tend_schema::policy::Policy::new(&[allowed.path().to_path_buf()]).unwrap();
    let s = Server::start_with(100_000, Default::default(), policy).await;
    let team = s.remote(Some(&s.token(&["team"], false)));
    let shapes = [
        (
            json!({"securityContext": {"privileged": true}}),
            "spec.securityContext.privileged",
        ),
        (json!({"hostNetwork": true}), "spec.hostNetwork"),
        (
            json!({"securityContext": {"seccompProfile": "Unconfined"}}),
            "spec.securityContext.seccompProfile",
        ),
        (
            json!({"securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}),
            "spec.securityContext.capabilities.add",
        ),
        (json!({"rootfs": null}), "spec.rootfs"),
    ];
    for (i, (extra, field)) in shapes.iter().enumerate() {
        let name = format!("bad{i}");
        let mut body = container(&name, extra.clone());
        if extra.get("rootfs").is_some() {
            body["spec"].as_object_mut().unwrap().remove("rootfs");
        }
        // Create, then server-side apply and the batch apply: all refused, nothing stored.
        assert_forbidden(&post(&team, &containers("team"), &body).await, field);
        let path = format!("{}/{name}?fieldManager=me", containers("team"));
        let ssa = send(
            &team,
            Method::PATCH,
            &path,
            Some("application/apply-patch+yaml"),
            &body,
        )
        .await;
        assert_forbidden(&ssa, field);
        let list = json!({"apiVersion": "v1", "kind": "List", "items": [body]});
        assert_forbidden(&post(&team, "/apis/tend.dev/v1/apply", &list).await, field);
        let one = format!("{}/{name}", containers("team"));
        assert_eq!(
            get(&team, &one).await.status.as_u16(),
            404,
            "{name} was written"
        );
    }
    // An allowed container; then a patch or a replace that asks for more is refused.
    let ok = post(&team, &containers("team"), &container("ok", json!({}))).await;
    assert_eq!(ok.status.as_u16(), 201, "{}", ok.json());
    let one = format!("{}/ok", containers("team"));
    let patch = json!({"spec": {"securityContext": {"privileged": true}}});
    let r = send(
        &team,
        Method::PATCH,
        &one,
        Some("application/merge-patch+json"),
        &patch,
    )
    .await;
    assert_forbidden(&r, "spec.securityContext.privileged");
    let mut replaced = get(&team, &one).await.json();
    replaced["spec"]["hostNetwork"] = json!(true);
    let r = send(
        &team,
        Method::PUT,
        &one,
        Some("application/json"),
        &replaced,
    )
    .await;
    assert_forbidden(&r, "spec.hostNetwork");
    let now = get(&team, &one).await.json();
    assert!(
        now["spec"].get("securityContext").is_none() && now["spec"].get("hostNetwork").is_none()
    );
    // Admin credentials may set everything.
    let admin = s.remote(Some(&s.admin));
    let mut body = container(
        "root",
        json!({"hostNetwork": true, "securityContext": {"privileged": true}}),
    );
    body["metadata"]["namespace"] = json!("team");
    assert_eq!(
        post(&admin, &containers("team"), &body)
            .await
            .status
            .as_u16(),
        201
    );

    // States: only from under the allowed dir, with symlinks and `..` resolved first.
    let states = "/apis/tend.dev/v1/namespaces/team/states";
    let r = post(&team, states, &state("etc", "/etc")).await;
    assert_forbidden(&r, "spec.source.directory");
    let link = allowed.path().join("to-etc");
    std::os::unix::fs::symlink("/etc", &link).unwrap();
    let dotdot = format!("{}/../../etc", tree.display());
    for (name, dir) in [("link", link.display().to_string()), ("dotdot", dotdot)] {
        assert_forbidden(
            &post(&team, states, &state(name, &dir)).await,
            "spec.source.directory",
        );
        assert_eq!(
            get(&team, &format!("{states}/{name}"))
                .await
                .status
                .as_u16(),
            404
        );
    }
    let r = post(&team, states, &state("mine", &tree.display().to_string())).await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.json());
    let r = post(&s.local(), states, &state("etc", "/etc")).await;
    assert_eq!(r.status.as_u16(), 201, "the socket is admin: {}", r.json());
    // Image content is shared by every namespace: a namespace token may not prune it, not
    // even as a dry run.
    let prune = "/apis/tend.dev/v1/images/prune";
    for body in [json!({}), json!({"dryRun": false})] {
        let r = post(&team, prune, &body).await;
        let v = r.json();
        assert_eq!(r.status.as_u16(), 403, "{v}");
        assert_eq!(v["reason"], "Forbidden");
        assert!(
            v["message"].as_str().unwrap().contains("images/prune"),
            "{v}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_is_private_even_in_an_existing_open_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let store = std::sync::Arc::new(
        tend_schema::store::SqliteStore::open(dir.path().join("tend.db"), Default::default())
            .await
            .unwrap(),
    );
    let api = tend::api::bind(tend::api::ApiConfig {
        paths: tend::daemon::lifecycle::api_paths(&tend::daemon::Layout::new(dir.path())),
        listen: None,
        tls_sans: vec![],
        store,
        ready: Default::default(),
        metrics: None,
        limits: Default::default(),
        runtimes: None,
        policy: Default::default(),
        images: None,
    })
    .await
    .unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(dir.path()), 0o700);
    assert_eq!(mode(&dir.path().join("tend.sock")), 0o600);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".sock-"))
        .collect();
    assert!(leftovers.is_empty());
    drop(api);
}
