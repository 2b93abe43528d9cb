//! The storage seam of the state machine: named tables of ordered byte keys. The store layer
//! implements it over redb; `MemKv` implements it over BTreeMaps for pure unit and property
//! tests. Table ids are part of the snapshot format: never renumber, only add.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// Scalar state: revision, leader time.
    Meta,
    /// (client_id, seq) -> cached reply.
    Sessions,
    /// client_id -> per-client session summary.
    Clients,
    /// (last_seen_ms, client_id) -> () : expiry order.
    ClientExpiry,
    /// INTERNAL test register: key -> (value, mod_revision).
    Register,
}

impl Table {
    pub const ALL: [Table; 5] = [
        Table::Meta,
        Table::Sessions,
        Table::Clients,
        Table::ClientExpiry,
        Table::Register,
    ];

    /// Stable id used in snapshots.
    pub fn id(self) -> u8 {
        match self {
            Table::Meta => 1,
            Table::Sessions => 2,
            Table::Clients => 3,
            Table::ClientExpiry => 4,
            Table::Register => 5,
        }
    }

    pub fn from_id(id: u8) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.id() == id)
    }

    /// Stable name (the redb table name is derived from it).
    pub fn name(self) -> &'static str {
        match self {
            Table::Meta => "meta",
            Table::Sessions => "sessions",
            Table::Clients => "clients",
            Table::ClientExpiry => "client_expiry",
            Table::Register => "register",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("state-machine storage error: {0}")]
pub struct KvError(pub String);

pub type KvPairs = Vec<(Vec<u8>, Vec<u8>)>;

pub trait KvRead {
    fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>, KvError>;
    /// Up to `limit` pairs with `start <= key < end` (`end` None = unbounded), in key order.
    fn range(
        &self,
        t: Table,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<KvPairs, KvError>;
}

pub trait KvWrite: KvRead {
    fn put(&mut self, t: Table, key: &[u8], value: &[u8]) -> Result<(), KvError>;
    fn delete(&mut self, t: Table, key: &[u8]) -> Result<(), KvError>;
}

/// In-memory implementation for tests and reference models.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MemKv {
    pub tables: BTreeMap<Table, BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl KvRead for MemKv {
    fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.tables.get(&t).and_then(|m| m.get(key).cloned()))
    }

    fn range(
        &self,
        t: Table,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<KvPairs, KvError> {
        let Some(m) = self.tables.get(&t) else {
            return Ok(vec![]);
        };
        Ok(m.range(start.to_vec()..)
            .take_while(|(k, _)| end.is_none_or(|e| k.as_slice() < e))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

impl KvWrite for MemKv {
    fn put(&mut self, t: Table, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        self.tables
            .entry(t)
            .or_default()
            .insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn delete(&mut self, t: Table, key: &[u8]) -> Result<(), KvError> {
        if let Some(m) = self.tables.get_mut(&t) {
            m.remove(key);
        }
        Ok(())
    }
}
