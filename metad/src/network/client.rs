//! Outgoing peer traffic. One long-lived, lazily connected HTTP/2 channel per peer address,
//! shared by every Raft stream to that peer; tonic reconnects a broken channel on the next
//! call, and openraft's own heartbeat/retry cadence spaces the attempts (no hot loop). Every
//! call has a deadline and passes the fault injector first. A replication stream sends its
//! AppendEntries over one `AppendStream` call on that channel, a request then its response,
//! because a unary call per message (a new HTTP/2 stream, headers both ways, a task on the
//! server) cost more CPU than the Raft work it carried.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metad_proto::raft::v1::raft_peer_client::RaftPeerClient;
use metad_proto::raft::v1::{ForwardRequest, Payload, ReadIndexRequest};
use metad_proto::ErrorDetails;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};

use crate::error::NodeError;
use crate::faults::FaultInjector;
use crate::metrics::Metrics;
use crate::types::{codec, NodeId, NodeInfo, TypeConfig};

/// Shared channel cache + fault injector; cheap to clone.
#[derive(Clone)]
pub struct PeerClient {
    self_id: NodeId,
    faults: Arc<FaultInjector>,
    metrics: Arc<Metrics>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Msg(String);

impl PeerClient {
    pub fn new(self_id: NodeId, faults: Arc<FaultInjector>, metrics: Arc<Metrics>) -> Self {
        PeerClient {
            self_id,
            faults,
            metrics,
            channels: Arc::default(),
        }
    }

    fn channel(&self, addr: &str) -> Result<Channel, String> {
        let mut map = self
            .channels
            .lock()
            .map_err(|_| "channel map poisoned".to_string())?;
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let ep = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("peer address {addr:?}: {e}"))?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true)
            .initial_connection_window_size(Some(8 << 20))
            .initial_stream_window_size(Some(4 << 20));
        let ch = ep.connect_lazy();
        map.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }

    fn client(&self, addr: &str) -> Result<RaftPeerClient<Channel>, String> {
        Ok(RaftPeerClient::new(self.channel(addr)?)
            .max_decoding_message_size(super::PEER_MESSAGE_MAX)
            .max_encoding_message_size(super::PEER_MESSAGE_MAX))
    }

    fn count(&self, rpc: &str, ok: bool) {
        self.metrics
            .peer_rpcs
            .with_label_values(&[rpc, if ok { "ok" } else { "error" }])
            .inc();
    }

    /// Asks the leader `to` for a read index (a quorum-confirmed commit index).
    pub async fn read_index(
        &self,
        to: NodeId,
        node: &NodeInfo,
        timeout: Duration,
    ) -> Result<u64, NodeError> {
        self.faults
            .before_send(self.self_id, to)
            .await
            .map_err(|e| NodeError::Unavailable(format!("leader {to} unreachable: {e}")))?;
        let mut c = self.client(&node.peer_addr).map_err(NodeError::Internal)?;
        let mut req = tonic::Request::new(ReadIndexRequest {});
        req.set_timeout(timeout);
        let r = tokio::time::timeout(timeout, c.read_index(req)).await;
        self.count("read_index", matches!(r, Ok(Ok(_))));
        match r {
            Ok(Ok(resp)) => Ok(resp.into_inner().read_index),
            Ok(Err(st)) => Err(remote_error(&st, false)),
            Err(_) => Err(NodeError::Timeout(format!("read index from leader {to}"))),
        }
    }

    /// Forwards an encoded command to the leader `to`. Any failure after the request may have
    /// left this node is ambiguous.
    pub async fn forward(
        &self,
        to: NodeId,
        node: &NodeInfo,
        command: Vec<u8>,
        timeout: Duration,
    ) -> Result<(Vec<u8>, u64), NodeError> {
        self.faults
            .before_send(self.self_id, to)
            .await
            .map_err(|e| NodeError::Unavailable(format!("leader {to} unreachable: {e}")))?;
        let mut c = self.client(&node.peer_addr).map_err(NodeError::Internal)?;
        let mut req = tonic::Request::new(ForwardRequest { command });
        req.set_timeout(timeout);
        let r = tokio::time::timeout(timeout, c.forward(req)).await;
        self.count("forward", matches!(r, Ok(Ok(_))));
        match r {
            Ok(Ok(resp)) => {
                let r = resp.into_inner();
                Ok((r.reply, r.log_index))
            }
            Ok(Err(st)) => Err(remote_error(&st, true)),
            Err(_) => Err(NodeError::Ambiguous(format!(
                "forwarded write to leader {to} timed out"
            ))),
        }
    }
}

/// An error status from a peer: metad errors keep their code; transport failures are
/// ambiguous for writes (the request may have been delivered) and unavailable for reads.
fn remote_error(st: &tonic::Status, is_write: bool) -> NodeError {
    if st
        .metadata()
        .get(metad_proto::error::MD_ERROR_CODE)
        .is_some()
    {
        return NodeError::from_details(ErrorDetails::from_status(st));
    }
    if is_write {
        NodeError::Ambiguous(format!("forwarding to leader failed: {}", st.message()))
    } else {
        NodeError::Unavailable(format!("leader unreachable: {}", st.message()))
    }
}

/// openraft's network factory: one `PeerConn` per replication stream / vote target.
#[derive(Clone)]
pub struct PeerNetwork {
    pub client: PeerClient,
}

pub struct PeerConn {
    client: PeerClient,
    target: NodeId,
    addr: String,
    /// How the next AppendEntries goes.
    transport: Transport,
    stream: Option<AppendStream>,
}

/// How a `PeerConn` sends AppendEntries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// Its first one goes unary: openraft makes a `PeerConn` per replication stream (many
    /// calls) and one per leadership check (a single call), which should not pay for a stream.
    First,
    /// Later ones go over `stream`.
    Stream,
    /// The peer does not serve `AppendStream` (an older metad during a rolling upgrade).
    UnaryOnly,
}

/// Why an exchange over the append stream failed.
enum StreamFailure {
    /// The peer answered the stream's opening with `UNIMPLEMENTED`; the request, unsent.
    Unsupported(Vec<u8>),
    Rpc(Box<RpcErr<openraft::error::Infallible>>),
}

/// An open `AppendStream` call: requests go into `tx`, responses come from `rx` in order.
/// Dropped after any failure, timeout or cancellation (see `PeerConn::exchange`), so a late
/// response can never answer a later request.
struct AppendStream {
    tx: mpsc::Sender<Payload>,
    rx: tonic::Streaming<Payload>,
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerConn;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> PeerConn {
        PeerConn {
            client: self.client.clone(),
            target,
            addr: node.peer_addr.clone(),
            transport: Transport::First,
            stream: None,
        }
    }
}

type RpcErr<E> = RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>;

/// A failed peer call as openraft wants it: no connection is `Unreachable` (openraft backs
/// off), anything else `Network`.
fn status_error<E: std::error::Error>(st: tonic::Status) -> RpcErr<E> {
    if st.code() == tonic::Code::Unavailable {
        RPCError::Unreachable(Unreachable::new(&st))
    } else {
        RPCError::Network(NetworkError::new(&st))
    }
}

fn timed_out<E: std::error::Error>(rpc: &str) -> RpcErr<E> {
    RPCError::Network(NetworkError::new(&Msg(format!("{rpc} timed out"))))
}

impl PeerConn {
    /// The fault injector's verdict on sending to the target, then the encoded request.
    async fn prepare<Req: Serialize, E: std::error::Error>(
        &self,
        req: &Req,
    ) -> Result<Vec<u8>, RpcErr<E>> {
        if let Err(e) = self
            .client
            .faults
            .before_send(self.client.self_id, self.target)
            .await
        {
            return Err(RPCError::Unreachable(Unreachable::new(&e)));
        }
        codec::encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))
    }

    /// The peer's answer: openraft's result, postcard-encoded.
    // The error type is the one openraft's `RaftNetwork` methods return.
    #[allow(clippy::result_large_err)]
    fn decode_reply<Resp, E>(&self, data: &[u8]) -> Result<Resp, RpcErr<E>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let decoded: Result<Resp, RaftError<NodeId, E>> =
            codec::decode(data).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        decoded.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn call<Req, Resp, E>(
        &mut self,
        rpc: &'static str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, RpcErr<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let data = self.prepare(req).await?;
        let resp = self.unary(rpc, data, timeout).await?;
        self.decode_reply(&resp)
    }

    /// Sends an encoded request as one unary call; returns the encoded reply.
    async fn unary<E: std::error::Error>(
        &self,
        rpc: &'static str,
        data: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, RpcErr<E>> {
        let mut c = self
            .client
            .client(&self.addr)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&Msg(e))))?;
        let mut request = tonic::Request::new(Payload { data });
        request.set_timeout(timeout);
        let fut = async {
            match rpc {
                "vote" => c.vote(request).await,
                "append_entries" => c.append_entries(request).await,
                _ => c.install_snapshot(request).await,
            }
        };
        let res = tokio::time::timeout(timeout, fut).await;
        self.client.count(rpc, matches!(res, Ok(Ok(_))));
        match res {
            Err(_) => Err(timed_out(rpc)),
            Ok(Err(st)) => Err(status_error(st)),
            Ok(Ok(r)) => Ok(r.into_inner().data),
        }
    }

    /// One AppendEntries over this connection's stream (opened on first use, reopened after
    /// a failure); errors map as for unary calls. A peer without the stream gets this and
    /// every later AppendEntries as unary calls.
    async fn call_stream(
        &mut self,
        rpc: &AppendEntriesRequest<TypeConfig>,
        timeout: Duration,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr<openraft::error::Infallible>> {
        let data = self.prepare(rpc).await?;
        let res = tokio::time::timeout(timeout, self.exchange(data)).await;
        let resp = match res {
            Ok(Ok(p)) => p,
            Ok(Err(StreamFailure::Unsupported(data))) => {
                tracing::info!(
                    target = self.target,
                    "peer has no AppendStream; using unary calls"
                );
                self.transport = Transport::UnaryOnly;
                self.unary("append_entries", data, timeout).await?
            }
            Ok(Err(StreamFailure::Rpc(e))) => return Err(*e),
            Err(_) => {
                // The exchange was dropped, and its stream with it.
                self.client.count("append_entries", false);
                return Err(timed_out("append_entries"));
            }
        };
        self.decode_reply(&resp)
    }

    /// Sends `data` on the stream (opening it first if need be) and waits for its response.
    /// Counts the call unless the peer turned out not to serve streams.
    ///
    /// Cancel-safe: the stream is taken out of `self` for the exchange and put back only once
    /// its response has been read. openraft drops an AppendEntries future when its own timeout
    /// fires; had the stream stayed in `self`, the abandoned request's response would arrive
    /// as the answer to the next request, and a stale `Success` would make the leader count
    /// entries the follower does not have (a false commit).
    async fn exchange(&mut self, data: Vec<u8>) -> Result<Vec<u8>, StreamFailure> {
        let failed = |e: RpcErr<openraft::error::Infallible>| StreamFailure::Rpc(Box::new(e));
        let closed = || {
            failed(RPCError::Network(NetworkError::new(&Msg(
                "append stream closed".into(),
            ))))
        };
        let mut stream = match self.stream.take() {
            Some(s) => s,
            None => {
                let mut c = self
                    .client
                    .client(&self.addr)
                    .map_err(|e| failed(RPCError::Unreachable(Unreachable::new(&Msg(e)))))?;
                let (tx, rx) = mpsc::channel(1);
                let opened = c
                    .append_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
                    .await;
                match opened {
                    Ok(r) => AppendStream {
                        tx,
                        rx: r.into_inner(),
                    },
                    Err(st) if st.code() == tonic::Code::Unimplemented => {
                        return Err(StreamFailure::Unsupported(data))
                    }
                    Err(st) => {
                        self.client.count("append_entries", false);
                        return Err(failed(status_error(st)));
                    }
                }
            }
        };
        let res = match stream.tx.send(Payload { data }).await {
            Err(_) => Err(closed()),
            Ok(()) => match stream.rx.message().await {
                Ok(Some(p)) => Ok(p.data),
                Ok(None) => Err(closed()),
                Err(st) => Err(failed(status_error(st))),
            },
        };
        self.client.count("append_entries", res.is_ok());
        if res.is_ok() {
            self.stream = Some(stream);
        }
        res
    }
}

impl RaftNetwork<TypeConfig> for PeerConn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr<openraft::error::Infallible>> {
        if let Some(hint) = entries_hint(&rpc.entries, APPEND_MAX_BYTES) {
            // openraft sends up to max_payload_entries entries per RPC whatever their size;
            // with large entries (grouped proposals, ImportFiles) that cannot arrive within the
            // RPC timeout. This makes it retry at once with fewer.
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(hint),
            ));
        }
        match self.transport {
            Transport::Stream => self.call_stream(&rpc, option.hard_ttl()).await,
            Transport::First => {
                self.transport = Transport::Stream;
                self.call("append_entries", &rpc, option.hard_ttl()).await
            }
            Transport::UnaryOnly => self.call("append_entries", &rpc, option.hard_ttl()).await,
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        self.call("install_snapshot", &rpc, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr<openraft::error::Infallible>> {
        self.call("vote", &rpc, option.hard_ttl()).await
    }
}

/// Most command bytes one AppendEntries carries. openraft 0.9 gives every AppendEntries the
/// heartbeat interval as its timeout (`replication/mod.rs`), so a payload must cross the network
/// and be fsynced by the follower within it; a larger one times out and is resent unchanged
/// forever (a lagging follower or new learner never catches up; seen with 100 k imported files).
pub const APPEND_MAX_BYTES: usize = 1 << 20;

/// `Some(n)`: `entries` (more than one) carry more than `max` command bytes; send `n` instead.
pub fn entries_hint(entries: &[crate::types::Entry], max: usize) -> Option<u64> {
    use prost::Message;
    if entries.len() < 2 {
        return None;
    }
    let mut bytes = 0usize;
    for (i, e) in entries.iter().enumerate() {
        bytes += match &e.payload {
            openraft::EntryPayload::Normal(c) => c.0.encoded_len(),
            _ => 64,
        };
        if bytes > max {
            return Some((i as u64).max(1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u64, bytes: usize) -> crate::types::Entry {
        crate::types::Entry {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), i),
            payload: openraft::EntryPayload::Normal(crate::types::LogCommand(
                metad_proto::raft::v1::Command {
                    client_id: "c".into(),
                    seq: i,
                    leader_time_ms: 1,
                    op: Some(metad_proto::raft::v1::command::Op::RegisterPut(
                        metad_proto::raft::v1::RegisterPut {
                            key: "k".into(),
                            value: vec![0; bytes],
                        },
                    )),
                },
            )),
        }
    }

    /// A fake peer. With `streams` off it is a metad from before append streams (unary
    /// AppendEntries only). On its append streams it answers each request with
    /// `PartialSuccess(prev_log_id)`, so a reply names its request, and it holds the request
    /// whose `prev_log_id` index is `HELD` until `release` is notified.
    struct FakePeer {
        streams: bool,
        appends: Arc<std::sync::atomic::AtomicU64>,
        received: Arc<tokio::sync::Notify>,
        release: Arc<tokio::sync::Notify>,
    }

    const HELD: u64 = 5;

    type ReplyStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<Payload, tonic::Status>> + Send>>;

    #[tonic::async_trait]
    impl metad_proto::raft::v1::raft_peer_server::RaftPeer for FakePeer {
        type AppendStreamStream = ReplyStream;

        async fn append_stream(
            &self,
            req: tonic::Request<tonic::Streaming<Payload>>,
        ) -> Result<tonic::Response<ReplyStream>, tonic::Status> {
            if !self.streams {
                return Err(tonic::Status::unimplemented("no AppendStream here"));
            }
            let state = (
                req.into_inner(),
                self.received.clone(),
                self.release.clone(),
            );
            let replies =
                futures::stream::unfold(state, |(mut inbound, received, release)| async move {
                    let p = inbound.message().await.ok()??;
                    let rpc: AppendEntriesRequest<TypeConfig> = codec::decode(&p.data).ok()?;
                    let prev = rpc.prev_log_id;
                    if prev.map(|l| l.index) == Some(HELD) {
                        received.notify_one();
                        release.notified().await;
                    }
                    let ok: Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> =
                        Ok(AppendEntriesResponse::PartialSuccess(prev));
                    let reply = codec::encode(&ok)
                        .map(|data| Payload { data })
                        .map_err(|e| tonic::Status::internal(e.to_string()));
                    Some((reply, (inbound, received, release)))
                });
            Ok(tonic::Response::new(Box::pin(replies)))
        }
        async fn append_entries(
            &self,
            _: tonic::Request<Payload>,
        ) -> Result<tonic::Response<Payload>, tonic::Status> {
            self.appends
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let ok: Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> =
                Ok(AppendEntriesResponse::Success);
            let data = codec::encode(&ok).map_err(|e| tonic::Status::internal(e.to_string()))?;
            Ok(tonic::Response::new(Payload { data }))
        }
        async fn vote(
            &self,
            _: tonic::Request<Payload>,
        ) -> Result<tonic::Response<Payload>, tonic::Status> {
            Err(tonic::Status::unimplemented(""))
        }
        async fn install_snapshot(
            &self,
            _: tonic::Request<Payload>,
        ) -> Result<tonic::Response<Payload>, tonic::Status> {
            Err(tonic::Status::unimplemented(""))
        }
        async fn read_index(
            &self,
            _: tonic::Request<ReadIndexRequest>,
        ) -> Result<tonic::Response<metad_proto::raft::v1::ReadIndexResponse>, tonic::Status>
        {
            Err(tonic::Status::unimplemented(""))
        }
        async fn forward(
            &self,
            _: tonic::Request<ForwardRequest>,
        ) -> Result<tonic::Response<metad_proto::raft::v1::ForwardResponse>, tonic::Status>
        {
            Err(tonic::Status::unimplemented(""))
        }
    }

    /// Serves `peer` on 127.0.0.1:0; returns the server task and a connection to it.
    async fn serve(peer: FakePeer) -> anyhow::Result<(tokio::task::JoinHandle<()>, PeerConn)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let svc = metad_proto::raft::v1::raft_peer_server::RaftPeerServer::new(peer);
        let server = tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let served = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(incoming)
                .await;
            if let Err(e) = served {
                eprintln!("fake peer: {e}");
            }
        });
        let client = PeerClient::new(
            1,
            Arc::new(FaultInjector::new()),
            Arc::new(Metrics::new(1)?),
        );
        let node = NodeInfo {
            site: "site-b".into(),
            peer_addr: addr.to_string(),
            client_addr: addr.to_string(),
        };
        Ok((server, PeerNetwork { client }.new_client(2, &node).await))
    }

    fn fake_peer(streams: bool) -> FakePeer {
        FakePeer {
            streams,
            appends: Arc::default(),
            received: Arc::default(),
            release: Arc::default(),
        }
    }

    fn rpc(prev: Option<u64>) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: openraft::Vote::new(1, 1),
            prev_log_id: prev
                .map(|i| openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), i)),
            entries: vec![],
            leader_commit: None,
        }
    }

    fn option() -> RPCOption {
        RPCOption::new(Duration::from_secs(5))
    }

    #[tokio::test]
    async fn a_peer_without_append_streams_gets_unary_calls() -> anyhow::Result<()> {
        let peer = fake_peer(false);
        let appends = peer.appends.clone();
        let (server, mut conn) = serve(peer).await?;
        for i in 1..=3u64 {
            let resp = conn.append_entries(rpc(None), option()).await;
            assert!(
                matches!(resp, Ok(AppendEntriesResponse::Success)),
                "call {i}: {resp:?}"
            );
            assert_eq!(appends.load(std::sync::atomic::Ordering::SeqCst), i);
        }
        assert_eq!(
            conn.transport,
            Transport::UnaryOnly,
            "the stream was tried once, then given up"
        );
        server.abort();
        Ok(())
    }

    /// openraft drops an AppendEntries future when its own timeout fires. The abandoned
    /// request's reply must not answer the next request (a stale `Success` is a false match).
    #[tokio::test]
    async fn a_cancelled_append_never_lends_its_reply_to_the_next_one() -> anyhow::Result<()> {
        let peer = fake_peer(true);
        let (received, release) = (peer.received.clone(), peer.release.clone());
        let (server, mut conn) = serve(peer).await?;
        // The first call is unary; the next ones go over the stream.
        let first = conn.append_entries(rpc(Some(1)), option()).await;
        assert!(
            matches!(first, Ok(AppendEntriesResponse::Success)),
            "{first:?}"
        );
        let second = conn.append_entries(rpc(Some(2)), option()).await;
        assert_eq!(
            second.ok(),
            Some(AppendEntriesResponse::PartialSuccess(
                rpc(Some(2)).prev_log_id
            ))
        );
        // Cancel a call once the peer has its request, as openraft's timeout does.
        tokio::select! {
            r = conn.append_entries(rpc(Some(HELD)), option()) => {
                anyhow::bail!("the held request was answered: {r:?}")
            }
            _ = received.notified() => {}
        }
        release.notify_one();
        for prev in [7, 8] {
            let resp = conn.append_entries(rpc(Some(prev)), option()).await;
            assert_eq!(
                resp.ok(),
                Some(AppendEntriesResponse::PartialSuccess(
                    rpc(Some(prev)).prev_log_id
                )),
                "the reply to the request with prev_log_id {prev}"
            );
        }
        assert_eq!(conn.transport, Transport::Stream);
        server.abort();
        Ok(())
    }

    #[test]
    fn append_entries_over_the_byte_limit_ask_for_fewer() {
        let small: Vec<_> = (1..=10).map(|i| entry(i, 100)).collect();
        assert_eq!(entries_hint(&small, 10_000), None);
        let big: Vec<_> = (1..=10).map(|i| entry(i, 3000)).collect();
        assert_eq!(entries_hint(&big, 10_000), Some(3));
        // One entry always goes, whatever its size.
        assert_eq!(entries_hint(&big[..1], 10), None);
        assert_eq!(entries_hint(&big[..2], 10), Some(1));
    }
}
