//! metad client library and the `metactl` CLI.
//!
//! [`Client`] talks to a metad cluster over gRPC: it finds and caches the leader (following
//! `NotLeader` hints), retries retryable errors with jittered exponential backoff within a
//! total timeout, and gives every write a `(client_id, seq)` that all its retries reuse, so the
//! cluster applies it exactly once. A write whose outcome is unknown is reported as
//! [`ClientError::Ambiguous`], never as failed.
//!
//! ```no_run
//! # async fn demo() -> Result<(), metad_client::ClientError> {
//! use metad_client::{Client, ClientConfig, ReadOptions};
//!
//! let client = Client::connect(ClientConfig::new(["127.0.0.1:7001", "127.0.0.1:7002"])).await?;
//! let status = client.cluster_status().await?;
//! println!("leader {} term {}", status.leader_id, status.term);
//!
//! let put = client.register_put("k", b"v".to_vec()).await?;
//! // A linearizable read served by the second node, which may be a follower:
//! let got = client.on_endpoint(1)?.register_get("k", ReadOptions::linearizable()).await?;
//! assert!(got.header.revision >= put.header.revision);
//! # Ok(()) }
//! ```
//!
//! Modules: `config` (settings), `endpoint` (address parsing, connections, leader cursor),
//! `backoff`, `error` (error type and classification), `retry` (the retry loop), `client`
//! (cluster calls), `register` (test register calls), `moves` (moves, agents, import),
//! `lease` (the agent lease keeper), `agent` (the agent SDK and the posix reference agent),
//! `cli` (`metactl`).

#[macro_use]
mod calls;

pub mod agent;
pub mod backoff;
pub mod cli;
mod client;
pub mod config;
pub mod connect;
pub mod endpoint;
pub mod error;
mod lease;
pub mod moves;
mod namespace;
mod register;
mod retry;
mod tags;
mod topology;
mod watch;

pub use client::Client;
pub use config::{ClientConfig, Consistency, ReadOptions};
pub use error::ClientError;
pub use lease::{LeaseKeeper, LeaseState};
pub use moves::{MoveFilter, MoveSpec, WriteSpec};
pub use register::{GetResult, Header, IncrResult, PutResult};
pub use tags::{FindResult, FoundInode, TagChange, TagEntry, TagKeysResult, TagsResult};
pub use topology::{InstanceSpec, SiloSpec, SiloUpdate};
pub use watch::WatchStream;

/// Generated wire types of the public API (`metad.v1`): the cluster calls return these.
pub use metad_proto::v1 as pb;
/// Stable error codes shared with the server.
pub use metad_proto::ErrorCode;
