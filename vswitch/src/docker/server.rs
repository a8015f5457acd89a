//! The plugin's unix socket: where Docker finds it, how it is claimed
//! without taking another daemon's, and the connection threads.
//!
//! Several vswitchd may run on one host (tests run many, each with its
//! own state directory), and Docker knows one plugin per socket name. So
//! the socket is claimed carefully: under an exclusive `flock` on its
//! directory (held only while claiming), a socket file another process
//! answers on is never replaced, and at exit the file is removed only if
//! it is still the one this daemon made (same inode).

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use nix::fcntl::{Flock, FlockArg};

use super::{Plugin, route};
use crate::api::server::{IO_TIMEOUT, MAX_CONNECTIONS, read_request, write_reply};

/// Whether vswitchd serves the plugin socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PluginMode {
    /// On when Docker's plugin directory exists and the daemon is the
    /// host's default one (default state directory); a socket another
    /// process answers on is then left alone, and the daemon runs without
    /// the plugin.
    Auto,
    /// Always; failing to claim the socket stops the daemon.
    On,
    /// Never.
    Off,
}

/// Why the socket could not be claimed.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// Another process answers on the socket.
    #[error("{0}: another process serves this plugin socket")]
    InUse(PathBuf),
    /// The path exists and is not a socket.
    #[error("{0}: exists and is not a socket")]
    NotASocket(PathBuf),
    /// A system call failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// The listening plugin socket.
#[derive(Debug)]
pub struct PluginServer {
    listener: mio::net::UnixListener,
    poll: mio::Poll,
    waker: Arc<mio::Waker>,
    stop: Arc<AtomicBool>,
    path: PathBuf,
    /// The socket file's device and inode, to remove only our own.
    identity: (u64, u64),
}

/// Stops a running [`PluginServer`].
#[derive(Clone, Debug)]
pub struct PluginShutdown {
    waker: Arc<mio::Waker>,
    stop: Arc<AtomicBool>,
}

impl PluginShutdown {
    /// Asks the server to return.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
    }
}

const LISTENER: mio::Token = mio::Token(0);
const WAKER: mio::Token = mio::Token(1);

impl PluginServer {
    /// Claims `path` (creating its directory when `create_dir`): a stale
    /// socket file (nobody answers) is replaced, a live one is
    /// [`ClaimError::InUse`].
    ///
    /// # Errors
    /// [`ClaimError`].
    pub fn bind(path: &Path, create_dir: bool) -> Result<Self, ClaimError> {
        let io = |source| ClaimError::Io {
            path: path.to_owned(),
            source,
        };
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or_else(|| Path::new("."));
        if create_dir {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let dir_file = std::fs::File::open(dir).map_err(io)?;
        // Two daemons claiming at once would each see the other's fresh
        // socket as stale between its check and its bind; the lock orders
        // them.
        let _claim = Flock::lock(dir_file, FlockArg::LockExclusive)
            .map_err(|(_, e)| io(std::io::Error::from(e)))?;
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(ClaimError::NotASocket(path.to_owned()));
            }
            if UnixStream::connect(path).is_ok() {
                return Err(ClaimError::InUse(path.to_owned()));
            }
            std::fs::remove_file(path).map_err(io)?;
        }
        let listener = UnixListener::bind(path).map_err(io)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io)?;
        let meta = std::fs::metadata(path).map_err(io)?;
        listener.set_nonblocking(true).map_err(io)?;
        let mut listener = mio::net::UnixListener::from_std(listener);
        let poll = mio::Poll::new().map_err(io)?;
        poll.registry()
            .register(&mut listener, LISTENER, mio::Interest::READABLE)
            .map_err(io)?;
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER).map_err(io)?);
        Ok(Self {
            listener,
            poll,
            waker,
            stop: Arc::new(AtomicBool::new(false)),
            path: path.to_owned(),
            identity: (meta.dev(), meta.ino()),
        })
    }

    /// The socket's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A handle that stops [`Self::run`].
    #[must_use]
    pub fn shutdown_handle(&self) -> PluginShutdown {
        PluginShutdown {
            waker: Arc::clone(&self.waker),
            stop: Arc::clone(&self.stop),
        }
    }

    /// Serves calls until stopped, each connection on its own thread
    /// (`vswitch-plugin-req`, at most [`MAX_CONNECTIONS`] at once).
    pub fn run(&mut self, plugin: &Arc<Plugin>) {
        let active = Arc::new(AtomicUsize::new(0));
        let mut events = mio::Events::with_capacity(8);
        while !self.stop.load(Ordering::Acquire) {
            if let Err(e) = self
                .poll
                .poll(&mut events, Some(std::time::Duration::from_millis(500)))
            {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    tracing::warn!(error = %e, "docker plugin: poll failed");
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                continue;
            }
            loop {
                match self.listener.accept() {
                    Ok((stream, _)) => spawn(stream, plugin, &active),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "docker plugin: cannot accept a connection");
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        break;
                    }
                }
            }
        }
    }
}

impl Drop for PluginServer {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| (m.dev(), m.ino()) == self.identity);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn spawn(stream: mio::net::UnixStream, plugin: &Arc<Plugin>, active: &Arc<AtomicUsize>) {
    let stream = UnixStream::from(std::os::fd::OwnedFd::from(stream));
    let slot = Slot(Arc::clone(active));
    if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
        return;
    }
    let plugin = Arc::clone(plugin);
    let spawned = std::thread::Builder::new()
        .name("vswitch-plugin-req".to_owned())
        .spawn(move || {
            let _slot = slot;
            serve(&plugin, stream);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "docker plugin: cannot spawn a request thread");
    }
}

fn serve(plugin: &Plugin, mut stream: UnixStream) {
    let configured = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_read_timeout(Some(IO_TIMEOUT)))
        .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)));
    if configured.is_err() {
        return;
    }
    let reply = match read_request(&mut stream) {
        Ok(r) => {
            let reply = route(plugin, &r.method, &r.url, &r.body);
            if reply.status == 200 {
                let body = String::from_utf8_lossy(&r.body[..r.body.len().min(4096)]);
                tracing::debug!(call = %r.url, %body, "docker plugin call");
            } else {
                tracing::warn!(call = %r.url, status = reply.status, "docker plugin call refused");
            }
            reply
        }
        Err(reply) => reply,
    };
    write_reply(&mut stream, &reply);
}
