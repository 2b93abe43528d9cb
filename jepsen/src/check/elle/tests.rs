//! Hand-made list-append histories: one per anomaly class, and valid ones.

use serde_json::{json, Value};

use super::*;
use crate::check::linear::tests::H;
use crate::check::Validity;

fn a(k: u64, v: u64) -> Value {
    json!(["append", k, v])
}
fn r(k: u64) -> Value {
    json!(["r", k, null])
}
fn rl(k: u64, l: &[u64]) -> Value {
    json!(["r", k, l])
}

/// A transaction `p` that runs alone: invoke then ok with the read results.
fn txn(h: &mut H, p: u64, done: &[Value]) {
    begin(h, p, done);
    end(h, p, done);
}
fn begin(h: &mut H, p: u64, done: &[Value]) {
    let inv: Vec<Value> = done
        .iter()
        .map(|m| {
            if m[0] == "r" {
                r(m[1].as_u64().unwrap_or(0))
            } else {
                m.clone()
            }
        })
        .collect();
    h.inv(p, "txn", json!({ "mops": inv }));
}
fn end(h: &mut H, p: u64, done: &[Value]) {
    h.ok_v(p, json!({ "mops": done }));
}

fn kinds(h: &H, realtime: bool) -> Vec<String> {
    let res = check_with(&h.history(), Config { realtime });
    let mut k: Vec<String> = res.anomalies.iter().map(|a| a.kind.clone()).collect();
    k.dedup();
    if res.validity == Validity::Valid {
        assert!(k.is_empty());
    }
    k
}

#[test]
fn serial_history_is_valid_even_with_realtime() {
    let mut h = H::default();
    txn(&mut h, 0, &[rl(1, &[]), a(1, 1)]);
    txn(&mut h, 1, &[rl(1, &[1]), a(1, 2), a(2, 1)]);
    txn(&mut h, 2, &[a(1, 3), rl(1, &[1, 2, 3])]);
    // Concurrent txns that serialize.
    begin(&mut h, 3, &[rl(2, &[1]), a(2, 2)]);
    begin(&mut h, 4, &[rl(2, &[1, 2])]);
    end(&mut h, 4, &[rl(2, &[1, 2])]);
    end(&mut h, 3, &[rl(2, &[1]), a(2, 2)]);
    txn(&mut h, 5, &[rl(1, &[1, 2, 3]), rl(2, &[1, 2])]);
    assert_eq!(kinds(&h, false), Vec::<String>::new());
    assert_eq!(kinds(&h, true), Vec::<String>::new());
}

#[test]
fn info_appends_may_or_may_not_appear() {
    let mut h = H::default();
    h.inv(0, "txn", json!({"mops": [a(1, 1)]})).info(0);
    h.inv(1, "txn", json!({"mops": [a(1, 5)]})).info(1);
    h.inv(2, "txn", json!({"mops": [a(1, 2)]})); // never completes
    txn(&mut h, 3, &[rl(1, &[1, 2])]);
    assert_eq!(kinds(&h, true), Vec::<String>::new());
}

#[test]
fn g0_write_cycle() {
    let mut h = H::default();
    begin(&mut h, 0, &[a(1, 1), a(2, 1)]);
    begin(&mut h, 1, &[a(1, 2), a(2, 2)]);
    end(&mut h, 0, &[a(1, 1), a(2, 1)]);
    end(&mut h, 1, &[a(1, 2), a(2, 2)]);
    txn(&mut h, 2, &[rl(1, &[1, 2]), rl(2, &[2, 1])]);
    let res = check(&h.history());
    assert_eq!(res.validity, Validity::Invalid);
    let g0 = res.anomalies.iter().find(|x| x.kind == "G0").expect("G0");
    assert!(g0.detail.contains("-ww on key 1->"), "{}", g0.detail);
    assert_eq!(g0.ops.len(), 2);
}

#[test]
fn g1c_circular_information_flow() {
    let mut h = H::default();
    begin(&mut h, 0, &[a(1, 1), rl(2, &[1])]);
    begin(&mut h, 1, &[a(2, 1), rl(1, &[1])]);
    end(&mut h, 0, &[a(1, 1), rl(2, &[1])]);
    end(&mut h, 1, &[a(2, 1), rl(1, &[1])]);
    assert_eq!(kinds(&h, false), vec!["G1c"]);
}

#[test]
fn g_single_read_skew() {
    let mut h = H::default();
    txn(&mut h, 0, &[a(1, 1), a(2, 1)]);
    begin(&mut h, 1, &[a(1, 2), a(2, 2)]);
    begin(&mut h, 2, &[rl(1, &[1]), rl(2, &[1, 2])]);
    end(&mut h, 1, &[a(1, 2), a(2, 2)]);
    end(&mut h, 2, &[rl(1, &[1]), rl(2, &[1, 2])]);
    txn(&mut h, 3, &[rl(1, &[1, 2])]);
    assert_eq!(kinds(&h, false), vec!["G-single"]);
}

#[test]
fn g2_item_write_skew() {
    let mut h = H::default();
    begin(&mut h, 0, &[rl(1, &[]), rl(2, &[]), a(1, 1)]);
    begin(&mut h, 1, &[rl(1, &[]), rl(2, &[]), a(2, 1)]);
    end(&mut h, 0, &[rl(1, &[]), rl(2, &[]), a(1, 1)]);
    end(&mut h, 1, &[rl(1, &[]), rl(2, &[]), a(2, 1)]);
    txn(&mut h, 2, &[rl(1, &[1]), rl(2, &[1])]);
    assert_eq!(kinds(&h, false), vec!["G2-item"]);
}

#[test]
fn stale_read_is_only_a_realtime_cycle() {
    let mut h = H::default();
    txn(&mut h, 0, &[a(1, 1)]);
    txn(&mut h, 1, &[a(1, 2)]);
    txn(&mut h, 2, &[rl(1, &[1])]);
    txn(&mut h, 3, &[rl(1, &[1, 2])]);
    assert_eq!(kinds(&h, false), Vec::<String>::new());
    assert_eq!(kinds(&h, true), vec!["G-single-realtime"]);
}

#[test]
fn g1a_aborted_read() {
    let mut h = H::default();
    h.inv(0, "txn", json!({"mops": [a(1, 1)]})).fail(0);
    txn(&mut h, 1, &[rl(1, &[1])]);
    assert_eq!(kinds(&h, false), vec!["G1a"]);
}

#[test]
fn g1b_intermediate_read() {
    let mut h = H::default();
    begin(&mut h, 0, &[a(1, 1), a(1, 2)]);
    txn(&mut h, 1, &[rl(1, &[1])]);
    end(&mut h, 0, &[a(1, 1), a(1, 2)]);
    txn(&mut h, 2, &[rl(1, &[1, 2])]);
    assert!(kinds(&h, false).contains(&"G1b".to_string()));
}

#[test]
fn incompatible_orders_and_duplicates() {
    let mut h = H::default();
    txn(&mut h, 0, &[a(1, 1)]);
    begin(&mut h, 1, &[a(1, 2)]);
    begin(&mut h, 2, &[a(1, 3)]);
    end(&mut h, 1, &[a(1, 2)]);
    end(&mut h, 2, &[a(1, 3)]);
    txn(&mut h, 3, &[rl(1, &[1, 2])]);
    txn(&mut h, 4, &[rl(1, &[1, 3])]);
    assert!(kinds(&h, false).contains(&"incompatible-order".to_string()));
    let mut h = H::default();
    txn(&mut h, 0, &[a(1, 1)]);
    txn(&mut h, 1, &[rl(1, &[1, 1])]);
    assert!(kinds(&h, false).contains(&"duplicate-elements".to_string()));
}

#[test]
fn lost_append_and_unknown_element() {
    let mut h = H::default();
    txn(&mut h, 0, &[a(1, 1)]);
    txn(&mut h, 1, &[a(1, 2)]);
    txn(&mut h, 2, &[rl(1, &[2])]);
    assert!(kinds(&h, false).contains(&"lost-append".to_string()));
    // A concurrent read may miss it.
    let mut h = H::default();
    begin(&mut h, 1, &[rl(1, &[])]);
    txn(&mut h, 0, &[a(1, 1)]);
    end(&mut h, 1, &[rl(1, &[])]);
    assert_eq!(kinds(&h, false), Vec::<String>::new());
    let mut h = H::default();
    txn(&mut h, 0, &[rl(1, &[42])]);
    assert_eq!(kinds(&h, false), vec!["unknown-element"]);
}
