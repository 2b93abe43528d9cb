//! When this node builds a snapshot (openraft's own policy is switched off).
//!
//! A snapshot is a full copy of the state machine, so openraft's "every N entries" policy costs
//! O(state) per N entries: the share of a node's time spent building snapshots grows with the
//! namespace (1.5 GB at 1 M files; writes slowed by half while one was built). Here a snapshot
//! is due when at least `snapshot_after_entries` entries have been applied since the last one
//! AND the time since the last build ended is at least [`SPACING`] times as long as that build
//! took. Building thus takes at most about 1/(SPACING+1) of the time at any size, while small
//! states keep snapshotting every N entries as before. This module only decides and triggers;
//! the build itself is the state machine's (`store::state_machine`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::NodeCore;

/// Minimum quiet time after a build, as a multiple of how long the build took.
pub const SPACING: u32 = 10;

/// How often the schedule is checked.
const CHECK: Duration = Duration::from_millis(200);

/// The longest wait for a triggered build to show up in the metrics before checking again.
const BUILD_WAIT: Duration = Duration::from_secs(3600);

/// The last completed build: when it ended and how long it took.
#[derive(Debug, Clone, Copy)]
pub struct LastBuild {
    pub ended: Instant,
    pub took: Duration,
}

/// Whether a snapshot is due at `now` (see the module doc).
pub fn due(applied: u64, snapshot: u64, every: u64, last: Option<LastBuild>, now: Instant) -> bool {
    if applied.saturating_sub(snapshot) < every {
        return false;
    }
    match last {
        None => true,
        Some(b) => now.saturating_duration_since(b.ended) >= b.took * SPACING,
    }
}

pub(super) async fn run(core: Arc<NodeCore>, mut stop: watch::Receiver<bool>) {
    let every = core.config.raft.snapshot_after_entries;
    let mut last: Option<LastBuild> = None;
    let mut metrics = core.raft.metrics();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(CHECK) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let (applied, snapshot) = {
            let m = metrics.borrow();
            (
                m.last_applied.map(|l| l.index).unwrap_or(0),
                m.snapshot.map(|l| l.index).unwrap_or(0),
            )
        };
        if !due(applied, snapshot, every, last, Instant::now()) {
            continue;
        }
        let started = Instant::now();
        if core.raft.trigger().snapshot().await.is_err() {
            return; // Raft has stopped.
        }
        let built = tokio::select! {
            r = tokio::time::timeout(
                BUILD_WAIT,
                metrics.wait_for(|m| m.snapshot.map(|l| l.index).unwrap_or(0) >= applied),
            ) => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        match built {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return, // Raft has stopped.
            Err(_) => tracing::warn!(
                applied,
                "snapshot triggered but not built within {} s",
                BUILD_WAIT.as_secs()
            ),
        }
        let took = started.elapsed();
        core.metrics.snapshot_build_seconds.set(took.as_secs_f64());
        tracing::info!(
            index = applied,
            seconds = took.as_secs_f64(),
            "snapshot built; next one no sooner than {:.1} s from now",
            (took * SPACING).as_secs_f64()
        );
        last = Some(LastBuild {
            ended: Instant::now(),
            took,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_after_enough_entries_when_never_built() {
        let now = Instant::now();
        assert!(!due(99, 0, 100, None, now));
        assert!(due(100, 0, 100, None, now));
        assert!(!due(150, 100, 100, None, now));
    }

    #[test]
    fn a_long_build_spaces_the_next_one_out() {
        let now = Instant::now();
        let last = Some(LastBuild {
            ended: now,
            took: Duration::from_secs(15),
        });
        // Plenty of entries, but only 100 s of the required 150 s have passed.
        assert!(!due(
            1_000_000,
            0,
            100,
            last,
            now + Duration::from_secs(100)
        ));
        assert!(due(1_000_000, 0, 100, last, now + Duration::from_secs(150)));
        // Time alone never makes one due.
        assert!(!due(50, 0, 100, last, now + Duration::from_secs(1000)));
    }

    #[test]
    fn a_quick_build_keeps_the_entry_count_policy() {
        let now = Instant::now();
        let last = Some(LastBuild {
            ended: now,
            took: Duration::from_millis(5),
        });
        assert!(due(200, 100, 100, last, now + Duration::from_millis(50)));
    }
}
