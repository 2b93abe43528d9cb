//! The results folder of a run: `history.jsonl`, `faults.json`, `run.json` (what was run),
//! `verdict.json`, `latency.svg`, `throughput.svg`, `summary.md`, and `logs/` + `data/` of
//! the nodes (written by `control`). Owns the file names and formats; `check DIR` reads them
//! back.

pub mod plot;

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::check::{CheckResult, Validity};
use crate::history::{History, OpType};
use crate::nemesis::FaultRecord;

/// What was run (enough to re-check it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunInfo {
    pub workload: String,
    pub faults: Vec<String>,
    pub nodes: usize,
    pub concurrency: usize,
    pub time_limit_s: u64,
    pub seed: u64,
    pub local: bool,
    #[serde(default)]
    pub mutations: Option<String>,
    pub metad_bin: String,
    pub started_at: String,
}

/// Operation counts of a history.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Counts {
    pub invoked: u64,
    pub ok: u64,
    pub fail: u64,
    pub info: u64,
    pub observations: u64,
}

pub fn counts(history: &History) -> Counts {
    let mut c = Counts::default();
    let mut invoked_processes = std::collections::HashSet::new();
    for op in &history.ops {
        match op.kind {
            OpType::Invoke => {
                c.invoked += 1;
                invoked_processes.insert(op.process);
            }
            OpType::Ok => c.ok += 1,
            OpType::Fail => c.fail += 1,
            OpType::Info => c.info += 1,
        }
    }
    // `observe` entries are ok entries without an invocation.
    let completions = c.ok + c.fail + c.info;
    let paired = history.pairs().iter().filter(|p| p.1.is_some()).count() as u64;
    c.observations = completions.saturating_sub(paired);
    c.ok = c.ok.saturating_sub(c.observations);
    c
}

/// The verdict file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verdict {
    pub valid: Validity,
    pub workload: String,
    pub counts: Counts,
    pub faults_injected: usize,
    pub fault_kinds: std::collections::BTreeMap<String, usize>,
    pub checks: Vec<CheckResult>,
}

impl Verdict {
    pub fn new(
        info: &RunInfo,
        history: &History,
        faults: &[FaultRecord],
        checks: Vec<CheckResult>,
    ) -> Verdict {
        let valid = if checks.iter().any(|c| c.validity == Validity::Invalid) {
            Validity::Invalid
        } else if checks.is_empty() || checks.iter().any(|c| c.validity == Validity::Unknown) {
            Validity::Unknown
        } else {
            Validity::Valid
        };
        let mut fault_kinds = std::collections::BTreeMap::new();
        for f in faults {
            *fault_kinds.entry(f.kind.clone()).or_insert(0) += 1;
        }
        Verdict {
            valid,
            workload: info.workload.clone(),
            counts: counts(history),
            faults_injected: faults.len(),
            fault_kinds,
            checks,
        }
    }
}

pub fn write_json<T: Serialize>(path: &Path, v: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(v)?;
    std::fs::write(path, text + "\n").with_context(|| format!("write {}", path.display()))
}

pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
}

/// Writes `summary.md`.
pub fn write_summary(
    dir: &Path,
    info: &RunInfo,
    verdict: &Verdict,
    faults: &[FaultRecord],
) -> anyhow::Result<()> {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# metad-jepsen run: {} — {:?}\n",
        info.workload, verdict.valid
    );
    let _ = writeln!(
        s,
        "- nodes {} ({}), concurrency {}, time limit {} s, seed {}, faults: {}",
        info.nodes,
        if info.local {
            "loopback"
        } else {
            "network namespaces"
        },
        info.concurrency,
        info.time_limit_s,
        info.seed,
        if info.faults.is_empty() {
            "none".to_string()
        } else {
            info.faults.join(",")
        }
    );
    if let Some(m) = &info.mutations {
        let _ = writeln!(s, "- **mutations on: {m}**");
    }
    let c = &verdict.counts;
    let _ = writeln!(
        s,
        "- operations: {} invoked, {} ok, {} fail, {} info (unknown); {} observations\n",
        c.invoked, c.ok, c.fail, c.info, c.observations
    );
    let _ = writeln!(
        s,
        "## Checks\n\n| checker | result | anomalies |\n|---|---|---|"
    );
    for ch in &verdict.checks {
        let kinds: Vec<String> = ch.anomalies.iter().map(|a| a.kind.clone()).collect();
        let _ = writeln!(
            s,
            "| {} | {:?} | {} |",
            ch.checker,
            ch.validity,
            kinds.join(", ")
        );
    }
    for ch in &verdict.checks {
        for a in ch.anomalies.iter().take(10) {
            let _ = writeln!(
                s,
                "\n- **{}** ({}): {} (ops {:?})",
                a.kind, ch.checker, a.detail, a.ops
            );
        }
    }
    let _ = writeln!(
        s,
        "\n## Faults ({})\n\n| start (s) | end (s) | fault | errors |\n|---|---|---|---|",
        faults.len()
    );
    for f in faults {
        let _ = writeln!(
            s,
            "| {:.1} | {:.1} | {}: {} | {} |",
            f.start_ns as f64 / 1e9,
            f.end_ns as f64 / 1e9,
            f.kind,
            f.detail,
            f.errors.join("; ")
        );
    }
    let _ = writeln!(
        s,
        "\n![latency](latency.svg)\n\n![throughput](throughput.svg)\n\nNode logs: `logs/`."
    );
    std::fs::write(dir.join("summary.md"), s)?;
    Ok(())
}
