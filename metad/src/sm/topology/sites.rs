//! Site and silo commands (register, update, remove) and their listings.

use metad_proto::v1::{Event, Instance};
use metad_proto::v1::{
    EventKind, InstanceState, ListSilosRequest, RegisterSiloRequest, RegisterSiloResponse,
    RegisterSiteRequest, RegisterSiteResponse, RemoveSiloRequest, RemoveSiloResponse, Silo,
    SiloState, Site, UpdateSiloRequest, UpdateSiloResponse,
};
use prost::Message;

use super::{
    decode, existing_silo, get_instance, get_silo, get_site, ino_of_silo_key, put_silo, silo_range,
    state_name,
};
use crate::sm::kv::{KvError, KvRead, KvWrite, Table};
use crate::sm::model::{get_inode, path_of, ApplyCtx, OpResult, Refusal};

/// Rows read per step when scanning one silo's instances.
const SCAN_CHUNK: usize = 1024;

fn silo_event(silo: &Silo, detail: String) -> Event {
    Event {
        kind: EventKind::SiloChanged as i32,
        silo: silo.name.clone(),
        site: silo.site.clone(),
        detail,
        ..Default::default()
    }
}

pub(super) fn register_site(
    kv: &mut impl KvWrite,
    ctx: &mut ApplyCtx,
    r: &RegisterSiteRequest,
) -> OpResult<RegisterSiteResponse> {
    if get_site(kv, &r.name)?.is_some() {
        return Err(Refusal::exists(format!("name: site {} already exists", r.name)).into());
    }
    let site = Site {
        name: r.name.clone(),
        description: r.description.clone(),
        region: r.region.clone(),
        labels: r.labels.clone(),
        create_revision: ctx.revision,
        mod_revision: ctx.revision,
    };
    kv.put(Table::Sites, site.name.as_bytes(), &site.encode_to_vec())?;
    ctx.emit(Event {
        kind: EventKind::SiteChanged as i32,
        site: site.name.clone(),
        detail: "registered".into(),
        ..Default::default()
    });
    Ok(RegisterSiteResponse {
        header: None,
        site: Some(site),
    })
}

pub(super) fn register_silo(
    kv: &mut impl KvWrite,
    ctx: &mut ApplyCtx,
    r: &RegisterSiloRequest,
) -> OpResult<RegisterSiloResponse> {
    if get_site(kv, &r.site)?.is_none() {
        return Err(Refusal::not_found(format!("site: site {} does not exist", r.site)).into());
    }
    if let Some(existing) = get_silo(kv, &r.name)? {
        return Err(Refusal::exists(format!(
            "name: silo {} already exists (at site {})",
            r.name, existing.site
        ))
        .into());
    }
    let silo = Silo {
        name: r.name.clone(),
        site: r.site.clone(),
        kind: r.kind,
        tier: r.tier,
        capacity_bytes: r.capacity_bytes,
        used_bytes: 0,
        cost_per_gib_month: r.cost_per_gib_month,
        labels: r.labels.clone(),
        root: r.root.clone(),
        state: SiloState::Online as i32,
        create_revision: ctx.revision,
        mod_revision: ctx.revision,
    };
    put_silo(kv, &silo)?;
    ctx.emit(silo_event(&silo, "registered".into()));
    Ok(RegisterSiloResponse {
        header: None,
        silo: Some(silo),
    })
}

pub(super) fn update_silo(
    kv: &mut impl KvWrite,
    ctx: &mut ApplyCtx,
    r: &UpdateSiloRequest,
) -> OpResult<UpdateSiloResponse> {
    let before = existing_silo(kv, "name", &r.name)?;
    let mut silo = before.clone();
    let mut changes = Vec::new();
    if r.state != SiloState::Unspecified as i32 && r.state != silo.state {
        silo.state = r.state;
        changes.push(format!("state={}", silo_state_name(r.state)));
    }
    if let Some(u) = r.used_bytes {
        if u != silo.used_bytes {
            silo.used_bytes = u;
            changes.push(format!("used_bytes={u}"));
        }
    }
    if let Some(c) = r.capacity_bytes {
        if c != silo.capacity_bytes {
            silo.capacity_bytes = c;
            changes.push(format!("capacity_bytes={c}"));
        }
    }
    for (k, v) in &r.set_labels {
        silo.labels.insert(k.clone(), v.clone());
    }
    for k in &r.remove_labels {
        silo.labels.remove(k);
    }
    if silo.labels.len() > super::limits::LABELS_MAX {
        return Err(Refusal::invalid(format!(
            "set_labels: the silo would have {} labels, the limit is {}",
            silo.labels.len(),
            super::limits::LABELS_MAX
        ))
        .into());
    }
    if silo.labels != before.labels {
        changes.push("labels".into());
    }
    if !changes.is_empty() {
        silo.mod_revision = ctx.revision;
        put_silo(kv, &silo)?;
        ctx.emit(silo_event(&silo, format!("updated: {}", changes.join(" "))));
    }
    Ok(UpdateSiloResponse {
        header: None,
        silo: Some(silo),
    })
}

/// Is `inst` a readable copy (valid at the file's current generation)?
fn is_current_valid(inst: &Instance, content_gen: u64) -> bool {
    inst.state == InstanceState::Valid as i32 && inst.content_gen == content_gen
}

/// Is the instance of `ino` on `silo` the file's only valid copy at its current generation?
fn is_sole_valid_copy(kv: &impl KvRead, ino: u64, silo: &str) -> Result<bool, KvError> {
    let Some(inode) = get_inode(kv, ino)? else {
        return Ok(false);
    };
    let Some(mine) = get_instance(kv, ino, silo)? else {
        return Ok(false);
    };
    if !is_current_valid(&mine, inode.content_gen) {
        return Ok(false);
    }
    let others = super::instances::instances_of(kv, ino)?;
    Ok(!others
        .iter()
        .any(|i| i.silo != silo && is_current_valid(i, inode.content_gen)))
}

pub(super) fn remove_silo(
    kv: &mut impl KvWrite,
    ctx: &mut ApplyCtx,
    r: &RemoveSiloRequest,
) -> OpResult<RemoveSiloResponse> {
    let silo = existing_silo(kv, "name", &r.name)?;
    if let Some(why) = crate::sm::moves::silo_busy(kv, &silo.name)? {
        return Err(Refusal::precondition(format!(
            "name: {why}; cancel or finish those moves first"
        ))
        .into());
    }
    let (start, end) = silo_range(&silo.name);
    // First pass: refuse if any instance is a file's only readable copy.
    let mut inos = Vec::new();
    let mut from = start.clone();
    loop {
        let rows = kv.range(Table::SiloInstances, &from, Some(&end), SCAN_CHUNK)?;
        let Some((last, _)) = rows.last() else { break };
        from = last.clone();
        from.push(0);
        for (k, _) in &rows {
            let ino = ino_of_silo_key(k)?;
            if get_instance(kv, ino, &silo.name)?
                .is_some_and(|i| i.state == metad_proto::v1::InstanceState::Filling as i32)
            {
                return Err(Refusal::precondition(format!(
                    "name: silo {} is receiving a copy of inode {ino} (a move is in flight)",
                    silo.name
                ))
                .into());
            }
            if is_sole_valid_copy(kv, ino, &silo.name)? {
                let path = path_of(kv, ino).unwrap_or_else(|_| format!("inode {ino}"));
                return Err(Refusal::precondition(format!(
                    "name: silo {} holds the only valid instance of {path} (ino {ino}); copy \
                     or move it elsewhere before removing the silo",
                    silo.name
                ))
                .into());
            }
            inos.push(ino);
        }
    }
    // Second pass: drop its instances and tombstones.
    for ino in &inos {
        if let Some(inst) = get_instance(kv, *ino, &silo.name)? {
            super::delete_instance(kv, *ino, &silo.name)?;
            let path = path_of(kv, *ino).unwrap_or_default();
            ctx.emit(super::instance_event(
                EventKind::InstanceRemoved,
                &path,
                &inst,
                silo.site.clone(),
                format!("silo removed (was {})", state_name(inst.state)),
            ));
        }
    }
    let mut tombstones = 0u64;
    let mut from = start;
    loop {
        let rows = kv.range(Table::Tombstones, &from, Some(&end), SCAN_CHUNK)?;
        let Some((last, _)) = rows.last() else { break };
        from = last.clone();
        from.push(0);
        for (k, _) in rows {
            kv.delete(Table::Tombstones, &k)?;
            tombstones += 1;
        }
    }
    kv.delete(Table::Silos, silo.name.as_bytes())?;
    ctx.emit(silo_event(&silo, "removed".into()));
    Ok(RemoveSiloResponse {
        header: None,
        instances_removed: inos.len() as u64,
        tombstones_removed: tombstones,
    })
}

fn silo_state_name(state: i32) -> &'static str {
    match SiloState::try_from(state) {
        Ok(SiloState::Online) => "online",
        Ok(SiloState::Draining) => "draining",
        Ok(SiloState::Offline) => "offline",
        _ => "unspecified",
    }
}

/// Every site, by name.
pub fn list_sites(kv: &impl KvRead) -> Result<Vec<Site>, KvError> {
    kv.range(Table::Sites, &[], None, usize::MAX)?
        .into_iter()
        .map(|(_, v)| decode("site", &v))
        .collect()
}

/// Every silo (optionally only those at `r.site`), by name.
pub fn list_silos(kv: &impl KvRead, r: &ListSilosRequest) -> Result<Vec<Silo>, KvError> {
    let all: Vec<Silo> = kv
        .range(Table::Silos, &[], None, usize::MAX)?
        .into_iter()
        .map(|(_, v)| decode("silo", &v))
        .collect::<Result<_, _>>()?;
    Ok(all
        .into_iter()
        .filter(|s| r.site.is_empty() || s.site == r.site)
        .collect())
}
