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
//! The intent is a plain file, without `fsync`: what it protects against
//! is the loss of the process, after which the kernel still has the file;
//! after a loss of power the namespaces, mounts and devices it names are
//! gone anyway (they live in `/run` and in the kernel).
//!
//! An intent that fits in one page is written over the file in place, at
//! offset 0, and cut to its length; clearing cuts the file to nothing. A
//! one-page write is never split by a signal (the kernel copies a page at a
//! time and looks at fatal signals only between pages), so a `kill -9`
//! leaves either the old intent or the new one, possibly followed by the
//! old one's tail, which reading ignores (only the first JSON value
//! counts). No inode is made or freed per request, which on a busy host is
//! most of the cost of a file. A larger intent (a large batch) is written to
//! a temporary file renamed over the intent.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::control::Effect;

/// The file inside the state directory.
pub const INTENT_FILE: &str = "intent.json";

/// The largest intent written in place: one page.
const IN_PLACE_MAX: usize = 4096;

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
        if bytes.len() <= IN_PLACE_MAX {
            let f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&self.path)?;
            f.write_all_at(&bytes, 0)?;
            return f.set_len(u64::try_from(bytes.len()).map_err(io::Error::other)?);
        }
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
    /// When the file exists and cannot be emptied.
    pub fn clear(&self) -> io::Result<()> {
        match fs::OpenOptions::new().write(true).open(&self.path) {
            Ok(f) => f.set_len(0),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The intent left by a previous run, if any.
    ///
    /// # Errors
    /// When the file exists but cannot be read or parsed.
    pub fn load(&self) -> io::Result<Option<Vec<Effect>>> {
        match fs::read(&self.path) {
            Ok(bytes) if bytes.is_empty() => Ok(None),
            // The first value only: an in-place write interrupted before
            // the file was cut leaves the old intent's tail after it.
            Ok(bytes) => serde_json::Deserializer::from_slice(&bytes)
                .into_iter::<Vec<Effect>>()
                .next()
                .unwrap_or_else(|| Ok(Vec::new()))
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
        let longer: Vec<Effect> = (0..8).map(|_| effects[0].clone()).collect();
        log.write(&longer).unwrap();
        log.write(&effects).unwrap();
        assert_eq!(log.load().unwrap(), Some(effects.clone()));
        // Interrupted before the file was cut: the old tail is ignored.
        let mut torn = serde_json::to_vec(&effects).unwrap();
        torn.extend_from_slice(b"ns\"}},{\"CreateNetns\":");
        fs::write(dir.join(INTENT_FILE), &torn).unwrap();
        assert_eq!(log.load().unwrap(), Some(effects.clone()));
        // Larger than a page: written by rename, read the same.
        let large: Vec<Effect> = (0..100).map(|_| effects[0].clone()).collect();
        log.write(&large).unwrap();
        assert_eq!(log.load().unwrap(), Some(large));
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
