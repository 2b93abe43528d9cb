//! Fake agents of the `moves` workload: the real lease/claim/commit/release protocol of
//! `client/src/agent/`, without bytes. A "copy" is a short random sleep; a commit reports the
//! token and generation of the claim. A pausing agent sometimes stops renewing its lease while
//! holding claims, sleeps past the TTL, waits (briefly) until it sees a move claimed by
//! someone else, and then commits with its stale token: the server must refuse it.

use std::time::Duration;

use metad_client::{pb, Client, ClientError, ErrorCode, LeaseKeeper, ReadOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{definite, limited, mode_name, move_state, Proc, TTL_MS};
use crate::workload::Ctx;

/// Copy tasks and releases asked for per claim.
const MAX_TASKS: u32 = 4;
const MAX_RELEASES: u32 = 8;
/// Attempts of one write with the same seq while its outcome is unknown.
const SAME_SEQ_TRIES: usize = 3;

pub(super) struct Agent {
    ctx: Ctx,
    client: Client,
    name: String,
    silo: &'static str,
    pauses: bool,
    rng: StdRng,
    p: Proc,
    lease: Option<(u64, LeaseKeeper)>,
    /// Stop at this instant (the main phase's deadline, or the drain's).
    pub deadline: Instant,
}

impl Agent {
    pub async fn new(
        ctx: &Ctx,
        silo: &'static str,
        n: usize,
        pauses: bool,
        seed: u64,
    ) -> anyhow::Result<Agent> {
        Ok(Agent {
            ctx: ctx.clone(),
            client: ctx.client().await?,
            name: format!("{silo}-{n}"),
            silo,
            pauses,
            rng: StdRng::seed_from_u64(seed),
            p: Proc::new(&ctx.recorder),
            lease: None,
            deadline: ctx.deadline,
        })
    }

    fn limit(&self) -> Duration {
        self.ctx.op_timeout + Duration::from_secs(2)
    }

    fn over(&self, stop: &Option<watch::Receiver<bool>>) -> bool {
        Instant::now() >= self.deadline || stop.as_ref().is_some_and(|s| *s.borrow())
    }

    /// Works until the deadline (or `stop`), then revokes its lease.
    pub async fn run_until(mut self, stop: Option<watch::Receiver<bool>>) -> anyhow::Result<()> {
        while !self.over(&stop) {
            let lease = match &self.lease {
                Some((l, k)) if k.is_alive() => *l,
                _ => match self.register().await {
                    Some(l) => l,
                    None => {
                        self.nap(100..300).await;
                        continue;
                    }
                },
            };
            let Some(r) = self.claim(lease).await else {
                self.nap(50..200).await;
                continue;
            };
            if !r.releases.is_empty() {
                self.nap(5..50).await;
                let inos: Vec<u64> = r.releases.iter().map(|t| t.ino).collect();
                self.release(inos).await;
            }
            if r.tasks.is_empty() {
                if r.releases.is_empty() {
                    self.nap(80..200).await;
                }
                continue;
            }
            if self.pauses && self.rng.gen_bool(0.25) {
                self.pause_and_commit_stale(lease, &r.tasks, &stop).await;
                continue;
            }
            for t in &r.tasks {
                self.nap(50..500).await;
                self.commit(lease, t, false).await;
            }
        }
        if let Some((lease, keeper)) = self.lease.take() {
            keeper.stop().await;
            let _ = limited(Duration::from_secs(2), self.client.agent_revoke(lease)).await;
        }
        Ok(())
    }

    async fn nap(&mut self, ms: std::ops::Range<u64>) {
        tokio::time::sleep(Duration::from_millis(self.rng.gen_range(ms))).await;
    }

    /// Registers a new lease and starts keeping it alive.
    async fn register(&mut self) -> Option<u64> {
        if let Some((_, keeper)) = self.lease.take() {
            keeper.stop().await;
        }
        let mut value = json!({"agent": self.name, "silo": self.silo, "ttl_ms": TTL_MS});
        let op = self.p.invoke("register", value.clone());
        let sent = Instant::now();
        let r = limited(
            self.limit(),
            self.client.agent_register(self.silo, &self.name, TTL_MS),
        )
        .await;
        match r {
            Ok(r) => {
                let lease = r.agent.map(|a| a.lease).unwrap_or_default();
                value["lease"] = json!(lease);
                self.p.rec.ok(op, value);
                let ttl = Duration::from_millis(TTL_MS);
                let keeper = LeaseKeeper::start(self.client.clone(), lease, ttl, sent + ttl);
                self.lease = Some((lease, keeper));
                Some(lease)
            }
            Err(e) => {
                self.p.failed(op, &e);
                None
            }
        }
    }

    /// One claim (retried with the same seq while its outcome is unknown).
    async fn claim(&mut self, lease: u64) -> Option<pb::ClaimMovesResponse> {
        let seq = self.client.next_seq();
        for _ in 0..SAME_SEQ_TRIES {
            let mut value = json!({"agent": self.name, "lease": lease, "silo": self.silo});
            let op = self.p.invoke("claim", value.clone());
            let r = limited(
                self.limit(),
                self.client
                    .claim_moves_with_seq(seq, lease, self.silo, MAX_TASKS, MAX_RELEASES),
            )
            .await;
            match r {
                Ok(r) => {
                    value["tasks"] = json!(r.tasks.iter().map(task_json).collect::<Vec<_>>());
                    value["releases"] = json!(r
                        .releases
                        .iter()
                        .map(|t| json!({"ino": t.ino, "move": t.move_id, "path": t.path}))
                        .collect::<Vec<_>>());
                    self.p.rec.ok(op, value);
                    return Some(r);
                }
                Err(e) => {
                    self.p.failed(op, &e);
                    if lease_gone(&e) {
                        self.lease = None;
                    }
                    if definite(&e) {
                        return None;
                    }
                }
            }
        }
        None
    }

    /// Commits one copy (retried with the same seq while its outcome is unknown).
    async fn commit(&mut self, lease: u64, t: &pb::MoveTask, stale: bool) {
        let seq = self.client.next_seq();
        let completion = pb::MoveCompletion {
            move_id: t.move_id,
            token: t.token,
            copied_gen: t.content_gen,
            checksum: String::new(),
            bytes: t.size,
        };
        for _ in 0..SAME_SEQ_TRIES {
            let mut value = json!({"agent": self.name, "lease": lease, "move": t.move_id,
                "token": t.token, "gen": t.content_gen, "stale": stale});
            let op = self.p.invoke("commit", value.clone());
            let r = limited(
                self.limit(),
                self.client
                    .complete_moves_with_seq(seq, vec![completion.clone()]),
            )
            .await;
            match r {
                Ok(r) => {
                    let Some(res) = r.results.first() else {
                        self.p.rec.fail(op, "empty CompleteMoves answer");
                        return;
                    };
                    match pb::CompleteOutcome::try_from(res.outcome).unwrap_or_default() {
                        pb::CompleteOutcome::Committed => {
                            value["outcome"] = json!("committed");
                            value["state"] =
                                json!(res.r#move.as_ref().map(|m| move_state(m.state)));
                            self.p.rec.ok(op, value);
                        }
                        pb::CompleteOutcome::Recopy => self.p.rec.fail(op, "recopy"),
                        _ => self
                            .p
                            .rec
                            .fail(op, format!("refused: {}: {}", res.error_code, res.error)),
                    }
                    return;
                }
                Err(e) => {
                    self.p.failed(op, &e);
                    if definite(&e) {
                        return;
                    }
                }
            }
        }
    }

    /// The agent of this silo deleted these released copies.
    async fn release(&mut self, inos: Vec<u64>) {
        let seq = self.client.next_seq();
        for _ in 0..SAME_SEQ_TRIES {
            let mut value = json!({"agent": self.name, "silo": self.silo, "inos": inos});
            let op = self.p.invoke("release", value.clone());
            let r = limited(
                self.limit(),
                self.client
                    .release_done_with_seq(seq, self.silo, inos.clone()),
            )
            .await;
            match r {
                Ok(r) => {
                    value["released"] = json!(r.released);
                    value["not_releasing"] = json!(r.not_releasing);
                    self.p.rec.ok(op, value);
                    return;
                }
                Err(e) => {
                    self.p.failed(op, &e);
                    if definite(&e) {
                        return;
                    }
                }
            }
        }
    }

    /// Stops renewing the lease and sleeps for its TTL; then, until well past the TTL,
    /// watches the claimed moves and commits each with the now-stale token as soon as it is
    /// seen claimed by another agent (the most dangerous moment), or finished; whatever is
    /// left is committed at the end.
    async fn pause_and_commit_stale(
        &mut self,
        lease: u64,
        tasks: &[pb::MoveTask],
        stop: &Option<watch::Receiver<bool>>,
    ) {
        let ms = TTL_MS + self.rng.gen_range(1000..3000);
        let ids: Vec<u64> = tasks.iter().map(|t| t.move_id).collect();
        self.p.rec.observe(
            self.p.id,
            "pause",
            json!({"agent": self.name, "lease": lease, "ms": ms, "moves": ids}),
            None,
        );
        let until = Instant::now() + Duration::from_millis(ms);
        if let Some((_, keeper)) = self.lease.take() {
            keeper.stop().await;
        }
        tokio::time::sleep(Duration::from_millis(TTL_MS)).await;
        let mut left: Vec<&pb::MoveTask> = tasks.iter().collect();
        while !left.is_empty() && Instant::now() < until && !self.over(stop) {
            let mut still = Vec::new();
            for t in left {
                let m = limited(
                    self.limit(),
                    self.client.get_move(t.move_id, ReadOptions::serializable()),
                )
                .await;
                let seen = m.ok().and_then(|r| r.r#move);
                match seen.map(|m| (move_state(m.state), m.token)) {
                    Some(("claimed" | "copying", tok)) if tok != t.token => {
                        self.commit(lease, t, true).await
                    }
                    Some(("pending" | "claimed" | "copying", _)) | None => still.push(t),
                    Some(_) => self.commit(lease, t, true).await,
                }
            }
            left = still;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for t in left {
            self.commit(lease, t, true).await;
        }
    }
}

fn lease_gone(e: &ClientError) -> bool {
    matches!(
        e.code(),
        ErrorCode::NotFound | ErrorCode::FailedPrecondition
    )
}

fn task_json(t: &pb::MoveTask) -> Value {
    json!({"move": t.move_id, "token": t.token, "gen": t.content_gen, "path": t.path,
        "mode": mode_name(pb::MoveMode::try_from(t.mode).unwrap_or_default()),
        "source": t.source_silo})
}
