//! `metactl` output: serde view structs (the stable JSON shape, independent of the prost types)
//! built from the wire messages, and their table rendering.

use serde::Serialize;

use crate::cli::table;
use crate::pb;
use crate::{GetResult, IncrResult, PutResult};

/// Something a command prints: as one JSON object, or as text.
pub trait View: Serialize {
    fn table(&self) -> String;
}

fn role_name(role: i32) -> &'static str {
    match pb::MemberRole::try_from(role) {
        Ok(pb::MemberRole::Voter) => "voter",
        Ok(pb::MemberRole::Learner) => "learner",
        _ => "unknown",
    }
}

fn id_cell(id: u64, leader_id: u64) -> String {
    if id != 0 && id == leader_id {
        format!("{id}*")
    } else {
        id.to_string()
    }
}

#[derive(Debug, Serialize)]
pub struct NodeStatusView {
    pub id: u64,
    pub site: String,
    pub client_addr: String,
    pub state: String,
    pub term: u64,
    pub leader_id: u64,
    pub last_log_index: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub revision: u64,
    pub snapshot_index: u64,
    pub version: String,
}

impl From<pb::NodeStatusResponse> for NodeStatusView {
    fn from(s: pb::NodeStatusResponse) -> Self {
        NodeStatusView {
            id: s.id,
            site: s.site,
            client_addr: s.client_addr,
            state: s.state,
            term: s.term,
            leader_id: s.leader_id,
            last_log_index: s.last_log_index,
            commit_index: s.commit_index,
            applied_index: s.applied_index,
            revision: s.revision,
            snapshot_index: s.snapshot_index,
            version: s.version,
        }
    }
}

impl View for NodeStatusView {
    fn table(&self) -> String {
        let leader = if self.leader_id == 0 {
            "unknown".to_string()
        } else {
            self.leader_id.to_string()
        };
        let rows = [
            ("id", self.id.to_string()),
            ("site", self.site.clone()),
            ("addr", self.client_addr.clone()),
            ("state", self.state.clone()),
            ("term", self.term.to_string()),
            ("leader", leader),
            ("last log index", self.last_log_index.to_string()),
            ("commit index", self.commit_index.to_string()),
            ("applied index", self.applied_index.to_string()),
            ("revision", self.revision.to_string()),
            ("snapshot index", self.snapshot_index.to_string()),
            ("version", self.version.clone()),
        ];
        let rows: Vec<Vec<String>> = rows
            .into_iter()
            .map(|(k, v)| vec![format!("{k}:"), v])
            .collect();
        table::render(&[], &rows)
    }
}

#[derive(Debug, Serialize)]
pub struct NodeReportView {
    pub id: u64,
    pub site: String,
    pub role: &'static str,
    pub client_addr: String,
    pub is_leader: bool,
    pub status: Option<NodeStatusView>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ClusterStatusView {
    pub leader_id: u64,
    pub leader_addr: String,
    pub term: u64,
    pub responder_id: u64,
    pub nodes: Vec<NodeReportView>,
}

impl From<pb::StatusResponse> for ClusterStatusView {
    fn from(s: pb::StatusResponse) -> Self {
        let nodes = s
            .nodes
            .into_iter()
            .map(|n| NodeReportView {
                id: n.id,
                site: n.site,
                role: role_name(n.role),
                client_addr: n.client_addr,
                is_leader: n.id != 0 && n.id == s.leader_id,
                status: n.status.map(NodeStatusView::from),
                error: (!n.error.is_empty()).then_some(n.error),
            })
            .collect();
        ClusterStatusView {
            leader_id: s.leader_id,
            leader_addr: s.leader_addr,
            term: s.term,
            responder_id: s.responder_id,
            nodes,
        }
    }
}

impl View for ClusterStatusView {
    fn table(&self) -> String {
        let mut out = if self.leader_id == 0 {
            format!(
                "leader: none (election in progress or no quorum)  term: {}",
                self.term
            )
        } else {
            format!(
                "leader: {} ({})  term: {}",
                self.leader_id, self.leader_addr, self.term
            )
        };
        out.push_str(&format!("  answered by: {}\n", self.responder_id));
        let any_error = self.nodes.iter().any(|n| n.error.is_some());
        let mut header = vec![
            "ID", "SITE", "ROLE", "STATE", "TERM", "COMMIT", "APPLIED", "REVISION", "ADDR",
        ];
        if any_error {
            header.push("ERROR");
        }
        let dash = || "-".to_string();
        let rows: Vec<Vec<String>> = self
            .nodes
            .iter()
            .map(|n| {
                let mut row = vec![
                    id_cell(n.id, self.leader_id),
                    n.site.clone(),
                    n.role.to_string(),
                ];
                match &n.status {
                    Some(s) => row.extend([
                        s.state.clone(),
                        s.term.to_string(),
                        s.commit_index.to_string(),
                        s.applied_index.to_string(),
                        s.revision.to_string(),
                    ]),
                    None => row.extend(["unreachable".to_string(), dash(), dash(), dash(), dash()]),
                }
                row.push(n.client_addr.clone());
                if any_error {
                    row.push(n.error.clone().unwrap_or_default());
                }
                row
            })
            .collect();
        out.push_str(&table::render(&header, &rows));
        out
    }
}

#[derive(Debug, Serialize)]
pub struct MemberView {
    pub id: u64,
    pub site: String,
    pub role: &'static str,
    pub peer_addr: String,
    pub client_addr: String,
    pub is_leader: bool,
}

fn members(list: Vec<pb::Member>, leader_id: u64) -> Vec<MemberView> {
    list.into_iter()
        .map(|m| MemberView {
            id: m.id,
            site: m.site,
            role: role_name(m.role),
            peer_addr: m.peer_addr,
            client_addr: m.client_addr,
            is_leader: m.id != 0 && m.id == leader_id,
        })
        .collect()
}

fn members_table(members: &[MemberView]) -> String {
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|m| {
            let id = if m.is_leader {
                format!("{}*", m.id)
            } else {
                m.id.to_string()
            };
            vec![
                id,
                m.site.clone(),
                m.role.to_string(),
                m.peer_addr.clone(),
                m.client_addr.clone(),
            ]
        })
        .collect();
    table::render(&["ID", "SITE", "ROLE", "PEER_ADDR", "CLIENT_ADDR"], &rows)
}

#[derive(Debug, Serialize)]
pub struct MemberListView {
    pub leader_id: u64,
    pub members: Vec<MemberView>,
}

impl From<pb::MemberListResponse> for MemberListView {
    fn from(r: pb::MemberListResponse) -> Self {
        MemberListView {
            leader_id: r.leader_id,
            members: members(r.members, r.leader_id),
        }
    }
}

impl View for MemberListView {
    fn table(&self) -> String {
        members_table(&self.members)
    }
}

#[derive(Debug, Serialize)]
pub struct MemberChangeView {
    /// What was done, e.g. "added learner 4".
    pub action: String,
    pub log_index: u64,
    pub members: Vec<MemberView>,
}

impl MemberChangeView {
    pub fn new(action: String, r: pb::MemberChangeResponse) -> Self {
        MemberChangeView {
            action,
            log_index: r.log_index,
            members: members(r.members, 0),
        }
    }
}

impl View for MemberChangeView {
    fn table(&self) -> String {
        format!(
            "{} (log index {})\n{}",
            self.action,
            self.log_index,
            members_table(&self.members)
        )
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[derive(Debug, Serialize)]
pub struct RegisterView {
    pub key: String,
    /// put: the new value; incr: the counter after; get: the value (absent = null).
    pub value: Option<String>,
    /// put: the previous value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev_value: Option<String>,
    /// get: revision at which the key was last written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mod_revision: Option<u64>,
    pub revision: u64,
    pub node_id: u64,
    pub raft_term: u64,
}

impl RegisterView {
    pub fn put(key: String, value: String, r: PutResult) -> Self {
        RegisterView {
            key,
            value: Some(value),
            prev_value: r.prev_value.as_deref().map(text),
            mod_revision: None,
            revision: r.header.revision,
            node_id: r.header.node_id,
            raft_term: r.header.raft_term,
        }
    }

    pub fn incr(key: String, r: IncrResult) -> Self {
        RegisterView {
            key,
            value: Some(r.value.to_string()),
            prev_value: None,
            mod_revision: None,
            revision: r.header.revision,
            node_id: r.header.node_id,
            raft_term: r.header.raft_term,
        }
    }

    pub fn get(key: String, r: GetResult) -> Self {
        RegisterView {
            key,
            value: r.value.as_deref().map(text),
            prev_value: None,
            mod_revision: Some(r.mod_revision),
            revision: r.header.revision,
            node_id: r.header.node_id,
            raft_term: r.header.raft_term,
        }
    }
}

impl View for RegisterView {
    fn table(&self) -> String {
        let mut rows = vec![vec!["key:".to_string(), self.key.clone()]];
        let value = self.value.clone().unwrap_or_else(|| "(absent)".into());
        rows.push(vec!["value:".into(), value]);
        if let Some(p) = &self.prev_value {
            rows.push(vec!["previous:".into(), p.clone()]);
        }
        if let Some(m) = self.mod_revision {
            rows.push(vec!["mod revision:".into(), m.to_string()]);
        }
        rows.push(vec!["revision:".into(), self.revision.to_string()]);
        rows.push(vec![
            "served by:".into(),
            format!("node {} (term {})", self.node_id, self.raft_term),
        ]);
        table::render(&[], &rows)
    }
}
