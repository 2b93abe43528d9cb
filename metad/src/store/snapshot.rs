//! Snapshot file format: a consistent dump of every state-machine table.
//!
//! ```text
//! "METADSNP" u32:format   then records:  u8 table_id | u32 key_len | key | u32 val_len | val
//! terminated by table_id 0xFF and a u64 record count.
//! ```
//! Table ids come from `sm::Table::id` (stable). Last-applied and membership are not inside:
//! they travel in openraft's `SnapshotMeta` and are written by the installer. The records do
//! not depend on how `sm.redb` lays the tables out (`store::redb_kv`).

use std::io::{Read, Write};

use redb::{ReadTransaction, ReadableTable, WriteTransaction};

use super::redb_kv::{redb_tables, Place, RedbWrite, SHARED};
use super::StoreError;
use crate::sm::{KvWrite, Table};

const MAGIC: &[u8; 8] = b"METADSNP";
/// A snapshot is a list of (table id, key, value) records, whatever the layout of `sm.redb`:
/// format 4 of `sm.redb` (one shared redb table) still writes and reads snapshot format 3, so
/// peers on either side of that change send each other snapshots. Bump when the rows change.
const SNAPSHOT_FORMAT: u32 = 3;
const END: u8 = 0xFF;

/// Writes the rows of one table as records of table `id`, each key without its first `strip`
/// bytes (the shared table's id prefix). Returns the row count.
fn dump_rows(
    out: &mut impl Write,
    id: u8,
    rows: redb::Range<'_, &'static [u8], &'static [u8]>,
    strip: usize,
) -> Result<u64, StoreError> {
    let mut n = 0;
    for row in rows {
        let (k, v) = row?;
        let (k, v) = (&k.value()[strip..], v.value());
        out.write_all(&[id])?;
        out.write_all(&(k.len() as u32).to_be_bytes())?;
        out.write_all(k)?;
        out.write_all(&(v.len() as u32).to_be_bytes())?;
        out.write_all(v)?;
        n += 1;
    }
    Ok(n)
}

/// Writes every table visible in `rtx` to `out`, table by table in id order (the Raft meta
/// rows are not state-machine rows and stay out). Returns the record count.
pub fn dump(rtx: &ReadTransaction, out: &mut impl Write) -> Result<u64, StoreError> {
    out.write_all(MAGIC)?;
    out.write_all(&SNAPSHOT_FORMAT.to_be_bytes())?;
    let mut n = 0u64;
    let shared = match rtx.open_table(SHARED) {
        Ok(table) => Some(table),
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(e) => return Err(e.into()),
    };
    for &t in Table::ALL {
        let place = Place::of(t);
        n += match (place.prefix, &shared) {
            (Some(p), Some(table)) => {
                let rows = table.range::<&[u8]>(&[p][..]..&[p + 1][..])?;
                dump_rows(out, t.id(), rows, 1)?
            }
            (Some(_), None) => 0,
            (None, _) => match rtx.open_table(place.def()) {
                Ok(table) => dump_rows(out, t.id(), table.iter()?, 0)?,
                Err(redb::TableError::TableDoesNotExist(_)) => 0,
                Err(e) => return Err(e.into()),
            },
        };
    }
    out.write_all(&[END])?;
    out.write_all(&n.to_be_bytes())?;
    Ok(n)
}

fn read_u32(r: &mut impl Read) -> Result<u32, StoreError> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

/// Replaces every state-machine table in `wtx` with the snapshot's content, and drops the Raft
/// meta rows (the installer writes the snapshot's). The caller commits; until then the old
/// state is untouched on disk, so a crash mid-install keeps it usable.
pub fn load(input: &mut impl Read, wtx: &WriteTransaction) -> Result<u64, StoreError> {
    let mut magic = [0u8; 8];
    input.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(StoreError::Corrupt("snapshot: bad magic".into()));
    }
    let format = read_u32(input)?;
    if format != SNAPSHOT_FORMAT {
        return Err(StoreError::Corrupt(format!(
            "snapshot format {format}, this metad reads {SNAPSHOT_FORMAT}"
        )));
    }
    for def in redb_tables() {
        wtx.delete_table(def)?;
        wtx.open_table(def)?;
    }
    let mut n = 0u64;
    let mut key = Vec::new();
    let mut val = Vec::new();
    // One view for the whole load: it keeps each redb table open (opening one per row, a
    // table-tree lookup and a root write-back on drop, was most of an install's time).
    let mut kv = RedbWrite::new(wtx);
    loop {
        let mut id = [0u8; 1];
        input.read_exact(&mut id)?;
        if id[0] == END {
            let mut c = [0u8; 8];
            input.read_exact(&mut c)?;
            let expected = u64::from_be_bytes(c);
            if expected != n {
                return Err(StoreError::Corrupt(format!(
                    "snapshot: {n} records read, trailer says {expected}"
                )));
            }
            return Ok(n);
        }
        let t = Table::from_id(id[0])
            .ok_or_else(|| StoreError::Corrupt(format!("snapshot: unknown table id {}", id[0])))?;
        key.resize(read_u32(input)? as usize, 0);
        input.read_exact(&mut key)?;
        val.resize(read_u32(input)? as usize, 0);
        input.read_exact(&mut val)?;
        kv.put(t, &key, &val)?;
        n += 1;
    }
}
