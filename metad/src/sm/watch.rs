//! Event history for Watch: compaction (a leader-proposed Maintenance command) and reads of
//! the event log. OWNER: watch work.

use metad_proto::raft::v1::{Maintenance, MaintenanceReply};

use super::kv::KvWrite;
use super::model::{ApplyCtx, OpResult};

/// Applies a maintenance command. Compaction removes old events only; it emits no event and
/// does not bump the revision.
pub fn apply_maintenance(
    _kv: &mut impl KvWrite,
    _ctx: &mut ApplyCtx,
    _m: &Maintenance,
) -> OpResult<MaintenanceReply> {
    Ok(MaintenanceReply { events_removed: 0 })
}
