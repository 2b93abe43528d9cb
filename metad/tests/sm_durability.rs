//! The state machine's group durability: apply batches commit without fsync between durable
//! commits (at least every `DURABLE_EVERY`), a snapshot is only built from durable state, and
//! closing the store makes the tail durable, so a reopened store has every applied entry.

use metad::store::{self, DataDir};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};

fn put(seq: u64, key: &str) -> metad::types::Entry {
    metad::types::Entry {
        log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), seq),
        payload: openraft::EntryPayload::Normal(metad::types::LogCommand(
            metad_proto::raft::v1::Command {
                client_id: "t".into(),
                seq,
                leader_time_ms: 1,
                op: Some(metad_proto::raft::v1::command::Op::RegisterPut(
                    metad_proto::raft::v1::RegisterPut {
                        key: key.into(),
                        value: b"v".to_vec(),
                    },
                )),
            },
        )),
    }
}

#[test]
fn applies_between_durable_commits_are_flushed_by_snapshot_and_close() {
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let last = {
            let (_log, mut sm) = store::open(&DataDir::new(dir.path())).await.expect("open");
            // Batches within DURABLE_EVERY of the last durable commit are not fsynced. (Retried
            // a few times: on a loaded machine two applies may be DURABLE_EVERY apart.)
            let mut seq = 0;
            while !sm.has_unflushed() {
                seq += 1;
                assert!(seq < 50, "no apply batch ever skipped the fsync");
                sm.apply(vec![put(seq, "a")]).await.expect("apply");
            }
            let before = sm.durable_commits();

            // A snapshot makes what it covers durable first.
            let snap = sm
                .get_snapshot_builder()
                .await
                .build_snapshot()
                .await
                .expect("build");
            assert_eq!(snap.meta.last_log_id.map(|l| l.index), Some(seq));
            assert!(
                !sm.has_unflushed(),
                "a snapshot is built from durable state"
            );
            assert!(sm.durable_commits() > before);

            // After DURABLE_EVERY, the next batch is itself durable.
            std::thread::sleep(metad::store::DURABLE_EVERY);
            seq += 1;
            sm.apply(vec![put(seq, "c")]).await.expect("apply");
            assert!(
                !sm.has_unflushed(),
                "a batch after DURABLE_EVERY is fsynced"
            );

            // A tail without fsync, then the store is closed.
            while !sm.has_unflushed() {
                seq += 1;
                assert!(seq < 200, "no apply batch ever skipped the fsync");
                sm.apply(vec![put(seq, "d")]).await.expect("apply");
            }
            seq
        };
        // Only the state machine is reopened (the log's writer thread may still hold its file).
        let d = DataDir::new(dir.path());
        let mut sm = store::SmStore::open(&d.sm_db(), &d.snapshots()).expect("reopen");
        let (applied, _) = sm.applied_state().await.expect("applied");
        assert_eq!(
            applied.map(|l| l.index),
            Some(last),
            "closing flushed the tail"
        );
        assert!(!sm.has_unflushed());
    });
}
