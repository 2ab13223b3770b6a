//! Container revisions in the store: one per spec generation, written with the spec change,
//! attributed to the requester, gone with the object.

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

fn app(cmd: &str) -> AnyObject {
    AnyObject::new(Kind::Container, "default", "app", json!({"command": [cmd]}))
}

#[tokio::test]
async fn each_spec_generation_is_one_revision_with_who_and_why() {
    let (_d, s) = open().await;
    let key = ObjectKey::new(Kind::Container, "default", "app");
    let c = s.create(app("a")).await.unwrap();
    let uid = c.metadata.uid.clone().unwrap();
    // A status write and a label change are no new revision.
    s.update_status(
        &key,
        c.metadata.revision().unwrap(),
        json!({"phase": "Running"}),
    )
    .await
    .unwrap();
    let mut o = s.get(&key).await.unwrap();
    o.metadata.labels.insert("x".into(), "y".into());
    let o = s.update(o).await.unwrap();
    assert_eq!(o.metadata.generation, 1);
    let mut o2 = o.clone();
    o2.spec = json!({"command": ["b"]});
    let who = Requester {
        who: "token:ci".into(),
        cause: "deploy b".into(),
        restore_snapshot: None,
    };
    who.scope(s.update(o2)).await.unwrap();
    let revs = s.revisions(&uid).await.unwrap();
    let got: Vec<_> = revs
        .iter()
        .map(|r| {
            (
                r.revision,
                r.generation,
                r.created_by.as_str(),
                r.cause.as_str(),
            )
        })
        .collect();
    assert_eq!(got, [(1, 1, "local", ""), (2, 2, "token:ci", "deploy b")]);
    assert_eq!(revs[1].spec, json!({"command": ["b"]}));
    // Snapshot bookkeeping and pruning.
    assert!(s.set_revision_snapshot(&uid, 1, Some("t-1")).await.unwrap());
    assert!(!s.set_revision_snapshot(&uid, 9, Some("t-9")).await.unwrap());
    assert_eq!(
        s.revisions(&uid).await.unwrap()[0].snapshot.as_deref(),
        Some("t-1")
    );
    assert!(s.delete_revision(&uid, 1).await.unwrap());
    assert_eq!(s.revisions(&uid).await.unwrap().len(), 1);
    // A new generation after a prune gets the next number, not a reused one.
    let mut o3 = s.get(&key).await.unwrap();
    o3.spec = json!({"command": ["c"]});
    s.update(o3).await.unwrap();
    let numbers: Vec<u64> = s
        .revisions(&uid)
        .await
        .unwrap()
        .iter()
        .map(|r| r.revision)
        .collect();
    assert_eq!(numbers, [2, 3]);
    // The rows go with the object.
    s.delete(&key, &DeleteOptions::default()).await.unwrap();
    assert!(s.revisions(&uid).await.unwrap().is_empty());
}
