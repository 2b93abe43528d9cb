//! Compatibility of the state machine's on-disk formats with files written by an older metad.
//!
//! `fixtures/sm-v3/` comes from the round-11 release binary (state-machine format 3: one redb
//! table per state-machine table), run as a one-node cluster with `--snapshot-after-entries 1`:
//! `mkdir -p /data/train`, `touch` a.bin and b.bin, `tag set /data/train dataset=imagenet
//! --inherit`, `tag set a.bin stage=clean`, a site, a silo, an instance of a.bin, `rm b.bin`,
//! `ln -s /data/train/a.bin /data/link`, then a clean stop. `sm.redb.gz` is its state machine;
//! `snap-12-1-1.*` is the snapshot it built of that same state (log index 12, revision 10).

use std::path::{Path, PathBuf};

use metad::sm::model::resolve;
use metad::store::SmStore;
use metad::types::{codec, SnapshotMeta};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/sm-v3")
        .join(name)
}

fn read_fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// Writes the format-3 `sm.redb` of the fixture into `dir`.
fn unpack_v3(dir: &Path) -> PathBuf {
    use std::io::Read;
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(read_fixture("sm.redb.gz").as_slice())
        .read_to_end(&mut bytes)
        .expect("gunzip sm.redb");
    let path = dir.join("sm.redb");
    std::fs::write(&path, bytes).expect("write sm.redb");
    path
}

/// The fixture's namespace, read through the store: a.bin and the link exist, b.bin is gone.
fn assert_fixture_namespace(sm: &SmStore) {
    let (a, b, link) = sm
        .read(|kv| {
            let get =
                |p: &str| resolve(kv, "path", p).map_err(|e| metad::sm::KvError(format!("{e:?}")));
            Ok((
                get("/data/train/a.bin")?,
                get("/data/train/b.bin")?,
                get("/data/link")?,
            ))
        })
        .expect("read");
    assert_eq!(a.map(|i| i.ino), Some(4), "a.bin");
    assert!(b.is_none(), "b.bin was removed");
    assert_eq!(link.map(|i| i.ino), Some(6), "the symlink");
    assert_eq!(sm.applied().revision, 10);
}

/// The bytes of the snapshot `sm` builds now.
async fn snapshot_bytes(sm: &mut SmStore) -> Vec<u8> {
    let mut snap = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build snapshot");
    let mut bytes = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut *snap.snapshot, &mut bytes)
        .await
        .expect("read snapshot");
    bytes
}

/// The redb tables in the file at `path` (opened after the store is closed).
fn redb_tables(path: &Path) -> Vec<String> {
    use redb::{ReadableDatabase, TableHandle};
    let db = redb::Database::open(path).expect("open redb");
    let r = db.begin_read().expect("read");
    let mut names: Vec<String> = r
        .list_tables()
        .expect("list")
        .map(|t| t.name().to_string())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_3_state_machine_is_converted_at_open_and_keeps_every_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = unpack_v3(dir.path());
    let snaps = dir.path().join("snapshots");
    std::fs::create_dir_all(&snaps).expect("mkdir");

    let mut sm = SmStore::open(&path, &snaps).expect("open converts format 3");
    let (applied, membership) = sm.applied_state().await.expect("applied state");
    assert_eq!(applied.map(|l| l.index), Some(12), "last applied survives");
    assert_eq!(
        membership.membership().voter_ids().collect::<Vec<_>>(),
        vec![1],
        "membership survives"
    );
    assert_fixture_namespace(&sm);
    // Every row, byte for byte: the snapshot of the converted file is the one the old binary
    // built of the same state.
    assert_eq!(
        snapshot_bytes(&mut sm).await,
        read_fixture("snap-12-1-1.bin")
    );
    drop(sm);

    // Converted in place: the small tables' redb tables are gone (the large ones keep theirs),
    // and the next open reads the file as it is.
    assert_eq!(
        redb_tables(&path),
        [
            "format",
            "sm",
            "sm_dentries",
            "sm_events",
            "sm_inodes",
            "sm_instances",
            "sm_silo_instances",
            "sm_tag_index",
            "sm_tag_inherit",
            "sm_tags"
        ]
    );
    let sm = SmStore::open(&path, &snaps).expect("reopen");
    assert_fixture_namespace(&sm);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_built_by_a_format_3_peer_installs_and_round_trips() {
    let dir = tempfile::tempdir().expect("tempdir");
    let snaps = dir.path().join("snapshots");
    std::fs::create_dir_all(&snaps).expect("mkdir");
    let mut sm = SmStore::open(&dir.path().join("sm.redb"), &snaps).expect("open");
    let meta: SnapshotMeta = codec::decode(&read_fixture("snap-12-1-1.meta")).expect("meta");
    let bytes = read_fixture("snap-12-1-1.bin");

    let mut recv = sm.begin_receiving_snapshot().await.expect("begin");
    tokio::io::AsyncWriteExt::write_all(&mut recv, &bytes)
        .await
        .expect("write");
    tokio::io::AsyncWriteExt::shutdown(&mut recv)
        .await
        .expect("shutdown");
    sm.install_snapshot(&meta, recv).await.expect("install");

    let (applied, _) = sm.applied_state().await.expect("applied state");
    assert_eq!(applied.map(|l| l.index), Some(12));
    assert_fixture_namespace(&sm);
    assert_eq!(snapshot_bytes(&mut sm).await, bytes, "rebuilt snapshot");
}
