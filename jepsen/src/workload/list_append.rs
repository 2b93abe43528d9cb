//! The `list-append` workload: transactions of appends and reads over a few lists, checked
//! by the Elle-style [`crate::check::elle`] (with real-time edges: strict serializability).
//!
//! List `k<N>` is the tag `l` of file `/jepsen/append/k<N>`, a comma-separated list of
//! integers; the file (and tag) are created by the first transaction appending to it, so an
//! absent file is the empty list.
//!
//! Operations: `f = "txn"`, value `{"mops": [["append", K, V], ["r", K, null], ...]}`
//! (1 to 4 micro-ops over a small active key set); the `ok` completion fills each read with
//! the list it saw (`["r", K, [V, ...]]`). Appended values are unique across the run.
//!
//! Txn in metad has compares and then-ops but no reads, so each transaction is optimistic:
//! read every touched key linearizably and concurrently (on a random node), then one `Txn` whose compares
//! require each touched key to be unchanged (tag `l` equal to what was read, or for a key
//! with no file: `exists == false`) and whose then-ops create the file if needed and set the
//! new lists. A read micro-op returns the list read plus this transaction's earlier appends
//! to the key. A failed compare or a failed read is a definite `fail`; commit errors are
//! classified like register writes ([`super::register::write_error_is_definite`]).
//! A key whose list reaches [`MAX_LEN`] elements is retired and replaced in the active set
//! by a fresh key. `finish` reads every key ever used.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use metad_client::{pb, Client, ClientError, ErrorCode, ReadOptions};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::register::{set_tag_step, setup_files, tag_equals, write_error_is_definite};
use crate::check::{self, CheckResult};
use crate::history::History;
use crate::workload::Ctx;

const DIR: &str = "/jepsen/append";
const TAG: &str = "l";
/// Keys transactions choose from at any time.
pub const ACTIVE_KEYS: usize = 8;
/// A key is retired once a read sees this many elements.
pub const MAX_LEN: usize = 200;

fn path(key: u64) -> String {
    format!("{DIR}/k{key}")
}

/// Extra arguments every metad node needs for this workload (e.g. longer watch retention).
pub fn node_args() -> Vec<String> {
    Vec::new()
}

/// The active key set and the key counter, shared by the workers.
struct Keys {
    active: Mutex<Vec<u64>>,
    next: AtomicU64,
}

impl Keys {
    fn new() -> Self {
        Keys {
            active: Mutex::new((0..ACTIVE_KEYS as u64).collect()),
            next: AtomicU64::new(ACTIVE_KEYS as u64),
        }
    }
    fn active(&self) -> Vec<u64> {
        match self.active.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
    fn retire(&self, key: u64) {
        let mut g = match self.active.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(slot) = g.iter_mut().find(|k| **k == key) {
            *slot = self.next.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What a key held when the transaction read it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    /// No file: the empty list.
    Absent,
    /// The raw tag value and its parsed list.
    List(String, Vec<u64>),
}

impl Seen {
    fn list(&self) -> &[u64] {
        match self {
            Seen::Absent => &[],
            Seen::List(_, l) => l,
        }
    }
}

fn parse_list(s: &str) -> anyhow::Result<Vec<u64>> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    s.split(',')
        .map(|x| {
            x.parse::<u64>()
                .with_context(|| format!("list element {x:?}"))
        })
        .collect()
}

async fn read_key(client: &Client, key: u64) -> anyhow::Result<Seen> {
    match client
        .get_tags(&path(key), false, ReadOptions::linearizable())
        .await
    {
        Ok(r) => match r.tags.into_iter().find(|t| t.key == TAG) {
            Some(t) => {
                let l = parse_list(&t.value)?;
                Ok(Seen::List(t.value, l))
            }
            None => anyhow::bail!("{} exists without tag {TAG}", path(key)),
        },
        Err(e) if e.code() == ErrorCode::NotFound => Ok(Seen::Absent),
        Err(e) => Err(e.into()),
    }
}

/// A micro-op to run: (append?, key, value).
type Mop = (bool, u64, u64);

enum Outcome {
    Committed(Vec<Value>),
    Conflict,
    ReadFailed(anyhow::Error),
    CommitFailed(ClientError),
}

fn create_step(path: &str) -> pb::TxnStep {
    pb::TxnStep {
        op: Some(pb::txn_step::Op::Namespace(pb::NamespaceOp {
            op: Some(pb::namespace_op::Op::Create(pb::CreateFile {
                path: path.to_string(),
                ..Default::default()
            })),
        })),
    }
}

async fn execute(client: &Client, reader: &Client, keys: &Keys, mops: &[Mop]) -> Outcome {
    // Read the touched keys concurrently (a shorter window means fewer conflicts).
    let touched: std::collections::BTreeSet<u64> = mops.iter().map(|m| m.1).collect();
    let reads = futures::future::join_all(touched.iter().map(|&k| read_key(reader, k))).await;
    let mut seen: BTreeMap<u64, Seen> = BTreeMap::new();
    for (&k, r) in touched.iter().zip(reads) {
        match r {
            Ok(s) => {
                if s.list().len() >= MAX_LEN {
                    keys.retire(k);
                }
                seen.insert(k, s);
            }
            Err(e) => return Outcome::ReadFailed(e),
        }
    }
    let mut lists: BTreeMap<u64, Vec<u64>> =
        seen.iter().map(|(k, s)| (*k, s.list().to_vec())).collect();
    let mut results = Vec::with_capacity(mops.len());
    for &(append, k, v) in mops {
        let l = lists.entry(k).or_default();
        if append {
            l.push(v);
            results.push(json!(["append", k, v]));
        } else {
            results.push(json!(["r", k, l.clone()]));
        }
    }
    let mut compares = Vec::new();
    let mut steps = Vec::new();
    for (k, s) in &seen {
        let p = path(*k);
        match s {
            Seen::Absent => compares.push(pb::Compare {
                path: p.clone(),
                target: pb::CompareTarget::Exists as i32,
                op: pb::CompareOp::Equal as i32,
                exists: false,
                ..Default::default()
            }),
            Seen::List(raw, _) => compares.push(tag_equals(&p, TAG, raw)),
        }
        let new = &lists[k];
        if new.len() > s.list().len() {
            if *s == Seen::Absent {
                steps.push(create_step(&p));
            }
            let value: Vec<String> = new.iter().map(u64::to_string).collect();
            steps.push(set_tag_step(&p, TAG, &value.join(",")));
        }
    }
    match client.txn(compares, steps, Vec::new()).await {
        Ok(r) if r.succeeded => Outcome::Committed(results),
        Ok(_) => Outcome::Conflict,
        Err(e) => Outcome::CommitFailed(e),
    }
}

/// The main phase: invoke transactions until `ctx.deadline`.
pub async fn run(ctx: Ctx) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    setup_files(&ctx, &client, DIR, &[]).await?;
    let keys = Arc::new(Keys::new());
    let counter = Arc::new(AtomicU64::new(1));
    let mut tasks = Vec::new();
    for w in 0..ctx.concurrency {
        let (ctx, keys, counter) = (ctx.clone(), Arc::clone(&keys), Arc::clone(&counter));
        tasks.push(tokio::spawn(
            async move { worker(ctx, w, keys, counter).await },
        ));
    }
    for t in tasks {
        t.await.context("list-append worker panicked")??;
    }
    Ok(())
}

async fn worker(
    ctx: Ctx,
    w: usize,
    keys: Arc<Keys>,
    counter: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let rec = ctx.recorder.clone();
    let mut rng = rand::rngs::StdRng::seed_from_u64(ctx.seed ^ (w as u64).wrapping_mul(0x51ED));
    let mut process = rec.new_process();
    let nodes = ctx.endpoints.len().max(1);
    while !ctx.done() {
        let active = keys.active();
        let n = rng.gen_range(1..=4);
        let mops: Vec<Mop> = (0..n)
            .map(|_| {
                let k = active[rng.gen_range(0..active.len())];
                if rng.gen_bool(0.5) {
                    (true, k, counter.fetch_add(1, Ordering::Relaxed))
                } else {
                    (false, k, 0)
                }
            })
            .collect();
        let inv: Vec<Value> = mops
            .iter()
            .map(|&(a, k, v)| {
                if a {
                    json!(["append", k, v])
                } else {
                    json!(["r", k, null])
                }
            })
            .collect();
        let node = rng.gen_range(0..nodes);
        let reader = client.on_endpoint(node)?;
        let pending = rec.invoke(
            process,
            "txn",
            json!({ "mops": inv }),
            Some(node as u32 + 1),
        );
        match execute(&client, &reader, &keys, &mops).await {
            Outcome::Committed(r) => rec.ok(pending, json!({ "mops": r })),
            Outcome::Conflict => rec.fail(pending, "compare failed"),
            Outcome::ReadFailed(e) => rec.fail(pending, format!("read: {e:#}")),
            Outcome::CommitFailed(e) if write_error_is_definite(&e) => rec.fail(pending, e),
            Outcome::CommitFailed(e) => process = rec.info(pending, e),
        }
    }
    Ok(())
}

/// The final phase, after the cluster has been healed: a read of every key ever used, each
/// recorded as a one-read transaction.
pub async fn finish(ctx: Ctx) -> anyhow::Result<()> {
    // Every key any transaction named (keys are allocated in order from 0).
    let used = ctx
        .recorder
        .history()
        .ops
        .iter()
        .filter(|o| o.f == "txn")
        .filter_map(|o| check::elle::parse_mops(&o.value))
        .flatten()
        .map(|m| match m {
            check::elle::Mop::Append(k, _) | check::elle::Mop::Read(k, _) => k + 1,
        })
        .max()
        .unwrap_or(0);
    let client = ctx.client().await?;
    let rec = ctx.recorder.clone();
    let process = rec.new_process();
    for k in 0..used {
        for attempt in 0..5 {
            let pending = rec.invoke(process, "txn", json!({"mops": [["r", k, null]]}), None);
            match read_key(&client, k).await {
                Ok(s) => {
                    rec.ok(pending, json!({"mops": [["r", k, s.list()]]}));
                    break;
                }
                Err(e) => {
                    rec.fail(pending, format!("{e:#}"));
                    if attempt == 4 {
                        tracing::warn!("final read of list k{k} failed: {e:#}");
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            }
        }
    }
    Ok(())
}

/// The checkers that judge this workload's history.
pub fn check(history: &History) -> Vec<CheckResult> {
    vec![check::elle::check_with(
        history,
        check::elle::Config { realtime: true },
    )]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse() {
        assert_eq!(parse_list("").expect("empty"), Vec::<u64>::new());
        assert_eq!(parse_list("3,1,2").expect("list"), vec![3, 1, 2]);
        assert!(parse_list("1,,2").is_err());
    }

    #[test]
    fn retiring_a_key_replaces_it_with_a_fresh_one() {
        let keys = Keys::new();
        keys.retire(2);
        keys.retire(2);
        let active = keys.active();
        assert_eq!(active.len(), ACTIVE_KEYS);
        assert!(!active.contains(&2));
        assert!(active.contains(&(ACTIVE_KEYS as u64)));
    }
}
