//! `tend bench`: measure tend and print figures (never asserted in tests; see docs/benchmarks.md).

use std::path::Path;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print each figure as one JSON object per line on stdout (headers go to stderr), for
    /// deploy/bench-figures.sh.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub what: What,
}

#[derive(Debug, clap::Subcommand)]
pub enum What {
    /// The store: point get, list, bulk apply, create latency, watch delivery.
    Store {
        /// Objects for the list and apply figures.
        #[arg(long, default_value_t = 10_000)]
        objects: usize,
    },
    /// The controller runtime with a no-op reconciler: throughput, write→reconcile latency, idle CPU.
    Runtime {
        #[arg(long, default_value_t = 10_000)]
        objects: usize,
        /// How long to measure idle CPU.
        #[arg(long, default_value_t = 10)]
        idle_seconds: u64,
    },
    /// Networks: attachment latency and throughput, veth deleted → repaired, teardown. Needs root.
    Network {
        /// Container attachments made at `--concurrency` for the throughput figure.
        #[arg(long, default_value_t = 500)]
        count: usize,
        /// Attachments made one at a time first, for the latency figures.
        #[arg(long, default_value_t = 100)]
        latency: usize,
        /// Attachments in flight at once during the throughput run.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Veth deletions whose repair is timed.
        #[arg(long, default_value_t = 50)]
        repairs: usize,
    },
    /// Native containers: apply→Running, a bulk apply, kill→restarted; beside them the peers
    /// that are installed (docker run -d, podman run -d with crun and runc, bare runc/crun run -d).
    Container {
        #[arg(long, default_value_t = 50)]
        single: usize,
        #[arg(long, default_value_t = 200)]
        bulk: usize,
        #[arg(long, default_value_t = 50)]
        kills: usize,
        /// Run the containers without the default isolation (privileged, host network), to
        /// measure what capabilities, seccomp, masks and the network namespace cost.
        #[arg(long)]
        no_isolation: bool,
    },
    /// Drift repair: each kind of host object changed behind tend's back, time until repaired.
    /// Needs root.
    Drift {
        #[arg(long, default_value_t = 20)]
        rounds: usize,
        /// The daemon's resync period (drift no event reports is found by resync).
        #[arg(long, default_value_t = 60)]
        resync_seconds: u64,
        /// Also run a `runtime: docker` Container of this local image and remove it with
        /// `docker rm -f` (e.g. tend-test/busybox:latest, built by deploy/docker-test-image.sh).
        #[arg(long)]
        docker_image: Option<String>,
    },
    /// Docker containers: apply→Running beside raw Engine API create+start, a burst, rm -f→repaired.
    Docker {
        #[arg(long, default_value_t = 20)]
        single: usize,
        #[arg(long, default_value_t = 40)]
        burst: usize,
        #[arg(long, default_value_t = 20)]
        repairs: usize,
    },
    /// The REST API: GET p50/p99 and req/s with keep-alive clients, create p99, watch delivery.
    Api(crate::bench::api::Args),
    /// Probes: daemon CPU and probe latency with many probed containers, and the time a
    /// restarted daemon takes to confirm every one Ready again. Needs root.
    Probes {
        /// Containers with a 1 s exec readiness probe.
        #[arg(long, default_value_t = 500)]
        exec: usize,
        /// Containers (busybox httpd) with a 1 s tcpSocket readiness probe.
        #[arg(long, default_value_t = 500)]
        tcp: usize,
        /// How long each CPU window lasts.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Published ports: HTTP requests/s and latency through tend's published port, straight
    /// to the container, and through `docker run -p` of the same httpd. Needs root.
    Ports {
        /// Requests per target.
        #[arg(long, default_value_t = 20_000)]
        requests: usize,
        /// Concurrent clients.
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Rounds the targets alternate in.
        #[arg(long, default_value_t = 4)]
        rounds: usize,
    },
    /// Usage sampling: time and CPU of one pass over many containers' cgroups, and the share
    /// of a core that makes at the default interval. Needs root.
    Usage {
        #[arg(long, default_value_t = 1000)]
        containers: usize,
        #[arg(long, default_value_t = 20)]
        passes: usize,
    },
    /// What a script waits for: `tend apply --wait` of a Sandbox + Container with a Network
    /// as a whole process beside the same apply and watch in process, and `kubectl get events`.
    /// Needs root.
    Cli {
        /// Samples of each way.
        #[arg(long, default_value_t = 30)]
        samples: usize,
        /// Runs of `kubectl get events` (skipped when kubectl is not installed).
        #[arg(long, default_value_t = 30)]
        kubectl: usize,
    },
    /// Images: pull+unpack of a ~50 MB 5-layer image from a local registry by tend, docker pull
    /// and podman pull (cold, p50), a second image sharing 4 layers (time, bytes added),
    /// Container apply→Running from an image State. Needs root, dockerd, docker-registry.
    Image {
        /// Cold pulls per puller.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// Sandboxes from a 50 MB State: apply→Ready latency and a burst's throughput, per backend.
    Sandbox {
        /// Sandboxes applied one after another for the latency figures.
        #[arg(long, default_value_t = 100)]
        latency: usize,
        /// Sandboxes applied at once for the throughput figure (btrfs).
        #[arg(long, default_value_t = 1000)]
        burst: usize,
        /// Burst size on the copy backend (each copy writes 50 MB).
        #[arg(long, default_value_t = 50)]
        copy_burst: usize,
    },
    /// Failed Rollouts: progress deadline → previous revision Ready with its data restored, on
    /// btrfs and copy, beside the container's own stop+start. Needs root.
    Rollback {
        /// Rollbacks (and plain restarts) measured per backend.
        #[arg(long, default_value_t = 20)]
        rounds: usize,
    },
}

impl What {
    /// The name `--json` tags figures with.
    fn name(&self) -> &'static str {
        match self {
            What::Store { .. } => "store",
            What::Runtime { .. } => "runtime",
            What::Network { .. } => "network",
            What::Container { .. } => "container",
            What::Drift { .. } => "drift",
            What::Docker { .. } => "docker",
            What::Api(_) => "api",
            What::Sandbox { .. } => "sandbox",
            What::Probes { .. } => "probes",
            What::Ports { .. } => "ports",
            What::Usage { .. } => "usage",
            What::Cli { .. } => "cli",
            What::Rollback { .. } => "rollback",
            What::Image { .. } => "image",
        }
    }
}

pub async fn run(_dir: &Path, args: Args) -> anyhow::Result<ExitCode> {
    if args.json {
        crate::bench::print_json(args.what.name());
    }
    match args.what {
        What::Store { objects } => crate::bench::store(objects).await?,
        What::Runtime {
            objects,
            idle_seconds,
        } => crate::bench::runtime::run(objects, idle_seconds).await?,
        What::Network {
            count,
            latency,
            concurrency,
            repairs,
        } => {
            let cfg = crate::bench::network::NetworkBenchConfig {
                count,
                latency,
                concurrency,
                repairs,
                ..Default::default()
            };
            let figures = crate::bench::network::bench_network_controller(&cfg).await?;
            figures.iter().for_each(crate::bench::emit);
        }
        What::Drift {
            rounds,
            resync_seconds,
            docker_image,
        } => crate::bench::drift::run(rounds, resync_seconds, docker_image).await?,
        What::Docker {
            single,
            burst,
            repairs,
        } => crate::bench::docker::run(single, burst, repairs).await?,
        What::Api(a) => crate::bench::api::run(a).await?,
        What::Image { rounds } => crate::bench::image::run(rounds).await?,
        What::Container {
            single,
            bulk,
            kills,
            no_isolation,
        } => crate::bench::container::run(single, bulk, kills, !no_isolation).await?,
        What::Probes { exec, tcp, seconds } => {
            crate::bench::probes::run(exec, tcp, seconds).await?
        }
        What::Cli { samples, kubectl } => crate::bench::cli::run(samples, kubectl).await?,
        What::Ports {
            requests,
            clients,
            rounds,
        } => crate::bench::ports::run(requests, clients, rounds).await?,
        What::Usage { containers, passes } => crate::bench::usage::run(containers, passes).await?,
        What::Rollback { rounds } => crate::bench::rollback::run_all(rounds).await?,
        What::Sandbox {
            latency,
            burst,
            copy_burst,
        } => {
            use crate::{bench::sandbox::bench_sandbox, snapshot::BackendMode};
            for (mode, n) in [(BackendMode::Btrfs, burst), (BackendMode::Copy, copy_burst)] {
                let figures = bench_sandbox(mode, latency, n).await?;
                figures.iter().for_each(crate::bench::emit);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
