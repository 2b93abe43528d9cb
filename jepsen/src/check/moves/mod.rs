//! Checker `moves`: judges a history of the `moves` workload (its `f`/`value` schema is in
//! [`crate::workload::moves`]) against DESIGN §5 invariants 3 and 4.
//!
//! Invariant 4 (fencing):
//! - `stale-token-committed`: a commit acknowledged `ok` with token `t` for move `m`, although
//!   a claim of `m` granting a newer token `t' > t` (tokens come from one global counter) was
//!   acknowledged before the commit was invoked: from then on `t` can never be current again.
//! - `double-commit`: two `ok` commits of one move with different tokens (the same token
//!   acknowledged twice is an idempotent retry and fine).
//!
//! Invariant 3 (a file always has a valid copy) and durability of acknowledged commits:
//! - `no-valid-copy`: an `ok` locate (main phase or final) of an imported file that shows no
//!   `valid` instance, or says the file does not exist.
//! - `acked-commit-lost`: a move with an `ok` commit whose final state is not `releasing` or
//!   `done` (failed, cancelled, pending, claimed, copying, or missing from the final list).
//!   A move `done` without any `ok` commit is fine (its commit may have been an `info`).
//! - `move-not-finished`: a mode-move reported `releasing`/`done` at the end whose file's
//!   final valid instances are not only its target (allowing the targets of other moves of
//!   the file that committed and are not known to have committed before it), or whose target
//!   is not valid although no other mode-move of the file could have retired it since.
//! - `stuck-releasing` (liveness): a move still `releasing` at the end although no instance
//!   of its file is `releasing` in the final `final-instances` listings (taken with every
//!   agent stopped, one before and one after the final list of moves, so a late write
//!   applied in between cannot fake it): nothing can ever finish it.
//!
//! Only `ok` completions are evidence of success; `info` may or may not have happened.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use crate::check::{Anomaly, CheckResult};
use crate::history::{History, Op, OpType};

const NAME: &str = "moves";

/// A commit of the history: its move, token, invocation index and completion.
struct Commit<'a> {
    mv: u64,
    token: u64,
    invoke: &'a Op,
    done: Option<&'a Op>,
}

impl Commit<'_> {
    fn ok(&self) -> bool {
        self.done.map(|d| d.kind) == Some(OpType::Ok)
            && self
                .done
                .and_then(|d| d.value.get("outcome"))
                .and_then(Value::as_str)
                == Some("committed")
    }
    fn done_index(&self) -> u64 {
        self.done.map(|d| d.index).unwrap_or(u64::MAX)
    }
}

/// A token granted by an `ok` claim.
struct Grant {
    token: u64,
    /// Index of the claim's `ok` completion.
    acked: u64,
}

/// The final record of one move.
#[derive(Debug, Clone)]
struct FinalMove {
    state: String,
    mode: String,
    target: String,
    path: String,
    op: u64,
}

fn u(v: &Value, k: &str) -> Option<u64> {
    v.get(k).and_then(Value::as_u64)
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn arr<'a>(v: &'a Value, k: &str) -> &'a [Value] {
    v.get(k)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// Runs the checker.
pub fn check(history: &History) -> CheckResult {
    let pairs = history.pairs();
    let mut anomalies = Vec::new();
    let mut files: BTreeSet<String> = BTreeSet::new();
    let mut grants: BTreeMap<u64, Vec<Grant>> = BTreeMap::new();
    let mut commits: Vec<Commit> = Vec::new();
    let mut created: BTreeSet<u64> = BTreeSet::new();
    let mut finals: BTreeMap<u64, FinalMove> = BTreeMap::new();
    let mut saw_final_list = false;
    // Paths with a releasing instance in the final per-silo listings (None: never listed).
    let mut final_releasing: Option<BTreeSet<String>> = None;
    // Final locate per path: (valid silos, op index).
    let mut final_valid: BTreeMap<String, (BTreeSet<String>, u64)> = BTreeMap::new();
    let mut locates = 0u64;
    for (inv, done) in &pairs {
        let ok = done.filter(|d| d.kind == OpType::Ok);
        match inv.f.as_str() {
            "import" => {
                if let Some(d) = ok {
                    for p in arr(&d.value, "paths") {
                        files.insert(p.as_str().unwrap_or("").to_string());
                    }
                }
            }
            "create-move" => {
                if let Some(d) = ok {
                    created.extend(arr(&d.value, "moves").iter().filter_map(|m| u(m, "id")));
                }
            }
            "claim" => {
                if let Some(d) = ok {
                    for t in arr(&d.value, "tasks") {
                        if let (Some(mv), Some(token)) = (u(t, "move"), u(t, "token")) {
                            created.insert(mv);
                            grants.entry(mv).or_default().push(Grant {
                                token,
                                acked: d.index,
                            });
                        }
                    }
                }
            }
            "commit" => {
                if let (Some(mv), Some(token)) = (u(&inv.value, "move"), u(&inv.value, "token")) {
                    commits.push(Commit {
                        mv,
                        token,
                        invoke: inv,
                        done: *done,
                    });
                }
            }
            "final-instances" => {
                if let Some(d) = ok {
                    let set = final_releasing.get_or_insert_with(BTreeSet::new);
                    set.extend(
                        arr(&d.value, "instances")
                            .iter()
                            .filter(|i| s(i, "state") == "releasing")
                            .map(|i| s(i, "path").to_string()),
                    );
                }
            }
            "final-moves" => {
                if let Some(d) = ok {
                    saw_final_list = true;
                    for m in arr(&d.value, "moves") {
                        if let Some(id) = u(m, "id") {
                            finals.insert(
                                id,
                                FinalMove {
                                    state: s(m, "state").to_string(),
                                    mode: s(m, "mode").to_string(),
                                    target: s(m, "target").to_string(),
                                    path: s(m, "path").to_string(),
                                    op: d.index,
                                },
                            );
                        }
                    }
                }
            }
            _ => {}
        }
    }
    // Locates, once the set of imported files is known.
    for (inv, done) in &pairs {
        let Some(d) = done.filter(|d| d.kind == OpType::Ok && inv.f == "locate") else {
            continue;
        };
        let path = s(&inv.value, "path");
        if !files.contains(path) {
            continue;
        }
        locates += 1;
        let valid: BTreeSet<String> = arr(&d.value, "instances")
            .iter()
            .filter(|i| s(i, "state") == "valid")
            .map(|i| s(i, "silo").to_string())
            .collect();
        let found = d
            .value
            .get("found")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        if !found || valid.is_empty() {
            anomalies.push(Anomaly {
                kind: "no-valid-copy".into(),
                detail: format!(
                    "locate of {path} (node {:?}) found={found} shows no valid instance: {}",
                    d.node,
                    d.value.get("instances").cloned().unwrap_or(Value::Null)
                ),
                ops: vec![inv.index, d.index],
            });
        }
        if d.value.get("final").and_then(Value::as_bool) == Some(true) {
            final_valid.insert(path.to_string(), (valid, d.index));
        }
    }

    // Invariant 4: fencing.
    let mut ok_by_move: BTreeMap<u64, Vec<&Commit>> = BTreeMap::new();
    for c in commits.iter().filter(|c| c.ok()) {
        ok_by_move.entry(c.mv).or_default().push(c);
        if let Some(newer) = grants
            .get(&c.mv)
            .into_iter()
            .flatten()
            .filter(|g| g.token > c.token && g.acked < c.invoke.index)
            .max_by_key(|g| g.token)
        {
            anomalies.push(Anomaly {
                kind: "stale-token-committed".into(),
                detail: format!(
                    "move {}: commit with token {} (agent {}) acknowledged although token {} \
                     was granted (claim acked at op {}) before the commit was invoked",
                    c.mv,
                    c.token,
                    s(&c.invoke.value, "agent"),
                    newer.token,
                    newer.acked
                ),
                ops: vec![newer.acked, c.invoke.index, c.done_index()],
            });
        }
    }
    for (mv, cs) in &ok_by_move {
        let tokens: BTreeSet<u64> = cs.iter().map(|c| c.token).collect();
        if tokens.len() > 1 {
            anomalies.push(Anomaly {
                kind: "double-commit".into(),
                detail: format!("move {mv}: commits with tokens {tokens:?} were all acknowledged"),
                ops: cs.iter().map(|c| c.done_index()).collect(),
            });
        }
    }

    // Final states against acknowledged commits.
    if saw_final_list {
        for (mv, cs) in &ok_by_move {
            let state = finals
                .get(mv)
                .map(|f| f.state.as_str())
                .unwrap_or("missing");
            if state != "releasing" && state != "done" {
                let mut ops: Vec<u64> = cs.iter().map(|c| c.done_index()).collect();
                ops.extend(finals.get(mv).map(|f| f.op));
                anomalies.push(Anomaly {
                    kind: "acked-commit-lost".into(),
                    detail: format!(
                        "move {mv}: commit with token {} was acknowledged but its final state \
                         is {state}",
                        cs[0].token
                    ),
                    ops,
                });
            }
        }
        anomalies.extend(check_finished_moves(&finals, &ok_by_move, &final_valid));
        if let Some(releasing) = &final_releasing {
            for (id, m) in finals.iter().filter(|(_, m)| m.state == "releasing") {
                if !releasing.contains(&m.path) {
                    anomalies.push(Anomaly {
                        kind: "stuck-releasing".into(),
                        detail: format!(
                            "move {id} of {} to {} is still releasing but no instance of the \
                             file is releasing any more",
                            m.path, m.target
                        ),
                        ops: vec![m.op],
                    });
                }
            }
        }
    }

    let ok_commits: usize = ok_by_move.values().map(Vec::len).sum();
    let stats = json!({
        "files": files.len(),
        "moves_created": created.len(),
        "claims_granted": grants.values().map(Vec::len).sum::<usize>(),
        "commits": commits.len(),
        "commits_ok": ok_commits,
        "stale_commits_attempted": commits
            .iter()
            .filter(|c| c.invoke.value.get("stale").and_then(Value::as_bool) == Some(true))
            .count(),
        "locates_ok": locates,
        "final_moves": finals.len(),
        "final_done": finals.values().filter(|f| f.state == "done").count(),
        "final_releasing": finals.values().filter(|f| f.state == "releasing").count(),
        "final_locates": final_valid.len(),
    });
    CheckResult::from_anomalies(NAME, anomalies, stats)
}

fn committed_state(state: &str) -> bool {
    state == "releasing" || state == "done"
}

/// `move-not-finished`: a committed mode-move leaves only its target valid, unless another
/// move of the same file may have committed after it.
fn check_finished_moves(
    finals: &BTreeMap<u64, FinalMove>,
    ok_by_move: &BTreeMap<u64, Vec<&Commit>>,
    final_valid: &BTreeMap<String, (BTreeSet<String>, u64)>,
) -> Vec<Anomaly> {
    let first_ok = |mv: u64| ok_by_move.get(&mv).and_then(|cs| cs.first());
    let mut out = Vec::new();
    for (id, m) in finals {
        if m.mode != "move" || !committed_state(&m.state) {
            continue;
        }
        let Some((valid, vop)) = final_valid.get(&m.path) else {
            continue;
        };
        // Other committed moves of the file not known to have committed before this one.
        let mine = first_ok(*id).map(|c| c.invoke.index);
        let later: Vec<(&u64, &FinalMove)> = finals
            .iter()
            .filter(|(oid, o)| *oid != id && o.path == m.path && committed_state(&o.state))
            .filter(|(oid, _)| match (first_ok(**oid), mine) {
                (Some(c), Some(mine)) => c.done_index() > mine,
                _ => true,
            })
            .collect();
        let allowed: BTreeSet<&str> = std::iter::once(m.target.as_str())
            .chain(later.iter().map(|(_, o)| o.target.as_str()))
            .collect();
        let extra: Vec<&String> = valid
            .iter()
            .filter(|v| !allowed.contains(v.as_str()))
            .collect();
        let retired = later.iter().any(|(_, o)| o.mode == "move");
        let target_missing = !valid.contains(&m.target) && !retired;
        if !extra.is_empty() || target_missing {
            out.push(Anomaly {
                kind: "move-not-finished".into(),
                detail: format!(
                    "move {id} of {} to {} is {} but the final valid instances are {valid:?}",
                    m.path, m.target, m.state
                ),
                ops: vec![m.op, *vop],
            });
        }
    }
    out
}

#[cfg(test)]
mod tests;
