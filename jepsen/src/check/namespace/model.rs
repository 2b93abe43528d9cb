//! The model tree of the `namespace` checker: the subtree below the workload's base directory,
//! built by replaying the change log. Owns event application (with the tree invariants: no
//! cycle, one name per directory, no orphan) and metad's refusal rules (which error a
//! namespace operation gets on a given state), mirrored from `metad/src/sm/namespace*`.

use std::collections::{BTreeMap, HashMap};

/// The model's id for the base directory (real inode numbers are positive).
pub const ROOT: u64 = 0;

/// Kind of an object, as the workload records it ("file", "dir", "symlink").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "file" => Some(Kind::File),
            "dir" => Some(Kind::Dir),
            "symlink" => Some(Kind::Symlink),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "symlink",
        }
    }
}

/// One event of the change log ("log-event" observation).
#[derive(Debug, Clone, PartialEq)]
pub struct LogEvent {
    pub rev: u64,
    /// "created", "deleted", "renamed", "attr", "tags", ...
    pub kind: String,
    pub path: String,
    pub old_path: String,
    pub ino: u64,
    pub inode_kind: String,
    pub detail: String,
    /// History index of the observation.
    pub index: u64,
}

/// A namespace operation of the workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NsOp {
    Create(String),
    Mkdir(String),
    Unlink(String),
    Rmdir(String),
    Rename {
        src: String,
        dst: String,
        /// "replace", "no_replace" or "exchange".
        mode: String,
    },
    ReadDir(String),
    Stat(String),
}

impl NsOp {
    pub fn is_read(&self) -> bool {
        matches!(self, NsOp::ReadDir(_) | NsOp::Stat(_))
    }
}

#[derive(Debug, Clone)]
struct Node {
    parent: u64,
    name: String,
    kind: Kind,
    children: BTreeMap<String, u64>,
}

/// A violation found while applying the log: (anomaly kind, detail).
pub type Violation = (&'static str, String);

/// The subtree below `base`, keyed by inode number.
#[derive(Debug, Clone)]
pub struct Tree {
    base: String,
    nodes: HashMap<u64, Node>,
}

impl Tree {
    pub fn new(base: &str) -> Tree {
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT,
            Node {
                parent: ROOT,
                name: String::new(),
                kind: Kind::Dir,
                children: BTreeMap::new(),
            },
        );
        Tree {
            base: base.trim_end_matches('/').to_string(),
            nodes,
        }
    }

    /// The components of `path` below the base; `None` if it is outside.
    pub fn components<'p>(&self, path: &'p str) -> Option<Vec<&'p str>> {
        let rest = path.strip_prefix(self.base.as_str())?;
        if rest.is_empty() {
            return Some(Vec::new());
        }
        let rest = rest.strip_prefix('/')?;
        Some(rest.split('/').filter(|c| !c.is_empty()).collect())
    }

    fn resolve_comps(&self, comps: &[&str]) -> Result<Option<u64>, &'static str> {
        let mut cur = ROOT;
        for c in comps {
            let Some(node) = self.nodes.get(&cur) else {
                return Ok(None);
            };
            if node.kind != Kind::Dir {
                return Err("FAILED_PRECONDITION");
            }
            match node.children.get(*c) {
                Some(&ino) => cur = ino,
                None => return Ok(None),
            }
        }
        Ok(Some(cur))
    }

    /// The object at `path`: `Ok(None)` if missing, `Err(code)` if an ancestor is not a
    /// directory (or the path is outside the base: "OUTSIDE").
    pub fn resolve(&self, path: &str) -> Result<Option<u64>, &'static str> {
        let comps = self.components(path).ok_or("OUTSIDE")?;
        self.resolve_comps(&comps)
    }

    pub fn kind(&self, ino: u64) -> Option<Kind> {
        self.nodes.get(&ino).map(|n| n.kind)
    }

    /// Entries of the directory at `path` as (name, ino, kind), in name order.
    pub fn list(&self, path: &str) -> Result<Vec<(String, u64, Kind)>, &'static str> {
        let ino = self.resolve(path)?.ok_or("NOT_FOUND")?;
        let node = self.nodes.get(&ino).ok_or("NOT_FOUND")?;
        if node.kind != Kind::Dir {
            return Err("FAILED_PRECONDITION");
        }
        Ok(node
            .children
            .iter()
            .map(|(n, &i)| (n.clone(), i, self.kind(i).unwrap_or(Kind::File)))
            .collect())
    }

    /// Every object below the base as path -> (ino, kind).
    pub fn entries(&self) -> BTreeMap<String, (u64, Kind)> {
        let mut out = BTreeMap::new();
        let mut stack = vec![(ROOT, self.base.clone())];
        while let Some((ino, path)) = stack.pop() {
            if let Some(n) = self.nodes.get(&ino) {
                for (name, &c) in &n.children {
                    let p = format!("{path}/{name}");
                    if let Some(k) = self.kind(c) {
                        out.insert(p.clone(), (c, k));
                    }
                    stack.push((c, p));
                }
            }
        }
        out
    }

    /// Paths of every directory (the base included).
    pub fn dirs(&self) -> Vec<String> {
        let mut out = vec![self.base.clone()];
        out.extend(
            self.entries()
                .into_iter()
                .filter(|(_, (_, k))| *k == Kind::Dir)
                .map(|(p, _)| p),
        );
        out
    }

    /// Whether `top` is `ino` or one of its ancestors.
    fn in_subtree(&self, mut ino: u64, top: u64) -> bool {
        for _ in 0..=self.nodes.len() {
            if ino == top {
                return true;
            }
            if ino == ROOT {
                return false;
            }
            match self.nodes.get(&ino) {
                Some(n) => ino = n.parent,
                None => return false,
            }
        }
        true
    }

    /// Adds an object; the entry must be free.
    pub fn insert(
        &mut self,
        parent: u64,
        name: &str,
        ino: u64,
        kind: Kind,
    ) -> Result<(), Violation> {
        if ino == ROOT || self.nodes.contains_key(&ino) {
            return Err(("invalid-log", format!("inode {ino} created twice")));
        }
        let p = self
            .nodes
            .get_mut(&parent)
            .ok_or(("orphan", format!("parent inode {parent} of {name} missing")))?;
        if p.kind != Kind::Dir {
            return Err(("orphan", format!("{name} created under a non-directory")));
        }
        if let Some(other) = p.children.get(name) {
            return Err((
                "duplicate-name",
                format!("{name} already names inode {other}"),
            ));
        }
        p.children.insert(name.to_string(), ino);
        self.nodes.insert(
            ino,
            Node {
                parent,
                name: name.to_string(),
                kind,
                children: BTreeMap::new(),
            },
        );
        Ok(())
    }

    fn unlink_entry(&mut self, ino: u64) {
        if let Some(n) = self.nodes.get(&ino) {
            let (parent, name) = (n.parent, n.name.clone());
            if let Some(p) = self.nodes.get_mut(&parent) {
                p.children.remove(&name);
            }
        }
    }

    fn link_entry(&mut self, ino: u64, parent: u64, name: &str) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.parent = parent;
            n.name = name.to_string();
        }
        if let Some(p) = self.nodes.get_mut(&parent) {
            p.children.insert(name.to_string(), ino);
        }
    }

    /// The parent directory and name of `path` (which must be below the base).
    fn slot<'p>(&self, path: &'p str) -> Result<(u64, &'p str), Violation> {
        let comps = self
            .components(path)
            .ok_or(("invalid-log", format!("{path} is outside {}", self.base)))?;
        let Some((name, dirs)) = comps.split_last() else {
            return Err(("invalid-log", format!("{path} is the base itself")));
        };
        match self.resolve_comps(dirs) {
            Ok(Some(p)) if self.kind(p) == Some(Kind::Dir) => Ok((p, name)),
            _ => Err((
                "orphan",
                format!("the parent directory of {path} does not exist"),
            )),
        }
    }

    fn expect_at(&self, path: &str, ino: u64, rev: u64) -> Result<(), Violation> {
        match self.resolve(path) {
            Ok(Some(i)) if i == ino => Ok(()),
            other => Err((
                "invalid-log",
                format!("rev {rev}: event names inode {ino} at {path}, the model has {other:?}"),
            )),
        }
    }

    /// Applies one revision's events, then checks the tree invariants.
    pub fn apply(&mut self, evs: &[LogEvent]) -> Result<(), Violation> {
        let exchange = evs.len() == 2
            && evs
                .iter()
                .all(|e| e.kind == "renamed" && e.detail == "exchange");
        if exchange {
            let (a, b) = (&evs[0], &evs[1]);
            self.expect_at(&a.old_path, a.ino, a.rev)?;
            self.expect_at(&b.old_path, b.ino, b.rev)?;
            if a.path != b.old_path || b.path != a.old_path {
                return Err((
                    "invalid-log",
                    format!("rev {}: exchange events do not swap two paths", a.rev),
                ));
            }
            let (na, nb) = match (self.nodes.get(&a.ino), self.nodes.get(&b.ino)) {
                (Some(x), Some(y)) => ((x.parent, x.name.clone()), (y.parent, y.name.clone())),
                _ => {
                    return Err((
                        "invalid-log",
                        format!("rev {}: exchange of unknown inodes", a.rev),
                    ))
                }
            };
            self.unlink_entry(a.ino);
            self.unlink_entry(b.ino);
            self.link_entry(a.ino, nb.0, &nb.1);
            self.link_entry(b.ino, na.0, &na.1);
        } else {
            for e in evs {
                self.apply_one(e)?;
            }
        }
        self.check_invariants()
    }

    fn apply_one(&mut self, e: &LogEvent) -> Result<(), Violation> {
        if self.components(&e.path).is_none_or(|c| c.is_empty()) && e.kind != "renamed" {
            return Ok(()); // the base itself or outside: not modelled
        }
        match e.kind.as_str() {
            "created" => {
                let (parent, name) = self.slot(&e.path)?;
                let kind = Kind::parse(&e.inode_kind).unwrap_or(Kind::File);
                self.insert(parent, name, e.ino, kind)
            }
            "deleted" => {
                self.expect_at(&e.path, e.ino, e.rev)?;
                if self
                    .nodes
                    .get(&e.ino)
                    .is_some_and(|n| !n.children.is_empty())
                {
                    return Err((
                        "orphan",
                        format!("rev {}: non-empty directory {} deleted", e.rev, e.path),
                    ));
                }
                self.unlink_entry(e.ino);
                self.nodes.remove(&e.ino);
                Ok(())
            }
            "renamed" => {
                self.expect_at(&e.old_path, e.ino, e.rev)?;
                let (parent, name) = self.slot(&e.path)?;
                if let Some(other) = self.nodes.get(&parent).and_then(|p| p.children.get(name)) {
                    return Err((
                        "duplicate-name",
                        format!("rev {}: {} renamed onto live inode {other}", e.rev, e.path),
                    ));
                }
                if self.in_subtree(parent, e.ino) {
                    return Err((
                        "tree-cycle",
                        format!("rev {}: {} moved into its own subtree", e.rev, e.old_path),
                    ));
                }
                self.unlink_entry(e.ino);
                self.link_entry(e.ino, parent, name);
                Ok(())
            }
            "attr" | "tags" => self.expect_at(&e.path, e.ino, e.rev),
            _ => Ok(()),
        }
    }

    /// No cycle, every entry names its node (one name per directory), no orphan.
    pub fn check_invariants(&self) -> Result<(), Violation> {
        for (&ino, n) in &self.nodes {
            if ino == ROOT {
                continue;
            }
            let Some(p) = self.nodes.get(&n.parent) else {
                return Err(("orphan", format!("inode {ino} ({}) has no parent", n.name)));
            };
            if p.kind != Kind::Dir || p.children.get(&n.name) != Some(&ino) {
                return Err((
                    "orphan",
                    format!("inode {ino} is not linked from its parent"),
                ));
            }
            let mut cur = n.parent;
            let mut steps = 0;
            while cur != ROOT {
                steps += 1;
                if steps > self.nodes.len() {
                    return Err(("tree-cycle", format!("inode {ino} does not reach the base")));
                }
                cur = self.nodes.get(&cur).map_or(ROOT, |x| x.parent);
            }
        }
        for (&ino, n) in &self.nodes {
            for (name, c) in &n.children {
                match self.nodes.get(c) {
                    Some(cn) if cn.parent == ino && &cn.name == name => {}
                    _ => {
                        return Err((
                            "duplicate-name",
                            format!("entry {name} of inode {ino} names inode {c} elsewhere"),
                        ))
                    }
                }
            }
        }
        Ok(())
    }

    /// Parent inode and name of `path`, or the refusal metad gives for a bad parent.
    fn parent_of<'p>(&self, path: &'p str) -> Result<(u64, &'p str), &'static str> {
        let comps = self.components(path).ok_or("OUTSIDE")?;
        let Some((name, dirs)) = comps.split_last() else {
            return Err("ALREADY_EXISTS");
        };
        match self.resolve_comps(dirs)? {
            None => Err("NOT_FOUND"),
            Some(p) if self.kind(p) != Some(Kind::Dir) => Err("FAILED_PRECONDITION"),
            Some(p) => Ok((p, name)),
        }
    }

    fn existing(&self, path: &str) -> Result<u64, &'static str> {
        self.resolve(path)?.ok_or("NOT_FOUND")
    }

    fn child(&self, parent: u64, name: &str) -> Option<u64> {
        self.nodes.get(&parent)?.children.get(name).copied()
    }

    fn has_children(&self, ino: u64) -> bool {
        self.nodes.get(&ino).is_some_and(|n| !n.children.is_empty())
    }

    /// The error code metad answers `op` with on this state, or `None` if it would succeed.
    /// "OUTSIDE" if a path is outside the base (not judged).
    pub fn refusal(&self, op: &NsOp) -> Option<&'static str> {
        self.refusal_inner(op).err()
    }

    fn refusal_inner(&self, op: &NsOp) -> Result<(), &'static str> {
        match op {
            NsOp::Create(p) | NsOp::Mkdir(p) => {
                let (parent, name) = self.parent_of(p)?;
                match self.child(parent, name) {
                    Some(_) => Err("ALREADY_EXISTS"),
                    None => Ok(()),
                }
            }
            NsOp::Unlink(p) => match self.kind(self.existing(p)?) {
                Some(Kind::Dir) => Err("FAILED_PRECONDITION"),
                _ => Ok(()),
            },
            NsOp::Rmdir(p) => {
                let ino = self.existing(p)?;
                if self.kind(ino) != Some(Kind::Dir) || self.has_children(ino) {
                    return Err("FAILED_PRECONDITION");
                }
                Ok(())
            }
            NsOp::ReadDir(p) => self.list(p).map(|_| ()),
            NsOp::Stat(p) => self.existing(p).map(|_| ()),
            NsOp::Rename { src, dst, mode } => {
                let s = self.existing(src)?;
                let (dparent, dname) = self.parent_of(dst)?;
                let existing = self.child(dparent, dname);
                if existing == Some(s) {
                    return if mode == "no_replace" {
                        Err("ALREADY_EXISTS")
                    } else {
                        Ok(())
                    };
                }
                let sdir = self.kind(s) == Some(Kind::Dir);
                if sdir && self.in_subtree(dparent, s) {
                    return Err("INVALID_ARGUMENT");
                }
                let sparent = self.nodes.get(&s).map_or(ROOT, |n| n.parent);
                if mode == "exchange" {
                    let t = existing.ok_or("NOT_FOUND")?;
                    if self.kind(t) == Some(Kind::Dir) && self.in_subtree(sparent, t) {
                        return Err("INVALID_ARGUMENT");
                    }
                    return Ok(());
                }
                if let Some(t) = existing {
                    if mode == "no_replace" {
                        return Err("ALREADY_EXISTS");
                    }
                    let tdir = self.kind(t) == Some(Kind::Dir);
                    if sdir != tdir || (tdir && self.has_children(t)) {
                        return Err("FAILED_PRECONDITION");
                    }
                }
                Ok(())
            }
        }
    }
}
