//! `metad`: run one node (`metad --config node.toml`, flags override env override file), or a
//! whole 3-site dev cluster on loopback in one process (`metad dev`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use metad::config::{Config, InitialMember};
use metad::{Listeners, MetaNode, StartOptions};

/// redb allocates a buffer for every page it reads or writes and frees it on eviction, and every
/// request allocates its protobuf messages; glibc malloc showed up in every profile. jemalloc
/// gave +8..21 % writes and +4..40 % reads on the same cluster (docs/benchmarks.md, round 8).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const DEV_SITES: [&str; 3] = ["site-a", "site-b", "site-c"];

#[derive(Parser)]
#[command(
    name = "metad",
    version,
    about = "metad: Raft-replicated global metadata control plane (one node, or `metad dev`)",
    long_about = "Runs one metad node. Settings come from --config FILE, then METAD_* environment \
variables, then flags (flags win).\n\nExamples:\n  metad dev                       # 3-node, 3-site cluster on loopback (try this first)\n  metad --config /etc/metad/node1.toml\n  metad --node-id 1 --site site-a --data-dir /var/lib/metad \\\n        --listen-client 10.0.0.1:7001 --listen-peer 10.0.0.1:7101 \\\n        --initial-cluster 1=site-a/10.0.0.1:7101/10.0.0.1:7001,2=site-b/10.0.1.1:7101/10.0.1.1:7001,3=site-c/10.0.2.1:7101/10.0.2.1:7001"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    node: NodeArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a 3-node cluster on loopback, one node per site (site-a, site-b, site-c).
    ///
    /// Client ports 7001-7003, peer ports 7101-7103, metrics 7201-7203. Data lives under
    /// --data-dir (default ./.metad-dev); run it again to resume the same cluster and data.
    /// Then, in another terminal: `metactl cluster status`.
    Dev {
        /// Directory holding node-1, node-2, node-3.
        #[arg(long, default_value = "./.metad-dev", env = "METAD_DEV_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Print the effective configuration (file < env < flags) as TOML and exit.
    PrintConfig,
}

#[derive(Args)]
struct NodeArgs {
    /// TOML configuration file.
    #[arg(long, env = "METAD_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// This node's id (positive, unique, never reused).
    #[arg(long, env = "METAD_NODE_ID")]
    node_id: Option<u64>,
    /// Site of this node, e.g. site-a.
    #[arg(long, env = "METAD_SITE")]
    site: Option<String>,
    /// Data directory (raft-log/, sm.redb, snapshots/).
    #[arg(long, env = "METAD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Bind address of the client gRPC API.
    #[arg(long, env = "METAD_LISTEN_CLIENT")]
    listen_client: Option<String>,
    /// Client address announced to the cluster (default: the bound address).
    #[arg(long, env = "METAD_ADVERTISE_CLIENT")]
    advertise_client: Option<String>,
    /// Bind address of the peer (Raft) service.
    #[arg(long, env = "METAD_LISTEN_PEER")]
    listen_peer: Option<String>,
    /// Peer address announced to the cluster (default: the bound address).
    #[arg(long, env = "METAD_ADVERTISE_PEER")]
    advertise_peer: Option<String>,
    /// Bind address of the Prometheus /metrics endpoint ("" disables it).
    #[arg(long, env = "METAD_LISTEN_METRICS")]
    listen_metrics: Option<String>,
    /// Bootstrap members: ID=SITE/PEER_ADDR/CLIENT_ADDR, comma-separated.
    #[arg(long, env = "METAD_INITIAL_CLUSTER", value_delimiter = ',')]
    initial_cluster: Option<Vec<String>>,
    /// Server-side time budget per request, in milliseconds.
    #[arg(long, env = "METAD_REQUEST_TIMEOUT_MS")]
    request_timeout_ms: Option<u64>,
    /// Raft heartbeat interval in milliseconds.
    #[arg(long, env = "METAD_HEARTBEAT_MS")]
    heartbeat_ms: Option<u64>,
    /// Raft minimum election timeout in milliseconds.
    #[arg(long, env = "METAD_ELECTION_TIMEOUT_MIN_MS")]
    election_timeout_min_ms: Option<u64>,
    /// Raft maximum election timeout in milliseconds.
    #[arg(long, env = "METAD_ELECTION_TIMEOUT_MAX_MS")]
    election_timeout_max_ms: Option<u64>,
    /// Build a snapshot after this many log entries.
    #[arg(long, env = "METAD_SNAPSHOT_AFTER_ENTRIES")]
    snapshot_after_entries: Option<u64>,
    /// Log filter when RUST_LOG is unset (e.g. "info,openraft=warn").
    #[arg(long, env = "METAD_LOG")]
    log_filter: Option<String>,
    /// Watch history kept, in revisions; older history answers COMPACTED.
    #[arg(long, env = "METAD_WATCH_HISTORY_REVISIONS")]
    watch_history_revisions: Option<u64>,
    /// Watch history kept, in events (default 1 000 000); the oldest whole revisions go first.
    #[arg(long, env = "METAD_WATCH_HISTORY_EVENTS")]
    watch_history_events: Option<u64>,
    /// Page cache of sm.redb in MiB (default 1024): the node's largest memory use. It fills only
    /// with pages read, so a small namespace uses less; lower it on small machines.
    #[arg(long, env = "METAD_SM_CACHE_MIB")]
    sm_cache_mib: Option<u64>,
}

impl NodeArgs {
    fn config(&self) -> Result<Config, String> {
        let mut c = match &self.config {
            Some(p) => {
                let text =
                    std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
                Config::from_toml(&text).map_err(|e| format!("{}: {e}", p.display()))?
            }
            None => Config::default(),
        };
        macro_rules! set {
            ($($f:ident),*) => {$( if let Some(v) = &self.$f { c.$f = v.clone(); } )*};
        }
        set!(
            node_id,
            site,
            data_dir,
            listen_client,
            listen_peer,
            listen_metrics,
            request_timeout_ms,
            log_filter,
            watch_history_revisions,
            watch_history_events,
            sm_cache_mib
        );
        if self.advertise_client.is_some() {
            c.advertise_client = self.advertise_client.clone();
        }
        if self.advertise_peer.is_some() {
            c.advertise_peer = self.advertise_peer.clone();
        }
        if let Some(list) = &self.initial_cluster {
            c.initial_cluster = list
                .iter()
                .filter(|s| !s.trim().is_empty())
                .map(|s| InitialMember::parse(s.trim()))
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = self.heartbeat_ms {
            c.raft.heartbeat_ms = v;
        }
        if let Some(v) = self.election_timeout_min_ms {
            c.raft.election_timeout_min_ms = v;
        }
        if let Some(v) = self.election_timeout_max_ms {
            c.raft.election_timeout_max_ms = v;
        }
        if let Some(v) = self.snapshot_after_entries {
            c.raft.snapshot_after_entries = v;
        }
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn dev_configs(data_dir: &std::path::Path) -> Vec<Config> {
    let members: Vec<InitialMember> = (1..=3u64)
        .map(|i| InitialMember {
            id: i,
            site: DEV_SITES[(i - 1) as usize].into(),
            peer_addr: format!("127.0.0.1:{}", 7100 + i),
            client_addr: format!("127.0.0.1:{}", 7000 + i),
        })
        .collect();
    members
        .iter()
        .map(|m| Config {
            node_id: m.id,
            site: m.site.clone(),
            data_dir: data_dir.join(format!("node-{}", m.id)),
            listen_client: m.client_addr.clone(),
            listen_peer: m.peer_addr.clone(),
            listen_metrics: format!("127.0.0.1:{}", 7200 + m.id),
            initial_cluster: members.clone(),
            raft: metad::config::RaftTuning {
                heartbeat_ms: 100,
                election_timeout_min_ms: 500,
                election_timeout_max_ms: 1000,
                ..Default::default()
            },
            ..Config::default()
        })
        .collect()
}

async fn run_dev(data_dir: PathBuf) -> Result<(), String> {
    let configs = dev_configs(&data_dir);
    // Bind every socket first so no node talks to a port that is not listening yet.
    let mut bound = Vec::new();
    for c in configs {
        let l = Listeners::bind(&c)
            .await
            .map_err(|e| format!("{e} (is another `metad dev` already running?)"))?;
        bound.push((c, l));
    }
    let mut nodes = Vec::new();
    for (c, l) in bound {
        nodes.push(
            MetaNode::start(c, l, StartOptions::default())
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    println!(
        "metad dev: 3 nodes, 3 sites, data in {}",
        data_dir.display()
    );
    for n in &nodes {
        println!(
            "  node {} ({})  client {}  peer {}  metrics http://{}/metrics",
            n.id(),
            n.core().info.site,
            n.client_addr(),
            n.peer_addr(),
            n.metrics_addr().map(|a| a.to_string()).unwrap_or_default()
        );
    }
    match nodes[0]
        .core()
        .wait_for_leader(Duration::from_secs(15))
        .await
    {
        Ok((id, info)) => println!("leader: node {id} ({})", info.site),
        Err(e) => println!("no leader yet: {e}"),
    }
    println!("\ntry:  metactl cluster status        (Ctrl-C here stops the cluster)");
    shutdown_signal().await;
    println!("stopping...");
    for n in nodes {
        n.shutdown().await;
    }
    Ok(())
}

async fn run_node(config: Config) -> Result<(), String> {
    let listeners = Listeners::bind(&config).await.map_err(|e| e.to_string())?;
    let node = MetaNode::start(config, listeners, StartOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    shutdown_signal().await;
    tracing::info!("shutdown requested");
    node.shutdown().await;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.cmd {
        Some(Cmd::Dev { data_dir }) => {
            metad::telemetry::init("warn,metad=info");
            rt.block_on(run_dev(data_dir))
        }
        Some(Cmd::PrintConfig) => cli.node.config().and_then(|c| {
            toml::to_string_pretty(&c)
                .map(|t| print!("{t}"))
                .map_err(|e| e.to_string())
        }),
        None => match cli.node.config() {
            Ok(c) => {
                metad::telemetry::init(&c.log_filter);
                rt.block_on(run_node(c))
            }
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
