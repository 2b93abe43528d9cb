//! Checker `nodes`: no node crashed on its own. A panic in a node's log is a bug whatever the
//! history says: nemeses kill and pause nodes, never make them panic. Found this way: a Raft
//! assertion on a follower that the other checkers only saw as a stalled watcher.

use serde_json::json;

use crate::check::{Anomaly, CheckResult};

/// Lines of a panic report kept in the anomaly's detail.
const CONTEXT_LINES: usize = 2;

/// Judges the nodes' logs, given as (name, text).
pub fn check(logs: &[(String, String)]) -> CheckResult {
    let mut anomalies = Vec::new();
    for (name, text) in logs {
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.contains("panicked at") {
                let end = (i + 1 + CONTEXT_LINES).min(lines.len());
                anomalies.push(Anomaly {
                    kind: "node-panic".into(),
                    detail: format!("{name}: {}", lines[i..end].join(" | ")),
                    ops: vec![],
                });
            }
        }
    }
    CheckResult::from_anomalies("nodes", anomalies, json!({ "logs": logs.len() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(name: &str, text: &str) -> (String, String) {
        (name.to_string(), text.to_string())
    }

    #[test]
    fn clean_logs_and_warnings_are_valid() {
        let r = check(&[
            log(
                "n1.log",
                "INFO metad node started\nWARN heartbeat error: timed out\n",
            ),
            log("n2.log", ""),
        ]);
        assert!(r.is_valid(), "{r:?}");
    }

    #[test]
    fn a_panic_is_reported_with_its_node_and_message() {
        let r = check(&[
            log("n1.log", "INFO started\n"),
            log(
                "n3.log",
                "INFO started\n\nthread 'tokio-rt-worker' (23016) panicked at \
                 src/raft_state/log_state_reader.rs:23:13:\nassertion failed: x <= y\n\
                 stack backtrace:\n",
            ),
        ]);
        assert!(!r.is_valid());
        assert_eq!(r.anomalies.len(), 1);
        let a = &r.anomalies[0];
        assert_eq!(a.kind, "node-panic");
        assert!(a.detail.starts_with("n3.log: "), "{}", a.detail);
        assert!(
            a.detail.contains("assertion failed: x <= y"),
            "{}",
            a.detail
        );
    }
}
