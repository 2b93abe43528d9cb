//! The state machine's apply cost per command, on a real `sm.redb` through `SmStore`'s
//! `RaftStateMachine::apply` (the call openraft makes on every node), without Raft or gRPC:
//! what each of the three nodes spends to apply one write. Batches of 32 commands from 128
//! clients, like the leader's group commit under `metad-bench --clients 128`. Also the cost of
//! building a snapshot and installing it on an empty node (what a new learner waits for). Run
//! with `cargo test --release -p metad --test apply_bench -- --ignored --nocapture
//! --test-threads=1` (one at a time: run side by side, each inflates the other's CPU figures).

use std::time::Instant;

use metad::store::SmStore;
use metad::types::{Entry, LogCommand};
use metad_proto::raft::v1::{command::Op, Command, CommandBatch};
use metad_proto::v1::{namespace_op, tag_op, CreateFile, Mkdir, NamespaceOp, SetTags, Tag, TagOp};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload, LogId};

const FILES: u64 = 10_000;
const PER_DIR: u64 = 1_000;
const CLIENTS: u64 = 128;
/// Commands per entry; `APPLY_BENCH_BATCH=1` measures one write at a time.
fn batch() -> usize {
    std::env::var("APPLY_BENCH_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&b: &usize| b >= 1)
        .unwrap_or(32)
}

struct Gen {
    index: u64,
    /// The state's revision after the last entry (one per state-changing command).
    revision: u64,
    seq: Vec<u64>,
    now: u64,
    rng: u64,
}

impl Gen {
    fn new() -> Gen {
        Gen {
            index: 0,
            revision: 0,
            seq: vec![0; CLIENTS as usize],
            now: 1_700_000_000_000,
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }

    fn next_rand(&mut self) -> u64 {
        // xorshift64*: deterministic, no dependency.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn cmd(&mut self, client: u64, op: Op) -> Command {
        self.seq[client as usize] += 1;
        Command {
            client_id: format!("bench-client-{client:04}"),
            seq: self.seq[client as usize],
            leader_time_ms: self.now,
            op: Some(op),
        }
    }

    fn entry(&mut self, cmds: Vec<Command>) -> Entry {
        self.index += 1;
        self.now += 1;
        let cmd = if cmds.len() == 1 {
            cmds.into_iter().next().expect("one")
        } else {
            Command {
                client_id: "metad-leader-1".into(),
                seq: 1,
                leader_time_ms: self.now,
                op: Some(Op::Batch(CommandBatch { commands: cmds })),
            }
        };
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), self.index),
            payload: EntryPayload::Normal(LogCommand(cmd)),
        }
    }
}

/// A state-machine store in `dir` (`sm.redb` and `snapshots/`).
fn open_store(dir: &std::path::Path) -> SmStore {
    let snaps = dir.join("snapshots");
    std::fs::create_dir_all(&snaps).expect("snapdir");
    SmStore::open(&dir.join("sm.redb"), &snaps).expect("open")
}

/// Creates files 0..`files` at `file_path` (their directories first, in one entry, then the
/// files in batches); returns `run_batches`' (wall, CPU) µs per create.
async fn create_files(sm: &mut SmStore, g: &mut Gen, files: u64) -> (f64, f64) {
    let mkdirs: Vec<Command> = (0..files / PER_DIR)
        .map(|d| {
            g.cmd(
                0,
                Op::Namespace(NamespaceOp {
                    op: Some(namespace_op::Op::Mkdir(Mkdir {
                        path: format!("/bench/r1/k/d{d}"),
                        parents: true,
                        ..Default::default()
                    })),
                }),
            )
        })
        .collect();
    let e = g.entry(mkdirs);
    g.revision = sm.apply(vec![e]).await.expect("mkdirs")[0].0.revision;
    let mut next_file = 0u64;
    run_batches(sm, g, files as usize, |_, _| {
        let path = file_path(next_file);
        next_file += 1;
        Op::Namespace(NamespaceOp {
            op: Some(namespace_op::Op::Create(CreateFile {
                path,
                ..Default::default()
            })),
        })
    })
    .await
}

fn file_path(j: u64) -> String {
    format!("/bench/r1/k/d{}/f{j}", j / PER_DIR)
}

/// CPU seconds this process has used (all threads: apply, redb, the writeback thread).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime is the 14th field.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) as f64 / 100.0
}

/// Applies `n` commands in batches; returns (wall µs, CPU µs) per command.
async fn run_batches(
    sm: &mut SmStore,
    g: &mut Gen,
    n: usize,
    mut make: impl FnMut(&mut Gen, u64) -> Op,
) -> (f64, f64) {
    let started = Instant::now();
    let cpu0 = cpu_seconds();
    let mut done = 0;
    while done < n {
        let cmds: Vec<Command> = (0..batch().min(n - done))
            .map(|_| {
                let client = g.next_rand() % CLIENTS;
                let op = make(g, client);
                g.cmd(client, op)
            })
            .collect();
        done += cmds.len();
        let cmds_len = cmds.len() as u64;
        let e = g.entry(cmds);
        let replies = sm.apply(vec![e]).await.expect("apply");
        assert_eq!(replies.len(), 1);
        // Every command must change state (a create, or a set-tag to a new value), or the
        // figure would be that of a no-op.
        let rev = replies[0].0.revision;
        assert_eq!(
            rev,
            g.revision + cmds_len,
            "a command of the batch changed nothing"
        );
        g.revision = rev;
    }
    (
        started.elapsed().as_secs_f64() * 1e6 / done as f64,
        (cpu_seconds() - cpu0) * 1e6 / done as f64,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run with --ignored --nocapture (release)"]
async fn apply_cost_per_command() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut sm = open_store(tmp.path());
    let mut g = Gen::new();
    let (create_us, create_cpu) = create_files(&mut sm, &mut g, FILES).await;
    let value = "v".repeat(244);
    let mut rounds = Vec::new();
    // Every set-tag writes a value the file has not had: one that repeats the current value
    // changes nothing (no row, index entry, event or revision), and costs a fraction of a
    // real write.
    let mut written = 0u64;
    for _ in 0..7 {
        let set_us = run_batches(&mut sm, &mut g, 20_000, |g, _| {
            let j = g.next_rand() % FILES;
            written += 1;
            Op::Tags(TagOp {
                op: Some(tag_op::Op::Set(SetTags {
                    path: file_path(j),
                    tags: vec![Tag {
                        key: "v".into(),
                        value: format!("{value}{written:012}"),
                    }],
                    inherit: false,
                })),
            })
        })
        .await;
        rounds.push(set_us);
    }
    let shown: Vec<String> = rounds
        .iter()
        .map(|(w, c)| format!("{w:.0}/{c:.0}"))
        .collect();
    let mut wall: Vec<f64> = rounds.iter().map(|r| r.0).collect();
    let mut cpu: Vec<f64> = rounds.iter().map(|r| r.1).collect();
    wall.sort_by(f64::total_cmp);
    cpu.sort_by(f64::total_cmp);
    println!(
        "apply_bench: batches of {} from {CLIENTS} clients over {FILES} files, µs per \
         command (wall / CPU): create {create_us:.1} / {create_cpu:.1}; set-tag (256 B) \
         median {:.1} / {:.1} (rounds of 20 000: {})",
        batch(),
        wall[wall.len() / 2],
        cpu[cpu.len() / 2],
        shown.join(" ")
    );
}

/// Each file created, then given one 256 B tag (like the scale loader's rows).
async fn load_tagged(sm: &mut SmStore, files: u64) {
    let mut g = Gen::new();
    create_files(sm, &mut g, files).await;
    let value = "v".repeat(250);
    let mut next_tag = 0u64;
    run_batches(sm, &mut g, files as usize, |_, _| {
        let j = next_tag;
        next_tag += 1;
        Op::Tags(TagOp {
            op: Some(tag_op::Op::Set(SetTags {
                path: file_path(j),
                tags: vec![Tag {
                    key: "v".into(),
                    value: format!("{value}{:06}", j % 1_000_000),
                }],
                inherit: false,
            })),
        })
    })
    .await;
}

/// The read side of the scale question, without Raft, gRPC or other nodes: what one `stat`
/// (path resolution + inode) and one effective-tags read cost on a real `sm.redb` of N tagged
/// files (`READ_BENCH_FILES`, default 100 000; the page cache holds the one file), random
/// keys, one thread. Tells the namespace's own growth apart from a machine whose page cache
/// cannot hold three nodes' files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run with --ignored --nocapture (release)"]
async fn read_cost_at_scale() {
    use metad::sm::{self, KvError};
    let files = std::env::var("READ_BENCH_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &u64| n >= PER_DIR)
        .unwrap_or(100_000);
    let tmp = tempfile::tempdir().expect("tmp");
    let mut st = open_store(tmp.path());
    let started = Instant::now();
    load_tagged(&mut st, files).await;
    let load_s = started.elapsed().as_secs_f64();
    st.flush().expect("flush");
    let size = std::fs::metadata(tmp.path().join("sm.redb"))
        .expect("size")
        .len();
    let mut g = Gen::new();
    // `READ_BENCH_READS` per round (default 200 000); fewer for a run under callgrind.
    let reads = std::env::var("READ_BENCH_READS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &u64| n >= 1)
        .unwrap_or(200_000);
    let st2 = st.clone();
    let rounds = tokio::task::spawn_blocking(move || {
        let err = |e: sm::ApplyError| KvError(format!("{e:?}"));
        let mut out = Vec::new();
        // Round 1 starts with a cold redb cache; rounds 2 and 3 show the warm cost.
        for _ in 0..3 {
            let (t, c) = (Instant::now(), cpu_seconds());
            for _ in 0..reads {
                let p = file_path(g.next_rand() % files);
                let ino = st2
                    .read(|kv| sm::namespace::stat_path(kv, &p).map_err(err))
                    .expect("stat");
                assert!(ino.ino > 0);
            }
            let stat = (t.elapsed().as_secs_f64(), cpu_seconds() - c);
            let (t, c) = (Instant::now(), cpu_seconds());
            for _ in 0..reads {
                let p = file_path(g.next_rand() % files);
                let n = st2
                    .read(|kv| {
                        let i = sm::model::resolve_existing(kv, "path", &p).map_err(err)?;
                        Ok(sm::tags::effective_tags(kv, &i)?.len())
                    })
                    .expect("tags");
                assert_eq!(n, 1);
            }
            out.push((stat, (t.elapsed().as_secs_f64(), cpu_seconds() - c)));
        }
        out
    })
    .await
    .expect("reads");
    let us = |(w, c): (f64, f64)| {
        format!(
            "{:.1}/{:.1}",
            w * 1e6 / reads as f64,
            c * 1e6 / reads as f64
        )
    };
    println!(
        "read_bench: {files} files (1 tag of 256 B each), sm.redb {:.0} MiB, loaded in \
         {load_s:.0} s; µs per read, wall/CPU, rounds of {reads} (first with a cold redb \
         cache): stat {}; effective tags {}",
        size as f64 / (1024.0 * 1024.0),
        rounds.iter().map(|r| us(r.0)).collect::<Vec<_>>().join(" "),
        rounds.iter().map(|r| us(r.1)).collect::<Vec<_>>().join(" "),
    );
}

/// Files for `snapshot_build_and_install` (`SNAPSHOT_BENCH_FILES`, default 100 000).
fn snapshot_files() -> u64 {
    std::env::var("SNAPSHOT_BENCH_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &u64| n >= PER_DIR)
        .unwrap_or(100_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run with --ignored --nocapture (release)"]
async fn snapshot_build_and_install() {
    let files = snapshot_files();
    let tmp = tempfile::tempdir().expect("tmp");
    let (src_dir, dst_dir) = (tmp.path().join("src"), tmp.path().join("dst"));
    let mut src = open_store(&src_dir);
    load_tagged(&mut src, files).await;

    let started = Instant::now();
    let snap = src
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    let build_s = started.elapsed().as_secs_f64();
    let bytes = src.snapshot_bytes();
    assert!(bytes > 0, "the built snapshot has a size");

    let mut dst = open_store(&dst_dir);
    let started = Instant::now();
    dst.install_snapshot(&snap.meta, snap.snapshot)
        .await
        .expect("install");
    let install_s = started.elapsed().as_secs_f64();
    assert_eq!(dst.applied().log_index, src.applied().log_index);

    // The installed store holds the same rows: a snapshot it builds itself (which replaces
    // the copy it kept of the one it received) is byte-for-byte the source's.
    dst.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("rebuild");
    let only_bin = |dir: &std::path::Path| {
        let bins: Vec<_> = std::fs::read_dir(dir.join("snapshots"))
            .expect("list")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "bin"))
            .collect();
        assert_eq!(bins.len(), 1, "one published snapshot in {}", dir.display());
        std::fs::read(&bins[0]).expect("read snapshot")
    };
    let full = only_bin(&src_dir);
    assert_eq!(dst.current_snapshot_index(), src.current_snapshot_index());
    assert!(
        full == only_bin(&dst_dir),
        "the installed rows differ from the source's"
    );

    // The same snapshot received as a follower receives it: written in openraft's chunks into
    // the file `begin_receiving_snapshot` gives (a thread loads it meanwhile), then installed.
    // Chunks come as fast as the disk takes them, so this is the loader's own speed.
    let stream_dir = tmp.path().join("stream");
    let mut st = open_store(&stream_dir);
    let started = Instant::now();
    let mut recv = st.begin_receiving_snapshot().await.expect("begin");
    for c in full.chunks(3 << 20) {
        tokio::io::AsyncWriteExt::write_all(&mut recv, c)
            .await
            .expect("write");
    }
    tokio::io::AsyncWriteExt::shutdown(&mut recv)
        .await
        .expect("shutdown");
    let written_s = started.elapsed().as_secs_f64();
    st.install_snapshot(&snap.meta, recv)
        .await
        .expect("streamed install");
    let stream_s = started.elapsed().as_secs_f64();
    assert_eq!(st.streamed_installs(), 1, "it streamed");
    assert_eq!(st.applied(), src.applied());

    let mb = bytes as f64 / (1024.0 * 1024.0);
    println!(
        "snapshot_bench: {files} files (1 tag of 256 B each), snapshot {mb:.0} MiB: build \
         {build_s:.2} s ({:.0} MiB/s), install on an empty node {install_s:.2} s ({:.0} MiB/s, \
         {:.0} k files/s); streamed install {stream_s:.2} s ({:.0} MiB/s; all bytes written \
         after {written_s:.2} s)",
        mb / build_s,
        mb / install_s,
        files as f64 / install_s / 1000.0,
        mb / stream_s
    );
}
