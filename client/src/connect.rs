//! Opens the TCP connection under every channel: `TCP_NODELAY`, then write coalescing
//! (`metad_proto::coalesce`), so that the requests which many tasks send over one shared
//! channel leave in one `sendmsg` rather than one each. Under 128 concurrent readers on 8
//! channels the client's `writev` calls were a quarter of its CPU.
//!
//! Knows nothing of gRPC: tonic's `Endpoint` puts the connect timeout and the HTTP/2 settings
//! on top of what this returns. Public for programs that build their own tonic channels
//! (`metad-bench` gives its etcd client the same transport as the metad client).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use metad_proto::coalesce::Coalesced;
use tokio::net::TcpStream;
use tonic::codegen::Service;
use tonic::transport::Uri;

type Conn = TokioIo<Coalesced<TcpStream>>;

/// A connector for `Endpoint::connect_with_connector[_lazy]`: TCP, `TCP_NODELAY`, coalesced
/// writes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Connector;

impl Service<Uri> for Connector {
    type Response = Conn;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Conn>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(async move {
            let (host, port) = host_port(&uri)?;
            // Tries every address the name resolves to, in order.
            let s = TcpStream::connect((host.as_str(), port)).await?;
            s.set_nodelay(true)?;
            Ok(TokioIo::new(Coalesced::new(s)))
        })
    }
}

/// Host (IPv6 without its brackets) and port (80 when absent, as for any `http://` URI).
fn host_port(uri: &Uri) -> io::Result<(String, u16)> {
    let host = uri
        .host()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("no host in {uri}")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok((host.to_string(), uri.port_u16().unwrap_or(80)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_of_names_v4_and_v6() {
        let hp = |s: &str| host_port(&s.parse::<Uri>().expect("uri")).expect("host");
        assert_eq!(hp("http://127.0.0.1:7001"), ("127.0.0.1".into(), 7001));
        assert_eq!(hp("http://[::1]:7001"), ("::1".into(), 7001));
        assert_eq!(hp("http://node-a"), ("node-a".into(), 80));
    }

    /// A channel built on this connector carries gRPC: requests go out and replies come
    /// back through the coalescing writer (a health check against a real tonic server).
    #[tokio::test]
    async fn a_channel_on_this_connector_serves_requests() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect_with_connector_lazy(Connector);
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let mut c = tonic_health::pb::health_client::HealthClient::new(ch.clone());
            tasks.push(tokio::spawn(async move {
                c.check(tonic_health::pb::HealthCheckRequest::default())
                    .await
                    .map(|r| r.into_inner().status)
            }));
        }
        for t in tasks {
            let status = t.await.expect("join").expect("check");
            assert_eq!(
                status,
                tonic_health::pb::health_check_response::ServingStatus::Serving as i32
            );
        }
        server.abort();
    }
}
