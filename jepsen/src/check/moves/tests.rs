//! Hand-made histories for the `moves` checker: valid ones and one per anomaly kind.

use super::*;
use serde_json::json;

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
        let index = self.ops.len();
        self.ops.push(Op {
            node: Some(1),
            ..Op::at(index, p, kind, f, v)
        });
        index as u64
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

#[test]
fn a_move_left_releasing_with_nothing_to_release_is_reported() {
    // Two mode-moves of one file commit together; the second one's retired copy is
    // released under the first move's id, so the second stays releasing forever.
    let mut h = H::new();
    h.import(&["/f"]);
    h.claim(1, "b-0", 7, 10);
    h.claim(2, "c-0", 8, 11);
    h.commit(1, 7, 10, OpType::Ok, "committed");
    h.commit(2, 8, 11, OpType::Ok, "committed");
    h.locate("/f", &["c"], true);
    h.finals(json!([
        mv(7, "done", "move", "b"),
        mv(8, "releasing", "move", "c")
    ]));
    let listing = |h: &mut H, state: &str| {
        let inv = json!({"silo": "c", "final": true});
        let mut done = inv.clone();
        done["instances"] = json!([{"path": "/f", "state": state}]);
        h.op(9, OpType::Ok, "final-instances", inv, done);
    };
    let mut stuck = H { ops: h.ops.clone() };
    listing(&mut stuck, "valid");
    assert_eq!(kinds(&stuck.check()), ["stuck-releasing"]);
    // Still a releasing copy to delete (the drain timed out): not stuck.
    listing(&mut h, "releasing");
    assert!(h.check().is_valid());
}
