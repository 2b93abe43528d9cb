//! Locate: the readable instances of a file, nearest first.

use std::cmp::Ordering;

use metad_proto::v1::{
    InodeKind, InstanceState, LocateRequest, LocateResponse, LocatedInstance, Silo, SiloState,
    SiloTier,
};

use super::{get_silo, instances::instances_of};
use crate::sm::kv::KvRead;
use crate::sm::model::{resolve_existing, OpResult, Refusal};

/// Tier rank for ordering: hot < warm < cold < archive < unspecified.
fn tier_rank(tier: i32) -> i32 {
    match SiloTier::try_from(tier) {
        Ok(SiloTier::Unspecified) | Err(_) => i32::MAX,
        Ok(t) => t as i32,
    }
}

/// Nearest-first order: same site as `client_site`, then faster tier, then cheaper, then name.
pub(crate) fn nearer(a: &Silo, b: &Silo, client_site: &str) -> Ordering {
    let away = |s: &Silo| client_site.is_empty() || s.site != client_site;
    away(a)
        .cmp(&away(b))
        .then(tier_rank(a.tier).cmp(&tier_rank(b.tier)))
        .then(a.cost_per_gib_month.total_cmp(&b.cost_per_gib_month))
        .then(a.name.cmp(&b.name))
}

/// The readable instances of the file at `r.path`: valid at its current content generation,
/// on a silo that is not offline; ordered by [`nearer`]; plus the file's moves in flight.
pub fn locate(kv: &impl KvRead, r: &LocateRequest) -> OpResult<LocateResponse> {
    if !r.client_site.is_empty() {
        super::check_name("client_site", &r.client_site)?;
    }
    let inode = resolve_existing(kv, "path", &r.path)?;
    if inode.kind != InodeKind::File as i32 {
        return Err(Refusal::precondition(format!("path: {} is not a file", r.path)).into());
    }
    let mut found = Vec::new();
    for mut inst in instances_of(kv, inode.ino)? {
        if inst.state != InstanceState::Valid as i32 || inst.content_gen != inode.content_gen {
            continue;
        }
        let Some(silo) = get_silo(kv, &inst.silo)? else {
            continue;
        };
        if silo.state == SiloState::Offline as i32 {
            continue;
        }
        inst.path = r.path.clone();
        found.push((inst, silo));
    }
    found.sort_by(|(_, a), (_, b)| nearer(a, b, &r.client_site));
    let instances = found
        .into_iter()
        .map(|(inst, silo)| LocatedInstance {
            same_site: !r.client_site.is_empty() && silo.site == r.client_site,
            instance: Some(inst),
            silo: Some(silo),
        })
        .collect();
    Ok(LocateResponse {
        header: None,
        ino: inode.ino,
        content_gen: inode.content_gen,
        size: inode.size,
        instances,
        moves: crate::sm::moves::moves_in_flight(kv, inode.ino)?,
    })
}
