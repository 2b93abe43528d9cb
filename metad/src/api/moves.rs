//! gRPC Moves and Agents services. Mutations are validated here (INVALID_ARGUMENT before
//! anything is proposed) and again in the state machine; reads run after the requested read
//! barrier in one view. KeepAlive is a bidirectional stream: one proposed renewal per message.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use metad_proto::raft::v1::{command::Op as CmdOp, reply, Reply};
use metad_proto::v1::agents_server::{Agents, AgentsServer};
use metad_proto::v1::moves_op::Op;
use metad_proto::v1::moves_reply::Result as R;
use metad_proto::v1::moves_server::{Moves, MovesServer};
use metad_proto::v1::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Router;
use tonic::{Request, Response, Status, Streaming};

use super::{instrumented, query, MAX_MESSAGE_BYTES};
use crate::error::NodeError;
use crate::node::NodeCore;
use crate::sm::model::Refusal;
use crate::sm::moves as mv;

pub(crate) fn add_services(router: Router, core: &Arc<NodeCore>) -> Router {
    let api = MovesApi { core: core.clone() };
    let moves = MovesServer::new(api.clone())
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let agents = AgentsServer::new(api)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    router.add_service(moves).add_service(agents)
}

#[derive(Clone)]
pub struct MovesApi {
    core: Arc<NodeCore>,
}

fn invalid(r: Refusal) -> NodeError {
    NodeError::Refused {
        code: r.code,
        message: r.message,
    }
}

fn mismatch<T>() -> Result<T, NodeError> {
    Err(NodeError::Internal("reply kind mismatch".into()))
}

impl MovesApi {
    fn header(&self, revision: u64) -> Option<ResponseHeader> {
        super::header(&self.core, revision)
    }

    /// Validates and proposes one moves op; returns the state machine's result and the
    /// revision after it.
    async fn write(&self, header: Option<WriteHeader>, op: Op) -> Result<(R, u64), NodeError> {
        let op = MovesOp { op: Some(op) };
        mv::validate(&op).map_err(invalid)?;
        let reply: Reply = super::propose(&self.core, header, CmdOp::Moves(op)).await?;
        match reply.result {
            Some(reply::Result::Moves(MovesReply { result: Some(r) })) => Ok((r, reply.revision)),
            _ => Err(NodeError::Internal("reply kind mismatch".into())),
        }
    }
}

/// One mutating RPC: take the header, propose the op, fill the response header.
macro_rules! write_rpc {
    ($self:ident, $req:ident, $name:literal, $variant:ident) => {{
        let mut r = $req.into_inner();
        instrumented(&$self.core, $name, async {
            let h = r.header.take();
            match $self.write(h, Op::$variant(r)).await? {
                (R::$variant(mut out), rev) => {
                    out.header = $self.header(rev);
                    Ok(Response::new(out))
                }
                _ => mismatch(),
            }
        })
        .await
    }};
}

#[tonic::async_trait]
impl Moves for MovesApi {
    async fn create_move(
        &self,
        req: Request<CreateMoveRequest>,
    ) -> Result<Response<CreateMoveResponse>, Status> {
        write_rpc!(self, req, "Moves/CreateMove", Create)
    }

    async fn claim_moves(
        &self,
        req: Request<ClaimMovesRequest>,
    ) -> Result<Response<ClaimMovesResponse>, Status> {
        write_rpc!(self, req, "Moves/ClaimMoves", Claim)
    }

    async fn report_progress(
        &self,
        req: Request<ReportProgressRequest>,
    ) -> Result<Response<ReportProgressResponse>, Status> {
        write_rpc!(self, req, "Moves/ReportProgress", Progress)
    }

    async fn complete_move(
        &self,
        req: Request<CompleteMoveRequest>,
    ) -> Result<Response<CompleteMoveResponse>, Status> {
        let r = req.into_inner();
        instrumented(&self.core, "Moves/CompleteMove", async {
            let Some(c) = r.completion else {
                return Err(NodeError::InvalidArgument("completion: required".into()));
            };
            let op = Op::Complete(CompleteMovesRequest {
                header: None,
                completions: vec![c],
            });
            match self.write(r.header, op).await? {
                (R::Complete(out), rev) => Ok(Response::new(CompleteMoveResponse {
                    header: self.header(rev),
                    result: out.results.into_iter().next(),
                })),
                _ => mismatch(),
            }
        })
        .await
    }

    async fn complete_moves(
        &self,
        req: Request<CompleteMovesRequest>,
    ) -> Result<Response<CompleteMovesResponse>, Status> {
        write_rpc!(self, req, "Moves/CompleteMoves", Complete)
    }

    async fn fail_move(
        &self,
        req: Request<FailMoveRequest>,
    ) -> Result<Response<FailMoveResponse>, Status> {
        write_rpc!(self, req, "Moves/FailMove", Fail)
    }

    async fn release_done(
        &self,
        req: Request<ReleaseDoneRequest>,
    ) -> Result<Response<ReleaseDoneResponse>, Status> {
        write_rpc!(self, req, "Moves/ReleaseDone", ReleaseDone)
    }

    async fn cancel_move(
        &self,
        req: Request<CancelMoveRequest>,
    ) -> Result<Response<CancelMoveResponse>, Status> {
        write_rpc!(self, req, "Moves/CancelMove", Cancel)
    }

    async fn get_move(
        &self,
        req: Request<GetMoveRequest>,
    ) -> Result<Response<GetMoveResponse>, Status> {
        let r = req.into_inner();
        instrumented(&self.core, "Moves/GetMove", async {
            let (m, rev) = query(&self.core, r.read.as_ref(), |kv| {
                mv::get_move(kv, r.move_id)
            })
            .await?;
            Ok(Response::new(GetMoveResponse {
                header: self.header(rev),
                r#move: Some(m),
            }))
        })
        .await
    }

    async fn list_moves(
        &self,
        req: Request<ListMovesRequest>,
    ) -> Result<Response<ListMovesResponse>, Status> {
        let r = req.into_inner();
        instrumented(&self.core, "Moves/ListMoves", async {
            crate::sm::topology::page_limit(r.limit).map_err(invalid)?;
            let ((moves, next_cursor), rev) =
                query(&self.core, r.read.as_ref(), |kv| mv::list_moves(kv, &r)).await?;
            Ok(Response::new(ListMovesResponse {
                header: self.header(rev),
                moves,
                next_cursor,
            }))
        })
        .await
    }

    async fn get_move_batch(
        &self,
        req: Request<GetMoveBatchRequest>,
    ) -> Result<Response<GetMoveBatchResponse>, Status> {
        let r = req.into_inner();
        instrumented(&self.core, "Moves/GetMoveBatch", async {
            let (b, rev) =
                query(&self.core, r.read.as_ref(), |kv| mv::get_batch(kv, r.batch)).await?;
            Ok(Response::new(GetMoveBatchResponse {
                header: self.header(rev),
                batch: Some(b),
            }))
        })
        .await
    }
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<KeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Agents for MovesApi {
    type KeepAliveStream = KeepAliveStream;

    async fn agent_register(
        &self,
        req: Request<AgentRegisterRequest>,
    ) -> Result<Response<AgentRegisterResponse>, Status> {
        write_rpc!(self, req, "Agents/AgentRegister", AgentRegister)
    }

    async fn keep_alive(
        &self,
        req: Request<Streaming<KeepAliveRequest>>,
    ) -> Result<Response<KeepAliveStream>, Status> {
        let mut input = req.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let api = self.clone();
        tokio::spawn(async move {
            // One renewal per message, in order; the first error ends the stream.
            while let Some(msg) = input.next().await {
                let out = match msg {
                    Ok(r) => keep_alive_once(&api, r).await,
                    Err(_) => return, // the client went away
                };
                let stop = out.is_err();
                if tx.send(out).await.is_err() || stop {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn agent_revoke(
        &self,
        req: Request<AgentRevokeRequest>,
    ) -> Result<Response<AgentRevokeResponse>, Status> {
        write_rpc!(self, req, "Agents/AgentRevoke", AgentRevoke)
    }

    async fn list_agents(
        &self,
        req: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsResponse>, Status> {
        let r = req.into_inner();
        instrumented(&self.core, "Agents/ListAgents", async {
            let (agents, rev) =
                query(&self.core, r.read.as_ref(), |kv| mv::list_agents(kv, &r)).await?;
            Ok(Response::new(ListAgentsResponse {
                header: self.header(rev),
                agents,
            }))
        })
        .await
    }
}

async fn keep_alive_once(
    api: &MovesApi,
    mut r: KeepAliveRequest,
) -> Result<KeepAliveResponse, Status> {
    instrumented(&api.core, "Agents/KeepAlive", async {
        let h = r.header.take();
        match api.write(h, Op::KeepAlive(r)).await? {
            (R::KeepAlive(mut out), rev) => {
                out.header = api.header(rev);
                Ok(out)
            }
            _ => mismatch(),
        }
    })
    .await
}
