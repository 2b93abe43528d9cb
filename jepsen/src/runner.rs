//! One run: start the cluster, run the workload while the nemesis schedule injects faults,
//! heal, run the workload's final phase, stop the nodes, check the history and write the
//! results folder. Also re-checking a saved results folder (`check DIR`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Mutex;

use crate::check::Validity;
use crate::control::{Cluster, ClusterOpts};
use crate::history::{History, Recorder};
use crate::nemesis::{self, Fault, FaultRecord, Schedule};
use crate::report::{self, RunInfo, Verdict};
use crate::workload::{Ctx, Workload};

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct RunOpts {
    pub workload: Workload,
    pub faults: Vec<Fault>,
    pub time_limit: Duration,
    pub nodes: usize,
    pub concurrency: usize,
    pub local: bool,
    pub metad_bin: PathBuf,
    /// Parent folder; the run gets `<results>/<timestamp>-<workload>`.
    pub results: PathBuf,
    pub mutations: Option<String>,
    pub seed: u64,
    pub op_timeout: Duration,
    pub quiet: Duration,
    pub window: Duration,
    pub latency: (Duration, Duration),
    /// Time allowed for the final phase.
    pub finish_timeout: Duration,
}

fn timestamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // UTC, yyyymmddThhmmss, without a date crate.
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The outcome of a run.
pub struct RunOutcome {
    pub dir: PathBuf,
    pub verdict: Verdict,
}

/// Runs one test and writes its results folder.
pub async fn run(opts: RunOpts) -> anyhow::Result<RunOutcome> {
    let dir = opts
        .results
        .join(format!("{}-{}", timestamp(), opts.workload.name()));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let info = RunInfo {
        workload: opts.workload.name().to_string(),
        faults: opts.faults.iter().map(|f| f.name().to_string()).collect(),
        nodes: opts.nodes,
        concurrency: opts.concurrency,
        time_limit_s: opts.time_limit.as_secs(),
        seed: opts.seed,
        local: opts.local,
        mutations: opts.mutations.clone(),
        metad_bin: opts.metad_bin.display().to_string(),
        started_at: timestamp(),
    };
    report::write_json(&dir.join("run.json"), &info)?;
    eprintln!("metad-jepsen: {} → {}", opts.workload.name(), dir.display());

    let mut extra_args = opts.workload.node_args();
    extra_args.push("--watch-history-revisions=10000000".into());
    let cluster = Cluster::start(ClusterOpts {
        nodes: opts.nodes,
        metad_bin: opts.metad_bin.clone(),
        dir: dir.clone(),
        local: opts.local,
        extra_args,
        mutations: opts.mutations.clone(),
        faketime: opts.faults.contains(&Fault::Clock),
        // The latency nemesis puts the peer round trip at 100 ± 50 ms: with a 50 ms heartbeat
        // every AppendEntries would time out and nothing could commit (see jepsen/README.md).
        heartbeat_ms: if opts.faults.contains(&Fault::Latency) {
            250
        } else {
            50
        },
    })
    .await?;
    let endpoints = cluster.endpoints();
    let cluster = Arc::new(Mutex::new(cluster));

    let start = std::time::Instant::now();
    let recorder = Recorder::starting_at(start);
    let deadline = tokio::time::Instant::now() + opts.time_limit;
    let ctx = Ctx {
        endpoints,
        recorder: recorder.clone(),
        concurrency: opts.concurrency,
        deadline,
        seed: opts.seed,
        op_timeout: opts.op_timeout,
        dir: dir.clone(),
    };
    let schedule = Schedule {
        faults: opts.faults.clone(),
        quiet: opts.quiet,
        window: opts.window,
        latency: opts.latency,
        seed: opts.seed ^ 0x6e656d65,
    };
    let nemesis_task = tokio::spawn(nemesis::run(
        Arc::clone(&cluster),
        schedule,
        start,
        deadline,
    ));
    // The workload may overrun its deadline by at most one op timeout per worker; give it
    // a bound so a stuck client cannot hang the run.
    let hard_stop = opts.time_limit + opts.op_timeout * 3 + Duration::from_secs(30);
    let workload_result = tokio::time::timeout(hard_stop, opts.workload.run(ctx.clone())).await;
    let faults: Vec<FaultRecord> = nemesis_task.await.unwrap_or_default();
    // Heal again in case the workload ended early, then wait for the cluster.
    nemesis::heal_all(&cluster).await;
    let mut harness_errors = Vec::new();
    match workload_result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => harness_errors.push(format!("workload: {e:#}")),
        Err(_) => harness_errors.push(format!("workload did not stop within {hard_stop:?}")),
    }
    if let Err(e) = cluster
        .lock()
        .await
        .wait_for_leader(Duration::from_secs(60))
        .await
    {
        harness_errors.push(format!("after healing: {e:#}"));
    }
    let finish_ctx = Ctx {
        deadline: tokio::time::Instant::now() + opts.finish_timeout,
        ..ctx
    };
    match tokio::time::timeout(
        opts.finish_timeout + Duration::from_secs(10),
        opts.workload.finish(finish_ctx),
    )
    .await
    {
        Ok(Ok(())) => {}
        Ok(Err(e)) => harness_errors.push(format!("final phase: {e:#}")),
        Err(_) => harness_errors.push("final phase timed out".into()),
    }
    cluster.lock().await.stop_all();

    let history = recorder.history();
    history.save(&dir.join("history.jsonl"))?;
    report::write_json(&dir.join("faults.json"), &faults)?;
    if !harness_errors.is_empty() {
        report::write_json(&dir.join("harness-errors.json"), &harness_errors)?;
        for e in &harness_errors {
            eprintln!("metad-jepsen: {e}");
        }
    }
    let verdict = judge(&dir, &info, &history, &faults, opts.workload)?;
    Ok(RunOutcome { dir, verdict })
}

/// Checks a history and writes the verdict, plots and summary.
fn judge(
    dir: &Path,
    info: &RunInfo,
    history: &History,
    faults: &[FaultRecord],
    workload: Workload,
) -> anyhow::Result<Verdict> {
    let mut checks = workload.check(history);
    checks.push(crate::check::nodes::check(&node_logs(&dir.join("logs"))?));
    let verdict = Verdict::new(info, history, faults, checks);
    report::write_json(&dir.join("verdict.json"), &verdict)?;
    if let Err(e) = report::plot::write_plots(dir, history, faults) {
        eprintln!("metad-jepsen: plots: {e:#}");
    }
    report::write_summary(dir, info, &verdict, faults)?;
    Ok(verdict)
}

/// Every node's log in `logs` as (file name, text); none if the folder is missing.
fn node_logs(logs: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let Ok(entries) = std::fs::read_dir(logs) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for e in entries {
        let path = e?.path();
        let bytes = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        out.push((name, String::from_utf8_lossy(&bytes).into_owned()));
    }
    out.sort();
    Ok(out)
}

/// Re-checks a saved results folder (rewrites its verdict, plots and summary).
pub fn recheck(dir: &Path) -> anyhow::Result<Verdict> {
    let info: RunInfo = report::read_json(&dir.join("run.json"))?;
    let workload = Workload::parse(&info.workload)
        .with_context(|| format!("unknown workload {:?} in run.json", info.workload))?;
    let history = History::load(&dir.join("history.jsonl"))?;
    let faults: Vec<FaultRecord> = report::read_json(&dir.join("faults.json")).unwrap_or_default();
    judge(dir, &info, &history, &faults, workload)
}

/// A one-line human summary of a verdict.
pub fn describe(v: &Verdict) -> String {
    let mut by_kind = std::collections::BTreeMap::<String, usize>::new();
    for c in &v.checks {
        for a in &c.anomalies {
            *by_kind
                .entry(format!("{}:{}", c.checker, a.kind))
                .or_default() += 1;
        }
    }
    let anomalies: Vec<String> = by_kind.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
    format!(
        "{:<11} {:?}: {} ok, {} fail, {} info, {} faults{}",
        v.workload,
        v.valid,
        v.counts.ok,
        v.counts.fail,
        v.counts.info,
        v.faults_injected,
        if anomalies.is_empty() {
            String::new()
        } else {
            format!("; anomalies {}", anomalies.join(", "))
        }
    )
}

pub fn is_valid(v: &Verdict) -> bool {
    v.valid == Validity::Valid
}
