//! MetaNode: owns one Raft instance and its stores, wires the layers together, runs the client,
//! peer and metrics servers, bootstraps a new cluster once, and shuts down gracefully.
//! `run`-style entry point takes already-bound listeners so tests can bind 127.0.0.1:0.

pub mod maintenance;
mod read;
pub mod snapshots;
mod status;
mod write;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;

pub use read::ReadBatcher;
pub use write::ProposalBatcher;

use crate::config::Config;
use crate::error::NodeError;
use crate::faults::FaultInjector;
use crate::metrics::Metrics;
use crate::network::{PeerClient, PeerNetwork, PeerService};
use crate::store::{self, DataDir, LogStore, SmStore};
use crate::types::{NodeId, NodeInfo, Raft};

/// Accepted connections of `listener`, with TCP_NODELAY set on each. (tonic's
/// `Server::tcp_nodelay` only applies to sockets tonic binds itself, not to
/// `serve_with_incoming*`; without it a reply or Raft message that the kernel holds back for the
/// peer's delayed ACK costs ~40 ms.)
pub fn nodelay_incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Sockets a node serves on, bound by the caller (port 0 in tests).
pub struct Listeners {
    pub client: TcpListener,
    pub peer: TcpListener,
    pub metrics: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses in `config`.
    pub async fn bind(config: &Config) -> std::io::Result<Listeners> {
        let ctx = |what: &str, addr: &str, e: std::io::Error| {
            std::io::Error::new(e.kind(), format!("bind {what} {addr}: {e}"))
        };
        let client = TcpListener::bind(&config.listen_client)
            .await
            .map_err(|e| ctx("listen_client", &config.listen_client, e))?;
        let peer = TcpListener::bind(&config.listen_peer)
            .await
            .map_err(|e| ctx("listen_peer", &config.listen_peer, e))?;
        let metrics = if config.listen_metrics.is_empty() {
            None
        } else {
            Some(
                TcpListener::bind(&config.listen_metrics)
                    .await
                    .map_err(|e| ctx("listen_metrics", &config.listen_metrics, e))?,
            )
        };
        Ok(Listeners {
            client,
            peer,
            metrics,
        })
    }
}

/// Options that only tests set.
#[derive(Default, Clone)]
pub struct StartOptions {
    pub faults: Option<Arc<FaultInjector>>,
}

/// Everything the request paths share. Handed to `api` and the peer service.
pub struct NodeCore {
    pub id: NodeId,
    pub info: NodeInfo,
    pub config: Config,
    pub raft: Raft,
    pub sm: SmStore,
    pub log: LogStore,
    pub peers: PeerClient,
    pub faults: Arc<FaultInjector>,
    pub metrics: Arc<Metrics>,
    reads: ReadBatcher,
    proposals: ProposalBatcher,
}

impl NodeCore {
    /// The leader as this node believes, with its membership info.
    pub fn leader(&self) -> Option<(NodeId, NodeInfo)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let id = m.current_leader?;
        let info = m.membership_config.membership().get_node(&id).cloned()?;
        Some((id, info))
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.id)
    }

    pub fn not_leader(&self) -> NodeError {
        match self.leader() {
            Some((id, info)) if id != self.id => NodeError::NotLeader {
                leader_id: Some(id),
                leader_addr: Some(info.client_addr),
            },
            _ => NodeError::NotLeader {
                leader_id: None,
                leader_addr: None,
            },
        }
    }

    /// Waits (bounded) until some leader is known.
    pub async fn wait_for_leader(
        &self,
        timeout: Duration,
    ) -> Result<(NodeId, NodeInfo), NodeError> {
        let mut rx = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(l) = self.leader() {
                return Ok(l);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return Err(NodeError::ShuttingDown),
                Err(_) => {
                    return Err(NodeError::Unavailable(format!(
                        "no leader known after {} ms (is a quorum of nodes up and connected?)",
                        timeout.as_millis()
                    )))
                }
            }
        }
    }
}

/// A running node. Dropping it does not stop it: call `shutdown`.
pub struct MetaNode {
    core: Arc<NodeCore>,
    client_addr: SocketAddr,
    peer_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl MetaNode {
    pub async fn start(
        config: Config,
        listeners: Listeners,
        opts: StartOptions,
    ) -> Result<MetaNode, NodeError> {
        config
            .validate()
            .map_err(|e| NodeError::InvalidArgument(e.to_string()))?;
        let raft_config = config
            .openraft_config()
            .map_err(|e| NodeError::InvalidArgument(e.to_string()))?;
        let id = config.node_id;
        let metrics =
            Arc::new(Metrics::new(id).map_err(|e| NodeError::Internal(format!("metrics: {e}")))?);
        let (log, sm) =
            store::open_with_cache(&DataDir::new(&config.data_dir), config.sm_cache_mib).await?;
        let faults = opts.faults.unwrap_or_default();
        let peers = PeerClient::new(id, faults.clone(), metrics.clone());
        let raft = Raft::new(
            id,
            Arc::new(raft_config),
            PeerNetwork {
                client: peers.clone(),
            },
            log.clone(),
            sm.clone(),
        )
        .await
        .map_err(|e| NodeError::Internal(format!("raft start: {e}")))?;

        let local = |l: &TcpListener| {
            l.local_addr()
                .map_err(|e| NodeError::Internal(e.to_string()))
        };
        let client_addr = local(&listeners.client)?;
        let peer_addr = local(&listeners.peer)?;
        let metrics_addr = match &listeners.metrics {
            Some(l) => Some(local(l)?),
            None => None,
        };
        let info = NodeInfo {
            site: config.site.clone(),
            peer_addr: config
                .advertise_peer
                .clone()
                .unwrap_or_else(|| peer_addr.to_string()),
            client_addr: config
                .advertise_client
                .clone()
                .unwrap_or_else(|| client_addr.to_string()),
        };
        let core = Arc::new_cyclic(|weak| NodeCore {
            id,
            info,
            raft,
            sm,
            log,
            peers,
            faults,
            metrics,
            reads: ReadBatcher::spawn(weak.clone()),
            proposals: ProposalBatcher::spawn(weak.clone()),
            config: config.clone(),
        });

        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let signal = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };

        let client_router = crate::api::router(core.clone());
        let rx = stop_rx.clone();
        // Replies to concurrent client requests share writes (see `metad_proto::coalesce`); peer
        // traffic is a few long-lived streams and keeps the plain socket.
        let client_incoming =
            tokio_stream::StreamExt::map(nodelay_incoming(listeners.client), |conn| {
                conn.map(metad_proto::coalesce::Coalesced::new)
            });
        tasks.push(tokio::spawn(async move {
            if let Err(e) = client_router
                .serve_with_incoming_shutdown(client_incoming, signal(rx))
                .await
            {
                tracing::error!(error = %e, "client API server failed");
            }
        }));

        let peer_svc = metad_proto::raft::v1::raft_peer_server::RaftPeerServer::new(
            PeerService::new(core.clone(), stop_rx.clone()),
        )
        .max_decoding_message_size(crate::network::PEER_MESSAGE_MAX)
        .max_encoding_message_size(crate::network::PEER_MESSAGE_MAX);
        let rx = stop_rx.clone();
        let peer_incoming = nodelay_incoming(listeners.peer);
        tasks.push(tokio::spawn(async move {
            let r = tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .initial_connection_window_size(Some(8 << 20))
                .initial_stream_window_size(Some(4 << 20))
                .add_service(peer_svc)
                .serve_with_incoming_shutdown(peer_incoming, signal(rx))
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "peer server failed");
            }
        }));

        if let Some(l) = listeners.metrics {
            let rx = stop_rx.clone();
            tasks.push(tokio::spawn(status::serve_metrics(
                core.clone(),
                l,
                signal(rx),
            )));
        }
        tasks.push(tokio::spawn(status::track_metrics(
            core.clone(),
            stop_rx.clone(),
        )));
        tasks.push(tokio::spawn(maintenance::run(
            core.clone(),
            stop_rx.clone(),
        )));
        tasks.push(tokio::spawn(maintenance::run_leases(
            core.clone(),
            stop_rx.clone(),
        )));
        tasks.push(tokio::spawn(snapshots::run(core.clone(), stop_rx.clone())));

        bootstrap(&core).await?;
        tracing::info!(node_id = id, site = %core.info.site, client = %client_addr, peer = %peer_addr, "metad node started");
        Ok(MetaNode {
            core,
            client_addr,
            peer_addr,
            metrics_addr,
            stop,
            tasks,
        })
    }

    pub fn id(&self) -> NodeId {
        self.core.id
    }
    pub fn core(&self) -> &Arc<NodeCore> {
        &self.core
    }
    pub fn raft(&self) -> &Raft {
        &self.core.raft
    }
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Crash-like stop for tests: servers aborted at once (no drain), then Raft stopped.
    /// Committed state is whatever redb made durable, exactly as after a process kill.
    pub async fn abort(self) {
        for t in &self.tasks {
            t.abort();
        }
        let _ = self.core.raft.shutdown().await;
    }

    /// Stops serving, then stops Raft. In-flight requests get a bounded grace period.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_secs(3), t)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        if let Err(e) = self.core.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        tracing::info!(node_id = self.core.id, "metad node stopped");
    }
}

/// Initialises a brand-new cluster from `initial_cluster`, exactly once: only the member with
/// the lowest id does it, and only if its Raft state is pristine (a restarted node never
/// re-initialises).
async fn bootstrap(core: &NodeCore) -> Result<(), NodeError> {
    let members = &core.config.initial_cluster;
    let Some(first) = members.iter().map(|m| m.id).min() else {
        return Ok(());
    };
    if first != core.id {
        return Ok(());
    }
    let initialized = core
        .raft
        .is_initialized()
        .await
        .map_err(|e| NodeError::Internal(e.to_string()))?;
    if initialized {
        tracing::info!("raft state present; not re-initialising");
        return Ok(());
    }
    let map: BTreeMap<NodeId, NodeInfo> = members.iter().map(|m| (m.id, m.node_info())).collect();
    match core.raft.initialize(map).await {
        Ok(()) => {
            tracing::info!(members = members.len(), "initialised new cluster");
            Ok(())
        }
        Err(openraft::error::RaftError::APIError(
            openraft::error::InitializeError::NotAllowed(_),
        )) => Ok(()),
        Err(e) => Err(NodeError::Internal(format!("initialise cluster: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_sockets_have_nodelay() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let mut incoming = nodelay_incoming(l);
        let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let accepted = tokio_stream::StreamExt::next(&mut incoming)
            .await
            .expect("a connection")
            .expect("accepted");
        assert!(accepted.nodelay().expect("nodelay"), "TCP_NODELAY not set");
    }
}
