//! Crash durability with real processes: `metad` nodes killed with SIGKILL during a stream of
//! acknowledged writes, restarted, and every acknowledged write is still there.

use std::time::Duration;

use metad_client::{Client, ClientConfig, ReadOptions};
use metad_testkit::procs::ProcCluster;

/// Polls `f` until it yields a value, failing after `timeout` (never a fixed wait).
async fn poll<T, F, Fut>(timeout: Duration, what: &str, f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    metad_testkit::wait_until(timeout, what, f).await
}

async fn leader_of(client: &Client, timeout: Duration) -> anyhow::Result<u64> {
    poll(timeout, "a leader", || async {
        client
            .cluster_status()
            .await
            .ok()
            .map(|s| s.leader_id)
            .filter(|l| *l != 0)
    })
    .await
}

async fn revision_at_least(
    client: &Client,
    rev: u64,
    done: impl Fn() -> bool,
) -> anyhow::Result<()> {
    poll(
        Duration::from_secs(30),
        "the writer to make progress",
        || async {
            let r = client.node_status().await.map(|s| s.revision).unwrap_or(0);
            (done() || r >= rev).then_some(())
        },
    )
    .await
}

/// Writes `n` keys starting at `from`; returns the acknowledged ones. Ambiguous outcomes are
/// not acknowledged (and not counted as failures).
async fn write_stream(client: &Client, from: u32, n: u32) -> Vec<u32> {
    let mut acked = Vec::new();
    for i in from..from + n {
        if client
            .register_put(&format!("k{i}"), i.to_be_bytes().to_vec())
            .await
            .is_ok()
        {
            acked.push(i);
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_acknowledged_writes_loses_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cluster = ProcCluster::start(dir.path(), 3, &["--request-timeout-ms=2000"])?;
    let mut cfg = ClientConfig::new(cluster.endpoints.clone());
    cfg.total_timeout = Duration::from_secs(20);
    let client = Client::connect(cfg).await?;
    let leader = leader_of(&client, Duration::from_secs(30)).await?;

    // Phase 1: kill -9 the leader while a writer streams; the writer carries on.
    let writer = {
        let c = client.clone();
        tokio::spawn(async move { write_stream(&c, 0, 400).await })
    };
    let c = client.clone();
    revision_at_least(&c, 100, || writer.is_finished()).await?;
    cluster.node(leader).kill9();
    let mut acked = writer.await?;
    anyhow::ensure!(
        acked.len() > 100,
        "too few writes acknowledged: {}",
        acked.len()
    );
    cluster.node(leader).start()?;

    // Phase 2: kill -9 every node at once mid-stream, then restart them all.
    let writer = {
        let c = client.clone();
        tokio::spawn(async move { write_stream(&c, 1000, 150).await })
    };
    revision_at_least(&c, acked.len() as u64 + 60, || writer.is_finished()).await?;
    for p in cluster.nodes.iter_mut() {
        p.kill9();
    }
    // Restart at once: the writer's in-flight requests retry into the recovering cluster.
    for p in cluster.nodes.iter_mut() {
        p.start()?;
    }
    let second = writer.await?;
    anyhow::ensure!(!second.is_empty(), "no write acknowledged in phase 2");
    acked.extend(second);
    leader_of(&client, Duration::from_secs(30)).await?;

    for i in &acked {
        let got = client
            .register_get(&format!("k{i}"), ReadOptions::linearizable())
            .await?;
        assert_eq!(
            got.value,
            Some(i.to_be_bytes().to_vec()),
            "acknowledged write k{i} lost after SIGKILL"
        );
    }
    eprintln!(
        "verified {} acknowledged writes after two rounds of SIGKILL",
        acked.len()
    );
    Ok(())
}
