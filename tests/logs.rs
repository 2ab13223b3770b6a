//! Log rotation end to end: a real `tend serve`, workloads that print far more than the limits;
//! what a user sees is bounded files on disk and `tend logs` reading across them in order.

mod common;

use common::daemon::Daemon;
use std::path::PathBuf;

fn chatty(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: tend.dev/v1\nkind: Container\nmetadata: {{name: {name}}}\nspec:\n  command: [/bin/sh, -c, 'i=0; while [ $i -lt 3000 ]; do echo line-$i-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; i=$((i+1)); done; echo done; exec sleep 3600']\n  stopGracePeriodSeconds: 0\n{extra}"
    )
}

/// The container's directory, where its log files are.
fn log_dir(d: &Daemon, name: &str) -> PathBuf {
    let v = d.get("container", name).unwrap();
    PathBuf::from(d.path())
        .join("containers")
        .join(v["metadata"]["uid"].as_str().unwrap())
}

/// The container's log files (`log`, `log.N`) and their sizes.
fn files(d: &Daemon, name: &str) -> Vec<(String, u64)> {
    let dir = log_dir(d, name);
    let mut out: Vec<(String, u64)> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .filter(|(n, _)| n == "log" || n.starts_with("log."))
        .collect();
    out.sort();
    out
}

/// `tend logs NAME` once it ends with `done`.
fn logs_done(d: &Daemon, name: &str) -> String {
    let logs = || String::from_utf8_lossy(&d.tend(&["logs", name]).stdout).into_owned();
    d.wait_for("container", name, "its log ends with done", |_| {
        logs().ends_with("done\n")
    });
    logs()
}

/// The numbers of the `line-N-` lines, which must run on without a gap.
fn contiguous(text: &str) -> Vec<u32> {
    let n: Vec<u32> = text
        .lines()
        .filter_map(|l| l.strip_prefix("line-")?.split('-').next()?.parse().ok())
        .collect();
    assert!(
        n.windows(2).all(|w| w[1] == w[0] + 1),
        "lines missing or out of order across the rotated files"
    );
    n
}

#[test]
fn logs_rotate_at_the_containers_and_the_daemons_limits_and_read_across_files() {
    if !common::privileged("logs") {
        return;
    }
    let d = Daemon::start(&[
        "--resync-seconds",
        "3600",
        "--snapshot-backend",
        "copy",
        "--log-max-size",
        "8Ki",
        "--log-max-files",
        "2",
    ]);
    d.apply(&format!(
        "{}---\n{}",
        chatty("own", "  logs: {maxSize: 4Ki, maxFiles: 3}\n"),
        chatty("dflt", "")
    ));

    // spec.logs: three files of at most 4 KiB; tend logs reads them oldest first.
    let text = logs_done(&d, "own");
    let f = files(&d, "own");
    let names: Vec<&str> = f.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["log", "log.1", "log.2"], "{f:?}");
    assert!(f.iter().all(|(_, size)| *size <= 4096), "{f:?}");
    let n = contiguous(&text);
    assert_eq!(n.last(), Some(&2999), "the newest lines are kept");
    assert!(n[0] > 0, "the oldest lines were rotated away");
    let newest = std::fs::read_to_string(log_dir(&d, "own").join("log")).unwrap();
    assert!(
        n.len() > newest.lines().count() + 1,
        "more than the newest file was read: {} lines",
        n.len()
    );

    // No spec.logs: the daemon's --log-max-size 8Ki --log-max-files 2.
    let text = logs_done(&d, "dflt");
    let f = files(&d, "dflt");
    let names: Vec<&str> = f.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["log", "log.1"], "{f:?}");
    assert!(f.iter().all(|(_, size)| *size <= 8192), "{f:?}");
    assert_eq!(contiguous(&text).last(), Some(&2999));

    // A limit below the smallest size is refused, naming the field, and changes nothing.
    let bad = d.path().join("bad.yaml");
    std::fs::write(&bad, chatty("bad", "  logs: {maxSize: 100}\n")).unwrap();
    let out = d.tend(&["apply", "-f", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("spec.logs.maxSize"),
        "{err}"
    );
    assert!(d.get("container", "bad").is_none());
}
