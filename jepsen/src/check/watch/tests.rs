//! Hand-made histories for the watch checker: one valid, one per anomaly kind.

use serde_json::{json, Value};

use super::{check, under};
use crate::check::Validity;
use crate::history::{History, Op, OpType};

#[derive(Default)]
struct H {
    ops: Vec<Op>,
    next_process: u64,
}

impl H {
    fn push(&mut self, process: u64, kind: OpType, f: &str, value: Value, node: Option<u32>) {
        self.ops.push(Op {
            node,
            ..Op::at(self.ops.len(), process, kind, f, value)
        });
    }

    fn write(&mut self, f: &str, path: &str, rev: u64) {
        let p = self.next_process;
        self.next_process += 1;
        self.push(p, OpType::Invoke, f, json!({"path": path}), None);
        self.push(
            p,
            OpType::Ok,
            f,
            json!({"path": path, "rev": rev, "ino": rev}),
            None,
        );
    }

    fn obs(&mut self, f: &str, value: Value, node: Option<u32>) {
        self.push(
            1000 + u64::from(node.unwrap_or(0)),
            OpType::Ok,
            f,
            value,
            node,
        );
    }

    fn event(&mut self, w: u32, rev: u64, kind: &str, path: &str) {
        self.obs(
            "event",
            json!({"watcher": w, "rev": rev, "kind": kind, "path": path, "old_path": "", "ino": rev}),
            Some(w),
        );
    }

    fn log(&mut self, rev: u64, kind: &str, path: &str) {
        self.obs(
            "log-event",
            json!({"rev": rev, "kind": kind, "path": path, "old_path": "", "ino": rev}),
            None,
        );
    }

    fn history(&self) -> History {
        History::new(self.ops.clone())
    }
}

/// Three watchers, writes at revs 11..=13 (12 outside the prefix), everything delivered.
fn scenario(skip: Option<(u32, u64)>) -> H {
    let mut h = H::default();
    h.obs(
        "watch-start",
        json!({"prefix": "/w", "rev": 10, "retention": 1000}),
        None,
    );
    for w in 1..=3 {
        h.obs("watcher-begin", json!({"watcher": w, "after": 10}), Some(w));
    }
    h.write("create", "/w/a", 11);
    h.write("create", "/w-other/a", 12);
    h.write("set_tags", "/w/a", 13);
    let evs = [(11, "created"), (13, "tags")];
    for w in 1..=3u32 {
        for (rev, kind) in evs {
            if skip != Some((w, rev)) {
                h.event(w, rev, kind, "/w/a");
            }
        }
    }
    for w in 1..=3 {
        h.obs(
            "watcher-end",
            json!({"watcher": w, "progress": 13}),
            Some(w),
        );
    }
    for (rev, kind) in evs {
        h.log(rev, kind, "/w/a");
    }
    h.obs("log-end", json!({"rev": 13}), None);
    h
}

fn kinds(h: &H) -> Vec<String> {
    let r = check(&h.history());
    if !r.anomalies.is_empty() {
        assert_eq!(r.validity, Validity::Invalid);
    }
    r.anomalies.iter().map(|a| a.kind.clone()).collect()
}

#[test]
fn valid_history_passes() {
    let h = scenario(None);
    let r = check(&h.history());
    assert_eq!(r.validity, Validity::Valid, "{:?}", r.anomalies);
    assert_eq!(r.stats["events_delivered"], 6);
    assert_eq!(r.stats["writes_checked"], 2);
}

#[test]
fn missing_log_is_unknown() {
    let mut h = scenario(None);
    h.ops.retain(|o| o.f != "log-end");
    assert_eq!(check(&h.history()).validity, Validity::Unknown);
}

#[test]
fn missing_revision_is_a_gap() {
    assert_eq!(kinds(&scenario(Some((2, 11)))), vec!["watch-gap"]);
}

#[test]
fn repeated_event_is_a_duplicate() {
    let mut h = scenario(None);
    h.event(1, 13, "tags", "/w/a");
    assert_eq!(kinds(&h), vec!["duplicate-event"]);
}

#[test]
fn revision_going_back_is_out_of_order() {
    let mut h = scenario(Some((3, 11)));
    h.event(3, 11, "created", "/w/a");
    assert_eq!(kinds(&h), vec!["out-of-order"]);
}

#[test]
fn node_delivering_another_event_diverges() {
    let mut h = scenario(Some((2, 13)));
    h.event(2, 13, "tags", "/w/b");
    assert_eq!(kinds(&h), vec!["divergent-event"]);
}

#[test]
fn event_outside_the_prefix_diverges() {
    let mut h = scenario(None);
    h.event(1, 12, "created", "/w-other/a");
    assert!(kinds(&h).contains(&"divergent-event".to_string()));
}

#[test]
fn acknowledged_write_missing_from_log_is_lost() {
    let mut h = scenario(None);
    h.write("create", "/w/b", 12);
    assert_eq!(kinds(&h), vec!["lost-write"]);
}

#[test]
fn watcher_behind_the_final_revision_stalled() {
    let mut h = scenario(None);
    h.ops
        .retain(|o| !(o.f == "watcher-end" && o.value["watcher"] == 3));
    h.obs(
        "watcher-end",
        json!({"watcher": 3, "progress": 12}),
        Some(3),
    );
    assert_eq!(kinds(&h), vec!["watch-stalled"]);
}

#[test]
fn compaction_within_retention_is_reported_and_outside_is_not() {
    let mut h = scenario(None);
    h.obs(
        "reconnect",
        json!({"watcher": 1, "after": 11, "code": "COMPACTED"}),
        Some(1),
    );
    assert_eq!(kinds(&h), vec!["unexpected-compaction"]);

    // With a retention of 1 revision, COMPACTED after rev 11 is legitimate, and the skipped
    // revisions are not a gap.
    let mut h = scenario(Some((1, 13)));
    if let Some(o) = h.ops.iter_mut().find(|o| o.f == "watch-start") {
        o.value["retention"] = json!(1);
    }
    let at = h.ops.iter().position(|o| o.f == "watcher-end").unwrap_or(0);
    let mut tail = h.ops.split_off(at);
    h.obs(
        "reconnect",
        json!({"watcher": 1, "after": 11, "code": "COMPACTED"}),
        Some(1),
    );
    h.ops.append(&mut tail);
    for (i, o) in h.ops.iter_mut().enumerate() {
        o.index = i as u64;
    }
    assert!(kinds(&h).is_empty(), "{:?}", kinds(&h));
}

#[test]
fn prefix_matches_component_wise() {
    assert!(under("/w", "/w"));
    assert!(under("/w", "/w/a"));
    assert!(!under("/w", "/w-other/a"));
    assert!(under("", "/x"));
}
