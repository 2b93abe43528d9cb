//! Deleting bytes the silo no longer needs: instances RELEASING on the agent's silo (a move
//! retired them) and tombstones (copies of deleted files).
//!
//! Releases arrive with every ClaimMoves answer. An instance's bytes are deleted only when it
//! is listed again at least `release_grace` after it was first seen releasing (readers that
//! located it just before may still be reading; and a listing right before the delete is the
//! freshest evidence that it is still releasing). Deleted instances are confirmed with
//! ReleaseDone in batches. The releaser tells the main loop when it next needs a listing.
//!
//! Tombstones are listed every `tombstone_interval` (and on INSTANCE_REMOVED events), their
//! bytes deleted, and each confirmed with ConfirmReclaimed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use metad_proto::v1 as pb;
use metad_proto::ErrorCode;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::commit::{persist, PERSIST_ROUNDS};
use super::copy::location_or_path;
use super::run::Shared;
use super::stats::AgentStats;
use crate::moves::MAX_BATCH;
use crate::ReadOptions;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Seen releasing; waiting for the grace to pass and a fresh listing.
    Waiting,
    /// Being deleted, or deleted and waiting for ReleaseDone.
    Deleting,
}

#[derive(Debug)]
struct Entry {
    task: pb::ReleaseTask,
    first_seen: Instant,
    phase: Phase,
}

/// The releases this agent knows about (pure bookkeeping; tested without a cluster).
#[derive(Debug)]
pub(crate) struct Releases {
    grace: Duration,
    entries: HashMap<u64, Entry>,
}

impl Releases {
    pub(crate) fn new(grace: Duration) -> Releases {
        Releases {
            grace,
            entries: HashMap::new(),
        }
    }

    /// Takes one listing (the releases of a ClaimMoves answer received at `now`; `complete`
    /// when the answer held fewer than asked, so anything missing is no longer releasing).
    /// Returns the releases to delete now.
    pub(crate) fn observe(
        &mut self,
        listed: Vec<pb::ReleaseTask>,
        complete: bool,
        now: Instant,
    ) -> Vec<pb::ReleaseTask> {
        let mut seen = std::collections::HashSet::new();
        let mut ready = Vec::new();
        for t in listed {
            seen.insert(t.ino);
            let e = self.entries.entry(t.ino).or_insert_with(|| Entry {
                task: t.clone(),
                first_seen: now,
                phase: Phase::Waiting,
            });
            e.task = t;
            if e.phase == Phase::Waiting && now >= e.first_seen + self.grace {
                e.phase = Phase::Deleting;
                ready.push(e.task.clone());
            }
        }
        if complete {
            // No longer releasing (confirmed by someone, or the file changed): forget.
            self.entries
                .retain(|ino, e| e.phase == Phase::Deleting || seen.contains(ino));
        }
        ready
    }

    /// When a listing is next needed to make progress.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter(|e| e.phase == Phase::Waiting)
            .map(|e| e.first_seen + self.grace)
            .min()
    }

    /// The deletion of `ino` failed: try again after a later listing.
    pub(crate) fn retry_later(&mut self, ino: u64, now: Instant) {
        if let Some(e) = self.entries.get_mut(&ino) {
            e.phase = Phase::Waiting;
            e.first_seen = now;
        }
    }

    /// Confirmed (or no longer releasing): forget.
    pub(crate) fn forget(&mut self, ino: u64) {
        self.entries.remove(&ino);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// One ClaimMoves answer's releases for the releaser.
pub(crate) struct Listing {
    pub releases: Vec<pb::ReleaseTask>,
    pub complete: bool,
}

/// The releaser task: owns [`Releases`], deletes bytes with bounded concurrency, confirms in
/// batches, and publishes on `due` when it next needs a listing.
pub(crate) async fn run_releaser(
    sh: Arc<Shared>,
    mut listings: mpsc::Receiver<Listing>,
    due: watch::Sender<Option<Instant>>,
) {
    let mut rel = Releases::new(sh.config.release_grace);
    let mut jobs: JoinSet<(u64, bool)> = JoinSet::new();
    let mut waiting: Vec<pb::ReleaseTask> = Vec::new();
    let mut confirm: Vec<u64> = Vec::new();
    let mut flush_at: Option<Instant> = None;
    let mut open = true;
    loop {
        while jobs.len() < sh.config.concurrency {
            let Some(t) = waiting.pop() else { break };
            let sh = Arc::clone(&sh);
            jobs.spawn(async move {
                let ok = delete_released(&sh, &t).await;
                (t.ino, ok)
            });
        }
        let _ = due.send(rel.next_due());
        if !open && jobs.is_empty() && waiting.is_empty() && confirm.is_empty() {
            return;
        }
        tokio::select! {
            l = listings.recv(), if open => match l {
                Some(l) => waiting.extend(rel.observe(l.releases, l.complete, Instant::now())),
                None => open = false,
            },
            Some(j) = jobs.join_next(), if !jobs.is_empty() => match j {
                Ok((ino, true)) => {
                    confirm.push(ino);
                    flush_at.get_or_insert_with(|| Instant::now() + sh.config.commit_delay);
                }
                Ok((ino, false)) => rel.retry_later(ino, Instant::now()),
                Err(e) => tracing::error!(error = %e, "release task panicked"),
            },
            _ = sleep_until_opt(flush_at), if flush_at.is_some() => {
                flush_at = None;
                let inos: Vec<u64> = confirm.drain(..confirm.len().min(MAX_BATCH)).collect();
                confirm_released(&sh, &mut rel, inos).await;
                if !confirm.is_empty() {
                    flush_at = Some(Instant::now());
                }
            }
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Deletes a released instance's bytes. `true` when they are gone.
async fn delete_released(sh: &Shared, t: &pb::ReleaseTask) -> bool {
    if t.silo != sh.config.silo {
        tracing::warn!(ino = t.ino, silo = %t.silo, "release task for another silo ignored");
        return false;
    }
    let loc = location_or_path(&t.location, &t.path);
    match sh.target.delete(loc).await {
        Ok(existed) => {
            tracing::debug!(ino = t.ino, location = %loc, existed, "released bytes deleted");
            true
        }
        Err(e) => {
            AgentStats::inc(&sh.stats.errors);
            tracing::warn!(ino = t.ino, location = %loc, error = %e, "could not delete released bytes");
            false
        }
    }
}

async fn confirm_released(sh: &Shared, rel: &mut Releases, inos: Vec<u64>) {
    if inos.is_empty() {
        return;
    }
    let r = persist(
        &sh.client,
        &sh.stats,
        "ReleaseDone",
        PERSIST_ROUNDS,
        |seq| {
            sh.client
                .release_done_with_seq(seq, &sh.config.silo, inos.clone())
        },
    )
    .await;
    match r {
        Ok(resp) => {
            AgentStats::add(&sh.stats.released, u64::from(resp.released));
            for ino in &inos {
                rel.forget(*ino);
            }
        }
        Err(e) => {
            tracing::warn!(count = inos.len(), error = %e, "ReleaseDone failed; will delete and confirm again");
            let now = Instant::now();
            for ino in &inos {
                rel.retry_later(*ino, now);
            }
        }
    }
}

// ---------- tombstones ----------

/// The tombstone task: sweeps every `tombstone_interval`, or when woken.
pub(crate) async fn run_tombstones(
    sh: Arc<Shared>,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(sh.config.tombstone_interval) => {}
        }
        if *stop.borrow() {
            return;
        }
        if let Err(e) = sweep(&sh).await {
            AgentStats::inc(&sh.stats.errors);
            tracing::warn!(error = %e, "tombstone sweep failed");
        }
    }
}

/// One pass over the silo's tombstones.
async fn sweep(sh: &Arc<Shared>) -> Result<(), crate::ClientError> {
    let mut cursor = String::new();
    loop {
        let page = sh
            .client
            .list_tombstones(&sh.config.silo, &cursor, 1000, ReadOptions::default())
            .await?;
        futures::stream::iter(page.tombstones)
            .for_each_concurrent(sh.config.concurrency, |t| async move {
                reclaim(sh, &t).await;
            })
            .await;
        if page.next_cursor.is_empty() {
            return Ok(());
        }
        cursor = page.next_cursor;
    }
}

/// Where a tombstone's bytes are.
fn tombstone_location(t: &pb::Tombstone) -> &str {
    location_or_path(&t.location, &t.path)
}

async fn reclaim(sh: &Shared, t: &pb::Tombstone) {
    let loc = tombstone_location(t);
    if let Err(e) = sh.target.delete(loc).await {
        AgentStats::inc(&sh.stats.errors);
        tracing::warn!(ino = t.ino, location = %loc, error = %e, "could not delete a tombstone's bytes");
        return;
    }
    match sh.client.confirm_reclaimed(&sh.config.silo, t.ino).await {
        Ok(_) => AgentStats::inc(&sh.stats.tombstones_reclaimed),
        Err(e) if e.code() == ErrorCode::NotFound => {}
        Err(e) => {
            AgentStats::inc(&sh.stats.errors);
            tracing::warn!(ino = t.ino, error = %e, "ConfirmReclaimed failed; will retry");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(ino: u64) -> pb::ReleaseTask {
        pb::ReleaseTask {
            ino,
            path: format!("/f{ino}"),
            silo: "s".into(),
            location: format!("f{ino}"),
            ..Default::default()
        }
    }

    #[test]
    fn deletes_only_after_the_grace_and_a_fresh_listing() {
        let g = Duration::from_secs(2);
        let t0 = Instant::now();
        let mut r = Releases::new(g);
        assert!(r.observe(vec![task(1), task(2)], true, t0).is_empty());
        assert_eq!(r.next_due(), Some(t0 + g));
        assert!(r
            .observe(vec![task(1), task(2)], true, t0 + g / 2)
            .is_empty());
        // Listed again after the grace: ready, once.
        let ready = r.observe(vec![task(1), task(2)], true, t0 + g);
        assert_eq!(ready.len(), 2);
        assert_eq!(r.next_due(), None);
        assert!(r
            .observe(vec![task(1), task(2)], true, t0 + g * 2)
            .is_empty());
        r.forget(1);
        r.retry_later(2, t0 + g * 2);
        assert_eq!(r.next_due(), Some(t0 + g * 3));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn an_instance_no_longer_listed_is_not_deleted() {
        let g = Duration::from_secs(1);
        let t0 = Instant::now();
        let mut r = Releases::new(g);
        r.observe(vec![task(1), task(2)], true, t0);
        // 2 stopped releasing (e.g. the file was rewritten there): a complete listing drops it.
        let ready = r.observe(vec![task(1)], true, t0 + g);
        assert_eq!(ready.iter().map(|t| t.ino).collect::<Vec<_>>(), [1]);
        assert!(
            r.observe(vec![task(2)], true, t0 + g).is_empty(),
            "seen anew"
        );
        // A truncated listing (as many as asked) drops nothing.
        let mut r = Releases::new(g);
        r.observe(vec![task(1), task(2)], true, t0);
        r.observe(vec![task(1)], false, t0);
        assert_eq!(r.len(), 2);
    }
}
