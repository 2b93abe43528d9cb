//! The Watch service: streams the event log of the serving node from a revision, then follows
//! new applied revisions. Reads the durable event table in key order (never an in-memory
//! buffer), so the stream is gap-free and duplicate-free, and memory per watcher is bounded by
//! a small channel: a receiver that stops reading is cut off with RESOURCE_EXHAUSTED.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use futures::StreamExt;
use metad_proto::v1::watch_server::{Watch, WatchServer};
use metad_proto::v1::{Event, WatchRequest, WatchResponse};
use tokio::sync::{mpsc, oneshot};
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
            .read(|kv| Ok((kv.revision()?, compacted_below(kv)?)))
            .map_err(|e| super::to_status(&NodeError::from(e)))?;
        let after = req.after_revision.unwrap_or(current);
        if oldest > 0 && after + 1 < oldest {
            return Err(compacted(oldest, after));
        }
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        // A terminal error travels on its own channel, chained after the data: a watcher that
        // stopped reading still gets it once it drains what was buffered.
        let (end_tx, end_rx) = oneshot::channel::<Status>();
        let slow = Duration::from_millis(core.config.watch_slow_receiver_ms);
        tokio::spawn(pump(
            core,
            filter,
            after,
            progress_every,
            Sink {
                tx,
                end: end_tx,
                slow,
            },
        ));
        let tail =
            futures::stream::once(end_rx).filter_map(|r| futures::future::ready(r.ok().map(Err)));
        Ok(Response::new(
            Box::pin(ReceiverStream::new(rx).chain(tail)) as WatchStream
        ))
    }
}

/// Where a pump delivers: data messages on a bounded channel, a terminal error on `end`.
struct Sink {
    tx: mpsc::Sender<Result<WatchResponse, Status>>,
    end: oneshot::Sender<Status>,
    /// How long the channel may stay full before the watcher counts as too slow.
    slow: Duration,
}

enum Sent {
    Ok,
    /// The receiver is gone.
    Closed,
    /// The receiver did not drain its channel in time.
    TooSlow,
}

impl Sink {
    async fn send(&self, resp: WatchResponse) -> Sent {
        match self.tx.send_timeout(Ok(resp), self.slow).await {
            Ok(()) => Sent::Ok,
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => Sent::TooSlow,
            Err(mpsc::error::SendTimeoutError::Closed(_)) => Sent::Closed,
        }
    }

    /// Ends the stream with `st` (after whatever data is still buffered).
    fn fail(self, st: Status) {
        let _ = self.end.send(st);
    }

    fn too_slow(self, core: &NodeCore, resume_after: u64) {
        core.metrics.watch_cutoffs.inc();
        let st = NodeError::Refused {
            code: metad_proto::ErrorCode::ResourceExhausted,
            message: format!(
                "watcher too slow: its stream was not read for {} ms; resume with after_revision = {}",
                self.slow.as_millis(),
                resume_after
            ),
        }
        .details()
        .to_status();
        self.fail(st);
    }
}

async fn pump(
    core: Arc<NodeCore>,
    filter: Filter,
    after: u64,
    progress_every: Duration,
    sink: Sink,
) {
    core.metrics.watch_streams.inc();
    pump_inner(&core, filter, after, progress_every, sink).await;
    core.metrics.watch_streams.dec();
}

async fn pump_inner(
    core: &Arc<NodeCore>,
    filter: Filter,
    after: u64,
    progress_every: Duration,
    sink: Sink,
) {
    let mut applied = core.sm.subscribe();
    // `next` = first revision not yet delivered. Events are read by revision; a revision's
    // events are written in one transaction, so a read never sees half of one.
    let mut next = after + 1;
    let mut last_progress = tokio::time::Instant::now();
    // Everything matching with revision <= sent_upto has been handed to the stream.
    let mut sent_upto = after;
    loop {
        let read = core.sm.read(|kv| {
            let cur = kv.revision()?;
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
                sink.fail(super::to_status(&NodeError::from(e)));
                return;
            }
        };
        if oldest > next {
            sink.fail(compacted(oldest, next - 1));
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
            match sink.send(resp).await {
                Sent::Ok => sent_upto = progress.max(sent_upto),
                Sent::Closed => return,
                Sent::TooSlow => return sink.too_slow(core, sent_upto),
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
                match sink.send(resp).await {
                    Sent::Ok => sent_upto = sent_upto.max(next - 1),
                    Sent::Closed => return,
                    Sent::TooSlow => return sink.too_slow(core, sent_upto),
                }
                last_progress = tokio::time::Instant::now();
            }
            _ = sink.tx.closed() => return,
        }
    }
}
