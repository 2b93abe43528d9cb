//! Client behaviour against scripted fake metad nodes (real gRPC on 127.0.0.1:0): leader hints,
//! rotation, retries reusing `(client_id, seq)`, ambiguous writes, timeouts, pinned reads.
//! The real-cluster tests live in testkit.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{client, dead_addr, dropping_server, serve, Act, Node};
use metad_client::{ClientError, ErrorCode, ReadOptions};

#[tokio::test]
async fn not_leader_hint_is_followed_with_the_same_seq_and_cached() {
    let b = Node::new(2, vec![]);
    let b_addr = serve(&b).await;
    let a = Node::new(1, vec![Act::NotLeader(b_addr.clone())]);
    let a_addr = serve(&a).await;
    let c = client(vec![a_addr], 2000, 5000).await;

    let r = c.register_put("k", b"v".to_vec()).await.unwrap();
    assert_eq!(r.header.node_id, 2);
    let id = c.client_id().to_string();
    assert_eq!(a.seen(), vec![("put".to_string(), id.clone(), 1)]);
    assert_eq!(b.seen(), vec![("put".to_string(), id.clone(), 1)]);
    assert_eq!(c.endpoints().len(), 2, "leader address learned");
    assert_eq!(c.leader_index(), 1);

    c.register_incr("n", 1).await.unwrap();
    assert_eq!(a.seen().len(), 1, "cached leader is used directly");
    assert_eq!(b.seen()[1], ("incr".to_string(), id, 2));
}

#[tokio::test]
async fn retries_reuse_client_id_and_seq() {
    let n = Node::new(
        1,
        vec![
            Act::Fail(ErrorCode::Ambiguous),
            Act::Fail(ErrorCode::Unavailable),
            Act::Ok,
        ],
    );
    let c = client(vec![serve(&n).await], 2000, 10_000).await;
    c.register_put("k", b"v".to_vec()).await.unwrap();
    let seen = n.seen();
    assert_eq!(seen.len(), 3);
    assert!(
        seen.iter().all(|s| s.1 == c.client_id() && s.2 == 1),
        "{seen:?}"
    );
    c.register_put("k", b"w".to_vec()).await.unwrap();
    assert_eq!(n.seen()[3].2, 2, "a new write takes a new seq");

    // Replaying an exact (client_id, seq) is possible.
    c.register_put_with_seq("k", b"v".to_vec(), 1)
        .await
        .unwrap();
    assert_eq!(n.seen()[4].2, 1);
}

#[tokio::test]
async fn unanswered_write_is_ambiguous_never_failed() {
    let n = Node::new(
        1,
        vec![
            Act::Hang,
            Act::Hang,
            Act::Hang,
            Act::Hang,
            Act::Hang,
            Act::Hang,
        ],
    );
    let c = client(vec![serve(&n).await], 150, 700).await;
    let err = c.register_incr("k", 1).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Ambiguous { seq: Some(1), .. }),
        "{err:?}"
    );
    assert_eq!(err.code(), ErrorCode::Ambiguous);
    assert!(
        n.seen().len() >= 2,
        "ambiguous writes are retried with the same seq"
    );
    assert!(n.seen().iter().all(|s| s.2 == 1));
}

#[tokio::test]
async fn unanswered_read_is_a_timeout() {
    let n = Node::new(1, vec![Act::Hang; 20]);
    let c = client(vec![serve(&n).await], 150, 500).await;
    let err = c
        .register_get("k", ReadOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Timeout, "{err:?}");
}

#[tokio::test]
async fn nothing_listening_is_transport_not_ambiguous() {
    let c = client(vec![dead_addr().await, dead_addr().await], 1000, 1500).await;
    let started = std::time::Instant::now();
    let err = c.register_put("k", b"v".to_vec()).await.unwrap_err();
    assert!(matches!(err, ClientError::Transport { .. }), "{err:?}");
    assert_eq!(err.code(), ErrorCode::Unavailable);
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn dead_endpoint_is_skipped() {
    let n = Node::new(2, vec![]);
    let c = client(vec![dead_addr().await, serve(&n).await], 1000, 5000).await;
    let r = c.register_put("k", b"v".to_vec()).await.unwrap();
    assert_eq!(r.header.node_id, 2);
    assert_eq!(c.leader_index(), 1);
}

#[tokio::test]
async fn non_retryable_error_is_returned_at_once() {
    let n = Node::new(1, vec![Act::Fail(ErrorCode::InvalidArgument)]);
    let c = client(vec![serve(&n).await], 1000, 5000).await;
    let err = c.register_put("k", b"v".to_vec()).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    assert_eq!(n.seen().len(), 1);
}

#[tokio::test]
async fn membership_follows_hint_but_does_not_retry_unknown_outcome() {
    let b = Node::new(2, vec![Act::Hang]);
    let b_addr = serve(&b).await;
    let a = Node::new(1, vec![Act::NotLeader(b_addr)]);
    let c = client(vec![serve(&a).await], 200, 5000).await;
    let err = c
        .add_learner(4, "dc", "p:1", "c:1", false)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Ambiguous, "{err:?}");
    assert_eq!(
        b.seen().len(),
        1,
        "a non-deduplicated change is not retried"
    );
    assert_eq!(
        c.add_learner(4, "dc", "p:1", "c:1", false)
            .await
            .unwrap()
            .log_index,
        7
    );
}

#[tokio::test]
async fn pinned_view_reads_from_that_node_only() {
    let a = Node::new(1, vec![]);
    let b = Node::new(2, vec![Act::Fail(ErrorCode::Unavailable)]);
    let c = client(vec![serve(&a).await, serve(&b).await], 1000, 5000).await;
    let r = c
        .on_endpoint(1)
        .unwrap()
        .register_get("k", ReadOptions::linearizable())
        .await
        .unwrap();
    assert_eq!(r.header.node_id, 2);
    assert_eq!(b.seen().len(), 2, "retried on the pinned node");
    assert!(a.seen().is_empty());
    assert_eq!(c.on_endpoint(1).unwrap().node_status().await.unwrap().id, 2);
    assert!(c.on_endpoint(5).is_err());
}

#[tokio::test]
async fn cluster_status_points_the_cursor_at_the_leader() {
    let b = Node::new(2, vec![]);
    let b_addr = serve(&b).await;
    let a = Node::new(1, vec![]);
    *a.status_leader_addr.lock().unwrap() = b_addr.clone();
    let c = client(vec![serve(&a).await, b_addr.clone()], 1000, 5000).await;
    assert_eq!(c.leader_index(), 0);
    c.cluster_status().await.unwrap();
    assert_eq!(c.leader_index(), 1);
    assert_eq!(c.endpoint_index(&b_addr), Some(1));
    assert_eq!(c.member_list().await.unwrap().leader_id, 2);
}
#[tokio::test]
async fn connection_lost_after_send_is_ambiguous_for_writes_only() {
    let addr = dropping_server().await;
    let c = client(vec![addr], 500, 1000).await;
    let err = c.register_put("k", b"v".to_vec()).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Ambiguous, "{err:?}");
    let err = c
        .register_get("k", ReadOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err.code(), ErrorCode::Unavailable | ErrorCode::Timeout),
        "a read changes nothing: {err:?}"
    );
}
