//! The peer gRPC service: receives Raft RPCs for the local Raft instance, and answers the
//! read-index and forwarded-write requests of followers. Errors travel as metad statuses.

use std::sync::Arc;

use metad_proto::raft::v1::raft_peer_server::RaftPeer;
use metad_proto::raft::v1::{
    Command, ForwardRequest, ForwardResponse, Payload, ReadIndexRequest, ReadIndexResponse,
};
use prost::Message;
use serde::{de::DeserializeOwned, Serialize};
use tonic::{Request, Response, Status};

use crate::error::NodeError;
use crate::node::NodeCore;
use crate::types::codec;

pub struct PeerService {
    core: Arc<NodeCore>,
}

impl PeerService {
    pub fn new(core: Arc<NodeCore>) -> Self {
        PeerService { core }
    }
}

fn decode<T: DeserializeOwned>(p: &Payload) -> Result<T, Status> {
    codec::decode(&p.data).map_err(|e| {
        NodeError::InvalidArgument(format!("peer payload: {e}"))
            .details()
            .to_status()
    })
}

fn encode<T: Serialize>(v: &T) -> Result<Response<Payload>, Status> {
    codec::encode(v)
        .map(|data| Response::new(Payload { data }))
        .map_err(|e| {
            NodeError::Internal(format!("encode peer reply: {e}"))
                .details()
                .to_status()
        })
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn vote(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc = decode(req.get_ref())?;
        encode(&self.core.raft.vote(rpc).await)
    }

    async fn append_entries(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc = decode(req.get_ref())?;
        encode(&self.core.raft.append_entries(rpc).await)
    }

    async fn install_snapshot(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc = decode(req.get_ref())?;
        encode(&self.core.raft.install_snapshot(rpc).await)
    }

    async fn read_index(
        &self,
        _req: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexResponse>, Status> {
        let idx = self
            .core
            .leader_read_index()
            .await
            .map_err(|e| e.details().to_status())?;
        Ok(Response::new(ReadIndexResponse {
            read_index: idx,
            leader_id: self.core.id,
        }))
    }

    async fn forward(
        &self,
        req: Request<ForwardRequest>,
    ) -> Result<Response<ForwardResponse>, Status> {
        let cmd = Command::decode(req.get_ref().command.as_slice()).map_err(|e| {
            NodeError::InvalidArgument(format!("forwarded command: {e}"))
                .details()
                .to_status()
        })?;
        let (reply, log_index) = self
            .core
            .propose_local(cmd)
            .await
            .map_err(|e| e.details().to_status())?;
        Ok(Response::new(ForwardResponse {
            reply: reply.encode_to_vec(),
            log_index,
        }))
    }
}
