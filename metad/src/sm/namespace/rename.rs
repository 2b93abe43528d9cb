//! Rename with POSIX rules: replace a file/symlink by a file/symlink and an empty directory by a
//! directory, never move a directory into its own subtree; NO_REPLACE and EXCHANGE modes.
//! Atomic by construction: the whole command runs in one overlay.

use metad_proto::v1::{EventKind, Inode, NamespaceReply, Rename, RenameMode};

use super::{adjust_dir, drop_inode, event, field, is_dir, parent_of};
use crate::sm::kv::{KvError, KvRead, KvWrite};
use crate::sm::model::{
    delete_dentry, get_inode, lookup, put_dentry, put_inode, refuse, resolve_existing, ApplyCtx,
    OpResult, Refusal, ROOT_INO,
};

/// Whether `ino` is `top` or lies below it.
fn in_subtree(kv: &impl KvRead, mut ino: u64, top: u64) -> Result<bool, KvError> {
    let mut guard = 0usize;
    loop {
        if ino == top {
            return Ok(true);
        }
        if ino == ROOT_INO || ino == 0 {
            return Ok(false);
        }
        ino = get_inode(kv, ino)?
            .ok_or_else(|| KvError(format!("inode {ino} missing on a parent chain")))?
            .parent;
        guard += 1;
        if guard > crate::sm::limits::PATH_MAX {
            return Err(KvError("parent chain does not reach the root".into()));
        }
    }
}

fn relink(
    kv: &mut impl KvWrite,
    ctx: &ApplyCtx,
    inode: &mut Inode,
    parent: u64,
    name: &str,
) -> OpResult<()> {
    inode.parent = parent;
    inode.name = name.to_string();
    inode.ctime_ms = ctx.now_ms;
    inode.mod_revision = ctx.revision;
    put_inode(kv, inode)?;
    put_dentry(kv, parent, name, inode.ino)?;
    Ok(())
}

pub(super) fn rename(
    kv: &mut impl KvWrite,
    ctx: &mut ApplyCtx,
    r: &Rename,
    prefix: &str,
) -> OpResult<NamespaceReply> {
    let (fs, fd) = (field(prefix, "src"), field(prefix, "dst"));
    let mode = RenameMode::try_from(r.mode).map_err(|_| {
        Refusal::invalid(format!(
            "{}: unknown value {}",
            field(prefix, "mode"),
            r.mode
        ))
    })?;
    let mut src = resolve_existing(kv, &fs, &r.src)?;
    let Some((dparent, dname)) = parent_of(kv, &fd, &r.dst)? else {
        return refuse(Refusal::invalid(format!(
            "{fd}: the root directory cannot be replaced"
        )));
    };
    let existing = lookup(kv, dparent.ino, dname)?;
    if existing == Some(src.ino) {
        // Source and destination are the same entry.
        return match mode {
            RenameMode::NoReplace => {
                refuse(Refusal::exists(format!("{fd}: {} already exists", r.dst)))
            }
            _ => Ok(NamespaceReply {
                inode: Some(src),
                ..Default::default()
            }),
        };
    }
    if is_dir(&src) && in_subtree(kv, dparent.ino, src.ino)? {
        return refuse(Refusal::invalid(format!(
            "{fd}: cannot move {} into its own subtree ({})",
            r.src, r.dst
        )));
    }
    let target = match existing {
        Some(ino) => {
            Some(get_inode(kv, ino)?.ok_or_else(|| KvError(format!("dangling entry {}", r.dst)))?)
        }
        None => None,
    };
    let (sparent, sname) = (src.parent, src.name.clone());

    if mode == RenameMode::Exchange {
        let Some(mut other) = target else {
            return refuse(Refusal::not_found(format!(
                "{fd}: {} does not exist (EXCHANGE needs both)",
                r.dst
            )));
        };
        if is_dir(&other) && in_subtree(kv, sparent, other.ino)? {
            return refuse(Refusal::invalid(format!(
                "{fs}: cannot move {} into its own subtree ({})",
                r.dst, r.src
            )));
        }
        relink(kv, ctx, &mut src, dparent.ino, dname)?;
        relink(kv, ctx, &mut other, sparent, &sname)?;
        adjust_dir(kv, ctx, sparent, 0)?;
        if dparent.ino != sparent {
            adjust_dir(kv, ctx, dparent.ino, 0)?;
        }
        for (inode, from, to) in [(&src, &r.src, &r.dst), (&other, &r.dst, &r.src)] {
            let mut e = event(EventKind::Renamed, to, inode);
            e.old_path = from.clone();
            e.detail = "exchange".into();
            ctx.emit(e);
        }
        return Ok(NamespaceReply {
            inode: Some(src),
            replaced: Some(other),
            ..Default::default()
        });
    }

    let mut replaced = None;
    let mut reclaim = Vec::new();
    if let Some(t) = target {
        if mode == RenameMode::NoReplace {
            return refuse(Refusal::exists(format!("{fd}: {} already exists", r.dst)));
        }
        match (is_dir(&src), is_dir(&t)) {
            (true, false) => {
                return refuse(Refusal::precondition(format!(
                    "{fd}: {} is not a directory; a directory can only replace a directory",
                    r.dst
                )))
            }
            (false, true) => {
                return refuse(Refusal::precondition(format!(
                    "{fd}: {} is a directory; only a directory can replace it",
                    r.dst
                )))
            }
            (true, true) if t.child_count > 0 => {
                return refuse(Refusal::precondition(format!(
                    "{fd}: {} is not empty ({} entries)",
                    r.dst, t.child_count
                )))
            }
            _ => {}
        }
        reclaim = drop_inode(kv, ctx, &t)?;
        delete_dentry(kv, dparent.ino, dname)?;
        adjust_dir(kv, ctx, dparent.ino, -1)?;
        let mut gone = t.clone();
        gone.mod_revision = ctx.revision;
        ctx.emit(event(EventKind::Deleted, &r.dst, &gone));
        replaced = Some(t);
    }
    delete_dentry(kv, sparent, &sname)?;
    adjust_dir(kv, ctx, sparent, -1)?;
    relink(kv, ctx, &mut src, dparent.ino, dname)?;
    adjust_dir(kv, ctx, dparent.ino, 1)?;
    let mut e = event(EventKind::Renamed, &r.dst, &src);
    e.old_path = r.src.clone();
    ctx.emit(e);
    Ok(NamespaceReply {
        inode: Some(src),
        replaced,
        created: 0,
        reclaim,
    })
}
