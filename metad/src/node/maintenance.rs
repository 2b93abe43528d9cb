//! Leader-side housekeeping proposed through the log (so every node does the same work at the
//! same index): compaction of the watch event history beyond `watch_history_revisions` or
//! `watch_history_events`, and
//! agent-lease refresh (on becoming leader) and expiry.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metad_proto::raft::v1::{command::Op, Command, Maintenance};
use tokio::sync::watch;

use super::NodeCore;
use crate::sm::model::oldest_event_revision;
use crate::sm::watch::COMPACT_BATCH;
use crate::sm::{KvRead, Table};

static SEQ: AtomicU64 = AtomicU64::new(1);

/// The revision below which history must go: beyond `watch_history_revisions` revisions, or
/// the oldest whole revisions while more than `watch_history_events` events are kept (at most
/// `COMPACT_BATCH` events' worth per check; the loop in `run` comes back for the rest).
/// 0 = nothing to compact.
fn compaction_target(
    kv: &crate::store::redb_kv::RedbRead,
    max_revisions: u64,
    max_events: u64,
) -> Result<u64, crate::sm::KvError> {
    let current = kv.revision()?;
    let oldest = oldest_event_revision(kv)?;
    if oldest == 0 {
        return Ok(0);
    }
    let mut below = current.saturating_sub(max_revisions);
    let excess = kv.row_count(Table::Events)?.saturating_sub(max_events);
    if excess > 0 {
        let n = usize::try_from(excess)
            .unwrap_or(usize::MAX)
            .min(COMPACT_BATCH);
        let rows = kv.range(Table::Events, &[], None, n)?;
        if let Some(rev) = rows.last().and_then(|(k, _)| k.get(..8)) {
            let rev = u64::from_be_bytes(rev.try_into().unwrap_or_default());
            below = below.max(rev.saturating_add(1));
        }
    }
    Ok(if below > oldest { below } else { 0 })
}

/// One compaction check; returns the number of events removed (0 if nothing to do or not
/// leader).
pub async fn compact_once(core: &NodeCore) -> u64 {
    if !core.is_leader() {
        return 0;
    }
    let (max_revisions, max_events) = (
        core.config.watch_history_revisions,
        core.config.watch_history_events,
    );
    let below = match core
        .sm
        .read(|kv| compaction_target(kv, max_revisions, max_events))
    {
        Ok(0) | Err(_) => return 0,
        Ok(b) => b,
    };
    let cmd = Command {
        client_id: format!("metad-leader-{}", core.id),
        seq: SEQ.fetch_add(1, Ordering::Relaxed),
        leader_time_ms: 0,
        op: Some(Op::Maintenance(Maintenance {
            compact_events_below: below,
            ..Default::default()
        })),
    };
    match core.propose_local(cmd).await {
        Ok((reply, _)) => match reply.result {
            Some(metad_proto::raft::v1::reply::Result::Maintenance(m)) => m.events_removed,
            _ => 0,
        },
        Err(e) => {
            tracing::debug!(error = %e, "event compaction not proposed");
            0
        }
    }
}

pub(super) async fn run(core: Arc<NodeCore>, mut stop: watch::Receiver<bool>) {
    let every = Duration::from_millis(core.config.compaction_interval_ms);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        // Keep going while there is a backlog (each entry removes a bounded batch).
        while compact_once(&core).await > 0 {}
    }
}

/// How often the leader looks for expired agent leases.
const LEASE_CHECK: Duration = Duration::from_millis(250);

fn maintenance_cmd(core: &NodeCore, m: Maintenance) -> Command {
    Command {
        client_id: format!("metad-leader-{}", core.id),
        seq: SEQ.fetch_add(1, Ordering::Relaxed),
        leader_time_ms: 0,
        op: Some(Op::Maintenance(m)),
    }
}

/// Agent-lease housekeeping on the leader. A node that becomes leader first extends every
/// lease to a full TTL from its own clock (so an election or a clock difference between
/// leaders never expires a live agent), then proposes expiry whenever a lease's deadline has
/// passed. The state machine decides which leases expire, with the leader time of the entry.
pub(super) async fn run_leases(core: Arc<NodeCore>, mut stop: watch::Receiver<bool>) {
    let mut refreshed_term = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(LEASE_CHECK) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if !core.is_leader() {
            refreshed_term = None;
            continue;
        }
        let term = core.raft.metrics().borrow().current_term;
        if refreshed_term != Some(term) {
            let cmd = maintenance_cmd(
                &core,
                Maintenance {
                    refresh_agent_leases: true,
                    ..Default::default()
                },
            );
            match core.propose_local(cmd).await {
                Ok(_) => refreshed_term = Some(term),
                Err(e) => tracing::debug!(error = %e, "lease refresh not proposed"),
            }
            continue;
        }
        let now = super::write::now_ms();
        let due = core
            .sm
            .read(|kv| Ok(crate::sm::moves::next_lease_deadline(kv)?.is_some_and(|d| d < now)));
        if !matches!(due, Ok(true)) {
            continue;
        }
        let cmd = maintenance_cmd(
            &core,
            Maintenance {
                expire_agent_leases: true,
                ..Default::default()
            },
        );
        match core.propose_local(cmd).await {
            Ok((reply, _)) => {
                if let Some(metad_proto::raft::v1::reply::Result::Maintenance(m)) = reply.result {
                    if m.leases_expired > 0 {
                        tracing::info!(
                            leases = m.leases_expired,
                            moves_returned = m.moves_returned,
                            "agent leases expired"
                        );
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "lease expiry not proposed"),
        }
    }
}
