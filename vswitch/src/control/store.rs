//! The control plane's database: the whole [`Model`] as one JSON document
//! under one key of a redb table, written in one transaction.
//!
//! The daemon saves after every change and before the API answers, so an
//! acknowledged request survives a crash; [`Store::load`] gives the model
//! back on restart. One document keeps the write atomic without a schema;
//! the model is small (kilobytes per hundred endpoints), so rewriting it
//! whole costs less than the `fsync` that follows.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, TableDefinition};

use super::error::ControlError;
use super::model::Model;

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
}

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
        Ok(Self { db, path })
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
    pub fn load(&self) -> Result<Option<Model>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let table = match txn.open_table(STATE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.db_err(e)),
        };
        let Some(value) = table.get(MODEL_KEY).map_err(|e| self.db_err(e))? else {
            return Ok(None);
        };
        let model: Model =
            serde_json::from_slice(value.value()).map_err(|source| StoreError::Decode {
                path: self.path.clone(),
                source,
            })?;
        model.validate().map_err(|source| StoreError::Invalid {
            path: self.path.clone(),
            source,
        })?;
        Ok(Some(model))
    }

    /// Replaces the stored model in one durable transaction.
    ///
    /// # Errors
    /// [`StoreError::Encode`], [`StoreError::Db`].
    pub fn save(&self, model: &Model) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(model).map_err(StoreError::Encode)?;
        let txn = self.db.begin_write().map_err(|e| self.db_err(e))?;
        {
            let mut table = txn.open_table(STATE).map_err(|e| self.db_err(e))?;
            table
                .insert(MODEL_KEY, bytes.as_slice())
                .map_err(|e| self.db_err(e))?;
        }
        txn.commit().map_err(|e| self.db_err(e))
    }

    fn db_err(&self, e: impl Into<redb::Error>) -> StoreError {
        StoreError::Db {
            path: self.path.clone(),
            source: Box::new(e.into()),
        }
    }
}
