//! Client configuration: [`ClientConfig`] (endpoints, timeouts, retry budget, identity for
//! exactly-once writes) and the read options ([`Consistency`], [`ReadOptions`]) a read can carry.

use std::time::Duration;

use metad_proto::v1 as pb;

use crate::error::ClientError;

/// Default time one attempt (one RPC to one node) may take.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time one call may take across all its retries.
pub const DEFAULT_TOTAL_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time to establish a TCP/HTTP2 connection to one node.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default number of retries after the first attempt (the total timeout usually bounds first).
pub const DEFAULT_MAX_RETRIES: u32 = 16;

/// How a read is served. See `metad.v1.Consistency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// Read-index on the leader (or a follower asks the leader and waits to apply). Never stale.
    #[default]
    Linearizable,
    /// The answering node's applied state: may be stale; the response says which revision.
    Serializable,
}

impl Consistency {
    pub(crate) fn to_pb(self) -> pb::Consistency {
        match self {
            Consistency::Linearizable => pb::Consistency::Linearizable,
            Consistency::Serializable => pb::Consistency::Serializable,
        }
    }
}

/// Options of one read. `ReadOptions::default()` uses the client's configured consistency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadOptions {
    /// `None`: the client's default ([`ClientConfig::consistency`]).
    pub consistency: Option<Consistency>,
    /// If non-zero, the serving node first waits until it has applied at least this revision
    /// (read-your-writes at any node, even with `Serializable`).
    pub min_revision: u64,
}

impl ReadOptions {
    pub fn linearizable() -> Self {
        ReadOptions {
            consistency: Some(Consistency::Linearizable),
            min_revision: 0,
        }
    }

    pub fn serializable() -> Self {
        ReadOptions {
            consistency: Some(Consistency::Serializable),
            min_revision: 0,
        }
    }

    /// Sets `min_revision` (builder style).
    pub fn min_revision(mut self, revision: u64) -> Self {
        self.min_revision = revision;
        self
    }

    pub(crate) fn to_pb(self, default: Consistency) -> pb::ReadOptions {
        pb::ReadOptions {
            consistency: self.consistency.unwrap_or(default).to_pb() as i32,
            min_revision: self.min_revision,
        }
    }
}

/// Everything [`crate::Client::connect`] needs.
///
/// ```
/// use metad_client::ClientConfig;
/// let cfg = ClientConfig::new(["127.0.0.1:7001", "127.0.0.1:7002"]);
/// assert_eq!(cfg.endpoints.len(), 2);
/// ```
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Client addresses of (some of) the cluster's nodes: `host:port` or `http://host:port`.
    /// More are learned from leader hints.
    pub endpoints: Vec<String>,
    /// Time limit of one attempt (one RPC to one node). Also sent to the server as the gRPC
    /// deadline.
    pub request_timeout: Duration,
    /// Time limit of one call across all its attempts and backoff sleeps.
    pub total_timeout: Duration,
    /// Time limit for connecting to one node.
    pub connect_timeout: Duration,
    /// Retries after the first attempt (only retryable errors are retried).
    pub max_retries: u32,
    /// Consistency of reads that do not say otherwise.
    pub consistency: Consistency,
    /// Identity for exactly-once writes: 1..=64 bytes of `[A-Za-z0-9._:-]`. `None`: a fresh
    /// UUID v4. Two live clients must never share one id.
    pub client_id: Option<String>,
    /// First write sequence number (>= 1). Only needed when reusing a `client_id` across
    /// processes: start above every seq the previous owner used.
    pub first_seq: u64,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            endpoints: Vec::new(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            total_timeout: DEFAULT_TOTAL_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_retries: DEFAULT_MAX_RETRIES,
            consistency: Consistency::Linearizable,
            client_id: None,
            first_seq: 1,
        }
    }
}

impl ClientConfig {
    /// A config with these endpoints and every other field at its default.
    pub fn new<I, S>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }

    /// Checks everything except the endpoint syntax (see [`crate::endpoint::normalize`]).
    pub(crate) fn validate(&self) -> Result<(), ClientError> {
        if self.endpoints.is_empty() {
            return Err(ClientError::InvalidConfig("no endpoints given".into()));
        }
        if self.request_timeout.is_zero() || self.total_timeout.is_zero() {
            return Err(ClientError::InvalidConfig(
                "timeouts must be greater than zero".into(),
            ));
        }
        if self.connect_timeout.is_zero() {
            return Err(ClientError::InvalidConfig(
                "connect_timeout must be greater than zero".into(),
            ));
        }
        if self.first_seq == 0 {
            return Err(ClientError::InvalidConfig("first_seq must be >= 1".into()));
        }
        if let Some(id) = &self.client_id {
            validate_client_id(id)?;
        }
        Ok(())
    }
}

/// The rule of `metad.v1.WriteHeader.client_id`: 1..=64 bytes of `[A-Za-z0-9._:-]`.
pub fn validate_client_id(id: &str) -> Result<(), ClientError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
    if id.is_empty() || id.len() > 64 || !id.chars().all(ok_char) {
        return Err(ClientError::InvalidConfig(format!(
            "client_id {id:?} must be 1..=64 bytes of [A-Za-z0-9._:-]"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_sane() {
        let c = ClientConfig::new(["a:1"]);
        assert_eq!(c.request_timeout, Duration::from_secs(5));
        assert_eq!(c.total_timeout, Duration::from_secs(30));
        assert_eq!(c.first_seq, 1);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn rejects_bad_config() {
        assert!(ClientConfig::default().validate().is_err());
        let mut c = ClientConfig::new(["a:1"]);
        c.client_id = Some("has space".into());
        assert!(c.validate().is_err());
        c.client_id = Some("x".repeat(65));
        assert!(c.validate().is_err());
        c.client_id = Some("job-7.worker_3:a".into());
        assert!(c.validate().is_ok());
        c.first_seq = 0;
        assert!(c.validate().is_err());
    }

    #[test]
    fn uuid_is_a_valid_client_id() {
        assert!(validate_client_id(&uuid::Uuid::new_v4().to_string()).is_ok());
    }

    #[test]
    fn read_options_fall_back_to_client_default() {
        let r = ReadOptions::default()
            .min_revision(7)
            .to_pb(Consistency::Serializable);
        assert_eq!(r.consistency, pb::Consistency::Serializable as i32);
        assert_eq!(r.min_revision, 7);
        let r = ReadOptions::linearizable().to_pb(Consistency::Serializable);
        assert_eq!(r.consistency, pb::Consistency::Linearizable as i32);
    }
}
