//! [`Client`]: the handle applications, tests and `metactl` use. Owns the endpoint pool, the
//! retry policy and the exactly-once write identity `(client_id, seq)`; implements the cluster
//! (status and membership) calls. The test register calls live in `register.rs`.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metad_proto::v1 as pb;
use metad_proto::v1::cluster_client::ClusterClient;
use tonic::transport::Channel;

use crate::backoff::Backoff;
use crate::config::{ClientConfig, Consistency};
use crate::endpoint::{ChannelSettings, Endpoints};
use crate::error::{CallKind, ClientError};
use crate::retry::{self, Policy, Route};

/// A metad client: cheap to clone (clones share connections, leader cache and the write
/// sequence).
///
/// Routing: by default every call goes to the node believed to be the leader. The belief
/// starts at the first endpoint and moves when a node answers `NotLeader` with the leader's
/// address (followed at once, adding the address if new), when [`Client::cluster_status`]
/// reports the leader, and to the next endpoint when a node is unreachable or unavailable.
/// [`Client::on_endpoint`] gives a view pinned to one node (e.g. a linearizable read on a
/// follower): all its calls go to that node only.
///
/// Retries: only retryable errors ([`ClientError::is_retryable`]), with exponential backoff
/// and full jitter (50 ms doubling to 2 s), at most `max_retries` times and within
/// `total_timeout`. Each register write takes a seq once; all its retries reuse
/// `(client_id, seq)`, so the cluster applies it exactly once. Membership changes are not
/// deduplicated: an unknown outcome is returned as `Ambiguous` at once, not retried.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
    pub(crate) pin: Option<usize>,
}

pub(crate) struct Inner {
    pub(crate) endpoints: Endpoints,
    pub(crate) policy: Policy,
    pub(crate) consistency: Consistency,
    pub(crate) client_id: String,
    pub(crate) seq: AtomicU64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("client_id", &self.inner.client_id)
            .field("endpoints", &self.inner.endpoints.addrs())
            .field("current", &self.inner.endpoints.current())
            .field("pin", &self.pin)
            .finish()
    }
}

impl Client {
    /// Builds a client. Does not contact the cluster: connections are made on first use, so
    /// this fails only on an invalid configuration. Must be called inside a tokio runtime.
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        config.validate()?;
        let settings = ChannelSettings {
            connect_timeout: config.connect_timeout.min(config.request_timeout),
        };
        let endpoints = Endpoints::new(&config.endpoints, settings)?;
        let client_id = config
            .client_id
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let policy = Policy {
            request_timeout: config.request_timeout,
            total_timeout: config.total_timeout,
            max_retries: config.max_retries,
            backoff: Backoff::default(),
        };
        let inner = Inner {
            endpoints,
            policy,
            consistency: config.consistency,
            client_id,
            seq: AtomicU64::new(config.first_seq),
        };
        Ok(Client {
            inner: Arc::new(inner),
            pin: None,
        })
    }

    /// The id this client's writes carry.
    pub fn client_id(&self) -> &str {
        &self.inner.client_id
    }

    /// Takes the next write sequence number (what every register write does once). Use with
    /// the `*_with_seq` calls to send, or replay, a write with an exact `(client_id, seq)`.
    pub fn next_seq(&self) -> u64 {
        self.inner.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// The known endpoints (normalised `http://host:port`), in index order. The list grows
    /// when a leader hint names a new address; indices never change.
    pub fn endpoints(&self) -> Vec<String> {
        self.inner.endpoints.addrs()
    }

    /// Index of `addr` (`host:port` or `http://host:port`) among [`Client::endpoints`].
    pub fn endpoint_index(&self, addr: &str) -> Option<usize> {
        self.inner.endpoints.index_of(addr)
    }

    /// Index of the endpoint the client currently believes is the leader.
    pub fn leader_index(&self) -> usize {
        self.inner.endpoints.current()
    }

    /// The endpoint index this view is pinned to, if any.
    pub fn pinned(&self) -> Option<usize> {
        self.pin
    }

    /// A view of this client whose calls all go to endpoint `index` (no rotation, no hint
    /// following). Shares connections and the write sequence with `self`.
    pub fn on_endpoint(&self, index: usize) -> Result<Client, ClientError> {
        if index >= self.inner.endpoints.len() {
            return Err(ClientError::InvalidConfig(format!(
                "no endpoint #{index} (the client knows {})",
                self.inner.endpoints.len()
            )));
        }
        Ok(Client {
            inner: Arc::clone(&self.inner),
            pin: Some(index),
        })
    }

    /// Like [`Client::on_endpoint`], by address (`host:port` or `http://host:port`); the address
    /// is added to the pool if new.
    pub fn on_addr(&self, addr: &str) -> Result<Client, ClientError> {
        crate::endpoint::normalize(addr)?;
        let index = self
            .inner
            .endpoints
            .find_or_add(addr)
            .ok_or_else(|| ClientError::InvalidConfig(format!("unusable endpoint {addr:?}")))?;
        self.on_endpoint(index)
    }

    /// Whole-cluster view (leader, term, every member's own report; unreachable members carry
    /// an error). Unpinned, it also points the leader cache at the reported leader.
    pub async fn cluster_status(&self) -> Result<pb::StatusResponse, ClientError> {
        let resp = self
            .call(CallKind::Read, None, |ch, t| async move {
                ClusterClient::new(ch)
                    .status(request(pb::StatusRequest {}, t))
                    .await
            })
            .await?;
        if self.pin.is_none() && !resp.leader_addr.is_empty() {
            self.inner.endpoints.follow_hint(&resp.leader_addr);
        }
        Ok(resp)
    }

    /// The answering node's own view (no fan-out). Pin the client (see
    /// [`Client::on_endpoint`]) to ask one particular node.
    pub async fn node_status(&self) -> Result<pb::NodeStatusResponse, ClientError> {
        self.call(CallKind::Read, None, |ch, t| async move {
            ClusterClient::new(ch)
                .node_status(request(pb::NodeStatusRequest {}, t))
                .await
        })
        .await
    }

    /// The members (voters and learners) and the leader id.
    pub async fn member_list(&self) -> Result<pb::MemberListResponse, ClientError> {
        self.call(CallKind::Read, None, |ch, t| async move {
            ClusterClient::new(ch)
                .member_list(request(pb::MemberListRequest {}, t))
                .await
        })
        .await
    }

    /// Adds a non-voting member. With `wait_caught_up`, returns once it has caught up with the
    /// leader's log; that attempt may then take up to the total timeout.
    pub async fn add_learner(
        &self,
        id: u64,
        site: &str,
        peer_addr: &str,
        client_addr: &str,
        wait_caught_up: bool,
    ) -> Result<pb::MemberChangeResponse, ClientError> {
        let req = pb::AddLearnerRequest {
            id,
            site: site.to_string(),
            peer_addr: peer_addr.to_string(),
            client_addr: client_addr.to_string(),
            wait_caught_up,
        };
        let timeout = if wait_caught_up {
            Some(self.inner.policy.total_timeout)
        } else {
            None
        };
        self.call(CallKind::Mutation, timeout, move |ch, t| {
            let req = req.clone();
            async move { ClusterClient::new(ch).add_learner(request(req, t)).await }
        })
        .await
    }

    /// Makes learner `id` a voter.
    pub async fn promote_learner(&self, id: u64) -> Result<pb::MemberChangeResponse, ClientError> {
        self.call(CallKind::Mutation, None, move |ch, t| async move {
            ClusterClient::new(ch)
                .promote_learner(request(pb::PromoteLearnerRequest { id }, t))
                .await
        })
        .await
    }

    /// Removes voter or learner `id`.
    pub async fn remove_member(&self, id: u64) -> Result<pb::MemberChangeResponse, ClientError> {
        self.call(CallKind::Mutation, None, move |ch, t| async move {
            ClusterClient::new(ch)
                .remove_member(request(pb::RemoveMemberRequest { id }, t))
                .await
        })
        .await
    }

    /// Asks the leader to hand leadership to `to`. (metad on openraft 0.9 answers
    /// `UNIMPLEMENTED`.)
    pub async fn transfer_leader(&self, to: u64) -> Result<(), ClientError> {
        self.call(CallKind::Mutation, None, move |ch, t| async move {
            ClusterClient::new(ch)
                .transfer_leader(request(pb::TransferLeaderRequest { to }, t))
                .await
        })
        .await
        .map(|_| ())
    }

    /// Runs one call through the retry loop. `attempt` gets the channel and the per-attempt
    /// timeout (to put on the request as its gRPC deadline).
    pub(crate) async fn call<T, F, Fut>(
        &self,
        kind: CallKind,
        attempt_timeout: Option<Duration>,
        mut attempt: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let route = match self.pin {
            Some(i) => Route::Pinned(i),
            None => Route::Cursor,
        };
        let policy = &self.inner.policy;
        let timeout = attempt_timeout.unwrap_or(policy.request_timeout);
        retry::run(
            &self.inner.endpoints,
            policy,
            kind,
            route,
            timeout,
            |ch, t| {
                let fut = attempt(ch, t);
                async move { fut.await.map(tonic::Response::into_inner) }
            },
        )
        .await
    }
}

/// A request carrying `timeout` as its gRPC deadline.
pub(crate) fn request<M>(message: M, timeout: Duration) -> tonic::Request<M> {
    let mut r = tonic::Request::new(message);
    r.set_timeout(timeout);
    r
}
