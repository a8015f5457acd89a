//! The intent: the effects of the request in progress, written down before
//! the first of them runs and cleared once the model is saved, so that a
//! crash half way through a request leaves nothing behind at the next start.
//!
//! At start the daemon reads the intent back and settles it against the
//! saved model ([`super::effects::Executor::settle`]): an object the intent
//! names that the model does not hold (a namespace, an adoption handle, an
//! endpoint's devices) is removed, and one the model holds is left to the
//! usual reattachment. Only objects named in the intent are touched, so
//! several daemons on one host never remove each other's devices.
//!
//! The intent is a plain file written by renaming a finished temporary
//! file over it, without `fsync`: what it protects against is the loss of
//! the process, after which the kernel still has the file; after a loss of
//! power the namespaces, mounts and devices it names are gone anyway (they
//! live in `/run` and in the kernel).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::control::Effect;

/// The file inside the state directory.
pub const INTENT_FILE: &str = "intent.json";

/// The intent file of one state directory.
#[derive(Debug)]
pub struct IntentLog {
    path: PathBuf,
    tmp: PathBuf,
}

impl IntentLog {
    /// The intent of the daemon whose state is in `state_dir`.
    #[must_use]
    pub fn new(state_dir: &Path) -> Self {
        Self {
            path: state_dir.join(INTENT_FILE),
            tmp: state_dir.join(".intent.json.tmp"),
        }
    }

    /// Records `effects` as the request in progress.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn write(&self, effects: &[Effect]) -> io::Result<()> {
        let bytes = serde_json::to_vec(effects).map_err(io::Error::other)?;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&self.tmp)?;
        f.write_all(&bytes)?;
        drop(f);
        fs::rename(&self.tmp, &self.path)
    }

    /// Clears the intent: the request is committed or undone.
    ///
    /// # Errors
    /// When the file exists and cannot be removed.
    pub fn clear(&self) -> io::Result<()> {
        match fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The intent left by a previous run, if any.
    ///
    /// # Errors
    /// When the file exists but cannot be read or parsed.
    pub fn load(&self) -> io::Result<Option<Vec<Effect>>> {
        match fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::Effect;

    #[test]
    fn intent_round_trips_and_clears() {
        let dir = std::env::temp_dir().join(format!("vswitch-intent-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let log = IntentLog::new(&dir);
        assert!(log.load().unwrap().is_none());
        let effects = vec![
            Effect::CreateNetns {
                sandbox: "ab".into(),
                name: "n".into(),
                path: "/run/netns/n".into(),
            },
            Effect::PushSwitchConfig,
        ];
        log.write(&effects).unwrap();
        assert_eq!(log.load().unwrap(), Some(effects));
        log.clear().unwrap();
        log.clear().unwrap();
        assert!(log.load().unwrap().is_none());
        fs::write(dir.join(INTENT_FILE), b"{broken").unwrap();
        assert!(log.load().is_err());
        let _ = fs::remove_dir_all(&dir);
    }
}
