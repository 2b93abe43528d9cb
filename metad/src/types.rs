//! The openraft type configuration: node identity (with its site), the log payload (a prost
//! `Command`) and the apply reply. Everything that crosses a Raft boundary is defined here.

use std::fmt;

use metad_proto::raft::v1::{Command, Reply};
use prost::Message;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub type NodeId = u64;

/// What the cluster knows about a member: carried in the Raft membership config, so every node
/// agrees on every other node's site and addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub site: String,
    /// Address for Raft traffic between nodes.
    pub peer_addr: String,
    /// Address clients use for the gRPC API.
    pub client_addr: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}@{}(client {})",
            self.site, self.peer_addr, self.client_addr
        )
    }
}

/// The log entry payload. Serialized as prost bytes inside the (postcard) entry encoding, so the
/// command schema evolves with protobuf rules rather than by struct layout.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogCommand(pub Command);

/// The state machine's answer to one entry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApplyReply(pub Reply);

macro_rules! prost_serde {
    ($t:ty, $inner:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(&self.0.encode_to_vec())
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let bytes: serde_bytes_buf::Buf = Deserialize::deserialize(d)?;
                <$inner>::decode(bytes.0.as_slice())
                    .map(Self)
                    .map_err(serde::de::Error::custom)
            }
        }
    };
}
prost_serde!(LogCommand, Command);
prost_serde!(ApplyReply, Reply);

/// Minimal owned byte-buffer visitor (avoids a dependency for one type).
mod serde_bytes_buf {
    use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};
    pub struct Buf(pub Vec<u8>);
    impl<'de> Deserialize<'de> for Buf {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Buf;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E>(self, v: &[u8]) -> Result<Buf, E> {
                    Ok(Buf(v.to_vec()))
                }
                fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Buf, E> {
                    Ok(Buf(v))
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Buf, A::Error> {
                    let mut out = Vec::new();
                    while let Some(b) = a.next_element::<u8>()? {
                        out.push(b);
                    }
                    Ok(Buf(out))
                }
            }
            d.deserialize_bytes(V)
        }
    }
}

openraft::declare_raft_types!(
    /// metad's Raft types.
    pub TypeConfig:
        D = LogCommand,
        R = ApplyReply,
        NodeId = NodeId,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = crate::store::install::SnapFile,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, NodeInfo>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeInfo>;
pub type StorageError = openraft::StorageError<NodeId>;

/// Binary codec for everything openraft hands us (entries, votes, RPCs): postcard, never JSON.
pub mod codec {
    use serde::{de::DeserializeOwned, Serialize};

    pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, postcard::Error> {
        postcard::to_stdvec(v)
    }

    pub fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, postcard::Error> {
        postcard::from_bytes(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metad_proto::raft::v1::{command, RegisterPut};

    #[test]
    fn entry_round_trips_through_postcard() {
        let cmd = Command {
            client_id: "c1".into(),
            seq: 7,
            leader_time_ms: 42,
            op: Some(command::Op::RegisterPut(RegisterPut {
                key: "k".into(),
                value: vec![1, 2],
            })),
        };
        let entry = Entry {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(3, 1), 9),
            payload: openraft::EntryPayload::Normal(LogCommand(cmd.clone())),
        };
        let bytes = codec::encode(&entry).expect("encode");
        let back: Entry = codec::decode(&bytes).expect("decode");
        assert_eq!(back.log_id, entry.log_id);
        match back.payload {
            openraft::EntryPayload::Normal(c) => assert_eq!(c.0, cmd),
            other => panic!("unexpected payload {other:?}"),
        }
    }
}
