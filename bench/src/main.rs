//! `metad-bench`: throughput and latency of metad (and, for the operations both have, of etcd
//! v3) under N concurrent clients, with HdrHistogram latencies, a human table and a final JSON
//! line. Subcommands `load` (bulk-load a namespace of N files with tags and instances) and
//! `scale` (start a 3-node cluster, load it, measure create/stat, RSS, disk, snapshot, restart
//! and learner catch-up). See docs/benchmarks.md.
//!
//! Modules: `stats` (the client loop and the report), `metad_target` (metad workloads and the
//! namespace layout), `etcd` (etcd v3 workloads on generated stubs), `scale` (`load`, `scale`).

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod etcd;
mod metad_target;
mod scale;
mod stats;

/// The clients share the machine's cores with the servers they measure, so what they burn is
/// taken from both targets' servers alike. With glibc malloc, allocation was ~14 % of the
/// client's CPU under 128 readers (round 14); jemalloc, as in `metad`, costs less.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Generated etcd v3 stubs (the subset in `proto/etcdserverpb/rpc.proto`).
pub mod etcdpb {
    #![allow(clippy::all)]
    tonic::include_proto!("etcdserverpb");
}

#[derive(Parser, Debug)]
#[command(
    name = "metad-bench",
    about = "Benchmark metad (and etcd, for kv-put/kv-get/txn-cas) with N concurrent clients",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Bulk-load N files (with instances and tags) into a running metad cluster.
    Load(scale::LoadArgs),
    /// Start a 3-node metad cluster, load N files, measure create/stat, RSS, disk, snapshot,
    /// restart time and learner catch-up.
    Scale(scale::ScaleArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    Metad,
    Etcd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// New files in many directories.
    Create,
    /// Stat a random existing file by path.
    Stat,
    /// Locate (instances of) a random file.
    Locate,
    /// Set a tag (value of --value-size bytes) on a random file.
    SetTag,
    /// FindByTags: the files of one tag group (10 of 1000) under the benchmark prefix.
    Find,
    /// Each client renames its own file back and forth.
    Rename,
    /// Compare-and-set: each client swaps its own key's value if it still holds the last one.
    TxnCas,
    /// Read-heavy mix: 60% stat, 15% locate, 10% get-tags, 2% find, 8% set-tag, 4% create,
    /// 1% rename.
    Mixed,
    /// etcd put: a --value-size tag set on one of --keys files (metad) / a put (etcd).
    KvPut,
    /// etcd range: a tag read from one of --keys files (metad) / a get (etcd).
    KvGet,
}

impl Workload {
    pub fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConsistencyArg {
    Linearizable,
    Serializable,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// System under test.
    #[arg(long, value_enum, default_value_t = Target::Metad)]
    pub target: Target,
    /// Client endpoints (host:port), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub endpoints: Vec<String>,
    #[arg(long, value_enum, default_value_t = Workload::KvPut)]
    pub workload: Workload,
    /// Concurrent clients (each one request at a time).
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// gRPC connections (HTTP/2) shared by the clients (default: min(clients, 8)).
    #[arg(long)]
    pub connections: Option<usize>,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds run before measuring (not recorded).
    #[arg(long, default_value_t = 0.5)]
    pub warmup: f64,
    /// Value size in bytes (kv-put, set-tag, txn-cas).
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Read consistency.
    #[arg(long, value_enum, default_value_t = ConsistencyArg::Linearizable)]
    pub consistency: ConsistencyArg,
    /// Keys (files) the read and update workloads pick from.
    #[arg(long, default_value_t = 1000)]
    pub keys: u64,
    /// Serve reads from all endpoints (client i on endpoint i mod n) instead of the leader.
    #[arg(long)]
    pub spread: bool,
    /// Namespace (metad) / key (etcd) prefix; default a fresh one per run.
    #[arg(long)]
    pub prefix: Option<String>,
    /// Do not create the keys first (they were loaded under --prefix, e.g. by `load`).
    #[arg(long)]
    pub no_setup: bool,
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
}

impl RunArgs {
    pub fn connections(&self) -> usize {
        self.connections
            .unwrap_or_else(|| self.clients.min(8))
            .clamp(1, self.clients.max(1))
    }

    pub fn consistency_name(&self) -> String {
        self.consistency
            .to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }

    pub fn info(&self, target: &str) -> stats::RunInfo {
        stats::RunInfo {
            target: target.into(),
            workload: self.workload.name(),
            consistency: self.consistency_name(),
            clients: self.clients,
            connections: self.connections(),
            value_size: self.value_size,
            keys: self.keys,
        }
    }

    pub fn warmup(&self) -> Duration {
        Duration::from_secs_f64(self.warmup.max(0.0))
    }

    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration.max(0.001))
    }

    /// A fresh prefix: unique per run, so runs against one cluster do not collide.
    pub fn prefix(&self) -> String {
        self.prefix.clone().unwrap_or_else(|| {
            let ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0);
            format!("/bench/r{ms}-{}", std::process::id())
        })
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.cmd {
            Some(Cmd::Load(a)) => scale::load_cmd(a).await,
            Some(Cmd::Scale(a)) => scale::scale_cmd(a).await,
            None => run(cli.run).await,
        }
    })
}

async fn run(a: RunArgs) -> anyhow::Result<()> {
    anyhow::ensure!(!a.endpoints.is_empty(), "--endpoints is required");
    anyhow::ensure!(a.clients > 0, "--clients must be positive");
    anyhow::ensure!(a.keys > 0, "--keys must be positive");
    let report = match a.target {
        Target::Metad => metad_target::run(&a).await?,
        Target::Etcd => etcd::run(&a).await?,
    };
    println!("{}", report.table());
    if a.json {
        println!("{}", report.json());
    }
    Ok(())
}
