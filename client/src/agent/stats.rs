//! [`AgentStats`]: the agent's counters (atomics, readable while it runs) and their
//! [`StatsSnapshot`] for tests and logs.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Live counters of one agent. Cheap to read at any time through an `Arc`.
#[derive(Debug, Default)]
pub struct AgentStats {
    pub(crate) lease: AtomicU64,
    pub(crate) registrations: AtomicU64,
    pub(crate) claims: AtomicU64,
    pub(crate) tasks_claimed: AtomicU64,
    pub(crate) copied_files: AtomicU64,
    pub(crate) copied_bytes: AtomicU64,
    pub(crate) committed: AtomicU64,
    pub(crate) recopies: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) aborted: AtomicU64,
    pub(crate) released: AtomicU64,
    pub(crate) tombstones_reclaimed: AtomicU64,
    pub(crate) errors: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// The current lease (0 before the first registration).
    pub lease: u64,
    /// Leases registered (1 + re-registrations after a lost lease).
    pub registrations: u64,
    /// ClaimMoves calls, and copy tasks they handed out.
    pub claims: u64,
    pub tasks_claimed: u64,
    /// Copies placed at their location (before commit), and their bytes.
    pub copied_files: u64,
    pub copied_bytes: u64,
    /// Completions by outcome.
    pub committed: u64,
    pub recopies: u64,
    pub refused: u64,
    /// FailMove calls (copy errors, unreachable sources, checksum mismatches).
    pub failures: u64,
    /// Copies abandoned because the lease was lost or the agent stopped.
    pub aborted: u64,
    /// Released instances whose bytes were deleted and confirmed.
    pub released: u64,
    pub tombstones_reclaimed: u64,
    /// Calls that failed and were retried or given up (see the logs).
    pub errors: u64,
}

impl AgentStats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            lease: g(&self.lease),
            registrations: g(&self.registrations),
            claims: g(&self.claims),
            tasks_claimed: g(&self.tasks_claimed),
            copied_files: g(&self.copied_files),
            copied_bytes: g(&self.copied_bytes),
            committed: g(&self.committed),
            recopies: g(&self.recopies),
            refused: g(&self.refused),
            failures: g(&self.failures),
            aborted: g(&self.aborted),
            released: g(&self.released),
            tombstones_reclaimed: g(&self.tombstones_reclaimed),
            errors: g(&self.errors),
        }
    }
}
