//! Stable error codes: the one vocabulary of failures that crosses the wire. The server puts the
//! code (and for `NotLeader` the leader's address) into gRPC metadata; the client reads it back.
//! Names are part of the API: never rename one, only add.

use std::fmt;
use std::str::FromStr;

/// gRPC metadata key carrying the stable error code name.
pub const MD_ERROR_CODE: &str = "metad-error-code";
/// gRPC metadata key carrying the leader's node id (on `NotLeader`).
pub const MD_LEADER_ID: &str = "metad-leader-id";
/// gRPC metadata key carrying the leader's client address (on `NotLeader`).
pub const MD_LEADER_ADDR: &str = "metad-leader-addr";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A request field violates a rule; the message names the field and the limit.
    InvalidArgument,
    NotFound,
    AlreadyExists,
    /// The state does not allow the operation (e.g. compare failed, member is not a learner).
    FailedPrecondition,
    /// This node is not the leader and could not forward; retry at the leader.
    NotLeader,
    /// No leader / no quorum right now; nothing was proposed. Safe to retry.
    Unavailable,
    /// The write may or may not have been applied (timeout or connection loss after proposal).
    /// Retrying with the same (client_id, seq) is safe and returns the first outcome.
    Ambiguous,
    /// A read or non-proposed operation ran out of time. Nothing changed.
    Timeout,
    /// The request's `(client_id, seq)` is older than what the cluster still remembers.
    SessionExpired,
    /// A watch asked for history older than what is retained; the message and the
    /// `metad-compact-revision` metadata give the oldest revision still available.
    Compacted,
    /// A limit on the server side (queue, memory, rate) was hit. Retry later.
    ResourceExhausted,
    Unimplemented,
    /// The node is shutting down.
    ShuttingDown,
    /// A bug or a storage failure on the server.
    Internal,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::InvalidArgument,
        ErrorCode::NotFound,
        ErrorCode::AlreadyExists,
        ErrorCode::FailedPrecondition,
        ErrorCode::NotLeader,
        ErrorCode::Unavailable,
        ErrorCode::Ambiguous,
        ErrorCode::Timeout,
        ErrorCode::SessionExpired,
        ErrorCode::Compacted,
        ErrorCode::ResourceExhausted,
        ErrorCode::Unimplemented,
        ErrorCode::ShuttingDown,
        ErrorCode::Internal,
    ];

    /// The stable name sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::AlreadyExists => "ALREADY_EXISTS",
            ErrorCode::FailedPrecondition => "FAILED_PRECONDITION",
            ErrorCode::NotLeader => "NOT_LEADER",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Ambiguous => "AMBIGUOUS",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::SessionExpired => "SESSION_EXPIRED",
            ErrorCode::Compacted => "COMPACTED",
            ErrorCode::ResourceExhausted => "RESOURCE_EXHAUSTED",
            ErrorCode::Unimplemented => "UNIMPLEMENTED",
            ErrorCode::ShuttingDown => "SHUTTING_DOWN",
            ErrorCode::Internal => "INTERNAL",
        }
    }

    /// Whether a client may retry the same request (same `(client_id, seq)` for writes).
    /// `Ambiguous` is retryable precisely because writes are deduplicated.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::NotLeader
                | ErrorCode::Unavailable
                | ErrorCode::Ambiguous
                | ErrorCode::Timeout
                | ErrorCode::ResourceExhausted
                | ErrorCode::ShuttingDown
        )
    }

    /// The gRPC status code this error travels as: the one table for the whole project.
    pub fn grpc_code(self) -> tonic::Code {
        use tonic::Code;
        match self {
            ErrorCode::InvalidArgument => Code::InvalidArgument,
            ErrorCode::NotFound => Code::NotFound,
            ErrorCode::AlreadyExists => Code::AlreadyExists,
            ErrorCode::FailedPrecondition => Code::FailedPrecondition,
            ErrorCode::NotLeader => Code::Unavailable,
            ErrorCode::Unavailable => Code::Unavailable,
            ErrorCode::Ambiguous => Code::Unknown,
            ErrorCode::Timeout => Code::DeadlineExceeded,
            ErrorCode::SessionExpired => Code::FailedPrecondition,
            ErrorCode::Compacted => Code::OutOfRange,
            ErrorCode::ResourceExhausted => Code::ResourceExhausted,
            ErrorCode::Unimplemented => Code::Unimplemented,
            ErrorCode::ShuttingDown => Code::Unavailable,
            ErrorCode::Internal => Code::Internal,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ErrorCode {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        ErrorCode::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or(())
    }
}

/// What a client can recover from a `tonic::Status` produced by a metad server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorDetails {
    pub code: ErrorCode,
    pub message: String,
    pub leader_id: Option<u64>,
    pub leader_addr: Option<String>,
}

impl ErrorDetails {
    /// Builds the status a server sends. The message should name the field and limit for
    /// `InvalidArgument`.
    pub fn to_status(&self) -> tonic::Status {
        let mut st = tonic::Status::new(self.code.grpc_code(), self.message.clone());
        let md = st.metadata_mut();
        if let Ok(v) = self.code.as_str().parse() {
            md.insert(MD_ERROR_CODE, v);
        }
        if let Some(id) = self.leader_id {
            if let Ok(v) = id.to_string().parse() {
                md.insert(MD_LEADER_ID, v);
            }
        }
        if let Some(addr) = &self.leader_addr {
            if let Ok(v) = addr.parse() {
                md.insert(MD_LEADER_ADDR, v);
            }
        }
        st
    }

    /// Decodes a status. Statuses that did not come from metad (transport errors) are mapped
    /// from their gRPC code; a transport failure on a write is the caller's to call ambiguous.
    pub fn from_status(st: &tonic::Status) -> ErrorDetails {
        let md = st.metadata();
        let code = md
            .get(MD_ERROR_CODE)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse().ok())
            .unwrap_or(match st.code() {
                tonic::Code::InvalidArgument | tonic::Code::OutOfRange => {
                    ErrorCode::InvalidArgument
                }
                tonic::Code::NotFound => ErrorCode::NotFound,
                tonic::Code::AlreadyExists => ErrorCode::AlreadyExists,
                tonic::Code::FailedPrecondition | tonic::Code::Aborted => {
                    ErrorCode::FailedPrecondition
                }
                tonic::Code::Unavailable => ErrorCode::Unavailable,
                tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => ErrorCode::Timeout,
                tonic::Code::ResourceExhausted => ErrorCode::ResourceExhausted,
                tonic::Code::Unimplemented => ErrorCode::Unimplemented,
                _ => ErrorCode::Internal,
            });
        ErrorDetails {
            code,
            message: st.message().to_string(),
            leader_id: md
                .get(MD_LEADER_ID)
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.parse().ok()),
            leader_addr: md
                .get(MD_LEADER_ADDR)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert(c.as_str()), "duplicate name {c}");
            assert_eq!(c.as_str().parse::<ErrorCode>(), Ok(c));
        }
    }

    #[test]
    fn status_round_trip_keeps_leader_hint() {
        let d = ErrorDetails {
            code: ErrorCode::NotLeader,
            message: "not leader".into(),
            leader_id: Some(3),
            leader_addr: Some("127.0.0.1:7003".into()),
        };
        let back = ErrorDetails::from_status(&d.to_status());
        assert_eq!(back, d);
        assert!(back.code.is_retryable());
        assert!(!ErrorCode::InvalidArgument.is_retryable());
    }
}
