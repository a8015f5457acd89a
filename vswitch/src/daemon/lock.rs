//! One daemon per state directory.
//!
//! Two daemons on one database and one set of devices would corrupt both,
//! so the daemon holds an exclusive `flock` on `<state-dir>/lock` for its
//! whole life. The kernel drops the lock when the process dies, even by
//! `kill -9`, so a crash never leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// Why the state directory could not be claimed.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock.
    #[error("another vswitchd (pid {holder}) is using the state directory {dir}")]
    Held {
        /// The state directory.
        dir: PathBuf,
        /// The pid written by the holder, or `?`.
        holder: String,
    },
    /// The lock file could not be created or locked.
    #[error("cannot lock {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// The held lock; released when dropped or when the process exits.
#[derive(Debug)]
pub struct StateLock {
    _file: Flock<File>,
}

impl StateLock {
    /// Takes the lock on `dir`, creating the directory if needed, and
    /// records this process's pid in it.
    ///
    /// # Errors
    /// [`LockError::Held`] when another process has it.
    pub fn acquire(dir: &Path) -> Result<Self, LockError> {
        let path = dir.join("lock");
        let io_err = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io_err)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err)?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                let holder = std::fs::read_to_string(&path)
                    .map(|s| s.trim().to_owned())
                    .unwrap_or_default();
                let holder = if holder.is_empty() {
                    "?".to_owned()
                } else {
                    holder
                };
                return Err(LockError::Held {
                    dir: dir.to_owned(),
                    holder,
                });
            }
            Err((_, errno)) => return Err(io_err(errno.into())),
        };
        file.set_len(0).map_err(io_err)?;
        writeln!(file, "{}", std::process::id()).map_err(io_err)?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = std::env::temp_dir().join(format!("vswitch-lock-test-{}", std::process::id()));
        let first = StateLock::acquire(&dir).unwrap();
        let err = StateLock::acquire(&dir).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("another vswitchd"), "{msg}");
        assert!(msg.contains(&std::process::id().to_string()), "{msg}");
        drop(first);
        assert!(StateLock::acquire(&dir).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
