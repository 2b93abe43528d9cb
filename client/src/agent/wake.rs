//! The watch that wakes the agent: MOVE_CHANGED (new pending work for this silo),
//! INSTANCE_CHANGED (a copy on this silo became RELEASING) and INSTANCE_REMOVED (a tombstone
//! to reclaim) events filtered on the agent's silo. The stream resumes after its last
//! progress revision on reconnect; the main loop's poll timer covers anything missed.

use std::sync::Arc;

use metad_proto::v1 as pb;
use metad_proto::ErrorCode;
use tokio::sync::{watch, Notify};

use crate::backoff::Backoff;
use crate::Client;

/// What one event asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Wants {
    pub claim: bool,
    pub tombstones: bool,
}

/// Classifies an event about the agent's silo.
pub(crate) fn wants(ev: &pb::Event) -> Wants {
    let kind = pb::EventKind::try_from(ev.kind).unwrap_or(pb::EventKind::Unspecified);
    match kind {
        // detail = the new state ("pending", "pending: ..."): only new or returned work.
        pb::EventKind::MoveChanged => Wants {
            claim: ev.detail.starts_with("pending"),
            tombstones: false,
        },
        pb::EventKind::InstanceChanged => Wants {
            claim: ev.detail.starts_with("releasing"),
            tombstones: false,
        },
        pb::EventKind::InstanceRemoved => Wants {
            claim: false,
            tombstones: !ev.detail.contains("reclaimed"),
        },
        _ => Wants::default(),
    }
}

/// The event kinds the agent watches.
pub(crate) fn kinds() -> Vec<i32> {
    vec![
        pb::EventKind::MoveChanged as i32,
        pb::EventKind::InstanceChanged as i32,
        pb::EventKind::InstanceRemoved as i32,
    ]
}

/// Runs until `stop` turns true: notifies `claim` / `tombstones` when events ask for it.
pub(crate) async fn run_watch(
    client: Client,
    silo: String,
    claim: Arc<Notify>,
    tombstones: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let backoff = Backoff::default();
    let mut after: Option<u64> = None;
    let mut failures: u32 = 0;
    loop {
        let req = pb::WatchRequest {
            path_prefix: String::new(),
            kinds: kinds(),
            silo: silo.clone(),
            after_revision: after,
            progress_interval_ms: 0,
        };
        let opened = tokio::select! {
            _ = stop.changed() => return,
            r = client.watch(req) => r,
        };
        match opened {
            Ok(mut stream) => loop {
                let msg = tokio::select! {
                    _ = stop.changed() => return,
                    m = Client::next_watch_message(&mut stream) => m,
                };
                match msg {
                    Ok(Some(resp)) => {
                        failures = 0;
                        let mut w = Wants::default();
                        for ev in &resp.events {
                            let x = wants(ev);
                            w.claim |= x.claim;
                            w.tombstones |= x.tombstones;
                        }
                        if w.claim {
                            claim.notify_one();
                        }
                        if w.tombstones {
                            tombstones.notify_one();
                        }
                        if resp.progress_revision > 0 {
                            after = Some(resp.progress_revision);
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        if e.code() == ErrorCode::Compacted {
                            after = None;
                        }
                        tracing::debug!(error = %e, "watch stream ended; reopening");
                        break;
                    }
                }
            },
            Err(e) => tracing::debug!(error = %e, "cannot open the watch; retrying"),
        }
        // Something may have been missed while the stream was down.
        claim.notify_one();
        let delay = backoff.delay(failures.min(6) + 2);
        failures = failures.saturating_add(1);
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: pb::EventKind, detail: &str) -> pb::Event {
        pb::Event {
            kind: kind as i32,
            detail: detail.into(),
            ..Default::default()
        }
    }

    #[test]
    fn only_new_work_wakes_the_claimer() {
        use pb::EventKind as K;
        assert!(wants(&ev(K::MoveChanged, "pending")).claim);
        assert!(wants(&ev(K::MoveChanged, "pending: lease 3 expired")).claim);
        assert!(!wants(&ev(K::MoveChanged, "claimed: agent a lease 1 token 2")).claim);
        assert!(!wants(&ev(K::MoveChanged, "done")).claim);
        assert!(
            wants(&ev(
                K::InstanceChanged,
                "releasing (was valid; move 4 committed)"
            ))
            .claim
        );
        assert!(!wants(&ev(K::InstanceChanged, "valid gen=2")).claim);
        let t = wants(&ev(
            K::InstanceRemoved,
            "file deleted (was valid); tombstone to reclaim",
        ));
        assert!(t.tombstones && !t.claim);
        assert!(!wants(&ev(K::InstanceRemoved, "tombstone reclaimed")).claim);
        assert_eq!(wants(&ev(K::Created, "")), Wants::default());
    }
}
