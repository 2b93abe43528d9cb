//! The `moves` workload: drives the move protocol (DESIGN §6, docs/design.md §4c) with fake
//! agents that never copy bytes, while readers locate files, and records everything for
//! [`crate::check::moves`] (invariants 3 and 4 of DESIGN §5).
//!
//! Setup registers three sites with one silo each (`mv-a`, `mv-b`, `mv-c`) and imports
//! [`FILES`] files `/jepsen-moves/f<i>` with a valid instance on `mv-a`. During the main phase
//! a driver creates copy and mode-move moves to random silos; two fake agents per silo
//! ([`agent`]) register short leases, claim, "copy" (sleep), commit with the token and
//! generation they were given and report releases; one agent per silo sometimes pauses past
//! its lease while holding claims and then commits with its stale token (after waiting to
//! see the move claimed by someone else, when it can). Readers locate random files on random
//! nodes (linearizable). `finish` ([`finals`]) runs non-pausing agents until the moves have
//! drained (or a timeout), then records a linearizable locate of every file, the list of
//! every move and the instances of every silo.
//!
//! History schema (`f`: invocation `value` → what the `ok` completion adds):
//! - `import`: `{silo, paths}` → same (setup; retried until ok).
//! - `create-move`: `{paths, target, mode: "copy"|"move"}` → `moves: [{id}]`,
//!   `skipped: n`. Refusals are `fail`.
//! - `register`: `{agent, silo, ttl_ms}` → `lease`.
//! - `claim`: `{agent, lease, silo}` → `tasks: [{move, token, gen, path, mode, source}]`,
//!   `releases: [{ino, move, path}]`. A lease that is gone is `fail`.
//! - `commit`: `{agent, lease, move, token, gen, stale}` (`stale`: sent after a pause past
//!   the lease) → `outcome: "committed"`, `state`. `fail` (error `refused: <code>: ...`
//!   or `recopy`) when the server answered without committing.
//! - `release`: `{agent, silo, inos}` → `released`, `not_releasing`.
//! - `pause` (observation, `ok` without invocation): `{agent, lease, ms, moves}`.
//! - `locate`: `{path, final}` → `found`, `gen`, `instances: [{silo, state}]` (a file that
//!   does not exist is `ok` with `found: false`).
//! - `final-moves`: `{final: true}` → `moves: [{id, path, target, mode, state, token}]`
//!   (every page of `ListMoves`, linearizable, after the cluster is healed).
//! - `final-instances`: `{silo, final: true, round}` → `instances: [{path, state, gen}]`
//!   (round 0 just before `final-moves`, round 1 just after, with every agent stopped).
//!
//! Writes whose outcome is unknown (ambiguous, timeout, internal) are `info`; the worker goes
//! on under a fresh process, and retries a claim or commit with the same `seq` so that the
//! retry returns the first outcome.

mod agent;
mod finals;

use std::collections::BTreeMap;
use std::time::Duration;

use metad_client::SiloSpec;
use metad_client::{pb, Client, ClientError, ErrorCode, MoveSpec, ReadOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::check::CheckResult;
use crate::history::{History, Pending, Recorder};
use crate::workload::Ctx;

/// Files imported at setup.
pub const FILES: usize = 40;
/// Directory of the files.
const DIR: &str = "/jepsen-moves";
/// (silo, site) of the workload.
const SILOS: [(&str, &str); 3] = [
    ("mv-a", "mv-site-a"),
    ("mv-b", "mv-site-b"),
    ("mv-c", "mv-site-c"),
];
/// Agent lease TTL.
const TTL_MS: u64 = 2000;
/// How long `finish` waits for the moves to drain.
const DRAIN: Duration = Duration::from_secs(45);

/// Extra arguments every metad node needs for this workload.
pub fn node_args() -> Vec<String> {
    Vec::new()
}

fn file(i: usize) -> String {
    format!("{DIR}/f{i}")
}

pub(crate) fn files() -> Vec<String> {
    (0..FILES).map(file).collect()
}

/// The main phase: invoke operations until `ctx.deadline`.
pub async fn run(ctx: Ctx) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    setup(&ctx, &client).await?;
    let mut tasks = tokio::task::JoinSet::new();
    let mut seed = ctx.seed;
    let mut next_seed = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        seed
    };
    tasks.spawn(driver(ctx.clone(), ctx.client().await?, next_seed()));
    for (silo, _) in SILOS {
        for n in 0..2 {
            let a = agent::Agent::new(&ctx, silo, n, n == 0, next_seed()).await?;
            tasks.spawn(async move { a.run_until(None).await });
        }
    }
    for _ in 0..ctx.concurrency.clamp(2, 8) {
        tasks.spawn(reader(ctx.clone(), ctx.client().await?, next_seed()));
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}

/// After healing: drain the moves, then a final locate of every file and list of every move.
pub async fn finish(ctx: Ctx) -> anyhow::Result<()> {
    finals::finish(ctx).await
}

/// The checkers that judge this workload's history.
pub fn check(history: &History) -> Vec<CheckResult> {
    vec![crate::check::moves::check(history)]
}

/// How a failed write is recorded: `fail` only when it certainly did not happen.
pub(crate) fn definite(e: &ClientError) -> bool {
    !matches!(
        e.code(),
        ErrorCode::Ambiguous | ErrorCode::Timeout | ErrorCode::Internal | ErrorCode::ShuttingDown
    )
}

/// Runs `fut` with a hard limit (on top of the client's own timeouts).
pub(crate) async fn limited<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(ClientError::Ambiguous {
            message: format!("no answer within {limit:?}"),
            seq: None,
        }),
    }
}

/// A worker's identity in the history.
pub(crate) struct Proc {
    pub rec: Recorder,
    pub id: u64,
}

impl Proc {
    pub fn new(rec: &Recorder) -> Self {
        Proc {
            rec: rec.clone(),
            id: rec.new_process(),
        }
    }

    pub fn invoke(&self, f: &str, value: Value) -> Pending {
        self.rec.invoke(self.id, f, value, None)
    }

    /// Completes a write that failed: `fail` if definite, else `info` (new process).
    pub fn failed(&mut self, p: Pending, e: &ClientError) {
        if definite(e) {
            self.rec.fail(p, e);
        } else {
            self.id = self.rec.info(p, e);
        }
    }
}

async fn setup(ctx: &Ctx, c: &Client) -> anyhow::Result<()> {
    let limit = ctx.op_timeout + Duration::from_secs(2);
    let give_up = tokio::time::Instant::now() + Duration::from_secs(60);
    let retry = |r: Result<(), ClientError>| -> anyhow::Result<bool> {
        match r {
            Ok(()) => Ok(true),
            Err(e) if e.code() == ErrorCode::AlreadyExists => Ok(true),
            Err(e) if tokio::time::Instant::now() >= give_up => {
                anyhow::bail!("moves setup: {e}")
            }
            Err(_) => Ok(false),
        }
    };
    for (silo, site) in SILOS {
        while !retry(
            limited(limit, c.register_site(site, "", "", BTreeMap::new()))
                .await
                .map(|_| ()),
        )? {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let spec = SiloSpec {
            name: silo.into(),
            site: site.into(),
            kind: pb::SiloKind::Posix,
            tier: pb::SiloTier::Hot,
            capacity_bytes: 1 << 40,
            cost_per_gib_month: 0.0,
            root: format!("/nonexistent/metad-jepsen/{silo}"),
            labels: BTreeMap::new(),
        };
        while !retry(
            limited(limit, c.register_silo(spec.clone()))
                .await
                .map(|_| ()),
        )? {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let entries: Vec<pb::ImportEntry> = files()
        .into_iter()
        .map(|path| pb::ImportEntry {
            path,
            size: 4096,
            mtime_ms: 0,
            checksum: String::new(),
            location: String::new(),
        })
        .collect();
    let mut p = Proc::new(&ctx.recorder);
    let value = json!({"silo": SILOS[0].0, "paths": files()});
    loop {
        let op = p.invoke("import", value.clone());
        match limited(limit, c.import_files(SILOS[0].0, entries.clone())).await {
            Ok(_) => {
                ctx.recorder.ok(op, value);
                return Ok(());
            }
            Err(e) => {
                p.failed(op, &e);
                if tokio::time::Instant::now() >= give_up {
                    anyhow::bail!("moves setup: import: {e}");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Creates moves of random files to random silos until the deadline.
async fn driver(ctx: Ctx, c: Client, seed: u64) -> anyhow::Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut p = Proc::new(&ctx.recorder);
    let limit = ctx.op_timeout + Duration::from_secs(2);
    while !ctx.done() {
        let n = rng.gen_range(1..=3);
        let mut paths: Vec<String> = (0..n).map(|_| file(rng.gen_range(0..FILES))).collect();
        paths.sort();
        paths.dedup();
        let target = SILOS[rng.gen_range(0..SILOS.len())].0;
        let mode = if rng.gen_bool(0.6) {
            pb::MoveMode::Move
        } else {
            pb::MoveMode::Copy
        };
        let mut value = json!({"paths": paths, "target": target, "mode": mode_name(mode)});
        let spec = MoveSpec {
            mode,
            owner: "jepsen".into(),
            max_attempts: 100,
            ..Default::default()
        };
        let op = p.invoke("create-move", value.clone());
        match limited(limit, c.create_move(paths.clone(), target, spec)).await {
            Ok(r) => {
                let moves: Vec<Value> = r.move_ids.iter().map(|id| json!({"id": id})).collect();
                value["moves"] = json!(moves);
                value["skipped"] = json!(r.skipped.len());
                ctx.recorder.ok(op, value);
            }
            Err(e) => p.failed(op, &e),
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(50..250))).await;
    }
    Ok(())
}

/// Locates random files on random nodes (linearizable) until the deadline.
async fn reader(ctx: Ctx, c: Client, seed: u64) -> anyhow::Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut p = Proc::new(&ctx.recorder);
    while !ctx.done() {
        let node = rng.gen_range(0..ctx.endpoints.len().max(1));
        let path = file(rng.gen_range(0..FILES));
        locate(&ctx, &c, &mut p, &path, Some(node), false).await;
        tokio::time::sleep(Duration::from_millis(rng.gen_range(10..60))).await;
    }
    Ok(())
}

/// One recorded locate of `path` (on endpoint `node`, or following the leader). True if ok.
pub(crate) async fn locate(
    ctx: &Ctx,
    c: &Client,
    p: &mut Proc,
    path: &str,
    node: Option<usize>,
    fin: bool,
) -> bool {
    let pinned = match node.map(|i| c.on_endpoint(i)) {
        Some(Ok(pc)) => pc,
        _ => c.clone(),
    };
    let mut value = json!({"path": path, "final": fin});
    let op = ctx
        .recorder
        .invoke(p.id, "locate", value.clone(), node.map(|i| i as u32 + 1));
    let limit = ctx.op_timeout + Duration::from_secs(2);
    let r = limited(
        limit,
        pinned.locate(path, SILOS[0].1, ReadOptions::linearizable()),
    )
    .await;
    match r {
        Ok(r) => {
            let instances: Vec<Value> = r
                .instances
                .iter()
                .filter_map(|li| li.instance.as_ref())
                .map(|i| json!({"silo": i.silo, "state": instance_state(i.state), "gen": i.content_gen}))
                .collect();
            value["found"] = json!(true);
            value["gen"] = json!(r.content_gen);
            value["instances"] = json!(instances);
            ctx.recorder.ok(op, value);
            true
        }
        Err(e) if e.code() == ErrorCode::NotFound => {
            value["found"] = json!(false);
            value["instances"] = json!([]);
            ctx.recorder.ok(op, value);
            true
        }
        // A read changes nothing: a failed one is `fail` whatever the reason.
        Err(e) => {
            ctx.recorder.fail(op, e);
            false
        }
    }
}

pub(crate) fn mode_name(m: pb::MoveMode) -> &'static str {
    match m {
        pb::MoveMode::Copy => "copy",
        pb::MoveMode::Move => "move",
        pb::MoveMode::Unspecified => "unspecified",
    }
}

pub(crate) fn move_state(s: i32) -> &'static str {
    match pb::MoveState::try_from(s).unwrap_or_default() {
        pb::MoveState::Pending => "pending",
        pb::MoveState::Claimed => "claimed",
        pb::MoveState::Copying => "copying",
        pb::MoveState::Releasing => "releasing",
        pb::MoveState::Done => "done",
        pb::MoveState::Failed => "failed",
        pb::MoveState::Cancelled => "cancelled",
        pb::MoveState::Unspecified => "unspecified",
    }
}

pub(crate) fn instance_state(s: i32) -> &'static str {
    match pb::InstanceState::try_from(s).unwrap_or_default() {
        pb::InstanceState::Valid => "valid",
        pb::InstanceState::Filling => "filling",
        pb::InstanceState::Stale => "stale",
        pb::InstanceState::Releasing => "releasing",
        pb::InstanceState::Unspecified => "unspecified",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the workload against a running cluster whose client endpoints are in
    /// `METAD_JEPSEN_ENDPOINTS` (comma-separated), for `METAD_JEPSEN_SECS` (default 20) s,
    /// and checks the history; writes it to `METAD_JEPSEN_OUT` if set. For manual runs
    /// before the harness exists: `cargo test -p metad-jepsen --lib moves_against_a_cluster
    /// -- --ignored --nocapture`. With `METAD_JEPSEN_HISTORY` set, only checks that file.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    #[ignore = "needs a running cluster"]
    async fn moves_against_a_cluster() {
        if let Ok(path) = std::env::var("METAD_JEPSEN_HISTORY") {
            let h = History::load(std::path::Path::new(&path)).expect("load");
            let results = check(&h);
            for r in &results {
                println!("{}", serde_json::to_string_pretty(r).expect("json"));
            }
            assert!(results.iter().all(CheckResult::is_valid));
            return;
        }
        let endpoints: Vec<String> = std::env::var("METAD_JEPSEN_ENDPOINTS")
            .expect("METAD_JEPSEN_ENDPOINTS")
            .split(',')
            .map(str::to_string)
            .collect();
        let secs: u64 = std::env::var("METAD_JEPSEN_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20);
        let ctx = Ctx {
            endpoints,
            recorder: Recorder::new(),
            concurrency: 4,
            deadline: tokio::time::Instant::now() + Duration::from_secs(secs),
            seed: 42,
            op_timeout: Duration::from_secs(5),
            dir: std::env::temp_dir(),
        };
        run(ctx.clone()).await.expect("run");
        finish(ctx.clone()).await.expect("finish");
        let h = ctx.recorder.history();
        if let Ok(out) = std::env::var("METAD_JEPSEN_OUT") {
            h.save(std::path::Path::new(&out)).expect("save");
        }
        let results = check(&h);
        for r in &results {
            println!("{}", serde_json::to_string_pretty(r).expect("json"));
        }
        assert!(results.iter().all(CheckResult::is_valid));
    }
}
