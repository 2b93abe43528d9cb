//! [`LeaseKeeper`]: keeps one agent lease alive over the `Agents.KeepAlive` bidi stream and
//! publishes the lease's state on a `tokio::sync::watch` channel.
//!
//! The keeper sends one `KeepAliveRequest` (with a fresh write header) every `ttl / 3`. Each
//! answer moves the local expiry estimate to *the time that request was sent* + ttl — never
//! later than the server's real deadline, which is stamped when the renewal is applied. Any
//! stream error, an ended stream or an unanswered request reopens the stream on the next
//! endpoint with jittered backoff. `NOT_FOUND` means the lease no longer exists (expired,
//! revoked or replaced): the state becomes [`LeaseState::Lost`] for good and the keeper stops.

use std::collections::VecDeque;
use std::time::Duration;

use metad_proto::v1 as pb;
use metad_proto::v1::agents_client::AgentsClient;
use metad_proto::ErrorCode;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use crate::backoff::Backoff;
use crate::error::{classify, CallKind, ClientError};
use crate::Client;

/// What the agent knows about its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseState {
    /// Renewed; the server's deadline is no earlier than `expires_at` (a local estimate).
    /// Past `expires_at` without a renewal, treat the lease as unsafe to act under.
    Alive { expires_at: Instant },
    /// The lease is gone (expired, revoked or replaced by a newer registration).
    Lost { reason: String },
}

impl LeaseState {
    /// Alive, and the estimate has not run out at `now`.
    pub fn is_alive_at(&self, now: Instant) -> bool {
        matches!(self, LeaseState::Alive { expires_at } if *expires_at > now)
    }

    /// Alive now (see [`LeaseState::is_alive_at`]).
    pub fn is_alive(&self) -> bool {
        self.is_alive_at(Instant::now())
    }
}

/// Keeps a lease alive in a background task until [`LeaseKeeper::stop`], a drop, or the
/// lease is lost.
#[derive(Debug)]
pub struct LeaseKeeper {
    lease: u64,
    state: watch::Receiver<LeaseState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl LeaseKeeper {
    /// Starts renewing `lease` (whose TTL is `ttl`). `expires_at` is the initial estimate:
    /// the instant the registration was *sent* + ttl.
    pub fn start(client: Client, lease: u64, ttl: Duration, expires_at: Instant) -> LeaseKeeper {
        let (tx, rx) = watch::channel(LeaseState::Alive { expires_at });
        let (stop_tx, stop_rx) = oneshot::channel();
        let ttl = ttl.max(Duration::from_millis(300));
        let task = tokio::spawn(run(client, lease, ttl, tx, stop_rx));
        LeaseKeeper {
            lease,
            state: rx,
            stop: Some(stop_tx),
            task: Some(task),
        }
    }

    /// The lease id.
    pub fn lease(&self) -> u64 {
        self.lease
    }

    /// The current state.
    pub fn state(&self) -> LeaseState {
        self.state.borrow().clone()
    }

    /// Whether the lease is alive now (renewed and the estimate has not run out).
    pub fn is_alive(&self) -> bool {
        self.state.borrow().is_alive()
    }

    /// A receiver of every state change.
    pub fn subscribe(&self) -> watch::Receiver<LeaseState> {
        self.state.clone()
    }

    /// Stops renewing (the lease then expires after its TTL unless revoked).
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// How one stream session ended.
enum Ended {
    Stopped,
    Lost(String),
    Broken(ClientError),
}

async fn run(
    client: Client,
    lease: u64,
    ttl: Duration,
    state: watch::Sender<LeaseState>,
    mut stop: oneshot::Receiver<()>,
) {
    let backoff = Backoff::default();
    let mut failures: u32 = 0;
    loop {
        let idx = match client.pinned() {
            Some(i) => i,
            None => client.inner.endpoints.current(),
        };
        let ended = session(&client, idx, lease, ttl, &state, &mut stop, &mut failures).await;
        match ended {
            Ended::Stopped => return,
            Ended::Lost(reason) => {
                tracing::warn!(lease, %reason, "agent lease lost");
                let _ = state.send(LeaseState::Lost { reason });
                return;
            }
            Ended::Broken(err) => {
                tracing::debug!(lease, error = %err, "keep-alive stream broken; reopening");
                if client.pinned().is_none() {
                    let hinted = err
                        .leader_hint()
                        .and_then(|h| client.inner.endpoints.follow_hint(h));
                    if hinted.is_none() {
                        client.inner.endpoints.rotate_from(idx);
                    }
                }
                let delay = backoff.delay(failures.min(8));
                failures = failures.saturating_add(1);
                tokio::select! {
                    _ = &mut stop => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// One KeepAlive stream on endpoint `idx`, until it breaks, the lease is lost, or stop.
async fn session(
    client: &Client,
    idx: usize,
    lease: u64,
    ttl: Duration,
    state: &watch::Sender<LeaseState>,
    stop: &mut oneshot::Receiver<()>,
    failures: &mut u32,
) -> Ended {
    let Some((addr, channel)) = client.inner.endpoints.get(idx) else {
        return Ended::Broken(ClientError::InvalidConfig(format!("no endpoint #{idx}")));
    };
    let interval = ttl / 3;
    // An unanswered renewal older than this means the stream is stuck.
    let answer_timeout = interval.max(Duration::from_millis(200));
    let (tx, rx) = mpsc::channel::<pb::KeepAliveRequest>(4);
    let mut sent: VecDeque<Instant> = VecDeque::new();
    let request = |client: &Client| pb::KeepAliveRequest {
        header: Some(client.seq_header(client.next_seq())),
        lease,
    };
    if tx.send(request(client)).await.is_err() {
        return Ended::Broken(ClientError::rpc(
            ErrorCode::Internal,
            "request channel closed",
        ));
    }
    sent.push_back(Instant::now());
    let mut agents = AgentsClient::new(channel);
    let open = agents.keep_alive(ReceiverStream::new(rx));
    let mut stream = tokio::select! {
        _ = &mut *stop => return Ended::Stopped,
        r = tokio::time::timeout(answer_timeout, open) => match r {
            Ok(Ok(resp)) => resp.into_inner(),
            Ok(Err(status)) => return end_of(&classify(&status, CallKind::Read, &addr)),
            Err(_) => {
                return Ended::Broken(ClientError::rpc(
                    ErrorCode::Timeout,
                    format!("{addr}: keep-alive stream did not open within {answer_timeout:?}"),
                ))
            }
        },
    };
    let mut tick = tokio::time::interval_at(Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stuck_at = sent.front().map(|t| *t + answer_timeout);
        tokio::select! {
            _ = &mut *stop => return Ended::Stopped,
            _ = tick.tick() => {
                if tx.send(request(client)).await.is_err() {
                    return Ended::Broken(ClientError::rpc(ErrorCode::Unavailable, "stream closed"));
                }
                sent.push_back(Instant::now());
            }
            _ = sleep_until_opt(stuck_at) => {
                return Ended::Broken(ClientError::rpc(
                    ErrorCode::Timeout,
                    format!("{addr}: no keep-alive answer within {answer_timeout:?}"),
                ));
            }
            msg = stream.message() => match msg {
                Ok(Some(resp)) => {
                    let sent_at = sent.pop_front().unwrap_or_else(Instant::now);
                    let ttl_now = resp
                        .agent
                        .as_ref()
                        .map(|a| Duration::from_millis(a.ttl_ms))
                        .filter(|d| !d.is_zero())
                        .unwrap_or(ttl);
                    *failures = 0;
                    let _ = state.send(LeaseState::Alive { expires_at: sent_at + ttl_now });
                }
                Ok(None) => {
                    return Ended::Broken(ClientError::rpc(
                        ErrorCode::Unavailable,
                        format!("{addr}: keep-alive stream ended"),
                    ))
                }
                Err(status) => return end_of(&classify(&status, CallKind::Read, &addr)),
            },
        }
    }
}

fn end_of(err: &ClientError) -> Ended {
    if err.code() == ErrorCode::NotFound {
        Ended::Lost(err.to_string())
    } else {
        Ended::Broken(err.clone())
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alive_until_the_estimate_runs_out() {
        let now = Instant::now();
        let s = LeaseState::Alive {
            expires_at: now + Duration::from_secs(1),
        };
        assert!(s.is_alive_at(now));
        assert!(!s.is_alive_at(now + Duration::from_secs(2)));
        let lost = LeaseState::Lost { reason: "x".into() };
        assert!(!lost.is_alive_at(now));
    }

    #[test]
    fn not_found_means_lost() {
        assert!(matches!(
            end_of(&ClientError::rpc(ErrorCode::NotFound, "no lease 3")),
            Ended::Lost(_)
        ));
        assert!(matches!(
            end_of(&ClientError::rpc(ErrorCode::Unavailable, "x")),
            Ended::Broken(_)
        ));
    }
}
