//! openraft's storage conformance suite against the redb log and state-machine stores, plus
//! metad's own durability checks on them.

mod common;

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

/// A snapshot install that fails part-way (here: a truncated snapshot file) leaves the previous
/// state machine intact and readable: the install is one redb transaction.
/// Receives `bytes` as a snapshot sent by a peer would arrive.
async fn receive(dst: &mut SmStore, bytes: &[u8]) -> Box<tokio::fs::File> {
    use openraft::storage::RaftStateMachine;
    use tokio::io::AsyncWriteExt;
    let mut recv = dst.begin_receiving_snapshot().await.expect("begin");
    recv.write_all(bytes).await.expect("write");
    recv.flush().await.expect("flush");
    recv
}

#[test]
fn failed_snapshot_install_keeps_the_old_state() {
    use metad::sm::{self, KvRead, Table};
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};

    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        // Source node: some state, then a snapshot of it.
        let src_dir = tempfile::tempdir().expect("tempdir");
        let (_log, mut src) = store::open(&DataDir::new(src_dir.path()))
            .await
            .expect("open");
        let cmd = common::register_put;
        src.apply(vec![cmd(1, "a"), cmd(2, "b")])
            .await
            .expect("apply");
        let snap = src
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build");

        // Target node with its own, different state.
        let dst_dir = tempfile::tempdir().expect("tempdir");
        let (_log2, mut dst) = store::open(&DataDir::new(dst_dir.path()))
            .await
            .expect("open");
        dst.apply(vec![cmd(1, "old")]).await.expect("apply");
        let before = dst.applied();

        // Receive a truncated copy of the snapshot and try to install it.
        let full = tokio::fs::read(
            src_dir
                .path()
                .join("snapshots")
                .join(format!("snap-{}.bin", snap.meta.snapshot_id)),
        )
        .await
        .expect("read snapshot");
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
        let b = dst.read(|kv| kv.get(Table::Register, b"b")).expect("read");
        assert!(b.is_none(), "nothing of the failed snapshot is visible");
        assert_eq!(dst.read(sm::revision).expect("rev"), before.revision);

        // The whole snapshot installs, and the received file becomes the snapshot this node
        // serves (renamed, not copied: no recv-* or *.tmp file is left behind).
        let recv = receive(&mut dst, &full).await;
        dst.install_snapshot(&snap.meta, recv)
            .await
            .expect("install");
        let b = dst.read(|kv| kv.get(Table::Register, b"b")).expect("read");
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
    });
}
