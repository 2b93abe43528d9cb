//! Output views of the move commands (`move`, `moves`, `agents`) and of `import`: the stable
//! JSON shape (serde) and the table rendering.

use serde::Serialize;

use super::ns::format_ms;
use super::output::View;
use super::table;
use super::topo::human_bytes;
use crate::pb;

/// Lower-case name of a move state.
pub fn state_name(state: i32) -> &'static str {
    match pb::MoveState::try_from(state) {
        Ok(pb::MoveState::Pending) => "pending",
        Ok(pb::MoveState::Claimed) => "claimed",
        Ok(pb::MoveState::Copying) => "copying",
        Ok(pb::MoveState::Releasing) => "releasing",
        Ok(pb::MoveState::Done) => "done",
        Ok(pb::MoveState::Failed) => "failed",
        Ok(pb::MoveState::Cancelled) => "cancelled",
        _ => "unspecified",
    }
}

fn mode_name(mode: i32) -> &'static str {
    match pb::MoveMode::try_from(mode) {
        Ok(pb::MoveMode::Copy) => "copy",
        Ok(pb::MoveMode::Move) => "move",
        _ => "unspecified",
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct MoveView {
    pub id: u64,
    pub batch: u64,
    pub ino: u64,
    pub path: String,
    pub target_silo: String,
    pub source_silo: String,
    pub mode: &'static str,
    pub state: &'static str,
    pub priority: i32,
    pub owner: String,
    pub reason: String,
    pub token: u64,
    pub lease: u64,
    pub content_gen: u64,
    pub bytes_total: u64,
    pub bytes_done: u64,
    pub attempts: u32,
    pub max_attempts: u32,
    pub recopies: u32,
    pub last_error: String,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub create_revision: u64,
    pub mod_revision: u64,
}

impl From<pb::Move> for MoveView {
    fn from(m: pb::Move) -> Self {
        MoveView {
            id: m.id,
            batch: m.batch,
            ino: m.ino,
            path: m.path,
            target_silo: m.target_silo,
            source_silo: m.source_silo,
            mode: mode_name(m.mode),
            state: state_name(m.state),
            priority: m.priority,
            owner: m.owner,
            reason: m.reason,
            token: m.token,
            lease: m.lease,
            content_gen: m.content_gen,
            bytes_total: m.bytes_total,
            bytes_done: m.bytes_done,
            attempts: m.attempts,
            max_attempts: m.max_attempts,
            recopies: m.recopies,
            last_error: m.last_error,
            created_ms: m.created_ms,
            updated_ms: m.updated_ms,
            create_revision: m.create_revision,
            mod_revision: m.mod_revision,
        }
    }
}

impl View for MoveView {
    fn table(&self) -> String {
        let dash = |s: &str| {
            if s.is_empty() {
                "-".to_string()
            } else {
                s.to_string()
            }
        };
        let rows = [
            ("id", self.id.to_string()),
            ("batch", self.batch.to_string()),
            ("path", dash(&self.path)),
            ("state", self.state.to_string()),
            ("mode", self.mode.to_string()),
            ("from", dash(&self.source_silo)),
            ("to", self.target_silo.clone()),
            (
                "progress",
                format!(
                    "{} / {}",
                    human_bytes(self.bytes_done),
                    human_bytes(self.bytes_total)
                ),
            ),
            (
                "attempts",
                format!("{} of {}", self.attempts, self.max_attempts),
            ),
            ("recopies", self.recopies.to_string()),
            ("priority", self.priority.to_string()),
            ("owner", dash(&self.owner)),
            ("reason", dash(&self.reason)),
            ("last error", dash(&self.last_error)),
            ("created", format_ms(self.created_ms)),
            ("updated", format_ms(self.updated_ms)),
        ];
        let rows: Vec<Vec<String>> = rows
            .into_iter()
            .map(|(k, v)| vec![format!("{k}:"), v])
            .collect();
        table::render(&[], &rows)
    }
}

#[derive(Debug, Serialize)]
pub struct MoveListView {
    pub moves: Vec<MoveView>,
    pub next_cursor: String,
}

pub(crate) fn moves_table(moves: &[MoveView]) -> String {
    let rows: Vec<Vec<String>> = moves
        .iter()
        .map(|m| {
            vec![
                m.id.to_string(),
                m.batch.to_string(),
                m.state.to_string(),
                m.mode.to_string(),
                if m.source_silo.is_empty() {
                    "-".into()
                } else {
                    m.source_silo.clone()
                },
                m.target_silo.clone(),
                human_bytes(m.bytes_total),
                m.attempts.to_string(),
                m.path.clone(),
                m.last_error.clone(),
            ]
        })
        .collect();
    table::render(
        &[
            "ID", "BATCH", "STATE", "MODE", "FROM", "TO", "SIZE", "TRIES", "PATH", "ERROR",
        ],
        &rows,
    )
}

impl View for MoveListView {
    fn table(&self) -> String {
        let mut out = moves_table(&self.moves);
        if !self.next_cursor.is_empty() {
            out.push_str(&format!("(more: --cursor {} or --all)\n", self.next_cursor));
        }
        out
    }
}

#[derive(Debug, Serialize)]
pub struct SkippedView {
    pub path: String,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct BatchSummaryView {
    pub files: u64,
    pub done: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub bytes_total: u64,
    pub bytes_done: u64,
    pub elapsed_ms: u64,
    /// Up to 20 failed moves, with their last error.
    pub failures: Vec<MoveView>,
}

#[derive(Debug, Serialize)]
pub struct CreateMoveView {
    pub target_silo: String,
    pub mode: &'static str,
    /// One batch per CreateMove call (1000 paths each).
    pub batches: Vec<u64>,
    pub moves: u64,
    pub skipped: Vec<SkippedView>,
    /// With --wait: how it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<BatchSummaryView>,
}

impl View for CreateMoveView {
    fn table(&self) -> String {
        let batches: Vec<String> = self.batches.iter().map(u64::to_string).collect();
        let mut out = if self.moves == 0 {
            format!("no move created ({} to {})\n", self.mode, self.target_silo)
        } else {
            format!(
                "created {} move(s) ({} to {}), batch {}\n",
                self.moves,
                self.mode,
                self.target_silo,
                batches.join(", ")
            )
        };
        if !self.skipped.is_empty() {
            out.push_str(&format!("skipped {}:\n", self.skipped.len()));
            let rows: Vec<Vec<String>> = self
                .skipped
                .iter()
                .take(20)
                .map(|s| vec![format!("  {}", s.path), s.reason.clone()])
                .collect();
            out.push_str(&table::render(&[], &rows));
            if self.skipped.len() > 20 {
                out.push_str(&format!("  ... and {} more\n", self.skipped.len() - 20));
            }
        }
        if let Some(s) = &self.summary {
            out.push_str(&format!(
                "{} done, {} failed, {} cancelled of {} file(s); {} of {} in {:.1}s\n",
                s.done,
                s.failed,
                s.cancelled,
                s.files,
                human_bytes(s.bytes_done),
                human_bytes(s.bytes_total),
                s.elapsed_ms as f64 / 1000.0
            ));
            if !s.failures.is_empty() {
                out.push_str("failed:\n");
                out.push_str(&moves_table(&s.failures));
            }
        }
        out
    }
}

#[derive(Debug, Serialize)]
pub struct AgentView {
    pub lease: u64,
    pub silo: String,
    pub name: String,
    pub ttl_ms: u64,
    pub expires_ms: u64,
    pub registered_ms: u64,
}

#[derive(Debug, Serialize)]
pub struct AgentListView {
    pub agents: Vec<AgentView>,
}

impl From<Vec<pb::Agent>> for AgentListView {
    fn from(v: Vec<pb::Agent>) -> Self {
        AgentListView {
            agents: v
                .into_iter()
                .map(|a| AgentView {
                    lease: a.lease,
                    silo: a.silo,
                    name: a.name,
                    ttl_ms: a.ttl_ms,
                    expires_ms: a.expires_ms,
                    registered_ms: a.registered_ms,
                })
                .collect(),
        }
    }
}

impl View for AgentListView {
    fn table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .agents
            .iter()
            .map(|a| {
                vec![
                    a.lease.to_string(),
                    a.silo.clone(),
                    a.name.clone(),
                    format!("{}ms", a.ttl_ms),
                    format_ms(a.registered_ms),
                    format_ms(a.expires_ms),
                ]
            })
            .collect();
        table::render(
            &["LEASE", "SILO", "NAME", "TTL", "REGISTERED", "EXPIRES"],
            &rows,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_render() {
        let m = pb::Move {
            id: 7,
            batch: 7,
            path: "/a/b".into(),
            target_silo: "t".into(),
            mode: pb::MoveMode::Move as i32,
            state: pb::MoveState::Failed as i32,
            bytes_total: 2048,
            last_error: "boom".into(),
            ..Default::default()
        };
        let v = MoveView::from(m);
        assert_eq!(v.state, "failed");
        assert!(v.table().contains("boom"));
        let l = MoveListView {
            moves: vec![v],
            next_cursor: "c".into(),
        };
        let t = l.table();
        assert!(t.starts_with("ID"), "{t}");
        assert!(t.contains("2.0 KiB") && t.contains("--cursor c"), "{t}");
        let c = CreateMoveView {
            target_silo: "t".into(),
            mode: "move",
            batches: vec![7],
            moves: 1,
            skipped: vec![SkippedView {
                path: "/x".into(),
                reason: "already there".into(),
            }],
            summary: None,
        };
        let t = c.table();
        assert!(
            t.contains("created 1 move(s)") && t.contains("already there"),
            "{t}"
        );
        let j = serde_json::to_value(&c).expect("json");
        assert!(j.get("summary").is_none());
    }
}
