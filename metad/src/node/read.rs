//! The read path: linearizable (read index), serializable (local) and `min_revision` waits.
//!
//! Linearizable reads are coalesced: a single task runs read-index rounds one after another,
//! and every read that arrived while a round was in flight joins the *next* round (never the
//! one already running, whose index may predate the read). On the leader a round is openraft's
//! `get_read_log_id` (leadership confirmed by a heartbeat quorum); on a follower it is one
//! ReadIndex RPC to the leader. The read then waits until the local state machine has applied
//! that index.

use std::sync::Weak;
use std::time::{Duration, Instant};

use metad_proto::v1::{Consistency, ReadOptions};
use openraft::error::{CheckIsLeaderError, RaftError};
use tokio::sync::{mpsc, oneshot};

use super::NodeCore;
use crate::error::NodeError;

type Waiter = oneshot::Sender<Result<u64, NodeError>>;

pub struct ReadBatcher {
    tx: mpsc::UnboundedSender<Waiter>,
}

impl ReadBatcher {
    pub fn spawn(core: Weak<NodeCore>) -> ReadBatcher {
        let (tx, mut rx) = mpsc::unbounded_channel::<Waiter>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut waiters = vec![first];
                while let Ok(w) = rx.try_recv() {
                    waiters.push(w);
                }
                let Some(core) = core.upgrade() else { break };
                let started = Instant::now();
                let r = core.read_index_round().await;
                core.metrics
                    .read_index_seconds
                    .observe(started.elapsed().as_secs_f64());
                core.metrics.read_index_batch.observe(waiters.len() as f64);
                drop(core);
                for w in waiters {
                    let _ = w.send(r.clone());
                }
            }
        });
        ReadBatcher { tx }
    }
}

impl NodeCore {
    /// One read-index round (leader: quorum heartbeat; follower: ask the leader).
    async fn read_index_round(&self) -> Result<u64, NodeError> {
        let timeout = self.config.request_timeout() / 2;
        let (leader_id, leader) = self.wait_for_leader(timeout).await?;
        if leader_id == self.id {
            self.leader_read_index_now(timeout).await
        } else {
            self.peers.read_index(leader_id, &leader, timeout).await
        }
    }

    async fn leader_read_index_now(&self, timeout: Duration) -> Result<u64, NodeError> {
        match tokio::time::timeout(timeout, self.raft.get_read_log_id()).await {
            Ok(Ok((read_log_id, _applied))) => Ok(read_log_id.map(|l| l.index).unwrap_or(0)),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                Err(NodeError::NotLeader {
                    leader_id: f.leader_id,
                    leader_addr: f.leader_node.map(|n| n.client_addr),
                })
            }
            Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e)))) => Err(
                NodeError::Unavailable(format!("leader cannot reach a quorum: {e}")),
            ),
            Ok(Err(RaftError::Fatal(_))) => Err(NodeError::ShuttingDown),
            Err(_) => Err(NodeError::Unavailable(format!(
                "leadership not confirmed by a quorum within {} ms",
                timeout.as_millis()
            ))),
        }
    }

    /// Read index for a follower's request: this node must be the leader. Coalesced.
    pub async fn leader_read_index(&self) -> Result<u64, NodeError> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        self.coalesced_read_index().await
    }

    async fn coalesced_read_index(&self) -> Result<u64, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.reads
            .tx
            .send(tx)
            .map_err(|_| NodeError::ShuttingDown)?;
        rx.await.map_err(|_| NodeError::ShuttingDown)?
    }

    /// Waits until a read with these options may be served from the local state machine.
    /// Returns the revision the read will observe at least.
    pub async fn read_barrier(&self, opts: Option<&ReadOptions>) -> Result<(), NodeError> {
        let deadline = Instant::now() + self.config.request_timeout();
        let consistency = opts
            .map(|o| o.consistency())
            .unwrap_or(Consistency::Linearizable);
        let min_revision = opts.map(|o| o.min_revision).unwrap_or(0);
        // The `stale-reads` mutation serves linearizable reads from the local state machine.
        if matches!(
            consistency,
            Consistency::Linearizable | Consistency::Unspecified
        ) && !crate::mutations::on("stale-reads")
        {
            let idx = self.coalesced_read_index().await?;
            self.wait_applied(
                deadline,
                |a| a.log_index >= idx,
                || format!("log index {idx}"),
            )
            .await?;
        }
        if min_revision > 0 {
            self.wait_applied(
                deadline,
                |a| a.revision >= min_revision,
                || format!("min_revision {min_revision}"),
            )
            .await?;
        }
        Ok(())
    }

    async fn wait_applied(
        &self,
        deadline: Instant,
        ok: impl Fn(&crate::store::AppliedState) -> bool,
        what: impl Fn() -> String,
    ) -> Result<(), NodeError> {
        let mut rx = self.sm.subscribe();
        let left = deadline.saturating_duration_since(Instant::now());
        let res = tokio::time::timeout(left, rx.wait_for(|a| ok(a)))
            .await
            .map(|r| r.map(|_| ()));
        match res {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(NodeError::ShuttingDown),
            Err(_) => {
                let a = self.sm.applied();
                Err(NodeError::Timeout(format!(
                    "{} not applied on node {} in time (it is at revision {}, log index {})",
                    what(),
                    self.id,
                    a.revision,
                    a.log_index
                )))
            }
        }
    }
}
