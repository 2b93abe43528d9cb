//! Instances: AddInstance, RecordWrite, the per-silo listing, and tombstones of deleted files
//! (created by `on_file_deleted`, listed per silo, removed by ConfirmReclaimed).

use metad_proto::v1::{
    AddInstanceRequest, AddInstanceResponse, ConfirmReclaimedRequest, ConfirmReclaimedResponse,
    Event, EventKind, Inode, InodeKind, Instance, InstanceState, ListInstancesRequest,
    ListTombstonesRequest, RecordWriteRequest, RecordWriteResponse, SiloState, Tombstone,
};
use prost::Message;

use super::{
    decode, decode_cursor, encode_cursor, existing_silo, get_instance, get_tombstone,
    ino_of_silo_key, instance_event, page_limit, put_instance, silo_key, silo_range, site_of,
    state_name,
};
use crate::sm::kv::{KvError, KvRead, KvWrite, Table};
use crate::sm::model::{
    get_inode, path_of, put_inode, resolve_existing, ApplyCtx, OpResult, Refusal, ROOT_INO,
};

/// The file at `path`, or NOT_FOUND / FAILED_PRECONDITION (not a file) naming the field.
fn existing_file(kv: &impl KvRead, path: &str) -> OpResult<Inode> {
    let inode = resolve_existing(kv, "path", path)?;
    if inode.kind != InodeKind::File as i32 {
        return Err(Refusal::precondition(format!("path: {path} is not a file")).into());
    }
    Ok(inode)
}

/// The silo named `name`, which must exist and not be offline.
pub(super) fn usable_silo(kv: &impl KvRead, name: &str) -> OpResult<metad_proto::v1::Silo> {
    let silo = existing_silo(kv, "silo", name)?;
    if silo.state == SiloState::Offline as i32 {
        return Err(Refusal::precondition(format!("silo: silo {name} is offline")).into());
    }
    Ok(silo)
}

pub(super) fn add_instance(
    kv: &mut impl KvWrite,
    ctx: &mut ApplyCtx,
    r: &AddInstanceRequest,
) -> OpResult<AddInstanceResponse> {
    let inode = existing_file(kv, &r.path)?;
    let silo = usable_silo(kv, &r.silo)?;
    if let Some(existing) = get_instance(kv, inode.ino, &silo.name)? {
        return Err(Refusal::exists(format!(
            "silo: {} already has an instance of {} ({} at generation {})",
            silo.name,
            r.path,
            state_name(existing.state),
            existing.content_gen
        ))
        .into());
    }
    let content_gen = r.content_gen.unwrap_or(inode.content_gen);
    if content_gen > inode.content_gen {
        return Err(Refusal::invalid(format!(
            "content_gen: {content_gen} is newer than the file's current generation {}",
            inode.content_gen
        ))
        .into());
    }
    let state = if content_gen == inode.content_gen {
        InstanceState::Valid
    } else {
        InstanceState::Stale
    };
    let inst = Instance {
        ino: inode.ino,
        silo: silo.name.clone(),
        state: state as i32,
        content_gen,
        bytes: r.bytes.unwrap_or(inode.size),
        checksum: r.checksum.clone(),
        create_revision: ctx.revision,
        mod_revision: ctx.revision,
        path: String::new(),
        location: if r.location.is_empty() {
            super::default_location(&r.path)
        } else {
            r.location.clone()
        },
    };
    put_instance(kv, &inst)?;
    ctx.emit(instance_event(
        EventKind::InstanceAdded,
        &r.path,
        &inst,
        silo.site.clone(),
        format!("{} gen={}", state_name(inst.state), content_gen),
    ));
    Ok(AddInstanceResponse {
        header: None,
        instance: Some(Instance {
            path: r.path.clone(),
            ..inst
        }),
    })
}

pub(super) fn record_write(
    kv: &mut impl KvWrite,
    ctx: &mut ApplyCtx,
    r: &RecordWriteRequest,
) -> OpResult<RecordWriteResponse> {
    let mut inode = existing_file(kv, &r.path)?;
    let silo = usable_silo(kv, &r.silo)?;
    let prev_here = get_instance(kv, inode.ino, &silo.name)?;
    if prev_here
        .as_ref()
        .is_some_and(|p| p.state == InstanceState::Releasing as i32)
    {
        return Err(Refusal::precondition(format!(
            "silo: the copy of {} on {} is being released (the file moved away); write to a \
             valid instance (see Locate)",
            r.path, silo.name
        ))
        .into());
    }
    let new_gen = inode
        .content_gen
        .checked_add(1)
        .ok_or_else(|| Refusal::precondition("path: content generation overflow"))?;
    inode.content_gen = new_gen;
    inode.size = r.size;
    inode.mtime_ms = r.mtime_ms.unwrap_or(ctx.now_ms);
    inode.ctime_ms = ctx.now_ms;
    inode.mod_revision = ctx.revision;
    put_inode(kv, &inode)?;
    ctx.emit(Event {
        kind: EventKind::ContentWritten as i32,
        path: r.path.clone(),
        ino: inode.ino,
        inode_kind: InodeKind::File as i32,
        silo: silo.name.clone(),
        site: silo.site.clone(),
        detail: format!("gen={new_gen} size={}", r.size),
        inode: Some(inode.clone()),
        ..Default::default()
    });

    let mut staled = Vec::new();
    for mut other in instances_of(kv, inode.ino)? {
        if other.silo == silo.name {
            continue;
        }
        let live = other.state == InstanceState::Valid as i32
            || other.state == InstanceState::Filling as i32;
        if !live {
            continue;
        }
        let was = state_name(other.state);
        other.state = InstanceState::Stale as i32;
        other.mod_revision = ctx.revision;
        put_instance(kv, &other)?;
        let site = site_of(kv, &other.silo)?;
        ctx.emit(instance_event(
            EventKind::InstanceChanged,
            &r.path,
            &other,
            site,
            format!(
                "stale (was {was} gen={}; file now gen={new_gen})",
                other.content_gen
            ),
        ));
        staled.push(other.silo);
    }

    // Claimed copies of the old generation are now worthless: back to pending.
    crate::sm::moves::on_content_written(kv, ctx, inode.ino)?;
    let (inst, kind) = match prev_here {
        Some(prev) => (
            Instance {
                state: InstanceState::Valid as i32,
                content_gen: new_gen,
                bytes: r.size,
                checksum: r.checksum.clone(),
                mod_revision: ctx.revision,
                location: match (r.location.is_empty(), prev.location.is_empty()) {
                    (false, _) => r.location.clone(),
                    (true, false) => prev.location.clone(),
                    (true, true) => super::default_location(&r.path),
                },
                ..prev
            },
            EventKind::InstanceChanged,
        ),
        None => (
            Instance {
                ino: inode.ino,
                silo: silo.name.clone(),
                state: InstanceState::Valid as i32,
                content_gen: new_gen,
                bytes: r.size,
                checksum: r.checksum.clone(),
                create_revision: ctx.revision,
                mod_revision: ctx.revision,
                path: String::new(),
                location: if r.location.is_empty() {
                    super::default_location(&r.path)
                } else {
                    r.location.clone()
                },
            },
            EventKind::InstanceAdded,
        ),
    };
    put_instance(kv, &inst)?;
    ctx.emit(instance_event(
        kind,
        &r.path,
        &inst,
        silo.site.clone(),
        format!("valid gen={new_gen} (written here)"),
    ));
    Ok(RecordWriteResponse {
        header: None,
        inode: Some(inode),
        instance: Some(Instance {
            path: r.path.clone(),
            ..inst
        }),
        staled,
    })
}

/// Every instance of file `ino` (any state), by silo name, without `path`. Namespace code can
/// call it before `on_file_deleted` to include the instances in an unlink reply.
pub fn instances_of(kv: &impl KvRead, ino: u64) -> Result<Vec<Instance>, KvError> {
    let start = ino.to_be_bytes();
    let rows = match ino.checked_add(1) {
        Some(n) => kv.range(Table::Instances, &start, Some(&n.to_be_bytes()), usize::MAX)?,
        None => kv.range(Table::Instances, &start, None, usize::MAX)?,
    };
    rows.into_iter()
        .map(|(_, v)| decode::<Instance>("instance", &v))
        .collect()
}

/// The path of `ino` if its parent chain is intact, else "" (never fails on a broken chain).
pub fn best_path(kv: &impl KvRead, ino: u64) -> Result<String, KvError> {
    let mut cur = ino;
    for _ in 0..=crate::sm::limits::PATH_MAX {
        if cur == ROOT_INO {
            return path_of(kv, ino);
        }
        match get_inode(kv, cur)? {
            Some(i) if i.parent != 0 => cur = i.parent,
            _ => return Ok(String::new()),
        }
    }
    Ok(String::new())
}

pub(super) fn file_deleted(kv: &mut impl KvWrite, ctx: &mut ApplyCtx, ino: u64) -> OpResult<()> {
    crate::sm::moves::on_file_deleted(kv, ctx, ino)?;
    let insts = instances_of(kv, ino)?;
    if insts.is_empty() {
        return Ok(());
    }
    let path = best_path(kv, ino)?;
    for inst in insts {
        super::delete_instance(kv, ino, &inst.silo)?;
        let tomb = Tombstone {
            ino,
            silo: inst.silo.clone(),
            path: path.clone(),
            bytes: inst.bytes,
            checksum: inst.checksum.clone(),
            content_gen: inst.content_gen,
            state: inst.state,
            deleted_revision: ctx.revision,
            location: inst.location.clone(),
        };
        kv.put(
            Table::Tombstones,
            &silo_key(&inst.silo, ino),
            &tomb.encode_to_vec(),
        )?;
        let site = site_of(kv, &inst.silo)?;
        ctx.emit(instance_event(
            EventKind::InstanceRemoved,
            &path,
            &inst,
            site,
            format!(
                "file deleted (was {}); tombstone to reclaim",
                state_name(inst.state)
            ),
        ));
    }
    Ok(())
}

pub(super) fn confirm_reclaimed(
    kv: &mut impl KvWrite,
    ctx: &mut ApplyCtx,
    r: &ConfirmReclaimedRequest,
) -> OpResult<ConfirmReclaimedResponse> {
    let Some(tomb) = get_tombstone(kv, &r.silo, r.ino)? else {
        return Err(Refusal::not_found(format!(
            "ino: silo {} has no tombstone for inode {}",
            r.silo, r.ino
        ))
        .into());
    };
    kv.delete(Table::Tombstones, &silo_key(&r.silo, r.ino))?;
    let site = site_of(kv, &r.silo)?;
    ctx.emit(Event {
        kind: EventKind::InstanceRemoved as i32,
        path: tomb.path.clone(),
        ino: tomb.ino,
        inode_kind: InodeKind::File as i32,
        silo: tomb.silo.clone(),
        site,
        detail: "tombstone reclaimed".into(),
        ..Default::default()
    });
    Ok(ConfirmReclaimedResponse {
        header: None,
        tombstone: Some(tomb),
    })
}

/// One page of rows and the cursor of the next ("" = no more).
pub type Page<T> = (Vec<T>, String);

/// One page of a per-silo table after `cursor`: (rows, next cursor or "").
fn silo_page(
    kv: &impl KvRead,
    table: Table,
    silo: &str,
    cursor: &str,
    limit: u32,
) -> OpResult<Page<(u64, Vec<u8>)>> {
    super::check_name("silo", silo)?;
    let limit = page_limit(limit)?;
    let (start, end) = silo_range(silo);
    let from = match decode_cursor(cursor)? {
        Some(after) => match after.checked_add(1) {
            Some(n) => silo_key(silo, n),
            None => return Ok((vec![], String::new())),
        },
        None => start,
    };
    let mut rows = kv.range(table, &from, Some(&end), limit.saturating_add(1))?;
    let more = rows.len() > limit;
    rows.truncate(limit);
    let out: Vec<(u64, Vec<u8>)> = rows
        .into_iter()
        .map(|(k, v)| Ok((ino_of_silo_key(&k)?, v)))
        .collect::<Result<_, KvError>>()?;
    let next = match (more, out.last()) {
        (true, Some((ino, _))) => encode_cursor(*ino),
        _ => String::new(),
    };
    Ok((out, next))
}

/// One page of the instances on `r.silo` (NOT_FOUND if the silo does not exist), with paths.
pub fn list_instances(kv: &impl KvRead, r: &ListInstancesRequest) -> OpResult<Page<Instance>> {
    existing_silo(kv, "silo", &r.silo)?;
    let (rows, next) = silo_page(kv, Table::SiloInstances, &r.silo, &r.cursor, r.limit)?;
    let mut out = Vec::with_capacity(rows.len());
    for (ino, _) in rows {
        let Some(mut inst) = get_instance(kv, ino, &r.silo)? else {
            return Err(
                KvError(format!("silo index names inode {ino} without an instance")).into(),
            );
        };
        inst.path = best_path(kv, ino)?;
        out.push(inst);
    }
    Ok((out, next))
}

/// One page of the tombstones on `r.silo` (NOT_FOUND if the silo does not exist).
pub fn list_tombstones(kv: &impl KvRead, r: &ListTombstonesRequest) -> OpResult<Page<Tombstone>> {
    existing_silo(kv, "silo", &r.silo)?;
    let (rows, next) = silo_page(kv, Table::Tombstones, &r.silo, &r.cursor, r.limit)?;
    let out = rows
        .into_iter()
        .map(|(_, v)| decode::<Tombstone>("tombstone", &v))
        .collect::<Result<_, _>>()?;
    Ok((out, next))
}
