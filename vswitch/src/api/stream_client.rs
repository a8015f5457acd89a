//! The opening shared by the client's streaming requests (`events`,
//! `capture`): their answers are read as they arrive, not to their end, so
//! they cannot go through the buffered request path of [`Client`].

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;

use super::client::{Client, ClientError};
use super::types::ErrorBody;

impl Client {
    /// Sends `GET target` and reads the status line and headers; returns
    /// the connection positioned at the start of the body. A status other
    /// than 200 is the daemon's refusal, read from its error body.
    pub(super) fn open_stream(&self, target: &str) -> Result<BufReader<UnixStream>, ClientError> {
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
        Ok(reader)
    }
}
