//! Failpoints: named places in the drivers and the store where a test can inject an error, a
//! delay, a hang or a panic into a running daemon, and take it away again.
//!
//! A daemon turns them on with [`init`] (`tend serve --failpoints` passes
//! `<state-dir>/failpoints`; the file named by `TEND_FAILPOINTS`, when set, is used instead and
//! needs no flag); the file
//! holds one `name=action` per line, read again whenever it changes, so a test adds and clears
//! faults while the daemon runs. Actions:
//!
//! | action | effect at `check(name)` |
//! |---|---|
//! | `error` or `error(message)` | returns [`Failpoint`] |
//! | `sleep(ms)` | waits `ms` milliseconds, then goes on (a slow call) |
//! | `hang` | waits until the line is removed from the file (a call that never returns) |
//! | `panic` | panics |
//! | `kill` | the process sends itself SIGKILL (a crash at exactly this point) |
//!
//! With no [`init`] (the default) `check` returns at once; with one, it costs one `stat`.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

static FILE: OnceLock<PathBuf> = OnceLock::new();
/// The parsed file and the (mtime, size) it was read at.
type Parsed = (SystemTime, u64, Vec<(String, Action)>);
static CACHE: Mutex<Option<Parsed>> = Mutex::new(None);

/// An injected failure: the failpoint's name and the message it was given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failpoint {name}: {message}")]
pub struct Failpoint {
    pub name: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    Error(String),
    Sleep(Duration),
    Hang,
    Panic,
    Kill,
}

/// Reads failpoints from `file` from now on (the first call wins; later calls are ignored).
pub fn init(file: PathBuf) {
    let _ = FILE.set(file);
}

fn parse(text: &str) -> Vec<(String, Action)> {
    text.lines()
        .filter_map(|l| {
            let (name, action) = l.trim().split_once('=')?;
            let action = action.trim();
            let arg = action
                .split_once('(')
                .and_then(|(_, rest)| rest.strip_suffix(')'))
                .unwrap_or("");
            let act = match action.split('(').next().unwrap_or("") {
                "error" => Action::Error(
                    if arg.is_empty() {
                        "injected error"
                    } else {
                        arg
                    }
                    .into(),
                ),
                "sleep" => Action::Sleep(Duration::from_millis(arg.parse().ok()?)),
                "hang" => Action::Hang,
                "panic" => Action::Panic,
                "kill" => Action::Kill,
                _ => return None,
            };
            Some((name.trim().to_string(), act))
        })
        .collect()
}

/// The action configured for `name` now, re-reading the file when its mtime or size changed.
fn action(name: &str) -> Option<Action> {
    let file = FILE.get()?;
    let meta = std::fs::metadata(file).ok()?;
    let stamp = (meta.modified().ok()?, meta.len());
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if cache.as_ref().is_none_or(|(t, l, _)| (*t, *l) != stamp) {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        *cache = Some((stamp.0, stamp.1, parse(&text)));
    }
    let (_, _, list) = cache.as_ref()?;
    list.iter().find(|(n, _)| n == name).map(|(_, a)| a.clone())
}

fn hit(name: &str, act: &Action) -> Result<(), Failpoint> {
    tracing::warn!(failpoint = name, action = ?act, "failpoint hit");
    match act {
        Action::Error(m) => Err(Failpoint {
            name: name.to_string(),
            message: m.clone(),
        }),
        Action::Panic => panic!("failpoint {name}: injected panic"),
        Action::Kill => {
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Evaluates failpoint `name`, blocking the thread for `sleep`/`hang`: for code already off the
/// async executor (inside `spawn_blocking` or the store's `interact`).
pub fn check(name: &str) -> Result<(), Failpoint> {
    let Some(act) = action(name) else {
        return Ok(());
    };
    match &act {
        Action::Sleep(d) => std::thread::sleep(*d),
        Action::Hang => {
            while action(name) == Some(Action::Hang) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        _ => {}
    }
    hit(name, &act)
}

/// Evaluates failpoint `name` on the async executor: `sleep` and `hang` wait without blocking
/// a worker thread.
pub async fn check_async(name: &str) -> Result<(), Failpoint> {
    let Some(act) = action(name) else {
        return Ok(());
    };
    match &act {
        Action::Sleep(d) => tokio::time::sleep(*d).await,
        Action::Hang => {
            while action(name) == Some(Action::Hang) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        _ => {}
    }
    hit(name, &act)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_actions_and_ignores_junk() {
        let got = parse("a=error\nb = error(disk on fire)\nc=sleep(250)\nd=hang\ne=panic\nf=bogus\nnoequals\ng=sleep(x)\n");
        assert_eq!(
            got,
            vec![
                ("a".into(), Action::Error("injected error".into())),
                ("b".into(), Action::Error("disk on fire".into())),
                ("c".into(), Action::Sleep(Duration::from_millis(250))),
                ("d".into(), Action::Hang),
                ("e".into(), Action::Panic),
            ]
        );
    }

    #[test]
    fn check_reads_the_file_and_sees_it_change() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("failpoints");
        init(f.clone());
        assert_eq!(check("x.y"), Ok(()));
        std::fs::write(&f, "x.y=error(boom)\n").unwrap();
        let e = check("x.y").unwrap_err();
        assert_eq!(e.to_string(), "failpoint x.y: boom");
        assert_eq!(check("other"), Ok(()));
        std::fs::write(&f, "x.y=sleep(1)\nz=error\n").unwrap();
        assert_eq!(check("x.y"), Ok(()));
        std::fs::remove_file(&f).unwrap();
        assert_eq!(check("x.y"), Ok(()));
    }
}
