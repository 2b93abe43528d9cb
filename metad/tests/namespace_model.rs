//! Property test: random sequences of namespace operations (mkdir [-p], create, symlink, rename
//! in all three modes, unlink, rmdir, setattr, and Txns of them) applied to the real state
//! machine (`apply_command` on MemKv) and to a tiny reference model (a map path -> kind). Every
//! result must agree (success, or the same refusal code), the trees must be identical after
//! every step, and the state machine's tree invariants must hold after every step: every inode
//! but the root has exactly one entry and its parent/name match it, no cycles, no orphans,
//! child_count exact, revisions gap-free. A second property applies the same sequences in one
//! redb write transaction through `RedbWrite` (the store's write view, with its directory-entry
//! cache) and requires every reply and every row to match `MemKv`'s.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use metad::sm::kv::{KvRead, MemKv, Table};
use metad::sm::model::{ensure_root, events_from, get_inode, join, list_dir, ROOT_INO};
use metad::sm::{apply_command, revision};
use metad_proto::raft::v1::{command::Op, reply, Command};
use metad_proto::v1::*;
use metad_proto::ErrorCode;
use proptest::prelude::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Link,
}

impl Kind {
    fn pb(self) -> i32 {
        match self {
            Kind::Dir => InodeKind::Directory as i32,
            Kind::File => InodeKind::File as i32,
            Kind::Link => InodeKind::Symlink as i32,
        }
    }
}

#[derive(Debug, Clone)]
enum NsOp {
    Mkdir(String, bool),
    Create(String),
    Symlink(String),
    Rename(String, String, RenameMode),
    Unlink(String),
    Rmdir(String),
    SetSize(String),
    SetMode(String),
}

#[derive(Debug, Clone)]
enum Step {
    Ns(NsOp),
    Txn {
        cmp_path: String,
        expect_exists: bool,
        then_ops: Vec<NsOp>,
        else_ops: Vec<NsOp>,
    },
}

// ---------- reference model ----------

type Code = ErrorCode;
#[derive(Debug, Clone, Default, PartialEq)]
struct Model {
    // Every object but the root.
    tree: BTreeMap<String, Kind>,
}

fn parent(p: &str) -> String {
    match p.rfind('/') {
        Some(0) | None => "/".to_string(),
        Some(i) => p[..i].to_string(),
    }
}

fn under(p: &str, top: &str) -> bool {
    p.starts_with(&format!("{top}/"))
}

impl Model {
    fn kind(&self, p: &str) -> Option<Kind> {
        if p == "/" {
            Some(Kind::Dir)
        } else {
            self.tree.get(p).copied()
        }
    }

    /// As `model::resolve`: walk from the root; a missing component -> None, passing through a
    /// non-directory -> FAILED_PRECONDITION.
    fn resolve(&self, p: &str) -> Result<Option<Kind>, Code> {
        if p == "/" {
            return Ok(Some(Kind::Dir));
        }
        let mut cur = String::from("/");
        for c in p[1..].split('/') {
            if self.kind(&cur) != Some(Kind::Dir) {
                return Err(Code::FailedPrecondition);
            }
            cur = join(&cur, c);
            if self.kind(&cur).is_none() {
                return Ok(None);
            }
        }
        Ok(self.kind(p))
    }

    fn existing(&self, p: &str) -> Result<Kind, Code> {
        self.resolve(p)?.ok_or(Code::NotFound)
    }

    fn parent_dir(&self, p: &str) -> Result<(), Code> {
        match self.resolve(&parent(p))? {
            None => Err(Code::NotFound),
            Some(Kind::Dir) => Ok(()),
            Some(_) => Err(Code::FailedPrecondition),
        }
    }

    fn has_children(&self, p: &str) -> bool {
        self.tree.keys().any(|k| under(k, p))
    }

    fn take_subtree(&mut self, p: &str) -> Vec<(String, Kind)> {
        let keys: Vec<String> = self
            .tree
            .keys()
            .filter(|k| *k == p || under(k, p))
            .cloned()
            .collect();
        keys.into_iter()
            .map(|k| {
                let v = self.tree.remove(&k).unwrap();
                (k[p.len()..].to_string(), v)
            })
            .collect()
    }

    fn put_subtree(&mut self, at: &str, items: Vec<(String, Kind)>) {
        for (suffix, k) in items {
            self.tree.insert(format!("{at}{suffix}"), k);
        }
    }

    fn apply(&mut self, op: &NsOp) -> Result<(), Code> {
        match op {
            NsOp::Mkdir(p, false) => {
                if p == "/" {
                    return Err(Code::AlreadyExists);
                }
                self.parent_dir(p)?;
                if self.kind(p).is_some() {
                    return Err(Code::AlreadyExists);
                }
                self.tree.insert(p.clone(), Kind::Dir);
                Ok(())
            }
            NsOp::Mkdir(p, true) => {
                let mut next = self.clone();
                let comps: Vec<&str> = p[1..].split('/').filter(|c| !c.is_empty()).collect();
                let mut cur = String::from("/");
                for (i, c) in comps.iter().enumerate() {
                    cur = join(&cur, c);
                    match next.kind(&cur) {
                        Some(Kind::Dir) => {}
                        Some(_) if i + 1 == comps.len() => return Err(Code::AlreadyExists),
                        Some(_) => return Err(Code::FailedPrecondition),
                        None => {
                            next.tree.insert(cur.clone(), Kind::Dir);
                        }
                    }
                }
                *self = next;
                Ok(())
            }
            NsOp::Create(p) | NsOp::Symlink(p) => {
                if p == "/" {
                    return Err(Code::AlreadyExists);
                }
                self.parent_dir(p)?;
                if self.kind(p).is_some() {
                    return Err(Code::AlreadyExists);
                }
                let k = if matches!(op, NsOp::Create(_)) {
                    Kind::File
                } else {
                    Kind::Link
                };
                self.tree.insert(p.clone(), k);
                Ok(())
            }
            NsOp::Unlink(p) => {
                if p == "/" {
                    return Err(Code::InvalidArgument);
                }
                if self.existing(p)? == Kind::Dir {
                    return Err(Code::FailedPrecondition);
                }
                self.tree.remove(p);
                Ok(())
            }
            NsOp::Rmdir(p) => {
                if p == "/" {
                    return Err(Code::InvalidArgument);
                }
                if self.existing(p)? != Kind::Dir || self.has_children(p) {
                    return Err(Code::FailedPrecondition);
                }
                self.tree.remove(p);
                Ok(())
            }
            NsOp::SetSize(p) => match self.existing(p)? {
                Kind::File => Ok(()),
                _ => Err(Code::FailedPrecondition),
            },
            NsOp::SetMode(p) => self.existing(p).map(|_| ()),
            NsOp::Rename(src, dst, mode) => {
                if src == "/" || dst == "/" {
                    return Err(Code::InvalidArgument);
                }
                let sk = self.existing(src)?;
                self.parent_dir(dst)?;
                let dk = self.kind(dst);
                if src == dst {
                    return if *mode == RenameMode::NoReplace {
                        Err(Code::AlreadyExists)
                    } else {
                        Ok(())
                    };
                }
                if sk == Kind::Dir && under(dst, src) {
                    return Err(Code::InvalidArgument);
                }
                if *mode == RenameMode::Exchange {
                    let Some(dk) = dk else {
                        return Err(Code::NotFound);
                    };
                    if dk == Kind::Dir && under(src, dst) {
                        return Err(Code::InvalidArgument);
                    }
                    let a = self.take_subtree(src);
                    let b = self.take_subtree(dst);
                    self.put_subtree(dst, a);
                    self.put_subtree(src, b);
                    return Ok(());
                }
                if let Some(dk) = dk {
                    if *mode == RenameMode::NoReplace {
                        return Err(Code::AlreadyExists);
                    }
                    match (sk == Kind::Dir, dk == Kind::Dir) {
                        (true, false) | (false, true) => return Err(Code::FailedPrecondition),
                        (true, true) if self.has_children(dst) => {
                            return Err(Code::FailedPrecondition)
                        }
                        _ => {}
                    }
                    self.tree.remove(dst);
                }
                let a = self.take_subtree(src);
                self.put_subtree(dst, a);
                Ok(())
            }
        }
    }

    fn apply_step(&mut self, s: &Step) -> Result<Option<bool>, Code> {
        match s {
            Step::Ns(op) => self.apply(op).map(|_| None),
            Step::Txn {
                cmp_path,
                expect_exists,
                then_ops,
                else_ops,
            } => {
                // Every step of both branches is validated before anything runs.
                let invalid = |o: &NsOp| match o {
                    NsOp::Rename(s, d, _) => s == "/" || d == "/",
                    NsOp::Unlink(p) | NsOp::Rmdir(p) => p == "/",
                    _ => false,
                };
                if then_ops.iter().chain(else_ops).any(invalid) {
                    return Err(Code::InvalidArgument);
                }
                let exists = matches!(self.resolve(cmp_path), Ok(Some(_)));
                let ok = exists == *expect_exists;
                let mut next = self.clone();
                for op in if ok { then_ops } else { else_ops } {
                    next.apply(op)?;
                }
                *self = next;
                Ok(Some(ok))
            }
        }
    }

    fn listing(&self) -> Vec<(String, i32)> {
        self.tree.iter().map(|(p, k)| (p.clone(), k.pb())).collect()
    }
}

// ---------- the state machine side ----------

fn ns_op(op: &NsOp) -> NamespaceOp {
    use namespace_op::Op as O;
    let o = match op {
        NsOp::Mkdir(p, parents) => O::Mkdir(Mkdir {
            path: p.clone(),
            parents: *parents,
            ..Default::default()
        }),
        NsOp::Create(p) => O::Create(CreateFile {
            path: p.clone(),
            ..Default::default()
        }),
        NsOp::Symlink(p) => O::Symlink(Symlink {
            path: p.clone(),
            target: "t".into(),
            ..Default::default()
        }),
        NsOp::Rename(s, d, m) => O::Rename(Rename {
            src: s.clone(),
            dst: d.clone(),
            mode: *m as i32,
        }),
        NsOp::Unlink(p) => O::Unlink(Unlink { path: p.clone() }),
        NsOp::Rmdir(p) => O::Rmdir(Rmdir { path: p.clone() }),
        NsOp::SetSize(p) => O::SetAttr(SetAttr {
            path: p.clone(),
            size: Some(7),
            ..Default::default()
        }),
        NsOp::SetMode(p) => O::SetAttr(SetAttr {
            path: p.clone(),
            mode: Some(0o700),
            ..Default::default()
        }),
    };
    NamespaceOp { op: Some(o) }
}

fn steps(ops: &[NsOp]) -> Vec<TxnStep> {
    ops.iter()
        .map(|o| TxnStep {
            op: Some(txn_step::Op::Namespace(ns_op(o))),
        })
        .collect()
}

fn command(seq: u64, s: &Step) -> Command {
    let op = match s {
        Step::Ns(o) => Op::Namespace(ns_op(o)),
        Step::Txn {
            cmp_path,
            expect_exists,
            then_ops,
            else_ops,
        } => Op::Txn(TxnOp {
            compares: vec![Compare {
                path: cmp_path.clone(),
                target: CompareTarget::Exists as i32,
                op: CompareOp::Equal as i32,
                exists: *expect_exists,
                ..Default::default()
            }],
            then_ops: steps(then_ops),
            else_ops: steps(else_ops),
        }),
    };
    Command {
        client_id: "prop".into(),
        seq,
        leader_time_ms: seq * 10,
        op: Some(op),
    }
}

/// Walks the state machine's tree, asserting its invariants; returns (path, kind) sorted.
fn sm_listing(kv: &MemKv) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut stack = vec![(ROOT_INO, "/".to_string())];
    while let Some((dir, path)) = stack.pop() {
        assert!(seen.insert(dir), "inode {dir} reached twice: cycle");
        let d = get_inode(kv, dir).unwrap().expect("directory inode");
        let entries = list_dir(kv, dir, None, usize::MAX).unwrap();
        assert_eq!(d.child_count, entries.len() as u64, "child_count of {path}");
        let names: BTreeSet<&String> = entries.iter().map(|(n, _)| n).collect();
        assert_eq!(names.len(), entries.len(), "duplicate names in {path}");
        for (name, ino) in &entries {
            let i = get_inode(kv, *ino)
                .unwrap()
                .expect("entry points at an inode");
            assert_eq!(i.parent, dir, "parent of {name}");
            assert_eq!(&i.name, name, "name of inode {ino}");
            let p = join(&path, name);
            out.push((p.clone(), i.kind));
            if i.kind == InodeKind::Directory as i32 {
                stack.push((*ino, p));
            } else {
                assert!(seen.insert(*ino), "inode {ino} has two entries");
            }
        }
    }
    let inodes = kv.range(Table::Inodes, &[], None, usize::MAX).unwrap();
    assert_eq!(
        inodes.len(),
        seen.len(),
        "inodes without an entry (orphans)"
    );
    out.sort();
    out
}

// ---------- generators ----------

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 0..=3)
        .prop_map(|c| format!("/{}", c.join("/")))
}

fn ns_op_strategy() -> impl Strategy<Value = NsOp> {
    let mode = prop::sample::select(vec![
        RenameMode::Replace,
        RenameMode::Replace,
        RenameMode::NoReplace,
        RenameMode::Exchange,
    ]);
    prop_oneof![
        3 => (path(), any::<bool>()).prop_map(|(p, b)| NsOp::Mkdir(p, b)),
        3 => path().prop_map(NsOp::Create),
        1 => path().prop_map(NsOp::Symlink),
        4 => (path(), path(), mode).prop_map(|(s, d, m)| NsOp::Rename(s, d, m)),
        2 => path().prop_map(NsOp::Unlink),
        2 => path().prop_map(NsOp::Rmdir),
        1 => path().prop_map(NsOp::SetSize),
        1 => path().prop_map(NsOp::SetMode),
    ]
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => ns_op_strategy().prop_map(Step::Ns),
        1 => (
            path(),
            any::<bool>(),
            prop::collection::vec(ns_op_strategy(), 0..4),
            prop::collection::vec(ns_op_strategy(), 0..3),
        )
            .prop_map(|(cmp_path, expect_exists, then_ops, else_ops)| Step::Txn {
                cmp_path,
                expect_exists,
                then_ops,
                else_ops,
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn state_machine_matches_reference_model(ops in prop::collection::vec(step_strategy(), 1..60)) {
        let mut kv = MemKv::default();
        ensure_root(&mut kv).unwrap();
        let mut model = Model::default();
        for (i, s) in ops.iter().enumerate() {
            let before = revision(&kv).unwrap();
            let expected = model.apply_step(s);
            let reply = apply_command(&mut kv, &command(i as u64 + 1, s)).unwrap();
            let after = revision(&kv).unwrap();
            match (&expected, &reply.result) {
                (Err(code), Some(reply::Result::Error(e))) => {
                    prop_assert_eq!(code.as_str(), e.code.as_str(), "step {} {:?}: {}", i, s, e.message);
                    prop_assert_eq!(after, before, "a refusal moved the revision");
                }
                (Ok(None), Some(reply::Result::Namespace(_))) => {}
                (Ok(Some(ok)), Some(reply::Result::Txn(t))) => {
                    prop_assert_eq!(*ok, t.succeeded, "step {} {:?}", i, s);
                }
                (exp, got) => prop_assert!(false, "step {} {:?}: model {:?}, state machine {:?}", i, s, exp, got),
            }
            prop_assert!(after == before || after == before + 1, "revision gap");
            if after > before {
                // Every change is visible to Watch: events at exactly the new revision.
                let ev = events_from(&kv, after, 1000).unwrap();
                prop_assert!(!ev.is_empty(), "step {} changed state without an event", i);
                prop_assert!(ev.iter().all(|e| e.revision == after && e.inode.is_some()));
            }
            prop_assert_eq!(reply.revision, after);
            prop_assert_eq!(sm_listing(&kv), model.listing(), "trees differ after step {} {:?}", i, s);
        }
    }

    /// The store's write view answers exactly as `MemKv` when a whole sequence runs in one
    /// transaction, as a batch does: its directory-entry cache must follow every rename,
    /// unlink and rmdir in between.
    #[test]
    fn redb_write_view_matches_memkv_in_one_transaction(ops in prop::collection::vec(step_strategy(), 1..60)) {
        use metad::store::redb_kv::RedbWrite;
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("sm.redb")).unwrap();
        let w = db.begin_write().unwrap();
        let mut redb_kv = RedbWrite::new(&w);
        let mut mem = MemKv::default();
        ensure_root(&mut mem).unwrap();
        ensure_root(&mut redb_kv).unwrap();
        for (i, s) in ops.iter().enumerate() {
            let cmd = command(i as u64 + 1, s);
            let want = apply_command(&mut mem, &cmd).unwrap();
            let got = apply_command(&mut redb_kv, &cmd).unwrap();
            prop_assert_eq!(&got, &want, "step {} {:?}", i, s);
        }
        for t in [Table::Dentries, Table::Inodes, Table::Events] {
            let m = mem.range(t, &[], None, usize::MAX).unwrap();
            let r = redb_kv.range(t, &[], None, usize::MAX).unwrap();
            prop_assert_eq!(r, m, "{:?} rows differ", t);
        }
    }
}
