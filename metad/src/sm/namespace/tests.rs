//! Unit tests: every namespace op and Txn through `apply_command` with real Commands on MemKv,
//! every refusal (code and field), events, revisions and tree bookkeeping.

use metad_proto::raft::v1::{command::Op, reply, Command, Reply};
use metad_proto::v1::*;
use metad_proto::ErrorCode;

use crate::sm::apply_command;
use crate::sm::kv::MemKv;
use crate::sm::model::{events_from, get_inode, resolve, ROOT_INO};

struct Sm {
    kv: MemKv,
    seq: u64,
}

fn ns(op: namespace_op::Op) -> Op {
    Op::Namespace(NamespaceOp { op: Some(op) })
}

fn mkdir(path: &str) -> Op {
    ns(namespace_op::Op::Mkdir(Mkdir {
        path: path.into(),
        ..Default::default()
    }))
}

fn mkdir_p(path: &str) -> Op {
    ns(namespace_op::Op::Mkdir(Mkdir {
        path: path.into(),
        parents: true,
        ..Default::default()
    }))
}

fn create(path: &str) -> Op {
    ns(namespace_op::Op::Create(CreateFile {
        path: path.into(),
        ..Default::default()
    }))
}

fn symlink(path: &str, target: &str) -> Op {
    ns(namespace_op::Op::Symlink(Symlink {
        path: path.into(),
        target: target.into(),
        ..Default::default()
    }))
}

fn rename(src: &str, dst: &str, mode: RenameMode) -> Op {
    ns(namespace_op::Op::Rename(Rename {
        src: src.into(),
        dst: dst.into(),
        mode: mode as i32,
    }))
}

fn unlink(path: &str) -> Op {
    ns(namespace_op::Op::Unlink(Unlink { path: path.into() }))
}

fn rmdir(path: &str) -> Op {
    ns(namespace_op::Op::Rmdir(Rmdir { path: path.into() }))
}

impl Sm {
    fn new() -> Sm {
        let mut kv = MemKv::default();
        crate::sm::model::ensure_root(&mut kv).expect("root");
        Sm { kv, seq: 0 }
    }

    fn run(&mut self, op: Op) -> Reply {
        self.seq += 1;
        let cmd = Command {
            client_id: "t".into(),
            seq: self.seq,
            leader_time_ms: 1_000 + self.seq,
            op: Some(op),
        };
        apply_command(&mut self.kv, &cmd).expect("apply")
    }

    fn ok(&mut self, op: Op) -> NamespaceReply {
        let before = revision(&self.kv);
        match self.run(op) {
            Reply {
                result: Some(reply::Result::Namespace(r)),
                revision: at,
            } => {
                assert!(at >= before);
                r
            }
            other => panic!("expected success, got {other:?}"),
        }
    }

    fn txn(&mut self, t: TxnOp) -> Result<TxnReply, (ErrorCode, String)> {
        match self.run(Op::Txn(t)) {
            Reply {
                result: Some(reply::Result::Txn(r)),
                ..
            } => Ok(r),
            Reply {
                result: Some(reply::Result::Error(e)),
                ..
            } => Err((e.code.parse().expect("code"), e.message)),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Expects a refusal with `code`; asserts nothing but leader time/session changed.
    fn refused(&mut self, op: Op, code: ErrorCode) -> String {
        let rev = revision(&self.kv);
        let tree = self.tree();
        match self.run(op) {
            Reply {
                result: Some(reply::Result::Error(e)),
                revision: at,
            } => {
                assert_eq!(e.code, code.as_str(), "{}", e.message);
                assert_eq!(at, rev);
                assert_eq!(revision(&self.kv), rev);
                assert_eq!(self.tree(), tree, "a refusal changed the tree");
                e.message
            }
            other => panic!("expected {code}, got {other:?}"),
        }
    }

    fn stat(&self, path: &str) -> Option<Inode> {
        resolve(&self.kv, "path", path).expect("resolve")
    }

    /// Every (path, kind) in the tree, checking the invariants on the way.
    fn tree(&self) -> Vec<(String, i32)> {
        check_tree(&self.kv)
    }
}

fn revision<K: crate::sm::KvRead>(kv: &K) -> u64 {
    crate::sm::revision(kv).expect("rev")
}

/// Walks the tree from the root, checking: parent/name of every inode match its dentry,
/// child_count is right, every inode is reached exactly once (no cycles, no orphans).
pub(crate) fn check_tree(kv: &MemKv) -> Vec<(String, i32)> {
    use crate::sm::kv::{KvRead, Table};
    use crate::sm::model::list_dir;
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut stack = vec![(ROOT_INO, "/".to_string())];
    while let Some((dir, path)) = stack.pop() {
        assert!(
            seen.insert(dir),
            "inode {dir} reached twice (cycle or hard link)"
        );
        let d = get_inode(kv, dir).expect("get").expect("dir exists");
        assert_eq!(d.kind, InodeKind::Directory as i32);
        let entries = list_dir(kv, dir, None, usize::MAX).expect("ls");
        assert_eq!(d.child_count, entries.len() as u64, "child_count of {path}");
        for (name, ino) in entries {
            let i = get_inode(kv, ino)
                .expect("get")
                .expect("entry has an inode");
            assert_eq!(
                (i.parent, i.name.as_str()),
                (dir, name.as_str()),
                "back link of {ino}"
            );
            let p = crate::sm::model::join(&path, &name);
            out.push((p.clone(), i.kind));
            if i.kind == InodeKind::Directory as i32 {
                stack.push((ino, p));
            } else {
                assert!(seen.insert(ino), "inode {ino} reached twice");
            }
        }
    }
    let all = kv
        .range(Table::Inodes, &[], None, usize::MAX)
        .expect("inodes");
    assert_eq!(all.len(), seen.len(), "orphan inodes exist");
    out.sort();
    out
}

#[test]
fn mkdir_create_symlink_and_events() {
    let mut sm = Sm::new();
    let d = sm.ok(mkdir("/a"));
    assert_eq!(d.created, 1);
    let a = d.inode.expect("inode");
    assert_eq!((a.parent, a.name.as_str(), a.mode), (ROOT_INO, "a", 0o755));
    assert_eq!(a.create_revision, 1);
    assert_eq!(a.mod_revision, 1);
    let f = sm.ok(create("/a/f")).inode.expect("inode");
    assert_eq!(
        (f.kind, f.mode, f.content_gen),
        (InodeKind::File as i32, 0o644, 0)
    );
    assert_eq!(f.mtime_ms, 1_002);
    let l = sm.ok(symlink("/a/l", "../x")).inode.expect("inode");
    assert_eq!((l.symlink_target.as_str(), l.size), ("../x", 4));
    assert_eq!(sm.stat("/a").expect("a").child_count, 2);
    assert_eq!(sm.stat("/a").expect("a").mod_revision, 3);
    assert_eq!(sm.stat("/").expect("root").child_count, 1);
    let ev = events_from(&sm.kv, 0, 100).expect("events");
    let kinds: Vec<(u64, i32, &str)> = ev
        .iter()
        .map(|e| (e.revision, e.kind, e.path.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (1, EventKind::Created as i32, "/a"),
            (2, EventKind::Created as i32, "/a/f"),
            (3, EventKind::Created as i32, "/a/l"),
        ]
    );
    assert_eq!(ev[1].inode.as_ref().expect("inode").ino, f.ino);
    assert_eq!(sm.tree().len(), 3);
}

#[test]
fn create_honours_optional_attrs() {
    let mut sm = Sm::new();
    let f = sm
        .ok(ns(namespace_op::Op::Create(CreateFile {
            path: "/f".into(),
            mode: Some(0o600),
            uid: Some(7),
            gid: Some(8),
            size: Some(42),
            mtime_ms: Some(5),
        })))
        .inode
        .expect("inode");
    assert_eq!(
        (f.mode, f.uid, f.gid, f.size, f.mtime_ms),
        (0o600, 7, 8, 42, 5)
    );
}

#[test]
fn mkdir_refusals() {
    let mut sm = Sm::new();
    sm.ok(mkdir("/a"));
    sm.ok(create("/a/f"));
    sm.refused(mkdir("/a"), ErrorCode::AlreadyExists);
    sm.refused(mkdir("/"), ErrorCode::AlreadyExists);
    sm.refused(mkdir("/x/y"), ErrorCode::NotFound);
    sm.refused(mkdir("/a/f/y"), ErrorCode::FailedPrecondition);
    sm.refused(mkdir("/a/f"), ErrorCode::AlreadyExists);
    let m = sm.refused(mkdir("a"), ErrorCode::InvalidArgument);
    assert!(m.starts_with("path:"), "{m}");
    let m = sm.refused(
        ns(namespace_op::Op::Mkdir(Mkdir {
            path: "/m".into(),
            mode: Some(0o10000),
            ..Default::default()
        })),
        ErrorCode::InvalidArgument,
    );
    assert!(m.starts_with("mode:") && m.contains("0o7777"), "{m}");
    let long = format!("/{}", "n".repeat(256));
    sm.refused(mkdir(&long), ErrorCode::InvalidArgument);
}

#[test]
fn mkdir_parents() {
    let mut sm = Sm::new();
    let r = sm.ok(mkdir_p("/a/b/c"));
    assert_eq!(r.created, 3);
    let rev = revision(&sm.kv);
    let again = sm.ok(mkdir_p("/a/b/c"));
    assert_eq!(again.created, 0);
    assert_eq!(revision(&sm.kv), rev, "an existing directory is no change");
    assert_eq!(again.inode.expect("i").ino, r.inode.expect("i").ino);
    assert_eq!(sm.ok(mkdir_p("/")).created, 0);
    sm.ok(create("/a/f"));
    sm.refused(mkdir_p("/a/f/x"), ErrorCode::FailedPrecondition);
    sm.refused(mkdir_p("/a/f"), ErrorCode::AlreadyExists);
    assert_eq!(sm.ok(mkdir_p("/a/b/d/e")).created, 2);
    // One command, one revision, one event per created directory.
    let ev = events_from(&sm.kv, revision(&sm.kv), 10).expect("ev");
    assert_eq!(ev.len(), 2);
    sm.tree();
}

#[test]
fn symlink_refusals() {
    let mut sm = Sm::new();
    sm.refused(symlink("/l", ""), ErrorCode::InvalidArgument);
    let m = sm.refused(symlink("/l", &"t".repeat(4097)), ErrorCode::InvalidArgument);
    assert!(m.starts_with("target:") && m.contains("4096"), "{m}");
    sm.ok(symlink("/l", &"t".repeat(4096)));
    sm.refused(symlink("/l", "x"), ErrorCode::AlreadyExists);
    // Symlinks are never followed.
    sm.ok(mkdir("/d"));
    sm.ok(symlink("/s", "/d"));
    sm.refused(create("/s/f"), ErrorCode::FailedPrecondition);
}

#[test]
fn unlink_and_rmdir() {
    let mut sm = Sm::new();
    sm.ok(mkdir_p("/a/b"));
    let f = sm.ok(create("/a/f")).inode.expect("f");
    sm.ok(symlink("/a/l", "f"));
    sm.refused(unlink("/a/b"), ErrorCode::FailedPrecondition);
    sm.refused(unlink("/a/zz"), ErrorCode::NotFound);
    sm.refused(unlink("/"), ErrorCode::InvalidArgument);
    sm.refused(rmdir("/a"), ErrorCode::FailedPrecondition);
    sm.refused(rmdir("/a/f"), ErrorCode::FailedPrecondition);
    sm.refused(rmdir("/a/zz"), ErrorCode::NotFound);
    sm.refused(rmdir("/"), ErrorCode::InvalidArgument);
    let gone = sm.ok(unlink("/a/f")).inode.expect("gone");
    assert_eq!(gone.ino, f.ino);
    assert!(get_inode(&sm.kv, f.ino).expect("get").is_none());
    sm.ok(unlink("/a/l"));
    sm.ok(rmdir("/a/b"));
    sm.ok(rmdir("/a"));
    assert_eq!(sm.tree(), vec![]);
    let ev = events_from(&sm.kv, revision(&sm.kv), 10).expect("ev");
    assert_eq!(ev[0].kind, EventKind::Deleted as i32);
    assert_eq!(ev[0].path, "/a");
    assert_eq!(sm.stat("/").expect("root").child_count, 0);
}

#[test]
fn rename_file_and_dir() {
    let mut sm = Sm::new();
    sm.ok(mkdir_p("/a/b"));
    sm.ok(mkdir("/c"));
    let f = sm.ok(create("/a/b/f")).inode.expect("f");
    let r = sm.ok(rename("/a/b/f", "/c/g", RenameMode::Replace));
    let moved = r.inode.expect("inode");
    assert_eq!(
        (moved.ino, moved.parent, moved.name.as_str()),
        (f.ino, sm.stat("/c").expect("c").ino, "g")
    );
    assert!(sm.stat("/a/b/f").is_none());
    let ev = events_from(&sm.kv, revision(&sm.kv), 10).expect("ev");
    assert_eq!(ev.len(), 1);
    assert_eq!(
        (ev[0].kind, ev[0].old_path.as_str(), ev[0].path.as_str()),
        (EventKind::Renamed as i32, "/a/b/f", "/c/g")
    );
    // A directory moves with its subtree.
    sm.ok(rename("/a", "/c/a2", RenameMode::Replace));
    assert!(sm.stat("/c/a2/b").is_some());
    assert_eq!(sm.stat("/c").expect("c").child_count, 2);
    assert_eq!(sm.stat("/").expect("root").child_count, 1);
    // Renaming onto itself: no change; with NO_REPLACE: exists.
    let rev = revision(&sm.kv);
    sm.ok(rename("/c/g", "/c/g", RenameMode::Replace));
    assert_eq!(revision(&sm.kv), rev);
    sm.refused(
        rename("/c/g", "/c/g", RenameMode::NoReplace),
        ErrorCode::AlreadyExists,
    );
    sm.tree();
}

#[test]
fn rename_replace_rules() {
    let mut sm = Sm::new();
    sm.ok(mkdir_p("/d1/x"));
    sm.ok(mkdir("/d2"));
    sm.ok(mkdir("/e"));
    let f1 = sm.ok(create("/f1")).inode.expect("f1");
    let f2 = sm.ok(create("/f2")).inode.expect("f2");
    sm.refused(
        rename("/f1", "/d2", RenameMode::Replace),
        ErrorCode::FailedPrecondition,
    );
    sm.refused(
        rename("/d2", "/f1", RenameMode::Replace),
        ErrorCode::FailedPrecondition,
    );
    sm.refused(
        rename("/d2", "/d1", RenameMode::Replace),
        ErrorCode::FailedPrecondition,
    );
    sm.refused(
        rename("/f1", "/f2", RenameMode::NoReplace),
        ErrorCode::AlreadyExists,
    );
    sm.refused(
        rename("/nope", "/f2", RenameMode::Replace),
        ErrorCode::NotFound,
    );
    sm.refused(
        rename("/f1", "/nope/x", RenameMode::Replace),
        ErrorCode::NotFound,
    );
    sm.refused(
        rename("/f1", "/f2/x", RenameMode::Replace),
        ErrorCode::FailedPrecondition,
    );
    sm.refused(
        rename("/", "/x", RenameMode::Replace),
        ErrorCode::InvalidArgument,
    );
    sm.refused(
        rename("/f1", "/", RenameMode::Replace),
        ErrorCode::InvalidArgument,
    );
    // Into its own subtree.
    let m = sm.refused(
        rename("/d1", "/d1/x/y", RenameMode::Replace),
        ErrorCode::InvalidArgument,
    );
    assert!(m.contains("own subtree"), "{m}");
    sm.refused(
        rename("/d1", "/d1/y", RenameMode::Replace),
        ErrorCode::InvalidArgument,
    );
    // The ancestor of the source is never empty, so it cannot be replaced.
    sm.refused(
        rename("/d1/x", "/d1", RenameMode::Replace),
        ErrorCode::FailedPrecondition,
    );
    // File replaces file: the target inode is gone.
    let r = sm.ok(rename("/f1", "/f2", RenameMode::Replace));
    assert_eq!(r.replaced.expect("replaced").ino, f2.ino);
    assert!(get_inode(&sm.kv, f2.ino).expect("get").is_none());
    assert_eq!(sm.stat("/f2").expect("f2").ino, f1.ino);
    let ev = events_from(&sm.kv, revision(&sm.kv), 10).expect("ev");
    assert_eq!(
        ev.iter().map(|e| e.kind).collect::<Vec<_>>(),
        vec![EventKind::Deleted as i32, EventKind::Renamed as i32]
    );
    // Dir replaces empty dir.
    let e = sm.stat("/e").expect("e");
    sm.ok(rename("/d2", "/e", RenameMode::Replace));
    assert!(get_inode(&sm.kv, e.ino).expect("get").is_none());
    sm.tree();
}

#[test]
fn rename_exchange() {
    let mut sm = Sm::new();
    sm.ok(mkdir_p("/a/b"));
    sm.ok(create("/a/f"));
    sm.ok(mkdir("/c"));
    let b = sm.stat("/a/b").expect("b");
    let c = sm.stat("/c").expect("c");
    sm.refused(
        rename("/a/b", "/zz", RenameMode::Exchange),
        ErrorCode::NotFound,
    );
    sm.refused(
        rename("/a", "/a/b", RenameMode::Exchange),
        ErrorCode::InvalidArgument,
    );
    sm.refused(
        rename("/a/b", "/a", RenameMode::Exchange),
        ErrorCode::InvalidArgument,
    );
    sm.refused(
        rename("/a/f", "/a", RenameMode::Exchange),
        ErrorCode::InvalidArgument,
    );
    let r = sm.ok(rename("/a/b", "/c", RenameMode::Exchange));
    assert_eq!(r.inode.expect("i").ino, b.ino);
    assert_eq!(sm.stat("/c").expect("c").ino, b.ino);
    assert_eq!(sm.stat("/a/b").expect("b").ino, c.ino);
    // Different kinds may be exchanged.
    sm.ok(rename("/a/f", "/c", RenameMode::Exchange));
    assert_eq!(sm.stat("/c").expect("c").kind, InodeKind::File as i32);
    let ev = events_from(&sm.kv, revision(&sm.kv), 10).expect("ev");
    assert_eq!(ev.len(), 2);
    assert!(ev
        .iter()
        .all(|e| e.detail == "exchange" && e.kind == EventKind::Renamed as i32));
    sm.tree();
}

#[test]
fn setattr() {
    let mut sm = Sm::new();
    sm.ok(mkdir("/d"));
    let f = sm.ok(create("/d/f")).inode.expect("f");
    let sa = |path: &str, s: SetAttr| {
        ns(namespace_op::Op::SetAttr(SetAttr {
            path: path.into(),
            ..s
        }))
    };
    let r = sm
        .ok(sa(
            "/d/f",
            SetAttr {
                mode: Some(0o640),
                size: Some(100),
                mtime_ms: Some(9),
                ..Default::default()
            },
        ))
        .inode
        .expect("i");
    assert_eq!((r.mode, r.size, r.mtime_ms, r.uid), (0o640, 100, 9, 0));
    assert_eq!(r.mod_revision, revision(&sm.kv));
    assert_eq!(r.create_revision, f.create_revision);
    let ev = events_from(&sm.kv, revision(&sm.kv), 10).expect("ev");
    assert_eq!(ev[0].kind, EventKind::AttrChanged as i32);
    sm.refused(sa("/d/f", SetAttr::default()), ErrorCode::InvalidArgument);
    sm.refused(
        sa(
            "/d/f",
            SetAttr {
                mode: Some(0o17777),
                ..Default::default()
            },
        ),
        ErrorCode::InvalidArgument,
    );
    sm.refused(
        sa(
            "/d",
            SetAttr {
                size: Some(1),
                ..Default::default()
            },
        ),
        ErrorCode::FailedPrecondition,
    );
    sm.refused(
        sa(
            "/nope",
            SetAttr {
                uid: Some(1),
                ..Default::default()
            },
        ),
        ErrorCode::NotFound,
    );
    sm.ok(sa(
        "/",
        SetAttr {
            uid: Some(5),
            ..Default::default()
        },
    ));
}

#[test]
fn retry_returns_first_reply() {
    let mut sm = Sm::new();
    let cmd = Command {
        client_id: "c".into(),
        seq: 1,
        leader_time_ms: 1,
        op: Some(create("/f")),
    };
    let first = apply_command(&mut sm.kv, &cmd).expect("apply");
    let again = apply_command(&mut sm.kv, &cmd).expect("apply");
    assert_eq!(first, again);
    assert_eq!(revision(&sm.kv), 1);
}

#[test]
fn queries() {
    let mut sm = Sm::new();
    sm.ok(mkdir("/d"));
    for i in 0..25 {
        sm.ok(create(&format!("/d/f{i:02}")));
    }
    sm.ok(create("/g"));
    let d = super::stat_path(&sm.kv, "/d").expect("stat");
    let (again, path) = super::stat_ino(&sm.kv, d.ino).expect("stat ino");
    assert_eq!((again.ino, path.as_str()), (d.ino, "/d"));
    assert_eq!(super::stat_ino(&sm.kv, ROOT_INO).expect("root").1, "/");
    assert!(super::stat_ino(&sm.kv, 9999).is_err());
    let f = super::lookup_entry(&sm.kv, d.ino, "f03").expect("lookup");
    assert_eq!(f.name, "f03");
    assert!(super::lookup_entry(&sm.kv, d.ino, "zz").is_err());
    assert!(super::lookup_entry(&sm.kv, f.ino, "x").is_err());
    let mut names = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = super::read_dir(&sm.kv, "/d", &cursor, 10, false).expect("page");
        assert!(page.entries.len() <= 10);
        assert!(page.entries.iter().all(|e| e.attrs.is_none()));
        names.extend(page.entries.into_iter().map(|e| e.name));
        if page.next_start_after.is_empty() {
            break;
        }
        cursor = page.next_start_after;
    }
    assert_eq!(names.len(), 25);
    assert!(names.windows(2).all(|w| w[0] < w[1]));
    let page = super::read_dir(&sm.kv, "/", "", 0, true).expect("root");
    assert_eq!(page.entries.len(), 2);
    assert!(page.next_start_after.is_empty());
    assert!(page.entries[0].attrs.is_some());
    assert!(super::read_dir(&sm.kv, "/", "", 10_001, false).is_err());
    assert!(super::read_dir(&sm.kv, "/", "", 10_000, false).is_ok());
    assert!(super::read_dir(&sm.kv, "/g", "", 1, false).is_err());
}

mod txn;

#[test]
fn queries_before_anything_is_applied_see_an_empty_root() {
    let kv = MemKv::default();
    assert_eq!(super::stat_path(&kv, "/").expect("root").ino, ROOT_INO);
    assert_eq!(super::stat_ino(&kv, ROOT_INO).expect("root").1, "/");
    let page = super::read_dir(&kv, "/", "", 0, true).expect("ls /");
    assert!(page.entries.is_empty() && page.next_start_after.is_empty());
    let e = super::lookup_entry(&kv, ROOT_INO, "x").expect_err("absent");
    assert!(matches!(e, crate::sm::ApplyError::Refused(r) if r.code == ErrorCode::NotFound));
}
