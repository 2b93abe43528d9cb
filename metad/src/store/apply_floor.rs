//! Measurement-only stand-ins for apply, to find what a write costs *outside* the state
//! machine (docs/benchmarks.md, round 16). Reachable only in a build with the `mutations`
//! feature and `METAD_MUTATIONS=null-apply` or `one-row-apply`; in a normal build
//! `mutations::on` is a constant `false` and `SmStore::apply` never calls in here.
//!
//! Both answer every tag command (the benchmark's `kv-put` is a set-tag) as applied, with a
//! process-local revision, and never touch the real tables, so the node's state is garbage
//! afterwards. Entries holding anything else apply for real, so a benchmark's setup (silos,
//! files) still works. `one-row-apply` also writes one 256-byte row per command to one of
//! 10 000 keys of the tags table, in one redb transaction per apply call: the cheapest apply
//! that still persists something per write.
//! Must not be used for anything but measuring.

use std::sync::atomic::{AtomicU64, Ordering};

use metad_proto::raft::v1::{command::Op, reply, Reply, ReplyBatch};
use openraft::EntryPayload;
use redb::{Database, Durability};

use super::redb_kv::RedbWrite;
use super::StoreError;
use crate::sm::{KvWrite, Table};
use crate::types::{ApplyReply, Entry};

/// Which stand-in, if any, this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Floor {
    /// Answer without writing anything.
    Null,
    /// Answer after writing one row per command.
    OneRow,
}

pub(super) fn mode() -> Option<Floor> {
    if crate::mutations::on("null-apply") {
        Some(Floor::Null)
    } else if crate::mutations::on("one-row-apply") {
        Some(Floor::OneRow)
    } else {
        None
    }
}

/// Whether every entry is a tag op or blank. A membership change must apply for real: the
/// cluster's configuration lives in the state machine.
pub(super) fn only_tag_ops(entries: &[Entry]) -> bool {
    entries.iter().all(|e| match &e.payload {
        EntryPayload::Normal(c) => match &c.0.op {
            Some(Op::Batch(b)) => b.commands.iter().all(|x| matches!(x.op, Some(Op::Tags(_)))),
            Some(Op::Tags(_)) => true,
            _ => false,
        },
        EntryPayload::Blank => true,
        EntryPayload::Membership(_) => false,
    })
}

/// Answers `entries` as applied; returns the replies and the revision reached.
pub(super) fn apply(
    db: &Database,
    floor: Floor,
    entries: &[Entry],
) -> Result<(Vec<ApplyReply>, u64), StoreError> {
    static REVISION: AtomicU64 = AtomicU64::new(0);
    let first = REVISION.load(Ordering::Relaxed) + 1;
    let mut next = first;
    let mut ok = || {
        next += 1;
        Reply {
            revision: next - 1,
            result: Some(reply::Result::Tags(Default::default())),
        }
    };
    let replies: Vec<ApplyReply> = entries
        .iter()
        .map(|e| match &e.payload {
            EntryPayload::Normal(c) => match &c.0.op {
                Some(Op::Batch(b)) => {
                    let replies: Vec<Reply> = b.commands.iter().map(|_| ok()).collect();
                    ApplyReply(Reply {
                        revision: replies.last().map_or(0, |r| r.revision),
                        result: Some(reply::Result::Batch(ReplyBatch { replies })),
                    })
                }
                _ => ApplyReply(ok()),
            },
            _ => ApplyReply::default(),
        })
        .collect();
    if floor == Floor::OneRow {
        let mut w = db.begin_write()?;
        w.set_durability(Durability::None)
            .map_err(|e| StoreError::Redb(e.to_string()))?;
        {
            let mut kv = RedbWrite::new(&w);
            for r in first..next {
                let key = (r.wrapping_mul(0x9E37_79B9_7F4A_7C15) % 10_000).to_be_bytes();
                kv.put(Table::Tags, &key, &[r as u8; 256])?;
            }
        }
        w.commit()?;
    }
    REVISION.store(next - 1, Ordering::Relaxed);
    Ok((replies, next - 1))
}
