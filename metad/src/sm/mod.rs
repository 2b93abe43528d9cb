//! The state machine: the commands the Raft log carries, their deterministic apply, and the
//! queries over applied state. It sees storage only through the `kv` traits: no redb, no tonic,
//! no clock, no randomness — time arrives as `Command.leader_time_ms`. Everything here must give
//! the same result on every node for the same sequence of entries.

pub mod apply;
pub mod kv;
pub mod model;
pub mod moves;
pub mod namespace;
pub mod session;
pub mod tags;
pub mod topology;
pub mod txn;
pub mod watch;

pub use apply::{apply_command, revision, RegisterValue};
pub use kv::{KvError, KvRead, KvWrite, MemKv, Overlay, Table};
pub use model::{ApplyCtx, ApplyError, OpResult, Refusal};

/// Limits every node enforces identically (they are part of the replicated semantics).
pub mod limits {
    pub const CLIENT_ID_MAX: usize = 64;
    pub const REGISTER_KEY_MAX: usize = 256;
    pub const REGISTER_VALUE_MAX: usize = 64 * 1024;
    /// Replies remembered per client for deduplication.
    pub const SESSION_REPLIES_PER_CLIENT: u64 = 256;
    /// A client silent for longer than this (by leader time) is forgotten.
    pub const SESSION_TTL_MS: u64 = 15 * 60 * 1000;
    /// At most this many expired clients are swept per applied entry (bounded apply cost).
    pub const SESSION_SWEEP_PER_APPLY: usize = 16;
    /// Longest directory-entry name, in bytes.
    pub const NAME_MAX: usize = 255;
    /// Longest path, in bytes.
    pub const PATH_MAX: usize = 4096;
}
