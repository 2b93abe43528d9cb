//! The agent SDK against a real 3-node cluster: posix silos in a tempdir, files imported with
//! `metactl import`, moved by in-process agents. Asserts instances, bytes and checksums,
//! released sources, lease takeover on restart, recopy after a write during the copy,
//! bounded failures, tombstone reclaim, and `metactl move --wait`.

mod agent_common;

use std::sync::Arc;
use std::time::Duration;

use agent_common::*;
use metad_client::agent::{checksum_of, Agent, PosixDriver};
use metad_client::cli::args::Command;
use metad_client::cli::commands;
use metad_client::cli::movecmd::{MoveArgs, MoveCmd};
use metad_client::{pb, MoveSpec, ReadOptions, WriteSpec};
use metad_testkit::wait_until;
use tokio::sync::Semaphore;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agents_move_an_imported_tree_and_release_the_sources() -> anyhow::Result<()> {
    let env = Env::new(&["sa", "sb"]).await?;
    let files = make_files(&env.root("sa").join("data"), 25)?;
    std::os::unix::fs::symlink("d0/f000.bin", env.root("sa").join("data/link"))?;

    // Import: everything created once; a re-run changes nothing.
    let first = env.import("sa", "data", "/ml").await?.json;
    assert_eq!(first["created"], 25, "{first}");
    assert_eq!(first["symlinks_skipped"], 1, "{first}");
    let again = env.import("sa", "data", "/ml").await?.json;
    assert_eq!(again["unchanged"], 25, "{again}");
    assert_eq!(again["created"], 0, "{again}");
    let sa_inst = instances(&env.client, "sa").await?;
    assert_eq!(sa_inst.len(), 25);
    for i in sa_inst.values() {
        assert!(i.location.starts_with("data/"), "{i:?}");
        assert!(i.checksum.starts_with("blake3:"), "{i:?}");
    }

    let a = env.start("sa", "agent-sa").await?;
    let b = env.start("sb", "agent-sb").await?;
    let created = env
        .client
        .create_move(
            vec!["/ml".into()],
            "sb",
            MoveSpec {
                recursive: true,
                owner: "test".into(),
                ..Default::default()
            },
        )
        .await?;
    assert_eq!(created.move_ids.len(), 25);
    wait_batch_done(&env.client, created.batch, 25).await?;

    // Every file: exactly one instance, valid on sb, whose bytes match the original.
    let sb_inst = instances(&env.client, "sb").await?;
    assert_eq!(sb_inst.len(), 25);
    for inst in sb_inst.values() {
        assert_eq!(inst.state, pb::InstanceState::Valid as i32, "{inst:?}");
        // A new copy lives at the file's namespace path on the target silo.
        let rel = inst
            .location
            .strip_prefix("ml/")
            .ok_or_else(|| anyhow::anyhow!("location {}", inst.location))?;
        let want = &files[rel];
        let got = std::fs::read(env.root("sb").join(&inst.location))?;
        assert!(got == *want, "bytes of {}", inst.location);
        assert_eq!(inst.checksum, checksum_of(want));
        let loc = env
            .client
            .locate(&format!("/ml/{rel}"), "", ReadOptions::default())
            .await?;
        let silos: Vec<&str> = loc
            .instances
            .iter()
            .filter_map(|l| l.instance.as_ref().map(|i| i.silo.as_str()))
            .collect();
        assert_eq!(silos, ["sb"], "{rel}");
    }
    // Sources are released: deleted on disk and forgotten by metad.
    wait_until(T, "sources released", || async {
        let left = instances(&env.client, "sa").await.ok()?;
        (left.is_empty()
            && files
                .keys()
                .all(|r| !env.root("sa").join("data").join(r).exists()))
        .then_some(())
    })
    .await?;
    assert!(temp_files(env.dir.path()).is_empty());

    // Counters move when the answers arrive, possibly after metad's state did.
    let (sa, sb) = wait_until(T, "agents counted", || async {
        let (sa, sb) = (a.stats.snapshot(), b.stats.snapshot());
        (sa.released == 25 && sb.committed == 25).then_some((sa, sb))
    })
    .await?;
    assert_eq!(sb.committed, 25, "{sb:?}");
    assert_eq!(sb.copied_files, 25, "{sb:?}");
    assert_eq!(
        sb.copied_bytes,
        files.values().map(|v| v.len() as u64).sum::<u64>()
    );
    assert_eq!((sb.refused, sb.failures), (0, 0), "{sb:?}");
    assert_eq!(sa.released, 25, "{sa:?}");

    // Graceful stop revokes the leases.
    a.stop().await?;
    b.stop().await?;
    let agents = env.client.list_agents("", ReadOptions::default()).await?;
    assert!(agents.agents.is_empty(), "{:?}", agents.agents);
    env.cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_agent_takes_over_its_lease_and_the_old_one_commits_nothing(
) -> anyhow::Result<()> {
    let env = Env::new(&["sa", "sb"]).await?;
    let files = make_files(&env.root("sa").join("data"), 6)?;
    env.import("sa", "data", "/ml").await?;
    let created = env
        .client
        .create_move(
            vec!["/ml".into()],
            "sb",
            MoveSpec {
                recursive: true,
                mode: pb::MoveMode::Copy,
                ..Default::default()
            },
        )
        .await?;

    // The first incarnation claims everything but its reads hang.
    let gate = Arc::new(Semaphore::new(0));
    let old = Agent::new(
        env.cluster.client().await?,
        env.config("sb", "same-name"),
        Arc::new(PosixDriver::new(env.root("sb"))),
    )
    .with_source_driver(
        "sa",
        Arc::new(Gated {
            inner: PosixDriver::new(env.root("sa")),
            gate: Arc::clone(&gate),
        }),
    );
    let mut old = env.spawn(old);
    wait_until(T, "old agent claimed all", || async {
        (old.stats.snapshot().tasks_claimed >= 6).then_some(())
    })
    .await?;

    // The restart registers under the same name: the claims come back at once.
    let new = env.start("sb", "same-name").await?;
    wait_batch_done(&env.client, created.batch, 6).await?;
    let agents = env.client.list_agents("sb", ReadOptions::default()).await?;
    assert_eq!(agents.agents.len(), 1, "{:?}", agents.agents);
    assert_eq!(agents.agents[0].lease, new.stats.snapshot().lease);

    // The old incarnation wakes up: its lease is gone and another agent holds its name, so it
    // stops without placing or committing anything (and without taking the lease back).
    gate.add_permits(100);
    let ended = tokio::time::timeout(T, &mut old.task).await;
    let s = old.stats.snapshot();
    let err = match ended {
        Ok(Ok(Err(e))) => e,
        other => anyhow::bail!("old agent should stop with an error: {other:?}"),
    };
    assert!(err.to_string().contains("replaced this one"), "{err}");
    assert_eq!((s.committed, s.registrations), (0, 1), "{s:?}");
    let agents = env.client.list_agents("sb", ReadOptions::default()).await?;
    assert_eq!(agents.agents.len(), 1);
    assert_eq!(agents.agents[0].lease, new.stats.snapshot().lease);
    for inst in instances(&env.client, "sb").await?.values() {
        assert_eq!(inst.state, pb::InstanceState::Valid as i32);
        let rel = inst.location.trim_start_matches("ml/");
        assert!(std::fs::read(env.root("sb").join(&inst.location))? == files[rel]);
    }
    // Copy mode keeps the sources.
    assert_eq!(instances(&env.client, "sa").await?.len(), 6);
    new.stop().await?;
    assert!(temp_files(env.dir.path()).is_empty());
    env.cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_during_the_copy_is_recopied_and_the_target_holds_the_latest_bytes(
) -> anyhow::Result<()> {
    let env = Env::new(&["sa", "sb"]).await?;
    make_files(&env.root("sa").join("data"), 1)?;
    env.import("sa", "data", "/ml").await?;
    let path = "/ml/d0/f000.bin";
    let gate = Arc::new(Semaphore::new(0));
    let agent = Agent::new(
        env.cluster.client().await?,
        env.config("sb", "b"),
        Arc::new(PosixDriver::new(env.root("sb"))),
    )
    .with_source_driver(
        "sa",
        Arc::new(Gated {
            inner: PosixDriver::new(env.root("sa")),
            gate: Arc::clone(&gate),
        }),
    );
    let agent = env.spawn(agent);
    let created = env
        .client
        .create_move(
            vec![path.into()],
            "sb",
            MoveSpec {
                mode: pb::MoveMode::Copy,
                ..Default::default()
            },
        )
        .await?;
    wait_until(T, "claimed", || async {
        (agent.stats.snapshot().tasks_claimed >= 1).then_some(())
    })
    .await?;

    // A writer rewrites the source while the copy waits, and records it.
    let new_bytes = data(99, 123_456);
    std::fs::write(env.root("sa").join("data/d0/f000.bin"), &new_bytes)?;
    env.client
        .record_write_at(
            path,
            "sa",
            new_bytes.len() as u64,
            WriteSpec {
                checksum: checksum_of(&new_bytes),
                location: "data/d0/f000.bin".into(),
                ..Default::default()
            },
        )
        .await?;
    gate.add_permits(100);
    wait_batch_done(&env.client, created.batch, 1).await?;
    let inst = instances(&env.client, "sb").await?;
    let inst = inst
        .values()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no instance on sb"))?;
    assert_eq!(inst.checksum, checksum_of(&new_bytes));
    assert!(std::fs::read(env.root("sb").join(&inst.location))? == new_bytes);
    // (The agent counts a commit when its answer arrives, which may be after we saw it.)
    let s = wait_until(T, "the agent counted its commit", || async {
        let s = agent.stats.snapshot();
        (s.committed == 1).then_some(s)
    })
    .await?;
    assert!(s.tasks_claimed >= 2, "claimed again after the write: {s:?}");
    agent.stop().await?;
    env.cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn move_wait_reports_failures_and_tombstones_are_reclaimed() -> anyhow::Result<()> {
    let env = Env::new(&["sa", "sb"]).await?;
    make_files(&env.root("sa").join("data"), 4)?;
    env.import("sa", "data", "/ml").await?;
    // The agent cannot reach sa's root: every attempt fails; two attempts, then failed.
    let mut cfg = env.config("sb", "b");
    cfg.source_roots
        .insert("sa".into(), env.dir.path().join("not-mounted"));
    let agent = env.spawn(Agent::new(
        env.cluster.client().await?,
        cfg,
        Arc::new(PosixDriver::new(env.root("sb"))),
    ));
    let cli = env.cli(Command::Move(MoveCmd::Move(MoveArgs {
        paths: vec!["/ml/d1".into()],
        to: "sb".into(),
        copy: false,
        recursive: true,
        priority: 0,
        owner: None,
        reason: "test".into(),
        max_attempts: 2,
        wait: true,
        poll: Duration::from_millis(100),
    })));
    let err = commands::execute(&cli)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("move --wait should fail"))?;
    assert!(err.to_string().contains("moves failed"), "{err}");
    let failed = env
        .client
        .list_moves(
            metad_client::MoveFilter {
                state: Some(pb::MoveState::Failed),
                ..Default::default()
            },
            "",
            100,
            ReadOptions::default(),
        )
        .await?;
    assert!(!failed.moves.is_empty());
    for m in &failed.moves {
        assert!(m.last_error.contains("not reachable"), "{m:?}");
        assert_eq!(m.attempts, 2, "{m:?}");
    }
    wait_until(T, "both failures reported", || async {
        (agent.stats.snapshot().failures >= 2).then_some(())
    })
    .await?;
    agent.stop().await?;

    // Deleting a file leaves a tombstone on sa; sa's agent deletes the bytes and confirms.
    let a = env.start("sa", "a").await?;
    env.client.unlink("/ml/d0/f000.bin").await?;
    wait_until(T, "tombstone reclaimed", || async {
        let t = env
            .client
            .list_tombstones("sa", "", 100, ReadOptions::default())
            .await
            .ok()?;
        (t.tombstones.is_empty() && !env.root("sa").join("data/d0/f000.bin").exists()).then_some(())
    })
    .await?;
    wait_until(T, "the agent counted the reclaim", || async {
        (a.stats.snapshot().tombstones_reclaimed == 1).then_some(())
    })
    .await?;
    assert!(
        env.root("sa").join("data/d0/f003.bin").exists(),
        "other files untouched"
    );
    a.stop().await?;
    env.cluster.shutdown().await;
    Ok(())
}
