//! Docker's container names for the switch's tables.
//!
//! A remote driver is never told which container an endpoint is for
//! (`CreateEndpoint` and `Join` carry ids and the sandbox key only), so a
//! joined sandbox is first named after its sandbox key. Docker's Engine API
//! knows the name: `GET /networks/<id>` lists, per container on the
//! network, its `Name` and `EndpointID`. After a join, the [`Namer`] thread
//! asks the engine on its socket (`--docker-api-socket`, default
//! [`DEFAULT_ENGINE_SOCKET`]) and renames the sandbox to the container's
//! name (`Request::RenameSandbox`), so `show-ports`, `show-fdb`,
//! `show-conntrack` and `sandbox ls` show what `docker ps` shows.
//!
//! Nothing of this is on a plugin call's path: the join only queues the
//! question (never waiting; a full queue drops it with a log line), and
//! dockerd answers its own API only once the call that joined is done.
//! The thread asks again with growing delays while the engine does not
//! list the endpoint yet or cannot be reached, then gives up with one log
//! line: the sandbox keeps its sandbox-key name. A name another sandbox
//! holds is left alone too.
//!
//! The request is plain HTTP/1.0 on the unix socket, so Docker's server
//! answers without chunking and closes; the answer is parsed with
//! `httparse`, as the daemon's own server parses requests.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use serde_json::Value;

use crate::api::Backend;
use crate::control::{ControlError, Request};

/// Where a host's dockerd serves its Engine API unless told otherwise.
pub const DEFAULT_ENGINE_SOCKET: &str = "/var/run/docker.sock";

/// The delay before each try: about 13 s in all, the time a busy engine
/// may take to finish starting a container.
const BACKOFF_MS: [u64; 7] = [100, 200, 400, 800, 1600, 3200, 6400];

/// Questions waiting for the thread; more are dropped (with a log line).
const QUEUE: usize = 1024;

/// The largest answer read from the engine.
const MAX_ANSWER: u64 = 16 << 20;

/// Each read and write on the engine's socket.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the engine could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Nothing answers on the socket.
    #[error("cannot connect to the Docker engine at unix://{path}: {source}")]
    Connect {
        /// The socket.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Reading or writing the connection failed.
    #[error("talking to the Docker engine: {0}")]
    Io(#[from] std::io::Error),
    /// The answer is not HTTP this client reads.
    #[error("invalid answer from the Docker engine: {0}")]
    BadAnswer(String),
    /// The engine refused.
    #[error("the Docker engine answered {0}")]
    Status(u16),
    /// The body is not the JSON of a network.
    #[error("cannot decode the Docker engine's answer: {0}")]
    Decode(#[from] serde_json::Error),
}

/// The name of the container whose endpoint on the network is
/// `endpoint_id`, from `GET /networks/<id>`'s JSON (`Containers`, by
/// container id, each with `Name` and `EndpointID`).
#[must_use]
pub fn container_name(network: &Value, endpoint_id: &str) -> Option<String> {
    network
        .get("Containers")?
        .as_object()?
        .values()
        .find(|c| c.get("EndpointID").and_then(Value::as_str) == Some(endpoint_id))?
        .get("Name")?
        .as_str()
        .map(|n| n.trim_start_matches('/').to_owned())
        .filter(|n| !n.is_empty())
}

/// Splits an HTTP answer read to its end into the status and the body
/// (cut at `Content-Length` when given). A chunked body is refused: an
/// HTTP/1.0 request is never answered so.
///
/// # Errors
/// [`EngineError::BadAnswer`].
pub fn parse_answer(raw: &[u8]) -> Result<(u16, &[u8]), EngineError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut answer = httparse::Response::new(&mut headers);
    let head = match answer.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return Err(EngineError::BadAnswer(
                "the answer ends in its head".to_owned(),
            ));
        }
        Err(e) => return Err(EngineError::BadAnswer(e.to_string())),
    };
    let status = answer
        .code
        .ok_or_else(|| EngineError::BadAnswer("no status".to_owned()))?;
    let header = |name: &str| {
        answer
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    if header("transfer-encoding").is_some_and(|v| v != "identity") {
        return Err(EngineError::BadAnswer("a chunked answer".to_owned()));
    }
    let body = raw.get(head..).unwrap_or_default();
    let body = match header("content-length").map(|v| v.parse::<usize>()) {
        None => body,
        Some(Ok(n)) if n <= body.len() => &body[..n],
        Some(_) => {
            return Err(EngineError::BadAnswer(
                "the body is shorter than its Content-Length".to_owned(),
            ));
        }
    };
    Ok((status, body))
}

/// Asks the engine at `socket` for the name of the container of
/// `endpoint_id` on `network_id`: `None` while the engine does not list it.
///
/// # Errors
/// [`EngineError`]; a network the engine does not know is
/// [`EngineError::Status`] 404.
pub fn ask_engine(
    socket: &Path,
    network_id: &str,
    endpoint_id: &str,
) -> Result<Option<String>, EngineError> {
    if network_id.is_empty() || !network_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(EngineError::BadAnswer(format!(
            "invalid network id {network_id:?}"
        )));
    }
    let mut stream = UnixStream::connect(socket).map_err(|source| EngineError::Connect {
        path: socket.display().to_string(),
        source,
    })?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.write_all(
        format!(
            "GET /networks/{network_id} HTTP/1.0\r\nHost: docker\r\nUser-Agent: vswitchd\r\nAccept: application/json\r\n\r\n"
        )
        .as_bytes(),
    )?;
    let mut raw = Vec::new();
    stream.take(MAX_ANSWER).read_to_end(&mut raw)?;
    let (status, body) = parse_answer(&raw)?;
    if status != 200 {
        return Err(EngineError::Status(status));
    }
    let network: Value = serde_json::from_slice(body)?;
    Ok(container_name(&network, endpoint_id))
}

/// One sandbox to name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Question {
    /// Docker's network id.
    pub network_id: String,
    /// Docker's endpoint id.
    pub endpoint_id: String,
    /// The switch's sandbox (its id).
    pub sandbox: String,
}

/// Queues questions for the naming thread; cheap to clone. The thread
/// ends when the last `Namer` is dropped.
#[derive(Clone, Debug)]
pub struct Namer {
    tx: Sender<Question>,
}

impl Namer {
    /// Starts the thread (`vswitch-docker-names`), asking the engine at
    /// `socket` and renaming through `backend`.
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub fn start(socket: PathBuf, backend: Arc<dyn Backend>) -> std::io::Result<Self> {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        std::thread::Builder::new()
            .name("vswitch-docker-names".to_owned())
            .spawn(move || run(&socket, &*backend, &rx))?;
        Ok(Self { tx })
    }

    /// Queues `q` without waiting.
    pub fn ask(&self, q: Question) {
        match self.tx.try_send(q) {
            Ok(()) => {}
            Err(TrySendError::Full(q)) => {
                tracing::info!(sandbox = %q.sandbox, "docker plugin: too many container names to learn; this sandbox keeps its name");
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// What one try came to.
enum Tried {
    Done,
    Again(String),
}

fn run(socket: &Path, backend: &dyn Backend, rx: &Receiver<Question>) {
    // (when, tries made, question)
    let mut pending: Vec<(Instant, usize, Question)> = Vec::new();
    loop {
        let now = Instant::now();
        let wait = pending
            .iter()
            .map(|p| p.0.saturating_duration_since(now))
            .min()
            .unwrap_or(Duration::from_secs(3600));
        match rx.recv_timeout(wait) {
            Ok(q) => pending.push((Instant::now() + Duration::from_millis(BACKOFF_MS[0]), 0, q)),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = pending.into_iter().partition(|p| p.0 <= now);
        pending = later;
        for (_, tries, q) in due {
            match try_once(socket, backend, &q) {
                Tried::Done => {}
                Tried::Again(why) => match BACKOFF_MS.get(tries + 1) {
                    Some(&ms) => {
                        pending.push((Instant::now() + Duration::from_millis(ms), tries + 1, q));
                    }
                    None => tracing::info!(
                        sandbox = %q.sandbox,
                        endpoint = %q.endpoint_id,
                        reason = %why,
                        "docker plugin: container name not learned; the sandbox keeps its name"
                    ),
                },
            }
        }
    }
}

fn try_once(socket: &Path, backend: &dyn Backend, q: &Question) -> Tried {
    let name = match ask_engine(socket, &q.network_id, &q.endpoint_id) {
        Ok(Some(name)) => name,
        Ok(None) => return Tried::Again("the engine does not list the endpoint".to_owned()),
        // The network is gone: nothing to name.
        Err(EngineError::Status(404)) => return Tried::Done,
        Err(e) => return Tried::Again(e.to_string()),
    };
    let request = Request::RenameSandbox {
        name: q.sandbox.clone(),
        new_name: name.clone(),
    };
    match backend.apply(request) {
        Ok(_) => {
            tracing::debug!(sandbox = %q.sandbox, container = %name, "docker plugin: sandbox named after its container")
        }
        // The container left before its name came.
        Err(ControlError::SandboxNotFound(_)) => {}
        Err(e) => {
            tracing::info!(sandbox = %q.sandbox, container = %name, error = %e, "docker plugin: sandbox not named after its container")
        }
    }
    Tried::Done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_names_its_container() {
        let net: Value = serde_json::from_str(
            r#"{"Name":"n1","Containers":{
                "aaa":{"Name":"web","EndpointID":"e1","IPv4Address":"10.0.0.2/24"},
                "bbb":{"Name":"db","EndpointID":"e2"}}}"#,
        )
        .unwrap();
        assert_eq!(container_name(&net, "e2").as_deref(), Some("db"));
        assert_eq!(container_name(&net, "e3"), None);
        for bad in [
            r#"{"Containers":null}"#,
            r#"{"Containers":[1]}"#,
            r#"{"Containers":{"a":{"EndpointID":"e1","Name":7}}}"#,
            r#"{"Containers":{"a":{"EndpointID":"e1","Name":""}}}"#,
            "[]",
        ] {
            let v: Value = serde_json::from_str(bad).unwrap();
            assert_eq!(container_name(&v, "e1"), None, "{bad}");
        }
    }

    #[test]
    fn answers_are_cut_at_their_length_and_chunked_ones_refused() {
        let raw = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}trailing";
        assert_eq!(parse_answer(raw).unwrap(), (200, &b"{}"[..]));
        let raw = b"HTTP/1.0 404 Not Found\r\n\r\n{\"message\":\"network x not found\"}";
        assert_eq!(parse_answer(raw).unwrap().0, 404);
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
        assert!(parse_answer(chunked).is_err());
        assert!(parse_answer(b"HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\n{}").is_err());
        assert!(parse_answer(b"HTTP/1.0 200 OK\r\nContent-").is_err());
        assert!(parse_answer(b"\x00\x01garbage").is_err());
    }

    #[test]
    fn a_network_id_goes_into_the_path_only_when_plain() {
        let e = ask_engine(Path::new("/nonexistent.sock"), "../x", "e").unwrap_err();
        assert!(matches!(e, EngineError::BadAnswer(_)), "{e}");
        let e = ask_engine(Path::new("/nonexistent.sock"), "abc", "e").unwrap_err();
        assert!(matches!(e, EngineError::Connect { .. }), "{e}");
    }
}
