//! Namespace queries over applied state: stat (by path or inode), lookup, one ReadDir page.
//! Read-only and bounded: a ReadDir page reads at most `limit + 1` entries.

use metad_proto::v1::{DirEntry, Inode};

use super::{is_dir, READDIR_LIMIT_DEFAULT, READDIR_LIMIT_MAX};
use crate::sm::kv::KvRead;
use crate::sm::model::{
    check_name, get_inode, list_dir, lookup, path_of, refuse, resolve_existing, OpResult, Refusal,
    ROOT_INO,
};

/// The object at `path` (symlinks not followed).
pub fn stat_path(kv: &impl KvRead, path: &str) -> OpResult<Inode> {
    resolve_existing(kv, "path", path)
}

/// The object with inode number `ino`, and its current path.
pub fn stat_ino(kv: &impl KvRead, ino: u64) -> OpResult<(Inode, String)> {
    match get_inode(kv, ino)? {
        Some(i) => {
            let p = path_of(kv, ino)?;
            Ok((i, p))
        }
        None if ino == ROOT_INO => Ok((resolve_existing(kv, "ino", "/")?, "/".into())),
        None => refuse(Refusal::not_found(format!("ino: no inode {ino}"))),
    }
}

/// The entry `name` of directory `parent`.
pub fn lookup_entry(kv: &impl KvRead, parent: u64, name: &str) -> OpResult<Inode> {
    check_name("name", name)?;
    let Some(dir) = get_inode(kv, parent)? else {
        if parent == ROOT_INO {
            // Nothing applied yet: the root exists implicitly and is empty.
            return refuse(Refusal::not_found(format!(
                "name: no entry {name:?} in directory {parent}"
            )));
        }
        return refuse(Refusal::not_found(format!("parent: no inode {parent}")));
    };
    if !is_dir(&dir) {
        return refuse(Refusal::precondition(format!(
            "parent: inode {parent} is not a directory"
        )));
    }
    let Some(ino) = lookup(kv, parent, name)? else {
        return refuse(Refusal::not_found(format!(
            "name: no entry {name:?} in directory {parent}"
        )));
    };
    Ok(get_inode(kv, ino)?
        .ok_or_else(|| crate::sm::KvError(format!("dangling entry {name} -> inode {ino}")))?)
}

/// One page of a directory listing.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadDirPage {
    pub dir: Inode,
    pub entries: Vec<DirEntry>,
    /// Cursor for the next page; empty when this page is the last.
    pub next_start_after: String,
}

/// Checks a ReadDir limit (0 = default) and returns the effective page size.
pub fn readdir_limit(limit: u32) -> Result<usize, Refusal> {
    match limit {
        0 => Ok(READDIR_LIMIT_DEFAULT as usize),
        l if l > READDIR_LIMIT_MAX => Err(Refusal::invalid(format!(
            "limit: {l} is over the limit {READDIR_LIMIT_MAX}"
        ))),
        l => Ok(l as usize),
    }
}

/// Entries of the directory at `path` with a name after `start_after` (empty = from the
/// start), at most `limit` (0 = default), with full attributes if asked.
pub fn read_dir(
    kv: &impl KvRead,
    path: &str,
    start_after: &str,
    limit: u32,
    with_attrs: bool,
) -> OpResult<ReadDirPage> {
    let limit = readdir_limit(limit)?;
    if !start_after.is_empty() {
        check_name("start_after", start_after)?;
    }
    let dir = resolve_existing(kv, "path", path)?;
    if !is_dir(&dir) {
        return refuse(Refusal::precondition(format!(
            "path: {path} is not a directory"
        )));
    }
    let after = (!start_after.is_empty()).then_some(start_after);
    let mut rows = list_dir(kv, dir.ino, after, limit + 1)?;
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next_start_after = if more {
        rows.last().map(|(n, _)| n.clone()).unwrap_or_default()
    } else {
        String::new()
    };
    let mut entries = Vec::with_capacity(rows.len());
    for (name, ino) in rows {
        let inode = get_inode(kv, ino)?
            .ok_or_else(|| crate::sm::KvError(format!("dangling entry {name} -> inode {ino}")))?;
        entries.push(DirEntry {
            name,
            ino,
            kind: inode.kind,
            attrs: with_attrs.then_some(inode),
        });
    }
    Ok(ReadDirPage {
        dir,
        entries,
        next_start_after,
    })
}
