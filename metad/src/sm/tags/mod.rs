//! Tag commands and queries: set/remove, own and effective (inherited) tags, FindByTags from
//! the secondary index, the tag-key catalogue. OWNER: tags work.
//!
//! Storage (all keys ordered bytes; tag keys never contain NUL, values never contain NUL):
//! - `Tags`:       ino u64 BE ‖ key                  -> flags u8 ‖ value   (the inode's own tags)
//! - `TagIndex`:   key ‖ 0 ‖ ivalue ‖ 0 ‖ ino u64 BE  -> flags u8           (secondary index)
//! - `TagKeys`:    key                                -> count u64 BE       (inodes setting key)
//! - `TagInherit`: ino u64 BE                         -> count u64 BE       (its inheritable tags)
//!
//! flags bit 0 = inherit. `TagInherit` lets effective-tag resolution skip the ancestors that
//! carry no inheritable tag with one point read.
//!
//! `ivalue` is the value itself up to `INDEX_VALUE_WHOLE` bytes, else its first
//! `INDEX_VALUE_PREFIX` bytes and 16 hex digits of its FNV-1a hash, so an index row stays small
//! however long the value (a 256 B value made every row and every B-tree comparison ~5x
//! larger). Two values can then share an `ivalue`; that is safe because the index only
//! proposes candidates — FindByTags checks every candidate against the inode's real tags.

pub mod expr;
pub mod find;

use std::collections::BTreeMap;

use metad_proto::v1::{tag_op, Event, EventKind, Inode, TagOp, TagReply};

use super::kv::{KvError, KvRead, KvWrite, Table};
use super::model::{ancestors, path_of, refuse, resolve_existing, ApplyCtx, OpResult, Refusal};

pub use find::{find_by_tags, FindPage, FindQuery};

/// Longest tag key, in bytes.
pub const KEY_MAX: usize = 128;
/// Longest tag value, in bytes.
pub const VALUE_MAX: usize = 4096;
/// Most tags one inode may carry.
pub const TAGS_PER_INODE_MAX: usize = 256;

const FLAG_INHERIT: u8 = 1;

/// One stored tag of an inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagValue {
    pub value: String,
    pub inherit: bool,
}

/// One effective tag: its value and where it comes from (`None` = own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffTag {
    pub value: String,
    pub inherit: bool,
    /// The ancestor it is inherited from: (ino, path).
    pub source: Option<(u64, String)>,
}

// ---------- key layouts ----------

fn tag_key(ino: u64, key: &str) -> Vec<u8> {
    let mut k = ino.to_be_bytes().to_vec();
    k.extend_from_slice(key.as_bytes());
    k
}

pub(crate) fn index_key(key: &str, value: &str, ino: u64) -> Vec<u8> {
    let mut k = index_prefix(key, Some(value));
    k.extend_from_slice(&ino.to_be_bytes());
    k
}

/// Values up to this many bytes are indexed whole.
pub(crate) const INDEX_VALUE_WHOLE: usize = 48;
/// How much of a longer value the index keeps before its hash.
const INDEX_VALUE_PREFIX: usize = 32;

/// `key ‖ 0` (all values) or `key ‖ 0 ‖ ivalue ‖ 0` (one value's rows, and any other value
/// sharing its `ivalue`).
pub(crate) fn index_prefix(key: &str, value: Option<&str>) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + INDEX_VALUE_WHOLE + 10);
    k.extend_from_slice(key.as_bytes());
    k.push(0);
    if let Some(v) = value {
        let v = v.as_bytes();
        if v.len() <= INDEX_VALUE_WHOLE {
            k.extend_from_slice(v);
        } else {
            k.extend_from_slice(&v[..INDEX_VALUE_PREFIX]);
            k.extend_from_slice(format!("{:016x}", fnv1a(v)).as_bytes());
        }
        k.push(0);
    }
    k
}

/// FNV-1a, 64 bit: fixed by its definition, so every node and every release indexes a value
/// the same way (std's hasher makes no such promise).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The exclusive end of a prefix range (prefixes here end in 0, so bumping it is exact).
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut e = prefix.to_vec();
    if let Some(last) = e.last_mut() {
        *last += 1;
    }
    e
}

fn kerr(what: &str) -> KvError {
    KvError(format!("tags: {what}"))
}

fn decode_tag(b: &[u8]) -> Result<TagValue, KvError> {
    let (&flags, v) = b.split_first().ok_or_else(|| kerr("empty tag record"))?;
    Ok(TagValue {
        value: String::from_utf8(v.to_vec()).map_err(|_| kerr("tag value not utf-8"))?,
        inherit: flags & FLAG_INHERIT != 0,
    })
}

fn encode_tag(t: &TagValue) -> Vec<u8> {
    let mut b = vec![if t.inherit { FLAG_INHERIT } else { 0 }];
    b.extend_from_slice(t.value.as_bytes());
    b
}

fn get_u64(kv: &impl KvRead, t: Table, k: &[u8]) -> Result<u64, KvError> {
    match kv.get(t, k)? {
        None => Ok(0),
        Some(b) => <[u8; 8]>::try_from(b.as_slice())
            .map(u64::from_be_bytes)
            .map_err(|_| kerr("counter is not 8 bytes")),
    }
}

fn add_u64(kv: &mut impl KvWrite, t: Table, k: &[u8], delta: i64) -> Result<(), KvError> {
    let cur = get_u64(kv, t, k)?;
    let next = cur
        .checked_add_signed(delta)
        .ok_or_else(|| kerr("counter underflow"))?;
    if next == 0 {
        kv.delete(t, k)
    } else {
        kv.put(t, k, &next.to_be_bytes())
    }
}

// ---------- reads ----------

/// The inode's own tags, sorted by key.
pub fn own_tags(kv: &impl KvRead, ino: u64) -> Result<BTreeMap<String, TagValue>, KvError> {
    let start = ino.to_be_bytes();
    let end = ino.checked_add(1).map(u64::to_be_bytes);
    let rows = kv.range(
        Table::Tags,
        &start,
        end.as_ref().map(|e| e.as_slice()),
        TAGS_PER_INODE_MAX + 1,
    )?;
    rows.into_iter()
        .map(|(k, v)| {
            let key = String::from_utf8(k[8..].to_vec()).map_err(|_| kerr("key not utf-8"))?;
            Ok((key, decode_tag(&v)?))
        })
        .collect()
}

/// The inode's own (not inherited) value for `key`, if set. Used by Txn compares.
pub fn own_tag_value(kv: &impl KvRead, ino: u64, key: &str) -> Result<Option<String>, KvError> {
    Ok(kv
        .get(Table::Tags, &tag_key(ino, key))?
        .map(|b| decode_tag(&b))
        .transpose()?
        .map(|t| t.value))
}

/// The inheritable own tags of `ino` (empty without a read of `Tags` if it has none).
pub fn inheritable_tags(kv: &impl KvRead, ino: u64) -> Result<BTreeMap<String, String>, KvError> {
    if get_u64(kv, Table::TagInherit, &ino.to_be_bytes())? == 0 {
        return Ok(BTreeMap::new());
    }
    Ok(own_tags(kv, ino)?
        .into_iter()
        .filter(|(_, t)| t.inherit)
        .map(|(k, t)| (k, t.value))
        .collect())
}

/// Own + inherited tags of `inode`: own tags win, then the nearest ancestor's inheritable tag.
pub fn effective_tags(
    kv: &impl KvRead,
    inode: &Inode,
) -> Result<BTreeMap<String, EffTag>, KvError> {
    let mut out: BTreeMap<String, EffTag> = own_tags(kv, inode.ino)?
        .into_iter()
        .map(|(k, t)| {
            (
                k,
                EffTag {
                    value: t.value,
                    inherit: t.inherit,
                    source: None,
                },
            )
        })
        .collect();
    for a in ancestors(kv, inode.ino)? {
        let inh = inheritable_tags(kv, a.ino)?;
        if inh.is_empty() {
            continue;
        }
        let path = path_of(kv, a.ino)?;
        for (k, v) in inh {
            out.entry(k).or_insert_with(|| EffTag {
                value: v,
                inherit: true,
                source: Some((a.ino, path.clone())),
            });
        }
    }
    Ok(out)
}

/// The tag-key catalogue: keys strictly after `after`, with the number of inodes setting each.
pub fn list_keys(
    kv: &impl KvRead,
    after: &str,
    limit: usize,
) -> Result<Vec<(String, u64)>, KvError> {
    let mut start = after.as_bytes().to_vec();
    if !after.is_empty() {
        start.push(0);
    }
    kv.range(Table::TagKeys, &start, None, limit)?
        .into_iter()
        .map(|(k, v)| {
            let key = String::from_utf8(k).map_err(|_| kerr("catalogue key not utf-8"))?;
            let n = <[u8; 8]>::try_from(v.as_slice())
                .map(u64::from_be_bytes)
                .map_err(|_| kerr("catalogue count not 8 bytes"))?;
            Ok((key, n))
        })
        .collect()
}

// ---------- validation ----------

/// Checks one tag key: 1..=128 bytes of [A-Za-z0-9._:/-].
pub fn check_key(field: &str, key: &str) -> Result<(), Refusal> {
    if key.is_empty() || key.len() > KEY_MAX {
        return Err(Refusal::invalid(format!(
            "{field}: tag key must be 1..={KEY_MAX} bytes, got {}",
            key.len()
        )));
    }
    if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._:/-".contains(&b))
    {
        return Err(Refusal::invalid(format!(
            "{field}: tag key {key:?} may only contain [A-Za-z0-9._:/-]"
        )));
    }
    Ok(())
}

/// Checks one tag value: at most 4096 bytes, no NUL.
pub fn check_value(field: &str, value: &str) -> Result<(), Refusal> {
    if value.len() > VALUE_MAX {
        return Err(Refusal::invalid(format!(
            "{field}: tag value is {} bytes, the limit is {VALUE_MAX}",
            value.len()
        )));
    }
    if value.contains('\0') {
        return Err(Refusal::invalid(format!(
            "{field}: tag value must not contain NUL"
        )));
    }
    Ok(())
}

// ---------- writes ----------

fn get_tag(kv: &impl KvRead, ino: u64, key: &str) -> Result<Option<TagValue>, KvError> {
    kv.get(Table::Tags, &tag_key(ino, key))?
        .map(|b| decode_tag(&b))
        .transpose()
}

/// Writes `new` over `old` (the key's current value, read by the caller).
fn put_tag(
    kv: &mut impl KvWrite,
    ino: u64,
    key: &str,
    old: Option<TagValue>,
    new: &TagValue,
) -> OpResult<bool> {
    if old.as_ref() == Some(new) {
        return Ok(false);
    }
    match &old {
        Some(o) => {
            kv.delete(Table::TagIndex, &index_key(key, &o.value, ino))?;
            if o.inherit {
                add_u64(kv, Table::TagInherit, &ino.to_be_bytes(), -1)?;
            }
        }
        None => add_u64(kv, Table::TagKeys, key.as_bytes(), 1)?,
    }
    let flags = [if new.inherit { FLAG_INHERIT } else { 0 }];
    kv.put(Table::Tags, &tag_key(ino, key), &encode_tag(new))?;
    kv.put(Table::TagIndex, &index_key(key, &new.value, ino), &flags)?;
    if new.inherit {
        add_u64(kv, Table::TagInherit, &ino.to_be_bytes(), 1)?;
    }
    Ok(true)
}

fn delete_tag(kv: &mut impl KvWrite, ino: u64, key: &str) -> OpResult<bool> {
    let Some(old) = kv
        .get(Table::Tags, &tag_key(ino, key))?
        .map(|b| decode_tag(&b))
        .transpose()?
    else {
        return Ok(false);
    };
    kv.delete(Table::Tags, &tag_key(ino, key))?;
    kv.delete(Table::TagIndex, &index_key(key, &old.value, ino))?;
    add_u64(kv, Table::TagKeys, key.as_bytes(), -1)?;
    if old.inherit {
        add_u64(kv, Table::TagInherit, &ino.to_be_bytes(), -1)?;
    }
    Ok(true)
}

/// Sets tags on an existing inode without a path lookup (also used by bulk loaders).
pub fn set_tags_on(
    kv: &mut impl KvWrite,
    ino: u64,
    tags: &[(String, String)],
    inherit: bool,
) -> OpResult<Vec<String>> {
    let mut changed = Vec::new();
    for (i, (k, v)) in tags.iter().enumerate() {
        check_key(&format!("tags[{i}].key"), k)?;
        check_value(&format!("tags[{i}].value"), v)?;
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, (k, _)) in tags.iter().enumerate() {
        if !seen.insert(k.as_str()) {
            return refuse(Refusal::invalid(format!(
                "tags[{i}].key: {k:?} appears more than once"
            )));
        }
    }
    let olds = tags
        .iter()
        .map(|(k, _)| get_tag(kv, ino, k))
        .collect::<Result<Vec<_>, _>>()?;
    let added = olds.iter().filter(|o| o.is_none()).count();
    // Only new keys can take the inode over the limit: overwrites skip the count.
    if added > 0 {
        let existing = own_tags(kv, ino)?.len();
        if existing + added > TAGS_PER_INODE_MAX {
            return refuse(Refusal::invalid(format!(
                "tags: the inode would carry {} tags, the limit is {TAGS_PER_INODE_MAX} per inode",
                existing + added
            )));
        }
    }
    for ((k, v), old) in tags.iter().zip(olds) {
        let t = TagValue {
            value: v.clone(),
            inherit,
        };
        if put_tag(kv, ino, k, old, &t)? {
            changed.push(k.clone());
        }
    }
    changed.sort();
    Ok(changed)
}

fn emit(ctx: &mut ApplyCtx, inode: &Inode, path: &str, verb: &str, keys: &[String]) {
    ctx.emit(Event {
        kind: EventKind::TagsChanged as i32,
        path: path.to_string(),
        ino: inode.ino,
        inode_kind: inode.kind,
        detail: format!("{verb} {}", keys.join(",")),
        inode: Some(inode.clone()),
        ..Default::default()
    });
}

/// Applies one tag command. Refusals change nothing (the caller runs it in an overlay and all
/// validation happens before the first write anyway).
pub fn apply(kv: &mut impl KvWrite, ctx: &mut ApplyCtx, op: &TagOp) -> OpResult<TagReply> {
    match &op.op {
        None => refuse(Refusal::invalid("op: missing tag operation")),
        Some(tag_op::Op::Set(s)) => {
            if s.tags.is_empty() {
                return refuse(Refusal::invalid("tags: at least one tag is required"));
            }
            if s.tags.len() > TAGS_PER_INODE_MAX {
                return refuse(Refusal::invalid(format!(
                    "tags: {} tags given, the limit is {TAGS_PER_INODE_MAX} per inode",
                    s.tags.len()
                )));
            }
            let inode = resolve_existing(kv, "path", &s.path)?;
            let pairs: Vec<(String, String)> = s
                .tags
                .iter()
                .map(|t| (t.key.clone(), t.value.clone()))
                .collect();
            let changed = set_tags_on(kv, inode.ino, &pairs, s.inherit)?;
            if !changed.is_empty() {
                emit(ctx, &inode, &s.path, "set", &changed);
            }
            Ok(TagReply {
                changed,
                ino: inode.ino,
            })
        }
        Some(tag_op::Op::Remove(r)) => {
            if r.keys.is_empty() {
                return refuse(Refusal::invalid("keys: at least one key is required"));
            }
            for (i, k) in r.keys.iter().enumerate() {
                check_key(&format!("keys[{i}]"), k)?;
            }
            let inode = resolve_existing(kv, "path", &r.path)?;
            let mut changed = Vec::new();
            for k in &r.keys {
                if delete_tag(kv, inode.ino, k)? {
                    changed.push(k.clone());
                }
            }
            changed.sort();
            changed.dedup();
            if !changed.is_empty() {
                emit(ctx, &inode, &r.path, "removed", &changed);
            }
            Ok(TagReply {
                changed,
                ino: inode.ino,
            })
        }
    }
}

/// Called by namespace code when an inode is deleted: drop its tags, index rows and
/// inheritable-tag count, and fix the key catalogue counts. Emits nothing (the caller emits
/// the DELETED event).
pub fn on_inode_deleted(kv: &mut impl KvWrite, ino: u64) -> OpResult<()> {
    let keys: Vec<String> = own_tags(kv, ino)?.into_keys().collect();
    for k in keys {
        delete_tag(kv, ino, &k)?;
    }
    kv.delete(Table::TagInherit, &ino.to_be_bytes())?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
