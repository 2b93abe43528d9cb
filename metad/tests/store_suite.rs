//! openraft's storage conformance suite against the redb log and state-machine stores, plus
//! metad's own durability checks on them.

mod common;

use metad::store::install::SnapFile;
use metad::store::{self, DataDir, LogStore, SmStore};
use metad::types::{StorageError, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;

struct RedbBuilder;

impl StoreBuilder<TypeConfig, LogStore, SmStore, TempDir> for RedbBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, SmStore), StorageError> {
        let err = |e: String| -> StorageError {
            openraft::StorageIOError::<u64>::write(openraft::AnyError::error(e)).into()
        };
        let dir = tempfile::tempdir().map_err(|e| err(e.to_string()))?;
        let (log, sm) = store::open(&DataDir::new(dir.path()))
            .await
            .map_err(|e| err(e.to_string()))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_suite_passes_on_redb_stores() {
    if let Err(e) = Suite::test_all(RedbBuilder) {
        panic!("openraft storage suite failed: {e}");
    }
}

#[test]
fn format_version_mismatch_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = DataDir::new(dir.path());
    store::stamp_format_version(&d.sm_db(), 99).expect("stamp");
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let err = match rt.block_on(store::open(&d)) {
        Ok(_) => panic!("opening a version-99 data dir must fail"),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(msg.contains("format version 99"), "{msg}");
    assert!(msg.contains("sm.redb"), "{msg}");
}

/// Receives `bytes` as a snapshot sent by a peer arrives: openraft writes each chunk into the
/// file `begin_receiving_snapshot` returned, then shuts it down. `resend` writes that chunk a
/// second time (seek back, write again), as after a lost reply.
async fn receive_chunks(dst: &mut SmStore, bytes: &[u8], resend: Option<usize>) -> Box<SnapFile> {
    use openraft::storage::RaftStateMachine;
    use tokio::io::{AsyncSeekExt, AsyncWriteExt};
    const CHUNK: usize = 4096;
    let mut recv = dst.begin_receiving_snapshot().await.expect("begin");
    for (i, c) in bytes.chunks(CHUNK).enumerate() {
        recv.write_all(c).await.expect("write");
        if resend == Some(i) {
            let at = (i * CHUNK) as u64;
            recv.seek(std::io::SeekFrom::Start(at)).await.expect("seek");
            recv.write_all(c).await.expect("write again");
        }
    }
    recv.shutdown().await.expect("shutdown");
    recv
}

async fn receive(dst: &mut SmStore, bytes: &[u8]) -> Box<SnapFile> {
    receive_chunks(dst, bytes, None).await
}

/// Files a streamed install may leave in a data dir if it did not clean up.
fn install_files(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("sm-install-"))
        .collect()
}

/// Polls `done` until it holds; fails after 10 s naming `what`.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// A source store with `n` registers, its snapshot, and the snapshot's bytes.
async fn source_snapshot(
    n: u64,
) -> (
    tempfile::TempDir,
    SmStore,
    openraft::storage::Snapshot<TypeConfig>,
    Vec<u8>,
) {
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
    let dir = tempfile::tempdir().expect("tempdir");
    let (_log, mut src) = store::open(&DataDir::new(dir.path())).await.expect("open");
    let entries = (1..=n)
        .map(|i| common::register_put(i, &format!("k{i}")))
        .collect::<Vec<_>>();
    src.apply(entries).await.expect("apply");
    let snap = src
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    let mut bytes = Vec::new();
    let mut served = src
        .get_current_snapshot()
        .await
        .expect("current")
        .expect("the built snapshot is served");
    tokio::io::AsyncReadExt::read_to_end(&mut *served.snapshot, &mut bytes)
        .await
        .expect("read snapshot");
    (dir, src, snap, bytes)
}

/// A receiving node with state of its own (register "old"), in `dir`.
async fn target_with_old_state(dir: &std::path::Path) -> (LogStore, SmStore) {
    use openraft::storage::RaftStateMachine;
    let (log, mut dst) = store::open(&DataDir::new(dir)).await.expect("open");
    dst.apply(vec![common::register_put(1, "old")])
        .await
        .expect("apply");
    (log, dst)
}

/// A snapshot install that fails part-way (here: a truncated snapshot file) leaves the previous
/// state machine intact and readable: the install is one redb transaction.
#[test]
fn failed_snapshot_install_keeps_the_old_state() {
    use metad::sm::{self, KvRead, Table};
    use openraft::storage::RaftStateMachine;

    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        // Source node: some state ("k1", "k2"), then a snapshot of it.
        let (_src_dir, _src, snap, full) = source_snapshot(2).await;

        // Target node with its own, different state.
        let dst_dir = tempfile::tempdir().expect("tempdir");
        let (_log2, mut dst) = target_with_old_state(dst_dir.path()).await;
        let before = dst.applied();

        // Receive a truncated copy of the snapshot and try to install it.
        let recv = receive(&mut dst, &full[..full.len() / 2]).await;
        let res = dst.install_snapshot(&snap.meta, recv).await;
        assert!(res.is_err(), "a truncated snapshot must not install");

        assert_eq!(dst.applied(), before, "applied state unchanged");
        let old = dst
            .read(|kv| kv.get(Table::Register, b"old"))
            .expect("read");
        assert!(
            old.is_some(),
            "old state still readable after the failed install"
        );
        let b = dst.read(|kv| kv.get(Table::Register, b"k2")).expect("read");
        assert!(b.is_none(), "nothing of the failed snapshot is visible");
        assert_eq!(dst.read(sm::revision).expect("rev"), before.revision);

        // The whole snapshot installs, and the received file becomes the snapshot this node
        // serves (renamed, not copied: no recv-* or *.tmp file is left behind).
        let recv = receive(&mut dst, &full).await;
        dst.install_snapshot(&snap.meta, recv)
            .await
            .expect("install");
        let b = dst.read(|kv| kv.get(Table::Register, b"k2")).expect("read");
        assert!(b.is_some(), "the installed state is visible");
        let mut cur = dst
            .get_current_snapshot()
            .await
            .expect("current")
            .expect("a snapshot to serve");
        assert_eq!(cur.meta, snap.meta);
        let mut served = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut *cur.snapshot, &mut served)
            .await
            .expect("read served");
        assert_eq!(served, full, "serves the bytes it received");
        let names: Vec<String> = std::fs::read_dir(dst_dir.path().join("snapshots"))
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names
                .iter()
                .all(|n| !n.starts_with("recv-") && !n.ends_with(".tmp")),
            "{names:?}"
        );
        // It was loaded while it arrived and swapped in; no loading file is left, the failed
        // attempt's included.
        assert_eq!(dst.streamed_installs(), 1, "the full snapshot streams in");
        assert_eq!(install_files(dst_dir.path()), Vec::<String>::new());

        // The swapped-in file is the one a restart opens.
        let applied = dst.applied();
        drop(dst);
        let d = DataDir::new(dst_dir.path());
        let dst = SmStore::open(&d.sm_db(), &d.snapshots()).expect("reopen");
        assert_eq!(dst.applied(), applied, "applied state survives a restart");
        let b = dst.read(|kv| kv.get(Table::Register, b"k2")).expect("read");
        assert!(b.is_some(), "the installed state is what a restart reads");
        let old = dst
            .read(|kv| kv.get(Table::Register, b"old"))
            .expect("read");
        assert!(old.is_none(), "the replaced state is gone");
    });
}

/// A transfer the leader abandons (the receiving file dropped, as when a newer snapshot's
/// stream replaces it) stops its loader and deletes the half-loaded file; the live state is
/// untouched.
#[test]
fn abandoned_transfer_leaves_nothing_behind() {
    use metad::sm::{KvRead, Table};
    use openraft::storage::RaftStateMachine;
    use tokio::io::AsyncWriteExt;

    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        let (_src_dir, _src, _snap, full) = source_snapshot(500).await;
        let dst_dir = tempfile::tempdir().expect("tempdir");
        let (_log, mut dst) = target_with_old_state(dst_dir.path()).await;
        let before = dst.applied();

        let mut recv = dst.begin_receiving_snapshot().await.expect("begin");
        recv.write_all(&full[..full.len() / 2])
            .await
            .expect("write");
        recv.flush().await.expect("flush");
        // The loading thread creates its file as it starts, and deletes it once abandoned.
        wait_until("a loading file appears", || {
            !install_files(dst_dir.path()).is_empty()
        })
        .await;
        drop(recv);
        wait_until("the half-loaded file is deleted", || {
            install_files(dst_dir.path()).is_empty()
        })
        .await;
        assert_eq!(dst.applied(), before);
        let old = dst
            .read(|kv| kv.get(Table::Register, b"old"))
            .expect("read");
        assert!(old.is_some(), "live state untouched");
        assert_eq!(dst.streamed_installs(), 0);
    });
}

/// A chunk written twice (openraft seeks back and rewrites it when the leader resends) does not
/// disturb the loader: the install still streams and holds exactly the source's rows.
#[test]
fn a_resent_chunk_still_streams() {
    use metad::sm::{KvRead, Table};
    use openraft::storage::RaftStateMachine;

    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        let (_src_dir, src, snap, full) = source_snapshot(2000).await;
        assert!(
            full.len() > 3 * 4096,
            "several chunks: {} bytes",
            full.len()
        );
        let dst_dir = tempfile::tempdir().expect("tempdir");
        let (_log, mut dst) = store::open(&DataDir::new(dst_dir.path()))
            .await
            .expect("open");
        let recv = receive_chunks(&mut dst, &full, Some(1)).await;
        dst.install_snapshot(&snap.meta, recv)
            .await
            .expect("install");
        assert_eq!(dst.streamed_installs(), 1);
        assert_eq!(dst.applied(), src.applied());
        for k in ["k1", "k1000", "k2000"] {
            let v = dst
                .read(|kv| kv.get(Table::Register, k.as_bytes()))
                .expect("read");
            assert!(v.is_some(), "{k} installed");
        }
        assert_eq!(install_files(dst_dir.path()), Vec::<String>::new());
    });
}
