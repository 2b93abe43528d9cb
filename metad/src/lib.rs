//! metad: the server of a Raft-replicated global metadata control plane.
//!
//! Layers (see docs/design.md): `sm` (pure state machine) <- `store` (redb) <- `node` (Raft,
//! lifecycle, read/write paths) <- `api` (gRPC services, the one error->Status mapping);
//! `network` carries Raft between nodes.

pub mod api;
pub mod config;
pub mod error;
pub mod faults;
pub mod metrics;
pub mod mutations;
pub mod network;
pub mod node;
pub mod sm;
pub mod store;
pub mod telemetry;
pub mod types;

pub use config::Config;
pub use error::NodeError;
pub use node::{Listeners, MetaNode, StartOptions};
