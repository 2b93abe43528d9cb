//! Batched commits: copy tasks hand their completions to one committer task, which sends
//! them in CompleteMoves calls of up to `commit_batch` completions, waiting at most
//! `commit_delay` for a batch to fill. Also the agent's "persist" rule for writes: an
//! unknown outcome is resent with the *same* seq, so the cluster answers with the first
//! outcome (a claim whose reply was lost is not a claim lost).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use metad_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::stats::AgentStats;
use crate::backoff::Backoff;
use crate::{Client, ClientError};

/// Rounds of [`persist`] (each round is a full client call with its own retries).
pub(crate) const PERSIST_ROUNDS: u32 = 5;

/// One placed copy waiting to be committed.
#[derive(Debug, Clone)]
pub(crate) struct Commit {
    pub completion: pb::MoveCompletion,
    pub path: String,
}

/// Waits for a first item, then gathers more until `max` items or `delay` after the first.
/// `None` once the channel is closed and empty.
pub(crate) async fn collect_batch<T>(
    rx: &mut mpsc::Receiver<T>,
    max: usize,
    delay: Duration,
) -> Option<Vec<T>> {
    let first = rx.recv().await?;
    let deadline = Instant::now() + delay;
    let mut batch = vec![first];
    while batch.len() < max.max(1) {
        match rx.try_recv() {
            Ok(x) => {
                batch.push(x);
                continue;
            }
            Err(mpsc::error::TryRecvError::Disconnected) => break,
            Err(mpsc::error::TryRecvError::Empty) => {}
        }
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(x)) => batch.push(x),
            Ok(None) | Err(_) => break,
        }
    }
    Some(batch)
}

/// Runs `call(seq)` with one seq taken now, resending with the same seq after retryable
/// errors (backoff between rounds), at most `rounds` rounds.
pub(crate) async fn persist<T, F, Fut>(
    client: &Client,
    stats: &AgentStats,
    what: &str,
    rounds: u32,
    mut call: F,
) -> Result<T, ClientError>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    let seq = client.next_seq();
    let backoff = Backoff::default();
    let mut round = 0;
    loop {
        match call(seq).await {
            Ok(v) => return Ok(v),
            Err(e) => {
                round += 1;
                if e.is_retryable() {
                    AgentStats::inc(&stats.errors);
                }
                if !e.is_retryable() {
                    // A definite answer: the caller decides what it means.
                    tracing::debug!(%what, error = %e, "refused");
                    return Err(e);
                }
                if round >= rounds {
                    tracing::warn!(%what, error = %e, rounds = round, "giving up");
                    return Err(e);
                }
                tracing::info!(%what, error = %e, "retrying with the same seq");
                tokio::time::sleep(backoff.delay(round + 3)).await;
            }
        }
    }
}

/// The committer: until every sender is dropped, commits what the copy tasks send.
pub(crate) async fn run_committer(
    client: Client,
    mut rx: mpsc::Receiver<Commit>,
    max: usize,
    delay: Duration,
    stats: Arc<AgentStats>,
) {
    while let Some(batch) = collect_batch(&mut rx, max, delay).await {
        flush(&client, batch, &stats).await;
    }
}

async fn flush(client: &Client, batch: Vec<Commit>, stats: &AgentStats) {
    let completions: Vec<pb::MoveCompletion> = batch.iter().map(|c| c.completion.clone()).collect();
    let n = completions.len();
    let resp = persist(client, stats, "CompleteMoves", PERSIST_ROUNDS, |seq| {
        client.complete_moves_with_seq(seq, completions.clone())
    })
    .await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) => {
            // The claims expire with the lease (or are recopied): the copies are redone.
            tracing::error!(completions = n, error = %e, "could not commit; the moves will be redone");
            return;
        }
    };
    for (i, r) in resp.results.iter().enumerate() {
        let path = batch.get(i).map(|c| c.path.as_str()).unwrap_or("");
        match pb::CompleteOutcome::try_from(r.outcome) {
            Ok(pb::CompleteOutcome::Committed) => AgentStats::inc(&stats.committed),
            Ok(pb::CompleteOutcome::Recopy) => {
                AgentStats::inc(&stats.recopies);
                tracing::info!(move_id = r.move_id, %path, error = %r.error, "changed during the copy; it will be recopied");
            }
            _ => {
                // Stale token (a newer claim may own the placed file: leave it), move
                // cancelled, file deleted...
                AgentStats::inc(&stats.refused);
                tracing::warn!(move_id = r.move_id, %path, code = %r.error_code, error = %r.error, "commit refused");
            }
        }
    }
    if resp.results.len() != n {
        tracing::warn!(
            sent = n,
            answered = resp.results.len(),
            "CompleteMoves answered a different number of results"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn batches_fill_up_to_max_or_flush_after_the_delay() {
        let (tx, mut rx) = mpsc::channel(1000);
        for i in 0..600u32 {
            tx.send(i).await.expect("send");
        }
        let d = Duration::from_millis(30);
        let b1 = collect_batch(&mut rx, 256, d).await.expect("batch");
        let b2 = collect_batch(&mut rx, 256, d).await.expect("batch");
        assert_eq!((b1.len(), b2.len()), (256, 256));
        assert_eq!(b2[0], 256, "in order");
        // 88 left: the batch waits for the delay, then goes out partial.
        let t0 = Instant::now();
        let b3 = collect_batch(&mut rx, 256, d).await.expect("batch");
        assert_eq!(b3.len(), 88);
        assert!(t0.elapsed() >= d, "waited for company");

        // A straggler inside the window joins; one after it starts the next batch.
        let tx2 = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            tx2.send(1).await.expect("send");
            tokio::time::sleep(Duration::from_millis(100)).await;
            tx2.send(2).await.expect("send");
        });
        tx.send(0).await.expect("send");
        let b4 = collect_batch(&mut rx, 256, d).await.expect("batch");
        assert_eq!(b4, vec![0, 1]);
        drop(tx);
        let b5 = collect_batch(&mut rx, 256, d).await.expect("batch");
        assert_eq!(b5, vec![2]);
        assert!(collect_batch(&mut rx, 256, d).await.is_none(), "closed");
    }
}
