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

/// A history of `n` transactions over `keys` lists from a real serial execution: each
/// transaction takes effect atomically at an instant inside its interval; some end `info`
/// (applied or not) or `fail` (not applied).
fn generate(seed: u64, n: usize, keys: u64, procs: usize) -> History {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut free = vec![0u64; procs];
    let mut next = 1u64;
    // (start, lin, end, mops, kind)
    let mut ts: Vec<(u64, u64, u64, Vec<Value>, OpType)> = Vec::new();
    for _ in 0..n {
        let p = rng.gen_range(0..procs);
        let start = free[p] + rng.gen_range(0..3);
        let end = start + rng.gen_range(1..20);
        free[p] = end;
        let mops: Vec<Value> = (0..rng.gen_range(1..=4))
            .map(|_| {
                let k = rng.gen_range(0..keys);
                if rng.gen_bool(0.5) {
                    next += 1;
                    a(k, next)
                } else {
                    r(k)
                }
            })
            .collect();
        let kind = match rng.gen_range(0..20) {
            0 => OpType::Fail,
            1 => OpType::Info,
            _ => OpType::Ok,
        };
        let lin = start * 10 + rng.gen_range(1..(end - start) * 10);
        ts.push((start * 10, lin, end * 10, mops, kind));
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (ts[i].1, i));
    let mut lists: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for i in order {
        let t = &mut ts[i];
        let applied = t.4 == OpType::Ok || (t.4 == OpType::Info && rng.gen_bool(0.5));
        if !applied {
            continue;
        }
        for m in &mut t.3 {
            let k = m[1].as_u64().unwrap_or(0);
            let l = lists.entry(k).or_default();
            if m[0] == "append" {
                l.push(m[2].as_u64().unwrap_or(0));
            } else {
                m[2] = json!(l.clone());
            }
        }
    }
    let mut events = Vec::new();
    for (i, t) in ts.iter().enumerate() {
        events.push((t.0, 1, i));
        events.push((t.2, 0, i));
    }
    events.sort_unstable();
    let mut h = H::default();
    for (_, is_invoke, i) in events {
        let t = &ts[i];
        let p = i as u64;
        if is_invoke == 1 {
            let inv: Vec<Value> =
                t.3.iter()
                    .map(|m| {
                        if m[0] == "r" {
                            r(m[1].as_u64().unwrap_or(0))
                        } else {
                            m.clone()
                        }
                    })
                    .collect();
            h.inv(p, "txn", json!({ "mops": inv }));
        } else {
            match t.4 {
                OpType::Ok => h.ok_v(p, json!({ "mops": t.3 })),
                OpType::Fail => h.fail(p),
                _ => h.info(p),
            };
        }
    }
    h.history()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
    #[test]
    fn histories_of_serial_executions_are_strict_serializable(
        seed in proptest::prelude::any::<u64>(), n in 1usize..200, keys in 1u64..5,
        procs in 1usize..8,
    ) {
        let res = check_with(&generate(seed, n, keys, procs), Config { realtime: true });
        proptest::prop_assert_eq!(res.validity, Validity::Valid, "{:#?}", res);
    }
}

#[test]
fn timing_5k_txns() {
    let h = generate(42, 5_000, 8, 10);
    let t = std::time::Instant::now();
    let res = check_with(&h, Config { realtime: true });
    println!(
        "elle: 5k txns, 8 keys, 10 processes: {:?}, {}",
        t.elapsed(),
        res.stats
    );
    assert_eq!(res.validity, Validity::Valid, "{res:#?}");
}
