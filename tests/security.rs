//! Security checks against a real `tend serve`: names and paths from specs never reach outside
//! the state dir or a shell; tokens never reach the log; the TCP listener wants a token; a
//! namespace-limited token cannot read or change another namespace.

mod common;

use common::daemon::Daemon;
use std::time::{Duration, Instant};
use tend::api::client::Client;
use tend_schema::{Kind, ObjectKey};

fn apply_fails(d: &Daemon, yaml: &str) -> String {
    let f = d.path().join("bad.yaml");
    std::fs::write(&f, yaml).unwrap();
    let out = d.tend(&["apply", "-f", f.to_str().unwrap()]);
    assert!(!out.status.success(), "accepted:\n{yaml}");
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn names_and_paths_from_specs_stay_inside_and_never_reach_a_shell() {
    if !common::privileged("names_and_paths_from_specs_stay_inside_and_never_reach_a_shell") {
        return;
    }
    let mut d = Daemon::start_new("tend-sec");
    let canary = d.path().join("canary");
    for name in [
        "../escape",
        "/etc/passwd",
        "a/../../b",
        "..",
        "x;touch canary",
        "$(touch canary)",
        "`touch canary`",
        "UPPER",
        "a b",
        &"x".repeat(64),
    ] {
        for kind in ["State", "Sandbox", "Network", "Container"] {
            let err = apply_fails(
                &d,
                &format!(
                    "apiVersion: tend.dev/v1\nkind: {kind}\nmetadata: {{name: {name:?}}}\nspec: {{}}\n"
                ),
            );
            assert!(err.contains("metadata.name"), "{kind} {name:?}: {err}");
        }
        // References by name are checked the same way.
        let err = apply_fails(
            &d,
            &format!("apiVersion: tend.dev/v1\nkind: Sandbox\nmetadata: {{name: ok}}\nspec: {{state: {name:?}}}\n"),
        );
        assert!(err.contains("spec.state"), "{name:?}: {err}");
        let err = apply_fails(
            &d,
            &format!("apiVersion: tend.dev/v1\nkind: Container\nmetadata: {{name: ok}}\nspec: {{command: [/bin/true], rootfs: {{sandbox: {name:?}}}}}\n"),
        );
        assert!(err.contains("spec.rootfs"), "{name:?}: {err}");
    }
    // Namespaces too.
    let err = apply_fails(
        &d,
        "apiVersion: tend.dev/v1\nkind: Network\nmetadata: {name: ok, namespace: ../x}\nspec: {subnet: 10.1.2.0/24}\n",
    );
    assert!(err.contains("namespace"), "{err}");
    // Sources must be absolute, and never inside the state dir (tend's own trees, the database).
    let src = tempfile::tempdir().unwrap();
    let rel = apply_fails(
        &d,
        "apiVersion: tend.dev/v1\nkind: State\nmetadata: {name: rel}\nspec: {source: {directory: ../../etc}}\n",
    );
    assert!(rel.contains("spec.source"), "{rel}");
    let inside = [
        d.path().display().to_string(),
        d.path().join("snapshots").display().to_string(),
        format!("{}/snapshots/..", d.path().display()),
        // A symlink outside pointing in.
        {
            let link = src.path().join("sneaky");
            std::os::unix::fs::symlink(d.path(), &link).unwrap();
            link.display().to_string()
        },
    ];
    for (i, p) in inside.iter().enumerate() {
        d.apply(&format!(
            "apiVersion: tend.dev/v1\nkind: State\nmetadata: {{name: in{i}}}\nspec: {{source: {{directory: {p:?}}}}}\n"
        ));
    }
    let t0 = Instant::now();
    loop {
        let objs = d.objects();
        let states: Vec<_> = objs.iter().filter(|o| o.kind == "State").collect();
        let refused = states
            .iter()
            .filter(|o| common::daemon::ready_reason(o).contains("BadSource"))
            .count();
        if refused == inside.len() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "sources inside the state dir not all refused: {:?}",
            states
                .iter()
                .map(|o| (o.metadata.name.clone(), common::daemon::ready_reason(o)))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!canary.exists(), "a name reached a shell");
    assert!(!src.path().join("canary").exists());
}

#[test]
fn tokens_are_never_logged_tcp_needs_one_and_namespaces_are_enforced() {
    if !common::privileged("tokens_are_never_logged_tcp_needs_one_and_namespaces_are_enforced") {
        return;
    }
    let mut d = Daemon::unstarted("tend-sec", &["--listen", "127.0.0.1:0"]);
    d.env.push(("TEND_LOG".into(), "debug".into()));
    d.spawn();
    let engine: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path().join("engine.json")).unwrap()).unwrap();
    let addr: std::net::SocketAddr = engine["listen"].as_str().unwrap().parse().unwrap();
    let ca = std::fs::read_to_string(tend::daemon::Layout::new(d.path()).ca_cert()).unwrap();
    let token = |args: &[&str]| -> String {
        let mut a = vec!["token", "create"];
        a.extend(args);
        let out = d.tend(&a);
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let team_a = token(&["-n", "team-a"]);
    let full = token(&[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let net = |ns: &str, name: &str| {
        serde_json::from_value::<tend_schema::AnyObject>(serde_json::json!({
            "apiVersion": "tend.dev/v1", "kind": "Network",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"subnet": "10.254.9.0/24"}
        }))
        .unwrap()
    };
    rt.block_on(async {
        // No token, or a wrong one: 401 on every path, reads included.
        for tok in [None, Some("not-a-token".to_string())] {
            let c = Client::tcp(addr, &ca, tok);
            let r = c
                .raw(
                    hyper::Method::GET,
                    "/apis/tend.dev/v1/networks",
                    None,
                    vec![],
                )
                .await
                .unwrap();
            assert_eq!(r.status.as_u16(), 401);
        }
        // The full token works; the team-a token only in team-a.
        let admin = Client::tcp(addr, &ca, Some(full.clone()));
        admin.create(&net("team-b", "secret-net")).await.unwrap();
        let a = Client::tcp(addr, &ca, Some(team_a.clone()));
        a.create(&net("team-a", "mine")).await.unwrap();
        let key_b = ObjectKey::new(Kind::Network, "team-b", "secret-net");
        assert!(a.get(&key_b).await.is_err(), "read across namespaces");
        assert!(a.create(&net("team-b", "intruder")).await.is_err());
        for (m, path) in [
            (
                hyper::Method::DELETE,
                "/apis/tend.dev/v1/namespaces/team-b/networks/secret-net",
            ),
            (
                hyper::Method::GET,
                "/apis/tend.dev/v1/namespaces/team-b/networks",
            ),
            (
                hyper::Method::GET,
                "/apis/tend.dev/v1/namespaces/team-b/networks/secret-net/status",
            ),
        ] {
            let r = a.raw(m.clone(), path, None, vec![]).await.unwrap();
            assert_eq!(r.status.as_u16(), 403, "{m} {path}");
        }
        let r = a
            .raw(
                hyper::Method::PATCH,
                "/apis/tend.dev/v1/namespaces/team-b/networks/secret-net",
                Some("application/merge-patch+json"),
                br#"{"spec":{"mtu":1400}}"#.to_vec(),
            )
            .await
            .unwrap();
        assert_eq!(r.status.as_u16(), 403);
        // Listing across namespaces shows only team-a's objects (or is refused).
        let r = a
            .raw(
                hyper::Method::GET,
                "/apis/tend.dev/v1/networks",
                None,
                vec![],
            )
            .await
            .unwrap();
        let body = String::from_utf8_lossy(&r.body).to_string();
        assert!(
            !body.contains("secret-net"),
            "cross-namespace list leaked: {body}"
        );
        assert!(admin.get(&key_b).await.is_ok());
    });
    assert!(d.objects().iter().all(|o| o.metadata.name != "intruder"));
    // Nothing anywhere in the state dir's log holds a secret.
    let log = d.log();
    assert!(
        log.contains("DEBUG"),
        "the daemon logged at debug, where a leak is likeliest"
    );
    for secret in [&team_a, &full] {
        assert!(!log.contains(secret.as_str()), "a token is in serve.log");
    }
}
