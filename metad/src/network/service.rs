//! The peer gRPC service: receives Raft RPCs for the local Raft instance, and answers the
//! read-index and forwarded-write requests of followers. Errors travel as metad statuses.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::watch;
use tonic::Streaming;

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
    /// Turns true when the node stops: open append streams end, so that the server's graceful
    /// shutdown does not wait for the leader to hang up.
    stop: watch::Receiver<bool>,
}

impl PeerService {
    pub fn new(core: Arc<NodeCore>, stop: watch::Receiver<bool>) -> Self {
        PeerService { core, stop }
    }
}

type PayloadStream = Pin<Box<dyn Stream<Item = Result<Payload, Status>> + Send>>;

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

    type AppendStreamStream = PayloadStream;

    /// Answers each AppendEntries on the stream in order, one at a time, on the task that
    /// serves the stream. Ends when the sender closes it, on a message that does not decode
    /// (with that error), or when this node stops.
    async fn append_stream(
        &self,
        req: Request<Streaming<Payload>>,
    ) -> Result<Response<PayloadStream>, Status> {
        // The state carries `ended`: after an error reply the stream ends (the sender reopens
        // it for its next call).
        let state = (
            req.into_inner(),
            self.core.clone(),
            self.stop.clone(),
            false,
        );
        let replies =
            futures::stream::unfold(state, |(mut inbound, core, mut stop, ended)| async move {
                if ended || *stop.borrow() {
                    return None;
                }
                let msg = tokio::select! {
                    m = inbound.message() => m,
                    _ = stop.changed() => return None,
                };
                let payload = match msg {
                    Ok(Some(p)) => p,
                    Ok(None) | Err(_) => return None,
                };
                let reply = match decode(&payload) {
                    Ok(rpc) => {
                        encode(&core.raft.append_entries(rpc).await).map(Response::into_inner)
                    }
                    Err(st) => Err(st),
                };
                let ended = reply.is_err();
                Some((reply, (inbound, core, stop, ended)))
            });
        Ok(Response::new(Box::pin(replies)))
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
