//! The retry loop every call goes through: pick a node (the believed leader, or a pinned one),
//! run one attempt under the per-attempt timeout, classify a failure, follow a `NotLeader` hint
//! or rotate to the next node, back off with full jitter, and stop at the retry budget or the
//! total timeout. It also makes sure a write that was ever possibly applied is reported as
//! `Ambiguous`, never as failed.

use std::future::Future;
use std::time::Duration;

use metad_proto::ErrorCode;
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::backoff::Backoff;
use crate::endpoint::Endpoints;
use crate::error::{attempt_timed_out, classify, CallKind, ClientError};

/// Where the attempts of one call go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// The believed leader; follow `NotLeader` hints, rotate on failures.
    Cursor,
    /// Always this endpoint index; never rotate or follow hints.
    Pinned(usize),
}

/// Budget of one call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    pub request_timeout: Duration,
    pub total_timeout: Duration,
    pub max_retries: u32,
    pub backoff: Backoff,
}

/// How many `NotLeader` hints in a row are followed without sleeping (guards against two nodes
/// pointing at each other during an election).
const MAX_IMMEDIATE_HINTS: u32 = 2;

/// Runs `attempt(channel, timeout)` until it succeeds, fails for good, or the budget is spent.
/// `attempt_timeout` is the per-attempt limit (normally `policy.request_timeout`).
pub(crate) async fn run<T, F, Fut>(
    endpoints: &Endpoints,
    policy: &Policy,
    kind: CallKind,
    route: Route,
    attempt_timeout: Duration,
    mut attempt: F,
) -> Result<T, ClientError>
where
    F: FnMut(Channel, Duration) -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let deadline = Instant::now() + policy.total_timeout;
    let mut attempts: u32 = 0;
    let mut ambiguous_seen = false;
    let mut hints_in_a_row: u32 = 0;
    let mut unreachable: Vec<String> = Vec::new();
    loop {
        let idx = match route {
            Route::Cursor => endpoints.current(),
            Route::Pinned(i) => i,
        };
        let (addr, channel) = endpoints.get(idx).ok_or_else(|| {
            ClientError::InvalidConfig(format!(
                "no endpoint #{idx} (the client knows {})",
                endpoints.len()
            ))
        })?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let t = attempt_timeout.min(remaining).max(Duration::from_millis(1));
        let err = match tokio::time::timeout(t, attempt(channel, t)).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(status)) => classify(&status, kind, &addr),
            Err(_) => attempt_timed_out(kind, &addr, t),
        };
        attempts += 1;
        let err = match err {
            ClientError::Transport { endpoint, message } => {
                if !unreachable.contains(&endpoint) {
                    unreachable.push(endpoint);
                }
                // Name every node that could not be reached, not just the last one.
                ClientError::Transport {
                    endpoint: unreachable.join(", "),
                    message,
                }
            }
            other => other,
        };
        if matches!(err, ClientError::Ambiguous { .. }) {
            ambiguous_seen = true;
            if kind == CallKind::Mutation {
                // Not deduplicated: retrying could apply it twice. The next call should not
                // start at a node that just timed out (it may be paused or cut off).
                if route == Route::Cursor {
                    endpoints.rotate_from(idx);
                }
                return Err(err);
            }
        }
        if !err.is_retryable() || attempts > policy.max_retries {
            return Err(finish(err, kind, ambiguous_seen, attempts));
        }

        let mut immediate = false;
        if route == Route::Cursor {
            let hinted = match err.code() {
                ErrorCode::NotLeader => err.leader_hint().and_then(|h| endpoints.follow_hint(h)),
                _ => None,
            };
            match hinted {
                Some(j) => {
                    immediate = j != idx && hints_in_a_row < MAX_IMMEDIATE_HINTS;
                    hints_in_a_row += 1;
                }
                None => {
                    hints_in_a_row = 0;
                    if err.code() != ErrorCode::ResourceExhausted {
                        endpoints.rotate_from(idx);
                    }
                }
            }
        }
        let delay = if immediate {
            Duration::ZERO
        } else {
            policy.backoff.delay(attempts - 1)
        };
        if Instant::now() + delay >= deadline {
            return Err(finish(err, kind, ambiguous_seen, attempts));
        }
        tracing::debug!(attempt = attempts, endpoint = %addr, error = %err, ?delay, "retrying");
        tokio::time::sleep(delay).await;
    }
}

/// The error a call ends with. A deduplicated write that may have been applied by an earlier
/// attempt is `Ambiguous`, whatever the last attempt said, unless the last answer was a
/// definitive one from the cluster (which, thanks to deduplication, is the write's outcome).
pub(crate) fn finish(
    err: ClientError,
    kind: CallKind,
    ambiguous_seen: bool,
    attempts: u32,
) -> ClientError {
    match (kind, &err) {
        (_, ClientError::Ambiguous { message, seq }) => ClientError::Ambiguous {
            message: format!("{message} (gave up after {attempts} attempt(s))"),
            seq: *seq,
        },
        (CallKind::Write { seq }, _)
            if ambiguous_seen
                && (err.is_retryable() || err.code() == ErrorCode::SessionExpired) =>
        {
            ClientError::Ambiguous {
                message: format!(
                    "an earlier attempt may have been applied; last of {attempts} attempt(s): {err}"
                ),
                seq: Some(seq),
            }
        }
        _ => err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_after_ambiguous_attempt_stays_ambiguous() {
        let w = CallKind::Write { seq: 4 };
        let unavailable = ClientError::Transport {
            endpoint: "a".into(),
            message: "refused".into(),
        };
        let e = finish(unavailable.clone(), w, true, 3);
        assert!(
            matches!(e, ClientError::Ambiguous { seq: Some(4), .. }),
            "{e:?}"
        );
        let expired = ClientError::rpc(ErrorCode::SessionExpired, "old seq");
        assert_eq!(finish(expired, w, true, 2).code(), ErrorCode::Ambiguous);
        // Without an ambiguous attempt nothing was applied: the error stands.
        assert_eq!(finish(unavailable.clone(), w, false, 3), unavailable);
        // A definitive answer (deduplicated) is the outcome.
        let invalid = ClientError::rpc(ErrorCode::InvalidArgument, "key too long");
        assert_eq!(finish(invalid.clone(), w, true, 2), invalid);
        // Reads are never ambiguous.
        assert_eq!(
            finish(unavailable.clone(), CallKind::Read, true, 3),
            unavailable
        );
    }
}
