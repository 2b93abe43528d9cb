//! The state machine store on redb (`sm.redb`): applies each batch of committed entries in ONE
//! write transaction (last-applied and membership written in the same transaction), builds
//! snapshots from a consistent read transaction, installs received snapshots atomically, and
//! publishes the applied (log index, revision) so reads can wait for it.
//!
//! Durability: apply transactions commit without fsync (`Durability::None`) — the Raft log,
//! fsynced before an entry counts as appended, is the durable record, and at start-up openraft
//! re-applies the committed entries above the last *durable* applied index. An
//! `Durability::Immediate` commit (which makes every commit before it durable) is made at least
//! every [`DURABLE_EVERY`] of applying, before a snapshot is built (the log behind a snapshot
//! may be purged, so the state the snapshot covers must be on disk), and when the store is
//! dropped. This saves one fsync per apply batch on the write path (etcd likewise fsyncs its
//! WAL per commit and its bbolt backend only every 100 ms). A background thread
//! (`store::writeback`) pushes the dirty pages out between durable commits so that their
//! fsync, which runs on the apply path, stays short; durable commits use redb's quick repair
//! so that opening the file after a crash does not walk all of it.

use std::io::{BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use redb::{Database, Durability, ReadableDatabase};
use tokio::sync::watch;

use super::apply_floor;
use super::install::{Loaded, Loader, SnapFile};
use super::redb_kv::{redb_tables, RedbRead, RedbWrite, View};
use super::{migrate, open_db_upgrading, snapshot, to_storage_error, StoreError};
use crate::sm::{self, KvError};
use crate::types::{
    codec, ApplyReply, Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

const K_APPLIED: &str = "last_applied";
const K_MEMBERSHIP: &str = "membership";
/// File-name prefix of a state-machine file being loaded from a received snapshot.
const INSTALL_PREFIX: &str = "sm-install-";

/// Longest stretch of applying without a durable (fsynced) state-machine commit.
pub const DURABLE_EVERY: Duration = Duration::from_millis(500);

/// What applying has cost since the store was opened: apply calls, the commands they carried
/// (each command of a leader batch counts), and the applying thread's CPU and wall time in
/// them, commits included. CPU per command is the figure that bounds write throughput when
/// the cores are saturated; `/metrics` exports these as counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyStats {
    pub batches: u64,
    pub commands: u64,
    pub cpu_ns: u64,
    pub wall_ns: u64,
}

#[derive(Default)]
struct ApplyCounters {
    batches: AtomicU64,
    commands: AtomicU64,
    cpu_ns: AtomicU64,
    wall_ns: AtomicU64,
}

/// CPU time of the calling thread, in ns (0 if the clock cannot be read).
fn thread_cpu_ns() -> u64 {
    use nix::time::{clock_gettime, ClockId};
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(|t| (t.tv_sec() as u64).saturating_mul(1_000_000_000) + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// Commands in one entry's command (a leader batch counts each of its commands).
fn command_count(c: &metad_proto::raft::v1::Command) -> u64 {
    match &c.op {
        Some(metad_proto::raft::v1::command::Op::Batch(b)) => b.commands.len() as u64,
        _ => 1,
    }
}

/// What the state machine has applied; published on every apply batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppliedState {
    pub log_index: u64,
    pub revision: u64,
}

struct Inner {
    /// Replaced as a whole when a streamed snapshot is installed (`swap_in`); readers keep
    /// the `Arc` they took, so a read that started before the swap finishes on the old file.
    db: RwLock<Arc<Database>>,
    /// `sm.redb`, and the page cache of every database opened for it.
    sm_path: PathBuf,
    cache_bytes: usize,
    /// Bumped when `db` is replaced (the writeback thread reopens the file).
    db_generation: Arc<AtomicU64>,
    snap_dir: PathBuf,
    applied: watch::Sender<AppliedState>,
    /// The read view concurrent reads share; dropped at each apply or install, before the new
    /// applied state is published (see [`SmStore::read`]).
    view: Mutex<Option<Arc<View>>>,
    seq: AtomicU64,
    current: Mutex<Option<(SnapshotMeta, PathBuf)>>,
    snapshot_bytes: AtomicU64,
    /// Entries applied by this process since the store was opened (restart evidence).
    applied_since_open: AtomicU64,
    /// When the last durable commit was made.
    last_durable: Mutex<Instant>,
    /// A commit without fsync happened since the last durable one (shared with the
    /// background writeback thread, which holds it weakly).
    dirty: Arc<AtomicBool>,
    /// Durable commits made (apply batches, flushes): for tests and metrics.
    durable_commits: AtomicU64,
    /// Snapshots installed by swapping in a file loaded while they arrived.
    streamed_installs: AtomicU64,
    apply: ApplyCounters,
}

impl Inner {
    /// The current `sm.redb` handle.
    fn db(&self) -> Arc<Database> {
        self.db.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.dirty.load(Ordering::SeqCst) {
            if let Err(e) = durable_commit(&self.db()) {
                tracing::warn!(error = %e, "final state-machine flush failed");
            }
        }
    }
}

/// An empty write transaction committed with `Durability::Immediate`: makes every earlier
/// commit durable.
fn durable_commit(db: &Database) -> Result<(), StoreError> {
    begin_durable(db)?.commit()?;
    Ok(())
}

/// A write transaction that commits durably with redb's quick repair: it records the page
/// allocator state, so opening the file after a crash (whose last durable commit is always one
/// of these) loads that state instead of walking the whole file — 7.6 s for a 2.2 GB `sm.redb`
/// before. Costs one more fsync (two-phase commit) per durable commit, at most every
/// [`DURABLE_EVERY`].
pub(super) fn begin_durable(db: &Database) -> Result<redb::WriteTransaction, StoreError> {
    let mut w = db.begin_write()?;
    w.set_durability(Durability::Immediate)
        .map_err(|e| StoreError::Redb(e.to_string()))?;
    w.set_quick_repair(true);
    Ok(w)
}

/// Handle to the state machine store; clones share it (the API reads through a clone).
#[derive(Clone)]
pub struct SmStore {
    inner: Arc<Inner>,
}

/// Asks the kernel to drop a written, synced file's pages from its page cache. A snapshot is
/// written once and read again only for a lagging peer; left cached, a 6 GB snapshot of a 10 M
/// file namespace would evict the state machine's pages, which every read needs. Advice only:
/// a failure costs nothing but the cache.
fn drop_from_page_cache(f: &std::fs::File) {
    use std::os::fd::AsRawFd;
    let advice = nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED;
    if let Err(e) = nix::fcntl::posix_fadvise(f.as_raw_fd(), 0, 0, advice) {
        tracing::debug!(error = %e, "posix_fadvise(DONTNEED) on a snapshot failed");
    }
}

fn se(e: impl Into<StoreError>) -> StorageError {
    to_storage_error(e.into())
}

impl From<KvError> for StoreError {
    fn from(e: KvError) -> Self {
        StoreError::Redb(e.0)
    }
}

impl SmStore {
    pub fn open(path: &Path, snap_dir: &Path) -> Result<SmStore, StoreError> {
        SmStore::open_with_cache(path, snap_dir, super::SM_CACHE_DEFAULT_MIB)
    }

    /// Opens `sm.redb` with a page cache of `cache_mib` MiB.
    pub fn open_with_cache(
        path: &Path,
        snap_dir: &Path,
        cache_mib: u64,
    ) -> Result<SmStore, StoreError> {
        let cache_bytes = usize::try_from(cache_mib << 20).unwrap_or(usize::MAX);
        let db = open_db_upgrading(
            path,
            cache_bytes,
            super::SM_FORMAT_VERSION,
            migrate::upgrade,
        )?;
        {
            let w = begin_durable(&db)?;
            for def in redb_tables() {
                w.open_table(def)?;
            }
            w.commit()?;
        }
        let (applied_state, _) = read_raft_meta(&db)?;
        let revision = {
            let r = RedbRead::new(db.begin_read()?);
            sm::revision(&r)?
        };
        let (tx, _) = watch::channel(AppliedState {
            log_index: applied_state.map(|l| l.index).unwrap_or(0),
            revision,
        });
        let current = find_latest_snapshot(snap_dir)?;
        let size = current
            .as_ref()
            .and_then(|(_, p)| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .unwrap_or(0);
        // A streamed install that did not finish before a crash or stop.
        if let Some(dir) = path.parent() {
            for e in std::fs::read_dir(dir)?.flatten() {
                if e.file_name().to_string_lossy().starts_with(INSTALL_PREFIX) {
                    std::fs::remove_file(e.path())?;
                }
            }
        }
        let dirty = Arc::new(AtomicBool::new(false));
        let db_generation = Arc::new(AtomicU64::new(0));
        super::writeback::spawn(path, Arc::downgrade(&dirty), Arc::downgrade(&db_generation))?;
        Ok(SmStore {
            inner: Arc::new(Inner {
                db: RwLock::new(Arc::new(db)),
                sm_path: path.to_path_buf(),
                cache_bytes,
                db_generation,
                snap_dir: snap_dir.to_path_buf(),
                applied: tx,
                view: Mutex::new(None),
                seq: AtomicU64::new(0),
                current: Mutex::new(current),
                snapshot_bytes: AtomicU64::new(size),
                applied_since_open: AtomicU64::new(0),
                last_durable: Mutex::new(Instant::now()),
                dirty,
                durable_commits: AtomicU64::new(0),
                streamed_installs: AtomicU64::new(0),
                apply: ApplyCounters::default(),
            }),
        })
    }

    fn db(&self) -> Arc<Database> {
        self.inner.db()
    }

    /// Subscribe to applied-state changes (for `min_revision` and read-index waits).
    pub fn subscribe(&self) -> watch::Receiver<AppliedState> {
        self.inner.applied.subscribe()
    }

    pub fn applied(&self) -> AppliedState {
        *self.inner.applied.borrow()
    }

    /// Entries this process has applied since it opened the store. After a restart this
    /// stays small: applied state is on disk, only the unapplied tail of the log is replayed.
    pub fn applied_since_open(&self) -> u64 {
        self.inner.applied_since_open.load(Ordering::Relaxed)
    }

    /// Whether commits since the last durable one exist (they are re-applied from the log
    /// after a crash).
    pub fn has_unflushed(&self) -> bool {
        self.inner.dirty.load(Ordering::SeqCst)
    }

    /// Durable state-machine commits made since the store was opened.
    pub fn durable_commits(&self) -> u64 {
        self.inner.durable_commits.load(Ordering::Relaxed)
    }

    /// What applying has cost since the store was opened.
    pub fn apply_stats(&self) -> ApplyStats {
        let a = &self.inner.apply;
        ApplyStats {
            batches: a.batches.load(Ordering::Relaxed),
            commands: a.commands.load(Ordering::Relaxed),
            cpu_ns: a.cpu_ns.load(Ordering::Relaxed),
            wall_ns: a.wall_ns.load(Ordering::Relaxed),
        }
    }

    /// Snapshots installed from a file loaded while they arrived (the rest were loaded from
    /// the received file after the transfer).
    pub fn streamed_installs(&self) -> u64 {
        self.inner.streamed_installs.load(Ordering::Relaxed)
    }

    /// Makes every applied entry durable now (one fsync).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.inner.dirty.store(false, Ordering::SeqCst);
        durable_commit(&self.db())?;
        self.inner.durable_commits.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut t) = self.inner.last_durable.lock() {
            *t = Instant::now();
        }
        Ok(())
    }

    pub fn snapshot_bytes(&self) -> u64 {
        self.inner.snapshot_bytes.load(Ordering::Relaxed)
    }

    pub fn current_snapshot_index(&self) -> u64 {
        self.inner
            .current
            .lock()
            .ok()
            .and_then(|c| c.as_ref().and_then(|(m, _)| m.last_log_id.map(|l| l.index)))
            .unwrap_or(0)
    }

    /// Runs a query against one consistent read view of the applied state.
    ///
    /// Reads share one view until the next apply drops it: a reader that has seen applied
    /// state X (a read barrier, `min_revision`) finds either no view, and begins one that sees
    /// X, or a view begun after X's commit, because `publish` drops the view after each commit
    /// and before it publishes, and a view is begun under the same lock.
    pub fn read<T>(
        &self,
        f: impl FnOnce(&RedbRead) -> Result<T, KvError>,
    ) -> Result<T, StoreError> {
        let view = {
            let mut current = self.inner.view.lock().unwrap_or_else(|e| e.into_inner());
            match &*current {
                Some(v) => v.clone(),
                None => current
                    .insert(Arc::new(View::new(self.db().begin_read()?)))
                    .clone(),
            }
        };
        Ok(f(&RedbRead::shared(view))?)
    }

    /// Publishes a new applied state after its commit, dropping the shared read view first so
    /// that no read which has seen the new state gets an older view.
    fn publish(&self, state: AppliedState) {
        let old = self
            .inner
            .view
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        // The last reader of the old view ends its read transaction; not under the lock.
        drop(old);
        self.inner.applied.send_replace(state);
    }

    /// Whether the next commit must be durable (see `DURABLE_EVERY`).
    fn durable_due(&self) -> bool {
        self.inner
            .last_durable
            .lock()
            .map(|t| t.elapsed() >= DURABLE_EVERY)
            .unwrap_or(true)
    }

    /// Applies `entries` in one transaction and counts what it cost (`ApplyStats`).
    fn apply_blocking(
        &self,
        entries: Vec<Entry>,
        durable: bool,
    ) -> Result<Vec<ApplyReply>, StoreError> {
        let (started, cpu0) = (Instant::now(), thread_cpu_ns());
        let commands: u64 = entries
            .iter()
            .map(|e| match &e.payload {
                EntryPayload::Normal(c) => command_count(&c.0),
                _ => 0,
            })
            .sum();
        let r = self.apply_in_one_transaction(entries, durable);
        let a = &self.inner.apply;
        a.batches.fetch_add(1, Ordering::Relaxed);
        a.commands.fetch_add(commands, Ordering::Relaxed);
        a.cpu_ns
            .fetch_add(thread_cpu_ns().saturating_sub(cpu0), Ordering::Relaxed);
        a.wall_ns
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        r
    }

    /// A measurement-only stand-in for `apply_blocking` (`store::apply_floor`).
    fn apply_floor(
        &self,
        floor: apply_floor::Floor,
        entries: &[Entry],
    ) -> Result<Vec<ApplyReply>, StoreError> {
        let (replies, revision) = apply_floor::apply(&self.db(), floor, entries)?;
        if let Some(e) = entries.last() {
            self.publish(AppliedState {
                log_index: e.log_id.index,
                revision,
            });
        }
        Ok(replies)
    }

    fn apply_in_one_transaction(
        &self,
        entries: Vec<Entry>,
        durable: bool,
    ) -> Result<Vec<ApplyReply>, StoreError> {
        let db = self.db();
        let w = if durable {
            begin_durable(&db)?
        } else {
            let mut w = db.begin_write()?;
            w.set_durability(Durability::None)
                .map_err(|e| StoreError::Redb(e.to_string()))?;
            w
        };
        self.inner
            .applied_since_open
            .fetch_add(entries.len() as u64, Ordering::Relaxed);
        let mut replies = Vec::with_capacity(entries.len());
        let mut last = None;
        let mut membership = None;
        let revision = {
            let mut kv = RedbWrite::new(&w);
            for e in entries {
                last = Some(e.log_id);
                match e.payload {
                    EntryPayload::Blank => replies.push(ApplyReply::default()),
                    EntryPayload::Normal(cmd) => {
                        replies.push(ApplyReply(sm::apply_command(&mut kv, &cmd.0)?));
                    }
                    EntryPayload::Membership(m) => {
                        membership = Some(StoredMembership::new(Some(e.log_id), m));
                        replies.push(ApplyReply::default());
                    }
                }
            }
            if let Some(l) = last {
                kv.put_raft_meta(K_APPLIED, &codec::encode(&l)?)?;
            }
            if let Some(m) = &membership {
                kv.put_raft_meta(K_MEMBERSHIP, &codec::encode(m)?)?;
            }
            sm::revision(&kv)?
        };
        w.commit()?;
        if durable {
            self.inner.durable_commits.fetch_add(1, Ordering::Relaxed);
            self.inner.dirty.store(false, Ordering::SeqCst);
            if let Ok(mut t) = self.inner.last_durable.lock() {
                *t = Instant::now();
            }
        } else {
            self.inner.dirty.store(true, Ordering::SeqCst);
        }
        if let Some(l) = last {
            self.publish(AppliedState {
                log_index: l.index,
                revision,
            });
        }
        Ok(replies)
    }

    fn build_blocking(&self) -> Result<(SnapshotMeta, PathBuf), StoreError> {
        let view = RedbRead::new(self.db().begin_read()?);
        // Everything this read transaction sees becomes durable before the snapshot exists:
        // openraft may purge the log behind it.
        self.flush()?;
        // Meta and data from the same read transaction: the snapshot is consistent.
        let (last_applied, membership) = raft_meta_in(&view)?;
        let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed);
        let id = format!(
            "{}-{}-{}",
            last_applied.map(|l| l.index).unwrap_or(0),
            last_applied.map(|l| l.leader_id.term).unwrap_or(0),
            seq
        );
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id: id,
        };
        let tmp = self
            .inner
            .snap_dir
            .join(format!("snap-{}.tmp", meta.snapshot_id));
        let mut f = BufWriter::new(std::fs::File::create(&tmp)?);
        snapshot::dump(view.txn(), &mut f)?;
        let f = f.into_inner().map_err(|e| StoreError::Io(e.into_error()))?;
        f.sync_all()?;
        drop_from_page_cache(&f);
        drop(f);
        self.publish_snapshot(meta, &tmp)
    }

    /// Moves a complete snapshot file into place with its meta, and drops older ones.
    fn publish_snapshot(
        &self,
        meta: SnapshotMeta,
        tmp: &Path,
    ) -> Result<(SnapshotMeta, PathBuf), StoreError> {
        let dir = &self.inner.snap_dir;
        // A build that started before an install finished may end after it: never replace
        // the snapshot served with an older one (openraft may have purged the log behind the
        // newer one). The lock is held to the end, so two publishes do not interleave.
        let mut current = self.inner.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((cur, path)) = current.as_ref() {
            if cur.last_log_id.map(|l| l.index) > meta.last_log_id.map(|l| l.index) {
                let _ = std::fs::remove_file(tmp);
                return Ok((cur.clone(), path.clone()));
            }
        }
        let data = dir.join(format!("snap-{}.bin", meta.snapshot_id));
        let meta_path = dir.join(format!("snap-{}.meta", meta.snapshot_id));
        std::fs::rename(tmp, &data)?;
        let mut mf = std::fs::File::create(dir.join("meta.tmp"))?;
        mf.write_all(&codec::encode(&meta)?)?;
        mf.sync_all()?;
        std::fs::rename(dir.join("meta.tmp"), &meta_path)?;
        std::fs::File::open(dir)?.sync_all()?;
        let size = std::fs::metadata(&data)?.len();
        self.inner.snapshot_bytes.store(size, Ordering::Relaxed);
        *current = Some((meta.clone(), data.clone()));
        // Older snapshots are no longer served.
        for e in std::fs::read_dir(dir)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let keep = name == format!("snap-{}.bin", meta.snapshot_id)
                || name == format!("snap-{}.meta", meta.snapshot_id);
            if name.starts_with("snap-") && !keep && !name.ends_with(".tmp") {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok((meta, data))
    }

    /// The `recv-*.tmp` path of a file `begin_receiving_snapshot` opened, found by inode.
    fn received_path(&self, file: &std::fs::File) -> Result<Option<PathBuf>, StoreError> {
        use std::os::unix::fs::MetadataExt;
        let want = file.metadata()?;
        for e in std::fs::read_dir(&self.inner.snap_dir)?.flatten() {
            if !e.file_name().to_string_lossy().starts_with("recv-") {
                continue;
            }
            if let Ok(m) = e.metadata() {
                if m.ino() == want.ino() && m.dev() == want.dev() {
                    return Ok(Some(e.path()));
                }
            }
        }
        Ok(None)
    }

    /// Makes a streamed-in state-machine file the live one: renamed over `sm.redb` (atomic;
    /// it is already durable), then its handle replaces the old. Returns the loader's time
    /// spent waiting for bytes and its time after the last byte arrived.
    fn swap_in(&self, l: Loaded) -> Result<(Duration, Duration), StoreError> {
        std::fs::rename(&l.path, &self.inner.sm_path)?;
        if let Some(dir) = self.inner.sm_path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        *self.inner.db.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(l.db);
        self.inner.db_generation.fetch_add(1, Ordering::SeqCst);
        // Unflushed commits of the old file are replaced, not lost: the snapshot covers them.
        self.inner.dirty.store(false, Ordering::SeqCst);
        if let Ok(mut t) = self.inner.last_durable.lock() {
            *t = Instant::now();
        }
        self.publish(AppliedState {
            log_index: l.log_index,
            revision: l.revision,
        });
        self.inner.streamed_installs.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(rows = l.rows, "streamed snapshot swapped in");
        Ok((l.waited, l.tail))
    }

    fn install_blocking(
        &self,
        meta: SnapshotMeta,
        mut file: std::fs::File,
        loader: Option<Loader>,
    ) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let mut streamed = None;
        if let Some(loader) = loader {
            match loader.finish(meta.clone()) {
                Ok(l) => streamed = Some(self.swap_in(l)?),
                // The received file is complete and checked below; only the overlap is lost.
                Err(e) => tracing::warn!(
                    error = %e,
                    "streamed snapshot load failed; loading the received file"
                ),
            }
        }
        if streamed.is_none() {
            file.seek(SeekFrom::Start(0))?;
            let w = begin_durable(&self.db())?;
            snapshot::load(&mut BufReader::new(&mut file), &w)?;
            write_raft_meta(&w, &meta)?;
            let revision = sm::revision(&RedbWrite::new(&w))?;
            w.commit()?;
            self.publish(AppliedState {
                log_index: meta.last_log_id.map(|l| l.index).unwrap_or(0),
                revision,
            });
        }
        let loaded = started.elapsed();
        // Keep the received file as this node's snapshot, so it can serve it to others.
        // openraft hands over the file, not its path: find it among `recv-*` by inode and
        // rename it (a copy would double the disk and time at tens of GB); copy only if it
        // cannot be found.
        let tmp = self
            .inner
            .snap_dir
            .join(format!("snap-{}.tmp", meta.snapshot_id));
        file.sync_all()?;
        match self.received_path(&file)? {
            Some(recv) => std::fs::rename(recv, &tmp)?,
            None => {
                file.seek(SeekFrom::Start(0))?;
                let mut out = std::fs::File::create(&tmp)?;
                std::io::copy(&mut file, &mut out)?;
                out.sync_all()?;
                drop_from_page_cache(&out);
            }
        }
        // After the copy, if there was one: it reads `file` back.
        drop_from_page_cache(&file);
        let id = meta.snapshot_id.clone();
        let (_, data) = self.publish_snapshot(meta, &tmp)?;
        tracing::info!(
            snapshot = %id,
            bytes = std::fs::metadata(&data).map(|m| m.len()).unwrap_or(0),
            streamed = streamed.is_some(),
            load_s = loaded.as_secs_f64(),
            total_s = started.elapsed().as_secs_f64(),
            waited_for_bytes_s = streamed.map(|(w, _)| w.as_secs_f64()),
            after_last_byte_s = streamed.map(|(_, t)| t.as_secs_f64()),
            "installed snapshot"
        );
        for e in std::fs::read_dir(&self.inner.snap_dir)?.flatten() {
            if e.file_name().to_string_lossy().starts_with("recv-") {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(())
    }
}

/// Records a snapshot's last-applied log id and membership in `w` (an install).
pub(super) fn write_raft_meta(
    w: &redb::WriteTransaction,
    meta: &SnapshotMeta,
) -> Result<(), StoreError> {
    let kv = RedbWrite::new(w);
    match &meta.last_log_id {
        Some(l) => kv.put_raft_meta(K_APPLIED, &codec::encode(l)?)?,
        None => kv.remove_raft_meta(K_APPLIED)?,
    }
    kv.put_raft_meta(K_MEMBERSHIP, &codec::encode(&meta.last_membership)?)?;
    Ok(())
}

fn read_raft_meta(db: &Database) -> Result<(Option<LogId>, StoredMembership), StoreError> {
    raft_meta_in(&RedbRead::new(db.begin_read()?))
}

/// Last-applied log id and membership as seen by one read view.
fn raft_meta_in(r: &RedbRead) -> Result<(Option<LogId>, StoredMembership), StoreError> {
    let a = match r.raft_meta(K_APPLIED)? {
        Some(v) => Some(codec::decode(&v)?),
        None => None,
    };
    let m = match r.raft_meta(K_MEMBERSHIP)? {
        Some(v) => codec::decode(&v)?,
        None => StoredMembership::default(),
    };
    Ok((a, m))
}

fn find_latest_snapshot(dir: &Path) -> Result<Option<(SnapshotMeta, PathBuf)>, StoreError> {
    let mut best: Option<(SnapshotMeta, PathBuf)> = None;
    for e in std::fs::read_dir(dir)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(id) = name
            .strip_prefix("snap-")
            .and_then(|n| n.strip_suffix(".meta"))
        else {
            continue;
        };
        let data = dir.join(format!("snap-{id}.bin"));
        if !data.exists() {
            continue;
        }
        let meta: SnapshotMeta = codec::decode(&std::fs::read(e.path())?)?;
        let newer = best
            .as_ref()
            .map(|(b, _)| meta.last_log_id.map(|l| l.index) > b.last_log_id.map(|l| l.index))
            .unwrap_or(true);
        if newer {
            best = Some((meta, data));
        }
    }
    Ok(best)
}

/// Up to this many entries, of at most `INLINE_APPLY_BYTES` of commands in all, apply on the
/// state machine's task instead of the blocking pool when their commit is not durable. That
/// bounds how long the task holds its tokio worker to about half a millisecond.
const INLINE_APPLY_MAX: usize = 2;
const INLINE_APPLY_BYTES: usize = 8 << 10;

/// Whether `entries` may apply inline: few, small, and only commands whose work is bounded by
/// their size (namespace, tags, txn, register). Maintenance, moves and topology commands can
/// touch many rows; membership changes are rare.
fn inline_ok(entries: &[Entry]) -> bool {
    use prost::Message;
    if entries.len() > INLINE_APPLY_MAX {
        return false;
    }
    let mut bytes = 0;
    for e in entries {
        match &e.payload {
            EntryPayload::Blank => {}
            EntryPayload::Normal(cmd) if size_bounded(&cmd.0) => bytes += cmd.0.encoded_len(),
            _ => return false,
        }
    }
    bytes <= INLINE_APPLY_BYTES
}

fn size_bounded(c: &metad_proto::raft::v1::Command) -> bool {
    use metad_proto::raft::v1::command::Op;
    let leaf = |op: &Option<Op>| {
        matches!(
            op,
            Some(
                Op::Namespace(_)
                    | Op::Tags(_)
                    | Op::Txn(_)
                    | Op::RegisterPut(_)
                    | Op::RegisterIncr(_)
            )
        )
    };
    match &c.op {
        // Batches are never nested: a batch inside one is not a leaf, so it is refused.
        Some(Op::Batch(b)) => b.commands.iter().all(|c| leaf(&c.op)),
        op => leaf(op),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StorageError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(to_storage_error),
        Err(e) => Err(to_storage_error(StoreError::Redb(format!(
            "blocking task failed: {e}"
        )))),
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SmStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let me = self.clone();
        let (meta, path) = blocking(move || me.build_blocking()).await?;
        let f = tokio::fs::File::open(&path).await.map_err(se)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(SnapFile::serve(f)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for SmStore {
    type SnapshotBuilder = SmStore;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let me = self.clone();
        blocking(move || read_raft_meta(&me.db())).await
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ApplyReply>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if let Some(floor) = apply_floor::mode().filter(|_| apply_floor::only_tag_ops(&entries)) {
            return self.apply_floor(floor, &entries).map_err(to_storage_error);
        }
        let durable = self.durable_due();
        if !durable && inline_ok(&entries) {
            // A few small entries without an fsync apply on this task: tens of µs of CPU, less
            // than the two thread hand-offs of the blocking pool add to a lone write's latency.
            return self
                .apply_blocking(entries, false)
                .map_err(to_storage_error);
        }
        let me = self.clone();
        blocking(move || me.apply_blocking(entries, durable)).await
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapFile>, StorageError> {
        let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed);
        let path = self.inner.snap_dir.join(format!("recv-{seq}.tmp"));
        let f = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(se)?;
        let db_path = self
            .inner
            .sm_path
            .with_file_name(format!("{INSTALL_PREFIX}{seq}.redb"));
        let loader = match Loader::start(&path, db_path, self.inner.cache_bytes) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(error = %e, "cannot load the snapshot while it arrives");
                None
            }
        };
        Ok(Box::new(SnapFile::receiving(f, loader)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<SnapFile>,
    ) -> Result<(), StorageError> {
        let (std_file, loader) = snapshot.into_parts().await;
        let me = self.clone();
        let meta = meta.clone();
        blocking(move || me.install_blocking(meta, std_file, loader)).await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let cur = self.inner.current.lock().ok().and_then(|c| c.clone());
        match cur {
            None => Ok(None),
            Some((meta, path)) => {
                let f = tokio::fs::File::open(&path).await.map_err(se)?;
                Ok(Some(Snapshot {
                    meta,
                    snapshot: Box::new(SnapFile::serve(f)),
                }))
            }
        }
    }
}

#[cfg(test)]
#[path = "state_machine_tests.rs"]
mod tests;
