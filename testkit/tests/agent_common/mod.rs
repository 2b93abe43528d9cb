//! Shared helpers of the agent integration tests: a 3-node cluster with posix silos in a
//! tempdir, in-process agents, file generators, and a source driver whose reads wait for a
//! permit (to hold claims open).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use metad_client::agent::{
    Agent, AgentConfig, AgentStats, BoxFuture, ByteReader, PosixDriver, SiloDriver, Staged,
};
use metad_client::cli::args::{Cli, Command, EndpointList, OutputFormat};
use metad_client::cli::commands;
use metad_client::cli::importcmd::{ImportArgs, ImportCmd};
use metad_client::{pb, Client, ReadOptions, SiloSpec};
use metad_testkit::{init_logging, wait_until, Cluster};
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinHandle;

pub const T: Duration = Duration::from_secs(60);

pub struct Env {
    pub cluster: Cluster,
    pub client: Client,
    pub dir: tempfile::TempDir,
}

impl Env {
    pub async fn new(silos: &[&str]) -> anyhow::Result<Env> {
        init_logging();
        let cluster = Cluster::builder().nodes(3).build().await?;
        cluster.wait_for_leader(T).await?;
        let client = cluster.client().await?;
        let dir = tempfile::tempdir()?;
        for (i, s) in silos.iter().enumerate() {
            let site = format!("site-{i}");
            client.register_site(&site, "", "", BTreeMap::new()).await?;
            let root = dir.path().join(s);
            std::fs::create_dir_all(&root)?;
            client
                .register_silo(SiloSpec {
                    name: s.to_string(),
                    site,
                    kind: pb::SiloKind::Posix,
                    tier: pb::SiloTier::Warm,
                    capacity_bytes: 1 << 40,
                    cost_per_gib_month: 0.01,
                    root: root.to_string_lossy().into_owned(),
                    labels: BTreeMap::new(),
                })
                .await?;
        }
        Ok(Env {
            cluster,
            client,
            dir,
        })
    }

    pub fn root(&self, silo: &str) -> PathBuf {
        self.dir.path().join(silo)
    }

    pub fn cli(&self, command: Command) -> Cli {
        let eps = self
            .cluster
            .ids()
            .iter()
            .map(|id| format!("http://{}", self.cluster.client_addr(*id)))
            .collect();
        Cli {
            endpoints: EndpointList(eps),
            output: OutputFormat::Json,
            timeout: T,
            command,
        }
    }

    /// `metactl import ROOT/sub --silo silo --into into`, as JSON.
    pub async fn import(
        &self,
        silo: &str,
        sub: &str,
        into: &str,
    ) -> anyhow::Result<commands::Output> {
        let cli = self.cli(Command::Import(ImportCmd::Import(ImportArgs {
            dir: self.root(silo).join(sub),
            silo: silo.into(),
            into: into.into(),
            batch: 7,
            no_checksum: false,
        })));
        commands::execute(&cli)
            .await
            .map_err(|e| anyhow::anyhow!("import: {e}"))
    }

    pub fn config(&self, silo: &str, name: &str) -> AgentConfig {
        let mut c = AgentConfig::new(silo);
        c.name = name.into();
        c.ttl = Duration::from_secs(3);
        c.poll_interval = Duration::from_millis(300);
        c.release_grace = Duration::from_millis(200);
        c.tombstone_interval = Duration::from_millis(300);
        c.concurrency = 4;
        c
    }

    pub fn spawn(&self, agent: Agent) -> Running {
        let stats = agent.stats();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(agent.run(async move {
            let _ = rx.await;
        }));
        Running {
            stop: Some(tx),
            task,
            stats,
        }
    }

    pub async fn start(&self, silo: &str, name: &str) -> anyhow::Result<Running> {
        let client = self.cluster.client().await?;
        let driver = Arc::new(PosixDriver::new(self.root(silo)));
        Ok(self.spawn(Agent::new(client, self.config(silo, name), driver)))
    }
}

pub struct Running {
    pub stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<Result<(), metad_client::ClientError>>,
    pub stats: Arc<AgentStats>,
}

impl Running {
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(T, self.task).await???;
        Ok(())
    }
}

/// Deterministic pseudo-random bytes.
pub fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Writes `n` files of mixed sizes (0 B .. ~3 MiB) under `dir`; returns rel path -> bytes.
pub fn make_files(dir: &Path, n: usize) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    for i in 0..n {
        let len = match i % 5 {
            0 => 0,
            1 => 17,
            2 => 4096 + i,
            3 => 300_000 + i,
            _ => (3 << 20) + i,
        };
        let rel = format!("d{}/f{i:03}.bin", i % 3);
        let p = dir.join(&rel);
        std::fs::create_dir_all(p.parent().ok_or_else(|| anyhow::anyhow!("no parent"))?)?;
        let bytes = data(i as u64, len);
        std::fs::write(&p, &bytes)?;
        out.insert(rel, bytes);
    }
    Ok(out)
}

/// Every file under `dir` whose name marks an agent's temporary copy.
pub fn temp_files(dir: &Path) -> Vec<PathBuf> {
    walk(dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".metad-tmp-"))
        .collect()
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

pub async fn wait_batch_done(client: &Client, batch: u64, n: u64) -> anyhow::Result<pb::MoveBatch> {
    wait_until(T, &format!("batch {batch}: {n} moves done"), || async {
        let b = client
            .get_move_batch(batch, ReadOptions::default())
            .await
            .ok()?
            .batch?;
        (b.done == n).then_some(b)
    })
    .await
}

/// The instances of `path`: silo -> (state, checksum, location).
pub async fn instances(client: &Client, silo: &str) -> anyhow::Result<BTreeMap<u64, pb::Instance>> {
    let mut out = BTreeMap::new();
    let mut cursor = String::new();
    loop {
        let r = client
            .list_instances(silo, &cursor, 1000, ReadOptions::default())
            .await?;
        for i in r.instances {
            out.insert(i.ino, i);
        }
        if r.next_cursor.is_empty() {
            return Ok(out);
        }
        cursor = r.next_cursor;
    }
}

/// A posix driver whose source reads wait for a permit.
pub struct Gated {
    pub inner: PosixDriver,
    pub gate: Arc<Semaphore>,
}

impl SiloDriver for Gated {
    fn describe(&self) -> String {
        format!("gated-{}", self.inner.describe())
    }
    fn stat<'a>(&'a self, l: &'a str) -> BoxFuture<'a, std::io::Result<Option<u64>>> {
        self.inner.stat(l)
    }
    fn open<'a>(&'a self, l: &'a str) -> BoxFuture<'a, std::io::Result<ByteReader>> {
        Box::pin(async move {
            let p = self
                .gate
                .acquire()
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            p.forget();
            self.inner.open(l).await
        })
    }
    fn stage<'a>(&'a self, l: &'a str, s: ByteReader) -> BoxFuture<'a, std::io::Result<Staged>> {
        self.inner.stage(l, s)
    }
    fn publish(&self, s: Staged) -> BoxFuture<'_, std::io::Result<()>> {
        self.inner.publish(s)
    }
    fn discard(&self, s: Staged) -> BoxFuture<'_, std::io::Result<()>> {
        self.inner.discard(s)
    }
    fn delete<'a>(&'a self, l: &'a str) -> BoxFuture<'a, std::io::Result<bool>> {
        self.inner.delete(l)
    }
}

/// A posix driver whose reads of some locations wait until those are let go.
pub struct HoldLocations {
    pub inner: PosixDriver,
    pub held: std::sync::Mutex<std::collections::HashSet<String>>,
    pub changed: tokio::sync::Notify,
    /// Opens of held locations that are waiting.
    pub waiting: std::sync::atomic::AtomicU64,
}

impl HoldLocations {
    pub fn new(inner: PosixDriver, held: &[&str]) -> HoldLocations {
        HoldLocations {
            inner,
            held: std::sync::Mutex::new(held.iter().map(|s| s.to_string()).collect()),
            changed: tokio::sync::Notify::new(),
            waiting: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn release_all(&self) {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.changed.notify_waiters();
    }

    fn is_held(&self, l: &str) -> bool {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(l)
    }
}

impl SiloDriver for HoldLocations {
    fn describe(&self) -> String {
        format!("held-{}", self.inner.describe())
    }
    fn stat<'a>(&'a self, l: &'a str) -> BoxFuture<'a, std::io::Result<Option<u64>>> {
        self.inner.stat(l)
    }
    fn open<'a>(&'a self, l: &'a str) -> BoxFuture<'a, std::io::Result<ByteReader>> {
        Box::pin(async move {
            if self.is_held(l) {
                self.waiting
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                while self.is_held(l) {
                    let n = self.changed.notified();
                    if !self.is_held(l) {
                        break;
                    }
                    n.await;
                }
            }
            self.inner.open(l).await
        })
    }
    fn stage<'a>(&'a self, l: &'a str, s: ByteReader) -> BoxFuture<'a, std::io::Result<Staged>> {
        self.inner.stage(l, s)
    }
    fn publish(&self, s: Staged) -> BoxFuture<'_, std::io::Result<()>> {
        self.inner.publish(s)
    }
    fn discard(&self, s: Staged) -> BoxFuture<'_, std::io::Result<()>> {
        self.inner.discard(s)
    }
    fn delete<'a>(&'a self, l: &'a str) -> BoxFuture<'a, std::io::Result<bool>> {
        self.inner.delete(l)
    }
}
