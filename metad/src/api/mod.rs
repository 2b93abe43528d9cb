//! Client-facing gRPC services (Cluster, the internal Register, health, reflection) on the
//! client port. The only layer (with the peer service) that builds `tonic::Status`, always via
//! `NodeError::details()` so every error carries its stable code.

mod cluster;
mod moves;
mod namespace;
mod register;
mod tags;
mod topology;
mod watch;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tonic::transport::server::Router;
use tonic::Status;
use tracing::Instrument;

use crate::error::NodeError;
use crate::node::NodeCore;

/// Largest request or response message accepted on the client port.
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;

/// The one conversion from internal errors to the wire.
pub fn to_status(e: &NodeError) -> Status {
    e.details().to_status()
}

/// Runs one request handler inside a span, counting it and timing it by method and code.
pub(crate) async fn instrumented<T>(
    core: &NodeCore,
    method: &'static str,
    f: impl Future<Output = Result<T, NodeError>>,
) -> Result<T, Status> {
    let started = Instant::now();
    let span = tracing::info_span!("rpc", method, node = core.id);
    let res = f.instrument(span).await;
    let code = match &res {
        Ok(_) => "OK",
        Err(e) => e.name(),
    };
    core.metrics
        .grpc_requests
        .with_label_values(&[method, code])
        .inc();
    core.metrics
        .grpc_seconds
        .with_label_values(&[method])
        .observe(started.elapsed().as_secs_f64());
    if let Err(e) = &res {
        tracing::debug!(method, code, error = %e, "request failed");
    }
    res.map_err(|e| to_status(&e))
}

/// Proposes one client command and unwraps the state machine's reply: a refusal becomes an
/// error with its code. Every mutating handler goes through here (exactly-once header,
/// forwarding, the lost-reply fault of tests).
pub(crate) async fn propose(
    core: &NodeCore,
    header: Option<metad_proto::v1::WriteHeader>,
    op: metad_proto::raft::v1::command::Op,
) -> Result<metad_proto::raft::v1::Reply, NodeError> {
    use metad_proto::raft::v1::{reply, Command};
    let h = header.ok_or_else(|| NodeError::InvalidArgument("header: required".into()))?;
    let cmd = Command {
        client_id: h.client_id,
        seq: h.seq,
        leader_time_ms: 0,
        op: Some(op),
    };
    let (reply, _) = core.write(cmd).await?;
    if core.faults.take_lost_reply(core.id) {
        return Err(NodeError::Ambiguous(
            "injected fault: reply lost after apply".into(),
        ));
    }
    if let Some(reply::Result::Error(e)) = &reply.result {
        let code = e.code.parse().unwrap_or(metad_proto::ErrorCode::Internal);
        return Err(NodeError::Refused {
            code,
            message: e.message.clone(),
        });
    }
    Ok(reply)
}

/// Runs a query after the read barrier the options ask for (linearizable by default), in one
/// consistent read view; returns the result and the revision it reflects.
#[allow(dead_code)] // used by the model services
pub(crate) async fn query<T>(
    core: &NodeCore,
    opts: Option<&metad_proto::v1::ReadOptions>,
    f: impl FnOnce(&crate::store::redb_kv::RedbRead) -> Result<T, crate::sm::ApplyError>,
) -> Result<(T, u64), NodeError> {
    core.read_barrier(opts).await?;
    let mut out = None;
    let revision = core.sm.read(|kv| {
        out = Some(f(kv));
        kv.revision()
    })?;
    match out {
        Some(Ok(v)) => Ok((v, revision)),
        Some(Err(crate::sm::ApplyError::Refused(r))) => Err(NodeError::Refused {
            code: r.code,
            message: r.message,
        }),
        Some(Err(crate::sm::ApplyError::Storage(e))) => Err(NodeError::Internal(e.0)),
        None => Err(NodeError::Internal("query did not run".into())),
    }
}

/// Response header for an answer reflecting `revision`.
pub(crate) fn header(core: &NodeCore, revision: u64) -> Option<metad_proto::v1::ResponseHeader> {
    Some(metad_proto::v1::ResponseHeader {
        revision,
        node_id: core.id,
        raft_term: core.raft.metrics().borrow().current_term,
    })
}

/// Builds the client-port router.
pub fn router(core: Arc<NodeCore>) -> Router {
    use metad_proto::internal::v1::register_server::RegisterServer;
    use metad_proto::v1::cluster_server::ClusterServer;

    let (reporter, health) = tonic_health::server::health_reporter();
    let cluster = ClusterServer::new(cluster::ClusterApi::new(core.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let register = RegisterServer::new(register::RegisterApi::new(core.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    tokio::spawn(async move {
        reporter
            .set_serving::<ClusterServer<cluster::ClusterApi>>()
            .await;
        reporter
            .set_serving::<RegisterServer<register::RegisterApi>>()
            .await;
        for name in [
            "metad.v1.Namespace",
            "metad.v1.Tags",
            "metad.v1.Topology",
            "metad.v1.Location",
            "metad.v1.Watch",
            "metad.v1.Moves",
            "metad.v1.Agents",
        ] {
            reporter
                .set_service_status(name, tonic_health::ServingStatus::Serving)
                .await;
        }
    });
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(metad_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1();
    let mut builder = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .concurrency_limit_per_connection(1024);
    let router = builder
        .add_service(health)
        .add_service(cluster)
        .add_service(register);
    // -- namespace services (namespace work) --
    let router = namespace::add_services(router, &core);

    // -- tags services (tags work) --
    let router = tags::add_services(router, &core);

    // -- topology/location services (topology work) --
    let router = topology::add_services(router, &core);

    // -- watch service (watch work) --
    let router = watch::add_services(router, &core);

    // -- moves and agent leases (moves work) --
    let router = moves::add_services(router, &core);

    match reflection {
        Ok(r) => router.add_service(r),
        Err(e) => {
            tracing::warn!(error = %e, "gRPC reflection disabled");
            router
        }
    }
}
