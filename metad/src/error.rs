//! The node layer's error: everything a request can fail with above the store. Each variant has
//! a stable code (`metad_proto::ErrorCode`) and `is_retryable()`; `api` turns it into a
//! `tonic::Status` through `ErrorDetails` — the one mapping.

use metad_proto::{ErrorCode, ErrorDetails};

#[derive(Debug, Clone, thiserror::Error)]
pub enum NodeError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("this node is not the leader{}", leader_hint(.leader_id, .leader_addr))]
    NotLeader {
        leader_id: Option<u64>,
        leader_addr: Option<String>,
    },
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The write was proposed (or sent) and its outcome is unknown.
    #[error("outcome unknown: {0}")]
    Ambiguous(String),
    #[error("timed out: {0}")]
    Timeout(String),
    /// A deterministic refusal by the state machine (same on every node).
    #[error("{message}")]
    Refused { code: ErrorCode, message: String },
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unimplemented(String),
    #[error("node is shutting down")]
    ShuttingDown,
    #[error("internal error: {0}")]
    Internal(String),
}

fn leader_hint(id: &Option<u64>, addr: &Option<String>) -> String {
    match (id, addr) {
        (Some(id), Some(a)) => format!("; leader is node {id} at {a}"),
        (Some(id), None) => format!("; leader is node {id}"),
        _ => "; leader unknown".into(),
    }
}

impl NodeError {
    pub fn code(&self) -> ErrorCode {
        match self {
            NodeError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            NodeError::NotLeader { .. } => ErrorCode::NotLeader,
            NodeError::Unavailable(_) => ErrorCode::Unavailable,
            NodeError::Ambiguous(_) => ErrorCode::Ambiguous,
            NodeError::Timeout(_) => ErrorCode::Timeout,
            NodeError::Refused { code, .. } => *code,
            NodeError::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            NodeError::NotFound(_) => ErrorCode::NotFound,
            NodeError::Unimplemented(_) => ErrorCode::Unimplemented,
            NodeError::ShuttingDown => ErrorCode::ShuttingDown,
            NodeError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// Stable name of the error class (the wire code).
    pub fn name(&self) -> &'static str {
        self.code().as_str()
    }

    pub fn is_retryable(&self) -> bool {
        self.code().is_retryable()
    }

    pub fn details(&self) -> ErrorDetails {
        let (leader_id, leader_addr) = match self {
            NodeError::NotLeader {
                leader_id,
                leader_addr,
            } => (*leader_id, leader_addr.clone()),
            _ => (None, None),
        };
        ErrorDetails {
            code: self.code(),
            message: self.to_string(),
            leader_id,
            leader_addr,
        }
    }

    /// Rebuilds an error received from another node (forwarded write, read index).
    pub fn from_details(d: ErrorDetails) -> NodeError {
        match d.code {
            ErrorCode::InvalidArgument => NodeError::InvalidArgument(d.message),
            ErrorCode::NotLeader => NodeError::NotLeader {
                leader_id: d.leader_id,
                leader_addr: d.leader_addr,
            },
            ErrorCode::Unavailable => NodeError::Unavailable(d.message),
            ErrorCode::Ambiguous => NodeError::Ambiguous(d.message),
            ErrorCode::Timeout => NodeError::Timeout(d.message),
            ErrorCode::ShuttingDown => NodeError::ShuttingDown,
            ErrorCode::Internal => NodeError::Internal(d.message),
            code => NodeError::Refused {
                code,
                message: d.message,
            },
        }
    }
}

impl From<crate::store::StoreError> for NodeError {
    fn from(e: crate::store::StoreError) -> Self {
        NodeError::Internal(format!("storage ({}): {e}", e.name()))
    }
}
