//! Namespace commands (mkdir, create, symlink, rename, unlink, rmdir, setattr) and queries
//! (stat, lookup, readdir). OWNER: namespace work.

use metad_proto::v1::{NamespaceOp, NamespaceReply};

use super::kv::KvWrite;
use super::model::{refuse, ApplyCtx, OpResult, Refusal};

pub fn apply(
    _kv: &mut impl KvWrite,
    _ctx: &mut ApplyCtx,
    _op: &NamespaceOp,
) -> OpResult<NamespaceReply> {
    refuse(Refusal::new(
        metad_proto::ErrorCode::Unimplemented,
        "namespace: not implemented yet",
    ))
}
