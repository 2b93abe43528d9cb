//! Fencing the bytes, not just the metadata. metad refuses a commit with a stale token, but a
//! stale copy can still *place* its bytes over a newer, committed copy at the same location
//! (the file was rewritten during the copy, the move was claimed again, the new claim copied
//! and committed first, then the old copy renamed its file into place). So, before a copy is
//! renamed into place:
//!
//! * inside one agent, placements at one location are serialized, and a copy whose move has
//!   been claimed again with a newer token (known from this agent's own claims) gives up;
//! * across agents (several agents on one silo, or a zombie whose lease ran out), the agent
//!   checks that its lease is alive with a margin and, with `confirm_claims`, asks metad
//!   (linearizable GetMove) that its token is still the move's current claim.
//!
//! A newer claim is only issued after the check, so its copy (which starts after the claim)
//! is placed after this one: the newest bytes win.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use metad_proto::v1 as pb;
use tokio::sync::OwnedMutexGuard;

use crate::{Client, ClientError, ReadOptions};

#[derive(Debug, Default)]
struct Claimed {
    newest: u64,
    in_flight: u32,
}

/// This agent's claims per move, and one lock per target location.
#[derive(Debug, Default)]
pub(crate) struct Placements {
    claims: Mutex<HashMap<u64, Claimed>>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Holds the lock of one location until dropped (then forgets it if nobody waits).
pub(crate) struct PlacementGuard<'a> {
    owner: &'a Placements,
    location: String,
    lock: Arc<tokio::sync::Mutex<()>>,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for PlacementGuard<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut locks = self.owner.locks.lock().unwrap_or_else(|p| p.into_inner());
        // The map's reference and ours: nobody else holds or waits for it.
        if Arc::strong_count(&self.lock) == 2 {
            locks.remove(&self.location);
        }
    }
}

impl Placements {
    /// Records tasks just claimed (before any of them runs).
    pub(crate) fn claimed(&self, tasks: &[pb::MoveTask]) {
        let mut c = self.claims.lock().unwrap_or_else(|p| p.into_inner());
        for t in tasks {
            let e = c.entry(t.move_id).or_default();
            e.newest = e.newest.max(t.token);
            e.in_flight += 1;
        }
    }

    /// A task of this agent ended (placed and handed to the committer, failed, or dropped).
    pub(crate) fn finished(&self, move_id: u64) {
        let mut c = self.claims.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = c.get_mut(&move_id) {
            e.in_flight = e.in_flight.saturating_sub(1);
            if e.in_flight == 0 {
                c.remove(&move_id);
            }
        }
    }

    /// Whether no newer claim of this move is known to this agent.
    pub(crate) fn is_newest(&self, move_id: u64, token: u64) -> bool {
        let c = self.claims.lock().unwrap_or_else(|p| p.into_inner());
        c.get(&move_id).is_none_or(|e| token >= e.newest)
    }

    /// Waits for the placement lock of `location`.
    pub(crate) async fn lock(&self, location: &str) -> PlacementGuard<'_> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(locks.entry(location.to_string()).or_default())
        };
        let guard = Arc::clone(&lock).lock_owned().await;
        PlacementGuard {
            owner: self,
            location: location.to_string(),
            lock,
            guard: Some(guard),
        }
    }

    #[cfg(test)]
    fn locations(&self) -> usize {
        self.locks.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Asks metad whether `task`'s token is still the move's current claim. `Err(why)` if not,
/// or if that cannot be known.
pub(crate) async fn confirm_claim(client: &Client, task: &pb::MoveTask) -> Result<(), String> {
    let r: Result<pb::GetMoveResponse, ClientError> = client
        .get_move(task.move_id, ReadOptions::linearizable())
        .await;
    let mv = match r {
        Ok(r) => r.r#move.ok_or("GetMove answered without a move")?,
        Err(e) => return Err(format!("cannot confirm the claim: {e}")),
    };
    let claimed =
        mv.state == pb::MoveState::Claimed as i32 || mv.state == pb::MoveState::Copying as i32;
    if claimed && mv.token == task.token {
        Ok(())
    } else {
        Err(format!(
            "claim superseded: move {} is {} with token {} (ours {})",
            mv.id,
            pb::MoveState::try_from(mv.state)
                .map(|s| s.as_str_name())
                .unwrap_or("?"),
            mv.token,
            task.token
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(move_id: u64, token: u64) -> pb::MoveTask {
        pb::MoveTask {
            move_id,
            token,
            ..Default::default()
        }
    }

    #[test]
    fn a_newer_claim_supersedes_an_older_one_until_both_end() {
        let p = Placements::default();
        p.claimed(&[task(1, 10)]);
        assert!(p.is_newest(1, 10));
        p.claimed(&[task(1, 12)]);
        assert!(!p.is_newest(1, 10), "the old copy must not be placed");
        assert!(p.is_newest(1, 12));
        p.finished(1);
        assert!(!p.is_newest(1, 10), "still known while one task runs");
        p.finished(1);
        assert!(p.is_newest(1, 10), "forgotten once none runs");
        assert!(p.is_newest(2, 1), "unknown moves are not superseded");
    }

    #[tokio::test]
    async fn placements_at_one_location_are_serialized_and_locks_forgotten() {
        let p = Arc::new(Placements::default());
        let g = p.lock("a/b").await;
        let p2 = Arc::clone(&p);
        let waiter = tokio::spawn(async move {
            let _g = p2.lock("a/b").await;
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        let other = p.lock("c").await;
        drop(other);
        drop(g);
        waiter.await.expect("waiter");
        assert_eq!(p.locations(), 0);
    }
}
