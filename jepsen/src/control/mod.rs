//! Control of the `metad` processes under test: start, kill -9, restart, SIGSTOP/SIGCONT,
//! clock skew (libfaketime), partitions (via `netns`), WAN latency (via `proxy`), wiping a
//! node for a membership re-add, and teardown on drop (also after a panic). Each node runs
//! in its own network namespace (or on loopback with `local`), with its data and log under
//! the run's folder. Peer (Raft) traffic to node *i* always goes through proxy *i*; clients
//! talk to nodes directly. Must not know about workloads or checkers.

pub mod netns;
pub mod proxy;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use metad_client::{Client, ClientConfig};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use netns::Net;
use proxy::Proxy;

/// libfaketime as installed by Debian's `faketime` package.
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// How to start the cluster.
#[derive(Debug, Clone)]
pub struct ClusterOpts {
    pub nodes: usize,
    pub metad_bin: PathBuf,
    /// The run's folder: data in `data/n<i>`, logs in `logs/n<i>.log`.
    pub dir: PathBuf,
    /// Loopback processes instead of network namespaces (no partitions).
    pub local: bool,
    /// Extra flags for every node.
    pub extra_args: Vec<String>,
    /// `METAD_MUTATIONS` for every node (needs a binary built with `--features mutations`).
    pub mutations: Option<String>,
    /// Start nodes under libfaketime so that the clock nemesis can skew them.
    pub faketime: bool,
    /// Raft heartbeat interval in ms. openraft 0.9 gives every AppendEntries one heartbeat
    /// interval, so it must exceed the peer round trip (the latency nemesis adds ~100 ms).
    pub heartbeat_ms: u64,
}

struct Node {
    id: usize,
    ip: IpAddr,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
    paused: bool,
    /// Whether the next start should join as a learner (after a membership removal).
    join: bool,
}

/// A running cluster.
pub struct Cluster {
    opts: ClusterOpts,
    nodes: Vec<Node>,
    proxies: Vec<Proxy>,
    // Declared last: namespaces go after the processes in them are killed (Drop order).
    net: Option<Net>,
}

impl Cluster {
    /// Starts every node and waits until the cluster has a leader.
    pub async fn start(opts: ClusterOpts) -> anyhow::Result<Cluster> {
        if !opts.metad_bin.is_file() {
            bail!(
                "metad binary {} not found; build it (cargo build -p metad) or pass --metad-bin",
                opts.metad_bin.display()
            );
        }
        if opts.faketime && !Path::new(LIBFAKETIME).is_file() {
            bail!("clock nemesis needs {LIBFAKETIME}: apt-get install -y faketime");
        }
        std::fs::create_dir_all(opts.dir.join("data"))?;
        std::fs::create_dir_all(opts.dir.join("logs"))?;
        let net = if opts.local {
            None
        } else {
            Some(Net::create(opts.nodes)?)
        };
        let mut nodes = Vec::new();
        let mut proxies = Vec::new();
        for id in 1..=opts.nodes {
            let (ip, client_port, peer_port) = match &net {
                Some(net) => (IpAddr::V4(net.node_ip(id)), 7001, 7101),
                None => {
                    let p = free_ports(2)?;
                    (IpAddr::V4(Ipv4Addr::LOCALHOST), p[0], p[1])
                }
            };
            let proxy_bind = match &net {
                Some(net) => SocketAddr::new(IpAddr::V4(net.bridge_ip()), 0),
                None => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            };
            proxies.push(Proxy::start(proxy_bind, SocketAddr::new(ip, peer_port)).await?);
            nodes.push(Node {
                id,
                ip,
                client_port,
                peer_port,
                child: None,
                paused: false,
                join: false,
            });
        }
        let mut cluster = Cluster {
            opts,
            nodes,
            proxies,
            net,
        };
        for id in 1..=cluster.opts.nodes {
            cluster.write_clock(id, 0)?;
            cluster.start_node(id)?;
        }
        cluster.wait_for_leader(Duration::from_secs(60)).await?;
        Ok(cluster)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn is_local(&self) -> bool {
        self.net.is_none()
    }

    /// Client endpoints, node 1 first.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|n| self.client_addr(n.id)).collect()
    }

    pub fn client_addr(&self, id: usize) -> String {
        let n = &self.nodes[id - 1];
        SocketAddr::new(n.ip, n.client_port).to_string()
    }

    /// The address peers use for node `id`: its proxy.
    pub fn peer_addr(&self, id: usize) -> SocketAddr {
        self.proxies[id - 1].listen
    }

    pub fn site(id: usize) -> String {
        format!("site-{id}")
    }

    fn data_dir(&self, id: usize) -> PathBuf {
        self.opts.dir.join("data").join(format!("n{id}"))
    }

    fn clock_file(&self, id: usize) -> PathBuf {
        self.opts.dir.join("data").join(format!("n{id}.faketime"))
    }

    fn args(&self, id: usize) -> Vec<String> {
        let n = &self.nodes[id - 1];
        let members: Vec<String> = self
            .nodes
            .iter()
            .map(|m| {
                format!(
                    "{}={}/{}/{}",
                    m.id,
                    Self::site(m.id),
                    self.peer_addr(m.id),
                    self.client_addr(m.id)
                )
            })
            .collect();
        let mut args = vec![
            format!("--node-id={id}"),
            format!("--site={}", Self::site(id)),
            format!("--data-dir={}", self.data_dir(id).display()),
            format!("--listen-client={}", SocketAddr::new(n.ip, n.client_port)),
            format!("--listen-peer={}", SocketAddr::new(n.ip, n.peer_port)),
            format!("--advertise-peer={}", self.peer_addr(id)),
            "--listen-metrics=".to_string(),
            format!("--heartbeat-ms={}", self.opts.heartbeat_ms),
            format!("--election-timeout-min-ms={}", self.opts.heartbeat_ms * 6),
            format!("--election-timeout-max-ms={}", self.opts.heartbeat_ms * 12),
        ];
        if !n.join {
            args.push(format!("--initial-cluster={}", members.join(",")));
        }
        args.extend(self.opts.extra_args.iter().cloned());
        args
    }

    /// Starts (or restarts) node `id`; output is appended to `logs/n<id>.log`.
    pub fn start_node(&mut self, id: usize) -> anyhow::Result<()> {
        if self.nodes[id - 1].child.is_some() {
            return Ok(());
        }
        let log_path = self.opts.dir.join("logs").join(format!("n{id}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("open {}", log_path.display()))?;
        let args = self.args(id);
        let mut cmd = match &self.net {
            Some(net) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &net.ns(id)])
                    .arg(&self.opts.metad_bin);
                c
            }
            None => Command::new(&self.opts.metad_bin),
        };
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .env("RUST_LOG", "info,openraft=warn");
        if let Some(m) = &self.opts.mutations {
            cmd.env("METAD_MUTATIONS", m);
        }
        if self.opts.faketime {
            cmd.env("LD_PRELOAD", LIBFAKETIME)
                .env("FAKETIME_TIMESTAMP_FILE", self.clock_file(id))
                .env("FAKETIME_CACHE_DURATION", "1")
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        // `ip netns exec` execs metad in place, so the child's pid is metad's.
        let child = cmd.spawn().context("spawn metad")?;
        let node = &mut self.nodes[id - 1];
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    pub fn is_running(&self, id: usize) -> bool {
        self.nodes[id - 1].child.is_some()
    }

    pub fn is_paused(&self, id: usize) -> bool {
        self.nodes[id - 1].paused
    }

    fn signal(&self, id: usize, sig: Signal) {
        if let Some(c) = &self.nodes[id - 1].child {
            let _ = kill(Pid::from_raw(c.id() as i32), sig);
        }
    }

    /// SIGKILL node `id` and reap it.
    pub fn kill(&mut self, id: usize) {
        self.signal(id, Signal::SIGKILL);
        let node = &mut self.nodes[id - 1];
        if let Some(mut c) = node.child.take() {
            let _ = c.wait();
        }
        node.paused = false;
    }

    /// SIGSTOP node `id`.
    pub fn pause(&mut self, id: usize) {
        if self.nodes[id - 1].child.is_some() {
            self.signal(id, Signal::SIGSTOP);
            self.nodes[id - 1].paused = true;
        }
    }

    /// SIGCONT node `id`.
    pub fn resume(&mut self, id: usize) {
        if self.nodes[id - 1].paused {
            self.signal(id, Signal::SIGCONT);
            self.nodes[id - 1].paused = false;
        }
    }

    fn write_clock(&self, id: usize, offset_secs: i64) -> anyhow::Result<()> {
        std::fs::write(self.clock_file(id), format!("{offset_secs:+}\n"))?;
        Ok(())
    }

    /// Skews node `id`'s wall clock by `offset_secs` (monotonic time is untouched). Needs
    /// the cluster to have been started with `faketime`.
    pub fn skew_clock(&self, id: usize, offset_secs: i64) -> anyhow::Result<()> {
        if !self.opts.faketime {
            bail!("clock skew needs the nodes started under libfaketime");
        }
        self.write_clock(id, offset_secs)
    }

    /// Cuts node `a` off from node `b` in both directions (peer traffic only).
    pub fn cut(&self, a: usize, b: usize) -> anyhow::Result<()> {
        let Some(net) = &self.net else {
            bail!("partitions need network namespaces (run without --local)");
        };
        net.drop_output(a, self.peer_addr(b))?;
        net.drop_output(b, self.peer_addr(a))?;
        Ok(())
    }

    /// Removes every partition rule.
    pub fn heal_network(&self) -> anyhow::Result<()> {
        match &self.net {
            Some(net) => net.heal(),
            None => Ok(()),
        }
    }

    /// WAN latency on every peer link (one way, per proxy hop).
    pub fn set_latency(&self, delay: Duration, jitter: Duration) {
        for p in &self.proxies {
            p.latency.set(delay, jitter);
        }
    }

    /// Kills node `id`, deletes its data, and arranges that its next start joins as a new
    /// learner (used after removing it from the membership).
    pub fn wipe(&mut self, id: usize) -> anyhow::Result<()> {
        self.kill(id);
        let d = self.data_dir(id);
        if d.exists() {
            std::fs::remove_dir_all(&d).with_context(|| format!("wipe {}", d.display()))?;
        }
        self.nodes[id - 1].join = true;
        Ok(())
    }

    /// A client over every node.
    pub async fn client(&self) -> anyhow::Result<Client> {
        let mut cfg = ClientConfig::new(self.endpoints());
        cfg.total_timeout = Duration::from_secs(10);
        cfg.request_timeout = Duration::from_secs(2);
        cfg.connect_timeout = Duration::from_millis(500);
        Client::connect(cfg).await.context("connect")
    }

    /// The current leader's id, asking the running, unpaused nodes.
    pub async fn leader(&self) -> Option<usize> {
        let client = self.client().await.ok()?;
        for n in &self.nodes {
            if n.child.is_none() || n.paused {
                continue;
            }
            let Ok(c) = client.on_endpoint(n.id - 1) else {
                continue;
            };
            let status = tokio::time::timeout(Duration::from_secs(2), c.node_status()).await;
            if let Ok(Ok(s)) = status {
                let leader = s.leader_id as usize;
                if leader > 0 {
                    return Some(leader);
                }
            }
        }
        None
    }

    /// Polls until some node reports a leader.
    pub async fn wait_for_leader(&self, within: Duration) -> anyhow::Result<usize> {
        let until = tokio::time::Instant::now() + within;
        loop {
            if let Some(l) = self.leader().await {
                return Ok(l);
            }
            if tokio::time::Instant::now() >= until {
                bail!(
                    "no leader within {within:?}; see the node logs in {}",
                    self.opts.dir.join("logs").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Resumes paused nodes and SIGKILLs everything (the harness's logs and data stay).
    pub fn stop_all(&mut self) {
        for id in 1..=self.nodes.len() {
            self.resume(id);
            self.kill(id);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}

fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let ls: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    ls.iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}
