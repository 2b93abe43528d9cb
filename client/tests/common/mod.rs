//! Shared fakes for the client's integration tests: a scripted metad node serving the Cluster
//! and Register gRPC services on 127.0.0.1:0, a server that drops connections after reading
//! the request, and an address nothing listens on.

#![allow(clippy::unwrap_used, dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metad_client::{pb, Client, ClientConfig, ErrorCode};
use metad_proto::internal::v1 as ipb;
use metad_proto::internal::v1::register_server::{Register, RegisterServer};
use metad_proto::v1::cluster_server::{Cluster, ClusterServer};
use metad_proto::ErrorDetails;
use tonic::{Request, Response, Status};

#[derive(Clone)]
pub enum Act {
    Ok,
    Fail(ErrorCode),
    NotLeader(String),
    Hang,
}

pub struct Node {
    pub id: u64,
    pub script: Mutex<VecDeque<Act>>,
    /// (method, client_id, seq) of every request received.
    pub seen: Mutex<Vec<(String, String, u64)>>,
    pub status_leader_addr: Mutex<String>,
}

impl Node {
    pub fn new(id: u64, script: Vec<Act>) -> Arc<Node> {
        Arc::new(Node {
            id,
            script: Mutex::new(script.into()),
            seen: Mutex::new(Vec::new()),
            status_leader_addr: Mutex::new(String::new()),
        })
    }

    pub fn seen(&self) -> Vec<(String, String, u64)> {
        self.seen.lock().unwrap().clone()
    }

    async fn act(&self, method: &str, header: Option<pb::WriteHeader>) -> Result<(), Status> {
        let h = header.unwrap_or_default();
        self.seen
            .lock()
            .unwrap()
            .push((method.into(), h.client_id, h.seq));
        let act = self.script.lock().unwrap().pop_front().unwrap_or(Act::Ok);
        let status = |code, addr: Option<String>| {
            ErrorDetails {
                code,
                message: format!("scripted by node {}", self.id),
                leader_id: None,
                leader_addr: addr,
            }
            .to_status()
        };
        match act {
            Act::Ok => Ok(()),
            Act::Fail(code) => Err(status(code, None)),
            Act::NotLeader(addr) => Err(status(ErrorCode::NotLeader, Some(addr))),
            // Never answers: the client's deadline must end the call.
            Act::Hang => std::future::pending().await,
        }
    }

    fn header(&self) -> Option<pb::ResponseHeader> {
        let revision = self.seen.lock().unwrap().len() as u64;
        Some(pb::ResponseHeader {
            revision,
            node_id: self.id,
            raft_term: 1,
        })
    }
}

#[derive(Clone)]
struct Svc(Arc<Node>);

#[tonic::async_trait]
impl Register for Svc {
    async fn put(&self, r: Request<ipb::PutRequest>) -> Result<Response<ipb::PutResponse>, Status> {
        self.0.act("put", r.into_inner().header).await?;
        Ok(Response::new(ipb::PutResponse {
            header: self.0.header(),
            prev_value: None,
        }))
    }
    async fn incr(
        &self,
        r: Request<ipb::IncrRequest>,
    ) -> Result<Response<ipb::IncrResponse>, Status> {
        self.0.act("incr", r.into_inner().header).await?;
        Ok(Response::new(ipb::IncrResponse {
            header: self.0.header(),
            value: 1,
        }))
    }
    async fn get(
        &self,
        _r: Request<ipb::GetRequest>,
    ) -> Result<Response<ipb::GetResponse>, Status> {
        self.0.act("get", None).await?;
        Ok(Response::new(ipb::GetResponse {
            header: self.0.header(),
            value: Some(b"v".to_vec()),
            mod_revision: 1,
        }))
    }
}

#[tonic::async_trait]
impl Cluster for Svc {
    async fn status(
        &self,
        _r: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.0.act("status", None).await?;
        let leader_addr = self.0.status_leader_addr.lock().unwrap().clone();
        Ok(Response::new(pb::StatusResponse {
            leader_addr,
            responder_id: self.0.id,
            ..Default::default()
        }))
    }
    async fn node_status(
        &self,
        _r: Request<pb::NodeStatusRequest>,
    ) -> Result<Response<pb::NodeStatusResponse>, Status> {
        self.0.act("node_status", None).await?;
        Ok(Response::new(pb::NodeStatusResponse {
            id: self.0.id,
            ..Default::default()
        }))
    }
    async fn member_list(
        &self,
        _r: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        self.0.act("member_list", None).await?;
        Ok(Response::new(pb::MemberListResponse {
            leader_id: self.0.id,
            members: vec![],
        }))
    }
    async fn add_learner(
        &self,
        _r: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::MemberChangeResponse>, Status> {
        self.0.act("add_learner", None).await?;
        Ok(Response::new(pb::MemberChangeResponse {
            members: vec![],
            log_index: 7,
        }))
    }
    async fn promote_learner(
        &self,
        _r: Request<pb::PromoteLearnerRequest>,
    ) -> Result<Response<pb::MemberChangeResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn remove_member(
        &self,
        _r: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::MemberChangeResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn transfer_leader(
        &self,
        _r: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

/// Serves `node` on a fresh local port; returns `host:port`.
pub async fn serve(node: &Arc<Node>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let svc = Svc(Arc::clone(node));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RegisterServer::new(svc.clone()))
            .add_service(ClusterServer::new(svc))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}

/// An address nothing listens on.
pub async fn dead_addr() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().to_string()
}

pub async fn client(endpoints: Vec<String>, request_ms: u64, total_ms: u64) -> Client {
    let mut cfg = ClientConfig::new(endpoints);
    cfg.request_timeout = Duration::from_millis(request_ms);
    cfg.total_timeout = Duration::from_millis(total_ms);
    Client::connect(cfg).await.unwrap()
}

/// A TCP server that accepts, reads the request's first bytes, then drops the connection:
/// the request left the client but no reply came back.
pub async fn dropping_server() -> String {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = 0;
                // Preface + SETTINGS + HEADERS + DATA of a small request.
                while got < 100 {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got += n,
                    }
                }
            });
        }
    });
    addr
}
