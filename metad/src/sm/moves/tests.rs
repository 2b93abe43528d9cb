//! Unit and property tests of the move state machine through the full apply path (overlay,
//! sessions, events, revision): every transition and refusal of docs/design.md §Moves.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use metad_proto::raft::v1::{command::Op as CmdOp, reply, Command, Maintenance};
use metad_proto::v1::moves_op::Op;
use metad_proto::v1::moves_reply::Result as R;
use metad_proto::v1::topology_op::Op as TOp;
use metad_proto::v1::*;
use metad_proto::ErrorCode;
use proptest::prelude::*;

use super::*;
use crate::sm::apply::{apply_command, revision};
use crate::sm::kv::MemKv;
use crate::sm::model::{resolve_existing, ROOT_INO};

type Refused = (ErrorCode, String);

struct H {
    kv: MemKv,
    seq: u64,
    now: u64,
}

impl H {
    /// Sites a, b, c with silos sa, sb, sc (posix, roots /r/a...), file /d/f{i} of 100 bytes
    /// imported on sa with checksum "x{i}".
    fn new(files: usize) -> Self {
        let mut h = H {
            kv: MemKv::default(),
            seq: 0,
            now: 1_000,
        };
        crate::sm::model::ensure_root(&mut h.kv).unwrap();
        for s in ["a", "b", "c"] {
            h.topo(TOp::RegisterSite(RegisterSiteRequest {
                name: s.into(),
                ..Default::default()
            }))
            .unwrap();
            h.topo(TOp::RegisterSilo(RegisterSiloRequest {
                name: format!("s{s}"),
                site: s.into(),
                kind: SiloKind::Posix as i32,
                tier: SiloTier::Hot as i32,
                capacity_bytes: 1 << 40,
                root: format!("/r/{s}"),
                ..Default::default()
            }))
            .unwrap();
        }
        if files > 0 {
            let entries = (0..files)
                .map(|i| ImportEntry {
                    path: format!("/d/f{i}"),
                    size: 100,
                    checksum: format!("x{i}"),
                    ..Default::default()
                })
                .collect();
            h.topo(TOp::ImportFiles(ImportFilesRequest {
                header: None,
                silo: "sa".into(),
                files: entries,
            }))
            .unwrap();
        }
        h
    }

    fn cmd(&mut self, op: CmdOp) -> reply::Result {
        self.seq += 1;
        self.now += 1;
        let cmd = Command {
            client_id: "t".into(),
            seq: self.seq,
            leader_time_ms: self.now,
            op: Some(op),
        };
        apply_command(&mut self.kv, &cmd)
            .expect("apply")
            .result
            .expect("result")
    }

    fn topo(&mut self, op: TOp) -> Result<topology_reply::Result, Refused> {
        match self.cmd(CmdOp::Topology(TopologyOp { op: Some(op) })) {
            reply::Result::Topology(TopologyReply { result: Some(r) }) => Ok(r),
            reply::Result::Error(e) => Err((e.code.parse().unwrap(), e.message)),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn run(&mut self, op: Op) -> Result<R, Refused> {
        match self.cmd(CmdOp::Moves(MovesOp { op: Some(op) })) {
            reply::Result::Moves(MovesReply { result: Some(r) }) => Ok(r),
            reply::Result::Error(e) => Err((e.code.parse().unwrap(), e.message)),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Runs `op`, expects a refusal with `code` mentioning `needle`, and checks that nothing
    /// but session bookkeeping changed.
    fn refused(&mut self, op: Op, code: ErrorCode, needle: &str) {
        let before = self.state();
        let rev = revision(&self.kv).unwrap();
        match self.run(op.clone()) {
            Ok(r) => panic!("{op:?} should be refused, got {r:?}"),
            Err((c, msg)) => {
                assert_eq!(c, code, "{msg}");
                assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
            }
        }
        assert_eq!(self.state(), before, "a refused {op:?} changed state");
        assert_eq!(revision(&self.kv).unwrap(), rev);
    }

    fn state(&self) -> Vec<Option<std::collections::BTreeMap<Vec<u8>, Vec<u8>>>> {
        [
            Table::Moves,
            Table::MovesPending,
            Table::MovesByIno,
            Table::MovesByLease,
            Table::Agents,
            Table::SiloReleasing,
            Table::MoveBatches,
            Table::Instances,
            Table::Events,
        ]
        .iter()
        .map(|t| self.kv.tables.get(t).cloned())
        .collect()
    }

    fn create(&mut self, paths: &[&str], target: &str, mode: MoveMode) -> CreateMoveResponse {
        match self.run(Op::Create(CreateMoveRequest {
            paths: paths.iter().map(|p| p.to_string()).collect(),
            recursive: true,
            target_silo: target.into(),
            mode: mode as i32,
            max_attempts: 3,
            ..Default::default()
        })) {
            Ok(R::Create(r)) => r,
            other => panic!("create: {other:?}"),
        }
    }

    fn register(&mut self, silo: &str, name: &str) -> u64 {
        match self.run(Op::AgentRegister(AgentRegisterRequest {
            silo: silo.into(),
            name: name.into(),
            ttl_ms: 5_000,
            ..Default::default()
        })) {
            Ok(R::AgentRegister(r)) => r.agent.unwrap().lease,
            other => panic!("register: {other:?}"),
        }
    }

    fn claim(&mut self, lease: u64, silo: &str, max: u32) -> ClaimMovesResponse {
        match self.try_claim(lease, silo, max) {
            Ok(r) => r,
            Err(e) => panic!("claim: {e:?}"),
        }
    }

    fn try_claim(
        &mut self,
        lease: u64,
        silo: &str,
        max: u32,
    ) -> Result<ClaimMovesResponse, Refused> {
        match self.run(Op::Claim(ClaimMovesRequest {
            header: None,
            lease,
            silo: silo.into(),
            max,
            max_releases: 100,
        }))? {
            R::Claim(r) => Ok(r),
            other => panic!("claim: {other:?}"),
        }
    }

    fn complete(&mut self, c: MoveCompletion) -> CompleteResult {
        match self.run(Op::Complete(CompleteMovesRequest {
            header: None,
            completions: vec![c],
        })) {
            Ok(R::Complete(mut r)) => r.results.remove(0),
            other => panic!("complete: {other:?}"),
        }
    }

    fn done(task: &MoveTask) -> MoveCompletion {
        MoveCompletion {
            move_id: task.move_id,
            token: task.token,
            copied_gen: task.content_gen,
            checksum: task.source_checksum.clone(),
            bytes: task.size,
        }
    }

    fn mv(&self, id: u64) -> Move {
        get_move(&self.kv, id).map_err(|_| "get").unwrap()
    }

    fn inst(&self, path: &str, silo: &str) -> Option<Instance> {
        let ino = self.ino(path);
        crate::sm::topology::get_instance(&self.kv, ino, silo).unwrap()
    }

    fn ino(&self, path: &str) -> u64 {
        resolve_existing(&self.kv, "p", path)
            .map_err(|_| "resolve")
            .unwrap()
            .ino
    }

    fn states(&self, path: &str) -> Vec<(String, InstanceState)> {
        crate::sm::topology::instances_of(&self.kv, self.ino(path))
            .unwrap()
            .into_iter()
            .map(|i| (i.silo, InstanceState::try_from(i.state).unwrap()))
            .collect()
    }

    fn expire(&mut self) -> u32 {
        match self.cmd(CmdOp::Maintenance(Maintenance {
            expire_agent_leases: true,
            ..Default::default()
        })) {
            reply::Result::Maintenance(m) => m.leases_expired,
            other => panic!("{other:?}"),
        }
    }

    fn write(&mut self, path: &str, silo: &str, checksum: &str) -> Result<(), Refused> {
        self.topo(TOp::RecordWrite(RecordWriteRequest {
            path: path.into(),
            silo: silo.into(),
            size: 200,
            checksum: checksum.into(),
            ..Default::default()
        }))
        .map(|_| ())
    }
}

use InstanceState::{Filling, Releasing, Stale, Valid};

#[test]
fn copy_claim_commit_keeps_source_and_counts_the_batch() {
    let mut h = H::new(3);
    let c = h.create(&["/d"], "sc", MoveMode::Copy);
    assert_eq!(c.move_ids.len(), 3);
    let lease = h.register("sc", "agent-c");
    let claim = h.claim(lease, "sc", 2);
    assert_eq!(claim.tasks.len(), 2);
    let t = &claim.tasks[0];
    assert_eq!(t.source_silo, "sa");
    assert_eq!(t.source_root, "/r/a");
    assert_eq!(t.source_location, "d/f0");
    assert_eq!(t.target_location, "d/f0");
    assert_eq!(t.source_checksum, "x0");
    assert!(t.token > 0 && claim.tasks[1].token != t.token);
    assert_eq!(
        h.states("/d/f0"),
        vec![("sa".into(), Valid), ("sc".into(), Filling)]
    );
    // Readers keep reading the source, and see the move in flight.
    let loc = crate::sm::topology::locate(
        &h.kv,
        &LocateRequest {
            path: "/d/f0".into(),
            ..Default::default()
        },
    )
    .map_err(|_| "locate")
    .unwrap();
    assert_eq!(loc.instances.len(), 1);
    assert_eq!(loc.moves.len(), 1);
    assert_eq!(loc.moves[0].state, "claimed");

    let r = h.complete(H::done(t));
    assert_eq!(r.outcome, CompleteOutcome::Committed as i32, "{r:?}");
    assert_eq!(h.mv(t.move_id).state, MoveState::Done as i32);
    assert_eq!(
        h.states("/d/f0"),
        vec![("sa".into(), Valid), ("sc".into(), Valid)]
    );
    assert_eq!(h.inst("/d/f0", "sc").unwrap().checksum, "x0");
    let b = get_batch(&h.kv, c.batch).map_err(|_| "batch").unwrap();
    assert_eq!((b.count, b.done, b.claimed, b.pending), (3, 1, 1, 1));
    assert_eq!(b.bytes_done, 100);
    // Creating the same copy again skips what is already there or already moving.
    let again = h.create(&["/d"], "sc", MoveMode::Copy);
    assert!(again.move_ids.is_empty());
    assert_eq!(again.skipped.len(), 3);
}

#[test]
fn move_retires_the_source_only_after_the_target_is_valid() {
    let mut h = H::new(1);
    let c = h.create(&["/d/f0"], "sc", MoveMode::Move);
    let id = c.move_ids[0];
    // Release before the destination is valid: refused per item, nothing changes.
    let before = h.state();
    match h.run(Op::ReleaseDone(ReleaseDoneRequest {
        header: None,
        silo: "sa".into(),
        inos: vec![h.ino("/d/f0")],
    })) {
        Ok(R::ReleaseDone(r)) => {
            assert_eq!(r.released, 0);
            assert_eq!(r.not_releasing, vec![h.ino("/d/f0")]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(h.state(), before);
    let lease = h.register("sc", "agent-c");
    let t = h.claim(lease, "sc", 10).tasks.remove(0);
    assert_eq!(t.mode, MoveMode::Move as i32);
    let r = h.complete(H::done(&t));
    assert_eq!(r.outcome, CompleteOutcome::Committed as i32);
    assert_eq!(h.mv(id).state, MoveState::Releasing as i32);
    assert_eq!(
        h.states("/d/f0"),
        vec![("sa".into(), Releasing), ("sc".into(), Valid)]
    );
    // Writers may not write to a copy being released.
    let e = h.write("/d/f0", "sa", "new").unwrap_err();
    assert_eq!(e.0, ErrorCode::FailedPrecondition);
    assert!(e.1.contains("being released"), "{e:?}");
    // The source agent sees the release task, deletes, confirms.
    let lease_a = h.register("sa", "agent-a");
    let rel = h.claim(lease_a, "sa", 10).releases;
    assert_eq!(rel.len(), 1);
    assert_eq!((rel[0].location.as_str(), rel[0].move_id), ("d/f0", id));
    match h.run(Op::ReleaseDone(ReleaseDoneRequest {
        header: None,
        silo: "sa".into(),
        inos: vec![rel[0].ino],
    })) {
        Ok(R::ReleaseDone(r)) => assert_eq!(r.released, 1),
        other => panic!("{other:?}"),
    }
    assert_eq!(h.states("/d/f0"), vec![("sc".into(), Valid)]);
    assert_eq!(h.mv(id).state, MoveState::Done as i32);
    assert!(h.claim(lease_a, "sa", 10).releases.is_empty());
}

#[test]
fn stale_token_after_lease_expiry_is_refused() {
    let mut h = H::new(1);
    let id = h.create(&["/d/f0"], "sc", MoveMode::Copy).move_ids[0];
    let lease = h.register("sc", "agent-1");
    let old = h.claim(lease, "sc", 1).tasks.remove(0);
    // The agent pauses past its TTL; the leader expires the lease.
    h.now += 6_000;
    assert_eq!(h.expire(), 1);
    let m = h.mv(id);
    assert_eq!(m.state, MoveState::Pending as i32);
    assert_eq!((m.attempts, m.token), (1, 0));
    assert!(m.last_error.contains("expired"), "{m:?}");
    assert_eq!(h.inst("/d/f0", "sc").unwrap().state, Stale as i32);
    // The expired lease can no longer claim or renew.
    let e = h.try_claim(lease, "sc", 1).unwrap_err();
    assert_eq!(e.0, ErrorCode::NotFound);
    // After the backoff a new agent claims it with a new token.
    h.now += limits::BACKOFF_MAX_MS;
    let lease2 = h.register("sc", "agent-2");
    let new = h.claim(lease2, "sc", 1).tasks.remove(0);
    assert_ne!(new.token, old.token);
    assert_eq!(new.attempt, 2);
    // The paused agent wakes up and reports: refused, nothing changes.
    let before = h.state();
    let r = h.complete(H::done(&old));
    assert_eq!(r.outcome, CompleteOutcome::Refused as i32);
    assert!(r.error.contains("stale fencing token"), "{r:?}");
    assert_eq!(h.state(), before);
    h.refused(
        Op::Progress(ReportProgressRequest {
            header: None,
            move_id: id,
            token: old.token,
            bytes_done: 10,
        }),
        ErrorCode::FailedPrecondition,
        "stale fencing token",
    );
    let r = h.complete(H::done(&new));
    assert_eq!(r.outcome, CompleteOutcome::Committed as i32);
}

#[test]
fn write_during_copy_sends_the_move_back_and_wrong_generation_recopies() {
    let mut h = H::new(1);
    let id = h.create(&["/d/f0"], "sc", MoveMode::Move).move_ids[0];
    let lease = h.register("sc", "agent-c");
    let t1 = h.claim(lease, "sc", 1).tasks.remove(0);
    assert_eq!(t1.content_gen, 0);
    h.write("/d/f0", "sa", "y1").unwrap();
    let m = h.mv(id);
    assert_eq!(m.state, MoveState::Pending as i32);
    assert_eq!((m.recopies, m.attempts), (1, 0));
    assert_eq!(h.inst("/d/f0", "sc").unwrap().state, Stale as i32);
    // The old claim's commit is refused (its token died with the claim).
    let r = h.complete(H::done(&t1));
    assert_eq!(r.outcome, CompleteOutcome::Refused as i32);
    // Reclaimed at the new generation; a commit claiming another generation recopies.
    let t2 = h.claim(lease, "sc", 1).tasks.remove(0);
    assert_eq!((t2.content_gen, t2.source_checksum.as_str()), (1, "y1"));
    let mut wrong = H::done(&t2);
    wrong.copied_gen = 0;
    let r = h.complete(wrong);
    assert_eq!(r.outcome, CompleteOutcome::Recopy as i32);
    assert_eq!(h.mv(id).recopies, 2);
    // A copy whose checksum differs from the source's recopies too.
    let t3 = h.claim(lease, "sc", 1).tasks.remove(0);
    let mut torn = H::done(&t3);
    torn.checksum = "torn".into();
    assert_eq!(h.complete(torn).outcome, CompleteOutcome::Recopy as i32);
    let t4 = h.claim(lease, "sc", 1).tasks.remove(0);
    assert_eq!(
        h.complete(H::done(&t4)).outcome,
        CompleteOutcome::Committed as i32
    );
    let sc = h.inst("/d/f0", "sc").unwrap();
    assert_eq!((sc.state, sc.content_gen), (Valid as i32, 1));
}

#[test]
fn retryable_failures_back_off_and_end_in_failed() {
    let mut h = H::new(1);
    let id = h.create(&["/d/f0"], "sc", MoveMode::Copy).move_ids[0];
    let lease = h.register("sc", "agent-c");
    for attempt in 1..=3u32 {
        let t = h.claim(lease, "sc", 1).tasks.remove(0);
        assert_eq!(t.attempt, attempt);
        match h.run(Op::Fail(FailMoveRequest {
            header: None,
            move_id: id,
            token: t.token,
            reason: "disk full".into(),
            retryable: true,
        })) {
            Ok(R::Fail(_)) => {}
            other => panic!("{other:?}"),
        }
        // Backoff: not handed out again at once.
        if attempt < 3 {
            assert!(h.claim(lease, "sc", 1).tasks.is_empty());
            h.now += backoff_ms(attempt);
        }
    }
    let m = h.mv(id);
    assert_eq!(m.state, MoveState::Failed as i32);
    assert!(
        m.last_error.contains("gave up after 3 attempts: disk full"),
        "{m:?}"
    );
    // The source is untouched; the target copy is stale, not readable.
    assert_eq!(
        h.states("/d/f0"),
        vec![("sa".into(), Valid), ("sc".into(), Stale)]
    );
}

#[test]
fn cancel_mid_copy_cleans_the_filling_instance() {
    let mut h = H::new(1);
    let id = h.create(&["/d/f0"], "sc", MoveMode::Move).move_ids[0];
    let lease = h.register("sc", "agent-c");
    let t = h.claim(lease, "sc", 1).tasks.remove(0);
    match h.run(Op::Cancel(CancelMoveRequest {
        header: None,
        move_id: id,
        reason: "changed my mind".into(),
    })) {
        Ok(R::Cancel(r)) => assert_eq!(r.r#move.unwrap().state, MoveState::Cancelled as i32),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        h.states("/d/f0"),
        vec![("sa".into(), Valid), ("sc".into(), Stale)]
    );
    let r = h.complete(H::done(&t));
    assert_eq!(r.outcome, CompleteOutcome::Refused as i32);
    assert!(r.error.contains("cancelled"), "{r:?}");
    h.refused(
        Op::Cancel(CancelMoveRequest {
            header: None,
            move_id: id,
            reason: String::new(),
        }),
        ErrorCode::FailedPrecondition,
        "already cancelled",
    );
    // A committed move can no longer be cancelled.
    let id2 = h.create(&["/d/f0"], "sb", MoveMode::Move).move_ids[0];
    let lb = h.register("sb", "agent-b");
    let t = h.claim(lb, "sb", 1).tasks.remove(0);
    h.complete(H::done(&t));
    h.refused(
        Op::Cancel(CancelMoveRequest {
            header: None,
            move_id: id2,
            reason: String::new(),
        }),
        ErrorCode::FailedPrecondition,
        "has committed",
    );
}

#[test]
fn draining_and_offline_silos() {
    let mut h = H::new(2);
    h.topo(TOp::UpdateSilo(UpdateSiloRequest {
        name: "sc".into(),
        state: SiloState::Draining as i32,
        ..Default::default()
    }))
    .unwrap();
    h.refused(
        Op::Create(CreateMoveRequest {
            paths: vec!["/d/f0".into()],
            target_silo: "sc".into(),
            mode: MoveMode::Copy as i32,
            ..Default::default()
        }),
        ErrorCode::FailedPrecondition,
        "draining",
    );
    // Moving data OFF a draining silo is the point of draining.
    h.topo(TOp::UpdateSilo(UpdateSiloRequest {
        name: "sa".into(),
        state: SiloState::Draining as i32,
        ..Default::default()
    }))
    .unwrap();
    let id = h.create(&["/d/f0"], "sb", MoveMode::Move).move_ids[0];
    let lb = h.register("sb", "agent-b");
    let t = h.claim(lb, "sb", 1).tasks.remove(0);
    assert_eq!((t.move_id, t.source_silo.as_str()), (id, "sa"));
    // A silo that goes offline is no source: a new move from it finds nothing to copy.
    h.topo(TOp::UpdateSilo(UpdateSiloRequest {
        name: "sa".into(),
        state: SiloState::Offline as i32,
        ..Default::default()
    }))
    .unwrap();
    let c = h.create(&["/d/f1"], "sb", MoveMode::Copy);
    assert!(c.move_ids.is_empty());
    assert_eq!(c.skipped[0].reason, "no readable instance to copy from");
    h.refused(
        Op::Cancel(CancelMoveRequest {
            header: None,
            move_id: 999,
            reason: String::new(),
        }),
        ErrorCode::NotFound,
        "no move 999",
    );
}

#[test]
fn deleting_a_file_cancels_its_moves_and_restart_replaces_the_lease() {
    let mut h = H::new(2);
    let ids = h.create(&["/d"], "sc", MoveMode::Move).move_ids;
    let lease = h.register("sc", "agent-c");
    let tasks = h.claim(lease, "sc", 10).tasks;
    assert_eq!(tasks.len(), 2);
    h.cmd(CmdOp::Namespace(NamespaceOp {
        op: Some(namespace_op::Op::Unlink(Unlink {
            path: "/d/f0".into(),
        })),
    }));
    assert_eq!(h.mv(ids[0]).state, MoveState::Cancelled as i32);
    // The agent restarts and registers under the same name: the old claim returns at once,
    // without counting as a failed attempt.
    let lease2 = h.register("sc", "agent-c");
    assert_ne!(lease, lease2);
    let m = h.mv(ids[1]);
    assert_eq!((m.state, m.attempts), (MoveState::Pending as i32, 0));
    assert_eq!(h.claim(lease2, "sc", 10).tasks.len(), 1);
    assert!(agents::get(&h.kv, lease).unwrap().is_none());
}

#[test]
fn invalid_requests_name_the_field_and_change_nothing() {
    let mut h = H::new(1);
    let lease = h.register("sc", "agent-c");
    let cases: Vec<(Op, &str)> = vec![
        (Op::Create(CreateMoveRequest::default()), "paths"),
        (
            Op::Create(CreateMoveRequest {
                paths: vec!["rel".into()],
                target_silo: "sc".into(),
                mode: 1,
                ..Default::default()
            }),
            "paths",
        ),
        (
            Op::Create(CreateMoveRequest {
                paths: vec!["/d".into()],
                target_silo: "sc".into(),
                ..Default::default()
            }),
            "mode",
        ),
        (
            Op::Create(CreateMoveRequest {
                paths: vec!["/d".into()],
                target_silo: "sc".into(),
                mode: 1,
                owner: "o".repeat(300),
                ..Default::default()
            }),
            "owner",
        ),
        (
            Op::Claim(ClaimMovesRequest {
                lease,
                silo: "sc".into(),
                max: 5000,
                ..Default::default()
            }),
            "max",
        ),
        (
            Op::Complete(CompleteMovesRequest {
                header: None,
                completions: vec![],
            }),
            "completions",
        ),
        (
            Op::AgentRegister(AgentRegisterRequest {
                silo: "sc".into(),
                name: "bad name".into(),
                ..Default::default()
            }),
            "name",
        ),
        (
            Op::AgentRegister(AgentRegisterRequest {
                silo: "sc".into(),
                name: "n".into(),
                ttl_ms: 10,
                ..Default::default()
            }),
            "ttl_ms",
        ),
        (
            Op::ReleaseDone(ReleaseDoneRequest {
                header: None,
                silo: "sa".into(),
                inos: vec![0],
            }),
            "inos",
        ),
    ];
    for (op, field) in cases {
        h.refused(op, ErrorCode::InvalidArgument, field);
    }
    h.refused(
        Op::Create(CreateMoveRequest {
            paths: vec!["/d".into()],
            recursive: false,
            target_silo: "sc".into(),
            mode: 1,
            ..Default::default()
        }),
        ErrorCode::FailedPrecondition,
        "is a directory",
    );
    h.refused(
        Op::Claim(ClaimMovesRequest {
            lease,
            silo: "sa".into(),
            max: 1,
            ..Default::default()
        }),
        ErrorCode::FailedPrecondition,
        "belongs to silo sc",
    );
}

#[test]
fn import_is_idempotent_and_reports_conflicts() {
    let mut h = H::new(2);
    let again = h
        .topo(TOp::ImportFiles(ImportFilesRequest {
            header: None,
            silo: "sa".into(),
            files: vec![
                ImportEntry {
                    path: "/d/f0".into(),
                    size: 100,
                    checksum: "x0".into(),
                    ..Default::default()
                },
                ImportEntry {
                    path: "/d".into(),
                    size: 1,
                    ..Default::default()
                },
            ],
        }))
        .unwrap();
    let topology_reply::Result::ImportFiles(r) = again else {
        panic!("{again:?}")
    };
    assert_eq!((r.created, r.unchanged, r.conflicts), (0, 1, 1));
    assert!(r.results[1].detail.contains("not a file"), "{r:?}");
    // The same file found on another silo becomes a second valid instance; a different size
    // is a conflict.
    let other = h
        .topo(TOp::ImportFiles(ImportFilesRequest {
            header: None,
            silo: "sb".into(),
            files: vec![
                ImportEntry {
                    path: "/d/f0".into(),
                    size: 100,
                    checksum: "x0".into(),
                    location: "elsewhere/f0".into(),
                    ..Default::default()
                },
                ImportEntry {
                    path: "/d/f1".into(),
                    size: 7,
                    ..Default::default()
                },
            ],
        }))
        .unwrap();
    let topology_reply::Result::ImportFiles(r) = other else {
        panic!("{other:?}")
    };
    assert_eq!((r.instances_added, r.conflicts), (1, 1));
    assert_eq!(h.inst("/d/f0", "sb").unwrap().location, "elsewhere/f0");
    assert!(h.inst("/d/f1", "sb").is_none());
}

// ---------- property: invariants 3 and 4 under random schedules ----------

#[derive(Debug, Clone)]
enum Step {
    Create(usize, usize, bool),
    Claim(usize),
    Complete(usize, bool, bool),
    Fail(usize, bool),
    Write(usize, usize),
    Expire(u64),
    Cancel(usize),
    Release(usize),
    Register(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..3usize, 0..3usize, any::<bool>()).prop_map(|(f, s, m)| Step::Create(f, s, m)),
        (0..3usize).prop_map(Step::Claim),
        (0..8usize, any::<bool>(), any::<bool>()).prop_map(|(t, g, c)| Step::Complete(t, g, c)),
        (0..8usize, any::<bool>()).prop_map(|(t, r)| Step::Fail(t, r)),
        (0..3usize, 0..3usize).prop_map(|(f, s)| Step::Write(f, s)),
        (0..12_000u64).prop_map(Step::Expire),
        (0..8usize).prop_map(Step::Cancel),
        (0..3usize).prop_map(Step::Release),
        (0..3usize).prop_map(Step::Register),
    ]
}

const SILOS: [&str; 3] = ["sa", "sb", "sc"];

/// Invariant 3, and that every index row matches its record.
fn check_invariants(h: &H) {
    for f in 0..3 {
        let path = format!("/d/f{f}");
        let Ok(inode) = resolve_existing(&h.kv, "p", &path) else {
            continue;
        };
        let valid = crate::sm::topology::instances_of(&h.kv, inode.ino)
            .unwrap()
            .iter()
            .filter(|i| i.state == Valid as i32 && i.content_gen == inode.content_gen)
            .count();
        assert!(valid >= 1, "{path} has no valid instance");
    }
    let moves: Vec<Move> =
        h.kv.range(Table::Moves, &[], None, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(_, v)| Move::decode(v.as_slice()).unwrap())
            .collect();
    let pending = moves
        .iter()
        .filter(|m| m.state == MoveState::Pending as i32)
        .count();
    let active = moves.iter().filter(|m| is_active(m.state)).count();
    let claimed = moves.iter().filter(|m| is_claimed(m.state)).count();
    let rows = |t| h.kv.range(t, &[], None, usize::MAX).unwrap().len();
    assert_eq!(rows(Table::MovesPending), pending);
    assert_eq!(rows(Table::MovesByIno), active);
    assert_eq!(rows(Table::MovesByLease), claimed);
    for m in moves.iter().filter(|m| is_claimed(m.state)) {
        let t = crate::sm::topology::get_instance(&h.kv, m.ino, &m.target_silo).unwrap();
        assert_eq!(t.map(|t| t.state), Some(Filling as i32), "claimed {m:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_schedules_keep_a_valid_copy_and_fence_stale_tokens(
        steps in proptest::collection::vec(step(), 1..60)
    ) {
        let mut h = H::new(3);
        let mut leases: Vec<(u64, usize)> = Vec::new();
        let mut tasks: Vec<MoveTask> = Vec::new();
        for s in steps {
            match s {
                Step::Create(f, silo, mv) => {
                    let _ = h.run(Op::Create(CreateMoveRequest {
                        paths: vec![format!("/d/f{f}")],
                        target_silo: SILOS[silo].into(),
                        mode: if mv { MoveMode::Move } else { MoveMode::Copy } as i32,
                        ..Default::default()
                    }));
                }
                Step::Register(silo) => leases.push((h.register(SILOS[silo], &format!("ag{silo}-{}", h.seq)), silo)),
                Step::Claim(silo) => {
                    if let Some(&(lease, _)) = leases.iter().rev().find(|(_, s)| *s == silo) {
                        if let Ok(r) = h.try_claim(lease, SILOS[silo], 5) {
                            tasks.extend(r.tasks);
                            if !r.releases.is_empty() {
                                let inos = r.releases.iter().map(|r| r.ino).collect();
                                let _ = h.run(Op::ReleaseDone(ReleaseDoneRequest {
                                    header: None, silo: SILOS[silo].into(), inos,
                                }));
                            }
                        }
                    }
                }
                Step::Complete(t, good_gen, good_sum) => {
                    if let Some(task) = tasks.get(t).cloned() {
                        let mut c = H::done(&task);
                        if !good_gen { c.copied_gen += 1; }
                        if !good_sum { c.checksum = "bad".into(); }
                        let cur = h.mv(task.move_id);
                        let r = h.complete(c);
                        // Invariant 4: only the current token at the current generation commits.
                        if r.outcome == CompleteOutcome::Committed as i32 {
                            prop_assert_eq!(cur.token, task.token);
                            prop_assert!(is_claimed(cur.state));
                            let ino = task.ino;
                            let gen = crate::sm::model::get_inode(&h.kv, ino).unwrap().unwrap().content_gen;
                            prop_assert_eq!(gen, task.content_gen);
                        }
                        if cur.token != task.token {
                            prop_assert_eq!(r.outcome, CompleteOutcome::Refused as i32);
                        }
                    }
                }
                Step::Fail(t, retry) => {
                    if let Some(task) = tasks.get(t) {
                        let _ = h.run(Op::Fail(FailMoveRequest {
                            header: None, move_id: task.move_id, token: task.token,
                            reason: "x".into(), retryable: retry,
                        }));
                    }
                }
                Step::Write(f, silo) => { let _ = h.write(&format!("/d/f{f}"), SILOS[silo], &format!("w{}", h.seq)); }
                Step::Expire(dt) => { h.now += dt; h.expire(); }
                Step::Cancel(t) => {
                    if let Some(task) = tasks.get(t) {
                        let _ = h.run(Op::Cancel(CancelMoveRequest {
                            header: None, move_id: task.move_id, reason: String::new(),
                        }));
                    }
                }
                Step::Release(silo) => {
                    let _ = h.run(Op::ReleaseDone(ReleaseDoneRequest {
                        header: None, silo: SILOS[silo].into(), inos: vec![2, 3, 4, 5],
                    }));
                }
            }
            check_invariants(&h);
        }
    }
}

#[test]
fn root_is_never_a_move_target() {
    let mut h = H::new(0);
    h.refused(
        Op::Create(CreateMoveRequest {
            paths: vec!["/".into()],
            recursive: false,
            target_silo: "sc".into(),
            mode: 1,
            ..Default::default()
        }),
        ErrorCode::FailedPrecondition,
        "is a directory",
    );
    assert_eq!(ROOT_INO, 1);
}

/// Two mode-move moves of one file committing close together retire each other's copies;
/// a copy may then be released under the other move's id. Once nothing of the file is being
/// released, both moves must be done (found by the jepsen moves workload: one stayed
/// `releasing` forever).
#[test]
fn overlapping_move_mode_moves_both_finish_when_the_last_copy_is_released() {
    let mut h = H::new(1);
    let ino = h.ino("/d/f0");
    let to_b = h.create(&["/d/f0"], "sb", MoveMode::Move).move_ids[0];
    let to_c = h.create(&["/d/f0"], "sc", MoveMode::Move).move_ids[0];
    let lease_b = h.register("sb", "agent-b");
    let lease_c = h.register("sc", "agent-c");
    let tb = h.claim(lease_b, "sb", 10).tasks.remove(0);
    let tc = h.claim(lease_c, "sc", 10).tasks.remove(0);
    assert_eq!(
        h.complete(H::done(&tb)).outcome,
        CompleteOutcome::Committed as i32
    );
    assert_eq!(
        h.complete(H::done(&tc)).outcome,
        CompleteOutcome::Committed as i32
    );
    // Release every copy being released, silo by silo, as the agents would.
    for silo in ["sa", "sb", "sc"] {
        let lease = h.register(silo, &format!("rel-{silo}"));
        let rel = h.claim(lease, silo, 10).releases;
        if rel.is_empty() {
            continue;
        }
        match h.run(Op::ReleaseDone(ReleaseDoneRequest {
            header: None,
            silo: silo.into(),
            inos: rel.iter().map(|r| r.ino).collect(),
        })) {
            Ok(R::ReleaseDone(r)) => assert_eq!(r.released as usize, rel.len()),
            other => panic!("{other:?}"),
        }
    }
    let states = h.states("/d/f0");
    assert!(
        states.iter().all(|(_, s)| *s == Valid) && !states.is_empty(),
        "{states:?} (ino {ino})"
    );
    assert_eq!(h.mv(to_b).state, MoveState::Done as i32, "move to sb");
    assert_eq!(h.mv(to_c).state, MoveState::Done as i32, "move to sc");
}
