//! Store semantics against a real SQLite file: CRUD, CAS, generation, finalizers, apply, events.

use serde_json::json;
use tend_schema::store::*;
use tend_schema::{AnyObject, Kind, ObjectKey};

async fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("tend.db"), OpenOptions::default())
        .await
        .unwrap();
    (dir, store)
}

fn net(name: &str, subnet: &str) -> AnyObject {
    AnyObject::new(Kind::Network, "default", name, json!({"subnet": subnet}))
}

fn key(name: &str) -> ObjectKey {
    ObjectKey::new(Kind::Network, "default", name)
}

#[tokio::test]
async fn create_get_and_server_fields() {
    let (_d, s) = open().await;
    let created = s.create(net("a", "10.1.0.0/24")).await.unwrap();
    assert_eq!(created.metadata.generation, 1);
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(created.metadata.resource_version.as_deref(), Some("1"));
    let got = s.get(&key("a")).await.unwrap();
    assert_eq!(got, created);
    assert!(matches!(
        s.create(net("a", "10.1.0.0/24")).await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert!(matches!(
        s.get(&key("b")).await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn update_is_cas_and_bumps_generation_only_for_spec() {
    let (_d, s) = open().await;
    let v1 = s.create(net("a", "10.1.0.0/24")).await.unwrap();
    let mut labelled = v1.clone();
    labelled.metadata.labels.insert("app".into(), "x".into());
    let v2 = s.update(labelled).await.unwrap();
    assert_eq!(v2.metadata.generation, 1, "labels are not spec");
    let mut stale = v1.clone();
    stale.spec = json!({"subnet": "10.2.0.0/24"});
    match s.update(stale).await {
        Err(StoreError::Conflict { given, current, .. }) => {
            assert_eq!(given, "1");
            assert_eq!(current, 2);
        }
        other => panic!("expected conflict, got {other:?}"),
    }
    let mut fresh = v2.clone();
    fresh.spec = json!({"subnet": "10.2.0.0/24"});
    let v3 = s.update(fresh).await.unwrap();
    assert_eq!(v3.metadata.generation, 2);
    // A status write never moves generation and is CAS too.
    let st = s
        .update_status(&key("a"), 3, json!({"phase": "Ready"}))
        .await
        .unwrap();
    assert_eq!(st.metadata.generation, 2);
    assert_eq!(st.status["phase"], "Ready");
    assert!(matches!(
        s.update_status(&key("a"), 3, json!({})).await,
        Err(StoreError::Conflict { .. })
    ));
    // An identical status writes nothing.
    let rev = s.revision().await.unwrap();
    s.update_status(&key("a"), 4, json!({"phase": "Ready"}))
        .await
        .unwrap();
    assert_eq!(s.revision().await.unwrap(), rev);
}

#[tokio::test]
async fn invalid_updates_change_nothing() {
    let (_d, s) = open().await;
    let v1 = s.create(net("a", "10.1.0.0/24")).await.unwrap();
    let mut bad = v1.clone();
    bad.spec = json!({"subnet": "not-a-subnet"});
    match s.update(bad).await {
        Err(StoreError::Invalid(e)) => assert_eq!(e.0[0].field, "spec.subnet"),
        other => panic!("{other:?}"),
    }
    let err = s
        .merge_patch(&key("a"), json!({"spec": {"mtu": 5}}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("spec.mtu"), "{err}");
    assert_eq!(s.get(&key("a")).await.unwrap(), v1);
}

#[tokio::test]
async fn merge_patch_updates_spec_and_labels() {
    let (_d, s) = open().await;
    s.create(net("a", "10.1.0.0/24")).await.unwrap();
    let p = s
        .merge_patch(&key("a"), json!({"metadata": {"labels": {"tier": "db"}}, "spec": {"mtu": 9000}, "status": {"phase": "x"}}))
        .await
        .unwrap();
    assert_eq!(p.spec["mtu"], 9000);
    assert_eq!(p.metadata.labels["tier"], "db");
    assert_eq!(p.metadata.generation, 2);
    assert!(
        p.status.is_null(),
        "status is not patchable through the main resource"
    );
    let err = s
        .merge_patch(&key("a"), json!({"metadata": {"resourceVersion": "1"}}))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }));
}

#[tokio::test]
async fn delete_waits_for_finalizers() {
    let (_d, s) = open().await;
    s.create(net("a", "10.1.0.0/24")).await.unwrap();
    s.add_finalizer(&key("a"), "tend.dev/network")
        .await
        .unwrap();
    match s
        .delete(&key("a"), &DeleteOptions::default())
        .await
        .unwrap()
    {
        Deleted::Terminating(o) => assert!(o.metadata.deletion_timestamp.is_some()),
        Deleted::Gone(_) => panic!("finalizer must hold the row"),
    }
    let err = s.add_finalizer(&key("a"), "another").await.unwrap_err();
    assert!(matches!(err, StoreError::Precondition { .. }));
    assert!(matches!(
        s.remove_finalizer(&key("a"), "tend.dev/network")
            .await
            .unwrap(),
        Deleted::Gone(_)
    ));
    assert!(matches!(
        s.get(&key("a")).await,
        Err(StoreError::NotFound(_))
    ));
    // Without finalizers the row goes at once; a uid precondition guards against a re-created object.
    s.create(net("b", "10.1.0.0/24")).await.unwrap();
    let opts = DeleteOptions {
        uid: Some("wrong".into()),
        ..Default::default()
    };
    assert!(matches!(
        s.delete(&key("b"), &opts).await,
        Err(StoreError::Precondition { .. })
    ));
    assert!(matches!(
        s.delete(&key("b"), &DeleteOptions::default())
            .await
            .unwrap(),
        Deleted::Gone(_)
    ));
}

#[tokio::test]
async fn foreground_and_orphan_add_their_finalizers() {
    let (_d, s) = open().await;
    s.create(net("a", "10.1.0.0/24")).await.unwrap();
    let opts = DeleteOptions {
        propagation: Propagation::Foreground,
        ..Default::default()
    };
    match s.delete(&key("a"), &opts).await.unwrap() {
        Deleted::Terminating(o) => assert_eq!(
            o.metadata.finalizers,
            vec![FOREGROUND_FINALIZER.to_string()]
        ),
        Deleted::Gone(_) => panic!("foreground deletion waits for the garbage collector"),
    }
}

#[tokio::test]
async fn apply_reports_created_configured_unchanged_and_stops_at_failure() {
    let (_d, s) = open().await;
    let r = s
        .apply(
            vec![net("a", "10.1.0.0/24"), net("b", "10.2.0.0/24")],
            false,
        )
        .await
        .unwrap();
    assert!(r.iter().all(|x| x.action == Applied::Created));
    let r = s
        .apply(
            vec![net("a", "10.1.0.0/24"), net("b", "10.3.0.0/24")],
            false,
        )
        .await
        .unwrap();
    assert_eq!(r[0].action, Applied::Unchanged);
    assert_eq!(r[1].action, Applied::Configured);
    let mut bad = net("d", "10.5.0.0/24");
    bad.spec = json!({"subnet": "x"});
    let err = s
        .apply(
            vec![net("c", "10.4.0.0/24"), bad, net("e", "10.6.0.0/24")],
            false,
        )
        .await
        .unwrap_err();
    assert_eq!(err.failed, 1);
    assert_eq!(err.applied.len(), 1);
    assert_eq!(err.key.as_ref().unwrap().name, "d");
    assert!(
        s.get(&key("c")).await.is_ok(),
        "documents before the failure are kept"
    );
    assert!(
        s.get(&key("e")).await.is_err(),
        "documents after the failure are not tried"
    );
    // Dry run commits nothing.
    let rev = s.revision().await.unwrap();
    let r = s.apply(vec![net("z", "10.9.0.0/24")], true).await.unwrap();
    assert_eq!(r[0].action, Applied::Created);
    assert_eq!(s.revision().await.unwrap(), rev);
    assert!(s.get(&key("z")).await.is_err());
}

#[tokio::test]
async fn list_by_namespace_and_selector() {
    let (_d, s) = open().await;
    for (ns, name, app) in [
        ("default", "a", "web"),
        ("default", "b", "db"),
        ("other", "c", "web"),
    ] {
        let mut o = AnyObject::new(Kind::Network, ns, name, json!({"subnet": "10.1.0.0/24"}));
        o.metadata.labels.insert("app".into(), app.into());
        s.create(o).await.unwrap();
    }
    let all = s.list(&ListQuery::default()).await.unwrap();
    assert_eq!(all.items.len(), 3);
    assert_eq!(all.revision, 3);
    let q = ListQuery {
        kind: Some(Kind::Network),
        selector: tend_schema::selector::Selector::parse("app=web").unwrap(),
        ..Default::default()
    };
    let names: Vec<_> = s
        .list(&q)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|o| o.metadata.name)
        .collect();
    assert_eq!(names, ["a", "c"]);
    let q = ListQuery {
        namespace: Some("other".into()),
        ..Default::default()
    };
    assert_eq!(s.list(&q).await.unwrap().items.len(), 1);
}

#[tokio::test]
async fn events_deduplicate_with_counts() {
    let (_d, s) = open().await;
    let o = s.create(net("a", "10.1.0.0/24")).await.unwrap();
    let ev = NewEvent {
        object: key("a"),
        uid: o.metadata.uid.clone().unwrap(),
        type_: EventType::Warning,
        reason: "BridgeMissing".into(),
        message: "bridge tnd-1 vanished".into(),
    };
    for _ in 0..3 {
        s.record_event(ev.clone()).await.unwrap();
    }
    s.record_event(NewEvent {
        reason: "Repaired".into(),
        type_: EventType::Normal,
        ..ev
    })
    .await
    .unwrap();
    let evs = s
        .list_events(&EventQuery {
            object: Some(key("a")),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(evs.len(), 2);
    assert_eq!(evs[0].count, 3);
    assert_eq!(evs[0].reason, "BridgeMissing");
    assert_eq!(evs[1].reason, "Repaired");
}

#[tokio::test]
async fn a_repeated_event_moves_to_a_new_revision_that_a_watcher_resumes_from() {
    let (_d, s) = open().await;
    let o = s.create(net("a", "10.1.0.0/24")).await.unwrap();
    let uid = o.metadata.uid.clone().unwrap();
    let mut writes = s
        .event_writes()
        .expect("sqlite follows its own event writes");
    let ev = |reason: &str| NewEvent {
        object: key("a"),
        uid: uid.clone(),
        type_: EventType::Normal,
        reason: reason.into(),
        message: "m".into(),
    };
    s.record_event(ev("First")).await.unwrap();
    s.record_event(ev("Second")).await.unwrap();
    let seen = s.event_revision().await.unwrap();
    assert!(writes.has_changed().unwrap());
    assert_eq!(*writes.borrow_and_update(), seen);
    s.record_event(ev("First")).await.unwrap();
    assert_eq!(*writes.borrow_and_update(), seen + 1);
    let after = |after: i64| EventQuery {
        after: Some(after),
        uid: Some(uid.clone()),
        ..Default::default()
    };
    let changed = s.list_events(&after(seen)).await.unwrap();
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!((changed[0].reason.as_str(), changed[0].count), ("First", 2));
    assert_eq!(changed[0].id, seen + 1);
    let all: Vec<_> = s.list_events(&after(0)).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.reason.as_str()).collect::<Vec<_>>(),
        ["Second", "First"],
        "oldest change first"
    );
    let by_other_uid = EventQuery {
        uid: Some("nobody".into()),
        ..Default::default()
    };
    assert!(s.list_events(&by_other_uid).await.unwrap().is_empty());
}

#[tokio::test]
async fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tend.db");
    drop(
        SqliteStore::open(&path, OpenOptions::default())
            .await
            .unwrap(),
    );
    let c = rusqlite::Connection::open(&path).unwrap();
    c.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(c);
    let err = SqliteStore::open(&path, OpenOptions::default())
        .await
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::SchemaTooNew { .. }), "{err}");
    assert!(err.to_string().contains("upgrade tend"));
}

#[tokio::test]
async fn readonly_query_cannot_write() {
    let (_d, s) = open().await;
    assert_eq!(s.integrity_check().await.unwrap(), vec!["ok".to_string()]);
    let (cols, rows) = s
        .query("SELECT key, value FROM meta ORDER BY key".into())
        .await
        .unwrap();
    assert_eq!(cols, ["key", "value"]);
    assert_eq!(rows.len(), 2);
    assert!(s.query("DELETE FROM meta".into()).await.is_err());
}

fn ct(name: &str, deps: &[&str]) -> AnyObject {
    let deps: Vec<_> = deps.iter().map(|d| json!({"container": d})).collect();
    AnyObject::new(
        Kind::Container,
        "default",
        name,
        json!({"command": ["sleep", "1"], "dependsOn": deps}),
    )
}

fn cycle_message(r: Result<AnyObject>) -> String {
    match r {
        Err(StoreError::Invalid(e)) => {
            assert_eq!(e.0[0].field, "spec.dependsOn");
            e.0[0].message.clone()
        }
        other => panic!("expected a refused cycle, got {other:?}"),
    }
}

#[tokio::test]
async fn dependency_cycles_are_refused_on_every_write_path_and_named() {
    let (_d, s) = open().await;
    assert_eq!(
        cycle_message(s.create(ct("a", &["a"])).await),
        "dependency cycle: a → a"
    );
    s.create(ct("a", &["b"])).await.unwrap();
    assert_eq!(
        cycle_message(s.create(ct("b", &["a"])).await),
        "dependency cycle: b → a → b"
    );
    // A dependency that does not exist yet is fine; closing the loop later is not.
    s.create(ct("b", &["c"])).await.unwrap();
    let c = s.create(ct("c", &[])).await.unwrap();
    let mut closing = ct("c", &["a"]);
    closing.metadata.resource_version = c.metadata.resource_version.clone();
    assert_eq!(
        cycle_message(s.update(closing).await),
        "dependency cycle: c → a → b → c"
    );
    let patch = json!({"spec": {"dependsOn": [{"container": "b"}]}});
    assert_eq!(
        cycle_message(
            s.merge_patch(&ObjectKey::new(Kind::Container, "default", "c"), patch)
                .await
        ),
        "dependency cycle: c → b → c"
    );
    match s.apply(vec![ct("c", &["a"])], false).await {
        Err(e) => assert!(
            e.to_string().contains("dependency cycle: c → a → b → c"),
            "{e}"
        ),
        Ok(r) => panic!("applied a cycle: {r:?}"),
    }
    // Diamonds are not cycles.
    s.create(ct("d", &["a", "b", "c"])).await.unwrap();
}

#[tokio::test]
async fn an_unchanged_apply_of_an_always_image_state_stamps_a_reconcile_request_and_no_generation()
{
    let (_d, s) = open().await;
    let state = |name: &str, policy: &str| {
        AnyObject::new(
            Kind::State,
            "default",
            name,
            json!({"source": {"image": "127.0.0.1:5000/app:1"}, "pullPolicy": policy}),
        )
    };
    let stamp = |o: &AnyObject| {
        o.metadata
            .annotations
            .get("tend.dev/reconcile-requested-at")
            .cloned()
    };
    // Created: the first reconcile pulls anyway.
    s.apply(vec![state("a", "Always")], false).await.unwrap();
    let once = s.apply(vec![state("a", "Always")], false).await.unwrap();
    let t1 = stamp(&once[0].object).expect("stamped by an unchanged apply");
    let again = s.apply(vec![state("a", "Always")], false).await.unwrap();
    let t2 = stamp(&again[0].object).expect("stamped again");
    assert_ne!(t1, t2, "every apply asks again");
    assert_eq!(again[0].object.metadata.generation, 1);
    assert_eq!(again[0].action, Applied::Configured);
    // IfNotPresent: an unchanged apply writes nothing.
    s.apply(vec![state("b", "IfNotPresent")], false)
        .await
        .unwrap();
    let r = s
        .apply(vec![state("b", "IfNotPresent")], false)
        .await
        .unwrap();
    assert_eq!(r[0].action, Applied::Unchanged);
    assert_eq!(stamp(&r[0].object), None);
}
