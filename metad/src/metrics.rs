//! Prometheus metrics of one node, in a registry of its own (several nodes can share a process
//! in tests), served as text on the metrics port. Names are `metad_*` with units.

use std::sync::Mutex;

use prometheus::{
    Counter, Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, Opts, Registry, TextEncoder,
};

use crate::store::ApplyStats;

pub struct Metrics {
    pub registry: Registry,
    pub raft_term: IntGauge,
    pub raft_is_leader: IntGauge,
    pub raft_leader_changes: IntCounter,
    pub raft_commit_index: IntGauge,
    pub raft_applied_index: IntGauge,
    pub raft_last_log_index: IntGauge,
    pub sm_revision: IntGauge,
    pub log_entries: IntGauge,
    pub log_size_bytes: IntGauge,
    pub sm_size_bytes: IntGauge,
    pub snapshot_size_bytes: IntGauge,
    pub snapshot_build_seconds: Gauge,
    pub proposal_seconds: Histogram,
    pub proposal_batch: Histogram,
    pub read_index_seconds: Histogram,
    pub read_index_batch: Histogram,
    pub grpc_requests: IntCounterVec,
    pub grpc_seconds: HistogramVec,
    pub peer_rpcs: IntCounterVec,
    pub watch_streams: IntGauge,
    pub watch_cutoffs: IntCounter,
    /// The state machine's apply cost (`sync_apply` copies `store::ApplyStats` in at scrape).
    sm_apply_batches: IntCounter,
    sm_applied_commands: IntCounter,
    sm_apply_cpu_seconds: Counter,
    sm_apply_seconds: Counter,
    /// Serializes `sync_apply`: two scrapes at once would both add the same increase.
    apply_sync: Mutex<ApplyStats>,
}

/// Registers `m` and returns it (a metric is a handle: clones share one value).
fn reg<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    m: M,
) -> Result<M, prometheus::Error> {
    registry.register(Box::new(m.clone()))?;
    Ok(m)
}

fn latency_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.0001, 2.0, 18).unwrap_or_default()
}

impl Metrics {
    pub fn new(node_id: u64) -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new_custom(
            None,
            Some(
                [("node_id".to_string(), node_id.to_string())]
                    .into_iter()
                    .collect(),
            ),
        )?;
        let g = |name: &str, help: &str| reg(&registry, IntGauge::new(name, help)?);
        let c = |name: &str, help: &str| reg(&registry, IntCounter::new(name, help)?);
        let f = |name: &str, help: &str| reg(&registry, Counter::new(name, help)?);
        let h = |name: &str, help: &str, b: Vec<f64>| {
            reg(
                &registry,
                Histogram::with_opts(HistogramOpts::new(name, help).buckets(b))?,
            )
        };
        let raft_leader_changes = c("metad_raft_leader_changes_total", "Leader changes observed")?;
        let grpc_requests = IntCounterVec::new(
            Opts::new(
                "metad_grpc_requests_total",
                "Client gRPC requests by method and code",
            ),
            &["method", "code"],
        )?;
        let grpc_requests = reg(&registry, grpc_requests)?;
        let grpc_seconds = HistogramVec::new(
            HistogramOpts::new("metad_grpc_request_duration_seconds", "Client gRPC latency")
                .buckets(latency_buckets()),
            &["method"],
        )?;
        let grpc_seconds = reg(&registry, grpc_seconds)?;
        let peer_rpcs = IntCounterVec::new(
            Opts::new(
                "metad_peer_rpcs_total",
                "Outgoing peer RPCs by kind and result",
            ),
            &["rpc", "result"],
        )?;
        let peer_rpcs = reg(&registry, peer_rpcs)?;
        let watch_cutoffs = c(
            "metad_watch_slow_cutoffs_total",
            "Watch streams cut off because the receiver stopped reading",
        )?;
        let sm_apply_batches = c(
            "metad_sm_apply_batches_total",
            "Apply calls of the state machine (each applies one or more log entries in one transaction)",
        )?;
        let sm_applied_commands = c(
            "metad_sm_applied_commands_total",
            "Commands applied to the state machine (each command of a leader batch counts)",
        )?;
        let sm_apply_cpu_seconds = f(
            "metad_sm_apply_cpu_seconds_total",
            "CPU time of the applying thread in apply calls, commits included; divided by \
             applied commands it is the apply cost per write",
        )?;
        let sm_apply_seconds = f(
            "metad_sm_apply_seconds_total",
            "Wall time spent in apply calls, commits included",
        )?;
        let snapshot_build_seconds = reg(
            &registry,
            Gauge::new(
                "metad_snapshot_build_seconds",
                "How long the last snapshot this node built took (trigger to built)",
            )?,
        )?;
        Ok(Metrics {
            snapshot_build_seconds,
            watch_streams: g("metad_watch_streams", "Open watch streams")?,
            watch_cutoffs,
            raft_term: g("metad_raft_term", "Current Raft term")?,
            raft_is_leader: g("metad_raft_is_leader", "1 if this node is the leader")?,
            raft_leader_changes,
            raft_commit_index: g(
                "metad_raft_commit_index",
                "Highest committed log index known",
            )?,
            raft_applied_index: g("metad_raft_applied_index", "Last applied log index")?,
            raft_last_log_index: g("metad_raft_last_log_index", "Last log index stored")?,
            sm_revision: g("metad_sm_revision", "State-machine revision")?,
            log_entries: g("metad_raft_log_entries", "Entries in the local Raft log")?,
            log_size_bytes: g(
                "metad_raft_log_size_bytes",
                "Bytes of Raft log records on disk (raft-log/)",
            )?,
            sm_size_bytes: g("metad_sm_size_bytes", "Size of sm.redb")?,
            snapshot_size_bytes: g("metad_snapshot_size_bytes", "Size of the current snapshot")?,
            proposal_seconds: h(
                "metad_proposal_duration_seconds",
                "Time from proposal to applied reply on the leader",
                latency_buckets(),
            )?,
            proposal_batch: h(
                "metad_proposal_batch_commands",
                "Client commands carried by one proposed log entry",
                prometheus::exponential_buckets(1.0, 2.0, 10).unwrap_or_default(),
            )?,
            read_index_seconds: h(
                "metad_read_index_duration_seconds",
                "Time of one read-index round (shared by a batch of reads)",
                latency_buckets(),
            )?,
            read_index_batch: h(
                "metad_read_index_batch_reads",
                "Linearizable reads served by one read-index round",
                prometheus::exponential_buckets(1.0, 2.0, 12).unwrap_or_default(),
            )?,
            grpc_requests,
            grpc_seconds,
            peer_rpcs,
            sm_apply_batches,
            sm_applied_commands,
            sm_apply_cpu_seconds,
            sm_apply_seconds,
            apply_sync: Mutex::new(ApplyStats::default()),
            registry,
        })
    }

    /// Brings the apply counters up to `now` (the store's totals since it was opened).
    pub fn sync_apply(&self, now: ApplyStats) {
        let mut last = self.apply_sync.lock().unwrap_or_else(|e| e.into_inner());
        self.sm_apply_batches
            .inc_by(now.batches.saturating_sub(last.batches));
        self.sm_applied_commands
            .inc_by(now.commands.saturating_sub(last.commands));
        self.sm_apply_cpu_seconds
            .inc_by(now.cpu_ns.saturating_sub(last.cpu_ns) as f64 / 1e9);
        self.sm_apply_seconds
            .inc_by(now.wall_ns.saturating_sub(last.wall_ns) as f64 / 1e9);
        *last = now;
    }

    /// Text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}
