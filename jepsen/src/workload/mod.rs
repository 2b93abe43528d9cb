//! Workloads: clients that drive the real metad API and record every operation into the
//! shared [`Recorder`]. Each workload module provides
//! - `run(ctx)`: the main phase, invoking operations until `ctx.deadline` (faults are being
//!   injected meanwhile);
//! - `finish(ctx)`: the final phase after the cluster has been healed (final reads);
//! - `check(history)`: the checker(s) that judge its history.
//!
//! A workload must never treat an unknown outcome as failure: `ClientError::Ambiguous`,
//! timeouts and transport errors on writes are recorded as `info` (see `history`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use metad_client::{Client, ClientConfig};

use crate::check::CheckResult;
use crate::history::{History, Recorder};

pub mod list_append;
pub mod moves;
pub mod namespace;
pub mod register;
pub mod watch;

/// What a workload gets from the runner.
#[derive(Clone)]
pub struct Ctx {
    /// Client endpoints of every node, node 1 first.
    pub endpoints: Vec<String>,
    pub recorder: Recorder,
    /// Number of concurrent client workers.
    pub concurrency: usize,
    /// Stop invoking new operations at this instant.
    pub deadline: tokio::time::Instant,
    /// Seed for every random choice the workload makes.
    pub seed: u64,
    /// Total time a client may spend on one operation (retries included) before the outcome
    /// is recorded as unknown.
    pub op_timeout: Duration,
    /// The run's results folder, for workload-specific artifacts.
    pub dir: PathBuf,
}

impl Ctx {
    /// A client over every endpoint (it follows the leader), with the run's timeouts.
    pub async fn client(&self) -> anyhow::Result<Client> {
        let mut cfg = ClientConfig::new(self.endpoints.iter().cloned());
        cfg.total_timeout = self.op_timeout;
        cfg.request_timeout = self.op_timeout.min(Duration::from_secs(2));
        cfg.connect_timeout = Duration::from_millis(500);
        Client::connect(cfg).await.context("connect client")
    }

    /// True once the main phase is over.
    pub fn done(&self) -> bool {
        tokio::time::Instant::now() >= self.deadline
    }
}

/// The workloads the harness knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Per-key read/write/compare-and-set through Txn; checked for linearizability.
    Register,
    /// Transactions appending to and reading lists; checked for dependency cycles (Elle).
    ListAppend,
    /// Concurrent create/rename/unlink storms with reads; checked against a replay.
    Namespace,
    /// Watchers on every node; checked for order, gaps, duplicates and agreement.
    Watch,
    /// The move protocol driven by fake agents; checked for DESIGN §5 invariants 3 and 4.
    Moves,
}

impl Workload {
    pub const ALL: [Workload; 5] = [
        Workload::Register,
        Workload::ListAppend,
        Workload::Namespace,
        Workload::Watch,
        Workload::Moves,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Register => "register",
            Workload::ListAppend => "list-append",
            Workload::Namespace => "namespace",
            Workload::Watch => "watch",
            Workload::Moves => "moves",
        }
    }

    pub fn parse(s: &str) -> Option<Workload> {
        Self::ALL.into_iter().find(|w| w.name() == s)
    }

    /// Extra arguments for every metad node.
    pub fn node_args(self) -> Vec<String> {
        match self {
            Workload::Register => register::node_args(),
            Workload::ListAppend => list_append::node_args(),
            Workload::Namespace => namespace::node_args(),
            Workload::Watch => watch::node_args(),
            Workload::Moves => moves::node_args(),
        }
    }

    /// The main phase.
    pub async fn run(self, ctx: Ctx) -> anyhow::Result<()> {
        match self {
            Workload::Register => register::run(ctx).await,
            Workload::ListAppend => list_append::run(ctx).await,
            Workload::Namespace => namespace::run(ctx).await,
            Workload::Watch => watch::run(ctx).await,
            Workload::Moves => moves::run(ctx).await,
        }
    }

    /// The final phase, after the cluster is healed.
    pub async fn finish(self, ctx: Ctx) -> anyhow::Result<()> {
        match self {
            Workload::Register => register::finish(ctx).await,
            Workload::ListAppend => list_append::finish(ctx).await,
            Workload::Namespace => namespace::finish(ctx).await,
            Workload::Watch => watch::finish(ctx).await,
            Workload::Moves => moves::finish(ctx).await,
        }
    }

    /// The checkers for this workload's history.
    pub fn check(self, history: &History) -> Vec<CheckResult> {
        match self {
            Workload::Register => register::check(history),
            Workload::ListAppend => list_append::check(history),
            Workload::Namespace => namespace::check(history),
            Workload::Watch => watch::check(history),
            Workload::Moves => moves::check(history),
        }
    }
}
