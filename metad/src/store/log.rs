//! The Raft log: an append-only, checksummed segment log (`store::wal`) with group commit.
//!
//! Every mutation (append, vote, truncate, purge) becomes a record, sent in the order openraft
//! issued it to one writer thread; the committed index is not sent (it would wake the thread
//! once more per write) but added by the writer to its next group. The thread drains whatever
//! is queued, writes it with ONE `write` and makes it durable with ONE `fdatasync`, then fires
//! the append callbacks (`LogFlushed`) and wakes the synchronous callers — so an entry is
//! reported flushed only after it is durable, and a burst of appends costs one fsync. (A redb transaction per
//! group cost ~650 µs here against ~150 µs for an append: it writes about seven scattered
//! pages per commit. See docs/design.md.)
//!
//! At open the records are replayed in order into the in-memory index (where each entry's
//! bytes are), the vote, the committed index and the purge point. Recent entries also stay in
//! a byte-bounded cache, which is how entries appended but not yet written are read (the leader
//! replicates them before its own flush completes). Segments wholly below the purge point are
//! deleted; each new segment starts by restating vote, committed and purge point, so deleting
//! older ones loses nothing.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Debug;
use std::fs::File;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use tokio::sync::oneshot;

use super::wal::{self, Loc, Wal};
use super::{to_storage_error, StoreError};
use crate::types::{codec, Entry, LogId, StorageError, TypeConfig, Vote};

/// At most this many queued operations are folded into one write and fsync.
const MAX_BATCH: usize = 1024;
/// Entries kept in memory after they are written (readers skip the file for these).
const CACHE_BYTES: usize = 32 << 20;

const R_ENTRY: u8 = 1;
const R_VOTE: u8 = 2;
const R_COMMITTED: u8 = 3;
const R_TRUNCATE: u8 = 4;
const R_PURGE: u8 = 5;

/// An entry record: index, term, leader node, then the postcard-encoded entry (the log id is
/// in front so that replay needs no decode).
const ENTRY_PREFIX: usize = 24;

enum Op {
    Append {
        entries: Vec<(LogId, Arc<Vec<u8>>)>,
        done: LogFlushed<TypeConfig>,
    },
    Vote {
        vote: Vote,
        done: oneshot::Sender<Result<(), String>>,
    },
    Committed(Option<LogId>),
    Truncate {
        from: u64,
        done: oneshot::Sender<Result<(), String>>,
    },
    Purge {
        upto: LogId,
        done: oneshot::Sender<Result<(), String>>,
    },
}

/// What readers and openraft see; the writer and the callers keep it current.
#[derive(Default)]
struct State {
    /// Index of `locs[0]`.
    first: u64,
    /// Where each entry from `first` on is written (`None`: queued, not yet written).
    locs: VecDeque<Option<Loc>>,
    /// Entries by index: all not yet written, and the most recent written ones.
    cache: BTreeMap<u64, (LogId, Arc<Vec<u8>>)>,
    cache_bytes: usize,
    last: Option<LogId>,
    purged: Option<LogId>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    readers: HashMap<u64, Arc<File>>,
}

impl State {
    fn next_index(&self) -> u64 {
        self.first + self.locs.len() as u64
    }

    /// Drops entries at and above `from`.
    fn truncate(&mut self, from: u64) {
        if from < self.next_index() {
            self.locs.truncate(from.saturating_sub(self.first) as usize);
        }
        for (_, (_, b)) in self.cache.split_off(&from) {
            self.cache_bytes -= b.len();
        }
    }

    /// Drops entries at and below `upto`.
    fn purge(&mut self, upto: u64) {
        let n = (upto + 1)
            .saturating_sub(self.first)
            .min(self.locs.len() as u64);
        self.locs.drain(..n as usize);
        self.first = self.first.max(upto + 1);
        let keep = self.cache.split_off(&(upto + 1));
        for (_, (_, b)) in std::mem::replace(&mut self.cache, keep) {
            self.cache_bytes -= b.len();
        }
    }

    /// Evicts written entries, oldest first, until the cache is within its budget.
    fn trim_cache(&mut self) {
        while self.cache_bytes > CACHE_BYTES {
            let Some((&i, _)) = self.cache.first_key_value() else {
                break;
            };
            let written = i
                .checked_sub(self.first)
                .and_then(|k| self.locs.get(k as usize))
                .is_some_and(|l| l.is_some());
            if !written && i >= self.first {
                break;
            }
            if let Some((_, b)) = self.cache.remove(&i) {
                self.cache_bytes -= b.len();
            }
        }
    }
}

struct Shared {
    state: Mutex<State>,
    stats: Mutex<LogStats>,
    /// Set while a [`FlushHold`] lives: the writer waits before its next group.
    held: Mutex<bool>,
    released: Condvar,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (every update is one step).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn held(&self) -> MutexGuard<'_, bool> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait_while_held(&self) {
        let mut held = self.held();
        while *held {
            held = self.released.wait(held).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// While this lives, the log writer writes and syncs nothing: operations queue, and appended
/// entries stay readable from the cache, as when an fsync is slow. A test hook (see
/// [`LogStore::hold_flushes`]); dropping it lets the writer go on.
pub struct FlushHold {
    shared: Arc<Shared>,
}

impl Drop for FlushHold {
    fn drop(&mut self) {
        *self.shared.held() = false;
        self.shared.released.notify_all();
    }
}

/// Counters of the log writer: `operations / transactions` is the group-commit factor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Groups made durable, each with one fsync.
    pub transactions: u64,
    /// Operations (appends, votes, committed saves, truncates, purges) folded into them.
    pub operations: u64,
    /// Bytes the log's records take on disk.
    pub bytes: u64,
}

/// Handle to the log store; cheap to clone (readers share it).
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Op>,
}

fn entry_body(id: &LogId, bytes: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(ENTRY_PREFIX + bytes.len());
    b.extend_from_slice(&id.index.to_be_bytes());
    b.extend_from_slice(&id.leader_id.term.to_be_bytes());
    b.extend_from_slice(&id.leader_id.node_id.to_be_bytes());
    b.extend_from_slice(bytes);
    b
}

fn entry_id(body: &[u8]) -> Option<LogId> {
    let u = |i: usize| -> Option<u64> {
        Some(u64::from_be_bytes(body.get(i..i + 8)?.try_into().ok()?))
    };
    Some(LogId::new(
        openraft::CommittedLeaderId::new(u(8)?, u(16)?),
        u(0)?,
    ))
}

/// What replaying the records gave, besides `State`: per segment, its highest entry index.
type SegmentTops = BTreeMap<u64, u64>;

fn replay(recs: Vec<wal::Recovered>, st: &mut State) -> Result<SegmentTops, StoreError> {
    let bad = |what: &str| StoreError::Corrupt(format!("raft log: {what}"));
    let mut tops = SegmentTops::new();
    for r in recs {
        match r.kind {
            R_ENTRY => {
                let id = entry_id(&r.body).ok_or_else(|| bad("short entry record"))?;
                if st.purged.is_some_and(|p| id.index <= p.index) {
                    continue;
                }
                if st.locs.is_empty() {
                    st.first = id.index;
                } else if id.index < st.next_index() {
                    st.truncate(id.index);
                } else if id.index > st.next_index() {
                    return Err(bad(&format!(
                        "entry {} follows entry {}",
                        id.index,
                        st.next_index() - 1
                    )));
                }
                st.locs.push_back(Some(Loc {
                    segment: r.loc.segment,
                    offset: r.loc.offset + ENTRY_PREFIX as u64,
                    len: r.loc.len - ENTRY_PREFIX as u32,
                }));
                st.last = Some(id);
                let top = tops.entry(r.loc.segment).or_insert(0);
                *top = (*top).max(id.index);
            }
            R_VOTE => st.vote = Some(codec::decode(&r.body)?),
            R_COMMITTED => st.committed = codec::decode(&r.body)?,
            R_TRUNCATE => {
                let from = u64::from_be_bytes(
                    r.body
                        .as_slice()
                        .try_into()
                        .map_err(|_| bad("truncate record"))?,
                );
                st.truncate(from);
                st.last = None; // recomputed below
            }
            R_PURGE => {
                let upto: LogId = codec::decode(&r.body)?;
                st.purge(upto.index);
                st.purged = Some(upto);
            }
            k => return Err(bad(&format!("unknown record kind {k}"))),
        }
    }
    Ok(tops)
}

impl LogStore {
    /// Opens (or creates) the log in directory `dir`.
    pub fn open(dir: &Path) -> Result<LogStore, StoreError> {
        LogStore::open_with_segment_bytes(dir, wal::SEGMENT_BYTES)
    }

    /// Like `open`, rolling segments over at `segment_bytes` (tests use small ones).
    pub fn open_with_segment_bytes(dir: &Path, segment_bytes: u64) -> Result<LogStore, StoreError> {
        let (wal, recs) = Wal::open(dir, super::LOG_FORMAT_VERSION, segment_bytes)?;
        let mut st = State::default();
        let tops = replay(recs, &mut st)?;
        // The last entry's id, if a truncation left the tail unknown: read it back.
        if st.last.map(|l| l.index + 1) != Some(st.next_index()) {
            st.last = None;
            if let Some(Some(loc)) = st.locs.back().copied() {
                let f = wal.reader(loc.segment).ok_or_else(|| {
                    StoreError::Corrupt(format!("raft log: segment {} missing", loc.segment))
                })?;
                let e: Entry = codec::decode(&wal::read_body(&f, loc)?)?;
                st.last = Some(e.log_id);
            }
        }
        for &seq in tops.keys().chain(std::iter::once(&wal.active_seq())) {
            if let Some(f) = wal.reader(seq) {
                st.readers.insert(seq, Arc::new(f));
            }
        }
        let writer = Writer {
            carry: Carry {
                vote: st.vote,
                committed: st.committed,
                purged: st.purged,
            },
            tops,
            wal,
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(st),
            stats: Mutex::new(LogStats::default()),
            held: Mutex::new(false),
            released: Condvar::new(),
        });
        let (tx, rx) = mpsc::channel();
        let s2 = shared.clone();
        std::thread::Builder::new()
            .name("metad-log-writer".into())
            .spawn(move || writer.run(s2, rx))?;
        Ok(LogStore { shared, tx })
    }

    /// Committed index as last saved by openraft.
    pub fn committed_index(&self) -> u64 {
        self.shared.state().committed.map(|c| c.index).unwrap_or(0)
    }

    /// Stops the writer before its next group until the returned hold is dropped: for tests
    /// that need a node whose own log flush is outstanding (a slow disk, made deterministic).
    #[doc(hidden)]
    pub fn hold_flushes(&self) -> FlushHold {
        *self.shared.held() = true;
        FlushHold {
            shared: self.shared.clone(),
        }
    }

    /// What the writer has done so far.
    pub fn stats(&self) -> LogStats {
        self.shared.stats.lock().map(|g| *g).unwrap_or_default()
    }

    /// Number of entries currently in the log (for metrics).
    pub fn entry_count(&self) -> u64 {
        self.shared.state().locs.len() as u64
    }

    fn send(&self, op: Op) -> Result<(), StoreError> {
        self.tx.send(op).map_err(|_| writer_stopped())
    }

    async fn sync_op(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), String>>) -> Op,
    ) -> Result<(), StorageError> {
        let (done, rx) = oneshot::channel();
        self.send(make(done)).map_err(to_storage_error)?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(to_storage_error(StoreError::Io(std::io::Error::other(e)))),
            Err(_) => Err(to_storage_error(writer_stopped())),
        }
    }

    fn read_range(&self, start: u64, end: Option<u64>) -> Result<Vec<Entry>, StoreError> {
        // Collect under the lock, read files and decode outside it.
        let mut parts: Vec<Part> = Vec::new();
        {
            let st = self.shared.state();
            // Entries below `first` are purged: the run starts at the first one kept.
            let mut i = start.max(st.first);
            let stop = end.unwrap_or(u64::MAX).min(st.next_index());
            while i < stop {
                if let Some((_, b)) = st.cache.get(&i) {
                    parts.push(Part::Cached(b.clone()));
                } else {
                    let loc = i
                        .checked_sub(st.first)
                        .and_then(|k| st.locs.get(k as usize).copied().flatten());
                    let Some(loc) = loc else { break };
                    let Some(f) = st.readers.get(&loc.segment) else {
                        break;
                    };
                    parts.push(Part::OnDisk(f.clone(), loc));
                }
                i += 1;
            }
        }
        parts
            .into_iter()
            .map(|p| {
                let bytes = match p {
                    Part::Cached(b) => return Ok(codec::decode::<Entry>(&b)?),
                    Part::OnDisk(f, loc) => wal::read_body(&f, loc)?,
                };
                Ok(codec::decode::<Entry>(&bytes)?)
            })
            .collect()
    }
}

fn writer_stopped() -> StoreError {
    StoreError::Io(std::io::Error::other("raft log writer thread stopped"))
}

/// An entry to return from `read_range`: its bytes in memory, or where they are on disk.
enum Part {
    Cached(Arc<Vec<u8>>),
    OnDisk(Arc<File>, Loc),
}

/// Vote, committed index and purge point as last written: restated at the head of every new
/// segment.
#[derive(Clone, Copy)]
struct Carry {
    vote: Option<Vote>,
    committed: Option<LogId>,
    purged: Option<LogId>,
}

struct Writer {
    wal: Wal,
    carry: Carry,
    tops: SegmentTops,
}

impl Writer {
    fn run(mut self, shared: Arc<Shared>, rx: mpsc::Receiver<Op>) {
        while let Ok(first) = rx.recv() {
            shared.wait_while_held();
            // Read before draining: every entry this committed index covers was queued before
            // openraft saved it, so it is in an earlier group or in this one.
            let committed = shared.state().committed;
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            if batch.len() < MAX_BATCH && committed != self.carry.committed {
                batch.push(Op::Committed(committed));
            }
            let mut locs = Vec::new();
            let mut result = self.write_batch(&batch, &mut locs);
            if result.is_ok() {
                result = self.wal.sync();
            }
            let result = result.map_err(|e| e.to_string());
            if let Ok(mut s) = shared.stats.lock() {
                s.transactions += 1;
                s.operations += batch.len() as u64;
                s.bytes = self.wal.bytes();
            }
            if result.is_ok() {
                self.publish(&shared, &batch, locs);
            } else if let Err(e) = &result {
                tracing::error!(error = %e, "raft log write failed");
            }
            for op in batch {
                match op {
                    Op::Append { done, .. } => {
                        done.log_io_completed(result.clone().map_err(std::io::Error::other))
                    }
                    Op::Vote { done, .. } | Op::Truncate { done, .. } | Op::Purge { done, .. } => {
                        let _ = done.send(result.clone());
                    }
                    Op::Committed(_) => {}
                }
            }
        }
        // Closed: the last committed index goes out with a final sync.
        let committed = shared.state().committed;
        if committed != self.carry.committed {
            let last = [Op::Committed(committed)];
            if let Err(e) = self
                .write_batch(&last, &mut Vec::new())
                .and_then(|()| self.wal.sync())
            {
                tracing::warn!(error = %e, "final write of the committed index failed");
            }
        }
    }

    /// Pushes the batch's records; `locs` gets each appended entry's location, in order.
    fn write_batch(&mut self, batch: &[Op], locs: &mut Vec<Loc>) -> Result<(), StoreError> {
        for op in batch {
            if self.wal.full() {
                self.roll()?;
            }
            match op {
                Op::Append { entries, .. } => {
                    for (id, bytes) in entries {
                        let loc = self.wal.push(R_ENTRY, &entry_body(id, bytes));
                        locs.push(Loc {
                            segment: loc.segment,
                            offset: loc.offset + ENTRY_PREFIX as u64,
                            len: loc.len - ENTRY_PREFIX as u32,
                        });
                        let top = self.tops.entry(loc.segment).or_insert(0);
                        *top = (*top).max(id.index);
                    }
                }
                Op::Vote { vote, .. } => {
                    self.wal.push(R_VOTE, &codec::encode(vote)?);
                    self.carry.vote = Some(*vote);
                }
                Op::Committed(c) => {
                    self.wal.push(R_COMMITTED, &codec::encode(c)?);
                    self.carry.committed = *c;
                }
                Op::Truncate { from, .. } => {
                    self.wal.push(R_TRUNCATE, &from.to_be_bytes());
                }
                Op::Purge { upto, .. } => {
                    self.wal.push(R_PURGE, &codec::encode(upto)?);
                    self.carry.purged = Some(*upto);
                }
            }
        }
        Ok(())
    }

    fn roll(&mut self) -> Result<(), StoreError> {
        self.wal.roll()?;
        if let Some(v) = &self.carry.vote {
            self.wal.push(R_VOTE, &codec::encode(v)?);
        }
        self.wal
            .push(R_COMMITTED, &codec::encode(&self.carry.committed)?);
        if let Some(p) = &self.carry.purged {
            self.wal.push(R_PURGE, &codec::encode(p)?);
        }
        Ok(())
    }

    /// Applies a written batch to the shared state: entry locations, truncations, purges
    /// (deleting the segments they empty), then trims the cache.
    fn publish(&mut self, shared: &Shared, batch: &[Op], locs: Vec<Loc>) {
        let mut locs = locs.into_iter();
        let mut purged_to = None;
        {
            let mut st = shared.state();
            let active = self.wal.active_seq();
            if let Some(f) = (!st.readers.contains_key(&active))
                .then(|| self.wal.reader(active))
                .flatten()
            {
                st.readers.insert(active, Arc::new(f));
            }
            for op in batch {
                match op {
                    Op::Append { entries, .. } => {
                        for (id, _) in entries {
                            let Some(loc) = locs.next() else { break };
                            // A later truncate may have dropped (and replaced) it already.
                            let current = st.cache.get(&id.index).is_some_and(|(cid, _)| cid == id);
                            if let Some(slot) = id
                                .index
                                .checked_sub(st.first)
                                .and_then(|k| st.locs.get_mut(k as usize))
                            {
                                if current {
                                    *slot = Some(loc);
                                }
                            }
                        }
                    }
                    Op::Purge { upto, .. } => purged_to = Some(upto.index),
                    _ => {}
                }
            }
            st.trim_cache();
        }
        if let Some(upto) = purged_to {
            // Segments whose every entry is purged, except the active one.
            let doomed: Vec<u64> = self
                .tops
                .iter()
                .filter(|&(&seq, &top)| top <= upto && seq < self.wal.active_seq())
                .map(|(&seq, _)| seq)
                .collect();
            if let Some(&below) = doomed.last() {
                match self.wal.remove_before(below + 1) {
                    Ok(_) => {
                        let mut st = shared.state();
                        for seq in &doomed {
                            self.tops.remove(seq);
                            st.readers.remove(seq);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "deleting purged log segments failed"),
                }
            }
        }
    }
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
        let st = self.shared.state();
        Ok(LogState {
            last_purged_log_id: st.purged,
            last_log_id: st.last.or(st.purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let v = *vote;
        self.sync_op(|done| Op::Vote { vote: v, done }).await?;
        self.shared.state().vote = Some(v);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.shared.state().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not queued and not awaited: openraft calls this on its core task each time the commit
        // index moves, and a record of its own woke the writer thread once more per write. The
        // writer adds the latest value to its next group (entries, votes..., which are fsynced
        // anyway) and writes it when the log closes. The committed index only shortens recovery
        // (re-apply up to it at start-up), so a lost or older value is safe.
        self.shared.state().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.shared.state().committed)
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
            encoded.push((e.log_id, Arc::new(bytes)));
        }
        {
            let mut st = self.shared.state();
            for (id, b) in &encoded {
                if st.locs.is_empty() && st.cache.is_empty() {
                    st.first = id.index;
                }
                st.truncate(id.index);
                st.locs.push_back(None);
                st.cache_bytes += b.len();
                st.cache.insert(id.index, (*id, b.clone()));
                st.last = Some(*id);
            }
        }
        self.send(Op::Append {
            entries: encoded,
            done: callback,
        })
        .map_err(to_storage_error)
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let from = log_id.index;
        {
            let mut st = self.shared.state();
            st.truncate(from);
        }
        self.sync_op(|done| Op::Truncate { from, done }).await?;
        // The new last entry (the one before `from`), or the purge point.
        let prev = match from.checked_sub(1) {
            Some(p) => self.read_range(p, Some(from)).map_err(to_storage_error)?,
            None => vec![],
        };
        let mut st = self.shared.state();
        st.last = prev.last().map(|e| e.log_id).or(st.purged);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        {
            let mut st = self.shared.state();
            st.purge(log_id.index);
            st.purged = Some(log_id);
            if st.last.is_none_or(|l| l.index <= log_id.index) {
                st.last = Some(log_id);
            }
        }
        self.sync_op(|done| Op::Purge { upto: log_id, done }).await
    }
}
