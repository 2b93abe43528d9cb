//! Exactly-once writes. Every command carries `(client_id, seq)`; the reply of each applied
//! command is remembered so a retry (after a lost reply or a leader change) gets the first
//! reply back instead of applying twice. Bounded two ways: at most
//! `SESSION_REPLIES_PER_CLIENT` replies per client (oldest dropped; a retry older than that is
//! refused with SESSION_EXPIRED), and clients idle past `SESSION_TTL_MS` of *leader time* are
//! swept a few per apply.

use super::kv::{KvError, KvWrite, Table};
use super::limits::{SESSION_REPLIES_PER_CLIENT, SESSION_SWEEP_PER_APPLY, SESSION_TTL_MS};

/// Per-client summary, stored in `Table::Clients`: fixed 32 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct ClientInfo {
    /// Lowest seq still remembered (or that would be); below it a retry is refused.
    min_seq: u64,
    count: u64,
    last_seen_ms: u64,
    max_seq: u64,
}

impl ClientInfo {
    fn encode(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[0..8].copy_from_slice(&self.min_seq.to_be_bytes());
        b[8..16].copy_from_slice(&self.count.to_be_bytes());
        b[16..24].copy_from_slice(&self.last_seen_ms.to_be_bytes());
        b[24..32].copy_from_slice(&self.max_seq.to_be_bytes());
        b
    }

    fn decode(b: &[u8]) -> Result<Self, KvError> {
        if b.len() != 32 {
            return Err(KvError(format!(
                "client info has {} bytes, expected 32",
                b.len()
            )));
        }
        let u = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_be_bytes(a)
        };
        Ok(ClientInfo {
            min_seq: u(0),
            count: u(8),
            last_seen_ms: u(16),
            max_seq: u(24),
        })
    }
}

fn reply_key(client: &str, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(client.len() + 9);
    k.extend_from_slice(client.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn client_prefix(client: &str) -> Vec<u8> {
    let mut k = client.as_bytes().to_vec();
    k.push(0);
    k
}

fn expiry_key(ms: u64, client: &str) -> Vec<u8> {
    let mut k = ms.to_be_bytes().to_vec();
    k.extend_from_slice(client.as_bytes());
    k
}

/// What the session table says about an incoming `(client, seq)`.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// Not applied before: apply it.
    New,
    /// Applied before: here is the encoded reply.
    Duplicate(Vec<u8>),
    /// Older than anything remembered for this client: cannot tell, refuse.
    Expired { min_seq: u64 },
}

pub fn check(kv: &impl KvWrite, client: &str, seq: u64) -> Result<Seen, KvError> {
    if let Some(r) = kv.get(Table::Sessions, &reply_key(client, seq))? {
        return Ok(Seen::Duplicate(r));
    }
    if let Some(info) = kv.get(Table::Clients, client.as_bytes())? {
        let info = ClientInfo::decode(&info)?;
        if seq < info.min_seq {
            return Ok(Seen::Expired {
                min_seq: info.min_seq,
            });
        }
    }
    Ok(Seen::New)
}

/// Remembers the reply of an applied `(client, seq)`.
pub fn record(
    kv: &mut impl KvWrite,
    client: &str,
    seq: u64,
    now_ms: u64,
    reply: &[u8],
) -> Result<(), KvError> {
    let mut info = match kv.get(Table::Clients, client.as_bytes())? {
        Some(b) => ClientInfo::decode(&b)?,
        None => ClientInfo {
            min_seq: 0,
            ..Default::default()
        },
    };
    let had_expiry = info.count > 0 || info.last_seen_ms > 0;
    let old_seen = info.last_seen_ms;
    kv.put(Table::Sessions, &reply_key(client, seq), reply)?;
    info.count += 1;
    info.max_seq = info.max_seq.max(seq);
    info.last_seen_ms = info.last_seen_ms.max(now_ms);
    // The expiry row moves only when the client's last-seen time does (not for a second
    // command of one leader batch, which carries the same time).
    let move_expiry = !had_expiry || info.last_seen_ms != old_seen;
    if had_expiry && move_expiry {
        kv.delete(Table::ClientExpiry, &expiry_key(old_seen, client))?;
    }
    // Evict the oldest replies beyond the bound; remember the horizon.
    while info.count > SESSION_REPLIES_PER_CLIENT {
        let prefix = client_prefix(client);
        let mut end = prefix.clone();
        end.extend_from_slice(&[0xff; 9]);
        let oldest = kv.range(Table::Sessions, &prefix, Some(&end), 1)?;
        let Some((k, _)) = oldest.into_iter().next() else {
            break;
        };
        kv.delete(Table::Sessions, &k)?;
        let mut s = [0u8; 8];
        s.copy_from_slice(&k[k.len() - 8..]);
        info.min_seq = u64::from_be_bytes(s) + 1;
        info.count -= 1;
    }
    kv.put(Table::Clients, client.as_bytes(), &info.encode())?;
    if move_expiry {
        kv.put(
            Table::ClientExpiry,
            &expiry_key(info.last_seen_ms, client),
            &[],
        )?;
    }
    Ok(())
}

/// Forgets up to `SESSION_SWEEP_PER_APPLY` clients idle for longer than the TTL.
pub fn sweep(kv: &mut impl KvWrite, now_ms: u64) -> Result<usize, KvError> {
    let Some(cutoff) = now_ms.checked_sub(SESSION_TTL_MS) else {
        return Ok(0);
    };
    let end = cutoff.to_be_bytes();
    let expired = kv.range(
        Table::ClientExpiry,
        &[],
        Some(&end),
        SESSION_SWEEP_PER_APPLY,
    )?;
    let n = expired.len();
    for (k, _) in expired {
        kv.delete(Table::ClientExpiry, &k)?;
        let client = String::from_utf8_lossy(&k[8..]).into_owned();
        kv.delete(Table::Clients, client.as_bytes())?;
        let prefix = client_prefix(&client);
        let mut end = prefix.clone();
        end.extend_from_slice(&[0xff; 9]);
        loop {
            let batch = kv.range(Table::Sessions, &prefix, Some(&end), 64)?;
            if batch.is_empty() {
                break;
            }
            for (k, _) in batch {
                kv.delete(Table::Sessions, &k)?;
            }
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sm::kv::MemKv;

    #[test]
    fn duplicate_returns_first_reply() {
        let mut kv = MemKv::default();
        assert_eq!(check(&kv, "c", 1).expect("check"), Seen::New);
        record(&mut kv, "c", 1, 10, b"r1").expect("record");
        assert_eq!(
            check(&kv, "c", 1).expect("check"),
            Seen::Duplicate(b"r1".to_vec())
        );
        assert_eq!(check(&kv, "c", 2).expect("check"), Seen::New);
        assert_eq!(check(&kv, "other", 1).expect("check"), Seen::New);
    }

    #[test]
    fn bounded_per_client_and_old_retries_refused() {
        let mut kv = MemKv::default();
        let n = SESSION_REPLIES_PER_CLIENT + 10;
        for s in 1..=n {
            record(&mut kv, "c", s, 10, b"r").expect("record");
        }
        let kept = kv
            .tables
            .get(&Table::Sessions)
            .map(|m| m.len())
            .unwrap_or(0) as u64;
        assert_eq!(kept, SESSION_REPLIES_PER_CLIENT);
        assert_eq!(
            check(&kv, "c", 1).expect("check"),
            Seen::Expired { min_seq: 11 }
        );
        assert!(matches!(
            check(&kv, "c", n).expect("check"),
            Seen::Duplicate(_)
        ));
    }

    #[test]
    fn one_expiry_row_per_client_that_follows_its_last_time() {
        let mut kv = MemKv::default();
        let rows = |kv: &MemKv| -> Vec<Vec<u8>> {
            kv.tables
                .get(&Table::ClientExpiry)
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default()
        };
        // Two commands at one leader time (one batch), then a later one.
        record(&mut kv, "c", 1, 500, b"r").expect("record");
        record(&mut kv, "c", 2, 500, b"r").expect("record");
        assert_eq!(rows(&kv), vec![expiry_key(500, "c")]);
        record(&mut kv, "c", 3, 900, b"r").expect("record");
        assert_eq!(rows(&kv), vec![expiry_key(900, "c")]);
        // An older time never moves it back.
        record(&mut kv, "c", 4, 700, b"r").expect("record");
        assert_eq!(rows(&kv), vec![expiry_key(900, "c")]);
    }

    #[test]
    fn idle_clients_are_swept_by_leader_time() {
        let mut kv = MemKv::default();
        record(&mut kv, "old", 1, 1_000, b"r").expect("record");
        record(&mut kv, "new", 1, 1_000 + SESSION_TTL_MS, b"r").expect("record");
        assert_eq!(sweep(&mut kv, 1_000 + SESSION_TTL_MS).expect("sweep"), 0);
        assert_eq!(sweep(&mut kv, 1_001 + SESSION_TTL_MS).expect("sweep"), 1);
        assert_eq!(check(&kv, "old", 1).expect("check"), Seen::New);
        assert!(matches!(
            check(&kv, "new", 1).expect("check"),
            Seen::Duplicate(_)
        ));
    }
}
