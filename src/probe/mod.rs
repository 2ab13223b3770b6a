//! The probe runner tend uses for every runtime: `exec` through the runtime's own exec (the
//! container's namespaces and cgroup), `httpGet` and `tcpSocket` over a socket created inside
//! the workload's network namespace ([`netns`]) and driven on the async executor. Every probe
//! ends within its `timeoutSeconds`; output is capped. Decides nothing: the Container
//! controller reads the outcomes.

mod diag;
mod http;
mod netns;

use async_trait::async_trait;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tend_controllers::container::{
    ExecLimits, ProbeOutcome, ProbeRunner, ProbeTarget, PROBE_OUTPUT,
};
use tend_schema::kinds::container::Probe;
use tend_schema::kinds::health::Handler;

pub use netns::SocketFactory;

/// Runs probes for the daemon: one [`SocketFactory`] thread for every network probe.
pub struct HostProbes {
    sockets: SocketFactory,
    timings: Option<Arc<ProbeTimings>>,
}

impl HostProbes {
    /// Starts the socket factory thread.
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            sockets: SocketFactory::start()?,
            timings: None,
        })
    }

    /// Records every probe run in `timings` (`tend bench probes`).
    pub fn with_timings(mut self, timings: Option<Arc<ProbeTimings>>) -> Self {
        self.timings = timings;
        self
    }
}

/// One probe run as [`ProbeTimings`] keeps it.
#[derive(Debug, Clone)]
pub struct ProbeSample {
    /// The Container's uid.
    pub uid: String,
    /// `exec`, `tcpSocket` or `httpGet`.
    pub handler: &'static str,
    /// When the run ended.
    pub at: Instant,
    /// How long it took, timeout included.
    pub took: Duration,
    pub success: bool,
}

/// Every probe run of a daemon, in order: what `tend bench probes` reads its latency and
/// ready-after-restart figures from. A daemon without one records nothing.
#[derive(Debug, Default)]
pub struct ProbeTimings(Mutex<Vec<ProbeSample>>);

impl ProbeTimings {
    fn push(&self, s: ProbeSample) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(s);
    }

    /// Takes the runs recorded so far, leaving none.
    pub fn take(&self) -> Vec<ProbeSample> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

fn addr(host: Option<&str>, port: u16) -> SocketAddr {
    let ip = host
        .and_then(|h| h.parse::<Ipv4Addr>().ok())
        .unwrap_or(Ipv4Addr::LOCALHOST);
    SocketAddr::from((ip, port))
}

#[async_trait]
impl ProbeRunner for HostProbes {
    async fn run(&self, t: &ProbeTarget, probe: &Probe) -> ProbeOutcome {
        let begun = Instant::now();
        let out = self.run_one(t, probe).await;
        if let Some(timings) = &self.timings {
            timings.push(ProbeSample {
                uid: t.uid.clone(),
                handler: match probe.handler() {
                    Some(Handler::Exec(_)) => "exec",
                    Some(Handler::TcpSocket(_)) => "tcpSocket",
                    Some(Handler::HttpGet(_)) => "httpGet",
                    None => "none",
                },
                at: Instant::now(),
                took: begun.elapsed(),
                success: out.success,
            });
        }
        out
    }
}

impl HostProbes {
    async fn run_one(&self, t: &ProbeTarget, probe: &Probe) -> ProbeOutcome {
        let timeout = probe.timeout();
        let work = async {
            match probe.handler() {
                Some(Handler::Exec(e)) => match t
                    .runtime
                    .exec_collected(
                        &t.uid,
                        &e.command,
                        ExecLimits {
                            timeout,
                            max_output: PROBE_OUTPUT,
                        },
                    )
                    .await
                {
                    Ok(out) => ProbeOutcome::new(
                        out.exit_code == 0,
                        match out.output.is_empty() {
                            true => format!("exit code {}", out.exit_code),
                            false => String::from_utf8_lossy(&out.output).into_owned(),
                        },
                    ),
                    Err(e) => ProbeOutcome::new(false, e.to_string()),
                },
                Some(Handler::TcpSocket(s)) => {
                    let to = addr(s.host.as_deref(), s.port);
                    match self.sockets.probe(t.pid, to).await {
                        Ok(()) => ProbeOutcome::new(true, format!("connected to {to}")),
                        Err(e) => ProbeOutcome::new(false, format!("connect {to}: {e}")),
                    }
                }
                Some(Handler::HttpGet(h)) => {
                    let to = addr(h.host.as_deref(), h.port);
                    match self.sockets.connect(t.pid, to).await {
                        Ok(stream) => http::get(stream, to, &h.path).await,
                        Err(e) => ProbeOutcome::new(false, format!("connect {to}: {e}")),
                    }
                }
                None => ProbeOutcome::new(false, "the probe has no handler"),
            }
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(out) => out,
            Err(_) => ProbeOutcome::new(false, format!("timed out after {}s", timeout.as_secs())),
        }
    }
}
