//! This node's own status (for the Cluster API), the task that mirrors Raft metrics into
//! Prometheus gauges, and the `/metrics` HTTP endpoint.

use std::future::Future;
use std::sync::Arc;

use metad_proto::v1::NodeStatusResponse;
use openraft::ServerState;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::NodeCore;

impl NodeCore {
    pub fn local_status(&self) -> NodeStatusResponse {
        let m = self.raft.metrics().borrow().clone();
        let state = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        let applied = self.sm.applied();
        NodeStatusResponse {
            id: self.id,
            site: self.info.site.clone(),
            client_addr: self.info.client_addr.clone(),
            state: state.into(),
            term: m.current_term,
            leader_id: m.current_leader.unwrap_or(0),
            last_log_index: m.last_log_index.unwrap_or(0),
            commit_index: self.log.committed_index().max(applied.log_index),
            applied_index: applied.log_index,
            revision: applied.revision,
            snapshot_index: m.snapshot.map(|l| l.index).unwrap_or(0),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

fn file_size(p: &std::path::Path) -> i64 {
    std::fs::metadata(p).map(|m| m.len() as i64).unwrap_or(0)
}

/// Mirrors Raft metrics into gauges; counts leader changes.
pub(super) async fn track_metrics(core: Arc<NodeCore>, mut stop: watch::Receiver<bool>) {
    let mut rx = core.raft.metrics();
    let mut last_leader = None;
    let dir = crate::store::DataDir::new(&core.config.data_dir);
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        {
            let m = rx.borrow_and_update().clone();
            let g = &core.metrics;
            g.raft_term.set(m.current_term as i64);
            g.raft_is_leader
                .set((m.current_leader == Some(core.id)) as i64);
            g.raft_last_log_index
                .set(m.last_log_index.unwrap_or(0) as i64);
            g.raft_applied_index
                .set(m.last_applied.map(|l| l.index).unwrap_or(0) as i64);
            g.raft_commit_index.set(core.log.committed_index() as i64);
            g.sm_revision.set(core.sm.applied().revision as i64);
            if m.current_leader != last_leader && m.current_leader.is_some() {
                g.raft_leader_changes.inc();
            }
            last_leader = m.current_leader;
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = tick.tick() => {
                let g = &core.metrics;
                g.log_entries.set(core.log.entry_count() as i64);
                g.log_size_bytes.set(core.log.stats().bytes as i64);
                g.sm_size_bytes.set(file_size(&dir.sm_db()));
                g.snapshot_size_bytes.set(core.sm.snapshot_bytes() as i64);
            }
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Serves `GET /metrics` (Prometheus text) and `GET /health` until `shutdown` resolves.
pub(super) async fn serve_metrics(
    core: Arc<NodeCore>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    use axum::routing::get;
    let c = core.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let c = c.clone();
                async move {
                    c.metrics.sync_apply(c.sm.apply_stats());
                    (
                        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        c.metrics.render(),
                    )
                }
            }),
        )
        .route("/health", get(|| async { "ok\n" }));
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "metrics server failed");
    }
}
