//! Hand-made histories for the linearizability checker, a property test on histories
//! generated from real sequential executions, and a timing of a 10k-op history.

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::*;
use crate::history::Op;

/// Builds a history entry by entry; history indices are positions.
#[derive(Default)]
pub(crate) struct H {
    pub ops: Vec<Op>,
    open: std::collections::HashMap<u64, (String, Value)>,
}

impl H {
    fn push(&mut self, p: u64, kind: OpType, f: &str, value: Value) {
        self.ops.push(Op::at(self.ops.len(), p, kind, f, value));
    }
    pub fn inv(&mut self, p: u64, f: &str, value: Value) -> &mut Self {
        self.open.insert(p, (f.to_string(), value.clone()));
        self.push(p, OpType::Invoke, f, value);
        self
    }
    fn done(&mut self, p: u64, kind: OpType, value: Option<Value>) -> &mut Self {
        let (f, v) = self.open.remove(&p).expect("open op");
        self.push(p, kind, &f, value.unwrap_or(v));
        self
    }
    pub fn ok(&mut self, p: u64) -> &mut Self {
        self.done(p, OpType::Ok, None)
    }
    pub fn ok_v(&mut self, p: u64, value: Value) -> &mut Self {
        self.done(p, OpType::Ok, Some(value))
    }
    pub fn fail(&mut self, p: u64) -> &mut Self {
        self.done(p, OpType::Fail, None)
    }
    pub fn info(&mut self, p: u64) -> &mut Self {
        self.done(p, OpType::Info, None)
    }
    pub fn history(&self) -> History {
        History::new(self.ops.clone())
    }
}

fn w(k: u32, v: u64) -> Value {
    json!({"key": k, "value": v})
}
fn r(k: u32) -> Value {
    json!({"key": k, "value": null})
}
fn rv(k: u32, v: Option<u64>) -> Value {
    json!({"key": k, "value": v})
}
fn cas(k: u32, from: u64, to: u64) -> Value {
    json!({"key": k, "from": from, "to": to})
}

fn verdict(h: &H) -> CheckResult {
    check(&h.history())
}

fn assert_invalid(h: &H) -> Anomaly {
    let res = verdict(h);
    assert_eq!(res.validity, Validity::Invalid, "{res:#?}");
    assert_eq!(res.anomalies[0].kind, "nonlinearizable");
    res.anomalies[0].clone()
}

#[test]
fn sequential_history_is_valid() {
    let mut h = H::default();
    h.inv(0, "read", r(0)).ok_v(0, rv(0, None));
    h.inv(0, "write", w(0, 1)).ok(0);
    h.inv(0, "read", r(0)).ok_v(0, rv(0, Some(1)));
    h.inv(0, "cas", cas(0, 1, 2)).ok(0);
    h.inv(0, "read", r(0)).ok_v(0, rv(0, Some(2)));
    h.inv(0, "cas", cas(0, 7, 8)).fail(0);
    h.inv(0, "read", r(0)).ok_v(0, rv(0, Some(2)));
    let res = verdict(&h);
    assert_eq!(res.validity, Validity::Valid, "{res:#?}");
}

#[test]
fn overlapping_writes_and_reads_seeing_either_are_valid() {
    let mut h = H::default();
    h.inv(0, "write", w(0, 1)).inv(1, "write", w(0, 2));
    h.inv(2, "read", r(0)).inv(3, "read", r(0));
    h.ok_v(2, rv(0, Some(2))).ok_v(3, rv(0, Some(1)));
    h.ok(0).ok(1);
    // After both writes: one of them is last, and reads must agree with each other.
    h.inv(2, "read", r(0)).ok_v(2, rv(0, Some(1)));
    h.inv(3, "read", r(0)).ok_v(3, rv(0, Some(1)));
    let res = verdict(&h);
    assert_eq!(res.validity, Validity::Valid, "{res:#?}");
}

#[test]
fn reads_flip_flopping_after_writes_complete_are_invalid() {
    let mut h = H::default();
    h.inv(0, "write", w(0, 1))
        .inv(1, "write", w(0, 2))
        .ok(0)
        .ok(1);
    h.inv(2, "read", r(0)).ok_v(2, rv(0, Some(1)));
    h.inv(2, "read", r(0)).ok_v(2, rv(0, Some(2)));
    assert_invalid(&h);
}

#[test]
fn stale_read_after_completed_write_is_invalid() {
    let mut h = H::default();
    h.inv(0, "write", w(3, 5)).ok(0);
    h.inv(0, "write", w(3, 6)).ok(0);
    h.inv(1, "read", r(3)).ok_v(1, rv(3, Some(5)));
    let a = assert_invalid(&h);
    assert!(
        a.detail.contains("read of k3 returned 5 at [4, 5]"),
        "{}",
        a.detail
    );
    assert!(
        a.detail.contains("the only possible values were {6}"),
        "{}",
        a.detail
    );
    assert_eq!(a.ops, vec![0, 1, 2, 3, 4, 5]);
}

#[test]
fn lost_acknowledged_write_is_invalid() {
    let mut h = H::default();
    h.inv(0, "write", w(0, 1)).ok(0);
    h.inv(1, "read", r(0)).ok_v(1, rv(0, None));
    let a = assert_invalid(&h);
    assert!(a.detail.contains("returned nothing"), "{}", a.detail);
}

#[test]
fn cas_from_a_value_never_current_is_invalid() {
    let mut h = H::default();
    h.inv(0, "write", w(0, 1)).ok(0);
    h.inv(0, "cas", cas(0, 5, 6)).ok(0);
    let a = assert_invalid(&h);
    assert!(a.detail.contains("cas of k0 from 5 to 6"), "{}", a.detail);
}

#[test]
fn info_write_whose_effect_appears_later_is_valid() {
    let mut h = H::default();
    h.inv(0, "write", w(0, 1)).ok(0);
    h.inv(1, "write", w(0, 9)).info(1);
    h.inv(2, "read", r(0)).ok_v(2, rv(0, Some(1)));
    h.inv(2, "read", r(0)).ok_v(2, rv(0, Some(9)));
    // An op with no completion at all is unknown too.
    h.inv(3, "write", w(0, 10));
    h.inv(2, "read", r(0)).ok_v(2, rv(0, Some(10)));
    let res = verdict(&h);
    assert_eq!(res.validity, Validity::Valid, "{res:#?}");
}

#[test]
fn info_write_that_never_appears_is_valid() {
    let mut h = H::default();
    h.inv(0, "write", w(0, 1)).ok(0);
    h.inv(1, "write", w(0, 9)).info(1);
    h.inv(1, "cas", cas(0, 4, 5)).info(1);
    h.inv(2, "read", r(0)).info(2); // unknown read: dropped
    h.inv(2, "read", r(0)).ok_v(2, rv(0, Some(1)));
    let res = verdict(&h);
    assert_eq!(res.validity, Validity::Valid, "{res:#?}");
}

#[test]
fn info_write_cannot_appear_before_its_invocation() {
    let mut h = H::default();
    h.inv(0, "write", w(0, 1)).ok(0);
    h.inv(2, "read", r(0)).ok_v(2, rv(0, Some(9)));
    h.inv(1, "write", w(0, 9)).info(1);
    assert_invalid(&h);
}

#[test]
fn many_unobserved_unknown_writes_are_pruned() {
    let mut h = H::default();
    for p in 0..60 {
        h.inv(p, "write", w(0, p + 1000)).info(p);
    }
    h.inv(100, "write", w(0, 1)).ok(100);
    for p in 101..140 {
        h.inv(p, "read", r(0)).ok_v(p, rv(0, Some(1)));
    }
    let res = check_with(&h.history(), Config { max_states: 1000 });
    assert_eq!(res.validity, Validity::Valid, "{res:#?}");
    // An unknown write that is observed is kept (and here it explains the read).
    h.inv(200, "read", r(0)).ok_v(200, rv(0, Some(1005)));
    let res = check_with(&h.history(), Config { max_states: 1000 });
    assert_eq!(res.validity, Validity::Valid, "{res:#?}");
}

#[test]
fn failed_write_whose_value_is_read_is_invalid() {
    let mut h = H::default();
    h.inv(0, "write", w(0, 1)).ok(0);
    h.inv(1, "write", w(0, 2)).fail(1);
    h.inv(2, "read", r(0)).ok_v(2, rv(0, Some(2)));
    assert_invalid(&h);
}

#[test]
fn keys_are_checked_independently() {
    let mut h = H::default();
    h.inv(0, "write", w(0, 1)).ok(0);
    h.inv(0, "write", w(1, 1)).ok(0);
    h.inv(1, "read", r(1)).ok_v(1, rv(1, Some(1)));
    h.inv(1, "read", r(2)).ok_v(1, rv(2, Some(1)));
    let a = assert_invalid(&h);
    assert!(a.detail.contains("k2"), "{}", a.detail);
    // Setup ops with other `f`s are ignored.
    let mut h = H::default();
    h.inv(0, "setup", json!({})).ok(0);
    assert!(verdict(&h).is_valid());
}

#[test]
fn budget_exhaustion_is_unknown_not_valid() {
    let mut h = H::default();
    for p in 0..12 {
        h.inv(p, "write", w(0, p)).info(p);
    }
    for p in 100..110 {
        h.inv(p, "read", r(0)).ok_v(p, rv(0, Some(p - 100)));
    }
    let res = check_with(&h.history(), Config { max_states: 50 });
    assert_eq!(res.validity, Validity::Unknown, "{res:#?}");
}

/// A history generated from a real sequential execution: `procs` processes, each issuing
/// ops one after another, each op taking effect atomically at a random instant within its
/// interval. Some writes/cas end `info` (applied or not), failed cas are recorded `fail`.
pub(crate) fn generate(seed: u64, n: usize, keys: u32, procs: u64) -> History {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    struct G {
        start: u64,
        lin: u64,
        end: u64,
        f: &'static str,
        value: Value,
        result: Option<Value>,
        kind: OpType,
        applied: bool,
    }
    let mut free = vec![0u64; procs as usize];
    let mut gs: Vec<G> = Vec::with_capacity(n);
    for i in 0..n {
        let p = rng.gen_range(0..procs as usize);
        let start = free[p] + rng.gen_range(0..3);
        let end = start + rng.gen_range(1..20);
        free[p] = end;
        let k = rng.gen_range(0..keys);
        let (f, value) = match rng.gen_range(0..10) {
            0..=3 => ("read", r(k)),
            4..=7 => ("write", w(k, i as u64 + 1)),
            _ => ("cas", json!({"key": k, "from": 0, "to": i as u64 + 1})),
        };
        gs.push(G {
            start: start * 10,
            lin: start * 10 + rng.gen_range(1..(end - start) * 10),
            end: end * 10,
            f,
            value,
            result: None,
            kind: OpType::Ok,
            applied: true,
        });
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (gs[i].lin, i));
    let mut reg: BTreeMap<u64, Option<u64>> = BTreeMap::new();
    for i in order {
        let g = &mut gs[i];
        let k = g.value["key"].as_u64().unwrap_or(0);
        let cur = reg.get(&k).copied().flatten();
        let unknown = g.f != "read" && rng.gen_bool(0.1);
        match g.f {
            "read" => g.result = Some(rv(k as u32, cur)),
            "write" => {
                g.applied = !unknown || rng.gen_bool(0.5);
                if g.applied {
                    reg.insert(k, g.value["value"].as_u64());
                }
            }
            _ => {
                let from = match cur {
                    Some(c) if rng.gen_bool(0.7) => c,
                    _ => rng.gen_range(1..1000),
                };
                g.value["from"] = json!(from);
                g.applied = cur == Some(from) && (!unknown || rng.gen_bool(0.5));
                if g.applied {
                    reg.insert(k, g.value["to"].as_u64());
                } else if !unknown {
                    g.kind = OpType::Fail;
                }
            }
        }
        if unknown {
            g.kind = OpType::Info;
        }
    }
    // Events: (time, order, op, is_completion); unknown ops sometimes never complete.
    let mut events = Vec::new();
    for (i, g) in gs.iter().enumerate() {
        events.push((g.start, 1, i, false));
        if g.kind != OpType::Info || rng.gen_bool(0.5) {
            events.push((g.end, 0, i, true));
        }
    }
    events.sort_unstable();
    let mut h = H::default();
    for (_, _, i, done) in events {
        let g = &gs[i];
        let p = i as u64;
        if !done {
            h.inv(p, g.f, g.value.clone());
        } else {
            match (g.kind, &g.result) {
                (OpType::Ok, Some(v)) => h.ok_v(p, v.clone()),
                (OpType::Ok, None) => h.ok(p),
                (OpType::Fail, _) => h.fail(p),
                _ => h.info(p),
            };
        }
    }
    h.history()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn histories_of_real_executions_are_linearizable(
        seed in any::<u64>(), n in 1usize..300, keys in 1u32..4, procs in 1u64..8,
    ) {
        let res = check(&generate(seed, n, keys, procs));
        prop_assert_eq!(res.validity, Validity::Valid, "{:#?}", res);
    }
}

#[test]
fn corrupting_one_read_of_a_generated_history_is_caught() {
    let h = generate(7, 400, 2, 5);
    let mut ops = h.ops.clone();
    // Make the last ok read of key 0 return a value no write ever wrote.
    let i = ops
        .iter()
        .rposition(|o| o.kind == OpType::Ok && o.f == "read" && o.value["key"] == 0)
        .expect("a read");
    ops[i].value["value"] = json!(999_999);
    let res = check(&History::new(ops));
    assert_eq!(res.validity, Validity::Invalid, "{res:#?}");
}

#[test]
fn timing_10k_ops_5_keys() {
    let h = generate(42, 10_000, 5, 10);
    let t = std::time::Instant::now();
    let res = check(&h);
    let el = t.elapsed();
    println!(
        "linear: 10k ops, 5 keys, 10 processes: {:?}, {} states, verdict {:?}",
        el, res.stats["states"], res.validity
    );
    assert_eq!(res.validity, Validity::Valid, "{res:#?}");
}
