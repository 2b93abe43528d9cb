//! The final phase of the `moves` workload: drain the moves with non-pausing agents, then
//! record the final state (every file located, every move listed, every silo's instances).

use std::time::Duration;

use metad_client::{pb, Client, MoveFilter, ReadOptions};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::{
    agent, files, instance_state, limited, locate, mode_name, move_state, Proc, DRAIN, SILOS,
};
use crate::workload::Ctx;

/// Attempts of each final read.
const TRIES: usize = 10;

pub(super) async fn finish(ctx: Ctx) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let drain_until = Instant::now() + DRAIN;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut agents = tokio::task::JoinSet::new();
    for (i, (silo, _)) in SILOS.into_iter().enumerate() {
        let mut a = agent::Agent::new(&ctx, silo, 9, false, ctx.seed ^ (i as u64 + 77)).await?;
        a.deadline = drain_until;
        let stop = stop_rx.clone();
        agents.spawn(async move { a.run_until(Some(stop)).await });
    }
    while !drained(&ctx, &client).await && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _ = stop_tx.send(true);
    while let Some(r) = agents.join_next().await {
        r??;
    }
    final_reads(&ctx, &client).await
}

/// No move waits for a copy (pending, claimed, copying) and no copy waits to be deleted.
/// (A move can stay `releasing` with nothing left to release; the checker reports that.)
async fn drained(ctx: &Ctx, c: &Client) -> bool {
    let limit = ctx.op_timeout;
    let Ok(moves) = all_moves(c, limit, true).await else {
        return false;
    };
    if moves
        .iter()
        .any(|m| m.state != pb::MoveState::Releasing as i32)
    {
        return false;
    }
    for (silo, _) in SILOS {
        match all_instances(c, limit, silo).await {
            Ok(is)
                if is
                    .iter()
                    .all(|i| i.state != pb::InstanceState::Releasing as i32) => {}
            _ => return false,
        }
    }
    true
}

async fn all_moves(c: &Client, limit: Duration, active: bool) -> anyhow::Result<Vec<pb::Move>> {
    let filter = MoveFilter {
        active_only: active,
        ..Default::default()
    };
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let r = limited(
            limit,
            c.list_moves(filter.clone(), &cursor, 1000, ReadOptions::linearizable()),
        )
        .await?;
        out.extend(r.moves);
        if r.next_cursor.is_empty() {
            return Ok(out);
        }
        cursor = r.next_cursor;
    }
}

async fn all_instances(
    c: &Client,
    limit: Duration,
    silo: &str,
) -> anyhow::Result<Vec<pb::Instance>> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let r = limited(
            limit,
            c.list_instances(silo, &cursor, 1000, ReadOptions::linearizable()),
        )
        .await?;
        out.extend(r.instances);
        if r.next_cursor.is_empty() {
            return Ok(out);
        }
        cursor = r.next_cursor;
    }
}

/// Records one final read, retried (as new ops) until it answers.
async fn record_read<F, Fut>(
    ctx: &Ctx,
    p: &Proc,
    f: &str,
    value: Value,
    mut read: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(&'static str, Value)>>,
{
    let mut last = None;
    for _ in 0..TRIES {
        let op = ctx.recorder.invoke(p.id, f, value.clone(), None);
        match read().await {
            Ok((key, result)) => {
                let mut v = value.clone();
                v[key] = result;
                ctx.recorder.ok(op, v);
                return Ok(());
            }
            Err(e) => {
                ctx.recorder.fail(op, &e);
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt")))
        .map_err(|e| e.context(format!("final read {f} {value}")))
}

/// The final reads, in this order: every file, every silo's instances, every move, every
/// silo's instances again.
async fn final_reads(ctx: &Ctx, c: &Client) -> anyhow::Result<()> {
    let mut p = Proc::new(&ctx.recorder);
    for path in files() {
        for _ in 0..TRIES {
            if locate(ctx, c, &mut p, &path, None, true).await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    // Instances are listed before and after the moves, so that a late write applied in
    // between cannot make a move look stuck (the checker needs both listings to agree).
    final_instances(ctx, c, &p, 0).await?;
    let limit = ctx.op_timeout + Duration::from_secs(2);
    record_read(ctx, &p, "final-moves", json!({"final": true}), || async {
        let moves: Vec<Value> = all_moves(c, limit, false)
            .await?
            .iter()
            .map(|m| {
                json!({"id": m.id, "path": m.path, "target": m.target_silo,
                    "mode": mode_name(pb::MoveMode::try_from(m.mode).unwrap_or_default()),
                    "state": move_state(m.state), "token": m.token})
            })
            .collect();
        Ok(("moves", json!(moves)))
    })
    .await?;
    final_instances(ctx, c, &p, 1).await
}

/// Round `round` of the listing of every silo's instances.
async fn final_instances(ctx: &Ctx, c: &Client, p: &Proc, round: u32) -> anyhow::Result<()> {
    let limit = ctx.op_timeout + Duration::from_secs(2);
    for (silo, _) in SILOS {
        let value = json!({"silo": silo, "final": true, "round": round});
        record_read(ctx, p, "final-instances", value, || async {
            let is: Vec<Value> = all_instances(c, limit, silo)
                .await?
                .iter()
                .map(|i| {
                    json!({"path": i.path, "state": instance_state(i.state),
                        "gen": i.content_gen})
                })
                .collect();
            Ok(("instances", json!(is)))
        })
        .await?;
    }
    Ok(())
}
