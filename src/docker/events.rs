//! Docker's event stream, reduced to what tend reconciles on (start, die, oom, stop, destroy of
//! tend-labelled containers), and kept alive across dockerd restarts.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::errors::Error as BollardError;
use bollard::models::EventMessage;
use bollard::query_parameters::EventsOptionsBuilder;
use futures::stream::BoxStream;
use futures::StreamExt;

use super::error::Target;
use super::spec::{LABEL_NAME, LABEL_NAMESPACE, LABEL_UID};
use super::{DockerDriver, DockerError};

const ACTIONS: [&str; 5] = ["start", "die", "oom", "stop", "destroy"];
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What happened to a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerEventKind {
    /// It started.
    Start,
    /// Its process exited (for any reason).
    Die,
    /// The OOM killer hit it.
    Oom,
    /// It was stopped through the API.
    Stop,
    /// It was removed.
    Destroy,
}

/// One event about a tend-labelled container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEvent {
    /// What happened.
    pub kind: ContainerEventKind,
    /// The container id.
    pub container_id: String,
    /// The owner's uid (`dev.tend.uid`).
    pub uid: String,
    /// The owner's namespace label.
    pub namespace: String,
    /// The owner's name label.
    pub name: String,
    /// The exit code, on `Die`.
    pub exit_code: Option<i64>,
}

/// An item of [`DockerDriver::events`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerEvent {
    /// An event about one of tend's containers.
    Container(ContainerEvent),
    /// The stream reconnected after dockerd was unreachable: events may have been lost (dockerd
    /// restarted), so the consumer should resync everything it owns.
    Resync,
}

struct State {
    driver: DockerDriver,
    inner: Option<BoxStream<'static, Result<EventMessage, BollardError>>>,
    /// Nanoseconds since the epoch from which to (re)subscribe, so a reconnect replays what
    /// dockerd still holds instead of dropping it.
    since_nanos: i64,
    backoff: Duration,
    failed: bool,
}

impl DockerDriver {
    /// Docker events for containers carrying `dev.tend.uid`, from now on. The stream never ends
    /// on its own and never panics: when dockerd goes away it yields one `Err(Unavailable)` per
    /// failed attempt, retries with backoff (200 ms doubling to 5 s), and yields
    /// [`DockerEvent::Resync`] once dockerd answers again. Drop the stream to stop it.
    pub fn events(&self) -> BoxStream<'static, Result<DockerEvent, DockerError>> {
        let state = State {
            driver: self.clone(),
            inner: None,
            since_nanos: now_nanos(),
            backoff: BACKOFF_MIN,
            failed: false,
        };
        futures::stream::unfold(state, |mut st| async move {
            let item = st.next().await;
            Some((item, st))
        })
        .boxed()
    }
}

impl State {
    async fn next(&mut self) -> Result<DockerEvent, DockerError> {
        loop {
            if self.inner.is_none() {
                if self.failed {
                    tokio::time::sleep(self.backoff).await;
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                    self.driver.ping().await?;
                }
                self.inner = Some(self.subscribe().await?);
                if std::mem::take(&mut self.failed) {
                    return Ok(DockerEvent::Resync);
                }
            }
            let inner = self.inner.as_mut().expect("subscribed above");
            match inner.next().await {
                Some(Ok(msg)) => {
                    self.backoff = BACKOFF_MIN;
                    if let Some(t) = msg.time_nano {
                        self.since_nanos = self.since_nanos.max(t + 1);
                    }
                    if let Some(ev) = simplify(msg) {
                        return Ok(DockerEvent::Container(ev));
                    }
                }
                Some(Err(e)) => {
                    self.inner = None;
                    self.failed = true;
                    let ctx = self.driver.ctx("events", "", Target::Container);
                    return Err(match ctx.map(e) {
                        e @ DockerError::Unavailable { .. } => e,
                        other => ctx.unavailable(other.to_string()),
                    });
                }
                None => {
                    self.inner = None;
                    self.failed = true;
                    let ctx = self.driver.ctx("events", "", Target::Container);
                    return Err(ctx.unavailable("event stream ended".into()));
                }
            }
        }
    }

    async fn subscribe(
        &mut self,
    ) -> Result<BoxStream<'static, Result<EventMessage, BollardError>>, DockerError> {
        let ctx = self.driver.ctx("events", "", Target::Container);
        let docker = match self.driver.client(&ctx).await {
            Ok(d) => d,
            Err(e) => {
                self.failed = true;
                return Err(e);
            }
        };
        let filters = HashMap::from([
            ("type", vec!["container"]),
            ("label", vec![LABEL_UID]),
            ("event", ACTIONS.to_vec()),
        ]);
        let since = format!(
            "{}.{:09}",
            self.since_nanos / 1_000_000_000,
            self.since_nanos % 1_000_000_000
        );
        let opts = EventsOptionsBuilder::default()
            .since(&since)
            .filters(&filters)
            .build();
        Ok(docker.events(Some(opts)).boxed())
    }
}

fn now_nanos() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Keeps container events of the five kinds that carry tend's uid label.
fn simplify(msg: EventMessage) -> Option<ContainerEvent> {
    let kind = match msg.action.as_deref()? {
        "start" => ContainerEventKind::Start,
        "die" => ContainerEventKind::Die,
        "oom" => ContainerEventKind::Oom,
        "stop" => ContainerEventKind::Stop,
        "destroy" => ContainerEventKind::Destroy,
        _ => return None,
    };
    let actor = msg.actor?;
    let attrs = actor.attributes.unwrap_or_default();
    let get = |k: &str| attrs.get(k).cloned().unwrap_or_default();
    Some(ContainerEvent {
        kind,
        container_id: actor.id?,
        uid: attrs.get(LABEL_UID)?.clone(),
        namespace: get(LABEL_NAMESPACE),
        name: get(LABEL_NAME),
        exit_code: attrs.get("exitCode").and_then(|c| c.parse().ok()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::EventActor;

    fn msg(action: &str, attrs: &[(&str, &str)]) -> EventMessage {
        EventMessage {
            action: Some(action.into()),
            actor: Some(EventActor {
                id: Some("abc".into()),
                attributes: Some(
                    attrs
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn die_carries_uid_and_exit_code() {
        let ev = simplify(msg("die", &[(LABEL_UID, "u1"), ("exitCode", "137")])).unwrap();
        assert_eq!(ev.kind, ContainerEventKind::Die);
        assert_eq!(ev.uid, "u1");
        assert_eq!(ev.exit_code, Some(137));
    }

    #[test]
    fn unlabelled_or_other_actions_are_dropped() {
        assert!(simplify(msg("die", &[])).is_none());
        assert!(simplify(msg("attach", &[(LABEL_UID, "u1")])).is_none());
    }

    #[tokio::test]
    async fn a_missing_dockerd_yields_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("docker.sock");
        let d = DockerDriver::connect(Some(sock.to_str().unwrap())).unwrap();
        let mut events = d.events();
        for _ in 0..2 {
            let item = events.next().await.unwrap();
            assert!(item.unwrap_err().is_unavailable());
        }
    }
}
