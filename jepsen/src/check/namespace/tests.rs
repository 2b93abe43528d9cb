//! Hand-made histories for the namespace checker: one valid, one per anomaly kind.

use serde_json::{json, Value};

use super::check;
use super::model::{Kind, NsOp, Tree};
use crate::check::Validity;
use crate::history::{History, Op, OpType};

/// Builds histories in index order.
#[derive(Default)]
struct H {
    ops: Vec<Op>,
    next_process: u64,
}

impl H {
    fn push(&mut self, process: u64, kind: OpType, f: &str, value: Value, error: Option<&str>) {
        self.ops.push(Op {
            node: Some(1),
            error: error.map(str::to_string),
            ..Op::at(self.ops.len(), process, kind, f, value)
        });
    }

    fn invoke(&mut self, f: &str, value: Value) -> u64 {
        let p = self.next_process;
        self.next_process += 1;
        self.push(p, OpType::Invoke, f, value, None);
        p
    }

    fn complete(&mut self, p: u64, kind: OpType, f: &str, value: Value) {
        let err = value
            .get("code")
            .and_then(Value::as_str)
            .map(str::to_string);
        self.push(p, kind, f, value, err.as_deref());
    }

    /// An op invoked and completed at once; `done` is merged over `inv`.
    fn op(&mut self, kind: OpType, f: &str, inv: Value, done: Value) {
        let p = self.invoke(f, inv.clone());
        let mut v = inv;
        if let (Some(m), Some(d)) = (v.as_object_mut(), done.as_object()) {
            for (k, x) in d {
                m.insert(k.clone(), x.clone());
            }
        }
        self.complete(p, kind, f, v);
    }

    /// An op that succeeded (see `op`).
    fn ok(&mut self, f: &str, inv: Value, done: Value) {
        self.op(OpType::Ok, f, inv, done);
    }

    /// A successful `f` on `path` answered at revision `rev` about inode `ino`.
    fn ok_at(&mut self, f: &str, path: &str, rev: u64, ino: u64) {
        self.ok(f, json!({"path": path}), json!({"rev": rev, "ino": ino}));
    }

    fn obs(&mut self, f: &str, value: Value) {
        self.push(999, OpType::Ok, f, value, None);
    }

    fn ev(&mut self, rev: u64, kind: &str, path: &str, old: &str, ino: u64, ik: &str) {
        self.ev_detail(rev, kind, path, old, ino, ik, "");
    }

    #[allow(clippy::too_many_arguments)]
    fn ev_detail(
        &mut self,
        rev: u64,
        kind: &str,
        path: &str,
        old: &str,
        ino: u64,
        ik: &str,
        d: &str,
    ) {
        self.obs(
            "log-event",
            json!({"rev": rev, "kind": kind, "path": path, "old_path": old, "ino": ino,
                   "inode_kind": ik, "detail": d}),
        );
    }

    fn start(&mut self) {
        self.obs(
            "ns-start",
            json!({"base": "/b", "rev": 5, "entries": [["/b/d0", 10, "dir"]]}),
        );
    }

    fn history(&self) -> History {
        History::new(self.ops.clone())
    }
}

fn kinds(h: &H) -> Vec<String> {
    let r = check(&h.history());
    r.anomalies.iter().map(|a| a.kind.clone()).collect()
}

fn assert_finds(h: &H, kind: &str) {
    let r = check(&h.history());
    assert_eq!(r.validity, Validity::Invalid, "{r:?}");
    assert!(
        r.anomalies.iter().any(|a| a.kind == kind),
        "expected {kind}, got {:?}",
        r.anomalies
    );
}

/// The valid base scenario, up to (not including) the log.
fn valid_ops(h: &mut H) {
    use OpType::*;
    h.start();
    h.op(
        Ok,
        "create",
        json!({"path": "/b/d0/x"}),
        json!({"rev": 6, "ino": 11}),
    );
    h.op(
        Ok,
        "mkdir",
        json!({"path": "/b/d0/y"}),
        json!({"rev": 7, "ino": 12}),
    );
    h.op(
        Ok,
        "rename",
        json!({"src": "/b/d0/x", "dst": "/b/d0/z", "mode": "no_replace"}),
        json!({"rev": 8, "ino": 11, "replaced": null}),
    );
    h.op(
        Fail,
        "create",
        json!({"path": "/b/d0/z"}),
        json!({"code": "ALREADY_EXISTS"}),
    );
    h.op(
        Fail,
        "unlink",
        json!({"path": "/b/d0/q"}),
        json!({"code": "NOT_FOUND"}),
    );
    h.op(
        Fail,
        "rmdir",
        json!({"path": "/b/d0"}),
        json!({"code": "FAILED_PRECONDITION"}),
    );
    let p = h.invoke("create", json!({"path": "/b/d0/w"}));
    h.complete(p, Info, "create", json!({"path": "/b/d0/w"}));
    h.op(
        Ok,
        "read_dir",
        json!({"path": "/b/d0"}),
        json!({"rev": 9, "entries": [["w", 13, "file"], ["y", 12, "dir"], ["z", 11, "file"]]}),
    );
    h.op(
        Ok,
        "stat",
        json!({"path": "/b/d0/z"}),
        json!({"rev": 9, "ino": 11, "kind": "file"}),
    );
    h.op(
        Ok,
        "rename",
        json!({"src": "/b/d0/z", "dst": "/b/d0/y", "mode": "exchange"}),
        json!({"rev": 10, "ino": 11, "replaced": 12}),
    );
    h.op(
        Ok,
        "rename",
        json!({"src": "/b/d0/w", "dst": "/b/d0/y", "mode": "replace"}),
        json!({"rev": 11, "ino": 13, "replaced": 11}),
    );
    h.op(
        Ok,
        "rmdir",
        json!({"path": "/b/d0/z"}),
        json!({"rev": 12, "ino": 12}),
    );
    h.op(
        Fail,
        "read_dir",
        json!({"path": "/b/d0/z"}),
        json!({"code": "NOT_FOUND"}),
    );
    h.op(
        Ok,
        "read_dir",
        json!({"path": "/b", "final": true}),
        json!({"rev": 12, "entries": [["d0", 10, "dir"]]}),
    );
    h.op(
        Ok,
        "read_dir",
        json!({"path": "/b/d0", "final": true}),
        json!({"rev": 12, "entries": [["y", 13, "file"]]}),
    );
}

fn valid_log(h: &mut H) {
    h.ev(6, "created", "/b/d0/x", "", 11, "file");
    h.ev(7, "created", "/b/d0/y", "", 12, "dir");
    h.ev(8, "renamed", "/b/d0/z", "/b/d0/x", 11, "file");
    h.ev(9, "created", "/b/d0/w", "", 13, "file");
    h.ev_detail(10, "renamed", "/b/d0/y", "/b/d0/z", 11, "file", "exchange");
    h.ev_detail(10, "renamed", "/b/d0/z", "/b/d0/y", 12, "dir", "exchange");
    h.ev(11, "deleted", "/b/d0/y", "", 11, "file");
    h.ev(11, "renamed", "/b/d0/y", "/b/d0/w", 13, "file");
    h.ev(12, "deleted", "/b/d0/z", "", 12, "dir");
    h.obs("log-end", json!({"rev": 12}));
}

fn valid() -> H {
    let mut h = H::default();
    valid_ops(&mut h);
    valid_log(&mut h);
    h
}

#[test]
fn valid_history_passes() {
    let h = valid();
    let r = check(&h.history());
    assert_eq!(r.validity, Validity::Valid, "{:?}", r.anomalies);
    assert_eq!(r.stats["reads_checked"], 4);
    assert_eq!(r.stats["refusals_checked"], 4);
    assert_eq!(r.stats["info_writes_applied"], 1);
}

#[test]
fn missing_log_is_unknown() {
    let mut h = H::default();
    valid_ops(&mut h);
    assert_eq!(check(&h.history()).validity, Validity::Unknown);
}

#[test]
fn acknowledged_write_missing_from_log_is_lost() {
    let mut h = valid();
    h.ok_at("create", "/b/d0/n", 13, 20);
    assert_finds(&h, "lost-write");
}

#[test]
fn write_at_another_revision_is_wrong_revision() {
    let mut h = H::default();
    h.start();
    h.ok_at("create", "/b/d0/x", 7, 11);
    h.ev(6, "created", "/b/d0/x", "", 11, "file");
    h.ev(7, "created", "/b/d0/y", "", 12, "dir");
    h.obs("log-end", json!({"rev": 7}));
    assert_finds(&h, "wrong-revision");
}

#[test]
fn wrong_inode_is_wrong_revision() {
    let mut h = H::default();
    h.start();
    h.ok_at("create", "/b/d0/x", 6, 99);
    h.ev(6, "created", "/b/d0/x", "", 11, "file");
    h.obs("log-end", json!({"rev": 6}));
    assert_finds(&h, "wrong-revision");
}

#[test]
fn failed_write_in_log_is_reported() {
    let mut h = H::default();
    h.start();
    h.op(
        OpType::Fail,
        "mkdir",
        json!({"path": "/b/d0/x"}),
        json!({"code": "NOT_FOUND"}),
    );
    h.ev(6, "created", "/b/d0/x", "", 11, "dir");
    h.obs("log-end", json!({"rev": 6}));
    assert_finds(&h, "failed-write-applied");
}

#[test]
fn change_without_operation_is_phantom() {
    let mut h = valid();
    h.ev(13, "created", "/b/d0/ghost", "", 30, "file");
    assert_finds(&h, "phantom-change");
}

#[test]
fn read_disagreeing_with_replay_is_wrong_read() {
    let mut h = H::default();
    h.start();
    h.ok_at("create", "/b/d0/x", 6, 11);
    h.ok(
        "read_dir",
        json!({"path": "/b/d0"}),
        json!({"rev": 6, "entries": []}),
    );
    h.ev(6, "created", "/b/d0/x", "", 11, "file");
    h.obs("log-end", json!({"rev": 6}));
    assert_eq!(kinds(&h), vec!["wrong-read"]);
}

#[test]
fn stat_of_wrong_inode_is_wrong_read() {
    let mut h = valid();
    h.ok(
        "stat",
        json!({"path": "/b/d0/y"}),
        json!({"rev": 12, "ino": 11, "kind": "file"}),
    );
    assert_eq!(kinds(&h), vec!["wrong-read"]);
}

#[test]
fn read_older_than_an_acknowledged_write_is_stale() {
    let mut h = H::default();
    h.start();
    h.ok_at("create", "/b/d0/x", 6, 11);
    // Correct for rev 5, but invoked after rev 6 was acknowledged.
    h.ok(
        "read_dir",
        json!({"path": "/b/d0"}),
        json!({"rev": 5, "entries": []}),
    );
    h.ev(6, "created", "/b/d0/x", "", 11, "file");
    h.obs("log-end", json!({"rev": 6}));
    assert_eq!(kinds(&h), vec!["stale-read"]);
}

#[test]
fn refusal_no_state_justifies_is_reported() {
    let mut h = H::default();
    h.start();
    h.ok_at("create", "/b/d0/x", 6, 11);
    h.op(
        OpType::Fail,
        "unlink",
        json!({"path": "/b/d0/x"}),
        json!({"code": "NOT_FOUND"}),
    );
    h.ev(6, "created", "/b/d0/x", "", 11, "file");
    h.obs("log-end", json!({"rev": 6}));
    assert_eq!(kinds(&h), vec!["unjustified-refusal"]);
}

#[test]
fn refusal_justified_inside_a_concurrent_window_passes() {
    let mut h = H::default();
    h.start();
    // unlink runs concurrently with the create: NOT_FOUND is justified by rev 5.
    let u = h.invoke("unlink", json!({"path": "/b/d0/x"}));
    h.ok_at("create", "/b/d0/x", 6, 11);
    h.complete(
        u,
        OpType::Fail,
        "unlink",
        json!({"path": "/b/d0/x", "code": "NOT_FOUND"}),
    );
    h.ev(6, "created", "/b/d0/x", "", 11, "file");
    h.obs("log-end", json!({"rev": 6}));
    assert!(kinds(&h).is_empty());
}

#[test]
fn move_into_own_subtree_is_a_cycle() {
    let mut h = H::default();
    h.start();
    h.ok_at("mkdir", "/b/d0/y", 6, 12);
    let p = h.invoke(
        "rename",
        json!({"src": "/b/d0", "dst": "/b/d0/y/d0", "mode": "replace"}),
    );
    h.complete(
        p,
        OpType::Info,
        "rename",
        json!({"src": "/b/d0", "dst": "/b/d0/y/d0", "mode": "replace"}),
    );
    h.ev(6, "created", "/b/d0/y", "", 12, "dir");
    h.ev(7, "renamed", "/b/d0/y/d0", "/b/d0", 10, "dir");
    h.obs("log-end", json!({"rev": 7}));
    assert_eq!(kinds(&h), vec!["tree-cycle"]);
}

#[test]
fn deleting_a_non_empty_directory_orphans() {
    let mut h = H::default();
    h.start();
    h.ok_at("create", "/b/d0/x", 6, 11);
    h.ok_at("rmdir", "/b/d0", 7, 10);
    h.ev(6, "created", "/b/d0/x", "", 11, "file");
    h.ev(7, "deleted", "/b/d0", "", 10, "dir");
    h.obs("log-end", json!({"rev": 7}));
    assert_finds(&h, "orphan");
}

#[test]
fn second_object_under_one_name_is_duplicate() {
    let mut h = H::default();
    h.start();
    h.ok_at("create", "/b/d0/x", 6, 11);
    h.ok_at("create", "/b/d0/x", 7, 12);
    h.ev(6, "created", "/b/d0/x", "", 11, "file");
    h.ev(7, "created", "/b/d0/x", "", 12, "file");
    h.obs("log-end", json!({"rev": 7}));
    assert_finds(&h, "duplicate-name");
}

#[test]
fn final_read_missing_a_directory_is_reported() {
    let mut h = H::default();
    h.start();
    h.ok(
        "read_dir",
        json!({"path": "/b", "final": true}),
        json!({"rev": 5, "entries": [["d0", 10, "dir"]]}),
    );
    h.obs("log-end", json!({"rev": 5}));
    assert_eq!(kinds(&h), vec!["final-mismatch"]);
}

#[test]
fn model_refusals_follow_metad_rules() {
    let mut t = Tree::new("/b");
    t.insert(0, "d", 1, Kind::Dir).expect("d");
    t.insert(1, "f", 2, Kind::File).expect("f");
    t.insert(1, "e", 3, Kind::Dir).expect("e");
    let r = |op: NsOp| t.refusal(&op);
    let s = |p: &str| p.to_string();
    assert_eq!(r(NsOp::Create(s("/b/d/f"))), Some("ALREADY_EXISTS"));
    assert_eq!(r(NsOp::Create(s("/b/x/f"))), Some("NOT_FOUND"));
    assert_eq!(r(NsOp::Create(s("/b/d/f/g"))), Some("FAILED_PRECONDITION"));
    assert_eq!(r(NsOp::Unlink(s("/b/d/e"))), Some("FAILED_PRECONDITION"));
    assert_eq!(r(NsOp::Rmdir(s("/b/d"))), Some("FAILED_PRECONDITION"));
    assert_eq!(r(NsOp::Rmdir(s("/b/d/e"))), None);
    let rename = |src: &str, dst: &str, mode: &str| NsOp::Rename {
        src: s(src),
        dst: s(dst),
        mode: s(mode),
    };
    assert_eq!(
        r(rename("/b/d", "/b/d/e/d", "replace")),
        Some("INVALID_ARGUMENT")
    );
    assert_eq!(
        r(rename("/b/d/f", "/b/d/e", "replace")),
        Some("FAILED_PRECONDITION")
    );
    assert_eq!(
        r(rename("/b/d/f", "/b/d/e", "no_replace")),
        Some("ALREADY_EXISTS")
    );
    assert_eq!(r(rename("/b/d/f", "/b/d/g", "exchange")), Some("NOT_FOUND"));
    assert_eq!(r(rename("/b/d/f", "/b/d/e", "exchange")), None);
    assert_eq!(r(NsOp::ReadDir(s("/b/d/f"))), Some("FAILED_PRECONDITION"));
}

#[test]
fn info_write_cannot_explain_an_earlier_change() {
    let mut h = H::default();
    h.start();
    h.ok_at("mkdir", "/b/d0/y", 7, 12);
    // Invoked after rev 7 was acknowledged: it cannot be the change at rev 6.
    let p = h.invoke("create", json!({"path": "/b/d0/x"}));
    h.complete(p, OpType::Info, "create", json!({"path": "/b/d0/x"}));
    h.ev(6, "created", "/b/d0/x", "", 11, "file");
    h.ev(7, "created", "/b/d0/y", "", 12, "dir");
    h.obs("log-end", json!({"rev": 7}));
    assert_eq!(kinds(&h), vec!["phantom-change"]);
}
