//! metad-testkit: real metad nodes started in-process on `127.0.0.1:0`, with a fault-injecting
//! peer network (partition, isolate, drop, delay), stop/kill/restart, and `wait` helpers that
//! poll with a timeout — never a fixed sleep.
//!
//! ```ignore
//! let cluster = Cluster::builder().nodes(3).build().await?;
//! let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
//! let client = cluster.client().await?;
//! ```

pub mod cluster;
pub mod procs;
pub mod wait;

pub use cluster::{Cluster, ClusterBuilder};
pub use wait::wait_until;

/// Installs a test log subscriber once (RUST_LOG controls it; quiet by default).
pub fn init_logging() {
    metad::telemetry::init("warn,openraft=off");
}
