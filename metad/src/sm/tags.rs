//! Tag commands and queries: set/remove, own and effective (inherited) tags, FindByTags from
//! the secondary index, the tag-key catalogue. OWNER: tags work.

use metad_proto::v1::{TagOp, TagReply};

use super::kv::KvWrite;
use super::model::{refuse, ApplyCtx, OpResult, Refusal};

pub fn apply(_kv: &mut impl KvWrite, _ctx: &mut ApplyCtx, _op: &TagOp) -> OpResult<TagReply> {
    refuse(Refusal::new(
        metad_proto::ErrorCode::Unimplemented,
        "tags: not implemented yet",
    ))
}

/// Called by namespace code when an inode is deleted: drop its tags and index rows.
pub fn on_inode_deleted(_kv: &mut impl KvWrite, _ino: u64) -> OpResult<()> {
    Ok(())
}

/// The inode's own (not inherited) value for `key`, if set. Used by Txn compares.
pub fn own_tag_value(
    _kv: &impl super::kv::KvRead,
    _ino: u64,
    _key: &str,
) -> Result<Option<String>, super::kv::KvError> {
    Ok(None)
}
