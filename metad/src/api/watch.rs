//! The Watch service: streams the event log of the serving node from a revision, then follows
//! new applied revisions. Reads the durable event table in key order (never an in-memory
//! buffer), so the stream is gap-free and duplicate-free, and memory per watcher is bounded by
//! a small channel: a receiver that stops reading is cut off with RESOURCE_EXHAUSTED.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use metad_proto::v1::watch_server::{Watch, WatchServer};
use metad_proto::v1::{Event, WatchRequest, WatchResponse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Router;
use tonic::{Request, Response, Status};

use crate::error::NodeError;
use crate::node::NodeCore;
use crate::sm::model::events_from;
use crate::sm::watch::{compacted_below, Filter};

/// gRPC metadata key carrying the oldest retained revision on a COMPACTED error.
pub const MD_COMPACT_REVISION: &str = "metad-compact-revision";
/// Events read from the log per step.
const READ_BATCH: usize = 1024;
/// Events per response message.
const SEND_BATCH: usize = 256;
/// Messages buffered per watcher before it counts as slow.
const CHANNEL_DEPTH: usize = 16;
/// How long a full channel may stay full before the watcher is cut off.
const SLOW_WATCHER_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn add_services(router: Router, core: &Arc<NodeCore>) -> Router {
    router.add_service(
        WatchServer::new(WatchApi { core: core.clone() })
            .max_decoding_message_size(super::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(super::MAX_MESSAGE_BYTES),
    )
}

pub struct WatchApi {
    core: Arc<NodeCore>,
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

fn compacted(oldest: u64, asked: u64) -> Status {
    let mut st = NodeError::Refused {
        code: metad_proto::ErrorCode::Compacted,
        message: format!(
            "events after revision {asked} are compacted; the oldest available revision is {oldest}"
        ),
    }
    .details()
    .to_status();
    if let Ok(v) = oldest.to_string().parse() {
        st.metadata_mut().insert(MD_COMPACT_REVISION, v);
    }
    st
}

fn validate(req: &WatchRequest) -> Result<(), NodeError> {
    if !req.path_prefix.is_empty() {
        crate::sm::model::parse_path("path_prefix", &req.path_prefix)
            .map_err(|r| NodeError::InvalidArgument(r.message))?;
    }
    if req.kinds.len() > 32 {
        return Err(NodeError::InvalidArgument("kinds: at most 32".into()));
    }
    if req.silo.len() > 64 {
        return Err(NodeError::InvalidArgument("silo: at most 64 bytes".into()));
    }
    Ok(())
}

#[tonic::async_trait]
impl Watch for WatchApi {
    type WatchStream = WatchStream;

    async fn watch(&self, req: Request<WatchRequest>) -> Result<Response<WatchStream>, Status> {
        let req = req.into_inner();
        let core = self.core.clone();
        core.metrics
            .grpc_requests
            .with_label_values(&["Watch/Watch", "OK"])
            .inc();
        validate(&req).map_err(|e| super::to_status(&e))?;
        let filter = Filter {
            prefix: req.path_prefix.clone(),
            kinds: req.kinds.clone(),
            silo: req.silo.clone(),
        };
        let progress_every = Duration::from_millis(match req.progress_interval_ms {
            0 => 5000,
            ms => ms.max(100) as u64,
        });
        // Where the stream starts: events with revision > after.
        let (current, oldest) = core
            .sm
            .read(|kv| Ok((crate::sm::revision(kv)?, compacted_below(kv)?)))
            .map_err(|e| super::to_status(&NodeError::from(e)))?;
        let after = req.after_revision.unwrap_or(current);
        if oldest > 0 && after + 1 < oldest {
            return Err(compacted(oldest, after));
        }
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        tokio::spawn(pump(core, filter, after, progress_every, tx));
        Ok(Response::new(
            Box::pin(ReceiverStream::new(rx)) as WatchStream
        ))
    }
}

/// Sends `resp`, cutting the watcher off if it does not drain its channel in time. Returns
/// false when the stream is over (receiver gone or too slow).
async fn send(
    tx: &mpsc::Sender<Result<WatchResponse, Status>>,
    resp: Result<WatchResponse, Status>,
) -> bool {
    match tx.send_timeout(resp, SLOW_WATCHER_TIMEOUT).await {
        Ok(()) => true,
        Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
            let st = NodeError::Refused {
                code: metad_proto::ErrorCode::ResourceExhausted,
                message: "watcher too slow: not reading its stream; resume from the last progress revision".into(),
            }
            .details()
            .to_status();
            let _ = tx.try_send(Err(st));
            false
        }
        Err(mpsc::error::SendTimeoutError::Closed(_)) => false,
    }
}

async fn pump(
    core: Arc<NodeCore>,
    filter: Filter,
    after: u64,
    progress_every: Duration,
    tx: mpsc::Sender<Result<WatchResponse, Status>>,
) {
    let mut applied = core.sm.subscribe();
    // `next` = first revision not yet delivered. Events are read by revision; a revision's
    // events are written in one transaction, so a read never sees half of one.
    let mut next = after + 1;
    let mut last_progress = tokio::time::Instant::now();
    loop {
        let read = core.sm.read(|kv| {
            let cur = crate::sm::revision(kv)?;
            let oldest = compacted_below(kv)?;
            let evs = if next <= cur {
                events_from(kv, next, READ_BATCH)?
            } else {
                vec![]
            };
            Ok((cur, oldest, evs))
        });
        let (cur, oldest, events) = match read {
            Ok(v) => v,
            Err(e) => {
                let _ = tx.send(Err(super::to_status(&NodeError::from(e)))).await;
                return;
            }
        };
        if oldest > next {
            let _ = tx.send(Err(compacted(oldest, next - 1))).await;
            return;
        }
        // Deliver only whole revisions: if the batch is full, hold back its last revision.
        let full = events.len() == READ_BATCH;
        let upto = match (full, events.last()) {
            (true, Some(last)) if events.first().map(|f| f.revision) != Some(last.revision) => {
                last.revision - 1
            }
            (true, Some(last)) => last.revision, // one huge revision: deliver as is
            _ => cur,
        };
        let matching: Vec<Event> = events
            .into_iter()
            .filter(|e| e.revision <= upto && filter.matches(e))
            .collect();
        let delivered_any = !matching.is_empty();
        let chunks = matching.chunks(SEND_BATCH).count();
        for (i, chunk) in matching.chunks(SEND_BATCH).enumerate() {
            // Complete up to `upto` after the last chunk; before it, up to the revision just
            // below the chunk's last one (that revision may continue in the next chunk).
            let progress = match i + 1 == chunks {
                true => upto,
                false => chunk.last().map(|e| e.revision - 1).unwrap_or(0),
            };
            let resp = WatchResponse {
                events: chunk.to_vec(),
                progress_revision: progress,
                compact_revision: oldest,
                node_id: core.id,
            };
            if !send(&tx, Ok(resp)).await {
                return;
            }
        }
        if upto >= next {
            next = upto + 1;
        }
        if delivered_any {
            last_progress = tokio::time::Instant::now();
        }
        if full {
            continue;
        }
        // Caught up with the applied state: wait for more, a progress tick, or the end.
        let deadline = last_progress + progress_every;
        tokio::select! {
            r = async { applied.wait_for(|a| a.revision >= next).await.map(|_| ()) } => {
                if r.is_err() { return; }
            }
            _ = tokio::time::sleep_until(deadline) => {
                let resp = WatchResponse {
                    events: vec![],
                    progress_revision: next - 1,
                    compact_revision: oldest,
                    node_id: core.id,
                };
                if !send(&tx, Ok(resp)).await {
                    return;
                }
                last_progress = tokio::time::Instant::now();
            }
            _ = tx.closed() => return,
        }
    }
}
