//! Calls to the INTERNAL test register (`metad.internal.v1.Register`): put, incr and get on a
//! tiny replicated key/value table, used to test the replicated core (exactly-once writes,
//! linearizable and `min_revision` reads). Not a product API.

use metad_proto::internal::v1 as ipb;
use metad_proto::internal::v1::register_client::RegisterClient;
use metad_proto::v1 as pb;

use crate::client::{request, Client};
use crate::config::ReadOptions;
use crate::error::{CallKind, ClientError};

/// What the cluster says about the state an answer reflects (`metad.v1.ResponseHeader`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    /// State-machine revision the answer reflects (after the write, for writes).
    pub revision: u64,
    /// The node that served the request.
    pub node_id: u64,
    /// That node's Raft term when it answered.
    pub raft_term: u64,
}

impl From<Option<pb::ResponseHeader>> for Header {
    fn from(h: Option<pb::ResponseHeader>) -> Self {
        let h = h.unwrap_or_default();
        Header {
            revision: h.revision,
            node_id: h.node_id,
            raft_term: h.raft_term,
        }
    }
}

/// Reply of [`Client::register_put`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutResult {
    /// The value before this put, if the key existed.
    pub prev_value: Option<Vec<u8>>,
    pub header: Header,
}

/// Reply of [`Client::register_incr`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IncrResult {
    /// The counter after this increment.
    pub value: i64,
    pub header: Header,
}

/// Reply of [`Client::register_get`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetResult {
    /// `None` if the key does not exist.
    pub value: Option<Vec<u8>>,
    /// Revision at which the key was last written (0 if absent).
    pub mod_revision: u64,
    /// `header.revision` is the revision the read reflects, `header.node_id` who served it.
    pub header: Header,
}

impl Client {
    /// Sets `key` to `value` exactly once (retries reuse this write's seq).
    pub async fn register_put(
        &self,
        key: &str,
        value: impl Into<Vec<u8>>,
    ) -> Result<PutResult, ClientError> {
        let seq = self.next_seq();
        self.register_put_with_seq(key, value, seq).await
    }

    /// [`Client::register_put`] with an explicit `seq` under this client's `client_id`: sending
    /// the same seq again must return the first reply, not apply twice.
    pub async fn register_put_with_seq(
        &self,
        key: &str,
        value: impl Into<Vec<u8>>,
        seq: u64,
    ) -> Result<PutResult, ClientError> {
        let req = ipb::PutRequest {
            header: Some(self.write_header(seq)),
            key: key.to_string(),
            value: value.into(),
        };
        let resp = self
            .call(CallKind::Write { seq }, None, move |ch, t| {
                let req = req.clone();
                async move { RegisterClient::new(ch).put(request(req, t)).await }
            })
            .await?;
        Ok(PutResult {
            prev_value: resp.prev_value,
            header: resp.header.into(),
        })
    }

    /// Adds `delta` to the counter `key` (absent = 0) exactly once.
    pub async fn register_incr(&self, key: &str, delta: i64) -> Result<IncrResult, ClientError> {
        let seq = self.next_seq();
        self.register_incr_with_seq(key, delta, seq).await
    }

    /// [`Client::register_incr`] with an explicit `seq` (see
    /// [`Client::register_put_with_seq`]).
    pub async fn register_incr_with_seq(
        &self,
        key: &str,
        delta: i64,
        seq: u64,
    ) -> Result<IncrResult, ClientError> {
        let req = ipb::IncrRequest {
            header: Some(self.write_header(seq)),
            key: key.to_string(),
            delta,
        };
        let resp = self
            .call(CallKind::Write { seq }, None, move |ch, t| {
                let req = req.clone();
                async move { RegisterClient::new(ch).incr(request(req, t)).await }
            })
            .await?;
        Ok(IncrResult {
            value: resp.value,
            header: resp.header.into(),
        })
    }

    /// Reads `key`. `ReadOptions::default()` = the client's default consistency, no
    /// `min_revision`. On a pinned view ([`Client::on_endpoint`]) the read is served by that
    /// node, e.g. a linearizable read on a follower.
    pub async fn register_get(
        &self,
        key: &str,
        options: ReadOptions,
    ) -> Result<GetResult, ClientError> {
        let req = ipb::GetRequest {
            read: Some(options.to_pb(self.inner.consistency)),
            key: key.to_string(),
        };
        let resp = self
            .call(CallKind::Read, None, move |ch, t| {
                let req = req.clone();
                async move { RegisterClient::new(ch).get(request(req, t)).await }
            })
            .await?;
        Ok(GetResult {
            value: resp.value,
            mod_revision: resp.mod_revision,
            header: resp.header.into(),
        })
    }

    fn write_header(&self, seq: u64) -> pb::WriteHeader {
        pb::WriteHeader {
            client_id: self.inner.client_id.clone(),
            seq,
        }
    }
}
