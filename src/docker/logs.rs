//! Container logs as a stream of whole lines, for `tend logs` on docker containers.

use futures::stream::BoxStream;
use futures::StreamExt;

use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptionsBuilder;

use super::error::Target;
use super::{DockerDriver, DockerError};

/// Which output a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One line of container output, without its trailing newline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// stdout or stderr.
    pub stream: LogStream,
    /// The text (invalid UTF-8 replaced).
    pub line: String,
    /// dockerd's RFC 3339 time of the line, when asked for ([`LogOptions::timestamps`]).
    pub time: Option<String>,
}

/// What [`DockerDriver::logs_with`] reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// The last `tail` lines (all when `None`).
    pub tail: Option<usize>,
    /// Then new lines until the container stops.
    pub follow: bool,
    /// Only lines written at or after this Unix time (seconds).
    pub since: Option<i64>,
    /// Only lines written before this Unix time (seconds): an earlier run's output.
    pub until: Option<i64>,
    /// Fill [`LogLine::time`].
    pub timestamps: bool,
}

/// Splits Docker's log frames (which need not end on line boundaries) into lines.
#[derive(Default)]
struct Splitter {
    out: Vec<u8>,
    err: Vec<u8>,
    /// Each line starts with dockerd's timestamp and a space.
    timestamps: bool,
}

impl Splitter {
    fn push(&mut self, frame: LogOutput, lines: &mut Vec<LogLine>) {
        let (stream, bytes) = match frame {
            LogOutput::StdErr { message } => (LogStream::Stderr, message),
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                (LogStream::Stdout, message)
            }
            LogOutput::StdIn { .. } => return,
        };
        let self_ts = self.timestamps;
        let buf = self.buf(stream);
        buf.extend_from_slice(&bytes);
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let rest = buf.split_off(i + 1);
            let mut line = std::mem::replace(buf, rest);
            line.pop();
            lines.push(self_line(self_ts, stream, &line));
        }
    }

    fn finish(&mut self, lines: &mut Vec<LogLine>) {
        for stream in [LogStream::Stdout, LogStream::Stderr] {
            let buf = std::mem::take(self.buf(stream));
            if !buf.is_empty() {
                lines.push(self_line(self.timestamps, stream, &buf));
            }
        }
    }

    fn buf(&mut self, stream: LogStream) -> &mut Vec<u8> {
        match stream {
            LogStream::Stdout => &mut self.out,
            LogStream::Stderr => &mut self.err,
        }
    }
}

/// One line as read; with `timestamps`, its leading time split off.
fn self_line(timestamps: bool, stream: LogStream, bytes: &[u8]) -> LogLine {
    let text = String::from_utf8_lossy(bytes).into_owned();
    match text.split_once(' ') {
        Some((time, rest)) if timestamps => LogLine {
            stream,
            line: rest.to_string(),
            time: Some(time.to_string()),
        },
        _ => LogLine {
            stream,
            line: text,
            time: None,
        },
    }
}

impl DockerDriver {
    /// [`Self::logs_with`] the last `tail` lines and, with `follow`, what comes next.
    ///
    /// # Errors
    /// As [`Self::logs_with`].
    pub async fn logs(
        &self,
        id: &str,
        tail: Option<usize>,
        follow: bool,
    ) -> Result<BoxStream<'static, Result<LogLine, DockerError>>, DockerError> {
        let o = LogOptions {
            tail,
            follow,
            ..Default::default()
        };
        self.logs_with(id, &o).await
    }

    /// The container's output as lines: the last `tail` lines (all when `None`), then, with
    /// `follow`, new lines until the container stops or the stream is dropped.
    ///
    /// # Errors
    /// `NotFound` up front for a missing container; `Unavailable` up front or as an item when the
    /// stream breaks.
    pub async fn logs_with(
        &self,
        id: &str,
        o: &LogOptions,
    ) -> Result<BoxStream<'static, Result<LogLine, DockerError>>, DockerError> {
        // Inspect first so a missing container is an error now, not a first stream item.
        let info = self.inspect(id).await?;
        let tail = o.tail.map_or_else(|| "all".to_string(), |n| n.to_string());
        let mut opts = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .follow(o.follow)
            .timestamps(o.timestamps)
            .tail(&tail);
        if let Some(t) = o.since {
            opts = opts.since(t.clamp(0, i64::from(i32::MAX)) as i32);
        }
        if let Some(t) = o.until {
            opts = opts.until(t.clamp(0, i64::from(i32::MAX)) as i32);
        }
        let opts = opts.build();
        let ctx = self.ctx("logs", id, Target::Container);
        let docker = self.client(&ctx).await?;
        let driver = self.clone();
        let container = info.id;
        let frames = docker.logs(&container, Some(opts)).boxed();
        let split = Splitter {
            timestamps: o.timestamps,
            ..Default::default()
        };
        let state = (frames, split, false);
        let lines = futures::stream::unfold(state, move |(mut frames, mut split, done)| {
            let driver = driver.clone();
            let container = container.clone();
            async move {
                if done {
                    return None;
                }
                let mut lines = Vec::new();
                let ended = loop {
                    match frames.next().await {
                        Some(Ok(frame)) => {
                            split.push(frame, &mut lines);
                            if !lines.is_empty() {
                                break false;
                            }
                        }
                        Some(Err(e)) => {
                            let ctx = driver.ctx("logs", &container, Target::Container);
                            let mut items: Vec<Result<LogLine, DockerError>> = Vec::new();
                            split.finish(&mut lines);
                            items.extend(lines.into_iter().map(Ok));
                            items.push(Err(ctx.map(e)));
                            return Some((items, (frames, split, true)));
                        }
                        None => {
                            split.finish(&mut lines);
                            break true;
                        }
                    }
                };
                let items = lines.into_iter().map(Ok).collect();
                Some((items, (frames, split, ended)))
            }
        });
        Ok(lines.flat_map(futures::stream::iter).boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(s: &str) -> LogOutput {
        LogOutput::StdOut {
            message: s.as_bytes().to_vec().into(),
        }
    }

    #[test]
    fn frames_split_into_lines_across_boundaries() {
        let mut split = Splitter::default();
        let mut lines = Vec::new();
        split.push(out("one\ntw"), &mut lines);
        split.push(out("o\nthree"), &mut lines);
        split.push(
            LogOutput::StdErr {
                message: b"err\n".to_vec().into(),
            },
            &mut lines,
        );
        split.finish(&mut lines);
        let text: Vec<_> = lines.iter().map(|l| l.line.as_str()).collect();
        assert_eq!(text, ["one", "two", "err", "three"]);
        assert_eq!(lines[2].stream, LogStream::Stderr);
    }
}
