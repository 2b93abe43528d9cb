//! metad wire types. Owns the `.proto` files under `metad/`, the generated code, and the stable
//! error codes shared by server and client, and the one piece of byte-stream plumbing both
//! use (`coalesce`). Depends on nothing internal; the client crate depends only on this.

pub mod coalesce;
pub mod error;

pub use error::{ErrorCode, ErrorDetails};

#[allow(clippy::all)]
pub mod v1 {
    tonic::include_proto!("metad.v1");
}

/// INTERNAL test-only register service of the replicated core.
#[allow(clippy::all)]
pub mod internal {
    pub mod v1 {
        tonic::include_proto!("metad.internal.v1");
    }
}

/// Node-to-node protocol and the Raft log payload. Not for clients.
#[allow(clippy::all)]
pub mod raft {
    pub mod v1 {
        tonic::include_proto!("metad.raft.v1");
    }
}

/// Encoded `FileDescriptorSet` of every metad proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("metad_descriptor");
