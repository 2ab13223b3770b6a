//! Docker's event stream into the Container controller: each start/die/oom/stop/destroy of a
//! tend container wakes its Container (by uid) and its exit watcher; when the stream comes
//! back after dockerd was unreachable, every Container this runtime has seen is woken.

use super::{lock, DockerRuntime, Wake};
use crate::docker::{ContainerEventKind, DockerEvent};
use futures::StreamExt;
use std::sync::{Arc, Weak};
use tend_controllers::Trigger;

impl DockerRuntime {
    fn known(&self) -> Vec<String> {
        lock(&self.known).iter().cloned().collect()
    }

    /// Starts the event task: Docker events wake the controller through `trigger` (the
    /// Container controller's, from `Runtime::register`). The task ends when the runtime is
    /// dropped.
    pub fn watch_events(self: &Arc<Self>, trigger: Trigger) {
        let me: Weak<Self> = Arc::downgrade(self);
        let mut events = self.driver.events();
        tokio::spawn(async move {
            let mut down = false;
            while let Some(item) = events.next().await {
                let Some(rt) = me.upgrade() else { return };
                match item {
                    Ok(DockerEvent::Container(ev)) => {
                        match ev.kind {
                            ContainerEventKind::Oom => {
                                lock(&rt.oom).insert(ev.container_id.clone());
                            }
                            ContainerEventKind::Destroy => {
                                lock(&rt.oom).remove(&ev.container_id);
                            }
                            _ => {}
                        }
                        trigger.uid(&ev.uid);
                        let _ = rt.wake.send(Wake::Uid(ev.uid));
                    }
                    Ok(DockerEvent::Resync) => {
                        down = false;
                        *lock(&rt.down_until) = None;
                        tracing::info!("dockerd reachable again: reconciling docker containers");
                        let _ = rt.wake.send(Wake::All);
                        // Learn what exists (if dockerd was down at start-up, for the first time).
                        let _ =
                            tend_controllers::container::ContainerRuntime::list_owned(&*rt).await;
                        for uid in rt.known() {
                            trigger.uid(&uid);
                        }
                    }
                    Err(e) => {
                        if !down {
                            // Show RuntimeUnavailable now rather than at the next resync.
                            tracing::warn!(error = %e, "docker event stream lost; retrying");
                            down = true;
                            for uid in rt.known() {
                                trigger.uid(&uid);
                            }
                        }
                    }
                }
            }
        });
    }
}
