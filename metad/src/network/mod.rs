//! Raft peer transport over tonic, on the peer port only: the client side (`PeerNetwork`,
//! openraft's network factory, plus the forward and read-index calls followers make to the
//! leader) and the server side (`PeerService`). openraft messages travel postcard-encoded.

mod client;
mod service;

pub use client::{PeerClient, PeerNetwork};

/// Largest peer message either side encodes or decodes (AppendEntries, snapshot chunks).
pub const PEER_MESSAGE_MAX: usize = 64 << 20;
pub use service::PeerService;
