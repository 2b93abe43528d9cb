//! The Raft log's segment files (`store::wal` under `store::log`): everything openraft saved
//! is back after a reopen; a write torn by a crash ends the log at the last whole record;
//! rolled-over segments emptied by a purge are deleted without losing the vote or the purge
//! point; damage before the last segment refuses to open. (openraft's own conformance suite
//! runs in store_suite.rs.)

use std::path::{Path, PathBuf};

use metad::store::{LogStore, StoreError};
use metad::types::{Entry, LogCommand};
use metad_proto::raft::v1::{command::Op, Command, RegisterPut};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::RaftLogReader;
use openraft::{CommittedLeaderId, EntryPayload, LogId, Vote};

fn id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

/// An entry whose value is `size` bytes (segment roll-over tests want big ones).
fn entry(term: u64, index: u64, size: usize) -> Entry {
    Entry {
        log_id: id(term, index),
        payload: EntryPayload::Normal(LogCommand(Command {
            client_id: "t".into(),
            seq: index,
            leader_time_ms: 1,
            op: Some(Op::RegisterPut(RegisterPut {
                key: format!("k{index}"),
                value: vec![b'v'; size],
            })),
        })),
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("rt")
}

/// Reopens the log once the previous store's writer thread has let go of it (it exits when
/// the last handle is dropped; nothing else holds the files).
fn reopen(dir: &Path, segment_bytes: u64) -> LogStore {
    open_when_unlocked(dir, segment_bytes).expect("reopen")
}

fn open_when_unlocked(dir: &Path, segment_bytes: u64) -> Result<LogStore, StoreError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match LogStore::open_with_segment_bytes(dir, segment_bytes) {
            Err(StoreError::Locked(_)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5))
            }
            other => return other,
        }
    }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    v.sort();
    v
}

async fn indexes(log: &mut LogStore, range: std::ops::Range<u64>) -> Vec<(u64, u64)> {
    log.try_get_log_entries(range)
        .await
        .expect("read")
        .iter()
        .map(|e| (e.log_id.leader_id.term, e.log_id.index))
        .collect()
}

#[test]
fn vote_entries_truncation_and_purge_survive_a_reopen() {
    let rt = rt();
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("raft-log");
    rt.block_on(async {
        let mut log = LogStore::open(&path).expect("open");
        log.save_vote(&Vote::new(2, 1)).await.expect("vote");
        log.blocking_append((1..=10).map(|i| entry(1, i, 10)))
            .await
            .expect("append");
        // A follower's conflict: 8.. replaced by entries of term 2.
        log.truncate(id(1, 8)).await.expect("truncate");
        log.blocking_append((8..=12).map(|i| entry(2, i, 10)))
            .await
            .expect("append");
        log.purge(id(1, 3)).await.expect("purge");
        log.save_committed(Some(id(2, 9))).await.expect("committed");
        log.save_vote(&Vote::new(3, 2)).await.expect("vote");
    });
    let mut log = reopen(&path, metad::store::wal::SEGMENT_BYTES);
    rt.block_on(async {
        assert_eq!(log.read_vote().await.expect("vote"), Some(Vote::new(3, 2)));
        assert_eq!(
            log.read_committed().await.expect("committed"),
            Some(id(2, 9)),
            "written with the vote's group"
        );
        let st = log.get_log_state().await.expect("state");
        assert_eq!(st.last_purged_log_id, Some(id(1, 3)));
        assert_eq!(st.last_log_id, Some(id(2, 12)));
        let mut want: Vec<(u64, u64)> = (4..=7).map(|i| (1, i)).collect();
        want.extend((8..=12).map(|i| (2, i)));
        assert_eq!(indexes(&mut log, 0..100).await, want);
        // Appends go on after the reopen.
        log.blocking_append([entry(2, 13, 10)])
            .await
            .expect("append");
        assert_eq!(indexes(&mut log, 13..14).await, vec![(2, 13)]);
    });
}

#[test]
fn a_torn_last_record_ends_the_log_and_appends_continue() {
    let rt = rt();
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("raft-log");
    rt.block_on(async {
        let mut log = LogStore::open(&path).expect("open");
        log.blocking_append((1..=5).map(|i| entry(1, i, 100)))
            .await
            .expect("append");
    });
    // Tear the last record: cut its last bytes, as a crash in the middle of a write would.
    let seg = segments(&path).pop().expect("a segment");
    let data = std::fs::read(&seg).expect("read");
    let end = data.iter().rposition(|&b| b != 0).expect("records") + 1;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open segment");
    f.set_len((end - 20) as u64).expect("cut");
    // Garbage where the rest of the record was, then the sparse tail again.
    use std::os::unix::fs::FileExt;
    f.write_all_at(&[0xAB; 7], (end - 20) as u64)
        .expect("garbage");
    f.set_len(data.len() as u64).expect("extend");
    drop(f);

    let mut log = reopen(&path, metad::store::wal::SEGMENT_BYTES);
    rt.block_on(async {
        let st = log.get_log_state().await.expect("state");
        assert_eq!(st.last_log_id, Some(id(1, 4)), "entry 5 was torn");
        log.blocking_append([entry(2, 5, 100), entry(2, 6, 100)])
            .await
            .expect("append");
    });
    drop(log);
    let mut log = reopen(&path, metad::store::wal::SEGMENT_BYTES);
    rt.block_on(async {
        let mut want: Vec<(u64, u64)> = (1..=4).map(|i| (1, i)).collect();
        want.extend([(2, 5), (2, 6)]);
        assert_eq!(
            indexes(&mut log, 0..100).await,
            want,
            "no trace of the torn record, the new ones whole"
        );
    });
}

/// Small segments, so that a test rolls over many of them.
const SEG: u64 = 64 << 10;

/// Appends entries 1..=n of `term`, ~2 KiB each, one flush per entry.
async fn append_2k(log: &mut LogStore, term: u64, n: u64) {
    for i in 1..=n {
        log.blocking_append([entry(term, i, 2000)])
            .await
            .expect("append");
    }
}

#[test]
fn purged_segments_are_deleted_and_the_vote_outlives_them() {
    let rt = rt();
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("raft-log");
    rt.block_on(async {
        let mut log = LogStore::open_with_segment_bytes(&path, SEG).expect("open");
        log.save_vote(&Vote::new(5, 1)).await.expect("vote");
        // ~2 KiB entries: about 30 per 64 KiB segment.
        append_2k(&mut log, 5, 200).await;
        assert!(
            segments(&path).len() >= 5,
            "rolled over: {:?}",
            segments(&path)
        );
        let before = segments(&path).len();
        log.purge(id(5, 150)).await.expect("purge");
        let after = segments(&path).len();
        assert!(
            after <= before - 3,
            "segments wholly at or below 150 deleted: {before} -> {after}"
        );
    });
    let mut log = reopen(&path, SEG);
    rt.block_on(async {
        assert_eq!(log.read_vote().await.expect("vote"), Some(Vote::new(5, 1)));
        let st = log.get_log_state().await.expect("state");
        assert_eq!(st.last_purged_log_id, Some(id(5, 150)));
        assert_eq!(st.last_log_id, Some(id(5, 200)));
        let got = indexes(&mut log, 0..1000).await;
        assert_eq!(got.first(), Some(&(5, 151)));
        assert_eq!(got.len(), 50);
    });
}

#[test]
fn damage_before_the_last_segment_refuses_to_open() {
    let rt = rt();
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("raft-log");
    rt.block_on(async {
        let mut log = LogStore::open_with_segment_bytes(&path, SEG).expect("open");
        append_2k(&mut log, 1, 100).await;
    });
    let first = segments(&path).into_iter().next().expect("segments");
    let mut data = std::fs::read(&first).expect("read");
    data[5000] ^= 0xFF; // inside an entry's bytes
    std::fs::write(&first, &data).expect("write");
    let err = match open_when_unlocked(&path, SEG) {
        Ok(_) => panic!("a damaged segment must not open"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(
        err.contains(
            &first
                .file_name()
                .expect("name")
                .to_string_lossy()
                .to_string()
        ),
        "names the file: {err}"
    );
}

#[test]
fn a_second_process_cannot_open_the_same_log() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("raft-log");
    let _first = LogStore::open(&path).expect("open");
    match LogStore::open(&path) {
        Err(StoreError::Locked(p)) => assert!(p.starts_with(&path), "{p:?}"),
        Err(e) => panic!("expected LOCKED, got {e}"),
        Ok(_) => panic!("a second open of a log in use must fail"),
    }
}
