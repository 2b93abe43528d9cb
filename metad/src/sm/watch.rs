//! Event history for Watch: retention (a leader-proposed `Maintenance` command removes old
//! events, bounded per entry) and the matching rules. Compaction is deterministic: every node
//! removes the same rows at the same log index.

use metad_proto::raft::v1::{Maintenance, MaintenanceReply};
use metad_proto::v1::Event;

use super::kv::{KvError, KvRead, KvWrite, Table};
use super::model::{event_key, ApplyCtx, OpResult};

/// At most this many events are removed by one compaction entry.
pub const COMPACT_BATCH: usize = 10_000;
const META_COMPACTED_BELOW: &[u8] = b"events_compacted_below";

/// Events with revision below this are gone (0: nothing compacted yet).
pub fn compacted_below(kv: &impl KvRead) -> Result<u64, KvError> {
    Ok(kv
        .get(Table::Meta, META_COMPACTED_BELOW)?
        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0))
}

/// Removes up to `COMPACT_BATCH` events with revision < `m.compact_events_below`. Emits no
/// event and does not advance the revision.
pub fn apply_maintenance(
    kv: &mut impl KvWrite,
    ctx: &mut ApplyCtx,
    m: &Maintenance,
) -> OpResult<MaintenanceReply> {
    if m.refresh_agent_leases {
        crate::sm::moves::refresh_leases(kv, ctx)?;
    }
    if m.expire_agent_leases {
        let (leases, moves) = crate::sm::moves::expire_leases(kv, ctx)?;
        return Ok(MaintenanceReply {
            leases_expired: leases,
            moves_returned: moves,
            ..Default::default()
        });
    }
    let below = m.compact_events_below;
    if below == 0 {
        return Ok(MaintenanceReply::default());
    }
    let end = event_key(below, 0);
    let rows = kv.range(Table::Events, &[], Some(&end), COMPACT_BATCH)?;
    let removed = rows.len() as u64;
    let mut horizon = below;
    if rows.len() == COMPACT_BATCH {
        // Not finished: everything up to the last revision touched counts as gone, even if
        // part of it is still stored (the batch may end inside a revision; a watch must not
        // be served half a revision). The next entry removes the rest.
        if let Some((k, _)) = rows.last() {
            horizon = <[u8; 8]>::try_from(&k[..8])
                .map(|r| u64::from_be_bytes(r).saturating_add(1))
                .unwrap_or(below);
        }
    }
    for (k, _) in rows {
        kv.delete(Table::Events, &k)?;
    }
    let prev = compacted_below(kv)?;
    if horizon > prev {
        kv.put(Table::Meta, META_COMPACTED_BELOW, &horizon.to_be_bytes())?;
    }
    Ok(MaintenanceReply {
        events_removed: removed,
        ..Default::default()
    })
}

/// Whether `path` is `prefix` or below it, component-wise.
pub fn under(path: &str, prefix: &str) -> bool {
    if prefix.is_empty() || prefix == "/" {
        return true;
    }
    let p = prefix.trim_end_matches('/');
    path == p || (path.starts_with(p) && path.as_bytes().get(p.len()) == Some(&b'/'))
}

/// A watch filter.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub prefix: String,
    pub kinds: Vec<i32>,
    pub silo: String,
}

impl Filter {
    pub fn matches(&self, e: &Event) -> bool {
        if !self.kinds.is_empty() && !self.kinds.contains(&e.kind) {
            return false;
        }
        if !self.silo.is_empty() && e.silo != self.silo {
            return false;
        }
        if self.prefix.is_empty() || self.prefix == "/" {
            return true;
        }
        (!e.path.is_empty() && under(&e.path, &self.prefix))
            || (!e.old_path.is_empty() && under(&e.old_path, &self.prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sm::kv::MemKv;
    use crate::sm::model::{events_from, write_events};
    use metad_proto::v1::EventKind;

    fn ev(rev: u64, path: &str) -> Event {
        Event {
            revision: rev,
            kind: EventKind::Created as i32,
            path: path.into(),
            ..Default::default()
        }
    }

    #[test]
    fn prefix_matching_is_component_wise() {
        assert!(under("/a", "/a"));
        assert!(under("/a/b", "/a"));
        assert!(under("/a/b", "/a/"));
        assert!(!under("/ab", "/a"));
        assert!(under("/x", "/"));
        let f = Filter {
            prefix: "/a".into(),
            ..Default::default()
        };
        let mut rename = ev(1, "/z");
        rename.old_path = "/a/q".into();
        assert!(f.matches(&rename), "a rename out of the prefix is visible");
        assert!(!f.matches(&ev(1, "/b")));
    }

    #[test]
    fn compaction_removes_old_events_and_records_the_horizon() {
        let mut kv = MemKv::default();
        for rev in 1..=10 {
            write_events(&mut kv, &[ev(rev, "/a"), ev(rev, "/b")]).expect("write");
        }
        let mut ctx = ApplyCtx::new(11, 0);
        let r = apply_maintenance(
            &mut kv,
            &mut ctx,
            &Maintenance {
                compact_events_below: 6,
                ..Default::default()
            },
        )
        .map_err(|_| "apply")
        .expect("compact");
        assert_eq!(r.events_removed, 10);
        assert_eq!(compacted_below(&kv).expect("meta"), 6);
        let left = events_from(&kv, 0, 100).expect("read");
        assert_eq!(left.first().map(|e| e.revision), Some(6));
        assert_eq!(left.len(), 10);
        assert!(!ctx.changed, "compaction does not advance the revision");
    }

    #[test]
    fn a_batch_ending_inside_a_revision_marks_that_revision_gone() {
        let mut kv = MemKv::default();
        // Revision 1 holds more events than one compaction entry removes.
        let big: Vec<Event> = (0..COMPACT_BATCH + 5).map(|_| ev(1, "/a")).collect();
        write_events(&mut kv, &big).expect("write");
        write_events(&mut kv, &[ev(2, "/b")]).expect("write");
        let compact = |kv: &mut MemKv| {
            let mut ctx = ApplyCtx::new(3, 0);
            apply_maintenance(
                kv,
                &mut ctx,
                &Maintenance {
                    compact_events_below: 2,
                    ..Default::default()
                },
            )
            .map_err(|_| "apply")
            .expect("compact")
            .events_removed
        };
        assert_eq!(compact(&mut kv), COMPACT_BATCH as u64);
        // Five events of revision 1 remain, but a watch from revision 1 must be refused.
        assert_eq!(compacted_below(&kv).expect("meta"), 2);
        assert_eq!(compact(&mut kv), 5);
        assert_eq!(compacted_below(&kv).expect("meta"), 2);
        let left = events_from(&kv, 0, 100).expect("read");
        assert_eq!(left.iter().map(|e| e.revision).collect::<Vec<_>>(), vec![2]);
    }
}
