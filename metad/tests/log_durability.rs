//! The Raft log's fsync policy: everything openraft must find on disk after a crash (entries,
//! vote, truncation, purge) is fsynced before it is acknowledged; the committed index, which
//! only shortens recovery, rides in the next group and is written on close.

use std::time::{Duration, Instant};

use metad::store::{DataDir, LogStore};
use openraft::storage::RaftLogStorage;
use openraft::{CommittedLeaderId, LogId, Vote};

fn log_id(index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

/// Polls `f` every 10 ms until it returns `Some`, or panics after `limit` naming `what`.
fn poll<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn committed_index_saves_wake_no_writer_ride_the_next_group_and_survive_a_clean_close() {
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = DataDir::new(dir.path()).log_dir();
    rt.block_on(async {
        let mut log = LogStore::open(&path).expect("open");
        // A vote save is awaited and fsynced.
        log.save_vote(&Vote::new(1, 1)).await.expect("vote");
        let base = log.stats();
        assert!(base.transactions >= 1, "the vote was committed: {base:?}");

        for i in 1..=3 {
            log.save_committed(Some(log_id(i)))
                .await
                .expect("committed");
        }
        // Saves are not queued: the writer has nothing to do for them.
        assert_eq!(
            log.stats(),
            base,
            "committed-index saves made no write of their own"
        );
        assert_eq!(log.read_committed().await.expect("read"), Some(log_id(3)));

        // The next durable operation carries the latest one in its group: one fsync for both.
        log.save_vote(&Vote::new(2, 1)).await.expect("vote");
        let after = log.stats();
        assert_eq!(after.transactions, base.transactions + 1);
        assert_eq!(
            after.operations,
            base.operations + 2,
            "the vote's group also wrote the committed index: {base:?} -> {after:?}"
        );
        log.save_committed(Some(log_id(4)))
            .await
            .expect("committed");
    });
    // Closing flushes the last committed save. The writer thread releases the file when it
    // has drained its queue, so reopening is retried until then.
    let mut log = poll(
        Duration::from_secs(10),
        "the log file to be released",
        || LogStore::open(&path).ok(),
    );
    rt.block_on(async {
        assert_eq!(log.read_committed().await.expect("read"), Some(log_id(4)));
        assert_eq!(log.read_vote().await.expect("vote"), Some(Vote::new(2, 1)));
    });
}
