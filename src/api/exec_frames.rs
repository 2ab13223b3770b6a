//! The wire format of a streamed exec (`POST .../containers/{name}/exec`), shared by the server
//! and the client.
//!
//! Request body: one line of JSON ([`super::containers::ExecRequest`]) ended by `\n`, then the
//! command's stdin as raw bytes until the body ends (EOF). Response body
//! (`application/vnd.tend.exec-frames`): frames of an 8-byte header — stream id, three zero
//! bytes, the payload length as a big-endian u32 (Docker's attach multiplexing) — then the
//! payload. Streams: [`STDOUT`], [`STDERR`], then exactly one of [`EXIT`] (the exit code in
//! decimal ASCII) or [`ERROR`] (a UTF-8 message), which ends the body.

use bytes::{Buf, Bytes, BytesMut};

pub const CONTENT_TYPE: &str = "application/vnd.tend.exec-frames";
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const EXIT: u8 = 4;

/// The header before each payload.
pub const HEADER: usize = 8;
/// Longest payload a decoder accepts (a runtime sends chunks of 32 KiB).
pub const MAX_PAYLOAD: usize = 1 << 20;

/// One frame: header and payload.
pub fn encode(stream: u8, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(HEADER + payload.len());
    b.extend_from_slice(&[stream, 0, 0, 0]);
    b.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    b.extend_from_slice(payload);
    b.freeze()
}

/// A frame that breaks the format.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed exec frame: {0}")]
pub struct FrameError(pub String);

/// Splits a byte stream into frames, however the bytes were chunked.
#[derive(Default)]
pub struct Decoder {
    buf: BytesMut,
}

impl Decoder {
    /// Adds bytes read from the body.
    pub fn push(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    /// The next whole frame, `None` until one has fully arrived.
    ///
    /// # Errors
    /// A header with nonzero padding or a payload longer than [`MAX_PAYLOAD`].
    pub fn next_frame(&mut self) -> Result<Option<(u8, Bytes)>, FrameError> {
        if self.buf.len() < HEADER {
            return Ok(None);
        }
        if self.buf[1..4] != [0, 0, 0] {
            return Err(FrameError(format!("header {:?}", &self.buf[..HEADER])));
        }
        let len = u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(FrameError(format!("payload of {len} bytes")));
        }
        if self.buf.len() < HEADER + len {
            return Ok(None);
        }
        let stream = self.buf[0];
        self.buf.advance(HEADER);
        Ok(Some((stream, self.buf.split_to(len).freeze())))
    }

    /// Bytes received that do not make a whole frame yet.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_at_any_byte_come_back_whole() {
        let all: Vec<u8> = (0..=255u8).collect();
        let mut wire = encode(STDOUT, &all).to_vec();
        wire.extend_from_slice(&encode(STDERR, b"err"));
        wire.extend_from_slice(&encode(EXIT, b"7"));
        for cut in 0..wire.len() {
            let mut d = Decoder::default();
            let mut got = vec![];
            for part in [&wire[..cut], &wire[cut..]] {
                d.push(part);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got.len(), 3, "cut at {cut}");
            assert_eq!(got[0], (STDOUT, Bytes::from(all.clone())));
            assert_eq!(got[1], (STDERR, Bytes::from_static(b"err")));
            assert_eq!(got[2], (EXIT, Bytes::from_static(b"7")));
            assert_eq!(d.pending(), 0);
        }
    }

    #[test]
    fn a_bad_header_or_a_huge_payload_is_an_error_not_a_huge_buffer() {
        let mut d = Decoder::default();
        d.push(&[1, 9, 0, 0, 0, 0, 0, 1]);
        assert!(d.next_frame().is_err());
        let mut d = Decoder::default();
        d.push(&[1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        assert!(d.next_frame().is_err());
    }
}
