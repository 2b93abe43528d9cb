//! gRPC Topology (sites, silos) and Location (instances, Locate, RecordWrite, tombstones)
//! services. Mutations are validated here (INVALID_ARGUMENT before anything is proposed) and
//! again in the state machine; reads run after the requested read barrier in one view.

use std::sync::Arc;

use metad_proto::raft::v1::{command::Op as CmdOp, reply, Reply};
use metad_proto::v1::location_server::{Location, LocationServer};
use metad_proto::v1::topology_op::Op;
use metad_proto::v1::topology_reply::Result as R;
use metad_proto::v1::topology_server::{Topology, TopologyServer};
use metad_proto::v1::*;
use tonic::transport::server::Router;
use tonic::{Request, Response, Status};

use super::{instrumented, query, MAX_MESSAGE_BYTES};
use crate::error::NodeError;
use crate::node::NodeCore;
use crate::sm::model::Refusal;
use crate::sm::topology as topo;

pub(crate) fn add_services(router: Router, core: &Arc<NodeCore>) -> Router {
    let api = TopologyApi { core: core.clone() };
    let topology = TopologyServer::new(api.clone())
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let location = LocationServer::new(api)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    router.add_service(topology).add_service(location)
}

#[derive(Clone)]
pub struct TopologyApi {
    core: Arc<NodeCore>,
}

fn invalid(r: Refusal) -> NodeError {
    NodeError::Refused {
        code: r.code,
        message: r.message,
    }
}

impl TopologyApi {
    fn header(&self, revision: u64) -> Option<ResponseHeader> {
        super::header(&self.core, revision)
    }

    /// Validates and proposes one topology op; returns the state machine's result and the
    /// revision after it.
    async fn write(&self, header: Option<WriteHeader>, op: Op) -> Result<(R, u64), NodeError> {
        let op = TopologyOp { op: Some(op) };
        topo::validate(&op).map_err(invalid)?;
        let reply: Reply = super::propose(&self.core, header, CmdOp::Topology(op)).await?;
        match reply.result {
            Some(reply::Result::Topology(TopologyReply { result: Some(r) })) => {
                Ok((r, reply.revision))
            }
            _ => Err(NodeError::Internal("reply kind mismatch".into())),
        }
    }
}

fn mismatch<T>() -> Result<T, NodeError> {
    Err(NodeError::Internal("reply kind mismatch".into()))
}

#[tonic::async_trait]
impl Topology for TopologyApi {
    async fn register_site(
        &self,
        req: Request<RegisterSiteRequest>,
    ) -> Result<Response<RegisterSiteResponse>, Status> {
        let mut r = req.into_inner();
        instrumented(&self.core, "Topology/RegisterSite", async {
            let h = r.header.take();
            match self.write(h, Op::RegisterSite(r)).await? {
                (R::RegisterSite(mut out), rev) => {
                    out.header = self.header(rev);
                    Ok(Response::new(out))
                }
                _ => mismatch(),
            }
        })
        .await
    }

    async fn register_silo(
        &self,
        req: Request<RegisterSiloRequest>,
    ) -> Result<Response<RegisterSiloResponse>, Status> {
        let mut r = req.into_inner();
        instrumented(&self.core, "Topology/RegisterSilo", async {
            let h = r.header.take();
            match self.write(h, Op::RegisterSilo(r)).await? {
                (R::RegisterSilo(mut out), rev) => {
                    out.header = self.header(rev);
                    Ok(Response::new(out))
                }
                _ => mismatch(),
            }
        })
        .await
    }

    async fn update_silo(
        &self,
        req: Request<UpdateSiloRequest>,
    ) -> Result<Response<UpdateSiloResponse>, Status> {
        let mut r = req.into_inner();
        instrumented(&self.core, "Topology/UpdateSilo", async {
            let h = r.header.take();
            match self.write(h, Op::UpdateSilo(r)).await? {
                (R::UpdateSilo(mut out), rev) => {
                    out.header = self.header(rev);
                    Ok(Response::new(out))
                }
                _ => mismatch(),
            }
        })
        .await
    }

    async fn remove_silo(
        &self,
        req: Request<RemoveSiloRequest>,
    ) -> Result<Response<RemoveSiloResponse>, Status> {
        let mut r = req.into_inner();
        instrumented(&self.core, "Topology/RemoveSilo", async {
            let h = r.header.take();
            match self.write(h, Op::RemoveSilo(r)).await? {
                (R::RemoveSilo(mut out), rev) => {
                    out.header = self.header(rev);
                    Ok(Response::new(out))
                }
                _ => mismatch(),
            }
        })
        .await
    }

    async fn list_sites(
        &self,
        req: Request<ListSitesRequest>,
    ) -> Result<Response<ListSitesResponse>, Status> {
        let r = req.into_inner();
        instrumented(&self.core, "Topology/ListSites", async {
            let (sites, rev) =
                query(&self.core, r.read.as_ref(), |kv| Ok(topo::list_sites(kv)?)).await?;
            Ok(Response::new(ListSitesResponse {
                header: self.header(rev),
                sites,
            }))
        })
        .await
    }

    async fn list_silos(
        &self,
        req: Request<ListSilosRequest>,
    ) -> Result<Response<ListSilosResponse>, Status> {
        let r = req.into_inner();
        instrumented(&self.core, "Topology/ListSilos", async {
            if !r.site.is_empty() {
                topo::check_name("site", &r.site).map_err(invalid)?;
            }
            let (silos, rev) = query(&self.core, r.read.as_ref(), |kv| {
                Ok(topo::list_silos(kv, &r)?)
            })
            .await?;
            Ok(Response::new(ListSilosResponse {
                header: self.header(rev),
                silos,
            }))
        })
        .await
    }
}

#[tonic::async_trait]
impl Location for TopologyApi {
    async fn add_instance(
        &self,
        req: Request<AddInstanceRequest>,
    ) -> Result<Response<AddInstanceResponse>, Status> {
        let mut r = req.into_inner();
        instrumented(&self.core, "Location/AddInstance", async {
            let h = r.header.take();
            match self.write(h, Op::AddInstance(r)).await? {
                (R::AddInstance(mut out), rev) => {
                    out.header = self.header(rev);
                    Ok(Response::new(out))
                }
                _ => mismatch(),
            }
        })
        .await
    }

    async fn locate(
        &self,
        req: Request<LocateRequest>,
    ) -> Result<Response<LocateResponse>, Status> {
        let r = req.into_inner();
        instrumented(&self.core, "Location/Locate", async {
            crate::sm::model::parse_path("path", &r.path).map_err(invalid)?;
            let (mut out, rev) =
                query(&self.core, r.read.as_ref(), |kv| topo::locate(kv, &r)).await?;
            out.header = self.header(rev);
            Ok(Response::new(out))
        })
        .await
    }

    async fn record_write(
        &self,
        req: Request<RecordWriteRequest>,
    ) -> Result<Response<RecordWriteResponse>, Status> {
        let mut r = req.into_inner();
        instrumented(&self.core, "Location/RecordWrite", async {
            let h = r.header.take();
            match self.write(h, Op::RecordWrite(r)).await? {
                (R::RecordWrite(mut out), rev) => {
                    out.header = self.header(rev);
                    Ok(Response::new(out))
                }
                _ => mismatch(),
            }
        })
        .await
    }

    async fn import_files(
        &self,
        req: Request<ImportFilesRequest>,
    ) -> Result<Response<ImportFilesResponse>, Status> {
        let mut r = req.into_inner();
        instrumented(&self.core, "Location/ImportFiles", async {
            let h = r.header.take();
            match self.write(h, Op::ImportFiles(r)).await? {
                (R::ImportFiles(mut out), rev) => {
                    out.header = self.header(rev);
                    Ok(Response::new(out))
                }
                _ => mismatch(),
            }
        })
        .await
    }

    async fn list_instances(
        &self,
        req: Request<ListInstancesRequest>,
    ) -> Result<Response<ListInstancesResponse>, Status> {
        let r = req.into_inner();
        instrumented(&self.core, "Location/ListInstances", async {
            topo::check_name("silo", &r.silo).map_err(invalid)?;
            topo::page_limit(r.limit).map_err(invalid)?;
            let ((instances, next_cursor), rev) = query(&self.core, r.read.as_ref(), |kv| {
                topo::list_instances(kv, &r)
            })
            .await?;
            Ok(Response::new(ListInstancesResponse {
                header: self.header(rev),
                instances,
                next_cursor,
            }))
        })
        .await
    }

    async fn list_tombstones(
        &self,
        req: Request<ListTombstonesRequest>,
    ) -> Result<Response<ListTombstonesResponse>, Status> {
        let r = req.into_inner();
        instrumented(&self.core, "Location/ListTombstones", async {
            topo::check_name("silo", &r.silo).map_err(invalid)?;
            topo::page_limit(r.limit).map_err(invalid)?;
            let ((tombstones, next_cursor), rev) = query(&self.core, r.read.as_ref(), |kv| {
                topo::list_tombstones(kv, &r)
            })
            .await?;
            Ok(Response::new(ListTombstonesResponse {
                header: self.header(rev),
                tombstones,
                next_cursor,
            }))
        })
        .await
    }

    async fn confirm_reclaimed(
        &self,
        req: Request<ConfirmReclaimedRequest>,
    ) -> Result<Response<ConfirmReclaimedResponse>, Status> {
        let mut r = req.into_inner();
        instrumented(&self.core, "Location/ConfirmReclaimed", async {
            let h = r.header.take();
            match self.write(h, Op::ConfirmReclaimed(r)).await? {
                (R::ConfirmReclaimed(mut out), rev) => {
                    out.header = self.header(rev);
                    Ok(Response::new(out))
                }
                _ => mismatch(),
            }
        })
        .await
    }
}
