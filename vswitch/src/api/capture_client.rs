//! The client side of `GET /v1/capture`: the pcapng stream copied to a
//! writer as it arrives.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;

use super::client::{Client, ClientError};
use super::types::ErrorBody;

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl Client {
    /// Captures the port `target` (`SANDBOX[:IFACE]` or a port number):
    /// `count` frames (or until interrupted) that match `filter` (a
    /// tcpdump expression; empty for all), written to `out` as pcapng.
    /// Returns the bytes written.
    ///
    /// # Errors
    /// [`ClientError::Connect`], [`ClientError::PermissionDenied`],
    /// [`ClientError::Daemon`] for a refused request (an unknown sandbox,
    /// an invalid filter), [`ClientError::Io`].
    pub fn capture(
        &self,
        target: &str,
        count: Option<u64>,
        filter: &str,
        out: &mut dyn Write,
    ) -> Result<u64, ClientError> {
        let path = self.socket().to_path_buf();
        let mut stream = UnixStream::connect(&path).map_err(|source| {
            if source.kind() == io::ErrorKind::PermissionDenied {
                ClientError::PermissionDenied {
                    path: path.clone(),
                    source,
                }
            } else {
                ClientError::Connect {
                    path: path.clone(),
                    source,
                }
            }
        })?;
        let mut target_q = format!("/v1/capture?target={}", encode(target));
        if let Some(c) = count {
            target_q.push_str(&format!("&count={c}"));
        }
        if !filter.is_empty() {
            target_q.push_str(&format!("&filter={}", encode(filter)));
        }
        let head = format!(
            "GET {target_q} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: vsctl/{}\r\nConnection: close\r\n\r\n",
            env!("CARGO_PKG_VERSION")
        );
        stream.write_all(head.as_bytes()).map_err(ClientError::Io)?;
        let mut reader = BufReader::new(stream);
        let mut status_line = String::new();
        reader
            .read_line(&mut status_line)
            .map_err(ClientError::Io)?;
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                ClientError::BadResponse(format!("unexpected status line {status_line:?}"))
            })?;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).map_err(ClientError::Io)? == 0 {
                return Err(ClientError::BadResponse(
                    "the answer ended before its headers did".to_owned(),
                ));
            }
            if line == "\r\n" {
                break;
            }
        }
        if status != 200 {
            let mut body = Vec::new();
            reader
                .take(64 * 1024)
                .read_to_end(&mut body)
                .map_err(ClientError::Io)?;
            let message = serde_json::from_slice::<ErrorBody>(&body).map_or_else(
                |_| String::from_utf8_lossy(&body).into_owned(),
                |e| e.message,
            );
            return Err(ClientError::Daemon { status, message });
        }
        let mut total = 0u64;
        let mut buf = [0u8; 64 * 1024];
        loop {
            let n = reader.read(&mut buf).map_err(ClientError::Io)?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n]).map_err(ClientError::Io)?;
            out.flush().map_err(ClientError::Io)?;
            total += n as u64;
        }
        Ok(total)
    }
}
