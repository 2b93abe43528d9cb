//! The agent's main loop ([`Agent::run`]): register a lease (re-register when it is lost),
//! keep it alive, claim copy tasks in batches when woken (watch event, poll timer, a freed
//! copy slot, a release coming due), run copies with bounded concurrency, and feed the
//! committer and the releaser. Shutdown aborts copies in flight (their temp files are
//! removed), commits what was already placed, and revokes the lease so the moves it held go
//! back to pending at once.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metad_proto::v1 as pb;
use metad_proto::ErrorCode;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::commit::{persist, run_committer, PERSIST_ROUNDS};
use super::copy::{copy_one, CopyEnv};
use super::release::{run_releaser, run_tombstones, Listing};
use super::stats::AgentStats;
use super::{Agent, AgentConfig, SiloDriver, Sources};
use crate::backoff::Backoff;
use crate::{Client, ClientError, LeaseKeeper, LeaseState};

/// Release tasks asked for per claim.
const MAX_RELEASES: u32 = 1000;

/// What every part of a running agent shares.
pub(crate) struct Shared {
    pub client: Client,
    pub config: AgentConfig,
    pub target: Arc<dyn SiloDriver>,
    pub sources: Sources,
    pub stats: Arc<AgentStats>,
    pub placements: super::fence::Placements,
}

/// A registered lease and what hangs off it.
struct Held {
    keeper: LeaseKeeper,
    /// Set when this lease ends: copies under it stop.
    abort: Arc<AtomicBool>,
}

impl Held {
    fn lost(&self) -> bool {
        matches!(self.keeper.state(), LeaseState::Lost { .. })
    }

    async fn end(self) {
        self.abort.store(true, Ordering::Release);
        self.keeper.stop().await;
    }
}

type Shutdown<'a> = Pin<&'a mut (dyn Future<Output = ()> + Send)>;

impl Agent {
    /// Runs the agent until `shutdown` completes. Returns an error only when it cannot work
    /// at all (e.g. the silo does not exist, or the name is invalid) or when another agent
    /// registered under the same name took its lease over; transient failures are retried.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ClientError> {
        let sh = Arc::new(Shared {
            client: self.client,
            config: self.config,
            target: self.target,
            sources: self.sources,
            stats: self.stats,
            placements: Default::default(),
        });
        let mut shutdown = std::pin::pin!(shutdown);
        let shutdown: Shutdown<'_> = shutdown.as_mut();
        main_loop(sh, shutdown).await
    }
}

async fn main_loop(sh: Arc<Shared>, mut shutdown: Shutdown<'_>) -> Result<(), ClientError> {
    let cfg = &sh.config;
    tracing::info!(silo = %cfg.silo, name = %cfg.name, driver = %sh.target.describe(), "agent starting");
    let (stop_tx, stop_rx) = watch::channel(false);
    let claim_wake = Arc::new(Notify::new());
    let tomb_wake = Arc::new(Notify::new());
    let watcher = tokio::spawn(super::wake::run_watch(
        sh.client.clone(),
        cfg.silo.clone(),
        Arc::clone(&claim_wake),
        Arc::clone(&tomb_wake),
        stop_rx.clone(),
    ));
    let tombstones = tokio::spawn(run_tombstones(
        Arc::clone(&sh),
        Arc::clone(&tomb_wake),
        stop_rx.clone(),
    ));
    let sweeper = tokio::spawn(sweep_temp(Arc::clone(&sh), stop_rx));
    let (commit_tx, commit_rx) = mpsc::channel(4 * cfg.commit_batch + cfg.concurrency);
    let committer = tokio::spawn(run_committer(
        sh.client.clone(),
        commit_rx,
        cfg.commit_batch,
        cfg.commit_delay,
        Arc::clone(&sh.stats),
    ));
    let (list_tx, list_rx) = mpsc::channel(16);
    let (due_tx, mut due_rx) = watch::channel(None::<Instant>);
    let releaser = tokio::spawn(run_releaser(Arc::clone(&sh), list_rx, due_tx));

    let mut held: Option<Held> = None;
    let mut queue: VecDeque<pb::MoveTask> = VecDeque::new();
    let mut copies: JoinSet<()> = JoinSet::new();
    let busy: Busy = Arc::default();
    let mut want_claim = true;
    let mut last_claim = Instant::now();
    let mut claim_failures: u32 = 0;
    let mut claim_not_before: Option<Instant> = None;
    let mut poll = tokio::time::interval(cfg.poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let backoff = Backoff::default();

    let result: Result<(), ClientError> = loop {
        // 1. A lease to work under.
        if held.as_ref().is_none_or(Held::lost) {
            if let Some(old) = held.take() {
                let lease = old.keeper.lease();
                tracing::warn!(lease, dropped = queue.len(), "lease lost");
                old.end().await;
                drop_queue(&sh, &mut queue);
                if let Some(e) = taken_over(&sh, lease).await {
                    break Err(e);
                }
            }
            match register(&sh, &mut shutdown).await {
                Ok(Some(h)) => held = Some(h),
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
            want_claim = true;
        }
        let Some(h) = held.as_ref() else {
            continue;
        };

        // 2. Start copies, at most one per file at a time: a newer claim of a file (after a
        // write or an expiry) waits for the older copy to finish, so the older copy (whose
        // token is already dead) can never place its bytes over the newer committed ones.
        let mut deferred = Vec::new();
        while copies.len() < cfg.concurrency {
            let Some(task) = queue.pop_front() else { break };
            let Some(guard) = BusyGuard::take(&busy, task.ino) else {
                deferred.push(task);
                continue;
            };
            let env = CopyEnv {
                shared: Arc::clone(&sh),
                lease: h.keeper.subscribe(),
                abort: Arc::clone(&h.abort),
                commits: commit_tx.clone(),
            };
            copies.spawn(async move {
                let _busy = guard;
                copy_one(env, task).await
            });
        }
        for t in deferred.into_iter().rev() {
            queue.push_front(t);
        }

        // 3. Claim when there is room and reason to.
        let now = Instant::now();
        let room = (cfg.claim_batch as usize).saturating_sub(queue.len() + copies.len());
        let due = *due_rx.borrow();
        let release_due = due.is_some_and(|d| d <= now && last_claim < d);
        let backing_off = claim_not_before.is_some_and(|t| t > now);
        if !backing_off && ((want_claim && room > 0) || release_due) && h.keeper.is_alive() {
            let max = room.clamp(1, 1000) as u32;
            last_claim = Instant::now();
            match claim(&sh, h.keeper.lease(), max).await {
                Ok(resp) => {
                    claim_failures = 0;
                    claim_not_before = None;
                    AgentStats::inc(&sh.stats.claims);
                    AgentStats::add(&sh.stats.tasks_claimed, resp.tasks.len() as u64);
                    want_claim = resp.tasks.len() >= max as usize;
                    if !resp.tasks.is_empty() {
                        tracing::debug!(
                            tasks = resp.tasks.len(),
                            releases = resp.releases.len(),
                            "claimed"
                        );
                    }
                    sh.placements.claimed(&resp.tasks);
                    queue.extend(resp.tasks);
                    let complete = (resp.releases.len() as u32) < MAX_RELEASES;
                    if !resp.releases.is_empty() || complete {
                        let _ = list_tx
                            .send(Listing {
                                releases: resp.releases,
                                complete,
                            })
                            .await;
                    }
                    continue;
                }
                Err(e) if e.code() == ErrorCode::NotFound && e.message().starts_with("lease") => {
                    tracing::warn!(error = %e, "claim refused: lease gone");
                    if let Some(old) = held.take() {
                        let lease = old.keeper.lease();
                        old.end().await;
                        drop_queue(&sh, &mut queue);
                        if let Some(e) = taken_over(&sh, lease).await {
                            break Err(e);
                        }
                    }
                    continue;
                }
                Err(e) => {
                    claim_failures = claim_failures.saturating_add(1);
                    let delay = backoff.delay(claim_failures.min(8) + 2);
                    tracing::warn!(error = %e, ?delay, "claim failed; backing off");
                    claim_not_before = Some(Instant::now() + delay);
                }
            }
        }

        // 4. Wait for a reason to act.
        let mut lease_rx = h.keeper.subscribe();
        let due_wait = due.filter(|d| last_claim < *d);
        tokio::select! {
            _ = &mut shutdown => break Ok(()),
            _ = claim_wake.notified() => want_claim = true,
            _ = poll.tick() => want_claim = true,
            Some(j) = copies.join_next(), if !copies.is_empty() => {
                if let Err(e) = j {
                    tracing::error!(error = %e, "copy task panicked");
                }
            }
            _ = lease_rx.changed() => {}
            _ = due_rx.changed() => {}
            _ = sleep_until_opt(due_wait) => {}
            _ = sleep_until_opt(claim_not_before) => {}
        }
    };

    // Shutdown: stop copies (temp files are removed), commit what was placed, release what
    // is due, then revoke the lease so its claims go back to pending now.
    tracing::info!(silo = %cfg.silo, "agent stopping");
    let _ = stop_tx.send(true);
    if let Some(h) = &held {
        h.abort.store(true, Ordering::Release);
    }
    while copies.join_next().await.is_some() {}
    drop(commit_tx);
    let _ = committer.await;
    drop(list_tx);
    let _ = releaser.await;
    let _ = watcher.await;
    let _ = tombstones.await;
    let _ = sweeper.await;
    if let Some(h) = held {
        let lease = h.keeper.lease();
        h.end().await;
        match sh.client.agent_revoke(lease).await {
            Ok(r) => tracing::info!(lease, moves_returned = r.moves_returned, "lease revoked"),
            Err(e) => {
                tracing::warn!(lease, error = %e, "could not revoke the lease; it expires after its TTL")
            }
        }
    }
    tracing::info!(stats = ?sh.stats.snapshot(), "agent stopped");
    result
}

/// Files with a copy in flight.
type Busy = Arc<std::sync::Mutex<std::collections::HashSet<u64>>>;

/// Marks a file busy while its copy runs; released on drop (also if the copy panics).
struct BusyGuard {
    busy: Busy,
    ino: u64,
}

impl BusyGuard {
    fn take(busy: &Busy, ino: u64) -> Option<BusyGuard> {
        let mut set = busy.lock().unwrap_or_else(|e| e.into_inner());
        set.insert(ino).then(|| BusyGuard {
            busy: Arc::clone(busy),
            ino,
        })
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        let mut set = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        set.remove(&self.ino);
    }
}

/// Removes stale temporary files on the agent's silo now and every `temp_max_age`.
async fn sweep_temp(sh: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let every = sh.config.temp_max_age.max(Duration::from_secs(1));
    loop {
        match sh.target.sweep_temp(sh.config.temp_max_age).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "stale temporary files removed"),
            Err(e) => tracing::warn!(error = %e, "sweeping temporary files failed"),
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Forgets queued tasks whose claims died with the lease.
fn drop_queue(sh: &Shared, queue: &mut VecDeque<pb::MoveTask>) {
    AgentStats::add(&sh.stats.aborted, queue.len() as u64);
    for t in queue.drain(..) {
        sh.placements.finished(t.move_id);
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// After losing lease `old`: if a live lease of the same name on the same silo exists, another
/// incarnation of this agent registered (a restart elsewhere took over): stop instead of
/// taking it back, or the two would replace each other forever.
async fn taken_over(sh: &Shared, old: u64) -> Option<ClientError> {
    let cfg = &sh.config;
    let agents = match sh
        .client
        .list_agents(&cfg.silo, crate::ReadOptions::default())
        .await
    {
        Ok(r) => r.agents,
        Err(e) => {
            tracing::debug!(error = %e, "cannot list agents; registering again");
            return None;
        }
    };
    let other = agents
        .iter()
        .find(|a| a.name == cfg.name && a.silo == cfg.silo && a.lease != old)?;
    tracing::error!(lease = other.lease, name = %cfg.name, "another agent registered under this name took over; stopping");
    Some(ClientError::rpc(
        ErrorCode::FailedPrecondition,
        format!(
            "another agent registered as {} on silo {} (lease {}) replaced this one",
            cfg.name, cfg.silo, other.lease
        ),
    ))
}

/// One ClaimMoves, resent with the same seq if its outcome is unknown (so claimed tasks are
/// never lost in a dropped reply).
async fn claim(sh: &Shared, lease: u64, max: u32) -> Result<pb::ClaimMovesResponse, ClientError> {
    persist(&sh.client, &sh.stats, "ClaimMoves", PERSIST_ROUNDS, |seq| {
        sh.client
            .claim_moves_with_seq(seq, lease, &sh.config.silo, max, MAX_RELEASES)
    })
    .await
}

/// Registers a lease (retrying transient errors until `shutdown`) and starts its keeper.
/// `Ok(None)` on shutdown.
async fn register(sh: &Shared, shutdown: &mut Shutdown<'_>) -> Result<Option<Held>, ClientError> {
    let cfg = &sh.config;
    let backoff = Backoff::default();
    let mut failures: u32 = 0;
    loop {
        let sent = Instant::now();
        let ttl_ms = cfg.ttl.as_millis() as u64;
        let r = tokio::select! {
            _ = &mut *shutdown => return Ok(None),
            r = sh.client.agent_register(&cfg.silo, &cfg.name, ttl_ms) => r,
        };
        match r {
            Ok(resp) => {
                let agent = resp.agent.unwrap_or_default();
                let ttl = Duration::from_millis(if agent.ttl_ms == 0 {
                    ttl_ms
                } else {
                    agent.ttl_ms
                });
                sh.stats.lease.store(agent.lease, Ordering::Relaxed);
                AgentStats::inc(&sh.stats.registrations);
                tracing::info!(lease = agent.lease, silo = %cfg.silo, name = %cfg.name, ?ttl, "lease registered");
                let keeper = LeaseKeeper::start(sh.client.clone(), agent.lease, ttl, sent + ttl);
                return Ok(Some(Held {
                    keeper,
                    abort: Arc::new(AtomicBool::new(false)),
                }));
            }
            Err(e) if !e.is_retryable() => {
                tracing::error!(error = %e, silo = %cfg.silo, "cannot register the agent");
                return Err(e);
            }
            Err(e) => {
                AgentStats::inc(&sh.stats.errors);
                failures = failures.saturating_add(1);
                let delay = backoff.delay(failures.min(8) + 2);
                tracing::warn!(error = %e, ?delay, "registration failed; retrying");
                tokio::select! {
                    _ = &mut *shutdown => return Ok(None),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}
