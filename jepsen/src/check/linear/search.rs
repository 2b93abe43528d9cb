//! The search itself: Lowe's just-in-time linearization over a doubly linked list of
//! call/return events, memoised on (set of linearized ops, register value). The set is kept
//! as a 128-bit Zobrist hash (XOR of a random word per op), so a cache entry costs a few
//! words whatever the history length; a collision (probability ~ states² / 2^128) is
//! negligible.

use std::collections::{BTreeSet, HashSet};

use rand::{Rng, SeedableRng};

use super::{step, KeyOp};

/// What the search concluded for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Linearizable {
        states: usize,
    },
    Nonlinearizable {
        states: usize,
        /// Index (into the key's ops) of the op whose return the search got furthest to
        /// without being able to linearize it.
        stuck: usize,
        /// Register values the search held when it got stuck there.
        possible: BTreeSet<Option<u64>>,
    },
    /// The state budget ran out.
    GaveUp {
        states: usize,
    },
}

impl Outcome {
    pub fn states(&self) -> usize {
        match self {
            Outcome::Linearizable { states }
            | Outcome::Nonlinearizable { states, .. }
            | Outcome::GaveUp { states } => *states,
        }
    }
}

const NIL: usize = usize::MAX;
const HEAD: usize = 0;

struct Entry {
    op: usize,
    call: bool,
    /// For a call: its return entry, if it has one.
    ret: usize,
    prev: usize,
    next: usize,
}

struct List {
    e: Vec<Entry>,
}

impl List {
    fn unlink(&mut self, i: usize) {
        let (p, n) = (self.e[i].prev, self.e[i].next);
        self.e[p].next = n;
        if n != NIL {
            self.e[n].prev = p;
        }
    }
    fn relink(&mut self, i: usize) {
        let (p, n) = (self.e[i].prev, self.e[i].next);
        self.e[p].next = i;
        if n != NIL {
            self.e[n].prev = i;
        }
    }
    /// Removes a call and its return (in that order).
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        let r = self.e[call].ret;
        if r != NIL {
            self.unlink(r);
        }
    }
    /// Undoes [`List::lift`] (in reverse order).
    fn unlift(&mut self, call: usize) {
        let r = self.e[call].ret;
        if r != NIL {
            self.relink(r);
        }
        self.relink(call);
    }
}

/// Most register values remembered for an explanation.
const MAX_POSSIBLE: usize = 16;

/// Searches for a linearization of one key's ops, exploring at most `max_states` states.
pub fn search(ops: &[KeyOp], max_states: usize) -> Outcome {
    // Events in real-time order: (time, is_return, op). History indices are distinct, so
    // the order is total.
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
    for (i, o) in ops.iter().enumerate() {
        events.push((o.invoke, false, i));
        if let Some(c) = o.complete {
            events.push((c, true, i));
        }
    }
    events.sort_unstable();
    let mut list = List {
        e: Vec::with_capacity(events.len() + 1),
    };
    list.e.push(Entry {
        op: NIL,
        call: false,
        ret: NIL,
        prev: NIL,
        next: NIL,
    });
    let mut call_entry = vec![NIL; ops.len()];
    for (k, &(_, is_ret, op)) in events.iter().enumerate() {
        let idx = k + 1;
        list.e.push(Entry {
            op,
            call: !is_ret,
            ret: NIL,
            prev: idx - 1,
            next: if k + 1 < events.len() { idx + 1 } else { NIL },
        });
        if is_ret {
            let c = call_entry[op];
            list.e[c].ret = idx;
        } else {
            call_entry[op] = idx;
        }
    }
    list.e[HEAD].next = if events.is_empty() { NIL } else { 1 };

    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6c69_6e65_6172);
    let zobrist: Vec<u128> = (0..ops.len()).map(|_| rng.gen()).collect();
    let mut remaining_returns = ops.iter().filter(|o| o.complete.is_some()).count();
    let mut cache: HashSet<(u128, Option<u64>)> = HashSet::new();
    let mut stack: Vec<(usize, Option<u64>)> = Vec::new();
    let mut state: Option<u64> = None;
    let mut hash: u128 = 0;
    // The furthest return the search got stuck at, and the values it held there.
    let mut stuck: Option<(u64, usize)> = None;
    let mut possible: BTreeSet<Option<u64>> = BTreeSet::new();

    let mut entry = list.e[HEAD].next;
    loop {
        if remaining_returns == 0 {
            // Only unknown ops are left: they may all never have happened.
            return Outcome::Linearizable {
                states: cache.len(),
            };
        }
        // A return is still listed, and the walk stops at the first return, so `entry` is
        // never NIL here.
        let e = &list.e[entry];
        let op = e.op;
        if e.call {
            let o = &ops[op];
            if let Some(next) = step(state, o.op, o.complete.is_some()) {
                let h = hash ^ zobrist[op];
                if cache.insert((h, next)) {
                    if cache.len() > max_states {
                        return Outcome::GaveUp {
                            states: cache.len(),
                        };
                    }
                    stack.push((entry, state));
                    state = next;
                    hash = h;
                    list.lift(entry);
                    if o.complete.is_some() {
                        remaining_returns -= 1;
                    }
                    entry = list.e[HEAD].next;
                    continue;
                }
            }
            entry = list.e[entry].next;
        } else {
            // The op returned before it could be linearized: backtrack.
            let t = ops[op].complete.unwrap_or(0);
            match stuck {
                Some((st, _)) if st > t => {}
                Some((st, _)) if st == t => {
                    if possible.len() < MAX_POSSIBLE {
                        possible.insert(state);
                    }
                }
                _ => {
                    stuck = Some((t, op));
                    possible.clear();
                    possible.insert(state);
                }
            }
            let Some((call, prev_state)) = stack.pop() else {
                return Outcome::Nonlinearizable {
                    states: cache.len(),
                    stuck: stuck.map_or(op, |s| s.1),
                    possible,
                };
            };
            let cop = list.e[call].op;
            state = prev_state;
            hash ^= zobrist[cop];
            list.unlift(call);
            if ops[cop].complete.is_some() {
                remaining_returns += 1;
            }
            entry = list.e[call].next;
        }
    }
}
