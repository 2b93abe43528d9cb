//! Unit tests of the topology/location commands through the full apply path (overlay,
//! sessions, events, revision).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use metad_proto::raft::v1::{command::Op as CmdOp, reply, Command};
use metad_proto::v1::topology_op::Op;
use metad_proto::v1::topology_reply::Result as R;
use metad_proto::v1::*;
use metad_proto::ErrorCode;

use super::*;
use crate::sm::apply::{apply_command, revision};
use crate::sm::kv::MemKv;
use crate::sm::model::ApplyError;
use crate::sm::model::{alloc_ino, events_from, get_inode, put_dentry, put_inode, ROOT_INO};

struct H {
    kv: MemKv,
    seq: u64,
    now: u64,
}

impl H {
    fn new() -> Self {
        let mut kv = MemKv::default();
        crate::sm::model::ensure_root(&mut kv).unwrap();
        H {
            kv,
            seq: 0,
            now: 1_000,
        }
    }

    fn run(&mut self, op: Op) -> Result<(R, u64), (ErrorCode, String)> {
        self.seq += 1;
        self.now += 1;
        let cmd = Command {
            client_id: "t".into(),
            seq: self.seq,
            leader_time_ms: self.now,
            op: Some(CmdOp::Topology(TopologyOp { op: Some(op) })),
        };
        let r = apply_command(&mut self.kv, &cmd).expect("apply");
        match r.result {
            Some(reply::Result::Topology(TopologyReply { result: Some(res) })) => {
                Ok((res, r.revision))
            }
            Some(reply::Result::Error(e)) => Err((e.code.parse().expect("code"), e.message)),
            other => panic!("unexpected reply {other:?}"),
        }
    }

    fn ok(&mut self, op: Op) -> R {
        match self.run(op.clone()) {
            Ok((r, _)) => r,
            Err(e) => panic!("{op:?} refused: {e:?}"),
        }
    }

    fn refused(&mut self, op: Op, code: ErrorCode, needle: &str) {
        let before = self.topology_state();
        match self.run(op.clone()) {
            Ok(r) => panic!("{op:?} should be refused, got {r:?}"),
            Err((c, msg)) => {
                assert_eq!(c, code, "{op:?}: {msg}");
                assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
            }
        }
        assert_eq!(
            self.topology_state(),
            before,
            "a refused {op:?} changed state"
        );
    }

    /// Everything a topology refusal must leave untouched (sessions and leader time may move).
    fn topology_state(&self) -> Vec<Option<std::collections::BTreeMap<Vec<u8>, Vec<u8>>>> {
        let mut v: Vec<_> = [
            Table::Sites,
            Table::Silos,
            Table::Instances,
            Table::SiloInstances,
            Table::Tombstones,
            Table::Inodes,
            Table::Events,
        ]
        .iter()
        .map(|t| self.kv.tables.get(t).cloned())
        .collect();
        v.push(Some(
            [(
                b"rev".to_vec(),
                revision(&self.kv).unwrap().to_be_bytes().to_vec(),
            )]
            .into(),
        ));
        v
    }

    fn site(&mut self, name: &str) {
        self.ok(Op::RegisterSite(RegisterSiteRequest {
            name: name.into(),
            ..Default::default()
        }));
    }

    fn silo(&mut self, name: &str, site: &str, tier: SiloTier, cost: f64) {
        self.ok(Op::RegisterSilo(silo_req(name, site, tier, cost)));
    }

    /// Creates a directory or file directly with the model helpers (no namespace ops here).
    fn mk(&mut self, parent: u64, name: &str, kind: InodeKind) -> u64 {
        crate::sm::model::ensure_root(&mut self.kv).unwrap();
        let ino = alloc_ino(&mut self.kv).unwrap();
        put_inode(
            &mut self.kv,
            &Inode {
                ino,
                kind: kind as i32,
                parent,
                name: name.into(),
                size: 100,
                ..Default::default()
            },
        )
        .unwrap();
        put_dentry(&mut self.kv, parent, name, ino).unwrap();
        let mut p = get_inode(&self.kv, parent).unwrap().unwrap();
        p.child_count += 1;
        put_inode(&mut self.kv, &p).unwrap();
        ino
    }

    fn add(&mut self, path: &str, silo: &str) -> Instance {
        match self.ok(Op::AddInstance(AddInstanceRequest {
            path: path.into(),
            silo: silo.into(),
            checksum: "c0".into(),
            ..Default::default()
        })) {
            R::AddInstance(r) => r.instance.unwrap(),
            r => panic!("{r:?}"),
        }
    }

    fn locate(&self, path: &str, site: &str) -> LocateResponse {
        locate(
            &self.kv,
            &LocateRequest {
                path: path.into(),
                client_site: site.into(),
                ..Default::default()
            },
        )
        .map_err(|e| format!("{e:?}"))
        .unwrap()
    }

    fn events_at(&self, rev: u64) -> Vec<Event> {
        events_from(&self.kv, rev, 1000)
            .unwrap()
            .into_iter()
            .filter(|e| e.revision == rev)
            .collect()
    }
}

fn silo_req(name: &str, site: &str, tier: SiloTier, cost: f64) -> RegisterSiloRequest {
    RegisterSiloRequest {
        name: name.into(),
        site: site.into(),
        kind: SiloKind::Posix as i32,
        tier: tier as i32,
        capacity_bytes: 1 << 40,
        cost_per_gib_month: cost,
        root: format!("/mnt/{name}"),
        ..Default::default()
    }
}

fn located_silos(r: &LocateResponse) -> Vec<String> {
    r.instances
        .iter()
        .map(|l| l.instance.as_ref().unwrap().silo.clone())
        .collect()
}

#[test]
fn register_sites_and_silos_lists_them_and_emits_events() {
    let mut h = H::new();
    h.site("site-b");
    h.site("site-a");
    let (r, rev) = h
        .run(Op::RegisterSilo(silo_req(
            "nas1",
            "site-a",
            SiloTier::Warm,
            0.02,
        )))
        .unwrap();
    let R::RegisterSilo(r) = r else { panic!() };
    let silo = r.silo.unwrap();
    assert_eq!(silo.state, SiloState::Online as i32);
    assert_eq!(silo.create_revision, rev);
    assert_eq!(rev, 3, "one revision per command");
    let ev = h.events_at(rev);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].kind, EventKind::SiloChanged as i32);
    assert_eq!(
        (ev[0].silo.as_str(), ev[0].site.as_str()),
        ("nas1", "site-a")
    );
    assert_eq!(h.events_at(1)[0].kind, EventKind::SiteChanged as i32);

    let sites: Vec<String> = list_sites(&h.kv)
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(sites, ["site-a", "site-b"]);
    h.silo("s3b", "site-b", SiloTier::Cold, 0.01);
    let all = list_silos(&h.kv, &ListSilosRequest::default()).unwrap();
    assert_eq!(all.len(), 2);
    let only_b = list_silos(
        &h.kv,
        &ListSilosRequest {
            site: "site-b".into(),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(only_b.len(), 1);
    assert_eq!(only_b[0].name, "s3b");
}

#[test]
fn silo_on_unknown_site_and_duplicates_are_refused() {
    let mut h = H::new();
    h.refused(
        Op::RegisterSilo(silo_req("nas1", "nowhere", SiloTier::Hot, 0.0)),
        ErrorCode::NotFound,
        "site: site nowhere",
    );
    h.site("a");
    h.refused(
        Op::RegisterSite(RegisterSiteRequest {
            name: "a".into(),
            ..Default::default()
        }),
        ErrorCode::AlreadyExists,
        "name: site a",
    );
    h.silo("nas1", "a", SiloTier::Hot, 0.0);
    h.refused(
        Op::RegisterSilo(silo_req("nas1", "a", SiloTier::Cold, 1.0)),
        ErrorCode::AlreadyExists,
        "name: silo nas1",
    );
}

#[test]
fn update_silo_changes_state_usage_labels_and_noop_keeps_revision() {
    let mut h = H::new();
    h.site("a");
    h.silo("nas1", "a", SiloTier::Hot, 0.0);
    let (r, rev) = h
        .run(Op::UpdateSilo(UpdateSiloRequest {
            name: "nas1".into(),
            state: SiloState::Draining as i32,
            used_bytes: Some(42),
            set_labels: [("rack".to_string(), "r1".to_string())].into(),
            ..Default::default()
        }))
        .unwrap();
    let R::UpdateSilo(r) = r else { panic!() };
    let s = r.silo.unwrap();
    assert_eq!(s.state, SiloState::Draining as i32);
    assert_eq!(s.used_bytes, 42);
    assert_eq!(s.labels.get("rack").map(String::as_str), Some("r1"));
    assert_eq!(s.mod_revision, rev);
    let ev = h.events_at(rev);
    assert!(
        ev[0].detail.contains("state=draining"),
        "{:?}",
        ev[0].detail
    );
    let stored = get_silo(&h.kv, "nas1").unwrap().unwrap();
    assert_eq!(stored, s);

    // Same values again: nothing changes, the revision stays.
    let (_, rev2) = h
        .run(Op::UpdateSilo(UpdateSiloRequest {
            name: "nas1".into(),
            used_bytes: Some(42),
            ..Default::default()
        }))
        .unwrap();
    assert_eq!(rev2, rev);
    h.ok(Op::UpdateSilo(UpdateSiloRequest {
        name: "nas1".into(),
        remove_labels: vec!["rack".into()],
        ..Default::default()
    }));
    assert!(get_silo(&h.kv, "nas1").unwrap().unwrap().labels.is_empty());
    h.refused(
        Op::UpdateSilo(UpdateSiloRequest {
            name: "ghost".into(),
            ..Default::default()
        }),
        ErrorCode::NotFound,
        "name: silo ghost",
    );
}

#[test]
fn add_instance_refusals() {
    let mut h = H::new();
    h.site("a");
    h.silo("nas1", "a", SiloTier::Hot, 0.0);
    h.silo("off", "a", SiloTier::Hot, 0.0);
    h.ok(Op::UpdateSilo(UpdateSiloRequest {
        name: "off".into(),
        state: SiloState::Offline as i32,
        ..Default::default()
    }));
    let d = h.mk(ROOT_INO, "d", InodeKind::Directory);
    h.mk(d, "f", InodeKind::File);
    let add = |path: &str, silo: &str| {
        Op::AddInstance(AddInstanceRequest {
            path: path.into(),
            silo: silo.into(),
            ..Default::default()
        })
    };
    h.refused(
        add("/d", "nas1"),
        ErrorCode::FailedPrecondition,
        "path: /d is not a file",
    );
    h.refused(add("/d/g", "nas1"), ErrorCode::NotFound, "path: /d/g");
    h.refused(
        add("/d/f", "ghost"),
        ErrorCode::NotFound,
        "silo: silo ghost",
    );
    h.refused(
        add("/d/f", "off"),
        ErrorCode::FailedPrecondition,
        "silo: silo off is offline",
    );
    h.refused(
        Op::AddInstance(AddInstanceRequest {
            path: "/d/f".into(),
            silo: "nas1".into(),
            content_gen: Some(5),
            ..Default::default()
        }),
        ErrorCode::InvalidArgument,
        "content_gen",
    );
    let inst = h.add("/d/f", "nas1");
    assert_eq!(inst.state, InstanceState::Valid as i32);
    assert_eq!(inst.bytes, 100, "bytes default to the file's size");
    assert_eq!(inst.path, "/d/f");
    h.refused(add("/d/f", "nas1"), ErrorCode::AlreadyExists, "silo: nas1");
}

/// Two sites; silos of different tiers and costs. Locate orders same-site first, then tier,
/// then cost; RecordWrite stales every other copy so only the written one is returned.
#[test]
fn locate_orders_and_record_write_stales_other_instances() {
    let mut h = H::new();
    h.site("a");
    h.site("b");
    h.silo("a-nvme", "a", SiloTier::Hot, 0.20);
    h.silo("a-s3", "a", SiloTier::Cold, 0.01);
    h.silo("b-hot", "b", SiloTier::Hot, 0.10);
    h.silo("b-hot-cheap", "b", SiloTier::Hot, 0.05);
    h.silo("b-warm", "b", SiloTier::Warm, 0.01);
    let f = h.mk(ROOT_INO, "f", InodeKind::File);
    for s in ["b-warm", "a-s3", "b-hot", "a-nvme", "b-hot-cheap"] {
        h.add("/f", s);
    }
    assert_eq!(
        located_silos(&h.locate("/f", "b")),
        ["b-hot-cheap", "b-hot", "b-warm", "a-nvme", "a-s3"]
    );
    let from_a = h.locate("/f", "a");
    assert_eq!(
        located_silos(&from_a),
        ["a-nvme", "a-s3", "b-hot-cheap", "b-hot", "b-warm"]
    );
    assert!(from_a.instances[0].same_site && !from_a.instances[2].same_site);
    assert!(from_a.moves.is_empty());
    assert_eq!(
        located_silos(&h.locate("/f", "")),
        ["b-hot-cheap", "b-hot", "a-nvme", "b-warm", "a-s3"],
        "no site: tier then cost"
    );

    let (r, rev) = h
        .run(Op::RecordWrite(RecordWriteRequest {
            path: "/f".into(),
            silo: "b-warm".into(),
            size: 4096,
            mtime_ms: Some(777),
            checksum: "sha256:ab".into(),
            ..Default::default()
        }))
        .unwrap();
    let R::RecordWrite(r) = r else { panic!() };
    let inode = r.inode.unwrap();
    assert_eq!(
        (inode.content_gen, inode.size, inode.mtime_ms),
        (1, 4096, 777)
    );
    assert_eq!(get_inode(&h.kv, f).unwrap().unwrap(), inode);
    assert_eq!(r.staled, ["a-nvme", "a-s3", "b-hot", "b-hot-cheap"]);
    let inst = r.instance.unwrap();
    assert_eq!(
        (inst.state, inst.content_gen),
        (InstanceState::Valid as i32, 1)
    );
    for s in ["a-nvme", "a-s3", "b-hot", "b-hot-cheap"] {
        let i = get_instance(&h.kv, f, s).unwrap().unwrap();
        assert_eq!(
            (i.state, i.content_gen),
            (InstanceState::Stale as i32, 0),
            "{s}"
        );
    }
    let kinds: Vec<i32> = h.events_at(rev).iter().map(|e| e.kind).collect();
    assert_eq!(kinds[0], EventKind::ContentWritten as i32);
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == EventKind::InstanceChanged as i32)
            .count(),
        5,
        "4 staled + the written one: {kinds:?}"
    );
    for site in ["a", "b", ""] {
        let l = h.locate("/f", site);
        assert_eq!(located_silos(&l), ["b-warm"], "from {site:?}");
        assert_eq!(l.content_gen, 1);
    }

    // A write at a silo with no instance yet adds it; the old valid one goes stale.
    let (r, _) = h
        .run(Op::RecordWrite(RecordWriteRequest {
            path: "/f".into(),
            silo: "a-nvme".into(),
            size: 10,
            ..Default::default()
        }))
        .unwrap();
    let R::RecordWrite(r) = r else { panic!() };
    assert_eq!(r.staled, ["b-warm"]);
    assert_eq!(located_silos(&h.locate("/f", "b")), ["a-nvme"]);
    // An older generation registered later is stale, never readable.
    h.ok(Op::RemoveSilo(RemoveSiloRequest {
        name: "a-s3".into(),
        ..Default::default()
    }));
    h.silo("a-s3", "a", SiloTier::Cold, 0.01);
    let old = match h.ok(Op::AddInstance(AddInstanceRequest {
        path: "/f".into(),
        silo: "a-s3".into(),
        content_gen: Some(1),
        ..Default::default()
    })) {
        R::AddInstance(r) => r.instance.unwrap(),
        r => panic!("{r:?}"),
    };
    assert_eq!(old.state, InstanceState::Stale as i32);
    assert_eq!(located_silos(&h.locate("/f", "a")), ["a-nvme"]);
}

#[test]
fn locate_skips_offline_silos_and_refuses_non_files() {
    let mut h = H::new();
    h.site("a");
    h.silo("s1", "a", SiloTier::Hot, 0.0);
    h.silo("s2", "a", SiloTier::Warm, 0.0);
    h.mk(ROOT_INO, "f", InodeKind::File);
    h.mk(ROOT_INO, "d", InodeKind::Directory);
    h.add("/f", "s1");
    h.add("/f", "s2");
    h.ok(Op::UpdateSilo(UpdateSiloRequest {
        name: "s1".into(),
        state: SiloState::Offline as i32,
        ..Default::default()
    }));
    assert_eq!(located_silos(&h.locate("/f", "a")), ["s2"]);
    let e = locate(
        &h.kv,
        &LocateRequest {
            path: "/d".into(),
            ..Default::default()
        },
    );
    assert!(
        matches!(e, Err(ApplyError::Refused(ref r)) if r.code == ErrorCode::FailedPrecondition)
    );
    // Writing at an offline silo is refused.
    h.refused(
        Op::RecordWrite(RecordWriteRequest {
            path: "/f".into(),
            silo: "s1".into(),
            size: 1,
            ..Default::default()
        }),
        ErrorCode::FailedPrecondition,
        "offline",
    );
}

#[test]
fn remove_silo_refused_while_it_holds_the_only_valid_copy() {
    let mut h = H::new();
    h.site("a");
    h.silo("s1", "a", SiloTier::Hot, 0.0);
    h.silo("s2", "a", SiloTier::Hot, 0.0);
    let d = h.mk(ROOT_INO, "data", InodeKind::Directory);
    let f = h.mk(d, "only", InodeKind::File);
    h.add("/data/only", "s1");
    let rm = |n: &str| {
        Op::RemoveSilo(RemoveSiloRequest {
            name: n.into(),
            ..Default::default()
        })
    };
    h.refused(rm("s1"), ErrorCode::FailedPrecondition, "/data/only");
    // A stale copy elsewhere does not count.
    h.ok(Op::RecordWrite(RecordWriteRequest {
        path: "/data/only".into(),
        silo: "s1".into(),
        size: 1,
        ..Default::default()
    }));
    h.ok(Op::AddInstance(AddInstanceRequest {
        path: "/data/only".into(),
        silo: "s2".into(),
        content_gen: Some(0),
        ..Default::default()
    }));
    h.refused(
        rm("s1"),
        ErrorCode::FailedPrecondition,
        "only valid instance",
    );
    // s2 holds only a stale copy: it may go.
    let (r, rev) = h.run(rm("s2")).unwrap();
    let R::RemoveSilo(r) = r else { panic!() };
    assert_eq!(r.instances_removed, 1);
    assert!(get_instance(&h.kv, f, "s2").unwrap().is_none());
    assert!(get_silo(&h.kv, "s2").unwrap().is_none());
    let kinds: Vec<i32> = h.events_at(rev).iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::InstanceRemoved as i32,
            EventKind::SiloChanged as i32
        ]
    );
    // With a second valid copy, s1 may go too.
    h.silo("s2", "a", SiloTier::Hot, 0.0);
    h.add("/data/only", "s2");
    h.ok(rm("s1"));
    assert_eq!(located_silos(&h.locate("/data/only", "a")), ["s2"]);
    h.refused(rm("s1"), ErrorCode::NotFound, "name: silo s1");
}

#[test]
fn file_deletion_turns_instances_into_tombstones_until_reclaimed() {
    let mut h = H::new();
    h.site("a");
    h.silo("s1", "a", SiloTier::Hot, 0.0);
    h.silo("s2", "a", SiloTier::Cold, 0.0);
    let d = h.mk(ROOT_INO, "d", InodeKind::Directory);
    let f = h.mk(d, "f", InodeKind::File);
    h.add("/d/f", "s1");
    h.add("/d/f", "s2");
    let before = instances_of(&h.kv, f).unwrap();
    assert_eq!(before.len(), 2);

    // What the namespace unlink does, inside one command.
    let mut ctx = ApplyCtx::new(revision(&h.kv).unwrap() + 1, 5);
    on_file_deleted(&mut h.kv, &mut ctx, f)
        .map_err(|e| format!("{e:?}"))
        .unwrap();
    assert!(instances_of(&h.kv, f).unwrap().is_empty());
    assert_eq!(ctx.events.len(), 2);
    assert!(ctx
        .events
        .iter()
        .all(|e| e.kind == EventKind::InstanceRemoved as i32 && e.path == "/d/f"));
    assert!(ctx.changed);
    let page = list_instances(
        &h.kv,
        &ListInstancesRequest {
            silo: "s1".into(),
            ..Default::default()
        },
    )
    .map_err(|e| format!("{e:?}"))
    .unwrap();
    assert!(page.0.is_empty(), "no instances left on s1");
    let (tombs, next) = list_tombstones(
        &h.kv,
        &ListTombstonesRequest {
            silo: "s1".into(),
            ..Default::default()
        },
    )
    .map_err(|e| format!("{e:?}"))
    .unwrap();
    assert_eq!(tombs.len(), 1);
    assert_eq!((tombs[0].ino, tombs[0].path.as_str()), (f, "/d/f"));
    assert_eq!(tombs[0].state, InstanceState::Valid as i32);
    assert!(next.is_empty());
    // A deleted file never blocks silo removal... but confirm first.
    let (r, rev) = h
        .run(Op::ConfirmReclaimed(ConfirmReclaimedRequest {
            silo: "s1".into(),
            ino: f,
            ..Default::default()
        }))
        .unwrap();
    let R::ConfirmReclaimed(r) = r else { panic!() };
    assert_eq!(r.tombstone.unwrap().ino, f);
    assert_eq!(h.events_at(rev)[0].detail, "tombstone reclaimed");
    h.refused(
        Op::ConfirmReclaimed(ConfirmReclaimedRequest {
            silo: "s1".into(),
            ino: f,
            ..Default::default()
        }),
        ErrorCode::NotFound,
        "no tombstone",
    );
    // Removing s2 drops its unconfirmed tombstone.
    let R::RemoveSilo(r) = h.ok(Op::RemoveSilo(RemoveSiloRequest {
        name: "s2".into(),
        ..Default::default()
    })) else {
        panic!()
    };
    assert_eq!((r.instances_removed, r.tombstones_removed), (0, 1));
    // A file without instances: nothing happens.
    let g = h.mk(d, "g", InodeKind::File);
    let mut ctx = ApplyCtx::new(revision(&h.kv).unwrap() + 1, 6);
    on_file_deleted(&mut h.kv, &mut ctx, g)
        .map_err(|e| format!("{e:?}"))
        .unwrap();
    assert!(!ctx.changed);
}

#[test]
fn list_instances_pages_by_cursor() {
    let mut h = H::new();
    h.site("a");
    h.silo("s1", "a", SiloTier::Hot, 0.0);
    h.silo("s10", "a", SiloTier::Hot, 0.0);
    for i in 0..7 {
        let name = format!("f{i}");
        h.mk(ROOT_INO, &name, InodeKind::File);
        h.add(&format!("/{name}"), "s1");
    }
    h.mk(ROOT_INO, "other", InodeKind::File);
    h.add("/other", "s10");
    let mut cursor = String::new();
    let mut seen = Vec::new();
    loop {
        let (page, next) = list_instances(
            &h.kv,
            &ListInstancesRequest {
                silo: "s1".into(),
                cursor: cursor.clone(),
                limit: 3,
                ..Default::default()
            },
        )
        .map_err(|e| format!("{e:?}"))
        .unwrap();
        assert!(page.len() <= 3);
        seen.extend(page.into_iter().map(|i| i.path));
        if next.is_empty() {
            break;
        }
        cursor = next;
    }
    let want: Vec<String> = (0..7).map(|i| format!("/f{i}")).collect();
    assert_eq!(seen, want, "every instance of s1 once, none of s10");
    let bad = |limit: u32, cursor: &str, silo: &str| {
        list_instances(
            &h.kv,
            &ListInstancesRequest {
                silo: silo.into(),
                cursor: cursor.into(),
                limit,
                ..Default::default()
            },
        )
    };
    assert!(
        matches!(bad(10_001, "", "s1"), Err(ApplyError::Refused(r)) if r.message.starts_with("limit"))
    );
    assert!(bad(10_000, "", "s1").is_ok());
    assert!(
        matches!(bad(0, "zz", "s1"), Err(ApplyError::Refused(r)) if r.message.starts_with("cursor"))
    );
    assert!(
        matches!(bad(0, "", "ghost"), Err(ApplyError::Refused(r)) if r.code == ErrorCode::NotFound)
    );
}

/// One over each limit is INVALID_ARGUMENT naming the field, and changes nothing; exactly at
/// the limit is accepted.
#[test]
fn one_over_each_limit_is_invalid_argument_and_changes_nothing() {
    use super::limits as L;
    let mut h = H::new();
    h.site("a");
    h.mk(ROOT_INO, "f", InodeKind::File);
    h.mk(ROOT_INO, "d", InodeKind::Directory);
    let site = |f: &dyn Fn(&mut RegisterSiteRequest)| {
        let mut r = RegisterSiteRequest {
            name: "s".into(),
            ..Default::default()
        };
        f(&mut r);
        Op::RegisterSite(r)
    };
    let silo = |f: &dyn Fn(&mut RegisterSiloRequest)| {
        let mut r = silo_req("x", "a", SiloTier::Hot, 0.1);
        f(&mut r);
        Op::RegisterSilo(r)
    };
    let labels = |n: usize, k: usize, v: usize| -> std::collections::BTreeMap<String, String> {
        (0..n)
            .map(|i| (format!("{i:0>width$}", width = k), "v".repeat(v)))
            .collect()
    };
    let bad = [
        (site(&|r| r.name = "n".repeat(L::NAME_MAX + 1)), "name"),
        (site(&|r| r.name = String::new()), "name"),
        (site(&|r| r.name = "a b".into()), "name"),
        (site(&|r| r.name = "a/b".into()), "name"),
        (
            site(&|r| r.description = "d".repeat(L::TEXT_MAX + 1)),
            "description",
        ),
        (site(&|r| r.region = "d".repeat(L::TEXT_MAX + 1)), "region"),
        (
            site(&|r| r.labels = labels(L::LABELS_MAX + 1, 3, 1)),
            "labels",
        ),
        (
            site(&|r| r.labels = labels(1, L::LABEL_KEY_MAX + 1, 1)),
            "labels",
        ),
        (
            site(&|r| r.labels = labels(1, 3, L::LABEL_VALUE_MAX + 1)),
            "labels",
        ),
        (silo(&|r| r.name = "n".repeat(L::NAME_MAX + 1)), "name"),
        (silo(&|r| r.site = "n".repeat(L::NAME_MAX + 1)), "site"),
        (silo(&|r| r.kind = 0), "kind"),
        (silo(&|r| r.kind = 99), "kind"),
        (silo(&|r| r.tier = 0), "tier"),
        (silo(&|r| r.capacity_bytes = 0), "capacity_bytes"),
        (silo(&|r| r.cost_per_gib_month = -0.5), "cost_per_gib_month"),
        (
            silo(&|r| r.cost_per_gib_month = f64::NAN),
            "cost_per_gib_month",
        ),
        (silo(&|r| r.root = "r".repeat(L::ROOT_MAX + 1)), "root"),
        (silo(&|r| r.root = String::new()), "root"),
        (
            silo(&|r| r.labels = labels(L::LABELS_MAX + 1, 3, 1)),
            "labels",
        ),
        (
            Op::UpdateSilo(UpdateSiloRequest {
                name: "x".into(),
                state: 17,
                ..Default::default()
            }),
            "state",
        ),
        (
            Op::UpdateSilo(UpdateSiloRequest {
                name: "x".into(),
                remove_labels: vec!["k".repeat(L::LABEL_KEY_MAX + 1)],
                ..Default::default()
            }),
            "remove_labels",
        ),
        (
            Op::AddInstance(AddInstanceRequest {
                path: "/f".into(),
                silo: "x".into(),
                checksum: "c".repeat(L::CHECKSUM_MAX + 1),
                ..Default::default()
            }),
            "checksum",
        ),
        (
            Op::AddInstance(AddInstanceRequest {
                path: "f".into(),
                silo: "x".into(),
                ..Default::default()
            }),
            "path",
        ),
        (
            Op::RecordWrite(RecordWriteRequest {
                path: "/f".into(),
                silo: "x".into(),
                checksum: "c".repeat(L::CHECKSUM_MAX + 1),
                ..Default::default()
            }),
            "checksum",
        ),
        (
            Op::ConfirmReclaimed(ConfirmReclaimedRequest {
                silo: "x".into(),
                ino: 0,
                ..Default::default()
            }),
            "ino",
        ),
    ];
    for (op, field) in bad {
        h.refused(op, ErrorCode::InvalidArgument, &format!("{field}:"));
    }
    // Exactly at every limit: accepted.
    h.ok(site(&|r| {
        r.name = "n".repeat(L::NAME_MAX);
        r.description = "d".repeat(L::TEXT_MAX);
        r.labels = labels(L::LABELS_MAX, L::LABEL_KEY_MAX, L::LABEL_VALUE_MAX);
    }));
    h.ok(silo(&|r| {
        r.name = "x".into();
        r.root = "r".repeat(L::ROOT_MAX);
        r.labels = labels(L::LABELS_MAX, 3, 1);
    }));
    // A label update that would push the silo past 64 labels is refused too.
    h.refused(
        Op::UpdateSilo(UpdateSiloRequest {
            name: "x".into(),
            set_labels: [("extra".to_string(), "v".to_string())].into(),
            ..Default::default()
        }),
        ErrorCode::InvalidArgument,
        "set_labels:",
    );
    h.ok(Op::AddInstance(AddInstanceRequest {
        path: "/f".into(),
        silo: "x".into(),
        checksum: "c".repeat(L::CHECKSUM_MAX),
        ..Default::default()
    }));
    h.refused(
        Op::RecordWrite(RecordWriteRequest {
            path: "/d".into(),
            silo: "x".into(),
            ..Default::default()
        }),
        ErrorCode::FailedPrecondition,
        "path: /d is not a file",
    );
}

/// A retried RecordWrite (same client_id and seq) returns the first reply and does not bump
/// the content generation twice.
#[test]
fn retried_record_write_applies_once() {
    let mut h = H::new();
    h.site("a");
    h.silo("s1", "a", SiloTier::Hot, 0.0);
    let f = h.mk(ROOT_INO, "f", InodeKind::File);
    let cmd = Command {
        client_id: "agent".into(),
        seq: 1,
        leader_time_ms: 9_000,
        op: Some(CmdOp::Topology(TopologyOp {
            op: Some(Op::RecordWrite(RecordWriteRequest {
                path: "/f".into(),
                silo: "s1".into(),
                size: 5,
                ..Default::default()
            })),
        })),
    };
    let first = apply_command(&mut h.kv, &cmd).unwrap();
    let again = apply_command(&mut h.kv, &cmd).unwrap();
    assert_eq!(first, again);
    assert_eq!(get_inode(&h.kv, f).unwrap().unwrap().content_gen, 1);
    assert_eq!(revision(&h.kv).unwrap(), first.revision);
}
