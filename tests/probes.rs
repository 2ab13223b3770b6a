//! Probes and dependencies end to end: a real `tend serve`, real workloads (busybox httpd, sh)
//! in their own namespaces, probes run by the daemon. Network probes reach only the loopback of
//! the container's own network namespace (a container without networks has one, lo only).

mod common;

use common::daemon::{condition, Daemon};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

fn daemon() -> Daemon {
    Daemon::start(&["--resync-seconds", "3600", "--snapshot-backend", "copy"])
}

/// A Container running `script` under /bin/sh on the host filesystem, with `extra` spec lines.
fn container(name: &str, script: &str, extra: &str) -> String {
    format!(
        "apiVersion: tend.dev/v1\nkind: Container\nmetadata: {{name: {name}}}\nspec:\n  command: [/bin/sh, -c, {script:?}]\n  stopGracePeriodSeconds: 1\n{extra}"
    )
}

fn exec_probe(kind: &str, script: &str, failure_threshold: u32) -> String {
    format!(
        "    {kind}: {{exec: {{command: [/bin/sh, -c, {script:?}]}}, periodSeconds: 1, failureThreshold: {failure_threshold}}}\n"
    )
}

fn cond<'a>(v: &'a Value, t: &str) -> &'a Value {
    v["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == t))
        .unwrap_or(&Value::Null)
}

fn time(v: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap()
}

fn mtime(p: &Path) -> chrono::DateTime<chrono::FixedOffset> {
    let t: chrono::DateTime<chrono::Utc> = std::fs::metadata(p).unwrap().modified().unwrap().into();
    t.into()
}

fn wait_file(p: &Path, what: &str) {
    let t0 = Instant::now();
    while !p.exists() {
        assert!(
            t0.elapsed() < common::scaled(Duration::from_secs(20)),
            "{what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn httpd_is_ready_only_once_it_answers() {
    if !common::privileged("httpd_is_ready_only_once_it_answers") {
        return;
    }
    let d = daemon();
    let www = d.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("healthz"), "ok\n").unwrap();
    let marker = d.path().join("httpd-started");
    let script = format!(
        "sleep 2; touch {m}; exec /bin/busybox httpd -f -p 127.0.0.1:18080 -h {w}",
        m = marker.display(),
        w = www.display()
    );
    let probes = "  probes:\n    startup: {tcpSocket: {port: 18080}, periodSeconds: 1, failureThreshold: 30}\n    readiness: {httpGet: {path: /healthz, port: 18080}, periodSeconds: 1}\n";
    d.apply(&container("web", &script, probes));
    let v = d.wait("container", "web", "running", |v| {
        v["status"]["phase"] == "Running"
    });
    if !marker.exists() {
        assert_eq!(condition(&v, "Ready"), "False", "{v:#}");
        assert_eq!(condition(&v, "Started"), "False", "{v:#}");
    }
    let v = d.wait_ready("container", "web", Duration::from_secs(20));
    // Seconds resolution on the conditions: Started (the tcpSocket startup probe) and Ready
    // (httpGet) no earlier than the second httpd came up.
    for t in ["Started", "Ready"] {
        let since = time(&cond(&v, t)["lastTransitionTime"]);
        assert!(
            since.timestamp() >= mtime(&marker).timestamp(),
            "{t} at {since}, httpd started at {}",
            mtime(&marker)
        );
    }
    assert_eq!(v["status"]["restartCount"], 0);
}

#[test]
fn a_failing_liveness_probe_restarts_in_time_and_the_event_shows_its_output() {
    if !common::privileged(
        "a_failing_liveness_probe_restarts_in_time_and_the_event_shows_its_output",
    ) {
        return;
    }
    let d = daemon();
    let healthy = d.path().join("healthy");
    let script = format!(
        "trap 'exit 0' TERM; touch {h}; while true; do sleep 0.1; done",
        h = healthy.display()
    );
    let probes = format!(
        "  probes:\n{}",
        exec_probe("liveness", &format!("cat {}", healthy.display()), 2)
    );
    d.apply(&container("live", &script, &probes));
    d.wait_ready("container", "live", Duration::from_secs(20));
    wait_file(&healthy, "the workload creates its health file");
    let (t0, deleted) = (Instant::now(), chrono::Utc::now());
    std::fs::remove_file(&healthy).unwrap();
    let v = d.wait("container", "live", "restarted", |v| {
        v["status"]["restartCount"] == 1
    });
    // periodSeconds × failureThreshold + 1 s, from the deletion to the new run's start (the
    // daemon's clock, not this test's polling).
    let took = time(&v["status"]["startedAt"]).signed_duration_since(deleted);
    assert!(
        took < chrono::Duration::seconds(3),
        "restarted after {took:?}"
    );
    eprintln!(
        "liveness restart: new run {took:?} after the deletion, seen after {:?}",
        t0.elapsed()
    );
    assert_eq!(v["status"]["lastState"]["reason"], "Unhealthy", "{v:#}");
    let out = d.tend(&["get", "events"]);
    let events = String::from_utf8_lossy(&out.stdout);
    let line = events
        .lines()
        .find(|l| l.contains("Unhealthy"))
        .unwrap_or_else(|| panic!("no Unhealthy event: {events}"));
    assert!(
        line.contains("liveness probe failed") && line.contains("No such file"),
        "{line}"
    );
    // The new run re-created the file: it stays.
    wait_file(&healthy, "the new run re-creates its health file");
    d.wait_ready("container", "live", Duration::from_secs(20));
}

#[test]
fn a_startup_probe_holds_liveness_off_during_a_long_start() {
    if !common::privileged("a_startup_probe_holds_liveness_off_during_a_long_start") {
        return;
    }
    let d = daemon();
    let up = d.path().join("up");
    let script = format!("sleep 4; touch {}; exec sleep 3600", up.display());
    let check = format!("cat {}", up.display());
    let probes = format!(
        "  probes:\n{}{}",
        exec_probe("startup", &check, 30),
        exec_probe("liveness", &check, 1)
    );
    d.apply(&container("slow", &script, &probes));
    let v = d.wait("container", "slow", "Started", |v| {
        condition(v, "Started") == "True"
    });
    // Liveness (failureThreshold 1, failing for 4 s without the gate) never restarted it.
    assert_eq!(v["status"]["restartCount"], 0, "{v:#}");
    assert!(up.exists());
    d.wait_ready("container", "slow", Duration::from_secs(10));
}

/// Appends to `log` whether db's readiness file existed when web started.
fn web_script(ready: &Path, log: &Path) -> String {
    format!(
        "if [ -e {r} ]; then echo after >> {l}; else echo BEFORE >> {l}; fi; exec sleep 3600",
        r = ready.display(),
        l = log.display()
    )
}

#[test]
fn web_starts_only_after_db_is_ready_also_after_a_crash_and_a_reboot() {
    if !common::privileged("web_starts_only_after_db_is_ready_also_after_a_crash_and_a_reboot") {
        return;
    }
    let mut d = daemon();
    let (ready, log) = (d.path().join("db-ready"), d.path().join("web.log"));
    let db = container(
        "db",
        &format!("sleep 2; touch {}; exec sleep 3600", ready.display()),
        &format!(
            "  probes:\n{}",
            exec_probe("readiness", &format!("cat {}", ready.display()), 1)
        ),
    );
    let web = container(
        "web",
        &web_script(&ready, &log),
        "  dependsOn: [{container: db, condition: Ready}]\n",
    );
    d.apply(&format!("{web}---\n{db}"));
    let w = d.wait("container", "web", "waiting", |v| {
        cond(v, "Ready")["reason"] == "WaitingForDependency"
    });
    assert!(
        cond(&w, "Ready")["message"]
            .as_str()
            .unwrap()
            .contains("\"db\""),
        "{w:#}"
    );
    let w = d.wait("container", "web", "running", |v| {
        v["status"]["phase"] == "Running"
    });
    let tree = d.tend(&["tree", "container/web"]);
    let tree = String::from_utf8_lossy(&tree.stdout);
    assert!(
        tree.starts_with("container/web  Ready=True Running")
            && tree.contains("└─ container/db  Ready=True Running"),
        "{tree}"
    );
    let db_v = d.get("container", "db").unwrap();
    assert!(
        time(&w["status"]["startedAt"]) >= time(&cond(&db_v, "Ready")["lastTransitionTime"]),
        "web started before db was Ready: {w:#} {db_v:#}"
    );

    // A host reboot: the daemon dies with every workload; db's readiness file is gone.
    d.kill9();
    for name in ["web", "db"] {
        let v = d.get("container", name).unwrap();
        let pid = v["status"]["pid"].as_i64().unwrap() as i32;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    std::fs::remove_file(&ready).unwrap();
    d.spawn();
    d.wait("container", "web", "restarted", |v| {
        v["status"]["restartCount"] == 1 && v["status"]["phase"] == "Running"
    });
    // And a SIGKILL of the daemon alone leaves both running, web not restarted.
    d.restart();
    d.wait_ready("container", "db", Duration::from_secs(20));
    let w = d.wait("container", "web", "running", |v| {
        v["status"]["phase"] == "Running"
    });
    assert_eq!(w["status"]["restartCount"], 1);
    let starts = std::fs::read_to_string(&log).unwrap();
    assert_eq!(starts, "after\nafter\n", "web's starts, in order");
}

#[test]
fn a_completed_dependency_waits_for_exit_0_and_a_failed_one_keeps_waiting() {
    if !common::privileged("a_completed_dependency_waits_for_exit_0_and_a_failed_one_keeps_waiting")
    {
        return;
    }
    let d = daemon();
    let (done, log) = (d.path().join("migrated"), d.path().join("app.log"));
    let migrate = container(
        "migrate",
        &format!("sleep 1; touch {}; exit 0", done.display()),
        "  restartPolicy: Never
",
    );
    let broken = container(
        "broken",
        "exit 3",
        "  restartPolicy: Never
",
    );
    let app = container(
        "app",
        &web_script(&done, &log),
        "  dependsOn: [{container: migrate, condition: Completed}]
",
    );
    let stuck = container(
        "stuck",
        "exec sleep 3600",
        "  dependsOn: [{container: broken, condition: Completed}]
",
    );
    d.apply(&format!(
        "{app}---
{migrate}---
{stuck}---
{broken}"
    ));
    let a = d.wait("container", "app", "running", |v| {
        v["status"]["phase"] == "Running"
    });
    let m = d.get("container", "migrate").unwrap();
    assert_eq!(m["status"]["phase"], "Succeeded", "{m:#}");
    assert!(
        time(&a["status"]["startedAt"]) >= time(&m["status"]["lastState"]["finishedAt"]),
        "app started before migrate completed: {a:#} {m:#}"
    );
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "after\n");

    // `broken` exited 3: Failed, not Completed; `stuck` waits and says why.
    d.wait("container", "broken", "failed", |v| {
        v["status"]["phase"] == "Failed"
    });
    let s = d.wait("container", "stuck", "says it waits for broken", |v| {
        let c = cond(v, "Ready");
        c["reason"] == "WaitingForDependency"
            && c["message"].as_str().unwrap_or("").contains("\"broken\"")
            && c["message"].as_str().unwrap_or("").contains("Failed")
    });
    assert!(
        s["status"]["pid"].is_null(),
        "stuck must not have started: {s:#}"
    );
}

#[test]
fn dependency_cycles_are_refused_naming_the_cycle() {
    if !common::privileged("dependency_cycles_are_refused_naming_the_cycle") {
        return;
    }
    let d = daemon();
    let refused = |yaml: &str| {
        let f = d.path().join(format!("{}.yaml", common::unique("cycle")));
        std::fs::write(&f, yaml).unwrap();
        let out = d.tend(&["apply", "-f", f.to_str().unwrap()]);
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let own = refused(&container("a", "true", "  dependsOn: [{container: a}]\n"));
    assert!(
        own.contains("spec.dependsOn") && own.contains("a → a"),
        "{own}"
    );
    d.apply(&container(
        "a",
        "exec sleep 3600",
        "  dependsOn: [{container: b}]\n",
    ));
    let two = refused(&container("b", "true", "  dependsOn: [{container: a}]\n"));
    assert!(two.contains("b → a → b"), "{two}");
    assert!(d.get("container", "b").is_none(), "nothing was written");
}

#[test]
fn a_ready_container_stays_ready_through_a_daemon_restart() {
    if !common::privileged("a_ready_container_stays_ready_through_a_daemon_restart") {
        return;
    }
    let mut d = daemon();
    let (ok, runs) = (d.path().join("ok"), d.path().join("probe-runs"));
    let probe = format!("echo x >> {}; cat {}", runs.display(), ok.display());
    std::fs::write(&ok, "ok").unwrap();
    let probes = format!(
        "  probes:\n{}{}",
        exec_probe("startup", &probe, 3),
        exec_probe("readiness", &probe, 3)
    );
    d.apply(&container("steady", "exec sleep 3600", &probes));
    let before = d.wait_ready("container", "steady", Duration::from_secs(20));
    let rv: u64 = before["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    d.restart();
    // Positive signal: the new daemon's probes ran three more times.
    let counted = || std::fs::read_to_string(&runs).unwrap().lines().count();
    let base = counted();
    let t0 = Instant::now();
    while counted() < base + 3 {
        assert!(
            t0.elapsed() < common::scaled(Duration::from_secs(20)),
            "no probes after restart: {}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = d.get("container", "steady").unwrap();
    assert_eq!(condition(&after, "Ready"), "True");
    assert_eq!(
        cond(&after, "Ready")["lastTransitionTime"],
        cond(&before, "Ready")["lastTransitionTime"]
    );
    assert_eq!(after["status"]["pid"], before["status"]["pid"]);
    // Every change the feed recorded since, across the restart: none with Ready other than True.
    let sql = format!(
        "SELECT COUNT(*) AS flips FROM changes c, json_each(json_extract(c.body, '$.status.conditions')) j \
         WHERE c.kind = 'Container' AND c.name = 'steady' AND c.revision > {rv} \
         AND json_extract(j.value, '$.type') IN ('Ready', 'Started') AND json_extract(j.value, '$.status') != 'True'"
    );
    let out = d.tend(&["db", "query", &sql]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let flips: Vec<&str> = text.lines().skip(1).map(str::trim).collect();
    assert_eq!(flips, ["0"], "{text}");
}

/// `(state, remote port)` of every IPv4 TCP socket of this network namespace.
fn tcp_sockets() -> Vec<(u8, u16)> {
    std::fs::read_to_string("/proc/net/tcp")
        .expect("read /proc/net/tcp")
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let port = u16::from_str_radix(f.get(2)?.split(':').nth(1)?, 16).ok()?;
            Some((u8::from_str_radix(f.get(3)?, 16).ok()?, port))
        })
        .collect()
}

#[tokio::test]
async fn a_tcp_probe_agrees_with_a_real_connect_and_disturbs_nothing() {
    if !common::privileged("a_tcp_probe_agrees_with_a_real_connect_and_disturbs_nothing") {
        return;
    }
    let sockets = tend::probe::SocketFactory::start().expect("socket thread");
    let me = std::process::id();
    // What a client's connect says, within 300 ms (a dropped SYN is retried after 1 s).
    let connects = |to: std::net::SocketAddr| {
        std::net::TcpStream::connect_timeout(&to, Duration::from_millis(300)).is_ok()
    };
    let probe = |to| {
        let sockets = sockets.clone();
        async move {
            tokio::time::timeout(Duration::from_millis(300), sockets.probe(me, to))
                .await
                .map_err(|_| std::io::Error::other("timed out"))
                .and_then(|r| r)
        }
    };

    // A listener: the probe succeeds, many times, and the server never sees a connection
    // (the probe is the kernel's own lookup of the listener a SYN would reach).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let to = listener.local_addr().unwrap();
    for _ in 0..20 {
        probe(to).await.expect("a listening port answers");
    }
    listener.set_nonblocking(true).unwrap();
    assert_eq!(std::iter::from_fn(|| listener.accept().ok()).count(), 0);
    // No TIME-WAIT (state 06) socket towards the port either.
    const TIME_WAIT: u8 = 0x06;
    let waiting = tcp_sockets()
        .into_iter()
        .filter(|&(st, port)| st == TIME_WAIT && port == to.port())
        .count();
    assert_eq!(waiting, 0, "probes left TIME-WAIT sockets towards {to}");
    assert!(connects(to));

    // A dual-stack IPv6 listener takes IPv4 connections; a v6-only one does not.
    let dual = std::net::TcpListener::bind("[::]:0").expect("listen [::]");
    let dual_to: std::net::SocketAddr = ([127, 0, 0, 1], dual.local_addr().unwrap().port()).into();
    assert_eq!(
        probe(dual_to).await.is_ok(),
        connects(dual_to),
        "dual-stack"
    );
    assert!(probe(dual_to).await.is_ok());
    let only6 = tokio::net::TcpSocket::new_v6().unwrap();
    nix::sys::socket::setsockopt(&only6, nix::sys::socket::sockopt::Ipv6V6Only, &true).unwrap();
    only6.bind("[::]:0".parse().unwrap()).unwrap();
    let only6_to: std::net::SocketAddr =
        ([127, 0, 0, 1], only6.local_addr().unwrap().port()).into();
    let _only6 = only6.listen(16).unwrap();
    assert_eq!(probe(only6_to).await.is_ok(), connects(only6_to), "v6-only");
    assert!(probe(only6_to).await.is_err());

    // A full accept queue drops the SYN: the probe fails at once and says why.
    let full = tokio::net::TcpSocket::new_v4().unwrap();
    full.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let full_to = full.local_addr().unwrap();
    let full = full.listen(0).unwrap();
    let _held: Vec<_> = (0..3)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(&full_to, Duration::from_millis(200)).ok()
        })
        .collect();
    let err = probe(full_to).await.expect_err("a full accept queue");
    assert!(err.to_string().contains("accept queue is full"), "{err}");
    assert!(
        !connects(full_to),
        "a real connect should not complete either"
    );
    drop(full);

    // Nothing listening: refused, like a connect.
    drop(listener);
    let err = probe(to).await.expect_err("a closed port refuses");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    assert!(!connects(to));

    // httpGet probes connect for real, with SO_LINGER 0: no TIME-WAIT left behind.
    let l2 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let to2 = l2.local_addr().unwrap();
    for _ in 0..5 {
        drop(sockets.connect(me, to2).await.expect("connect"));
    }
    l2.set_nonblocking(true).unwrap();
    assert_eq!(std::iter::from_fn(|| l2.accept().ok()).count(), 5);
    let waiting = tcp_sockets()
        .into_iter()
        .filter(|&(st, port)| st == TIME_WAIT && port == to2.port())
        .count();
    assert_eq!(waiting, 0, "connects left TIME-WAIT sockets towards {to2}");
}
