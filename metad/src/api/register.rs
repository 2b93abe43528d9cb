//! INTERNAL test register service: the smallest write and read that exercise the replicated
//! core end to end (exactly-once writes, the three read modes). Replaced by the metadata model.

use std::sync::Arc;

use metad_proto::internal::v1::register_server::Register;
use metad_proto::internal::v1::{
    GetRequest, GetResponse, IncrRequest, IncrResponse, PutRequest, PutResponse,
};
use metad_proto::raft::v1::{command::Op, reply, RegisterIncr, RegisterPut, Reply};
use metad_proto::v1::{ResponseHeader, WriteHeader};
use tonic::{Request, Response, Status};

use super::instrumented;
use crate::error::NodeError;
use crate::node::NodeCore;
use crate::sm;

pub struct RegisterApi {
    core: Arc<NodeCore>,
}

impl RegisterApi {
    pub fn new(core: Arc<NodeCore>) -> Self {
        RegisterApi { core }
    }

    fn header(&self, revision: u64) -> Option<ResponseHeader> {
        super::header(&self.core, revision)
    }

    async fn write(&self, header: Option<WriteHeader>, op: Op) -> Result<Reply, NodeError> {
        super::propose(&self.core, header, op).await
    }
}

fn check_key(key: &str) -> Result<(), NodeError> {
    sm::apply::check_register_key(key).map_err(NodeError::InvalidArgument)
}

#[tonic::async_trait]
impl Register for RegisterApi {
    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let r = req.into_inner();
        instrumented(&self.core, "Register/Put", async {
            let reply = self
                .write(
                    r.header,
                    Op::RegisterPut(RegisterPut {
                        key: r.key,
                        value: r.value,
                    }),
                )
                .await?;
            let prev_value = match reply.result {
                Some(reply::Result::RegisterPut(p)) => p.prev_value,
                _ => return Err(NodeError::Internal("reply kind mismatch".into())),
            };
            Ok(Response::new(PutResponse {
                header: self.header(reply.revision),
                prev_value,
            }))
        })
        .await
    }

    async fn incr(&self, req: Request<IncrRequest>) -> Result<Response<IncrResponse>, Status> {
        let r = req.into_inner();
        instrumented(&self.core, "Register/Incr", async {
            let reply = self
                .write(
                    r.header,
                    Op::RegisterIncr(RegisterIncr {
                        key: r.key,
                        delta: r.delta,
                    }),
                )
                .await?;
            let value = match reply.result {
                Some(reply::Result::RegisterIncr(p)) => p.value,
                _ => return Err(NodeError::Internal("reply kind mismatch".into())),
            };
            Ok(Response::new(IncrResponse {
                header: self.header(reply.revision),
                value,
            }))
        })
        .await
    }

    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let r = req.into_inner();
        instrumented(&self.core, "Register/Get", async {
            check_key(&r.key)?;
            self.core.read_barrier(r.read.as_ref()).await?;
            let (cell, revision) = self
                .core
                .sm
                .read(|kv| Ok((sm::apply::register_get(kv, &r.key)?, kv.revision()?)))?;
            Ok(Response::new(GetResponse {
                header: self.header(revision),
                mod_revision: cell.as_ref().map(|c| c.mod_revision).unwrap_or(0),
                value: cell.map(|c| c.value),
            }))
        })
        .await
    }
}
