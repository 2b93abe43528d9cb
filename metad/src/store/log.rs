//! The Raft log on redb with group commit.
//!
//! Every mutation (append, vote, committed, truncate, purge) goes through one writer thread, in
//! the order openraft issued it. The thread drains whatever is queued into ONE write
//! transaction and ONE fsync, then fires the append callbacks (`LogFlushed`) and wakes the
//! synchronous callers — so an entry is reported flushed only after it is durable, and a burst
//! of appends costs one fsync. Entries queued but not yet committed stay readable from an
//! in-memory overlay, because the leader replicates entries before its own flush completes.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use tokio::sync::oneshot;

use super::{open_db, to_storage_error, StoreError};
use crate::types::{codec, Entry, LogId, StorageError, TypeConfig, Vote};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const LOG_META: TableDefinition<&str, &[u8]> = TableDefinition::new("log_meta");
const K_VOTE: &str = "vote";
const K_COMMITTED: &str = "committed";
const K_PURGED: &str = "last_purged";

/// At most this many queued operations are folded into one transaction.
const MAX_BATCH: usize = 1024;

/// The committed index is written at most this often, inside a transaction that is committed
/// anyway (an append, vote, truncate or purge), and when the store closes. openraft saves it on
/// every commit advance, but it only shortens recovery (entries up to it are re-applied at
/// start-up) and an older value is safe. A transaction of its own per advance cost every node
/// a second fsync per write; a write of it inside each append transaction added pages to the
/// fsync that every write waits for.
const COMMITTED_EVERY: Duration = Duration::from_secs(1);

enum Op {
    Append {
        entries: Vec<(u64, LogId, Vec<u8>)>,
        done: LogFlushed<TypeConfig>,
    },
    Meta {
        key: &'static str,
        value: Option<Vec<u8>>,
        done: oneshot::Sender<Result<(), String>>,
    },
    Truncate {
        from: u64,
        done: oneshot::Sender<Result<(), String>>,
    },
    Purge {
        upto: LogId,
        done: oneshot::Sender<Result<(), String>>,
    },
}

struct Shared {
    db: Database,
    /// Appended but not yet committed to redb: index -> (log id, encoded entry).
    unflushed: Mutex<BTreeMap<u64, (LogId, Vec<u8>)>>,
    /// Group-commit statistics for tests and benchmarks.
    stats: Mutex<LogStats>,
    /// Last committed index openraft told us about (persisted via save_committed).
    committed: std::sync::atomic::AtomicU64,
    /// The last value given to save_committed (queued for the writer; read_committed answers
    /// it even before the writer has committed it).
    last_committed: Mutex<Option<Option<LogId>>>,
}

/// Counters of the log writer: `operations / transactions` is the group-commit factor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Write transactions committed, each with one fsync.
    pub transactions: u64,
    /// Operations (appends, meta saves, truncates, purges) folded into them.
    pub operations: u64,
}

/// Handle to the log store; cheap to clone (readers share it).
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Op>,
}

impl LogStore {
    pub fn open(path: &Path) -> Result<LogStore, StoreError> {
        let db = open_db(path, 64 << 20, super::LOG_FORMAT_VERSION)?;
        {
            let w = db.begin_write()?;
            w.open_table(LOG)?;
            w.open_table(LOG_META)?;
            w.commit()?;
        }
        let shared = Arc::new(Shared {
            db,
            unflushed: Mutex::new(BTreeMap::new()),
            stats: Mutex::new(LogStats::default()),
            committed: std::sync::atomic::AtomicU64::new(0),
            last_committed: Mutex::new(None),
        });
        let (tx, rx) = mpsc::channel();
        let s2 = shared.clone();
        std::thread::Builder::new()
            .name("metad-log-writer".into())
            .spawn(move || writer_loop(s2, rx))?;
        Ok(LogStore { shared, tx })
    }

    /// Committed index as last persisted by openraft.
    pub fn committed_index(&self) -> u64 {
        self.shared
            .committed
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// What the writer has committed so far.
    pub fn stats(&self) -> LogStats {
        self.shared.stats.lock().map(|g| *g).unwrap_or_default()
    }

    fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let r = self.shared.db.begin_read()?;
        let t = r.open_table(LOG_META)?;
        Ok(t.get(key)?.map(|v| v.value().to_vec()))
    }

    async fn sync_op(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), String>>) -> Op,
    ) -> Result<(), StorageError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(make(done))
            .map_err(|_| to_storage_error(StoreError::Redb("log writer stopped".into())))?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(to_storage_error(StoreError::Redb(e))),
            Err(_) => Err(to_storage_error(StoreError::Redb(
                "log writer stopped".into(),
            ))),
        }
    }

    fn read_range(&self, start: u64, end: Option<u64>) -> Result<Vec<Entry>, StoreError> {
        let mut merged: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        {
            let r = self.shared.db.begin_read()?;
            let t = r.open_table(LOG)?;
            let iter = match end {
                Some(e) => t.range(start..e)?,
                None => t.range(start..)?,
            };
            for item in iter {
                let (k, v) = item?;
                merged.insert(k.value(), v.value().to_vec());
            }
        }
        if let Ok(u) = self.shared.unflushed.lock() {
            let upper = end.map(Bound::Excluded).unwrap_or(Bound::Unbounded);
            for (i, (_, bytes)) in u.range((Bound::Included(start), upper)) {
                merged.insert(*i, bytes.clone());
            }
        }
        let mut out = Vec::with_capacity(merged.len());
        // Only a consecutive run is meaningful (the range may begin before the first entry).
        let mut expect = None;
        for (i, bytes) in merged {
            if expect.is_some_and(|e| e != i) {
                break;
            }
            out.push(codec::decode::<Entry>(&bytes)?);
            expect = Some(i + 1);
        }
        Ok(out)
    }
}

fn writer_loop(shared: Arc<Shared>, rx: mpsc::Receiver<Op>) {
    // The newest committed index not yet written, and when it was last written.
    let mut pending: Option<Option<Vec<u8>>> = None;
    let mut written_at = Instant::now();
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let operations = batch.len() as u64;
        let mut absorbed = Vec::new();
        let mut ops = Vec::with_capacity(batch.len());
        for op in batch {
            match op {
                Op::Meta { key, value, done } if key == K_COMMITTED => {
                    pending = Some(value);
                    absorbed.push(done);
                }
                op => ops.push(op),
            }
        }
        let mut result = Ok(());
        if !ops.is_empty() {
            let committed = if written_at.elapsed() >= COMMITTED_EVERY {
                pending.take()
            } else {
                None
            };
            result = commit_batch(&shared.db, &ops, committed.as_ref()).map_err(|e| e.to_string());
            if committed.is_some() {
                if result.is_ok() {
                    written_at = Instant::now();
                } else if pending.is_none() {
                    pending = committed;
                }
            }
        }
        if let Ok(mut s) = shared.stats.lock() {
            s.transactions += u64::from(!ops.is_empty());
            s.operations += operations;
        }
        for done in absorbed {
            let _ = done.send(Ok(()));
        }
        for op in ops {
            match op {
                Op::Append { entries, done } => {
                    if let Ok(mut u) = shared.unflushed.lock() {
                        for (i, id, _) in &entries {
                            if u.get(i).map(|(uid, _)| uid == id).unwrap_or(false) {
                                u.remove(i);
                            }
                        }
                    }
                    done.log_io_completed(result.clone().map_err(std::io::Error::other));
                }
                Op::Meta { done, .. } | Op::Truncate { done, .. } | Op::Purge { done, .. } => {
                    let _ = done.send(result.clone());
                }
            }
        }
    }
    if let Some(committed) = pending {
        if let Err(e) = commit_batch(&shared.db, &[], Some(&committed)) {
            tracing::warn!(error = %e, "final save of the committed index failed");
        }
    }
}

/// Commits `batch` (and the committed index, if given) in one transaction with one fsync.
fn commit_batch(
    db: &Database,
    batch: &[Op],
    committed: Option<&Option<Vec<u8>>>,
) -> Result<(), StoreError> {
    let mut w = db.begin_write()?;
    w.set_durability(Durability::Immediate)
        .map_err(|e| StoreError::Redb(e.to_string()))?;
    {
        let mut log = w.open_table(LOG)?;
        let mut meta = w.open_table(LOG_META)?;
        match committed {
            Some(Some(v)) => {
                meta.insert(K_COMMITTED, v.as_slice())?;
            }
            Some(None) => {
                meta.remove(K_COMMITTED)?;
            }
            None => {}
        }
        for op in batch {
            match op {
                Op::Append { entries, .. } => {
                    for (i, _, bytes) in entries {
                        log.insert(*i, bytes.as_slice())?;
                    }
                }
                Op::Meta { key, value, .. } => match value {
                    Some(v) => {
                        meta.insert(*key, v.as_slice())?;
                    }
                    None => {
                        meta.remove(*key)?;
                    }
                },
                Op::Truncate { from, .. } => {
                    let doomed: Vec<u64> = log
                        .range(*from..)?
                        .map(|r| r.map(|(k, _)| k.value()))
                        .collect::<Result<_, _>>()?;
                    for k in doomed {
                        log.remove(k)?;
                    }
                }
                Op::Purge { upto, .. } => {
                    meta.insert(K_PURGED, codec::encode(upto)?.as_slice())?;
                    log.retain_in(..=upto.index, |_, _| false)?;
                }
            }
        }
    }
    w.commit()?;
    Ok(())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(s) => *s,
            Bound::Excluded(s) => s + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(e) => Some(e + 1),
            Bound::Excluded(e) => Some(*e),
            Bound::Unbounded => None,
        };
        self.read_range(start, end).map_err(to_storage_error)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = match self.meta_get(K_PURGED).map_err(to_storage_error)? {
            Some(b) => Some(codec::decode(&b).map_err(|e| to_storage_error(e.into()))?),
            None => None,
        };
        let mut last = {
            let r = self
                .shared
                .db
                .begin_read()
                .map_err(|e| to_storage_error(e.into()))?;
            let t = r.open_table(LOG).map_err(|e| to_storage_error(e.into()))?;
            let last_bytes = t
                .last()
                .map_err(|e| to_storage_error(e.into()))?
                .map(|(_, v)| v.value().to_vec());
            match last_bytes {
                Some(b) => Some(
                    codec::decode::<Entry>(&b)
                        .map_err(|e| to_storage_error(e.into()))?
                        .log_id,
                ),
                None => None,
            }
        };
        if let Ok(u) = self.shared.unflushed.lock() {
            if let Some((_, (id, _))) = u.last_key_value() {
                if last.map(|l| l.index < id.index).unwrap_or(true) {
                    last = Some(*id);
                }
            }
        }
        let last_log_id = last.or(last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let v = codec::encode(vote).map_err(|e| to_storage_error(e.into()))?;
        self.sync_op(|done| Op::Meta {
            key: K_VOTE,
            value: Some(v),
            done,
        })
        .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        match self.meta_get(K_VOTE).map_err(to_storage_error)? {
            Some(b) => Ok(Some(
                codec::decode(&b).map_err(|e| to_storage_error(e.into()))?,
            )),
            None => Ok(None),
        }
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let value = match committed {
            Some(c) => Some(codec::encode(&c).map_err(|e| to_storage_error(e.into()))?),
            None => None,
        };
        // Queued, not awaited: openraft calls this on its core task each time the commit index
        // moves, and waiting for the fsync there stalled every write and replication response
        // behind it (one fsync per commit advance). The committed index only shortens recovery
        // (re-apply up to it at start-up); a lost or older value is safe, and the writer keeps
        // queue order, so it is never persisted ahead of the entries it covers.
        if let Ok(mut l) = self.shared.last_committed.lock() {
            *l = Some(committed);
        }
        let (done, _ignored) = oneshot::channel();
        self.tx
            .send(Op::Meta {
                key: K_COMMITTED,
                value,
                done,
            })
            .map_err(|_| to_storage_error(StoreError::Redb("log writer stopped".into())))?;
        if let Some(c) = committed {
            self.shared
                .committed
                .fetch_max(c.index, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        if let Some(c) = self.shared.last_committed.lock().ok().and_then(|l| *l) {
            return Ok(c);
        }
        match self.meta_get(K_COMMITTED).map_err(to_storage_error)? {
            Some(b) => Ok(Some(
                codec::decode(&b).map_err(|e| to_storage_error(e.into()))?,
            )),
            None => Ok(None),
        }
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut encoded = Vec::new();
        for e in entries {
            let bytes = codec::encode(&e).map_err(|e| to_storage_error(e.into()))?;
            encoded.push((e.log_id.index, e.log_id, bytes));
        }
        if let Ok(mut u) = self.shared.unflushed.lock() {
            for (i, id, b) in &encoded {
                u.insert(*i, (*id, b.clone()));
            }
        }
        self.tx
            .send(Op::Append {
                entries: encoded,
                done: callback,
            })
            .map_err(|_| to_storage_error(StoreError::Redb("log writer stopped".into())))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        if let Ok(mut u) = self.shared.unflushed.lock() {
            let _ = u.split_off(&log_id.index);
        }
        self.sync_op(|done| Op::Truncate {
            from: log_id.index,
            done,
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.sync_op(|done| Op::Purge { upto: log_id, done }).await
    }
}

/// Number of entries currently stored (for metrics).
pub fn entry_count(store: &LogStore) -> u64 {
    store
        .shared
        .db
        .begin_read()
        .ok()
        .and_then(|r| r.open_table(LOG).ok())
        .and_then(|t| t.len().ok())
        .unwrap_or(0)
}
