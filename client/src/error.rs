//! [`ClientError`], the one error type of the client, and the classification of a failed
//! attempt: a server-coded status, a failure to connect (nothing was sent), or a failure after
//! the request was sent — which for a write means its outcome is unknown ([`ClientError::Ambiguous`]),
//! never "failed".

use std::time::Duration;

use metad_proto::error::MD_ERROR_CODE;
use metad_proto::{ErrorCode, ErrorDetails};

/// Everything a [`crate::Client`] call can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The cluster answered with an error (or, for reads, the attempt failed in a way that is
    /// known to have changed nothing, e.g. a read timed out).
    #[error("{code}: {message}")]
    Rpc {
        code: ErrorCode,
        message: String,
        /// On `NotLeader`: the leader's node id, if the node knew it.
        leader_id: Option<u64>,
        /// On `NotLeader`: the leader's client address, if the node knew it.
        leader_addr: Option<String>,
    },
    /// Could not connect to a node: nothing was sent, so nothing changed.
    #[error("UNAVAILABLE: cannot connect to {endpoint}: {message}")]
    Transport { endpoint: String, message: String },
    /// A mutation whose outcome is unknown: the request was sent but no definite reply came back
    /// (timeout, lost connection, ...). It may or may not have been applied. A register write
    /// can be retried safely with the same seq (`Client::register_put_with_seq`): the cluster
    /// returns the first outcome.
    #[error("AMBIGUOUS: {message}")]
    Ambiguous {
        message: String,
        /// The write's seq, for writes that carry a `(client_id, seq)`.
        seq: Option<u64>,
    },
    /// The client configuration (or an argument) is unusable; no request was sent.
    #[error("INVALID_ARGUMENT: {0}")]
    InvalidConfig(String),
}

impl ClientError {
    /// The stable error code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            ClientError::Rpc { code, .. } => *code,
            ClientError::Transport { .. } => ErrorCode::Unavailable,
            ClientError::Ambiguous { .. } => ErrorCode::Ambiguous,
            ClientError::InvalidConfig(_) => ErrorCode::InvalidArgument,
        }
    }

    /// Whether the same request may be retried. An `Ambiguous` write is retryable only with the
    /// same `(client_id, seq)`.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::InvalidConfig(_) => false,
            ClientError::Transport { .. } => true,
            other => other.code().is_retryable(),
        }
    }

    /// The leader's client address carried by a `NotLeader` error.
    pub fn leader_hint(&self) -> Option<&str> {
        match self {
            ClientError::Rpc {
                leader_addr: Some(a),
                ..
            } if !a.is_empty() => Some(a),
            _ => None,
        }
    }

    /// The error message without the code prefix.
    pub fn message(&self) -> String {
        match self {
            ClientError::Rpc { message, .. } | ClientError::Ambiguous { message, .. } => {
                message.clone()
            }
            ClientError::Transport { endpoint, message } => {
                format!("cannot connect to {endpoint}: {message}")
            }
            ClientError::InvalidConfig(m) => m.clone(),
        }
    }

    pub(crate) fn rpc(code: ErrorCode, message: impl Into<String>) -> Self {
        ClientError::Rpc {
            code,
            message: message.into(),
            leader_id: None,
            leader_addr: None,
        }
    }
}

/// What kind of call an attempt belonged to; decides how an unknown outcome is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallKind {
    /// Changes nothing: lost replies and timeouts are plain retryable `Unavailable`/`Timeout`.
    Read,
    /// A deduplicated write carrying `(client_id, seq)`: an unknown outcome is `Ambiguous`
    /// and is retried with the same seq.
    Write { seq: u64 },
    /// A mutation without deduplication (membership changes): an unknown outcome is
    /// `Ambiguous` and is NOT retried.
    Mutation,
}

impl CallKind {
    pub(crate) fn seq(self) -> Option<u64> {
        match self {
            CallKind::Write { seq } => Some(seq),
            _ => None,
        }
    }

    fn mutates(self) -> bool {
        !matches!(self, CallKind::Read)
    }
}

/// Classifies the status of one failed attempt sent to `endpoint`.
pub(crate) fn classify(status: &tonic::Status, kind: CallKind, endpoint: &str) -> ClientError {
    // A status carrying a metad error code came from a metad server: it is definitive.
    if status.metadata().get(MD_ERROR_CODE).is_some() {
        let d = ErrorDetails::from_status(status);
        if d.code == ErrorCode::Ambiguous {
            return ClientError::Ambiguous {
                message: d.message,
                seq: kind.seq(),
            };
        }
        return ClientError::Rpc {
            code: d.code,
            message: d.message,
            leader_id: d.leader_id,
            leader_addr: d.leader_addr,
        };
    }
    if is_connect_error(status) {
        let mut message = status.message().to_string();
        if let Some(cause) = root_cause(status).filter(|c| !message.contains(c.as_str())) {
            message = format!("{message}: {cause}");
        }
        return ClientError::Transport {
            endpoint: endpoint.to_string(),
            message,
        };
    }
    // No metad code: either a transport failure after the request left (connection reset,
    // keep-alive timeout, cancelled) or a status produced by tonic/hyper itself.
    let lost_in_flight = matches!(
        status.code(),
        tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::Cancelled
            | tonic::Code::DeadlineExceeded
    );
    if lost_in_flight {
        let mut message = format!("{endpoint}: {}", status.message());
        if let Some(cause) = root_cause(status).filter(|c| !message.contains(c.as_str())) {
            message = format!("{message}: {cause}");
        }
        if kind.mutates() {
            return ClientError::Ambiguous {
                message: format!("request sent but no reply: {message}"),
                seq: kind.seq(),
            };
        }
        let code = match status.code() {
            tonic::Code::Cancelled | tonic::Code::DeadlineExceeded => ErrorCode::Timeout,
            _ => ErrorCode::Unavailable,
        };
        return ClientError::rpc(code, message);
    }
    // A definite answer that is not from metad's error layer (e.g. UNIMPLEMENTED for a
    // service this server does not have, or a decode error).
    let d = ErrorDetails::from_status(status);
    ClientError::rpc(d.code, format!("{endpoint}: {}", d.message))
}

/// The error for an attempt that got no reply within `after`.
pub(crate) fn attempt_timed_out(kind: CallKind, endpoint: &str, after: Duration) -> ClientError {
    let message = format!("no reply from {endpoint} within {after:?}");
    if kind.mutates() {
        ClientError::Ambiguous {
            message: format!("request sent but {message}"),
            seq: kind.seq(),
        }
    } else {
        ClientError::rpc(ErrorCode::Timeout, message)
    }
}

/// Whether a status was produced by a failure to connect (so the request never left).
fn is_connect_error(status: &tonic::Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(err) = source {
        if err.is::<tonic::ConnectError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// The innermost error's text (e.g. "Connection refused (os error 111)").
fn root_cause(status: &tonic::Status) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    let mut last = None;
    while let Some(err) = source {
        last = Some(err.to_string());
        source = err.source();
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metad_status(code: ErrorCode, hint: Option<&str>) -> tonic::Status {
        ErrorDetails {
            code,
            message: "m".into(),
            leader_id: hint.map(|_| 2),
            leader_addr: hint.map(str::to_string),
        }
        .to_status()
    }

    fn connect_status() -> tonic::Status {
        let err: Box<dyn std::error::Error + Send + Sync> =
            Box::new(tonic::ConnectError("connection refused".into()));
        tonic::Status::from_error(err)
    }

    #[test]
    fn not_leader_is_retryable_with_hint() {
        let e = classify(
            &metad_status(ErrorCode::NotLeader, Some("10.0.0.2:7001")),
            CallKind::Mutation,
            "a",
        );
        assert_eq!(e.code(), ErrorCode::NotLeader);
        assert!(e.is_retryable());
        assert_eq!(e.leader_hint(), Some("10.0.0.2:7001"));
    }

    #[test]
    fn server_codes_are_kept_for_writes() {
        let e = classify(
            &metad_status(ErrorCode::InvalidArgument, None),
            CallKind::Write { seq: 3 },
            "a",
        );
        assert_eq!(e.code(), ErrorCode::InvalidArgument);
        assert!(!e.is_retryable());
        let e = classify(
            &metad_status(ErrorCode::Unavailable, None),
            CallKind::Write { seq: 3 },
            "a",
        );
        assert_eq!(
            e.code(),
            ErrorCode::Unavailable,
            "server-coded Unavailable: nothing proposed"
        );
        let e = classify(
            &metad_status(ErrorCode::Ambiguous, None),
            CallKind::Write { seq: 3 },
            "a",
        );
        assert_eq!(
            e,
            ClientError::Ambiguous {
                message: "m".into(),
                seq: Some(3)
            }
        );
    }

    #[test]
    fn write_lost_after_send_is_ambiguous() {
        for st in [
            tonic::Status::unavailable("connection reset"),
            tonic::Status::cancelled("timeout expired"),
            tonic::Status::deadline_exceeded("deadline"),
            tonic::Status::unknown("transport error"),
        ] {
            let e = classify(&st, CallKind::Write { seq: 9 }, "a");
            assert_eq!(e.code(), ErrorCode::Ambiguous, "{st:?}");
            assert!(matches!(e, ClientError::Ambiguous { seq: Some(9), .. }));
            assert!(e.is_retryable());
            assert_eq!(
                classify(&st, CallKind::Mutation, "a").code(),
                ErrorCode::Ambiguous
            );
        }
        assert_eq!(
            attempt_timed_out(CallKind::Write { seq: 1 }, "a", Duration::from_secs(1)).code(),
            ErrorCode::Ambiguous
        );
    }

    #[test]
    fn read_lost_after_send_is_retryable_timeout_or_unavailable() {
        let e = classify(&tonic::Status::unavailable("reset"), CallKind::Read, "a");
        assert_eq!(e.code(), ErrorCode::Unavailable);
        assert!(e.is_retryable());
        let e = classify(
            &tonic::Status::cancelled("timeout expired"),
            CallKind::Read,
            "a",
        );
        assert_eq!(e.code(), ErrorCode::Timeout);
        assert!(e.is_retryable());
        let e = attempt_timed_out(CallKind::Read, "a", Duration::from_secs(1));
        assert_eq!(e.code(), ErrorCode::Timeout);
        assert!(e.is_retryable());
    }

    #[test]
    fn connect_failure_is_transport_even_for_writes() {
        let e = classify(&connect_status(), CallKind::Write { seq: 1 }, "http://x:1");
        assert!(matches!(e, ClientError::Transport { .. }), "{e:?}");
        assert_eq!(e.code(), ErrorCode::Unavailable);
        assert!(e.is_retryable());
    }

    #[test]
    fn non_metad_definite_status_is_not_ambiguous() {
        let e = classify(
            &tonic::Status::unimplemented("no such service"),
            CallKind::Write { seq: 1 },
            "a",
        );
        assert_eq!(e.code(), ErrorCode::Unimplemented);
        assert!(!e.is_retryable());
    }

    #[test]
    fn display_starts_with_code() {
        let e = ClientError::rpc(ErrorCode::NotFound, "no member 4");
        assert_eq!(e.to_string(), "NOT_FOUND: no member 4");
        assert_eq!(e.message(), "no member 4");
        assert!(ClientError::InvalidConfig("x".into())
            .to_string()
            .starts_with("INVALID_ARGUMENT"));
        assert!(!ClientError::InvalidConfig("x".into()).is_retryable());
    }
}
