//! Fuzzes the REST API's request decoding end to end: a real API server (`tend::api::bind` on a
//! temp state dir and SQLite store, served in-process) gets requests whose method, path, query,
//! content type and body come from the input. Every request must get an HTTP answer, never a
//! 5xx: bad input is the client's error (4xx) and the server keeps serving.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

struct Server {
    socket: PathBuf,
    _dir: tempfile::TempDir,
    _rt: tokio::runtime::Runtime,
}

fn server() -> &'static Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let state_dir = dir.path().to_path_buf();
        let socket = rt.block_on(async {
            let store = tend_schema::store::SqliteStore::open(
                state_dir.join("tend.db"),
                tend_schema::store::OpenOptions::default(),
            )
            .await
            .unwrap();
            let api = tend::api::bind(tend::api::ApiConfig {
                paths: tend::daemon::lifecycle::api_paths(&tend::daemon::Layout::new(&state_dir)),
                listen: None,
                tls_sans: vec![],
                store: Arc::new(store),
                ready: Arc::new(AtomicBool::new(true)),
                metrics: None,
                limits: Default::default(),
                runtimes: None,
                images: None,
                policy: Default::default(),
            })
            .await
            .unwrap();
            let socket = api.socket().to_path_buf();
            tokio::spawn(api.run(std::future::pending()));
            socket
        });
        Server {
            socket,
            _dir: dir,
            _rt: rt,
        }
    })
}

const METHODS: [&str; 6] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"];
const PLURALS: [&str; 5] = ["states", "sandboxes", "networks", "containers", "bogus"];
const TYPES: [&str; 6] = [
    "application/json",
    "application/yaml",
    "application/merge-patch+json",
    "application/json-patch+json",
    "application/apply-patch+yaml",
    "text/plain",
];
const QUERIES: [&str; 5] = [
    "",
    "?dryRun=All",
    "?fieldManager=fuzz&force=true",
    "?propagationPolicy=Foreground",
    "?labelSelector=",
];

fn percent(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let method = METHODS[data[0] as usize % METHODS.len()];
    let plural = PLURALS[(data[1] >> 4) as usize % PLURALS.len()];
    let ct = TYPES[data[2] as usize % TYPES.len()];
    let query = QUERIES[(data[3] >> 4) as usize % QUERIES.len()];
    let body = &data[4..];
    let base = "/apis/tend.dev/v1";
    let mut path = match data[1] & 0x0f {
        0 | 1 => format!("{base}/namespaces/default/{plural}"),
        2 | 3 | 4 => format!("{base}/namespaces/default/{plural}/fz"),
        5 => format!("{base}/namespaces/default/{plural}/fz/status"),
        6 => format!("{base}/{plural}"),
        7 => format!("{base}/namespaces/{}/{plural}", percent(&body[..body.len().min(8)])),
        _ => format!("{base}/namespaces/default/{plural}/{}", percent(&body[..body.len().min(8)])),
    };
    path.push_str(query);
    if query.ends_with('=') {
        path.push_str(&percent(&body[..body.len().min(32)]));
    }
    let mut s = std::os::unix::net::UnixStream::connect(&server().socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: tend\r\nConnection: close\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    let code: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer to {method} {path}: {text:?}"));
    assert!(
        code < 500,
        "{method} {path} ({ct}) -> {code}\nbody: {:?}\nanswer: {text}",
        String::from_utf8_lossy(body)
    );
});
