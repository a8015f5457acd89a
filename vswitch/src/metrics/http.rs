//! `--metrics-listen ADDR`: `GET /metrics` over TCP for a Prometheus
//! server, which cannot scrape a unix socket.
//!
//! Only that one route is served; the control API never is. Requests are
//! parsed by `httparse`, one per connection, each with an I/O timeout, and
//! handled one at a time on the listener's thread: a scrape is small and
//! rare, and a client that stalls is cut off by the timeout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::CONTENT_TYPE;

/// How long a client may take to send its request or read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest request head accepted.
const MAX_HEAD: usize = 8192;

/// What produces the exposition for each scrape.
pub type Source = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// A running metrics listener.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl MetricsServer {
    /// Binds `addr` and serves `source` on a thread named
    /// `vswitch-metrics`.
    ///
    /// # Errors
    /// When the address cannot be bound or the thread cannot start.
    pub fn spawn(
        addr: SocketAddr,
        source: Source,
    ) -> std::io::Result<(Self, JoinHandle<std::io::Result<()>>)> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("vswitch-metrics".to_owned())
            .spawn(move || {
                for conn in listener.incoming() {
                    if flag.load(Ordering::Acquire) {
                        break;
                    }
                    match conn {
                        Ok(stream) => serve(stream, &source),
                        Err(e) => {
                            tracing::debug!(error = %e, "metrics: accept failed");
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                }
                Ok(())
            })?;
        Ok((Self { addr, stop }, handle))
    }

    /// The address actually bound (port 0 picks one).
    #[must_use]
    pub const fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the listener: sets the flag and wakes the accept call.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

fn serve(mut stream: TcpStream, source: &Source) {
    if stream.set_read_timeout(Some(IO_TIMEOUT)).is_err()
        || stream.set_write_timeout(Some(IO_TIMEOUT)).is_err()
    {
        return;
    }
    let (status, ctype, body) = match read_head(&mut stream) {
        Ok((method, path)) => answer(&method, &path, source),
        Err(status) => (status, "text/plain", String::new()),
    };
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Internal Server Error",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body.as_bytes()));
}

fn answer(method: &str, path: &str, source: &Source) -> (u16, &'static str, String) {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    match (method, path) {
        ("GET", "/metrics") => match source() {
            Ok(text) => (200, CONTENT_TYPE, text),
            Err(e) => (500, "text/plain", format!("{e}\n")),
        },
        (_, "/metrics") => (405, "text/plain", String::new()),
        _ => (404, "text/plain", String::new()),
    }
}

/// Reads until the end of the request head and returns method and path.
fn read_head(stream: &mut TcpStream) -> Result<(String, String), u16> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).map_err(|_| 400u16)?;
        if n == 0 {
            return Err(400);
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                return match (req.method, req.path) {
                    (Some(m), Some(p)) => Ok((m.to_owned(), p.to_owned())),
                    _ => Err(400),
                };
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) => return Err(431),
            Err(_) => return Err(400),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn serves_metrics_and_nothing_else() {
        let source: Source = Arc::new(|| Ok("vswitch_fdb_entries 3\n".to_owned()));
        let (server, thread) =
            MetricsServer::spawn("127.0.0.1:0".parse().unwrap(), source).unwrap();
        let addr = server.local_addr();
        let ok = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Content-Type: text/plain; version=0.0.4"));
        assert!(ok.ends_with("\r\n\r\nvswitch_fdb_entries 3\n"));
        assert!(get(addr, "GET /v1/networks HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get(addr, "POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        assert!(get(addr, "\x01\x02 nonsense\r\n\r\n").starts_with("HTTP/1.1 400"));
        server.shutdown();
        thread.join().unwrap().unwrap();
    }
}
