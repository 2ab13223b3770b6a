//! Black-box tests of `tend apply/get/diff/delete/db` on a real store in a temp state dir.

use std::io::Write;
use std::process::{Command, Output, Stdio};

struct Tend {
    dir: tempfile::TempDir,
}

impl Tend {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_stdin(args, None)
    }

    fn run_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tend"))
            .arg("--state-dir")
            .arg(self.dir.path())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(data) = stdin {
            input.write_all(data).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    }

    fn file(&self, name: &str, content: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        p.display().to_string()
    }

    fn object_count(&self) -> usize {
        let out = self.run(&["get", "all", "-A", "-o", "json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["items"].as_array().unwrap().len()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const NET: &str =
    "apiVersion: tend.dev/v1\nkind: Network\nmetadata: {name: NAME}\nspec: {subnet: 10.1.0.0/24}\n";

#[test]
fn every_example_spec_validates_and_applies() {
    let t = Tend::new();
    let specs = concat!(env!("CARGO_MANIFEST_DIR"), "/specs");
    let dry = t.run(&["apply", "-f", specs, "--dry-run"]);
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    assert!(text(&dry.stdout).contains("(dry run)"));
    assert_eq!(t.object_count(), 0, "dry run writes nothing");
    let out = t.run(&["apply", "-R", "-f", specs]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let n = std::fs::read_dir(specs)
        .unwrap()
        .map(|e| {
            std::fs::read_to_string(e.unwrap().path())
                .unwrap()
                .matches("apiVersion:")
                .count()
        })
        .sum::<usize>();
    assert!(n >= 4, "specs/ holds at least one of each kind");
    assert_eq!(t.object_count(), n);
    let again = t.run(&["apply", "-f", specs]);
    assert_eq!(text(&again.stdout).matches(" unchanged").count(), n);
}

#[test]
fn bad_documents_are_named_and_nothing_is_written() {
    let t = Tend::new();
    let cases = [
        ("malformed", "apiVersion: tend.dev/v1\nkind: [Network\n", "not valid YAML"),
        ("unknown field", &NET.replace("spec:", "spek:"), "spek"),
        ("bad quantity", "apiVersion: tend.dev/v1\nkind: Container\nmetadata: {name: c}\nspec: {command: [sh], resources: {memory: 12XB}}\n", r#"spec.resources.memory: "12XB" is not a quantity"#),
        ("bad name", &NET.replace("NAME", "Bad_Name"), "metadata.name"),
        ("wrong apiVersion", &NET.replace("tend.dev/v1", "apps/v1"), "apiVersion"),
        ("wrong kind", &NET.replace("Network", "Pod"), "not a tend kind"),
        ("bad nested field", "apiVersion: tend.dev/v1\nkind: Container\nmetadata: {name: c}\nspec: {command: [sh], networks: [{name: n, ip: 999.1.1.1}]}\n", "spec.networks[0].ip"),
    ];
    for (what, doc, needle) in cases {
        let good = NET.replace("NAME", "good");
        let f = t.file("in.yaml", &format!("{good}---\n{doc}"));
        let out = t.run(&["apply", "-f", &f]);
        assert_eq!(out.status.code(), Some(1), "{what}");
        let err = text(&out.stderr);
        assert!(err.contains("document 2"), "{what}: {err}");
        assert!(err.contains(needle), "{what}: wanted {needle:?} in {err}");
        assert!(err.contains("nothing was applied"), "{what}: {err}");
        assert_eq!(
            t.object_count(),
            0,
            "{what}: the valid document must not be written either"
        );
    }
}

#[test]
fn garbage_input_never_panics() {
    let t = Tend::new();
    let inputs: [&[u8]; 6] = [
        b"\xff\xfe\x00garbage",
        b"{{{{",
        b"- - - -",
        b"---\n---\n",
        b"kind: 12\n",
        b"[1,2,3]",
    ];
    for input in inputs {
        let out = t.run_stdin(&["apply", "-f", "-"], Some(input));
        assert_eq!(out.status.code(), Some(1), "{:?}", text(input));
        assert!(
            !text(&out.stderr).contains("panicked"),
            "{}",
            text(&out.stderr)
        );
    }
    assert_eq!(t.object_count(), 0);
}

#[test]
fn ten_thousand_documents_with_one_bad_write_nothing() {
    let t = Tend::new();
    let mut big = String::new();
    for i in 0..10_000 {
        big.push_str(&format!("---\n{}", NET.replace("NAME", &format!("n{i}"))));
    }
    big.push_str("---\napiVersion: tend.dev/v1\nkind: Network\nmetadata: {name: last}\nspec: {subnet: nope}\n");
    let f = t.file("big.yaml", &big);
    let out = t.run(&["apply", "-f", &f]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("document 10001"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(t.object_count(), 0);
    // Without the bad one, all 10,000 apply.
    let f = t.file(
        "big.yaml",
        &big[..big
            .rfind("---\napiVersion: tend.dev/v1\nkind: Network\nmetadata: {name: last}")
            .unwrap()],
    );
    let out = t.run(&["apply", "-f", &f]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(t.object_count(), 10_000);
}

#[test]
fn a_fifty_megabyte_document_is_refused_clearly() {
    let t = Tend::new();
    let huge = format!(
        "apiVersion: tend.dev/v1\nkind: Network\nmetadata: {{name: big, annotations: {{blob: \"{}\"}}}}\nspec: {{subnet: 10.1.0.0/24}}\n",
        "x".repeat(50 << 20)
    );
    let f = t.file("huge.yaml", &huge);
    let out = t.run(&["apply", "-f", &f]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("larger than"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(t.object_count(), 0);
}

#[test]
fn a_store_failure_mid_file_names_applied_and_unapplied_documents() {
    let t = Tend::new();
    let f = t.file("one.yaml", &NET.replace("NAME", "held"));
    assert!(t.run(&["apply", "-f", &f]).status.success());
    // A stale resourceVersion on document 2 makes the store refuse it after document 1 applied.
    let stale = NET.replace("NAME", "held").replace(
        "metadata: {name: held}",
        "metadata: {name: held, resourceVersion: \"999\"}",
    );
    let doc = format!(
        "{}---\n{stale}---\n{}",
        NET.replace("NAME", "first"),
        NET.replace("NAME", "third")
    );
    let f = t.file("multi.yaml", &doc);
    let out = t.run(&["apply", "-f", &f]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("document 2 (network/held)"), "{err}");
    assert!(err.contains("conflict"), "{err}");
    assert!(err.contains("applied 1 of 3 documents"), "{err}");
    assert!(err.contains(&format!("{f}#1;")), "{err}");
    assert!(err.contains(&format!("not applied: {f}#2, {f}#3")), "{err}");
    assert!(text(&out.stdout).contains("network.tend.dev/first created"));
    assert_eq!(t.object_count(), 2);
}

#[test]
fn diff_exit_codes() {
    let t = Tend::new();
    let f = t.file("n.yaml", &NET.replace("NAME", "n"));
    assert_eq!(
        t.run(&["diff", "-f", &f]).status.code(),
        Some(1),
        "not yet applied = a change"
    );
    assert!(t.run(&["apply", "-f", &f]).status.success());
    assert_eq!(t.run(&["diff", "-f", &f]).status.code(), Some(0));
    let g = t.file("g.yaml", "nonsense: [");
    assert_eq!(t.run(&["diff", "-f", &g]).status.code(), Some(2));
}

#[test]
fn get_formats_delete_and_db() {
    let t = Tend::new();
    let f = t.file(
        "n.yaml",
        &NET.replace("NAME", "n").replace(
            "metadata: {name: n}",
            "metadata: {name: n, labels: {app: web}}",
        ),
    );
    assert!(t.run(&["apply", "-f", &f]).status.success());
    let yaml = text(&t.run(&["get", "network", "n", "-o", "yaml"]).stdout);
    assert!(
        yaml.contains("subnet: 10.1.0.0/24") && yaml.contains("uid:"),
        "{yaml}"
    );
    let name = text(
        &t.run(&["get", "networks", "-l", "app=web", "-o", "name"])
            .stdout,
    );
    assert_eq!(name.trim(), "network.tend.dev/n");
    assert_eq!(
        text(&t.run(&["get", "net", "-l", "app=db", "-o", "name"]).stdout).trim(),
        ""
    );
    // One object as a table has the header a list has.
    let one = text(&t.run(&["get", "network", "n"]).stdout);
    assert!(one.starts_with("NAME") && one.lines().count() == 2, "{one}");
    let missing = t.run(&["get", "network", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("not found"));
    assert_eq!(t.run(&["get", "widgets"]).status.code(), Some(1));
    // --timeout takes a duration, as `tend wait --timeout` does.
    assert!(t
        .run(&["delete", "network", "n", "--wait", "--timeout", "30s"])
        .status
        .success());
    assert_eq!(t.object_count(), 0);
    assert_eq!(text(&t.run(&["db", "check"]).stdout).trim(), "ok");
    let q = t.run(&["db", "query", "DROP TABLE objects"]);
    assert_eq!(q.status.code(), Some(1), "db query is read-only");
}

#[test]
fn the_same_object_twice_in_one_file_is_refused_naming_both() {
    let t = Tend::new();
    let one = NET.replace("NAME", "n");
    let f = t.file("dup.yaml", &format!("{one}---\n{one}"));
    let out = t.run(&["apply", "-f", &f]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("document 2") && err.contains("also declared by document 1"),
        "{err}"
    );
    assert_eq!(t.object_count(), 0, "nothing is applied");
}
