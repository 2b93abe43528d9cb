//! The life of a claimed move: ClaimMoves, ReportProgress, CompleteMoves, FailMove, CancelMove,
//! ReleaseDone, and the two ways a claim ends early (back to pending, or failed for good).
//!
//! Invariant 3 (a file never loses its last valid copy) rests on one rule: only
//! [`finish_commit`] retires instances, and only after the target instance is valid at the
//! file's current generation. Invariant 4 (fencing) rests on [`check_claim`]: every agent
//! report names the token of the current claim.

use metad_proto::v1::{
    CancelMoveRequest, CancelMoveResponse, ClaimMovesRequest, ClaimMovesResponse,
    CompleteMovesRequest, CompleteMovesResponse, CompleteOutcome, CompleteResult, EventKind,
    FailMoveRequest, FailMoveResponse, Inode, Instance, InstanceState, Move, MoveCompletion,
    MoveMode, MoveState, MoveTask, ReleaseDoneRequest, ReleaseDoneResponse, ReleaseTask,
    ReportProgressRequest, ReportProgressResponse, Silo, SiloState,
};

use super::{
    backoff_ms, existing, is_active, is_claimed, limits, load, next_counter, releasing_key, save,
    silo_prefix_range, state_name, META_NEXT_TOKEN,
};
use crate::sm::kv::{KvError, KvRead, KvWrite, Overlay, Table};
use crate::sm::model::{get_inode, ApplyCtx, ApplyError, OpResult, Refusal};
use crate::sm::topology::{self as topo, best_path, get_instance, get_silo, instances_of};

/// The nearest readable source for a copy to `target`: valid at the file's generation, on a
/// silo that is not offline, same site first (then tier, cost, name).
fn pick_source(
    kv: &impl KvRead,
    inode: &Inode,
    target: &Silo,
) -> Result<Option<(Instance, Silo)>, KvError> {
    let mut found = Vec::new();
    for inst in instances_of(kv, inode.ino)? {
        if inst.silo == target.name || !super::create::readable_source(kv, &inst, inode)? {
            continue;
        }
        if let Some(silo) = get_silo(kv, &inst.silo)? {
            found.push((inst, silo));
        }
    }
    found.sort_by(|(_, a), (_, b)| topo::nearer(a, b, &target.site));
    Ok(found.into_iter().next())
}

pub(super) fn claim(
    kv: &mut impl KvWrite,
    ctx: &mut ApplyCtx,
    r: &ClaimMovesRequest,
) -> OpResult<ClaimMovesResponse> {
    let agent = super::agents::live(kv, ctx, r.lease)?;
    if agent.silo != r.silo {
        return Err(Refusal::precondition(format!(
            "silo: lease {} belongs to silo {}, not {}",
            r.lease, agent.silo, r.silo
        ))
        .into());
    }
    let silo = get_silo(kv, &r.silo)?
        .ok_or_else(|| Refusal::not_found(format!("silo: silo {} does not exist", r.silo)))?;
    let mut tasks = Vec::new();
    if silo.state == SiloState::Online as i32 {
        let (start, end) = silo_prefix_range(&silo.name);
        let scan = (r.max as usize).saturating_mul(limits::CLAIM_SCAN_FACTOR) + 16;
        let rows = kv.range(Table::MovesPending, &start, Some(&end), scan)?;
        for (k, _) in rows {
            if tasks.len() >= r.max as usize {
                break;
            }
            let id = u64_suffix(&k)?;
            let Some(mv) = load(kv, id)? else {
                return Err(KvError(format!("moves_pending names missing move {id}")).into());
            };
            if mv.not_before_ms > ctx.now_ms {
                continue;
            }
            if let Some(task) = claim_one(kv, ctx, mv, &silo, &agent)? {
                tasks.push(task);
            }
        }
    }
    let mut releases = Vec::new();
    if r.max_releases > 0 {
        let (start, end) = silo_prefix_range(&silo.name);
        for (k, v) in kv.range(
            Table::SiloReleasing,
            &start,
            Some(&end),
            r.max_releases as usize,
        )? {
            let ino = u64_suffix(&k)?;
            let Some(inst) = get_instance(kv, ino, &silo.name)? else {
                continue;
            };
            releases.push(ReleaseTask {
                ino,
                path: best_path(kv, ino)?,
                silo: silo.name.clone(),
                root: silo.root.clone(),
                content_gen: inst.content_gen,
                move_id: u64_suffix(&v).unwrap_or(0),
                location: inst.location,
            });
        }
    }
    Ok(ClaimMovesResponse {
        header: None,
        tasks,
        releases,
    })
}

fn u64_suffix(b: &[u8]) -> Result<u64, KvError> {
    b.len()
        .checked_sub(8)
        .and_then(|i| <[u8; 8]>::try_from(&b[i..]).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| KvError("key or value shorter than 8 bytes".into()))
}

/// Claims one pending move for `agent`, or postpones it (no source, target still releasing),
/// or commits it at once (target already valid). Returns the task if claimed.
fn claim_one(
    kv: &mut impl KvWrite,
    ctx: &mut ApplyCtx,
    mv: Move,
    target: &Silo,
    agent: &metad_proto::v1::Agent,
) -> OpResult<Option<MoveTask>> {
    let Some(inode) = get_inode(kv, mv.ino)? else {
        return Err(KvError(format!("move {} names missing inode {}", mv.id, mv.ino)).into());
    };
    let path = best_path(kv, mv.ino)?;
    let existing_target = get_instance(kv, mv.ino, &target.name)?;
    if let Some(t) = &existing_target {
        if t.state == InstanceState::Valid as i32 && t.content_gen == inode.content_gen {
            finish_commit(kv, ctx, mv, &path)?;
            return Ok(None);
        }
        if t.state == InstanceState::Releasing as i32 {
            postpone(
                kv,
                ctx,
                mv,
                &path,
                "the target's previous copy is still being released",
            )?;
            return Ok(None);
        }
    }
    let Some((source, source_silo)) = pick_source(kv, &inode, target)? else {
        postpone(kv, ctx, mv, &path, "no readable instance to copy from")?;
        return Ok(None);
    };
    let token = next_counter(kv, META_NEXT_TOKEN)?;
    let location = match &existing_target {
        Some(t) if !t.location.is_empty() => t.location.clone(),
        _ => topo::default_location(&path),
    };
    let filling = Instance {
        ino: mv.ino,
        silo: target.name.clone(),
        state: InstanceState::Filling as i32,
        content_gen: inode.content_gen,
        bytes: inode.size,
        checksum: String::new(),
        create_revision: existing_target
            .as_ref()
            .map_or(ctx.revision, |t| t.create_revision),
        mod_revision: ctx.revision,
        path: String::new(),
        location: location.clone(),
    };
    topo::put_instance(kv, &filling)?;
    ctx.emit(topo::instance_event(
        if existing_target.is_some() {
            EventKind::InstanceChanged
        } else {
            EventKind::InstanceAdded
        },
        &path,
        &filling,
        target.site.clone(),
        format!("filling gen={} (move {})", inode.content_gen, mv.id),
    ));
    let mut new = mv.clone();
    new.state = MoveState::Claimed as i32;
    new.token = token;
    new.lease = agent.lease;
    new.source_silo = source.silo.clone();
    new.content_gen = inode.content_gen;
    new.bytes_total = inode.size;
    new.bytes_done = 0;
    new.target_had_instance = existing_target.is_some();
    save(
        kv,
        ctx,
        Some(&mv),
        &mut new,
        &path,
        format!("agent {} lease {} token {token}", agent.name, agent.lease),
    )?;
    Ok(Some(MoveTask {
        move_id: mv.id,
        token,
        ino: mv.ino,
        content_gen: inode.content_gen,
        size: inode.size,
        mode: mv.mode,
        source_silo: source_silo.name.clone(),
        source_root: source_silo.root.clone(),
        source_checksum: source.checksum.clone(),
        target_silo: target.name.clone(),
        target_root: target.root.clone(),
        attempt: mv.attempts + 1,
        source_location: if source.location.is_empty() {
            topo::default_location(&path)
        } else {
            source.location
        },
        path,
        target_location: location,
    }))
}

/// Leaves a pending move pending, not to be handed out again for a while.
fn postpone(
    kv: &mut impl KvWrite,
    ctx: &mut ApplyCtx,
    mv: Move,
    path: &str,
    why: &str,
) -> OpResult<()> {
    let mut new = mv.clone();
    new.not_before_ms = ctx.now_ms + limits::NO_SOURCE_RETRY_MS;
    new.last_error = why.to_string();
    save(kv, ctx, Some(&mv), &mut new, path, String::new())?;
    Ok(())
}

/// The move's claim, checked: it must be claimed or copying, and `token` must be its token.
fn check_claim(mv: &Move, token: u64) -> Result<(), Refusal> {
    if !is_claimed(mv.state) {
        return Err(Refusal::precondition(format!(
            "move_id: move {} is {}, not claimed",
            mv.id,
            state_name(mv.state)
        )));
    }
    if token != mv.token {
        return Err(Refusal::precondition(format!(
            "token: stale fencing token {token} for move {} (the current claim has {})",
            mv.id, mv.token
        )));
    }
    Ok(())
}

pub(super) fn progress(
    kv: &mut impl KvWrite,
    ctx: &mut ApplyCtx,
    r: &ReportProgressRequest,
) -> OpResult<ReportProgressResponse> {
    let mv = existing(kv, "move_id", r.move_id)?;
    check_claim(&mv, r.token)?;
    let mut new = mv.clone();
    new.state = MoveState::Copying as i32;
    new.bytes_done = r.bytes_done.min(mv.bytes_total.max(r.bytes_done));
    let path = best_path(kv, mv.ino)?;
    save(kv, ctx, Some(&mv), &mut new, &path, String::new())?;
    new.path = path;
    Ok(ReportProgressResponse {
        header: None,
        r#move: Some(new),
    })
}

pub(super) fn complete(
    kv: &mut impl KvWrite,
    ctx: &mut ApplyCtx,
    r: &CompleteMovesRequest,
) -> OpResult<CompleteMovesResponse> {
    let mut results = Vec::with_capacity(r.completions.len());
    for c in &r.completions {
        // Each completion is all-or-nothing on its own: a refusal undoes only its writes.
        let mut ctx_one = ApplyCtx::new(ctx.revision, ctx.now_ms);
        let mut overlay = Overlay::new(kv);
        match complete_one(&mut overlay, &mut ctx_one, c) {
            Ok((outcome, mv)) => {
                overlay.commit()?;
                ctx.events.append(&mut ctx_one.events);
                ctx.changed |= ctx_one.changed;
                results.push(CompleteResult {
                    move_id: c.move_id,
                    outcome: outcome as i32,
                    error_code: String::new(),
                    error: String::new(),
                    r#move: Some(mv),
                });
            }
            Err(ApplyError::Refused(refusal)) => results.push(CompleteResult {
                move_id: c.move_id,
                outcome: CompleteOutcome::Refused as i32,
                error_code: refusal.code.as_str().to_string(),
                error: refusal.message,
                r#move: None,
            }),
            Err(e @ ApplyError::Storage(_)) => return Err(e),
        }
    }
    Ok(CompleteMovesResponse {
        header: None,
        results,
    })
}

fn complete_one(
    kv: &mut impl KvWrite,
    ctx: &mut ApplyCtx,
    c: &MoveCompletion,
) -> OpResult<(CompleteOutcome, Move)> {
    let mv = existing(kv, "move_id", c.move_id)?;
    // Mutation `skip-token-check` (jepsen only): any token passes for a claimed move.
    let token = if crate::mutations::on("skip-token-check") {
        mv.token
    } else {
        c.token
    };
    check_claim(&mv, token)?;
    let Some(inode) = get_inode(kv, mv.ino)? else {
        return Err(KvError(format!("move {} names missing inode {}", mv.id, mv.ino)).into());
    };
    let path = best_path(kv, mv.ino)?;
    if c.copied_gen != inode.content_gen || c.copied_gen != mv.content_gen {
        let why = format!(
            "copied generation {} but the file is at generation {}",
            c.copied_gen, inode.content_gen
        );
        let new = return_to_pending(kv, ctx, mv, &why, false)?;
        return Ok((CompleteOutcome::Recopy, with_path(new, path)));
    }
    let source_sum = get_instance(kv, mv.ino, &mv.source_silo)?
        .filter(|s| s.content_gen == inode.content_gen)
        .map(|s| s.checksum)
        .unwrap_or_default();
    if comparable(&source_sum, &c.checksum) && source_sum != c.checksum {
        let why = format!(
            "copy checksum {} differs from the source's {source_sum}",
            c.checksum
        );
        let new = return_to_pending(kv, ctx, mv, &why, false)?;
        return Ok((CompleteOutcome::Recopy, with_path(new, path)));
    }
    let Some(mut target) = get_instance(kv, mv.ino, &mv.target_silo)?
        .filter(|t| t.state == InstanceState::Filling as i32)
    else {
        return Err(Refusal::precondition(format!(
            "move_id: move {}'s target instance on {} is no longer filling",
            mv.id, mv.target_silo
        ))
        .into());
    };
    target.state = InstanceState::Valid as i32;
    target.content_gen = inode.content_gen;
    target.checksum = if c.checksum.is_empty() {
        source_sum
    } else {
        c.checksum.clone()
    };
    target.bytes = if c.bytes == 0 { inode.size } else { c.bytes };
    target.mod_revision = ctx.revision;
    topo::put_instance(kv, &target)?;
    let site = topo::site_of(kv, &target.silo)?;
    ctx.emit(topo::instance_event(
        EventKind::InstanceChanged,
        &path,
        &target,
        site,
        format!("valid gen={} (move {} committed)", inode.content_gen, mv.id),
    ));
    let new = finish_commit(kv, ctx, mv, &path)?;
    Ok((CompleteOutcome::Committed, with_path(new, path)))
}

/// Two checksums can be compared when both are known and name the same algorithm (the text
/// before ':', e.g. "blake3"); "sha256:..." and "blake3:..." of the same bytes differ.
fn comparable(a: &str, b: &str) -> bool {
    let algo = |s: &str| s.split_once(':').map(|(x, _)| x.to_string());
    !a.is_empty() && !b.is_empty() && algo(a) == algo(b)
}

fn with_path(mut mv: Move, path: String) -> Move {
    mv.path = path;
    mv
}

/// The target instance is valid at the current generation (just committed, or already there):
/// a copy is DONE; a move retires every other instance (RELEASING until the source agents
/// confirm deletion).
pub(super) fn finish_commit(
    kv: &mut impl KvWrite,
    ctx: &mut ApplyCtx,
    mv: Move,
    path: &str,
) -> OpResult<Move> {
    let mut retired = 0;
    if mv.mode == MoveMode::Move as i32 {
        for mut other in instances_of(kv, mv.ino)? {
            let retire = other.silo != mv.target_silo
                && (other.state == InstanceState::Valid as i32
                    || other.state == InstanceState::Stale as i32);
            if !retire {
                continue;
            }
            let was = topo::state_name(other.state);
            other.state = InstanceState::Releasing as i32;
            other.mod_revision = ctx.revision;
            topo::put_instance(kv, &other)?;
            kv.put(
                Table::SiloReleasing,
                &releasing_key(&other.silo, mv.ino),
                &mv.id.to_be_bytes(),
            )?;
            let site = topo::site_of(kv, &other.silo)?;
            ctx.emit(topo::instance_event(
                EventKind::InstanceChanged,
                path,
                &other,
                site,
                format!("releasing (was {was}; move {} committed)", mv.id),
            ));
            retired += 1;
        }
    }
    let mut new = mv.clone();
    new.state = if retired > 0 {
        MoveState::Releasing as i32
    } else {
        MoveState::Done as i32
    };
    new.lease = 0;
    new.bytes_done = new.bytes_total;
    save(kv, ctx, Some(&mv), &mut new, path, String::new())?;
    Ok(new)
}

/// Puts a filling target instance back to stale (its bytes, if any were placed, are not
/// readable; a later claim refills it).
fn unfill_target(kv: &mut impl KvWrite, ctx: &mut ApplyCtx, mv: &Move, path: &str) -> OpResult<()> {
    if let Some(mut t) = get_instance(kv, mv.ino, &mv.target_silo)? {
        if t.state == InstanceState::Filling as i32 {
            t.state = InstanceState::Stale as i32;
            t.mod_revision = ctx.revision;
            topo::put_instance(kv, &t)?;
            let site = topo::site_of(kv, &t.silo)?;
            ctx.emit(topo::instance_event(
                EventKind::InstanceChanged,
                path,
                &t,
                site,
                format!("stale (move {} claim ended)", mv.id),
            ));
        }
    }
    Ok(())
}

/// Ends the current claim: the move is pending again (after a backoff if `failed_attempt`),
/// or FAILED when its attempts are exhausted. A recopy (file changed) is not a failure.
pub(super) fn return_to_pending(
    kv: &mut impl KvWrite,
    ctx: &mut ApplyCtx,
    mv: Move,
    why: &str,
    failed_attempt: bool,
) -> OpResult<Move> {
    let path = best_path(kv, mv.ino)?;
    unfill_target(kv, ctx, &mv, &path)?;
    let mut new = mv.clone();
    new.token = 0;
    new.lease = 0;
    new.bytes_done = 0;
    new.last_error = why.to_string();
    if failed_attempt {
        new.attempts += 1;
        if new.attempts >= new.max_attempts {
            new.state = MoveState::Failed as i32;
            new.last_error = format!("gave up after {} attempts: {why}", new.attempts);
        } else {
            new.state = MoveState::Pending as i32;
            new.not_before_ms = ctx.now_ms + backoff_ms(new.attempts);
        }
    } else {
        new.recopies += 1;
        new.state = MoveState::Pending as i32;
        new.not_before_ms = ctx.now_ms;
    }
    save(kv, ctx, Some(&mv), &mut new, &path, why.to_string())?;
    Ok(new)
}

pub(super) fn fail(
    kv: &mut impl KvWrite,
    ctx: &mut ApplyCtx,
    r: &FailMoveRequest,
) -> OpResult<FailMoveResponse> {
    let mv = existing(kv, "move_id", r.move_id)?;
    check_claim(&mv, r.token)?;
    let why = if r.reason.is_empty() {
        "agent reported a failure".to_string()
    } else {
        r.reason.clone()
    };
    let new = if r.retryable {
        return_to_pending(kv, ctx, mv, &why, true)?
    } else {
        let path = best_path(kv, mv.ino)?;
        unfill_target(kv, ctx, &mv, &path)?;
        let mut new = mv.clone();
        new.state = MoveState::Failed as i32;
        new.token = 0;
        new.lease = 0;
        new.attempts += 1;
        new.last_error = why.clone();
        save(kv, ctx, Some(&mv), &mut new, &path, why)?;
        new
    };
    let path = best_path(kv, new.ino)?;
    Ok(FailMoveResponse {
        header: None,
        r#move: Some(with_path(new, path)),
    })
}

pub(super) fn cancel(
    kv: &mut impl KvWrite,
    ctx: &mut ApplyCtx,
    r: &CancelMoveRequest,
) -> OpResult<CancelMoveResponse> {
    let mv = existing(kv, "move_id", r.move_id)?;
    if mv.state == MoveState::Releasing as i32 {
        return Err(Refusal::precondition(format!(
            "move_id: move {} has committed; its source copies are being released",
            mv.id
        ))
        .into());
    }
    if !is_active(mv.state) {
        return Err(Refusal::precondition(format!(
            "move_id: move {} is already {}",
            mv.id,
            state_name(mv.state)
        ))
        .into());
    }
    let path = best_path(kv, mv.ino)?;
    unfill_target(kv, ctx, &mv, &path)?;
    let mut new = mv.clone();
    new.state = MoveState::Cancelled as i32;
    new.token = 0;
    new.lease = 0;
    new.last_error = if r.reason.is_empty() {
        "cancelled".into()
    } else {
        format!("cancelled: {}", r.reason)
    };
    save(kv, ctx, Some(&mv), &mut new, &path, r.reason.clone())?;
    Ok(CancelMoveResponse {
        header: None,
        r#move: Some(with_path(new, path)),
    })
}

pub(super) fn release_done(
    kv: &mut impl KvWrite,
    ctx: &mut ApplyCtx,
    r: &ReleaseDoneRequest,
) -> OpResult<ReleaseDoneResponse> {
    let silo = get_silo(kv, &r.silo)?
        .ok_or_else(|| Refusal::not_found(format!("silo: silo {} does not exist", r.silo)))?;
    let mut released = 0u32;
    let mut not_releasing = Vec::new();
    for &ino in &r.inos {
        let inst = get_instance(kv, ino, &silo.name)?;
        let Some(inst) = inst.filter(|i| i.state == InstanceState::Releasing as i32) else {
            // Never retire a copy that is not being released (e.g. the destination of the
            // move is not valid yet, so this copy is still the readable one).
            not_releasing.push(ino);
            continue;
        };
        let key = releasing_key(&silo.name, ino);
        let move_id = match kv.get(Table::SiloReleasing, &key)? {
            Some(v) => u64_suffix(&v)?,
            None => 0,
        };
        kv.delete(Table::SiloReleasing, &key)?;
        topo::delete_instance(kv, ino, &silo.name)?;
        let path = best_path(kv, ino)?;
        ctx.emit(topo::instance_event(
            EventKind::InstanceRemoved,
            &path,
            &inst,
            silo.site.clone(),
            format!("released (move {move_id})"),
        ));
        released += 1;
        // Once nothing of the file is being released, every move of it that waited for a
        // release is done: two mode-move moves committing close together retire each
        // other's copies, so a copy may be released under the other move's id.
        let still = instances_of(kv, ino)?
            .iter()
            .any(|i| i.state == InstanceState::Releasing as i32);
        if !still {
            for mv in super::active_of(kv, ino)? {
                if mv.state == MoveState::Releasing as i32 {
                    let mut new = mv.clone();
                    new.state = MoveState::Done as i32;
                    save(kv, ctx, Some(&mv), &mut new, &path, String::new())?;
                }
            }
        }
    }
    Ok(ReleaseDoneResponse {
        header: None,
        released,
        not_releasing,
    })
}
