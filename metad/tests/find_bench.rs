//! FindByTags over 1 M files: builds the tree directly into a real redb `sm.redb` through the
//! state machine's own functions (model helpers + `sm::tags::set_tags_on`, the code SetTags
//! runs), opens it as a node's `SmStore` and times selective queries through `SmStore::read`
//! (the view the Tags service queries). Run with
//! `cargo test --release -p metad --test find_bench -- --ignored --nocapture`.

use std::time::{Duration, Instant};

use metad::sm::kv::KvWrite;
use metad::sm::model::{alloc_ino, ensure_root, put_dentry, put_inode, ROOT_INO};
use metad::sm::tags::find::{find_by_tags, FindQuery};
use metad::sm::tags::set_tags_on;
use metad::store::redb_kv::RedbWrite;
use metad::store::SmStore;
use metad_proto::v1::{Inode, InodeKind};

const PROJECTS: u64 = 100;
const SUBDIRS: u64 = 100;
const FILES: u64 = 100; // per subdir: 100 * 100 * 100 = 1 M files

fn dir(kv: &mut impl KvWrite, parent: u64, name: &str, children: u64) -> u64 {
    let ino = alloc_ino(kv).expect("ino");
    put_inode(
        kv,
        &Inode {
            ino,
            kind: InodeKind::Directory as i32,
            parent,
            name: name.into(),
            child_count: children,
            mode: 0o755,
            ..Default::default()
        },
    )
    .expect("inode");
    put_dentry(kv, parent, name, ino).expect("dentry");
    ino
}

fn pairs(p: &[(&str, String)]) -> Vec<(String, String)> {
    p.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

#[test]
#[ignore = "benchmark: builds 1 M files (~1-2 min in release); run with --ignored --nocapture"]
fn find_by_tags_over_one_million_files() {
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("sm.redb");
    let t0 = Instant::now();
    {
        let db = redb::Database::builder()
            .set_cache_size(256 << 20)
            .create(&path)
            .expect("db");
        let mut files = 0u64;
        for p in 0..PROJECTS {
            let mut w = db.begin_write().expect("txn");
            w.set_durability(redb::Durability::None)
                .expect("durability");
            {
                let mut kv = RedbWrite::new(&w);
                let root_children = PROJECTS;
                if p == 0 {
                    ensure_root(&mut kv).expect("root");
                    let mut root = metad::sm::model::get_inode(&kv, ROOT_INO)
                        .expect("get")
                        .expect("root");
                    root.child_count = root_children;
                    put_inode(&mut kv, &root).expect("root");
                }
                let pd = dir(&mut kv, ROOT_INO, &format!("p{p:02}"), SUBDIRS);
                // Inherited by the 10 000 files of the project (1 %).
                set_tags_on(
                    &mut kv,
                    pd,
                    &pairs(&[("project", format!("p{p:02}"))]),
                    true,
                )
                .expect("tag project");
                for s in 0..SUBDIRS {
                    let sd = dir(&mut kv, pd, &format!("s{s:02}"), FILES);
                    if s.is_multiple_of(10) {
                        set_tags_on(&mut kv, sd, &pairs(&[("tier", "hot".into())]), true)
                            .expect("tag tier");
                    }
                    for f in 0..FILES {
                        let ino = alloc_ino(&mut kv).expect("ino");
                        let name = format!("f{f:03}.bin");
                        put_inode(
                            &mut kv,
                            &Inode {
                                ino,
                                kind: InodeKind::File as i32,
                                parent: sd,
                                name: name.clone(),
                                size: 4096,
                                mode: 0o644,
                                ..Default::default()
                            },
                        )
                        .expect("inode");
                        put_dentry(&mut kv, sd, &name, ino).expect("dentry");
                        let mut tags = pairs(&[
                            ("shard", format!("s{:03}", files % 200)),
                            (
                                "stage",
                                if (files / 200).is_multiple_of(2) {
                                    "clean"
                                } else {
                                    "raw"
                                }
                                .to_string(),
                            ),
                        ]);
                        if files.is_multiple_of(997) {
                            tags.push(("owner".into(), "alice".into()));
                        }
                        set_tags_on(&mut kv, ino, &tags, false).expect("tag file");
                        files += 1;
                    }
                }
            }
            w.commit().expect("commit");
        }
        let mut w = db.begin_write().expect("txn");
        w.set_durability(redb::Durability::Immediate)
            .expect("durability");
        w.commit().expect("final fsync");
        assert_eq!(files, 1_000_000);
    }
    let load = t0.elapsed();
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!(
        "loaded 1 000 000 files + {} dirs in {:.1}s, sm.redb {:.0} MiB",
        PROJECTS * (SUBDIRS + 1),
        load.as_secs_f64(),
        size as f64 / (1 << 20) as f64
    );

    let snaps = tmp.path().join("snapshots");
    std::fs::create_dir_all(&snaps).expect("snapdir");
    let store = SmStore::open(&path, &snaps).expect("open SmStore");

    let queries: &[(&str, &str, usize)] = &[
        // 1 M files * 1/200 shard * 1/2 clean = 2 500 matches (0.25 %), 5 000 index rows.
        ("/", "shard=s007 and stage=clean", 2_500),
        // Inherited: one directory row -> its 10 000-file subtree (1 %).
        ("/", "project=p42", 10_101),
        // Rare own tag AND an inherited one: ~1 000 owner rows, 1/10 under tier=hot dirs.
        ("/", "owner=alice and tier=hot", 0),
        // Scoped: shard rows everywhere, only /p13 kept (50 matches).
        ("/p13", "shard in (s001,s002) and not stage=raw", 0),
    ];
    println!("query | scope | matches | p50 | min | max | plan");
    for (scope, expr, expect) in queries {
        let mut times: Vec<Duration> = Vec::new();
        let mut n = 0;
        let mut plan = String::new();
        for _ in 0..7 {
            let t = Instant::now();
            let page = store
                .read(|kv| {
                    Ok(find_by_tags(
                        kv,
                        &FindQuery {
                            scope,
                            expr,
                            cursor: "",
                            limit: 10_000,
                        },
                    ))
                })
                .expect("read")
                .expect("find");
            times.push(t.elapsed());
            n = page.matches.len();
            plan = page.plan;
            if page.next_cursor.is_some() {
                // Follow the cursor so the timing covers the whole answer.
                let more = store
                    .read(|kv| {
                        Ok(find_by_tags(
                            kv,
                            &FindQuery {
                                scope,
                                expr,
                                cursor: page.next_cursor.as_deref().unwrap_or(""),
                                limit: 10_000,
                            },
                        ))
                    })
                    .expect("read")
                    .expect("find");
                n += more.matches.len();
                *times.last_mut().expect("t") = t.elapsed();
            }
        }
        times.sort();
        if *expect > 0 {
            assert_eq!(n, *expect, "{expr}");
        }
        println!(
            "{expr} | {scope} | {n} | {:.1} ms | {:.1} ms | {:.1} ms | {plan}",
            times[times.len() / 2].as_secs_f64() * 1e3,
            times[0].as_secs_f64() * 1e3,
            times[times.len() - 1].as_secs_f64() * 1e3,
        );
        assert!(
            times[times.len() / 2] < Duration::from_secs(1),
            "{expr}: p50 {:?}",
            times[times.len() / 2]
        );
    }
}
