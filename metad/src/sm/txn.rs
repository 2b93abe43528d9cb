//! Transactions: compares then namespace/tag operations, all or nothing. OWNER: namespace work.

use metad_proto::v1::{TxnOp, TxnReply};

use super::kv::KvWrite;
use super::model::{refuse, ApplyCtx, OpResult, Refusal};

pub fn apply(_kv: &mut impl KvWrite, _ctx: &mut ApplyCtx, _op: &TxnOp) -> OpResult<TxnReply> {
    refuse(Refusal::new(
        metad_proto::ErrorCode::Unimplemented,
        "txn: not implemented yet",
    ))
}
