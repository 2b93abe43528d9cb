//! The operational surface of a node: gRPC health and reflection on the client port, the
//! Prometheus endpoint, and writes sent to a follower being forwarded to the leader.

use std::time::Duration;

use metad_client::ReadOptions;
use metad_testkit::{init_logging, Cluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_and_reflection_are_served() -> anyhow::Result<()> {
    init_logging();
    let cluster = Cluster::builder().nodes(3).build().await?;
    cluster.wait_for_leader(T).await?;
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.client_addr(1)))?
        .connect()
        .await?;
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    let resp = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "metad.v1.Cluster".into(),
        })
        .await?
        .into_inner();
    assert_eq!(
        resp.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let mut refl = ServerReflectionClient::new(ch);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = refl
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await?
        .into_inner();
    let msg = stream
        .message()
        .await?
        .ok_or_else(|| anyhow::anyhow!("no reflection reply"))?;
    let names: Vec<String> = match msg.message_response {
        Some(MessageResponse::ListServicesResponse(l)) => {
            l.service.into_iter().map(|s| s.name).collect()
        }
        other => anyhow::bail!("unexpected reflection reply {other:?}"),
    };
    assert!(names.iter().any(|n| n == "metad.v1.Cluster"), "{names:?}");
    assert!(
        names.iter().any(|n| n == "grpc.health.v1.Health"),
        "{names:?}"
    );
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prometheus_endpoint_exposes_raft_and_rpc_metrics() -> anyhow::Result<()> {
    init_logging();
    let cluster = Cluster::builder().nodes(3).metrics(true).build().await?;
    let leader = cluster.wait_for_leader(T).await?;
    let client = cluster.client().await?;
    client.register_put("m", b"1".to_vec()).await?;
    client
        .register_get("m", ReadOptions::linearizable())
        .await?;
    let addr = cluster
        .node(leader)
        .metrics_addr()
        .ok_or_else(|| anyhow::anyhow!("no metrics addr"))?;
    let body = metad_testkit::wait_until(T, "metrics to show the leader", || async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .await
            .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).await.ok()?;
        out.contains("metad_raft_is_leader{node_id=").then_some(out)
    })
    .await?;
    for name in [
        "metad_raft_term",
        "metad_raft_applied_index",
        "metad_raft_commit_index",
        "metad_proposal_duration_seconds_bucket",
        "metad_grpc_requests_total{code=\"OK\",method=\"Register/Put\"",
        "metad_grpc_request_duration_seconds_bucket",
        "metad_read_index_batch_reads",
        "metad_sm_apply_batches_total",
        "metad_sm_apply_cpu_seconds_total",
        "metad_sm_apply_seconds_total",
    ] {
        assert!(body.contains(name), "metric {name} missing from /metrics");
    }
    // The leader applied at least the register write (its own blank entry carries none).
    let applied = body
        .lines()
        .find(|l| l.starts_with("metad_sm_applied_commands_total{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or_else(|| anyhow::anyhow!("metad_sm_applied_commands_total missing"))?;
    assert!(applied >= 1.0, "applied commands {applied}");
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_sent_to_a_follower_is_forwarded_to_the_leader() -> anyhow::Result<()> {
    init_logging();
    let cluster = Cluster::builder().nodes(3).build().await?;
    let leader = cluster.wait_for_leader(T).await?;
    let follower = cluster
        .ids()
        .into_iter()
        .find(|i| *i != leader)
        .unwrap_or(1);
    let on_follower = cluster.client_for(follower).await?;
    let w = on_follower.register_incr("fwd", 7).await?;
    assert_eq!(w.value, 7);
    let r = cluster
        .client_for(leader)
        .await?
        .register_get("fwd", ReadOptions::linearizable())
        .await?;
    assert_eq!(r.value, Some(7i64.to_be_bytes().to_vec()));
    assert_eq!(r.mod_revision, w.header.revision);
    cluster.shutdown().await;
    Ok(())
}

/// The peer port's `AppendStream` (how a leader replicates) refuses a message that does not
/// decode with `InvalidArgument` and ends that stream, and the node keeps replicating. A node
/// that stops ends the streams open to it cleanly, so its graceful shutdown does not wait for
/// the leader to hang up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn append_stream_refuses_garbage_and_ends_cleanly_on_stop() -> anyhow::Result<()> {
    use metad_proto::raft::v1::raft_peer_client::RaftPeerClient;
    use metad_proto::raft::v1::Payload;

    init_logging();
    let mut cluster = Cluster::builder().nodes(3).build().await?;
    let leader = cluster.wait_for_leader(T).await?;
    let f = cluster.others(leader)[0];
    let ch =
        tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.node(f).peer_addr()))?
            .connect()
            .await?;
    let mut peer = RaftPeerClient::new(ch);

    let garbage = futures::stream::iter(vec![Payload {
        data: vec![0xff; 16],
    }]);
    let mut replies = peer.append_stream(garbage).await?.into_inner();
    let st = replies
        .message()
        .await
        .expect_err("a garbage AppendEntries must be refused");
    assert_eq!(st.code(), tonic::Code::InvalidArgument, "{st:?}");
    assert!(st.message().contains("peer payload"), "{st:?}");
    assert!(
        replies.message().await?.is_none(),
        "the stream ends after the error"
    );

    let client = cluster.client().await?;
    client.register_put("after-garbage", b"ok".to_vec()).await?;
    let fc = cluster.client_for(f).await?;
    let got = fc
        .register_get("after-garbage", ReadOptions::linearizable())
        .await?;
    assert_eq!(got.value.as_deref(), Some(&b"ok"[..]));

    // An idle stream to `f`, then `f` stops gracefully: the stream ends with OK (an abort
    // after the shutdown grace period would reset the connection instead).
    let (_tx, rx) = tokio::sync::mpsc::channel::<Payload>(1);
    let mut idle = peer
        .append_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    cluster.stop(f).await;
    let end = tokio::time::timeout(T, idle.message())
        .await
        .map_err(|_| anyhow::anyhow!("the stream outlived its node's shutdown"))?;
    assert!(end?.is_none(), "stream ended cleanly");
    cluster.shutdown().await;
    Ok(())
}
