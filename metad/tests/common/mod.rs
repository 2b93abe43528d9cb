//! Helpers shared by the store tests (each test file includes this with `mod common;`).

/// A committed log entry at `index` (term 1, node 1) carrying a RegisterPut of `key` = "v"
/// from client "t" with `seq = index`.
pub fn register_put(index: u64, key: &str) -> metad::types::Entry {
    metad::types::Entry {
        log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
        payload: openraft::EntryPayload::Normal(metad::types::LogCommand(
            metad_proto::raft::v1::Command {
                client_id: "t".into(),
                seq: index,
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
