//! Implements the state machine's `KvRead`/`KvWrite` seam over redb transactions: one redb
//! table `sm_<name>` (bytes -> bytes) per `sm::Table`.

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

pub struct RedbWrite<'a> {
    pub txn: &'a WriteTransaction,
}

impl KvRead for RedbWrite<'_> {
    fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        let table = self.txn.open_table(def(t)).map_err(kerr)?;
        let v = table.get(key).map_err(kerr)?;
        Ok(v.map(|v| v.value().to_vec()))
    }

    fn range(
        &self,
        t: Table,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<KvPairs, KvError> {
        let table = self.txn.open_table(def(t)).map_err(kerr)?;
        collect(&table, start, end, limit)
    }
}

impl KvWrite for RedbWrite<'_> {
    fn put(&mut self, t: Table, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        let mut table = self.txn.open_table(def(t)).map_err(kerr)?;
        table.insert(key, value).map_err(kerr)?;
        Ok(())
    }

    fn delete(&mut self, t: Table, key: &[u8]) -> Result<(), KvError> {
        let mut table = self.txn.open_table(def(t)).map_err(kerr)?;
        table.remove(key).map_err(kerr)?;
        Ok(())
    }
}

/// A consistent read view (one redb read transaction).
pub struct RedbRead {
    pub txn: ReadTransaction,
}

impl KvRead for RedbRead {
    fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        match self.txn.open_table(def(t)) {
            Ok(table) => Ok(table.get(key).map_err(kerr)?.map(|v| v.value().to_vec())),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(kerr(e)),
        }
    }

    fn range(
        &self,
        t: Table,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<KvPairs, KvError> {
        match self.txn.open_table(def(t)) {
            Ok(table) => collect(&table, start, end, limit),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(vec![]),
            Err(e) => Err(kerr(e)),
        }
    }
}
