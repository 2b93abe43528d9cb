//! Exactly-once writes. Every command carries `(client_id, seq)`; the reply of each applied
//! command is remembered so a retry (after a lost reply or a leader change) gets the first
//! reply back instead of applying twice.
//!
//! Layout (sm format 2), chosen so that a command costs three point operations and no deletes:
//! - `Sessions`: `client ‖ 0 ‖ slot u16 BE` -> `seq u64 BE ‖ reply`, with
//!   `slot = seq % SESSION_REPLIES_PER_CLIENT`: a ring of the last replies per client. A slot is
//!   only ever overwritten by a higher seq, so a seq found nowhere was never applied.
//! - `Clients`: `client` -> `bucket u64 BE`, the client's last-seen leader time rounded down
//!   to [`EXPIRY_GRANULE_MS`]; rewritten only when the bucket moves (about once a minute per
//!   active client, not per command).
//! - `ClientExpiry`: `bucket u64 BE ‖ client` -> `()`: clients by last-seen bucket. Clients whose
//!   bucket ended more than `SESSION_TTL_MS` ago are forgotten, at most
//!   `SESSION_SWEEP_PER_APPLY` per applied entry (bounded apply cost).

use super::kv::{KvError, KvWrite, Table};
use super::limits::{SESSION_REPLIES_PER_CLIENT, SESSION_SWEEP_PER_APPLY, SESSION_TTL_MS};

/// Last-seen times are kept at this granularity: a client is forgotten between
/// `SESSION_TTL_MS` and `SESSION_TTL_MS + EXPIRY_GRANULE_MS` after its last command.
pub const EXPIRY_GRANULE_MS: u64 = 60_000;

fn slot_key(client: &str, seq: u64) -> Vec<u8> {
    let slot = (seq % SESSION_REPLIES_PER_CLIENT) as u16;
    let mut k = Vec::with_capacity(client.len() + 3);
    k.extend_from_slice(client.as_bytes());
    k.push(0);
    k.extend_from_slice(&slot.to_be_bytes());
    k
}

fn client_prefix(client: &str) -> Vec<u8> {
    let mut k = client.as_bytes().to_vec();
    k.push(0);
    k
}

fn expiry_key(bucket: u64, client: &str) -> Vec<u8> {
    let mut k = bucket.to_be_bytes().to_vec();
    k.extend_from_slice(client.as_bytes());
    k
}

fn bucket_of(ms: u64) -> u64 {
    ms - ms % EXPIRY_GRANULE_MS
}

fn decode_u64(b: &[u8], what: &str) -> Result<u64, KvError> {
    <[u8; 8]>::try_from(b)
        .map(u64::from_be_bytes)
        .map_err(|_| KvError(format!("session {what} has {} bytes, expected 8", b.len())))
}

/// What the session table says about an incoming `(client, seq)`.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// Not applied before: apply it.
    New,
    /// Applied before: here is the encoded reply.
    Duplicate(Vec<u8>),
    /// Its reply slot holds the newer `newer` (at most `SESSION_REPLIES_PER_CLIENT` replies are
    /// kept per client): cannot tell whether it was applied, refuse.
    Expired { newer: u64 },
}

pub fn check(kv: &impl KvWrite, client: &str, seq: u64) -> Result<Seen, KvError> {
    let Some(row) = kv.get(Table::Sessions, &slot_key(client, seq))? else {
        return Ok(Seen::New);
    };
    if row.len() < 8 {
        return Err(KvError(format!(
            "session slot has {} bytes, expected at least 8",
            row.len()
        )));
    }
    let stored = decode_u64(&row[..8], "slot seq")?;
    Ok(match stored.cmp(&seq) {
        std::cmp::Ordering::Equal => Seen::Duplicate(row[8..].to_vec()),
        std::cmp::Ordering::Greater => Seen::Expired { newer: stored },
        std::cmp::Ordering::Less => Seen::New,
    })
}

/// Remembers the reply of an applied `(client, seq)`; `check` must have said `New`.
pub fn record(
    kv: &mut impl KvWrite,
    client: &str,
    seq: u64,
    now_ms: u64,
    reply: &[u8],
) -> Result<(), KvError> {
    let mut row = Vec::with_capacity(8 + reply.len());
    row.extend_from_slice(&seq.to_be_bytes());
    row.extend_from_slice(reply);
    kv.put(Table::Sessions, &slot_key(client, seq), &row)?;
    let bucket = bucket_of(now_ms);
    let old = kv
        .get(Table::Clients, client.as_bytes())?
        .map(|b| decode_u64(&b, "client bucket"))
        .transpose()?;
    // Leader time never goes backwards in apply, but keep the later bucket if it did.
    if old.is_some_and(|o| o >= bucket) {
        return Ok(());
    }
    if let Some(o) = old {
        kv.delete(Table::ClientExpiry, &expiry_key(o, client))?;
    }
    kv.put(Table::Clients, client.as_bytes(), &bucket.to_be_bytes())?;
    kv.put(Table::ClientExpiry, &expiry_key(bucket, client), &[])
}

/// Forgets up to `SESSION_SWEEP_PER_APPLY` clients idle for longer than the TTL.
pub fn sweep(kv: &mut impl KvWrite, now_ms: u64) -> Result<usize, KvError> {
    // Every command of a bucket is older than bucket + granule.
    let Some(cutoff) = now_ms.checked_sub(SESSION_TTL_MS + EXPIRY_GRANULE_MS) else {
        return Ok(0);
    };
    let end = (cutoff + 1).to_be_bytes();
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
        end.extend_from_slice(&[0xff; 3]);
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

    fn rows(kv: &MemKv, t: Table) -> Vec<Vec<u8>> {
        kv.tables
            .get(&t)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

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
            record(&mut kv, "c", s, 10, format!("r{s}").as_bytes()).expect("record");
        }
        assert_eq!(
            rows(&kv, Table::Sessions).len() as u64,
            SESSION_REPLIES_PER_CLIENT
        );
        // seq 1..=10 were overwritten by 257..=266.
        assert_eq!(
            check(&kv, "c", 1).expect("check"),
            Seen::Expired {
                newer: 1 + SESSION_REPLIES_PER_CLIENT
            }
        );
        assert_eq!(
            check(&kv, "c", 11).expect("check"),
            Seen::Duplicate(b"r11".to_vec())
        );
        assert_eq!(
            check(&kv, "c", n).expect("check"),
            Seen::Duplicate(format!("r{n}").into_bytes())
        );
        assert_eq!(check(&kv, "c", n + 1).expect("check"), Seen::New);
    }

    #[test]
    fn out_of_order_seqs_within_the_window_are_each_remembered() {
        let mut kv = MemKv::default();
        for s in [5u64, 3, 4, 1, 2] {
            assert_eq!(check(&kv, "c", s).expect("check"), Seen::New);
            record(&mut kv, "c", s, 10, &[s as u8]).expect("record");
        }
        for s in 1..=5u64 {
            assert_eq!(
                check(&kv, "c", s).expect("check"),
                Seen::Duplicate(vec![s as u8])
            );
        }
    }

    #[test]
    fn one_expiry_row_per_client_that_moves_by_the_minute() {
        let mut kv = MemKv::default();
        let g = EXPIRY_GRANULE_MS;
        // Two commands in one minute, then one a minute later.
        record(&mut kv, "c", 1, 5 * g + 10, b"r").expect("record");
        record(&mut kv, "c", 2, 5 * g + 900, b"r").expect("record");
        assert_eq!(rows(&kv, Table::ClientExpiry), vec![expiry_key(5 * g, "c")]);
        record(&mut kv, "c", 3, 6 * g + 1, b"r").expect("record");
        assert_eq!(rows(&kv, Table::ClientExpiry), vec![expiry_key(6 * g, "c")]);
        // An older time never moves it back.
        record(&mut kv, "c", 4, 5 * g, b"r").expect("record");
        assert_eq!(rows(&kv, Table::ClientExpiry), vec![expiry_key(6 * g, "c")]);
        assert_eq!(rows(&kv, Table::Clients), vec![b"c".to_vec()]);
    }

    #[test]
    fn idle_clients_are_swept_by_leader_time() {
        let mut kv = MemKv::default();
        let g = EXPIRY_GRANULE_MS;
        let t0 = 10 * g + 500;
        record(&mut kv, "old", 1, t0, b"r").expect("record");
        record(&mut kv, "old", 2, t0, b"r").expect("record");
        record(&mut kv, "new", 1, t0 + SESSION_TTL_MS, b"r").expect("record");
        // Not before TTL has passed since the end of the old client's minute.
        let last_possible = bucket_of(t0) + g - 1;
        assert_eq!(
            sweep(&mut kv, last_possible + SESSION_TTL_MS).expect("sweep"),
            0
        );
        assert_eq!(
            sweep(&mut kv, last_possible + SESSION_TTL_MS + 1).expect("sweep"),
            1
        );
        assert_eq!(check(&kv, "old", 1).expect("check"), Seen::New);
        assert_eq!(check(&kv, "old", 2).expect("check"), Seen::New);
        assert!(matches!(
            check(&kv, "new", 1).expect("check"),
            Seen::Duplicate(_)
        ));
        assert_eq!(rows(&kv, Table::Clients), vec![b"new".to_vec()]);
        assert_eq!(rows(&kv, Table::Sessions).len(), 1);
    }
}
