//! The client's end of a streamed exec ([`super::exec_frames`]): stdin sent as the request body
//! is read from a channel, output handed out frame by frame as it arrives.

use super::client::{Client, ClientError};
use super::client_ops::{container_path, failed_response};
use super::containers::ExecRequest;
use super::exec_frames::{self, Decoder};
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::Method;

/// One piece of a running exec's output, as the client receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecOutputFrame {
    Stdout(Bytes),
    Stderr(Bytes),
    /// The exit code; the last frame.
    Exit(i64),
}

impl Client {
    /// Starts `command` in Container `namespace/name` on a connection of its own. With `stdin`,
    /// what arrives on it is the command's stdin and its end is EOF; without, the command reads
    /// EOF. Dropping the returned stream closes the connection, which kills the command.
    ///
    /// # Errors
    /// The daemon's status (404, 409 not running, 503) before the command started; afterwards
    /// an item [`ClientError::Exec`] ends the stream.
    pub async fn exec(
        &self,
        namespace: &str,
        name: &str,
        command: &[String],
        stdin: Option<tokio::sync::mpsc::Receiver<Bytes>>,
    ) -> Result<BoxStream<'static, Result<ExecOutputFrame, ClientError>>, ClientError> {
        let req = ExecRequest {
            command: command.to_vec(),
            stdin: stdin.is_some(),
        };
        let mut head = serde_json::to_vec(&req).expect("serializes");
        head.push(b'\n');
        let input = futures::stream::unfold(stdin, |rx| async move {
            let mut rx = rx?;
            let b = rx.recv().await?;
            Some((b, Some(rx)))
        });
        let body = futures::stream::once(std::future::ready(Bytes::from(head)))
            .chain(input)
            .map(|b| Ok::<_, std::convert::Infallible>(Frame::data(b)));
        let body = StreamBody::new(body).boxed_unsync();
        let mut send = self.connect_as().await?;
        let path = container_path(namespace, name, "exec");
        let target = self.target.to_string();
        let http = |source| ClientError::Http {
            target: target.clone(),
            source,
        };
        let resp = send
            .send_request(self.build_with(Method::POST, &path, Some("application/json"), body)?)
            .await
            .map_err(http)?;
        if !resp.status().is_success() {
            return Err(failed_response(resp).await);
        }
        let st = Reader {
            data: resp.into_body().into_data_stream(),
            dec: Decoder::default(),
            done: false,
            _send: send,
            target,
        };
        let frames = futures::stream::unfold(st, |mut st| async move {
            let item = st.next().await?;
            Some((item, st))
        });
        Ok(frames.boxed())
    }
}

/// The response body being split into frames; holds the connection's sender so the
/// connection lives as long as the stream.
struct Reader<S> {
    data: S,
    dec: Decoder,
    done: bool,
    _send: hyper::client::conn::http1::SendRequest<
        http_body_util::combinators::UnsyncBoxBody<Bytes, std::convert::Infallible>,
    >,
    target: String,
}

impl<S> Reader<S>
where
    S: futures::Stream<Item = Result<Bytes, hyper::Error>> + Unpin,
{
    async fn next(&mut self) -> Option<Result<ExecOutputFrame, ClientError>> {
        if self.done {
            return None;
        }
        loop {
            match self.dec.next_frame() {
                Ok(Some((stream, payload))) => {
                    let (item, done) = decode(stream, payload);
                    self.done = done;
                    return Some(item);
                }
                Ok(None) => {}
                Err(e) => {
                    self.done = true;
                    return Some(Err(exec_error(e.to_string())));
                }
            }
            match self.data.next().await {
                Some(Ok(b)) => self.dec.push(&b),
                Some(Err(source)) => {
                    self.done = true;
                    return Some(Err(ClientError::Http {
                        target: self.target.clone(),
                        source,
                    }));
                }
                None => {
                    self.done = true;
                    return Some(Err(exec_error(
                        "the connection ended before the exit code".into(),
                    )));
                }
            }
        }
    }
}

fn exec_error(message: String) -> ClientError {
    ClientError::Exec { message }
}

/// A frame's item, and whether it ends the exec.
fn decode(stream: u8, payload: Bytes) -> (Result<ExecOutputFrame, ClientError>, bool) {
    match stream {
        exec_frames::STDOUT => (Ok(ExecOutputFrame::Stdout(payload)), false),
        exec_frames::STDERR => (Ok(ExecOutputFrame::Stderr(payload)), false),
        exec_frames::EXIT => match std::str::from_utf8(&payload)
            .ok()
            .and_then(|s| s.parse().ok())
        {
            Some(code) => (Ok(ExecOutputFrame::Exit(code)), true),
            None => (Err(exec_error(format!("bad exit frame {payload:?}"))), true),
        },
        exec_frames::ERROR => (
            Err(exec_error(String::from_utf8_lossy(&payload).into_owned())),
            true,
        ),
        other => (Err(exec_error(format!("unknown stream {other}"))), true),
    }
}
