//! Crash durability with real processes: `metad` nodes killed with SIGKILL during a stream of
//! acknowledged writes, restarted, and every acknowledged write is still there.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use metad_client::{Client, ClientConfig, ReadOptions};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

struct Proc {
    id: u64,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    fn start(&mut self) -> std::io::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(env!("CARGO_BIN_EXE_metad"))
            .args(&self.args)
            .env("RUST_LOG", "warn,openraft=off")
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGKILL);
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Harness-chosen free loopback ports (bound to :0, then released for the child to bind).
fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let ls: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    ls.iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

fn cluster(dir: &Path) -> std::io::Result<(Vec<Proc>, Vec<String>)> {
    let ports = free_ports(6)?;
    let sites = ["site-a", "site-b", "site-c"];
    let members: Vec<String> = (0..3)
        .map(|i| {
            format!(
                "{}={}/127.0.0.1:{}/127.0.0.1:{}",
                i + 1,
                sites[i],
                ports[3 + i],
                ports[i]
            )
        })
        .collect();
    let mut procs = Vec::new();
    for i in 0..3usize {
        let args = vec![
            format!("--node-id={}", i + 1),
            format!("--site={}", sites[i]),
            format!("--data-dir={}", dir.join(format!("n{}", i + 1)).display()),
            format!("--listen-client=127.0.0.1:{}", ports[i]),
            format!("--listen-peer=127.0.0.1:{}", ports[3 + i]),
            "--listen-metrics=".to_string(),
            format!("--initial-cluster={}", members.join(",")),
            "--heartbeat-ms=50".into(),
            "--election-timeout-min-ms=300".into(),
            "--election-timeout-max-ms=600".into(),
            "--request-timeout-ms=2000".into(),
        ];
        procs.push(Proc {
            id: i as u64 + 1,
            args,
            log: dir.join(format!("n{}.log", i + 1)),
            child: None,
        });
    }
    let endpoints = (0..3).map(|i| format!("127.0.0.1:{}", ports[i])).collect();
    Ok((procs, endpoints))
}

/// Polls `f` until it yields a value, failing after `timeout` (never a fixed wait).
async fn poll<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        anyhow::ensure!(
            Instant::now() < until,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn leader_of(client: &Client, timeout: Duration) -> anyhow::Result<u64> {
    poll(timeout, "a leader", || async {
        client
            .cluster_status()
            .await
            .ok()
            .map(|s| s.leader_id)
            .filter(|l| *l != 0)
    })
    .await
}

async fn revision_at_least(
    client: &Client,
    rev: u64,
    done: impl Fn() -> bool,
) -> anyhow::Result<()> {
    poll(
        Duration::from_secs(30),
        "the writer to make progress",
        || async {
            let r = client.node_status().await.map(|s| s.revision).unwrap_or(0);
            (done() || r >= rev).then_some(())
        },
    )
    .await
}

/// Writes `n` keys starting at `from`; returns the acknowledged ones. Ambiguous outcomes are
/// not acknowledged (and not counted as failures).
async fn write_stream(client: &Client, from: u32, n: u32) -> Vec<u32> {
    let mut acked = Vec::new();
    for i in from..from + n {
        if client
            .register_put(&format!("k{i}"), i.to_be_bytes().to_vec())
            .await
            .is_ok()
        {
            acked.push(i);
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_acknowledged_writes_loses_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut procs, endpoints) = cluster(dir.path())?;
    for p in procs.iter_mut() {
        p.start()?;
    }
    let mut cfg = ClientConfig::new(endpoints);
    cfg.total_timeout = Duration::from_secs(20);
    let client = Client::connect(cfg).await?;
    let leader = leader_of(&client, Duration::from_secs(30)).await?;

    // Phase 1: kill -9 the leader while a writer streams; the writer carries on.
    let writer = {
        let c = client.clone();
        tokio::spawn(async move { write_stream(&c, 0, 400).await })
    };
    let c = client.clone();
    revision_at_least(&c, 100, || writer.is_finished()).await?;
    let lp = procs
        .iter_mut()
        .find(|p| p.id == leader)
        .ok_or_else(|| anyhow::anyhow!("leader proc"))?;
    lp.kill9();
    let mut acked = writer.await?;
    anyhow::ensure!(
        acked.len() > 100,
        "too few writes acknowledged: {}",
        acked.len()
    );
    lp.start()?;

    // Phase 2: kill -9 every node at once mid-stream, then restart them all.
    let writer = {
        let c = client.clone();
        tokio::spawn(async move { write_stream(&c, 1000, 150).await })
    };
    revision_at_least(&c, acked.len() as u64 + 60, || writer.is_finished()).await?;
    for p in procs.iter_mut() {
        p.kill9();
    }
    // Restart at once: the writer's in-flight requests retry into the recovering cluster.
    for p in procs.iter_mut() {
        p.start()?;
    }
    let second = writer.await?;
    anyhow::ensure!(!second.is_empty(), "no write acknowledged in phase 2");
    acked.extend(second);
    leader_of(&client, Duration::from_secs(30)).await?;

    for i in &acked {
        let got = client
            .register_get(&format!("k{i}"), ReadOptions::linearizable())
            .await?;
        assert_eq!(
            got.value,
            Some(i.to_be_bytes().to_vec()),
            "acknowledged write k{i} lost after SIGKILL"
        );
    }
    eprintln!(
        "verified {} acknowledged writes after two rounds of SIGKILL",
        acked.len()
    );
    Ok(())
}
