//! Agent leases: register, keep alive, revoke, and expiry (proposed by the leader; decided
//! here with leader time, so every node expires the same leases at the same index).

use metad_proto::v1::{
    Agent, AgentRegisterRequest, AgentRegisterResponse, AgentRevokeRequest, AgentRevokeResponse,
    Event, EventKind, KeepAliveRequest, KeepAliveResponse,
};
use prost::Message;

use super::{claim, decode, limits, load, next_counter, pair_range, second_of_pair};
use super::{is_claimed, META_NEXT_LEASE};
use crate::sm::kv::{KvError, KvRead, KvWrite, Table};
use crate::sm::model::{ApplyCtx, OpResult, Refusal};

pub(super) fn get(kv: &impl KvRead, lease: u64) -> Result<Option<Agent>, KvError> {
    kv.get(Table::Agents, &lease.to_be_bytes())?
        .map(|b| decode("agent", &b))
        .transpose()
}

pub(super) fn all(kv: &impl KvRead) -> Result<Vec<Agent>, KvError> {
    kv.range(Table::Agents, &[], None, usize::MAX)?
        .into_iter()
        .map(|(_, v)| decode("agent", &v))
        .collect()
}

/// The lease, if it exists and has not run out by leader time; NOT_FOUND otherwise.
pub(super) fn live(kv: &impl KvRead, ctx: &ApplyCtx, lease: u64) -> OpResult<Agent> {
    match get(kv, lease)? {
        Some(a) if a.expires_ms >= ctx.now_ms => Ok(a),
        Some(_) => Err(Refusal::not_found(format!(
            "lease: lease {lease} has expired; register again"
        ))
        .into()),
        None => Err(Refusal::not_found(format!(
            "lease: no lease {lease} (expired or revoked); register again"
        ))
        .into()),
    }
}

fn agent_event(ctx: &mut ApplyCtx, a: &Agent, what: &str) {
    ctx.emit(Event {
        kind: EventKind::AgentChanged as i32,
        silo: a.silo.clone(),
        detail: format!("agent {} lease {}: {what}", a.name, a.lease),
        ..Default::default()
    });
}

/// Deletes a lease; its claimed moves go back to pending (a failed attempt when `failed`).
fn drop_lease(
    kv: &mut impl KvWrite,
    ctx: &mut ApplyCtx,
    a: &Agent,
    why: &str,
    failed: bool,
) -> OpResult<u32> {
    let (start, end) = pair_range(a.lease);
    let rows = kv.range(
        Table::MovesByLease,
        &start,
        end.as_ref().map(|e| e.as_slice()),
        usize::MAX,
    )?;
    let mut returned = 0;
    for (k, _) in rows {
        let id = second_of_pair(&k)?;
        let Some(mv) = load(kv, id)? else {
            return Err(KvError(format!("moves_by_lease names missing move {id}")).into());
        };
        if is_claimed(mv.state) && mv.lease == a.lease {
            claim::return_to_pending(kv, ctx, mv, why, failed)?;
            returned += 1;
        }
    }
    kv.delete(Table::Agents, &a.lease.to_be_bytes())?;
    agent_event(ctx, a, why);
    Ok(returned)
}

pub(super) fn register(
    kv: &mut impl KvWrite,
    ctx: &mut ApplyCtx,
    r: &AgentRegisterRequest,
) -> OpResult<AgentRegisterResponse> {
    if crate::sm::topology::get_silo(kv, &r.silo)?.is_none() {
        return Err(Refusal::not_found(format!("silo: silo {} does not exist", r.silo)).into());
    }
    // A restarted agent registers under its old name: its previous lease ends now, so its
    // claims go back to pending without waiting for the TTL.
    for old in all(kv)? {
        if old.silo == r.silo && old.name == r.name {
            drop_lease(kv, ctx, &old, "replaced by a new registration", false)?;
        }
    }
    let ttl = if r.ttl_ms == 0 {
        limits::TTL_DEFAULT_MS
    } else {
        r.ttl_ms
    };
    let agent = Agent {
        lease: next_counter(kv, META_NEXT_LEASE)?,
        silo: r.silo.clone(),
        name: r.name.clone(),
        ttl_ms: ttl,
        expires_ms: ctx.now_ms + ttl,
        registered_ms: ctx.now_ms,
        create_revision: ctx.revision,
    };
    kv.put(
        Table::Agents,
        &agent.lease.to_be_bytes(),
        &agent.encode_to_vec(),
    )?;
    agent_event(ctx, &agent, "registered");
    Ok(AgentRegisterResponse {
        header: None,
        agent: Some(agent),
    })
}

pub(super) fn keep_alive(
    kv: &mut impl KvWrite,
    ctx: &mut ApplyCtx,
    r: &KeepAliveRequest,
) -> OpResult<KeepAliveResponse> {
    let mut agent = live(kv, ctx, r.lease)?;
    agent.expires_ms = ctx.now_ms + agent.ttl_ms;
    kv.put(
        Table::Agents,
        &agent.lease.to_be_bytes(),
        &agent.encode_to_vec(),
    )?;
    // A renewal changes state (the deadline) but is not worth a watch event.
    ctx.changed = true;
    Ok(KeepAliveResponse {
        header: None,
        agent: Some(agent),
    })
}

pub(super) fn revoke(
    kv: &mut impl KvWrite,
    ctx: &mut ApplyCtx,
    r: &AgentRevokeRequest,
) -> OpResult<AgentRevokeResponse> {
    let Some(agent) = get(kv, r.lease)? else {
        return Err(Refusal::not_found(format!("lease: no lease {}", r.lease)).into());
    };
    let moves_returned = drop_lease(kv, ctx, &agent, "agent revoked its lease", false)?;
    Ok(AgentRevokeResponse {
        header: None,
        moves_returned,
    })
}

/// Expires every lease whose deadline is before leader time; returns (leases, moves
/// returned). Each claim of an expired lease counts as a failed attempt.
pub fn expire_leases(kv: &mut impl KvWrite, ctx: &mut ApplyCtx) -> OpResult<(u32, u32)> {
    let mut leases = 0;
    let mut moves = 0;
    for a in all(kv)? {
        if a.expires_ms < ctx.now_ms {
            moves += drop_lease(kv, ctx, &a, "agent lease expired", true)?;
            leases += 1;
        }
    }
    Ok((leases, moves))
}

/// Extends every lease to a full TTL from now (a new leader does this first, so leases do not
/// expire because of a leader change or a clock difference between leaders).
pub fn refresh_leases(kv: &mut impl KvWrite, ctx: &mut ApplyCtx) -> Result<u32, KvError> {
    let mut n = 0;
    for mut a in all(kv)? {
        let renewed = ctx.now_ms + a.ttl_ms;
        if renewed > a.expires_ms {
            a.expires_ms = renewed;
            kv.put(Table::Agents, &a.lease.to_be_bytes(), &a.encode_to_vec())?;
            ctx.changed = true;
            n += 1;
        }
    }
    Ok(n)
}
