//! Converts an `sm.redb` written by an older metad to the current layout, in place, when the
//! store opens it. One durable write transaction does all of it (rows copied, old tables
//! deleted, version stamped), so a crash or kill part-way leaves the file as it was, and the
//! next start converts it again. Snapshots need no conversion: their records do not depend on
//! the layout (`store::snapshot`). Must not touch anything but the database it is given.

use std::path::Path;
use std::time::Instant;

use redb::{Database, ReadableTable, TableDefinition};

use super::redb_kv::{prefix_into, Def, Place, RAFT_META_PREFIX, SHARED};
use super::state_machine::begin_durable;
use super::{stamp, StoreError};
use crate::sm::Table;

/// Format 3 kept last-applied and membership in a table of their own.
const V3_RAFT: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_raft");
/// A progress line every this many rows (the small tables hold ~2 000 rows for 1 M files, but
/// sessions grow with the number of clients).
const PROGRESS_EVERY: u64 = 1_000_000;

/// The `open_db_upgrading` hook of `sm.redb`: converts the formats it knows (returns true).
pub(super) fn upgrade(db: &Database, path: &Path, found: u64) -> Result<bool, StoreError> {
    match found {
        3 => {
            from_v3(db, path)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Format 3 had one redb table per `sm::Table` (`sm_<name>`) and `sm_raft`; format 4 keeps
/// them as key ranges of the shared table, except the tables that keep a redb table of their
/// own (same name), which are left as they are. Returns the rows moved.
fn from_v3(db: &Database, path: &Path) -> Result<u64, StoreError> {
    let started = Instant::now();
    tracing::info!(
        file = %path.display(),
        "converting the state machine from format 3 to 4 (moving the small tables' rows)"
    );
    let w = begin_durable(db)?;
    let mut rows = 0u64;
    {
        let mut shared = w.open_table(SHARED)?;
        let mut key = Vec::new();
        let mut moved = |prefix: u8, k: &[u8], v: &[u8]| -> Result<(), StoreError> {
            prefix_into(&mut key, prefix, k);
            shared.insert(key.as_slice(), v)?;
            rows += 1;
            if rows.is_multiple_of(PROGRESS_EVERY) {
                tracing::info!(rows, seconds = started.elapsed().as_secs(), "converting");
            }
            Ok(())
        };
        for &t in Table::ALL {
            if Place::of(t).prefix.is_none() {
                continue;
            }
            let def: Def = TableDefinition::new(t.redb_name());
            match w.open_table(def) {
                Ok(old) => {
                    for row in old.iter()? {
                        let (k, v) = row?;
                        moved(t.id(), k.value(), v.value())?;
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => continue,
                Err(e) => return Err(e.into()),
            }
            w.delete_table(def)?;
        }
        match w.open_table(V3_RAFT) {
            Ok(old) => {
                for row in old.iter()? {
                    let (k, v) = row?;
                    moved(RAFT_META_PREFIX, k.value().as_bytes(), v.value())?;
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(e.into()),
        }
        w.delete_table(V3_RAFT)?;
    }
    stamp(&w, 4)?;
    w.commit()?;
    tracing::info!(
        file = %path.display(),
        rows,
        seconds = started.elapsed().as_secs_f64(),
        "converted the state machine to format 4"
    );
    Ok(rows)
}
