//! The `metad-agent` reference binary: command-line grammar, logging, signal handling, and
//! wiring a [`PosixDriver`] for the served silo into an [`Agent`]. `src/bin/metad-agent.rs`
//! only calls [`main`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use super::{Agent, AgentConfig, PosixDriver};
use crate::cli::args::{parse_duration, EndpointList, DEFAULT_ENDPOINTS};
use crate::{Client, ClientConfig, ClientError, ReadOptions};

const LONG_ABOUT: &str = "\
metad-agent serves one silo for a metad cluster: it copies files onto that silo when metad
moves them there, and deletes the silo's copies that metad retires. The silo is a directory
tree (a posix silo): the file at namespace path /p/q lives at ROOT/p/q unless its instance
records another location.

How it works: the agent registers a lease for the silo (named <hostname>-<silo> unless --name;
restarting with the same name takes over the old lease at once), keeps it alive, watches
metad for work and claims move tasks in batches. For each task it reads the source copy from
the source silo's root directory on this machine (if that directory is reachable here; see
--source-root), writes the bytes to a temporary name next to the destination, fsyncs,
verifies the BLAKE3 checksum against metad's record, renames into place and commits. Copies
retired by a move (mode move) are deleted after a short grace period and confirmed.

By default it talks to the local `metad dev` cluster (127.0.0.1:7001-7003) and uses the
silo's registered root:

    metad dev &
    metactl site add paris && metactl silo add nas1 --site paris --kind posix --tier warm \\
        --capacity 1TiB --cost 0.01 --root /srv/nas1
    metad-agent --silo nas1

Another cluster, an explicit root, and a source silo mounted elsewhere on this machine:

    metad-agent --endpoints 10.0.1.5:7001,10.0.2.5:7001 --silo gpu-nvme --root /nvme/data \\
        --source-root nas1=/mnt/nas1 --concurrency 16

Stop it with Ctrl-C or SIGTERM: copies in flight are abandoned cleanly (no partial files),
placed copies are committed, and the lease is revoked so its moves are handed out again at
once. Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug) for more.";

/// `metad-agent` command line.
#[derive(Debug, Clone, Parser)]
#[command(name = "metad-agent", version, about = "Serve one silo: copy moved files onto it, delete retired copies", long_about = LONG_ABOUT)]
pub struct AgentArgs {
    /// Name of the silo this agent serves (as registered with `metactl silo add`).
    #[arg(long, value_name = "NAME")]
    pub silo: String,

    /// The silo's directory on this machine. Default: the root registered for the silo.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// Client addresses of cluster nodes, comma-separated (host:port or http://host:port).
    #[arg(
        long,
        env = "METAD_ENDPOINTS",
        default_value = DEFAULT_ENDPOINTS,
        value_parser = parse_endpoints,
        value_name = "ADDRS"
    )]
    pub endpoints: EndpointList,

    /// Agent name (1-128 of [A-Za-z0-9._:-]); keep it stable across restarts so a restarted
    /// agent takes over its previous lease at once. Default: <hostname>-<silo>.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Copies running at once.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub concurrency: usize,

    /// Move tasks claimed per request (1-1000).
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub claim_batch: u32,

    /// Lease time-to-live in milliseconds (1000-300000); renewed every third of it.
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    pub ttl_ms: u64,

    /// Where to read source silo SILO on this machine (repeatable). Default: each source
    /// silo's registered root, when that directory exists here.
    #[arg(long = "source-root", value_name = "SILO=DIR", value_parser = parse_source_root)]
    pub source_roots: Vec<(String, PathBuf)>,

    /// Look for work at least this often, even without a watch event (e.g. 500ms, 2s).
    #[arg(long, default_value = "2s", value_parser = parse_duration, value_name = "DURATION")]
    pub poll_interval: Duration,

    /// Wait this long after a copy is retired before deleting its bytes (readers that found
    /// it just before may still be reading).
    #[arg(long, default_value = "2s", value_parser = parse_duration, value_name = "DURATION")]
    pub release_grace: Duration,

    /// Log the agent's counters this often.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub stats_interval: Duration,
}

fn parse_endpoints(s: &str) -> Result<EndpointList, String> {
    crate::endpoint::parse_list(s)
        .map(EndpointList)
        .map_err(|e| e.message())
}

/// Parses `SILO=DIR` (DIR must be absolute).
pub fn parse_source_root(s: &str) -> Result<(String, PathBuf), String> {
    let (silo, dir) = s
        .split_once('=')
        .ok_or_else(|| format!("expected SILO=DIR, got {s:?}"))?;
    if silo.is_empty() {
        return Err(format!("empty silo name in {s:?}"));
    }
    let dir = PathBuf::from(dir);
    if !dir.is_absolute() {
        return Err(format!("{}: must be an absolute directory", dir.display()));
    }
    Ok((silo.to_string(), dir))
}

impl AgentArgs {
    /// The agent settings these flags ask for.
    pub fn config(&self) -> AgentConfig {
        let mut c = AgentConfig::new(&self.silo);
        if let Some(n) = &self.name {
            c.name = n.clone();
        }
        c.concurrency = self.concurrency;
        c.claim_batch = self.claim_batch;
        c.ttl = Duration::from_millis(self.ttl_ms);
        c.poll_interval = self.poll_interval;
        c.release_grace = self.release_grace;
        c.source_roots = self
            .source_roots
            .iter()
            .cloned()
            .collect::<BTreeMap<_, _>>();
        c
    }
}

/// Entry point of the `metad-agent` binary.
pub fn main() -> ExitCode {
    let args = AgentArgs::parse();
    init_logging();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            if matches!(e, ClientError::Transport { .. }) {
                eprintln!("hint: is the cluster up? By default metad-agent talks to `metad dev` at 127.0.0.1:7001-7003; use --endpoints");
            }
            ExitCode::from(if e.code() == crate::ErrorCode::InvalidArgument {
                2
            } else {
                1
            })
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs the agent described by `args` until Ctrl-C or SIGTERM.
pub async fn run(args: AgentArgs) -> Result<(), ClientError> {
    let client = Client::connect(ClientConfig::new(args.endpoints.0.clone())).await?;
    let root = match &args.root {
        Some(r) => r.clone(),
        None => registered_root(&client, &args.silo).await?,
    };
    if !root.is_dir() {
        return Err(ClientError::InvalidConfig(format!(
            "root {} of silo {} is not a directory on this machine (use --root)",
            root.display(),
            args.silo
        )));
    }
    let agent = Agent::new(client, args.config(), Arc::new(PosixDriver::new(root)));
    let stats = agent.stats();
    let every = args.stats_interval;
    let reporter = tokio::spawn(async move {
        let mut last = stats.snapshot();
        loop {
            tokio::time::sleep(every).await;
            let now = stats.snapshot();
            if now != last {
                tracing::info!(
                    copied_files = now.copied_files,
                    copied_bytes = now.copied_bytes,
                    committed = now.committed,
                    recopies = now.recopies,
                    refused = now.refused,
                    failures = now.failures,
                    released = now.released,
                    "progress"
                );
                last = now;
            }
        }
    });
    let r = agent.run(shutdown_signal()).await;
    reporter.abort();
    r
}

/// The root registered for `silo`, as a directory path.
async fn registered_root(client: &Client, silo: &str) -> Result<PathBuf, ClientError> {
    let silos = client.list_silos("", ReadOptions::default()).await?;
    let s = silos.silos.iter().find(|s| s.name == silo).ok_or_else(|| {
        ClientError::InvalidConfig(format!("no silo named {silo:?} (see `metactl silo ls`)"))
    })?;
    let root = PathBuf::from(&s.root);
    if s.root.is_empty() || !root.is_absolute() {
        return Err(ClientError::InvalidConfig(format!(
            "silo {silo} has root {:?}, not a directory this posix agent can serve; pass --root",
            s.root
        )));
    }
    Ok(root)
}

/// Completes on SIGTERM (never, if the handler cannot be installed).
pub async fn sigterm() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending::<()>().await,
    }
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = sigterm() => {}
    }
    tracing::info!("shutdown requested");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<AgentArgs, clap::Error> {
        AgentArgs::try_parse_from(std::iter::once("metad-agent").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_and_flags() {
        let a = parse(&["--silo", "nas1"]).expect("parse");
        assert_eq!(a.silo, "nas1");
        assert_eq!(a.root, None);
        assert_eq!(a.endpoints.0.len(), 3, "metad dev by default");
        let c = a.config();
        assert_eq!(c.concurrency, 8);
        assert_eq!(c.claim_batch, 256);
        assert_eq!(c.ttl, Duration::from_secs(10));
        assert!(c.name.ends_with("-nas1"));

        let a = parse(&[
            "--silo",
            "gpu",
            "--root",
            "/nvme",
            "--endpoints",
            "10.0.0.1:7001",
            "--name",
            "a1",
            "--concurrency",
            "16",
            "--claim-batch",
            "100",
            "--ttl-ms",
            "3000",
            "--source-root",
            "nas1=/mnt/nas1",
            "--source-root",
            "s2=/x",
            "--poll-interval",
            "500ms",
        ])
        .expect("parse");
        let c = a.config();
        assert_eq!(a.root, Some(PathBuf::from("/nvme")));
        assert_eq!(a.endpoints.0, ["http://10.0.0.1:7001"]);
        assert_eq!(c.name, "a1");
        assert_eq!((c.concurrency, c.claim_batch), (16, 100));
        assert_eq!(c.ttl, Duration::from_secs(3));
        assert_eq!(c.poll_interval, Duration::from_millis(500));
        assert_eq!(
            c.source_roots.get("nas1"),
            Some(&PathBuf::from("/mnt/nas1"))
        );
        assert_eq!(c.source_roots.len(), 2);
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        assert!(parse(&[]).is_err(), "--silo is required");
        assert!(parse(&["--silo", "a", "--source-root", "nas1"]).is_err());
        assert!(parse(&["--silo", "a", "--source-root", "nas1=relative"]).is_err());
        assert!(parse(&["--silo", "a", "--endpoints", "nohost"]).is_err());
    }

    #[test]
    fn help_teaches() {
        let e = parse(&["--help"]).expect_err("help");
        let text = e.to_string();
        for want in ["--source-root", "--root", "metad dev", "SIGTERM", "BLAKE3"] {
            assert!(text.contains(want), "help lacks {want}");
        }
    }
}
