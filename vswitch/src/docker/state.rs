//! What the plugin remembers between Docker's calls and across restarts:
//! its IPAM allocator, and which vswitch network, sandbox and endpoint
//! each of Docker's ids became.
//!
//! It is one JSON document, `<state dir>/docker-plugin.json`, written to a
//! temporary file, synced and renamed over the old one after every call
//! that changed it, so a crash leaves the previous or the next version,
//! never half of one.

use core::net::Ipv4Addr;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use ipam::{Ipam, PoolId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The stored shape's version.
pub const STATE_VERSION: u32 = 1;

/// The plugin's state file in a state directory.
#[must_use]
pub fn state_file(state_dir: &Path) -> PathBuf {
    state_dir.join("docker-plugin.json")
}

/// One Docker network on the switch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    /// The vswitch network's id.
    pub vswitch: String,
    /// The gateway containers route through (on an internal network too,
    /// as with Docker's bridge: it answers but leads nowhere outside).
    pub gateway: Option<Ipv4Addr>,
}

/// One Docker endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// Docker's network id.
    pub network: String,
    /// Its address.
    pub address: Ipv4Addr,
    /// The prefix length.
    pub prefix_len: u8,
    /// Where it is joined, once it is.
    pub joined: Option<Joined>,
    /// `com.docker.network.endpoint.exposedports`, as Docker sent it.
    #[serde(default)]
    pub exposed_ports: Value,
    /// `com.docker.network.portmap`, as Docker last sent it.
    #[serde(default)]
    pub port_map: Value,
    /// Whether the port map was handed to the publisher.
    #[serde(default)]
    pub published: bool,
    /// Whether Docker asked the IPAM driver for this very address (a
    /// `--ip`): the switch then shows it in `IPAMConfig`, as Docker does,
    /// and not when Docker's IPAM picked it. Endpoints stored before this
    /// was kept read as picked.
    #[serde(default)]
    pub requested: bool,
}

/// A joined endpoint's place on the switch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Joined {
    /// Docker's sandbox key (the namespace file).
    pub sandbox_key: String,
    /// The vswitch sandbox's id (the adopted namespace).
    pub sandbox: String,
    /// The vswitch endpoint's id.
    pub endpoint: String,
    /// Its switch port.
    pub port: u32,
    /// The interface handed to Docker.
    pub src_name: String,
}

/// Everything the plugin keeps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// [`STATE_VERSION`].
    pub version: u32,
    /// The IPAM driver's allocator.
    pub ipam: Ipam,
    /// By Docker's network id.
    pub networks: BTreeMap<String, NetworkRecord>,
    /// By Docker's endpoint id.
    pub endpoints: BTreeMap<String, EndpointRecord>,
    /// The addresses `RequestAddress` was asked for by value (a user's
    /// `--ip`), until released: Docker does not tell `CreateEndpoint`
    /// whether its address was asked for, its IPAM call does.
    #[serde(default)]
    pub requested: BTreeSet<(PoolId, Ipv4Addr)>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            version: STATE_VERSION,
            ipam: Ipam::new(),
            networks: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            requested: BTreeSet::new(),
        }
    }
}

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a state this version understands.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl State {
    /// Reads the state at `path`; a missing file is a first start.
    ///
    /// # Errors
    /// [`StateError`] when the file cannot be read or is not a state.
    pub fn load(path: &Path) -> Result<Self, StateError> {
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(StateError::Io {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let state: Self = serde_json::from_slice(&text).map_err(|e| StateError::Invalid {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        if state.version != STATE_VERSION {
            return Err(StateError::Invalid {
                path: path.to_owned(),
                reason: format!(
                    "version {} (this vswitchd reads {STATE_VERSION})",
                    state.version
                ),
            });
        }
        Ok(state)
    }

    /// Writes the state to `path`: a temporary file beside it, synced,
    /// then renamed over it (mode 0600).
    ///
    /// # Errors
    /// [`StateError::Io`].
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        use std::os::unix::fs::OpenOptionsExt;
        let io = |source| StateError::Io {
            path: path.to_owned(),
            source,
        };
        let body = serde_json::to_vec(self).map_err(|e| StateError::Invalid {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let tmp = path.with_extension("json.tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        file.write_all(&body).map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// The vswitch sandbox another joined endpoint already made for this
    /// sandbox key.
    #[must_use]
    pub fn sandbox_of(&self, sandbox_key: &str) -> Option<&str> {
        self.endpoints
            .values()
            .filter_map(|e| e.joined.as_ref())
            .find(|j| j.sandbox_key == sandbox_key)
            .map(|j| j.sandbox.as_str())
    }

    /// How many joined endpoints use this vswitch sandbox.
    #[must_use]
    pub fn sandbox_users(&self, sandbox: &str) -> usize {
        self.endpoints
            .values()
            .filter_map(|e| e.joined.as_ref())
            .filter(|j| j.sandbox == sandbox)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_file() {
        let dir = std::env::temp_dir().join(format!("vswitch-plugin-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = state_file(&dir);
        let _ = std::fs::remove_file(&path);
        assert_eq!(State::load(&path).unwrap(), State::default());
        let mut s = State::default();
        s.networks.insert(
            "n".repeat(64),
            NetworkRecord {
                vswitch: "v".repeat(64),
                gateway: Some(Ipv4Addr::new(10, 0, 0, 1)),
            },
        );
        s.endpoints.insert(
            "e".repeat(64),
            EndpointRecord {
                network: "n".repeat(64),
                address: Ipv4Addr::new(10, 0, 0, 2),
                prefix_len: 24,
                joined: None,
                exposed_ports: Value::Null,
                port_map: Value::Null,
                published: false,
                requested: false,
            },
        );
        s.save(&path).unwrap();
        assert_eq!(State::load(&path).unwrap(), s);
        // A state from before `requested` was kept: every address read
        // as picked.
        let mut old = serde_json::to_value(&s).unwrap();
        old.as_object_mut().unwrap().remove("requested");
        for e in old["endpoints"].as_object_mut().unwrap().values_mut() {
            e.as_object_mut().unwrap().remove("requested");
        }
        std::fs::write(&path, serde_json::to_vec(&old).unwrap()).unwrap();
        assert_eq!(State::load(&path).unwrap(), s);
        std::fs::write(&path, b"{\"version\": 99}").unwrap();
        assert!(State::load(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
