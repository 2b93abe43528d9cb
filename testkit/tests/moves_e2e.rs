//! End-to-end move with real processes: 3 `metad` nodes, three silos (directories) at three
//! sites, one `metad-agent` per silo. 1 000 files (mixed sizes up to 3 MiB) are imported on
//! silo A with `metactl import` and moved to silo C while a reader checks every byte it reads
//! and a writer rewrites files through RecordWrite; the metad leader and the target agent
//! each get SIGKILL once during the move. At the end every file has exactly one instance
//! (valid, on C), its bytes match the latest acknowledged write, the reader saw no failed or
//! stale read, and silo A holds none of the moved bytes.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metad_client::{Client, ClientConfig, ErrorCode, MoveSpec, ReadOptions, SiloSpec, WriteSpec};
use metad_proto::v1::{InstanceState, MoveMode, SiloKind, SiloTier};
use metad_testkit::procs::{workspace_bin, Proc, ProcCluster};
use rand::{Rng, SeedableRng};

const FILES: usize = 1000;
const SILOS: [(&str, &str); 3] = [("sa", "site-a"), ("sb", "site-b"), ("sc", "site-c")];

fn blake3_sum(bytes: &[u8]) -> String {
    format!("blake3:{}", blake3::hash(bytes).to_hex())
}

/// Deterministic content of file `i` at write number `w` (0 = the original).
fn content(i: usize, w: u64) -> Vec<u8> {
    let size = match i % 100 {
        0 => 3 << 20,
        1..=4 => 1 << 20,
        n => 512 + n * 97 + (i % 7) * 4096,
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64((i as u64) << 20 | w);
    let mut v = vec![0u8; size];
    rng.fill(&mut v[..]);
    v
}

/// The writer's writes per path, in invocation order: (when it was acknowledged, checksum).
/// A write is recorded before it is sent (it may apply before its answer arrives); `None`
/// until acknowledged, and forever for an ambiguous one. A refused write is removed.
type History = Arc<Mutex<BTreeMap<String, Vec<(Option<Instant>, String)>>>>;

async fn client(endpoints: &[String]) -> Client {
    Client::connect(ClientConfig {
        endpoints: endpoints.to_vec(),
        total_timeout: Duration::from_secs(30),
        max_retries: 50,
        ..Default::default()
    })
    .await
    .expect("client")
}

/// Polls `f` until it yields a value (testkit's `wait_until`), panicking after `timeout`.
async fn poll<T, F, Fut>(timeout: Duration, what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    metad_testkit::wait_until(timeout, what, f)
        .await
        .expect("condition within its deadline")
}

fn agent(dir: &Path, silo: &str, root: &Path, endpoints: &[String]) -> Proc {
    let mut p = Proc::new(
        &format!("agent-{silo}"),
        workspace_bin("metad-agent").expect("metad-agent binary"),
        vec![
            format!("--silo={silo}"),
            format!("--root={}", root.display()),
            format!("--endpoints={}", endpoints.join(",")),
            format!("--name=e2e-{silo}"),
            "--ttl-ms=3000".into(),
            "--poll-interval=500ms".into(),
            "--release-grace=1s".into(),
        ],
        dir.join(format!("agent-{silo}.log")),
    )
    .env("RUST_LOG", "warn");
    p.start().expect("start agent");
    p
}

/// One reader pass: locate a random file, read its bytes from the nearest instance, check
/// them against the instance checksum and against the writer's history. Returns Err on a
/// failed or stale read.
async fn read_once(
    c: &Client,
    roots: &BTreeMap<String, PathBuf>,
    history: &History,
    path: &str,
) -> Result<(), String> {
    let started = Instant::now();
    let mut last_err = String::new();
    // A copy being released stays readable for the grace period; one re-locate covers a
    // reader that located it just before.
    for _ in 0..2 {
        let loc = c
            .locate(path, "site-c", ReadOptions::default())
            .await
            .map_err(|e| format!("locate {path}: {e}"))?;
        let Some(first) = loc.instances.first().and_then(|l| l.instance.clone()) else {
            return Err(format!("{path}: no readable instance"));
        };
        let file = roots[&first.silo].join(&first.location);
        match tokio::fs::read(&file).await {
            Ok(bytes) => {
                let sum = blake3_sum(&bytes);
                if sum != first.checksum {
                    last_err = format!(
                        "{path}: bytes at {} hash to {sum}, instance says {}",
                        file.display(),
                        first.checksum
                    );
                    continue;
                }
                // Stale: older than a write acknowledged before this read started.
                let h = history.lock().unwrap();
                if let Some(writes) = h.get(path) {
                    // The last write acknowledged before the read started, and anything
                    // after it, are acceptable; anything older is stale.
                    let floor = writes
                        .iter()
                        .rposition(|(t, _)| t.is_some_and(|t| t < started));
                    if let Some(f) = floor {
                        if !writes[f..].iter().any(|(_, s)| *s == sum) {
                            let seen: Vec<String> = writes
                                .iter()
                                .map(|(t, s)| format!("{}:{}", &s[7..15], t.is_some()))
                                .collect();
                            return Err(format!(
                                "{path}: stale read {} from {} gen {} at revision {} (writes: \
                                 {seen:?})",
                                &sum[7..15],
                                first.silo,
                                first.content_gen,
                                loc.header.map(|h| h.revision).unwrap_or(0)
                            ));
                        }
                    }
                }
                return Ok(());
            }
            Err(e) => last_err = format!("{path}: read {}: {e}", file.display()),
        }
    }
    Err(last_err)
}

/// Every instance on `silo`, with paths.
async fn all_instances(c: &Client, silo: &str) -> Vec<metad_client::pb::Instance> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = c
            .list_instances(silo, &cursor, 1000, ReadOptions::default())
            .await
            .expect("list instances");
        out.extend(page.instances);
        if page.next_cursor.is_empty() {
            return out;
        }
        cursor = page.next_cursor;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn move_a_tree_under_load_with_crashes() {
    metad_testkit::init_logging();
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let mut cluster = ProcCluster::start(dir, 3, &["--request-timeout-ms=3000"]).expect("cluster");
    let eps = cluster.endpoints.clone();
    let c = client(&eps).await;
    let roots: BTreeMap<String, PathBuf> = SILOS
        .iter()
        .map(|(s, _)| (s.to_string(), dir.join(format!("silo-{s}"))))
        .collect();
    for (silo, site) in SILOS {
        std::fs::create_dir_all(&roots[silo]).unwrap();
        c.register_site(site, "", "", BTreeMap::new())
            .await
            .expect("site");
        c.register_silo(SiloSpec {
            name: silo.into(),
            site: site.into(),
            kind: SiloKind::Posix,
            tier: SiloTier::Hot,
            capacity_bytes: 1 << 40,
            cost_per_gib_month: 0.0,
            root: roots[silo].display().to_string(),
            labels: BTreeMap::new(),
        })
        .await
        .expect("silo");
    }

    // 1 000 files on silo A, imported in place.
    let data = roots["sa"].join("data");
    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    for i in 0..FILES {
        let p = data.join(format!("d{}/f{i}", i % 10));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let bytes = content(i, 0);
        std::fs::write(&p, &bytes).unwrap();
        expected.insert(format!("/data/d{}/f{i}", i % 10), blake3_sum(&bytes));
    }
    let out = std::process::Command::new(workspace_bin("metactl").unwrap())
        .args(["--endpoints", &eps.join(","), "import"])
        .arg(&data)
        .args(["--silo", "sa", "--into", "/data"])
        .output()
        .expect("metactl import");
    assert!(out.status.success(), "import: {out:?}");
    let st = c
        .locate("/data/d3/f3", "", ReadOptions::default())
        .await
        .unwrap();
    assert_eq!(
        st.instances[0].instance.as_ref().unwrap().checksum,
        expected["/data/d3/f3"]
    );

    let mut agents: Vec<Proc> = SILOS
        .iter()
        .map(|(s, _)| agent(dir, s, &roots[*s], &eps))
        .collect();

    let created = c
        .create_move(
            vec!["/data".to_string()],
            "sc",
            MoveSpec {
                recursive: true,
                mode: MoveMode::Move,
                owner: "e2e".into(),
                ..Default::default()
            },
        )
        .await
        .expect("create move");
    assert_eq!(created.move_ids.len(), FILES);
    let batch = created.batch;

    // Reader and writer run for the whole move.
    let stop = Arc::new(AtomicBool::new(false));
    let history: History = Arc::default();
    let reads = Arc::new(AtomicU64::new(0));
    let bad_reads = Arc::new(Mutex::new(Vec::<String>::new()));
    let paths: Vec<String> = expected.keys().cloned().collect();
    let reader = {
        let (c, roots, history, stop, reads, bad, paths) = (
            client(&eps).await,
            roots.clone(),
            history.clone(),
            stop.clone(),
            reads.clone(),
            bad_reads.clone(),
            paths.clone(),
        );
        tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(7);
            while !stop.load(Ordering::Relaxed) {
                let p = &paths[rng.gen_range(0..paths.len())];
                match read_once(&c, &roots, &history, p).await {
                    Ok(()) => {
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                    // metad unavailable for a moment (leader killed) is not a bad read.
                    Err(e) if e.starts_with("locate") => {}
                    Err(e) => bad.lock().unwrap().push(e),
                }
            }
        })
    };
    let writer = {
        let (c, roots, history, stop, paths) = (
            client(&eps).await,
            roots.clone(),
            history.clone(),
            stop.clone(),
            paths.clone(),
        );
        tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(11);
            let mut last: BTreeMap<String, String> = BTreeMap::new();
            // Locations on silo A superseded by a write (the writer's own leftovers).
            let mut superseded: BTreeSet<PathBuf> = BTreeSet::new();
            let mut n = 1u64;
            // About 50 writes a second: a steady write load, not a wait for anything.
            let mut pace = tokio::time::interval(Duration::from_millis(20));
            while !stop.load(Ordering::Relaxed) {
                // Rewrite one of the first 50 files: new bytes at a new location on the
                // silo holding its current copy, then RecordWrite. Readers of the old
                // generation keep reading the old location.
                let i = rng.gen_range(0..50usize);
                let path = &paths[i];
                let Ok(loc) = c.locate(path, "", ReadOptions::default()).await else {
                    continue;
                };
                let Some(inst) = loc.instances.first().and_then(|l| l.instance.clone()) else {
                    continue;
                };
                let bytes = content(i + 5000, n);
                let location = format!("{}.w{n}", inst.location);
                let file = roots[&inst.silo].join(&location);
                std::fs::write(&file, &bytes).unwrap();
                let sum = blake3_sum(&bytes);
                n += 1;
                let spec = WriteSpec {
                    checksum: sum.clone(),
                    location,
                    ..Default::default()
                };
                let record = |ack: Option<Option<Instant>>| {
                    let mut h = history.lock().unwrap();
                    let writes = h.entry(path.clone()).or_default();
                    match ack {
                        None => writes.push((None, sum.clone())),
                        Some(Some(t)) => {
                            if let Some(w) = writes.last_mut() {
                                w.0 = Some(t);
                            }
                        }
                        Some(None) => {
                            writes.pop();
                        }
                    }
                };
                record(None);
                match c
                    .record_write_at(path, &inst.silo, bytes.len() as u64, spec)
                    .await
                {
                    Ok(_) => {
                        record(Some(Some(Instant::now())));
                        superseded.insert(roots[&inst.silo].join(&inst.location));
                        last.insert(path.clone(), sum);
                    }
                    // Unknown outcome: the new bytes may or may not be the file's (a timed-out
                    // write is not a failed write); it stays in the history unacknowledged.
                    Err(e) if e.code() == ErrorCode::Ambiguous => {
                        last.insert(path.clone(), format!("unknown:{sum}"));
                    }
                    // Refused (e.g. the copy is being released): it did not happen.
                    Err(_) => record(Some(None)),
                }
                pace.tick().await;
            }
            (last, superseded)
        })
    };

    let progress = |c: Client| async move {
        c.get_move_batch(batch, ReadOptions::default())
            .await
            .ok()
            .and_then(|b| b.batch)
    };
    // Kill -9 the leader once a third of the moves committed, the target agent at two thirds.
    poll(Duration::from_secs(120), "a third of the moves", || async {
        progress(c.clone())
            .await
            .filter(|b| b.done + b.releasing >= FILES as u64 / 3)
    })
    .await;
    let leader = c.cluster_status().await.expect("status").leader_id;
    cluster.node(leader).kill9();
    // The old leader stays down until the others have elected a new one.
    poll(Duration::from_secs(30), "a new leader", || async {
        c.cluster_status()
            .await
            .ok()
            .map(|st| st.leader_id)
            .filter(|l| *l != 0 && *l != leader)
    })
    .await;
    cluster.node(leader).start().expect("restart leader");
    poll(
        Duration::from_secs(120),
        "two thirds of the moves",
        || async {
            progress(c.clone())
                .await
                .filter(|b| b.done + b.releasing >= 2 * FILES as u64 / 3)
        },
    )
    .await;
    agents[2].kill9();
    agents[2].start().expect("restart agent");

    let done = poll(Duration::from_secs(240), "every move done", || async {
        progress(c.clone())
            .await
            .filter(|b| b.done + b.failed + b.cancelled == FILES as u64)
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    reader.await.unwrap();
    let (written, superseded) = writer.await.unwrap();
    assert_eq!((done.failed, done.cancelled), (0, 0), "{done:?}");

    // Every file: exactly one instance, valid on C, bytes = the latest acknowledged write.
    for silo in ["sa", "sb"] {
        let left = all_instances(&c, silo).await;
        assert!(left.is_empty(), "{silo} still holds instances: {left:?}");
    }
    let on_c: BTreeMap<String, metad_client::pb::Instance> = all_instances(&c, "sc")
        .await
        .into_iter()
        .map(|i| (i.path.clone(), i))
        .collect();
    assert_eq!(on_c.len(), FILES);
    let mut sources_left = Vec::new();
    for (path, original) in &expected {
        let want = written.get(path).unwrap_or(original);
        let inst = on_c[path].clone();
        assert_eq!(inst.state, InstanceState::Valid as i32, "{path}");
        let bytes = std::fs::read(roots["sc"].join(&inst.location)).expect("bytes on C");
        let sum = blake3_sum(&bytes);
        assert_eq!(sum, inst.checksum, "{path}");
        match want.strip_prefix("unknown:") {
            // The last write's outcome was unknown: either it or an earlier one is current.
            Some(_) => {}
            None => assert_eq!(&sum, want, "{path}: not the latest acknowledged write"),
        }
        let src = roots["sa"].join(path.trim_start_matches('/'));
        if src.exists() && !superseded.contains(&src) {
            sources_left.push(src);
        }
    }
    assert!(
        sources_left.is_empty(),
        "sources not released: {sources_left:?}"
    );
    let bad = bad_reads.lock().unwrap().clone();
    let n_reads = reads.load(Ordering::Relaxed);
    assert!(
        bad.is_empty(),
        "{} bad reads of {n_reads}: {bad:?}",
        bad.len()
    );
    assert!(n_reads > 100, "the reader made only {n_reads} reads");
    for a in &mut agents {
        assert!(a.is_running(), "{} died", a.name);
        a.terminate();
    }
}
