//! Membership: a learner joining after the log was purged catches up by snapshot, is promoted,
//! and a node is removed.

use std::time::Duration;

use metad_client::ReadOptions;
use metad_testkit::{init_logging, wait_until, Cluster};

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn learner_catches_up_by_snapshot_is_promoted_and_a_node_is_removed() -> anyhow::Result<()> {
    init_logging();
    // Snapshot every 100 entries, keep only 10 behind it: a new node cannot get the log.
    let mut cluster = Cluster::builder()
        .nodes(3)
        .snapshots(100, 10)
        .build()
        .await?;
    let leader = cluster.wait_for_leader(T).await?;
    let client = cluster.client().await?;
    for i in 0..400u32 {
        client
            .register_put(&format!("k{}", i % 37), i.to_be_bytes().to_vec())
            .await?;
    }
    let purged = wait_until(T, "leader to purge its log behind a snapshot", || async {
        let m = cluster.node(leader).raft().metrics().borrow().clone();
        m.purged.map(|p| p.index).filter(|p| *p > 100)
    })
    .await?;

    cluster.start_new_node(4).await?;
    let addr4 = cluster.node(4).client_addr().to_string();
    let peer4 = cluster.node(4).peer_addr().to_string();
    client
        .add_learner(4, "site-a", &peer4, &addr4, true)
        .await?;

    let latest = client
        .register_get("k0", ReadOptions::linearizable())
        .await?
        .header
        .revision;
    cluster.wait_revision(4, latest, T).await?;
    let snap = cluster.node(4).core().sm.current_snapshot_index();
    assert!(
        snap > 0,
        "learner must have installed a snapshot (log purged up to {purged})"
    );
    let n4 = cluster.node(4).core();
    assert!(
        n4.sm.applied_since_open() < 400,
        "learner replayed the whole history instead of a snapshot"
    );

    let after = client.promote_learner(4).await?;
    let voters: Vec<u64> = after
        .members
        .iter()
        .filter(|m| m.role == 1)
        .map(|m| m.id)
        .collect();
    assert!(
        voters.contains(&4),
        "node 4 is a voter after promotion: {voters:?}"
    );

    // Remove a follower (not the leader) and check the member list.
    let victim = cluster
        .ids()
        .into_iter()
        .find(|id| *id != leader && *id != 4)
        .unwrap_or(3);
    let after = client.remove_member(victim).await?;
    assert!(after.members.iter().all(|m| m.id != victim));
    cluster.stop(victim).await;
    // The remaining three voters keep serving writes.
    let client = cluster.client().await?;
    let r = client.register_put("after-remove", b"ok".to_vec()).await?;
    cluster.wait_revision(4, r.header.revision, T).await?;
    let list = client.member_list().await?;
    assert_eq!(list.members.len(), 3);
    cluster.shutdown().await;
    Ok(())
}

/// A removed node still holds the old membership. Membership changes sent to it must be
/// redirected to the leader, not judged on its stale view: before the fix it answered a
/// definite "node N is already a voter" (found by the jepsen member nemesis).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn membership_changes_on_a_removed_or_follower_node_redirect_to_the_leader(
) -> anyhow::Result<()> {
    init_logging();
    let cluster = Cluster::builder().nodes(3).build().await?;
    let leader = cluster.wait_for_leader(T).await?;
    let client = cluster.client().await?;
    let victim = cluster
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .unwrap_or(3);
    // A committed write first: until the leader has committed an entry of its term, the
    // initial membership is not committed and openraft refuses a change.
    client.register_put("warm", b"1".to_vec()).await?;
    client.remove_member(victim).await?;
    let peer = cluster.node(victim).peer_addr().to_string();
    let addr = cluster.node(victim).client_addr().to_string();
    // The victim keeps running with its stale view; ask it directly (no hint following), once
    // per change: it never learns a leader again, so the client's retries of "leader unknown"
    // would only spend their whole budget (~11 s a call) before returning the same answer.
    let on_victim = cluster
        .client_with(|c| c.max_retries = 0)
        .await?
        .on_addr(&addr)?;
    for attempt in [
        on_victim
            .add_learner(victim, "site-a", &peer, &addr, false)
            .await,
        on_victim.promote_learner(victim).await,
        on_victim.remove_member(victim).await,
    ] {
        let err = attempt.err().map(|e| e.code());
        assert_eq!(err, Some(metad_client::ErrorCode::NotLeader));
    }
    // Through the leader, the same node can be added back as a learner.
    client
        .add_learner(victim, "site-a", &peer, &addr, false)
        .await?;
    cluster.shutdown().await;
    Ok(())
}
