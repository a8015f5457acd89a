//! A small blocking client for the API, used by `vsctl`.
//!
//! It speaks the subset of HTTP/1.1 this daemon's server speaks: one request
//! per connection with `Connection: close`, a `Content-Length` body, and an
//! answer read to end of stream whose body is delimited by its
//! `Content-Length` (the server sets an unlimited chunking threshold, so it
//! never chunks; a chunked answer is reported, not misread). No general HTTP
//! parser is needed for that, and none is a dependency.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::types::{
    ConnectRequest, DisconnectRequest, DnsNetworkView, EndpointView, ErrorBody, FdbView,
    NetworkCreateRequest, NetworkCreateResponse, NetworkInspect, PortView, SandboxCreateRequest,
    SandboxView, VtepView,
};

/// Where `vswitchd` listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/vswitch/vswitchd.sock";

/// The largest answer accepted.
const MAX_RESPONSE: u64 = 64 << 20;

/// A failed API call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Nothing listens on the socket (or it does not exist).
    #[error("Cannot connect to the vswitch daemon at unix://{}. Is vswitchd running?", path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The socket exists but this user may not connect to it.
    #[error(
        "permission denied while trying to connect to the vswitch daemon socket at unix://{}",
        path.display()
    )]
    PermissionDenied {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Reading or writing the connection failed.
    #[error("error talking to the vswitch daemon: {0}")]
    Io(#[source] io::Error),
    /// The answer is not the HTTP this client understands.
    #[error("invalid answer from the vswitch daemon: {0}")]
    BadResponse(String),
    /// The daemon refused the request; `message` is its text.
    #[error("{message}")]
    Daemon {
        /// The HTTP status.
        status: u16,
        /// The daemon's message.
        message: String,
    },
    /// A success answer whose JSON is not what the call expects.
    #[error("cannot decode the daemon's answer: {0}")]
    Decode(#[source] serde_json::Error),
}

impl ClientError {
    /// The HTTP status of a daemon refusal.
    #[must_use]
    pub const fn status(&self) -> Option<u16> {
        match self {
            Self::Daemon { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A status and the raw body of an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawResponse {
    /// The HTTP status.
    pub status: u16,
    /// The body (empty for 204).
    pub body: Vec<u8>,
}

/// The client: a socket path and a timeout.
#[derive(Clone, Debug)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

impl Client {
    /// A client for the daemon at `socket`, waiting up to two minutes for an
    /// answer.
    #[must_use]
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            timeout: Duration::from_secs(120),
        }
    }

    /// The same client with another answer timeout.
    #[must_use]
    pub const fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The socket path.
    #[must_use]
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `POST /v1/networks`.
    ///
    /// # Errors
    /// [`ClientError`]; a refusal is [`ClientError::Daemon`].
    pub fn create_network(
        &self,
        r: &NetworkCreateRequest,
    ) -> Result<NetworkCreateResponse, ClientError> {
        self.call("POST", "/v1/networks", Some(r))
    }

    /// `GET /v1/networks`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn networks(&self) -> Result<Vec<NetworkInspect>, ClientError> {
        self.call::<(), _>("GET", "/v1/networks", None)
    }

    /// `GET /v1/networks/{name}`.
    ///
    /// # Errors
    /// [`ClientError`]; an unknown network is a 404 [`ClientError::Daemon`].
    pub fn network(&self, name: &str) -> Result<NetworkInspect, ClientError> {
        self.call::<(), _>("GET", &format!("/v1/networks/{}", encode(name)), None)
    }

    /// `DELETE /v1/networks/{name}`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn remove_network(&self, name: &str) -> Result<(), ClientError> {
        self.call_empty::<()>("DELETE", &format!("/v1/networks/{}", encode(name)), None)
    }

    /// `POST /v1/networks/{name}/connect`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn connect(&self, network: &str, r: &ConnectRequest) -> Result<EndpointView, ClientError> {
        self.call(
            "POST",
            &format!("/v1/networks/{}/connect", encode(network)),
            Some(r),
        )
    }

    /// `POST /v1/networks/{name}/disconnect`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn disconnect(&self, network: &str, r: &DisconnectRequest) -> Result<(), ClientError> {
        self.call_empty(
            "POST",
            &format!("/v1/networks/{}/disconnect", encode(network)),
            Some(r),
        )
    }

    /// `POST /v1/sandboxes`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn create_sandbox(&self, r: &SandboxCreateRequest) -> Result<SandboxView, ClientError> {
        self.call("POST", "/v1/sandboxes", Some(r))
    }

    /// `GET /v1/sandboxes`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn sandboxes(&self) -> Result<Vec<SandboxView>, ClientError> {
        self.call::<(), _>("GET", "/v1/sandboxes", None)
    }

    /// `GET /v1/sandboxes/{name}`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn sandbox(&self, name: &str) -> Result<SandboxView, ClientError> {
        self.call::<(), _>("GET", &format!("/v1/sandboxes/{}", encode(name)), None)
    }

    /// `DELETE /v1/sandboxes/{name}`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn remove_sandbox(&self, name: &str) -> Result<(), ClientError> {
        self.call_empty::<()>("DELETE", &format!("/v1/sandboxes/{}", encode(name)), None)
    }

    /// `GET /v1/fdb[?network=NAME]`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn fdb(&self, network: Option<&str>) -> Result<Vec<FdbView>, ClientError> {
        let path = match network {
            Some(n) => format!("/v1/fdb?network={}", encode(n)),
            None => "/v1/fdb".to_owned(),
        };
        self.call::<(), _>("GET", &path, None)
    }

    /// `GET /v1/vteps[?network=NAME]`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn vteps(&self, network: Option<&str>) -> Result<Vec<VtepView>, ClientError> {
        let path = match network {
            Some(n) => format!("/v1/vteps?network={}", encode(n)),
            None => "/v1/vteps".to_owned(),
        };
        self.call::<(), _>("GET", &path, None)
    }

    /// `GET /v1/underlay`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn underlay(&self) -> Result<crate::control::types::UnderlayView, ClientError> {
        self.call::<(), _>("GET", "/v1/underlay", None)
    }

    /// `GET /v1/conntrack[?network=NAME][&sandbox=NAME]`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn conntrack(
        &self,
        network: Option<&str>,
        sandbox: Option<&str>,
    ) -> Result<Vec<crate::control::types::ConntrackView>, ClientError> {
        let mut q = Vec::new();
        if let Some(n) = network {
            q.push(format!("network={}", encode(n)));
        }
        if let Some(s) = sandbox {
            q.push(format!("sandbox={}", encode(s)));
        }
        let path = if q.is_empty() {
            "/v1/conntrack".to_owned()
        } else {
            format!("/v1/conntrack?{}", q.join("&"))
        };
        self.call::<(), _>("GET", &path, None)
    }

    /// `GET /v1/ports`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn ports(&self) -> Result<Vec<PortView>, ClientError> {
        self.call::<(), _>("GET", "/v1/ports", None)
    }

    /// `GET /v1/dns[?network=NAME]`.
    ///
    /// # Errors
    /// [`ClientError`]; an unknown network is a 404 [`ClientError::Daemon`].
    pub fn dns(&self, network: Option<&str>) -> Result<Vec<DnsNetworkView>, ClientError> {
        let path = match network {
            Some(n) => format!("/v1/dns?network={}", encode(n)),
            None => "/v1/dns".to_owned(),
        };
        self.call::<(), _>("GET", &path, None)
    }

    fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let raw = self.checked(method, path, body)?;
        serde_json::from_slice(&raw.body).map_err(ClientError::Decode)
    }

    fn call_empty<B: Serialize>(
        &self,
        method: &str,
        path: &str,
        body: Option<&B>,
    ) -> Result<(), ClientError> {
        self.checked(method, path, body).map(drop)
    }

    fn checked<B: Serialize>(
        &self,
        method: &str,
        path: &str,
        body: Option<&B>,
    ) -> Result<RawResponse, ClientError> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(ClientError::Decode)?;
        let raw = self.request(method, path, body.as_deref())?;
        if (200..300).contains(&raw.status) {
            return Ok(raw);
        }
        let message = serde_json::from_slice::<ErrorBody>(&raw.body).map_or_else(
            |_| {
                let text = String::from_utf8_lossy(&raw.body).trim().to_owned();
                if text.is_empty() {
                    format!("HTTP status {}", raw.status)
                } else {
                    text
                }
            },
            |e| e.message,
        );
        Err(ClientError::Daemon {
            status: raw.status,
            message,
        })
    }

    /// Sends one request and reads the whole answer, whatever its status.
    ///
    /// # Errors
    /// [`ClientError::Connect`], [`ClientError::PermissionDenied`],
    /// [`ClientError::Io`], [`ClientError::BadResponse`].
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<RawResponse, ClientError> {
        let mut stream = UnixStream::connect(&self.socket).map_err(|source| {
            if source.kind() == io::ErrorKind::PermissionDenied {
                ClientError::PermissionDenied {
                    path: self.socket.clone(),
                    source,
                }
            } else {
                ClientError::Connect {
                    path: self.socket.clone(),
                    source,
                }
            }
        })?;
        stream
            .set_read_timeout(Some(self.timeout))
            .and_then(|()| stream.set_write_timeout(Some(self.timeout)))
            .map_err(ClientError::Io)?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: vsctl/{}\r\nAccept: application/json\r\nConnection: close\r\n",
            env!("CARGO_PKG_VERSION")
        );
        if let Some(b) = body {
            head.push_str("Content-Type: application/json\r\n");
            head.push_str(&format!("Content-Length: {}\r\n", b.len()));
        } else if matches!(method, "POST" | "PUT") {
            head.push_str("Content-Length: 0\r\n");
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(body.unwrap_or_default());
        stream.write_all(&out).map_err(ClientError::Io)?;
        let mut raw = Vec::new();
        stream
            .take(MAX_RESPONSE)
            .read_to_end(&mut raw)
            .map_err(ClientError::Io)?;
        parse_response(&raw)
    }
}

/// Splits an HTTP/1.x answer read to end of stream into status and body.
fn parse_response(raw: &[u8]) -> Result<RawResponse, ClientError> {
    let bad = |m: &str| ClientError::BadResponse(m.to_owned());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("the answer ended before its headers did"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("headers are not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    if !parts.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err(bad(&format!("unexpected status line {status_line:?}")));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|s| (100..1000).contains(s))
        .ok_or_else(|| bad(&format!("unexpected status line {status_line:?}")))?;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(bad(&format!("malformed header {line:?}")));
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| bad(&format!("bad Content-Length {value:?}")))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && !value.eq_ignore_ascii_case("identity")
        {
            return Err(bad(&format!("unsupported Transfer-Encoding {value:?}")));
        }
    }
    let body = &raw[end + 4..];
    let body = match length {
        Some(n) if body.len() < n => return Err(bad("the answer ended before its body did")),
        Some(n) => &body[..n],
        None => body,
    };
    Ok(RawResponse {
        status,
        body: body.to_vec(),
    })
}

/// Percent-encodes what is not unreserved in a path segment or query value.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_length_answers() {
        let raw = b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}trailing";
        let r = parse_response(raw).unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(r.body, b"{}");
        let r = parse_response(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
        assert_eq!((r.status, r.body.len()), (204, 0));
    }

    #[test]
    fn refuses_what_it_does_not_understand() {
        for raw in [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}",
            b"garbage",
            b"SPDY/3 200 OK\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno-colon\r\n\r\n",
        ] {
            assert!(matches!(
                parse_response(raw),
                Err(ClientError::BadResponse(_))
            ));
        }
    }

    #[test]
    fn encodes_path_segments() {
        assert_eq!(encode("n1.a-b_c"), "n1.a-b_c");
        assert_eq!(encode("a/b c"), "a%2Fb%20c");
    }
}
