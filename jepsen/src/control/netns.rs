//! Network namespaces for the nodes: one bridge in the root namespace, one namespace per node
//! joined to it by a veth pair, and iptables rules inside the namespaces for partitions.
//! Owns every `ip`/`iptables` command the harness runs. Each run takes a free *slot* `k`
//! (bridge `mjb<k>`, namespaces `mj<k>n<i>`, subnet 10.78.<k>.0/24), so concurrent runs do
//! not collide; a slot whose owner process died is reclaimed. Everything is removed on drop,
//! which also runs when the harness panics.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};

const SLOTS: u32 = 200;

fn slot_dir() -> PathBuf {
    PathBuf::from("/run/metad-jepsen")
}

/// Runs a command; an error carries its stderr.
pub fn run(prog: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(prog).args(args).output().with_context(|| {
        format!("run {prog} (is it installed? .ci/run installs iproute2 and iptables)")
    })?;
    if !out.status.success() {
        bail!(
            "{prog} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The namespaces of one run.
pub struct Net {
    slot: u32,
    n: usize,
}

impl Net {
    /// Creates the bridge and `n` namespaces.
    pub fn create(n: usize) -> anyhow::Result<Net> {
        // /proc/self belongs to the effective user.
        let root = std::fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false);
        if !root {
            bail!(
                "network namespaces need root; use --local to run on loopback without partitions"
            );
        }
        std::fs::create_dir_all(slot_dir())?;
        reclaim_stale();
        for slot in 0..SLOTS {
            let bridge = format!("mjb{slot}");
            if run("ip", &["link", "add", &bridge, "type", "bridge"]).is_err() {
                continue; // taken by another run
            }
            std::fs::write(
                slot_dir().join(format!("slot{slot}")),
                std::process::id().to_string(),
            )?;
            let net = Net { slot, n };
            net.setup()?;
            return Ok(net);
        }
        bail!("no free network slot (all {SLOTS} bridges mjb* exist); run `ip link` to inspect")
    }

    fn setup(&self) -> anyhow::Result<()> {
        let bridge = self.bridge();
        let cidr = format!("{}/24", self.bridge_ip());
        run("ip", &["addr", "add", &cidr, "dev", &bridge])?;
        run("ip", &["link", "set", &bridge, "up"])?;
        for i in 1..=self.n {
            let ns = self.ns(i);
            let veth = format!("mj{}v{i}", self.slot);
            run("ip", &["netns", "add", &ns])?;
            run(
                "ip",
                &[
                    "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            )?;
            run("ip", &["link", "set", &veth, "master", &bridge, "up"])?;
            let addr = format!("{}/24", self.node_ip(i));
            self.exec(i, "ip", &["addr", "add", &addr, "dev", "eth0"])?;
            self.exec(i, "ip", &["link", "set", "eth0", "up"])?;
            self.exec(i, "ip", &["link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    pub fn bridge(&self) -> String {
        format!("mjb{}", self.slot)
    }

    /// The bridge's address: the harness (clients, proxies) lives here.
    pub fn bridge_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 78, self.slot as u8, 1)
    }

    /// Node `i`'s (1-based) address inside its namespace.
    pub fn node_ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 78, self.slot as u8, 10 + i as u8)
    }

    /// Node `i`'s namespace name.
    pub fn ns(&self, i: usize) -> String {
        format!("mj{}n{i}", self.slot)
    }

    /// Runs a command inside node `i`'s namespace.
    pub fn exec(&self, i: usize, prog: &str, args: &[&str]) -> anyhow::Result<String> {
        let ns = self.ns(i);
        let mut full = vec!["netns", "exec", ns.as_str(), prog];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Node `i` can no longer send TCP to `to` (its packets are dropped on the way out).
    pub fn drop_output(&self, i: usize, to: SocketAddr) -> anyhow::Result<()> {
        let ip = to.ip().to_string();
        let port = to.port().to_string();
        self.exec(
            i,
            "iptables",
            &[
                "-A", "OUTPUT", "-p", "tcp", "-d", &ip, "--dport", &port, "-j", "DROP",
            ],
        )?;
        Ok(())
    }

    /// Removes every partition rule.
    pub fn heal(&self) -> anyhow::Result<()> {
        for i in 1..=self.n {
            self.exec(i, "iptables", &["-F", "OUTPUT"])?;
        }
        Ok(())
    }

    fn teardown(&self) {
        remove_slot(self.slot, self.n.max(16));
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn remove_slot(slot: u32, max_nodes: usize) {
    for i in 1..=max_nodes {
        let _ = run("ip", &["netns", "del", &format!("mj{slot}n{i}")]);
    }
    let _ = run("ip", &["link", "del", &format!("mjb{slot}")]);
    let _ = std::fs::remove_file(slot_dir().join(format!("slot{slot}")));
}

/// Removes the namespaces and bridges of runs whose harness process is gone (killed -9).
pub fn reclaim_stale() {
    let Ok(entries) = std::fs::read_dir(slot_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(slot) = name
            .strip_prefix("slot")
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let pid: Option<i32> = std::fs::read_to_string(e.path())
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let alive = pid.is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            remove_slot(slot, 16);
        }
    }
}
