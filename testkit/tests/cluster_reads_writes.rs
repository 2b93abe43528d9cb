//! Read and write semantics across nodes: exactly-once retries across a leader change,
//! linearizable reads on followers, read-index coalescing, min_revision, and request limits.

use std::time::Duration;

use metad_client::{ErrorCode, ReadOptions};
use metad_testkit::{init_logging, Cluster};

const T: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn write_with_lost_reply_retried_after_leader_change_applies_once() -> anyhow::Result<()> {
    init_logging();
    let mut cluster = Cluster::builder().nodes(3).build().await?;
    let leader = cluster.wait_for_leader(T).await?;
    // No automatic retries: the test performs the retry itself, after the leader change.
    let client = cluster.client_with(|c| c.max_retries = 0).await?;
    let pinned = client.on_addr(&cluster.client_addr(leader))?;
    cluster.faults().lose_write_replies(leader, 1);
    let seq = client.next_seq();
    let first = pinned.register_incr_with_seq("n", 1, seq).await;
    let err = first.expect_err("the reply was injected as lost");
    assert_eq!(
        err.code(),
        ErrorCode::Ambiguous,
        "a lost reply is ambiguous, never failed: {err}"
    );

    cluster.stop(leader).await;
    let new = cluster.wait_for_new_leader(leader, T).await?;
    assert_ne!(new, leader);
    // The same client identity after a restart: its sequence continues after `seq`.
    let client2 = cluster
        .client_with(|c| {
            c.client_id = Some(client.client_id().to_string());
            c.first_seq = seq + 1;
        })
        .await?;
    let retry = client2.register_incr_with_seq("n", 1, seq).await?;
    assert_eq!(retry.value, 1, "the retry returns the first outcome");
    let got = client2
        .register_get("n", ReadOptions::linearizable())
        .await?;
    assert_eq!(
        got.value,
        Some(1i64.to_be_bytes().to_vec()),
        "applied exactly once"
    );
    assert_eq!(
        got.mod_revision, retry.header.revision,
        "the retry's reply is the original one"
    );
    // A new seq applies again.
    let next = client2.register_incr("n", 1).await?;
    assert_eq!(next.value, 2);
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn linearizable_read_on_follower_sees_write_acknowledged_by_leader() -> anyhow::Result<()> {
    init_logging();
    let cluster = Cluster::builder().nodes(3).build().await?;
    let leader = cluster.wait_for_leader(T).await?;
    let writer = cluster.client_for(leader).await?;
    let followers: Vec<u64> = cluster.ids().into_iter().filter(|i| *i != leader).collect();
    let readers = [
        cluster.client_for(followers[0]).await?,
        cluster.client_for(followers[1]).await?,
    ];
    for i in 0..100u32 {
        let v = i.to_be_bytes().to_vec();
        writer.register_put("reg", v.clone()).await?;
        let r = readers[(i % 2) as usize]
            .register_get("reg", ReadOptions::linearizable())
            .await?;
        assert_eq!(
            r.value,
            Some(v),
            "follower read #{i} missed the acknowledged write"
        );
        assert_ne!(
            r.header.node_id, leader,
            "read must be served by the follower"
        );
    }
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_linearizable_reads_share_read_index_rounds() -> anyhow::Result<()> {
    init_logging();
    let cluster = Cluster::builder().nodes(3).build().await?;
    let leader = cluster.wait_for_leader(T).await?;
    let client = cluster.client_for(leader).await?;
    client.register_put("r", b"v".to_vec()).await?;
    let m = &cluster.node(leader).core().metrics;
    let rounds_before = m.read_index_batch.get_sample_count();
    let reads = 400;
    let futs = (0..reads).map(|_| {
        let c = client.clone();
        async move { c.register_get("r", ReadOptions::linearizable()).await }
    });
    for r in futures::future::join_all(futs).await {
        assert_eq!(r?.value.as_deref(), Some(&b"v"[..]));
    }
    let rounds = m.read_index_batch.get_sample_count() - rounds_before;
    assert!(rounds > 0);
    assert!(
        rounds < reads,
        "{reads} concurrent reads took {rounds} read-index rounds: not coalesced"
    );
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn min_revision_read_waits_for_the_revision_on_any_node() -> anyhow::Result<()> {
    init_logging();
    let cluster = Cluster::builder().nodes(3).build().await?;
    let leader = cluster.wait_for_leader(T).await?;
    let client = cluster.client().await?;
    for id in cluster.ids() {
        let w = client
            .register_put("ryw", id.to_be_bytes().to_vec())
            .await?;
        let on = cluster.client_for(id).await?;
        let r = on
            .register_get(
                "ryw",
                ReadOptions::serializable().min_revision(w.header.revision),
            )
            .await?;
        assert!(r.header.revision >= w.header.revision);
        assert_eq!(
            r.value,
            Some(id.to_be_bytes().to_vec()),
            "read-your-writes on node {id}"
        );
    }
    // A revision far in the future times out with TIMEOUT rather than returning old state.
    let far = cluster
        .client_with(|c| {
            c.max_retries = 0;
        })
        .await?
        .on_addr(&cluster.client_addr(leader))?;
    let err = far
        .register_get("ryw", ReadOptions::serializable().min_revision(1_000_000))
        .await
        .expect_err("revision 1e6 does not exist");
    assert_eq!(err.code(), ErrorCode::Timeout, "{err}");
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_over_limits_get_invalid_argument_and_change_nothing() -> anyhow::Result<()> {
    init_logging();
    let cluster = Cluster::builder().nodes(3).build().await?;
    let leader = cluster.wait_for_leader(T).await?;
    let client = cluster.client().await?;
    let base = client
        .register_put("ok", b"1".to_vec())
        .await?
        .header
        .revision;

    let long_key = "k".repeat(257);
    let e = client
        .register_put(&long_key, b"x".to_vec())
        .await
        .expect_err("key over 256 bytes");
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
    assert!(e.message().contains("key"), "error names the field: {e}");

    let e = client
        .register_put("big", vec![0u8; 64 * 1024 + 1])
        .await
        .expect_err("value over 64 KiB");
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
    assert!(
        e.message().contains("value") && e.message().contains("65536"),
        "{e}"
    );

    // Exactly at the limits is accepted.
    client
        .register_put(&"k".repeat(256), vec![0u8; 64 * 1024])
        .await?;

    // A bad client_id goes straight to the wire: the server must refuse it.
    let raw = cluster
        .client_with(|c| c.client_id = Some("x".repeat(65)))
        .await;
    if let Ok(raw) = raw {
        let e = raw
            .register_put("cid", b"x".to_vec())
            .await
            .expect_err("client_id over 64 bytes");
        assert_eq!(e.code(), ErrorCode::InvalidArgument);
    }

    let after = client
        .register_get("ok", ReadOptions::linearizable())
        .await?
        .header
        .revision;
    assert_eq!(after, base + 1, "only the at-limit write changed state");
    let _ = leader;
    cluster.shutdown().await;
    Ok(())
}

/// A membership change is not deduplicated, so a timed-out one is not retried; the client must
/// still move off the node that timed out, or every later call would start there again (the
/// jepsen member nemesis stalled for minutes behind a SIGSTOPped node).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_ambiguous_membership_call_the_next_call_starts_elsewhere() -> anyhow::Result<()> {
    init_logging();
    let cluster = Cluster::builder().nodes(1).build().await?;
    cluster.wait_for_leader(Duration::from_secs(30)).await?;
    // A "paused node": accepts TCP connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let silent_addr = silent.local_addr()?.to_string();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let mut cfg = metad_client::ClientConfig::new([silent_addr, cluster.client_addr(1)]);
    cfg.request_timeout = Duration::from_millis(300);
    cfg.total_timeout = Duration::from_millis(600);
    let client = metad_client::Client::connect(cfg).await?;
    let first = client.promote_learner(99).await;
    assert_eq!(
        first.err().map(|e| e.code()),
        Some(ErrorCode::Ambiguous),
        "the silent node cannot answer"
    );
    // The next call reaches the real node, which refuses definitively.
    let second = client.promote_learner(99).await;
    assert_eq!(second.err().map(|e| e.code()), Some(ErrorCode::NotFound));
    cluster.shutdown().await;
    Ok(())
}
