//! Black-box HTTP tests of the API: every verb, its errors, watch, CAS, auth and limits.

mod api;

use api::*;
use hyper::Method;
use serde_json::{json, Value};
use tend::api::Limits;
use tend_schema::Kind;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_and_error_statuses() {
    let s = Server::default().await;
    let c = s.local();
    let r = post(
        &c,
        &coll("default"),
        &network("default", "n1", "10.1.0.0/24"),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let created = r.json();
    assert_eq!(created["metadata"]["generation"], 1);
    let r = post(
        &c,
        &coll("default"),
        &network("default", "n1", "10.1.0.0/24"),
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.json()["reason"].clone()),
        (409, json!("AlreadyExists"))
    );
    assert_eq!(r.json()["kind"], "Status");
    // Namespace from the path; a different one in the body is refused.
    let r = post(&c, &coll("other"), &network("default", "n2", "10.2.0.0/24")).await;
    assert_eq!(r.status, 400);
    let r = get(&c, &one("default", "nope")).await;
    assert_eq!(
        (r.status.as_u16(), r.json()["reason"].clone()),
        (404, json!("NotFound"))
    );
    assert_eq!(
        get(&c, "/apis/tend.dev/v1/namespaces/default/pods")
            .await
            .status,
        404
    );
    // 422 names the field.
    let mut bad = network("default", "n3", "10.3.0.0/24");
    bad["spec"] = json!({"subnett": "x"});
    let r = post(&c, &coll("default"), &bad).await;
    assert_eq!(
        (r.status.as_u16(), r.json()["reason"].clone()),
        (422, json!("Invalid"))
    );
    assert!(
        r.json()["details"]["causes"][0]["field"]
            .as_str()
            .unwrap()
            .contains("spec"),
        "{}",
        r.json()
    );
    let mut bad = network("default", "Bad_Name", "10.3.0.0/24");
    bad["metadata"]["name"] = json!("Bad_Name");
    let r = post(&c, &coll("default"), &bad).await;
    assert_eq!(r.json()["details"]["causes"][0]["field"], "metadata.name");
    // Malformed body, wrong media type, no body.
    let r = c
        .raw(
            Method::POST,
            &coll("default"),
            Some("application/json"),
            b"{not json".to_vec(),
        )
        .await
        .unwrap();
    assert_eq!(
        (r.status.as_u16(), r.json()["reason"].clone()),
        (400, json!("BadRequest"))
    );
    let r = c
        .raw(
            Method::POST,
            &coll("default"),
            Some("text/plain"),
            b"x".to_vec(),
        )
        .await
        .unwrap();
    assert_eq!(
        (r.status.as_u16(), r.json()["reason"].clone()),
        (415, json!("UnsupportedMediaType"))
    );
    let r = send(
        &c,
        Method::POST,
        &one("default", "n1"),
        Some("application/json"),
        &json!({}),
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.json()["reason"].clone()),
        (405, json!("MethodNotAllowed"))
    );
    // List: kind, resourceVersion, selectors.
    post(
        &c,
        &coll("default"),
        &network("default", "n2", "10.2.0.0/24"),
    )
    .await;
    let l = get(&c, &format!("{}?labelSelector=app%3Dn2", coll("default")))
        .await
        .json();
    assert_eq!(l["kind"], "NetworkList");
    assert_eq!(l["items"].as_array().unwrap().len(), 1);
    assert!(
        l["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 2
    );
    let l = get(
        &c,
        "/apis/tend.dev/v1/networks?fieldSelector=metadata.name%3Dn1",
    )
    .await
    .json();
    assert_eq!(l["items"][0]["metadata"]["name"], "n1");
    // PUT: stale resourceVersion is 409; current one succeeds and bumps generation.
    let mut upd = created.clone();
    upd["spec"]["mtu"] = json!(9000);
    upd["metadata"]["resourceVersion"] = json!("999");
    let r = send(
        &c,
        Method::PUT,
        &one("default", "n1"),
        Some("application/json"),
        &upd,
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.json()["reason"].clone()),
        (409, json!("Conflict"))
    );
    upd["metadata"]["resourceVersion"] = created["metadata"]["resourceVersion"].clone();
    let r = send(
        &c,
        Method::PUT,
        &one("default", "n1"),
        Some("application/json"),
        &upd,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(r.json()["metadata"]["generation"], 2);
    // Status subresource: generation stays.
    let st = json!({"metadata": {"name": "n1"}, "apiVersion": "tend.dev/v1", "kind": "Network", "status": {"phase": "Ready"}});
    let r = send(
        &c,
        Method::PUT,
        &format!("{}/status", one("default", "n1")),
        Some("application/json"),
        &st,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(
        (
            r.json()["status"]["phase"].clone(),
            r.json()["metadata"]["generation"].clone()
        ),
        (json!("Ready"), json!(2))
    );
    let r = send(
        &c,
        Method::PATCH,
        &format!("{}/status", one("default", "n1")),
        Some("application/merge-patch+json"),
        &json!({"status": {"leases": 3}}),
    )
    .await;
    assert_eq!(r.json()["status"], json!({"phase": "Ready", "leases": 3}));
    // Merge patch and JSON patch.
    let r = send(
        &c,
        Method::PATCH,
        &one("default", "n1"),
        Some("application/merge-patch+json"),
        &json!({"metadata": {"labels": {"tier": "db"}}}),
    )
    .await;
    assert_eq!(r.json()["metadata"]["labels"]["tier"], "db");
    let jp = json!([{"op": "replace", "path": "/spec/mtu", "value": 1400}, {"op": "remove", "path": "/metadata/labels/tier"}]);
    let r = send(
        &c,
        Method::PATCH,
        &one("default", "n1"),
        Some("application/json-patch+json"),
        &jp,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(
        (
            r.json()["spec"]["mtu"].clone(),
            r.json()["metadata"]["labels"].get("tier").cloned()
        ),
        (json!(1400), None)
    );
    let jp = json!([{"op": "test", "path": "/spec/mtu", "value": 1}]);
    let r = send(
        &c,
        Method::PATCH,
        &one("default", "n1"),
        Some("application/json-patch+json"),
        &jp,
    )
    .await;
    assert_eq!(r.status, 422);
    let r = send(
        &c,
        Method::PATCH,
        &one("default", "n1"),
        Some("application/strategic-merge-patch+json"),
        &json!({}),
    )
    .await;
    assert_eq!(r.status, 415);
    // DELETE: a failed precondition is 409; then the row goes and a Status comes back.
    let r = send(
        &c,
        Method::DELETE,
        &one("default", "n1"),
        Some("application/json"),
        &json!({"preconditions": {"uid": "nope"}}),
    )
    .await;
    assert_eq!(r.status, 409);
    let r = send(
        &c,
        Method::DELETE,
        &one("default", "n1"),
        Some("application/json"),
        &json!({"propagationPolicy": "Background"}),
    )
    .await;
    assert_eq!(
        (
            r.status.as_u16(),
            r.json()["kind"].clone(),
            r.json()["status"].clone()
        ),
        (200, json!("Status"), json!("Success"))
    );
    assert_eq!(get(&c, &one("default", "n1")).await.status, 404);
    // With a finalizer the object comes back Terminating.
    let mut f = network("default", "fin", "10.9.0.0/24");
    f["metadata"]["finalizers"] = json!(["test/hold"]);
    post(&c, &coll("default"), &f).await;
    let r = send(
        &c,
        Method::DELETE,
        &one("default", "fin"),
        None,
        &Value::Null,
    )
    .await;
    assert!(
        r.json()["metadata"]["deletionTimestamp"].is_string(),
        "{}",
        r.json()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_writes_nothing() {
    let s = Server::default().await;
    let c = s.local();
    let r = post(
        &c,
        &format!("{}?dryRun=All", coll("default")),
        &network("default", "d", "10.1.0.0/24"),
    )
    .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.json()["metadata"]["name"], "d");
    assert_eq!(get(&c, &one("default", "d")).await.status, 404);
    post(
        &c,
        &coll("default"),
        &network("default", "d", "10.1.0.0/24"),
    )
    .await;
    let before = get(&c, &one("default", "d")).await.json();
    let r = send(
        &c,
        Method::PATCH,
        &format!("{}?dryRun=All", one("default", "d")),
        Some("application/merge-patch+json"),
        &json!({"spec": {"mtu": 1000}}),
    )
    .await;
    assert_eq!(r.json()["spec"]["mtu"], 1000);
    let r = send(
        &c,
        Method::PATCH,
        &format!("{}?dryRun=All&fieldManager=x", one("default", "d")),
        Some("application/apply-patch+yaml"),
        &network("default", "d", "10.7.0.0/24"),
    )
    .await;
    assert_eq!(r.json()["spec"]["subnet"], "10.7.0.0/24", "{}", r.json());
    let r = send(
        &c,
        Method::DELETE,
        &format!("{}?dryRun=All", one("default", "d")),
        None,
        &Value::Null,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(get(&c, &one("default", "d")).await.json(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_owns_fields() {
    let s = Server::default().await;
    let c = s.local();
    let path = format!("{}?fieldManager=alice", one("default", "a"));
    let body = "apiVersion: tend.dev/v1\nkind: Network\nmetadata: {name: a}\nspec: {subnet: 10.1.0.0/24, mtu: 1400}\n";
    let r = c
        .raw(
            Method::PATCH,
            &path,
            Some("application/apply-patch+yaml"),
            body.into(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.json());
    assert_eq!(r.json()["metadata"]["managedFields"][0]["manager"], "alice");
    // An unknown field is refused on an existing object as on a new one, naming it.
    let typo = "apiVersion: tend.dev/v1\nkind: Network\nmetadata: {name: a, mtu: 9000}\nspec: {subnet: 10.1.0.0/24}\n";
    let r = c
        .raw(
            Method::PATCH,
            &path,
            Some("application/apply-patch+yaml"),
            typo.into(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 422, "{}", r.json());
    assert!(
        r.json()["message"].as_str().unwrap().contains("mtu"),
        "{}",
        r.json()
    );
    let r = c
        .raw(
            Method::PATCH,
            &path,
            Some("application/apply-patch+yaml"),
            body.into(),
        )
        .await
        .unwrap();
    assert_eq!(
        (
            r.status.as_u16(),
            r.json()["metadata"]["resourceVersion"].clone()
        ),
        (200, json!("1"))
    );
    let bob = "apiVersion: tend.dev/v1\nkind: Network\nmetadata: {name: a}\nspec: {subnet: 10.2.0.0/24}\n";
    let bob_path = format!("{}?fieldManager=bob", one("default", "a"));
    let r = c
        .raw(
            Method::PATCH,
            &bob_path,
            Some("application/apply-patch+yaml"),
            bob.into(),
        )
        .await
        .unwrap();
    assert_eq!(
        (r.status.as_u16(), r.json()["reason"].clone()),
        (409, json!("Conflict"))
    );
    assert_eq!(r.json()["details"]["causes"][0]["field"], ".spec.subnet");
    let r = c
        .raw(
            Method::PATCH,
            &format!("{bob_path}&force=true"),
            Some("application/apply-patch+yaml"),
            bob.into(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        (
            r.json()["spec"]["subnet"].clone(),
            r.json()["spec"]["mtu"].clone()
        ),
        (json!("10.2.0.0/24"), json!(1400))
    );
    // alice drops mtu: it goes, since nobody else owns it.
    let alice2 =
        "apiVersion: tend.dev/v1\nkind: Network\nmetadata: {name: a, labels: {x: y}}\nspec: {}\n";
    let r = c
        .raw(
            Method::PATCH,
            &path,
            Some("application/apply-patch+yaml"),
            alice2.into(),
        )
        .await
        .unwrap();
    assert_eq!(
        r.json()["spec"],
        json!({"subnet": "10.2.0.0/24"}),
        "{}",
        r.json()
    );
    let r = c
        .raw(
            Method::PATCH,
            &one("default", "a"),
            Some("application/apply-patch+yaml"),
            alice2.into(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400, "fieldManager is required");
    let r = c
        .raw(
            Method::PATCH,
            &path,
            Some("application/apply-patch+yaml"),
            b"spec: [".to_vec(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_initial_resume_and_bookmarks() {
    let limits = Limits {
        bookmark_interval: std::time::Duration::from_millis(200),
        ..Default::default()
    };
    let s = Server::start(100_000, limits).await;
    let c = s.local();
    post(
        &c,
        &coll("default"),
        &network("default", "a", "10.1.0.0/24"),
    )
    .await;
    let rv: u64 = get(&c, &coll("default")).await.json()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    post(
        &c,
        &coll("default"),
        &network("default", "b", "10.2.0.0/24"),
    )
    .await;
    send(
        &c,
        Method::PATCH,
        &one("default", "a"),
        Some("application/merge-patch+json"),
        &json!({"spec": {"mtu": 1000}}),
    )
    .await;
    // From the list's revision: only what happened after.
    let lines = watch_lines(&c, Kind::Network, Some("default"), Some(rv), 2).await;
    let seen: Vec<(String, String)> = lines
        .iter()
        .map(|l| {
            (
                l["type"].as_str().unwrap().into(),
                l["object"]["metadata"]["name"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("ADDED".into(), "b".into()),
            ("MODIFIED".into(), "a".into())
        ]
    );
    // No revision: current objects first as ADDED, then live changes.
    let c2 = s.local();
    let task = tokio::spawn(async move { watch_lines(&c2, Kind::Network, None, None, 3).await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    post(
        &c,
        &coll("default"),
        &network("default", "c", "10.3.0.0/24"),
    )
    .await;
    let lines = task.await.unwrap();
    let types: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["ADDED", "ADDED", "ADDED"]);
    assert_eq!(lines[2]["object"]["metadata"]["name"], "c");
    // Bookmarks arrive with a resourceVersion.
    use futures::StreamExt;
    let mut w = c
        .watch(Kind::Network, Some("default"), Some(rv))
        .await
        .unwrap();
    let mut bookmark = None;
    for _ in 0..5 {
        let l = tokio::time::timeout(std::time::Duration::from_secs(3), w.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if l.type_ == "BOOKMARK" {
            bookmark = Some(l.object);
            break;
        }
    }
    assert!(
        bookmark.unwrap()["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > rv
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_compacted_revision_is_gone() {
    let s = Server::start(10, Limits::default()).await;
    let objs: Vec<_> = (0..1100)
        .map(|i| {
            tend_schema::decode::decode_value(network("default", &format!("n{i}"), "10.1.0.0/24"))
                .unwrap()
        })
        .collect();
    use tend_schema::store::Store;
    s.store.apply(objs, false).await.unwrap();
    assert!(s.store.compacted().await.unwrap() > 5);
    let lines = watch_lines(&s.local(), Kind::Network, Some("default"), Some(2), 1).await;
    assert_eq!(lines[0]["type"], "ERROR");
    assert_eq!(
        (
            lines[0]["object"]["code"].clone(),
            lines[0]["object"]["reason"].clone()
        ),
        (json!(410), json!("Expired"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_one_wins_the_rest_conflict() {
    let s = Server::default().await;
    let c = s.local();
    let obj = post(
        &c,
        &coll("default"),
        &network("default", "cas", "10.1.0.0/24"),
    )
    .await
    .json();
    let sock = s.dir.path().join("tend.sock");
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (mut o, sock) = (obj.clone(), sock.clone());
            tokio::spawn(async move {
                o["metadata"]["labels"]["writer"] = json!(i.to_string());
                let c = tend::api::client::Client::unix(sock);
                send(
                    &c,
                    Method::PUT,
                    &one("default", "cas"),
                    Some("application/json"),
                    &o,
                )
                .await
                .status
                .as_u16()
            })
        })
        .collect();
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 1, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 409).count(), 19, "{codes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_authenticate_and_limit_namespaces() {
    let s = Server::default().await;
    let local = s.local();
    post(&local, &coll("a"), &network("a", "na", "10.1.0.0/24")).await;
    post(&local, &coll("b"), &network("b", "nb", "10.2.0.0/24")).await;
    // No or bad token over TCP: 401; health stays open.
    assert_eq!(get(&s.remote(None), &coll("a")).await.status, 401);
    assert_eq!(
        get(&s.remote(Some("tend_wrong")), &coll("a")).await.status,
        401
    );
    assert_eq!(get(&s.remote(None), "/healthz").await.status, 200);
    assert_eq!(get(&s.remote(Some(&s.admin)), &coll("b")).await.status, 200);
    // A token limited to namespace a, created while the server runs.
    let ta = s.token(&["a"], false);
    let ca = s.remote(Some(&ta));
    assert_eq!(get(&ca, &one("a", "na")).await.status, 200);
    assert_eq!(get(&ca, &one("b", "nb")).await.status, 403);
    assert_eq!(
        post(&ca, &coll("b"), &network("b", "x", "10.3.0.0/24"))
            .await
            .status,
        403
    );
    assert_eq!(
        post(&ca, &coll("a"), &network("a", "x", "10.3.0.0/24"))
            .await
            .status,
        201
    );
    let all = get(&ca, "/apis/tend.dev/v1/networks").await.json();
    let names: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["na", "x"]);
    // Events across namespaces: `limit` counts the events the token may see, however many
    // newer ones another namespace has.
    use tend_schema::store::{EventType, NewEvent, Store};
    let event = |ns: &str, name: &str, reason: &str| NewEvent {
        object: tend_schema::ObjectKey::new(Kind::Network, ns, name),
        uid: format!("uid-{ns}-{name}"),
        type_: EventType::Normal,
        reason: reason.into(),
        message: String::new(),
    };
    s.store.record_event(event("a", "na", "InA")).await.unwrap();
    for i in 0..5 {
        s.store
            .record_event(event("b", "nb", &format!("InB{i}")))
            .await
            .unwrap();
    }
    let ev = get(&ca, "/apis/tend.dev/v1/events?limit=1").await.json();
    let reasons: Vec<&str> = ev["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["InA"], "{ev}");
    assert_eq!(
        get(
            &ca,
            "/apis/tend.dev/v1/networks?fieldSelector=metadata.namespace%3Db"
        )
        .await
        .status,
        403
    );
    // Its cluster-wide watch sees only namespace a.
    let ca2 = s.remote(Some(&ta));
    let task = tokio::spawn(async move { watch_lines(&ca2, Kind::Network, None, None, 3).await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    post(&local, &coll("b"), &network("b", "nb2", "10.4.0.0/24")).await;
    post(&local, &coll("a"), &network("a", "na2", "10.5.0.0/24")).await;
    let lines = task.await.unwrap();
    let names: Vec<&str> = lines
        .iter()
        .map(|l| l["object"]["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["na", "x", "na2"]);
    // Read-only: reads pass, writes are 403.
    let ro = s.remote(Some(&s.token(&[], true)));
    assert_eq!(get(&ro, &one("b", "nb")).await.status, 200);
    assert_eq!(
        send(&ro, Method::DELETE, &one("b", "nb"), None, &Value::Null)
            .await
            .status,
        403
    );
    // Revoked: 401 at once.
    let path = s.dir.path().join("tokens.json");
    let mut f = tend::api::TokenFile::load(&path).unwrap();
    let id = f.tokens.iter().find(|t| t.secret == ta).unwrap().id.clone();
    f.revoke(&id).unwrap();
    f.save(&path).unwrap();
    assert_eq!(get(&s.remote(Some(&ta)), &one("a", "na")).await.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_limits() {
    let limits = Limits {
        max_body_bytes: 64 << 10,
        watches_per_token: 2,
        ..Default::default()
    };
    let s = Server::start(100_000, limits).await;
    let c = s.local();
    assert_eq!(get(&c, "/healthz").await.status, 200);
    assert_eq!(get(&c, "/readyz").await.status, 503);
    s.ready.store(true, std::sync::atomic::Ordering::Release);
    assert_eq!(get(&c, "/readyz").await.status, 200);
    let mut big = network("default", "big", "10.1.0.0/24");
    big["metadata"]["annotations"] = json!({"x": "y".repeat(100 << 10)});
    let r = post(&c, &coll("default"), &big).await;
    assert_eq!(r.status, 413, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["kind"], "Status");
    let _w1 = c.watch(Kind::Network, None, None).await.unwrap();
    let _w2 = c.watch(Kind::Network, None, None).await.unwrap();
    match c.watch(Kind::Network, None, None).await {
        Err(tend::api::client::ClientError::Api { code, .. }) => assert_eq!(code, 429),
        other => panic!("third watch: {:?}", other.map(|_| ())),
    }
    let m = String::from_utf8(get(&c, "/metrics").await.body.to_vec()).unwrap();
    assert!(
        m.contains("tend_api_requests_total{verb=\"POST\",code=\"413\"} 1"),
        "{m}"
    );
    assert!(m.contains("tend_api_request_duration_seconds_bucket"));
    assert!(m.contains("tend_controller_test 1"));
    for p in [
        "/version",
        "/api",
        "/apis",
        "/apis/tend.dev/v1",
        "/openapi/v3",
        "/openapi/v3/apis/tend.dev/v1",
    ] {
        assert_eq!(get(&c, p).await.status, 200, "{p}");
    }
    let rl = get(&c, "/apis/tend.dev/v1").await.json();
    let names: Vec<&str> = rl["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"containers") && names.contains(&"containers/status"));
}

/// Random bytes and mutated valid bodies into POST/PUT/PATCH: never a 5xx, never a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decoders_fuzz_never_5xx() {
    use rand::{Rng, SeedableRng};
    let s = Server::default().await;
    let c = s.local();
    post(
        &c,
        &coll("default"),
        &network("default", "f", "10.1.0.0/24"),
    )
    .await;
    let seed = rand::rng().random::<u64>();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let valid = serde_json::to_vec(&network("default", "f", "10.1.0.0/24")).unwrap();
    let cts = [
        "application/json",
        "application/yaml",
        "application/merge-patch+json",
        "application/json-patch+json",
        "application/apply-patch+yaml",
        "text/plain",
    ];
    for i in 0..400 {
        let body: Vec<u8> = match i % 3 {
            0 => (0..rng.random_range(0..200))
                .map(|_| rng.random())
                .collect(),
            1 => {
                let mut b = valid.clone();
                for _ in 0..rng.random_range(1..6) {
                    let at = rng.random_range(0..b.len());
                    match rng.random_range(0..3) {
                        0 => b[at] = rng.random(),
                        1 => {
                            b.remove(at);
                        }
                        _ => {
                            let junk = b"{}[]\":,0aZ-\\";
                            b.insert(at, junk[rng.random_range(0..junk.len())])
                        }
                    }
                }
                b
            }
            _ => {
                let mut v = network("default", "f", "10.1.0.0/24");
                let junk = [
                    json!(null),
                    json!(1),
                    json!("x"),
                    json!([]),
                    json!({}),
                    json!(-1e300),
                    json!("a".repeat(300)),
                ];
                let ptrs = [
                    "spec",
                    "metadata",
                    "kind",
                    "apiVersion",
                    "metadata/name",
                    "metadata/labels",
                    "spec/subnet",
                    "spec/mtu",
                    "status",
                ];
                let p = ptrs[rng.random_range(0..ptrs.len())];
                let (parent, last) = p.rsplit_once('/').unwrap_or(("", p));
                let target = if parent.is_empty() {
                    Some(&mut v)
                } else {
                    v.pointer_mut(&format!("/{parent}"))
                };
                if let Some(Value::Object(m)) = target {
                    m.insert(
                        last.to_string(),
                        junk[rng.random_range(0..junk.len())].clone(),
                    );
                }
                serde_json::to_vec(&v).unwrap()
            }
        };
        let (m, path) = match rng.random_range(0..4) {
            0 => (Method::POST, coll("default")),
            1 => (Method::PUT, one("default", "f")),
            2 => (
                Method::PATCH,
                format!("{}?fieldManager=fz", one("default", "f")),
            ),
            _ => (Method::PUT, format!("{}/status", one("default", "f"))),
        };
        let ct = cts[rng.random_range(0..cts.len())];
        let r = c
            .raw(m.clone(), &path, Some(ct), body.clone())
            .await
            .unwrap();
        assert!(
            r.status.as_u16() < 500,
            "seed {seed}: {m} {path} {ct} {:?} -> {} {}",
            String::from_utf8_lossy(&body),
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
}
