//! The write path. A command is proposed on the leader (stamped with the leader's wall clock,
//! the only way time enters the state machine), or forwarded once to the leader by a follower.
//! Because every command carries `(client_id, seq)` and the state machine deduplicates, proposing
//! the same command again after an unknown outcome is safe; the *reported* outcome of a timeout
//! after proposal is still `Ambiguous`, never failure.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use metad_proto::raft::v1::{Command, Reply};
use openraft::error::{ClientWriteError, RaftError};
use prost::Message;

use super::NodeCore;
use crate::error::NodeError;
use crate::types::LogCommand;

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl NodeCore {
    /// Proposes on this node, which must be the leader. Returns the reply and its log index.
    pub async fn propose_local(&self, mut cmd: Command) -> Result<(Reply, u64), NodeError> {
        cmd.leader_time_ms = now_ms();
        let started = Instant::now();
        let timeout = self.config.request_timeout();
        let res = tokio::time::timeout(timeout, self.raft.client_write(LogCommand(cmd))).await;
        match res {
            Ok(Ok(resp)) => {
                self.metrics
                    .proposal_seconds
                    .observe(started.elapsed().as_secs_f64());
                Ok((resp.data.0, resp.log_id.index))
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(NodeError::NotLeader {
                    leader_id: f.leader_id,
                    leader_addr: f.leader_node.map(|n| n.client_addr),
                })
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => Err(
                NodeError::Internal(format!("unexpected membership error on write: {e}")),
            ),
            Ok(Err(RaftError::Fatal(e))) => {
                tracing::warn!(error = %e, "write failed: raft stopped");
                Err(NodeError::ShuttingDown)
            }
            Err(_) => Err(NodeError::Ambiguous(format!(
                "proposed but not applied within {} ms; retry with the same (client_id, seq)",
                timeout.as_millis()
            ))),
        }
    }

    /// Applies a client command through the leader, wherever this node is. A state-machine
    /// refusal comes back as `Ok(reply)` carrying the error; the API maps it.
    pub async fn write(&self, cmd: Command) -> Result<(Reply, u64), NodeError> {
        crate::sm::apply::validate(&cmd).map_err(NodeError::InvalidArgument)?;
        let timeout = self.config.request_timeout();
        // One retry covers a leader change discovered on the way (NotLeader from a stale view).
        let mut last_err = None;
        for _ in 0..2 {
            let (leader_id, leader) = self.wait_for_leader(timeout / 2).await?;
            let res = if leader_id == self.id {
                self.propose_local(cmd.clone()).await
            } else {
                match self
                    .peers
                    .forward(leader_id, &leader, cmd.encode_to_vec(), timeout)
                    .await
                {
                    Ok((bytes, idx)) => Reply::decode(bytes.as_slice())
                        .map(|r| (r, idx))
                        .map_err(|e| NodeError::Internal(format!("leader reply undecodable: {e}"))),
                    Err(e) => Err(e),
                }
            };
            match res {
                Err(NodeError::NotLeader { .. }) => {
                    // The leader moved; wait for this node to learn the new one and go again.
                    last_err = Some(self.not_leader());
                    let mut rx = self.raft.metrics();
                    let _ = tokio::time::timeout(timeout / 4, rx.changed()).await;
                }
                other => return other,
            }
        }
        Err(last_err.unwrap_or_else(|| self.not_leader()))
    }
}
