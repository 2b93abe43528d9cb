//! Real processes: `metad` clusters and other workspace binaries (agents) started as child
//! processes on harness-chosen loopback ports, killed with SIGKILL, paused with SIGSTOP,
//! restarted with the same arguments. Used where a real process boundary matters (crash
//! durability, end-to-end moves, benchmarks). Children are killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A workspace binary next to the running test or tool (`target/<profile>/NAME`). Cargo
/// builds every workspace binary before `cargo test --workspace` runs any test.
pub fn workspace_bin(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("current_exe")?;
    let mut dir = exe.parent().map(Path::to_path_buf);
    // Tests run from target/<profile>/deps, tools from target/<profile>.
    for _ in 0..2 {
        if let Some(d) = &dir {
            let candidate = d.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
            dir = d.parent().map(Path::to_path_buf);
        }
    }
    anyhow::bail!(
        "binary {name} not found next to {}; build it first (cargo build --workspace --bins)",
        exe.display()
    )
}

/// One child process that can be killed and started again with the same arguments.
pub struct Proc {
    pub name: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    pub fn new(name: &str, program: PathBuf, args: Vec<String>, log: PathBuf) -> Self {
        Proc {
            name: name.to_string(),
            program,
            args,
            env: vec![("RUST_LOG".into(), "warn,openraft=off".into())],
            log,
            child: None,
        }
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.retain(|(key, _)| key != k);
        self.env.push((k.to_string(), v.to_string()));
        self
    }

    /// Starts (or restarts) the process; output is appended to its log file.
    pub fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("open {}", self.log.display()))?;
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(
            cmd.spawn()
                .with_context(|| format!("spawn {}", self.program.display()))?,
        );
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// How the process ended, once it has (`None` while it runs or if it was never started).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The last `n` lines of the process's log file (empty if it cannot be read).
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGKILL);
            let _ = c.wait();
        }
    }

    /// SIGTERM, and wait for the process to exit.
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
            let _ = c.wait();
        }
    }

    /// CPU seconds (user + system) the running process has used, from /proc.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()?)).ok()?;
        // Fields after the command name (which may contain spaces) start after ") ".
        let rest = stat.rsplit_once(") ")?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = f.get(11)?.parse().ok()?;
        let stime: f64 = f.get(12)?.parse().ok()?;
        let hz = 100.0; // USER_HZ is 100 on Linux.
        Some((utime + stime) / hz)
    }

    /// Resident set size in bytes, from /proc.
    pub fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Harness-chosen free loopback ports (bound to :0, then released for the child to bind).
pub fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let ls: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    ls.iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

/// A cluster of real `metad` processes on loopback, node i at site `site-<a+i>`.
pub struct ProcCluster {
    pub nodes: Vec<Proc>,
    /// Client endpoints, node 1 first.
    pub endpoints: Vec<String>,
    pub dir: PathBuf,
}

impl ProcCluster {
    /// Starts `n` nodes with data and logs under `dir`. `extra` arguments go to every node.
    pub fn start(dir: &Path, n: usize, extra: &[&str]) -> anyhow::Result<Self> {
        ProcCluster::start_with_env(dir, n, extra, &[])
    }

    /// As [`ProcCluster::start`], with environment variables set for every node (for example
    /// `RUST_LOG`, to log more than warnings).
    pub fn start_with_env(
        dir: &Path,
        n: usize,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let metad = workspace_bin("metad")?;
        let ports = free_ports(2 * n)?;
        let site = |i: usize| format!("site-{}", (b'a' + i as u8) as char);
        let members: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    "{}={}/127.0.0.1:{}/127.0.0.1:{}",
                    i + 1,
                    site(i),
                    ports[n + i],
                    ports[i]
                )
            })
            .collect();
        let mut nodes = Vec::new();
        for i in 0..n {
            let mut args = vec![
                format!("--node-id={}", i + 1),
                format!("--site={}", site(i)),
                format!("--data-dir={}", dir.join(format!("n{}", i + 1)).display()),
                format!("--listen-client=127.0.0.1:{}", ports[i]),
                format!("--listen-peer=127.0.0.1:{}", ports[n + i]),
                "--listen-metrics=".to_string(),
                format!("--initial-cluster={}", members.join(",")),
                "--heartbeat-ms=50".into(),
                "--election-timeout-min-ms=300".into(),
                "--election-timeout-max-ms=600".into(),
            ];
            args.extend(extra.iter().map(|s| s.to_string()));
            let mut p = Proc::new(
                &format!("metad-{}", i + 1),
                metad.clone(),
                args,
                dir.join(format!("n{}.log", i + 1)),
            );
            for (k, v) in env {
                p = p.env(k, v);
            }
            p.start()?;
            nodes.push(p);
        }
        Ok(ProcCluster {
            nodes,
            endpoints: (0..n).map(|i| format!("127.0.0.1:{}", ports[i])).collect(),
            dir: dir.to_path_buf(),
        })
    }

    /// The node with Raft id `id` (1-based).
    pub fn node(&mut self, id: u64) -> &mut Proc {
        &mut self.nodes[(id - 1) as usize]
    }

    /// One report per node that has exited: which, how, and the end of its log. Empty while
    /// every started node runs (a node stopped on purpose with `kill9`/`terminate` is not
    /// counted).
    pub fn exits(&mut self) -> Vec<String> {
        self.nodes
            .iter_mut()
            .filter_map(|p| {
                let status = p.exited()?;
                Some(format!(
                    "{} exited ({status}); last lines of {}:\n{}",
                    p.name,
                    p.log.display(),
                    p.log_tail(8)
                ))
            })
            .collect()
    }

    /// Total CPU seconds used by the running nodes.
    pub fn cpu_seconds(&self) -> f64 {
        self.nodes.iter().filter_map(Proc::cpu_seconds).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_exited_process_is_reported_with_its_status_and_log_tail() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut p = Proc::new(
            "doomed",
            PathBuf::from("/bin/sh"),
            vec![
                "-c".into(),
                "echo first; echo 'it went wrong'; exit 3".into(),
            ],
            dir.path().join("doomed.log"),
        );
        let mut alive = Proc::new(
            "alive",
            PathBuf::from("/bin/sh"),
            vec!["-c".into(), "sleep 600".into()],
            dir.path().join("alive.log"),
        );
        p.start()?;
        alive.start()?;
        let mut cluster = ProcCluster {
            nodes: vec![p, alive],
            endpoints: vec![],
            dir: dir.path().to_path_buf(),
        };
        let exits = crate::wait::wait_until(
            std::time::Duration::from_secs(10),
            "the short-lived process to exit",
            || {
                let e = cluster.exits();
                async move { (!e.is_empty()).then_some(e) }
            },
        )
        .await?;
        assert_eq!(exits.len(), 1, "only the exited process: {exits:?}");
        assert!(
            exits[0].starts_with("doomed exited (exit status: 3)"),
            "{}",
            exits[0]
        );
        assert!(exits[0].ends_with("first\nit went wrong"), "{}", exits[0]);
        Ok(())
    }
}
