//! Scale: `load` bulk-loads N files (ImportFiles batches of 1000 = files with an instance each,
//! then Txn batches of 128 SetTags = two tags per file) into a running cluster; `scale` starts
//! its own 3-node cluster of real processes, loads it, benchmarks create/stat/kv-get against the
//! loaded namespace and measures node RSS, disk and snapshot size, restart-to-serving time and
//! how long a new learner takes to catch up by snapshot.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use metad_client::{Client, ClientConfig};
use metad_testkit::procs::{free_ports, workspace_bin, Proc, ProcCluster};
use serde_json::json;

use crate::metad_target::{self, connect, ensure_silo, import, tag_keys, value, Layout};
use crate::stats::load1;
use crate::{ConsistencyArg, RunArgs, Target, Workload};

#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    /// Client endpoints (host:port), comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub endpoints: Vec<String>,
    /// Files to load (keys 0..N under --prefix, 1000 per directory).
    #[arg(long)]
    pub files: u64,
    #[arg(long, default_value = "/scale")]
    pub prefix: String,
    /// Requests in flight.
    #[arg(long, default_value_t = 8)]
    pub inflight: usize,
    /// Do not tag the files.
    #[arg(long)]
    pub no_tags: bool,
    /// Value size of the `v` tag.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct ScaleArgs {
    /// Files to load.
    #[arg(long, default_value_t = 1_000_000)]
    pub files: u64,
    /// Keep the cluster's data here (default: a temporary directory, removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Clients of the create/stat/kv-get benchmarks.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Seconds per benchmark.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// metad raft.snapshot_after_entries (an entry is a batch of 1000 or 128 files).
    #[arg(long, default_value_t = 2000)]
    pub snapshot_after: u64,
    /// metad raft.keep_entries_after_snapshot (small, so a new learner needs the snapshot).
    #[arg(long, default_value_t = 100)]
    pub keep_entries: u64,
    /// metad raft.snapshot_chunk_bytes: bytes per InstallSnapshot chunk sent to the learner.
    #[arg(long, default_value_t = 4 << 20)]
    pub snapshot_chunk_bytes: u64,
    /// Requests in flight while loading.
    #[arg(long, default_value_t = 8)]
    pub inflight: usize,
    /// Longest wait, in seconds, for spaced background snapshots before each benchmark
    /// (default: 600 per million files, at least 600; a 3 M-file run needed more than 600).
    #[arg(long)]
    pub settle_timeout: Option<u64>,
    /// Before adding the learner, remove the restarted follower from the cluster and delete
    /// its data directory: the learner replaces a lost node, and the run needs disk for three
    /// copies of the state, not four (a 10 M-file run on a 70 GB disk).
    #[arg(long)]
    pub learner_replaces_follower: bool,
    /// Skip the create/stat/kv-get benchmarks: load, then measure sizes, restart and the
    /// learner only (at 10 M files the waits for spaced snapshots before each benchmark make
    /// a full run ~1.5 h).
    #[arg(long)]
    pub skip_benchmarks: bool,
    /// Seconds of the same reads before each stat/kv-get benchmark, reported apart as the
    /// cold figure. Right after a load and its snapshot builds, the state machine's pages are
    /// out of redb's cache and partly out of the OS page cache; a server that has been
    /// serving reads is not in that state.
    #[arg(long, default_value_t = 0.0)]
    pub read_warmup: f64,
    /// Skip the restart and new-learner measurements (a run about the benchmarks).
    #[arg(long)]
    pub skip_learner: bool,
    /// Run even if the disk looks too small for the run (see `disk_needed`).
    #[arg(long)]
    pub no_disk_check: bool,
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
}

/// Loads keys `0..files` under `layout`; returns seconds taken.
async fn load(
    clients: &[Client],
    layout: &Layout,
    files: u64,
    inflight: usize,
    tags: bool,
    value_size: usize,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    ensure_silo(&clients[0]).await?;
    let chunk = 100_000;
    let mut start = 0;
    while start < files {
        let end = (start + chunk).min(files);
        let t = Instant::now();
        import(
            clients,
            (start..end).map(|j| layout.key(j)).collect(),
            inflight,
        )
        .await?;
        let import_s = t.elapsed().as_secs_f64();
        if tags {
            tag_keys(clients, layout, start..end, &value(0, value_size), inflight).await?;
        }
        eprintln!(
            "  chunk: import {import_s:.1}s, tags {:.1}s",
            t.elapsed().as_secs_f64() - import_s
        );
        start = end;
        let s = started.elapsed().as_secs_f64();
        eprintln!(
            "loaded {end}/{files} files in {s:.0}s ({:.0} files/s)",
            end as f64 / s
        );
    }
    Ok(started.elapsed().as_secs_f64())
}

pub async fn load_cmd(a: LoadArgs) -> anyhow::Result<()> {
    let clients = connect(&a.endpoints, a.inflight.clamp(1, 8)).await?;
    let layout = Layout {
        prefix: a.prefix.clone(),
    };
    let s = load(
        &clients,
        &layout,
        a.files,
        a.inflight,
        !a.no_tags,
        a.value_size,
    )
    .await?;
    println!(
        "loaded {} files under {} in {s:.1}s ({:.0} files/s)",
        a.files,
        a.prefix,
        a.files as f64 / s
    );
    if a.json {
        println!(
            "{}",
            json!({"files": a.files, "prefix": a.prefix, "load_s": s,
                   "files_per_s": a.files as f64 / s})
        );
    }
    Ok(())
}

/// Bytes of all files under `p`.
/// Bytes allocated on disk under `p` (blocks, not length: WAL segments are
/// preallocated sparse files, so their length overstates what they use).
fn du(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => du(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

/// KiB read from block devices since boot (`pgpgin` in /proc/vmstat; 0 if unreadable).
fn disk_read_kib() -> u64 {
    std::fs::read_to_string("/proc/vmstat")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("pgpgin "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// One benchmark run, and the MiB the machine read from disk while it ran.
async fn run_measuring_disk(args: &RunArgs) -> anyhow::Result<(crate::stats::Report, f64)> {
    let before = disk_read_kib();
    let r = metad_target::run(args).await?;
    Ok((r, disk_read_kib().saturating_sub(before) as f64 / 1024.0))
}

fn mib(b: u64) -> f64 {
    b as f64 / (1u64 << 20) as f64
}

/// Polls `node` until it answers with `applied_index >= index`; returns its status.
async fn wait_applied(
    node: &Client,
    index: u64,
    timeout: Duration,
) -> anyhow::Result<metad_client::pb::NodeStatusResponse> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(s) = node.node_status().await {
            if s.applied_index >= index {
                return Ok(s);
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "node did not reach applied index {index} in {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until no node has `every` entries beyond its snapshot: after a bulk load each node
/// builds a snapshot of the whole state machine in the background (1.5 GB at 1 M files), which
/// would otherwise run during — and slow — the benchmarks that follow. metad spaces builds by
/// 10x their duration (`node::snapshots`), so this may wait that long for the spaced build.
/// Then waits until every node has applied the leader's commit index and runs `sync`, so the
/// gigabytes of dirty pages a bulk load leaves behind are not written back during a benchmark
/// (they slowed the create benchmark at 1 M files by a third). Returns the seconds waited.
async fn wait_snapshots_settled(
    admin: &Client,
    nodes: usize,
    every: u64,
    timeout: Duration,
) -> anyhow::Result<f64> {
    let t = Instant::now();
    loop {
        let mut due = Vec::new();
        for i in 0..nodes {
            let s = admin.on_endpoint(i)?.node_status().await?;
            if s.applied_index.saturating_sub(s.snapshot_index) >= every {
                due.push((i + 1, s.applied_index, s.snapshot_index));
            }
        }
        if due.is_empty() {
            let commit = admin.node_status().await?.commit_index;
            for i in 0..nodes {
                wait_applied(&admin.on_endpoint(i)?, commit, timeout).await?;
            }
            let synced =
                tokio::task::spawn_blocking(|| std::process::Command::new("sync").status())
                    .await??;
            anyhow::ensure!(synced.success(), "sync failed: {synced}");
            return Ok(t.elapsed().as_secs_f64());
        }
        anyhow::ensure!(
            t.elapsed() < timeout,
            "snapshots still due after {timeout:?} (node, applied, snapshot): {due:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Bytes one node needs at its peak per loaded file: `sm.redb` (~0.86 KB per file at 10 M),
/// the current snapshot and the one being built next to it (~0.6 KB each).
const NODE_PEAK_BYTES_PER_FILE: u64 = 2_100;

/// Disk the run needs at its peak: every copy of the state at its peak.
fn disk_needed(a: &ScaleArgs) -> u64 {
    a.files
        .saturating_mul(NODE_PEAK_BYTES_PER_FILE)
        .saturating_mul(node_copies(a))
}

/// Copies of the state the run holds at once: three nodes, and the new learner unless it
/// replaces a removed follower or is skipped.
fn node_copies(a: &ScaleArgs) -> u64 {
    3 + u64::from(!a.skip_learner && !a.learner_replaces_follower)
}

/// Refuses to start a run that the disk under `dir` cannot hold: a 10 M run otherwise fails
/// with a full disk half an hour in.
fn check_disk(a: &ScaleArgs, dir: &Path) -> anyhow::Result<()> {
    let st = nix::sys::statvfs::statvfs(dir)?;
    let free = st.blocks_available() * st.fragment_size();
    let need = disk_needed(a);
    if free < need && !a.no_disk_check {
        anyhow::bail!(
            "{} has {:.1} GB free; a {}-file run needs about {:.1} GB at its peak ({} node \
             copies x {} bytes per file). Free disk, use --learner-replaces-follower or \
             --skip-learner, or pass --no-disk-check",
            dir.display(),
            free as f64 / 1e9,
            a.files,
            need as f64 / 1e9,
            node_copies(a),
            NODE_PEAK_BYTES_PER_FILE,
        );
    }
    Ok(())
}

pub async fn scale_cmd(a: ScaleArgs) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = a.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    check_disk(&a, &dir)?;
    let conf = dir.join("scale.toml");
    std::fs::write(
        &conf,
        format!(
            "[raft]\nsnapshot_after_entries = {}\nkeep_entries_after_snapshot = {}\n\
             snapshot_chunk_bytes = {}\n",
            a.snapshot_after, a.keep_entries, a.snapshot_chunk_bytes
        ),
    )?;
    let conf_arg = format!("--config={}", conf.display());
    // Info lines of the snapshot scheduler say how long each build took.
    let mut cluster = ProcCluster::start_with_env(
        &dir,
        3,
        &[conf_arg.as_str()],
        &[("RUST_LOG", "warn,openraft=off,metad::node::snapshots=info")],
    )?;
    let r = measure(&a, &dir, &conf_arg, &mut cluster).await;
    // A request that fails because a node died reads like a network error: say which node
    // exited, how, and what its log said last. A failed run keeps its data and logs, also in
    // the default temporary directory.
    r.map_err(|e| {
        let dead = cluster.exits();
        let e = if dead.is_empty() {
            e
        } else {
            e.context(dead.join("\n"))
        };
        let kept = if a.dir.is_none() { tmp.keep() } else { dir };
        e.context(format!(
            "scale run failed; the cluster's data and logs are in {}",
            kept.display()
        ))
    })
}

/// Load, benchmarks, sizes, restarts and the learner, against the running `cluster`.
async fn measure(
    a: &ScaleArgs,
    dir: &Path,
    conf_arg: &str,
    cluster: &mut ProcCluster,
) -> anyhow::Result<()> {
    let eps = cluster.endpoints.clone();
    let clients = connect(&eps, 8).await?;
    let layout = Layout {
        prefix: "/scale".into(),
    };

    // 1. Load.
    let load_s = load(&clients, &layout, a.files, a.inflight, true, 256).await?;
    let load_rate = a.files as f64 / load_s;

    let mut admin_cfg = ClientConfig::new(eps.iter().cloned());
    admin_cfg.total_timeout = Duration::from_secs(900);
    admin_cfg.request_timeout = Duration::from_secs(10);
    let admin = Client::connect(admin_cfg).await?;

    // 2. Benchmarks against the loaded namespace, each once no snapshot build is due.
    let mut benches = Vec::new();
    let mut settle_s = 0.0;
    let settle_timeout = Duration::from_secs(
        a.settle_timeout
            .unwrap_or_else(|| 600 * a.files.div_ceil(1_000_000).max(1)),
    );
    let again = format!("{}/again", layout.prefix);
    let plan = [
        (
            Workload::Create,
            ConsistencyArg::Linearizable,
            &layout.prefix,
        ),
        (Workload::Stat, ConsistencyArg::Linearizable, &layout.prefix),
        (Workload::Stat, ConsistencyArg::Serializable, &layout.prefix),
        (
            Workload::KvGet,
            ConsistencyArg::Linearizable,
            &layout.prefix,
        ),
        // Create again, last (new names): the first follows the bulk load and its snapshot.
        (Workload::Create, ConsistencyArg::Linearizable, &again),
    ];
    let plan = if a.skip_benchmarks {
        &plan[..0]
    } else {
        &plan[..]
    };
    let mut disk_reads = Vec::new();
    let mut cold = Vec::new();
    for &(w, cons, prefix) in plan {
        settle_s += wait_snapshots_settled(&admin, 3, a.snapshot_after, settle_timeout).await?;
        let args = |duration: f64| RunArgs {
            target: Target::Metad,
            endpoints: eps.clone(),
            workload: w,
            clients: a.clients,
            connections: None,
            duration,
            warmup: 1.0,
            value_size: 256,
            consistency: cons,
            keys: a.files,
            spread: false,
            prefix: Some(prefix.clone()),
            no_setup: true,
            json: false,
        };
        if a.read_warmup > 0.0 && w != Workload::Create {
            let (r, read_mib) = run_measuring_disk(&args(a.read_warmup)).await?;
            println!(
                "cold (warm-up, {read_mib:.0} MiB read from disk):\n{}",
                r.table()
            );
            cold.push(
                json!({ "workload": r.workload, "consistency": r.consistency,
                              "ops_per_s": r.ops_per_s, "p50_ms": r.p50_ms,
                              "disk_read_mib": read_mib }),
            );
        }
        let (r, read_mib) = run_measuring_disk(&args(a.duration)).await?;
        println!(
            "{}\ndisk reads during the run: {read_mib:.0} MiB ({:.1} KiB per op)",
            r.table(),
            read_mib * 1024.0 / (r.ops.max(1) as f64)
        );
        disk_reads.push(read_mib);
        benches.push(r);
    }

    // 3. Sizes.
    let rss: Vec<u64> = cluster
        .nodes
        .iter()
        .map(|p| p.rss_bytes().unwrap_or(0))
        .collect();
    let status = clients[0].cluster_status().await?;
    let leader = status.leader_id;
    let ld = dir.join(format!("n{leader}"));
    let disk = du(&ld);
    let sm = std::fs::metadata(ld.join("sm.redb"))
        .map(|m| m.len())
        .unwrap_or(0);
    let log = du(&ld.join("raft-log"));
    let snap = du(&ld.join("snapshots"));

    println!(
        "scale: {} files, load {load_s:.1}s ({load_rate:.0} files/s), load1 {:.2}; \
         waited {settle_s:.1}s in all for background snapshots before the benchmarks",
        a.files,
        load1()
    );
    println!(
        "RSS MiB per node: {:?}; leader disk {:.0} MiB (sm.redb {:.0}, raft-log/ {:.0}, snapshots {:.0})",
        rss.iter().map(|b| mib(*b).round()).collect::<Vec<_>>(),
        mib(disk),
        mib(sm),
        mib(log),
        mib(snap)
    );
    let mut summary = json!({
        "files": a.files, "load_s": load_s, "load_files_per_s": load_rate,
        "snapshot_settle_s": settle_s,
        "benches": benches, "disk_read_mib": disk_reads, "cold": cold,
        "read_warmup_s": a.read_warmup, "rss_bytes": rss, "leader_disk_bytes": disk,
        "sm_bytes": sm, "raft_log_bytes": log, "snapshot_bytes": snap,
        "benchmarks_skipped": a.skip_benchmarks,
    });
    if a.skip_learner {
        println!("restart and learner skipped");
        if a.json {
            summary["load1"] = json!(load1());
            println!("{summary}");
        }
        return Ok(());
    }

    // 4. Restart a follower: SIGTERM, start, time until it serves at the leader's index.
    let follower = (1..=3u64).find(|i| *i != leader).unwrap_or(1);
    let fnode = admin.on_endpoint((follower - 1) as usize)?;
    let mut restarts = Vec::new();
    for crash in [false, true] {
        let target = admin.node_status().await.map(|s| s.commit_index)?;
        let p = cluster.node(follower);
        if crash {
            p.kill9();
        } else {
            p.terminate();
        }
        let t = Instant::now();
        p.start()?;
        wait_applied(&fnode, target, Duration::from_secs(300)).await?;
        // Serving: a read on that node answers.
        fnode
            .stat(&layout.key(0), metad_client::ReadOptions::serializable())
            .await?;
        restarts.push(t.elapsed().as_secs_f64());
    }

    // The learner joins a cluster at rest: with snapshots still due, the leader may snapshot
    // and purge its log while the learner installs, and the learner then needs a second
    // snapshot (seen at 10 M files, after the last create benchmark's 50 k entries).
    let learner_settle_s =
        wait_snapshots_settled(&admin, 3, a.snapshot_after, settle_timeout).await?;
    if a.learner_replaces_follower {
        admin.remove_member(follower).await?;
        cluster.node(follower).kill9();
        std::fs::remove_dir_all(dir.join(format!("n{follower}")))?;
        eprintln!("removed node {follower} and its data before adding the learner");
    }

    // 5. A new learner catches up (by snapshot: the log behind it has been purged).
    let ports = free_ports(2)?;
    let (cport, pport) = (ports[0], ports[1]);
    let mut learner = Proc::new(
        "metad-4",
        workspace_bin("metad")?,
        vec![
            "--node-id=4".into(),
            "--site=site-d".into(),
            format!("--data-dir={}", dir.join("n4").display()),
            format!("--listen-client=127.0.0.1:{cport}"),
            format!("--listen-peer=127.0.0.1:{pport}"),
            "--listen-metrics=".into(),
            "--heartbeat-ms=50".into(),
            "--election-timeout-min-ms=300".into(),
            "--election-timeout-max-ms=600".into(),
            conf_arg.to_string(),
        ],
        dir.join("n4.log"),
    )
    // The store's info lines say how long the snapshot install took (load vs total).
    .env("RUST_LOG", "warn,openraft=off,metad::store=info");
    learner.start()?;
    let target = admin.node_status().await.map(|s| s.commit_index)?;
    let t = Instant::now();
    let learner_res = async {
        match admin
            .add_learner(
                4,
                "site-d",
                &format!("127.0.0.1:{pport}"),
                &format!("127.0.0.1:{cport}"),
                true,
            )
            .await
        {
            Ok(_) => eprintln!(
                "add_learner returned after {:.1}s",
                t.elapsed().as_secs_f64()
            ),
            // The server stops waiting for the learner after its own deadline (120 s); the
            // learner was added and is still catching up, so keep measuring.
            Err(e) if e.code() == metad_client::ErrorCode::Ambiguous => eprintln!(
                "add_learner: {e} after {:.1}s; still waiting for the learner",
                t.elapsed().as_secs_f64()
            ),
            Err(e) => return Err(e.into()),
        }
        let lnode = admin.on_addr(&format!("127.0.0.1:{cport}"))?;
        let wait = Duration::from_secs(300.max(120 * a.files.div_ceil(1_000_000)));
        wait_applied(&lnode, target, wait).await
    }
    .await;
    let learner_s = t.elapsed().as_secs_f64();
    let learner_rss = learner.rss_bytes().unwrap_or(0);
    let (ls_snap, ls_applied, learner_err) = match &learner_res {
        Ok(s) => (s.snapshot_index, s.applied_index, None),
        Err(e) => (0, 0, Some(format!("{e:#}"))),
    };

    println!(
        "restart to serving: graceful {:.2}s, after kill -9 {:.2}s",
        restarts[0], restarts[1]
    );
    match &learner_err {
        None => println!(
            "learner (added after {learner_settle_s:.0}s waiting for snapshots to settle) caught up in {learner_s:.1}s (snapshot index {ls_snap}, applied {ls_applied}), learner RSS {:.0} MiB",
            mib(learner_rss)
        ),
        Some(e) => println!("learner did not catch up after {learner_s:.1}s: {e}"),
    }
    // The leader's last full build: what a snapshot of this namespace costs.
    let mut build_s = None;
    if let Ok(log) = std::fs::read_to_string(dir.join(format!("n{leader}.log"))) {
        if let Some(l) = log.lines().rfind(|l| l.contains("snapshot built")) {
            println!("leader's last snapshot build: {}", l.trim());
            build_s = l
                .split_whitespace()
                .find_map(|w| w.strip_prefix("seconds="))
                .and_then(|v| v.parse::<f64>().ok());
        }
    }
    if let Ok(log) = std::fs::read_to_string(dir.join("n4.log")) {
        for l in log.lines().filter(|l| l.contains("installed snapshot")) {
            println!("learner: {}", l.trim());
        }
    }
    if a.json {
        let more = json!({
            "restart_graceful_s": restarts[0], "restart_kill9_s": restarts[1],
            "learner_catchup_s": learner_s, "learner_snapshot_index": ls_snap,
            "learner_error": learner_err,
            "learner_replaced_follower": a.learner_replaces_follower,
            "learner_settle_s": learner_settle_s,
            "learner_rss_bytes": learner_rss, "load1": load1(),
            "snapshot_build_s": build_s,
        });
        if let (Some(all), serde_json::Value::Object(more)) = (summary.as_object_mut(), more) {
            all.extend(more);
        }
        println!("{summary}");
    }
    drop(learner);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        a: ScaleArgs,
    }

    fn args(extra: &[&str]) -> ScaleArgs {
        let mut argv = vec!["scale"];
        argv.extend_from_slice(extra);
        Cli::parse_from(argv).a
    }

    #[test]
    fn disk_needed_counts_the_learner_only_when_it_adds_a_copy() {
        let gb = |a: &ScaleArgs| disk_needed(a) as f64 / 1e9;
        assert_eq!(gb(&args(&["--files", "1000000"])), 8.4);
        assert_eq!(gb(&args(&["--files", "1000000", "--skip-learner"])), 6.3);
        let replaces = args(&["--files", "1000000", "--learner-replaces-follower"]);
        assert_eq!(gb(&replaces), 6.3);
    }

    #[test]
    fn a_run_the_disk_cannot_hold_is_refused_before_it_starts() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        // 10^12 files would need ~6 PB.
        let huge = args(&["--files", "1000000000000", "--skip-learner"]);
        let err = check_disk(&huge, dir.path())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("needs about") && err.contains("--no-disk-check"),
            "{err}"
        );
        let forced = args(&["--files", "1000000000000", "--no-disk-check"]);
        check_disk(&forced, dir.path())?;
        check_disk(&args(&["--files", "1000"]), dir.path())?;
        Ok(())
    }
}
