//! Checkers: pure functions from a [`History`](crate::history::History) to a [`CheckResult`].
//! They never talk to a cluster, so every checker is tested on hand-made valid and invalid
//! histories. Each workload module names the checker that judges it.

use serde::{Deserialize, Serialize};

/// Whether a history satisfied a checker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Validity {
    /// No anomaly found.
    Valid,
    /// At least one anomaly found.
    Invalid,
    /// The checker gave up (e.g. the linearizability search hit its budget); not a pass.
    Unknown,
}

/// One thing a checker found wrong.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    /// Stable anomaly class, e.g. "nonlinearizable", "G1c", "G2-item", "lost-write",
    /// "stale-read", "watch-gap", "duplicate-event", "two-tokens-committed".
    pub kind: String,
    /// Human-readable explanation naming keys, values and revisions.
    pub detail: String,
    /// History indices of the operations involved.
    #[serde(default)]
    pub ops: Vec<u64>,
}

/// A checker's verdict on one history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub checker: String,
    pub validity: Validity,
    pub anomalies: Vec<Anomaly>,
    /// Counts the checker wants to report (ops checked, keys, ...).
    #[serde(default)]
    pub stats: serde_json::Value,
}

impl CheckResult {
    /// Valid when `anomalies` is empty, invalid otherwise.
    pub fn from_anomalies(
        checker: &str,
        anomalies: Vec<Anomaly>,
        stats: serde_json::Value,
    ) -> Self {
        CheckResult {
            checker: checker.to_string(),
            validity: if anomalies.is_empty() {
                Validity::Valid
            } else {
                Validity::Invalid
            },
            anomalies,
            stats,
        }
    }

    pub fn is_valid(&self) -> bool {
        self.validity == Validity::Valid
    }
}

pub mod elle;
pub mod linear;
pub mod moves;
pub mod namespace;
pub mod nodes;
pub mod watch;
