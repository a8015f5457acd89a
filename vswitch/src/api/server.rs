//! The HTTP side of the API: a tiny_http server on a unix socket that parses
//! requests, routes them ([`route`], pure and tested without a socket) and
//! writes the [`Backend`]'s answer back.

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Backend;
use super::types::{
    ConnectRequest, DisconnectRequest, ErrorBody, NetworkCreateRequest, SandboxCreateRequest,
};
use crate::control::{ControlError, Request, Response};

/// The largest request body accepted (a network create with many auxiliary
/// addresses is a few kilobytes).
pub const MAX_BODY: usize = 1 << 20;

/// Mode of the socket file: owner and group may connect.
pub const SOCKET_MODE: u32 = 0o660;

/// The API server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The socket's directory could not be created.
    #[error("cannot create directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A daemon already answers on the socket.
    #[error("another daemon is listening on {0}")]
    InUse(PathBuf),
    /// The path exists and is not a socket; it is left alone.
    #[error("{0} exists and is not a socket")]
    NotASocket(PathBuf),
    /// Binding or setting the socket's mode failed.
    #[error("cannot listen on {path}: {source}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// tiny_http refused the listener.
    #[error("cannot start the HTTP server on {path}: {source}")]
    Server {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A status and a JSON body (empty for 204).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// The JSON body, or empty.
    pub body: Vec<u8>,
}

impl Reply {
    fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Self { status, body },
            Err(e) => Self::error(500, &format!("cannot encode the answer: {e}")),
        }
    }

    fn error(status: u16, message: &str) -> Self {
        let body = serde_json::to_vec(&ErrorBody {
            message: message.to_owned(),
        })
        .unwrap_or_default();
        Self { status, body }
    }

    fn from_error(e: &ControlError) -> Self {
        Self::error(e.status(), &e.to_string())
    }

    const fn empty(status: u16) -> Self {
        Self {
            status,
            body: Vec::new(),
        }
    }
}

/// Routes one request: the whole API without the socket.
///
/// `url` is the request target (path and optional query), `body` the raw
/// request body. Never panics, whatever the input.
pub fn route<B: Backend + ?Sized>(backend: &B, method: &str, url: &str, body: &[u8]) -> Reply {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let path = if path.len() > 1 {
        path.strip_suffix('/').unwrap_or(path)
    } else {
        path
    };
    let Some(segments) = path.strip_prefix('/').map(|p| {
        p.split('/')
            .map(percent_decode)
            .collect::<Option<Vec<String>>>()
    }) else {
        return Reply::error(404, "page not found");
    };
    let Some(segments) = segments else {
        return Reply::error(400, &format!("invalid percent-encoding in {path}"));
    };
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    let not_allowed = || Reply::error(405, &format!("method {method} is not allowed on {path}"));
    match (seg.as_slice(), method) {
        (["v1", "networks"], "GET") => apply(backend, Request::ListNetworks, 200),
        (["v1", "networks"], "POST") => match parse::<NetworkCreateRequest>(body) {
            Ok(r) => apply(backend, Request::CreateNetwork(r), 201),
            Err(e) => Reply::from_error(&e),
        },
        (["v1", "networks"], _) => not_allowed(),
        (["v1", "networks", name], "GET") => apply(
            backend,
            Request::InspectNetwork {
                name: (*name).to_owned(),
            },
            200,
        ),
        (["v1", "networks", name], "DELETE") => apply(
            backend,
            Request::RemoveNetwork {
                name: (*name).to_owned(),
            },
            204,
        ),
        (["v1", "networks", _], _) => not_allowed(),
        (["v1", "networks", name, "connect"], "POST") => match parse::<ConnectRequest>(body) {
            Ok(request) => apply(
                backend,
                Request::Connect {
                    network: (*name).to_owned(),
                    request,
                },
                200,
            ),
            Err(e) => Reply::from_error(&e),
        },
        (["v1", "networks", name, "disconnect"], "POST") => {
            match parse::<DisconnectRequest>(body) {
                Ok(request) => apply(
                    backend,
                    Request::Disconnect {
                        network: (*name).to_owned(),
                        request,
                    },
                    204,
                ),
                Err(e) => Reply::from_error(&e),
            }
        }
        (["v1", "networks", _, "connect" | "disconnect"], _) => not_allowed(),
        (["v1", "sandboxes"], "GET") => apply(backend, Request::ListSandboxes, 200),
        (["v1", "sandboxes"], "POST") => match parse::<SandboxCreateRequest>(body) {
            Ok(r) => apply(backend, Request::CreateSandbox(r), 201),
            Err(e) => Reply::from_error(&e),
        },
        (["v1", "sandboxes"], _) => not_allowed(),
        (["v1", "sandboxes", name], "GET") => apply(
            backend,
            Request::InspectSandbox {
                name: (*name).to_owned(),
            },
            200,
        ),
        (["v1", "sandboxes", name], "DELETE") => apply(
            backend,
            Request::RemoveSandbox {
                name: (*name).to_owned(),
            },
            204,
        ),
        (["v1", "sandboxes", _], _) => not_allowed(),
        (["v1", "fdb"], "GET") => {
            let network = match query_param(query, "network") {
                Ok(n) => n.filter(|n| !n.is_empty()),
                Err(e) => return Reply::error(400, &e),
            };
            match backend.fdb(network.as_deref()) {
                Ok(rows) => Reply::json(200, &rows),
                Err(e) => Reply::from_error(&e),
            }
        }
        (["v1", "ports"], "GET") => match backend.ports() {
            Ok(ports) => Reply::json(200, &ports),
            Err(e) => Reply::from_error(&e),
        },
        (["v1", "dns"], "GET") => {
            let network = match query_param(query, "network") {
                Ok(n) => n.filter(|n| !n.is_empty()),
                Err(e) => return Reply::error(400, &e),
            };
            match backend.dns(network.as_deref()) {
                Ok(views) => Reply::json(200, &views),
                Err(e) => Reply::from_error(&e),
            }
        }
        (["v1", "fdb" | "ports" | "dns"], _) => not_allowed(),
        _ => Reply::error(404, "page not found"),
    }
}

fn apply<B: Backend + ?Sized>(backend: &B, request: Request, status: u16) -> Reply {
    match backend.apply(request) {
        Ok(Response::NetworkCreated(r)) => Reply::json(status, &r),
        Ok(Response::Networks(r)) => Reply::json(status, &r),
        Ok(Response::Network(r)) => Reply::json(status, &r),
        Ok(Response::Connected(r)) => Reply::json(status, &r),
        Ok(Response::Sandbox(r)) => Reply::json(status, &r),
        Ok(Response::Sandboxes(r)) => Reply::json(status, &r),
        Ok(Response::Done) => Reply::empty(204),
        Err(e) => Reply::from_error(&e),
    }
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ControlError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ControlError::InvalidJson(
            "the body is empty; a JSON object was expected".to_owned(),
        ));
    }
    // Derived deserializers also take a struct as a JSON array of its
    // fields; the API speaks objects only.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        let value: Result<serde_json::Value, _> = serde_json::from_slice(body);
        return Err(ControlError::InvalidJson(match value {
            Ok(_) => "a JSON object was expected".to_owned(),
            Err(e) => e.to_string(),
        }));
    }
    serde_json::from_slice(body).map_err(|e| ControlError::InvalidJson(e.to_string()))
}

/// Decodes `%XX` escapes; `None` for a broken escape or non-UTF-8 result.
fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_owned());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The value of `key` in a query string (`a=b&c=d`, `+` as space).
fn query_param(query: &str, key: &str) -> Result<Option<String>, String> {
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |t: &str| {
            percent_decode(&t.replace('+', " "))
                .ok_or_else(|| format!("invalid percent-encoding in query {query:?}"))
        };
        if decode(k)? == key {
            return decode(v).map(Some);
        }
    }
    Ok(None)
}

/// Stops a running [`ApiServer::run`] from another thread.
#[derive(Clone)]
pub struct ShutdownHandle {
    http: Arc<tiny_http::Server>,
    stop: Arc<AtomicBool>,
}

impl core::fmt::Debug for ShutdownHandle {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ShutdownHandle")
            .field("stop", &self.stop)
            .finish_non_exhaustive()
    }
}

impl ShutdownHandle {
    /// Makes [`ApiServer::run`] return after the request in progress.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
        self.http.unblock();
    }
}

/// The API server on its unix socket. Dropping it removes the socket file.
pub struct ApiServer {
    http: Arc<tiny_http::Server>,
    path: PathBuf,
    stop: Arc<AtomicBool>,
}

impl core::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ApiServer")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl ApiServer {
    /// Listens on `path` (mode 0660), creating its directory. A stale socket
    /// file (nobody answers on it) is replaced; a live one is an error.
    ///
    /// # Errors
    /// [`ApiError`].
    pub fn bind(path: &Path) -> Result<Self, ApiError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| ApiError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(ApiError::NotASocket(path.to_owned()));
            }
            if UnixStream::connect(path).is_ok() {
                return Err(ApiError::InUse(path.to_owned()));
            }
            std::fs::remove_file(path).map_err(|source| ApiError::Bind {
                path: path.to_owned(),
                source,
            })?;
        }
        let bind_err = |source| ApiError::Bind {
            path: path.to_owned(),
            source,
        };
        let listener = UnixListener::bind(path).map_err(bind_err)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
            .map_err(bind_err)?;
        let http = tiny_http::Server::from_listener(listener, None).map_err(|source| {
            ApiError::Server {
                path: path.to_owned(),
                source,
            }
        })?;
        Ok(Self {
            http: Arc::new(http),
            path: path.to_owned(),
            stop: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The socket path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A handle that stops [`Self::run`].
    #[must_use]
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            http: Arc::clone(&self.http),
            stop: Arc::clone(&self.stop),
        }
    }

    /// Serves requests until [`ShutdownHandle::shutdown`], each on its own
    /// thread, so a client that stalls while sending its body holds up only
    /// itself. The backend serializes the work (one control thread). Returns
    /// once the requests in progress are answered.
    pub fn run<B: Backend + ?Sized>(&self, backend: &B) {
        std::thread::scope(|scope| {
            while !self.stop.load(Ordering::Acquire) {
                match self.http.recv_timeout(Duration::from_millis(500)) {
                    Ok(Some(request)) => {
                        let spawned = std::thread::Builder::new()
                            .name("vswitch-api-req".to_owned())
                            .spawn_scoped(scope, move || handle(backend, request));
                        if let Err(e) = spawned {
                            tracing::warn!(error = %e, "api: cannot spawn a request thread");
                        }
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "api: receiving a request failed"),
                }
            }
        });
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds `path` and serves until the process ends. The daemon uses
/// [`ApiServer`] directly to be able to stop it.
///
/// # Errors
/// [`ApiError`] when the socket cannot be bound.
pub fn serve<B: Backend + ?Sized>(path: &Path, backend: &B) -> Result<(), ApiError> {
    ApiServer::bind(path)?.run(backend);
    Ok(())
}

fn handle<B: Backend + ?Sized>(backend: &B, mut request: tiny_http::Request) {
    let method = request.method().as_str().to_owned();
    let url = request.url().to_owned();
    let mut body = Vec::new();
    let read = request
        .as_reader()
        .take(u64::try_from(MAX_BODY).unwrap_or(u64::MAX) + 1)
        .read_to_end(&mut body);
    let reply = match read {
        Err(e) => Reply::error(400, &format!("cannot read the request body: {e}")),
        Ok(_) if body.len() > MAX_BODY => Reply::error(
            413,
            &format!("the request body is larger than {MAX_BODY} bytes"),
        ),
        Ok(_) => route(backend, &method, &url, &body),
    };
    tracing::debug!(%method, %url, status = reply.status, "api request");
    let status = tiny_http::StatusCode(reply.status);
    let result = if reply.body.is_empty() {
        request.respond(tiny_http::Response::empty(status))
    } else {
        let content_type =
            tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..])
                .expect("a constant, valid header");
        request.respond(
            tiny_http::Response::from_data(reply.body)
                .with_status_code(status)
                .with_header(content_type)
                .with_chunked_threshold(usize::MAX),
        )
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "api: writing the answer failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb").as_deref(), Some("a/b"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("%ff"), None);
    }

    #[test]
    fn query_parameters() {
        assert_eq!(
            query_param("network=n1", "network"),
            Ok(Some("n1".to_owned()))
        );
        assert_eq!(
            query_param("a=b&network=x%2Dy", "network"),
            Ok(Some("x-y".to_owned()))
        );
        assert_eq!(query_param("", "network"), Ok(None));
        assert!(query_param("network=%g", "network").is_err());
    }
}
