//! `metad-jepsen`: black-box consistency tests of metad with real processes and real faults.
//! See `jepsen/README.md`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use metad_jepsen::nemesis::Fault;
use metad_jepsen::runner::{self, RunOpts};
use metad_jepsen::workload::Workload;

#[derive(Parser)]
#[command(
    name = "metad-jepsen",
    about = "Black-box consistency tests of metad: real processes in network namespaces, \
             real faults, checked histories",
    long_about = "Black-box consistency tests of metad.\n\nEach run starts N metad processes \
(each in its own network namespace unless --local), drives a workload through the client \
library while nemeses inject faults, records every operation (invoke/ok/fail/info), checks \
the history and writes a results folder: history.jsonl, faults.json, verdict.json, \
latency.svg, throughput.svg, summary.md and the node logs.\n\nExit status: 0 valid, 1 \
anomaly found (or the checker could not decide), 2 harness error.\n\nNeeds root, iproute2 \
and iptables for namespaces and partitions; faketime for the clock nemesis. Build metad \
first: cargo build -p metad.",
    after_help = "Examples:\n  cargo run -p metad-jepsen -- test --workload register --nemesis partition,kill \\\n      --time-limit 300 --nodes 5 --concurrency 20\n  cargo run -p metad-jepsen -- smoke\n  cargo run -p metad-jepsen -- check jepsen/results/20261125T071500-register"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one workload under a nemesis schedule.
    Test(TestArgs),
    /// The CI mix: every workload for a short time under partition, kill and pause.
    Smoke(SmokeArgs),
    /// Re-check a saved results folder (rewrites its verdict, plots and summary).
    Check {
        /// The results folder of a run.
        dir: PathBuf,
    },
}

#[derive(Args, Clone)]
struct Common {
    /// Number of metad nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Concurrent client workers.
    #[arg(long, default_value_t = 10)]
    concurrency: usize,
    /// Run the nodes on loopback instead of network namespaces (no partitions; no root).
    #[arg(long)]
    local: bool,
    /// The metad binary (default: `metad` next to this program).
    #[arg(long)]
    metad_bin: Option<PathBuf>,
    /// Parent folder of the results folders.
    #[arg(long, default_value = "jepsen/results")]
    results: PathBuf,
    /// Deliberate bugs to turn on in the nodes (METAD_MUTATIONS), e.g. stale-reads or
    /// skip-token-check. Needs a metad built with `--features mutations`.
    #[arg(long)]
    mutations: Option<String>,
    /// Random seed (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Time a client may spend on one operation before its outcome is unknown, in ms.
    #[arg(long, default_value_t = 5000)]
    op_timeout_ms: u64,
    /// Quiet seconds between fault windows.
    #[arg(long, default_value_t = 5)]
    quiet: u64,
    /// Seconds a fault window lasts.
    #[arg(long, default_value_t = 8)]
    window: u64,
    /// One-way peer latency of the latency nemesis, in ms.
    #[arg(long, default_value_t = 50)]
    latency_ms: u64,
    /// Jitter of the latency nemesis, in ms.
    #[arg(long, default_value_t = 25)]
    jitter_ms: u64,
}

#[derive(Args)]
struct TestArgs {
    /// The workload.
    #[arg(long, value_enum)]
    workload: Workload,
    /// Faults, comma-separated: partition, kill, pause, clock, member, latency; or `all`,
    /// or `none`.
    #[arg(long, default_value = "none")]
    nemesis: String,
    /// Seconds of workload under faults (the final phase comes after).
    #[arg(long, default_value_t = 60)]
    time_limit: u64,
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
struct SmokeArgs {
    /// Seconds per workload.
    #[arg(long, default_value_t = 20)]
    time_limit: u64,
    /// Workloads to run (default: all), comma-separated.
    #[arg(long, value_enum, value_delimiter = ',')]
    workloads: Vec<Workload>,
    #[command(flatten)]
    common: Common,
}

fn parse_faults(s: &str) -> Result<Vec<Fault>, String> {
    use clap::ValueEnum;
    match s.trim() {
        "" | "none" => Ok(vec![]),
        "all" => Ok(Fault::ALL.to_vec()),
        list => list
            .split(',')
            .map(|f| {
                Fault::from_str(f.trim(), true).map_err(|_| {
                    format!(
                        "--nemesis: unknown fault {f:?} (partition, kill, pause, clock, member, \
                         latency, all, none)"
                    )
                })
            })
            .collect(),
    }
}

fn default_metad() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("metad")))
        .unwrap_or_else(|| PathBuf::from("metad"))
}

fn opts(c: &Common, workload: Workload, faults: Vec<Fault>, time_limit: u64) -> RunOpts {
    let seed = c.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    RunOpts {
        workload,
        faults,
        time_limit: Duration::from_secs(time_limit),
        nodes: c.nodes,
        concurrency: c.concurrency,
        local: c.local,
        metad_bin: c.metad_bin.clone().unwrap_or_else(default_metad),
        results: c.results.clone(),
        mutations: c.mutations.clone(),
        seed,
        op_timeout: Duration::from_millis(c.op_timeout_ms),
        quiet: Duration::from_secs(c.quiet),
        window: Duration::from_secs(c.window),
        latency: (
            Duration::from_millis(c.latency_ms),
            Duration::from_millis(c.jitter_ms),
        ),
        finish_timeout: Duration::from_secs(60),
    }
}

fn validate(c: &Common, faults: &[Fault]) -> Result<(), String> {
    if !(1..=9).contains(&c.nodes) {
        return Err(format!("--nodes must be 1..=9, got {}", c.nodes));
    }
    if !(1..=256).contains(&c.concurrency) {
        return Err(format!(
            "--concurrency must be 1..=256, got {}",
            c.concurrency
        ));
    }
    if c.local && faults.contains(&Fault::Partition) {
        return Err("--nemesis partition needs network namespaces; drop --local".into());
    }
    Ok(())
}

async fn run_one(o: RunOpts) -> Result<bool, ExitCode> {
    let seed = o.seed;
    match runner::run(o).await {
        Ok(out) => {
            println!("{}", runner::describe(&out.verdict));
            println!("  results: {} (seed {seed})", out.dir.display());
            Ok(runner::is_valid(&out.verdict))
        }
        Err(e) => {
            eprintln!("metad-jepsen: {e:#}");
            Err(ExitCode::from(2))
        }
    }
}

async fn main_async(cli: Cli) -> ExitCode {
    match cli.cmd {
        Cmd::Test(t) => {
            let faults = match parse_faults(&t.nemesis) {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("metad-jepsen: {e}");
                    return ExitCode::from(2);
                }
            };
            if let Err(e) = validate(&t.common, &faults) {
                eprintln!("metad-jepsen: {e}");
                return ExitCode::from(2);
            }
            match run_one(opts(&t.common, t.workload, faults, t.time_limit)).await {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(code) => code,
            }
        }
        Cmd::Smoke(s) => {
            let faults = if s.common.local {
                vec![Fault::Kill, Fault::Pause]
            } else {
                vec![Fault::Partition, Fault::Kill, Fault::Pause]
            };
            if let Err(e) = validate(&s.common, &faults) {
                eprintln!("metad-jepsen: {e}");
                return ExitCode::from(2);
            }
            let workloads = if s.workloads.is_empty() {
                Workload::ALL.to_vec()
            } else {
                s.workloads.clone()
            };
            let mut all_valid = true;
            for w in workloads {
                let mut o = opts(&s.common, w, faults.clone(), s.time_limit);
                o.quiet = Duration::from_secs(2);
                o.window = Duration::from_secs(4);
                match run_one(o).await {
                    Ok(valid) => all_valid &= valid,
                    Err(code) => return code,
                }
            }
            if all_valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Cmd::Check { dir } => match runner::recheck(&dir) {
            Ok(v) => {
                println!("{}", runner::describe(&v));
                if runner::is_valid(&v) {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(e) => {
                eprintln!("metad-jepsen: {e:#}");
                ExitCode::from(2)
            }
        },
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,metad_jepsen=info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("metad-jepsen: tokio runtime: {e}");
            return ExitCode::from(2);
        }
    };
    // Ctrl-C ends the run; dropping the runtime drops the cluster, which kills the nodes
    // and removes the namespaces.
    let code = rt.block_on(async {
        tokio::select! {
            code = main_async(cli) => code,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("metad-jepsen: interrupted; tearing down");
                ExitCode::from(130)
            }
            _ = metad_client::agent::cmd::sigterm() => {
                eprintln!("metad-jepsen: terminated; tearing down");
                ExitCode::from(143)
            }
        }
    });
    drop(rt);
    code
}
