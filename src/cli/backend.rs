//! Where object commands go: the running daemon's API over `<state-dir>/tend.sock` when
//! `engine.json` names a live daemon that answers, else the store directly (the daemon picks
//! such writes up on start). Both paths return the same types and the same errors — store
//! errors pass through the API's own mapping ([`ApiError`]) — so the output is identical.

use crate::api::batch::action_word;
use crate::api::client::{Client, ClientError};
use crate::api::ApiError;
use futures::stream::BoxStream;
use futures::StreamExt;
use std::path::Path;
use std::sync::Arc;
use tend_schema::store::{
    Applied, ChangeType, DeleteOptions, Deleted, Event, EventQuery, ListQuery, ObjectList,
    Propagation, SqliteStore, Store, StoreError,
};
use tend_schema::{AnyObject, Kind, ObjectKey};

/// How many objects one batch-apply request carries (requests stay under the body limit).
const APPLY_CHUNK: usize = 500;

/// A failed request, the same shape from either path: a Kubernetes Status.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub code: u16,
    /// NotFound, Conflict, Invalid, … ("Unavailable" when the daemon could not be reached).
    pub reason: String,
    pub message: String,
    /// `(field, message)` per invalid field.
    pub causes: Vec<(String, String)>,
}

impl Failure {
    pub fn is_not_found(&self) -> bool {
        self.reason == "NotFound"
    }

    fn from_status(code: u16, body: &serde_json::Value) -> Self {
        let causes = body["details"]["causes"]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .map(|c| {
                        let s = |k: &str| c[k].as_str().unwrap_or("").to_string();
                        (s("field"), s("message"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Failure {
            code,
            reason: body["reason"].as_str().unwrap_or("").to_string(),
            message: body["message"].as_str().unwrap_or("").to_string(),
            causes,
        }
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure::from_status(e.code.as_u16(), &e.status_body())
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Api { code, body, .. } if body.is_object() => {
                Failure::from_status(code, &body)
            }
            ClientError::Api {
                code,
                reason,
                message,
                ..
            } => Failure {
                code,
                reason,
                message,
                causes: vec![],
            },
            other => Failure {
                code: 503,
                reason: "Unavailable".into(),
                message: other.to_string(),
                causes: vec![],
            },
        }
    }
}

/// One object's outcome in an apply.
pub struct AppliedKey {
    pub key: ObjectKey,
    pub action: Applied,
}

/// An apply: what was applied, and the index and reason of the failure that stopped it.
pub type ApplyOutcome = (Vec<AppliedKey>, Option<(usize, Failure)>);

/// One change seen by a watch.
pub struct Change {
    pub type_: ChangeType,
    pub object: AnyObject,
}

/// The daemon's API or the store.
pub enum Backend {
    Direct(Arc<SqliteStore>),
    Daemon(Client),
}

/// The socket of a live daemon on `dir`, if one runs: `engine.json`'s pid is alive and the
/// socket accepts a connection.
pub fn live_daemon(dir: &Path) -> Option<std::path::PathBuf> {
    let info: crate::daemon::lifecycle::EngineInfo =
        serde_json::from_slice(&std::fs::read(crate::daemon::Layout::new(dir).engine_json()).ok()?)
            .ok()?;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(info.pid).ok()?);
    nix::sys::signal::kill(pid, None).ok()?;
    let sock = crate::daemon::Layout::new(dir).socket();
    std::os::unix::net::UnixStream::connect(&sock).ok()?;
    Some(sock)
}

impl Backend {
    /// The daemon when one answers on `dir` (unless `direct`), else the store.
    pub async fn open(dir: &Path, direct: bool) -> anyhow::Result<Backend> {
        if !direct {
            if let Some(sock) = live_daemon(dir) {
                return Ok(Backend::Daemon(Client::unix(sock)));
            }
        }
        Ok(Backend::Direct(super::open(dir).await?))
    }

    pub fn is_daemon(&self) -> bool {
        matches!(self, Backend::Daemon(_))
    }

    pub async fn get(&self, key: &ObjectKey) -> Result<AnyObject, Failure> {
        match self {
            Backend::Direct(s) => Ok(crate::api::present(s.get(key).await?)),
            Backend::Daemon(c) => Ok(c.get(key).await?),
        }
    }

    /// Objects of `kind` (None: every kind) in `namespace` (None: all), matching the label
    /// selector `labels` and, when given, named `name`; sorted by kind, namespace, name.
    pub async fn list(
        &self,
        kind: Option<Kind>,
        namespace: Option<&str>,
        labels: &str,
        name: Option<&str>,
    ) -> Result<ObjectList, Failure> {
        match self {
            Backend::Direct(s) => {
                let q = ListQuery {
                    kind,
                    namespace: namespace.map(str::to_string),
                    selector: tend_schema::selector::Selector::parse(labels)
                        .map_err(|m| ApiError::bad_request(format!("labelSelector: {m}")))?,
                    name: name.map(str::to_string),
                };
                let mut l = s.list(&q).await?;
                l.items = l.items.into_iter().map(crate::api::present).collect();
                Ok(l)
            }
            Backend::Daemon(c) => {
                let kinds = kind.map_or_else(|| Kind::ALL.to_vec(), |k| vec![k]);
                let mut out = ObjectList {
                    items: vec![],
                    revision: 0,
                };
                for k in kinds {
                    let l = c.list(k, namespace, labels).await?;
                    out.revision = out.revision.max(l.revision);
                    out.items.extend(
                        l.items
                            .into_iter()
                            .filter(|o| name.is_none_or(|n| n == o.metadata.name)),
                    );
                }
                out.items.sort_by(|a, b| {
                    (&a.kind, a.metadata.ns(), &a.metadata.name).cmp(&(
                        &b.kind,
                        b.metadata.ns(),
                        &b.metadata.name,
                    ))
                });
                Ok(out)
            }
        }
    }

    /// Creates or updates `objects` in order, stopping at the first failure.
    pub async fn apply(&self, objects: Vec<AnyObject>, dry_run: bool) -> ApplyOutcome {
        match self {
            Backend::Direct(s) => {
                let (applied, failed) = match s.apply(objects, dry_run).await {
                    Ok(r) => (r, None),
                    Err(e) => (e.applied, Some((e.failed, Failure::from(*e.error)))),
                };
                let applied = applied
                    .into_iter()
                    .map(|r| AppliedKey {
                        key: r.key,
                        action: r.action,
                    })
                    .collect();
                (applied, failed)
            }
            Backend::Daemon(c) => {
                let mut done = Vec::new();
                for (n, chunk) in objects.chunks(APPLY_CHUNK).enumerate() {
                    let base = n * APPLY_CHUNK;
                    let r = match c.apply_batch(chunk, dry_run).await {
                        Ok(r) => r,
                        Err(e) => return (done, Some((base, e.into()))),
                    };
                    for item in r.items {
                        let Ok(kind) = item.kind.parse::<Kind>() else {
                            continue;
                        };
                        let action = [Applied::Created, Applied::Configured, Applied::Unchanged]
                            .into_iter()
                            .find(|a| action_word(*a) == item.action)
                            .unwrap_or(Applied::Configured);
                        done.push(AppliedKey {
                            key: ObjectKey::new(kind, item.namespace, item.name),
                            action,
                        });
                    }
                    if let Some(f) = r.failed {
                        let code = f.status["code"].as_u64().unwrap_or(500) as u16;
                        return (
                            done,
                            Some((base + f.index, Failure::from_status(code, &f.status))),
                        );
                    }
                }
                (done, None)
            }
        }
    }

    /// Deletes; `Some(object)` while it waits for finalizers, `None` once it is gone.
    pub async fn delete(
        &self,
        key: &ObjectKey,
        propagation: Propagation,
        grace_period_seconds: Option<u32>,
    ) -> Result<Option<AnyObject>, Failure> {
        match self {
            Backend::Direct(s) => {
                let opts = DeleteOptions {
                    propagation,
                    grace_period_seconds,
                    ..Default::default()
                };
                Ok(match s.delete(key, &opts).await? {
                    Deleted::Gone(_) => None,
                    Deleted::Terminating(o) => Some(crate::api::present(o)),
                })
            }
            Backend::Daemon(c) => Ok(c.delete(key, propagation, grace_period_seconds).await?),
        }
    }

    /// Changes after revision `from` to objects of `kinds` in `namespace` (None: all).
    pub async fn watch(
        &self,
        kinds: &[Kind],
        namespace: Option<&str>,
        from: u64,
    ) -> Result<BoxStream<'static, Result<Change, Failure>>, Failure> {
        match self {
            Backend::Direct(s) => {
                let (kinds, ns) = (kinds.to_vec(), namespace.map(str::to_string));
                let stream = s.watch(from).await?;
                Ok(stream
                    .filter_map(move |ev| {
                        let keep = match &ev {
                            Ok(ev) => {
                                kinds.contains(&ev.kind)
                                    && ns.as_deref().is_none_or(|n| n == ev.object.metadata.ns())
                            }
                            Err(_) => true,
                        };
                        std::future::ready(keep.then(|| {
                            ev.map(|ev| Change {
                                type_: ev.type_,
                                object: crate::api::present(ev.object),
                            })
                            .map_err(Failure::from)
                        }))
                    })
                    .boxed())
            }
            Backend::Daemon(c) => {
                let mut streams = Vec::new();
                for k in kinds {
                    streams.push(c.watch(*k, namespace, Some(from)).await?);
                }
                Ok(futures::stream::select_all(streams)
                    .filter_map(|line| {
                        std::future::ready(match line {
                            Err(e) => Some(Err(Failure::from(e))),
                            Ok(l) => match l.type_.as_str() {
                                "ADDED" | "MODIFIED" | "DELETED" => {
                                    let type_ = serde_json::from_value(l.type_.clone().into())
                                        .unwrap_or(ChangeType::Modified);
                                    Some(
                                        serde_json::from_value(l.object)
                                            .map(|object| Change { type_, object })
                                            .map_err(|e| Failure {
                                                code: 500,
                                                reason: "InternalError".into(),
                                                message: format!("decoding a watch event: {e}"),
                                                causes: vec![],
                                            }),
                                    )
                                }
                                "ERROR" => Some(Err(Failure::from_status(
                                    l.object["code"].as_u64().unwrap_or(500) as u16,
                                    &l.object,
                                ))),
                                _ => None,
                            },
                        })
                    })
                    .boxed())
            }
        }
    }

    /// An object's changes still in the change feed (`kind: ObjectHistory`).
    pub async fn history(&self, key: &ObjectKey) -> Result<serde_json::Value, Failure> {
        match self {
            Backend::Direct(s) => Ok(crate::api::history::history(&**s, key).await?),
            Backend::Daemon(c) => Ok(c.history(key).await?),
        }
    }

    /// A Container's revisions (`kind: ContainerRevisionList`).
    pub async fn revisions(&self, key: &ObjectKey) -> Result<serde_json::Value, Failure> {
        match self {
            Backend::Direct(s) => Ok(crate::api::rollouts::history(&**s, key).await?),
            Backend::Daemon(c) => Ok(c.revisions(&key.namespace, &key.name).await?),
        }
    }

    /// Writes an earlier revision's spec as a Container's spec (a new revision).
    pub async fn rollback(
        &self,
        key: &ObjectKey,
        req: &crate::api::rollouts::RollbackRequest,
    ) -> Result<AnyObject, Failure> {
        match self {
            Backend::Direct(s) => Ok(crate::api::present(
                crate::api::rollouts::rollback(&**s, key, req, "local", |_| Ok(())).await?,
            )),
            Backend::Daemon(c) => Ok(c.rollback(&key.namespace, &key.name, req).await?),
        }
    }

    /// `tend image prune`: only a running daemon may (it owns the image store and holds pulls
    /// off while it prunes).
    pub async fn prune_images(
        &self,
        dry_run: bool,
    ) -> Result<crate::image::prune::PruneReport, Failure> {
        match self {
            Backend::Direct(_) => Err(Failure {
                code: 503,
                reason: "Unavailable".into(),
                message: "tend image prune needs the running daemon (it owns the image store); start tend serve".into(),
                causes: vec![],
            }),
            Backend::Daemon(c) => Ok(c.prune_images(dry_run).await?),
        }
    }

    /// Events in `namespace` (None: all), or about one object; newest last.
    pub async fn events(
        &self,
        namespace: Option<&str>,
        object: Option<&ObjectKey>,
        limit: Option<usize>,
    ) -> Result<Vec<Event>, Failure> {
        match self {
            Backend::Direct(s) => Ok(s
                .list_events(&EventQuery {
                    namespace: namespace.map(str::to_string),
                    object: object.cloned(),
                    limit,
                    ..Default::default()
                })
                .await?),
            Backend::Daemon(c) => {
                let ns = object.map(|k| k.namespace.as_str()).or(namespace);
                Ok(c.events(ns, object, limit).await?)
            }
        }
    }
}
