//! The storage seam of the state machine: named tables of ordered byte keys. The store layer
//! implements it over redb; `MemKv` implements it over BTreeMaps for pure unit and property
//! tests. Table ids are part of the snapshot format: never renumber, only add.

use std::collections::BTreeMap;

/// Declares the state-machine tables once: the enum, `ALL`, stable ids and names.
macro_rules! tables {
    ($($(#[$doc:meta])* $v:ident = $id:literal, $name:literal;)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Table { $($(#[$doc])* $v,)* }

        impl Table {
            pub const ALL: &'static [Table] = &[$(Table::$v),*];

            /// Stable id used in snapshots. Never renumber, only add.
            pub fn id(self) -> u8 {
                match self { $(Table::$v => $id,)* }
            }

            /// Stable name; the redb table is `sm_<name>`.
            pub fn name(self) -> &'static str {
                match self { $(Table::$v => $name,)* }
            }

            /// Name of the backing redb table.
            pub fn redb_name(self) -> &'static str {
                match self { $(Table::$v => concat!("sm_", $name),)* }
            }
        }
    };
}

tables! {
    /// Scalar state: revision, leader time, next inode number.
    Meta = 1, "meta";
    /// (client_id, 0, slot u16 BE) -> (seq u64 BE, cached reply): the reply ring (`session`).
    Sessions = 2, "sessions";
    /// client_id -> last-seen minute u64 BE.
    Clients = 3, "clients";
    /// (last-seen minute u64 BE, client_id) -> () : expiry order.
    ClientExpiry = 4, "client_expiry";
    /// INTERNAL test register: key -> (value, mod_revision).
    Register = 5, "register";
    /// ino (u64 BE) -> metad.v1.Inode.
    Inodes = 6, "inodes";
    /// (parent ino u64 BE, name) -> child ino (u64 BE).
    Dentries = 7, "dentries";
    /// (ino u64 BE, key) -> flags u8 (bit 0 = inherit) + value: an inode's own tags.
    Tags = 8, "tags";
    /// (key, 0, value, 0, ino u64 BE) -> flags u8: the tag index (keys and values hold no NUL).
    TagIndex = 9, "tag_index";
    /// key -> count u64 BE: the tag-key catalogue (inodes setting the key themselves).
    TagKeys = 10, "tag_keys";
    /// site name (1..=64 of [A-Za-z0-9._-]) -> metad.v1.Site. (topology work)
    Sites = 11, "sites";
    /// silo name (1..=64 of [A-Za-z0-9._-]) -> metad.v1.Silo. (topology work)
    Silos = 12, "silos";
    /// (ino u64 BE, silo name) -> metad.v1.Instance (path not stored). (location work)
    Instances = 13, "instances";
    /// (silo name, 0x00, ino u64 BE) -> empty: the instances of one silo, in inode order.
    /// (location work)
    SiloInstances = 14, "silo_instances";
    /// (silo name, 0x00, ino u64 BE) -> metad.v1.Tombstone: a deleted file's instance until
    /// the silo's agent confirms it reclaimed the bytes. (location work)
    Tombstones = 15, "tombstones";
    /// (revision u64 BE, index u32 BE) -> metad.v1.Event.
    Events = 16, "events";
    /// Spare ids 17..=29 for the tags/topology work; ids 30+ for later issues.
    /// ino u64 BE -> count u64 BE of the inode's inheritable tags (absent = none).
    TagInherit = 17, "tag_inherit";
    /// move id u64 BE -> metad.v1.Move. (moves work, ids 18..=24)
    Moves = 18, "moves";
    /// (target silo, 0x00, inverted priority u32 BE, move id u64 BE) -> empty: pending moves.
    MovesPending = 19, "moves_pending";
    /// (ino u64 BE, move id u64 BE) -> empty: the active moves of a file.
    MovesByIno = 20, "moves_by_ino";
    /// (lease u64 BE, move id u64 BE) -> empty: the claims of an agent lease.
    MovesByLease = 21, "moves_by_lease";
    /// lease u64 BE -> metad.v1.Agent.
    Agents = 22, "agents";
    /// (silo, 0x00, ino u64 BE) -> move id u64 BE: instances waiting to be released.
    SiloReleasing = 23, "silo_releasing";
    /// batch u64 BE -> metad.v1.MoveBatch.
    MoveBatches = 24, "move_batches";
}

impl Table {
    pub fn from_id(id: u8) -> Option<Table> {
        Table::ALL.iter().copied().find(|t| t.id() == id)
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

/// A write buffer over another store: reads see the buffered writes; `commit` applies them,
/// dropping it discards them. Every command runs inside one, so a refusal half-way through a
/// multi-object change leaves no partial state. One map per table, so a lookup borrows the key
/// instead of building a `(Table, Vec<u8>)` (every get of every command goes through here).
pub struct Overlay<'a, K: KvWrite> {
    base: &'a mut K,
    writes: BTreeMap<Table, BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
}

impl<'a, K: KvWrite> Overlay<'a, K> {
    pub fn new(base: &'a mut K) -> Self {
        Overlay {
            base,
            writes: BTreeMap::new(),
        }
    }

    pub fn commit(self) -> Result<(), KvError> {
        for (t, rows) in self.writes {
            for (k, v) in rows {
                match v {
                    Some(v) => self.base.put(t, &k, &v)?,
                    None => self.base.delete(t, &k)?,
                }
            }
        }
        Ok(())
    }
}

impl<K: KvWrite> KvRead for Overlay<'_, K> {
    fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        match self.writes.get(&t).and_then(|rows| rows.get(key)) {
            Some(v) => Ok(v.clone()),
            None => self.base.get(t, key),
        }
    }

    fn range(
        &self,
        t: Table,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<KvPairs, KvError> {
        let Some(rows) = self.writes.get(&t) else {
            return self.base.range(t, start, end, limit);
        };
        let local: Vec<(&Vec<u8>, &Option<Vec<u8>>)> = rows
            .range::<[u8], _>((std::ops::Bound::Included(start), std::ops::Bound::Unbounded))
            .take_while(|(k, _)| end.is_none_or(|e| k.as_slice() < e))
            .collect();
        // Deleted keys can hide base rows: over-fetch by the number of local writes.
        let base = self
            .base
            .range(t, start, end, limit.saturating_add(local.len()))?;
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = base.into_iter().collect();
        for (k, v) in local {
            match v {
                Some(v) => {
                    merged.insert(k.clone(), v.clone());
                }
                None => {
                    merged.remove(k);
                }
            }
        }
        Ok(merged.into_iter().take(limit).collect())
    }
}

impl<K: KvWrite> KvWrite for Overlay<'_, K> {
    fn put(&mut self, t: Table, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        self.writes
            .entry(t)
            .or_default()
            .insert(key.to_vec(), Some(value.to_vec()));
        Ok(())
    }

    fn delete(&mut self, t: Table, key: &[u8]) -> Result<(), KvError> {
        self.writes.entry(t).or_default().insert(key.to_vec(), None);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_reads_its_writes_and_discards_on_drop() {
        let mut base = MemKv::default();
        base.put(Table::Meta, b"a", b"1").expect("put");
        base.put(Table::Meta, b"b", b"2").expect("put");
        {
            let mut o = Overlay::new(&mut base);
            o.delete(Table::Meta, b"a").expect("del");
            o.put(Table::Meta, b"c", b"3").expect("put");
            let r = o.range(Table::Meta, b"", None, 10).expect("range");
            assert_eq!(
                r,
                vec![
                    (b"b".to_vec(), b"2".to_vec()),
                    (b"c".to_vec(), b"3".to_vec())
                ]
            );
            assert_eq!(o.range(Table::Meta, b"", None, 1).expect("range").len(), 1);
        }
        assert_eq!(
            base.get(Table::Meta, b"a").expect("get"),
            Some(b"1".to_vec())
        );
        let mut o = Overlay::new(&mut base);
        o.put(Table::Meta, b"z", b"9").expect("put");
        o.commit().expect("commit");
        assert_eq!(
            base.get(Table::Meta, b"z").expect("get"),
            Some(b"9".to_vec())
        );
    }
}
