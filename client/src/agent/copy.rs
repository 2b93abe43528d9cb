//! One copy task: read the source instance through the source silo's driver, stage it on the
//! agent's silo (checksum computed as the bytes stream), report progress for long copies,
//! verify size and checksum against what metad recorded, check the lease is still alive,
//! publish atomically, and hand the completion to the committer. Any failure is reported with
//! FailMove (retryable: the move comes back after a backoff); a lost lease or a shutdown
//! abandons the copy without a word (the claim dies with the lease).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use metad_proto::v1 as pb;
use metad_proto::ErrorCode;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::commit::{persist, Commit};
use super::driver::{is_verifiable, TaskReader};
use super::fence::confirm_claim;
use super::run::Shared;
use super::stats::AgentStats;
use crate::LeaseState;

/// Longest FailMove reason the server accepts.
const REASON_MAX: usize = 1024;

/// What a copy task needs besides the task itself.
pub(crate) struct CopyEnv {
    pub shared: Arc<Shared>,
    pub lease: watch::Receiver<LeaseState>,
    /// Set when the lease is lost or the agent stops.
    pub abort: Arc<AtomicBool>,
    pub commits: mpsc::Sender<Commit>,
}

/// `location`, or the path without its leading '/' when the server left it empty.
pub(crate) fn location_or_path<'a>(location: &'a str, path: &'a str) -> &'a str {
    if location.is_empty() {
        path.trim_start_matches('/')
    } else {
        location
    }
}

fn cut(mut s: String) -> String {
    if s.len() > REASON_MAX {
        let mut end = REASON_MAX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Copies one task to the end (commit handed over, failure reported, or abandoned).
pub(crate) async fn copy_one(env: CopyEnv, task: pb::MoveTask) {
    let sh = Arc::clone(&env.shared);
    let started = Instant::now();
    let outcome = copy_inner(&env, &task).await;
    sh.placements.finished(task.move_id);
    match outcome {
        Ok(()) => {
            tracing::debug!(move_id = task.move_id, path = %task.path, bytes = task.size, elapsed = ?started.elapsed(), "copied");
        }
        Err(Outcome::Abandoned(why)) => {
            AgentStats::inc(&sh.stats.aborted);
            tracing::info!(move_id = task.move_id, path = %task.path, %why, "copy abandoned");
        }
        Err(Outcome::Fail { reason, retryable }) => {
            tracing::warn!(move_id = task.move_id, path = %task.path, %reason, retryable, "copy failed");
            fail(&sh, &task, reason, retryable).await;
        }
    }
}

enum Outcome {
    /// Do not tell metad anything (lease lost, stopping, claim no longer ours).
    Abandoned(String),
    Fail {
        reason: String,
        retryable: bool,
    },
}

fn retry(reason: String) -> Outcome {
    Outcome::Fail {
        reason,
        retryable: true,
    }
}

async fn copy_inner(env: &CopyEnv, task: &pb::MoveTask) -> Result<(), Outcome> {
    let sh = &env.shared;
    if task.target_silo != sh.config.silo && !task.target_silo.is_empty() {
        return Err(Outcome::Fail {
            reason: format!(
                "task targets silo {} but this agent serves {}",
                task.target_silo, sh.config.silo
            ),
            retryable: true,
        });
    }
    let source = sh
        .sources
        .get(&task.source_silo, &task.source_root)
        .map_err(|dir| retry(format!("source silo root not reachable: {dir}")))?;
    let src_loc = location_or_path(&task.source_location, &task.path);
    let dst_loc = location_or_path(&task.target_location, &task.path);
    let reader = source.open(src_loc).await.map_err(|e| {
        retry(format!(
            "cannot read {src_loc} on {}: {e}",
            source.describe()
        ))
    })?;

    let progress = Arc::new(AtomicU64::new(0));
    let mine = Arc::new(AtomicBool::new(false));
    let reader = TaskReader::new(reader, Arc::clone(&progress), Arc::clone(&mine))
        .abort_also_on(Arc::clone(&env.abort))
        .boxed();
    let stage = sh.target.stage(dst_loc, reader);
    tokio::pin!(stage);
    let every = sh.config.progress_interval;
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reported = 0u64;
    let staged = loop {
        tokio::select! {
            r = &mut stage => break r,
            _ = tick.tick() => {
                let done = progress.load(Ordering::Relaxed);
                if done > reported && !env.abort.load(Ordering::Acquire) {
                    reported = done;
                    match sh.client.report_progress(task.move_id, task.token, done).await {
                        Ok(_) => {}
                        Err(e) if !e.is_retryable() => {
                            // Stale token, cancelled, file changed: the claim is not ours.
                            tracing::info!(move_id = task.move_id, error = %e, "progress refused; stopping the copy");
                            mine.store(true, Ordering::Release);
                        }
                        Err(e) => tracing::debug!(move_id = task.move_id, error = %e, "progress not reported"),
                    }
                }
            }
        }
    };
    let staged = match staged {
        Ok(s) => s,
        Err(e) => {
            if env.abort.load(Ordering::Acquire) || mine.load(Ordering::Acquire) {
                return Err(Outcome::Abandoned(format!("stopped: {e}")));
            }
            return Err(retry(format!(
                "copy to {dst_loc} on {} failed: {e}",
                sh.target.describe()
            )));
        }
    };

    let discard = |why: Outcome| async {
        if let Err(e) = sh.target.discard(staged.clone()).await {
            tracing::warn!(handle = %staged.handle, error = %e, "could not remove a staged copy");
        }
        Err(why)
    };
    if staged.bytes != task.size {
        return discard(retry(format!(
            "source {src_loc} has {} bytes but the file has {} (changed without a recorded write?)",
            staged.bytes, task.size
        )))
        .await;
    }
    if is_verifiable(&task.source_checksum) && staged.checksum != task.source_checksum {
        return discard(retry(format!(
            "checksum mismatch: source recorded {}, copied bytes are {}",
            task.source_checksum, staged.checksum
        )))
        .await;
    }
    // Placement is fenced (see `fence`): one placement at a time per location, and only by
    // the newest claim of the move, under a lease that outlives the rename.
    let _placing = sh.placements.lock(dst_loc).await;
    if !sh.placements.is_newest(task.move_id, task.token) {
        return discard(Outcome::Abandoned(
            "the move was claimed again; not placing an older copy".into(),
        ))
        .await;
    }
    let margin = (sh.config.ttl / 4).min(std::time::Duration::from_secs(2));
    if env.abort.load(Ordering::Acquire) || !env.lease.borrow().is_alive_at(Instant::now() + margin)
    {
        return discard(Outcome::Abandoned(
            "lease not alive before placement".into(),
        ))
        .await;
    }
    if sh.config.confirm_claims {
        if let Err(why) = confirm_claim(&sh.client, task).await {
            return discard(Outcome::Abandoned(why)).await;
        }
    }
    // A source checksum in another format cannot be compared with ours: send none, so that
    // metad keeps the source's (the server compares checksums when both are present).
    let checksum = if task.source_checksum.is_empty() || is_verifiable(&task.source_checksum) {
        staged.checksum.clone()
    } else {
        String::new()
    };
    let bytes = staged.bytes;
    sh.target
        .publish(staged)
        .await
        .map_err(|e| retry(format!("placing {dst_loc}: {e}")))?;
    AgentStats::inc(&sh.stats.copied_files);
    AgentStats::add(&sh.stats.copied_bytes, bytes);
    let commit = Commit {
        completion: pb::MoveCompletion {
            move_id: task.move_id,
            token: task.token,
            copied_gen: task.content_gen,
            checksum,
            bytes,
        },
        path: task.path.clone(),
    };
    if env.commits.send(commit).await.is_err() {
        return Err(Outcome::Abandoned("committer stopped".into()));
    }
    Ok(())
}

/// Reports a failed copy. A refusal (stale token...) means the claim is no longer ours.
pub(crate) async fn fail(sh: &Shared, task: &pb::MoveTask, reason: String, retryable: bool) {
    let reason = cut(reason);
    let r = persist(&sh.client, &sh.stats, "FailMove", 3, |seq| {
        sh.client
            .fail_move_with_seq(seq, task.move_id, task.token, &reason, retryable)
    })
    .await;
    match r {
        Ok(_) => AgentStats::inc(&sh.stats.failures),
        Err(e)
            if matches!(
                e.code(),
                ErrorCode::FailedPrecondition | ErrorCode::NotFound
            ) =>
        {
            tracing::info!(move_id = task.move_id, error = %e, "FailMove refused: the claim is no longer ours");
        }
        Err(e) => tracing::warn!(move_id = task.move_id, error = %e, "FailMove not delivered"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_locations_fall_back_to_the_path() {
        assert_eq!(location_or_path("", "/a/b"), "a/b");
        assert_eq!(location_or_path("x/y", "/a/b"), "x/y");
    }

    #[test]
    fn reasons_are_cut_on_a_char_boundary() {
        let s = cut("é".repeat(600));
        assert!(s.len() <= REASON_MAX);
        assert!(s.chars().all(|c| c == 'é'));
        assert_eq!(cut("short".into()), "short");
    }
}
