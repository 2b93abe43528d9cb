//! Unit and property tests of tag commands, effective tags, the catalogue and FindByTags.

use std::collections::BTreeMap;

use metad_proto::v1::{tag_op, Inode, InodeKind, RemoveTags, SetTags, Tag, TagOp};
use metad_proto::ErrorCode;
use proptest::prelude::*;

use super::find::{find_by_tags, FindQuery};
use super::*;
use crate::sm::kv::MemKv;
use crate::sm::model::{
    alloc_ino, ensure_root, get_inode, path_of, put_dentry, put_inode, ApplyError, ROOT_INO,
};

/// Creates a directory or file under `parent` directly through the model helpers.
pub(crate) fn mk(kv: &mut MemKv, parent: u64, name: &str, dir: bool) -> u64 {
    let ino = alloc_ino(kv).expect("ino");
    put_inode(
        kv,
        &Inode {
            ino,
            kind: if dir {
                InodeKind::Directory
            } else {
                InodeKind::File
            } as i32,
            parent,
            name: name.into(),
            ..Default::default()
        },
    )
    .expect("put");
    put_dentry(kv, parent, name, ino).expect("dentry");
    let mut p = get_inode(kv, parent).expect("get").expect("parent");
    p.child_count += 1;
    put_inode(kv, &p).expect("put parent");
    ino
}

fn fresh() -> MemKv {
    let mut kv = MemKv::default();
    ensure_root(&mut kv).expect("root");
    kv
}

fn set_op(path: &str, tags: &[(&str, &str)], inherit: bool) -> TagOp {
    TagOp {
        op: Some(tag_op::Op::Set(SetTags {
            path: path.into(),
            tags: tags
                .iter()
                .map(|(k, v)| Tag {
                    key: k.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            inherit,
        })),
    }
}

fn rm_op(path: &str, keys: &[&str]) -> TagOp {
    TagOp {
        op: Some(tag_op::Op::Remove(RemoveTags {
            path: path.into(),
            keys: keys.iter().map(|k| k.to_string()).collect(),
        })),
    }
}

fn run(kv: &mut MemKv, op: &TagOp) -> (OpResult<TagReply>, ApplyCtx) {
    let mut ctx = ApplyCtx::new(7, 0);
    let r = apply(kv, &mut ctx, op);
    (r, ctx)
}

fn ok(kv: &mut MemKv, op: &TagOp) -> TagReply {
    let (r, _) = run(kv, op);
    r.expect("tag op")
}

fn refused(kv: &mut MemKv, op: &TagOp) -> Refusal {
    let before = kv.clone();
    let (r, ctx) = run(kv, op);
    match r {
        Err(ApplyError::Refused(r)) => {
            assert_eq!(*kv, before, "a refusal must change nothing");
            assert!(ctx.events.is_empty() && !ctx.changed);
            r
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn find_all(kv: &MemKv, scope: &str, expr: &str, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = find_by_tags(
            kv,
            &FindQuery {
                scope,
                expr,
                cursor: &cursor,
                limit,
            },
        )
        .expect("find");
        assert!(page.matches.len() <= limit);
        out.extend(page.matches.into_iter().map(|m| m.path));
        match page.next_cursor {
            Some(c) => cursor = c,
            None => return out,
        }
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn set_get_overwrite_and_remove_emit_events() {
    let mut kv = fresh();
    let d = mk(&mut kv, ROOT_INO, "d", true);
    let f = mk(&mut kv, d, "f", false);
    let (r, ctx) = run(&mut kv, &set_op("/d/f", &[("b", "2"), ("a", "1")], false));
    let r = r.expect("set");
    assert_eq!(r.changed, vec!["a", "b"]);
    assert_eq!(r.ino, f);
    assert_eq!(ctx.events.len(), 1);
    let ev = &ctx.events[0];
    assert_eq!(ev.kind, EventKind::TagsChanged as i32);
    assert_eq!((ev.path.as_str(), ev.ino, ev.revision), ("/d/f", f, 7));
    assert_eq!(ev.detail, "set a,b");
    assert_eq!(own_tag_value(&kv, f, "a").expect("get"), Some("1".into()));
    assert_eq!(own_tag_value(&kv, f, "zz").expect("get"), None);

    // Same values again: nothing changes, no event, no revision bump.
    let (r, ctx) = run(&mut kv, &set_op("/d/f", &[("a", "1")], false));
    assert!(r.expect("set").changed.is_empty());
    assert!(ctx.events.is_empty() && !ctx.changed);

    // Overwrite moves the index row.
    ok(&mut kv, &set_op("/d/f", &[("a", "9")], false));
    assert_eq!(find_all(&kv, "/", "a=1", 10), Vec::<String>::new());
    assert_eq!(find_all(&kv, "/", "a=9", 10), vec!["/d/f"]);
    // Flipping only the inherit flag is a change.
    assert_eq!(
        ok(&mut kv, &set_op("/d/f", &[("a", "9")], true)).changed,
        vec!["a"]
    );

    let (r, ctx) = run(&mut kv, &rm_op("/d/f", &["a", "nope", "a"]));
    assert_eq!(r.expect("rm").changed, vec!["a"]);
    assert_eq!(ctx.events[0].detail, "removed a");
    let (r, ctx) = run(&mut kv, &rm_op("/d/f", &["nope"]));
    assert!(r.expect("rm").changed.is_empty());
    assert!(!ctx.changed);
    assert_eq!(
        own_tags(&kv, f).expect("own").keys().collect::<Vec<_>>(),
        vec!["b"]
    );
    assert!(kv
        .get(Table::TagInherit, &f.to_be_bytes())
        .expect("get")
        .is_none());
}

#[test]
fn limits_and_bad_requests_are_refused_naming_field_and_limit() {
    let mut kv = fresh();
    mk(&mut kv, ROOT_INO, "f", false);
    let long_key = "k".repeat(KEY_MAX + 1);
    let long_val = "v".repeat(VALUE_MAX + 1);
    let cases: Vec<(TagOp, ErrorCode, &str)> = vec![
        (
            set_op("/f", &[("", "v")], false),
            ErrorCode::InvalidArgument,
            "tags[0].key: tag key must be 1..=128 bytes",
        ),
        (
            set_op("/f", &[("a", "1"), (&long_key, "v")], false),
            ErrorCode::InvalidArgument,
            "tags[1].key: tag key must be 1..=128 bytes, got 129",
        ),
        (
            set_op("/f", &[("a b", "v")], false),
            ErrorCode::InvalidArgument,
            "may only contain",
        ),
        (
            set_op("/f", &[("a", &long_val)], false),
            ErrorCode::InvalidArgument,
            "tags[0].value: tag value is 4097 bytes, the limit is 4096",
        ),
        (
            set_op("/f", &[("a", "x\0y")], false),
            ErrorCode::InvalidArgument,
            "NUL",
        ),
        (
            set_op("/f", &[("a", "1"), ("a", "2")], false),
            ErrorCode::InvalidArgument,
            "tags[1].key: \"a\" appears more than once",
        ),
        (
            set_op("/f", &[], false),
            ErrorCode::InvalidArgument,
            "at least one tag",
        ),
        (
            set_op("/nope", &[("a", "1")], false),
            ErrorCode::NotFound,
            "path: /nope does not exist",
        ),
        (
            set_op("rel", &[("a", "1")], false),
            ErrorCode::InvalidArgument,
            "path: path must be absolute",
        ),
        (
            set_op("/f/x", &[("a", "1")], false),
            ErrorCode::FailedPrecondition,
            "not a directory",
        ),
        (
            rm_op("/f", &[]),
            ErrorCode::InvalidArgument,
            "keys: at least one key",
        ),
        (
            rm_op("/f", &["ok", ""]),
            ErrorCode::InvalidArgument,
            "keys[1]: tag key must be",
        ),
        (
            TagOp { op: None },
            ErrorCode::InvalidArgument,
            "op: missing",
        ),
    ];
    for (op, code, msg) in cases {
        let r = refused(&mut kv, &op);
        assert_eq!(r.code, code, "{op:?}: {}", r.message);
        assert!(r.message.contains(msg), "{op:?}: {}", r.message);
    }
    // Exactly at the limits is fine.
    let max_key = "k".repeat(KEY_MAX);
    let max_val = "v".repeat(VALUE_MAX);
    ok(&mut kv, &set_op("/f", &[(&max_key, &max_val)], false));
}

#[test]
fn at_most_256_tags_per_inode() {
    let mut kv = fresh();
    mk(&mut kv, ROOT_INO, "f", false);
    let keys: Vec<(String, String)> = (0..TAGS_PER_INODE_MAX)
        .map(|i| (format!("k{i:03}"), "v".to_string()))
        .collect();
    let refs: Vec<(&str, &str)> = keys[..200]
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    ok(&mut kv, &set_op("/f", &refs, false));
    // 200 + 57 new keys would be 257: refused with nothing applied.
    let mut more: Vec<(String, String)> = keys[200..].to_vec();
    more.push(("extra".into(), "v".into()));
    let refs: Vec<(&str, &str)> = more.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = refused(&mut kv, &set_op("/f", &refs, false));
    assert!(
        r.message.contains("257 tags, the limit is 256 per inode"),
        "{}",
        r.message
    );
    // Overwriting existing keys does not count against the limit; reaching 256 exactly is fine.
    let refs: Vec<(&str, &str)> = keys.iter().map(|(k, _)| (k.as_str(), "w")).collect();
    ok(&mut kv, &set_op("/f", &refs, false));
    assert_eq!(own_tags(&kv, 2).expect("own").len(), TAGS_PER_INODE_MAX);
    let r = refused(&mut kv, &set_op("/f", &[("one-more", "v")], false));
    assert!(r.message.contains("limit is 256"));
}

#[test]
fn inheritance_nearest_ancestor_wins_and_own_overrides() {
    let mut kv = fresh();
    let data = mk(&mut kv, ROOT_INO, "data", true);
    let ml = mk(&mut kv, data, "ml", true);
    let a = mk(&mut kv, ml, "a", false);
    let b = mk(&mut kv, ml, "b", false);
    let c = mk(&mut kv, data, "c", false);
    ok(
        &mut kv,
        &set_op("/data", &[("tier", "hot"), ("owner", "x")], true),
    );
    ok(
        &mut kv,
        &set_op("/data", &[("note", "not inherited")], false),
    );
    ok(&mut kv, &set_op("/data/ml", &[("tier", "warm")], true));
    ok(&mut kv, &set_op("/data/ml/b", &[("tier", "cold")], false));

    let eff = |ino| {
        let i = get_inode(&kv, ino).expect("get").expect("inode");
        effective_tags(&kv, &i).expect("eff")
    };
    let ea = eff(a);
    assert_eq!(ea["tier"].value, "warm");
    assert_eq!(ea["tier"].source, Some((ml, "/data/ml".into())));
    assert_eq!(ea["owner"].source, Some((data, "/data".into())));
    assert!(
        !ea.contains_key("note"),
        "a non-inheritable tag stays on its inode"
    );
    let eb = eff(b);
    assert_eq!(
        (eb["tier"].value.as_str(), &eb["tier"].source),
        ("cold", &None)
    );
    let ec = eff(c);
    assert_eq!(ec["tier"].value, "hot");
    assert_eq!(eff(data)["tier"].source, None);

    assert_eq!(
        sorted(find_all(&kv, "/", "tier=hot", 10)),
        vec!["/data", "/data/c"]
    );
    assert_eq!(
        find_all(&kv, "/", "tier=warm", 10),
        vec!["/data/ml", "/data/ml/a"]
    );
    assert_eq!(find_all(&kv, "/", "tier=cold", 10), vec!["/data/ml/b"]);
    assert_eq!(
        find_all(&kv, "/data/ml", "owner=x and tier!=warm", 10),
        vec!["/data/ml/b"]
    );
    assert_eq!(find_all(&kv, "/", "has(note)", 10), vec!["/data"]);
    // Removing the override exposes the inherited value again.
    ok(&mut kv, &rm_op("/data/ml", &["tier"]));
    assert_eq!(
        find_all(&kv, "/", "tier=hot", 10),
        vec!["/data", "/data/ml", "/data/ml/a", "/data/c"]
    );
}

#[test]
fn find_restricts_to_scope_pages_and_refuses_bad_input() {
    let mut kv = fresh();
    let x = mk(&mut kv, ROOT_INO, "x", true);
    let y = mk(&mut kv, ROOT_INO, "y", true);
    for i in 0..25 {
        let f = mk(
            &mut kv,
            if i % 2 == 0 { x } else { y },
            &format!("f{i:02}"),
            false,
        );
        let p = path_of(&kv, f).expect("path");
        ok(
            &mut kv,
            &set_op(&p, &[("k", if i % 5 == 0 { "five" } else { "v" })], false),
        );
    }
    assert_eq!(find_all(&kv, "/", "k=v", 3).len(), 20);
    assert_eq!(find_all(&kv, "/x", "k=v", 4).len(), 10);
    assert_eq!(
        find_all(&kv, "/y", "k in (five)", 1),
        vec!["/y/f05", "/y/f15"]
    );
    assert_eq!(find_all(&kv, "/", "not has(k)", 100), vec!["/", "/x", "/y"]);
    // A page exactly full with nothing after it has no cursor.
    let p = find_by_tags(
        &kv,
        &FindQuery {
            scope: "/",
            expr: "k=five",
            cursor: "",
            limit: 5,
        },
    )
    .expect("find");
    assert_eq!((p.matches.len(), p.next_cursor), (5, None));
    assert!(p.plan.contains("index [k=five]: 5 rows"), "{}", p.plan);

    let bad = |q: FindQuery<'_>, code: ErrorCode, msg: &str| match find_by_tags(&kv, &q) {
        Err(ApplyError::Refused(r)) => {
            assert_eq!(r.code, code, "{}", r.message);
            assert!(r.message.contains(msg), "{}", r.message);
        }
        other => panic!("expected refusal, got {other:?}"),
    };
    bad(
        FindQuery {
            scope: "/",
            expr: "k=",
            cursor: "",
            limit: 1,
        },
        ErrorCode::InvalidArgument,
        "expr: at position 2: expected a value",
    );
    bad(
        FindQuery {
            scope: "/",
            expr: "k=v",
            cursor: "zz",
            limit: 1,
        },
        ErrorCode::InvalidArgument,
        "cursor:",
    );
    bad(
        FindQuery {
            scope: "/",
            expr: "k=v",
            cursor: "",
            limit: 10_001,
        },
        ErrorCode::InvalidArgument,
        "limit: 10001 is above the maximum 10000",
    );
    bad(
        FindQuery {
            scope: "/nope",
            expr: "k=v",
            cursor: "",
            limit: 1,
        },
        ErrorCode::NotFound,
        "scope: /nope does not exist",
    );
}

#[test]
fn key_catalogue_counts_inodes_per_key() {
    let mut kv = fresh();
    let a = mk(&mut kv, ROOT_INO, "a", false);
    mk(&mut kv, ROOT_INO, "b", false);
    ok(&mut kv, &set_op("/a", &[("x", "1"), ("y", "1")], false));
    ok(&mut kv, &set_op("/b", &[("x", "2")], true));
    ok(&mut kv, &set_op("/b", &[("x", "3")], false)); // overwrite: count unchanged
    assert_eq!(
        list_keys(&kv, "", 10).expect("keys"),
        vec![("x".to_string(), 2), ("y".to_string(), 1)]
    );
    assert_eq!(
        list_keys(&kv, "x", 10).expect("keys"),
        vec![("y".to_string(), 1)]
    );
    assert_eq!(list_keys(&kv, "", 1).expect("keys").len(), 1);
    ok(&mut kv, &rm_op("/a", &["y"]));
    assert_eq!(
        list_keys(&kv, "", 10).expect("keys"),
        vec![("x".to_string(), 2)]
    );

    // on_inode_deleted drops tags, index rows and counts.
    on_inode_deleted(&mut kv, a).expect("deleted");
    assert_eq!(
        list_keys(&kv, "", 10).expect("keys"),
        vec![("x".to_string(), 1)]
    );
    assert!(own_tags(&kv, a).expect("own").is_empty());
    assert_eq!(find_all(&kv, "/", "has(x)", 10), vec!["/b"]);
    let b = 3;
    on_inode_deleted(&mut kv, b).expect("deleted");
    for t in [
        Table::Tags,
        Table::TagIndex,
        Table::TagKeys,
        Table::TagInherit,
    ] {
        assert!(
            kv.range(t, &[], None, 10).expect("range").is_empty(),
            "{t:?} not empty"
        );
    }
    // Idempotent on an untagged inode.
    on_inode_deleted(&mut kv, 99).expect("deleted");
}

#[test]
fn on_inode_deleted_clears_inheritance_of_a_directory() {
    let mut kv = fresh();
    let d = mk(&mut kv, ROOT_INO, "d", true);
    mk(&mut kv, d, "f", false);
    ok(&mut kv, &set_op("/d", &[("tier", "hot")], true));
    assert_eq!(find_all(&kv, "/", "tier=hot", 10), vec!["/d", "/d/f"]);
    on_inode_deleted(&mut kv, d).expect("deleted");
    assert!(find_all(&kv, "/", "tier=hot", 10).is_empty());
    assert!(kv
        .get(Table::TagInherit, &d.to_be_bytes())
        .expect("get")
        .is_none());
}

// ---------- property test: index-served FindByTags == brute force ----------

const KEYS: [&str; 3] = ["a", "b", "c"];
// Two values longer than the index keeps whole (58 bytes), alike but for their last byte.
const VALS: [&str; 4] = [
    "1",
    "2",
    "s3://bucket/datasets/imagenet-2012/train/shards/part-00001",
    "s3://bucket/datasets/imagenet-2012/train/shards/part-00002",
];

#[derive(Debug, Clone)]
struct Node {
    parent: usize, // index into the node list (0 = root)
    dir: bool,
    tags: Vec<(usize, usize, bool)>, // key idx, value idx, inherit
}

fn arb_tree() -> impl Strategy<Value = Vec<Node>> {
    prop::collection::vec(
        (
            any::<prop::sample::Index>(),
            any::<bool>(),
            prop::collection::vec((0..3usize, 0..VALS.len(), any::<bool>()), 0..3),
        ),
        1..30,
    )
    .prop_map(|raw| {
        let mut nodes = vec![Node {
            parent: 0,
            dir: true,
            tags: vec![],
        }];
        for (pidx, dir, tags) in raw {
            let dirs: Vec<usize> = (0..nodes.len()).filter(|&i| nodes[i].dir).collect();
            nodes.push(Node {
                parent: dirs[pidx.index(dirs.len())],
                dir,
                tags,
            });
        }
        nodes
    })
}

fn arb_expr() -> impl Strategy<Value = Expr> {
    let key = (0..3usize).prop_map(|i| KEYS[i].to_string());
    let val = (0..VALS.len()).prop_map(|i| VALS[i].to_string());
    let leaf = prop_oneof![
        (key.clone(), val.clone()).prop_map(|(k, v)| Expr::Eq(k, v)),
        (key.clone(), val.clone()).prop_map(|(k, v)| Expr::Ne(k, v)),
        (key.clone(), prop::collection::vec(val, 1..3)).prop_map(|(k, v)| Expr::In(k, v)),
        key.prop_map(Expr::Has),
    ];
    leaf.prop_recursive(3, 12, 2, |inner| {
        prop_oneof![
            inner.clone().prop_map(|e| Expr::Not(Box::new(e))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Expr::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner).prop_map(|(a, b)| Expr::Or(Box::new(a), Box::new(b))),
        ]
    })
}

use super::expr::Expr;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn find_equals_brute_force(
        nodes in arb_tree(),
        e in arb_expr(),
        scope_pick in any::<prop::sample::Index>(),
        limit in 1usize..5,
    ) {
        let mut kv = fresh();
        let mut inos = vec![ROOT_INO];
        for (i, n) in nodes.iter().enumerate().skip(1) {
            let ino = mk(&mut kv, inos[n.parent], &format!("n{i}"), n.dir);
            inos.push(ino);
        }
        for (i, n) in nodes.iter().enumerate() {
            let p = path_of(&kv, inos[i]).expect("path");
            for &(k, v, inh) in &n.tags {
                ok(&mut kv, &set_op(&p, &[(KEYS[k], VALS[v])], inh));
            }
        }
        // Brute force: effective tags computed naively from the reference tree.
        let mut own: Vec<BTreeMap<&str, (&str, bool)>> = vec![BTreeMap::new(); nodes.len()];
        for (i, n) in nodes.iter().enumerate() {
            for &(k, v, inh) in &n.tags {
                own[i].insert(KEYS[k], (VALS[v], inh));
            }
        }
        let dirs: Vec<usize> = (0..nodes.len()).filter(|&i| nodes[i].dir).collect();
        let scope = dirs[scope_pick.index(dirs.len())];
        let scope_path = path_of(&kv, inos[scope]).expect("path");
        let mut expected = Vec::new();
        for (i, &ino) in inos.iter().enumerate() {
            // chain i, parent(i), ..., root
            let mut chain = vec![i];
            while *chain.last().expect("chain") != 0 {
                chain.push(nodes[*chain.last().expect("chain")].parent);
            }
            if !chain.contains(&scope) {
                continue;
            }
            let mut eff: BTreeMap<String, String> = BTreeMap::new();
            for (depth, &n) in chain.iter().enumerate() {
                for (k, (v, inh)) in &own[n] {
                    if (depth == 0 || *inh) && !eff.contains_key(*k) {
                        eff.insert(k.to_string(), v.to_string());
                    }
                }
            }
            if e.eval(&eff) {
                expected.push((ino, path_of(&kv, ino).expect("path")));
            }
        }
        expected.sort();
        let expected: Vec<String> = expected.into_iter().map(|(_, p)| p).collect();
        let got = find_all(&kv, &scope_path, &e.to_string(), limit);
        prop_assert_eq!(got, expected, "expr {} scope {}", e, scope_path);

        // GetTags(effective) agrees with the same brute force for every inode.
        for (i, &ino) in inos.iter().enumerate() {
            let inode = get_inode(&kv, ino).expect("get").expect("inode");
            let eff: BTreeMap<String, String> = effective_tags(&kv, &inode)
                .expect("eff")
                .into_iter()
                .map(|(k, t)| (k, t.value))
                .collect();
            let mut want: BTreeMap<String, String> = BTreeMap::new();
            let mut n = i;
            let mut depth = 0;
            loop {
                for (k, (v, inh)) in &own[n] {
                    if (depth == 0 || *inh) && !want.contains_key(*k) {
                        want.insert(k.to_string(), v.to_string());
                    }
                }
                if n == 0 { break; }
                n = nodes[n].parent;
                depth += 1;
            }
            prop_assert_eq!(eff, want);
        }
    }
}

#[test]
fn long_values_keep_index_rows_small_and_answers_exact() {
    let mut kv = fresh();
    let long_a = format!("{}a", "x".repeat(100));
    let long_b = format!("{}b", "x".repeat(100));
    // As long as a FindByTags expression can spell (EXPR_MAX = 4096 bytes).
    let max = "y".repeat(4000);
    // A short value spelled like long_a's index form shares its index rows.
    let alias = {
        let p = index_prefix("k", Some(&long_a));
        String::from_utf8(p[2..p.len() - 1].to_vec()).expect("ascii")
    };
    assert_eq!(alias.len(), INDEX_VALUE_WHOLE);
    assert_eq!(
        index_prefix("k", Some(&alias)),
        index_prefix("k", Some(&long_a))
    );
    for (name, v) in [("a", &long_a), ("b", &long_b), ("m", &max), ("s", &alias)] {
        mk(&mut kv, ROOT_INO, name, false);
        ok(&mut kv, &set_op(&format!("/{name}"), &[("k", v)], false));
    }
    let rows = kv.range(Table::TagIndex, &[], None, 10).expect("range");
    assert_eq!(rows.len(), 4);
    for (k, _) in &rows {
        assert!(
            k.len() <= 1 + 1 + INDEX_VALUE_WHOLE + 1 + 8,
            "{} bytes",
            k.len()
        );
    }
    let q = |v: &str| format!("k=\"{v}\"");
    assert_eq!(find_all(&kv, "/", &q(&long_a), 10), vec!["/a"]);
    assert_eq!(find_all(&kv, "/", &q(&long_b), 10), vec!["/b"]);
    assert_eq!(find_all(&kv, "/", &q(&max), 10), vec!["/m"]);
    assert_eq!(find_all(&kv, "/", &q(&alias), 10), vec!["/s"]);
    assert_eq!(
        find_all(&kv, "/", &format!("k in (\"{long_a}\", \"{long_b}\")"), 10),
        vec!["/a", "/b"]
    );
    // The shared rows are read, then the real tags decide.
    let p = find_by_tags(
        &kv,
        &FindQuery {
            scope: "/",
            expr: &q(&long_a),
            cursor: "",
            limit: 10,
        },
    )
    .expect("find");
    assert!(p.plan.contains(": 2 rows"), "{}", p.plan);
    // Changing and removing a long value removes its old index row.
    ok(&mut kv, &set_op("/a", &[("k", &long_b)], false));
    assert_eq!(find_all(&kv, "/", &q(&long_a), 10), Vec::<String>::new());
    assert_eq!(find_all(&kv, "/", &q(&long_b), 10), vec!["/a", "/b"]);
    ok(&mut kv, &rm_op("/m", &["k"]));
    assert_eq!(find_all(&kv, "/", &q(&max), 10), Vec::<String>::new());
    assert_eq!(
        kv.range(Table::TagIndex, &[], None, 10)
            .expect("range")
            .len(),
        3
    );
}

#[test]
fn through_apply_command_revision_moves_only_on_change_and_retries_are_deduplicated() {
    use crate::sm::apply::{apply_command, revision};
    use metad_proto::raft::v1::{command::Op, reply, Command};
    let mut kv = fresh();
    mk(&mut kv, ROOT_INO, "f", false);
    let cmd = |seq, op: TagOp| Command {
        client_id: "c".into(),
        seq,
        leader_time_ms: 10,
        op: Some(Op::Tags(op)),
    };
    let r1 = apply_command(&mut kv, &cmd(1, set_op("/f", &[("a", "1")], false))).expect("apply");
    assert_eq!(r1.revision, 1);
    assert!(matches!(&r1.result, Some(reply::Result::Tags(t)) if t.changed == vec!["a"]));
    let events = crate::sm::model::events_from(&kv, 0, 10).expect("events");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventKind::TagsChanged as i32);
    // A retry of seq 1 returns the first reply and applies nothing.
    let again = apply_command(&mut kv, &cmd(1, set_op("/f", &[("a", "2")], false))).expect("apply");
    assert_eq!(again, r1);
    assert_eq!(own_tag_value(&kv, 2, "a").expect("get"), Some("1".into()));
    // No-op set: no revision bump.
    let r2 = apply_command(&mut kv, &cmd(2, set_op("/f", &[("a", "1")], false))).expect("apply");
    assert_eq!(r2.revision, 1);
    // Refusal: a reply with the code, no revision bump.
    let r3 = apply_command(&mut kv, &cmd(3, set_op("/f", &[("", "1")], false))).expect("apply");
    assert!(
        matches!(&r3.result, Some(reply::Result::Error(e)) if e.code == "INVALID_ARGUMENT"),
        "{r3:?}"
    );
    assert_eq!(revision(&kv).expect("rev"), 1);
    let r4 = apply_command(&mut kv, &cmd(4, rm_op("/f", &["a"]))).expect("apply");
    assert_eq!(r4.revision, 2);
}
