//! Checker `watch`: ordering, completeness and agreement of watch streams. The history schema
//! is documented in `workload::watch`: "event" observations per watcher (one watcher per node,
//! reconnects included), "reconnect", "watcher-begin"/"watcher-end", the authoritative change
//! log ("log-event" up to "log-end") and the writers' `create`/`set_tags` ops. It checks:
//! - per stream (every watcher, and the log itself), revisions never go back ("out-of-order")
//!   and no event is delivered twice ("duplicate-event");
//! - every revision of the log between a watcher's start and its last progress is delivered
//!   to that watcher ("watch-gap"), with exactly the log's events ("divergent-event"; so all
//!   nodes deliver the same events for a revision, and nothing outside the log);
//! - every `ok` write under the prefix is in the log at its revision with its effect
//!   ("lost-write");
//! - every watcher reached the final revision ("watch-stalled");
//! - COMPACTED only for history older than the retention ("unexpected-compaction").

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde_json::{json, Value};

use crate::check::namespace::model::LogEvent;
use crate::check::namespace::parse_event;
use crate::check::{Anomaly, CheckResult, Validity};
use crate::history::{History, Op, OpType};

const NAME: &str = "watch";

/// What identifies an event: (rev, kind, path, old path, ino).
type Key = (u64, String, String, String, u64);

fn key(e: &LogEvent) -> Key {
    (
        e.rev,
        e.kind.clone(),
        e.path.clone(),
        e.old_path.clone(),
        e.ino,
    )
}

fn anomaly(kind: &str, detail: String, ops: Vec<u64>) -> Anomaly {
    Anomaly {
        kind: kind.to_string(),
        detail,
        ops,
    }
}

/// Whether `path` is `prefix` or below it, component-wise.
pub fn under(prefix: &str, path: &str) -> bool {
    let p = prefix.trim_end_matches('/');
    p.is_empty() || path == p || path.strip_prefix(p).is_some_and(|r| r.starts_with('/'))
}

/// One watcher's stream as recorded.
#[derive(Default)]
struct Stream {
    /// Events in history order.
    events: Vec<LogEvent>,
    /// Revision ranges (exclusive, exclusive) skipped after a legitimate COMPACTED.
    excused: Vec<(u64, u64)>,
    end: Option<(u64, u64)>,
    index: Vec<u64>,
}

fn watcher_of(op: &Op) -> Option<u64> {
    op.value.get("watcher").and_then(Value::as_u64)
}

/// Order and duplicate checks on one stream.
fn order(name: &str, events: &[LogEvent], an: &mut Vec<Anomaly>) {
    let mut seen: HashSet<Key> = HashSet::new();
    let mut last = 0u64;
    for e in events {
        let k = key(e);
        if seen.contains(&k) {
            an.push(anomaly(
                "duplicate-event",
                format!(
                    "{name}: rev {} {} {} delivered twice",
                    e.rev, e.kind, e.path
                ),
                vec![e.index],
            ));
        } else if e.rev < last {
            an.push(anomaly(
                "out-of-order",
                format!("{name}: rev {} delivered after rev {last}", e.rev),
                vec![e.index],
            ));
        }
        seen.insert(k);
        last = last.max(e.rev);
    }
}

fn sorted_keys(evs: &[&LogEvent]) -> Vec<Key> {
    let mut v: Vec<Key> = evs.iter().map(|e| key(e)).collect();
    v.sort();
    v
}

/// Runs the watch checker.
pub fn check(history: &History) -> CheckResult {
    let mut start: Option<&Value> = None;
    let mut log_end = None;
    let mut log: Vec<LogEvent> = Vec::new();
    let mut streams: BTreeMap<u64, Stream> = BTreeMap::new();
    let mut an = Vec::new();
    let mut compactions = Vec::new();
    let mut reconnects = 0u64;
    for op in &history.ops {
        match op.f.as_str() {
            "watch-start" => start = Some(&op.value),
            "log-event" => log.extend(parse_event(op)),
            "log-end" => log_end = op.value.get("rev").and_then(Value::as_u64),
            "watcher-begin" => {
                if let Some(w) = watcher_of(op) {
                    streams.entry(w).or_default().index.push(op.index);
                }
            }
            "event" => {
                if let (Some(w), Some(e)) = (watcher_of(op), parse_event(op)) {
                    let s = streams.entry(w).or_default();
                    if let Some((from, 0)) = s.excused.last().copied() {
                        if let Some(x) = s.excused.last_mut() {
                            *x = (from, e.rev);
                        }
                    }
                    s.events.push(e);
                }
            }
            "reconnect" => {
                reconnects += 1;
                let w = watcher_of(op).unwrap_or(0);
                let code = op.value.get("code").and_then(Value::as_str).unwrap_or("");
                if code == "COMPACTED" {
                    let after = op.value.get("after").and_then(Value::as_u64).unwrap_or(0);
                    compactions.push((w, after, op.index));
                    let s = streams.entry(w).or_default();
                    s.excused.push((after, 0));
                }
            }
            "watcher-end" => {
                if let Some(w) = watcher_of(op) {
                    let p = op
                        .value
                        .get("progress")
                        .and_then(Value::as_u64)
                        .unwrap_or(0);
                    streams.entry(w).or_default().end = Some((p, op.index));
                }
            }
            _ => {}
        }
    }
    let (Some(start), Some(log_end)) = (start, log_end) else {
        return CheckResult {
            checker: NAME.into(),
            validity: Validity::Unknown,
            anomalies: vec![anomaly(
                "incomplete-history",
                "no watch-start or no log-end: the authoritative log was not fetched".into(),
                vec![],
            )],
            stats: json!({}),
        };
    };
    let prefix = start.get("prefix").and_then(Value::as_str).unwrap_or("");
    let start_rev = start.get("rev").and_then(Value::as_u64).unwrap_or(0);
    let retention = start
        .get("retention")
        .and_then(Value::as_u64)
        .unwrap_or(u64::MAX);

    order("log", &log, &mut an);
    let mut by_rev: BTreeMap<u64, Vec<&LogEvent>> = BTreeMap::new();
    for e in &log {
        by_rev.entry(e.rev).or_default().push(e);
    }

    for &(w, after, index) in &compactions {
        if after.saturating_add(retention) > log_end {
            an.push(anomaly(
                "unexpected-compaction",
                format!("watcher {w}: COMPACTED after rev {after}, within the retention of {retention} revisions (final rev {log_end})"),
                vec![index],
            ));
        }
    }

    let mut delivered = 0u64;
    for (&w, s) in &streams {
        let name = format!("watcher {w}");
        order(&name, &s.events, &mut an);
        delivered += s.events.len() as u64;
        let mut got: BTreeMap<u64, Vec<&LogEvent>> = BTreeMap::new();
        for e in &s.events {
            got.entry(e.rev).or_default().push(e);
        }
        let progress = s.end.map_or(0, |(p, _)| p);
        let upper = progress.max(got.keys().next_back().copied().unwrap_or(0));
        // Revisions the watcher delivered must be exactly the log's.
        for (&rev, evs) in &got {
            if rev > log_end {
                continue;
            }
            let want = by_rev.get(&rev).map(|v| sorted_keys(v)).unwrap_or_default();
            let mut have: Vec<Key> = sorted_keys(evs);
            have.dedup();
            if have != want {
                an.push(anomaly(
                    "divergent-event",
                    format!("{name}: rev {rev} delivered {have:?}, the log has {want:?}"),
                    evs.iter().map(|e| e.index).collect(),
                ));
            }
        }
        // Every log revision in the watcher's range was delivered.
        let excused = |r: u64| s.excused.iter().any(|&(a, b)| r > a && (b == 0 || r < b));
        let missing: Vec<u64> = by_rev
            .range(start_rev + 1..=upper)
            .map(|(&r, _)| r)
            .filter(|r| !got.contains_key(r) && !excused(*r))
            .collect();
        if !missing.is_empty() {
            an.push(anomaly(
                "watch-gap",
                format!(
                    "{name}: {} revision(s) of the log missing, first {:?}",
                    missing.len(),
                    &missing[..missing.len().min(10)]
                ),
                s.end.map(|(_, i)| i).into_iter().collect(),
            ));
        }
        if progress < log_end {
            an.push(anomaly(
                "watch-stalled",
                format!("{name}: ended at rev {progress}, the final revision is {log_end}"),
                s.end
                    .map(|(_, i)| i)
                    .into_iter()
                    .chain(s.index.iter().copied())
                    .collect(),
            ));
        }
    }

    // Acknowledged writes are in the log with their effect.
    let mut writes = 0u64;
    for (inv, done) in history.pairs() {
        let Some(d) = done.filter(|d| d.kind == OpType::Ok) else {
            continue;
        };
        let kind = match inv.f.as_str() {
            "create" => "created",
            "set_tags" => "tags",
            _ => continue,
        };
        let path = d.value.get("path").and_then(Value::as_str).unwrap_or("");
        let rev = d.value.get("rev").and_then(Value::as_u64).unwrap_or(0);
        if !under(prefix, path) {
            if let Some(evs) = by_rev.get(&rev) {
                an.push(anomaly(
                    "divergent-event",
                    format!(
                        "{} {path} (outside {prefix}) at rev {rev}, but the log has events there",
                        inv.f
                    ),
                    evs.iter()
                        .map(|e| e.index)
                        .chain([inv.index, d.index])
                        .collect(),
                ));
            }
            continue;
        }
        writes += 1;
        let ok = by_rev
            .get(&rev)
            .is_some_and(|evs| evs.iter().any(|e| e.kind == kind && e.path == path));
        if !ok {
            an.push(anomaly(
                "lost-write",
                format!(
                    "{} {path} acknowledged at rev {rev}, not in the log with that effect",
                    inv.f
                ),
                vec![inv.index, d.index],
            ));
        }
    }

    let watchers: BTreeSet<u64> = streams.keys().copied().collect();
    let stats = json!({
        "watchers": watchers,
        "log_events": log.len(),
        "log_revisions": by_rev.len(),
        "start_rev": start_rev,
        "log_end": log_end,
        "events_delivered": delivered,
        "reconnects": reconnects,
        "compactions": compactions.len(),
        "writes_checked": writes,
    });
    CheckResult::from_anomalies(NAME, an, stats)
}
