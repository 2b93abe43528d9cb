//! Namespace commands (mkdir, create, symlink, rename, unlink, rmdir, setattr) and queries
//! (stat, lookup, readdir). OWNER: namespace work.
//!
//! Tree bookkeeping: every inode but the root has exactly one dentry `(parent, name)`, and its
//! `parent`/`name` fields name that dentry; a directory's `child_count` is its number of
//! entries. Adding or removing an entry also bumps the directory's `mtime_ms`, `ctime_ms` and
//! `mod_revision` (its event is implied by the child's CREATED/DELETED/RENAMED event).
//!
//! Field names: `validate`/`apply_in` take a prefix so that the same code names
//! `path` for a plain request and `then_ops[3].namespace.path` inside a Txn.

mod query;
mod rename;
#[cfg(test)]
mod tests;

pub use query::{lookup_entry, read_dir, readdir_limit, stat_ino, stat_path, ReadDirPage};

use metad_proto::v1::{
    namespace_op, CreateFile, Event, EventKind, Inode, InodeKind, Mkdir, NamespaceOp,
    NamespaceReply, RenameMode, SetAttr, Symlink,
};

use super::kv::{KvError, KvWrite};
use super::model::{
    alloc_ino, delete_dentry, delete_inode, get_inode, join, lookup, parse_path, put_dentry,
    put_inode, refuse, resolve, resolve_existing, ApplyCtx, OpResult, Refusal, ROOT_INO,
};

/// Largest permission/mode value (`0o7777`: rwx bits plus setuid, setgid, sticky).
pub const MODE_MAX: u32 = 0o7777;
/// Longest symlink target, in bytes.
pub const SYMLINK_TARGET_MAX: usize = 4096;
/// ReadDir page size bounds.
pub const READDIR_LIMIT_MAX: u32 = 10_000;
pub const READDIR_LIMIT_DEFAULT: u32 = 1_000;

const DIR_MODE: u32 = 0o755;
const FILE_MODE: u32 = 0o644;
const SYMLINK_MODE: u32 = 0o777;

/// `prefix` + `name`: the request field a message refers to.
pub(crate) fn field(prefix: &str, name: &str) -> String {
    format!("{prefix}{name}")
}

fn check_mode(f: &str, mode: Option<u32>) -> Result<(), Refusal> {
    match mode {
        Some(m) if m > MODE_MAX => Err(Refusal::invalid(format!(
            "{f}: {m:#o} is over the limit {MODE_MAX:#o}"
        ))),
        _ => Ok(()),
    }
}

fn not_root(f: &str, path: &str, what: &str) -> Result<(), Refusal> {
    if parse_path(f, path)?.is_empty() {
        return Err(Refusal::invalid(format!(
            "{f}: the root directory cannot be {what}"
        )));
    }
    Ok(())
}

/// Checks every field rule that does not depend on state. Run by the API before proposing
/// (INVALID_ARGUMENT at once, nothing proposed) and again by apply.
pub fn validate(op: &NamespaceOp, prefix: &str) -> Result<(), Refusal> {
    let f = |n: &str| field(prefix, n);
    match &op.op {
        None => Err(Refusal::invalid(format!("{}: missing", f("op")))),
        Some(namespace_op::Op::Mkdir(m)) => {
            parse_path(&f("path"), &m.path)?;
            check_mode(&f("mode"), m.mode)
        }
        Some(namespace_op::Op::Create(c)) => {
            parse_path(&f("path"), &c.path)?;
            check_mode(&f("mode"), c.mode)
        }
        Some(namespace_op::Op::Symlink(s)) => {
            parse_path(&f("path"), &s.path)?;
            let t = f("target");
            if s.target.is_empty() {
                return Err(Refusal::invalid(format!("{t}: must not be empty")));
            }
            if s.target.len() > SYMLINK_TARGET_MAX {
                return Err(Refusal::invalid(format!(
                    "{t}: {} bytes, the limit is {SYMLINK_TARGET_MAX}",
                    s.target.len()
                )));
            }
            if s.target.contains('\0') {
                return Err(Refusal::invalid(format!("{t}: must not contain NUL")));
            }
            Ok(())
        }
        Some(namespace_op::Op::Rename(r)) => {
            not_root(&f("src"), &r.src, "renamed")?;
            not_root(&f("dst"), &r.dst, "replaced")?;
            RenameMode::try_from(r.mode).map_err(|_| {
                Refusal::invalid(format!("{}: unknown value {}", f("mode"), r.mode))
            })?;
            Ok(())
        }
        Some(namespace_op::Op::Unlink(u)) => not_root(&f("path"), &u.path, "unlinked"),
        Some(namespace_op::Op::Rmdir(r)) => not_root(&f("path"), &r.path, "removed"),
        Some(namespace_op::Op::SetAttr(s)) => {
            parse_path(&f("path"), &s.path)?;
            check_mode(&f("mode"), s.mode)?;
            if s.mode.is_none()
                && s.uid.is_none()
                && s.gid.is_none()
                && s.size.is_none()
                && s.mtime_ms.is_none()
            {
                return Err(Refusal::invalid(format!(
                    "{}: set at least one of mode, uid, gid, size, mtime_ms",
                    f("path")
                )));
            }
            Ok(())
        }
    }
}

/// Applies one namespace command (from the log).
pub fn apply(
    kv: &mut impl KvWrite,
    ctx: &mut ApplyCtx,
    op: &NamespaceOp,
) -> OpResult<NamespaceReply> {
    apply_in(kv, ctx, op, "")
}

/// [`apply`] with a field-name prefix (used by Txn steps).
pub fn apply_in(
    kv: &mut impl KvWrite,
    ctx: &mut ApplyCtx,
    op: &NamespaceOp,
    prefix: &str,
) -> OpResult<NamespaceReply> {
    validate(op, prefix)?;
    match &op.op {
        None => refuse(Refusal::invalid(format!("{prefix}op: missing"))),
        Some(namespace_op::Op::Mkdir(m)) => mkdir(kv, ctx, m, prefix),
        Some(namespace_op::Op::Create(c)) => create(kv, ctx, c, prefix),
        Some(namespace_op::Op::Symlink(s)) => symlink(kv, ctx, s, prefix),
        Some(namespace_op::Op::Rename(r)) => rename::rename(kv, ctx, r, prefix),
        Some(namespace_op::Op::Unlink(u)) => {
            let f = field(prefix, "path");
            let inode = resolve_existing(kv, &f, &u.path)?;
            if is_dir(&inode) {
                return refuse(Refusal::precondition(format!(
                    "{f}: {} is a directory (use Rmdir)",
                    u.path
                )));
            }
            let reclaim = remove_entry(kv, ctx, &inode, &u.path)?;
            Ok(NamespaceReply {
                inode: Some(inode),
                reclaim,
                ..Default::default()
            })
        }
        Some(namespace_op::Op::Rmdir(r)) => {
            let f = field(prefix, "path");
            let inode = resolve_existing(kv, &f, &r.path)?;
            if !is_dir(&inode) {
                return refuse(Refusal::precondition(format!(
                    "{f}: {} is not a directory",
                    r.path
                )));
            }
            if inode.child_count > 0 {
                return refuse(Refusal::precondition(format!(
                    "{f}: {} is not empty ({} entries)",
                    r.path, inode.child_count
                )));
            }
            remove_entry(kv, ctx, &inode, &r.path)?;
            Ok(reply(inode))
        }
        Some(namespace_op::Op::SetAttr(s)) => set_attr(kv, ctx, s, prefix),
    }
}

pub(crate) fn is_dir(i: &Inode) -> bool {
    i.kind == InodeKind::Directory as i32
}

fn reply(inode: Inode) -> NamespaceReply {
    NamespaceReply {
        inode: Some(inode),
        ..Default::default()
    }
}

pub(crate) fn event(kind: EventKind, path: &str, inode: &Inode) -> Event {
    Event {
        kind: kind as i32,
        path: path.to_string(),
        ino: inode.ino,
        inode_kind: inode.kind,
        inode: Some(inode.clone()),
        ..Default::default()
    }
}

/// The parent directory of a (non-root) path and the last name. NOT_FOUND if the parent is
/// missing, FAILED_PRECONDITION if it (or an ancestor) is not a directory.
pub(crate) fn parent_of<'p>(
    kv: &impl KvWrite,
    f: &str,
    path: &'p str,
) -> OpResult<Option<(Inode, &'p str)>> {
    let comps = parse_path(f, path)?;
    let Some((name, dirs)) = comps.split_last() else {
        return Ok(None);
    };
    let parent_path = format!("/{}", dirs.join("/"));
    let Some(parent) = resolve(kv, f, &parent_path)? else {
        return refuse(Refusal::not_found(format!(
            "{f}: parent directory {parent_path} does not exist"
        )));
    };
    if !is_dir(&parent) {
        return refuse(Refusal::precondition(format!(
            "{f}: {parent_path} is not a directory"
        )));
    }
    Ok(Some((parent, name)))
}

/// Adds `delta` entries to directory `dir` and stamps it as modified.
pub(crate) fn adjust_dir(
    kv: &mut impl KvWrite,
    ctx: &ApplyCtx,
    dir: u64,
    delta: i64,
) -> OpResult<()> {
    let mut d = get_inode(kv, dir)?.ok_or_else(|| KvError(format!("directory {dir} missing")))?;
    d.child_count = d
        .child_count
        .checked_add_signed(delta)
        .ok_or_else(|| KvError(format!("directory {dir}: child_count underflow")))?;
    d.mtime_ms = ctx.now_ms;
    d.ctime_ms = ctx.now_ms;
    d.mod_revision = ctx.revision;
    put_inode(kv, &d)?;
    Ok(())
}

/// Allocates, stores and links a new inode under `parent` as `name`; emits CREATED.
fn link_new(
    kv: &mut impl KvWrite,
    ctx: &mut ApplyCtx,
    mut inode: Inode,
    parent: u64,
    name: &str,
    path: &str,
) -> OpResult<Inode> {
    inode.ino = alloc_ino(kv)?;
    inode.parent = parent;
    inode.name = name.to_string();
    inode.ctime_ms = ctx.now_ms;
    inode.create_revision = ctx.revision;
    inode.mod_revision = ctx.revision;
    put_inode(kv, &inode)?;
    put_dentry(kv, parent, name, inode.ino)?;
    adjust_dir(kv, ctx, parent, 1)?;
    ctx.emit(event(EventKind::Created, path, &inode));
    Ok(inode)
}

/// Runs the deletion hooks (location for files, then tags) while the inode and its entry
/// still exist (so tombstones and events get the path), then deletes the inode record.
/// Returns the file's instances, now tombstones to reclaim.
pub(crate) fn drop_inode(
    kv: &mut impl KvWrite,
    ctx: &mut ApplyCtx,
    inode: &Inode,
) -> OpResult<Vec<metad_proto::v1::Instance>> {
    let mut reclaim = Vec::new();
    if inode.kind == InodeKind::File as i32 {
        reclaim = super::topology::instances_of(kv, inode.ino)?;
        super::topology::on_file_deleted(kv, ctx, inode.ino)?;
    }
    super::tags::on_inode_deleted(kv, inode.ino)?;
    delete_inode(kv, inode.ino)?;
    Ok(reclaim)
}

/// Deletes `inode` (hooks first), unlinks it from its parent and emits DELETED.
pub(crate) fn remove_entry(
    kv: &mut impl KvWrite,
    ctx: &mut ApplyCtx,
    inode: &Inode,
    path: &str,
) -> OpResult<Vec<metad_proto::v1::Instance>> {
    let reclaim = drop_inode(kv, ctx, inode)?;
    delete_dentry(kv, inode.parent, &inode.name)?;
    adjust_dir(kv, ctx, inode.parent, -1)?;
    let mut gone = inode.clone();
    gone.mod_revision = ctx.revision;
    ctx.emit(event(EventKind::Deleted, path, &gone));
    Ok(reclaim)
}

fn mkdir(
    kv: &mut impl KvWrite,
    ctx: &mut ApplyCtx,
    m: &Mkdir,
    prefix: &str,
) -> OpResult<NamespaceReply> {
    let f = field(prefix, "path");
    let template = Inode {
        kind: InodeKind::Directory as i32,
        mode: m.mode.unwrap_or(DIR_MODE),
        uid: m.uid.unwrap_or(0),
        gid: m.gid.unwrap_or(0),
        mtime_ms: ctx.now_ms,
        ..Default::default()
    };
    if !m.parents {
        let Some((parent, name)) = parent_of(kv, &f, &m.path)? else {
            return refuse(Refusal::exists(format!("{f}: / already exists")));
        };
        if lookup(kv, parent.ino, name)?.is_some() {
            return refuse(Refusal::exists(format!("{f}: {} already exists", m.path)));
        }
        let inode = link_new(kv, ctx, template, parent.ino, name, &m.path)?;
        return Ok(NamespaceReply {
            inode: Some(inode),
            created: 1,
            ..Default::default()
        });
    }
    let comps = parse_path(&f, &m.path)?;
    let mut cur = get_inode(kv, ROOT_INO)?.ok_or_else(|| KvError("root inode missing".into()))?;
    let mut path = String::from("/");
    let mut created = 0u32;
    for (i, c) in comps.iter().enumerate() {
        path = join(&path, c);
        match lookup(kv, cur.ino, c)? {
            Some(ino) => {
                let child =
                    get_inode(kv, ino)?.ok_or_else(|| KvError(format!("dangling entry {path}")))?;
                if !is_dir(&child) {
                    return refuse(if i + 1 == comps.len() {
                        Refusal::exists(format!("{f}: {path} exists and is not a directory"))
                    } else {
                        Refusal::precondition(format!("{f}: {path} is not a directory"))
                    });
                }
                cur = child;
            }
            None => {
                cur = link_new(kv, ctx, template.clone(), cur.ino, c, &path)?;
                created += 1;
            }
        }
    }
    Ok(NamespaceReply {
        inode: Some(cur),
        created,
        ..Default::default()
    })
}

/// Checks that `path` names a free entry in an existing directory; returns (parent, name).
fn free_slot<'p>(kv: &impl KvWrite, f: &str, path: &'p str) -> OpResult<(Inode, &'p str)> {
    let Some((parent, name)) = parent_of(kv, f, path)? else {
        return refuse(Refusal::exists(format!("{f}: / already exists")));
    };
    if lookup(kv, parent.ino, name)?.is_some() {
        return refuse(Refusal::exists(format!("{f}: {path} already exists")));
    }
    Ok((parent, name))
}

fn create(
    kv: &mut impl KvWrite,
    ctx: &mut ApplyCtx,
    c: &CreateFile,
    prefix: &str,
) -> OpResult<NamespaceReply> {
    let f = field(prefix, "path");
    let (parent, name) = free_slot(kv, &f, &c.path)?;
    let inode = Inode {
        kind: InodeKind::File as i32,
        mode: c.mode.unwrap_or(FILE_MODE),
        uid: c.uid.unwrap_or(0),
        gid: c.gid.unwrap_or(0),
        size: c.size.unwrap_or(0),
        mtime_ms: c.mtime_ms.unwrap_or(ctx.now_ms),
        ..Default::default()
    };
    Ok(reply(link_new(kv, ctx, inode, parent.ino, name, &c.path)?))
}

fn symlink(
    kv: &mut impl KvWrite,
    ctx: &mut ApplyCtx,
    s: &Symlink,
    prefix: &str,
) -> OpResult<NamespaceReply> {
    let f = field(prefix, "path");
    let (parent, name) = free_slot(kv, &f, &s.path)?;
    let inode = Inode {
        kind: InodeKind::Symlink as i32,
        mode: SYMLINK_MODE,
        uid: s.uid.unwrap_or(0),
        gid: s.gid.unwrap_or(0),
        size: s.target.len() as u64,
        symlink_target: s.target.clone(),
        mtime_ms: ctx.now_ms,
        ..Default::default()
    };
    Ok(reply(link_new(kv, ctx, inode, parent.ino, name, &s.path)?))
}

fn set_attr(
    kv: &mut impl KvWrite,
    ctx: &mut ApplyCtx,
    s: &SetAttr,
    prefix: &str,
) -> OpResult<NamespaceReply> {
    let f = field(prefix, "path");
    let mut inode = resolve_existing(kv, &f, &s.path)?;
    if s.size.is_some() && inode.kind != InodeKind::File as i32 {
        return refuse(Refusal::precondition(format!(
            "{}: {} is not a file; only files have a settable size",
            field(prefix, "size"),
            s.path
        )));
    }
    if let Some(m) = s.mode {
        inode.mode = m;
    }
    if let Some(u) = s.uid {
        inode.uid = u;
    }
    if let Some(g) = s.gid {
        inode.gid = g;
    }
    if let Some(z) = s.size {
        inode.size = z;
    }
    if let Some(t) = s.mtime_ms {
        inode.mtime_ms = t;
    }
    inode.ctime_ms = ctx.now_ms;
    inode.mod_revision = ctx.revision;
    put_inode(kv, &inode)?;
    ctx.emit(event(EventKind::AttrChanged, &s.path, &inode));
    Ok(reply(inode))
}
