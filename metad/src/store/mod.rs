//! On-disk state of a node: `raft-log/` (the Raft log's segment files: entries, vote, committed,
//! purge point) and, in redb, `sm.redb` (the state machine's tables plus last-applied and
//! membership), so log appends never queue behind apply. Each carries a format version checked
//! at open.
//! Must not import `api` or `network`.

mod apply_floor;
pub mod install;
pub mod log;
pub mod migrate;
pub mod redb_kv;
pub mod snapshot;
pub mod state_machine;
pub mod wal;
pub mod writeback;

use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicU64, Ordering};

use redb::{Database, ReadableDatabase, TableDefinition};

pub use log::{FlushHold, LogStore};
pub use state_machine::{AppliedState, ApplyStats, SmStore, DURABLE_EVERY};

/// On-disk layout of the Raft log (`raft-log/` segments); bump when it changes incompatibly.
/// 1 was `raft-log.redb`; 2 is the segment log of `store::wal`.
pub const LOG_FORMAT_VERSION: u32 = 2;
/// On-disk layout of `sm.redb`; bump when it changes incompatibly. Snapshots followed it up to
/// 3 and have their own number since (`store::snapshot`).
/// 2: session replies in a ring of slots per client, last-seen by the minute (`sm::session`).
/// 3: tag-index rows hold a long value as a prefix and its hash (`sm::tags`).
/// 4: the small tables share one redb table (`store::redb_kv`); format 3 is converted at open
/// (`store::migrate`). Snapshots did not change.
pub const SM_FORMAT_VERSION: u64 = 4;

const FORMAT_TABLE: TableDefinition<&str, u64> = TableDefinition::new("format");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: on-disk format version {found}, this metad reads version {expected}; use a matching metad release or migrate the data dir")]
    FormatVersion {
        path: PathBuf,
        found: u64,
        expected: u64,
    },
    #[error("{path}: {source}")]
    Open {
        path: PathBuf,
        source: redb::DatabaseError,
    },
    #[error("{0}: in use by another process (a metad already runs on this data dir?)")]
    Locked(PathBuf),
    #[error("redb: {0}")]
    Redb(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("codec: {0}")]
    Codec(String),
    #[error("corrupt: {0}")]
    Corrupt(String),
}

impl StoreError {
    pub fn name(&self) -> &'static str {
        match self {
            StoreError::FormatVersion { .. } => "FORMAT_VERSION",
            StoreError::Open { .. } => "OPEN",
            StoreError::Locked(_) => "LOCKED",
            StoreError::Redb(_) => "REDB",
            StoreError::Io(_) => "IO",
            StoreError::Codec(_) => "CODEC",
            StoreError::Corrupt(_) => "CORRUPT",
        }
    }

    /// Storage errors are never retryable by a client: the node has a problem.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Redb(e.to_string()) }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl From<postcard::Error> for StoreError {
    fn from(e: postcard::Error) -> Self {
        StoreError::Codec(e.to_string())
    }
}

/// Opens (or creates) a redb file and checks/stamps its format version.
/// Full repairs (a walk of the whole file) run by this process when opening a redb file that
/// was not closed cleanly and whose last commit did not record its allocator state.
static FULL_REPAIRS: AtomicU64 = AtomicU64::new(0);

/// Full repairs run by this process so far (see `open_db`).
pub fn full_repairs() -> u64 {
    FULL_REPAIRS.load(Ordering::Relaxed)
}

pub(crate) fn open_db(
    path: &Path,
    cache_bytes: usize,
    version: u64,
) -> Result<Database, StoreError> {
    open_db_upgrading(path, cache_bytes, version, |_, _, _| Ok(false))
}

/// [`open_db`], but a file of another format version is first offered to `upgrade(db, path,
/// found)`, which converts it and stamps `version` (returning true) or declines (false: the
/// open fails with [`StoreError::FormatVersion`]).
pub(crate) fn open_db_upgrading(
    path: &Path,
    cache_bytes: usize,
    version: u64,
    upgrade: impl FnOnce(&Database, &Path, u64) -> Result<bool, StoreError>,
) -> Result<Database, StoreError> {
    let shown = path.display().to_string();
    let db = Database::builder()
        .set_cache_size(cache_bytes)
        .set_repair_callback(move |session| {
            // Called as the repair starts and then with its progress.
            if session.progress() == 0.0 {
                FULL_REPAIRS.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(file = %shown, "not closed cleanly: repairing (walks the whole file)");
            }
        })
        .create(path)
        .map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    let found = {
        let rtx = db.begin_read()?;
        match rtx.open_table(FORMAT_TABLE) {
            Ok(t) => t.get("version")?.map(|v| v.value()),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(e.into()),
        }
    };
    match found {
        Some(v) if v == version => {}
        Some(v) if upgrade(&db, path, v)? => {}
        Some(v) => {
            return Err(StoreError::FormatVersion {
                path: path.to_path_buf(),
                found: v,
                expected: version,
            })
        }
        None => {
            let wtx = db.begin_write()?;
            stamp(&wtx, version)?;
            wtx.commit()?;
        }
    }
    Ok(db)
}

/// Records `version` as the file's format version in `wtx`.
pub(crate) fn stamp(wtx: &redb::WriteTransaction, version: u64) -> Result<(), StoreError> {
    wtx.open_table(FORMAT_TABLE)?.insert("version", version)?;
    Ok(())
}

/// Overwrites the format version (tests of the version check only).
#[doc(hidden)]
pub fn stamp_format_version(path: &Path, version: u64) -> Result<(), StoreError> {
    let db = Database::create(path).map_err(|source| StoreError::Open {
        path: path.into(),
        source,
    })?;
    let wtx = db.begin_write()?;
    stamp(&wtx, version)?;
    wtx.commit()?;
    Ok(())
}

/// Paths of a node's data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    pub root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataDir { root: root.into() }
    }
    /// The Raft log's segment files.
    pub fn log_dir(&self) -> PathBuf {
        self.root.join("raft-log")
    }
    /// Where format 1 kept the Raft log (a data dir holding it is refused).
    pub fn old_log_db(&self) -> PathBuf {
        self.root.join("raft-log.redb")
    }
    pub fn sm_db(&self) -> PathBuf {
        self.root.join("sm.redb")
    }
    pub fn snapshots(&self) -> PathBuf {
        self.root.join("snapshots")
    }
}

/// Default page cache of `sm.redb` (`Config::sm_cache_mib`). 1 GiB: at 10 M files a 256 MiB
/// cache thrashed and stat lost a third of its 100 k-file throughput, while a 1 M-file bulk load
/// with 1 GiB peaked at 1.3-1.4 GiB RSS (docs/benchmarks.md, round 8). The cache only fills
/// with pages actually read, so small namespaces do not pay for it.
pub const SM_CACHE_DEFAULT_MIB: u64 = 1024;

/// Opens both stores of a node with the default state-machine cache.
pub async fn open(dir: &DataDir) -> Result<(LogStore, SmStore), StoreError> {
    open_with_cache(dir, SM_CACHE_DEFAULT_MIB).await
}

/// Opens both stores of a node, the state machine with a `sm_cache_mib` MiB page cache.
pub async fn open_with_cache(
    dir: &DataDir,
    sm_cache_mib: u64,
) -> Result<(LogStore, SmStore), StoreError> {
    std::fs::create_dir_all(&dir.root)?;
    std::fs::create_dir_all(dir.snapshots())?;
    if dir.old_log_db().exists() {
        return Err(StoreError::FormatVersion {
            path: dir.old_log_db(),
            found: 1,
            expected: LOG_FORMAT_VERSION.into(),
        });
    }
    let log = LogStore::open(&dir.log_dir())?;
    let sm = SmStore::open_with_cache(&dir.sm_db(), &dir.snapshots(), sm_cache_mib)?;
    Ok((log, sm))
}

pub(crate) fn to_storage_error(e: StoreError) -> crate::types::StorageError {
    openraft::StorageIOError::<u64>::write(openraft::AnyError::error(e.to_string())).into()
}
