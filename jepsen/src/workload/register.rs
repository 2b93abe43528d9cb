//! The `register` workload: per-key read / write / compare-and-set on a few registers,
//! checked for linearizability by [`crate::check::linear`].
//!
//! Register `k<N>` is the tag `v` of file `/jepsen/register/k<N>` (values are decimal
//! integers; an absent tag is the never-written register, read as `null`). The files are
//! created before the workers start (retried until it succeeds; not recorded).
//!
//! Operations (`f` and `value`):
//! - `read`  `{"key": N, "value": null}`, completed with the value read (`u64` or `null`).
//!   A linearizable `GetTags` sent to a random node pinned with `Client::on_endpoint`
//!   (exercising follower reads through the read index); `Op.node` is that node. Any error
//!   is `fail`: a read has no effect.
//! - `write` `{"key": N, "value": V}`: a `Txn` with no compare setting `v = V`. Values are
//!   unique across the run (a global counter).
//! - `cas`   `{"key": N, "from": A, "to": B}`: a `Txn` comparing tag `v == A` then setting
//!   `v = B`; `succeeded == false` is a definite `fail`.
//!
//! Write errors are classified by [`write_error_is_definite`]: `Ambiguous` (and the codes
//! that could hide an applied proposal) are `info`, after which the worker continues under a
//! fresh process id; every other error is definite (`fail`).
//! `finish` reads every key once more, linearizably, through the leader.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use metad_client::{pb, Client, ClientError, ErrorCode, ReadOptions};
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::check::{self, CheckResult};
use crate::history::History;
use crate::workload::Ctx;

/// Number of registers.
pub const KEYS: u32 = 5;
const DIR: &str = "/jepsen/register";
const TAG: &str = "v";

fn path(key: u32) -> String {
    format!("{DIR}/k{key}")
}

/// Extra arguments every metad node needs for this workload (e.g. longer watch retention).
pub fn node_args() -> Vec<String> {
    Vec::new()
}

/// Whether a failed write certainly did not take effect. `Ambiguous` never is; a code the
/// server gives for an unproposed request (NotLeader, Unavailable, Timeout, InvalidArgument,
/// ...) and a connection that could not be made are; `Internal`, `ShuttingDown` and
/// `SessionExpired` are treated as unknown to stay on the safe side.
pub fn write_error_is_definite(e: &ClientError) -> bool {
    match e {
        ClientError::Ambiguous { .. } => false,
        ClientError::Transport { .. } | ClientError::InvalidConfig(_) => true,
        ClientError::Rpc { code, .. } => !matches!(
            code,
            ErrorCode::Ambiguous
                | ErrorCode::Internal
                | ErrorCode::ShuttingDown
                | ErrorCode::SessionExpired
        ),
    }
}

/// A `Txn` step setting tag `key = value` on `path`.
pub fn set_tag_step(path: &str, key: &str, value: &str) -> pb::TxnStep {
    pb::TxnStep {
        op: Some(pb::txn_step::Op::Tag(pb::TagOp {
            op: Some(pb::tag_op::Op::Set(pb::SetTags {
                path: path.to_string(),
                tags: vec![pb::Tag {
                    key: key.to_string(),
                    value: value.to_string(),
                }],
                inherit: false,
            })),
        })),
    }
}

/// A compare `tag key == value` on `path`.
pub fn tag_equals(path: &str, key: &str, value: &str) -> pb::Compare {
    pb::Compare {
        path: path.to_string(),
        target: pb::CompareTarget::Tag as i32,
        op: pb::CompareOp::Equal as i32,
        tag_key: key.to_string(),
        tag_value: value.to_string(),
        ..Default::default()
    }
}

/// The own value of tag `key` of `path` (linearizable read on whatever node `client` uses).
pub async fn read_tag(
    client: &Client,
    path: &str,
    key: &str,
) -> Result<Option<String>, ClientError> {
    let r = client
        .get_tags(path, false, ReadOptions::linearizable())
        .await?;
    Ok(r.tags.into_iter().find(|t| t.key == key).map(|t| t.value))
}

/// Creates `dir` and `files`, retrying until it succeeds or `ctx.deadline` passes.
pub async fn setup_files(
    ctx: &Ctx,
    client: &Client,
    dir: &str,
    files: &[String],
) -> anyhow::Result<()> {
    let mut last = String::new();
    while !ctx.done() {
        match create_all(client, dir, files).await {
            Ok(()) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("setup of {dir} did not succeed before the deadline: {last}")
}

async fn create_all(client: &Client, dir: &str, files: &[String]) -> Result<(), ClientError> {
    client.mkdir(dir, true).await?;
    for f in files {
        match client.create(f).await {
            Ok(_) => {}
            Err(e) if e.code() == ErrorCode::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn parse(v: Option<String>) -> anyhow::Result<Option<u64>> {
    v.map(|s| {
        s.parse::<u64>()
            .with_context(|| format!("register value {s:?}"))
    })
    .transpose()
}

/// The main phase: invoke operations until `ctx.deadline`.
pub async fn run(ctx: Ctx) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let files: Vec<String> = (0..KEYS).map(path).collect();
    setup_files(&ctx, &client, DIR, &files).await?;
    let counter = Arc::new(AtomicU64::new(1));
    let mut tasks = Vec::new();
    for w in 0..ctx.concurrency {
        let ctx = ctx.clone();
        let counter = Arc::clone(&counter);
        tasks.push(tokio::spawn(async move { worker(ctx, w, counter).await }));
    }
    for t in tasks {
        t.await.context("register worker panicked")??;
    }
    Ok(())
}

async fn worker(ctx: Ctx, w: usize, counter: Arc<AtomicU64>) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let rec = ctx.recorder.clone();
    let mut rng = rand::rngs::StdRng::seed_from_u64(ctx.seed ^ (w as u64).wrapping_mul(0x9E37));
    let mut process = rec.new_process();
    // The last value this worker saw per key, so that some cas can succeed.
    let mut seen: Vec<Option<u64>> = vec![None; KEYS as usize];
    let nodes = ctx.endpoints.len().max(1);
    while !ctx.done() {
        let key = rng.gen_range(0..KEYS);
        let p = path(key);
        match rng.gen_range(0..10) {
            0..=4 => {
                let node = rng.gen_range(0..nodes);
                let pending = rec.invoke(
                    process,
                    "read",
                    json!({"key": key, "value": null}),
                    Some(node as u32 + 1),
                );
                let res = match client.on_endpoint(node) {
                    Ok(c) => read_tag(&c, &p, TAG).await,
                    Err(e) => Err(e),
                };
                match res.map_err(anyhow::Error::from).and_then(parse) {
                    Ok(v) => {
                        seen[key as usize] = v;
                        rec.ok(pending, json!({"key": key, "value": v}));
                    }
                    Err(e) => rec.fail(pending, e),
                }
            }
            n => {
                let to = counter.fetch_add(1, Ordering::Relaxed);
                let (f, value, compares) = match seen[key as usize] {
                    Some(from) if n >= 8 => (
                        "cas",
                        json!({"key": key, "from": from, "to": to}),
                        vec![tag_equals(&p, TAG, &from.to_string())],
                    ),
                    _ => ("write", json!({"key": key, "value": to}), Vec::new()),
                };
                let pending = rec.invoke(process, f, value, None);
                let steps = vec![set_tag_step(&p, TAG, &to.to_string())];
                match client.txn(compares, steps, Vec::new()).await {
                    Ok(r) if r.succeeded => {
                        seen[key as usize] = Some(to);
                        let v = pending.value.clone();
                        rec.ok(pending, v);
                    }
                    Ok(_) => rec.fail(pending, "compare failed"),
                    Err(e) if write_error_is_definite(&e) => rec.fail(pending, e),
                    Err(e) => process = rec.info(pending, e),
                }
            }
        }
    }
    Ok(())
}

/// The final phase, after the cluster has been healed: one linearizable read of every key
/// (through the leader; retried a few times, since a read has no effect).
pub async fn finish(ctx: Ctx) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let rec = ctx.recorder.clone();
    let process = rec.new_process();
    for key in 0..KEYS {
        for attempt in 0..5 {
            let pending = rec.invoke(process, "read", json!({"key": key, "value": null}), None);
            match read_tag(&client, &path(key), TAG)
                .await
                .map_err(anyhow::Error::from)
                .and_then(parse)
            {
                Ok(v) => {
                    rec.ok(pending, json!({"key": key, "value": v}));
                    break;
                }
                Err(e) => {
                    rec.fail(pending, &e);
                    if attempt == 4 {
                        tracing::warn!("final read of k{key} failed: {e:#}");
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
    Ok(())
}

/// The checkers that judge this workload's history.
pub fn check(history: &History) -> Vec<CheckResult> {
    vec![check::linear::check(history)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ambiguous_outcomes_are_unknown() {
        let rpc = |code| ClientError::Rpc {
            code,
            message: "m".into(),
            leader_id: None,
            leader_addr: None,
        };
        assert!(!write_error_is_definite(&ClientError::Ambiguous {
            message: "m".into(),
            seq: Some(1)
        }));
        assert!(!write_error_is_definite(&rpc(ErrorCode::Ambiguous)));
        assert!(!write_error_is_definite(&rpc(ErrorCode::Internal)));
        assert!(write_error_is_definite(&rpc(ErrorCode::NotLeader)));
        assert!(write_error_is_definite(&rpc(ErrorCode::Unavailable)));
        assert!(write_error_is_definite(&ClientError::Transport {
            endpoint: "e".into(),
            message: "refused".into()
        }));
    }

    #[test]
    fn values_parse() {
        assert_eq!(parse(None).expect("none"), None);
        assert_eq!(parse(Some("42".into())).expect("42"), Some(42));
        assert!(parse(Some("x".into())).is_err());
    }
}
