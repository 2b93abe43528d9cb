//! Node configuration: one struct, loaded from a TOML file, overridden by environment variables
//! (`METAD_*`), overridden by command-line flags (the merge happens in `main`). `validate()`
//! names the field and the rule for every mistake.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::types::{NodeId, NodeInfo};

/// One member of the cluster as known at bootstrap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitialMember {
    /// Node id (positive, unique).
    pub id: NodeId,
    /// The member's site.
    pub site: String,
    /// Address peers use for Raft traffic (host:port).
    pub peer_addr: String,
    /// Address clients use (host:port).
    pub client_addr: String,
}

impl InitialMember {
    /// Parses `ID=SITE/PEER_ADDR/CLIENT_ADDR`, e.g. `1=site-a/10.0.0.1:7101/10.0.0.1:7001`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let err = || format!("initial-cluster entry {s:?}: expected ID=SITE/PEER_ADDR/CLIENT_ADDR");
        let (id, rest) = s.split_once('=').ok_or_else(err)?;
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.len() != 3 {
            return Err(err());
        }
        Ok(InitialMember {
            id: id.trim().parse().map_err(|_| err())?,
            site: parts[0].to_string(),
            peer_addr: parts[1].to_string(),
            client_addr: parts[2].to_string(),
        })
    }

    pub fn node_info(&self) -> NodeInfo {
        NodeInfo {
            site: self.site.clone(),
            peer_addr: self.peer_addr.clone(),
            client_addr: self.client_addr.clone(),
        }
    }
}

/// Raft timing and log retention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftTuning {
    /// Leader heartbeat interval. Keep well below the election timeout and above the WAN RTT.
    pub heartbeat_ms: u64,
    /// Minimum election timeout; a follower that hears nothing this long may start an election.
    pub election_timeout_min_ms: u64,
    /// Maximum election timeout (randomised between min and max).
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many entries since the last one (and no sooner after the
    /// last build than 10 times as long as it took: see `node::snapshots`).
    pub snapshot_after_entries: u64,
    /// Entries kept in the log behind the last snapshot (lets lagging followers catch up
    /// without a snapshot).
    pub keep_entries_after_snapshot: u64,
    /// Snapshot chunk size for transfer to followers (1 KiB ..= 32 MiB).
    pub snapshot_chunk_bytes: u64,
    /// How long the leader waits for a follower to answer one snapshot chunk (1 s ..= 1 h).
    /// The answer to the last chunk comes only once the follower has installed the snapshot:
    /// ~50 s after the last byte at 10 M files. A timeout restarts the whole transfer.
    pub install_snapshot_timeout_ms: u64,
}

/// Default `raft.install_snapshot_timeout_ms`: 10 minutes, several times a 10 M-file install's
/// tail. openraft's own default (200 ms) and metad's earlier 30 s sent a 6 GB snapshot twice.
pub const INSTALL_SNAPSHOT_TIMEOUT_DEFAULT_MS: u64 = 600_000;

/// Largest `raft.snapshot_chunk_bytes`: half the peer message limit, so a chunk and its
/// envelope always fit.
pub const SNAPSHOT_CHUNK_MAX: u64 = (crate::network::PEER_MESSAGE_MAX / 2) as u64;

impl Default for RaftTuning {
    fn default() -> Self {
        RaftTuning {
            heartbeat_ms: 150,
            election_timeout_min_ms: 1000,
            election_timeout_max_ms: 2000,
            snapshot_after_entries: 50_000,
            keep_entries_after_snapshot: 10_000,
            snapshot_chunk_bytes: 4 << 20,
            install_snapshot_timeout_ms: INSTALL_SNAPSHOT_TIMEOUT_DEFAULT_MS,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// This node's id: a positive integer unique in the cluster, never reused.
    pub node_id: NodeId,
    /// The site (data centre, region) this node runs at, e.g. `site-a`.
    pub site: String,
    /// Where `raft-log/`, `sm.redb` and `snapshots/` live.
    pub data_dir: PathBuf,
    /// Address the client gRPC API binds to.
    pub listen_client: String,
    /// Address other nodes and clients are told to use for the client API (defaults to the
    /// bound client address; set it when binding 0.0.0.0 or behind NAT).
    pub advertise_client: Option<String>,
    /// Address the peer (Raft) gRPC service binds to.
    pub listen_peer: String,
    /// Address other nodes use for Raft traffic (defaults to the bound peer address).
    pub advertise_peer: Option<String>,
    /// Address of the Prometheus `/metrics` HTTP endpoint; empty disables it.
    pub listen_metrics: String,
    /// Members to bootstrap a new cluster with. The lowest id initialises the cluster once;
    /// a restarted node never re-initialises. Empty: join later as a learner.
    pub initial_cluster: Vec<InitialMember>,
    /// Per-request time budget on the server (proposal to reply, read-index wait).
    pub request_timeout_ms: u64,
    /// Log filter (RUST_LOG syntax) when RUST_LOG is unset.
    pub log_filter: String,
    /// Watch history kept, in revisions: older events are compacted away by the leader and a
    /// watch that asks for them gets COMPACTED.
    pub watch_history_revisions: u64,
    /// Watch history kept, in events: the leader also compacts the oldest whole revisions
    /// while more events than this are kept (a bulk import puts ~1000 events in one revision,
    /// so a revision bound alone let the history of a 10 M-file load fill the store).
    pub watch_history_events: u64,
    /// How often the leader checks whether history needs compacting (ms).
    pub compaction_interval_ms: u64,
    /// A watcher whose stream buffer stays full this long (ms) is cut off with
    /// RESOURCE_EXHAUSTED, so a stuck reader cannot hold memory on the server.
    pub watch_slow_receiver_ms: u64,
    /// Page cache of `sm.redb` in MiB (the node's largest memory use). Reads of pages outside
    /// it go to the OS page cache; size it to the hot part of the namespace.
    pub sm_cache_mib: u64,
    pub raft: RaftTuning,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_id: 1,
            site: "site-a".into(),
            data_dir: PathBuf::from("./metad-data"),
            listen_client: "127.0.0.1:7001".into(),
            advertise_client: None,
            listen_peer: "127.0.0.1:7101".into(),
            advertise_peer: None,
            listen_metrics: "127.0.0.1:7201".into(),
            initial_cluster: vec![],
            request_timeout_ms: 10_000,
            log_filter: "info,openraft=warn".into(),
            watch_history_revisions: 100_000,
            watch_history_events: 1_000_000,
            compaction_interval_ms: 10_000,
            watch_slow_receiver_ms: 10_000,
            sm_cache_mib: crate::store::SM_CACHE_DEFAULT_MIB,
            raft: RaftTuning::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

pub fn valid_site(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Whether `v` is `host:port` (an IP socket address or a hostname of at most 255 bytes).
/// The one address check, for config files and for member addresses sent over the API.
pub fn is_host_port(v: &str) -> bool {
    v.len() <= 255
        && (v.parse::<SocketAddr>().is_ok()
            || matches!(v.rsplit_once(':'), Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok()))
}

fn check_addr(field: &str, v: &str) -> Result<(), ConfigError> {
    if is_host_port(v) {
        Ok(())
    } else {
        Err(ConfigError(format!("{field}: {v:?} is not host:port")))
    }
}

impl Config {
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError(e.to_string()))
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_id == 0 {
            return Err(ConfigError("node_id: must be > 0".into()));
        }
        if !valid_site(&self.site) {
            return Err(ConfigError(format!(
                "site: {:?} must be 1..=64 chars of [A-Za-z0-9._-]",
                self.site
            )));
        }
        check_addr("listen_client", &self.listen_client)?;
        check_addr("listen_peer", &self.listen_peer)?;
        if !self.listen_metrics.is_empty() {
            check_addr("listen_metrics", &self.listen_metrics)?;
        }
        if let Some(a) = &self.advertise_client {
            check_addr("advertise_client", a)?;
        }
        if let Some(a) = &self.advertise_peer {
            check_addr("advertise_peer", a)?;
        }
        let r = &self.raft;
        if r.heartbeat_ms == 0 || r.election_timeout_min_ms < 2 * r.heartbeat_ms {
            return Err(ConfigError(
                "raft.election_timeout_min_ms: must be at least 2 x raft.heartbeat_ms (> 0)".into(),
            ));
        }
        if r.election_timeout_max_ms <= r.election_timeout_min_ms {
            return Err(ConfigError(
                "raft.election_timeout_max_ms: must be greater than election_timeout_min_ms".into(),
            ));
        }
        if r.snapshot_after_entries == 0 {
            return Err(ConfigError(
                "raft.snapshot_after_entries: must be >= 1".into(),
            ));
        }
        if !(1024..=SNAPSHOT_CHUNK_MAX).contains(&r.snapshot_chunk_bytes) {
            return Err(ConfigError(format!(
                "raft.snapshot_chunk_bytes: must be 1024..={SNAPSHOT_CHUNK_MAX} (a chunk travels \
                 in one peer message, limited to {} MiB), got {}",
                crate::network::PEER_MESSAGE_MAX >> 20,
                r.snapshot_chunk_bytes
            )));
        }
        if !(1000..=3_600_000).contains(&r.install_snapshot_timeout_ms) {
            return Err(ConfigError(format!(
                "raft.install_snapshot_timeout_ms: must be 1000..=3600000 (1 s to 1 h), got {}",
                r.install_snapshot_timeout_ms
            )));
        }
        if self.watch_history_revisions < 10 {
            return Err(ConfigError("watch_history_revisions: must be >= 10".into()));
        }
        if self.watch_slow_receiver_ms < 100 {
            return Err(ConfigError("watch_slow_receiver_ms: must be >= 100".into()));
        }
        if self.watch_history_events < 1000 {
            return Err(ConfigError(format!(
                "watch_history_events: must be >= 1000, got {}",
                self.watch_history_events
            )));
        }
        if self.compaction_interval_ms < 100 {
            return Err(ConfigError("compaction_interval_ms: must be >= 100".into()));
        }
        if !(16..=1 << 20).contains(&self.sm_cache_mib) {
            return Err(ConfigError(format!(
                "sm_cache_mib: must be 16..={}, got {}",
                1 << 20,
                self.sm_cache_mib
            )));
        }
        if self.request_timeout_ms < 100 {
            return Err(ConfigError("request_timeout_ms: must be >= 100".into()));
        }
        let mut ids = std::collections::BTreeSet::new();
        for m in &self.initial_cluster {
            if m.id == 0 || !ids.insert(m.id) {
                return Err(ConfigError(format!(
                    "initial_cluster: id {} is 0 or repeated",
                    m.id
                )));
            }
            if !valid_site(&m.site) {
                return Err(ConfigError(format!(
                    "initial_cluster: node {} has invalid site",
                    m.id
                )));
            }
            check_addr("initial_cluster.peer_addr", &m.peer_addr)?;
            check_addr("initial_cluster.client_addr", &m.client_addr)?;
            if m.id == self.node_id && m.site != self.site {
                return Err(ConfigError(format!(
                    "initial_cluster: node {} is at site {:?} but site is {:?}",
                    m.id, m.site, self.site
                )));
            }
        }
        if !self.initial_cluster.is_empty() && !ids.contains(&self.node_id) {
            return Err(ConfigError(format!(
                "initial_cluster: does not contain this node (node_id {})",
                self.node_id
            )));
        }
        Ok(())
    }

    pub fn openraft_config(&self) -> Result<openraft::Config, ConfigError> {
        let r = &self.raft;
        let c = openraft::Config {
            cluster_name: "metad".into(),
            heartbeat_interval: r.heartbeat_ms,
            election_timeout_min: r.election_timeout_min_ms,
            election_timeout_max: r.election_timeout_max_ms,
            // Snapshots are scheduled by node::snapshots (entry count and build-time spacing).
            snapshot_policy: openraft::SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: r.keep_entries_after_snapshot,
            snapshot_max_chunk_size: r.snapshot_chunk_bytes,
            install_snapshot_timeout: r.install_snapshot_timeout_ms,
            max_payload_entries: 1000,
            ..Default::default()
        };
        c.validate().map_err(|e| ConfigError(format!("raft: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_initial_member() {
        let m = InitialMember::parse("2=site-b/127.0.0.1:7102/127.0.0.1:7002").expect("parse");
        assert_eq!(m.id, 2);
        assert_eq!(m.site, "site-b");
        assert!(InitialMember::parse("2=site-b/127.0.0.1:7102").is_err());
        assert!(InitialMember::parse("x=a/b:1/c:2").is_err());
    }

    /// The error `validate` gives for `c`, which must be refused.
    fn refusal(c: &Config) -> String {
        c.validate().expect_err("must fail").to_string()
    }

    #[test]
    fn validate_names_the_field() {
        let c = Config {
            node_id: 0,
            ..Default::default()
        };
        assert!(refusal(&c).contains("node_id"));
        let c = Config {
            site: "bad site".into(),
            ..Default::default()
        };
        assert!(refusal(&c).contains("site"));
        let mut c = Config::default();
        c.raft.election_timeout_min_ms = 100;
        assert!(refusal(&c).contains("election"));
        for bad in [0, 15, (1 << 20) + 1] {
            let c = Config {
                sm_cache_mib: bad,
                ..Default::default()
            };
            let e = refusal(&c);
            assert!(e.contains("sm_cache_mib") && e.contains("16..="), "{e}");
        }
        assert!(Config::from_toml("sm_cache_mib = 64\n").is_ok());
        for bad in [0, 1023, SNAPSHOT_CHUNK_MAX + 1] {
            let mut c = Config::default();
            c.raft.snapshot_chunk_bytes = bad;
            let e = refusal(&c);
            assert!(
                e.contains("raft.snapshot_chunk_bytes") && e.contains("64 MiB"),
                "{e}"
            );
        }
        let mut c = Config::default();
        c.raft.snapshot_chunk_bytes = SNAPSHOT_CHUNK_MAX;
        assert!(c.validate().is_ok());
        for bad in [0, 999, 3_600_001] {
            let mut c = Config::default();
            c.raft.install_snapshot_timeout_ms = bad;
            let e = refusal(&c);
            assert!(
                e.contains("raft.install_snapshot_timeout_ms") && e.contains("1 s to 1 h"),
                "{e}"
            );
        }
        let c = Config::from_toml("[raft]\ninstall_snapshot_timeout_ms = 120000\n").expect("toml");
        assert_eq!(c.raft.install_snapshot_timeout_ms, 120_000);
        let oc = c.openraft_config().expect("openraft config");
        assert_eq!(oc.install_snapshot_timeout, 120_000);
        let c = Config {
            watch_history_events: 999,
            ..Default::default()
        };
        let e = refusal(&c);
        assert!(
            e.contains("watch_history_events") && e.contains(">= 1000"),
            "{e}"
        );
        assert!(Config::from_toml("watch_history_events = 1000\n").is_ok());
        assert!(Config::default().validate().is_ok());
    }

    #[test]
    fn toml_rejects_unknown_fields() {
        assert!(Config::from_toml("node_id = 3\nsite = \"site-c\"\n").is_ok());
        assert!(Config::from_toml("nodeid = 3\n").is_err());
    }
}
