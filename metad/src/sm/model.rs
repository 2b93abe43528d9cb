//! The shared metadata model every command builds on: refusals, the apply context (revision,
//! leader time, emitted events), path rules, inode and directory-entry access, path
//! resolution, inode allocation and the event log. Namespace, tags, topology/location and
//! watch code all go through these helpers; keep them small and deterministic.

use metad_proto::v1::{Event, Inode, InodeKind};
use metad_proto::ErrorCode;
use prost::Message;

use super::kv::{KvError, KvRead, KvWrite, Table};
use super::limits;

/// The inode number of the root directory.
pub const ROOT_INO: u64 = 1;
const META_NEXT_INO: &[u8] = b"next_ino";

/// A deterministic refusal: the command is rejected and changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    pub fn exists(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::AlreadyExists, message)
    }
    pub fn precondition(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::FailedPrecondition, message)
    }
}

/// Why an operation did not complete: refused (a normal reply) or a storage failure (the apply
/// batch aborts and the node stops rather than diverge).
#[derive(Debug)]
pub enum ApplyError {
    Refused(Refusal),
    Storage(KvError),
}

impl From<KvError> for ApplyError {
    fn from(e: KvError) -> Self {
        ApplyError::Storage(e)
    }
}

impl From<Refusal> for ApplyError {
    fn from(r: Refusal) -> Self {
        ApplyError::Refused(r)
    }
}

pub type OpResult<T> = Result<T, ApplyError>;

/// Shorthand for returning a refusal.
pub fn refuse<T>(r: Refusal) -> OpResult<T> {
    Err(ApplyError::Refused(r))
}

/// Per-command apply context.
#[derive(Debug, Clone)]
pub struct ApplyCtx {
    /// The revision this command gets if it changes anything (current + 1).
    pub revision: u64,
    /// Leader time in milliseconds (monotonic across leaders).
    pub now_ms: u64,
    /// Events emitted so far (written to the event log if the command succeeds).
    pub events: Vec<Event>,
    /// Whether the command changed replicated state (set by `emit`, or directly by commands
    /// that change state without a watchable event). Decides whether the revision advances.
    pub changed: bool,
}

impl ApplyCtx {
    pub fn new(revision: u64, now_ms: u64) -> Self {
        ApplyCtx {
            revision,
            now_ms,
            events: Vec::new(),
            changed: false,
        }
    }

    /// Records one change. Every state change MUST emit at least one event: that is what bumps
    /// the revision and what Watch delivers.
    pub fn emit(&mut self, mut e: Event) {
        e.revision = self.revision;
        self.events.push(e);
        self.changed = true;
    }
}

// ---------- paths ----------

/// Checks an absolute path and returns its components. `field` names the request field in
/// the error. Rules: starts with '/', no empty, "." or ".." components, no NUL, each name at
/// most `NAME_MAX` bytes, the whole path at most `PATH_MAX` bytes. "/" is the root (no
/// components). A single trailing '/' is refused (ambiguous), except for "/" itself.
pub fn parse_path<'p>(field: &str, path: &'p str) -> Result<Vec<&'p str>, Refusal> {
    if path.len() > limits::PATH_MAX {
        return Err(Refusal::invalid(format!(
            "{field}: path is {} bytes, the limit is {}",
            path.len(),
            limits::PATH_MAX
        )));
    }
    if !path.starts_with('/') {
        return Err(Refusal::invalid(format!(
            "{field}: path must be absolute (start with '/')"
        )));
    }
    if path.contains('\0') {
        return Err(Refusal::invalid(format!(
            "{field}: path must not contain NUL"
        )));
    }
    if path == "/" {
        return Ok(vec![]);
    }
    let mut out = Vec::new();
    for c in path[1..].split('/') {
        check_name(field, c)?;
        out.push(c);
    }
    Ok(out)
}

/// Checks one directory-entry name.
pub fn check_name(field: &str, name: &str) -> Result<(), Refusal> {
    if name.is_empty() {
        return Err(Refusal::invalid(format!(
            "{field}: empty path component (\"//\" or trailing '/')"
        )));
    }
    if name == "." || name == ".." {
        return Err(Refusal::invalid(format!(
            "{field}: \".\" and \"..\" components are not allowed"
        )));
    }
    if name.len() > limits::NAME_MAX {
        return Err(Refusal::invalid(format!(
            "{field}: name is {} bytes, the limit is {}",
            name.len(),
            limits::NAME_MAX
        )));
    }
    if name.contains('/') || name.contains('\0') {
        return Err(Refusal::invalid(format!(
            "{field}: name must not contain '/' or NUL"
        )));
    }
    Ok(())
}

/// Joins a parent path and a name.
pub fn join(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

// ---------- inodes and entries ----------

pub fn ino_key(ino: u64) -> [u8; 8] {
    ino.to_be_bytes()
}

pub fn dentry_key(parent: u64, name: &str) -> Vec<u8> {
    let mut k = parent.to_be_bytes().to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

fn decode_u64(b: &[u8]) -> Result<u64, KvError> {
    <[u8; 8]>::try_from(b)
        .map(u64::from_be_bytes)
        .map_err(|_| KvError(format!("expected 8 bytes, got {}", b.len())))
}

pub fn get_inode(kv: &impl KvRead, ino: u64) -> Result<Option<Inode>, KvError> {
    match kv.get(Table::Inodes, &ino_key(ino))? {
        None => Ok(None),
        Some(b) => Inode::decode(b.as_slice())
            .map(Some)
            .map_err(|e| KvError(format!("inode {ino} undecodable: {e}"))),
    }
}

pub fn put_inode(kv: &mut impl KvWrite, inode: &Inode) -> Result<(), KvError> {
    kv.put(Table::Inodes, &ino_key(inode.ino), &inode.encode_to_vec())
}

pub fn delete_inode(kv: &mut impl KvWrite, ino: u64) -> Result<(), KvError> {
    kv.delete(Table::Inodes, &ino_key(ino))
}

pub fn lookup(kv: &impl KvRead, parent: u64, name: &str) -> Result<Option<u64>, KvError> {
    match kv.get(Table::Dentries, &dentry_key(parent, name))? {
        None => Ok(None),
        Some(b) => decode_u64(&b).map(Some),
    }
}

pub fn put_dentry(
    kv: &mut impl KvWrite,
    parent: u64,
    name: &str,
    child: u64,
) -> Result<(), KvError> {
    kv.put(
        Table::Dentries,
        &dentry_key(parent, name),
        &child.to_be_bytes(),
    )
}

pub fn delete_dentry(kv: &mut impl KvWrite, parent: u64, name: &str) -> Result<(), KvError> {
    kv.delete(Table::Dentries, &dentry_key(parent, name))
}

/// Entries of directory `dir` with name > `after` (or from the start), at most `limit`, in
/// name order: (name, ino). Constant memory per page.
pub fn list_dir(
    kv: &impl KvRead,
    dir: u64,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<(String, u64)>, KvError> {
    let prefix = dir.to_be_bytes();
    let start = match after {
        Some(a) => {
            let mut k = dentry_key(dir, a);
            k.push(0); // strictly after `a`
            k
        }
        None => prefix.to_vec(),
    };
    let end = (dir + 1).to_be_bytes();
    let rows = kv.range(Table::Dentries, &start, Some(&end), limit)?;
    rows.into_iter()
        .map(|(k, v)| {
            let name = String::from_utf8(k[8..].to_vec())
                .map_err(|_| KvError("dentry name not utf-8".into()))?;
            Ok((name, decode_u64(&v)?))
        })
        .collect()
}

/// The root inode, created on first use (revision 0, deterministic on every node).
pub fn ensure_root(kv: &mut impl KvWrite) -> Result<Inode, KvError> {
    if let Some(r) = get_inode(kv, ROOT_INO)? {
        return Ok(r);
    }
    let root = Inode {
        ino: ROOT_INO,
        kind: InodeKind::Directory as i32,
        mode: 0o755,
        ..Default::default()
    };
    put_inode(kv, &root)?;
    Ok(root)
}

/// Allocates a fresh inode number (never reused).
pub fn alloc_ino(kv: &mut impl KvWrite) -> Result<u64, KvError> {
    let next = match kv.get(Table::Meta, META_NEXT_INO)? {
        Some(b) => decode_u64(&b)?,
        None => ROOT_INO + 1,
    };
    kv.put(Table::Meta, META_NEXT_INO, &(next + 1).to_be_bytes())?;
    Ok(next)
}

/// Resolves a path to its inode without following symlinks. `Ok(None)` if any component is
/// missing; a refusal if the path is malformed or passes through a non-directory.
///
/// Walks directory entries only and reads one inode at the end: only directories have
/// entries, so a found entry proves its parent is a directory, and an intermediate inode is
/// read only when a lookup misses (to tell "missing" from "not a directory").
pub fn resolve(kv: &impl KvRead, field: &str, path: &str) -> OpResult<Option<Inode>> {
    let comps = parse_path(field, path)?;
    let mut cur = ROOT_INO;
    for (i, c) in comps.iter().enumerate() {
        match lookup(kv, cur, c)? {
            Some(child) => cur = child,
            None => {
                let here = inode_or_root(kv, cur)?;
                if here.kind != InodeKind::Directory as i32 {
                    return refuse(Refusal::precondition(format!(
                        "{field}: /{} is not a directory",
                        comps[..i].join("/")
                    )));
                }
                return Ok(None);
            }
        }
    }
    Ok(Some(inode_or_root(kv, cur)?))
}

/// The inode `ino` reached through an entry (or the root, which exists implicitly until the
/// first write creates it); a missing one is a storage error (a dangling entry).
fn inode_or_root(kv: &impl KvRead, ino: u64) -> Result<Inode, KvError> {
    match get_inode(kv, ino)? {
        Some(i) => Ok(i),
        None if ino == ROOT_INO => Ok(Inode {
            ino: ROOT_INO,
            kind: InodeKind::Directory as i32,
            mode: 0o755,
            ..Default::default()
        }),
        None => Err(KvError(format!("dangling entry -> inode {ino}"))),
    }
}

/// Like `resolve`, but a missing path is a NOT_FOUND refusal naming the field.
pub fn resolve_existing(kv: &impl KvRead, field: &str, path: &str) -> OpResult<Inode> {
    match resolve(kv, field, path)? {
        Some(i) => Ok(i),
        None => refuse(Refusal::not_found(format!(
            "{field}: {path} does not exist"
        ))),
    }
}

/// The absolute path of an inode, rebuilt from parent links.
pub fn path_of(kv: &impl KvRead, ino: u64) -> Result<String, KvError> {
    let mut names = Vec::new();
    let mut cur = ino;
    let mut guard = 0usize;
    while cur != ROOT_INO {
        let i = get_inode(kv, cur)?.ok_or_else(|| KvError(format!("inode {cur} missing")))?;
        names.push(i.name);
        cur = i.parent;
        guard += 1;
        if guard > limits::PATH_MAX {
            return Err(KvError(format!(
                "parent chain of inode {ino} does not reach the root"
            )));
        }
    }
    names.reverse();
    Ok(format!("/{}", names.join("/")))
}

/// Ancestors of `ino` from its parent up to the root (inclusive).
pub fn ancestors(kv: &impl KvRead, ino: u64) -> Result<Vec<Inode>, KvError> {
    let mut out = Vec::new();
    let mut cur = get_inode(kv, ino)?.map(|i| i.parent).unwrap_or(0);
    while cur != 0 {
        let i = get_inode(kv, cur)?.ok_or_else(|| KvError(format!("inode {cur} missing")))?;
        cur = i.parent;
        out.push(i);
        if out.len() > limits::PATH_MAX {
            return Err(KvError("ancestor chain too long".into()));
        }
    }
    Ok(out)
}

// ---------- events ----------

pub fn event_key(revision: u64, index: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&revision.to_be_bytes());
    k[8..].copy_from_slice(&index.to_be_bytes());
    k
}

/// Persists the events of one applied command.
pub fn write_events(kv: &mut impl KvWrite, events: &[Event]) -> Result<(), KvError> {
    for (i, e) in events.iter().enumerate() {
        kv.put(
            Table::Events,
            &event_key(e.revision, i as u32),
            &e.encode_to_vec(),
        )?;
    }
    Ok(())
}

/// Events with revision >= `from`, in order, at most `limit`.
pub fn events_from(kv: &impl KvRead, from: u64, limit: usize) -> Result<Vec<Event>, KvError> {
    kv.range(Table::Events, &event_key(from, 0), None, limit)?
        .into_iter()
        .map(|(_, v)| {
            Event::decode(v.as_slice()).map_err(|e| KvError(format!("event undecodable: {e}")))
        })
        .collect()
}

/// The oldest revision still in the event log (0 if empty).
pub fn oldest_event_revision(kv: &impl KvRead) -> Result<u64, KvError> {
    Ok(kv
        .range(Table::Events, &[], None, 1)?
        .first()
        .and_then(|(k, _)| <[u8; 8]>::try_from(&k[..8]).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sm::kv::MemKv;

    #[test]
    fn path_rules_name_the_field_and_limit() {
        assert_eq!(parse_path("path", "/").expect("root"), Vec::<&str>::new());
        assert_eq!(parse_path("path", "/a/b").expect("ok"), vec!["a", "b"]);
        for bad in ["a/b", "/a//b", "/a/", "/a/./b", "/a/../b", "/a\0b"] {
            let e = parse_path("path", bad).expect_err(bad);
            assert_eq!(e.code, ErrorCode::InvalidArgument, "{bad}");
            assert!(e.message.starts_with("path:"), "{}", e.message);
        }
        let long = format!("/{}", "n".repeat(limits::NAME_MAX + 1));
        assert!(parse_path("p", &long)
            .expect_err("long")
            .message
            .contains("255"));
        let ok = format!("/{}", "n".repeat(limits::NAME_MAX));
        assert!(parse_path("p", &ok).is_ok());
        let huge = "/a".repeat(limits::PATH_MAX / 2 + 1);
        assert!(parse_path("p", &huge)
            .expect_err("huge")
            .message
            .contains("4096"));
    }

    #[test]
    fn resolve_and_path_of_agree() {
        let mut kv = MemKv::default();
        ensure_root(&mut kv).expect("root");
        let a = alloc_ino(&mut kv).expect("ino");
        put_inode(
            &mut kv,
            &Inode {
                ino: a,
                kind: InodeKind::Directory as i32,
                parent: ROOT_INO,
                name: "a".into(),
                ..Default::default()
            },
        )
        .expect("put");
        put_dentry(&mut kv, ROOT_INO, "a", a).expect("dentry");
        let f = alloc_ino(&mut kv).expect("ino");
        put_inode(
            &mut kv,
            &Inode {
                ino: f,
                kind: InodeKind::File as i32,
                parent: a,
                name: "f".into(),
                ..Default::default()
            },
        )
        .expect("put");
        put_dentry(&mut kv, a, "f", f).expect("dentry");
        let got = resolve(&kv, "p", "/a/f").ok().flatten().expect("found");
        assert_eq!(got.ino, f);
        assert_eq!(path_of(&kv, f).expect("path"), "/a/f");
        assert!(resolve(&kv, "p", "/a/g").ok().flatten().is_none());
        assert!(matches!(
            resolve(&kv, "p", "/a/f/x"),
            Err(ApplyError::Refused(_))
        ));
        assert_eq!(
            list_dir(&kv, a, None, 10).expect("ls"),
            vec![("f".to_string(), f)]
        );
        assert!(list_dir(&kv, a, Some("f"), 10).expect("ls").is_empty());
    }
}
