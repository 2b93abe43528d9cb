//! The write path. A command is proposed on the leader (stamped with the leader's wall clock,
//! the only way time enters the state machine), or forwarded once to the leader by a follower.
//! Because every command carries `(client_id, seq)` and the state machine deduplicates, proposing
//! the same command again after an unknown outcome is safe; the *reported* outcome of a timeout
//! after proposal is still `Ambiguous`, never failure. On the leader, commands proposed
//! concurrently are grouped into one log entry ([`ProposalBatcher`]).

use std::sync::Weak;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use metad_proto::raft::v1::{command::Op, reply, Command, CommandBatch, Reply, ReplyBatch};
use openraft::error::{ClientWriteError, RaftError};
use prost::Message;
use tokio::sync::{mpsc, oneshot};

use super::NodeCore;
use crate::error::NodeError;
use crate::types::LogCommand;

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Most commands folded into one log entry.
const BATCH_MAX: usize = 256;
/// Most encoded bytes of commands folded into one log entry (ImportFiles carry up to 1000
/// files each).
const BATCH_MAX_BYTES: usize = 1 << 20;

type Waiter = oneshot::Sender<Result<(Reply, u64), NodeError>>;

/// Group commit of proposals on the leader: concurrent commands become one `CommandBatch`
/// entry (one append, one fsync per node, one apply transaction), each applied exactly as its
/// own entry would be and answered with its own reply.
pub struct ProposalBatcher {
    tx: mpsc::UnboundedSender<(Command, Waiter)>,
}

impl ProposalBatcher {
    pub fn spawn(core: Weak<NodeCore>) -> ProposalBatcher {
        let (tx, mut rx) = mpsc::unbounded_channel::<(Command, Waiter)>();
        // One proposal at a time: commands that arrive while it is in flight queue here and
        // go out together as the next entry. A second proposal in flight never overlapped the
        // first's round trip (openraft 0.9's replication has one AppendEntries in flight per
        // follower, so two writing clients get one client's rate), and it halved the batches:
        // one at a time gave ~10 % more writes/s at 128 clients, for less CPU per write
        // (docs/benchmarks.md, round 16).
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut bytes = first.0.encoded_len();
                let mut batch = vec![first];
                while batch.len() < BATCH_MAX && bytes < BATCH_MAX_BYTES {
                    match rx.try_recv() {
                        Ok(item) => {
                            bytes += item.0.encoded_len();
                            batch.push(item);
                        }
                        Err(_) => break,
                    }
                }
                let Some(core) = core.upgrade() else { break };
                core.propose_batch(batch).await;
            }
        });
        ProposalBatcher { tx }
    }
}

impl NodeCore {
    /// Proposes on this node, which must be the leader. Returns the reply and its log index.
    /// Commands proposed concurrently share one log entry (see [`ProposalBatcher`]).
    pub async fn propose_local(&self, cmd: Command) -> Result<(Reply, u64), NodeError> {
        if matches!(cmd.op, Some(Op::Batch(_))) {
            return Err(NodeError::InvalidArgument(
                "op: batch is leader-internal".into(),
            ));
        }
        let timeout = self.config.request_timeout();
        let (tx, rx) = oneshot::channel();
        self.proposals
            .tx
            .send((cmd, tx))
            .map_err(|_| NodeError::ShuttingDown)?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(NodeError::ShuttingDown),
            Err(_) => Err(NodeError::Ambiguous(format!(
                "proposed but not applied within {} ms; retry with the same (client_id, seq)",
                timeout.as_millis()
            ))),
        }
    }

    /// Proposes `batch` as one entry (a single command as itself) and answers every waiter.
    async fn propose_batch(&self, batch: Vec<(Command, Waiter)>) {
        let now = now_ms();
        let (mut cmds, waiters): (Vec<Command>, Vec<Waiter>) = batch.into_iter().unzip();
        for c in &mut cmds {
            c.leader_time_ms = now;
        }
        let n = cmds.len();
        let entry = if n == 1 {
            cmds.pop().unwrap_or_default()
        } else {
            Command {
                client_id: format!("metad-leader-{}", self.id),
                seq: 1,
                leader_time_ms: now,
                op: Some(Op::Batch(CommandBatch { commands: cmds })),
            }
        };
        let res = self.propose_entry(entry).await;
        self.metrics.proposal_batch.observe(n as f64);
        match res {
            Ok((reply, index)) if n == 1 => {
                for w in waiters {
                    let _ = w.send(Ok((reply.clone(), index)));
                }
            }
            Ok((reply, index)) => match reply.result {
                Some(reply::Result::Batch(ReplyBatch { replies })) if replies.len() == n => {
                    for (w, r) in waiters.into_iter().zip(replies) {
                        let _ = w.send(Ok((r, index)));
                    }
                }
                other => {
                    let e = NodeError::Internal(format!(
                        "batch of {n} answered with an unexpected reply: {other:?}"
                    ));
                    for w in waiters {
                        let _ = w.send(Err(e.clone()));
                    }
                }
            },
            Err(e) => {
                for w in waiters {
                    let _ = w.send(Err(e.clone()));
                }
            }
        }
    }

    /// One `client_write` of an entry, with the request timeout.
    async fn propose_entry(&self, cmd: Command) -> Result<(Reply, u64), NodeError> {
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
