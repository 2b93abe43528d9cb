//! The membership fault: remove a node through the admin API, wipe it, and later start it
//! empty, add it back as a learner (waiting until it caught up) and promote it to voter.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use metad_client::pb::MemberRole;
use tokio::sync::Mutex;

use crate::control::Cluster;

const TRIES: u32 = 40;
/// A membership step gives up after this long (the run must end on time).
const STEP_LIMIT: Duration = Duration::from_secs(60);

async fn retry<T, F, Fut>(what: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut last = None;
    let until = tokio::time::Instant::now() + STEP_LIMIT;
    for _ in 0..TRIES {
        if tokio::time::Instant::now() >= until {
            break;
        }
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("{what}: no attempt")))
        .with_context(|| format!("{what}: gave up after {TRIES} tries or {STEP_LIMIT:?}"))
}

/// The voters as the leader sees them (a follower or a removed node may be stale).
async fn leader_voters(cluster: &Arc<Mutex<Cluster>>) -> anyhow::Result<Vec<u64>> {
    Ok(leader_view(cluster).await?.1)
}

/// A client pinned to the current leader: membership calls are not retried after a
/// timeout, so they must not start at a paused or cut-off node.
async fn leader_client(cluster: &Arc<Mutex<Cluster>>) -> anyhow::Result<metad_client::Client> {
    let (leader, _) = leader_view(cluster).await?;
    let client = cluster.lock().await.client().await?;
    Ok(client.on_endpoint(leader - 1)?)
}

/// (leader id, voters) as the leader reports them.
async fn leader_view(cluster: &Arc<Mutex<Cluster>>) -> anyhow::Result<(usize, Vec<u64>)> {
    let (client, n) = {
        let c = cluster.lock().await;
        (c.client().await?, c.len())
    };
    for _ in 0..TRIES {
        for i in 0..n {
            let Ok(pinned) = client.on_endpoint(i) else {
                continue;
            };
            let asked = tokio::time::timeout(Duration::from_secs(2), pinned.member_list()).await;
            if let Ok(Ok(list)) = asked {
                if list.leader_id == (i + 1) as u64 {
                    let voters = list
                        .members
                        .iter()
                        .filter(|m| m.role == MemberRole::Voter as i32)
                        .map(|m| m.id)
                        .collect();
                    return Ok((i + 1, voters));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!("no leader answered member list")
}

/// Removes node `id` from the membership, then kills and wipes it. An ambiguous removal
/// is resolved by asking the leader.
pub async fn remove(cluster: &Arc<Mutex<Cluster>>, id: usize) -> anyhow::Result<()> {
    let voters = leader_voters(cluster).await?;
    if voters.len() <= 2 || !voters.contains(&(id as u64)) {
        bail!("voters {voters:?}: not removing n{id}");
    }
    let client = leader_client(cluster).await?;
    let outcome = client.remove_member(id as u64).await;
    if let Err(e) = outcome {
        // Unknown outcome: the change may still commit. Watch the leader's view for a while
        // before concluding it did not happen.
        let until = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let voters = leader_voters(cluster).await?;
            if !voters.contains(&(id as u64)) {
                break;
            }
            if tokio::time::Instant::now() >= until {
                return Err(e).with_context(|| format!("remove_member {id}"));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    cluster.lock().await.wipe(id)?;
    Ok(())
}

/// Starts the wiped node `id` empty, adds it as a learner and promotes it.
pub async fn readd(cluster: &Arc<Mutex<Cluster>>, id: usize) -> anyhow::Result<()> {
    let (peer, client_addr) = {
        let mut c = cluster.lock().await;
        c.start_node(id)?;
        (c.peer_addr(id).to_string(), c.client_addr(id))
    };
    let site = Cluster::site(id);
    retry("add_learner", || {
        let (site, peer, client_addr) = (site.clone(), peer.clone(), client_addr.clone());
        async move {
            let client = leader_client(cluster).await?;
            // Already a learner (an earlier attempt's outcome was unknown): go on.
            let members = client.member_list().await?;
            if members.members.iter().any(|m| m.id == id as u64) {
                return Ok(());
            }
            client
                .add_learner(id as u64, &site, &peer, &client_addr, true)
                .await?;
            Ok(())
        }
    })
    .await?;
    retry("promote_learner", || async move {
        let client = leader_client(cluster).await?;
        let members = client.member_list().await?;
        let voter = members
            .members
            .iter()
            .any(|m| m.id == id as u64 && m.role == MemberRole::Voter as i32);
        if !voter {
            client.promote_learner(id as u64).await?;
        }
        Ok(())
    })
    .await?;
    Ok(())
}

/// Nodes that are not voters any more (removed by a member fault whose re-add failed).
pub async fn missing_members(cluster: &Arc<Mutex<Cluster>>) -> Vec<usize> {
    let n = cluster.lock().await.len();
    let Ok(voters) = leader_voters(cluster).await else {
        return vec![];
    };
    (1..=n)
        .filter(|id| !voters.contains(&(*id as u64)))
        .collect()
}
