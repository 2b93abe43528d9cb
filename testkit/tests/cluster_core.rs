//! Cluster tests of the replicated core on real in-process nodes (real redb, real gRPC over
//! loopback): election, failover without loss, minority partition, full restart.

use std::time::Duration;

use metad_client::{ErrorCode, ReadOptions};
use metad_testkit::{init_logging, wait_until, Cluster};

const T: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fresh_cluster_elects_one_leader_and_reports_three_sites() -> anyhow::Result<()> {
    init_logging();
    let cluster = Cluster::builder().nodes(3).build().await?;
    let leader = cluster.wait_for_leader(T).await?;
    let client = cluster.client().await?;
    let st = wait_until(T, "status with every node answering", || async {
        let st = client.cluster_status().await.ok()?;
        (st.nodes.len() == 3 && st.nodes.iter().all(|n| n.status.is_some()) && st.leader_id != 0)
            .then_some(st)
    })
    .await?;
    assert_eq!(st.leader_id, leader);
    let mut sites: Vec<_> = st.nodes.iter().map(|n| n.site.clone()).collect();
    sites.sort();
    assert_eq!(sites, ["site-a", "site-b", "site-c"]);
    let leaders = st
        .nodes
        .iter()
        .filter_map(|n| n.status.as_ref())
        .filter(|s| s.state == "leader")
        .count();
    assert_eq!(leaders, 1, "exactly one node reports itself leader");
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_killed_new_leader_no_acknowledged_write_lost() -> anyhow::Result<()> {
    init_logging();
    let mut cluster = Cluster::builder().nodes(3).build().await?;
    let old = cluster.wait_for_leader(T).await?;
    let client = cluster.client().await?;
    let mut acked = Vec::new();
    for i in 0..50u32 {
        let key = format!("k{i}");
        client.register_put(&key, i.to_be_bytes().to_vec()).await?;
        acked.push((key, i));
    }
    cluster.kill(old).await;
    let new = cluster.wait_for_new_leader(old, T).await?;
    assert_ne!(new, old);
    let client = cluster.client().await?;
    for i in 50..60u32 {
        let key = format!("k{i}");
        client.register_put(&key, i.to_be_bytes().to_vec()).await?;
        acked.push((key, i));
    }
    for (key, i) in &acked {
        let got = client
            .register_get(key, ReadOptions::linearizable())
            .await?;
        assert_eq!(
            got.value,
            Some(i.to_be_bytes().to_vec()),
            "acknowledged write {key} lost"
        );
    }
    cluster.restart(old).await?;
    let rev = client
        .register_get("k0", ReadOptions::linearizable())
        .await?
        .header
        .revision;
    cluster.wait_revision(old, rev, T).await?;
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn minority_refuses_majority_writes_then_heals_and_catches_up() -> anyhow::Result<()> {
    init_logging();
    let cluster = Cluster::builder()
        .nodes(3)
        .request_timeout_ms(1500)
        .build()
        .await?;
    let old = cluster.wait_for_leader(T).await?;
    let client = cluster.client().await?;
    client.register_put("x", b"before".to_vec()).await?;

    // Cut the leader off: it is the minority now.
    cluster.isolate(old);
    let new = cluster.wait_for_new_leader(old, T).await?;
    let majority: Vec<u64> = cluster.ids().into_iter().filter(|i| *i != old).collect();
    let mcfg = majority
        .iter()
        .map(|i| cluster.client_addr(*i))
        .collect::<Vec<_>>();
    let maj = cluster
        .client_with(|c| {
            c.endpoints = mcfg;
        })
        .await?;
    for i in 0..20u32 {
        maj.register_put("x", format!("during-{i}").into_bytes())
            .await?;
    }
    assert!(majority.contains(&new));

    let minority = cluster
        .client_with(|c| {
            c.total_timeout = Duration::from_secs(4);
            c.max_retries = 1;
        })
        .await?
        .on_addr(&cluster.client_addr(old))?;
    let read = minority
        .register_get("x", ReadOptions::linearizable())
        .await;
    match read {
        Ok(r) => panic!("isolated node served a linearizable read: {:?}", r.value),
        Err(e) => assert!(
            matches!(
                e.code(),
                ErrorCode::Unavailable | ErrorCode::Timeout | ErrorCode::NotLeader
            ),
            "unexpected error kind {e}"
        ),
    }
    let write = minority.register_put("x", b"from-minority".to_vec()).await;
    assert!(write.is_err(), "isolated node acknowledged a write");

    // A serializable read on the minority is allowed, and is stale.
    let stale = minority
        .register_get("x", ReadOptions::serializable())
        .await?;
    assert_eq!(stale.value.as_deref(), Some(&b"before"[..]));

    cluster.heal();
    let latest = maj.register_get("x", ReadOptions::linearizable()).await?;
    cluster
        .wait_revision(old, latest.header.revision, T)
        .await?;
    let caught_up = cluster
        .client_for(old)
        .await?
        .register_get("x", ReadOptions::serializable())
        .await?;
    assert_eq!(caught_up.value.as_deref(), Some(&b"during-19"[..]));
    let final_value = maj.register_get("x", ReadOptions::linearizable()).await?;
    assert_ne!(
        final_value.value.as_deref(),
        Some(&b"from-minority"[..]),
        "a refused write surfaced"
    );
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whole_cluster_restart_keeps_state_without_replaying_the_log() -> anyhow::Result<()> {
    init_logging();
    let mut cluster = Cluster::builder().nodes(3).build().await?;
    cluster.wait_for_leader(T).await?;
    let client = cluster.client().await?;
    let mut last = None;
    for i in 0..300i64 {
        last = Some(client.register_incr("counter", 1).await?);
        if i % 50 == 0 {
            client.register_put(&format!("p{i}"), vec![i as u8]).await?;
        }
    }
    let before = last.map(|l| l.header.revision).unwrap_or(0);
    for id in cluster.ids() {
        cluster.wait_revision(id, before, T).await?;
    }
    let applied_before: Vec<u64> = cluster
        .ids()
        .iter()
        .map(|id| cluster.node(*id).core().sm.applied().log_index)
        .collect();
    for id in cluster.ids() {
        cluster.stop(id).await;
    }
    for id in cluster.ids() {
        cluster.restart(id).await?;
    }
    // Applied state is read from sm.redb at open: nothing below it is replayed.
    for (i, id) in cluster.ids().into_iter().enumerate() {
        let n = cluster.node(id).core();
        assert!(
            n.sm.applied().log_index >= applied_before[i],
            "node {id} lost applied state"
        );
    }
    cluster.wait_for_leader(T).await?;
    let client = cluster.client().await?;
    let got = client
        .register_get("counter", ReadOptions::linearizable())
        .await?;
    assert_eq!(got.value, Some(300i64.to_be_bytes().to_vec()));
    assert_eq!(
        client
            .register_get("p250", ReadOptions::linearizable())
            .await?
            .value,
        Some(vec![250u8])
    );
    for id in cluster.ids() {
        let replayed = cluster.node(id).core().sm.applied_since_open();
        assert!(
            replayed < 20,
            "node {id} re-applied {replayed} entries after restart (log had ~310)"
        );
    }
    cluster.shutdown().await;
    Ok(())
}

/// The leader sends a new entry to its followers while its own log flush is still running
/// (metad's openraft patch, `vendor/PATCHES.md`), yet answers the write only after that flush.
/// With the leader's fsync held back, both followers get the entry from this leader in this
/// term, the write stays unanswered, and it completes once the flush is let go.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_replicates_during_its_own_flush_and_answers_only_after_it() -> anyhow::Result<()> {
    init_logging();
    let cluster = Cluster::builder().nodes(3).build().await?;
    let leader = cluster.wait_for_leader(T).await?;
    let client = cluster.client().await?;
    client.register_put("warm", b"up".to_vec()).await?;
    let (term, last) = {
        let m = cluster.node(leader).raft().metrics().borrow().clone();
        (m.current_term, m.last_log_index.unwrap_or(0))
    };
    let followers = cluster.others(leader);
    // Every follower holds the entry past `after`, from this leader in this term (a new
    // election would also grow the followers' logs, so term and leader are checked too).
    let followers_hold = |after: u64| {
        followers.iter().all(|&f| {
            let m = cluster.node(f).raft().metrics().borrow().clone();
            m.current_term == term
                && m.current_leader == Some(leader)
                && m.last_log_index.unwrap_or(0) > after
        })
    };
    wait_until(T, "followers caught up with the warm-up write", || async {
        followers_hold(last.saturating_sub(1)).then_some(())
    })
    .await?;

    let hold = cluster.node(leader).core().log.hold_flushes();
    let c = client.clone();
    let mut write = tokio::spawn(async move { c.register_put("held", b"v".to_vec()).await });
    wait_until(
        T,
        "followers hold the new entry while the leader's flush is held",
        || async { followers_hold(last).then_some(()) },
    )
    .await?;
    // An absence can only be checked over a window; well inside the 1 s election timeout.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut write)
            .await
            .is_err(),
        "the write was answered before the leader's own log flush"
    );
    drop(hold);
    let put = write.await??;
    assert!(put.header.revision > 0);
    let got = client
        .register_get("held", ReadOptions::linearizable())
        .await?;
    assert_eq!(got.value.as_deref(), Some(&b"v"[..]));
    assert_eq!(
        cluster.node(leader).raft().metrics().borrow().current_term,
        term,
        "no election happened"
    );
    cluster.shutdown().await;
    Ok(())
}

/// Writes that reach the leader while a proposal is in flight wait there and go out together
/// as the next entry: one proposal at a time (docs/benchmarks.md, round 16). With two in flight
/// the batcher would send the first of them at once and split the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_queued_behind_a_proposal_in_flight_share_the_next_entry() -> anyhow::Result<()> {
    use metad_proto::raft::v1::{command::Op, Command, RegisterPut};
    init_logging();
    let cluster = Cluster::builder().nodes(3).build().await?;
    let leader = cluster.wait_for_leader(T).await?;
    cluster
        .client()
        .await?
        .register_put("warm", b"up".to_vec())
        .await?;
    let core = cluster.node(leader).core().clone();
    let put = |seq: u64| Command {
        client_id: "queued".into(),
        seq,
        leader_time_ms: 0,
        op: Some(Op::RegisterPut(RegisterPut {
            key: format!("q{seq}"),
            value: vec![1],
        })),
    };
    let last_index = |id| cluster.node(id).raft().metrics().borrow().last_log_index;
    let followers = cluster.others(leader);
    // Every node's log (the leader's metric included, which moves only after its flush) ends
    // at the same entry, the warm-up write's or a later one.
    let last = wait_until(T, "every log ends at the same entry", || async {
        let l = last_index(leader);
        followers.iter().all(|&f| last_index(f) == l).then_some(l)
    })
    .await?;
    // The leader's log is not flushed while held, but the followers get the entry.
    let hold = core.log.hold_flushes();
    let c = core.clone();
    let first = tokio::spawn(async move { c.propose_local(put(1)).await });
    wait_until(T, "the first write is in flight", || async {
        followers
            .iter()
            .any(|&f| last_index(f) > last)
            .then_some(())
    })
    .await?;
    // Each write is handed to the batcher when first polled, before it waits for its reply.
    let mut queued: Vec<_> = (2..=21)
        .map(|seq| Box::pin(core.propose_local(put(seq))))
        .collect();
    for q in &mut queued {
        assert!(futures::poll!(q.as_mut()).is_pending());
        // Let the batcher run between arrivals, as it would between clients' requests.
        for _ in 0..1000 {
            tokio::task::yield_now().await;
        }
    }
    drop(hold);
    let (_, first_index) = first.await??;
    let mut indexes = Vec::new();
    for r in futures::future::join_all(queued).await {
        indexes.push(r?.1);
    }
    assert!(
        indexes.iter().all(|&i| i == indexes[0] && i >= first_index),
        "20 writes queued behind entry {first_index} went out as entries {indexes:?}"
    );
    cluster.shutdown().await;
    Ok(())
}

/// Followers learn that a lone write committed without waiting for a heartbeat tick. The leader
/// sends a heartbeat carrying the new committed index; our openraft patch lets it wait briefly
/// (1 ms) for a following write to carry it instead, but it must still go out when none comes.
/// Ticks are 5 s apart here, so without it the followers would apply the write seconds late.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn followers_apply_a_lone_write_without_waiting_for_a_heartbeat_tick() -> anyhow::Result<()> {
    init_logging();
    let cluster = Cluster::builder()
        .nodes(3)
        .configure(|c| {
            c.raft.heartbeat_ms = 5_000;
            c.raft.election_timeout_min_ms = 10_000;
            c.raft.election_timeout_max_ms = 20_000;
        })
        .build()
        .await?;
    let leader = cluster.wait_for_leader(T).await?;
    let client = cluster.client().await?;
    let followers = cluster.others(leader);
    for i in 0..3u8 {
        client.register_put("lone", vec![i]).await?;
        let index = cluster
            .node(leader)
            .raft()
            .metrics()
            .borrow()
            .last_applied
            .map(|l| l.index)
            .unwrap_or(0);
        // Half a tick: a commit that waited for the tick would miss this.
        wait_until(
            Duration::from_millis(2_500),
            "followers applied the write",
            || async {
                followers
                    .iter()
                    .all(|&f| {
                        let m = cluster.node(f).raft().metrics().borrow().clone();
                        m.last_applied.is_some_and(|l| l.index >= index)
                    })
                    .then_some(())
            },
        )
        .await?;
    }
    cluster.shutdown().await;
    Ok(())
}
