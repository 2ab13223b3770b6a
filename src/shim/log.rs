//! The workload log: timestamped lines, size-capped, rotated `log`, `log.1`, `log.2`, …

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::config::{now_rfc3339, LogLimits};
use super::{io_err, Result};

/// Longest line written as one record; longer output is split into several records.
pub(crate) const MAX_LINE: usize = 16 * 1024;

/// An append-only log file that rotates when it would exceed its size cap.
#[derive(Debug)]
pub struct RotatingLog {
    path: PathBuf,
    limits: LogLimits,
    file: File,
    size: u64,
}

impl RotatingLog {
    /// Opens (appending to) `path` with the given limits.
    pub fn open(path: &Path, limits: LogLimits) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io_err("open", path))?;
        let size = file.metadata().map_err(io_err("stat", path))?.len();
        Ok(Self {
            path: path.to_owned(),
            limits,
            file,
            size,
        })
    }

    /// Writes one record `<timestamp> <stream> <text>\n`, rotating first when needed.
    pub fn write_line(&mut self, stream: &str, text: &[u8]) -> Result<()> {
        let mut rec = Vec::with_capacity(text.len() + 48);
        rec.extend_from_slice(now_rfc3339().as_bytes());
        rec.push(b' ');
        rec.extend_from_slice(stream.as_bytes());
        rec.push(b' ');
        rec.extend_from_slice(text);
        rec.push(b'\n');
        if self.size > 0 && self.size + rec.len() as u64 > self.limits.max_bytes {
            self.rotate()?;
        }
        self.file
            .write_all(&rec)
            .map_err(io_err("write", &self.path))?;
        self.size += rec.len() as u64;
        Ok(())
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut s = self.path.clone().into_os_string();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }

    fn rotate(&mut self) -> Result<()> {
        let keep = self.limits.max_files.max(1);
        // Shift log.(k-1) -> log.k for the kept numbers; the oldest falls off.
        let _ = std::fs::remove_file(self.rotated(keep));
        for n in (1..keep).rev() {
            let from = if n == 1 {
                self.path.clone()
            } else {
                self.rotated(n - 1)
            };
            match std::fs::rename(&from, self.rotated(n)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io_err("rename", &from)(e))
                }
                _ => {}
            }
        }
        if keep == 1 {
            self.file
                .set_len(0)
                .map_err(io_err("truncate", &self.path))?;
        }
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(io_err("open", &self.path))?;
        self.size = 0;
        Ok(())
    }
}

/// Splits one stream's bytes into lines for the log.
#[derive(Debug, Default)]
pub(crate) struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    /// Adds `data` and hands every complete line (without `\n`) to `emit`.
    pub(crate) fn push(
        &mut self,
        data: &[u8],
        mut emit: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        self.buf.extend_from_slice(data);
        let mut start = 0;
        while let Some(i) = self.buf[start..].iter().position(|&b| b == b'\n') {
            emit(&self.buf[start..start + i])?;
            start += i + 1;
        }
        while self.buf.len() - start >= MAX_LINE {
            emit(&self.buf[start..start + MAX_LINE])?;
            start += MAX_LINE;
        }
        self.buf.drain(..start);
        Ok(())
    }

    /// Emits what is left (a last line without newline).
    pub(crate) fn finish(&mut self, mut emit: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        if !self.buf.is_empty() {
            emit(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_and_long_runs() {
        let mut s = LineSplitter::default();
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut collect = |l: &[u8]| {
            out.push(l.to_vec());
            Ok(())
        };
        s.push(b"a\nbc", &mut collect).unwrap();
        s.push(b"d\n\nx", &mut collect).unwrap();
        s.push(&vec![b'y'; MAX_LINE], &mut collect).unwrap();
        s.finish(&mut collect).unwrap();
        assert_eq!(out[..3], [b"a".to_vec(), b"bcd".to_vec(), b"".to_vec()]);
        assert_eq!(out[3].len(), MAX_LINE);
        assert_eq!(out[4], b"y".to_vec());
    }

    #[test]
    fn rotation_caps_files_and_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut log = RotatingLog::open(
            &path,
            LogLimits {
                max_bytes: 200,
                max_files: 3,
            },
        )
        .unwrap();
        for i in 0..100 {
            log.write_line("stdout", format!("line {i}").as_bytes())
                .unwrap();
        }
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["log", "log.1", "log.2"]);
        for n in &names {
            assert!(std::fs::metadata(dir.path().join(n)).unwrap().len() <= 200);
        }
        let last = std::fs::read_to_string(&path).unwrap();
        let line = last.lines().last().unwrap();
        assert!(line.ends_with("Z stdout line 99"), "{line}");
    }
}
