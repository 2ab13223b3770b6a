//! What `tend logs` and `tend exec` do for a native container: read (and follow) its log
//! files, run a command inside it. The CLI files only parse arguments and call these.

use super::files::{container_dir, log_files, LogLine};
use std::io::{BufRead, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

pub use tend_controllers::container::LogQuery;

/// A `Write` that feeds a channel (a streamed response body); writing fails once the receiver
/// has gone.
pub(crate) struct ChannelWriter(pub tokio::sync::mpsc::UnboundedSender<Vec<u8>>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .send(buf.to_vec())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A duration like `500ms`, `10s`, `5m`, `2h` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 10s, 5m)"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "" | "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

fn print_line(out: &mut impl Write, line: &str, q: &LogQuery) -> std::io::Result<()> {
    match (q.timestamps, LogLine::parse(line)) {
        (false, Some(l)) => writeln!(out, "{}", l.text),
        _ => writeln!(out, "{line}"),
    }
}

/// Prints the log of the container `uid` to `out` as `q` asks. Following ends once the
/// workload has ended (its `exit.json` exists) and everything was printed, or the directory is
/// gone.
pub async fn logs(
    containers_root: &Path,
    uid: &str,
    q: &LogQuery,
    out: &mut (impl Write + Send),
) -> std::io::Result<()> {
    let dir = container_dir(containers_root, uid);
    let cutoff = q.since.map(|d| {
        (chrono::Utc::now() - chrono::Duration::from_std(d).unwrap_or_default())
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    });
    let mut lines = Vec::new();
    for f in log_files(&dir, q.previous) {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        lines.extend(text.lines().map(str::to_string));
    }
    if let Some(c) = &cutoff {
        lines.retain(|l| LogLine::parse(l).is_some_and(|l| l.time.as_str() >= c.as_str()));
    }
    if let Some(n) = q.tail {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    for l in &lines {
        print_line(out, l, q)?;
    }
    out.flush()?;
    if !q.follow || q.previous {
        return Ok(());
    }
    follow(&dir, q, out).await
}

/// Prints what is appended to `dir/log` from its current end on, reopening it on rotation.
async fn follow(dir: &Path, q: &LogQuery, out: &mut (impl Write + Send)) -> std::io::Result<()> {
    let path = dir.join("log");
    let mut pos = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let mut partial = String::new();
    loop {
        let ended = dir.join("exit.json").exists() || !dir.exists();
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if len < pos {
            pos = 0; // rotated: a new file
        }
        if len > pos {
            let mut f = std::fs::File::open(&path)?;
            f.seek(SeekFrom::Start(pos))?;
            let mut r = std::io::BufReader::new(f);
            loop {
                let mut buf = String::new();
                let n = r.read_line(&mut buf)?;
                if n == 0 {
                    break;
                }
                pos += n as u64;
                partial.push_str(&buf);
                if partial.ends_with('\n') {
                    print_line(out, partial.trim_end_matches('\n'), q)?;
                    partial.clear();
                }
            }
            out.flush()?;
            continue;
        }
        if ended {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert!(parse_duration("5x").is_err());
    }

    #[tokio::test]
    async fn tail_and_since_filter() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("u1");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(
            dir.join("log"),
            "2000-01-01T00:00:00.000000Z stdout old\n2999-01-01T00:00:00.000000Z stdout a\n2999-01-01T00:00:01.000000Z stderr b\n",
        )
        .unwrap();
        let mut out = Vec::new();
        let q = LogQuery {
            tail: Some(2),
            ..Default::default()
        };
        logs(root.path(), "u1", &q, &mut out).await.unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "a\nb\n");
        let mut out = Vec::new();
        let q = LogQuery {
            since: Some(Duration::from_secs(60)),
            timestamps: true,
            ..Default::default()
        };
        logs(root.path(), "u1", &q, &mut out).await.unwrap();
        assert_eq!(String::from_utf8(out).unwrap().lines().count(), 2);
    }
}
