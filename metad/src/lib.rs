//! metad: the server of a Raft-replicated global metadata control plane.
//!
//! Layers (see docs/design.md): `sm` (pure state machine) <- `store` (redb) <- `node` (Raft,
//! lifecycle, read/write paths) <- `api` (gRPC services, the one error->Status mapping);
//! `network` carries Raft between nodes.

pub mod sm;
pub mod store;
pub mod types;
