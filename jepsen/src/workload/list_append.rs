//! The `list_append` workload (not implemented yet).

use crate::check::CheckResult;
use crate::history::History;
use crate::workload::Ctx;

/// Extra arguments every metad node needs for this workload (e.g. longer watch retention).
pub fn node_args() -> Vec<String> {
    Vec::new()
}

/// The main phase: invoke operations until `ctx.deadline`.
pub async fn run(ctx: Ctx) -> anyhow::Result<()> {
    let _ = ctx;
    anyhow::bail!("workload list_append is not implemented yet")
}

/// The final phase, after the cluster has been healed.
pub async fn finish(ctx: Ctx) -> anyhow::Result<()> {
    let _ = ctx;
    Ok(())
}

/// The checkers that judge this workload's history.
pub fn check(history: &History) -> Vec<CheckResult> {
    let _ = history;
    Vec::new()
}
