//! The HTTP side of the API: a unix-socket server that parses requests
//! (httparse), routes them ([`route`], pure and tested without a socket)
//! and writes the [`Backend`]'s answer back.
//!
//! The server is made to stay up whatever its clients do:
//! - the accept loop survives `EMFILE`/`ENFILE` (and any other accept
//!   error): it backs off from [`ACCEPT_BACKOFF_MIN`] to
//!   [`ACCEPT_BACKOFF_MAX`] and keeps accepting, so the API comes back by
//!   itself once descriptors are free again;
//! - each connection is served on its own short-lived thread, with
//!   [`IO_TIMEOUT`] on every read and write, a head of at most
//!   [`MAX_HEAD`] bytes and a body of at most [`MAX_BODY`]; at most
//!   [`MAX_CONNECTIONS`] are served at once, the others get a 503;
//! - shutdown stops accepting and returns at once: connection threads are
//!   detached and never waited for.

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

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

/// The largest request line and headers accepted.
pub const MAX_HEAD: usize = 16 << 10;

/// How long one read or write on a client connection may block: a client
/// that stalls longer is dropped.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once; more are answered 503 at once.
pub const MAX_CONNECTIONS: usize = 256;

/// First pause after a failed `accept`.
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);

/// Longest pause after repeated failed `accept`s: the API is back within
/// this long once descriptors are free again.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_millis(200);

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
}

/// A status and a JSON body (empty for 204).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// The body (JSON, or the metrics' text), or empty.
    pub body: Vec<u8>,
    /// The body's media type.
    pub content_type: &'static str,
}

impl Reply {
    fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Self {
                status,
                body,
                content_type: JSON,
            },
            Err(e) => Self::error(500, &format!("cannot encode the answer: {e}")),
        }
    }

    pub(super) fn error(status: u16, message: &str) -> Self {
        let body = serde_json::to_vec(&ErrorBody {
            message: message.to_owned(),
        })
        .unwrap_or_default();
        Self {
            status,
            body,
            content_type: JSON,
        }
    }

    pub(super) fn from_error(e: &ControlError) -> Self {
        Self::error(e.status(), &e.to_string())
    }

    const fn empty(status: u16) -> Self {
        Self {
            status,
            body: Vec::new(),
            content_type: JSON,
        }
    }
}

/// The media type of every answer but the metrics.
const JSON: &str = "application/json";

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
        (["v1", "vteps"], "GET") => {
            let network = match query_param(query, "network") {
                Ok(n) => n.filter(|n| !n.is_empty()),
                Err(e) => return Reply::error(400, &e),
            };
            match backend.vteps(network.as_deref()) {
                Ok(views) => Reply::json(200, &views),
                Err(e) => Reply::from_error(&e),
            }
        }
        (["v1", "underlay"], "GET") => match backend.underlay() {
            Ok(view) => Reply::json(200, &view),
            Err(e) => Reply::from_error(&e),
        },
        (["v1", "conntrack"], "GET") => {
            let network = match query_param(query, "network") {
                Ok(n) => n.filter(|n| !n.is_empty()),
                Err(e) => return Reply::error(400, &e),
            };
            let sandbox = match query_param(query, "sandbox") {
                Ok(n) => n.filter(|n| !n.is_empty()),
                Err(e) => return Reply::error(400, &e),
            };
            match backend.conntrack(network.as_deref(), sandbox.as_deref()) {
                Ok(views) => Reply::json(200, &views),
                Err(e) => Reply::from_error(&e),
            }
        }
        (
            [
                "v1",
                "fdb" | "ports" | "dns" | "vteps" | "underlay" | "conntrack",
            ],
            _,
        ) => not_allowed(),
        (["v1", "trace"], "POST") => match parse::<crate::trace::TraceRequest>(body) {
            Ok(r) => match backend.trace(&r) {
                Ok(report) => Reply::json(200, &report),
                Err(e) => Reply::from_error(&e),
            },
            Err(e) => Reply::from_error(&e),
        },
        (["v1", "trace"], _) => not_allowed(),
        (["metrics"], "GET") => match backend.metrics() {
            Ok(text) => Reply {
                status: 200,
                body: text.into_bytes(),
                content_type: crate::metrics::CONTENT_TYPE,
            },
            Err(e) => Reply::from_error(&e),
        },
        (["metrics"], _) => not_allowed(),
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
pub(super) fn percent_decode(s: &str) -> Option<String> {
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
    waker: Arc<mio::Waker>,
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
    /// Makes [`ApiServer::run`] return; requests in progress finish on
    /// their own threads.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
        if let Err(e) = self.waker.wake() {
            tracing::warn!(error = %e, "api: cannot wake the accept loop");
        }
    }
}

const LISTENER: mio::Token = mio::Token(0);
const WAKER: mio::Token = mio::Token(1);

/// The API server on its unix socket. Dropping it removes the socket file.
pub struct ApiServer {
    listener: mio::net::UnixListener,
    poll: mio::Poll,
    waker: Arc<mio::Waker>,
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
        listener.set_nonblocking(true).map_err(bind_err)?;
        let mut listener = mio::net::UnixListener::from_std(listener);
        let poll = mio::Poll::new().map_err(bind_err)?;
        poll.registry()
            .register(&mut listener, LISTENER, mio::Interest::READABLE)
            .map_err(bind_err)?;
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER).map_err(bind_err)?);
        Ok(Self {
            listener,
            poll,
            waker,
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
            waker: Arc::clone(&self.waker),
            stop: Arc::clone(&self.stop),
        }
    }

    /// Serves requests until [`ShutdownHandle::shutdown`], each connection
    /// on its own thread, so a client that stalls holds up only itself
    /// (and only until [`IO_TIMEOUT`]). Returns as soon as it is stopped,
    /// without waiting for connections in progress.
    pub fn run(&mut self, backend: Arc<dyn Backend>) {
        let active = Arc::new(AtomicUsize::new(0));
        let mut events = mio::Events::with_capacity(8);
        // After a failed accept, the next attempt waits this long (edge
        // triggered readiness will not report the queued connections
        // again).
        let mut backoff: Option<Duration> = None;
        let mut last_logged: Option<Instant> = None;
        while !self.stop.load(Ordering::Acquire) {
            if let Err(e) = self.poll.poll(&mut events, backoff) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    tracing::warn!(error = %e, "api: poll failed");
                    std::thread::sleep(ACCEPT_BACKOFF_MAX);
                }
                continue;
            }
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            loop {
                match self.listener.accept() {
                    Ok((stream, _)) => {
                        backoff = None;
                        spawn_connection(stream, &backend, &active);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::Interrupted | std::io::ErrorKind::ConnectionAborted
                        ) => {}
                    Err(e) => {
                        // EMFILE, ENFILE, ENOBUFS, ENOMEM: wait for
                        // descriptors or memory to be freed, then go on.
                        if last_logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                            tracing::warn!(error = %e, "api: cannot accept a connection; backing off");
                            last_logged = Some(Instant::now());
                        }
                        backoff = Some(
                            backoff.map_or(ACCEPT_BACKOFF_MIN, |b| (b * 2).min(ACCEPT_BACKOFF_MAX)),
                        );
                        break;
                    }
                }
            }
        }
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
pub fn serve(path: &Path, backend: Arc<dyn Backend>) -> Result<(), ApiError> {
    ApiServer::bind(path)?.run(backend);
    Ok(())
}

/// Counts a connection in progress for as long as it lives.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn spawn_connection(
    stream: mio::net::UnixStream,
    backend: &Arc<dyn Backend>,
    active: &Arc<AtomicUsize>,
) {
    let stream = UnixStream::from(std::os::fd::OwnedFd::from(stream));
    let slot = Slot(Arc::clone(active));
    if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
        let mut stream = stream;
        let _ = stream.set_nonblocking(true);
        write_reply(
            &mut stream,
            &Reply::error(503, "too many connections to the daemon; try again"),
        );
        drop(slot);
        return;
    }
    let backend = Arc::clone(backend);
    let spawned = std::thread::Builder::new()
        .name("vswitch-api-req".to_owned())
        .spawn(move || {
            let _slot = slot;
            handle(&*backend, stream);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "api: cannot spawn a request thread");
    }
}

/// A request as read from the socket.
#[derive(Debug)]
pub(crate) struct RawRequest {
    pub(crate) method: String,
    pub(crate) url: String,
    pub(crate) body: Vec<u8>,
}

/// Reads one request: head, then a `Content-Length` body.
pub(crate) fn read_request(stream: &mut UnixStream) -> Result<RawRequest, Reply> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let timeout = |e: std::io::Error| {
        if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            Reply::error(408, "the request was not received in time")
        } else {
            Reply::error(400, &format!("cannot read the request: {e}"))
        }
    };
    let (head_len, method, url, length) = loop {
        let n = stream.read(&mut chunk).map_err(timeout)?;
        if n == 0 {
            return Err(Reply::error(
                400,
                "the connection closed before the request ended",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let mut length = 0usize;
                for h in req.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        length = std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.trim().parse().ok())
                            .ok_or_else(|| Reply::error(400, "invalid Content-Length"))?;
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        return Err(Reply::error(
                            411,
                            "a chunked body is not accepted; send Content-Length",
                        ));
                    }
                }
                break (
                    len,
                    req.method.unwrap_or_default().to_owned(),
                    req.path.unwrap_or_default().to_owned(),
                    length,
                );
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) => {
                return Err(Reply::error(
                    431,
                    &format!("the request head is larger than {MAX_HEAD} bytes"),
                ));
            }
            Err(e) => return Err(Reply::error(400, &format!("malformed request: {e}"))),
        }
    };
    if length > MAX_BODY {
        return Err(Reply::error(
            413,
            &format!("the request body is larger than {MAX_BODY} bytes"),
        ));
    }
    let mut body = buf.split_off(head_len);
    body.truncate(length);
    if body.len() < length {
        let start = body.len();
        body.resize(length, 0);
        stream.read_exact(&mut body[start..]).map_err(timeout)?;
    }
    Ok(RawRequest { method, url, body })
}

fn handle(backend: &dyn Backend, mut stream: UnixStream) {
    let configured = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_read_timeout(Some(IO_TIMEOUT)))
        .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)));
    if let Err(e) = configured {
        tracing::debug!(error = %e, "api: cannot configure a connection");
        return;
    }
    let reply = match read_request(&mut stream) {
        Ok(r) if r.method == "GET" && super::capture_stream::is_capture(&r.url) => {
            match super::capture_stream::serve(backend, &r.url, &mut stream) {
                Ok(()) => return,
                Err(reply) => reply,
            }
        }
        Ok(r) if r.method == "GET" && super::stream::is_events(&r.url) => {
            match super::stream::serve(backend, &r.url, &mut stream) {
                Ok(()) => return,
                Err(reply) => reply,
            }
        }
        Ok(r) => {
            let reply = route(backend, &r.method, &r.url, &r.body);
            tracing::debug!(method = %r.method, url = %r.url, status = reply.status, "api request");
            reply
        }
        Err(reply) => reply,
    };
    write_reply(&mut stream, &reply);
}

pub(crate) fn write_reply(stream: &mut UnixStream, reply: &Reply) {
    let reason = match reply.status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    };
    let mut head = format!("HTTP/1.1 {} {reason}\r\n", reply.status);
    if !reply.body.is_empty() {
        head.push_str(&format!("Content-Type: {}\r\n", reply.content_type));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        reply.body.len()
    ));
    let result = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(&reply.body))
        .and_then(|()| stream.flush());
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
