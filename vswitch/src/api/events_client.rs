//! The client side of `GET /v1/events`: an answer read line by line as
//! it arrives, not to its end.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;

use super::client::{Client, ClientError};
use super::types::ErrorBody;
use crate::events::Event;

impl Client {
    /// Follows the daemon's events: those kept since `since` (nanoseconds
    /// since the epoch), then live ones until `until` passes or `each`
    /// returns `false`.
    ///
    /// # Errors
    /// [`ClientError::Connect`], [`ClientError::PermissionDenied`],
    /// [`ClientError::Daemon`] for a refused request, [`ClientError::Io`],
    /// [`ClientError::BadResponse`] for an answer that is not a stream of
    /// events.
    pub fn events(
        &self,
        since: Option<u64>,
        until: Option<u64>,
        mut each: impl FnMut(Event) -> bool,
    ) -> Result<(), ClientError> {
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
        let mut query = Vec::new();
        if let Some(s) = since {
            query.push(format!("since={s}"));
        }
        if let Some(u) = until {
            query.push(format!("until={u}"));
        }
        let target = if query.is_empty() {
            "/v1/events".to_owned()
        } else {
            format!("/v1/events?{}", query.join("&"))
        };
        let head = format!(
            "GET {target} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: vsctl/{}\r\nConnection: close\r\n\r\n",
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
        for line in reader.lines() {
            let line = line.map_err(ClientError::Io)?;
            let event: Event = serde_json::from_str(&line)
                .map_err(|e| ClientError::BadResponse(format!("not an event: {e}")))?;
            if !each(event) {
                break;
            }
        }
        Ok(())
    }
}
