//! Sites, silos and the location map (instances, Locate, RecordWrite, tombstones).
//! OWNER: topology/location work.

use metad_proto::v1::{TopologyOp, TopologyReply};

use super::kv::KvWrite;
use super::model::{refuse, ApplyCtx, OpResult, Refusal};

pub fn apply(
    _kv: &mut impl KvWrite,
    _ctx: &mut ApplyCtx,
    _op: &TopologyOp,
) -> OpResult<TopologyReply> {
    refuse(Refusal::new(
        metad_proto::ErrorCode::Unimplemented,
        "topology: not implemented yet",
    ))
}

/// Called by namespace code when a file is deleted: turn its instances into tombstones so
/// agents can reclaim the space (and emit INSTANCE_REMOVED events).
pub fn on_file_deleted(_kv: &mut impl KvWrite, _ctx: &mut ApplyCtx, _ino: u64) -> OpResult<()> {
    Ok(())
}
