//! gRPC namespace work: the Namespace service (directories, files, symlinks, attributes, Txn).
//! Writes validate every state-independent rule first (INVALID_ARGUMENT naming the field,
//! nothing proposed), then go through `propose` (exactly-once); reads go through `query`
//! (read barrier, one consistent view).

use std::sync::Arc;

use metad_proto::raft::v1::{command::Op, reply, Reply};
use metad_proto::v1::namespace_server::{Namespace, NamespaceServer};
use metad_proto::v1::*;
use tonic::transport::server::Router;
use tonic::{Request, Response, Status};

use super::instrumented;
use crate::error::NodeError;
use crate::node::NodeCore;
use crate::sm::model::{check_name, parse_path};
use crate::sm::{self, Refusal};

pub(crate) fn add_services(router: Router, core: &Arc<NodeCore>) -> Router {
    let svc = NamespaceServer::new(NamespaceApi { core: core.clone() })
        .max_decoding_message_size(super::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(super::MAX_MESSAGE_BYTES);
    router.add_service(svc)
}

pub struct NamespaceApi {
    core: Arc<NodeCore>,
}

fn invalid(r: Refusal) -> NodeError {
    NodeError::InvalidArgument(r.message)
}

fn mismatch() -> NodeError {
    NodeError::Internal("reply kind mismatch".into())
}

impl NamespaceApi {
    fn header(&self, revision: u64) -> Option<ResponseHeader> {
        super::header(&self.core, revision)
    }

    /// Validates and proposes one namespace command; returns its reply and revision.
    async fn ns(
        &self,
        header: Option<WriteHeader>,
        op: namespace_op::Op,
    ) -> Result<(NamespaceReply, u64), NodeError> {
        let op = NamespaceOp { op: Some(op) };
        sm::namespace::validate(&op, "").map_err(invalid)?;
        let Reply { revision, result } =
            super::propose(&self.core, header, Op::Namespace(op)).await?;
        match result {
            Some(reply::Result::Namespace(r)) => Ok((r, revision)),
            _ => Err(mismatch()),
        }
    }
}

#[tonic::async_trait]
impl Namespace for NamespaceApi {
    async fn mkdir(&self, req: Request<MkdirRequest>) -> Result<Response<MkdirResponse>, Status> {
        let r = req.into_inner();
        instrumented(&self.core, "Namespace/Mkdir", async {
            let op = namespace_op::Op::Mkdir(Mkdir {
                path: r.path,
                parents: r.parents,
                mode: r.mode,
                uid: r.uid,
                gid: r.gid,
            });
            let (rep, rev) = self.ns(r.header, op).await?;
            Ok(Response::new(MkdirResponse {
                header: self.header(rev),
                inode: rep.inode,
                created: rep.created,
            }))
        })
        .await
    }

    async fn create(
        &self,
        req: Request<CreateRequest>,
    ) -> Result<Response<CreateResponse>, Status> {
        let r = req.into_inner();
        instrumented(&self.core, "Namespace/Create", async {
            let op = namespace_op::Op::Create(CreateFile {
                path: r.path,
                mode: r.mode,
                uid: r.uid,
                gid: r.gid,
                size: r.size,
                mtime_ms: r.mtime_ms,
            });
            let (rep, rev) = self.ns(r.header, op).await?;
            Ok(Response::new(CreateResponse {
                header: self.header(rev),
                inode: rep.inode,
            }))
        })
        .await
    }

    async fn symlink(
        &self,
        req: Request<SymlinkRequest>,
    ) -> Result<Response<SymlinkResponse>, Status> {
        let r = req.into_inner();
        instrumented(&self.core, "Namespace/Symlink", async {
            let op = namespace_op::Op::Symlink(Symlink {
                path: r.path,
                target: r.target,
                uid: r.uid,
                gid: r.gid,
            });
            let (rep, rev) = self.ns(r.header, op).await?;
            Ok(Response::new(SymlinkResponse {
                header: self.header(rev),
                inode: rep.inode,
            }))
        })
        .await
    }

    async fn stat(&self, req: Request<StatRequest>) -> Result<Response<StatResponse>, Status> {
        let r = req.into_inner();
        instrumented(&self.core, "Namespace/Stat", async {
            let target = r
                .target
                .ok_or_else(|| NodeError::InvalidArgument("target: give path or ino".into()))?;
            if let stat_request::Target::Path(p) = &target {
                parse_path("path", p).map_err(invalid)?;
            }
            let ((inode, path), rev) =
                super::query(&self.core, r.read.as_ref(), |kv| match &target {
                    stat_request::Target::Path(p) => {
                        sm::namespace::stat_path(kv, p).map(|i| (i, p.clone()))
                    }
                    stat_request::Target::Ino(ino) => sm::namespace::stat_ino(kv, *ino),
                })
                .await?;
            Ok(Response::new(StatResponse {
                header: self.header(rev),
                inode: Some(inode),
                path,
            }))
        })
        .await
    }

    async fn lookup(
        &self,
        req: Request<LookupRequest>,
    ) -> Result<Response<LookupResponse>, Status> {
        let r = req.into_inner();
        instrumented(&self.core, "Namespace/Lookup", async {
            check_name("name", &r.name).map_err(invalid)?;
            if r.parent == 0 {
                return Err(NodeError::InvalidArgument(
                    "parent: required (the root is inode 1)".into(),
                ));
            }
            let (inode, rev) = super::query(&self.core, r.read.as_ref(), |kv| {
                sm::namespace::lookup_entry(kv, r.parent, &r.name)
            })
            .await?;
            Ok(Response::new(LookupResponse {
                header: self.header(rev),
                inode: Some(inode),
            }))
        })
        .await
    }

    async fn read_dir(
        &self,
        req: Request<ReadDirRequest>,
    ) -> Result<Response<ReadDirResponse>, Status> {
        let r = req.into_inner();
        instrumented(&self.core, "Namespace/ReadDir", async {
            parse_path("path", &r.path).map_err(invalid)?;
            sm::namespace::readdir_limit(r.limit).map_err(invalid)?;
            if !r.start_after.is_empty() {
                check_name("start_after", &r.start_after).map_err(invalid)?;
            }
            let (page, rev) = super::query(&self.core, r.read.as_ref(), |kv| {
                sm::namespace::read_dir(kv, &r.path, &r.start_after, r.limit, r.with_attrs)
            })
            .await?;
            Ok(Response::new(ReadDirResponse {
                header: self.header(rev),
                entries: page.entries,
                next_start_after: page.next_start_after,
                dir: Some(page.dir),
            }))
        })
        .await
    }

    async fn rename(
        &self,
        req: Request<RenameRequest>,
    ) -> Result<Response<RenameResponse>, Status> {
        let r = req.into_inner();
        instrumented(&self.core, "Namespace/Rename", async {
            let op = namespace_op::Op::Rename(Rename {
                src: r.src,
                dst: r.dst,
                mode: r.mode,
            });
            let (rep, rev) = self.ns(r.header, op).await?;
            Ok(Response::new(RenameResponse {
                header: self.header(rev),
                inode: rep.inode,
                replaced: rep.replaced,
                reclaim: rep.reclaim,
            }))
        })
        .await
    }

    async fn unlink(
        &self,
        req: Request<UnlinkRequest>,
    ) -> Result<Response<UnlinkResponse>, Status> {
        let r = req.into_inner();
        instrumented(&self.core, "Namespace/Unlink", async {
            let op = namespace_op::Op::Unlink(Unlink { path: r.path });
            let (rep, rev) = self.ns(r.header, op).await?;
            Ok(Response::new(UnlinkResponse {
                header: self.header(rev),
                inode: rep.inode,
                reclaim: rep.reclaim,
            }))
        })
        .await
    }

    async fn rmdir(&self, req: Request<RmdirRequest>) -> Result<Response<RmdirResponse>, Status> {
        let r = req.into_inner();
        instrumented(&self.core, "Namespace/Rmdir", async {
            let op = namespace_op::Op::Rmdir(Rmdir { path: r.path });
            let (rep, rev) = self.ns(r.header, op).await?;
            Ok(Response::new(RmdirResponse {
                header: self.header(rev),
                inode: rep.inode,
            }))
        })
        .await
    }

    async fn set_attr(
        &self,
        req: Request<SetAttrRequest>,
    ) -> Result<Response<SetAttrResponse>, Status> {
        let r = req.into_inner();
        instrumented(&self.core, "Namespace/SetAttr", async {
            let op = namespace_op::Op::SetAttr(SetAttr {
                path: r.path,
                mode: r.mode,
                uid: r.uid,
                gid: r.gid,
                size: r.size,
                mtime_ms: r.mtime_ms,
            });
            let (rep, rev) = self.ns(r.header, op).await?;
            Ok(Response::new(SetAttrResponse {
                header: self.header(rev),
                inode: rep.inode,
            }))
        })
        .await
    }

    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let r = req.into_inner();
        instrumented(&self.core, "Namespace/Txn", async {
            let op = TxnOp {
                compares: r.compares,
                then_ops: r.then_ops,
                else_ops: r.else_ops,
            };
            sm::txn::validate(&op).map_err(invalid)?;
            let Reply { revision, result } =
                super::propose(&self.core, r.header, Op::Txn(op)).await?;
            let rep = match result {
                Some(reply::Result::Txn(t)) => t,
                _ => return Err(mismatch()),
            };
            Ok(Response::new(TxnResponse {
                header: self.header(revision),
                succeeded: rep.succeeded,
                results: rep.results,
            }))
        })
        .await
    }
}
