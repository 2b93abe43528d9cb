//! Unit tests of `SmStore` (apply, read views, applied-state publication, apply stats).

use super::*;
use crate::sm::KvRead;
use metad_proto::raft::v1::{
    command::Op, reply, Command, CommandBatch, Maintenance, RegisterPut, Reply,
};

fn cmd(op: Op) -> Command {
    Command {
        client_id: "c".into(),
        seq: 1,
        leader_time_ms: 1,
        op: Some(op),
    }
}

fn log_id(index: u64) -> LogId {
    openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index)
}

/// A membership entry (node 1 alone) at `index`.
fn membership_at(index: u64) -> Entry {
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Membership(openraft::Membership::new(
            vec![std::collections::BTreeSet::from([1])],
            None,
        )),
    }
}

fn entry(op: Op) -> Entry {
    Entry {
        log_id: log_id(1),
        payload: EntryPayload::Normal(crate::types::LogCommand(cmd(op))),
    }
}

fn put(bytes: usize) -> Op {
    Op::RegisterPut(RegisterPut {
        key: "k".into(),
        value: vec![0; bytes],
    })
}

#[test]
fn only_few_small_bounded_commands_apply_inline() {
    assert!(inline_ok(&[entry(put(100))]), "one small write");
    assert!(inline_ok(&[entry(put(100)), entry(put(100))]));
    assert!(
        !inline_ok(&[entry(put(10)), entry(put(10)), entry(put(10))]),
        "three entries"
    );
    assert!(
        !inline_ok(&[entry(put(INLINE_APPLY_BYTES))]),
        "over the byte budget"
    );
    assert!(
        !inline_ok(&[entry(Op::Maintenance(Maintenance {
            expire_agent_leases: true,
            ..Default::default()
        }))]),
        "maintenance can touch many rows"
    );
    let small_batch = Op::Batch(CommandBatch {
        commands: vec![cmd(put(100)), cmd(put(100))],
    });
    assert!(inline_ok(&[entry(small_batch)]));
    let mixed_batch = Op::Batch(CommandBatch {
        commands: vec![cmd(put(100)), cmd(Op::Maintenance(Maintenance::default()))],
    });
    assert!(!inline_ok(&[entry(mixed_batch)]));
    let nested = Op::Batch(CommandBatch {
        commands: vec![cmd(Op::Batch(CommandBatch {
            commands: vec![cmd(put(10))],
        }))],
    });
    assert!(!inline_ok(&[entry(nested)]), "batches are never nested");
    assert!(!inline_ok(&[membership_at(2)]));
}

fn write_at(index: u64, value: u8) -> Entry {
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(crate::types::LogCommand(Command {
            seq: index,
            ..cmd(Op::RegisterPut(RegisterPut {
                key: "k".into(),
                value: vec![value],
            }))
        })),
    }
}

fn open_store() -> (tempfile::TempDir, SmStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SmStore::open(&dir.path().join("sm.redb"), dir.path()).expect("open");
    (dir, store)
}

fn shared_view(store: &SmStore) -> Option<Arc<View>> {
    store.inner.view.lock().expect("lock").clone()
}

fn read_k(store: &SmStore) -> (Option<Vec<u8>>, u64) {
    store
        .read(|kv| {
            let v = sm::apply::register_get(kv, "k")?.map(|r| r.value);
            Ok((v, kv.revision()?))
        })
        .expect("read")
}

/// Reads share one view while nothing is applied; an apply drops it, so the next read
/// sees the write.
#[test]
fn reads_share_a_view_until_an_apply_drops_it() {
    let (_dir, store) = open_store();
    assert_eq!(read_k(&store), (None, 0));
    let first = shared_view(&store).expect("a read leaves its view for the next");
    read_k(&store);
    let second = shared_view(&store).expect("view");
    assert!(
        Arc::ptr_eq(&first, &second),
        "the second read reused the view"
    );
    drop((first, second));

    store
        .apply_blocking(vec![write_at(1, 7)], false)
        .expect("apply");
    assert!(shared_view(&store).is_none(), "the apply dropped the view");
    let (value, revision) = read_k(&store);
    assert_eq!(value, Some(vec![7]));
    assert_eq!(revision, store.subscribe().borrow().revision);
    assert!(revision > 0);
}

/// A reader that has seen an applied state never reads an older one, while applies and
/// reads race on other threads (what a read barrier relies on).
#[test]
fn a_read_after_an_applied_state_sees_at_least_that_state() {
    let (_dir, store) = open_store();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let readers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let mut checked = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let seen = store.subscribe().borrow().revision;
                        let (_, read) = read_k(&store);
                        assert!(read >= seen, "read revision {read} < applied {seen}");
                        checked += 1;
                    }
                    checked
                })
            })
            .collect();
        for i in 1..=300 {
            store
                .apply_blocking(vec![write_at(i, i as u8)], false)
                .expect("apply");
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            assert!(r.join().expect("reader") > 0);
        }
    });
    assert_eq!(read_k(&store).0, Some(vec![300u64 as u8]));
}

/// Apply stats count calls, each command of a leader batch, and the time spent; a blank
/// entry carries no command.
#[test]
fn apply_stats_count_batches_commands_and_time() {
    let (_dir, store) = open_store();
    assert_eq!(store.apply_stats(), ApplyStats::default());
    // A leader batch of three writes as entry 1 (seqs apart from `write_at`'s).
    let batch = Op::Batch(CommandBatch {
        commands: (101..=103)
            .map(|seq| Command {
                seq,
                ..cmd(put(10))
            })
            .collect(),
    });
    store
        .apply_blocking(vec![entry(batch)], false)
        .expect("apply");
    let blank = Entry {
        log_id: log_id(3),
        payload: EntryPayload::Blank,
    };
    store
        .apply_blocking(vec![write_at(2, 1), blank], false)
        .expect("apply");
    let s = store.apply_stats();
    assert_eq!((s.batches, s.commands), (2, 4), "{s:?}");
    assert!(s.cpu_ns > 0 && s.wall_ns > 0, "{s:?}");
    assert_eq!(store.applied().revision, 4, "all four commands applied");
}

/// The measurement-only apply stand-ins (`store::apply_floor`) answer each tag command as
/// applied without touching the real state; `OneRow` writes one row per command.
#[test]
fn apply_floor_answers_tag_ops_without_applying_them() {
    use metad_proto::v1::TagOp;
    let tag = || Op::Tags(TagOp::default());
    let batch = entry(Op::Batch(CommandBatch {
        commands: vec![cmd(tag()), cmd(tag())],
    }));
    let entries = vec![batch, write_at(2, 1)];
    assert!(!apply_floor::only_tag_ops(&entries), "a register put");
    assert!(
        !apply_floor::only_tag_ops(&[membership_at(3)]),
        "membership"
    );
    let entries = vec![entries[0].clone(), entry(tag())];
    assert!(apply_floor::only_tag_ops(&entries));

    let (_dir, store) = open_store();
    let tag_rows = |store: &SmStore| {
        store
            .read(|kv| Ok(kv.range(sm::Table::Tags, b"", None, 100)?.len()))
            .expect("read")
    };
    let replies = store
        .apply_floor(apply_floor::Floor::Null, &entries)
        .expect("null apply");
    let revisions = |r: &Reply| match &r.result {
        Some(reply::Result::Batch(b)) => b.replies.iter().map(|r| r.revision).collect(),
        Some(reply::Result::Tags(_)) => vec![r.revision],
        other => panic!("unexpected reply {other:?}"),
    };
    let got: Vec<u64> = replies.iter().flat_map(|r| revisions(&r.0)).collect();
    assert_eq!(got.len(), 3, "one reply per command: {got:?}");
    assert!(got.windows(2).all(|w| w[1] == w[0] + 1), "{got:?}");
    assert_eq!(
        store.applied().revision,
        got[2],
        "published what it answered"
    );
    assert_eq!(tag_rows(&store), 0, "null apply writes nothing");
    let real = store.read(|kv| kv.revision()).expect("read");
    assert_eq!(real, 0, "the real revision did not move");

    store
        .apply_floor(apply_floor::Floor::OneRow, &entries)
        .expect("one-row apply");
    assert_eq!(tag_rows(&store), 3, "one row per command");
}
