//! Parsing for the `namespace` checker: the workload's ops ([`Rec`]), the "ns-start" snapshot
//! and the change log ([`Parsed`]), and what effect each write leaves in the log ([`effects`]).

use std::collections::BTreeMap;

use serde_json::Value;

use super::model::{Kind, LogEvent, NsOp};
use crate::history::{History, Op, OpType};

/// One client operation with its completion.
#[derive(Debug)]
pub(super) struct Rec<'a> {
    pub(super) op: NsOp,
    pub(super) inv: &'a Op,
    pub(super) done: Option<&'a Op>,
    pub(super) outcome: OpType,
    pub(super) rev: Option<u64>,
    pub(super) ino: Option<u64>,
    pub(super) code: Option<String>,
    pub(super) value: Value,
}

impl Rec<'_> {
    pub(super) fn indices(&self) -> Vec<u64> {
        let mut v = vec![self.inv.index];
        v.extend(self.done.map(|d| d.index));
        v
    }
}

pub(super) fn str_of(v: &Value, k: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or("").to_string()
}

pub(super) fn u64_of(v: &Value, k: &str) -> Option<u64> {
    v.get(k).and_then(Value::as_u64)
}

/// Parses a workload op; `None` for anything that is not one.
pub fn parse_op(f: &str, v: &Value) -> Option<NsOp> {
    let p = || str_of(v, "path");
    Some(match f {
        "create" => NsOp::Create(p()),
        "mkdir" => NsOp::Mkdir(p()),
        "unlink" => NsOp::Unlink(p()),
        "rmdir" => NsOp::Rmdir(p()),
        "read_dir" => NsOp::ReadDir(p()),
        "stat" => NsOp::Stat(p()),
        "rename" => NsOp::Rename {
            src: str_of(v, "src"),
            dst: str_of(v, "dst"),
            mode: str_of(v, "mode"),
        },
        _ => return None,
    })
}

/// Parses a "log-event" observation value.
pub fn parse_event(op: &Op) -> Option<LogEvent> {
    let v = &op.value;
    Some(LogEvent {
        rev: u64_of(v, "rev")?,
        kind: str_of(v, "kind"),
        path: str_of(v, "path"),
        old_path: str_of(v, "old_path"),
        ino: u64_of(v, "ino").unwrap_or(0),
        inode_kind: str_of(v, "inode_kind"),
        detail: str_of(v, "detail"),
        index: op.index,
    })
}

/// The error code of a failed op: `value.code`, else the error's prefix.
fn code_of(op: &Op) -> Option<String> {
    if let Some(c) = op.value.get("code").and_then(Value::as_str) {
        return Some(c.to_string());
    }
    let e = op.error.as_deref()?;
    Some(e.split(':').next().unwrap_or(e).trim().to_string())
}

pub(super) struct Parsed<'a> {
    pub(super) base: String,
    pub(super) start_rev: u64,
    pub(super) initial: Vec<(String, u64, Kind)>,
    pub(super) groups: BTreeMap<u64, Vec<LogEvent>>,
    pub(super) log_end: u64,
    pub(super) recs: Vec<Rec<'a>>,
}

pub(super) fn parse(history: &History) -> Result<Parsed<'_>, String> {
    let mut start = None;
    let mut log_end = None;
    let mut groups: BTreeMap<u64, Vec<LogEvent>> = BTreeMap::new();
    for op in &history.ops {
        match op.f.as_str() {
            "ns-start" => start = Some(&op.value),
            "log-end" => log_end = u64_of(&op.value, "rev"),
            "log-event" => {
                if let Some(e) = parse_event(op) {
                    groups.entry(e.rev).or_default().push(e);
                }
            }
            _ => {}
        }
    }
    let start = start.ok_or("no ns-start observation: the run did not start")?;
    let log_end = log_end.ok_or("no log-end observation: the change log was not fetched")?;
    let base = str_of(start, "base");
    let start_rev = u64_of(start, "rev").unwrap_or(0);
    let mut initial = Vec::new();
    for e in start
        .get("entries")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(p), Some(i), Some(k)) = (
            e.get(0).and_then(Value::as_str),
            e.get(1).and_then(Value::as_u64),
            e.get(2).and_then(Value::as_str).and_then(Kind::parse),
        ) else {
            return Err(format!("malformed ns-start entry {e}"));
        };
        initial.push((p.to_string(), i, k));
    }
    let mut recs = Vec::new();
    for (inv, done) in history.pairs() {
        let Some(op) = parse_op(&inv.f, &inv.value) else {
            continue;
        };
        let outcome = done.map_or(OpType::Info, |d| d.kind);
        let value = done.map_or(inv.value.clone(), |d| d.value.clone());
        recs.push(Rec {
            op,
            inv,
            done,
            outcome,
            rev: u64_of(&value, "rev"),
            ino: u64_of(&value, "ino"),
            code: done.filter(|d| d.kind == OpType::Fail).and_then(code_of),
            value,
        });
    }
    Ok(Parsed {
        base,
        start_rev,
        initial,
        groups,
        log_end,
        recs,
    })
}

/// One expected or logged change: (kind, path, old path, inode kind; "" = any).
pub(super) type Item = (String, String, String, String);

fn item(kind: &str, path: &str, old: &str, ik: &str) -> Item {
    (kind.into(), path.into(), old.into(), ik.into())
}

pub(super) fn group_items(g: &[LogEvent]) -> Vec<Item> {
    let mut v: Vec<Item> = g
        .iter()
        .filter(|e| !matches!(e.kind.as_str(), "attr" | "tags"))
        .map(|e| item(&e.kind, &e.path, &e.old_path, &e.inode_kind))
        .collect();
    v.sort();
    v
}

/// The possible logged effects of a write (several for a replacing rename).
pub(super) fn effects(op: &NsOp, replaced: Option<bool>) -> Vec<Vec<Item>> {
    let one = |k: &str, p: &str, ik: &str| vec![vec![item(k, p, "", ik)]];
    match op {
        NsOp::Create(p) => one("created", p, "file"),
        NsOp::Mkdir(p) => one("created", p, "dir"),
        NsOp::Unlink(p) => one("deleted", p, ""),
        NsOp::Rmdir(p) => one("deleted", p, "dir"),
        NsOp::Rename { src, dst, mode } => {
            let mv = item("renamed", dst, src, "");
            match mode.as_str() {
                "exchange" => vec![vec![mv, item("renamed", src, dst, "")]],
                "no_replace" => vec![vec![mv]],
                _ => {
                    let with = vec![item("deleted", dst, "", ""), mv.clone()];
                    match replaced {
                        Some(true) => vec![with],
                        Some(false) => vec![vec![mv]],
                        None => vec![vec![mv], with],
                    }
                }
            }
        }
        NsOp::ReadDir(_) | NsOp::Stat(_) => Vec::new(),
    }
}

pub(super) fn matches(expected: &[Item], got: &[Item]) -> bool {
    let mut e = expected.to_vec();
    e.sort();
    e.len() == got.len()
        && e.iter()
            .zip(got)
            .all(|(a, b)| a.0 == b.0 && a.1 == b.1 && a.2 == b.2 && (a.3.is_empty() || a.3 == b.3))
}

/// The inode an `ok` write reports, as the log should show it.
pub(super) fn main_ino(op: &NsOp, g: &[LogEvent]) -> Option<u64> {
    let (kind, path) = match op {
        NsOp::Create(p) | NsOp::Mkdir(p) => ("created", p),
        NsOp::Unlink(p) | NsOp::Rmdir(p) => ("deleted", p),
        NsOp::Rename { dst, .. } => ("renamed", dst),
        _ => return None,
    };
    g.iter()
        .find(|e| e.kind == kind && &e.path == path)
        .map(|e| e.ino)
}
