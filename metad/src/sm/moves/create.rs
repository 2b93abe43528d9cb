//! CreateMove: expands the requested paths to files, skips the ones with nothing to do, and
//! writes one pending move per remaining file plus the batch record.

use std::collections::BTreeSet;

use metad_proto::v1::{
    CreateMoveRequest, CreateMoveResponse, Inode, InodeKind, InstanceState, Move, MoveBatch,
    MoveMode, MoveState, SiloState, SkippedFile,
};
use prost::Message;

use super::{active_of, limits, next_counter, save, META_NEXT_MOVE};
use crate::sm::kv::{KvError, KvRead, KvWrite, Table};
use crate::sm::model::{get_inode, join, list_dir, resolve_existing, ApplyCtx, OpResult, Refusal};
use crate::sm::topology::{self, instances_of};

/// Files named by `paths` (directories expanded when `recursive`), deduplicated, in request
/// order then tree order: (path, inode). Symlinks inside directories are skipped and reported.
fn expand(
    kv: &impl KvRead,
    r: &CreateMoveRequest,
    skipped: &mut Vec<SkippedFile>,
) -> OpResult<Vec<(String, Inode)>> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for p in &r.paths {
        let inode = resolve_existing(kv, "paths", p)?;
        match InodeKind::try_from(inode.kind) {
            Ok(InodeKind::File) => {
                if seen.insert(inode.ino) {
                    out.push((p.clone(), inode));
                }
            }
            Ok(InodeKind::Directory) if r.recursive => {
                // Depth-first walk with an explicit stack: (dir path, dir ino).
                let mut stack = vec![(p.clone(), inode.ino)];
                while let Some((dir, ino)) = stack.pop() {
                    let mut after: Option<String> = None;
                    loop {
                        let page = list_dir(kv, ino, after.as_deref(), 1024)?;
                        let Some((last, _)) = page.last() else { break };
                        after = Some(last.clone());
                        for (name, child) in page {
                            let path = join(&dir, &name);
                            let Some(ci) = get_inode(kv, child)? else {
                                continue;
                            };
                            match InodeKind::try_from(ci.kind) {
                                Ok(InodeKind::Directory) => stack.push((path, ci.ino)),
                                Ok(InodeKind::File) => {
                                    if seen.insert(ci.ino) {
                                        out.push((path, ci));
                                    }
                                }
                                _ => skipped.push(SkippedFile {
                                    path,
                                    reason: "symlink (not moved)".into(),
                                }),
                            }
                            if out.len() > limits::CREATE_FILES_MAX {
                                return Err(Refusal::precondition(format!(
                                    "paths: more than {} files to move in one request; move \
                                     sub-directories separately",
                                    limits::CREATE_FILES_MAX
                                ))
                                .into());
                            }
                        }
                    }
                }
            }
            Ok(InodeKind::Directory) => {
                return Err(Refusal::precondition(format!(
                    "paths: {p} is a directory (set recursive to move what is below it)"
                ))
                .into())
            }
            _ => {
                return Err(Refusal::precondition(format!(
                    "paths: {p} is a symlink; only files and directories can be moved"
                ))
                .into())
            }
        }
    }
    if out.len() > limits::CREATE_FILES_MAX {
        return Err(Refusal::precondition(format!(
            "paths: {} files to move, at most {} per request",
            out.len(),
            limits::CREATE_FILES_MAX
        ))
        .into());
    }
    Ok(out)
}

pub(super) fn create(
    kv: &mut impl KvWrite,
    ctx: &mut ApplyCtx,
    r: &CreateMoveRequest,
) -> OpResult<CreateMoveResponse> {
    let target = topology::get_silo(kv, &r.target_silo)?.ok_or_else(|| {
        Refusal::not_found(format!(
            "target_silo: silo {} does not exist",
            r.target_silo
        ))
    })?;
    match SiloState::try_from(target.state) {
        Ok(SiloState::Online) => {}
        Ok(SiloState::Draining) => {
            return Err(Refusal::precondition(format!(
                "target_silo: silo {} is draining; no data may move to it",
                target.name
            ))
            .into())
        }
        _ => {
            return Err(Refusal::precondition(format!(
                "target_silo: silo {} is offline",
                target.name
            ))
            .into())
        }
    }
    let mode = r.mode;
    let mut skipped = Vec::new();
    let files = expand(kv, r, &mut skipped)?;
    let mut ids = Vec::new();
    let mut batch: Option<u64> = None;
    for (path, inode) in files {
        let insts = instances_of(kv, inode.ino)?;
        let valid_here = insts.iter().any(|i| {
            i.silo == target.name
                && i.state == InstanceState::Valid as i32
                && i.content_gen == inode.content_gen
        });
        let others = insts
            .iter()
            .any(|i| i.silo != target.name && i.state != InstanceState::Releasing as i32);
        if active_of(kv, inode.ino)?
            .iter()
            .any(|m| m.target_silo == target.name)
        {
            skipped.push(SkippedFile {
                path,
                reason: "already moving to this silo".into(),
            });
            continue;
        }
        if valid_here && (mode == MoveMode::Copy as i32 || !others) {
            skipped.push(SkippedFile {
                path,
                reason: "already valid at the target".into(),
            });
            continue;
        }
        let mut has_source = false;
        for i in &insts {
            has_source |= readable_source(kv, i, &inode)?;
        }
        if !valid_here && !has_source {
            skipped.push(SkippedFile {
                path,
                reason: "no readable instance to copy from".into(),
            });
            continue;
        }
        let id = next_counter(kv, META_NEXT_MOVE)?;
        let batch_id = *batch.get_or_insert(id);
        let mut b = match super::query::load_batch(kv, batch_id)? {
            Some(b) => b,
            None => MoveBatch {
                batch: batch_id,
                first_id: batch_id,
                target_silo: target.name.clone(),
                mode,
                owner: r.owner.clone(),
                create_revision: ctx.revision,
                ..Default::default()
            },
        };
        b.count += 1;
        b.bytes_total += inode.size;
        // State counters are maintained by `save`; the batch record must exist first.
        kv.put(
            Table::MoveBatches,
            &batch_id.to_be_bytes(),
            &b.encode_to_vec(),
        )?;
        let mut mv = Move {
            id,
            batch: batch_id,
            ino: inode.ino,
            target_silo: target.name.clone(),
            mode,
            priority: r.priority,
            owner: r.owner.clone(),
            reason: r.reason.clone(),
            state: MoveState::Pending as i32,
            bytes_total: inode.size,
            max_attempts: if r.max_attempts == 0 {
                limits::ATTEMPTS_DEFAULT
            } else {
                r.max_attempts
            },
            created_ms: ctx.now_ms,
            create_revision: ctx.revision,
            ..Default::default()
        };
        save(kv, ctx, None, &mut mv, &path, String::new())?;
        if valid_here {
            // Mode move and the target already holds the current bytes: commit at once,
            // retiring the other copies.
            super::claim::finish_commit(kv, ctx, mv, &path)?;
        }
        ids.push(id);
    }
    Ok(CreateMoveResponse {
        header: None,
        batch: batch.unwrap_or(0),
        move_ids: ids,
        skipped,
    })
}

/// Whether `inst` can be copied from: valid at the file's generation on a silo not offline.
pub(super) fn readable_source(
    kv: &impl KvRead,
    inst: &metad_proto::v1::Instance,
    inode: &Inode,
) -> Result<bool, KvError> {
    if inst.state != InstanceState::Valid as i32 || inst.content_gen != inode.content_gen {
        return Ok(false);
    }
    Ok(topology::get_silo(kv, &inst.silo)?.is_some_and(|s| s.state != SiloState::Offline as i32))
}
