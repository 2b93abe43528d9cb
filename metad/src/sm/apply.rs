//! Deterministic apply of one `Command`, and the read queries over applied state.
//!
//! Revision rule: the global revision increases by exactly one for every applied command that
//! changes replicated state (a refused or duplicate command leaves it unchanged). Session
//! bookkeeping is not a "change" in that sense.

use metad_proto::raft::v1::{
    command::Op, reply, Command, RegisterIncrReply, RegisterPutReply, Reply, ReplyBatch, ReplyError,
};
use metad_proto::ErrorCode;
use prost::Message;

use super::kv::{KvError, KvRead, KvWrite, Overlay, Table};
use super::limits;
use super::model::{ensure_root, write_events, ApplyCtx, ApplyError, OpResult, Refusal};
use super::session::{self, Seen};

const META_REVISION: &[u8] = b"revision";
const META_LEADER_TIME: &[u8] = b"leader_time_ms";

fn get_u64(kv: &impl KvRead, t: Table, k: &[u8]) -> Result<u64, KvError> {
    match kv.get(t, k)? {
        None => Ok(0),
        Some(b) if b.len() == 8 => {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b);
            Ok(u64::from_be_bytes(a))
        }
        Some(b) => Err(KvError(format!(
            "meta value has {} bytes, expected 8",
            b.len()
        ))),
    }
}

/// Current revision of the applied state.
pub fn revision(kv: &impl KvRead) -> Result<u64, KvError> {
    get_u64(kv, Table::Meta, META_REVISION)
}

/// Highest leader time any applied command carried (monotonic even if clocks are not).
pub fn leader_time_ms(kv: &impl KvRead) -> Result<u64, KvError> {
    get_u64(kv, Table::Meta, META_LEADER_TIME)
}

fn refuse_reply(rev: u64, code: ErrorCode, message: impl Into<String>) -> Reply {
    Reply {
        revision: rev,
        result: Some(reply::Result::Error(ReplyError {
            code: code.as_str().to_string(),
            message: message.into(),
        })),
    }
}

/// The register key rule (1..=REGISTER_KEY_MAX bytes), shared by writes and reads.
pub fn check_register_key(k: &str) -> Result<(), String> {
    if k.is_empty() || k.len() > limits::REGISTER_KEY_MAX {
        return Err(format!(
            "key: must be 1..={} bytes, got {}",
            limits::REGISTER_KEY_MAX,
            k.len()
        ));
    }
    Ok(())
}

/// Validates a command's fields. Run by the API before proposing (so the client gets
/// INVALID_ARGUMENT at once) and again here, so a bad entry can never corrupt state.
pub fn validate(cmd: &Command) -> Result<(), String> {
    if cmd.client_id.is_empty() || cmd.client_id.len() > limits::CLIENT_ID_MAX {
        return Err(format!(
            "header.client_id: must be 1..={} bytes, got {}",
            limits::CLIENT_ID_MAX,
            cmd.client_id.len()
        ));
    }
    if !cmd
        .client_id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
    {
        return Err("header.client_id: only [A-Za-z0-9._:-] allowed".into());
    }
    if cmd.seq == 0 {
        return Err("header.seq: must be > 0".into());
    }
    match &cmd.op {
        None => Err("op: missing".into()),
        Some(Op::RegisterPut(p)) => {
            check_register_key(&p.key)?;
            if p.value.len() > limits::REGISTER_VALUE_MAX {
                return Err(format!(
                    "value: at most {} bytes, got {}",
                    limits::REGISTER_VALUE_MAX,
                    p.value.len()
                ));
            }
            Ok(())
        }
        Some(Op::RegisterIncr(p)) => check_register_key(&p.key),
        Some(Op::Batch(_)) => Err("op: batch is leader-internal".into()),
        // The other operations validate their own fields inside apply (with field names).
        Some(_) => Ok(()),
    }
}

/// A register cell: value and the revision that last wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterValue {
    pub value: Vec<u8>,
    pub mod_revision: u64,
}

fn encode_register(v: &RegisterValue) -> Vec<u8> {
    let mut b = v.mod_revision.to_be_bytes().to_vec();
    b.extend_from_slice(&v.value);
    b
}

pub fn register_get(kv: &impl KvRead, key: &str) -> Result<Option<RegisterValue>, KvError> {
    let Some(b) = kv.get(Table::Register, key.as_bytes())? else {
        return Ok(None);
    };
    if b.len() < 8 {
        return Err(KvError("register cell shorter than 8 bytes".into()));
    }
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    Ok(Some(RegisterValue {
        value: b[8..].to_vec(),
        mod_revision: u64::from_be_bytes(a),
    }))
}

/// Applies one log entry's command (a leader batch applies each of its commands exactly as
/// its own entry would). Storage errors abort the whole apply batch (the node stops rather
/// than diverge); refusals are ordinary replies. Each operation runs inside an `Overlay`, so a
/// refusal part-way through leaves no partial state; its events and the revision bump are
/// written only if it succeeds and changed something.
///
/// Per entry, not per command: leader time, the session sweep, the root inode and the stored
/// revision are read and written once (a batch of 256 commands would otherwise rewrite the
/// same cells 256 times).
pub fn apply_command(kv: &mut impl KvWrite, cmd: &Command) -> Result<Reply, KvError> {
    let stored_rev = revision(kv)?;
    let stored_time = leader_time_ms(kv)?;
    let mut st = EntryState {
        revision: stored_rev,
        now: stored_time.max(cmd.leader_time_ms),
    };
    session::sweep(kv, st.now)?;
    ensure_root(kv)?;
    let reply = if let Some(Op::Batch(b)) = &cmd.op {
        // A leader-made group: each command applies exactly as its own entry would.
        let mut replies = Vec::with_capacity(b.commands.len());
        for c in &b.commands {
            if matches!(c.op, Some(Op::Batch(_))) {
                replies.push(refuse_reply(
                    st.revision,
                    ErrorCode::InvalidArgument,
                    "op: batches do not nest",
                ));
                continue;
            }
            st.now = st.now.max(c.leader_time_ms);
            replies.push(apply_one(kv, &mut st, c)?);
        }
        Reply {
            revision: st.revision,
            result: Some(reply::Result::Batch(ReplyBatch { replies })),
        }
    } else {
        apply_one(kv, &mut st, cmd)?
    };
    if st.now != stored_time {
        kv.put(Table::Meta, META_LEADER_TIME, &st.now.to_be_bytes())?;
    }
    if st.revision != stored_rev {
        kv.put(Table::Meta, META_REVISION, &st.revision.to_be_bytes())?;
    }
    Ok(reply)
}

/// What the commands of one entry share: the revision so far and the leader time.
struct EntryState {
    revision: u64,
    now: u64,
}

fn apply_one(kv: &mut impl KvWrite, st: &mut EntryState, cmd: &Command) -> Result<Reply, KvError> {
    let rev = st.revision;
    let now = st.now;
    if let Err(msg) = validate(cmd) {
        // Not recorded in the session table: a malformed header cannot key it reliably.
        return Ok(refuse_reply(rev, ErrorCode::InvalidArgument, msg));
    }
    let is_maintenance = matches!(cmd.op, Some(Op::Maintenance(_)));
    if !is_maintenance {
        match session::check(kv, &cmd.client_id, cmd.seq)? {
            Seen::Duplicate(bytes) => {
                return Reply::decode(bytes.as_slice())
                    .map_err(|e| KvError(format!("cached reply undecodable: {e}")));
            }
            Seen::Expired { newer } => {
                return Ok(refuse_reply(
                    rev,
                    ErrorCode::SessionExpired,
                    format!(
                        "header.seq {} of client {} is no longer remembered (seq {newer} took its \
                         place; the last {} replies per client are kept)",
                        cmd.seq,
                        cmd.client_id,
                        limits::SESSION_REPLIES_PER_CLIENT
                    ),
                ));
            }
            Seen::New => {}
        }
    }

    let mut ctx = ApplyCtx::new(rev + 1, now);
    let outcome = {
        let mut overlay = Overlay::new(kv);
        match dispatch(&mut overlay, &mut ctx, cmd) {
            Ok(result) => {
                overlay.commit()?;
                Ok(result)
            }
            Err(ApplyError::Refused(r)) => Err(r),
            Err(ApplyError::Storage(e)) => return Err(e),
        }
    };
    let reply = match outcome {
        Ok(result) if ctx.changed => {
            write_events(kv, &ctx.events)?;
            st.revision = ctx.revision;
            Reply {
                revision: ctx.revision,
                result: Some(result),
            }
        }
        Ok(result) => Reply {
            revision: rev,
            result: Some(result),
        },
        Err(r) => refuse_reply(rev, r.code, r.message),
    };
    if !is_maintenance {
        session::record(kv, &cmd.client_id, cmd.seq, now, &reply.encode_to_vec())?;
    }
    Ok(reply)
}

fn dispatch(kv: &mut impl KvWrite, ctx: &mut ApplyCtx, cmd: &Command) -> OpResult<reply::Result> {
    Ok(match &cmd.op {
        None => return Err(Refusal::invalid("op: missing").into()),
        Some(Op::RegisterPut(p)) => {
            let prev = register_get(kv, &p.key)?;
            let cell = RegisterValue {
                value: p.value.clone(),
                mod_revision: ctx.revision,
            };
            kv.put(Table::Register, p.key.as_bytes(), &encode_register(&cell))?;
            ctx.changed = true;
            reply::Result::RegisterPut(RegisterPutReply {
                prev_value: prev.map(|p| p.value),
            })
        }
        Some(Op::RegisterIncr(p)) => {
            let cur = match register_get(kv, &p.key)? {
                None => 0i64,
                Some(c) => match <[u8; 8]>::try_from(c.value.as_slice()) {
                    Ok(a) => i64::from_be_bytes(a),
                    Err(_) => {
                        return Err(Refusal::precondition(format!(
                            "key {}: value is not an 8-byte counter",
                            p.key
                        ))
                        .into())
                    }
                },
            };
            let value = cur
                .checked_add(p.delta)
                .ok_or_else(|| Refusal::precondition("counter overflow"))?;
            let cell = RegisterValue {
                value: value.to_be_bytes().to_vec(),
                mod_revision: ctx.revision,
            };
            kv.put(Table::Register, p.key.as_bytes(), &encode_register(&cell))?;
            ctx.changed = true;
            reply::Result::RegisterIncr(RegisterIncrReply { value })
        }
        Some(Op::Namespace(op)) => reply::Result::Namespace(super::namespace::apply(kv, ctx, op)?),
        Some(Op::Tags(op)) => reply::Result::Tags(super::tags::apply(kv, ctx, op)?),
        Some(Op::Topology(op)) => reply::Result::Topology(super::topology::apply(kv, ctx, op)?),
        Some(Op::Txn(op)) => reply::Result::Txn(super::txn::apply(kv, ctx, op)?),
        Some(Op::Maintenance(m)) => {
            reply::Result::Maintenance(super::watch::apply_maintenance(kv, ctx, m)?)
        }
        Some(Op::Moves(m)) => reply::Result::Moves(super::moves::apply(kv, ctx, m)?),
        Some(Op::Batch(_)) => return Err(Refusal::invalid("op: batch is leader-internal").into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sm::kv::MemKv;
    use metad_proto::raft::v1::{RegisterIncr, RegisterPut};

    fn incr(client: &str, seq: u64, delta: i64) -> Command {
        Command {
            client_id: client.into(),
            seq,
            leader_time_ms: 1000 + seq,
            op: Some(Op::RegisterIncr(RegisterIncr {
                key: "n".into(),
                delta,
            })),
        }
    }

    #[test]
    fn incr_applies_once_per_seq_and_bumps_revision() {
        let mut kv = MemKv::default();
        let r1 = apply_command(&mut kv, &incr("c", 1, 5)).expect("apply");
        assert_eq!(r1.revision, 1);
        let again = apply_command(&mut kv, &incr("c", 1, 5)).expect("apply");
        assert_eq!(again, r1, "a retry must return the first reply");
        assert_eq!(revision(&kv).expect("rev"), 1);
        let r2 = apply_command(&mut kv, &incr("c", 2, 5)).expect("apply");
        assert_eq!(
            r2.result,
            Some(reply::Result::RegisterIncr(RegisterIncrReply { value: 10 }))
        );
        assert_eq!(r2.revision, 2);
    }

    fn batch(cmds: Vec<Command>) -> Command {
        Command {
            client_id: "metad-leader-1".into(),
            seq: 1,
            leader_time_ms: 2000,
            op: Some(Op::Batch(metad_proto::raft::v1::CommandBatch {
                commands: cmds,
            })),
        }
    }

    #[test]
    fn a_batch_applies_each_command_as_its_own_entry() {
        let cmds = vec![
            incr("a", 1, 1),
            incr("b", 1, 2),
            incr("a", 1, 1),
            incr("a", 2, 3),
        ];
        // One by one.
        let mut one = MemKv::default();
        let singles: Vec<Reply> = cmds
            .iter()
            .map(|c| apply_command(&mut one, c).expect("apply"))
            .collect();
        // As one batch entry.
        let mut kv = MemKv::default();
        let r = apply_command(&mut kv, &batch(cmds.clone())).expect("apply");
        let Some(reply::Result::Batch(ReplyBatch { replies })) = r.result else {
            panic!("not a batch reply: {r:?}");
        };
        assert_eq!(replies, singles, "same replies as separate entries");
        assert_eq!(
            replies[2], replies[0],
            "a duplicate in the batch is deduplicated"
        );
        assert_eq!(
            replies[3].result,
            Some(reply::Result::RegisterIncr(RegisterIncrReply { value: 6 }))
        );
        assert_eq!(r.revision, 3);
        assert_eq!(revision(&kv).expect("rev"), 3);
        // A retry of a batched command, alone, gets its cached reply.
        let again = apply_command(&mut kv, &incr("b", 1, 2)).expect("apply");
        assert_eq!(again, replies[1]);
    }

    #[test]
    fn batches_do_not_nest_and_clients_cannot_send_one() {
        let mut kv = MemKv::default();
        let r = apply_command(&mut kv, &batch(vec![batch(vec![incr("a", 1, 1)])])).expect("apply");
        let Some(reply::Result::Batch(ReplyBatch { replies })) = r.result else {
            panic!("not a batch reply: {r:?}");
        };
        assert!(
            matches!(&replies[0].result, Some(reply::Result::Error(e)) if e.code == "INVALID_ARGUMENT"),
            "{replies:?}"
        );
        assert_eq!(revision(&kv).expect("rev"), 0, "nothing applied");
        assert!(validate(&batch(vec![incr("a", 1, 1)])).is_err());
    }

    #[test]
    fn refusals_change_nothing() {
        let mut kv = MemKv::default();
        let bad = Command {
            client_id: "c".into(),
            seq: 1,
            leader_time_ms: 1,
            op: Some(Op::RegisterPut(RegisterPut {
                key: "k".into(),
                value: vec![0; limits::REGISTER_VALUE_MAX + 1],
            })),
        };
        let before = {
            let mut k = kv.clone();
            k.put(Table::Meta, META_LEADER_TIME, &1u64.to_be_bytes())
                .expect("put");
            ensure_root(&mut k).expect("root");
            k
        };
        let r = apply_command(&mut kv, &bad).expect("apply");
        assert!(
            matches!(r.result, Some(reply::Result::Error(ref e)) if e.code == "INVALID_ARGUMENT")
        );
        assert_eq!(kv, before, "only leader time may advance");
    }

    #[test]
    fn put_reports_previous_value_and_mod_revision() {
        let mut kv = MemKv::default();
        let put = |seq, v: &[u8]| Command {
            client_id: "c".into(),
            seq,
            leader_time_ms: 5,
            op: Some(Op::RegisterPut(RegisterPut {
                key: "k".into(),
                value: v.to_vec(),
            })),
        };
        apply_command(&mut kv, &put(1, b"a")).expect("apply");
        let r = apply_command(&mut kv, &put(2, b"b")).expect("apply");
        assert_eq!(
            r.result,
            Some(reply::Result::RegisterPut(RegisterPutReply {
                prev_value: Some(b"a".to_vec())
            }))
        );
        let cell = register_get(&kv, "k").expect("get").expect("present");
        assert_eq!(
            cell,
            RegisterValue {
                value: b"b".to_vec(),
                mod_revision: 2
            }
        );
    }
}
