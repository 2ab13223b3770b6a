//! The crash suite: a mixed workload of States, Sandboxes, Networks, native Containers and a few
//! `runtime: docker` ones driven
//! through a real `tend serve` that is SIGKILLed at random moments during convergence, updates and
//! deletion; after every restart nothing is lost, nothing ran twice, no lease is duplicated, and
//! after deleting everything nothing of the instance is left on the host.
//!
//! Bounded for CI (200 objects, 20 cycles, about two minutes); scale by hand with
//! `TEND_CHAOS_OBJECTS`, `TEND_CHAOS_CYCLES`, and replay a run with `TEND_CHAOS_SEED`.

mod common;

use common::daemon::{alive, docker_containers, ready, ready_reason, Daemon};
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};
use tend_schema::AnyObject;

/// The local image the Docker containers run (deploy/docker-test-image.sh builds it).
const DOCKER_IMAGE: &str = "tend-test/busybox:latest";

fn uid(o: &AnyObject) -> &str {
    o.metadata.uid.as_deref().unwrap_or("")
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One Container the test wants: its rootfs Sandbox, its Network, and an update counter.
#[derive(Clone)]
struct Ctr {
    /// `runtime: docker` (the local test image) instead of native.
    docker: bool,
    sandbox: Option<String>,
    network: Option<String>,
    gen: u32,
}

/// Everything the test has declared (the "desired rows" that must never be lost).
struct Desired {
    /// Holds the busybox tree States import (outside the state dir: tend refuses sources there).
    src: tempfile::TempDir,
    states: Vec<String>,
    sandboxes: BTreeMap<String, String>,
    networks: BTreeMap<String, String>,
    containers: BTreeMap<String, Ctr>,
}

impl Desired {
    fn build(objects: usize, rng: &mut impl Rng) -> Self {
        let src = tempfile::Builder::new()
            .prefix("tend-chaos-src")
            .tempdir()
            .unwrap();
        common::fixtures::busybox_rootfs(src.path(), &[]);
        let octet = rng.random_range(100..200u32);
        let states: Vec<String> = (0..4).map(|i| format!("st{i}")).collect();
        let networks = (0..6)
            .map(|i| (format!("net{i}"), format!("10.{octet}.{i}.0/24")))
            .collect();
        let rest = objects.saturating_sub(10);
        let sandboxes: BTreeMap<_, _> = (0..rest / 5)
            .map(|i| (format!("sb{i}"), format!("st{}", i % 4)))
            .collect();
        let mut containers = BTreeMap::new();
        let n_ctr = rest - sandboxes.len();
        for i in 0..n_ctr {
            // A third on the host fs, a third on a Sandbox (half of them networked), a third
            // networked on the host fs.
            // One in twenty runs on dockerd (an image, so no Sandbox; every other one networked).
            let docker = i % 20 == 0;
            let sandbox =
                (!docker && i % 3 == 1 && i / 3 < sandboxes.len()).then(|| format!("sb{}", i / 3));
            let network = (i % 3 == 2 || (i % 3 == 1 && i % 2 == 0) || (docker && i % 40 == 0))
                .then(|| format!("net{}", i % 6));
            containers.insert(
                format!("c{i}"),
                Ctr {
                    docker,
                    sandbox,
                    network,
                    gen: 0,
                },
            );
        }
        Desired {
            src,
            states,
            sandboxes,
            networks,
            containers,
        }
    }

    fn total(&self) -> usize {
        self.states.len() + self.sandboxes.len() + self.networks.len() + self.containers.len()
    }

    fn yaml(&self) -> String {
        let tree = self.src.path().join("rootfs").display().to_string();
        let mut y = String::new();
        for s in &self.states {
            y += &format!("---\napiVersion: tend.dev/v1\nkind: State\nmetadata: {{name: {s}}}\nspec: {{source: {{directory: {tree}}}}}\n");
        }
        for (s, st) in &self.sandboxes {
            y += &format!("---\napiVersion: tend.dev/v1\nkind: Sandbox\nmetadata: {{name: {s}}}\nspec: {{state: {st}}}\n");
        }
        for (n, subnet) in &self.networks {
            y += &format!("---\napiVersion: tend.dev/v1\nkind: Network\nmetadata: {{name: {n}}}\nspec: {{subnet: {subnet}}}\n");
        }
        for (name, c) in &self.containers {
            y += &container_yaml(name, c);
        }
        y
    }
}

fn container_yaml(name: &str, c: &Ctr) -> String {
    let mut y = format!(
        "---\napiVersion: tend.dev/v1\nkind: Container\nmetadata: {{name: {name}}}\nspec:\n  command: [/bin/sleep, \"3600\"]\n  env: [{{name: GEN, value: \"{}\"}}]\n  stopGracePeriodSeconds: 1\n  resources: {{memory: 32Mi, pids: 16}}\n",
        c.gen
    );
    if c.docker {
        y += &format!("  runtime: docker\n  image: {DOCKER_IMAGE}\n");
    }
    if let Some(s) = &c.sandbox {
        y += &format!("  rootfs: {{sandbox: {s}}}\n");
    }
    if let Some(n) = &c.network {
        y += &format!("  networks: [{{name: {n}}}]\n");
    }
    y
}

/// Whether the store holds exactly the desired objects, all Ready and Running at their
/// generation.
fn converged(want: &Desired, objs: &[AnyObject]) -> Result<(), String> {
    let mut names: HashMap<&str, HashSet<&str>> = HashMap::new();
    for o in objs {
        names
            .entry(o.kind.as_str())
            .or_default()
            .insert(&o.metadata.name);
        if ready(o) != "True" {
            return Err(format!(
                "{} {} not Ready: {}",
                o.kind,
                o.metadata.name,
                ready_reason(o)
            ));
        }
        if o.kind == "Container"
            && (o.status["phase"] != "Running"
                || o.status["observedGeneration"].as_i64() != Some(o.metadata.generation))
        {
            return Err(format!(
                "Container {} not Running at its generation",
                o.metadata.name
            ));
        }
    }
    let expect = [
        ("State", want.states.iter().cloned().collect::<HashSet<_>>()),
        ("Sandbox", want.sandboxes.keys().cloned().collect()),
        ("Network", want.networks.keys().cloned().collect()),
        ("Container", want.containers.keys().cloned().collect()),
    ];
    for (kind, set) in expect {
        let have: HashSet<String> = names
            .get(kind)
            .map(|s| s.iter().map(|n| n.to_string()).collect())
            .unwrap_or_default();
        if have != set {
            let lost: Vec<_> = set.difference(&have).collect();
            let extra: Vec<_> = have.difference(&set).collect();
            return Err(format!("{kind}: lost {lost:?}, unexpected {extra:?}"));
        }
    }
    Ok(())
}

/// Running containers' (pid, restartCount) by name, from the store.
fn running(objs: &[AnyObject]) -> HashMap<String, (i64, i64)> {
    objs.iter()
        .filter(|o| o.kind == "Container" && o.status["phase"] == "Running")
        .filter(|o| o.status["observedGeneration"].as_i64() == Some(o.metadata.generation))
        .filter_map(|o| {
            Some((
                o.metadata.name.clone(),
                (
                    o.status["pid"].as_i64()?,
                    o.status["restartCount"].as_i64().unwrap_or(0),
                ),
            ))
        })
        .collect()
}

/// The invariants after a restart and convergence.
fn check(
    d: &mut Daemon,
    want: &Desired,
    before: &HashMap<String, (i64, i64)>,
    touched: &HashSet<String>,
) {
    let objs = d.objects();
    let by_name: HashMap<&str, &AnyObject> = objs
        .iter()
        .filter(|o| o.kind == "Container")
        .map(|o| (o.metadata.name.as_str(), o))
        .collect();
    // The same workload as before the kill, never restarted by the kill.
    for (name, (pid, restarts)) in before {
        if touched.contains(name) {
            continue;
        }
        let Some(o) = by_name.get(name.as_str()) else {
            continue;
        };
        assert_eq!(
            o.status["pid"].as_i64(),
            Some(*pid),
            "{name}: a different workload after the restart"
        );
        assert_eq!(
            o.status["restartCount"].as_i64().unwrap_or(0),
            *restarts,
            "{name}: restarted by a daemon kill"
        );
    }
    // One shim per native container, none for anything else; every workload is alive.
    let shims = d.shims();
    for o in by_name.values() {
        let pids = shims.get(uid(o)).cloned().unwrap_or_default();
        let want = if o.spec["runtime"] == "docker" { 0 } else { 1 };
        assert_eq!(pids.len(), want, "{}: shims {pids:?}", o.metadata.name);
        let pid = o.status["pid"].as_i64().unwrap() as i32;
        assert!(alive(pid), "{}: workload {pid} dead", o.metadata.name);
    }
    let live: HashSet<&str> = by_name.values().map(|o| uid(o)).collect();
    // Exactly one Docker container per docker Container, the one its status names.
    let docker = docker_containers(&d.instance());
    let want_docker: BTreeSet<String> = by_name
        .values()
        .filter(|o| o.spec["runtime"] == "docker")
        .filter_map(|o| o.status["containerID"].as_str().map(str::to_string))
        .collect();
    assert_eq!(docker, want_docker, "Docker containers of this instance");
    for (uid, pids) in &shims {
        assert!(live.contains(uid.as_str()), "stray shim {uid} {pids:?}");
    }
    // Leases: one per (network, container) that asks for it, matching the status; no other.
    let net_uid: HashMap<&str, &str> = objs
        .iter()
        .filter(|o| o.kind == "Network")
        .map(|o| (o.metadata.name.as_str(), uid(o)))
        .collect();
    let leases = d.leases();
    let mut seen_addr = HashSet::new();
    let mut per_owner: HashMap<(&str, &str), u32> = HashMap::new();
    for l in &leases {
        assert!(
            seen_addr.insert((l.network_uid.as_str(), l.address)),
            "duplicate lease {l:?}"
        );
        *per_owner
            .entry((l.network_uid.as_str(), l.owner_uid.as_str()))
            .or_default() += 1;
    }
    let mut wanted = 0;
    for (name, c) in &want.containers {
        let Some(net) = &c.network else { continue };
        wanted += 1;
        let o = by_name[name.as_str()];
        let nu = net_uid[net.as_str()];
        assert_eq!(
            per_owner.get(&(nu, uid(o))),
            Some(&1),
            "{name}: leases on {net}"
        );
        let ip = o.status["networks"][0]["ip"].as_str().unwrap_or("");
        assert!(
            leases
                .iter()
                .any(|l| l.owner_uid == uid(o) && l.address.to_string() == ip),
            "{name}: status ip {ip:?} is not its lease"
        );
    }
    assert_eq!(
        leases.len(),
        wanted,
        "leases beyond the wanted ones: {leases:?}"
    );
}

#[test]
fn sigkill_during_convergence_updates_and_deletion_loses_and_leaks_nothing() {
    if !common::privileged(
        "sigkill_during_convergence_updates_and_deletion_loses_and_leaks_nothing",
    ) {
        return;
    }
    let objects = env_usize("TEND_CHAOS_OBJECTS", 200).max(20);
    let cycles = env_usize("TEND_CHAOS_CYCLES", 20).max(5);
    chaos(objects, cycles, &[]);
}

/// The same on the btrfs backend (an embedded loop image, unmounted by the harness's Drop),
/// smaller: a quarter of the objects, six kills.
#[test]
fn sigkill_on_the_btrfs_backend_loses_and_leaks_nothing() {
    if !common::privileged("sigkill_on_the_btrfs_backend_loses_and_leaks_nothing") {
        return;
    }
    let objects = (env_usize("TEND_CHAOS_OBJECTS", 200) / 4).max(20);
    chaos(
        objects,
        6,
        &["--snapshot-backend", "btrfs", "--btrfs-image-size", "512Mi"],
    );
}

fn chaos(objects: usize, cycles: usize, serve_args: &[&str]) {
    let seed = std::env::var("TEND_CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("chaos: {objects} objects, {cycles} cycles, {serve_args:?}, TEND_CHAOS_SEED={seed}");
    let image = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/docker-test-image.sh");
    assert!(std::process::Command::new(image)
        .status()
        .unwrap()
        .success());
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let t0 = Instant::now();
    let mut d = Daemon::unstarted("tend-chaos", serve_args);
    let mut want = Desired::build(objects, &mut rng);
    assert!(want.total() >= objects);
    d.spawn();
    let mut next = want.containers.len();
    let mut converge_times = Vec::new();
    // Cycle 0 kills during the first convergence; the others during updates.
    let update_cycles = cycles - 3;
    for cycle in 0..update_cycles {
        let mut touched = HashSet::new();
        if cycle == 0 {
            d.apply(&want.yaml());
        } else {
            let names: Vec<String> = want.containers.keys().cloned().collect();
            let mut y = String::new();
            match rng.random_range(0..3) {
                // Update: a new spec generation replaces the workload.
                0 => {
                    // Distinct names: one input may declare an object once.
                    let picked: BTreeSet<String> = (0..rng.random_range(1..8))
                        .map(|_| names[rng.random_range(0..names.len())].clone())
                        .collect();
                    for n in picked {
                        let c = want.containers.get_mut(&n).unwrap();
                        c.gen += 1;
                        y += &container_yaml(&n, c);
                        touched.insert(n);
                    }
                }
                // Delete some and add others (which take over their networks and Sandboxes).
                1 => {
                    let mut gone = Vec::new();
                    for _ in 0..rng.random_range(1..5) {
                        let n = names[rng.random_range(0..names.len())].clone();
                        if let Some(c) = want.containers.remove(&n) {
                            gone.push(n.clone());
                            touched.insert(n);
                            let name = format!("c{next}");
                            next += 1;
                            let c = Ctr { gen: 0, ..c };
                            y += &container_yaml(&name, &c);
                            touched.insert(name.clone());
                            want.containers.insert(name, c);
                        }
                    }
                    let mut args = vec!["delete", "container"];
                    args.extend(gone.iter().map(|s| s.as_str()));
                    let out = d.tend(&args);
                    assert!(
                        out.status.success(),
                        "{}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                // New containers on the host fs and on networks.
                _ => {
                    for _ in 0..rng.random_range(1..6) {
                        let name = format!("c{next}");
                        next += 1;
                        let c = Ctr {
                            docker: false,
                            sandbox: None,
                            network: rng.random_bool(0.5).then(|| format!("net{}", next % 6)),
                            gen: 0,
                        };
                        y += &container_yaml(&name, &c);
                        touched.insert(name.clone());
                        want.containers.insert(name, c);
                    }
                }
            }
            if !y.is_empty() {
                d.apply(&y);
            }
        }
        let pause = if cycle == 0 {
            rng.random_range(0..2000)
        } else {
            rng.random_range(0..400)
        };
        std::thread::sleep(Duration::from_millis(pause));
        let before = running(&d.objects());
        d.kill9();
        d.spawn();
        d.wait_readyz();
        let took = d.wait_all(90, &format!("cycle {cycle}: convergence"), |o| {
            converged(&want, o)
        });
        converge_times.push(took);
        check(&mut d, &want, &before, &touched);
        eprintln!(
            "chaos: cycle {cycle}: killed after {pause} ms, {} objects converged {took:?} after restart",
            want.total()
        );
    }
    // Deletion, killed three times on the way.
    d.apply(&want.yaml());
    let all = d.path().join("all.yaml");
    std::fs::write(&all, want.yaml()).unwrap();
    let out = d.tend(&["delete", "-f", all.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for cycle in 0..3 {
        std::thread::sleep(Duration::from_millis(rng.random_range(300..4000)));
        let left = d.objects().len();
        d.kill9();
        d.spawn();
        eprintln!("chaos: deletion cycle {cycle}: killed with {left} objects left");
    }
    let took = d.wait_all(90, "deletion", |o| {
        if o.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} left, e.g. {} {}",
                o.len(),
                o[0].kind,
                o[0].metadata.name
            ))
        }
    });
    eprintln!("chaos: everything deleted {took:?} after the last restart");
    assert!(d.leases().is_empty(), "leases left: {:?}", d.leases());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = d.host_leftovers();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "leaked host objects: {left:#?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    converge_times.sort();
    eprintln!(
        "chaos: {cycles} kills, convergence after restart p50 {:?} max {:?}, total {:?}",
        converge_times[converge_times.len() / 2],
        converge_times.last().unwrap(),
        t0.elapsed()
    );
}
