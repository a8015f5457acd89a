//! The control plane's database: the [`Model`] in one redb table, written
//! in one transaction per commit.
//!
//! The daemon saves after every change (or batch of changes) and before
//! the API answers, so an acknowledged request survives a crash;
//! [`Store::load`] gives the model back on restart.
//!
//! Keys: `meta` holds the version, the networks and the IPAM allocator;
//! `sandbox/<id>` and `endpoint/<id>` hold one object each, with a sequence
//! number that keeps the model's order (creation and attach order). A save
//! writes only the keys whose object changed since the last one and removes
//! those whose object is gone, so a change costs the same with one endpoint
//! as with thousands (the whole model as one document cost a rewrite of
//! hundreds of kilobytes per change at a thousand endpoints). A database
//! written as one document under `model` (an earlier version) is read, and
//! rewritten in this form at the next save.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use std::collections::{HashMap, HashSet};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::effect::Touched;
use super::error::ControlError;
use super::model::{Endpoint, Model, Network, PredefinedNetwork, Sandbox};
use ipam::Ipam;

/// The file inside the state directory.
pub const STORE_FILE: &str = "vswitch.redb";

/// Mode of the state directory.
pub const STATE_DIR_MODE: u32 = 0o700;

/// Mode of the database file.
pub const STORE_FILE_MODE: u32 = 0o600;

const STATE: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("state");
const MODEL_KEY: &str = "model";

/// The store could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The state directory could not be created.
    #[error("cannot create state directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The database file could not be opened or created.
    #[error("cannot open database {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<redb::DatabaseError>,
    },
    /// A transaction, table or commit failed.
    #[error("database {path}: {source}")]
    Db {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<redb::Error>,
    },
    /// The model could not be encoded.
    #[error("cannot encode the model: {0}")]
    Encode(serde_json::Error),
    /// The stored document is not a model (damaged, or from another
    /// version).
    #[error("stored model in {path} cannot be read: {source}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// The stored model parses but breaks an invariant.
    #[error("stored model in {path} is inconsistent: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Which invariant.
        source: ControlError,
    },
}

/// The database in the daemon's state directory.
#[derive(Debug)]
pub struct Store {
    db: Database,
    path: PathBuf,
    /// What the database holds, as of the last load or save.
    saved: Saved,
}

/// The stored form of each object, to write only what changed.
#[derive(Debug, Default)]
struct Saved {
    meta: Vec<u8>,
    sandboxes: HashMap<String, (u64, Sandbox)>,
    endpoints: HashMap<String, (u64, Endpoint)>,
    next_seq: u64,
    /// The database holds the single-document form, to be replaced.
    legacy: bool,
}

/// The part of the model stored under `meta`.
#[derive(Serialize)]
struct MetaRef<'a> {
    version: u32,
    networks: &'a [Network],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    predefined: &'a [PredefinedNetwork],
    ipam: &'a Ipam,
}

#[derive(Deserialize)]
struct Meta {
    version: u32,
    networks: Vec<Network>,
    #[serde(default)]
    predefined: Vec<PredefinedNetwork>,
    ipam: Ipam,
}

/// One stored sandbox or endpoint.
#[derive(Serialize, Deserialize)]
struct Entry<T> {
    seq: u64,
    value: T,
}

const META_KEY: &str = "meta";
const SANDBOX_PREFIX: &str = "sandbox/";
const ENDPOINT_PREFIX: &str = "endpoint/";

impl Store {
    /// Opens (or creates) `<state_dir>/vswitch.redb`, creating the directory
    /// if needed.
    ///
    /// # Errors
    /// [`StoreError::CreateDir`], [`StoreError::Open`] (also when another
    /// process holds the database).
    ///
    /// The directory is made (or set to) mode 0700 and the database file
    /// 0600: the model names every sandbox's namespace and is nobody
    /// else's business.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        let dir_err = |source| StoreError::CreateDir {
            path: state_dir.to_owned(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(STATE_DIR_MODE)
            .create(state_dir)
            .map_err(dir_err)?;
        std::fs::set_permissions(state_dir, std::fs::Permissions::from_mode(STATE_DIR_MODE))
            .map_err(dir_err)?;
        let path = state_dir.join(STORE_FILE);
        // Created with the right mode before redb opens it, so it is never
        // readable by others, not even for an instant.
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(STORE_FILE_MODE)
            .open(&path)
            .and_then(|f| f.set_permissions(std::fs::Permissions::from_mode(STORE_FILE_MODE)))
            .map_err(|source| StoreError::CreateDir {
                path: path.clone(),
                source,
            })?;
        let db = Database::create(&path).map_err(|e| StoreError::Open {
            path: path.clone(),
            source: Box::new(e),
        })?;
        Ok(Self {
            db,
            path,
            saved: Saved::default(),
        })
    }

    /// The database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored model, or `None` on a first start.
    ///
    /// # Errors
    /// [`StoreError::Db`] for read failures, [`StoreError::Decode`] and
    /// [`StoreError::Invalid`] for a document that is not a usable model.
    pub fn load(&mut self) -> Result<Option<Model>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let table = match txn.open_table(STATE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.db_err(e)),
        };
        let decode = |source| StoreError::Decode {
            path: self.path.clone(),
            source,
        };
        let mut saved = Saved::default();
        let model = if let Some(value) = table.get(MODEL_KEY).map_err(|e| self.db_err(e))? {
            // The single-document form: every object is written anew, in
            // model order, at the next save.
            saved.legacy = true;
            serde_json::from_slice::<Model>(value.value()).map_err(decode)?
        } else {
            let Some(meta) = table.get(META_KEY).map_err(|e| self.db_err(e))? else {
                return Ok(None);
            };
            saved.meta = meta.value().to_vec();
            let meta: Meta = serde_json::from_slice(&saved.meta).map_err(decode)?;
            let mut sandboxes: Vec<Entry<Sandbox>> = Vec::new();
            let mut endpoints: Vec<Entry<Endpoint>> = Vec::new();
            for row in table.iter().map_err(|e| self.db_err(e))? {
                let (key, value) = row.map_err(|e| self.db_err(e))?;
                if key.value().starts_with(SANDBOX_PREFIX) {
                    sandboxes.push(serde_json::from_slice(value.value()).map_err(decode)?);
                } else if key.value().starts_with(ENDPOINT_PREFIX) {
                    endpoints.push(serde_json::from_slice(value.value()).map_err(decode)?);
                }
            }
            sandboxes.sort_by_key(|e| e.seq);
            endpoints.sort_by_key(|e| e.seq);
            saved.next_seq = sandboxes
                .iter()
                .map(|e| e.seq)
                .chain(endpoints.iter().map(|e| e.seq))
                .max()
                .map_or(0, |m| m + 1);
            for e in &sandboxes {
                saved
                    .sandboxes
                    .insert(e.value.id.clone(), (e.seq, e.value.clone()));
            }
            for e in &endpoints {
                saved
                    .endpoints
                    .insert(e.value.id.clone(), (e.seq, e.value.clone()));
            }
            Model {
                version: meta.version,
                networks: meta.networks,
                predefined: meta.predefined,
                sandboxes: sandboxes.into_iter().map(|e| e.value).collect(),
                endpoints: endpoints.into_iter().map(|e| e.value).collect(),
                ipam: meta.ipam,
            }
        };
        model.validate().map_err(|source| StoreError::Invalid {
            path: self.path.clone(),
            source,
        })?;
        self.saved = saved;
        Ok(Some(model))
    }

    /// Writes the model in one durable transaction: the keys whose object
    /// changed since the last load or save, and removals.
    ///
    /// # Errors
    /// [`StoreError::Encode`], [`StoreError::Db`]. On error the database
    /// is as before, and so is what the store believes it holds.
    pub fn save(&mut self, model: &Model) -> Result<(), StoreError> {
        let mut changes = Changes::new(encode_meta(model)?, self.saved.next_seq);
        changes.legacy = self.saved.legacy;
        for sb in &model.sandboxes {
            changes.put_sandbox(&self.saved, sb);
        }
        for ep in &model.endpoints {
            changes.put_endpoint(&self.saved, ep);
        }
        let live_sandboxes: HashSet<&str> = model.sandboxes.iter().map(|s| s.id.as_str()).collect();
        let live_endpoints: HashSet<&str> = model.endpoints.iter().map(|e| e.id.as_str()).collect();
        changes.gone_sandboxes = self
            .saved
            .sandboxes
            .keys()
            .filter(|id| !live_sandboxes.contains(id.as_str()))
            .cloned()
            .collect();
        changes.gone_endpoints = self
            .saved
            .endpoints
            .keys()
            .filter(|id| !live_endpoints.contains(id.as_str()))
            .cloned()
            .collect();
        self.write(changes)
    }

    /// Writes, in one durable transaction, what `touched` says changed:
    /// the networks and IPAM when their encoding differs from the stored
    /// one, and each touched sandbox with its endpoints (written when
    /// changed, removed when gone). Nothing else is looked at, so a change
    /// costs the same with a thousand sandboxes as with one. `touched` must
    /// name every sandbox changed since the last save ([`Touched::add`] of
    /// each change's effects does); [`Self::save`] compares everything.
    ///
    /// # Errors
    /// As [`Self::save`]; on error the database is as before, and so is
    /// what the store believes it holds.
    pub fn save_touched(&mut self, model: &Model, touched: &Touched) -> Result<(), StoreError> {
        if self.saved.legacy {
            return self.save(model);
        }
        let mut changes = Changes::new(encode_meta(model)?, self.saved.next_seq);
        for id in &touched.sandboxes {
            match model.sandbox(id) {
                Some(sb) => changes.put_sandbox(&self.saved, sb),
                None if self.saved.sandboxes.contains_key(id) => {
                    changes.gone_sandboxes.push(id.clone());
                }
                None => {}
            }
            let live: Vec<&Endpoint> = model.sandbox_endpoints(id).collect();
            for ep in &live {
                changes.put_endpoint(&self.saved, ep);
            }
            changes.gone_endpoints.extend(
                self.saved
                    .endpoints
                    .iter()
                    .filter(|(eid, (_, e))| e.sandbox == *id && !live.iter().any(|l| &l.id == *eid))
                    .map(|(eid, _)| eid.clone()),
            );
        }
        if changes.is_empty(&self.saved) {
            return Ok(());
        }
        self.write(changes)
    }

    /// Writes `changes` in one durable transaction and, once it is
    /// committed, records them as what the database holds. Only what
    /// changed is cloned into `saved`: with a thousand endpoints, copying
    /// all of them at every change would cost more than the change.
    fn write(&mut self, changes: Changes<'_>) -> Result<(), StoreError> {
        let meta_changed = changes.legacy || changes.meta != self.saved.meta;
        let txn = self.db.begin_write().map_err(|e| self.db_err(e))?;
        {
            let mut table = txn.open_table(STATE).map_err(|e| self.db_err(e))?;
            if changes.legacy {
                table.remove(MODEL_KEY).map_err(|e| self.db_err(e))?;
            }
            if meta_changed {
                table
                    .insert(META_KEY, changes.meta.as_slice())
                    .map_err(|e| self.db_err(e))?;
            }
            for (seq, sb) in &changes.put_sandboxes {
                let bytes = serde_json::to_vec(&Entry {
                    seq: *seq,
                    value: *sb,
                })
                .map_err(StoreError::Encode)?;
                let key = format!("{SANDBOX_PREFIX}{}", sb.id);
                table
                    .insert(key.as_str(), bytes.as_slice())
                    .map_err(|e| self.db_err(e))?;
            }
            for (seq, ep) in &changes.put_endpoints {
                let bytes = serde_json::to_vec(&Entry {
                    seq: *seq,
                    value: *ep,
                })
                .map_err(StoreError::Encode)?;
                let key = format!("{ENDPOINT_PREFIX}{}", ep.id);
                table
                    .insert(key.as_str(), bytes.as_slice())
                    .map_err(|e| self.db_err(e))?;
            }
            for id in &changes.gone_sandboxes {
                table
                    .remove(format!("{SANDBOX_PREFIX}{id}").as_str())
                    .map_err(|e| self.db_err(e))?;
            }
            for id in &changes.gone_endpoints {
                table
                    .remove(format!("{ENDPOINT_PREFIX}{id}").as_str())
                    .map_err(|e| self.db_err(e))?;
            }
        }
        txn.commit().map_err(|e| self.db_err(e))?;
        for id in &changes.gone_sandboxes {
            self.saved.sandboxes.remove(id);
        }
        for id in &changes.gone_endpoints {
            self.saved.endpoints.remove(id);
        }
        for (seq, sb) in changes.put_sandboxes {
            self.saved
                .sandboxes
                .insert(sb.id.clone(), (seq, sb.clone()));
        }
        for (seq, ep) in changes.put_endpoints {
            self.saved
                .endpoints
                .insert(ep.id.clone(), (seq, ep.clone()));
        }
        self.saved.meta = changes.meta;
        self.saved.next_seq = changes.next_seq;
        self.saved.legacy = false;
        Ok(())
    }

    fn db_err(&self, e: impl Into<redb::Error>) -> StoreError {
        StoreError::Db {
            path: self.path.clone(),
            source: Box::new(e.into()),
        }
    }
}

/// What one save writes: the encoded networks and IPAM, the sandboxes and
/// endpoints whose object differs from the stored one (with their
/// sequence numbers), and the keys to remove.
struct Changes<'a> {
    meta: Vec<u8>,
    next_seq: u64,
    /// The database still has the single-key layout of older versions.
    legacy: bool,
    put_sandboxes: Vec<(u64, &'a Sandbox)>,
    put_endpoints: Vec<(u64, &'a Endpoint)>,
    gone_sandboxes: Vec<String>,
    gone_endpoints: Vec<String>,
}

impl<'a> Changes<'a> {
    const fn new(meta: Vec<u8>, next_seq: u64) -> Self {
        Self {
            meta,
            next_seq,
            legacy: false,
            put_sandboxes: Vec::new(),
            put_endpoints: Vec::new(),
            gone_sandboxes: Vec::new(),
            gone_endpoints: Vec::new(),
        }
    }

    /// Writes `sb` if it differs from what `saved` holds, under its stored
    /// sequence number or a new one.
    fn put_sandbox(&mut self, saved: &Saved, sb: &'a Sandbox) {
        match saved.sandboxes.get(&sb.id) {
            Some((_, old)) if old == sb => {}
            found => {
                let seq = found.map_or_else(|| take(&mut self.next_seq), |(s, _)| *s);
                self.put_sandboxes.push((seq, sb));
            }
        }
    }

    /// As [`Self::put_sandbox`], for an endpoint.
    fn put_endpoint(&mut self, saved: &Saved, ep: &'a Endpoint) {
        match saved.endpoints.get(&ep.id) {
            Some((_, old)) if old == ep => {}
            found => {
                let seq = found.map_or_else(|| take(&mut self.next_seq), |(s, _)| *s);
                self.put_endpoints.push((seq, ep));
            }
        }
    }

    /// Whether writing would change nothing.
    fn is_empty(&self, saved: &Saved) -> bool {
        !self.legacy
            && self.meta == saved.meta
            && self.put_sandboxes.is_empty()
            && self.put_endpoints.is_empty()
            && self.gone_sandboxes.is_empty()
            && self.gone_endpoints.is_empty()
    }
}

/// The networks, pre-defined networks and IPAM as stored under one key.
fn encode_meta(model: &Model) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(&MetaRef {
        version: model.version,
        networks: &model.networks,
        predefined: &model.predefined,
        ipam: &model.ipam,
    })
    .map_err(StoreError::Encode)
}

/// Returns `*n` and increments it.
const fn take(n: &mut u64) -> u64 {
    *n += 1;
    *n - 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::model::SandboxDns;
    use crate::control::{Ctx, SeededEntropy};
    use std::collections::BTreeMap;

    fn temp_dir(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("vswitch-store-{tag}-{}", std::process::id()))
    }

    fn sandbox(model: &Model, id: &str) -> Sandbox {
        Sandbox {
            id: id.repeat(64 / id.len()),
            name: format!("sb-{id}"),
            netns_path: format!("/run/netns/sb-{id}"),
            netns_owned: true,
            created: model.networks[0].created.clone(),
            next_ifindex: 0,
            netns_handle: None,
            external: false,
            port_bindings: BTreeMap::new(),
            publish_all: false,
            exposed_ports: Vec::new(),
            network_mode: None,
            dns: SandboxDns::default(),
            hostname: None,
        }
    }

    #[test]
    fn order_survives_removals_and_additions_across_restarts() {
        let dir = temp_dir("order");
        let entropy = SeededEntropy::new(1);
        let mut model = Model::with_defaults(&Ctx::new("2026-01-01T00:00:00Z", &entropy)).unwrap();
        let mut store = Store::open(&dir).unwrap();
        for id in ["b", "a", "d", "c"] {
            model.sandboxes.push(sandbox(&model, id));
            store.save(&model).unwrap();
        }
        model.sandboxes.remove(1);
        store.save(&model).unwrap();
        drop(store);
        let mut store = Store::open(&dir).unwrap();
        assert_eq!(store.load().unwrap().as_ref(), Some(&model));
        model.sandboxes.push(sandbox(&model, "a"));
        model.sandboxes[0].next_ifindex = 3;
        store.save(&model).unwrap();
        drop(store);
        let mut store = Store::open(&dir).unwrap();
        let loaded = store.load().unwrap().unwrap();
        let names: Vec<&str> = loaded.sandboxes.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["sb-b", "sb-d", "sb-c", "sb-a"]);
        assert_eq!(loaded, model);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn touched_saves_write_what_changed_and_only_that() {
        let dir = temp_dir("touched");
        let entropy = SeededEntropy::new(3);
        let mut model = Model::with_defaults(&Ctx::new("2026-01-01T00:00:00Z", &entropy)).unwrap();
        let mut store = Store::open(&dir).unwrap();
        store.save(&model).unwrap();
        let touch = |ids: &[&str]| Touched {
            sandboxes: ids.iter().map(|&s| s.to_owned()).collect(),
            networks: false,
        };
        for id in ["b", "a", "c"] {
            model.sandboxes.push(sandbox(&model, id));
            let new = model.sandboxes.last().unwrap().id.clone();
            store.save_touched(&model, &touch(&[&new])).unwrap();
        }
        model.sandboxes[1].next_ifindex = 7;
        let gone = model.sandboxes.remove(0);
        let changed = model.sandboxes[0].id.clone();
        store
            .save_touched(&model, &touch(&[&gone.id, &changed]))
            .unwrap();
        drop(store);
        let mut store = Store::open(&dir).unwrap();
        assert_eq!(store.load().unwrap().as_ref(), Some(&model));
        // A change the caller does not name is not looked for.
        model.sandboxes[1].next_ifindex = 9;
        store.save_touched(&model, &Touched::default()).unwrap();
        drop(store);
        let mut store = Store::open(&dir).unwrap();
        let loaded = store.load().unwrap().unwrap();
        assert_eq!(loaded.sandboxes[1].next_ifindex, 0);
        let names: Vec<&str> = loaded.sandboxes.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["sb-a", "sb-c"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_single_document_database_is_read_and_rewritten() {
        let dir = temp_dir("legacy");
        let entropy = SeededEntropy::new(2);
        let mut model = Model::with_defaults(&Ctx::new("2026-01-01T00:00:00Z", &entropy)).unwrap();
        model.sandboxes.push(sandbox(&model, "e"));
        model.sandboxes.push(sandbox(&model, "f"));
        {
            let store = Store::open(&dir).unwrap();
            let txn = store.db.begin_write().unwrap();
            {
                let mut table = txn.open_table(STATE).unwrap();
                let bytes = serde_json::to_vec(&model).unwrap();
                table.insert(MODEL_KEY, bytes.as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        let mut store = Store::open(&dir).unwrap();
        assert_eq!(store.load().unwrap().as_ref(), Some(&model));
        store.save(&model).unwrap();
        drop(store);
        let mut store = Store::open(&dir).unwrap();
        assert_eq!(store.load().unwrap().as_ref(), Some(&model));
        assert!(!store.saved.legacy);
        let txn = store.db.begin_read().unwrap();
        let table = txn.open_table(STATE).unwrap();
        assert!(
            table.get(MODEL_KEY).unwrap().is_none(),
            "the old document is gone"
        );
        drop(table);
        drop(txn);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
