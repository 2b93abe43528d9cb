//! Snapshot file format: a consistent dump of every state-machine table.
//!
//! ```text
//! "METADSNP" u32:format   then records:  u8 table_id | u32 key_len | key | u32 val_len | val
//! terminated by table_id 0xFF and a u64 record count.
//! ```
//! Table ids come from `sm::Table::id` (stable). Last-applied and membership are not inside:
//! they travel in openraft's `SnapshotMeta` and are written by the installer.

use std::io::{Read, Write};

use redb::{ReadTransaction, ReadableTable, WriteTransaction};

use super::redb_kv::{def, BytesTable};
use super::StoreError;
use crate::sm::Table;

const MAGIC: &[u8; 8] = b"METADSNP";
/// Follows `SM_FORMAT_VERSION`: a snapshot holds the state machine's rows as stored.
const SNAPSHOT_FORMAT: u32 = super::SM_FORMAT_VERSION as u32;
const END: u8 = 0xFF;

/// Writes every table visible in `rtx` to `out`. Returns the record count.
pub fn dump(rtx: &ReadTransaction, out: &mut impl Write) -> Result<u64, StoreError> {
    out.write_all(MAGIC)?;
    out.write_all(&SNAPSHOT_FORMAT.to_be_bytes())?;
    let mut n = 0u64;
    for &t in Table::ALL {
        let table = match rtx.open_table(def(t)) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        for item in table.iter()? {
            let (k, v) = item?;
            let (k, v) = (k.value(), v.value());
            out.write_all(&[t.id()])?;
            out.write_all(&(k.len() as u32).to_be_bytes())?;
            out.write_all(k)?;
            out.write_all(&(v.len() as u32).to_be_bytes())?;
            out.write_all(v)?;
            n += 1;
        }
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

/// Replaces every state-machine table in `wtx` with the snapshot's content. The caller commits;
/// until then the old state is untouched on disk, so a crash mid-install keeps it usable.
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
    for &t in Table::ALL {
        wtx.delete_table(def(t))?;
        wtx.open_table(def(t))?;
    }
    let mut n = 0u64;
    let mut key = Vec::new();
    let mut val = Vec::new();
    // `dump` writes each table's rows together, so the open table is kept until the id
    // changes: opening a table per row (a table-tree lookup and a root write-back on drop) was
    // most of an install's time.
    let mut open: Option<(u8, BytesTable<'_>)> = None;
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
        let table = match &mut open {
            Some((open_id, table)) if *open_id == id[0] => table,
            slot => {
                // Close the previous table before opening the next (redb allows one open
                // handle per table, and the drop writes its root back).
                *slot = None;
                &mut slot.insert((id[0], wtx.open_table(def(t))?)).1
            }
        };
        table.insert(key.as_slice(), val.as_slice())?;
        n += 1;
    }
}
