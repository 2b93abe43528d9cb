//! Checker `namespace`: namespace invariants against a replay of the change log. The history
//! schema is documented in `workload::namespace`. The change log ("log-event" observations,
//! complete up to the "log-end" revision) is replayed in revision order into a model tree
//! ([`model::Tree`]) starting from the "ns-start" snapshot, and:
//! - every `ok` write appears in the log at its revision with its effect and inode
//!   ("lost-write", "wrong-revision"); two acknowledged writes never share a revision, and a
//!   write acknowledged after another was invoked has a higher revision ("wrong-revision");
//! - every change in the log belongs to an `ok` write at that revision or to an `info` write
//!   with the same effect ("phantom-change"), never to a `fail`ed one ("failed-write-applied");
//! - every `ok` read equals the model at the read's revision ("wrong-read") and that revision
//!   is at least the revision of every operation that completed before the read was invoked
//!   ("stale-read");
//! - every definite refusal (NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION,
//!   INVALID_ARGUMENT) is what the model answers at some revision of the op's real-time window
//!   ("unjustified-refusal");
//! - after every revision the tree has no cycle ("tree-cycle"), one object per name
//!   ("duplicate-name") and no orphan ("orphan"); events that do not fit the model are
//!   "invalid-log";
//! - the final reads cover every directory of the replay's final state ("final-mismatch").
//!
//! Submodules: `model` (the tree and metad's refusal rules), `parse` (history → ops, log).

pub mod model;
mod parse;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};

use serde_json::{json, Value};

use crate::check::{Anomaly, CheckResult, Validity};
use crate::history::{History, OpType};
use model::{Kind, NsOp, Tree};
use parse::{effects, group_items, main_ino, matches, parse, str_of, Rec};
pub use parse::{parse_event, parse_op};

const NAME: &str = "namespace";

/// Codes that are definite refusals whose justification the checker verifies.
const DEFINITE: [&str; 4] = [
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "FAILED_PRECONDITION",
    "INVALID_ARGUMENT",
];

fn anomaly(kind: &str, detail: String, ops: Vec<u64>) -> Anomaly {
    Anomaly {
        kind: kind.to_string(),
        detail,
        ops,
    }
}

/// Runs the namespace checker.
pub fn check(history: &History) -> CheckResult {
    let p = match parse(history) {
        Ok(p) => p,
        Err(msg) => {
            return CheckResult {
                checker: NAME.into(),
                validity: Validity::Unknown,
                anomalies: vec![anomaly("incomplete-history", msg, vec![])],
                stats: json!({}),
            }
        }
    };
    let mut an = Vec::new();
    let writes: Vec<usize> = (0..p.recs.len())
        .filter(|&i| !p.recs[i].op.is_read())
        .collect();

    // (a) acknowledged writes are in the log at their revision, with their effect.
    let mut owner: HashMap<u64, usize> = HashMap::new();
    for &i in &writes {
        let r = &p.recs[i];
        if r.outcome != OpType::Ok {
            continue;
        }
        let Some(rev) = r.rev else {
            an.push(anomaly(
                "wrong-revision",
                format!("{:?}: ok without a revision", r.op),
                r.indices(),
            ));
            continue;
        };
        let replaced = r.value.get("replaced").map(|v| !v.is_null());
        let Some(g) = p.groups.get(&rev) else {
            an.push(anomaly(
                "lost-write",
                format!("{:?} acknowledged at rev {rev}, but the log has no change there (log up to {})", r.op, p.log_end),
                r.indices(),
            ));
            continue;
        };
        let got = group_items(g);
        if !effects(&r.op, replaced).iter().any(|e| matches(e, &got)) {
            an.push(anomaly(
                "wrong-revision",
                format!(
                    "{:?} acknowledged at rev {rev}, but the log has {got:?} there",
                    r.op
                ),
                r.indices(),
            ));
        } else if r.ino.is_some() && main_ino(&r.op, g) != r.ino {
            an.push(anomaly(
                "wrong-revision",
                format!(
                    "{:?} at rev {rev} reported inode {:?}, the log has {:?}",
                    r.op,
                    r.ino,
                    main_ino(&r.op, g)
                ),
                r.indices(),
            ));
        } else if let Some(&other) = owner.get(&rev) {
            let mut ops = r.indices();
            ops.extend(p.recs[other].indices());
            an.push(anomaly(
                "wrong-revision",
                format!("two acknowledged writes at rev {rev}"),
                ops,
            ));
        } else {
            owner.insert(rev, i);
        }
    }

    // (d), (e) real-time bounds: revisions seen before an op was invoked / after it ended.
    let mut order: Vec<(u64, bool, usize)> = Vec::new();
    for (i, r) in p.recs.iter().enumerate() {
        order.push((r.inv.index, true, i));
        if let Some(d) = r.done {
            order.push((d.index, false, i));
        }
    }
    order.sort();
    let mut lo = vec![p.start_rev; p.recs.len()];
    let mut max_rev = p.start_rev;
    for &(_, is_inv, i) in &order {
        let r = &p.recs[i];
        if is_inv {
            lo[i] = max_rev;
        } else if r.outcome == OpType::Ok {
            max_rev = max_rev.max(r.rev.unwrap_or(0));
        }
    }
    // ok ops by invocation index, with the suffix minimum of their revisions.
    let mut oks: Vec<(u64, u64)> = p
        .recs
        .iter()
        .filter(|r| r.outcome == OpType::Ok)
        .filter_map(|r| r.rev.map(|v| (r.inv.index, v)))
        .collect();
    oks.sort();
    let mut suffix_min = vec![u64::MAX; oks.len() + 1];
    for k in (0..oks.len()).rev() {
        suffix_min[k] = suffix_min[k + 1].min(oks[k].1);
    }

    // (b), (c) every other change belongs to an info write invoked before any revision >= its
    // own was acknowledged, never to a failed one.
    let mut used: HashSet<usize> = HashSet::new();
    for (&rev, g) in &p.groups {
        if rev <= p.start_rev || owner.contains_key(&rev) {
            continue;
        }
        let got = group_items(g);
        if got.is_empty() {
            continue; // attribute-only changes are not the workload's
        }
        let candidates = |kind: OpType| {
            writes.iter().copied().find(|&i| {
                let r = &p.recs[i];
                r.outcome == kind
                    && lo[i] < rev
                    && !used.contains(&i)
                    && effects(&r.op, None).iter().any(|e| matches(e, &got))
            })
        };
        let evs: Vec<u64> = g.iter().map(|e| e.index).collect();
        if let Some(i) = candidates(OpType::Info) {
            used.insert(i);
        } else if let Some(i) = candidates(OpType::Fail) {
            let mut ops = p.recs[i].indices();
            ops.extend(evs);
            an.push(anomaly(
                "failed-write-applied",
                format!(
                    "{:?} failed ({:?}) but the log applies it at rev {rev}",
                    p.recs[i].op, p.recs[i].code
                ),
                ops,
            ));
        } else {
            an.push(anomaly(
                "phantom-change",
                format!("rev {rev}: {got:?} belongs to no invoked operation"),
                evs,
            ));
        }
    }

    let revs: Vec<u64> = p
        .groups
        .keys()
        .copied()
        .filter(|&r| r > p.start_rev)
        .collect();
    let epoch = |r: u64| revs.partition_point(|&g| g <= r);
    let n = revs.len();
    let mut reads_at: Vec<Vec<usize>> = vec![Vec::new(); n + 1];
    let mut refusals_from: Vec<Vec<(usize, usize)>> = vec![Vec::new(); n + 1];
    let (mut reads, mut refusals) = (0u64, 0u64);
    for (i, r) in p.recs.iter().enumerate() {
        match (r.outcome, r.rev) {
            (OpType::Ok, Some(rev)) if r.op.is_read() => {
                if rev < lo[i] {
                    an.push(anomaly(
                        "stale-read",
                        format!(
                            "{:?} read rev {rev}, but rev {} was acknowledged before it began",
                            r.op, lo[i]
                        ),
                        r.indices(),
                    ));
                }
                if rev > p.log_end {
                    an.push(anomaly(
                        "stale-read",
                        format!(
                            "{:?} read rev {rev}, beyond the final revision {}",
                            r.op, p.log_end
                        ),
                        r.indices(),
                    ));
                } else if rev >= p.start_rev {
                    reads_at[epoch(rev)].push(i);
                    reads += 1;
                }
            }
            (OpType::Ok, Some(rev)) if rev <= lo[i] => an.push(anomaly(
                "wrong-revision",
                format!(
                    "{:?} committed at rev {rev}, not after rev {} acknowledged before it began",
                    r.op, lo[i]
                ),
                r.indices(),
            )),
            (OpType::Fail, _) if r.code.as_deref().is_some_and(|c| DEFINITE.contains(&c)) => {
                let c = r.done.map_or(u64::MAX, |d| d.index);
                let k = oks.partition_point(|&(inv, _)| inv <= c);
                let hi = suffix_min[k].min(p.log_end);
                let (s, e) = (epoch(lo[i]), epoch(hi).max(epoch(lo[i])));
                refusals_from[s].push((i, e));
                refusals += 1;
            }
            _ => {}
        }
    }

    let mut tree = Tree::new(&p.base);
    let mut initial = p.initial.clone();
    initial.sort_by_key(|(path, _, _)| path.matches('/').count());
    for (path, ino, kind) in &initial {
        let res = match tree
            .components(path)
            .and_then(|c| c.split_last().map(|(n, d)| (n.to_string(), d.join("/"))))
        {
            Some((name, dir)) => {
                let parent = if dir.is_empty() {
                    Ok(Some(model::ROOT))
                } else {
                    tree.resolve(&format!("{}/{dir}", p.base))
                };
                match parent {
                    Ok(Some(par)) => tree.insert(par, &name, *ino, *kind),
                    _ => Err(("invalid-log", format!("initial entry {path} has no parent"))),
                }
            }
            None => Err((
                "invalid-log",
                format!("initial entry {path} is outside {}", p.base),
            )),
        };
        if let Err((k, d)) = res {
            an.push(anomaly(k, d, vec![]));
        }
    }

    let mut active: Vec<(usize, usize)> = Vec::new();
    for k in 0..=n {
        if k > 0 {
            let g = &p.groups[&revs[k - 1]];
            if let Err((kind, d)) = tree.apply(g) {
                an.push(anomaly(kind, d, g.iter().map(|e| e.index).collect()));
            }
        }
        for &i in &reads_at[k] {
            if let Some(d) = read_mismatch(&tree, &p.recs[i]) {
                an.push(anomaly("wrong-read", d, p.recs[i].indices()));
            }
        }
        active.extend(refusals_from[k].iter().copied());
        active.retain(|&(i, end)| {
            let r = &p.recs[i];
            if tree.refusal(&r.op) == r.code.as_deref() {
                return false;
            }
            if end <= k {
                an.push(anomaly(
                    "unjustified-refusal",
                    format!("{:?} refused with {:?}, but no state in its window (revs {}..) refuses it that way", r.op, r.code, lo[i]),
                    r.indices(),
                ));
                return false;
            }
            true
        });
    }

    // (f) the final reads cover the final tree.
    let finals: HashSet<&str> = p
        .recs
        .iter()
        .filter(|r| r.outcome == OpType::Ok && r.value.get("final") == Some(&Value::Bool(true)))
        .filter_map(|r| match &r.op {
            NsOp::ReadDir(d) => Some(d.as_str()),
            _ => None,
        })
        .collect();
    if !finals.is_empty() {
        for d in tree.dirs() {
            if !finals.contains(d.as_str()) {
                an.push(anomaly(
                    "final-mismatch",
                    format!(
                        "directory {d} exists after the replay but the final read did not find it"
                    ),
                    vec![],
                ));
            }
        }
    }

    let stats = json!({
        "ops": p.recs.len(),
        "writes": writes.len(),
        "log_revisions": n,
        "start_rev": p.start_rev,
        "log_end": p.log_end,
        "reads_checked": reads,
        "refusals_checked": refusals,
        "info_writes_applied": used.len(),
        "final_reads": finals.len(),
        "final_objects": tree.entries().len(),
    });
    CheckResult::from_anomalies(NAME, an, stats)
}

/// How an `ok` read differs from the model, if it does.
fn read_mismatch(tree: &Tree, r: &Rec) -> Option<String> {
    let rev = r.rev.unwrap_or(0);
    match &r.op {
        NsOp::ReadDir(path) => {
            let got: Vec<(String, u64, String)> = r
                .value
                .get("entries")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|e| {
                    (
                        e.get(0).and_then(Value::as_str).unwrap_or("").to_string(),
                        e.get(1).and_then(Value::as_u64).unwrap_or(0),
                        e.get(2).and_then(Value::as_str).unwrap_or("").to_string(),
                    )
                })
                .collect();
            match tree.list(path) {
                Ok(want) => {
                    let want: Vec<(String, u64, String)> = want
                        .into_iter()
                        .map(|(n, i, k)| (n, i, k.as_str().to_string()))
                        .collect();
                    (want != got).then(|| {
                        format!("read_dir {path} at rev {rev} returned {got:?}, the replay has {want:?}")
                    })
                }
                Err(c) => Some(format!(
                    "read_dir {path} at rev {rev} returned {got:?}, the replay says {c}"
                )),
            }
        }
        NsOp::Stat(path) => {
            let got = (r.ino, str_of(&r.value, "kind"));
            match tree.resolve(path) {
                Ok(Some(i)) => {
                    let want = (Some(i), tree.kind(i).map_or("", Kind::as_str).to_string());
                    (want != got).then(|| {
                        format!(
                            "stat {path} at rev {rev} returned {got:?}, the replay has {want:?}"
                        )
                    })
                }
                other => Some(format!(
                    "stat {path} at rev {rev} returned {got:?}, the replay has {other:?}"
                )),
            }
        }
        _ => None,
    }
}
