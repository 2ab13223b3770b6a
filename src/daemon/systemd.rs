//! systemd integration (`Type=notify`, `WatchdogSec=`): `READY=1` when every controller has
//! passed its start-up observation pass (the moment `/readyz` turns true), `WATCHDOG=1` while
//! the daemon's heartbeat answers, `STOPPING=1` on shutdown. Outside systemd (no
//! `NOTIFY_SOCKET`) every call is a no-op.
//!
//! The heartbeat is a read of the store's revision, on the runtime the controllers use, with a
//! timeout of half the watchdog period: a wedged store or a stalled runtime stops the pings and
//! systemd restarts the service (the unit's `KillMode=process` keeps the workloads running).

use std::sync::Arc;

use sd_notify::NotifyState;
use tend_schema::store::Store;
use tokio::sync::watch;

/// Starts the readiness and watchdog notifications; they end with the runtime. Pings start
/// after `READY=1`: systemd arms the watchdog when the start-up completes.
pub fn spawn(mut ready: watch::Receiver<bool>, store: Arc<dyn Store>) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    tokio::spawn(async move {
        if ready.wait_for(|v| *v).await.is_err() {
            return;
        }
        notify(&[
            NotifyState::Ready,
            NotifyState::Status("controllers started; serving"),
        ]);
        let Some(period) = sd_notify::watchdog_enabled() else {
            return;
        };
        // systemd's advice: ping at half the period.
        let every = period / 2;
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            match tokio::time::timeout(every, store.revision()).await {
                Ok(Ok(_)) => notify(&[NotifyState::Watchdog]),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "heartbeat: store read failed; no watchdog ping")
                }
                Err(_) => {
                    tracing::warn!(after = ?every, "heartbeat: store read timed out; no watchdog ping")
                }
            }
        }
    });
}

/// Tells systemd the daemon is stopping.
pub fn stopping() {
    notify(&[NotifyState::Stopping]);
}

fn notify(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}
