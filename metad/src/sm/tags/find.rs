//! FindByTags: inodes under a scope whose effective tags satisfy an expression, served from the
//! tag index. A pure function over `KvRead`, so any node can answer from its applied state.
//!
//! Plan: the expression is reduced to a set of index lookups whose union is a superset of the
//! matches (`k=v` -> one (k,v) range; `k in (..)` -> one per value; `has(k)` -> the k range;
//! `a and b` -> the more selective side, by counting index rows up to `ESTIMATE_CAP`, a row of
//! an inheritable tag weighing 1 + its directory's entry count;
//! `a or b` -> both sides). A row whose tag is inheritable adds the subtree below that
//! directory (clipped to the scope), since its descendants may inherit the tag. Every candidate
//! is then checked against the whole expression over its effective tags (own + inherited,
//! resolved once per parent directory and cached) and the scope, in inode-number order, which
//! is the stable result order the cursor resumes from. Only an expression without any positive
//! term (e.g. `not pii`, `k!=v`) has no index driver and walks the scope instead.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use metad_proto::v1::InodeKind;

use super::expr::{self, Expr};
use super::{index_prefix, inheritable_tags, own_tags, prefix_end};
use crate::sm::kv::{KvError, KvRead, Table};
use crate::sm::model::{get_inode, join, list_dir, resolve_existing, OpResult, Refusal, ROOT_INO};

/// Default and largest page size.
pub const DEFAULT_LIMIT: usize = 1000;
pub const MAX_LIMIT: usize = 10_000;
/// Index rows counted per term when choosing the most selective one.
const ESTIMATE_CAP: usize = 4096;
const PAGE: usize = 1024;

#[derive(Debug, Clone, Default)]
pub struct FindQuery<'a> {
    pub scope: &'a str,
    pub expr: &'a str,
    /// "" = from the start, else a `next_cursor` of a previous page.
    pub cursor: &'a str,
    /// 0 = `DEFAULT_LIMIT`.
    pub limit: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub ino: u64,
    pub path: String,
    pub kind: InodeKind,
}

#[derive(Debug, Clone, Default)]
pub struct FindPage {
    pub matches: Vec<Match>,
    /// `Some` if more matches follow: pass it as the next query's cursor.
    pub next_cursor: Option<String>,
    /// How the answer was computed (index terms used, rows, subtrees walked, candidates).
    pub plan: String,
}

fn parse_cursor(c: &str) -> Result<u64, Refusal> {
    if c.is_empty() {
        return Ok(0);
    }
    c.strip_prefix("i")
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| Refusal::invalid(format!("cursor: {c:?} is not a FindByTags cursor")))
}

fn cursor_of(ino: u64) -> String {
    format!("i{ino}")
}

/// An index lookup: (key, Some(value)) or (key, None) for any value.
type Lookup = (String, Option<String>);

/// Estimated candidates of one lookup: its index rows (up to `ESTIMATE_CAP`), where a row of an
/// inheritable tag weighs 1 + the directory's entry count, since its subtree becomes candidates.
fn count_rows(kv: &impl KvRead, l: &Lookup) -> Result<usize, KvError> {
    let p = index_prefix(&l.0, l.1.as_deref());
    let rows = kv.range(Table::TagIndex, &p, Some(&prefix_end(&p)), ESTIMATE_CAP + 1)?;
    let mut n = 0usize;
    for (k, v) in rows {
        n = n.saturating_add(1);
        if v.first().is_some_and(|f| f & 1 != 0) {
            let children = get_inode(kv, index_ino(&k)?)?
                .map(|i| i.child_count)
                .unwrap_or(0);
            n = n.saturating_add(usize::try_from(children).unwrap_or(usize::MAX));
        }
    }
    Ok(n)
}

fn index_ino(k: &[u8]) -> Result<u64, KvError> {
    k.len()
        .checked_sub(8)
        .and_then(|i| <[u8; 8]>::try_from(&k[i..]).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| KvError("find: short index key".into()))
}

/// The lookups whose union covers every match of `e`, with their estimated row count; `None`
/// if `e` has no positive driver (it can hold for inodes carrying none of its tags).
fn plan(kv: &impl KvRead, e: &Expr) -> Result<Option<(Vec<Lookup>, usize)>, KvError> {
    Ok(match e {
        Expr::Eq(k, v) => {
            let l = (k.clone(), Some(v.clone()));
            let n = count_rows(kv, &l)?;
            Some((vec![l], n))
        }
        Expr::In(k, vs) => {
            let mut ls = Vec::new();
            let mut n = 0;
            for v in vs {
                let l = (k.clone(), Some(v.clone()));
                n += count_rows(kv, &l)?;
                ls.push(l);
            }
            ls.sort();
            ls.dedup();
            Some((ls, n))
        }
        Expr::Has(k) => {
            let l = (k.clone(), None);
            let n = count_rows(kv, &l)?;
            Some((vec![l], n))
        }
        Expr::Ne(..) | Expr::Not(_) => None,
        Expr::And(a, b) => match (plan(kv, a)?, plan(kv, b)?) {
            (Some(x), Some(y)) => Some(if y.1 < x.1 { y } else { x }),
            (x, None) => x,
            (None, y) => y,
        },
        Expr::Or(a, b) => match (plan(kv, a)?, plan(kv, b)?) {
            (Some(mut x), Some(y)) => {
                x.0.extend(y.0);
                x.0.sort();
                x.0.dedup();
                Some((x.0, x.1 + y.1))
            }
            _ => None,
        },
    })
}

/// What a directory contributes to the query: its path, the tags its children inherit, and
/// whether it is the scope or below it.
struct DirInfo {
    path: Rc<str>,
    inherit: Rc<BTreeMap<String, String>>,
    in_scope: bool,
}

struct Ctx<'k, K: KvRead> {
    kv: &'k K,
    scope: u64,
    dirs: HashMap<u64, Rc<DirInfo>>,
}

impl<K: KvRead> Ctx<'_, K> {
    fn dir(&mut self, ino: u64) -> Result<Rc<DirInfo>, KvError> {
        if let Some(d) = self.dirs.get(&ino) {
            return Ok(d.clone());
        }
        // Walk up to the first cached ancestor (or the root), then fill in downwards.
        let mut chain = Vec::new();
        let mut cur = ino;
        let mut parent = loop {
            if let Some(d) = self.dirs.get(&cur) {
                break d.clone();
            }
            if cur == ROOT_INO {
                let info = Rc::new(DirInfo {
                    path: Rc::from("/"),
                    inherit: Rc::new(inheritable_tags(self.kv, ROOT_INO)?),
                    in_scope: self.scope == ROOT_INO,
                });
                self.dirs.insert(ROOT_INO, info.clone());
                break info;
            }
            let inode = get_inode(self.kv, cur)?
                .ok_or_else(|| KvError(format!("find: inode {cur} missing")))?;
            cur = inode.parent;
            chain.push(inode);
            if chain.len() > crate::sm::limits::PATH_MAX {
                return Err(KvError("find: ancestor chain too long".into()));
            }
        };
        for inode in chain.into_iter().rev() {
            let own = inheritable_tags(self.kv, inode.ino)?;
            let inherit = if own.is_empty() {
                parent.inherit.clone()
            } else {
                let mut m = (*parent.inherit).clone();
                m.extend(own);
                Rc::new(m)
            };
            let info = Rc::new(DirInfo {
                path: Rc::from(join(&parent.path, &inode.name)),
                inherit,
                in_scope: parent.in_scope || inode.ino == self.scope,
            });
            self.dirs.insert(inode.ino, info.clone());
            parent = info;
        }
        Ok(parent)
    }

    /// Whether `dir` is an ancestor of the scope (or the scope itself).
    fn covers_scope(&mut self, dir: u64) -> Result<bool, KvError> {
        if dir == self.scope {
            return Ok(true);
        }
        let mut cur = self.scope;
        while cur != 0 && cur != ROOT_INO {
            cur = get_inode(self.kv, cur)?.map(|i| i.parent).unwrap_or(0);
            if cur == dir {
                return Ok(true);
            }
        }
        Ok(dir == ROOT_INO)
    }
}

/// Every inode strictly below `root`, depth-first, in bounded pages.
fn walk_below(kv: &impl KvRead, root: u64, out: &mut Vec<u64>) -> Result<usize, KvError> {
    let mut n = 0;
    let mut stack = vec![root];
    while let Some(d) = stack.pop() {
        let mut after: Option<String> = None;
        loop {
            let page = list_dir(kv, d, after.as_deref(), PAGE)?;
            let full = page.len() == PAGE;
            for (name, ino) in page {
                out.push(ino);
                stack.push(ino);
                n += 1;
                after = Some(name);
            }
            if !full {
                break;
            }
        }
    }
    Ok(n)
}

/// Runs one FindByTags page.
pub fn find_by_tags(kv: &impl KvRead, q: &FindQuery<'_>) -> OpResult<FindPage> {
    let limit = match q.limit {
        0 => DEFAULT_LIMIT,
        n if n > MAX_LIMIT => {
            return Err(
                Refusal::invalid(format!("limit: {n} is above the maximum {MAX_LIMIT}")).into(),
            )
        }
        n => n,
    };
    let e = expr::parse(q.expr).map_err(|e| Refusal::invalid(format!("expr: {e}")))?;
    let after = parse_cursor(q.cursor)?;
    let scope = resolve_existing(kv, "scope", q.scope)?;
    let mut ctx = Ctx {
        kv,
        scope: scope.ino,
        dirs: HashMap::new(),
    };

    let mut cands: Vec<u64> = Vec::new();
    let plan_text;
    match plan(kv, &e)? {
        Some((lookups, _)) => {
            let mut rows = 0usize;
            let mut inheriting = Vec::new();
            for l in &lookups {
                let p = index_prefix(&l.0, l.1.as_deref());
                let end = prefix_end(&p);
                let mut start = p.clone();
                loop {
                    let page = kv.range(Table::TagIndex, &start, Some(&end), PAGE)?;
                    let full = page.len() == PAGE;
                    for (k, v) in &page {
                        let ino = index_ino(k)?;
                        rows += 1;
                        cands.push(ino);
                        if v.first().is_some_and(|f| f & 1 != 0) {
                            inheriting.push(ino);
                        }
                    }
                    match page.last() {
                        Some((k, _)) if full => {
                            start = k.clone();
                            start.push(0);
                        }
                        _ => break,
                    }
                }
            }
            inheriting.sort_unstable();
            inheriting.dedup();
            let mut walked = 0;
            let mut scope_walked = false;
            for d in &inheriting {
                // Descendants of `d` may inherit the tag: walk the part of its subtree that
                // lies in scope.
                let in_scope = *d == scope.ino || {
                    let parent = get_inode(kv, *d)?.map(|i| i.parent).unwrap_or(0);
                    parent != 0 && ctx.dir(parent)?.in_scope
                };
                if in_scope {
                    walked += walk_below(kv, *d, &mut cands)?;
                } else if !scope_walked && ctx.covers_scope(*d)? {
                    scope_walked = true;
                    cands.push(scope.ino);
                    walked += walk_below(kv, scope.ino, &mut cands)?;
                }
            }
            let terms: Vec<String> = lookups
                .iter()
                .map(|(k, v)| match v {
                    Some(v) => Expr::Eq(k.clone(), v.clone()).to_string(),
                    None => format!("has({k})"),
                })
                .collect();
            plan_text = format!(
                "index [{}]: {rows} rows, {} inheriting dirs, {walked} inodes below them",
                terms.join(" | "),
                inheriting.len()
            );
        }
        None => {
            cands.push(scope.ino);
            let n = walk_below(kv, scope.ino, &mut cands)?;
            plan_text = format!("scope walk (no positive term): {} inodes", n + 1);
        }
    }
    cands.retain(|&i| i > after);
    cands.sort_unstable();
    cands.dedup();

    let mut page = FindPage {
        plan: format!("{plan_text}; {} candidates after cursor", cands.len()),
        ..Default::default()
    };
    for ino in cands {
        let Some(inode) = get_inode(kv, ino)? else {
            continue;
        };
        let (in_scope, path, mut tags) = if inode.parent == 0 {
            (scope.ino == ROOT_INO, "/".to_string(), BTreeMap::new())
        } else {
            let d = ctx.dir(inode.parent)?;
            (
                d.in_scope || ino == scope.ino,
                join(&d.path, &inode.name),
                (*d.inherit).clone(),
            )
        };
        if !in_scope {
            continue;
        }
        for (k, t) in own_tags(kv, ino)? {
            tags.insert(k, t.value);
        }
        if !e.eval(&tags) {
            continue;
        }
        if page.matches.len() == limit {
            page.next_cursor = page.matches.last().map(|m| cursor_of(m.ino));
            break;
        }
        page.matches.push(Match {
            ino,
            path,
            kind: InodeKind::try_from(inode.kind).unwrap_or(InodeKind::Unspecified),
        });
    }
    Ok(page)
}
