//! Moves (data in flight) and agent leases: the move state machine of docs/design.md §Moves.
//! OWNER: moves work. Reaches into the location map only through `topology`'s crate-visible
//! instance helpers; never touches namespace tables directly except to read inodes and paths.
//!
//! Tables and key layouts (records are the prost messages of `metad/v1/moves.proto`):
//!
//! | table | key | value |
//! |---|---|---|
//! | `moves` | move id u64 BE | `Move` (without `path`) |
//! | `moves_pending` | target silo ‖ 0x00 ‖ inverted priority u32 BE ‖ move id | empty |
//! | `moves_by_ino` | ino u64 BE ‖ move id u64 BE (active moves only) | empty |
//! | `moves_by_lease` | lease u64 BE ‖ move id u64 BE (claimed/copying) | empty |
//! | `agents` | lease u64 BE | `Agent` |
//! | `silo_releasing` | silo ‖ 0x00 ‖ ino u64 BE | move id u64 BE (0 = none) |
//! | `move_batches` | batch u64 BE | `MoveBatch` |
//!
//! Every index row is derived from the `Move` record by [`save`], the single place that writes
//! moves, so indexes and batch counters cannot drift from the records.

mod agents;
mod claim;
mod create;
mod query;
#[cfg(test)]
mod tests;

use metad_proto::v1::{moves_op::Op, moves_reply::Result as R};
use metad_proto::v1::{Event, EventKind, Move, MoveBatch, MoveState, MovesOp, MovesReply};
use prost::Message;

use super::kv::{KvError, KvRead, KvWrite, Table};
use super::model::{ApplyCtx, OpResult, Refusal};

pub use agents::{expire_leases, refresh_leases};
pub use query::{get_batch, get_move, list_agents, list_moves, moves_in_flight};

/// Limits of the moves model (part of the replicated semantics).
pub mod limits {
    pub const CREATE_PATHS_MAX: usize = 1000;
    /// Files per CreateMove after expanding directories.
    pub const CREATE_FILES_MAX: usize = 10_000;
    pub const TEXT_MAX: usize = 256;
    pub const ERROR_MAX: usize = 1024;
    pub const CLAIM_MAX: u32 = 1000;
    pub const BATCH_MAX: usize = 1000;
    pub const AGENT_NAME_MAX: usize = 128;
    pub const TTL_MIN_MS: u64 = 1_000;
    pub const TTL_MAX_MS: u64 = 300_000;
    pub const TTL_DEFAULT_MS: u64 = 10_000;
    pub const ATTEMPTS_DEFAULT: u32 = 5;
    pub const ATTEMPTS_MAX: u32 = 100;
    /// Backoff after a failed attempt: base * 2^(attempts-1), capped.
    pub const BACKOFF_BASE_MS: u64 = 500;
    pub const BACKOFF_MAX_MS: u64 = 60_000;
    /// A pending move with no readable source is retried after this long.
    pub const NO_SOURCE_RETRY_MS: u64 = 2_000;
    /// Pending-index rows examined per requested task (bounds claim cost under backoff).
    pub const CLAIM_SCAN_FACTOR: usize = 4;
}

const META_NEXT_MOVE: &[u8] = b"next_move_id";
const META_NEXT_TOKEN: &[u8] = b"next_move_token";
const META_NEXT_LEASE: &[u8] = b"next_agent_lease";

/// Applies one moves/agents command.
pub fn apply(kv: &mut impl KvWrite, ctx: &mut ApplyCtx, op: &MovesOp) -> OpResult<MovesReply> {
    validate(op)?;
    let result = match &op.op {
        None => return Err(Refusal::invalid("op: missing").into()),
        Some(Op::Create(r)) => R::Create(create::create(kv, ctx, r)?),
        Some(Op::Claim(r)) => R::Claim(claim::claim(kv, ctx, r)?),
        Some(Op::Progress(r)) => R::Progress(claim::progress(kv, ctx, r)?),
        Some(Op::Complete(r)) => R::Complete(claim::complete(kv, ctx, r)?),
        Some(Op::Fail(r)) => R::Fail(claim::fail(kv, ctx, r)?),
        Some(Op::ReleaseDone(r)) => R::ReleaseDone(claim::release_done(kv, ctx, r)?),
        Some(Op::Cancel(r)) => R::Cancel(claim::cancel(kv, ctx, r)?),
        Some(Op::AgentRegister(r)) => R::AgentRegister(agents::register(kv, ctx, r)?),
        Some(Op::KeepAlive(r)) => R::KeepAlive(agents::keep_alive(kv, ctx, r)?),
        Some(Op::AgentRevoke(r)) => R::AgentRevoke(agents::revoke(kv, ctx, r)?),
    };
    Ok(MovesReply {
        result: Some(result),
    })
}

// ---------- validation (shared by the API, before proposing, and apply) ----------

fn check_text(field: &str, s: &str, max: usize) -> Result<(), Refusal> {
    if s.len() > max {
        return Err(Refusal::invalid(format!(
            "{field}: at most {max} bytes, got {}",
            s.len()
        )));
    }
    Ok(())
}

fn check_count(field: &str, n: usize, max: usize) -> Result<(), Refusal> {
    if n == 0 || n > max {
        return Err(Refusal::invalid(format!(
            "{field}: must hold 1..={max} items, got {n}"
        )));
    }
    Ok(())
}

fn check_nonzero(field: &str, v: u64) -> Result<(), Refusal> {
    if v == 0 {
        return Err(Refusal::invalid(format!("{field}: must be > 0")));
    }
    Ok(())
}

/// Checks every field of a command against the limits. INVALID_ARGUMENT names the field.
pub fn validate(op: &MovesOp) -> Result<(), Refusal> {
    use super::topology::check_name;
    match &op.op {
        None => Err(Refusal::invalid("op: missing")),
        Some(Op::Create(r)) => {
            check_count("paths", r.paths.len(), limits::CREATE_PATHS_MAX)?;
            for p in &r.paths {
                super::model::parse_path("paths", p)?;
            }
            check_name("target_silo", &r.target_silo)?;
            match metad_proto::v1::MoveMode::try_from(r.mode) {
                Ok(m) if m != metad_proto::v1::MoveMode::Unspecified => {}
                _ => {
                    return Err(Refusal::invalid(format!(
                        "mode: must be copy or move (got {})",
                        r.mode
                    )))
                }
            }
            check_text("owner", &r.owner, limits::TEXT_MAX)?;
            check_text("reason", &r.reason, limits::TEXT_MAX)?;
            if r.max_attempts > limits::ATTEMPTS_MAX {
                return Err(Refusal::invalid(format!(
                    "max_attempts: at most {}, got {}",
                    limits::ATTEMPTS_MAX,
                    r.max_attempts
                )));
            }
            Ok(())
        }
        Some(Op::Claim(r)) => {
            check_nonzero("lease", r.lease)?;
            check_name("silo", &r.silo)?;
            if r.max == 0 || r.max > limits::CLAIM_MAX {
                return Err(Refusal::invalid(format!(
                    "max: must be 1..={}, got {}",
                    limits::CLAIM_MAX,
                    r.max
                )));
            }
            if r.max_releases > limits::CLAIM_MAX {
                return Err(Refusal::invalid(format!(
                    "max_releases: at most {}, got {}",
                    limits::CLAIM_MAX,
                    r.max_releases
                )));
            }
            Ok(())
        }
        Some(Op::Progress(r)) => {
            check_nonzero("move_id", r.move_id)?;
            check_nonzero("token", r.token)
        }
        Some(Op::Complete(r)) => {
            check_count("completions", r.completions.len(), limits::BATCH_MAX)?;
            for c in &r.completions {
                check_nonzero("completions.move_id", c.move_id)?;
                check_nonzero("completions.token", c.token)?;
                check_text(
                    "completions.checksum",
                    &c.checksum,
                    super::topology::limits::CHECKSUM_MAX,
                )?;
            }
            Ok(())
        }
        Some(Op::Fail(r)) => {
            check_nonzero("move_id", r.move_id)?;
            check_nonzero("token", r.token)?;
            check_text("reason", &r.reason, limits::ERROR_MAX)
        }
        Some(Op::ReleaseDone(r)) => {
            check_name("silo", &r.silo)?;
            check_count("inos", r.inos.len(), limits::BATCH_MAX)?;
            r.inos.iter().try_for_each(|i| check_nonzero("inos", *i))
        }
        Some(Op::Cancel(r)) => {
            check_nonzero("move_id", r.move_id)?;
            check_text("reason", &r.reason, limits::ERROR_MAX)
        }
        Some(Op::AgentRegister(r)) => {
            check_name("silo", &r.silo)?;
            check_agent_name(&r.name)?;
            if r.ttl_ms != 0 && !(limits::TTL_MIN_MS..=limits::TTL_MAX_MS).contains(&r.ttl_ms) {
                return Err(Refusal::invalid(format!(
                    "ttl_ms: must be {}..={} (or 0 for {}), got {}",
                    limits::TTL_MIN_MS,
                    limits::TTL_MAX_MS,
                    limits::TTL_DEFAULT_MS,
                    r.ttl_ms
                )));
            }
            Ok(())
        }
        Some(Op::KeepAlive(r)) => check_nonzero("lease", r.lease),
        Some(Op::AgentRevoke(r)) => check_nonzero("lease", r.lease),
    }
}

fn check_agent_name(name: &str) -> Result<(), Refusal> {
    if name.is_empty() || name.len() > limits::AGENT_NAME_MAX {
        return Err(Refusal::invalid(format!(
            "name: must be 1..={} bytes, got {}",
            limits::AGENT_NAME_MAX,
            name.len()
        )));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
    {
        return Err(Refusal::invalid(format!(
            "name: {name:?} may contain only [A-Za-z0-9._:-]"
        )));
    }
    Ok(())
}

// ---------- records and indexes ----------

fn decode<M: Message + Default>(what: &str, b: &[u8]) -> Result<M, KvError> {
    M::decode(b).map_err(|e| KvError(format!("{what} record undecodable: {e}")))
}

fn pair_key(a: u64, b: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&a.to_be_bytes());
    k[8..].copy_from_slice(&b.to_be_bytes());
    k
}

/// The [start, end) range of `pair_key(a, _)`.
fn pair_range(a: u64) -> ([u8; 8], Option<[u8; 8]>) {
    (a.to_be_bytes(), a.checked_add(1).map(u64::to_be_bytes))
}

fn second_of_pair(k: &[u8]) -> Result<u64, KvError> {
    <[u8; 8]>::try_from(k.get(8..16).unwrap_or_default())
        .map(u64::from_be_bytes)
        .map_err(|_| KvError("index key is not 16 bytes".into()))
}

/// Higher priority sorts first.
fn pending_key(silo: &str, priority: i32, id: u64) -> Vec<u8> {
    let inverted = u32::MAX - (priority as i64 - i32::MIN as i64) as u32;
    let mut k = silo.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&inverted.to_be_bytes());
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn silo_prefix_range(silo: &str) -> (Vec<u8>, Vec<u8>) {
    let mut start = silo.as_bytes().to_vec();
    start.push(0);
    let mut end = silo.as_bytes().to_vec();
    end.push(1);
    (start, end)
}

fn releasing_key(silo: &str, ino: u64) -> Vec<u8> {
    let mut k = silo.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&ino.to_be_bytes());
    k
}

fn next_counter(kv: &mut impl KvWrite, key: &[u8]) -> Result<u64, KvError> {
    let cur = match kv.get(Table::Meta, key)? {
        None => 1,
        Some(b) => <[u8; 8]>::try_from(b.as_slice())
            .map(u64::from_be_bytes)
            .map_err(|_| KvError("counter is not 8 bytes".into()))?,
    };
    kv.put(Table::Meta, key, &(cur + 1).to_be_bytes())?;
    Ok(cur)
}

fn load(kv: &impl KvRead, id: u64) -> Result<Option<Move>, KvError> {
    kv.get(Table::Moves, &id.to_be_bytes())?
        .map(|b| decode("move", &b))
        .transpose()
}

/// The move, or NOT_FOUND naming `field`.
fn existing(kv: &impl KvRead, field: &str, id: u64) -> OpResult<Move> {
    load(kv, id)?.ok_or_else(|| Refusal::not_found(format!("{field}: no move {id}")).into())
}

fn is_active(state: i32) -> bool {
    matches!(
        MoveState::try_from(state),
        Ok(MoveState::Pending | MoveState::Claimed | MoveState::Copying | MoveState::Releasing)
    )
}

fn is_claimed(state: i32) -> bool {
    state == MoveState::Claimed as i32 || state == MoveState::Copying as i32
}

fn state_name(state: i32) -> &'static str {
    match MoveState::try_from(state) {
        Ok(MoveState::Pending) => "pending",
        Ok(MoveState::Claimed) => "claimed",
        Ok(MoveState::Copying) => "copying",
        Ok(MoveState::Releasing) => "releasing",
        Ok(MoveState::Done) => "done",
        Ok(MoveState::Failed) => "failed",
        Ok(MoveState::Cancelled) => "cancelled",
        _ => "unspecified",
    }
}

fn batch_counter(b: &mut MoveBatch, state: i32) -> Option<&mut u64> {
    Some(match MoveState::try_from(state).ok()? {
        MoveState::Pending => &mut b.pending,
        MoveState::Claimed => &mut b.claimed,
        MoveState::Copying => &mut b.copying,
        MoveState::Releasing => &mut b.releasing,
        MoveState::Done => &mut b.done,
        MoveState::Failed => &mut b.failed,
        MoveState::Cancelled => &mut b.cancelled,
        MoveState::Unspecified => return None,
    })
}

fn committed(state: i32) -> bool {
    state == MoveState::Releasing as i32 || state == MoveState::Done as i32
}

/// Writes `new` (the record after a change; `old` before it, `None` for a new move): its
/// index rows, its batch counters, mod_revision, and one MOVE_CHANGED event when the state
/// changed (a state-preserving update such as progress only marks the command as a change).
fn save(
    kv: &mut impl KvWrite,
    ctx: &mut ApplyCtx,
    old: Option<&Move>,
    new: &mut Move,
    path: &str,
    detail: String,
) -> Result<(), KvError> {
    new.mod_revision = ctx.revision;
    new.updated_ms = ctx.now_ms;
    if let Some(o) = old {
        if o.state == MoveState::Pending as i32 {
            kv.delete(
                Table::MovesPending,
                &pending_key(&o.target_silo, o.priority, o.id),
            )?;
        }
        if is_claimed(o.state) && o.lease != 0 {
            kv.delete(Table::MovesByLease, &pair_key(o.lease, o.id))?;
        }
        if is_active(o.state) && !is_active(new.state) {
            kv.delete(Table::MovesByIno, &pair_key(o.ino, o.id))?;
        }
    }
    if new.state == MoveState::Pending as i32 {
        kv.put(
            Table::MovesPending,
            &pending_key(&new.target_silo, new.priority, new.id),
            &[],
        )?;
    }
    if is_claimed(new.state) && new.lease != 0 {
        kv.put(Table::MovesByLease, &pair_key(new.lease, new.id), &[])?;
    }
    if is_active(new.state) && old.is_none_or(|o| !is_active(o.state)) {
        kv.put(Table::MovesByIno, &pair_key(new.ino, new.id), &[])?;
    }
    let mut stored = new.clone();
    stored.path.clear();
    kv.put(Table::Moves, &new.id.to_be_bytes(), &stored.encode_to_vec())?;

    let old_state = old.map(|o| o.state);
    if old_state != Some(new.state) {
        if let Some(mut b) = query::load_batch(kv, new.batch)? {
            if let Some(s) = old_state {
                if let Some(c) = batch_counter(&mut b, s) {
                    *c = c.saturating_sub(1);
                }
            }
            if let Some(c) = batch_counter(&mut b, new.state) {
                *c += 1;
            }
            if committed(new.state) && !old_state.is_some_and(committed) {
                b.bytes_done += new.bytes_total;
            }
            kv.put(
                Table::MoveBatches,
                &b.batch.to_be_bytes(),
                &b.encode_to_vec(),
            )?;
        }
        ctx.emit(Event {
            kind: EventKind::MoveChanged as i32,
            path: path.to_string(),
            ino: new.ino,
            inode_kind: metad_proto::v1::InodeKind::File as i32,
            silo: new.target_silo.clone(),
            move_id: new.id,
            detail: if detail.is_empty() {
                state_name(new.state).to_string()
            } else {
                format!("{}: {detail}", state_name(new.state))
            },
            ..Default::default()
        });
    } else {
        ctx.changed = true;
    }
    Ok(())
}

/// Active moves of file `ino`, in id order.
pub(super) fn active_of(kv: &impl KvRead, ino: u64) -> Result<Vec<Move>, KvError> {
    let (start, end) = pair_range(ino);
    let rows = kv.range(
        Table::MovesByIno,
        &start,
        end.as_ref().map(|e| e.as_slice()),
        usize::MAX,
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for (k, _) in rows {
        let id = second_of_pair(&k)?;
        match load(kv, id)? {
            Some(m) => out.push(m),
            None => return Err(KvError(format!("moves_by_ino names missing move {id}"))),
        }
    }
    Ok(out)
}

/// The earliest lease deadline (leader time), if any agent is registered.
pub fn next_lease_deadline(kv: &impl KvRead) -> Result<Option<u64>, KvError> {
    Ok(agents::all(kv)?.iter().map(|a| a.expires_ms).min())
}

/// Backoff before the next attempt after `attempts` failed ones.
fn backoff_ms(attempts: u32) -> u64 {
    let shift = attempts.saturating_sub(1).min(20);
    (limits::BACKOFF_BASE_MS << shift).min(limits::BACKOFF_MAX_MS)
}

// ---------- hooks called by the location map and the namespace ----------

/// The file's bytes were rewritten (RecordWrite): every claimed copy is now of an old
/// generation, so it goes back to pending (its token dies; the next claim gets a new one).
pub fn on_content_written(kv: &mut impl KvWrite, ctx: &mut ApplyCtx, ino: u64) -> OpResult<()> {
    for mv in active_of(kv, ino)? {
        if is_claimed(mv.state) {
            claim::return_to_pending(kv, ctx, mv, "file rewritten during the copy", false)?;
        }
    }
    Ok(())
}

/// File `ino` is being deleted (before its instances become tombstones): its active moves
/// are cancelled and its release rows dropped (the tombstones take over reclaiming).
pub fn on_file_deleted(kv: &mut impl KvWrite, ctx: &mut ApplyCtx, ino: u64) -> OpResult<()> {
    for mv in active_of(kv, ino)? {
        let mut new = mv.clone();
        new.state = MoveState::Cancelled as i32;
        new.token = 0;
        new.lease = 0;
        new.last_error = "file deleted".into();
        let path = super::topology::best_path(kv, ino)?;
        save(kv, ctx, Some(&mv), &mut new, &path, "file deleted".into())?;
    }
    for inst in super::topology::instances_of(kv, ino)? {
        kv.delete(Table::SiloReleasing, &releasing_key(&inst.silo, ino))?;
    }
    Ok(())
}

/// Whether silo `name` is the target of a move that has not finished copying, or holds an
/// instance waiting to be released (RemoveSilo refuses then).
pub fn silo_busy(kv: &impl KvRead, name: &str) -> Result<Option<String>, KvError> {
    let (start, end) = silo_prefix_range(name);
    if !kv
        .range(Table::MovesPending, &start, Some(&end), 1)?
        .is_empty()
    {
        return Ok(Some(format!("silo {name} is the target of pending moves")));
    }
    if !kv
        .range(Table::SiloReleasing, &start, Some(&end), 1)?
        .is_empty()
    {
        return Ok(Some(format!(
            "silo {name} holds copies waiting to be released by its agent"
        )));
    }
    Ok(None)
}
