//! openraft's storage conformance suite against the redb log and state-machine stores, plus
//! metad's own durability checks on them.

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
