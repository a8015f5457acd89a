//! The client side of `GET /v1/capture`: the pcapng stream copied to a
//! writer as it arrives.

use std::io::{Read, Write};

use super::client::{Client, ClientError};

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
        let mut target_q = format!("/v1/capture?target={}", encode(target));
        if let Some(c) = count {
            target_q.push_str(&format!("&count={c}"));
        }
        if !filter.is_empty() {
            target_q.push_str(&format!("&filter={}", encode(filter)));
        }
        let mut reader = self.open_stream(&target_q)?;
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
