//! The agent SDK: a data-plane agent serving one silo. [`Agent`] registers a lease, keeps it
//! alive, watches for work, claims move tasks in batches, copies bytes with bounded
//! concurrency through [`SiloDriver`]s, verifies checksums, commits in batches, deletes the
//! bytes of released instances and reclaimed tombstones, and revokes its lease on shutdown.
//!
//! Modules: `driver` (the [`SiloDriver`] trait, checksums, locations), `posix` (the
//! directory-tree driver), `run` (the main loop), `copy` (one copy task), `commit` (batched
//! CompleteMoves), `fence` (no stale copy placed over a newer one), `release` (released instances and tombstones), `wake` (the watch that
//! wakes the loop), `stats` (counters), `cmd` (the `metad-agent` binary).
//!
//! ```no_run
//! # async fn demo() -> Result<(), metad_client::ClientError> {
//! use std::sync::Arc;
//! use metad_client::agent::{Agent, AgentConfig, PosixDriver};
//! use metad_client::{Client, ClientConfig};
//!
//! let client = Client::connect(ClientConfig::new(["127.0.0.1:7001"])).await?;
//! let agent = Agent::new(client, AgentConfig::new("nas1"), Arc::new(PosixDriver::new("/mnt/nas1")));
//! let stats = agent.stats();
//! agent.run(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! println!("{:?}", stats.snapshot());
//! # Ok(()) }
//! ```

pub mod cmd;
mod commit;
mod copy;
pub mod driver;
mod fence;
pub mod posix;
mod release;
mod run;
mod stats;
mod wake;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use driver::{
    check_location, checksum_of, checksum_reader, is_verifiable, BoxFuture, ByteReader, SiloDriver,
    Staged, TaskReader, CHECKSUM_PREFIX,
};
pub use posix::PosixDriver;
pub use stats::{AgentStats, StatsSnapshot};

use crate::Client;

/// Settings of one [`Agent`].
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// The silo this agent serves (copies land here; its released copies are deleted here).
    pub silo: String,
    /// Stable agent name (1..=128 of `[A-Za-z0-9._:-]`). Registering again with the same name
    /// replaces the previous lease at once, so a restarted agent does not wait for the TTL.
    pub name: String,
    /// Lease TTL (1 s ..= 300 s).
    pub ttl: Duration,
    /// Copy tasks claimed per ClaimMoves (1..=1000).
    pub claim_batch: u32,
    /// Copies running at once.
    pub concurrency: usize,
    /// Claim at least this often even without a watch event.
    pub poll_interval: Duration,
    /// How long an instance must have been RELEASING before its bytes are deleted (readers
    /// that located it just before may still be reading).
    pub release_grace: Duration,
    /// Progress of a long copy is reported at most this often.
    pub progress_interval: Duration,
    /// Completions per CompleteMoves call, and the longest a completion waits for company.
    pub commit_batch: usize,
    pub commit_delay: Duration,
    /// Tombstones on the silo are reclaimed this often (and when a watch event says so).
    pub tombstone_interval: Duration,
    /// Where to read each source silo on this machine (overrides the silo's registered root).
    pub source_roots: BTreeMap<String, PathBuf>,
    /// Before placing a copy, confirm with metad (one linearizable GetMove) that its claim
    /// is still current. Needed when several agents serve one silo; inside one agent stale
    /// copies are fenced locally anyway.
    pub confirm_claims: bool,
    /// Temporary files not modified for this long are leftovers of a killed agent: removed
    /// at start and every `temp_max_age` after.
    pub temp_max_age: Duration,
}

impl AgentConfig {
    /// Defaults for `silo`, named [`default_name`]`(silo)`.
    pub fn new(silo: &str) -> AgentConfig {
        AgentConfig {
            silo: silo.to_string(),
            name: default_name(silo),
            ttl: Duration::from_secs(10),
            claim_batch: 256,
            concurrency: 8,
            poll_interval: Duration::from_secs(2),
            release_grace: Duration::from_secs(2),
            progress_interval: Duration::from_secs(1),
            commit_batch: 256,
            commit_delay: Duration::from_millis(30),
            tombstone_interval: Duration::from_secs(10),
            source_roots: BTreeMap::new(),
            temp_max_age: Duration::from_secs(3600),
            confirm_claims: true,
        }
    }

    /// Clamps every field into its valid range.
    pub(crate) fn normalized(mut self) -> AgentConfig {
        let ms = self.ttl.as_millis().clamp(1_000, 300_000);
        self.ttl = Duration::from_millis(ms as u64);
        self.claim_batch = self.claim_batch.clamp(1, 1000);
        self.concurrency = self.concurrency.max(1);
        self.commit_batch = self.commit_batch.clamp(1, crate::moves::MAX_BATCH);
        self.poll_interval = self.poll_interval.max(Duration::from_millis(10));
        self.progress_interval = self.progress_interval.max(Duration::from_millis(10));
        self.tombstone_interval = self.tombstone_interval.max(Duration::from_millis(100));
        self
    }
}

/// `<hostname>-<silo>`, reduced to the characters an agent name may hold.
pub fn default_name(silo: &str) -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .map(|h| h.to_string_lossy().into_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "agent".to_string());
    sanitize_name(&format!("{host}-{silo}"))
}

/// Replaces characters outside `[A-Za-z0-9._:-]` with `-` and cuts to 128 bytes.
pub fn sanitize_name(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._:-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    s.truncate(128);
    if s.is_empty() {
        s.push_str("agent");
    }
    s
}

/// A data-plane agent for one silo. Build it, keep [`Agent::stats`] if you want counters,
/// then [`Agent::run`] it until a shutdown signal.
pub struct Agent {
    pub(crate) client: Client,
    pub(crate) config: AgentConfig,
    pub(crate) target: Arc<dyn SiloDriver>,
    pub(crate) sources: Sources,
    pub(crate) stats: Arc<AgentStats>,
}

impl Agent {
    /// An agent for `config.silo`, writing through `target` (the driver of that silo).
    pub fn new(client: Client, config: AgentConfig, target: Arc<dyn SiloDriver>) -> Agent {
        let config = config.normalized();
        let sources = Sources {
            roots: config.source_roots.clone(),
            fixed: HashMap::new(),
            cache: Mutex::new(HashMap::new()),
        };
        Agent {
            client,
            config,
            target,
            sources,
            stats: Arc::new(AgentStats::default()),
        }
    }

    /// Reads source silo `silo` through `driver` instead of a posix driver at its root.
    pub fn with_source_driver(mut self, silo: &str, driver: Arc<dyn SiloDriver>) -> Agent {
        self.sources.fixed.insert(silo.to_string(), driver);
        self
    }

    /// The agent's counters (live while it runs).
    pub fn stats(&self) -> Arc<AgentStats> {
        Arc::clone(&self.stats)
    }

    pub fn config(&self) -> &AgentConfig {
        &self.config
    }
}

/// Drivers of source silos: fixed ones, else a posix driver at the configured or registered
/// root when that directory exists on this machine.
pub(crate) struct Sources {
    roots: BTreeMap<String, PathBuf>,
    fixed: HashMap<String, Arc<dyn SiloDriver>>,
    cache: Mutex<HashMap<(String, PathBuf), Arc<dyn SiloDriver>>>,
}

impl Sources {
    /// The driver for reading `silo` (registered root `root`), or `Err(dir)` naming the
    /// directory that is not reachable here.
    pub(crate) fn get(&self, silo: &str, root: &str) -> Result<Arc<dyn SiloDriver>, String> {
        if let Some(d) = self.fixed.get(silo) {
            return Ok(Arc::clone(d));
        }
        let dir = match self.roots.get(silo) {
            Some(d) => d.clone(),
            None => PathBuf::from(root),
        };
        if root.is_empty() && !self.roots.contains_key(silo) {
            return Err(format!("silo {silo} has no registered root"));
        }
        let key = (silo.to_string(), dir.clone());
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = cache.get(&key) {
            return Ok(Arc::clone(d));
        }
        // Not cached when missing: the directory may be mounted later.
        if !dir.is_absolute() || !dir.is_dir() {
            return Err(format!("{} (silo {silo})", dir.display()));
        }
        let d: Arc<dyn SiloDriver> = Arc::new(PosixDriver::new(dir));
        cache.insert(key, Arc::clone(&d));
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sanitized() {
        assert_eq!(sanitize_name("host 1/nas"), "host-1-nas");
        assert_eq!(sanitize_name(""), "agent");
        assert_eq!(sanitize_name(&"x".repeat(300)).len(), 128);
        let n = default_name("nas1");
        assert!(n.ends_with("-nas1"), "{n}");
        assert!(n
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b)));
    }

    #[test]
    fn config_is_clamped() {
        let mut c = AgentConfig::new("s");
        c.ttl = Duration::from_millis(10);
        c.claim_batch = 5000;
        c.concurrency = 0;
        c.commit_batch = 0;
        let c = c.normalized();
        assert_eq!(c.ttl, Duration::from_secs(1));
        assert_eq!(c.claim_batch, 1000);
        assert_eq!(c.concurrency, 1);
        assert_eq!(c.commit_batch, 1);
    }

    #[test]
    fn source_roots_resolve_only_existing_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut roots = BTreeMap::new();
        roots.insert("b".to_string(), dir.path().to_path_buf());
        let s = Sources {
            roots,
            fixed: HashMap::new(),
            cache: Mutex::new(HashMap::new()),
        };
        assert!(s.get("a", "/definitely/not/here").is_err());
        assert!(s.get("a", "").is_err());
        assert!(s.get("a", "relative/dir").is_err());
        let root = dir.path().to_string_lossy().into_owned();
        assert!(s.get("a", &root).is_ok());
        assert!(s.get("b", "/definitely/not/here").is_ok(), "override wins");
    }
}
