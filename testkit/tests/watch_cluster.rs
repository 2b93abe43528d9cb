//! Watch on a real cluster: a watch from revision r on a follower delivers exactly the events
//! after r, in order, across a leader change, and the same events as on another node; idle
//! streams get progress; compacted history is refused with COMPACTED.

use std::time::Duration;

use metad_client::pb::{Event, EventKind, WatchRequest};
use metad_client::{Client, ClientError, ErrorCode, WatchStream};
use metad_testkit::{init_logging, wait_until, Cluster};

const T: Duration = Duration::from_secs(20);

/// Reads events until `done` says the list is complete (bounded by a deadline).
async fn collect(
    stream: &mut WatchStream,
    done: impl Fn(&[Event]) -> bool,
) -> anyhow::Result<Vec<Event>> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + T;
    while !done(&out) {
        let msg = tokio::time::timeout_at(deadline, Client::next_watch_message(stream))
            .await
            .map_err(|_| anyhow::anyhow!("watch: timed out with {} events", out.len()))??
            .ok_or_else(|| anyhow::anyhow!("watch stream ended"))?;
        out.extend(msg.events);
    }
    Ok(out)
}

/// Polls until a watch from `after_revision` is refused with COMPACTED; returns the refusal.
async fn wait_compacted(client: &Client, after_revision: u64) -> anyhow::Result<ClientError> {
    wait_until(T, "history to be compacted", || async {
        // The refusal comes when the stream is opened (or, if compaction races the open, as
        // the stream's first message).
        let req = WatchRequest {
            after_revision: Some(after_revision),
            ..Default::default()
        };
        match client.watch(req).await {
            Err(e) if e.code() == ErrorCode::Compacted => Some(e),
            Err(_) => None,
            Ok(mut s) => match Client::next_watch_message(&mut s).await {
                Err(e) if e.code() == ErrorCode::Compacted => Some(e),
                _ => None,
            },
        }
    })
    .await
}

fn created(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.kind == EventKind::Created as i32)
        .map(|e| e.path.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_on_a_follower_from_revision_r_sees_exactly_later_events_across_leader_change(
) -> anyhow::Result<()> {
    init_logging();
    let mut cluster = Cluster::builder().nodes(3).build().await?;
    let leader = cluster.wait_for_leader(T).await?;
    let client = cluster.client().await?;
    client.mkdir("/w", false).await?;
    let mut r = 0;
    for i in 0..10 {
        let resp = client.create(&format!("/w/f{i:02}")).await?;
        if i == 4 {
            r = resp.header.map(|h| h.revision).unwrap_or(0);
        }
    }
    assert!(r > 0);
    let follower = cluster
        .ids()
        .into_iter()
        .find(|i| *i != leader)
        .unwrap_or(2);
    let other = cluster
        .ids()
        .into_iter()
        .find(|i| *i != leader && *i != follower)
        .unwrap_or(3);
    let req = WatchRequest {
        path_prefix: "/w".into(),
        after_revision: Some(r),
        ..Default::default()
    };
    let mut on_follower = cluster
        .client_for(follower)
        .await?
        .watch(req.clone())
        .await?;

    // Leader change while the watch is open.
    cluster.stop(leader).await;
    cluster.wait_for_new_leader(leader, T).await?;
    let client = cluster.client().await?;
    for i in 10..20 {
        client.create(&format!("/w/f{i:02}")).await?;
    }
    let want: Vec<String> = (5..20).map(|i| format!("/w/f{i:02}")).collect();
    let last = want.last().cloned().unwrap_or_default();
    let got = collect(&mut on_follower, |evs| created(evs).contains(&last)).await?;
    assert_eq!(
        created(&got),
        want,
        "exactly the creates after revision {r}, in order, once each"
    );
    assert!(got.iter().all(|e| e.revision > r), "nothing at or before r");
    assert!(
        got.windows(2).all(|w| w[0].revision <= w[1].revision),
        "revision order"
    );

    // The same history from another node is identical.
    let mut on_other = cluster.client_for(other).await?.watch(req).await?;
    let again = collect(&mut on_other, |evs| evs.len() >= got.len()).await?;
    assert_eq!(
        again[..got.len()],
        got[..],
        "every node delivers the same events"
    );
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_watch_gets_progress_at_the_current_revision() -> anyhow::Result<()> {
    init_logging();
    let cluster = Cluster::builder().nodes(3).build().await?;
    cluster.wait_for_leader(T).await?;
    let client = cluster.client().await?;
    let rev = client
        .mkdir("/p", false)
        .await?
        .header
        .map(|h| h.revision)
        .unwrap_or(0);
    let mut s = client
        .watch(WatchRequest {
            path_prefix: "/elsewhere".into(),
            after_revision: Some(0),
            progress_interval_ms: 200,
            ..Default::default()
        })
        .await?;
    // Read messages (bounded by a deadline) until an empty progress message reaches `rev`.
    let deadline = tokio::time::Instant::now() + T;
    let progressed = loop {
        let m = tokio::time::timeout_at(deadline, Client::next_watch_message(&mut s))
            .await
            .map_err(|_| anyhow::anyhow!("no progress message within {T:?}"))??
            .ok_or_else(|| anyhow::anyhow!("stream ended"))?;
        if m.events.is_empty() && m.progress_revision >= rev {
            break m.progress_revision;
        }
    };
    assert!(progressed >= rev);
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compacted_history_is_refused_with_the_oldest_revision() -> anyhow::Result<()> {
    init_logging();
    let cluster = Cluster::builder()
        .nodes(3)
        .configure(|c| {
            c.watch_history_revisions = 10;
            c.compaction_interval_ms = 100;
        })
        .build()
        .await?;
    cluster.wait_for_leader(T).await?;
    let client = cluster.client().await?;
    client.mkdir("/c", false).await?;
    let mut last = 0;
    for i in 0..40 {
        last = client
            .create(&format!("/c/{i}"))
            .await?
            .header
            .map(|h| h.revision)
            .unwrap_or(0);
    }
    // Wait until history before revision `last - 10` is gone, then ask for all of it.
    let err = wait_compacted(&client, 0).await?;
    assert!(err.message().contains("oldest available revision"), "{err}");
    // Recent history is still served.
    let mut s = client
        .watch(WatchRequest {
            path_prefix: "/c".into(),
            after_revision: Some(last - 3),
            ..Default::default()
        })
        .await?;
    let got = collect(&mut s, |evs| evs.iter().any(|e| e.revision == last)).await?;
    assert!(got.iter().all(|e| e.revision > last - 3));
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_arguments_over_limits_are_refused() -> anyhow::Result<()> {
    init_logging();
    let cluster = Cluster::builder().nodes(3).build().await?;
    cluster.wait_for_leader(T).await?;
    let client = cluster.client().await?;
    let bad = [
        WatchRequest {
            path_prefix: "relative".into(),
            ..Default::default()
        },
        WatchRequest {
            path_prefix: format!("/{}", "n".repeat(256)),
            ..Default::default()
        },
        WatchRequest {
            silo: "s".repeat(65),
            ..Default::default()
        },
        WatchRequest {
            kinds: vec![1; 33],
            ..Default::default()
        },
    ];
    for req in bad {
        let e = client
            .watch(req.clone())
            .await
            .expect_err("must be refused");
        assert_eq!(e.code(), ErrorCode::InvalidArgument, "{req:?}: {e}");
    }
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watcher_that_stops_reading_is_cut_off_with_a_resume_point() -> anyhow::Result<()> {
    init_logging();
    let cluster = Cluster::builder()
        .nodes(3)
        .configure(|c| c.watch_slow_receiver_ms = 300)
        .build()
        .await?;
    let leader = cluster.wait_for_leader(T).await?;
    let client = cluster.client().await?;
    // Enough history to overflow the per-watcher buffer and the client's HTTP/2 window (2 MiB):
    // long paths make each event ~2 KiB.
    let long = "d".repeat(250);
    let dir = format!("/s/{long}/{long}/{long}/{long}/{long}/{long}");
    client.mkdir(&dir, true).await?;
    let files = 6_000u32;
    for chunk in (0..files).collect::<Vec<_>>().chunks(250) {
        let futs = chunk.iter().map(|i| {
            let c = client.clone();
            let path = format!("{dir}/{}{i:05}", "f".repeat(200));
            async move { c.create(&path).await }
        });
        for r in futures::future::join_all(futs).await {
            r?;
        }
    }
    let watcher = cluster.client_for(leader).await?;
    let req = WatchRequest {
        path_prefix: "/s".into(),
        after_revision: Some(0),
        ..Default::default()
    };
    let mut stream = watcher.watch(req).await?;
    // Do not read: wait until the node reports the cut-off.
    let metrics = &cluster.node(leader).core().metrics;
    wait_until(T, "the slow watcher to be cut off", || async {
        (metrics.watch_cutoffs.get() >= 1).then_some(())
    })
    .await?;
    // Draining what was buffered ends with RESOURCE_EXHAUSTED and a resume point.
    let mut events = 0usize;
    let mut last = 0u64;
    let err = loop {
        match Client::next_watch_message(&mut stream).await {
            Ok(Some(m)) => {
                events += m.events.len();
                last = m.events.last().map(|e| e.revision).unwrap_or(last);
            }
            Ok(None) => anyhow::bail!("stream ended without an error after {events} events"),
            Err(e) => break e,
        }
    };
    assert_eq!(err.code(), ErrorCode::ResourceExhausted, "{err}");
    assert!(
        events < files as usize,
        "the server stopped buffering ({events} events delivered)"
    );
    assert!(
        err.message().contains("resume with after_revision"),
        "{err}"
    );
    // Resuming from the delivered point continues without a gap.
    let resume: u64 = err
        .message()
        .rsplit("after_revision = ")
        .next()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no resume revision in {err}"))?;
    assert!(
        resume <= last && resume > 0,
        "resume {resume} vs last delivered {last}"
    );
    let mut again = watcher
        .watch(WatchRequest {
            path_prefix: "/s".into(),
            after_revision: Some(resume),
            ..Default::default()
        })
        .await?;
    let next = Client::next_watch_message(&mut again)
        .await?
        .ok_or_else(|| anyhow::anyhow!("resumed stream ended"))?;
    assert_eq!(
        next.events.first().map(|e| e.revision),
        Some(resume + 1),
        "no gap after resuming"
    );
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_is_also_bounded_in_events() -> anyhow::Result<()> {
    use metad_client::{pb, SiloSpec};
    init_logging();
    // The revision bound alone would keep all of it: a bulk import is one revision.
    let cluster = Cluster::builder()
        .nodes(3)
        .configure(|c| {
            c.watch_history_revisions = 100_000;
            c.watch_history_events = 1000;
            c.compaction_interval_ms = 100;
        })
        .build()
        .await?;
    cluster.wait_for_leader(T).await?;
    let client = cluster.client().await?;
    client
        .register_site("s", "", "", Default::default())
        .await?;
    client
        .register_silo(SiloSpec {
            name: "silo".into(),
            site: "s".into(),
            kind: pb::SiloKind::Posix,
            tier: pb::SiloTier::Hot,
            capacity_bytes: 1 << 40,
            root: "/srv".into(),
            ..Default::default()
        })
        .await?;
    client.mkdir("/imp", false).await?;
    // Four imports of 200 files, each one revision of 400 events (Created + InstanceAdded).
    let mut revs = Vec::new();
    for b in 0..4 {
        let files = (0..200)
            .map(|i| pb::ImportEntry {
                path: format!("/imp/b{b}-{i:03}"),
                size: 1,
                ..Default::default()
            })
            .collect();
        let r = client.import_files("silo", files).await?;
        revs.push(r.header.map(|h| h.revision).unwrap_or(0));
    }
    let first = revs[0];
    let last = revs[3];
    // The oldest imports go, whole revisions at a time, until at most 1000 events are left.
    let err = wait_compacted(&client, first - 1).await?;
    assert!(err.message().contains("oldest available revision"), "{err}");
    // The last two imports (800 events) fit the bound and are still served, whole.
    let mut s = client
        .watch(WatchRequest {
            path_prefix: "/imp".into(),
            after_revision: Some(revs[1]),
            ..Default::default()
        })
        .await?;
    let got = collect(&mut s, |evs| {
        evs.iter().filter(|e| e.revision == last).count() == 400
    })
    .await?;
    assert_eq!(got.len(), 800, "both remaining imports, whole: {:?}", revs);
    assert!(got
        .iter()
        .all(|e| e.revision == revs[2] || e.revision == last));
    cluster.shutdown().await;
    Ok(())
}
