//! Nemeses: the faults a run injects, and the schedule that injects them. A schedule loop
//! alternates quiet periods and fault windows until the deadline; in each window it starts
//! one fault (sometimes two at once) chosen from those enabled, then heals it. Every window
//! is recorded as a [`FaultRecord`] for the report's shaded plots. At the end everything is
//! healed: network restored, nodes resumed and restarted, clocks reset, latency removed,
//! removed members re-added. Must not look at the workload's history.

mod member;

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::control::Cluster;

/// The kinds of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Fault {
    /// Network partitions: isolate a node or the leader, majority/minority, bridge, ring.
    Partition,
    /// SIGKILL a random node or the leader, then restart it.
    Kill,
    /// SIGSTOP a random node or the leader, then SIGCONT.
    Pause,
    /// Skew one node's wall clock by up to ±30 s (libfaketime).
    Clock,
    /// Remove a node from the membership, wipe it, re-add it as a learner and promote it.
    Member,
    /// WAN latency and jitter on every peer link (userspace proxy).
    Latency,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::Partition => "partition",
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::Clock => "clock",
            Fault::Member => "member",
            Fault::Latency => "latency",
        }
    }

    pub const ALL: [Fault; 6] = [
        Fault::Partition,
        Fault::Kill,
        Fault::Pause,
        Fault::Clock,
        Fault::Member,
        Fault::Latency,
    ];
}

/// One fault window, in run time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRecord {
    pub kind: String,
    pub detail: String,
    pub start_ns: u64,
    pub end_ns: u64,
    /// Errors met while injecting or healing (the run goes on).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// Schedule settings.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub faults: Vec<Fault>,
    /// Quiet time between fault windows.
    pub quiet: Duration,
    /// Length of a fault window.
    pub window: Duration,
    /// One-way WAN delay and jitter for the latency fault.
    pub latency: (Duration, Duration),
    pub seed: u64,
}

/// What is currently broken, so it can be healed.
struct Active {
    kind: Fault,
    detail: String,
    killed: Vec<usize>,
    paused: Vec<usize>,
    skewed: Vec<usize>,
    removed: Option<usize>,
    errors: Vec<String>,
}

impl Active {
    fn new(kind: Fault) -> Self {
        Active {
            kind,
            detail: String::new(),
            killed: vec![],
            paused: vec![],
            skewed: vec![],
            removed: None,
            errors: vec![],
        }
    }
}

/// Runs the schedule until `deadline`, then heals everything. Returns the fault windows.
pub async fn run(
    cluster: Arc<Mutex<Cluster>>,
    schedule: Schedule,
    start: std::time::Instant,
    deadline: Instant,
) -> Vec<FaultRecord> {
    let mut rng = StdRng::seed_from_u64(schedule.seed);
    let mut records = Vec::new();
    if schedule.faults.is_empty() {
        return records;
    }
    let now_ns = || start.elapsed().as_nanos() as u64;
    loop {
        if sleep_until_or(deadline, schedule.quiet).await {
            break;
        }
        // Mostly one fault; sometimes two different ones together.
        let mut kinds = vec![*schedule.faults.choose(&mut rng).unwrap_or(&Fault::Kill)];
        if schedule.faults.len() > 1 && rng.gen_bool(0.3) {
            let other: Vec<Fault> = schedule
                .faults
                .iter()
                .copied()
                .filter(|f| !kinds.contains(f))
                .collect();
            if let Some(f) = other.choose(&mut rng) {
                kinds.push(*f);
            }
        }
        let t0 = now_ns();
        let mut active = Vec::new();
        for kind in kinds {
            let mut a = Active::new(kind);
            inject(&cluster, &schedule, &mut rng, &mut a).await;
            tracing::info!(fault = kind.name(), detail = %a.detail, "nemesis start");
            active.push(a);
        }
        let stopped_early = sleep_until_or(deadline, schedule.window).await;
        for mut a in active {
            heal(&cluster, &mut a).await;
            tracing::info!(fault = a.kind.name(), "nemesis stop");
            records.push(FaultRecord {
                kind: a.kind.name().to_string(),
                detail: a.detail,
                start_ns: t0,
                end_ns: now_ns(),
                errors: a.errors,
            });
        }
        if stopped_early {
            break;
        }
    }
    heal_all(&cluster).await;
    records
}

/// Sleeps `d`, or until `deadline`; true if the deadline came first.
async fn sleep_until_or(deadline: Instant, d: Duration) -> bool {
    let until = Instant::now() + d;
    if until >= deadline {
        tokio::time::sleep_until(deadline).await;
        true
    } else {
        tokio::time::sleep_until(until).await;
        false
    }
}

fn pick(rng: &mut StdRng, n: usize) -> usize {
    rng.gen_range(1..=n)
}

async fn target(
    cluster: &Arc<Mutex<Cluster>>,
    rng: &mut StdRng,
    n: usize,
) -> (usize, &'static str) {
    if rng.gen_bool(0.5) {
        if let Some(l) = cluster.lock().await.leader().await {
            return (l, "leader");
        }
    }
    (pick(rng, n), "node")
}

async fn inject(cluster: &Arc<Mutex<Cluster>>, s: &Schedule, rng: &mut StdRng, a: &mut Active) {
    let n = cluster.lock().await.len();
    match a.kind {
        Fault::Partition => {
            let (cuts, what) = partition_plan(cluster, rng, n).await;
            a.detail = format!("{what}: cut {cuts:?}");
            let c = cluster.lock().await;
            for (x, y) in cuts {
                if let Err(e) = c.cut(x, y) {
                    a.errors.push(e.to_string());
                }
            }
        }
        Fault::Kill => {
            let (id, who) = target(cluster, rng, n).await;
            cluster.lock().await.kill(id);
            a.killed.push(id);
            a.detail = format!("SIGKILL n{id} ({who})");
        }
        Fault::Pause => {
            let (id, who) = target(cluster, rng, n).await;
            cluster.lock().await.pause(id);
            a.paused.push(id);
            a.detail = format!("SIGSTOP n{id} ({who})");
        }
        Fault::Clock => {
            let id = pick(rng, n);
            let secs: i64 = if rng.gen_bool(0.5) { 1 } else { -1 } * rng.gen_range(1..=30);
            match cluster.lock().await.skew_clock(id, secs) {
                Ok(()) => a.skewed.push(id),
                Err(e) => a.errors.push(e.to_string()),
            }
            a.detail = format!("clock of n{id} {secs:+} s");
        }
        Fault::Member => {
            let (id, who) = target(cluster, rng, n).await;
            a.detail = format!("remove n{id} ({who}), wipe, re-add as learner, promote");
            match member::remove(cluster, id).await {
                Ok(()) => a.removed = Some(id),
                Err(e) => a.errors.push(format!("remove n{id}: {e:#}")),
            }
        }
        Fault::Latency => {
            let (d, j) = s.latency;
            cluster.lock().await.set_latency(d, j);
            a.detail = format!("peer latency {d:?} ± {j:?}");
        }
    }
}

/// Which links to cut, and a name for the plan.
async fn partition_plan(
    cluster: &Arc<Mutex<Cluster>>,
    rng: &mut StdRng,
    n: usize,
) -> (Vec<(usize, usize)>, String) {
    let ids: Vec<usize> = (1..=n).collect();
    let split = |side: &[usize]| -> Vec<(usize, usize)> {
        let mut cuts = Vec::new();
        for &a in side {
            for &b in &ids {
                if !side.contains(&b) {
                    cuts.push((a, b));
                }
            }
        }
        cuts
    };
    match rng.gen_range(0..5) {
        0 => {
            let id = pick(rng, n);
            (split(&[id]), format!("isolate n{id}"))
        }
        1 => {
            let leader = cluster.lock().await.leader().await.unwrap_or(1);
            (split(&[leader]), format!("isolate leader n{leader}"))
        }
        2 => {
            let mut shuffled = ids.clone();
            shuffled.shuffle(rng);
            let minority: Vec<usize> = shuffled[..(n - 1) / 2].to_vec();
            let cuts = split(&minority);
            (cuts, format!("majority/minority, minority {minority:?}"))
        }
        3 => {
            // Two halves that only the bridge node sees both of.
            let mut shuffled = ids.clone();
            shuffled.shuffle(rng);
            let bridge = shuffled[0];
            let half = (n - 1) / 2;
            let left: Vec<usize> = shuffled[1..1 + half].to_vec();
            let right: Vec<usize> = shuffled[1 + half..].to_vec();
            let mut cuts = Vec::new();
            for &a in &left {
                for &b in &right {
                    cuts.push((a, b));
                }
            }
            (
                cuts,
                format!("bridge n{bridge} between {left:?} and {right:?}"),
            )
        }
        _ => {
            // Ring: each node sees only its two neighbours.
            let mut shuffled = ids.clone();
            shuffled.shuffle(rng);
            let mut cuts = Vec::new();
            for i in 0..n {
                for j in i + 1..n {
                    let d = j - i;
                    if d != 1 && d != n - 1 {
                        cuts.push((shuffled[i], shuffled[j]));
                    }
                }
            }
            (cuts, format!("ring {shuffled:?}"))
        }
    }
}

async fn heal(cluster: &Arc<Mutex<Cluster>>, a: &mut Active) {
    match a.kind {
        Fault::Partition => {
            if let Err(e) = cluster.lock().await.heal_network() {
                a.errors.push(e.to_string());
            }
        }
        Fault::Kill => {
            let mut c = cluster.lock().await;
            for id in a.killed.drain(..) {
                if let Err(e) = c.start_node(id) {
                    a.errors.push(format!("restart n{id}: {e:#}"));
                }
            }
        }
        Fault::Pause => {
            let mut c = cluster.lock().await;
            for id in a.paused.drain(..) {
                c.resume(id);
            }
        }
        Fault::Clock => {
            let c = cluster.lock().await;
            for id in a.skewed.drain(..) {
                if let Err(e) = c.skew_clock(id, 0) {
                    a.errors.push(e.to_string());
                }
            }
        }
        Fault::Member => {
            if let Some(id) = a.removed.take() {
                if let Err(e) = member::readd(cluster, id).await {
                    a.errors.push(format!("re-add n{id}: {e:#}"));
                }
            }
        }
        Fault::Latency => cluster
            .lock()
            .await
            .set_latency(Duration::ZERO, Duration::ZERO),
    }
}

/// Restores everything: network, paused and stopped nodes, clocks, latency, and any node
/// left out of the membership.
pub async fn heal_all(cluster: &Arc<Mutex<Cluster>>) {
    let missing = member::missing_members(cluster).await;
    let mut c = cluster.lock().await;
    let _ = c.heal_network();
    c.set_latency(Duration::ZERO, Duration::ZERO);
    for id in 1..=c.len() {
        c.resume(id);
        if !c.is_running(id) {
            if let Err(e) = c.start_node(id) {
                tracing::warn!("restart n{id}: {e:#}");
            }
        }
        let _ = c.skew_clock(id, 0);
    }
    drop(c);
    for id in missing {
        if let Err(e) = member::readd(cluster, id).await {
            tracing::warn!("re-add n{id}: {e:#}");
        }
    }
}
