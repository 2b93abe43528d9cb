//! Sites, silos and the location map (instances, Locate, RecordWrite, tombstones).
//! OWNER: topology/location work.
//!
//! Tables and key layouts (all records are the prost messages of `metad/v1/topology.proto`):
//!
//! | table | key | value |
//! |---|---|---|
//! | `sites` | site name | `Site` |
//! | `silos` | silo name | `Silo` |
//! | `instances` | ino u64 BE ‖ silo name | `Instance` (without `path`) |
//! | `silo_instances` | silo name ‖ 0x00 ‖ ino u64 BE | empty |
//! | `tombstones` | silo name ‖ 0x00 ‖ ino u64 BE | `Tombstone` |
//!
//! Names are restricted to `[A-Za-z0-9._-]`, so the 0x00 separator keeps each silo's rows
//! contiguous and in inode order.
//!
//! Modules: `sites` (site and silo commands and listings), `instances` (AddInstance,
//! RecordWrite, tombstones, listings), `locate` (Locate).

mod import;
mod instances;
mod locate;
mod sites;
#[cfg(test)]
mod tests;

use metad_proto::v1::{topology_op::Op, topology_reply::Result as R};
use metad_proto::v1::{Event, EventKind, InodeKind, Instance, Silo, Site, TopologyOp};
use metad_proto::v1::{Tombstone, TopologyReply};
use prost::Message;

use super::kv::{KvError, KvRead, KvWrite, Table};
use super::model::{ApplyCtx, OpResult, Refusal};

pub use instances::{best_path, instances_of, list_instances, list_tombstones};
pub use locate::locate;
pub(crate) use locate::nearer;
pub use sites::{list_silos, list_sites};

/// Limits of the topology model (part of the replicated semantics).
pub mod limits {
    /// Site and silo names: 1..=64 chars of [A-Za-z0-9._-].
    pub const NAME_MAX: usize = 64;
    pub const LABELS_MAX: usize = 64;
    pub const LABEL_KEY_MAX: usize = 128;
    pub const LABEL_VALUE_MAX: usize = 1024;
    /// Site description and region.
    pub const TEXT_MAX: usize = 1024;
    pub const ROOT_MAX: usize = 4096;
    pub const CHECKSUM_MAX: usize = 128;
    pub const LIST_LIMIT_MAX: u32 = 10_000;
    pub const LIST_LIMIT_DEFAULT: u32 = 1_000;
}

/// Applies one topology/location command.
pub fn apply(
    kv: &mut impl KvWrite,
    ctx: &mut ApplyCtx,
    op: &TopologyOp,
) -> OpResult<TopologyReply> {
    validate(op)?;
    let result = match &op.op {
        None => return Err(Refusal::invalid("op: missing").into()),
        Some(Op::RegisterSite(r)) => R::RegisterSite(sites::register_site(kv, ctx, r)?),
        Some(Op::RegisterSilo(r)) => R::RegisterSilo(sites::register_silo(kv, ctx, r)?),
        Some(Op::UpdateSilo(r)) => R::UpdateSilo(sites::update_silo(kv, ctx, r)?),
        Some(Op::RemoveSilo(r)) => R::RemoveSilo(sites::remove_silo(kv, ctx, r)?),
        Some(Op::AddInstance(r)) => R::AddInstance(instances::add_instance(kv, ctx, r)?),
        Some(Op::RecordWrite(r)) => R::RecordWrite(instances::record_write(kv, ctx, r)?),
        Some(Op::ConfirmReclaimed(r)) => {
            R::ConfirmReclaimed(instances::confirm_reclaimed(kv, ctx, r)?)
        }
        Some(Op::ImportFiles(r)) => R::ImportFiles(import::import_files(kv, ctx, r)?),
    };
    Ok(TopologyReply {
        result: Some(result),
    })
}

/// Called by namespace code when a file is deleted — BEFORE its inode and entry are removed,
/// so the tombstones record its path: every instance of `ino` becomes a tombstone on its silo
/// (listable with ListTombstones until the agent confirms with ConfirmReclaimed) and an
/// INSTANCE_REMOVED event is emitted per instance. Use [`instances_of`] first to include the
/// instances in the unlink reply.
pub fn on_file_deleted(kv: &mut impl KvWrite, ctx: &mut ApplyCtx, ino: u64) -> OpResult<()> {
    instances::file_deleted(kv, ctx, ino)
}

// ---------- validation (shared by the API, before proposing, and apply) ----------

/// Checks every field of a command against the limits. INVALID_ARGUMENT names the field.
pub fn validate(op: &TopologyOp) -> Result<(), Refusal> {
    match &op.op {
        None => Err(Refusal::invalid("op: missing")),
        Some(Op::RegisterSite(r)) => {
            check_name("name", &r.name)?;
            check_text("description", &r.description)?;
            check_text("region", &r.region)?;
            check_labels("labels", r.labels.iter())
        }
        Some(Op::RegisterSilo(r)) => {
            check_name("name", &r.name)?;
            check_name("site", &r.site)?;
            check_kind(r.kind)?;
            check_tier(r.tier)?;
            if r.capacity_bytes == 0 {
                return Err(Refusal::invalid("capacity_bytes: must be > 0"));
            }
            check_cost(r.cost_per_gib_month)?;
            check_labels("labels", r.labels.iter())?;
            check_root(&r.root)
        }
        Some(Op::UpdateSilo(r)) => {
            check_name("name", &r.name)?;
            if metad_proto::v1::SiloState::try_from(r.state).is_err() {
                return Err(Refusal::invalid(format!(
                    "state: unknown silo state {}",
                    r.state
                )));
            }
            if r.capacity_bytes == Some(0) {
                return Err(Refusal::invalid("capacity_bytes: must be > 0"));
            }
            check_labels("set_labels", r.set_labels.iter())?;
            if r.remove_labels.len() > limits::LABELS_MAX {
                return Err(Refusal::invalid(format!(
                    "remove_labels: at most {} keys, got {}",
                    limits::LABELS_MAX,
                    r.remove_labels.len()
                )));
            }
            for k in &r.remove_labels {
                check_label_key("remove_labels", k)?;
            }
            Ok(())
        }
        Some(Op::RemoveSilo(r)) => check_name("name", &r.name),
        Some(Op::AddInstance(r)) => {
            super::model::parse_path("path", &r.path)?;
            check_name("silo", &r.silo)?;
            check_checksum(&r.checksum)?;
            check_location("location", &r.location)
        }
        Some(Op::RecordWrite(r)) => {
            super::model::parse_path("path", &r.path)?;
            check_name("silo", &r.silo)?;
            check_checksum(&r.checksum)?;
            check_location("location", &r.location)
        }
        Some(Op::ImportFiles(r)) => import::validate(r),
        Some(Op::ConfirmReclaimed(r)) => {
            check_name("silo", &r.silo)?;
            if r.ino == 0 {
                return Err(Refusal::invalid("ino: must be > 0"));
            }
            Ok(())
        }
    }
}

/// An instance location: relative to the silo root, no leading '/', no empty, "." or ".."
/// component, no NUL, at most PATH_MAX bytes. "" means "the default" where allowed.
pub fn check_location(field: &str, loc: &str) -> Result<(), Refusal> {
    if loc.is_empty() {
        return Ok(());
    }
    if loc.len() > crate::sm::limits::PATH_MAX {
        return Err(Refusal::invalid(format!(
            "{field}: {} bytes, the limit is {}",
            loc.len(),
            crate::sm::limits::PATH_MAX
        )));
    }
    if loc.contains('\0') {
        return Err(Refusal::invalid(format!("{field}: must not contain NUL")));
    }
    if loc.starts_with('/') {
        return Err(Refusal::invalid(format!(
            "{field}: must be relative to the silo root (no leading '/'), got {loc:?}"
        )));
    }
    if loc
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(Refusal::invalid(format!(
            "{field}: {loc:?} has an empty, '.' or '..' component"
        )));
    }
    Ok(())
}

/// Where a new instance of the file at `path` lives on its silo unless told otherwise: the
/// namespace path without its leading '/'.
pub fn default_location(path: &str) -> String {
    path.trim_start_matches('/').to_string()
}

/// Site and silo names: 1..=64 chars of [A-Za-z0-9._-].
pub fn check_name(field: &str, name: &str) -> Result<(), Refusal> {
    if name.is_empty() || name.len() > limits::NAME_MAX {
        return Err(Refusal::invalid(format!(
            "{field}: must be 1..={} characters, got {}",
            limits::NAME_MAX,
            name.len()
        )));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(Refusal::invalid(format!(
            "{field}: {name:?} may contain only [A-Za-z0-9._-]"
        )));
    }
    Ok(())
}

fn check_text(field: &str, s: &str) -> Result<(), Refusal> {
    if s.len() > limits::TEXT_MAX {
        return Err(Refusal::invalid(format!(
            "{field}: at most {} bytes, got {}",
            limits::TEXT_MAX,
            s.len()
        )));
    }
    Ok(())
}

fn check_label_key(field: &str, k: &str) -> Result<(), Refusal> {
    if k.is_empty() || k.len() > limits::LABEL_KEY_MAX {
        return Err(Refusal::invalid(format!(
            "{field}: label key must be 1..={} bytes, got {}",
            limits::LABEL_KEY_MAX,
            k.len()
        )));
    }
    Ok(())
}

fn check_labels<'a>(
    field: &str,
    labels: impl ExactSizeIterator<Item = (&'a String, &'a String)>,
) -> Result<(), Refusal> {
    if labels.len() > limits::LABELS_MAX {
        return Err(Refusal::invalid(format!(
            "{field}: at most {} labels, got {}",
            limits::LABELS_MAX,
            labels.len()
        )));
    }
    for (k, v) in labels {
        check_label_key(field, k)?;
        if v.len() > limits::LABEL_VALUE_MAX {
            return Err(Refusal::invalid(format!(
                "{field}: value of label {k:?} is {} bytes, the limit is {}",
                v.len(),
                limits::LABEL_VALUE_MAX
            )));
        }
    }
    Ok(())
}

fn check_kind(kind: i32) -> Result<(), Refusal> {
    match metad_proto::v1::SiloKind::try_from(kind) {
        Ok(k) if k != metad_proto::v1::SiloKind::Unspecified => Ok(()),
        _ => Err(Refusal::invalid(format!(
            "kind: must be one of posix, nfs, s3, nvme, archive (got {kind})"
        ))),
    }
}

fn check_tier(tier: i32) -> Result<(), Refusal> {
    match metad_proto::v1::SiloTier::try_from(tier) {
        Ok(t) if t != metad_proto::v1::SiloTier::Unspecified => Ok(()),
        _ => Err(Refusal::invalid(format!(
            "tier: must be one of hot, warm, cold, archive (got {tier})"
        ))),
    }
}

fn check_cost(c: f64) -> Result<(), Refusal> {
    if !c.is_finite() || c < 0.0 {
        return Err(Refusal::invalid(format!(
            "cost_per_gib_month: must be a finite number >= 0, got {c}"
        )));
    }
    Ok(())
}

fn check_root(root: &str) -> Result<(), Refusal> {
    if root.is_empty() || root.len() > limits::ROOT_MAX {
        return Err(Refusal::invalid(format!(
            "root: must be 1..={} bytes, got {}",
            limits::ROOT_MAX,
            root.len()
        )));
    }
    if root.contains('\0') {
        return Err(Refusal::invalid("root: must not contain NUL"));
    }
    Ok(())
}

fn check_checksum(c: &str) -> Result<(), Refusal> {
    if c.len() > limits::CHECKSUM_MAX {
        return Err(Refusal::invalid(format!(
            "checksum: at most {} bytes, got {}",
            limits::CHECKSUM_MAX,
            c.len()
        )));
    }
    Ok(())
}

/// Page size from a request's `limit` (0 = default).
pub fn page_limit(limit: u32) -> Result<usize, Refusal> {
    if limit > limits::LIST_LIMIT_MAX {
        return Err(Refusal::invalid(format!(
            "limit: at most {}, got {limit}",
            limits::LIST_LIMIT_MAX
        )));
    }
    Ok(if limit == 0 {
        limits::LIST_LIMIT_DEFAULT
    } else {
        limit
    } as usize)
}

// ---------- records ----------

fn decode<M: Message + Default>(what: &str, b: &[u8]) -> Result<M, KvError> {
    M::decode(b).map_err(|e| KvError(format!("{what} record undecodable: {e}")))
}

pub fn get_site(kv: &impl KvRead, name: &str) -> Result<Option<Site>, KvError> {
    kv.get(Table::Sites, name.as_bytes())?
        .map(|b| decode("site", &b))
        .transpose()
}

pub fn get_silo(kv: &impl KvRead, name: &str) -> Result<Option<Silo>, KvError> {
    kv.get(Table::Silos, name.as_bytes())?
        .map(|b| decode("silo", &b))
        .transpose()
}

fn put_silo(kv: &mut impl KvWrite, silo: &Silo) -> Result<(), KvError> {
    kv.put(Table::Silos, silo.name.as_bytes(), &silo.encode_to_vec())
}

/// The silo, or NOT_FOUND naming `field`.
fn existing_silo(kv: &impl KvRead, field: &str, name: &str) -> OpResult<Silo> {
    get_silo(kv, name)?
        .ok_or_else(|| Refusal::not_found(format!("{field}: silo {name} does not exist")).into())
}

fn instance_key(ino: u64, silo: &str) -> Vec<u8> {
    let mut k = ino.to_be_bytes().to_vec();
    k.extend_from_slice(silo.as_bytes());
    k
}

/// Key of the per-silo tables (`silo_instances`, `tombstones`).
fn silo_key(silo: &str, ino: u64) -> Vec<u8> {
    let mut k = silo.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&ino.to_be_bytes());
    k
}

/// [start, end) of one silo's rows in a per-silo table.
fn silo_range(silo: &str) -> (Vec<u8>, Vec<u8>) {
    let mut start = silo.as_bytes().to_vec();
    start.push(0);
    let mut end = silo.as_bytes().to_vec();
    end.push(1);
    (start, end)
}

fn ino_of_silo_key(k: &[u8]) -> Result<u64, KvError> {
    k.len()
        .checked_sub(8)
        .and_then(|i| <[u8; 8]>::try_from(&k[i..]).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| KvError("per-silo key shorter than 8 bytes".into()))
}

pub fn get_instance(kv: &impl KvRead, ino: u64, silo: &str) -> Result<Option<Instance>, KvError> {
    kv.get(Table::Instances, &instance_key(ino, silo))?
        .map(|b| decode("instance", &b))
        .transpose()
}

pub(crate) fn put_instance(kv: &mut impl KvWrite, inst: &Instance) -> Result<(), KvError> {
    let mut stored = inst.clone();
    stored.path.clear();
    kv.put(
        Table::Instances,
        &instance_key(inst.ino, &inst.silo),
        &stored.encode_to_vec(),
    )?;
    kv.put(Table::SiloInstances, &silo_key(&inst.silo, inst.ino), &[])
}

pub(crate) fn delete_instance(kv: &mut impl KvWrite, ino: u64, silo: &str) -> Result<(), KvError> {
    kv.delete(Table::Instances, &instance_key(ino, silo))?;
    kv.delete(Table::SiloInstances, &silo_key(silo, ino))
}

fn get_tombstone(kv: &impl KvRead, silo: &str, ino: u64) -> Result<Option<Tombstone>, KvError> {
    kv.get(Table::Tombstones, &silo_key(silo, ino))?
        .map(|b| decode("tombstone", &b))
        .transpose()
}

/// Cursor of per-silo listings: the last ino returned, as 16 hex digits.
fn encode_cursor(ino: u64) -> String {
    format!("{ino:016x}")
}

fn decode_cursor(c: &str) -> Result<Option<u64>, Refusal> {
    if c.is_empty() {
        return Ok(None);
    }
    if c.len() != 16 {
        return Err(Refusal::invalid(
            "cursor: not a cursor from a previous answer",
        ));
    }
    u64::from_str_radix(c, 16)
        .map(Some)
        .map_err(|_| Refusal::invalid("cursor: not a cursor from a previous answer"))
}

/// The silo's site, for events (empty if the silo is unknown).
pub(crate) fn site_of(kv: &impl KvRead, silo: &str) -> Result<String, KvError> {
    Ok(get_silo(kv, silo)?.map(|s| s.site).unwrap_or_default())
}

/// An instance event on file `ino` at `path`.
pub(crate) fn instance_event(
    kind: EventKind,
    path: &str,
    inst: &Instance,
    site: String,
    detail: String,
) -> Event {
    Event {
        kind: kind as i32,
        path: path.to_string(),
        ino: inst.ino,
        inode_kind: InodeKind::File as i32,
        silo: inst.silo.clone(),
        site,
        detail,
        ..Default::default()
    }
}

pub(crate) fn state_name(state: i32) -> &'static str {
    use metad_proto::v1::InstanceState as S;
    match S::try_from(state) {
        Ok(S::Valid) => "valid",
        Ok(S::Filling) => "filling",
        Ok(S::Stale) => "stale",
        Ok(S::Releasing) => "releasing",
        _ => "unspecified",
    }
}
