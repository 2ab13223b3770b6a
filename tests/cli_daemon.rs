//! The CLI against a live `tend serve`: object commands go through the API over the unix
//! socket and print exactly what they print with no daemon (`--direct` forces the store).

mod common;

use common::daemon::Daemon;
use common::Kill;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

/// The same command with the store opened directly.
fn direct(d: &Daemon, args: &[&str]) -> Output {
    d.cmd(args).arg("--direct").output().unwrap()
}

/// Writes `content` to `name` in the state dir and returns the path.
fn file(d: &Daemon, name: &str, content: &str) -> String {
    let p = d.path().join(name);
    std::fs::write(&p, content).unwrap();
    p.display().to_string()
}

fn start() -> Daemon {
    Daemon::start(&["--snapshot-backend", "copy"])
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn net(name: &str, subnet: &str) -> String {
    format!(
        "apiVersion: tend.dev/v1\nkind: Network\nmetadata: {{name: {name}, labels: {{app: web}}}}\nspec: {{subnet: {subnet}}}\n"
    )
}

fn same(d: &Daemon, args: &[&str]) -> Output {
    let (a, b) = (d.tend(args), direct(d, args));
    assert_eq!(
        a.status.code(),
        b.status.code(),
        "{args:?}: exit codes differ"
    );
    assert_eq!(text(&a.stdout), text(&b.stdout), "{args:?}: stdout differs");
    assert_eq!(text(&a.stderr), text(&b.stderr), "{args:?}: stderr differs");
    a
}

#[test]
fn object_commands_through_the_daemon_match_the_direct_path() {
    let d = start();
    let a = common::unique("cda");
    let b = common::unique("cdb");
    let f = file(
        &d,
        "two.yaml",
        &format!(
            "{}---\n{}",
            net(&a, "10.77.1.0/24"),
            net(&b, "10.77.2.0/24")
        ),
    );

    // Dry run through the daemon writes nothing; the real apply names every document.
    let dry = d.tend(&["apply", "-f", &f, "--dry-run"]);
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    assert!(text(&dry.stdout).contains(&format!("network.tend.dev/{a} created (dry run)")));
    assert_eq!(d.tend(&["get", "network", &a]).status.code(), Some(1));
    let out = d.tend(&["apply", "-f", &f]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("network.tend.dev/{a} created\nnetwork.tend.dev/{b} created\n")
    );
    let again = same(&d, &["apply", "-f", &f]);
    assert_eq!(text(&again.stdout).matches(" unchanged").count(), 2);

    // The CLI really went through the API: the daemon counted the LIST this get sends.
    let lists = |d: &Daemon| -> u64 {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let m = rt.block_on(d.client().raw(hyper::Method::GET, "/metrics", None, vec![]));
        let m = String::from_utf8_lossy(&m.unwrap().body).into_owned();
        m.lines()
            .filter(|l| l.starts_with("tend_api_requests_total{verb=\"LIST\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let before = lists(&d);
    assert!(d.tend(&["get", "networks"]).status.success());
    assert_eq!(lists(&d), before + 1, "tend get listed through the daemon");
    assert!(direct(&d, &["get", "networks"]).status.success());
    assert_eq!(lists(&d), before + 1, "--direct does not");

    // get in every format: the same bytes either way (names, yaml of a list by selector).
    let names = same(&d, &["get", "networks", "-l", "app=web", "-o", "name"]);
    assert_eq!(
        text(&names.stdout),
        format!("network.tend.dev/{a}\nnetwork.tend.dev/{b}\n")
    );
    let one = d.tend(&["get", "network", &a, "-o", "json"]);
    let v: Value = serde_json::from_slice(&one.stdout).unwrap();
    assert_eq!(v["spec"]["subnet"], "10.77.1.0/24");
    assert!(v["metadata"]["uid"].is_string());
    let yaml = text(&d.tend(&["get", "network", &a, "-o", "yaml"]).stdout);
    assert!(yaml.contains("subnet: 10.77.1.0/24"), "{yaml}");
    let all: Value =
        serde_json::from_slice(&d.tend(&["get", "all", "-A", "-o", "json"]).stdout).unwrap();
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
    for args in [
        &["get", "network", "nope"][..],
        &["get", "widgets"],
        &["get", "net", "-l", "app=db", "-o", "name"],
        &["describe", "network", "nope"],
        &["diff", "-f", &f],
    ] {
        same(&d, args);
    }
    let missing = d.tend(&["get", "network", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("not found"));

    // describe shows the object and its events (served by the events endpoint).
    let desc = d.tend(&["describe", "network", &a]);
    assert!(desc.status.success(), "{}", text(&desc.stderr));
    let desc = text(&desc.stdout);
    assert!(
        desc.contains(&format!("Name:               {a}")) && desc.contains("Events:"),
        "{desc}"
    );
    assert_eq!(d.tend(&["get", "events"]).status.code(), Some(0));

    // diff: 0 no change, 1 changes, 2 bad input.
    assert_eq!(d.tend(&["diff", "-f", &f]).status.code(), Some(0));
    let changed = file(&d, "changed.yaml", &net(&a, "10.77.9.0/24"));
    let out = d.tend(&["diff", "-f", &changed]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("+  subnet: 10.77.9.0/24"),
        "{}",
        text(&out.stdout)
    );
    let bad = file(&d, "bad.yaml", "nonsense: [");
    assert_eq!(d.tend(&["diff", "-f", &bad]).status.code(), Some(2));

    // Bad input names the document and the field, the same way, and writes nothing.
    let badspec = file(
        &d,
        "badspec.yaml",
        &format!(
            "{}---\n{}",
            net("okay", "10.77.3.0/24"),
            net("broken", "10.77.3.0/99")
        ),
    );
    let out = same(&d, &["apply", "-f", &badspec]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("document 2") && err.contains("spec.subnet"),
        "{err}"
    );
    assert_eq!(d.tend(&["get", "network", "okay"]).status.code(), Some(1));

    // A failure in the store mid-file (stale resourceVersion) names applied and unapplied docs.
    let stale = net(&a, "10.77.1.0/24").replace(
        &format!("name: {a},"),
        &format!("name: {a}, resourceVersion: \"999999\","),
    );
    let c = common::unique("cdc");
    let multi = file(
        &d,
        "multi.yaml",
        &format!(
            "{}---\n{stale}---\n{}",
            net(&c, "10.77.4.0/24"),
            net("never", "10.77.5.0/24")
        ),
    );
    let out = d.tend(&["apply", "-f", &multi]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("document 2 (network/{a})")), "{err}");
    assert!(err.contains("conflict"), "{err}");
    assert!(err.contains("applied 1 of 3 documents"), "{err}");
    assert!(
        err.contains(&format!("not applied: {multi}#2, {multi}#3")),
        "{err}"
    );
    assert!(text(&out.stdout).contains(&format!("network.tend.dev/{c} created")));

    // get -w prints the list, then changes as they happen.
    let mut w = Kill(
        d.cmd(&["get", "networks", "-w", "-o", "name"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = w.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let e = common::unique("cde");
    let ef = file(&d, "e.yaml", &net(&e, "10.77.6.0/24"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    assert!(d.tend(&["apply", "-f", &ef]).status.success());
    while !seen.contains(&format!("network.tend.dev/{e}")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => seen.push(l),
            Err(_) => panic!("get -w never showed {e}: {seen:?}"),
        }
    }
    assert!(seen.contains(&format!("network.tend.dev/{a}")), "{seen:?}");
    drop(w);

    // delete --wait returns once the finalizers ran and the objects are gone.
    let out = d.tend(&[
        "delete",
        "network",
        &a,
        &b,
        &c,
        &e,
        "--wait",
        "--timeout",
        "20",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("network.tend.dev/{a} deleted")));
    let left: Value =
        serde_json::from_slice(&d.tend(&["get", "all", "-A", "-o", "json"]).stdout).unwrap();
    assert_eq!(left["items"], serde_json::json!([]), "everything is gone");
    same(&d, &["delete", "network", "nope"]);
    same(&d, &["delete", "network", "nope", "--ignore-not-found"]);
}

#[test]
fn api_batch_apply_and_events_answer_in_their_own_shapes() {
    let d = start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = d.client();
        let good: tend_schema::AnyObject =
            serde_yaml_ng::from_str(&net(&common::unique("cdf"), "10.78.1.0/24")).unwrap();
        // An object the CLI would refuse: the server validates again and names the field.
        let mut bad = good.clone();
        bad.metadata.name = "bad".into();
        bad.spec = serde_json::json!({"subnet": "nope"});
        let r = c.apply_batch(&[good.clone(), bad], false).await.unwrap();
        assert!(
            r.items.is_empty(),
            "every item is decoded before anything is written"
        );
        let failed = r.failed.expect("the second item fails");
        assert_eq!(failed.index, 1);
        assert_eq!(failed.status["reason"], "Invalid");
        assert_eq!(
            failed.status["details"]["causes"][0]["field"],
            "spec.subnet"
        );
        let r = c
            .apply_batch(std::slice::from_ref(&good), false)
            .await
            .unwrap();
        assert_eq!((r.items[0].action.as_str(), r.failed), ("created", None));
        let r = c.apply_batch(&[good], true).await.unwrap();
        assert_eq!(r.items[0].action, "unchanged");
        // Events: a list, by namespace and by object; unknown selectors are 400.
        let raw = c
            .raw(
                hyper::Method::GET,
                "/apis/tend.dev/v1/namespaces/default/events",
                None,
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(raw.status, 200);
        assert_eq!(raw.json()["kind"], "EventList");
        let raw = c
            .raw(
                hyper::Method::GET,
                "/apis/tend.dev/v1/events?fieldSelector=spec.x%3D1",
                None,
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(raw.status, 400);
        assert_eq!(raw.json()["kind"], "Status");
        // log/exec exist only for containers, and a missing container is a 404 Status.
        let raw = c
            .raw(
                hyper::Method::GET,
                "/apis/tend.dev/v1/namespaces/default/networks/x/log",
                None,
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(raw.status, 404);
        let raw = c
            .raw(
                hyper::Method::POST,
                "/apis/tend.dev/v1/namespaces/default/containers/nope/exec",
                Some("application/json"),
                br#"{"command":["true"]}"#.to_vec(),
            )
            .await
            .unwrap();
        assert_eq!(raw.status, 404);
        assert_eq!(raw.json()["reason"], "NotFound");
    });
}

#[test]
fn native_logs_and_exec_through_the_daemon() {
    if !common::privileged("native_logs_and_exec_through_the_daemon") {
        return;
    }
    let d = start();
    let name = common::unique("cdl");
    let f = file(&d,
        "ct.yaml",
        &format!(
            "apiVersion: tend.dev/v1\nkind: Container\nmetadata: {{name: {name}}}\nspec:\n  command: [/bin/sh, -c, \"echo one; echo two >&2; exec sleep 3600\"]\n  stopGracePeriodSeconds: 1\n"
        ),
    );
    assert!(d.tend(&["apply", "-f", &f]).status.success());
    let target = format!("ct/{name}");
    let out = d.tend(&["wait", &target, "--timeout", "20s"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let deadline = Instant::now() + Duration::from_secs(5);
    let logs = loop {
        let s = text(&d.tend(&["logs", &name]).stdout);
        if s.contains("two") || Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(logs, "one\ntwo\n");
    same(&d, &["logs", &name, "--tail", "1"]);
    let out = same(
        &d,
        &["exec", &name, "--", "/bin/sh", "-c", "echo out; exit 7"],
    );
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(text(&out.stdout), "out\n");
    // Through the API too, stderr stays stderr.
    let out = d.tend(&["exec", &name, "--", "/bin/sh", "-c", "echo err >&2"]);
    assert_eq!(text(&out.stdout), "");
    assert_eq!(text(&out.stderr), "err\n");
    let out = d.tend(&["delete", "container", &name, "--wait", "--timeout", "20"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// A line of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn exec_through_the_daemon_streams_both_ways_and_dies_with_its_client() {
    if !common::privileged("exec_through_the_daemon_streams_both_ways_and_dies_with_its_client") {
        return;
    }
    let d = start();
    let name = common::unique("cdx");
    let f = file(
        &d,
        "ct.yaml",
        &format!(
            "apiVersion: tend.dev/v1\nkind: Container\nmetadata: {{name: {name}}}\nspec:\n  command: [/bin/sh, -c, \"exec sleep 3600\"]\n  stopGracePeriodSeconds: 1\n"
        ),
    );
    assert!(d.tend(&["apply", "-f", &f]).status.success());
    let out = d.tend(&["wait", &format!("ct/{name}"), "--timeout", "20s"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Exit code, stdout and stderr apart.
    let out = d.tend(&[
        "exec",
        &name,
        "--",
        "/bin/sh",
        "-c",
        "echo out; echo err >&2; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(text(&out.stdout), "out\n");
    assert_eq!(text(&out.stderr), "err\n");

    // stdin round trip: every byte value, 1 MiB, comes back unchanged through `cat`.
    let input: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
    let mut child = d
        .cmd(&["exec", "-i", &name, "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feed = {
        let input = input.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            stdin.write_all(&input).unwrap();
        })
    };
    let out = child.wait_with_output().unwrap();
    feed.join().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(out.stdout.len(), input.len());
    assert!(out.stdout == input, "binary bytes changed on the way");

    // 50 MiB of output pass through while the daemon holds no more than a few buffers.
    let daemon = d.pid().unwrap();
    let before = status_kib(daemon, "VmRSS");
    std::fs::write(format!("/proc/{daemon}/clear_refs"), "5").unwrap(); // VmHWM := VmRSS
    let size: usize = 50 << 20;
    let mut child = d
        .cmd(&[
            "exec",
            &name,
            "--",
            "head",
            "-c",
            &size.to_string(),
            "/dev/zero",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (mut total, mut buf) = (0usize, vec![0u8; 4096]);
    loop {
        use std::io::Read;
        let n = stdout.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        assert!(buf[..n].iter().all(|&b| b == 0));
        total += n;
    }
    assert!(child.wait().unwrap().success());
    let peak = status_kib(daemon, "VmHWM");
    eprintln!("daemon RSS before {before} KiB, peak during a 50 MiB exec {peak} KiB");
    assert_eq!(total, size);
    assert!(
        peak < before + 16 * 1024,
        "daemon grew from {before} to {peak} KiB for a 50 MiB exec"
    );

    // The client going away kills the command and what it started.
    let mut child = d
        .cmd(&[
            "exec",
            &name,
            "--",
            "/bin/sh",
            "-c",
            "sleep 3600 & echo $$ $!; wait",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pids: Vec<u32> = line
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2, "{line:?}");
    let live = format!(
        "for p in {} {}; do s=$(cut -d' ' -f3 /proc/$p/stat 2>/dev/null); \
         [ -n \"$s\" ] && [ \"$s\" != Z ] && exit 1; done; exit 0",
        pids[0], pids[1]
    );
    assert_eq!(
        d.tend(&["exec", &name, "--", "/bin/sh", "-c", &live])
            .status
            .code(),
        Some(1),
        "the exec'd processes run while their client does"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = child.wait();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = d.tend(&["exec", &name, "--", "/bin/sh", "-c", &live]);
        if out.status.code() == Some(0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "exec'd processes {pids:?} outlived their client"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = d.tend(&["delete", "container", &name, "--wait", "--timeout", "20"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn get_events_prints_json_and_yaml_and_refuses_flags_it_cannot_honour() {
    if !common::privileged("get_events_prints_json_and_yaml_and_refuses_flags_it_cannot_honour") {
        return;
    }
    let d = start();
    let name = common::unique("cde");
    let ctr = |gen: u32| {
        format!(
            "apiVersion: tend.dev/v1\nkind: Container\nmetadata: {{name: {name}}}\nspec:\n  command: [/bin/sleep, '3600']\n  env: [{{name: GEN, value: '{gen}'}}]\n  stopGracePeriodSeconds: 0\n"
        )
    };
    d.apply(&ctr(1));
    d.wait_ready("container", &name, Duration::from_secs(20));
    // A spec change replaces the workload, and says so in a Normal event.
    d.apply(&ctr(2));
    let deadline = Instant::now() + common::scaled(Duration::from_secs(20));
    let events = loop {
        let out = d.tend(&["get", "events", "-o", "json"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["kind"], "List");
        let items = v["items"].as_array().unwrap().clone();
        if items
            .iter()
            .any(|e| e["reason"] == "Replacing" && e["name"] == name.as_str())
        {
            break items;
        }
        assert!(Instant::now() < deadline, "no Replacing event: {v:#}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(events.iter().all(|e| e["lastTimestamp"].is_string()));
    let yaml = d.tend(&["get", "events", "-o", "yaml"]);
    let v: Value = serde_yaml_ng::from_slice(&yaml.stdout).unwrap();
    assert_eq!(v["items"].as_array().map(Vec::len), Some(events.len()));
    // What events cannot do is refused, naming the flag, rather than ignored.
    for (args, flag) in [
        (&["get", "events", "-l", "app=web"][..], "-l"),
        (&["get", "events", "-w"][..], "-w"),
        (&["get", "events", "-o", "name"][..], "-o name"),
    ] {
        let out = d.tend(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            text(&out.stderr).contains(flag),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}
