//! Per-key linearizability of a register history (the `register` workload), checked by a
//! Wing–Gong search with Lowe's just-in-time linearization and memoisation (as in Porcupine):
//! walk the call/return events in real-time order, tentatively linearize any pending call the
//! model accepts, backtrack at a return whose operation is not linearized yet, and never
//! revisit a (set of linearized ops, register value) pair already explored.
//!
//! Model: one register per key, `None` until first written; `read` (returns `value`),
//! `write(value)`, `cas(from, to)` (an `ok` cas succeeded: the register held `from`).
//! History rules: `fail` ops never happened and are removed; an `info` op (or one with no
//! completion) may take effect at any time after its invocation or never, so it has no
//! return event and may be left unlinearized; reads with an unknown result constrain nothing
//! and are dropped. Each key is searched independently, within a budget of explored states
//! ([`Config::max_states`]); exhausting it yields `Validity::Unknown`, never a hang.
//!
//! Value schema (see `workload::register`): read/write `{"key": u32, "value": u64|null}`,
//! cas `{"key": u32, "from": u64, "to": u64}`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use serde_json::{json, Value};

use crate::check::{Anomaly, CheckResult, Validity};
use crate::history::{History, OpType};

mod search;
#[cfg(test)]
pub(crate) mod tests;

pub use search::{search, Outcome};

/// The checker's name in results.
pub const CHECKER: &str = "linear";

/// Search limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Most (linearized set, value) states explored per key before giving up with `Unknown`.
    pub max_states: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_states: 2_000_000,
        }
    }
}

/// One register operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegOp {
    Read(Option<u64>),
    Write(u64),
    Cas { from: u64, to: u64 },
}

/// An operation on one key, with its real-time interval as history indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOp {
    pub op: RegOp,
    /// History index of the invocation.
    pub invoke: u64,
    /// History index of the `ok` completion; `None` if the outcome is unknown (`info` or no
    /// completion): then the op may be linearized any time after `invoke`, or never.
    pub complete: Option<u64>,
    /// The node that served it, when recorded.
    pub node: Option<u32>,
}

impl KeyOp {
    fn describe(&self, key: u32) -> String {
        let when = match self.complete {
            Some(c) => format!("[{}, {}]", self.invoke, c),
            None => format!("[{}, ?]", self.invoke),
        };
        let when = match self.node {
            Some(n) => format!("{when} on n{n}"),
            None => when,
        };
        match self.op {
            RegOp::Read(v) => format!("read of k{key} returned {} at {when}", show(v)),
            RegOp::Write(v) => format!("write of {v} to k{key} at {when}"),
            RegOp::Cas { from, to } => format!("cas of k{key} from {from} to {to} at {when}"),
        }
    }
}

fn show(v: Option<u64>) -> String {
    v.map_or_else(|| "nothing".to_string(), |v| v.to_string())
}

/// The model: the register after `op`, or `None` if `op` cannot happen in state `state`.
/// `certain` is false for an op whose outcome is unknown (an unknown cas may have failed).
pub fn step(state: Option<u64>, op: RegOp, certain: bool) -> Option<Option<u64>> {
    match op {
        RegOp::Read(v) => (state == v).then_some(state),
        RegOp::Write(v) => Some(Some(v)),
        RegOp::Cas { from, to } if state == Some(from) => Some(Some(to)),
        RegOp::Cas { .. } => (!certain).then_some(state),
    }
}

fn u64_field(v: &Value, name: &str) -> Option<u64> {
    v.get(name).and_then(Value::as_u64)
}

/// Splits a register history into per-key operation lists (fail ops and unknown reads
/// removed). Ops whose value does not parse are counted in the second result.
pub fn partition(history: &History) -> (BTreeMap<u32, Vec<KeyOp>>, usize) {
    let mut keys: BTreeMap<u32, Vec<KeyOp>> = BTreeMap::new();
    let mut malformed = 0;
    for (inv, done) in history.pairs() {
        if !matches!(inv.f.as_str(), "read" | "write" | "cas") {
            continue;
        }
        let kind = done.map_or(OpType::Info, |d| d.kind);
        if kind == OpType::Fail {
            continue;
        }
        let Some(key) = u64_field(&inv.value, "key").and_then(|k| u32::try_from(k).ok()) else {
            malformed += 1;
            continue;
        };
        let complete = match (kind, done) {
            (OpType::Ok, Some(d)) => Some(d.index),
            _ => None,
        };
        let op = match inv.f.as_str() {
            "read" => {
                let Some(d) = done.filter(|_| kind == OpType::Ok) else {
                    continue; // an unknown read constrains nothing
                };
                match d.value.get("value") {
                    None => {
                        malformed += 1;
                        continue;
                    }
                    Some(Value::Null) => RegOp::Read(None),
                    Some(v) => match v.as_u64() {
                        Some(v) => RegOp::Read(Some(v)),
                        None => {
                            malformed += 1;
                            continue;
                        }
                    },
                }
            }
            "write" => match u64_field(&inv.value, "value") {
                Some(v) => RegOp::Write(v),
                None => {
                    malformed += 1;
                    continue;
                }
            },
            _ => match (u64_field(&inv.value, "from"), u64_field(&inv.value, "to")) {
                (Some(from), Some(to)) => RegOp::Cas { from, to },
                _ => {
                    malformed += 1;
                    continue;
                }
            },
        };
        keys.entry(key).or_default().push(KeyOp {
            op,
            invoke: inv.index,
            complete,
            node: inv.node,
        });
    }
    (keys, malformed)
}

/// Drops unknown writes and cas whose written value nothing ever observed (no read returned
/// it, no cas expected it). Sound: such an op may be skipped, and if a linearization uses it,
/// the ops between it and the next write observe nothing of it (values are unique; an
/// unknown cas may fail in any state), so removing it leaves a linearization. This keeps
/// the search from trying every subset of the many unknown writes a faulty run produces.
pub fn prune_unobserved(kops: &[KeyOp]) -> Vec<KeyOp> {
    let mut ops = kops.to_vec();
    loop {
        let observed: std::collections::HashSet<u64> = ops
            .iter()
            .filter_map(|o| match o.op {
                RegOp::Read(v) => v,
                RegOp::Cas { from, .. } => Some(from),
                RegOp::Write(_) => None,
            })
            .collect();
        let before = ops.len();
        ops.retain(|o| match o.op {
            RegOp::Write(v) | RegOp::Cas { to: v, .. } if o.complete.is_none() => {
                observed.contains(&v)
            }
            _ => true,
        });
        if ops.len() == before {
            return ops;
        }
    }
}

/// Checks a register history with the default budget.
pub fn check(history: &History) -> CheckResult {
    check_with(history, Config::default())
}

/// Checks a register history: every key must be linearizable on its own.
pub fn check_with(history: &History, config: Config) -> CheckResult {
    let started = Instant::now();
    let (keys, malformed) = partition(history);
    let mut anomalies = Vec::new();
    let mut unknown = Vec::new();
    let mut states = 0usize;
    let mut ops = 0usize;
    for (key, kops) in &keys {
        let kops = &prune_unobserved(kops);
        ops += kops.len();
        let out = search(kops, config.max_states);
        states += out.states();
        match out {
            Outcome::Linearizable { .. } => {}
            Outcome::GaveUp { states } => unknown.push(json!({"key": key, "states": states})),
            Outcome::Nonlinearizable {
                stuck, possible, ..
            } => anomalies.push(explain(*key, kops, stuck, &possible)),
        }
    }
    if malformed > 0 {
        anomalies.push(Anomaly {
            kind: "malformed-op".into(),
            detail: format!("{malformed} register ops have a value that does not parse"),
            ops: Vec::new(),
        });
    }
    let stats = json!({
        "keys": keys.len(),
        "ops": ops,
        "states": states,
        "gave_up": unknown,
        "ms": started.elapsed().as_millis() as u64,
    });
    let mut r = CheckResult::from_anomalies(CHECKER, anomalies, stats);
    if r.validity == Validity::Valid && !unknown.is_empty() {
        r.validity = Validity::Unknown;
    }
    r
}

/// Most op indices listed in one anomaly.
const MAX_LISTED: usize = 200;

fn explain(key: u32, kops: &[KeyOp], stuck: usize, possible: &BTreeSet<Option<u64>>) -> Anomaly {
    let s = &kops[stuck];
    let end = s.complete.unwrap_or(s.invoke);
    // The smallest prefix that cannot be linearized: every op invoked before `stuck` returned.
    let mut prefix: Vec<u64> = kops
        .iter()
        .filter(|o| o.invoke < end)
        .flat_map(|o| std::iter::once(o.invoke).chain(o.complete))
        .filter(|i| *i <= end)
        .collect();
    prefix.sort_unstable();
    let n = prefix.len();
    if n > MAX_LISTED {
        prefix.drain(..n - MAX_LISTED);
    }
    let values: Vec<String> = possible.iter().map(|v| show(*v)).collect();
    let detail = format!(
        "{} but the only possible values were {{{}}}; history up to index {end} \
         ({} ops on k{key}) cannot be linearized{}",
        s.describe(key),
        values.join(", "),
        kops.iter().filter(|o| o.invoke < end).count(),
        if n > MAX_LISTED {
            format!(" (listing the last {MAX_LISTED} of {n} indices)")
        } else {
            String::new()
        }
    );
    Anomaly {
        kind: "nonlinearizable".into(),
        detail,
        ops: prefix,
    }
}
