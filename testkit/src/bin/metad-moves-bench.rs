//! Control-plane cost of moving many small files: a 3-node `metad` cluster of real processes on
//! loopback, N files imported on a source silo, moves created to a target silo, and fake
//! agents (no bytes copied) that claim and commit in batches. Prints files/s of committed
//! moves, metad CPU per file, and claim/commit latencies; `--json` ends with one JSON object.
//!
//! Run: `cargo run --release -p metad-testkit --bin metad-moves-bench -- --files 100000`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use hdrhistogram::Histogram;
use metad_proto::v1::agents_client::AgentsClient;
use metad_proto::v1::location_client::LocationClient;
use metad_proto::v1::moves_client::MovesClient;
use metad_proto::v1::topology_client::TopologyClient;
use metad_proto::v1::*;
use metad_testkit::procs::ProcCluster;
use tokio::sync::Mutex;
use tonic::transport::Channel;

#[derive(Parser, Debug)]
#[command(about = "Control-plane cost of moving many small files through metad")]
struct Args {
    /// Files to move.
    #[arg(long, default_value_t = 100_000)]
    files: u64,
    /// Files per directory (a CreateMove request names up to 10 000 files).
    #[arg(long, default_value_t = 1000)]
    per_dir: u64,
    /// Tasks per ClaimMoves and completions per CompleteMoves.
    #[arg(long, default_value_t = 1000)]
    batch: u32,
    /// Concurrent fake agent workers (each claims and commits its own batches).
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Keep the cluster's data here instead of a temporary directory.
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
}

/// Exactly-once headers for one bench client.
struct Seq {
    id: String,
    next: AtomicU64,
}

impl Seq {
    fn header(&self) -> Option<WriteHeader> {
        Some(WriteHeader {
            client_id: self.id.clone(),
            seq: self.next.fetch_add(1, Ordering::Relaxed),
        })
    }
}

async fn channel(endpoints: &[String]) -> anyhow::Result<Channel> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for e in endpoints {
            if let Ok(ch) = Channel::from_shared(format!("http://{e}"))?.connect().await {
                // A write that succeeds means a leader exists and forwarding works.
                let mut t = TopologyClient::new(ch.clone());
                if t.list_sites(ListSitesRequest::default()).await.is_ok() {
                    return Ok(ch);
                }
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "no metad node answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ms(d: Duration) -> u64 {
    d.as_micros() as u64
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let tmp = tempfile::tempdir()?;
    let dir = a.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let cluster = ProcCluster::start(&dir, 3, &[])?;
    let ch = channel(&cluster.endpoints).await?;
    let seq = Seq {
        id: format!("bench-{}", std::process::id()),
        next: AtomicU64::new(1),
    };
    let mut topo = TopologyClient::new(ch.clone());
    for (site, silo) in [("site-a", "src"), ("site-c", "dst")] {
        topo.register_site(RegisterSiteRequest {
            header: seq.header(),
            name: site.into(),
            ..Default::default()
        })
        .await?;
        topo.register_silo(RegisterSiloRequest {
            header: seq.header(),
            name: silo.into(),
            site: site.into(),
            kind: SiloKind::Posix as i32,
            tier: SiloTier::Hot as i32,
            capacity_bytes: 1 << 50,
            root: format!("/bench/{silo}"),
            ..Default::default()
        })
        .await?;
    }

    // 1. Import (metadata only).
    let started = Instant::now();
    let mut loc = LocationClient::new(ch.clone());
    let dirs = a.files.div_ceil(a.per_dir);
    let mut batch = Vec::new();
    for i in 0..a.files {
        batch.push(ImportEntry {
            path: format!("/bench/d{}/f{}", i / a.per_dir, i % a.per_dir),
            size: 4096,
            checksum: format!("blake3:{i:064x}"),
            ..Default::default()
        });
        if batch.len() == 1000 || i + 1 == a.files {
            loc.import_files(ImportFilesRequest {
                header: seq.header(),
                silo: "src".into(),
                files: std::mem::take(&mut batch),
            })
            .await
            .context("import")?;
        }
    }
    let import_s = started.elapsed().as_secs_f64();
    eprintln!(
        "imported {} files in {import_s:.1}s ({:.0} files/s)",
        a.files,
        a.files as f64 / import_s
    );

    // 2. Create the moves (10 directories per request).
    let mut moves = MovesClient::new(ch.clone());
    let started = Instant::now();
    let mut batches = Vec::new();
    let per_req = (10_000 / a.per_dir).max(1);
    for first in (0..dirs).step_by(per_req as usize) {
        let paths = (first..(first + per_req).min(dirs))
            .map(|d| format!("/bench/d{d}"))
            .collect();
        let r = moves
            .create_move(CreateMoveRequest {
                header: seq.header(),
                paths,
                recursive: true,
                target_silo: "dst".into(),
                mode: MoveMode::Move as i32,
                owner: "bench".into(),
                ..Default::default()
            })
            .await
            .context("create move")?
            .into_inner();
        batches.push(r.batch);
    }
    let create_s = started.elapsed().as_secs_f64();
    eprintln!("created {} move batches in {create_s:.1}s", batches.len());

    // 3. Fake agents: claim and commit until nothing is left.
    let mut agents = AgentsClient::new(ch.clone());
    let lease = agents
        .agent_register(AgentRegisterRequest {
            header: seq.header(),
            silo: "dst".into(),
            name: "bench-agent".into(),
            ttl_ms: 60_000,
        })
        .await?
        .into_inner()
        .agent
        .context("agent")?
        .lease;
    let seq = Arc::new(seq);
    let claim_h = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let commit_h = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let committed = Arc::new(AtomicU64::new(0));
    let cpu0 = cluster.cpu_seconds();
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..a.workers {
        let (ch, seq, claim_h, commit_h, committed) = (
            ch.clone(),
            seq.clone(),
            claim_h.clone(),
            commit_h.clone(),
            committed.clone(),
        );
        let max = a.batch;
        workers.push(tokio::spawn(async move {
            let mut m = MovesClient::new(ch);
            loop {
                let t = Instant::now();
                let tasks = m
                    .claim_moves(ClaimMovesRequest {
                        header: seq.header(),
                        lease,
                        silo: "dst".into(),
                        max,
                        max_releases: 0,
                    })
                    .await?
                    .into_inner()
                    .tasks;
                claim_h.lock().await.record(ms(t.elapsed()))?;
                if tasks.is_empty() {
                    return anyhow::Ok(());
                }
                let completions = tasks
                    .iter()
                    .map(|t| MoveCompletion {
                        move_id: t.move_id,
                        token: t.token,
                        copied_gen: t.content_gen,
                        checksum: t.source_checksum.clone(),
                        bytes: t.size,
                    })
                    .collect();
                let t = Instant::now();
                let r = m
                    .complete_moves(CompleteMovesRequest {
                        header: seq.header(),
                        completions,
                    })
                    .await?
                    .into_inner();
                commit_h.lock().await.record(ms(t.elapsed()))?;
                let ok = r
                    .results
                    .iter()
                    .filter(|r| r.outcome == CompleteOutcome::Committed as i32)
                    .count();
                committed.fetch_add(ok as u64, Ordering::Relaxed);
            }
        }));
    }
    for w in workers {
        w.await??;
    }
    let move_s = started.elapsed().as_secs_f64();
    let cpu = cluster.cpu_seconds() - cpu0;
    let n = committed.load(Ordering::Relaxed);
    let rss: u64 = cluster
        .nodes
        .iter()
        .filter_map(|p| p.rss_bytes())
        .max()
        .unwrap_or(0);
    let (ch, mh) = (claim_h.lock().await, commit_h.lock().await);
    let rate = n as f64 / move_s;
    println!("metad-moves-bench: 3 metad processes on loopback, fake agents (no bytes copied)");
    println!(
        "files={} committed={n} batch={} workers={}",
        a.files, a.batch, a.workers
    );
    println!("import: {:.0} files/s", a.files as f64 / import_s);
    println!("moves committed: {rate:.0} files/s over {move_s:.2}s");
    println!(
        "metad CPU: {cpu:.2}s total, {:.1} us per file (all 3 nodes)",
        cpu * 1e6 / n.max(1) as f64
    );
    println!(
        "claim latency ms: p50 {:.1} p99 {:.1}; commit latency ms: p50 {:.1} p99 {:.1}",
        ch.value_at_quantile(0.5) as f64 / 1e3,
        ch.value_at_quantile(0.99) as f64 / 1e3,
        mh.value_at_quantile(0.5) as f64 / 1e3,
        mh.value_at_quantile(0.99) as f64 / 1e3
    );
    println!("max node RSS: {:.0} MiB", rss as f64 / (1 << 20) as f64);
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "files": a.files, "committed": n, "batch": a.batch, "workers": a.workers,
                "import_files_per_s": a.files as f64 / import_s,
                "moves_files_per_s": rate, "metad_cpu_s": cpu,
                "metad_cpu_us_per_file": cpu * 1e6 / n.max(1) as f64,
                "claim_p50_ms": ch.value_at_quantile(0.5) as f64 / 1e3,
                "claim_p99_ms": ch.value_at_quantile(0.99) as f64 / 1e3,
                "commit_p50_ms": mh.value_at_quantile(0.5) as f64 / 1e3,
                "commit_p99_ms": mh.value_at_quantile(0.99) as f64 / 1e3,
                "max_rss_bytes": rss,
            })
        );
    }
    anyhow::ensure!(n == a.files, "only {n} of {} moves committed", a.files);
    Ok(())
}
