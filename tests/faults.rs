//! Fault injection into a real `tend serve`: failpoints (`<state-dir>/failpoints`) make driver
//! calls and store writes fail, hang, crawl or panic, and the state dir's disk fills up. In each
//! case tend says why in a condition and an event, backs off without a hot loop (its CPU time is
//! measured), answers reads throughout, recovers when the fault clears, and the database passes
//! `tend db check` afterwards.

mod common;

use common::daemon::{cpu_ticks, ready, ready_reason, Daemon};
use std::process::Command;
use std::time::{Duration, Instant};
use tend_schema::store::{EventQuery, Store};
use tend_schema::{AnyObject, Kind, ObjectKey};

const CTR: &str = "apiVersion: tend.dev/v1\nkind: Container\nmetadata: {name: NAME}\nspec:\n  command: [/bin/sleep, \"3600\"]\n  stopGracePeriodSeconds: 1\n";

fn ctr(name: &str) -> String {
    CTR.replace("NAME", name)
}

/// A daemon with fault injection on (`--failpoints`), started.
fn faulty() -> Daemon {
    let mut d = Daemon::unstarted("tend-fault", &["--failpoints"]);
    d.spawn();
    d
}

fn set_faults(d: &Daemon, lines: &str) {
    let p = d.path().join("failpoints");
    if lines.is_empty() {
        let _ = std::fs::remove_file(p);
    } else {
        std::fs::write(p, lines).unwrap();
    }
}

fn get(d: &mut Daemon, kind: Kind, name: &str) -> Option<AnyObject> {
    let s = d.store();
    d.rt()
        .block_on(s.get(&ObjectKey::new(kind, "default", name)))
        .ok()
}

/// Waits until the object satisfies `pred` (20 s at most).
fn wait(d: &mut Daemon, kind: Kind, name: &str, what: &str, pred: impl Fn(&AnyObject) -> bool) {
    let t0 = Instant::now();
    loop {
        if get(d, kind, name).is_some_and(|o| pred(&o)) {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{name}: {what}: {:?}\n{}",
            get(d, kind, name).map(|o| o.status),
            d.log()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn events(d: &mut Daemon, kind: Kind, name: &str) -> Vec<String> {
    let s = d.store();
    let q = EventQuery {
        namespace: None,
        object: Some(ObjectKey::new(kind, "default", name)),
        limit: None,
        ..Default::default()
    };
    d.rt()
        .block_on(s.list_events(&q))
        .unwrap()
        .into_iter()
        .map(|e| format!("{} {}", e.reason, e.message))
        .collect()
}

/// The most CPU (fraction of one core) a daemon may use while it backs off one failing object
/// and serves a read every 200 ms. Measured 2.9–6.5 % on a loaded 2-core machine (the reads
/// included); a retry loop that skipped the backoff used 116 % (the bug this catches). Twice the
/// worst measurement, not a guess far away from it.
const HOT_LOOP: f64 = 0.15;

/// Over `secs` seconds: the daemon's CPU use (fraction of one core), while reads through the
/// CLI and the API keep answering (each within a second).
fn cpu_while_reading(d: &Daemon, secs: u64) -> f64 {
    let pid = d.pid().unwrap();
    let hz = 100.0; // USER_HZ on Linux
    let before = cpu_ticks(pid);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        let t = Instant::now();
        let out = d.tend(&["get", "containers", "-o", "name"]);
        assert!(out.status.success(), "tend get failed during the fault");
        let (code, _) = d.http(
            "GET",
            "/apis/tend.dev/v1/namespaces/default/containers",
            None,
            "",
        );
        assert_eq!(code, 200, "GET containers during the fault");
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "reads slow: {:?}",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let used = (cpu_ticks(pid) - before) as f64 / hz;
    used / t0.elapsed().as_secs_f64()
}

fn db_check(d: &Daemon) {
    let out = d.tend(&["db", "check"]);
    assert!(
        out.status.success(),
        "tend db check: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn driver_errors_are_reported_backed_off_and_recovered() {
    if !common::privileged("driver_errors_are_reported_backed_off_and_recovered") {
        return;
    }
    let mut d = faulty();
    set_faults(&d, "shim.spawn=error(no more processes)\n");
    d.apply(&ctr("victim"));
    wait(&mut d, Kind::Container, "victim", "StartFailed", |o| {
        ready(o) == "False" && ready_reason(o).contains("StartFailed")
    });
    let cpu = cpu_while_reading(&d, 4);
    eprintln!(
        "faults: shim.spawn error: daemon CPU {:.1}% of a core",
        cpu * 100.0
    );
    assert!(cpu < HOT_LOOP, "hot loop: {:.0}% of a core", cpu * 100.0);
    let ev = events(&mut d, Kind::Container, "victim");
    assert!(
        ev.iter().any(|e| e.contains("no more processes")),
        "no event says why: {ev:?}"
    );
    assert!(d.shims().is_empty());
    set_faults(&d, "");
    // Backoff may have grown to a few seconds; the resync (2 s) or the retry brings it back.
    wait(
        &mut d,
        Kind::Container,
        "victim",
        "Running after the fault",
        |o| o.status["phase"] == "Running",
    );
    assert_eq!(d.shims().len(), 1);
    db_check(&d);
}

#[test]
fn hangs_and_slow_calls_do_not_stop_reads_or_other_objects() {
    if !common::privileged("hangs_and_slow_calls_do_not_stop_reads_or_other_objects") {
        return;
    }
    let mut d = faulty();
    let src = tempfile::tempdir().unwrap();
    let tree = common::fixtures::busybox_rootfs(src.path(), &[]);
    set_faults(&d, "snapshot.import=hang\nnet.attach=sleep(1500)\n");
    d.apply(&format!(
        "apiVersion: tend.dev/v1\nkind: State\nmetadata: {{name: stuck}}\nspec: {{source: {{directory: {}}}}}\n---\n\
         apiVersion: tend.dev/v1\nkind: Network\nmetadata: {{name: slow}}\nspec: {{subnet: 10.{}.251.0/24}}\n---\n{}  networks: [{{name: slow}}]\n---\n{}",
        tree.display(),
        100 + std::process::id() % 100,
        ctr("slowpoke"),
        ctr("bystander")
    ));
    // Another object converges while an import hangs.
    wait(
        &mut d,
        Kind::Container,
        "bystander",
        "Running despite the hang",
        |o| o.status["phase"] == "Running",
    );
    let t0 = Instant::now();
    wait(
        &mut d,
        Kind::Container,
        "slowpoke",
        "Running after a slow attach",
        |o| o.status["phase"] == "Running",
    );
    eprintln!(
        "faults: slow attach (1.5 s) -> Running in {:?}",
        t0.elapsed()
    );
    let cpu = cpu_while_reading(&d, 3);
    eprintln!(
        "faults: import hanging: daemon CPU {:.1}% of a core",
        cpu * 100.0
    );
    assert!(cpu < HOT_LOOP, "hot loop: {:.0}% of a core", cpu * 100.0);
    assert_ne!(
        get(&mut d, Kind::State, "stuck").map(|o| ready(&o).to_string()),
        Some("True".into())
    );
    set_faults(&d, "");
    wait(
        &mut d,
        Kind::State,
        "stuck",
        "Ready after the hang ends",
        |o| ready(o) == "True",
    );
    db_check(&d);
}

#[test]
fn store_busy_never_starts_a_workload_twice_and_recovers() {
    if !common::privileged("store_busy_never_starts_a_workload_twice_and_recovers") {
        return;
    }
    let mut d = faulty();
    d.apply(&ctr("before"));
    wait(&mut d, Kind::Container, "before", "Running", |o| {
        o.status["phase"] == "Running"
    });
    // Every write of the daemon fails as SQLITE_BUSY; the CLI writing to the store itself
    // (`--direct`, another process) still can.
    set_faults(&d, "store.write=error(database is locked)\n");
    let f = d.path().join("during.yaml");
    std::fs::write(&f, ctr("during")).unwrap();
    let out = d.tend(&["--direct", "apply", "-f", f.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Through the daemon's API, the same write is refused with a clear error, not a hang.
    let f2 = d.path().join("refused.yaml");
    std::fs::write(&f2, ctr("refused")).unwrap();
    let t = Instant::now();
    let out = d.tend(&["apply", "-f", f2.to_str().unwrap()]);
    eprintln!(
        "faults: apply through the API while the store is busy: {} in {:?}: {}",
        out.status,
        t.elapsed(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    let through_api = usize::from(out.status.success());
    std::thread::sleep(Duration::from_secs(2));
    let cpu = cpu_while_reading(&d, 4);
    eprintln!(
        "faults: store busy: daemon CPU {:.1}% of a core",
        cpu * 100.0
    );
    assert!(cpu < HOT_LOOP, "hot loop: {:.0}% of a core", cpu * 100.0);
    // The workload may have started, but only once, however often its status write failed.
    assert!(d.shims().values().all(|p| p.len() == 1));
    assert!(d.shims().len() <= 2 + through_api);
    set_faults(&d, "");
    wait(
        &mut d,
        Kind::Container,
        "during",
        "Running after the store recovers",
        |o| o.status["phase"] == "Running",
    );
    if through_api == 1 {
        wait(&mut d, Kind::Container, "refused", "Running", |o| {
            o.status["phase"] == "Running"
        });
    }
    assert_eq!(d.shims().len(), 2 + through_api, "{:?}", d.shims());
    assert!(d.shims().values().all(|p| p.len() == 1));
    // A panic in a driver call does not take the daemon down.
    set_faults(&d, "shim.spawn=panic\n");
    d.apply(&ctr("panicky"));
    std::thread::sleep(Duration::from_secs(1));
    let (code, _) = d.http(
        "GET",
        "/apis/tend.dev/v1/namespaces/default/containers",
        None,
        "",
    );
    assert_eq!(code, 200, "API after a panic");
    set_faults(&d, "");
    wait(
        &mut d,
        Kind::Container,
        "panicky",
        "Running after the panic",
        |o| o.status["phase"] == "Running",
    );
    db_check(&d);
}

/// A small tmpfs mounted on a temp dir; Drop unmounts it.
struct Tmpfs(tempfile::TempDir);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.0.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn a_full_disk_is_reported_survives_sigkill_and_recovers() {
    if !common::privileged("a_full_disk_is_reported_survives_sigkill_and_recovers") {
        return;
    }
    let mnt = Tmpfs(
        tempfile::Builder::new()
            .prefix("tend-full")
            .tempdir()
            .unwrap(),
    );
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
        .arg(mnt.0.path())
        .status()
        .unwrap();
    assert!(ok.success());
    let mut d = Daemon::unstarted("tend-fault", &["--failpoints"]);
    // The daemon's state dir is on the tmpfs.
    let state = mnt.0.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    d.at = Some(state);
    d.spawn();
    d.apply(&ctr("steady"));
    wait(&mut d, Kind::Container, "steady", "Running", |o| {
        o.status["phase"] == "Running"
    });
    // Fill the disk but for 1 MiB: room for the database to grow a little, not for an import
    // of the 2 MB busybox tree.
    let filler = mnt.0.path().join("filler");
    let st = nix::sys::statvfs::statvfs(mnt.0.path()).unwrap();
    let free = st.blocks_available() as u64 * st.fragment_size() as u64;
    std::fs::write(&filler, vec![0u8; (free - (1 << 20)) as usize]).unwrap();
    let src = tempfile::tempdir().unwrap();
    let tree = common::fixtures::busybox_rootfs(src.path(), &[]);
    // The CLI may or may not manage to write; when it does, the import cannot.
    let y = format!(
        "apiVersion: tend.dev/v1\nkind: State\nmetadata: {{name: big}}\nspec: {{source: {{directory: {}}}}}\n",
        tree.display()
    );
    let f = src.path().join("big.yaml");
    std::fs::write(&f, &y).unwrap();
    let applied = d.tend(&["apply", "-f", f.to_str().unwrap()]);
    eprintln!(
        "faults: apply on a full disk: {} {}",
        applied.status,
        String::from_utf8_lossy(&applied.stderr).trim()
    );
    if applied.status.success() {
        wait(
            &mut d,
            Kind::State,
            "big",
            "import fails on a full disk",
            |o| ready(o) == "False",
        );
        let ev = events(&mut d, Kind::State, "big");
        eprintln!("faults: disk full: State big: {ev:?}");
        assert!(!ev.is_empty(), "no event about the failed import");
    }
    let cpu = cpu_while_reading(&d, 3);
    eprintln!(
        "faults: disk full: daemon CPU {:.1}% of a core",
        cpu * 100.0
    );
    assert!(cpu < HOT_LOOP, "hot loop: {:.0}% of a core", cpu * 100.0);
    // SIGKILL while full, restart while full: the store must open and stay consistent.
    d.kill9();
    d.spawn();
    db_check(&d);
    std::fs::remove_file(&filler).unwrap();
    if !applied.status.success() {
        d.tend(&["apply", "-f", f.to_str().unwrap()]);
    }
    wait(
        &mut d,
        Kind::State,
        "big",
        "Ready once space is back",
        |o| ready(o) == "True",
    );
    wait(&mut d, Kind::Container, "steady", "still Running", |o| {
        o.status["phase"] == "Running"
    });
    assert_eq!(d.shims().len(), 1);
    db_check(&d);
    drop(d);
}
