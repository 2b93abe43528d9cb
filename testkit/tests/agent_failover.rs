//! Agents and `metactl move --wait` across a metad leader kill (the moves finish exactly once,
//! every byte on the target matches, the sources are released, `metactl moves ls` /
//! `agents ls` report the outcome), and byte-level fencing of a stale copy
//! by another agent of the same silo.

mod agent_common;

use std::sync::Arc;
use std::time::Duration;

use agent_common::*;
use metad_client::agent::{checksum_of, Agent, PosixDriver};
use metad_client::cli::args::Command;
use metad_client::cli::commands;
use metad_client::cli::movecmd::{AgentsCmd, MoveArgs, MoveCmd, MovesCmd, MovesLsArgs};
use metad_client::{pb, ReadOptions};
use metad_testkit::wait_until;
use tokio::sync::Semaphore;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn moves_survive_a_leader_kill_and_metactl_follows_them() -> anyhow::Result<()> {
    let mut env = Env::new(&["sa", "sb"]).await?;
    let files = make_files(&env.root("sa").join("data"), 30)?;
    env.import("sa", "data", "/ml").await?;
    let a = env.start("sa", "agent-sa").await?;
    // sb's agent reads sa through a gate: 10 copies now, the rest after the leader dies.
    let gate = Arc::new(Semaphore::new(10));
    let b = env.spawn(
        Agent::new(
            env.cluster.client().await?,
            env.config("sb", "agent-sb"),
            Arc::new(PosixDriver::new(env.root("sb"))),
        )
        .with_source_driver(
            "sa",
            Arc::new(Gated {
                inner: PosixDriver::new(env.root("sa")),
                gate: Arc::clone(&gate),
            }),
        ),
    );

    let cli = env.cli(Command::Move(MoveCmd::Move(MoveArgs {
        paths: vec!["/ml".into()],
        to: "sb".into(),
        copy: false,
        recursive: true,
        priority: 3,
        owner: Some("test:failover".into()),
        reason: "leader kill".into(),
        max_attempts: 0,
        wait: true,
        poll: Duration::from_millis(100),
    })));
    let waiter = tokio::spawn(async move { commands::execute(&cli).await });

    wait_until(T, "10 commits before the kill", || async {
        (b.stats.snapshot().committed >= 10).then_some(())
    })
    .await?;
    let leader = env.cluster.wait_for_leader(T).await?;
    env.cluster.kill(leader).await;
    env.cluster.wait_for_new_leader(leader, T).await?;
    gate.add_permits(1000);

    let out = tokio::time::timeout(Duration::from_secs(120), waiter)
        .await??
        .map_err(|e| anyhow::anyhow!("move --wait: {e}"))?;
    let summary = &out.json["summary"];
    assert_eq!(summary["done"], 30, "{}", out.json);
    assert_eq!(summary["failed"], 0, "{}", out.json);
    let batch = out.json["batches"][0]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no batch in {}", out.json))?;

    // Exactly one valid copy per file, on sb, with the original bytes.
    let client = env.cluster.client().await?;
    let sb = instances(&client, "sb").await?;
    assert_eq!(sb.len(), 30);
    for inst in sb.values() {
        assert_eq!(inst.state, pb::InstanceState::Valid as i32, "{inst:?}");
        let rel = inst.location.trim_start_matches("ml/");
        let want = &files[rel];
        assert!(std::fs::read(env.root("sb").join(&inst.location))? == *want);
        assert_eq!(inst.checksum, checksum_of(want));
    }
    wait_until(T, "sources released", || async {
        let left = instances(&client, "sa").await.ok()?;
        left.is_empty().then_some(())
    })
    .await?;
    assert!(temp_files(env.dir.path()).is_empty());
    let s = wait_until(T, "the agent counted its commits", || async {
        let s = b.stats.snapshot();
        (s.committed >= 30).then_some(s)
    })
    .await?;
    assert_eq!(
        s.committed + s.refused + s.recopies,
        s.copied_files,
        "{s:?}"
    );

    // metactl moves ls / agents ls see the same.
    let ls = commands::execute(&env.cli(Command::Move(MoveCmd::Moves(MovesCmd::Ls(
        MovesLsArgs {
            batch: Some(batch),
            state: None,
            silo: None,
            owner: Some("test:failover".into()),
            active: false,
            cursor: String::new(),
            limit: 7,
            all: true,
        },
    )))))
    .await
    .map_err(|e| anyhow::anyhow!("moves ls: {e}"))?;
    let moves = ls.json["moves"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("{}", ls.json))?;
    assert_eq!(moves.len(), 30, "--all follows the cursors");
    assert!(moves
        .iter()
        .all(|m| m["state"] == "done" && m["priority"] == 3));
    let agents =
        commands::execute(&env.cli(Command::Move(MoveCmd::Agents(AgentsCmd::Ls { silo: None }))))
            .await
            .map_err(|e| anyhow::anyhow!("agents ls: {e}"))?;
    assert_eq!(agents.json["agents"].as_array().map(Vec::len), Some(2));

    a.stop().await?;
    b.stop().await?;
    let left = client.list_agents("", ReadOptions::default()).await?;
    assert!(left.agents.is_empty());
    env.cluster.shutdown().await;
    Ok(())
}

/// The race the e2e test found, across two agents of one silo: a copy of an old generation
/// (stuck reading) must not be renamed over the newer copy that another agent's later claim
/// of the same move placed and committed. (Inside one agent, copies of a file run one at a
/// time.) The stale agent's lease is alive the whole time: only `confirm_claims` stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_copy_is_never_placed_over_a_newer_committed_one() -> anyhow::Result<()> {
    let env = Env::new(&["sa", "sb"]).await?;
    make_files(&env.root("sa").join("data"), 4)?;
    env.import("sa", "data", "/ml").await?;
    let path = "/ml/d1/f001.bin";
    // Agent X claims first; its read of the original location is held.
    let held = Arc::new(HoldLocations::new(
        PosixDriver::new(env.root("sa")),
        &["data/d1/f001.bin"],
    ));
    let mut cfg = env.config("sb", "x");
    // One task at a time: while its copy hangs, X claims nothing more.
    cfg.claim_batch = 1;
    cfg.concurrency = 1;
    let x = env.spawn(
        Agent::new(
            env.cluster.client().await?,
            cfg,
            Arc::new(PosixDriver::new(env.root("sb"))),
        )
        .with_source_driver("sa", Arc::clone(&held) as _),
    );
    let created = env
        .client
        .create_move(
            vec![path.to_string()],
            "sb",
            metad_client::MoveSpec {
                mode: pb::MoveMode::Copy,
                ..Default::default()
            },
        )
        .await?;
    wait_until(T, "X's copy waits on its source", || async {
        (held.waiting.load(std::sync::atomic::Ordering::SeqCst) >= 1).then_some(())
    })
    .await?;
    let y = env.start("sb", "y").await?;

    // A writer puts new bytes (same size) at a new location and records the write: the move
    // goes back to pending and Y claims, copies (the new location) and commits it.
    let old = std::fs::read(env.root("sa").join("data/d1/f001.bin"))?;
    let new: Vec<u8> = old.iter().map(|b| b ^ 0x5a).collect();
    std::fs::write(env.root("sa").join("data/d1/f001.bin.w1"), &new)?;
    env.client
        .record_write_at(
            path,
            "sa",
            new.len() as u64,
            metad_client::WriteSpec {
                checksum: checksum_of(&new),
                location: "data/d1/f001.bin.w1".into(),
                ..Default::default()
            },
        )
        .await?;
    wait_batch_done(&env.client, created.batch, 1).await?;

    // Now X's stale copy gets its bytes (the old ones, matching its task) and would place.
    held.release_all();
    let s = wait_until(T, "X's stale copy ended", || async {
        let s = x.stats.snapshot();
        (s.aborted + s.refused >= 1).then_some(s)
    })
    .await?;
    let inst = instances(&env.client, "sb").await?;
    let inst = inst
        .values()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no instance on sb"))?;
    assert_eq!(inst.checksum, checksum_of(&new));
    let on_disk = std::fs::read(env.root("sb").join(&inst.location))?;
    assert!(on_disk == new, "the newest committed bytes stay in place");
    assert!(temp_files(env.dir.path()).is_empty());
    assert_eq!((s.aborted, s.refused, s.copied_files), (1, 0, 0), "{s:?}");
    wait_until(T, "Y counted its commit", || async {
        (y.stats.snapshot().committed == 1).then_some(())
    })
    .await?;
    x.stop().await?;
    y.stop().await?;
    env.cluster.shutdown().await;
    Ok(())
}
