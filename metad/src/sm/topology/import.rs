//! ImportFiles: assimilation in place. Registers files that already exist on a silo — parent
//! directories and files created as needed, one valid instance per file — with a per-entry
//! outcome, so re-running the same batch changes nothing.

use metad_proto::v1::namespace_op::Op as NsOp;
use metad_proto::v1::{
    CreateFile, ImportFilesRequest, ImportFilesResponse, ImportOutcome, ImportResult, InodeKind,
    Instance, InstanceState, Mkdir, NamespaceOp,
};

use super::instances::usable_silo;
use super::{check_checksum, check_location, check_name, default_location, get_instance};
use super::{instance_event, put_instance};
use crate::sm::kv::{KvWrite, Overlay};
use crate::sm::model::{parse_path, resolve, ApplyCtx, ApplyError, OpResult, Refusal};
use crate::sm::namespace;

/// Files per ImportFiles request at most.
pub const IMPORT_MAX: usize = 1000;

pub(super) fn validate(r: &ImportFilesRequest) -> Result<(), Refusal> {
    check_name("silo", &r.silo)?;
    if r.files.is_empty() || r.files.len() > IMPORT_MAX {
        return Err(Refusal::invalid(format!(
            "files: must hold 1..={IMPORT_MAX} entries, got {}",
            r.files.len()
        )));
    }
    for f in &r.files {
        if parse_path("files.path", &f.path)?.is_empty() {
            return Err(Refusal::invalid("files.path: cannot import onto /"));
        }
        check_checksum(&f.checksum)?;
        check_location("files.location", &f.location)?;
    }
    Ok(())
}

pub(super) fn import_files(
    kv: &mut impl KvWrite,
    ctx: &mut ApplyCtx,
    r: &ImportFilesRequest,
) -> OpResult<ImportFilesResponse> {
    let silo = usable_silo(kv, &r.silo)?;
    let mut out = ImportFilesResponse::default();
    for f in &r.files {
        // Each entry on its own: a conflict undoes only that entry's writes.
        let mut one = ApplyCtx::new(ctx.revision, ctx.now_ms);
        let mut overlay = Overlay::new(kv);
        match import_one(&mut overlay, &mut one, &silo, f) {
            Ok((outcome, dirs)) => {
                overlay.commit()?;
                ctx.events.append(&mut one.events);
                ctx.changed |= one.changed;
                out.directories_created += dirs;
                match outcome {
                    ImportOutcome::Created => out.created += 1,
                    ImportOutcome::InstanceAdded => out.instances_added += 1,
                    _ => out.unchanged += 1,
                }
                out.results.push(ImportResult {
                    path: f.path.clone(),
                    outcome: outcome as i32,
                    detail: String::new(),
                });
            }
            Err(ApplyError::Refused(refusal)) => {
                out.conflicts += 1;
                out.results.push(ImportResult {
                    path: f.path.clone(),
                    outcome: ImportOutcome::Conflict as i32,
                    detail: refusal.message,
                });
            }
            Err(e @ ApplyError::Storage(_)) => return Err(e),
        }
    }
    Ok(out)
}

fn import_one(
    kv: &mut impl KvWrite,
    ctx: &mut ApplyCtx,
    silo: &metad_proto::v1::Silo,
    f: &metad_proto::v1::ImportEntry,
) -> OpResult<(ImportOutcome, u32)> {
    let location = if f.location.is_empty() {
        default_location(&f.path)
    } else {
        f.location.clone()
    };
    let mut dirs = 0;
    let inode = match resolve(kv, "files.path", &f.path)? {
        Some(i) => i,
        None => {
            let parent = f.path.rsplit_once('/').map_or("/", |(p, _)| p);
            if !parent.is_empty() {
                let mk = NamespaceOp {
                    op: Some(NsOp::Mkdir(Mkdir {
                        path: parent.to_string(),
                        parents: true,
                        ..Default::default()
                    })),
                };
                dirs = namespace::apply_in(kv, ctx, &mk, "files.")?.created;
            }
            let create = NamespaceOp {
                op: Some(NsOp::Create(CreateFile {
                    path: f.path.clone(),
                    size: Some(f.size),
                    mtime_ms: (f.mtime_ms != 0).then_some(f.mtime_ms),
                    ..Default::default()
                })),
            };
            let inode = namespace::apply_in(kv, ctx, &create, "files.")?
                .inode
                .ok_or_else(|| Refusal::precondition("files.path: create returned no inode"))?;
            add(kv, ctx, silo, &inode, f, location)?;
            return Ok((ImportOutcome::Created, dirs));
        }
    };
    if inode.kind != InodeKind::File as i32 {
        return Err(Refusal::precondition(format!("{} exists and is not a file", f.path)).into());
    }
    if let Some(existing) = get_instance(kv, inode.ino, &silo.name)? {
        if existing.location == location || existing.location.is_empty() {
            return Ok((ImportOutcome::Unchanged, 0));
        }
        return Err(Refusal::precondition(format!(
            "silo {} already has an instance of {} at {:?}",
            silo.name, f.path, existing.location
        ))
        .into());
    }
    if inode.size != f.size {
        return Err(Refusal::precondition(format!(
            "{} is known with size {}, the file on the silo has {}",
            f.path, inode.size, f.size
        ))
        .into());
    }
    let known = super::instances_of(kv, inode.ino)?
        .into_iter()
        .find(|i| i.content_gen == inode.content_gen && !i.checksum.is_empty());
    if let Some(k) = known {
        if !f.checksum.is_empty() && k.checksum != f.checksum {
            return Err(Refusal::precondition(format!(
                "{} is known with checksum {}, the file on the silo has {}",
                f.path, k.checksum, f.checksum
            ))
            .into());
        }
    }
    add(kv, ctx, silo, &inode, f, location)?;
    Ok((ImportOutcome::InstanceAdded, 0))
}

fn add(
    kv: &mut impl KvWrite,
    ctx: &mut ApplyCtx,
    silo: &metad_proto::v1::Silo,
    inode: &metad_proto::v1::Inode,
    f: &metad_proto::v1::ImportEntry,
    location: String,
) -> OpResult<()> {
    let inst = Instance {
        ino: inode.ino,
        silo: silo.name.clone(),
        state: InstanceState::Valid as i32,
        content_gen: inode.content_gen,
        bytes: f.size,
        checksum: f.checksum.clone(),
        create_revision: ctx.revision,
        mod_revision: ctx.revision,
        path: String::new(),
        location,
    };
    put_instance(kv, &inst)?;
    ctx.emit(instance_event(
        metad_proto::v1::EventKind::InstanceAdded,
        &f.path,
        &inst,
        silo.site.clone(),
        format!("valid gen={} (imported)", inode.content_gen),
    ));
    Ok(())
}
