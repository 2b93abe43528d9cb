//! In-process clusters of real nodes: real redb files in a temp dir, real gRPC over loopback
//! sockets bound to port 0, one shared `FaultInjector` for the peer links.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use metad::config::{Config, InitialMember, RaftTuning};
use metad::faults::FaultInjector;
use metad::{Listeners, MetaNode, StartOptions};
use metad_client::{Client, ClientConfig};
use tokio::net::TcpListener;

use crate::wait::wait_until;

const SITES: [&str; 3] = ["site-a", "site-b", "site-c"];

type ConfigHook = std::sync::Arc<dyn Fn(&mut Config) + Send + Sync>;

pub struct ClusterBuilder {
    nodes: u64,
    metrics: bool,
    hook: Option<ConfigHook>,
    tuning: RaftTuning,
    request_timeout_ms: u64,
}

impl ClusterBuilder {
    pub fn nodes(mut self, n: u64) -> Self {
        self.nodes = n;
        self
    }

    /// Snapshot after `every` entries, keeping `keep` entries behind it.
    pub fn snapshots(mut self, every: u64, keep: u64) -> Self {
        self.tuning.snapshot_after_entries = every;
        self.tuning.keep_entries_after_snapshot = keep;
        self
    }

    /// Adjusts every node's configuration (after the harness has filled it in).
    pub fn configure(mut self, f: impl Fn(&mut Config) + Send + Sync + 'static) -> Self {
        self.hook = Some(std::sync::Arc::new(f));
        self
    }

    /// Serve Prometheus `/metrics` on a port-0 listener per node.
    pub fn metrics(mut self, on: bool) -> Self {
        self.metrics = on;
        self
    }

    pub fn request_timeout_ms(mut self, ms: u64) -> Self {
        self.request_timeout_ms = ms;
        self
    }

    pub async fn build(self) -> anyhow::Result<Cluster> {
        let dir = tempfile::tempdir()?;
        let faults = Arc::new(FaultInjector::new());
        let mut bound = Vec::new();
        for id in 1..=self.nodes {
            let client = TcpListener::bind("127.0.0.1:0").await?;
            let peer = TcpListener::bind("127.0.0.1:0").await?;
            bound.push((id, client, peer));
        }
        let members: Vec<InitialMember> = bound
            .iter()
            .map(|(id, c, p)| -> anyhow::Result<InitialMember> {
                Ok(InitialMember {
                    id: *id,
                    site: site_of(*id),
                    peer_addr: p.local_addr()?.to_string(),
                    client_addr: c.local_addr()?.to_string(),
                })
            })
            .collect::<anyhow::Result<_>>()?;
        let mut cluster = Cluster {
            dir,
            faults,
            slots: BTreeMap::new(),
            tuning: self.tuning,
            request_timeout_ms: self.request_timeout_ms,
            hook: self.hook,
        };
        for (id, client, peer) in bound {
            let config = cluster.config_for(
                id,
                client.local_addr()?,
                peer.local_addr()?,
                members.clone(),
            );
            let metrics = match self.metrics {
                true => Some(TcpListener::bind("127.0.0.1:0").await?),
                false => None,
            };
            let listeners = Listeners {
                client,
                peer,
                metrics,
            };
            let node = launch(&cluster.faults, config.clone(), listeners).await?;
            cluster.slots.insert(
                id,
                Slot {
                    config,
                    node: Some(node),
                },
            );
        }
        Ok(cluster)
    }
}

/// Starts one node of a test cluster, wired to the cluster's shared fault injector.
async fn launch(
    faults: &Arc<FaultInjector>,
    config: Config,
    listeners: Listeners,
) -> anyhow::Result<MetaNode> {
    let id = config.node_id;
    let opts = StartOptions {
        faults: Some(faults.clone()),
    };
    MetaNode::start(config, listeners, opts)
        .await
        .with_context(|| format!("start node {id}"))
}

/// Site of node `id` in test clusters: ids 1, 2, 3 at site-a, -b, -c, and round-robin after.
pub fn site_of(id: u64) -> String {
    SITES[((id - 1) % 3) as usize].to_string()
}

struct Slot {
    config: Config,
    node: Option<MetaNode>,
}

pub struct Cluster {
    dir: tempfile::TempDir,
    faults: Arc<FaultInjector>,
    slots: BTreeMap<u64, Slot>,
    tuning: RaftTuning,
    request_timeout_ms: u64,
    hook: Option<ConfigHook>,
}

impl Cluster {
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder {
            nodes: 3,
            metrics: false,
            hook: None,
            tuning: RaftTuning {
                heartbeat_ms: 50,
                election_timeout_min_ms: 300,
                election_timeout_max_ms: 600,
                snapshot_after_entries: 5_000,
                keep_entries_after_snapshot: 500,
                snapshot_chunk_bytes: 64 * 1024,
                ..RaftTuning::default()
            },
            request_timeout_ms: 3_000,
        }
    }

    fn config_for(
        &self,
        id: u64,
        client: SocketAddr,
        peer: SocketAddr,
        members: Vec<InitialMember>,
    ) -> Config {
        let mut c = Config {
            node_id: id,
            site: site_of(id),
            data_dir: self.dir.path().join(format!("node-{id}")),
            listen_client: client.to_string(),
            listen_peer: peer.to_string(),
            listen_metrics: String::new(),
            initial_cluster: members,
            request_timeout_ms: self.request_timeout_ms,
            raft: self.tuning.clone(),
            ..Config::default()
        };
        if let Some(h) = &self.hook {
            h(&mut c);
        }
        c
    }

    pub fn faults(&self) -> &Arc<FaultInjector> {
        &self.faults
    }

    /// Every node id ever started (running or not).
    pub fn ids(&self) -> Vec<u64> {
        self.slots.keys().copied().collect()
    }

    /// Every node's id but `id` (e.g. the followers of a leader).
    pub fn others(&self, id: u64) -> Vec<u64> {
        self.ids().into_iter().filter(|&i| i != id).collect()
    }

    pub fn running_ids(&self) -> Vec<u64> {
        self.slots
            .iter()
            .filter(|(_, s)| s.node.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn node(&self, id: u64) -> &MetaNode {
        match self.slots.get(&id).and_then(|s| s.node.as_ref()) {
            Some(n) => n,
            None => panic!("node {id} is not running"),
        }
    }

    pub fn client_addr(&self, id: u64) -> String {
        self.slots
            .get(&id)
            .map(|s| s.config.listen_client.clone())
            .unwrap_or_default()
    }

    pub fn data_dir(&self, id: u64) -> std::path::PathBuf {
        self.dir.path().join(format!("node-{id}"))
    }

    /// Graceful stop (drains requests, stops Raft). Data stays for `restart`.
    pub async fn stop(&mut self, id: u64) {
        if let Some(n) = self.slots.get_mut(&id).and_then(|s| s.node.take()) {
            n.shutdown().await;
        }
    }

    /// Abrupt stop: servers aborted, no drain. (Real SIGKILL is in the process tests.)
    pub async fn kill(&mut self, id: u64) {
        if let Some(n) = self.slots.get_mut(&id).and_then(|s| s.node.take()) {
            n.abort().await;
        }
    }

    /// Starts a stopped node again on the same addresses and data dir.
    pub async fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        let slot = self.slots.get_mut(&id).context("unknown node")?;
        anyhow::ensure!(slot.node.is_none(), "node {id} is running");
        let config = slot.config.clone();
        let listeners = wait_until(Duration::from_secs(10), "rebind node ports", || {
            let c = config.clone();
            async move {
                let client = TcpListener::bind(&c.listen_client).await.ok()?;
                let peer = TcpListener::bind(&c.listen_peer).await.ok()?;
                Some(Listeners {
                    client,
                    peer,
                    metrics: None,
                })
            }
        })
        .await?;
        slot.node = Some(launch(&self.faults, config, listeners).await?);
        Ok(())
    }

    /// Starts a brand-new node `id` with no bootstrap list (to be added as a learner).
    pub async fn start_new_node(&mut self, id: u64) -> anyhow::Result<()> {
        anyhow::ensure!(!self.slots.contains_key(&id), "node {id} exists");
        let client = TcpListener::bind("127.0.0.1:0").await?;
        let peer = TcpListener::bind("127.0.0.1:0").await?;
        let config = self.config_for(id, client.local_addr()?, peer.local_addr()?, vec![]);
        let listeners = Listeners {
            client,
            peer,
            metrics: None,
        };
        let node = launch(&self.faults, config.clone(), listeners).await?;
        self.slots.insert(
            id,
            Slot {
                config,
                node: Some(node),
            },
        );
        Ok(())
    }

    /// The leader agreed by the running nodes that know one (None if none or disagreeing).
    pub fn leader(&self) -> Option<u64> {
        let mut best: Option<(u64, u64)> = None; // (term, id)
        for id in self.running_ids() {
            let m = self.node(id).raft().metrics().borrow().clone();
            if m.current_leader == Some(id) && best.map(|(t, _)| m.current_term > t).unwrap_or(true)
            {
                best = Some((m.current_term, id));
            }
        }
        best.map(|(_, id)| id)
    }

    pub async fn wait_for_leader(&self, timeout: Duration) -> anyhow::Result<u64> {
        wait_until(timeout, "a leader", || async { self.leader() }).await
    }

    /// Waits for a leader other than `old`.
    pub async fn wait_for_new_leader(&self, old: u64, timeout: Duration) -> anyhow::Result<u64> {
        wait_until(timeout, "a new leader", || async {
            self.leader().filter(|l| *l != old)
        })
        .await
    }

    /// Waits until node `id` has applied at least `revision`.
    pub async fn wait_revision(
        &self,
        id: u64,
        revision: u64,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let what = format!("node {id} to apply revision {revision}");
        wait_until(timeout, &what, || async {
            (self.node(id).core().sm.applied().revision >= revision).then_some(())
        })
        .await
    }

    /// A client over every running node's endpoint.
    pub async fn client(&self) -> anyhow::Result<Client> {
        self.client_with(|_| {}).await
    }

    pub async fn client_with(&self, f: impl FnOnce(&mut ClientConfig)) -> anyhow::Result<Client> {
        let eps: Vec<String> = self
            .running_ids()
            .iter()
            .map(|id| self.client_addr(*id))
            .collect();
        let mut cfg = ClientConfig::new(eps);
        cfg.request_timeout = Duration::from_secs(5);
        cfg.total_timeout = Duration::from_secs(20);
        f(&mut cfg);
        Ok(Client::connect(cfg).await?)
    }

    /// A client whose every call goes to node `id` only.
    pub async fn client_for(&self, id: u64) -> anyhow::Result<Client> {
        let c = self.client().await?;
        Ok(c.on_addr(&self.client_addr(id))?)
    }

    /// Cuts `id` off from all other nodes.
    pub fn isolate(&self, id: u64) {
        self.faults.isolate(id, &self.ids());
    }

    pub fn partition(&self, groups: &[Vec<u64>]) {
        self.faults.partition(groups);
    }

    pub fn heal(&self) {
        self.faults.heal();
    }

    pub async fn shutdown(mut self) {
        for id in self.ids() {
            self.stop(id).await;
        }
    }
}
