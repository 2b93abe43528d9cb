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
mod tests {
    use super::*;

    /// Builds hand-made histories; each op completes right after its invocation unless
    /// started with `begin` and finished with `end`.
    struct H {
        ops: Vec<Op>,
    }

    impl H {
        fn new() -> Self {
            H { ops: Vec::new() }
        }
        fn push(&mut self, p: u64, kind: OpType, f: &str, v: Value) -> u64 {
            let index = self.ops.len() as u64;
            self.ops.push(Op {
                index,
                time_ns: index,
                process: p,
                kind,
                f: f.into(),
                value: v,
                node: Some(1),
                error: None,
            });
            index
        }
        fn begin(&mut self, p: u64, f: &str, v: Value) -> u64 {
            self.push(p, OpType::Invoke, f, v)
        }
        fn end(&mut self, p: u64, kind: OpType, f: &str, v: Value) -> u64 {
            self.push(p, kind, f, v)
        }
        fn op(&mut self, p: u64, kind: OpType, f: &str, inv: Value, done: Value) {
            self.begin(p, f, inv);
            self.end(p, kind, f, done);
        }
        fn import(&mut self, paths: &[&str]) {
            let v = json!({"silo": "a", "paths": paths});
            self.op(0, OpType::Ok, "import", v.clone(), v);
        }
        fn claim(&mut self, p: u64, agent: &str, mv: u64, token: u64) {
            let inv = json!({"agent": agent, "lease": p, "silo": "b"});
            let mut done = inv.clone();
            done["tasks"] = json!([{"move": mv, "token": token, "gen": 1, "path": "/f"}]);
            self.op(p, OpType::Ok, "claim", inv, done);
        }
        fn commit(&mut self, p: u64, mv: u64, token: u64, kind: OpType, outcome: &str) {
            let inv = json!({"agent": format!("ag{p}"), "move": mv, "token": token, "gen": 1});
            let mut done = inv.clone();
            done["outcome"] = json!(outcome);
            self.op(p, kind, "commit", inv, done);
        }
        fn locate(&mut self, path: &str, valid: &[&str], fin: bool) {
            let inv = json!({"path": path, "final": fin});
            let mut done = inv.clone();
            done["found"] = json!(true);
            done["instances"] = json!(valid
                .iter()
                .map(|s| json!({"silo": s, "state": "valid"}))
                .collect::<Vec<_>>());
            self.op(9, OpType::Ok, "locate", inv, done);
        }
        fn finals(&mut self, moves: Value) {
            let inv = json!({"final": true});
            let mut done = inv.clone();
            done["moves"] = moves;
            self.op(9, OpType::Ok, "final-moves", inv, done);
        }
        fn check(self) -> CheckResult {
            check(&History::new(self.ops))
        }
    }

    fn kinds(r: &CheckResult) -> Vec<&str> {
        r.anomalies.iter().map(|a| a.kind.as_str()).collect()
    }

    fn mv(id: u64, state: &str, mode: &str, target: &str) -> Value {
        json!({"id": id, "state": state, "mode": mode, "target": target, "path": "/f"})
    }

    /// A paused agent's stale commit is refused; the new claimer commits; the move finishes.
    fn valid_history() -> H {
        let mut h = H::new();
        h.import(&["/f", "/g"]);
        h.locate("/f", &["a"], false);
        h.claim(1, "b-0", 7, 10);
        h.claim(2, "b-1", 7, 11); // after b-0's lease expired
        h.commit(1, 7, 10, OpType::Fail, "refused");
        h.locate("/f", &["a"], false);
        h.commit(2, 7, 11, OpType::Ok, "committed");
        h.locate("/f", &["b"], false);
        // A move done without an ok commit (its commit was info) is fine.
        h.claim(3, "c-0", 8, 12);
        h.commit(3, 8, 12, OpType::Info, "");
        h.locate("/f", &["b"], true);
        h.locate("/g", &["a", "c"], true);
        h.finals(json!([
            mv(7, "done", "move", "b"),
            mv(8, "done", "copy", "c")
        ]));
        h
    }

    #[test]
    fn valid_history_passes() {
        let r = valid_history().check();
        assert!(r.is_valid(), "{:?}", r.anomalies);
        assert_eq!(r.stats["commits_ok"], 1);
        assert_eq!(r.stats["final_locates"], 2);
    }

    #[test]
    fn concurrent_claim_and_commit_is_not_stale() {
        // The newer claim completes only after the old token's commit was invoked: the commit
        // may have been applied first, so it is not an anomaly.
        let mut h = H::new();
        h.import(&["/f"]);
        h.claim(1, "b-0", 7, 10);
        h.begin(1, "commit", json!({"move": 7, "token": 10, "agent": "b-0"}));
        h.claim(2, "b-1", 7, 11);
        h.end(
            1,
            OpType::Ok,
            "commit",
            json!({"move": 7, "token": 10, "outcome": "committed"}),
        );
        let r = h.check();
        assert!(r.is_valid(), "{:?}", r.anomalies);
    }

    #[test]
    fn stale_token_commit_is_reported() {
        let mut h = H::new();
        h.import(&["/f"]);
        h.claim(1, "b-0", 7, 10);
        h.claim(2, "b-1", 7, 11);
        h.commit(1, 7, 10, OpType::Ok, "committed");
        h.commit(2, 7, 11, OpType::Fail, "refused");
        let r = h.check();
        assert_eq!(kinds(&r), ["stale-token-committed"], "{:?}", r.anomalies);
    }

    #[test]
    fn two_acknowledged_tokens_are_a_double_commit() {
        let mut h = H::new();
        h.import(&["/f"]);
        h.claim(1, "b-0", 7, 10);
        h.commit(1, 7, 10, OpType::Ok, "committed");
        h.claim(2, "b-1", 7, 11);
        h.commit(2, 7, 11, OpType::Ok, "committed");
        let r = h.check();
        assert!(kinds(&r).contains(&"double-commit"), "{:?}", r.anomalies);
        // The same token acknowledged twice (an idempotent retry) is not.
        let mut h = H::new();
        h.claim(1, "b-0", 7, 10);
        h.commit(1, 7, 10, OpType::Ok, "committed");
        h.commit(1, 7, 10, OpType::Ok, "committed");
        assert!(h.check().is_valid());
    }

    #[test]
    fn a_locate_without_a_valid_copy_is_reported() {
        let mut h = H::new();
        h.import(&["/f"]);
        h.locate("/f", &[], false);
        let r = h.check();
        assert_eq!(kinds(&r), ["no-valid-copy"]);
        // Only valid instances count, and a missing file counts as none.
        let mut h = H::new();
        h.import(&["/f", "/g"]);
        h.op(
            9,
            OpType::Ok,
            "locate",
            json!({"path": "/f"}),
            json!({"path": "/f", "found": true, "instances": [{"silo": "a", "state": "releasing"}]}),
        );
        h.op(
            9,
            OpType::Ok,
            "locate",
            json!({"path": "/g", "final": true}),
            json!({"path": "/g", "found": false, "instances": []}),
        );
        assert_eq!(kinds(&h.check()), ["no-valid-copy", "no-valid-copy"]);
        // A failed locate says nothing.
        let mut h = H::new();
        h.import(&["/f"]);
        h.op(
            9,
            OpType::Fail,
            "locate",
            json!({"path": "/f"}),
            json!({"path": "/f"}),
        );
        assert!(h.check().is_valid());
    }

    #[test]
    fn a_lost_acknowledged_commit_is_reported() {
        for state in ["failed", "cancelled", "pending"] {
            let mut h = H::new();
            h.import(&["/f"]);
            h.claim(1, "b-0", 7, 10);
            h.commit(1, 7, 10, OpType::Ok, "committed");
            h.finals(json!([mv(7, state, "copy", "b")]));
            assert_eq!(kinds(&h.check()), ["acked-commit-lost"], "{state}");
        }
        // Missing from the final list entirely.
        let mut h = H::new();
        h.claim(1, "b-0", 7, 10);
        h.commit(1, 7, 10, OpType::Ok, "committed");
        h.finals(json!([]));
        assert_eq!(kinds(&h.check()), ["acked-commit-lost"]);
    }

    #[test]
    fn an_unfinished_move_is_reported() {
        // The source is still valid after the mode-move is done.
        let mut h = H::new();
        h.import(&["/f"]);
        h.claim(1, "b-0", 7, 10);
        h.commit(1, 7, 10, OpType::Ok, "committed");
        h.locate("/f", &["a", "b"], true);
        h.finals(json!([mv(7, "done", "move", "b")]));
        assert_eq!(kinds(&h.check()), ["move-not-finished"]);
        // The target is not valid and no later mode-move retired it.
        let mut h = H::new();
        h.import(&["/f"]);
        h.claim(1, "b-0", 7, 10);
        h.commit(1, 7, 10, OpType::Ok, "committed");
        h.locate("/f", &["a"], true);
        h.finals(json!([mv(7, "releasing", "move", "b")]));
        assert_eq!(kinds(&h.check()), ["move-not-finished"]);
    }

    #[test]
    fn later_moves_of_the_same_file_explain_the_final_instances() {
        // Move 7 to b commits, then copy 8 to c commits: b and c valid is fine.
        let mut h = H::new();
        h.import(&["/f"]);
        h.claim(1, "b-0", 7, 10);
        h.commit(1, 7, 10, OpType::Ok, "committed");
        h.claim(2, "c-0", 8, 11);
        h.commit(2, 8, 11, OpType::Ok, "committed");
        h.locate("/f", &["b", "c"], true);
        h.finals(json!([
            mv(7, "done", "move", "b"),
            mv(8, "done", "copy", "c")
        ]));
        let r = h.check();
        assert!(r.is_valid(), "{:?}", r.anomalies);
        // But a copy known to have committed *before* the move does not explain c.
        let mut h = H::new();
        h.import(&["/f"]);
        h.claim(2, "c-0", 8, 11);
        h.commit(2, 8, 11, OpType::Ok, "committed");
        h.claim(1, "b-0", 7, 12);
        h.commit(1, 7, 12, OpType::Ok, "committed");
        h.locate("/f", &["b", "c"], true);
        h.finals(json!([
            mv(7, "done", "move", "b"),
            mv(8, "done", "copy", "c")
        ]));
        assert_eq!(kinds(&h.check()), ["move-not-finished"]);
        // A later mode-move to c explains b being gone.
        let mut h = H::new();
        h.import(&["/f"]);
        h.claim(1, "b-0", 7, 10);
        h.commit(1, 7, 10, OpType::Ok, "committed");
        h.claim(2, "c-0", 8, 11);
        h.commit(2, 8, 11, OpType::Ok, "committed");
        h.locate("/f", &["c"], true);
        h.finals(json!([
            mv(7, "done", "move", "b"),
            mv(8, "done", "move", "c")
        ]));
        let r = h.check();
        assert!(r.is_valid(), "{:?}", r.anomalies);
    }
}
