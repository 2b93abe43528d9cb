//! Moves, agent leases and import: `impl Client` methods for the `metad.v1.Moves` and
//! `metad.v1.Agents` services and for `Location/ImportFiles`, plus the location-aware
//! `record_write_at`. Every write takes one `seq` that all its retries reuse (exactly once);
//! reads take [`ReadOptions`]. The KeepAlive stream is driven by [`crate::LeaseKeeper`].

use metad_proto::v1 as pb;
use metad_proto::v1::agents_client::AgentsClient;
use metad_proto::v1::location_client::LocationClient;
use metad_proto::v1::moves_client::MovesClient;

use crate::client::{request, Client};
use crate::config::ReadOptions;
use crate::error::{CallKind, ClientError};

/// Largest batch the server accepts in one ClaimMoves / CompleteMoves / ReleaseDone /
/// ImportFiles call.
pub const MAX_BATCH: usize = 1000;

/// What [`Client::create_move`] creates besides the paths and the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveSpec {
    /// Directories in the paths expand to every file below them.
    pub recursive: bool,
    /// Copy (keep the other instances) or move (release them once the target is valid).
    pub mode: pb::MoveMode,
    /// Higher first.
    pub priority: i32,
    /// Who asked (e.g. `user:alice`, `reconciler`); at most 256 bytes.
    pub owner: String,
    /// Why; at most 256 bytes.
    pub reason: String,
    /// Attempts before the move fails; 0 = the server's default (5).
    pub max_attempts: u32,
}

impl Default for MoveSpec {
    fn default() -> Self {
        MoveSpec {
            recursive: false,
            mode: pb::MoveMode::Move,
            priority: 0,
            owner: String::new(),
            reason: String::new(),
            max_attempts: 0,
        }
    }
}

/// Filters of [`Client::list_moves`]; zero / empty = any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MoveFilter {
    pub batch: u64,
    pub state: Option<pb::MoveState>,
    pub target_silo: String,
    pub owner: String,
    /// Only moves that are not finished (pending, claimed, copying, releasing).
    pub active_only: bool,
}

/// Optional fields of [`Client::record_write_at`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteSpec {
    /// Default: the leader's time when the write is applied.
    pub mtime_ms: Option<u64>,
    pub checksum: String,
    /// Where the bytes are, relative to the silo root; "" = the existing instance's
    /// location, else the file's path.
    pub location: String,
}

impl Client {
    /// Creates one move per file of `paths` (directories expand with `spec.recursive`) to
    /// `target_silo`. All or nothing; files already there or already moving are skipped.
    pub async fn create_move(
        &self,
        paths: impl Into<Vec<String>>,
        target_silo: &str,
        spec: MoveSpec,
    ) -> Result<pb::CreateMoveResponse, ClientError> {
        write_call!(
            self,
            MovesClient,
            create_move,
            pb::CreateMoveRequest {
                header: None,
                paths: paths.into(),
                recursive: spec.recursive,
                target_silo: target_silo.to_string(),
                mode: spec.mode as i32,
                priority: spec.priority,
                owner: spec.owner,
                reason: spec.reason,
                max_attempts: spec.max_attempts,
            }
        )
    }

    /// Claims up to `max` (1..=1000) pending copy tasks for `silo` under `lease`, and up to
    /// `max_releases` instances on `silo` waiting to be deleted.
    pub async fn claim_moves(
        &self,
        lease: u64,
        silo: &str,
        max: u32,
        max_releases: u32,
    ) -> Result<pb::ClaimMovesResponse, ClientError> {
        self.claim_moves_with_seq(self.next_seq(), lease, silo, max, max_releases)
            .await
    }

    /// [`Client::claim_moves`] with an explicit `seq`: resend a write whose outcome is unknown
    /// (`Ambiguous`) with the same seq to get its first outcome instead of applying it again.
    pub async fn claim_moves_with_seq(
        &self,
        seq: u64,
        lease: u64,
        silo: &str,
        max: u32,
        max_releases: u32,
    ) -> Result<pb::ClaimMovesResponse, ClientError> {
        write_call!(
            self,
            seq,
            MovesClient,
            claim_moves,
            pb::ClaimMovesRequest {
                header: None,
                lease,
                silo: silo.to_string(),
                max,
                max_releases,
            }
        )
    }

    /// Bytes copied so far for a claimed move. Refused with a stale token.
    pub async fn report_progress(
        &self,
        move_id: u64,
        token: u64,
        bytes_done: u64,
    ) -> Result<pb::ReportProgressResponse, ClientError> {
        write_call!(
            self,
            MovesClient,
            report_progress,
            pb::ReportProgressRequest {
                header: None,
                move_id,
                token,
                bytes_done,
            }
        )
    }

    /// Commits one copy (see [`Client::complete_moves`] for many).
    pub async fn complete_move(
        &self,
        completion: pb::MoveCompletion,
    ) -> Result<pb::CompleteMoveResponse, ClientError> {
        write_call!(
            self,
            MovesClient,
            complete_move,
            pb::CompleteMoveRequest {
                header: None,
                completion: Some(completion),
            }
        )
    }

    /// Commits up to 1000 copies in one write; one result per completion, in order.
    pub async fn complete_moves(
        &self,
        completions: Vec<pb::MoveCompletion>,
    ) -> Result<pb::CompleteMovesResponse, ClientError> {
        self.complete_moves_with_seq(self.next_seq(), completions)
            .await
    }

    /// [`Client::complete_moves`] with an explicit `seq`: resend a write whose outcome is unknown
    /// (`Ambiguous`) with the same seq to get its first outcome instead of applying it again.
    pub async fn complete_moves_with_seq(
        &self,
        seq: u64,
        completions: Vec<pb::MoveCompletion>,
    ) -> Result<pb::CompleteMovesResponse, ClientError> {
        write_call!(
            self,
            seq,
            MovesClient,
            complete_moves,
            pb::CompleteMovesRequest {
                header: None,
                completions,
            }
        )
    }

    /// The agent could not copy: `retryable` sends the move back to pending after a backoff
    /// (failed once attempts are exhausted); otherwise it fails now.
    pub async fn fail_move(
        &self,
        move_id: u64,
        token: u64,
        reason: &str,
        retryable: bool,
    ) -> Result<pb::FailMoveResponse, ClientError> {
        self.fail_move_with_seq(self.next_seq(), move_id, token, reason, retryable)
            .await
    }

    /// [`Client::fail_move`] with an explicit `seq`: resend a write whose outcome is unknown
    /// (`Ambiguous`) with the same seq to get its first outcome instead of applying it again.
    pub async fn fail_move_with_seq(
        &self,
        seq: u64,
        move_id: u64,
        token: u64,
        reason: &str,
        retryable: bool,
    ) -> Result<pb::FailMoveResponse, ClientError> {
        write_call!(
            self,
            seq,
            MovesClient,
            fail_move,
            pb::FailMoveRequest {
                header: None,
                move_id,
                token,
                reason: reason.to_string(),
                retryable,
            }
        )
    }

    /// The agent of `silo` deleted the bytes of these inodes' RELEASING instances (<= 1000).
    pub async fn release_done(
        &self,
        silo: &str,
        inos: Vec<u64>,
    ) -> Result<pb::ReleaseDoneResponse, ClientError> {
        self.release_done_with_seq(self.next_seq(), silo, inos)
            .await
    }

    /// [`Client::release_done`] with an explicit `seq`: resend a write whose outcome is unknown
    /// (`Ambiguous`) with the same seq to get its first outcome instead of applying it again.
    pub async fn release_done_with_seq(
        &self,
        seq: u64,
        silo: &str,
        inos: Vec<u64>,
    ) -> Result<pb::ReleaseDoneResponse, ClientError> {
        write_call!(
            self,
            seq,
            MovesClient,
            release_done,
            pb::ReleaseDoneRequest {
                header: None,
                silo: silo.to_string(),
                inos,
            }
        )
    }

    /// Cancels a move that has not committed.
    pub async fn cancel_move(
        &self,
        move_id: u64,
        reason: &str,
    ) -> Result<pb::CancelMoveResponse, ClientError> {
        write_call!(
            self,
            MovesClient,
            cancel_move,
            pb::CancelMoveRequest {
                header: None,
                move_id,
                reason: reason.to_string(),
            }
        )
    }

    /// One move (with its file's current path).
    pub async fn get_move(
        &self,
        move_id: u64,
        options: ReadOptions,
    ) -> Result<pb::GetMoveResponse, ClientError> {
        read_call!(
            self,
            MovesClient,
            get_move,
            pb::GetMoveRequest {
                read: self.read_options(options),
                move_id,
            }
        )
    }

    /// One page of moves matching `filter`, in id order (`cursor` "" = first page; `limit`
    /// 0 = 1000, at most 10 000).
    pub async fn list_moves(
        &self,
        filter: MoveFilter,
        cursor: &str,
        limit: u32,
        options: ReadOptions,
    ) -> Result<pb::ListMovesResponse, ClientError> {
        read_call!(
            self,
            MovesClient,
            list_moves,
            pb::ListMovesRequest {
                read: self.read_options(options),
                batch: filter.batch,
                state: filter.state.map(|s| s as i32).unwrap_or(0),
                target_silo: filter.target_silo,
                owner: filter.owner,
                active_only: filter.active_only,
                cursor: cursor.to_string(),
                limit,
            }
        )
    }

    /// Counts by state and bytes of one CreateMove batch.
    pub async fn get_move_batch(
        &self,
        batch: u64,
        options: ReadOptions,
    ) -> Result<pb::GetMoveBatchResponse, ClientError> {
        read_call!(
            self,
            MovesClient,
            get_move_batch,
            pb::GetMoveBatchRequest {
                read: self.read_options(options),
                batch,
            }
        )
    }

    /// Registers an agent for `silo` and returns its lease. Registering again with the name
    /// of a live lease on the same silo replaces that lease (a restarted agent takes over).
    /// `ttl_ms` 0 = the server's default (10 s).
    pub async fn agent_register(
        &self,
        silo: &str,
        name: &str,
        ttl_ms: u64,
    ) -> Result<pb::AgentRegisterResponse, ClientError> {
        write_call!(
            self,
            AgentsClient,
            agent_register,
            pb::AgentRegisterRequest {
                header: None,
                silo: silo.to_string(),
                name: name.to_string(),
                ttl_ms,
            }
        )
    }

    /// Ends a lease now; its claimed moves go back to pending.
    pub async fn agent_revoke(&self, lease: u64) -> Result<pb::AgentRevokeResponse, ClientError> {
        write_call!(
            self,
            AgentsClient,
            agent_revoke,
            pb::AgentRevokeRequest {
                header: None,
                lease,
            }
        )
    }

    /// Live agent leases, of every silo or only of `silo` (if non-empty).
    pub async fn list_agents(
        &self,
        silo: &str,
        options: ReadOptions,
    ) -> Result<pb::ListAgentsResponse, ClientError> {
        read_call!(
            self,
            AgentsClient,
            list_agents,
            pb::ListAgentsRequest {
                read: self.read_options(options),
                silo: silo.to_string(),
            }
        )
    }

    /// Registers up to 1000 files that already exist on `silo` (assimilation in place):
    /// missing directories and files are created and a valid instance added per file.
    /// Re-running the same batch changes nothing.
    pub async fn import_files(
        &self,
        silo: &str,
        files: Vec<pb::ImportEntry>,
    ) -> Result<pb::ImportFilesResponse, ClientError> {
        write_call!(
            self,
            LocationClient,
            import_files,
            pb::ImportFilesRequest {
                header: None,
                silo: silo.to_string(),
                files,
            }
        )
    }

    /// Like [`Client::record_write`], with the instance's location (and mtime, checksum) in
    /// `spec`: the file at `path` was rewritten at `silo` with `size` bytes.
    pub async fn record_write_at(
        &self,
        path: &str,
        silo: &str,
        size: u64,
        spec: WriteSpec,
    ) -> Result<pb::RecordWriteResponse, ClientError> {
        write_call!(
            self,
            LocationClient,
            record_write,
            pb::RecordWriteRequest {
                header: None,
                path: path.to_string(),
                silo: silo.to_string(),
                size,
                mtime_ms: spec.mtime_ms,
                checksum: spec.checksum,
                location: spec.location,
            }
        )
    }
}

/// Splits `items` into batches of at most `max` (>= 1) items, in order.
pub fn batches<T>(items: Vec<T>, max: usize) -> Vec<Vec<T>> {
    let max = max.max(1);
    let mut out = Vec::with_capacity(items.len().div_ceil(max));
    let mut cur = Vec::with_capacity(max.min(items.len()));
    for item in items {
        cur.push(item);
        if cur.len() == max {
            out.push(std::mem::replace(&mut cur, Vec::with_capacity(max)));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_split_in_order_and_never_exceed_max() {
        let b = batches((0..2501).collect::<Vec<u32>>(), 1000);
        assert_eq!(
            b.iter().map(Vec::len).collect::<Vec<_>>(),
            [1000, 1000, 501]
        );
        assert_eq!(b[2][0], 2000);
        assert!(batches(Vec::<u8>::new(), 10).is_empty());
        assert_eq!(
            batches(vec![1, 2], 0),
            vec![vec![1], vec![2]],
            "max 0 acts as 1"
        );
        assert_eq!(batches(vec![1, 2, 3], 3), vec![vec![1, 2, 3]]);
    }

    #[test]
    fn default_spec_is_a_move() {
        let s = MoveSpec::default();
        assert_eq!(s.mode, pb::MoveMode::Move);
        assert!(!s.recursive);
        assert_eq!(s.max_attempts, 0);
    }
}
