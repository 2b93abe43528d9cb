//! The history of a run: every client operation as an `invoke` followed by exactly one
//! completion (`ok`, `fail` or `info`), in real-time order, as Jepsen records it. Owns the
//! on-disk format (`history.jsonl`, one [`Op`] per line) and the [`Recorder`] that workloads
//! share. It must not interpret values: each workload documents its own `f`/`value` schema
//! and its checker parses it.
//!
//! Conventions the checkers rely on:
//! - `fail` means the operation certainly did not take effect; `info` means the outcome is
//!   unknown (a timeout, a lost connection, `ClientError::Ambiguous`): it may take effect at
//!   any time after its invocation, even after the run.
//! - A process has at most one operation in flight. After an `info` the process is retired
//!   and its worker continues under a fresh process id ([`Recorder::new_process`]), because
//!   the unknown operation may still be in flight.
//! - `index` is the position in the history; `time_ns` is monotonic time since the run began.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// What an entry says about its operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpType {
    Invoke,
    Ok,
    Fail,
    Info,
}

/// One history entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Op {
    pub index: u64,
    pub time_ns: u64,
    pub process: u64,
    #[serde(rename = "type")]
    pub kind: OpType,
    /// The operation's name in its workload ("read", "write", "cas", "txn", ...).
    pub f: String,
    /// Workload-specific payload. For a completion it holds the invocation's value with the
    /// results filled in (e.g. the value a read returned).
    pub value: serde_json::Value,
    /// The node (1-based) the client sent the request to, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<u32>,
    /// For `fail`/`info`: the error, as the client reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Op {
    pub fn is_invoke(&self) -> bool {
        self.kind == OpType::Invoke
    }

    /// An entry at `index` with `time_ns = index * 1000`, no node and no error: the building
    /// block of hand-made histories in the checkers' tests.
    pub fn at(index: usize, process: u64, kind: OpType, f: &str, value: serde_json::Value) -> Op {
        Op {
            index: index as u64,
            time_ns: index as u64 * 1000,
            process,
            kind,
            f: f.to_string(),
            value,
            node: None,
            error: None,
        }
    }
}

/// A whole history, in index order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    pub ops: Vec<Op>,
}

impl History {
    pub fn new(ops: Vec<Op>) -> Self {
        History { ops }
    }

    /// Reads `history.jsonl`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let mut ops = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let op: Op = serde_json::from_str(line)
                .with_context(|| format!("{}:{}: not a history entry", path.display(), n + 1))?;
            ops.push(op);
        }
        Ok(History { ops })
    }

    /// Writes `history.jsonl`.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        use std::io::Write;
        let f =
            std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
        let mut w = std::io::BufWriter::new(f);
        for op in &self.ops {
            serde_json::to_writer(&mut w, op)?;
            w.write_all(b"\n")?;
        }
        w.flush()?;
        Ok(())
    }

    /// Each invocation with its completion (`None` if the history ended first, which counts
    /// as `info`). Pairs are in invocation order.
    pub fn pairs(&self) -> Vec<(&Op, Option<&Op>)> {
        let mut open: std::collections::HashMap<u64, usize> = Default::default();
        let mut out: Vec<(&Op, Option<&Op>)> = Vec::new();
        for op in &self.ops {
            if op.kind == OpType::Invoke {
                open.insert(op.process, out.len());
                out.push((op, None));
            } else if let Some(i) = open.remove(&op.process) {
                out[i].1 = Some(op);
            }
        }
        out
    }

    /// Only the operations whose `f` is one of `fs` (e.g. to drop a workload's setup ops).
    pub fn filter_f(&self, fs: &[&str]) -> History {
        History::new(
            self.ops
                .iter()
                .filter(|o| fs.contains(&o.f.as_str()))
                .cloned()
                .collect(),
        )
    }
}

/// An invocation in flight, returned by [`Recorder::invoke`].
#[derive(Debug)]
pub struct Pending {
    process: u64,
    f: String,
    node: Option<u32>,
    pub value: serde_json::Value,
}

/// Records a history from many tasks. Cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Mutex<RecorderInner>>,
    start: Instant,
}

struct RecorderInner {
    ops: Vec<Op>,
    next_process: u64,
}

impl Recorder {
    pub fn new() -> Self {
        Self::starting_at(Instant::now())
    }

    /// A recorder whose clock starts at `start` (the run's start, shared with fault records).
    pub fn starting_at(start: Instant) -> Self {
        Recorder {
            inner: Arc::new(Mutex::new(RecorderInner {
                ops: Vec::new(),
                next_process: 0,
            })),
            start,
        }
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    fn with<T>(&self, f: impl FnOnce(&mut RecorderInner) -> T) -> T {
        match self.inner.lock() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// A fresh process id (for a new worker, or for a worker whose last op ended in `info`).
    pub fn new_process(&self) -> u64 {
        self.with(|i| {
            let p = i.next_process;
            i.next_process += 1;
            p
        })
    }

    fn push(
        &self,
        process: u64,
        kind: OpType,
        f: &str,
        value: serde_json::Value,
        node: Option<u32>,
        error: Option<String>,
    ) {
        let time_ns = self.start.elapsed().as_nanos() as u64;
        self.with(|i| {
            let index = i.ops.len() as u64;
            i.ops.push(Op {
                index,
                time_ns,
                process,
                kind,
                f: f.to_string(),
                value,
                node,
                error,
            })
        })
    }

    /// Records an invocation.
    pub fn invoke(
        &self,
        process: u64,
        f: &str,
        value: serde_json::Value,
        node: Option<u32>,
    ) -> Pending {
        self.push(process, OpType::Invoke, f, value.clone(), node, None);
        Pending {
            process,
            f: f.to_string(),
            node,
            value,
        }
    }

    /// Completes with `ok`; `value` is the invocation's value with results filled in.
    pub fn ok(&self, p: Pending, value: serde_json::Value) {
        self.push(p.process, OpType::Ok, &p.f, value, p.node, None);
    }

    /// Completes with `fail`: the operation certainly did not happen.
    pub fn fail(&self, p: Pending, error: impl ToString) {
        self.push(
            p.process,
            OpType::Fail,
            &p.f,
            p.value,
            p.node,
            Some(error.to_string()),
        );
    }

    /// Completes with `info`: unknown outcome. Returns the fresh process id the caller must
    /// continue under.
    pub fn info(&self, p: Pending, error: impl ToString) -> u64 {
        self.push(
            p.process,
            OpType::Info,
            &p.f,
            p.value,
            p.node,
            Some(error.to_string()),
        );
        self.new_process()
    }

    /// Records a single observation that is not an invoke/complete pair (e.g. a watch event),
    /// as an `ok` entry with no invocation.
    pub fn observe(&self, process: u64, f: &str, value: serde_json::Value, node: Option<u32>) {
        self.push(process, OpType::Ok, f, value, node, None);
    }

    /// Everything recorded so far.
    pub fn history(&self) -> History {
        History::new(self.with(|i| i.ops.clone()))
    }

    pub fn len(&self) -> usize {
        self.with(|i| i.ops.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pairs_match_completions_and_info_retires_the_process() {
        let r = Recorder::new();
        let p0 = r.new_process();
        let p1 = r.new_process();
        let a = r.invoke(p0, "write", json!({"key": 1, "value": 5}), Some(1));
        let b = r.invoke(p1, "read", json!({"key": 1, "value": null}), Some(2));
        r.ok(b, json!({"key": 1, "value": 5}));
        let fresh = r.info(a, "timeout");
        assert_ne!(fresh, p0);
        assert_ne!(fresh, p1);
        let h = r.history();
        let pairs = h.pairs();
        assert_eq!(pairs.len(), 2);
        assert_eq!(pairs[0].1.map(|o| o.kind), Some(OpType::Info));
        assert_eq!(pairs[1].1.map(|o| o.kind), Some(OpType::Ok));
        assert_eq!(
            h.ops.iter().map(|o| o.index).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
    }

    #[test]
    fn save_and_load_round_trip() {
        let r = Recorder::new();
        let p = r.new_process();
        let a = r.invoke(p, "cas", json!({"key": 3, "from": 1, "to": 2}), None);
        r.fail(a, "compare failed");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("history.jsonl");
        r.history().save(&path).expect("save");
        assert_eq!(History::load(&path).expect("load"), r.history());
    }
}
