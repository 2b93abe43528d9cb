//! Implements the state machine's `KvRead`/`KvWrite` seam over redb transactions, and owns how
//! `sm.redb` lays the tables out (format 4):
//!
//! - the large tables (`OWN`: inodes, dentries, tags, tag index, instances, silo instances,
//!   events) and the tag-inherit counts each keep a redb table of their own, `sm_<name>`;
//! - every other `sm::Table` is a key range of ONE redb table, `sm`: a row's key is the table's
//!   id byte, then its key. Prefix 0 holds the Raft meta (last-applied, membership).
//!
//! Why: each redb table a write transaction touches costs a walk of redb's table tree to open
//! it and a root write-back at commit. A command touches ~9 tables, and those two costs were
//! a third of a one-command apply's instructions. The small tables every command touches
//! (meta, sessions, clients, ...) now cost one. The large ones stay apart because in one shared
//! B-tree their lookups walk more levels: putting everything in `sm` cost 4 % more instructions
//! per command in batches of 32 (docs/benchmarks.md, round 12). Format 3 had one redb table
//! per `sm::Table`; `store::migrate` converts it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};

use crate::sm::kv::{KvError, KvPairs, KvRead, KvWrite, Table};

pub(crate) type Def = TableDefinition<'static, &'static [u8], &'static [u8]>;

/// The redb table holding every state-machine table not in `OWN`, and the Raft meta.
pub(crate) const SHARED: Def = TableDefinition::new("sm");
/// Key prefix, in [`SHARED`], of the Raft meta rows (no `sm::Table` has id 0).
pub(crate) const RAFT_META_PREFIX: u8 = 0;

/// The tables with a redb table of their own (named `sm_<name>`, as in format 3). The events
/// table is one so that compaction reads its row count from the table header. `TagInherit` is
/// read for every ancestor on every effective-tags read and is usually empty: a lookup in an
/// empty table of its own returns at once, one in the shared table walks its B-tree (which
/// holds the sessions), and only inheritable tags write it.
const OWN: &[Table] = &[
    Table::Inodes,
    Table::Dentries,
    Table::Tags,
    Table::TagIndex,
    Table::Instances,
    Table::SiloInstances,
    Table::Events,
    Table::TagInherit,
];
const SLOTS: usize = OWN.len() + 1;

/// Where a set of rows lives: the redb table (its slot in a view: 0 = [`SHARED`], then one per
/// `OWN` table) and the key prefix in it (the table id in [`SHARED`], none in a table of its
/// own). The one place that maps tables to the layout.
#[derive(Clone, Copy)]
pub(crate) struct Place {
    slot: usize,
    pub(crate) prefix: Option<u8>,
}

impl Place {
    /// The Raft meta rows (last-applied, membership).
    const RAFT_META: Place = Place {
        slot: 0,
        prefix: Some(RAFT_META_PREFIX),
    };

    pub(crate) fn of(t: Table) -> Place {
        match OWN.iter().position(|&o| o == t) {
            Some(i) => Place {
                slot: i + 1,
                prefix: None,
            },
            None => Place {
                slot: 0,
                prefix: Some(t.id()),
            },
        }
    }

    pub(crate) fn def(self) -> Def {
        match self.slot {
            0 => SHARED,
            i => TableDefinition::new(OWN[i - 1].redb_name()),
        }
    }
}

/// Every redb table of the current layout.
pub(crate) fn redb_tables() -> impl Iterator<Item = Def> {
    std::iter::once(SHARED).chain(OWN.iter().map(|&t| Place::of(t).def()))
}

/// Writes into `buf` (cleared first) the stored key of `key` under `prefix`.
pub(crate) fn prefix_into(buf: &mut Vec<u8>, prefix: u8, key: &[u8]) {
    buf.clear();
    buf.push(prefix);
    buf.extend_from_slice(key);
}

fn prefixed(prefix: u8, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + key.len());
    prefix_into(&mut k, prefix, key);
    k
}

/// Calls `f` with `key` as stored at `place`, built in `scratch` when it needs a prefix (a
/// view's reused buffer: no allocation per get or put).
fn with_key<R>(
    scratch: &RefCell<Vec<u8>>,
    place: Place,
    key: &[u8],
    f: impl FnOnce(&[u8]) -> R,
) -> R {
    match place.prefix {
        Some(p) => {
            let mut buf = scratch.borrow_mut();
            prefix_into(&mut buf, p, key);
            f(&buf)
        }
        None => f(key),
    }
}

fn kerr(e: impl std::fmt::Display) -> KvError {
    KvError(e.to_string())
}

/// Up to `limit` rows at `place` with `start <= key < end`, keys as the table sees them.
fn collect<T: ReadableTable<&'static [u8], &'static [u8]>>(
    table: &T,
    place: Place,
    start: &[u8],
    end: Option<&[u8]>,
    limit: usize,
) -> Result<KvPairs, KvError> {
    let (start, end, strip) = match place.prefix {
        Some(p) => {
            let end = match end {
                Some(e) => prefixed(p, e),
                // Ids stop well below 0xFF (`table_ids_leave_room_for_the_layout`).
                None => vec![p + 1],
            };
            (prefixed(p, start), Some(end), 1)
        }
        None => (start.to_vec(), end.map(<[u8]>::to_vec), 0),
    };
    let iter = match &end {
        Some(e) => table.range::<&[u8]>(start.as_slice()..e.as_slice()),
        None => table.range::<&[u8]>(start.as_slice()..),
    }
    .map_err(kerr)?;
    let mut out = Vec::new();
    for item in iter.take(limit) {
        let (k, v) = item.map_err(kerr)?;
        out.push((k.value()[strip..].to_vec(), v.value().to_vec()));
    }
    Ok(out)
}

pub(crate) type BytesTable<'a> = redb::Table<'a, &'static [u8], &'static [u8]>;

/// The state machine's view of one redb write transaction. Each redb table is opened once and
/// kept open for the life of the view: opening one costs a lookup in the table tree and a
/// write-back on drop. Drop the view before committing the transaction, and do not open a
/// second view of the same transaction while one lives (redb allows one handle per table).
pub struct RedbWrite<'a> {
    txn: &'a WriteTransaction,
    tables: RefCell<[Option<BytesTable<'a>>; SLOTS]>,
    scratch: RefCell<Vec<u8>>,
    /// Directory entries read in this transaction (`None`: looked up, absent), kept in step
    /// with every put and delete of `Dentries` through this view. Every command of a batch
    /// resolves its path from the root, so under one directory tree each one repeated the
    /// same B-tree lookups for every ancestor.
    dentries: RefCell<HashMap<Vec<u8>, Option<Vec<u8>>>>,
}

/// Most directory entries one write view remembers (a batch is at most 256 commands).
const DENTRY_CACHE_MAX: usize = 4096;

impl<'a> RedbWrite<'a> {
    pub fn new(txn: &'a WriteTransaction) -> Self {
        RedbWrite {
            txn,
            tables: RefCell::default(),
            scratch: RefCell::default(),
            dentries: RefCell::default(),
        }
    }

    /// Keeps the directory-entry cache in step with a write of `key` in `t`.
    fn forget(&self, t: Table, key: &[u8]) {
        if t == Table::Dentries {
            self.dentries.borrow_mut().remove(key);
        }
    }

    /// Runs `f` on the redb table of `place` (opened on first use) and `key` as stored there.
    fn at<R>(
        &self,
        place: Place,
        key: &[u8],
        f: impl FnOnce(&mut BytesTable<'a>, &[u8]) -> Result<R, KvError>,
    ) -> Result<R, KvError> {
        let mut tables = self.tables.borrow_mut();
        let table = match &mut tables[place.slot] {
            Some(table) => table,
            empty => empty.insert(self.txn.open_table(place.def()).map_err(kerr)?),
        };
        with_key(&self.scratch, place, key, |k| f(table, k))
    }

    /// Sets a Raft meta row (last-applied, membership).
    pub(crate) fn put_raft_meta(&self, name: &str, value: &[u8]) -> Result<(), KvError> {
        self.at(Place::RAFT_META, name.as_bytes(), |table, k| {
            table.insert(k, value).map_err(kerr)?;
            Ok(())
        })
    }

    pub(crate) fn remove_raft_meta(&self, name: &str) -> Result<(), KvError> {
        self.at(Place::RAFT_META, name.as_bytes(), |table, k| {
            table.remove(k).map_err(kerr)?;
            Ok(())
        })
    }
}

impl KvRead for RedbWrite<'_> {
    fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        if t == Table::Dentries {
            if let Some(v) = self.dentries.borrow().get(key) {
                return Ok(v.clone());
            }
        }
        let v = self.at(Place::of(t), key, |table, k| {
            let v = table.get(k).map_err(kerr)?;
            Ok(v.map(|v| v.value().to_vec()))
        })?;
        if t == Table::Dentries {
            let mut cache = self.dentries.borrow_mut();
            if cache.len() < DENTRY_CACHE_MAX {
                cache.insert(key.to_vec(), v.clone());
            }
        }
        Ok(v)
    }

    fn range(
        &self,
        t: Table,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<KvPairs, KvError> {
        let place = Place::of(t);
        self.at(place, &[], |table, _| {
            collect(table, place, start, end, limit)
        })
    }
}

impl KvWrite for RedbWrite<'_> {
    fn put(&mut self, t: Table, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        self.forget(t, key);
        self.at(Place::of(t), key, |table, k| {
            table.insert(k, value).map_err(kerr)?;
            Ok(())
        })
    }

    fn delete(&mut self, t: Table, key: &[u8]) -> Result<(), KvError> {
        self.forget(t, key);
        self.at(Place::of(t), key, |table, k| {
            table.remove(k).map_err(kerr)?;
            Ok(())
        })
    }
}

type ReadTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

/// One redb read transaction with its tables, each opened on first use and kept: opening a
/// table walks the table tree, and a path lookup makes several gets. `Sync`, so every read
/// running while the applied state does not move can share one (`SmStore::read` keeps the
/// current one and drops it at each apply): under a read load, beginning a transaction and
/// opening its tables per read took ~6 % of the leader's CPU, the revision read another 2.6 %.
pub struct View {
    txn: ReadTransaction,
    /// Opened redb tables by slot; `Some(None)` = the table does not exist in this view.
    tables: [OnceLock<Option<ReadTable>>; SLOTS],
    /// The state machine's revision in this view, read on first use.
    revision: OnceLock<u64>,
}

impl View {
    pub fn new(txn: ReadTransaction) -> Self {
        View {
            txn,
            tables: Default::default(),
            revision: OnceLock::new(),
        }
    }

    /// The redb table of `place` (`None` if it does not exist in this view). An error is not
    /// kept: the next read tries again.
    fn table(&self, place: Place) -> Result<Option<&ReadTable>, KvError> {
        let slot = &self.tables[place.slot];
        if let Some(t) = slot.get() {
            return Ok(t.as_ref());
        }
        let opened = match self.txn.open_table(place.def()) {
            Ok(table) => Some(table),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(kerr(e)),
        };
        // A concurrent reader may have opened it first; either handle is the same table.
        Ok(slot.get_or_init(|| opened).as_ref())
    }
}

/// A consistent read view for one reader: a shared [`View`] and the reader's own key buffer.
pub struct RedbRead {
    view: Arc<View>,
    scratch: RefCell<Vec<u8>>,
}

impl RedbRead {
    /// A view of its own over `txn`.
    pub fn new(txn: ReadTransaction) -> Self {
        RedbRead::shared(Arc::new(View::new(txn)))
    }

    /// A reader of a view other readers may share.
    pub fn shared(view: Arc<View>) -> Self {
        RedbRead {
            view,
            scratch: RefCell::default(),
        }
    }

    /// The state machine's revision in this view (read once per view).
    pub fn revision(&self) -> Result<u64, KvError> {
        if let Some(&r) = self.view.revision.get() {
            return Ok(r);
        }
        let r = crate::sm::revision(self)?;
        Ok(*self.view.revision.get_or_init(|| r))
    }

    /// Rows in table `t`: read from the table header for a table of its own, counted for a
    /// shared one.
    pub fn row_count(&self, t: Table) -> Result<u64, KvError> {
        use redb::ReadableTableMetadata;
        let place = Place::of(t);
        self.at(place, &[], 0, |table, _| match place.prefix {
            None => table.len().map_err(kerr),
            Some(p) => {
                let mut n = 0;
                for item in table.range::<&[u8]>(&[p][..]..&[p + 1][..]).map_err(kerr)? {
                    item.map_err(kerr)?;
                    n += 1;
                }
                Ok(n)
            }
        })
    }

    /// A Raft meta row (last-applied, membership).
    pub(crate) fn raft_meta(&self, name: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.at(Place::RAFT_META, name.as_bytes(), None, |table, k| {
            Ok(table.get(k).map_err(kerr)?.map(|v| v.value().to_vec()))
        })
    }

    /// The read transaction under the view (snapshot dumps walk its tables).
    pub(crate) fn txn(&self) -> &ReadTransaction {
        &self.view.txn
    }

    /// Runs `f` on the redb table of `place` and `key` as stored there; `absent` if the table
    /// does not exist in this view.
    fn at<R>(
        &self,
        place: Place,
        key: &[u8],
        absent: R,
        f: impl FnOnce(&ReadTable, &[u8]) -> Result<R, KvError>,
    ) -> Result<R, KvError> {
        match self.view.table(place)? {
            Some(table) => with_key(&self.scratch, place, key, |k| f(table, k)),
            None => Ok(absent),
        }
    }
}

impl KvRead for RedbRead {
    fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        self.at(Place::of(t), key, None, |table, k| {
            Ok(table.get(k).map_err(kerr)?.map(|v| v.value().to_vec()))
        })
    }

    fn range(
        &self,
        t: Table,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<KvPairs, KvError> {
        let place = Place::of(t);
        self.at(place, &[], vec![], |table, _| {
            collect(table, place, start, end, limit)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableDatabase;

    #[test]
    fn table_ids_leave_room_for_the_layout() {
        for &t in Table::ALL {
            assert_ne!(
                t.id(),
                RAFT_META_PREFIX,
                "{t:?} collides with the Raft meta rows"
            );
            assert!(
                t.id() < 0xFF,
                "{t:?}: a shared table's range ends at id + 1"
            );
            let place = Place::of(t);
            assert_eq!(place.slot == 0, place.prefix.is_some(), "{t:?}");
        }
    }

    fn temp_db() -> (tempfile::TempDir, redb::Database) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = redb::Database::create(dir.path().join("t.redb")).expect("create");
        (dir, db)
    }

    /// Ranges stay inside their table: the shared table's neighbours (ids 7 and 9 around
    /// `Tags`) and the Raft meta rows never leak into a range, a get or a count.
    #[test]
    fn shared_tables_do_not_see_each_others_rows() {
        let (_dir, db) = temp_db();
        let w = db.begin_write().expect("begin");
        {
            let mut kv = RedbWrite::new(&w);
            kv.put(Table::Dentries, b"\xff\xff", b"d").expect("put");
            kv.put(Table::Tags, b"", b"first").expect("put");
            kv.put(Table::Tags, b"k", b"v").expect("put");
            kv.put(Table::TagIndex, b"", b"i").expect("put");
            kv.put(Table::Events, b"e", b"ev").expect("put");
            kv.put_raft_meta("last_applied", b"x").expect("meta");
            assert_eq!(kv.get(Table::Tags, b"k").expect("get"), Some(b"v".to_vec()));
            assert_eq!(kv.get(Table::Inodes, b"k").expect("get"), None);
        }
        w.commit().expect("commit");
        let r = RedbRead::new(db.begin_read().expect("read"));
        let all = r.range(Table::Tags, &[], None, 100).expect("range");
        assert_eq!(
            all,
            vec![(vec![], b"first".to_vec()), (b"k".to_vec(), b"v".to_vec())]
        );
        let bounded = r.range(Table::Tags, b"a", Some(b"z"), 100).expect("range");
        assert_eq!(bounded, vec![(b"k".to_vec(), b"v".to_vec())]);
        assert_eq!(r.row_count(Table::Tags).expect("count"), 2);
        assert_eq!(r.row_count(Table::Events).expect("count"), 1);
        assert_eq!(r.row_count(Table::Meta).expect("count"), 0);
        assert_eq!(
            r.raft_meta("last_applied").expect("meta"),
            Some(b"x".to_vec())
        );
        assert_eq!(r.raft_meta("membership").expect("meta"), None);
    }

    /// The write view's directory-entry cache never answers with a stale entry: a cached
    /// miss, a cached hit, each followed by a put or a delete of that entry.
    #[test]
    fn write_view_dentry_cache_follows_puts_and_deletes() {
        let (_dir, db) = temp_db();
        let w = db.begin_write().expect("begin");
        {
            let mut kv = RedbWrite::new(&w);
            let get = |kv: &RedbWrite| kv.get(Table::Dentries, b"d").expect("get");
            assert_eq!(get(&kv), None);
            kv.put(Table::Dentries, b"d", b"1").expect("put");
            assert_eq!(get(&kv), Some(b"1".to_vec()), "a cached miss, then a put");
            assert_eq!(get(&kv), Some(b"1".to_vec()));
            kv.put(Table::Dentries, b"d", b"2").expect("put");
            assert_eq!(get(&kv), Some(b"2".to_vec()), "a cached hit, then a put");
            kv.delete(Table::Dentries, b"d").expect("delete");
            assert_eq!(get(&kv), None, "a cached hit, then a delete");
        }
        w.commit().expect("commit");
    }
}
