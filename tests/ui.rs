//! The web view `/ui` in a real browser: Debian's headless Chromium loads the page from a live
//! `tend serve --listen` (TLS on loopback) with a token in the URL fragment, and what it renders
//! is checked as a user would read it: every object with its conditions, the `dependsOn` edge,
//! an event, usage sparklines, and an annotation full of HTML shown as text (its script never
//! runs). Without a token the data is refused; a namespace token's page shows only its namespace.

mod common;

use common::daemon::Daemon;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tend::api::client::Client;

/// What the annotation of `web` holds: were it parsed as HTML, the image's error handler would
/// mark the body and the script would rename the page.
const HOSTILE: &str =
    r#"<img src=x onerror="document.body.dataset.pwned=1"><script>document.title='pwned'</script>"#;

/// A /24 no other test on this host uses (overlapping subnets are refused).
fn subnet(salt: u32) -> String {
    let a = 100 + std::process::id() % 100;
    let b = 1 + (std::process::id() / 100 + salt * 7) % 250;
    format!("10.{a}.{b}.0/24")
}

/// Chromium is a Debian package (deploy/setup-host.sh installs it): without it this test fails.
fn chromium_version() -> String {
    match Command::new("chromium").arg("--version").output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        other => panic!(
            "the web view is tested in Debian's headless Chromium, which is not usable here \
             ({other:?}): run deploy/setup-host.sh or `apt-get install chromium`"
        ),
    }
}

/// One headless Chromium run on its own profile under `dir`, given 60 s; its stdout.
fn chromium(dir: &Path, args: &[String]) -> String {
    let profile = tempfile::tempdir_in(dir).unwrap();
    let out = dir.join(format!("chromium-{}.out", common::unique("c")));
    let err = dir.join(format!("chromium-{}.err", common::unique("c")));
    let child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox", // root has no user namespace sandbox to drop into
            "--disable-gpu",
            // The daemon's certificate is issued by the state dir's own CA, which this throwaway
            // profile does not trust; the listener is the loopback one this test started.
            "--ignore-certificate-errors",
            "--no-first-run",
            "--hide-scrollbars",
            // Lets the page's fetches and its first refreshes finish before the dump.
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .stdin(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let mut child = common::Kill(child);
    let deadline = Instant::now() + common::scaled(Duration::from_secs(60));
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "chromium {args:?} did not finish in time:\n{}",
            std::fs::read_to_string(&err).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "chromium {args:?}: {status}\n{}",
        std::fs::read_to_string(&err).unwrap_or_default()
    );
    std::fs::read_to_string(&out).unwrap()
}

/// The DOM of `url` after the page's script has run.
fn dump_dom(dir: &Path, url: &str) -> String {
    chromium(dir, &["--dump-dom".into(), url.into()])
}

/// The table row of `key` (`Kind/ns/name`) in a dumped DOM.
fn row<'a>(dom: &'a str, key: &str) -> &'a str {
    let at = dom
        .find(&format!("data-key=\"{key}\""))
        .unwrap_or_else(|| panic!("no row for {key} in the page:\n{dom}"));
    let rest = &dom[at..];
    &rest[..rest.find("</tr>").unwrap_or(rest.len())]
}

/// The head of a response to `GET path` on the daemon's socket (status line and headers).
fn head(d: &Daemon, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(d.path().join("tend.sock")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: tend\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split("\r\n\r\n").next().unwrap().to_ascii_lowercase()
}

/// The newest StartFailed event of Container `name`, as the API lists it.
fn start_failed(d: &Daemon, name: &str) -> bool {
    let (code, body) = d.http(
        "GET",
        "/apis/tend.dev/v1/namespaces/default/events",
        None,
        "",
    );
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["reason"] == "StartFailed" && e["name"] == name)
}

/// `GET /apis/tend.dev/v1/usage` on the socket (admin).
fn history(d: &Daemon) -> serde_json::Value {
    let (code, body) = d.http("GET", "/apis/tend.dev/v1/usage", None, "");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// How many samples `history` holds for Container `name`.
fn samples(history: &serde_json::Value, name: &str) -> usize {
    history["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .and_then(|i| i["samples"].as_array())
        .map_or(0, Vec::len)
}

fn token(d: &Daemon, args: &[&str]) -> String {
    let mut a = vec!["token", "create", "--read-only"];
    a.extend(args);
    let out = d.tend(&a);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn the_web_view_shows_objects_dependencies_events_and_usage_in_chromium() {
    if !common::privileged("the_web_view_shows_objects_dependencies_events_and_usage_in_chromium") {
        return;
    }
    let version = chromium_version();
    eprintln!("browser: {version}");
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = common::fixtures::busybox_rootfs(tmp.path(), &[]);
    let d = Daemon::start(&[
        "--listen",
        "127.0.0.1:0",
        "--snapshot-backend",
        "copy",
        "--usage-interval",
        "1",
    ]);
    let engine: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path().join("engine.json")).unwrap()).unwrap();
    let addr: std::net::SocketAddr = engine["listen"].as_str().unwrap().parse().unwrap();
    let ca = std::fs::read_to_string(tend::daemon::Layout::new(d.path()).ca_cert()).unwrap();
    d.apply(&format!(
        r#"
apiVersion: tend.dev/v1
kind: State
metadata: {{name: busybox}}
spec: {{source: {{directory: {rootfs}}}}}
---
apiVersion: tend.dev/v1
kind: Network
metadata: {{name: lan}}
spec: {{subnet: {lan}}}
---
apiVersion: tend.dev/v1
kind: Sandbox
metadata: {{name: db-fs}}
spec: {{state: busybox}}
---
apiVersion: tend.dev/v1
kind: Container
metadata: {{name: db}}
spec:
  rootfs: {{sandbox: db-fs}}
  command: ["/bin/sh", "-c", "sleep 3600"]
  networks: [{{name: lan}}]
  stopGracePeriodSeconds: 0
---
apiVersion: tend.dev/v1
kind: Container
metadata:
  name: web
  annotations: {{note: {hostile:?}}}
spec:
  rootfs: {{state: busybox}}
  command: ["/bin/sh", "-c", "sleep 3600"]
  networks: [{{name: lan}}]
  dependsOn: [{{container: db, condition: Ready}}]
  stopGracePeriodSeconds: 0
---
apiVersion: tend.dev/v1
kind: Container
metadata: {{name: broken}}
spec:
  rootfs: {{state: busybox}}
  command: ["/no/such/binary"]
  stopGracePeriodSeconds: 0
---
apiVersion: tend.dev/v1
kind: Network
metadata: {{name: hidden-net, namespace: team-b}}
spec: {{subnet: {other}}}
---
apiVersion: tend.dev/v1
kind: Container
metadata: {{name: hidden-ct, namespace: team-b}}
spec:
  command: ["/bin/sleep", "3600"]
  stopGracePeriodSeconds: 0
"#,
        rootfs = rootfs.display(),
        lan = subnet(0),
        other = subnet(1),
        hostile = HOSTILE,
    ));
    let t = Duration::from_secs(60);
    d.wait_ready("container", "db", t);
    d.wait_ready("container", "web", t);
    // The daemon keeps the last samples of each Container: wait for three of `web`'s and one
    // of team-b's container.
    d.wait_for("container", "web", "three kept usage samples", |_| {
        let h = history(&d);
        samples(&h, "web") >= 3 && samples(&h, "hidden-ct") >= 1
    });
    d.wait_for("container", "broken", "a StartFailed event", |_| {
        start_failed(&d, "broken")
    });
    let admin = token(&d, &[]);
    let team = token(&d, &["-n", "default"]);

    // The page's data needs a token: without one, or with a wrong one, the API answers 401.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for tok in [None, Some("tend_not-a-token".to_string())] {
            let c = Client::tcp(addr, &ca, tok.clone());
            for path in [
                "/apis/tend.dev/v1/containers",
                "/apis/tend.dev/v1/networks",
                "/apis/tend.dev/v1/events?limit=50",
                "/apis/tend.dev/v1/usage",
            ] {
                let r = c.raw(hyper::Method::GET, path, None, vec![]).await.unwrap();
                assert_eq!(r.status.as_u16(), 401, "{path} with {tok:?}");
            }
        }
        // The kept usage of team-b's container is not served to a token for `default`.
        let c = Client::tcp(addr, &ca, Some(team.clone()));
        let r = c
            .raw(hyper::Method::GET, "/apis/tend.dev/v1/usage", None, vec![])
            .await
            .unwrap();
        let body = String::from_utf8_lossy(&r.body);
        assert!(
            r.status.is_success() && body.contains("\"web\"") && !body.contains("hidden-ct"),
            "{body}"
        );
        // /metrics names every namespace's Containers: a namespace token is refused, an
        // admin token reads it.
        let r = c
            .raw(hyper::Method::GET, "/metrics", None, vec![])
            .await
            .unwrap();
        let body = String::from_utf8_lossy(&r.body);
        assert_eq!(r.status.as_u16(), 403, "{body}");
        assert!(!body.contains("hidden-ct"), "{body}");
        let a = Client::tcp(addr, &ca, Some(admin.clone()));
        let r = a
            .raw(hyper::Method::GET, "/metrics", None, vec![])
            .await
            .unwrap();
        assert_eq!(r.status.as_u16(), 200);
        assert!(String::from_utf8_lossy(&r.body).contains("hidden-ct"));
        // The page itself holds no data and opens without one.
        let c = Client::tcp(addr, &ca, None);
        let r = c
            .raw(hyper::Method::GET, "/ui", None, vec![])
            .await
            .unwrap();
        assert_eq!(r.status.as_u16(), 200);
        assert!(
            r.content_type.starts_with("text/html"),
            "{}",
            r.content_type
        );
    });
    let h = head(&d, "/ui");
    assert!(
        h.contains("content-security-policy: default-src 'none'; script-src 'self'")
            && h.contains("frame-ancestors 'none'")
            && h.contains("x-content-type-options: nosniff"),
        "{h}"
    );

    let url = |tok: &str| format!("https://{addr}/ui#token={tok}&refresh=1");
    let dom = dump_dom(tmp.path(), &url(&admin));
    assert!(dom.contains(r#"<body data-state="loaded">"#), "{dom}");
    // Every object, by kind and namespace/name, with its phase and conditions.
    for key in [
        "State/default/busybox",
        "Network/default/lan",
        "Sandbox/default/db-fs",
        "Container/default/db",
    ] {
        assert!(
            row(&dom, key).contains(r#"data-ready="True""#),
            "{key}: {dom}"
        );
    }
    row(&dom, "Network/team-b/hidden-net");
    row(&dom, "Container/team-b/hidden-ct");
    let web = row(&dom, "Container/default/web");
    assert!(
        web.contains(r#"<td class="phase">Running</td>"#)
            && web.contains(r#"data-type="Ready" data-status="True"><b>Ready=True</b>"#)
            && web.contains(r#"data-type="Started" data-status="True""#),
        "{web}"
    );
    let broken = row(&dom, "Container/default/broken");
    assert!(
        broken.contains(r#"data-type="Ready" data-status="False"><b>Ready=False</b>"#),
        "{broken}"
    );
    // Usage sparklines (CPU and memory) for the running containers.
    for metric in ["cpu", "memory"] {
        assert!(
            web.contains(&format!(r#"<svg class="spark" data-metric="{metric}""#)),
            "{web}"
        );
    }
    assert!(web.contains("<polyline points=\""), "{web}");
    // They draw the daemon's kept samples: three or more from the moment the page opens.
    let n: usize = web
        .split(r#"data-metric="cpu" data-samples=""#)
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no sample count: {web}"));
    assert!(n >= 3, "{n} samples drawn: {web}");
    // The dependency edge web -> db, with the condition it waits for.
    assert!(
        dom.contains(r#"data-from="default/web" data-to="default/db"><span class="edge">needs Ready of </span>"#),
        "{dom}"
    );
    // The event, with its object.
    assert!(
        dom.contains(
            r#"<td>Warning</td><td class="reason">StartFailed</td><td>Container default/broken</td>"#
        ),
        "{dom}"
    );
    // The annotation is text: escaped in the DOM, no image element, its handlers never ran.
    assert!(
        web.contains(
            r#"note: &lt;img src=x onerror="document.body.dataset.pwned=1"&gt;&lt;script&gt;document.title='pwned'&lt;/script&gt;"#
        ),
        "{web}"
    );
    assert!(
        !dom.contains("<img") && !dom.contains("data-pwned"),
        "{dom}"
    );
    assert!(dom.contains("<title>tend</title>"), "{dom}");

    // A token for namespace `default` sees default's objects and nothing of team-b.
    let dom = dump_dom(tmp.path(), &url(&team));
    assert!(dom.contains(r#"<body data-state="loaded">"#), "{dom}");
    row(&dom, "Container/default/web");
    assert!(!dom.contains("team-b") && !dom.contains("hidden-"), "{dom}");
    // A refused token shows the server's 401 and the form to enter another.
    let dom = dump_dom(tmp.path(), &url("tend_not-a-token"));
    assert!(
        dom.contains(r#"<body data-state="error">"#) && dom.contains("401"),
        "{dom}"
    );
    assert!(dom.contains(r#"<form id="login">"#), "{dom}");
    assert!(!dom.contains("default/web"), "{dom}");

    // A screenshot of the whole view, kept in the test's temp dir.
    let shot: PathBuf = tmp.path().join("ui.png");
    chromium(
        tmp.path(),
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,900".into(),
            url(&admin),
        ],
    );
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let (w, h) = (
        u32::from_be_bytes(png[16..20].try_into().unwrap()),
        u32::from_be_bytes(png[20..24].try_into().unwrap()),
    );
    assert_eq!((w, h), (1280, 900), "screenshot size");
    assert!(png.len() > 20_000, "a blank page: {} bytes", png.len());
    eprintln!("screenshot: {} ({} bytes)", shot.display(), png.len());
}
