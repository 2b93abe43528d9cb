//! Fault injection for tests (testkit): peer-link partitions, message drops and delays, and
//! lost client replies. Shared by all nodes of an in-process cluster; empty (a no-op) in a
//! production node. Consulted by `network` before every peer RPC and by `api` after a write.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use crate::types::NodeId;

#[derive(Debug, Default)]
struct State {
    blocked: HashSet<(NodeId, NodeId)>,
    drop_rate: f64,
    delay: Option<Duration>,
    lose_write_replies: HashMap<NodeId, u32>,
}

#[derive(Debug, Default)]
pub struct FaultInjector {
    state: Mutex<State>,
}

/// Why a peer message was not delivered.
#[derive(Debug, Clone, thiserror::Error)]
#[error("injected fault: {0}")]
pub struct Injected(pub &'static str);

impl FaultInjector {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        match self.state.lock() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// Cuts every link between nodes of different groups (both directions).
    pub fn partition(&self, groups: &[Vec<NodeId>]) {
        self.with(|s| {
            s.blocked.clear();
            for (i, a) in groups.iter().enumerate() {
                for (j, b) in groups.iter().enumerate() {
                    if i != j {
                        for x in a {
                            for y in b {
                                s.blocked.insert((*x, *y));
                            }
                        }
                    }
                }
            }
        })
    }

    /// Cuts `id` off from every node in `others`.
    pub fn isolate(&self, id: NodeId, others: &[NodeId]) {
        self.with(|s| {
            for o in others {
                if *o != id {
                    s.blocked.insert((id, *o));
                    s.blocked.insert((*o, id));
                }
            }
        })
    }

    /// Removes partitions, drops and delays.
    pub fn heal(&self) {
        self.with(|s| {
            s.blocked.clear();
            s.drop_rate = 0.0;
            s.delay = None;
        })
    }

    /// Drops this fraction (0..=1) of peer messages at random.
    pub fn set_drop_rate(&self, p: f64) {
        self.with(|s| s.drop_rate = p.clamp(0.0, 1.0))
    }

    /// Delays every peer message by `d`.
    pub fn set_delay(&self, d: Option<Duration>) {
        self.with(|s| s.delay = d)
    }

    /// The next `n` write replies produced by node `id` are lost after the write was applied
    /// (the client sees an ambiguous failure).
    pub fn lose_write_replies(&self, id: NodeId, n: u32) {
        self.with(|s| {
            s.lose_write_replies.insert(id, n);
        })
    }

    /// Called by `api` after a write was applied: true if its reply must be lost.
    pub fn take_lost_reply(&self, id: NodeId) -> bool {
        self.with(|s| match s.lose_write_replies.get_mut(&id) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        })
    }

    /// Called before sending a peer message from `from` to `to`.
    pub async fn before_send(&self, from: NodeId, to: NodeId) -> Result<(), Injected> {
        let (blocked, drop, delay) = self.with(|s| {
            let drop = s.drop_rate > 0.0 && rand::random::<f64>() < s.drop_rate;
            (s.blocked.contains(&(from, to)), drop, s.delay)
        });
        if blocked {
            return Err(Injected("link partitioned"));
        }
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        if drop {
            return Err(Injected("message dropped"));
        }
        Ok(())
    }

    /// True if `from` may talk to `to` right now (used on the receiving side too).
    pub fn link_up(&self, from: NodeId, to: NodeId) -> bool {
        self.with(|s| !s.blocked.contains(&(from, to)))
    }
}
