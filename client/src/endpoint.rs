//! The endpoint pool: parsing/normalising node addresses, one lazily connected
//! `tonic::transport::Channel` per node, and the cursor that says which node the client
//! currently believes is the leader (moved by leader hints and rotated on failures).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::RwLock;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::error::ClientError;

/// Normalises one node address to `http://host:port`.
///
/// Accepts `host:port`, `http://host:port` and `[v6]:port`, with surrounding whitespace and a
/// trailing `/`. `https://` is refused: this client build has no TLS yet.
pub fn normalize(addr: &str) -> Result<String, ClientError> {
    let bad = |why: &str| ClientError::InvalidConfig(format!("endpoint {addr:?}: {why}"));
    let s = addr.trim().trim_end_matches('/');
    if s.is_empty() {
        return Err(bad("empty"));
    }
    let rest = if let Some(r) = s.strip_prefix("http://") {
        r
    } else if s.starts_with("https://") {
        return Err(bad(
            "https is not supported by this client yet; use http://",
        ));
    } else if s.contains("://") {
        return Err(bad("only http:// endpoints are supported"));
    } else {
        s
    };
    if rest.contains('/') {
        return Err(bad("must be host:port with no path"));
    }
    let (host, port) = rest.rsplit_once(':').ok_or_else(|| bad("missing :port"))?;
    if host.is_empty() || (host.contains(':') && !(host.starts_with('[') && host.ends_with(']'))) {
        return Err(bad("bad host (write IPv6 addresses as [addr]:port)"));
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => {}
        _ => return Err(bad("port must be 1..=65535")),
    }
    let norm = format!("http://{rest}");
    Endpoint::from_shared(norm.clone()).map_err(|e| bad(&e.to_string()))?;
    Ok(norm)
}

/// Splits a comma-separated list (as in `--endpoints` / `METAD_ENDPOINTS`) and normalises each
/// entry, dropping duplicates but keeping order.
pub fn parse_list(list: &str) -> Result<Vec<String>, ClientError> {
    let mut out: Vec<String> = Vec::new();
    for part in list.split(',').filter(|p| !p.trim().is_empty()) {
        let n = normalize(part)?;
        if !out.contains(&n) {
            out.push(n);
        }
    }
    if out.is_empty() {
        return Err(ClientError::InvalidConfig("no endpoints given".into()));
    }
    Ok(out)
}

/// Connection settings applied to every endpoint's channel.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChannelSettings {
    pub connect_timeout: Duration,
}

struct Slot {
    addr: String,
    channel: Channel,
}

/// The set of known nodes (append-only, so indices stay valid) and the current cursor.
pub(crate) struct Endpoints {
    slots: RwLock<Vec<Slot>>,
    current: AtomicUsize,
    settings: ChannelSettings,
}

impl Endpoints {
    /// Builds the pool; channels connect on first use. Must run inside a tokio runtime.
    pub(crate) fn new(addrs: &[String], settings: ChannelSettings) -> Result<Self, ClientError> {
        let mut slots: Vec<Slot> = Vec::new();
        for a in addrs {
            let addr = normalize(a)?;
            if slots.iter().any(|s| s.addr == addr) {
                continue;
            }
            let channel = make_channel(&addr, settings)?;
            slots.push(Slot { addr, channel });
        }
        if slots.is_empty() {
            return Err(ClientError::InvalidConfig("no endpoints given".into()));
        }
        Ok(Endpoints {
            slots: RwLock::new(slots),
            current: AtomicUsize::new(0),
            settings,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.read_slots(|s| s.len())
    }

    /// The normalised addresses, in index order.
    pub(crate) fn addrs(&self) -> Vec<String> {
        self.read_slots(|s| s.iter().map(|x| x.addr.clone()).collect())
    }

    pub(crate) fn index_of(&self, addr: &str) -> Option<usize> {
        let n = normalize(addr).ok()?;
        self.read_slots(|s| s.iter().position(|x| x.addr == n))
    }

    /// The index of the believed leader / the node the client talks to by default.
    pub(crate) fn current(&self) -> usize {
        self.current.load(Ordering::Acquire)
    }

    /// `(addr, channel)` of endpoint `i`.
    pub(crate) fn get(&self, i: usize) -> Option<(String, Channel)> {
        self.read_slots(|s| s.get(i).map(|x| (x.addr.clone(), x.channel.clone())))
    }

    /// Moves the cursor past `failed` (only if no other caller moved it already).
    pub(crate) fn rotate_from(&self, failed: usize) {
        let n = self.len().max(1);
        let _ = self.current.compare_exchange(
            failed,
            (failed + 1) % n,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// Points the cursor at `addr`, adding it to the pool if new. Returns its index, or `None`
    /// if the address is unusable.
    pub(crate) fn follow_hint(&self, addr: &str) -> Option<usize> {
        let i = self.find_or_add(addr)?;
        self.current.store(i, Ordering::Release);
        Some(i)
    }

    /// Index of `addr`, adding it to the pool if new.
    pub(crate) fn find_or_add(&self, addr: &str) -> Option<usize> {
        let norm = normalize(addr).ok()?;
        if let Some(i) = self.read_slots(|s| s.iter().position(|x| x.addr == norm)) {
            return Some(i);
        }
        let channel = make_channel(&norm, self.settings).ok()?;
        let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = slots.iter().position(|x| x.addr == norm) {
            return Some(i);
        }
        slots.push(Slot {
            addr: norm,
            channel,
        });
        Some(slots.len() - 1)
    }

    fn read_slots<T>(&self, f: impl FnOnce(&Vec<Slot>) -> T) -> T {
        let guard = self.slots.read().unwrap_or_else(|p| p.into_inner());
        f(&guard)
    }
}

fn make_channel(addr: &str, settings: ChannelSettings) -> Result<Channel, ClientError> {
    let ep = Endpoint::from_shared(addr.to_string())
        .map_err(|e| ClientError::InvalidConfig(format!("endpoint {addr:?}: {e}")))?
        .connect_timeout(settings.connect_timeout)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    // The connector sets TCP_NODELAY itself and coalesces writes (see `connect`).
    Ok(ep.connect_with_connector_lazy(crate::connect::Connector))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_common_forms() {
        assert_eq!(
            normalize("127.0.0.1:7001").ok(),
            Some("http://127.0.0.1:7001".into())
        );
        assert_eq!(
            normalize(" http://node-a:7001/ ").ok(),
            Some("http://node-a:7001".into())
        );
        assert_eq!(
            normalize("[::1]:7001").ok(),
            Some("http://[::1]:7001".into())
        );
        assert_eq!(
            normalize("localhost:1").ok(),
            Some("http://localhost:1".into())
        );
    }

    #[test]
    fn rejects_bad_endpoints() {
        for bad in [
            "",
            "host",
            "host:",
            ":7001",
            "host:0",
            "host:70000",
            "host:abc",
            "https://host:7001",
            "grpc://host:7001",
            "host:7001/path",
            "::1:7001",
        ] {
            let e = normalize(bad).expect_err(bad);
            assert!(matches!(e, ClientError::InvalidConfig(_)), "{bad}: {e:?}");
        }
    }

    #[test]
    fn list_is_split_trimmed_and_deduplicated() {
        let l = parse_list("127.0.0.1:7001, http://127.0.0.1:7001,127.0.0.1:7002,").expect("parse");
        assert_eq!(l, vec!["http://127.0.0.1:7001", "http://127.0.0.1:7002"]);
        assert!(parse_list(" , ").is_err());
        assert!(parse_list("a:1,b").is_err());
    }

    fn pool(addrs: &[&str]) -> Endpoints {
        let addrs: Vec<String> = addrs.iter().map(|s| s.to_string()).collect();
        Endpoints::new(
            &addrs,
            ChannelSettings {
                connect_timeout: Duration::from_secs(1),
            },
        )
        .expect("pool")
    }

    #[tokio::test]
    async fn rotation_and_hints_move_the_cursor() {
        let p = pool(&["a:1", "b:2", "http://a:1"]);
        assert_eq!(p.len(), 2, "duplicates dropped");
        assert_eq!(p.current(), 0);
        p.rotate_from(0);
        assert_eq!(p.current(), 1);
        p.rotate_from(0); // stale: someone already rotated
        assert_eq!(p.current(), 1);
        p.rotate_from(1);
        assert_eq!(p.current(), 0);

        assert_eq!(p.follow_hint("b:2"), Some(1));
        assert_eq!(p.current(), 1);
        assert_eq!(
            p.follow_hint("http://c:3"),
            Some(2),
            "new leader address is added"
        );
        assert_eq!(p.current(), 2);
        assert_eq!(p.addrs(), vec!["http://a:1", "http://b:2", "http://c:3"]);
        assert_eq!(p.follow_hint("not an address"), None);
        assert_eq!(p.current(), 2);
        assert_eq!(p.index_of("c:3"), Some(2));
    }
}
