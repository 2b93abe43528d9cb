//! The state machine's group durability: apply batches commit without fsync between durable
//! commits (at least every `DURABLE_EVERY`), a snapshot is only built from durable state, and
//! closing the store makes the tail durable, so a reopened store has every applied entry.

mod common;

use metad::store::{self, DataDir};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};

use common::register_put as put;

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

            // Once DURABLE_EVERY has passed, an apply batch is itself durable (and clears the
            // unflushed mark). Applies go on until one is, within a deadline.
            let durable_before = sm.durable_commits();
            let deadline = std::time::Instant::now() + 10 * metad::store::DURABLE_EVERY;
            while sm.durable_commits() == durable_before {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no apply batch was durable within 10 x DURABLE_EVERY"
                );
                seq += 1;
                sm.apply(vec![put(seq, "c")]).await.expect("apply");
            }
            assert!(
                !sm.has_unflushed(),
                "the durable batch left nothing unflushed"
            );

            // A tail without fsync, then the store is closed.
            let tail_from = seq;
            while !sm.has_unflushed() {
                seq += 1;
                assert!(
                    seq - tail_from < 50,
                    "no apply batch ever skipped the fsync"
                );
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

/// Set in the child process of `a_crashed_state_machine_reopens_without_a_full_repair`.
const CRASH_DIR_ENV: &str = "METAD_TEST_SM_CRASH_DIR";

/// Child half of the crash test: applies entries with a durable commit among them, leaves a
/// tail without fsync, and aborts (no destructors run: like kill -9).
fn crash_child(dir: &std::path::Path) -> ! {
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        let d = DataDir::new(dir);
        std::fs::create_dir_all(d.snapshots()).expect("mkdir");
        let mut sm = store::SmStore::open(&d.sm_db(), &d.snapshots()).expect("open");
        for seq in 1..=200 {
            sm.apply(vec![put(seq, &format!("k{}", seq % 50))])
                .await
                .expect("apply");
            if seq == 100 {
                sm.flush().expect("flush");
            }
        }
        assert!(
            sm.has_unflushed(),
            "the tail after the flush is not durable"
        );
        std::process::abort();
    })
}

#[test]
fn a_crashed_state_machine_reopens_without_a_full_repair() {
    if let Some(dir) = std::env::var_os(CRASH_DIR_ENV) {
        crash_child(std::path::Path::new(&dir));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let status = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--exact",
            "a_crashed_state_machine_reopens_without_a_full_repair",
            "--nocapture",
        ])
        .env(CRASH_DIR_ENV, dir.path())
        .status()
        .expect("run the child");
    assert!(!status.success(), "the child aborts: {status:?}");

    let repairs_before = store::full_repairs();
    let d = DataDir::new(dir.path());
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        let mut sm = store::SmStore::open(&d.sm_db(), &d.snapshots()).expect("reopen");
        assert_eq!(
            store::full_repairs(),
            repairs_before,
            "the last durable commit recorded the allocator state (quick repair)"
        );
        let (applied, _) = sm.applied_state().await.expect("applied");
        let applied = applied.map(|l| l.index).unwrap_or(0);
        assert!(
            (100..=200).contains(&applied),
            "everything up to the flush survived the crash, got {applied}"
        );
        // The store is usable: the lost tail is applied again, as openraft would from the log.
        let next: Vec<_> = (applied + 1..=200).map(|s| put(s, "again")).collect();
        sm.apply(next).await.expect("apply after reopen");
        let (applied, _) = sm.applied_state().await.expect("applied");
        assert_eq!(applied.map(|l| l.index), Some(200));
    });
}
