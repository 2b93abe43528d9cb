//! An Elle-style checker for list-append transactions (the `list-append` workload).
//!
//! A transaction is a list of micro-ops `["append", k, v]` and `["r", k, [v..]]` (the read's
//! list is `null` in the invocation and filled in by the `ok` completion). Values appended
//! to a key are unique, so each element names the transaction that appended it.
//!
//! - **Version order**: each key's order is its longest read; every read of the key must be a
//!   prefix of it, else `incompatible-order`. A read holding an element twice is
//!   `duplicate-elements`.
//! - **Non-cycle anomalies**: `G1a` (a read sees an append of a `fail`ed transaction), `G1b`
//!   (a read ends at an append that was not its transaction's last append to that key),
//!   `lost-append` (an `ok` append in no read, although a read of the key began after the
//!   append was acknowledged), `unknown-element` (a read sees a value nobody appended).
//! - **Dependency graph** over `ok` transactions and `info` ones (an `info` transaction's
//!   appends may or may not appear; appearing is evidence it committed): ww (appender of v_i
//!   -> appender of v_i+1), wr (appender of a read's last element -> reader), rw (reader
//!   that saw up to v_i -> appender of v_i+1), and with [`Config::realtime`] real-time edges
//!   (T1 completed before T2 was invoked), for strict serializability. Each strongly
//!   connected component yields one cycle, classified G0 / G1c / G-single / G2-item (see
//!   [`graph`]).

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Value};

use crate::check::{Anomaly, CheckResult};
use crate::history::{History, OpType};

pub mod graph;
#[cfg(test)]
mod tests;

use graph::{kind_name, Graph, RT, RW, WR, WW};

/// The checker's name in results.
pub const CHECKER: &str = "elle";

/// Options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Config {
    /// Add real-time edges (check strict serializability, not just serializability).
    pub realtime: bool,
}

/// One micro-op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mop {
    Append(u64, u64),
    /// A read and its result (`None` if unknown).
    Read(u64, Option<Vec<u64>>),
}

/// One transaction of the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Txn {
    pub kind: OpType,
    pub invoke: u64,
    /// Completion index (`None` if the history ended first).
    pub complete: Option<u64>,
    pub mops: Vec<Mop>,
}

/// Parses `{"mops": [...]}`; `None` if malformed.
pub fn parse_mops(v: &Value) -> Option<Vec<Mop>> {
    let mut out = Vec::new();
    for m in v.get("mops")?.as_array()? {
        let m = m.as_array()?;
        let key = m.get(1)?.as_u64()?;
        match m.first()?.as_str()? {
            "append" => out.push(Mop::Append(key, m.get(2)?.as_u64()?)),
            "r" => {
                let list = match m.get(2) {
                    None | Some(Value::Null) => None,
                    Some(l) => Some(
                        l.as_array()?
                            .iter()
                            .map(Value::as_u64)
                            .collect::<Option<Vec<_>>>()?,
                    ),
                };
                out.push(Mop::Read(key, list));
            }
            _ => return None,
        }
    }
    Some(out)
}

/// The transactions of a history (`f == "txn"`) and the number of malformed ones.
pub fn transactions(history: &History) -> (Vec<Txn>, usize) {
    let mut out = Vec::new();
    let mut bad = 0;
    for (inv, done) in history.pairs() {
        if inv.f != "txn" {
            continue;
        }
        let kind = done.map_or(OpType::Info, |d| d.kind);
        // Only an ok completion carries read results.
        let src = match done {
            Some(d) if kind == OpType::Ok => &d.value,
            _ => &inv.value,
        };
        let Some(mut mops) = parse_mops(src) else {
            bad += 1;
            continue;
        };
        if kind != OpType::Ok {
            for m in &mut mops {
                if let Mop::Read(_, r) = m {
                    *r = None;
                }
            }
        }
        out.push(Txn {
            kind,
            invoke: inv.index,
            complete: done.map(|d| d.index),
            mops,
        });
    }
    (out, bad)
}

fn anomaly(kind: &str, detail: String, ops: Vec<u64>) -> Anomaly {
    Anomaly {
        kind: kind.into(),
        detail,
        ops,
    }
}

fn show(l: &[u64]) -> String {
    let s: Vec<String> = l.iter().map(u64::to_string).collect();
    format!("[{}]", s.join(" "))
}

/// Checks with the default options (no real-time edges).
pub fn check(history: &History) -> CheckResult {
    check_with(history, Config::default())
}

/// Checks a list-append history.
pub fn check_with(history: &History, config: Config) -> CheckResult {
    let (txns, malformed) = transactions(history);
    let mut anomalies = Vec::new();
    if malformed > 0 {
        anomalies.push(anomaly(
            "malformed-op",
            format!("{malformed} txn ops have a value that does not parse"),
            Vec::new(),
        ));
    }
    let idx = |t: usize| txns[t].invoke;
    // Who appended what: (key, value) -> (txn, is the txn's last append to key).
    let mut appender: HashMap<(u64, u64), (usize, bool)> = HashMap::new();
    for (t, txn) in txns.iter().enumerate() {
        let mut last: HashMap<u64, u64> = HashMap::new();
        for m in &txn.mops {
            if let Mop::Append(k, v) = m {
                last.insert(*k, *v);
            }
        }
        for m in &txn.mops {
            if let Mop::Append(k, v) = m {
                appender.insert((*k, *v), (t, last.get(k) == Some(v)));
            }
        }
    }
    // Reads of ok txns, per key: (txn, list).
    let mut reads: BTreeMap<u64, Vec<(usize, &Vec<u64>)>> = BTreeMap::new();
    for (t, txn) in txns.iter().enumerate() {
        for m in &txn.mops {
            if let Mop::Read(k, Some(l)) = m {
                reads.entry(*k).or_default().push((t, l));
            }
        }
    }
    // Version orders.
    let mut order: BTreeMap<u64, &Vec<u64>> = BTreeMap::new();
    for (k, rs) in &reads {
        let Some(&(lt, longest)) = rs.iter().max_by_key(|(_, l)| l.len()) else {
            continue;
        };
        order.insert(*k, longest);
        let mut longest_checked = false;
        for &(t, l) in rs {
            let compatible = longest.starts_with(l);
            if !compatible {
                anomalies.push(anomaly(
                    "incompatible-order",
                    format!(
                        "key {k}: read {} (txn at {}) is not a prefix of read {} (txn at {})",
                        show(l),
                        idx(t),
                        show(longest),
                        idx(lt)
                    ),
                    vec![idx(t), idx(lt)],
                ));
            }
            // Element checks: once for the longest read (every compatible read is a prefix of
            // it) and for each incompatible read.
            let elements = !compatible || (l.len() == longest.len() && !longest_checked);
            longest_checked |= compatible && l.len() == longest.len();
            let mut sorted = if elements { l.clone() } else { Vec::new() };
            sorted.sort_unstable();
            if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
                anomalies.push(anomaly(
                    "duplicate-elements",
                    format!(
                        "key {k}: read {} (txn at {}) holds {} twice",
                        show(l),
                        idx(t),
                        w[0]
                    ),
                    vec![idx(t)],
                ));
            }
            for v in l.iter().filter(|_| elements) {
                match appender.get(&(*k, *v)) {
                    None => anomalies.push(anomaly(
                        "unknown-element",
                        format!("key {k}: txn at {} read {v}, which nobody appended", idx(t)),
                        vec![idx(t)],
                    )),
                    Some(&(a, _)) if txns[a].kind == OpType::Fail => anomalies.push(anomaly(
                        "G1a",
                        format!(
                            "key {k}: txn at {} read {v}, appended by the failed txn at {}",
                            idx(t),
                            idx(a)
                        ),
                        vec![idx(t), idx(a)],
                    )),
                    _ => {}
                }
            }
            if let Some(v) = l.last() {
                if let Some(&(a, false)) = appender.get(&(*k, *v)) {
                    if a != t {
                        anomalies.push(anomaly(
                            "G1b",
                            format!(
                                "key {k}: txn at {} read {} ending at {v}, an intermediate \
                                 append of the txn at {}",
                                idx(t),
                                show(l),
                                idx(a)
                            ),
                            vec![idx(t), idx(a)],
                        ));
                    }
                }
            }
        }
    }
    lost_appends(&txns, &reads, &order, &mut anomalies);
    let graph = build_graph(&txns, &order, &reads, &appender, config);
    let sccs = graph.sccs();
    for comp in &sccs {
        if let Some((name, cycle)) = graph.classify(comp) {
            let steps: Vec<String> = cycle
                .edges
                .iter()
                .map(|(a, b, l)| {
                    let key = l.key.map_or(String::new(), |k| format!(" on key {k}"));
                    format!(
                        "txn at {} -{}{}-> txn at {}",
                        idx(*a),
                        kind_name(l.kind),
                        key,
                        idx(*b)
                    )
                })
                .collect();
            anomalies.push(anomaly(
                &name,
                format!(
                    "cycle of {} txns (component of {}): {}",
                    cycle.edges.len(),
                    comp.len(),
                    steps.join(", ")
                ),
                cycle.edges.iter().map(|e| idx(e.0)).collect(),
            ));
        }
    }
    let stats = json!({
        "txns": txns.len(),
        "keys": order.len(),
        "edges": graph.edge_count(),
        "cyclic_components": sccs.len(),
        "realtime": config.realtime,
    });
    CheckResult::from_anomalies(CHECKER, anomalies, stats)
}

fn lost_appends(
    txns: &[Txn],
    reads: &BTreeMap<u64, Vec<(usize, &Vec<u64>)>>,
    order: &BTreeMap<u64, &Vec<u64>>,
    anomalies: &mut Vec<Anomaly>,
) {
    let in_order: HashMap<u64, std::collections::HashSet<u64>> = order
        .iter()
        .map(|(k, o)| (*k, o.iter().copied().collect()))
        .collect();
    // The latest-invoked read of each key.
    let last_read: HashMap<u64, (usize, &Vec<u64>)> = reads
        .iter()
        .filter_map(|(k, rs)| {
            rs.iter()
                .max_by_key(|(r, _)| txns[*r].invoke)
                .map(|x| (*k, *x))
        })
        .collect();
    for (t, txn) in txns.iter().enumerate() {
        let (OpType::Ok, Some(done)) = (txn.kind, txn.complete) else {
            continue;
        };
        for m in &txn.mops {
            let Mop::Append(k, v) = m else { continue };
            if in_order.get(k).is_some_and(|o| o.contains(v)) {
                continue;
            }
            // Reads are prefixes of the order, so no read saw v; did one begin after the ack?
            let later = last_read.get(k).filter(|(r, _)| txns[*r].invoke > done);
            if let Some((r, l)) = later {
                anomalies.push(anomaly(
                    "lost-append",
                    format!(
                        "key {k}: append of {v} by the txn at {} was acknowledged (at {done}) \
                         but the txn at {} invoked later read {}",
                        txns[t].invoke,
                        txns[*r].invoke,
                        show(l)
                    ),
                    vec![txns[t].invoke, txns[*r].invoke],
                ));
            }
        }
    }
}

fn build_graph(
    txns: &[Txn],
    order: &BTreeMap<u64, &Vec<u64>>,
    reads: &BTreeMap<u64, Vec<(usize, &Vec<u64>)>>,
    appender: &HashMap<(u64, u64), (usize, bool)>,
    config: Config,
) -> Graph {
    let mut g = Graph::new(txns.len());
    // A failed txn never happened: no edges to or from it.
    let live = |t: usize| txns[t].kind != OpType::Fail;
    let who = |k: u64, v: u64| appender.get(&(k, v)).map(|a| a.0).filter(|&a| live(a));
    for (k, o) in order {
        for w in o.windows(2) {
            if let (Some(a), Some(b)) = (who(*k, w[0]), who(*k, w[1])) {
                g.add(a, b, WW, Some(*k));
            }
        }
        for &(r, l) in reads.get(k).map(Vec::as_slice).unwrap_or_default() {
            if let Some(a) = l.last().and_then(|v| who(*k, *v)) {
                g.add(a, r, WR, Some(*k));
            }
            if let Some(b) = o.get(l.len()).and_then(|v| who(*k, *v)) {
                g.add(r, b, RW, Some(*k));
            }
        }
    }
    if config.realtime {
        // Edges from the frontier of most recently completed txns to each invocation.
        let mut events: Vec<(u64, bool, usize)> = Vec::new();
        for (t, txn) in txns.iter().enumerate() {
            if !live(t) {
                continue;
            }
            events.push((txn.invoke, false, t));
            if let (OpType::Ok, Some(c)) = (txn.kind, txn.complete) {
                events.push((c, true, t));
            }
        }
        events.sort_unstable();
        let mut frontier: Vec<usize> = Vec::new();
        let mut preds: HashMap<usize, Vec<usize>> = HashMap::new();
        for (_, done, t) in events {
            if done {
                let p = preds.remove(&t).unwrap_or_default();
                frontier.retain(|f| !p.contains(f));
                frontier.push(t);
            } else {
                for &f in &frontier {
                    g.add(f, t, RT, None);
                }
                preds.insert(t, frontier.clone());
            }
        }
    }
    g
}
