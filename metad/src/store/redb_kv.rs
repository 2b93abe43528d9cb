//! Implements the state machine's `KvRead`/`KvWrite` seam over redb transactions: one redb
//! table `sm_<name>` (bytes -> bytes) per `sm::Table`.

use std::cell::RefCell;
use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};

use crate::sm::kv::{KvError, KvPairs, KvRead, KvWrite, Table};

pub(crate) type Def = TableDefinition<'static, &'static [u8], &'static [u8]>;

pub(crate) fn def(t: Table) -> Def {
    TableDefinition::new(t.redb_name())
}

fn kerr(e: impl std::fmt::Display) -> KvError {
    KvError(e.to_string())
}

fn collect<T: ReadableTable<&'static [u8], &'static [u8]>>(
    table: &T,
    start: &[u8],
    end: Option<&[u8]>,
    limit: usize,
) -> Result<KvPairs, KvError> {
    let mut out = Vec::new();
    let iter = match end {
        Some(e) => table.range::<&[u8]>(start..e).map_err(kerr)?,
        None => table.range::<&[u8]>(start..).map_err(kerr)?,
    };
    for item in iter.take(limit) {
        let (k, v) = item.map_err(kerr)?;
        out.push((k.value().to_vec(), v.value().to_vec()));
    }
    Ok(out)
}

pub(crate) type BytesTable<'a> = redb::Table<'a, &'static [u8], &'static [u8]>;

/// The state machine's view of one redb write transaction. Each table is opened once and
/// kept open for the life of the view: opening a table in a write transaction costs a lookup
/// in the table tree and a write-back on drop, which dominated apply time when done per key.
/// Drop the view before committing the transaction.
pub struct RedbWrite<'a> {
    txn: &'a WriteTransaction,
    tables: RefCell<BTreeMap<Table, BytesTable<'a>>>,
}

impl<'a> RedbWrite<'a> {
    pub fn new(txn: &'a WriteTransaction) -> Self {
        RedbWrite {
            txn,
            tables: RefCell::default(),
        }
    }

    fn with_table<R>(
        &self,
        t: Table,
        f: impl FnOnce(&mut BytesTable<'a>) -> Result<R, KvError>,
    ) -> Result<R, KvError> {
        let mut tables = self.tables.borrow_mut();
        let table = match tables.entry(t) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => v.insert(self.txn.open_table(def(t)).map_err(kerr)?),
        };
        f(table)
    }
}

impl KvRead for RedbWrite<'_> {
    fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        self.with_table(t, |table| {
            let v = table.get(key).map_err(kerr)?;
            Ok(v.map(|v| v.value().to_vec()))
        })
    }

    fn range(
        &self,
        t: Table,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<KvPairs, KvError> {
        self.with_table(t, |table| collect(table, start, end, limit))
    }
}

impl KvWrite for RedbWrite<'_> {
    fn put(&mut self, t: Table, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        self.with_table(t, |table| {
            table.insert(key, value).map_err(kerr)?;
            Ok(())
        })
    }

    fn delete(&mut self, t: Table, key: &[u8]) -> Result<(), KvError> {
        self.with_table(t, |table| {
            table.remove(key).map_err(kerr)?;
            Ok(())
        })
    }
}

type ReadTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

/// A consistent read view (one redb read transaction). Like [`RedbWrite`], each table is
/// opened once per view and kept: a path lookup makes several gets, and opening the table
/// (a walk of the table tree) for each one took ~10 % of a node's CPU under a read load.
pub struct RedbRead {
    txn: ReadTransaction,
    /// Opened tables by `Table`; `Some(None)` = the table does not exist in this view.
    tables: RefCell<BTreeMap<Table, Option<ReadTable>>>,
}

impl RedbRead {
    pub fn new(txn: ReadTransaction) -> Self {
        RedbRead {
            txn,
            tables: RefCell::default(),
        }
    }

    /// Rows in table `t` (redb keeps the count in the table header: no scan).
    pub fn row_count(&self, t: Table) -> Result<u64, KvError> {
        use redb::ReadableTableMetadata;
        self.with_table(t, 0, |table| table.len().map_err(kerr))
    }

    fn with_table<R>(
        &self,
        t: Table,
        absent: R,
        f: impl FnOnce(&ReadTable) -> Result<R, KvError>,
    ) -> Result<R, KvError> {
        let mut tables = self.tables.borrow_mut();
        let table = match tables.entry(t) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => v.insert(match self.txn.open_table(def(t)) {
                Ok(table) => Some(table),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(kerr(e)),
            }),
        };
        match table {
            Some(table) => f(table),
            None => Ok(absent),
        }
    }
}

impl KvRead for RedbRead {
    fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        self.with_table(t, None, |table| {
            Ok(table.get(key).map_err(kerr)?.map(|v| v.value().to_vec()))
        })
    }

    fn range(
        &self,
        t: Table,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<KvPairs, KvError> {
        self.with_table(t, vec![], |table| collect(table, start, end, limit))
    }
}
