//! Client-facing gRPC services (Cluster, the internal Register, health, reflection) on the
//! client port. The only layer (with the peer service) that builds `tonic::Status`, always via
//! `NodeError::details()` so every error carries its stable code.

mod cluster;
mod register;

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
    match reflection {
        Ok(r) => router.add_service(r),
        Err(e) => {
            tracing::warn!(error = %e, "gRPC reflection disabled");
            router
        }
    }
}
