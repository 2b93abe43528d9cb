//! The Cluster service: status (fanned out to every member), membership listing and changes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use metad_proto::v1::cluster_client::ClusterClient;
use metad_proto::v1::cluster_server::Cluster;
use metad_proto::v1::*;
use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::ChangeMembers;
use tonic::{Request, Response, Status};

use super::instrumented;
use crate::config::valid_site;
use crate::error::NodeError;
use crate::node::NodeCore;
use crate::types::{NodeId, NodeInfo};

pub struct ClusterApi {
    core: Arc<NodeCore>,
}

impl ClusterApi {
    pub fn new(core: Arc<NodeCore>) -> Self {
        ClusterApi { core }
    }

    /// (voters, all nodes) from the current membership.
    fn membership(&self) -> (BTreeSet<NodeId>, BTreeMap<NodeId, NodeInfo>) {
        let m = self.core.raft.metrics().borrow().membership_config.clone();
        let voters = m.membership().voter_ids().collect();
        let nodes = m
            .membership()
            .nodes()
            .map(|(id, n)| (*id, n.clone()))
            .collect();
        (voters, nodes)
    }

    /// Membership changes are judged against the leader's view only: a follower, or a node
    /// that was itself removed, may hold a stale membership and would answer a wrong
    /// definite error (found by the jepsen member nemesis). Others redirect to the leader.
    fn leader_only(&self) -> Result<(), NodeError> {
        if self.core.is_leader() {
            Ok(())
        } else {
            Err(self.core.not_leader())
        }
    }

    fn members(&self) -> Vec<Member> {
        let (voters, nodes) = self.membership();
        nodes
            .into_iter()
            .map(|(id, n)| Member {
                id,
                site: n.site,
                peer_addr: n.peer_addr,
                client_addr: n.client_addr,
                role: if voters.contains(&id) {
                    MemberRole::Voter
                } else {
                    MemberRole::Learner
                } as i32,
            })
            .collect()
    }

    async fn change(
        &self,
        changes: ChangeMembers<NodeId, NodeInfo>,
    ) -> Result<MemberChangeResponse, NodeError> {
        let timeout = self.core.config.request_timeout();
        match tokio::time::timeout(timeout, self.core.raft.change_membership(changes, false)).await
        {
            Ok(Ok(resp)) => Ok(MemberChangeResponse {
                members: self.members(),
                log_index: resp.log_id.index,
            }),
            Ok(Err(e)) => Err(map_write_error(&self.core, e)),
            Err(_) => Err(NodeError::Ambiguous(format!(
                "membership change not committed within {} ms; check `member list`",
                timeout.as_millis()
            ))),
        }
    }
}

fn map_write_error(
    core: &NodeCore,
    e: RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>,
) -> NodeError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => match f.leader_node {
            Some(n) => NodeError::NotLeader {
                leader_id: f.leader_id,
                leader_addr: Some(n.client_addr),
            },
            None => core.not_leader(),
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => match c {
            ChangeMembershipError::LearnerNotFound(l) => {
                NodeError::NotFound(format!("node {} is not a member of the cluster", l.node_id))
            }
            other => NodeError::FailedPrecondition(other.to_string()),
        },
        RaftError::Fatal(_) => NodeError::ShuttingDown,
    }
}

fn check_addr(field: &str, v: &str) -> Result<(), NodeError> {
    if crate::config::is_host_port(v) {
        Ok(())
    } else {
        Err(NodeError::InvalidArgument(format!(
            "{field}: {v:?} is not host:port"
        )))
    }
}

async fn remote_status(addr: &str, timeout: Duration) -> Result<NodeStatusResponse, String> {
    let ep = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(timeout)
        .timeout(timeout);
    let ch = tokio::time::timeout(timeout, ep.connect())
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("unreachable: {e}"))?;
    let mut c = ClusterClient::new(ch);
    c.node_status(NodeStatusRequest {})
        .await
        .map(|r| r.into_inner())
        .map_err(|s| s.message().to_string())
}

#[tonic::async_trait]
impl Cluster for ClusterApi {
    async fn status(
        &self,
        _req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        instrumented(&self.core, "Cluster/Status", async {
            let (voters, nodes) = self.membership();
            let local = self.core.local_status();
            let mut reports = Vec::new();
            let futs = nodes.iter().map(|(id, n)| {
                let local = local.clone();
                async move {
                    let status = if *id == self.core.id {
                        Ok(local)
                    } else {
                        remote_status(&n.client_addr, Duration::from_secs(2)).await
                    };
                    (*id, n.clone(), status)
                }
            });
            for (id, n, st) in futures::future::join_all(futs).await {
                let role = if voters.contains(&id) {
                    MemberRole::Voter
                } else {
                    MemberRole::Learner
                };
                let (status, error) = match st {
                    Ok(s) => (Some(s), String::new()),
                    Err(e) => (None, e),
                };
                reports.push(NodeReport {
                    id,
                    site: n.site,
                    client_addr: n.client_addr,
                    role: role as i32,
                    status,
                    error,
                });
            }
            let leader = self.core.leader();
            Ok(Response::new(StatusResponse {
                leader_id: leader.as_ref().map(|l| l.0).unwrap_or(0),
                leader_addr: leader.map(|l| l.1.client_addr).unwrap_or_default(),
                term: local.term,
                responder_id: self.core.id,
                nodes: reports,
            }))
        })
        .await
    }

    async fn node_status(
        &self,
        _req: Request<NodeStatusRequest>,
    ) -> Result<Response<NodeStatusResponse>, Status> {
        instrumented(&self.core, "Cluster/NodeStatus", async {
            Ok(Response::new(self.core.local_status()))
        })
        .await
    }

    async fn member_list(
        &self,
        _req: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        instrumented(&self.core, "Cluster/MemberList", async {
            Ok(Response::new(MemberListResponse {
                members: self.members(),
                leader_id: self.core.leader().map(|l| l.0).unwrap_or(0),
            }))
        })
        .await
    }

    async fn add_learner(
        &self,
        req: Request<AddLearnerRequest>,
    ) -> Result<Response<MemberChangeResponse>, Status> {
        let r = req.into_inner();
        instrumented(&self.core, "Cluster/AddLearner", async {
            self.leader_only()?;
            if r.id == 0 {
                return Err(NodeError::InvalidArgument("id: must be > 0".into()));
            }
            if !valid_site(&r.site) {
                return Err(NodeError::InvalidArgument(
                    "site: must be 1..=64 chars of [A-Za-z0-9._-]".into(),
                ));
            }
            check_addr("peer_addr", &r.peer_addr)?;
            check_addr("client_addr", &r.client_addr)?;
            let (voters, _) = self.membership();
            if voters.contains(&r.id) {
                return Err(NodeError::FailedPrecondition(format!(
                    "node {} is already a voter",
                    r.id
                )));
            }
            let info = NodeInfo {
                site: r.site,
                peer_addr: r.peer_addr,
                client_addr: r.client_addr,
            };
            // Catching up may take a snapshot transfer: allow more than one request timeout.
            let limit = self.core.config.request_timeout() * if r.wait_caught_up { 12 } else { 1 };
            match tokio::time::timeout(
                limit,
                self.core.raft.add_learner(r.id, info, r.wait_caught_up),
            )
            .await
            {
                Ok(Ok(resp)) => Ok(Response::new(MemberChangeResponse {
                    members: self.members(),
                    log_index: resp.log_id.index,
                })),
                Ok(Err(e)) => Err(map_write_error(&self.core, e)),
                Err(_) => Err(NodeError::Ambiguous(format!(
                    "learner {} not confirmed within {} ms; check `member list`",
                    r.id,
                    limit.as_millis()
                ))),
            }
        })
        .await
    }

    async fn promote_learner(
        &self,
        req: Request<PromoteLearnerRequest>,
    ) -> Result<Response<MemberChangeResponse>, Status> {
        let id = req.into_inner().id;
        instrumented(&self.core, "Cluster/PromoteLearner", async {
            self.leader_only()?;
            let (voters, nodes) = self.membership();
            if !nodes.contains_key(&id) {
                return Err(NodeError::NotFound(format!(
                    "node {id} is not a member; add it as a learner first"
                )));
            }
            if voters.contains(&id) {
                return Err(NodeError::FailedPrecondition(format!(
                    "node {id} is already a voter"
                )));
            }
            self.change(ChangeMembers::AddVoterIds([id].into()))
                .await
                .map(Response::new)
        })
        .await
    }

    async fn remove_member(
        &self,
        req: Request<RemoveMemberRequest>,
    ) -> Result<Response<MemberChangeResponse>, Status> {
        let id = req.into_inner().id;
        instrumented(&self.core, "Cluster/RemoveMember", async {
            self.leader_only()?;
            let (voters, nodes) = self.membership();
            if !nodes.contains_key(&id) {
                return Err(NodeError::NotFound(format!("node {id} is not a member")));
            }
            if voters.contains(&id) {
                if voters.len() == 1 {
                    return Err(NodeError::FailedPrecondition(
                        "cannot remove the last voter".into(),
                    ));
                }
                self.change(ChangeMembers::RemoveVoters([id].into()))
                    .await
                    .map(Response::new)
            } else {
                self.change(ChangeMembers::RemoveNodes([id].into()))
                    .await
                    .map(Response::new)
            }
        })
        .await
    }

    async fn transfer_leader(
        &self,
        _req: Request<TransferLeaderRequest>,
    ) -> Result<Response<TransferLeaderResponse>, Status> {
        instrumented(&self.core, "Cluster/TransferLeader", async {
            Err(NodeError::Unimplemented(
                "leader transfer is not available in openraft 0.9; stop the leader gracefully to move leadership".into(),
            ))
        })
        .await
    }
}
