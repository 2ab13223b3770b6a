//! The shared index: every object's key, uid, generation and relations, rebuilt from the store.
//!
//! It answers the questions triggers and in-use protection ask — who uses this object by name,
//! who does this uid own — without a store query. It is a cache in the sense of law 1: the
//! informer rebuilds it from the store at start and after any gap.

use std::collections::{BTreeSet, HashMap};
use std::sync::RwLock;
use tend_schema::kinds::references;
use tend_schema::{AnyObject, Kind, ObjectKey};

/// What the index keeps about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub uid: String,
    pub generation: i64,
    pub terminating: bool,
    pub finalizers: Vec<String>,
    /// Objects this one uses by name.
    pub refs: Vec<ObjectKey>,
    /// uids of this object's owners.
    pub owners: Vec<String>,
    /// The [`RECONCILE_REQUESTED`] annotation: its change wakes the object's controller.
    ///
    /// [`RECONCILE_REQUESTED`]: tend_schema::kinds::state::RECONCILE_REQUESTED
    pub requested: Option<String>,
}

impl Entry {
    pub fn of(obj: &AnyObject) -> Option<(ObjectKey, Entry)> {
        let key = obj.key().ok()?;
        let entry = Entry {
            uid: obj.metadata.uid.clone().unwrap_or_default(),
            generation: obj.metadata.generation,
            terminating: obj.metadata.is_terminating(),
            finalizers: obj.metadata.finalizers.clone(),
            refs: references(key.kind, &key.namespace, &obj.spec),
            owners: obj
                .metadata
                .owner_references
                .iter()
                .map(|o| o.uid.clone())
                .collect(),
            requested: obj
                .metadata
                .annotations
                .get(tend_schema::kinds::state::RECONCILE_REQUESTED)
                .cloned(),
        };
        Some((key, entry))
    }
}

#[derive(Default)]
struct Inner {
    objects: HashMap<ObjectKey, Entry>,
    by_uid: HashMap<String, ObjectKey>,
    /// target → objects that use it by name.
    referrers: HashMap<ObjectKey, BTreeSet<ObjectKey>>,
    /// owner uid → dependents.
    owned: HashMap<String, BTreeSet<ObjectKey>>,
}

impl Inner {
    fn remove(&mut self, key: &ObjectKey) -> Option<Entry> {
        let old = self.objects.remove(key)?;
        self.by_uid.remove(&old.uid);
        for r in &old.refs {
            if let Some(set) = self.referrers.get_mut(r) {
                set.remove(key);
                if set.is_empty() {
                    self.referrers.remove(r);
                }
            }
        }
        for o in &old.owners {
            if let Some(set) = self.owned.get_mut(o) {
                set.remove(key);
                if set.is_empty() {
                    self.owned.remove(o);
                }
            }
        }
        Some(old)
    }

    fn insert(&mut self, key: ObjectKey, e: Entry) {
        self.by_uid.insert(e.uid.clone(), key.clone());
        for r in &e.refs {
            self.referrers
                .entry(r.clone())
                .or_default()
                .insert(key.clone());
        }
        for o in &e.owners {
            self.owned.entry(o.clone()).or_default().insert(key.clone());
        }
        self.objects.insert(key, e);
    }
}

/// The index. Cheap reads under a short lock; never held across an await.
#[derive(Default)]
pub struct Index {
    inner: RwLock<Inner>,
}

impl Index {
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces everything with `objects` (a fresh list from the store).
    pub fn reset(&self, objects: &[AnyObject]) {
        let mut fresh = Inner::default();
        for o in objects {
            if let Some((k, e)) = Entry::of(o) {
                fresh.insert(k, e);
            }
        }
        *self.write() = fresh;
    }

    /// Records an object as it now is; returns what was there before.
    pub fn upsert(&self, obj: &AnyObject) -> (Option<Entry>, Option<Entry>) {
        let Some((key, entry)) = Entry::of(obj) else {
            return (None, None);
        };
        let mut w = self.write();
        let prev = w.remove(&key);
        w.insert(key, entry.clone());
        (prev, Some(entry))
    }

    /// Forgets an object; returns what was there.
    pub fn remove(&self, key: &ObjectKey) -> Option<Entry> {
        self.write().remove(key)
    }

    pub fn get(&self, key: &ObjectKey) -> Option<Entry> {
        self.read().objects.get(key).cloned()
    }

    pub fn key_of_uid(&self, uid: &str) -> Option<ObjectKey> {
        self.read().by_uid.get(uid).cloned()
    }

    /// Objects that use `key` by name (whether or not `key` exists).
    pub fn referrers(&self, key: &ObjectKey) -> Vec<ObjectKey> {
        self.read()
            .referrers
            .get(key)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Objects whose ownerReferences name `uid`.
    pub fn owned_by(&self, uid: &str) -> Vec<ObjectKey> {
        self.read()
            .owned
            .get(uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Every key of one kind.
    pub fn keys(&self, kind: Kind) -> Vec<ObjectKey> {
        self.read()
            .objects
            .keys()
            .filter(|k| k.kind == kind)
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.read().objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn relations_follow_updates_and_removals() {
        let idx = Index::new();
        let mut sb = AnyObject::new(Kind::Sandbox, "default", "dev", json!({"state": "base"}));
        sb.metadata.uid = Some("u-sb".into());
        idx.upsert(&sb);
        let base = ObjectKey::new(Kind::State, "default", "base");
        assert_eq!(idx.referrers(&base), vec![sb.key().unwrap()]);
        sb.spec = json!({"state": "other"});
        let (prev, _) = idx.upsert(&sb);
        assert_eq!(prev.unwrap().refs, vec![base.clone()]);
        assert!(idx.referrers(&base).is_empty());
        idx.remove(&sb.key().unwrap());
        assert!(idx.key_of_uid("u-sb").is_none());
        assert!(idx.is_empty());
    }
}
