//! A minimal HTTP/1.1 GET for `httpGet` probes: one request, `Connection: close`, the status
//! line decides (200–399 is success); the start of the body is the output.

use tend_controllers::container::ProbeOutcome;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Most of a response read.
const MAX_RESPONSE: usize = 16 * 1024;

/// GETs `path` over `stream` (connected to `to`).
pub async fn get(mut stream: TcpStream, to: std::net::SocketAddr, path: &str) -> ProbeOutcome {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {to}\r\nUser-Agent: tend-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    if let Err(e) = stream.write_all(req.as_bytes()).await {
        return ProbeOutcome::new(false, format!("GET http://{to}{path}: {e}"));
    }
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    while buf.len() < MAX_RESPONSE {
        match stream.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            // A reset after the answer arrived still counts as the answer.
            Err(_) if !buf.is_empty() => break,
            Err(e) => return ProbeOutcome::new(false, format!("GET http://{to}{path}: {e}")),
        }
        if buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() >= 1024 {
            break;
        }
    }
    outcome(&buf, to, path)
}

fn outcome(buf: &[u8], to: std::net::SocketAddr, path: &str) -> ProbeOutcome {
    let text = String::from_utf8_lossy(buf);
    let status_line = text.lines().next().unwrap_or("");
    let code = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse::<u16>().ok());
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    match code {
        Some(c) => ProbeOutcome::new(
            (200..400).contains(&c),
            format!("GET http://{to}{path}: {status_line}\n{body}"),
        ),
        None => ProbeOutcome::new(
            false,
            format!("GET http://{to}{path}: not an HTTP response: {status_line:?}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to() -> std::net::SocketAddr {
        "127.0.0.1:80".parse().unwrap()
    }

    #[test]
    fn the_status_line_decides() {
        let ok = outcome(b"HTTP/1.0 200 OK\r\nX: y\r\n\r\nhello", to(), "/");
        assert!(ok.success);
        assert!(ok.output.ends_with("hello"), "{}", ok.output);
        assert!(outcome(b"HTTP/1.1 302 Found\r\n\r\n", to(), "/").success);
        let bad = outcome(b"HTTP/1.1 404 Not Found\r\n\r\nnope", to(), "/x");
        assert!(!bad.success);
        assert!(bad.output.contains("404 Not Found"));
        assert!(!outcome(b"SSH-2.0-x\r\n", to(), "/").success);
        assert!(!outcome(b"", to(), "/").success);
    }
}
