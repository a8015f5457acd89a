//! Network namespaces: named ones that `ip netns` sees, made exactly as
//! iproute2 makes them, and running code inside one.
//!
//! A named namespace is a file `/run/netns/NAME` on which the namespace
//! (`/proc/thread-self/ns/net` of a thread that unshared it) is
//! bind-mounted; the mount keeps it alive with no process in it. As in
//! iproute2, `/run/netns` is made a shared mount point (bound on itself
//! first if it is not a mount point yet), so the mounts propagate to mount
//! namespaces created later, such as a container's.
//!
//! Nothing here switches the namespace of the calling thread:
//! [`run_in`] runs a closure on a short-lived helper thread that entered the
//! namespace with `setns`. Sockets, TAP devices and netlink handles made
//! there stay bound to that namespace for life, whichever thread uses them
//! afterwards. (sysfs and `/proc/net` do not follow a thread's `setns`: ask
//! netlink or the socket instead.)

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

/// Where iproute2 keeps named network namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// Serialises the check-and-bind of [`NETNS_RUN_DIR`] within this process,
/// so two threads do not both bind it on itself.
static RUN_DIR_LOCK: Mutex<()> = Mutex::new(());

/// A network namespace operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetnsError {
    /// The name cannot be a file in [`NETNS_RUN_DIR`].
    #[error("invalid network namespace name {name:?}")]
    InvalidName {
        /// The name offered.
        name: String,
    },
    /// Creating [`NETNS_RUN_DIR`] or making it a shared mount point failed.
    #[error("cannot prepare {}: {source}", dir.display())]
    PrepareRunDir {
        /// The directory.
        dir: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// The file to mount the namespace on could not be created
    /// (`AlreadyExists` when the name is taken).
    #[error("cannot create {}: {source}", path.display())]
    CreateFile {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// The helper thread could not be started.
    #[error("cannot start a helper thread for network namespace {}: {source}", path.display())]
    SpawnThread {
        /// The namespace's file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// `unshare(CLONE_NEWNET)` failed.
    #[error("cannot create a network namespace for {}: {source}", path.display())]
    Unshare {
        /// The file it was for.
        path: PathBuf,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// Bind-mounting the new namespace on its file failed.
    #[error("cannot bind-mount the network namespace on {}: {source}", path.display())]
    BindMount {
        /// The file.
        path: PathBuf,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// Opening a namespace file failed.
    #[error("cannot open network namespace {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// The file is not a network namespace.
    #[error("{} is not a network namespace", path.display())]
    NotNetns {
        /// The file.
        path: PathBuf,
    },
    /// `setns` into the namespace failed.
    #[error("cannot enter network namespace {}: {source}", path.display())]
    Enter {
        /// The namespace's file.
        path: PathBuf,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// Unmounting the namespace from its file failed.
    #[error("cannot unmount network namespace {}: {source}", path.display())]
    Unmount {
        /// The file.
        path: PathBuf,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// Removing the namespace's file failed (`NotFound` when there is no
    /// namespace of that name).
    #[error("cannot remove {}: {source}", path.display())]
    Remove {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
}

/// An open network namespace: a descriptor that keeps it alive and lets
/// threads enter it.
#[derive(Debug)]
pub struct Netns {
    file: File,
    path: PathBuf,
    name: Option<String>,
}

impl Netns {
    /// Creates the named namespace `/run/netns/NAME`, as `ip netns add NAME`
    /// does.
    ///
    /// # Errors
    /// [`NetnsError::InvalidName`]; [`NetnsError::CreateFile`] with
    /// `AlreadyExists` when the name is taken; the other variants when a
    /// step fails, after which nothing is left behind.
    pub fn create(name: &str) -> Result<Self, NetnsError> {
        let path = named_path(name)?;
        prepare_run_dir()?;
        // Mode 0, O_EXCL, as iproute2: the file only serves as a mount point.
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o000)
            .open(&path)
            .map_err(|source| NetnsError::CreateFile {
                path: path.clone(),
                source,
            })?;
        if let Err(err) = unshare_and_mount(&path) {
            // Nothing is mounted on the file when this fails.
            let _ = fs::remove_file(&path);
            return Err(err);
        }
        match File::open(&path) {
            Ok(file) => Ok(Self {
                file,
                path,
                name: Some(name.to_owned()),
            }),
            Err(source) => {
                let _ = Self::delete(name);
                Err(NetnsError::Open { path, source })
            }
        }
    }

    /// Opens an existing namespace from any file that refers to one:
    /// `/run/netns/NAME`, `/proc/PID/ns/net`, `/proc/thread-self/ns/net`.
    ///
    /// # Errors
    /// [`NetnsError::Open`] when the file cannot be opened,
    /// [`NetnsError::NotNetns`] when it is not a network namespace.
    ///
    /// The file is opened without blocking and must live on nsfs, so a
    /// FIFO, a device or a plain file is refused at once instead of hanging
    /// the caller or being entered.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, NetnsError> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|source| NetnsError::Open {
                path: path.clone(),
                source,
            })?;
        let on_nsfs = nix::sys::statfs::fstatfs(&file)
            .map_err(|errno| NetnsError::Open {
                path: path.clone(),
                source: errno.into(),
            })?
            .filesystem_type()
            == nix::sys::statfs::NSFS_MAGIC;
        if !on_nsfs {
            return Err(NetnsError::NotNetns { path });
        }
        let name = (path.parent() == Some(Path::new(NETNS_RUN_DIR)))
            .then(|| path.file_name().map(|n| n.to_string_lossy().into_owned()))
            .flatten();
        let netns = Self { file, path, name };
        // Entering it is the check: setns refuses anything but a network
        // namespace with EINVAL.
        match run_in(&netns, || ()) {
            Ok(()) => Ok(netns),
            Err(NetnsError::Enter { path, source })
                if source.raw_os_error() == Some(libc::EINVAL) =>
            {
                Err(NetnsError::NotNetns { path })
            }
            Err(err) => Err(err),
        }
    }

    /// Opens the named namespace `/run/netns/NAME`.
    ///
    /// # Errors
    /// As [`Netns::open`], and [`NetnsError::InvalidName`].
    pub fn open_named(name: &str) -> Result<Self, NetnsError> {
        Self::open(named_path(name)?)
    }

    /// Opens the namespace the calling thread is in.
    ///
    /// # Errors
    /// [`NetnsError::Open`].
    pub fn current() -> Result<Self, NetnsError> {
        Self::open("/proc/thread-self/ns/net")
    }

    /// Deletes the named namespace, as `ip netns delete NAME` does: unmounts
    /// it (lazily) and removes its file. The namespace itself lives on while
    /// a descriptor, socket or process still holds it; its devices go when
    /// it finally dies.
    ///
    /// # Errors
    /// [`NetnsError::InvalidName`], [`NetnsError::Unmount`],
    /// [`NetnsError::Remove`] (`NotFound` when there is no such namespace).
    pub fn delete(name: &str) -> Result<(), NetnsError> {
        let path = named_path(name)?;
        match nix::mount::umount2(&path, MntFlags::MNT_DETACH) {
            // EINVAL: the file exists but nothing is mounted on it (a
            // half-made namespace); ENOENT: no file, reported below.
            Ok(()) | Err(Errno::EINVAL | Errno::ENOENT) => {}
            Err(errno) => {
                return Err(NetnsError::Unmount {
                    path,
                    source: errno.into(),
                });
            }
        }
        fs::remove_file(&path).map_err(|source| NetnsError::Remove { path, source })
    }

    /// The namespace's identity: the device and inode of its nsfs file,
    /// equal for every file that refers to the same namespace.
    ///
    /// # Errors
    /// [`NetnsError::Open`] when `fstat` fails.
    pub fn identity(&self) -> Result<(u64, u64), NetnsError> {
        let st = nix::sys::stat::fstat(&self.file).map_err(|errno| NetnsError::Open {
            path: self.path.clone(),
            source: errno.into(),
        })?;
        Ok((st.st_dev, st.st_ino))
    }

    /// Whether this is the namespace the daemon itself runs in, or the one
    /// of the host's init process: configuring endpoints there would change
    /// the host's own networking.
    ///
    /// # Errors
    /// When an identity cannot be read.
    pub fn is_host(&self) -> Result<bool, NetnsError> {
        let me = self.identity()?;
        for host in ["/proc/self/ns/net", "/proc/1/ns/net"] {
            match Self::open(host) {
                Ok(ns) if ns.identity()? == me => return Ok(true),
                Ok(_) => {}
                // /proc/1 may be hidden (hidepid); the daemon's own
                // namespace is always readable.
                Err(_) if host == "/proc/1/ns/net" => {}
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// Keeps this namespace alive and reachable at `target` by bind-mounting
    /// it there (a new, empty file of mode 0 in a directory of mode 0700,
    /// both created as needed), as `ip netns attach` does.
    ///
    /// # Errors
    /// [`NetnsError::CreateFile`] (`AlreadyExists` when `target` exists),
    /// [`NetnsError::BindMount`]; nothing is left behind on error.
    pub fn bind_to(&self, target: &Path) -> Result<(), NetnsError> {
        let create = |source| NetnsError::CreateFile {
            path: target.to_path_buf(),
            source,
        };
        if let Some(dir) = target.parent() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(create)?;
        }
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o000)
            .open(target)
            .map_err(create)?;
        let source = format!("/proc/self/fd/{}", self.file.as_raw_fd());
        if let Err(errno) = nix::mount::mount(
            Some(source.as_str()),
            target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        ) {
            let _ = fs::remove_file(target);
            return Err(NetnsError::BindMount {
                path: target.to_path_buf(),
                source: errno.into(),
            });
        }
        Ok(())
    }

    /// Undoes [`Self::bind_to`]: unmounts `target` (lazily) and removes the
    /// file. A target that is already gone is not an error.
    ///
    /// # Errors
    /// [`NetnsError::Unmount`], [`NetnsError::Remove`].
    pub fn unbind(target: &Path) -> Result<(), NetnsError> {
        match nix::mount::umount2(target, MntFlags::MNT_DETACH) {
            Ok(()) | Err(Errno::EINVAL | Errno::ENOENT) => {}
            Err(errno) => {
                return Err(NetnsError::Unmount {
                    path: target.to_path_buf(),
                    source: errno.into(),
                });
            }
        }
        match fs::remove_file(target) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(NetnsError::Remove {
                path: target.to_path_buf(),
                source,
            }),
        }
    }

    /// The namespace's descriptor, for `setns` or `IFLA_NET_NS_FD`.
    #[must_use]
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// The file the namespace was opened from.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The name, for a namespace in [`NETNS_RUN_DIR`].
    #[must_use]
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd()
    }
}

/// Runs `f` inside `netns` and returns its result.
///
/// `f` runs on a helper thread that enters the namespace with `setns` and
/// ends when `f` returns, so the calling thread never changes namespace. A
/// panic in `f` is resumed on the calling thread.
///
/// # Errors
/// [`NetnsError::SpawnThread`], [`NetnsError::Enter`].
pub fn run_in<T, F>(netns: &Netns, f: F) -> Result<T, NetnsError>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    let fd = netns.fd();
    std::thread::scope(|scope| {
        let helper = std::thread::Builder::new()
            .name("netns-helper".to_owned())
            .spawn_scoped(scope, move || {
                nix::sched::setns(fd, CloneFlags::CLONE_NEWNET).map(|()| f())
            })
            .map_err(|source| NetnsError::SpawnThread {
                path: netns.path.clone(),
                source,
            })?;
        match helper.join() {
            Ok(result) => result.map_err(|errno| NetnsError::Enter {
                path: netns.path.clone(),
                source: errno.into(),
            }),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// `/run/netns/NAME`, for a name that is one plain file name.
fn named_path(name: &str) -> Result<PathBuf, NetnsError> {
    let valid = !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 255
        && !name.contains(['/', '\0']);
    if valid {
        Ok(Path::new(NETNS_RUN_DIR).join(name))
    } else {
        Err(NetnsError::InvalidName {
            name: name.to_owned(),
        })
    }
}

/// Makes [`NETNS_RUN_DIR`] exist and be a shared mount point, as iproute2's
/// `netns_add` does: try to make it shared; if that fails with `EINVAL` it
/// is not a mount point yet, so bind it on itself once and try again.
fn prepare_run_dir() -> Result<(), NetnsError> {
    let dir = Path::new(NETNS_RUN_DIR);
    let fail = |source: io::Error| NetnsError::PrepareRunDir {
        dir: dir.to_path_buf(),
        source,
    };
    let _guard = RUN_DIR_LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(fail)?;
    let mut bound = false;
    loop {
        let shared = nix::mount::mount(
            Some("none"),
            dir,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        );
        match shared {
            Ok(()) => return Ok(()),
            Err(Errno::EINVAL) if !bound => {
                nix::mount::mount(
                    Some(dir),
                    dir,
                    Some("none"),
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(|errno| fail(errno.into()))?;
                bound = true;
            }
            Err(errno) => return Err(fail(errno.into())),
        }
    }
}

/// On a helper thread: unshares a new network namespace and bind-mounts it
/// on `path`. The thread then ends; the mount keeps the namespace alive.
fn unshare_and_mount(path: &Path) -> Result<(), NetnsError> {
    std::thread::scope(|scope| {
        let helper = std::thread::Builder::new()
            .name("netns-create".to_owned())
            .spawn_scoped(scope, || {
                nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(|errno| {
                    NetnsError::Unshare {
                        path: path.to_path_buf(),
                        source: errno.into(),
                    }
                })?;
                nix::mount::mount(
                    Some("/proc/thread-self/ns/net"),
                    path,
                    Some("none"),
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|errno| NetnsError::BindMount {
                    path: path.to_path_buf(),
                    source: errno.into(),
                })
            })
            .map_err(|source| NetnsError::SpawnThread {
                path: path.to_path_buf(),
                source,
            })?;
        helper
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_one_plain_file_name() {
        assert_eq!(
            named_path("ns1").unwrap(),
            Path::new("/run/netns/ns1").to_path_buf()
        );
        for bad in ["", ".", "..", "a/b", "../x", "a\0b"] {
            assert!(
                matches!(named_path(bad), Err(NetnsError::InvalidName { .. })),
                "{bad:?} accepted"
            );
        }
        assert!(named_path(&"n".repeat(256)).is_err());
    }
}
