//! Namespace over a real 3-node cluster: a concurrent rename storm from clients on every node
//! leaves one valid tree, identical on every node; Txn compare-and-set has exactly one winner
//! per round; every limit just over is INVALID_ARGUMENT and changes nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;
use metad_client::{pb, Client, ErrorCode, ReadOptions};
use metad_testkit::{init_logging, Cluster};

const T: Duration = Duration::from_secs(20);

/// Tiny deterministic generator (no rand dependency needed).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Every object under "/" as seen by `client` at (at least) `revision`, serializable (the
/// node's own state): path -> (ino, kind). Checks each directory's child_count against its
/// listing and that no inode appears twice.
async fn listing(
    client: &Client,
    revision: u64,
) -> anyhow::Result<(BTreeMap<String, (u64, i32)>, u64)> {
    let opts = ReadOptions::serializable().min_revision(revision);
    let mut out = BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut stack = vec!["/".to_string()];
    let mut at = 0;
    while let Some(dir) = stack.pop() {
        let mut cursor = String::new();
        let mut count = 0u64;
        let mut child_count = None;
        loop {
            let page = client.read_dir(&dir, &cursor, 7, false, opts).await?;
            at = page.header.map(|h| h.revision).unwrap_or(0);
            anyhow::ensure!(
                at == revision,
                "listing at revision {at}, wanted {revision}"
            );
            child_count = child_count.or(page.dir.map(|d| d.child_count));
            for e in page.entries {
                anyhow::ensure!(seen.insert(e.ino), "inode {} listed twice", e.ino);
                let p = if dir == "/" {
                    format!("/{}", e.name)
                } else {
                    format!("{dir}/{}", e.name)
                };
                if e.kind == pb::InodeKind::Directory as i32 {
                    stack.push(p.clone());
                }
                out.insert(p, (e.ino, e.kind));
                count += 1;
            }
            if page.next_start_after.is_empty() {
                break;
            }
            cursor = page.next_start_after;
        }
        anyhow::ensure!(
            child_count == Some(count),
            "{dir}: child_count {child_count:?} but {count} entries listed"
        );
    }
    Ok((out, at))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rename_storm_leaves_one_identical_valid_tree_on_every_node() -> anyhow::Result<()> {
    init_logging();
    let cluster = Cluster::builder().nodes(3).build().await?;
    cluster.wait_for_leader(T).await?;
    let setup = cluster.client().await?;
    const DIRS: u64 = 4;
    const FILES: u64 = 16;
    const NESTS: u64 = 3;
    for d in 0..DIRS {
        setup.mkdir(&format!("/d{d}"), false).await?;
    }
    for f in 0..FILES {
        setup.create(&format!("/d{}/f{f}", f % DIRS)).await?;
    }
    for n in 0..NESTS {
        setup.mkdir(&format!("/n{n}"), false).await?;
    }

    let mut tasks = Vec::new();
    for (k, id) in cluster.ids().into_iter().enumerate() {
        let client = cluster.client_for(id).await?;
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((k as u64 + 1) * 0x1234_5678));
            let (mut ok, mut refused) = (0u32, 0u32);
            for _ in 0..60 {
                let (src, dst, mode) = match rng.below(4) {
                    // Move a file between directories (it may be elsewhere by now).
                    0 | 1 => {
                        let f = rng.below(FILES);
                        let (a, b) = (rng.below(DIRS), rng.below(DIRS));
                        let mode = if rng.below(2) == 0 {
                            pb::RenameMode::NoReplace
                        } else {
                            pb::RenameMode::Replace
                        };
                        (format!("/d{a}/f{f}"), format!("/d{b}/f{f}"), mode)
                    }
                    // Nest directories into each other (cycles must be refused).
                    2 => {
                        let (a, b) = (rng.below(NESTS), rng.below(NESTS));
                        (
                            format!("/n{a}"),
                            format!("/n{b}/n{a}"),
                            pb::RenameMode::NoReplace,
                        )
                    }
                    _ => {
                        let (a, b) = (rng.below(NESTS), rng.below(NESTS));
                        (
                            format!("/n{b}/n{a}"),
                            format!("/n{a}"),
                            pb::RenameMode::NoReplace,
                        )
                    }
                };
                match client.rename(&src, &dst, mode).await {
                    Ok(_) => ok += 1,
                    Err(e)
                        if matches!(
                            e.code(),
                            ErrorCode::NotFound
                                | ErrorCode::AlreadyExists
                                | ErrorCode::InvalidArgument
                                | ErrorCode::FailedPrecondition
                        ) =>
                    {
                        refused += 1
                    }
                    Err(e) => return Err(anyhow::anyhow!("rename {src} -> {dst}: {e}")),
                }
            }
            Ok::<_, anyhow::Error>((ok, refused))
        }));
    }
    let mut total_ok = 0;
    for t in tasks {
        let (ok, _) = t.await??;
        total_ok += ok;
    }
    assert!(total_ok > 0, "some renames must have succeeded");

    // The final revision, then every node's own view at exactly that revision.
    let rev = setup
        .stat("/", ReadOptions::linearizable())
        .await?
        .header
        .map(|h| h.revision)
        .unwrap_or(0);
    let mut views = Vec::new();
    for id in cluster.ids() {
        cluster.wait_revision(id, rev, T).await?;
        let (view, at) = listing(&cluster.client_for(id).await?, rev).await?;
        assert_eq!(at, rev);
        views.push((id, view));
    }
    let (first_id, first) = &views[0];
    for (id, v) in &views[1..] {
        assert_eq!(
            v, first,
            "node {id} and node {first_id} differ at revision {rev}"
        );
    }
    // Every file survives exactly once (Replace only ever replaces a file by itself here),
    // every nest directory exists exactly once.
    for f in 0..FILES {
        let name = format!("f{f}");
        let n = first
            .keys()
            .filter(|p| p.rsplit('/').next() == Some(name.as_str()))
            .count();
        assert_eq!(n, 1, "file {name} appears {n} times");
    }
    for n in 0..NESTS {
        let name = format!("n{n}");
        let c = first
            .keys()
            .filter(|p| p.rsplit('/').next() == Some(name.as_str()))
            .count();
        assert_eq!(c, 1, "directory {name} appears {c} times");
    }
    assert_eq!(first.len() as u64, DIRS + FILES + NESTS);
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn txn_compare_and_set_has_exactly_one_winner_per_round() -> anyhow::Result<()> {
    init_logging();
    let cluster = Cluster::builder().nodes(3).build().await?;
    cluster.wait_for_leader(T).await?;
    let setup = cluster.client().await?;
    setup.create("/cas").await?;
    setup.mkdir("/winners", false).await?;
    let mut clients = Vec::new();
    for id in cluster.ids() {
        clients.push(cluster.client_for(id).await?);
    }
    const ROUNDS: usize = 12;
    for round in 0..ROUNDS {
        let stats = join_all(
            clients
                .iter()
                .map(|c| c.stat("/cas", ReadOptions::linearizable())),
        )
        .await;
        let mut seen = Vec::new();
        for s in stats {
            seen.push(s?.inode.map(|i| i.mod_revision).unwrap_or(0));
        }
        assert!(
            seen.iter().all(|m| *m == seen[0]),
            "linearizable reads agree: {seen:?}"
        );
        let m = seen[0];
        let attempts = join_all(clients.iter().enumerate().map(|(k, c)| {
            let compares = vec![pb::Compare {
                path: "/cas".into(),
                target: pb::CompareTarget::ModRevision as i32,
                op: pb::CompareOp::Equal as i32,
                number: m,
                ..Default::default()
            }];
            let ops = vec![
                pb::TxnStep {
                    op: Some(pb::txn_step::Op::Namespace(pb::NamespaceOp {
                        op: Some(pb::namespace_op::Op::SetAttr(pb::SetAttr {
                            path: "/cas".into(),
                            uid: Some(k as u32 + 1),
                            ..Default::default()
                        })),
                    })),
                },
                pb::TxnStep {
                    op: Some(pb::txn_step::Op::Namespace(pb::NamespaceOp {
                        op: Some(pb::namespace_op::Op::Create(pb::CreateFile {
                            path: format!("/winners/r{round:02}-c{k}"),
                            ..Default::default()
                        })),
                    })),
                },
            ];
            c.txn(compares, ops, vec![])
        }))
        .await;
        let mut winners = 0;
        for a in attempts {
            let a = a?;
            if a.succeeded {
                winners += 1;
                assert_eq!(a.results.len(), 2);
            } else {
                assert!(a.results.is_empty());
            }
        }
        assert_eq!(
            winners, 1,
            "round {round}: exactly one compare-and-set wins"
        );
    }
    let page = setup
        .read_dir("/winners", "", 0, false, ReadOptions::linearizable())
        .await?;
    assert_eq!(page.entries.len(), ROUNDS, "one marker per round");
    cluster.shutdown().await;
    Ok(())
}

fn revision_of(h: Option<pb::ResponseHeader>) -> u64 {
    h.map(|h| h.revision).unwrap_or(0)
}

async fn current_revision(c: &Client) -> anyhow::Result<u64> {
    Ok(revision_of(
        c.stat("/", ReadOptions::linearizable()).await?.header,
    ))
}

fn ns_step(op: pb::namespace_op::Op) -> pb::TxnStep {
    pb::TxnStep {
        op: Some(pb::txn_step::Op::Namespace(pb::NamespaceOp {
            op: Some(op),
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn limits_just_over_are_invalid_argument_and_change_nothing() -> anyhow::Result<()> {
    init_logging();
    let cluster = Cluster::builder().nodes(3).build().await?;
    cluster.wait_for_leader(T).await?;
    let client = cluster.client().await?;
    client.mkdir("/d", false).await?;
    let base = current_revision(&client).await?;

    let expect_invalid = |r: Result<(), metad_client::ClientError>, words: &[&str]| {
        let e = r.expect_err("over the limit");
        assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
        for w in words {
            assert!(e.message().contains(w), "{e} should mention {w}");
        }
    };
    let name256 = format!("/d/{}", "n".repeat(256));
    expect_invalid(client.create(&name256).await.map(|_| ()), &["path", "255"]);
    // 16 components of 254 bytes ("/" + 254 = 255 bytes each) = 4080 bytes.
    let deep: String = (0..16).map(|_| format!("/{}", "x".repeat(254))).collect();
    let path4097 = format!("{deep}/{}", "y".repeat(16));
    let path4096 = format!("{deep}/{}", "y".repeat(15));
    assert_eq!((path4097.len(), path4096.len()), (4097, 4096));
    expect_invalid(
        client.mkdir(&path4097, true).await.map(|_| ()),
        &["path", "4096"],
    );
    expect_invalid(
        client
            .read_dir("/", "", 10_001, false, ReadOptions::default())
            .await
            .map(|_| ()),
        &["limit", "10000"],
    );
    let mkdir_step = |i: usize| {
        ns_step(pb::namespace_op::Op::Mkdir(pb::Mkdir {
            path: format!("/t{i}"),
            ..Default::default()
        }))
    };
    expect_invalid(
        client
            .txn(vec![], (0..129).map(mkdir_step).collect(), vec![])
            .await
            .map(|_| ()),
        &["then_ops", "128"],
    );
    expect_invalid(
        client
            .txn(vec![], vec![], (0..129).map(mkdir_step).collect())
            .await
            .map(|_| ()),
        &["else_ops", "128"],
    );
    let exists = pb::Compare {
        path: "/".into(),
        target: pb::CompareTarget::Exists as i32,
        op: pb::CompareOp::Equal as i32,
        exists: true,
        ..Default::default()
    };
    expect_invalid(
        client
            .txn(vec![exists.clone(); 129], vec![], vec![])
            .await
            .map(|_| ()),
        &["compares", "128"],
    );
    expect_invalid(
        client.symlink("/d/l", &"t".repeat(4097)).await.map(|_| ()),
        &["target", "4096"],
    );
    expect_invalid(
        client
            .create_with(pb::CreateRequest {
                path: "/d/m".into(),
                mode: Some(0o10000),
                ..Default::default()
            })
            .await
            .map(|_| ()),
        &["mode", "0o7777"],
    );
    expect_invalid(
        client
            .set_attr(pb::SetAttrRequest {
                path: "/d".into(),
                mode: Some(0o10000),
                ..Default::default()
            })
            .await
            .map(|_| ()),
        &["mode"],
    );
    expect_invalid(
        client
            .lookup(1, &"n".repeat(256), ReadOptions::default())
            .await
            .map(|_| ()),
        &["name", "255"],
    );
    expect_invalid(client.rmdir("/").await.map(|_| ()), &["path", "root"]);
    expect_invalid(client.mkdir("relative", false).await.map(|_| ()), &["path"]);
    assert_eq!(
        current_revision(&client).await?,
        base,
        "no over-limit request changed anything"
    );

    // Exactly at the limits is accepted.
    client.create(&format!("/d/{}", "n".repeat(255))).await?;
    let r = client.mkdir(&path4096, true).await?;
    assert_eq!(r.created, 17);
    client
        .read_dir("/", "", 10_000, true, ReadOptions::default())
        .await?;
    let t = client
        .txn(
            vec![exists; 128],
            (0..128).map(mkdir_step).collect(),
            vec![],
        )
        .await?;
    assert!(t.succeeded);
    assert_eq!(t.results.len(), 128);
    client.symlink("/d/l", &"t".repeat(4096)).await?;
    assert_eq!(current_revision(&client).await?, base + 4);
    cluster.shutdown().await;
    Ok(())
}

/// Runs one `metactl` command line (with `-o json`) against the cluster; returns its JSON or
/// the error.
async fn metactl(
    cluster: &Cluster,
    args: &[&str],
) -> Result<metad_client::cli::commands::Output, metad_client::ClientError> {
    let eps: Vec<String> = cluster
        .ids()
        .into_iter()
        .map(|id| cluster.client_addr(id))
        .collect();
    let eps = eps.join(",");
    let argv = ["metactl", "--endpoints", &eps, "-o", "json"]
        .into_iter()
        .chain(args.iter().copied());
    metad_client::cli::ns::run_argv(argv).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metactl_namespace_commands_end_to_end() -> anyhow::Result<()> {
    init_logging();
    let cluster = Cluster::builder().nodes(3).build().await?;
    cluster.wait_for_leader(T).await?;
    let run = |args: &'static [&'static str]| {
        let c = &cluster;
        async move { metactl(c, args).await.map(|o| o.json) }
    };

    let j = run(&["mkdir", "-p", "/ml/imagenet/train"]).await?;
    assert_eq!(j["action"], "created");
    assert_eq!(
        run(&["mkdir", "-p", "/ml/imagenet"]).await?["action"],
        "exists"
    );
    let e = run(&["mkdir", "/ml"]).await.expect_err("exists");
    assert_eq!(e.code(), ErrorCode::AlreadyExists);
    assert_eq!(run(&["touch", "/ml/a.tar"]).await?["action"], "created");
    assert_eq!(run(&["touch", "/ml/a.tar"]).await?["action"], "touched");
    run(&["ln", "-s", "/ml/imagenet", "/ml/current"]).await?;
    let st = run(&["stat", "/ml/current"]).await?;
    assert_eq!(st["kind"], "symlink");
    assert_eq!(st["symlink_target"], "/ml/imagenet");
    let ls = run(&["ls", "-l", "/ml"]).await?;
    let table = metactl(&cluster, &["ls", "-l", "/ml"]).await?.table;
    assert!(table.contains("current -> /ml/imagenet"), "{table}");
    assert!(table.contains("drwxr-xr-x"), "{table}");
    let table = metactl(&cluster, &["ls", "/ml"]).await?.table;
    assert_eq!(table, "a.tar\ncurrent\nimagenet/\n");
    let names: Vec<&str> = ls["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(names, vec!["a.tar", "current", "imagenet"]);
    assert!(ls["entries"][0]["attrs"]["mtime_ms"].as_u64().unwrap_or(0) > 0);
    let mv = run(&[
        "mv",
        "/ml/a.tar",
        "/ml/imagenet/train/a.tar",
        "--no-replace",
    ])
    .await?;
    assert_eq!(mv["from"], "/ml/a.tar");
    let e = run(&["rm", "/ml/imagenet"]).await.expect_err("a directory");
    assert_eq!(e.code(), ErrorCode::FailedPrecondition);
    let rm = run(&["rm", "-r", "/ml"]).await?;
    assert_eq!(rm["removed"], 5, "ml, imagenet, train, a.tar, current");
    let ls = run(&["ls", "/"]).await?;
    assert_eq!(ls["entries"].as_array().map(Vec::len), Some(0));
    let e = run(&["stat", "/ml"]).await.expect_err("gone");
    assert_eq!(e.code(), ErrorCode::NotFound);
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn namespace_write_with_lost_reply_is_retried_exactly_once() -> anyhow::Result<()> {
    init_logging();
    let cluster = Cluster::builder().nodes(3).build().await?;
    let leader = cluster.wait_for_leader(T).await?;
    let client = cluster.client_for(leader).await?;
    client.mkdir("/d", false).await?;
    // The create is applied but its reply is lost: the client retries with the same
    // (client_id, seq) and gets the original success, not ALREADY_EXISTS.
    cluster.faults().lose_write_replies(leader, 1);
    let created = client.create("/d/f").await?;
    let ino = created.inode.map(|i| i.ino).unwrap_or(0);
    assert!(ino > 0);
    let st = client.stat("/d/f", ReadOptions::linearizable()).await?;
    assert_eq!(st.inode.map(|i| i.ino), Some(ino));
    // Same for a rename: a second application would fail with NOT_FOUND.
    cluster.faults().lose_write_replies(leader, 1);
    client
        .rename("/d/f", "/d/g", pb::RenameMode::NoReplace)
        .await?;
    let page = client
        .read_dir("/d", "", 0, false, ReadOptions::linearizable())
        .await?;
    let names: Vec<String> = page.entries.into_iter().map(|e| e.name).collect();
    assert_eq!(names, vec!["g".to_string()]);
    cluster.shutdown().await;
    Ok(())
}
