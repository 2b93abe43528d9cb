//! Read queries over moves, batches and agents (GetMove, ListMoves, GetMoveBatch, ListAgents,
//! and the in-flight moves Locate reports).

use metad_proto::v1::{
    Agent, ListAgentsRequest, ListMovesRequest, Move, MoveBatch, MoveInFlight, MoveState,
};

use super::{active_of, decode, is_active, load, state_name};
use crate::sm::kv::{KvError, KvRead, Table};
use crate::sm::model::{OpResult, Refusal};
use crate::sm::topology::{best_path, check_name, page_limit};

/// Rows examined per ListMoves call at most; a filtered listing that hits it returns a cursor
/// to continue from, so one request never scans an unbounded table.
const LIST_SCAN_MAX: usize = 100_000;

pub(super) fn load_batch(kv: &impl KvRead, batch: u64) -> Result<Option<MoveBatch>, KvError> {
    if batch == 0 {
        return Ok(None);
    }
    kv.get(Table::MoveBatches, &batch.to_be_bytes())?
        .map(|b| decode("move batch", &b))
        .transpose()
}

fn with_path(kv: &impl KvRead, mut mv: Move) -> Result<Move, KvError> {
    mv.path = best_path(kv, mv.ino)?;
    Ok(mv)
}

pub fn get_move(kv: &impl KvRead, id: u64) -> OpResult<Move> {
    let mv = load(kv, id)?.ok_or_else(|| Refusal::not_found(format!("move_id: no move {id}")))?;
    Ok(with_path(kv, mv)?)
}

pub fn get_batch(kv: &impl KvRead, batch: u64) -> OpResult<MoveBatch> {
    Ok(load_batch(kv, batch)?
        .ok_or_else(|| Refusal::not_found(format!("batch: no move batch {batch}")))?)
}

fn cursor_of(c: &str) -> Result<u64, Refusal> {
    if c.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(c, 16)
        .ok()
        .filter(|_| c.len() == 16)
        .ok_or_else(|| Refusal::invalid("cursor: not a cursor from a previous answer"))
}

/// One page of moves matching the filters, in id order: (moves, next cursor or "").
pub fn list_moves(kv: &impl KvRead, r: &ListMovesRequest) -> OpResult<(Vec<Move>, String)> {
    let limit = page_limit(r.limit)?;
    if !r.target_silo.is_empty() {
        check_name("target_silo", &r.target_silo)?;
    }
    if MoveState::try_from(r.state).is_err() {
        return Err(Refusal::invalid(format!("state: unknown move state {}", r.state)).into());
    }
    let after = cursor_of(&r.cursor)?;
    // A batch's moves have consecutive ids: scan only that range.
    let (mut from, end) = match r.batch {
        0 => (after.saturating_add(1).max(1), None),
        b => {
            let batch = get_batch(kv, b)?;
            (
                after.saturating_add(1).max(batch.first_id),
                Some(batch.first_id + batch.count),
            )
        }
    };
    let mut out = Vec::new();
    let mut scanned = 0usize;
    loop {
        let chunk = 1024usize;
        let end_key = end.map(u64::to_be_bytes);
        let rows = kv.range(
            Table::Moves,
            &from.to_be_bytes(),
            end_key.as_ref().map(|e| e.as_slice()),
            chunk,
        )?;
        let n = rows.len();
        for (k, v) in rows {
            let id = <[u8; 8]>::try_from(k.as_slice())
                .map(u64::from_be_bytes)
                .map_err(|_| KvError("move key is not 8 bytes".into()))?;
            from = id + 1;
            scanned += 1;
            let mv: Move = decode("move", &v)?;
            let keep = (r.state == 0 || mv.state == r.state)
                && (r.target_silo.is_empty() || mv.target_silo == r.target_silo)
                && (r.owner.is_empty() || mv.owner == r.owner)
                && (!r.active_only || is_active(mv.state));
            if keep {
                out.push(with_path(kv, mv)?);
                if out.len() == limit {
                    return Ok((out, format!("{id:016x}")));
                }
            }
            if scanned >= LIST_SCAN_MAX {
                return Ok((out, format!("{id:016x}")));
            }
        }
        if n < chunk {
            return Ok((out, String::new()));
        }
    }
}

pub fn list_agents(kv: &impl KvRead, r: &ListAgentsRequest) -> OpResult<Vec<Agent>> {
    if !r.silo.is_empty() {
        check_name("silo", &r.silo)?;
    }
    Ok(super::agents::all(kv)?
        .into_iter()
        .filter(|a| r.silo.is_empty() || a.silo == r.silo)
        .collect())
}

/// The active moves of file `ino`, for Locate.
pub fn moves_in_flight(kv: &impl KvRead, ino: u64) -> Result<Vec<MoveInFlight>, KvError> {
    Ok(active_of(kv, ino)?
        .into_iter()
        .map(|m| MoveInFlight {
            move_id: m.id,
            source_silo: m.source_silo,
            target_silo: m.target_silo,
            state: state_name(m.state).to_string(),
        })
        .collect())
}
