//! The `watch` workload: one watcher per node, pinned to it, streams every event under
//! [`PREFIX`] from the revision recorded at the start, while `ctx.concurrency` writers create
//! files and set tags (some files go to [`OTHER`], which is outside the prefix
//! component-wise and must never be delivered). Judged by `check::watch`. Also owns the
//! helpers both log-based workloads share: event encoding, whole-revision buffering
//! ([`Tail`]) and fetching the authoritative change log ([`fetch_log`]).
//!
//! History schema (`f` → `value`):
//! - `create` `{path}` → ok `{path, rev, ino}`; `set_tags` `{path, key, value}` → ok
//!   `{path, key, value, rev, ino}`. A definite refusal is `fail` with `value.code`; anything
//!   else (ambiguous, timeout, transport) is `info`.
//! - observations: `watch-start` `{prefix, rev, retention}` (the revision every watcher starts
//!   after); `watcher-begin` `{watcher, after}`; `event` `{watcher, rev, kind, path, old_path,
//!   ino, inode_kind, detail}` with `node` = the watcher's node (only whole revisions are
//!   recorded: an event is recorded once the stream's progress covers its revision);
//!   `reconnect` `{watcher, after, code, error}` on every stream error (`code` COMPACTED when
//!   history was compacted; the watcher then resumes from the oldest retained revision);
//!   `watcher-stop` `{watcher, progress}` at the end of the main phase; `watcher-end`
//!   `{watcher, progress}` after catching up in `finish`; `log-event` (same fields as `event`,
//!   no watcher) for the authoritative log fetched on a fresh stream from the start revision,
//!   complete up to `log-end` `{rev}`.
//!
//! `watcher` is the node's 1-based number. `kind` is one of created, deleted, renamed, attr,
//! tags, other; `inode_kind` one of dir, file, symlink.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use metad_client::{pb, Client, ClientError, ErrorCode, ReadOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::check::CheckResult;
use crate::history::{History, Recorder};
use crate::workload::Ctx;

/// The watched prefix.
pub const PREFIX: &str = "/jepsen/watch";
/// Written to but not watched ("/jepsen/watch-other" is not below "/jepsen/watch").
pub const OTHER: &str = "/jepsen/watch-other";
/// The nodes' `watch_history_revisions`: the runner starts every node with
/// `--watch-history-revisions=10000000` (so `node_args` must not repeat it).
pub const RETENTION: u64 = 10_000_000;
/// How long `finish` waits for watchers and the log to catch up.
const CATCH_UP: Duration = Duration::from_secs(60);

/// Extra arguments every metad node needs: none beyond the runner's
/// `--watch-history-revisions=10000000` (see [`RETENTION`]).
pub fn node_args() -> Vec<String> {
    Vec::new()
}

pub(crate) fn kind_name(k: i32) -> &'static str {
    match pb::EventKind::try_from(k) {
        Ok(pb::EventKind::Created) => "created",
        Ok(pb::EventKind::Deleted) => "deleted",
        Ok(pb::EventKind::Renamed) => "renamed",
        Ok(pb::EventKind::AttrChanged) => "attr",
        Ok(pb::EventKind::TagsChanged) => "tags",
        _ => "other",
    }
}

pub(crate) fn inode_kind_name(k: i32) -> &'static str {
    match pb::InodeKind::try_from(k) {
        Ok(pb::InodeKind::Directory) => "dir",
        Ok(pb::InodeKind::File) => "file",
        Ok(pb::InodeKind::Symlink) => "symlink",
        _ => "",
    }
}

/// An event as the history records it.
pub(crate) fn event_json(e: &pb::Event) -> Value {
    json!({
        "rev": e.revision,
        "kind": kind_name(e.kind),
        "path": e.path,
        "old_path": e.old_path,
        "ino": e.ino,
        "inode_kind": inode_kind_name(e.inode_kind),
        "detail": e.detail,
    })
}

/// The code of a definite refusal (the write certainly did not happen), else `None`.
pub(crate) fn definite_code(e: &ClientError) -> Option<&'static str> {
    match e {
        ClientError::Rpc { code, .. } => match code {
            ErrorCode::NotFound
            | ErrorCode::AlreadyExists
            | ErrorCode::FailedPrecondition
            | ErrorCode::InvalidArgument => Some(code.as_str()),
            _ => None,
        },
        ClientError::InvalidConfig(_) => Some("INVALID_ARGUMENT"),
        _ => None,
    }
}

/// Retries `f` until it succeeds, fails definitely (see [`definite_code`]) or `deadline`
/// passes (setup and final reads).
pub(crate) async fn retry<T, F, Fut>(deadline: Instant, what: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    loop {
        let err = match tokio::time::timeout_at(deadline, f()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) if definite_code(&e).is_some() => {
                return Err(e).with_context(|| what.to_string())
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".to_string(),
        };
        if Instant::now() >= deadline {
            anyhow::bail!("{what}: {err}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One stream's events, released by whole revisions once its progress covers them.
pub(crate) struct Tail {
    /// Every event with revision <= done has been released.
    pub done: u64,
    pending: Vec<pb::Event>,
    /// Resume from the oldest retained revision (after COMPACTED).
    from_oldest: bool,
}

impl Tail {
    pub fn new(after: u64) -> Tail {
        Tail {
            done: after,
            pending: Vec::new(),
            from_oldest: false,
        }
    }

    /// The events of the revisions this message completes (redeliveries dropped).
    pub fn feed(&mut self, m: pb::WatchResponse) -> Vec<pb::Event> {
        let done = self.done;
        self.pending
            .extend(m.events.into_iter().filter(|e| e.revision > done));
        self.done = self.done.max(m.progress_revision);
        let (ready, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|e| e.revision <= self.done);
        self.pending = rest;
        ready
    }

    /// The request resuming this stream.
    pub fn request(&mut self, prefix: &str) -> pb::WatchRequest {
        let after = if std::mem::take(&mut self.from_oldest) {
            0
        } else {
            self.done
        };
        pb::WatchRequest {
            path_prefix: prefix.to_string(),
            after_revision: Some(after),
            progress_interval_ms: 200,
            ..Default::default()
        }
    }

    /// After a stream error: drop partial revisions, note compaction.
    pub fn broken(&mut self, e: &ClientError) {
        self.pending.clear();
        if e.code() == ErrorCode::Compacted {
            self.from_oldest = true;
        }
    }
}

/// Streams `prefix` on `client` from `tail` until `until_rev` is covered or `deadline`,
/// reconnecting on errors. `on_event` gets every released event; `on_error` every stream error.
pub(crate) async fn follow(
    client: &Client,
    prefix: &str,
    tail: &mut Tail,
    until_rev: u64,
    deadline: Instant,
    mut on_event: impl FnMut(&pb::Event),
    mut on_error: impl FnMut(u64, &ClientError),
) {
    while tail.done < until_rev && Instant::now() < deadline {
        let req = tail.request(prefix);
        let mut stream = match tokio::time::timeout_at(deadline, client.watch(req)).await {
            Err(_) => return,
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                on_error(tail.done, &e);
                tail.broken(&e);
                let pause = (Instant::now() + Duration::from_millis(200)).min(deadline);
                tokio::time::sleep_until(pause).await;
                continue;
            }
        };
        while tail.done < until_rev {
            let next = Client::next_watch_message(&mut stream);
            match tokio::time::timeout_at(deadline, next).await {
                Err(_) => return,
                Ok(Ok(Some(m))) => tail.feed(m).iter().for_each(&mut on_event),
                Ok(Ok(None)) => {
                    let e = ClientError::Transport {
                        endpoint: String::new(),
                        message: "stream ended".into(),
                    };
                    on_error(tail.done, &e);
                    tail.broken(&e);
                    break;
                }
                Ok(Err(e)) => {
                    on_error(tail.done, &e);
                    tail.broken(&e);
                    break;
                }
            }
        }
    }
}

/// The authoritative change log under `prefix`: every event with `after < rev <= target`, from
/// a fresh stream. Fails if it cannot be completed within `limit`.
pub(crate) async fn fetch_log(
    client: &Client,
    prefix: &str,
    after: u64,
    target: u64,
    limit: Duration,
) -> anyhow::Result<Vec<pb::Event>> {
    let mut tail = Tail::new(after);
    let mut out = Vec::new();
    let mut compacted = false;
    let deadline = Instant::now() + limit;
    follow(
        client,
        prefix,
        &mut tail,
        target,
        deadline,
        |e| out.push(e.clone()),
        |_, e| compacted |= e.code() == ErrorCode::Compacted,
    )
    .await;
    if compacted {
        anyhow::bail!("change log under {prefix} after rev {after} was compacted");
    }
    if tail.done < target {
        anyhow::bail!(
            "change log under {prefix} complete only up to rev {} of {target}",
            tail.done
        );
    }
    out.retain(|e| e.revision <= target);
    Ok(out)
}

/// Records the authoritative log as `log-event` observations and `log-end`.
pub(crate) fn record_log(rec: &Recorder, events: &[pb::Event], target: u64) {
    let p = rec.new_process();
    for e in events {
        rec.observe(p, "log-event", event_json(e), None);
    }
    rec.observe(p, "log-end", json!({ "rev": target }), None);
}

fn watcher_event(w: u32, e: &pb::Event) -> Value {
    let mut v = event_json(e);
    v["watcher"] = json!(w);
    v
}

/// One node's watcher: follows until `until_rev` or `deadline`, returns its progress.
async fn watcher(
    client: Client,
    rec: Recorder,
    w: u32,
    mut tail: Tail,
    until_rev: u64,
    deadline: Instant,
) -> u64 {
    let p = rec.new_process();
    follow(
        &client,
        PREFIX,
        &mut tail,
        until_rev,
        deadline,
        |e| rec.observe(p, "event", watcher_event(w, e), Some(w)),
        |after, e| {
            let v = json!({"watcher": w, "after": after, "code": e.code().as_str(),
                           "error": e.to_string()});
            rec.observe(p, "reconnect", v, Some(w));
        },
    )
    .await;
    tail.done
}

/// One writer: creates files (mostly under the prefix) and sets tags on its own files.
async fn writer(ctx: Ctx, client: Client, id: usize) {
    let rec = &ctx.recorder;
    let mut rng = StdRng::seed_from_u64(ctx.seed ^ (0x5741_5443 + id as u64));
    let mut process = rec.new_process();
    let mut mine: Vec<String> = Vec::new();
    let mut n = 0u64;
    while !ctx.done() {
        n += 1;
        let roll = rng.gen_range(0..10);
        let tag = roll < 3 && !mine.is_empty();
        let (f, value) = if tag {
            let path = mine[rng.gen_range(0..mine.len())].clone();
            (
                "set_tags",
                json!({"path": path, "key": "k", "value": format!("v{n}")}),
            )
        } else if roll < 4 {
            ("create", json!({ "path": format!("{OTHER}/f{id}-{n}") }))
        } else {
            ("create", json!({ "path": format!("{PREFIX}/f{id}-{n}") }))
        };
        let path = value["path"].as_str().unwrap_or_default().to_string();
        let pending = rec.invoke(process, f, value.clone(), None);
        let call = async {
            if tag {
                let tags = [("k".to_string(), format!("v{n}"))];
                client
                    .set_tags(&path, &tags, false)
                    .await
                    .map(|c| (c.header.revision, 0))
            } else {
                client.create(&path).await.map(|r| {
                    let rev = r.header.map_or(0, |h| h.revision);
                    (rev, r.inode.map_or(0, |i| i.ino))
                })
            }
        };
        match tokio::time::timeout(ctx.op_timeout + Duration::from_secs(1), call).await {
            Ok(Ok((rev, ino))) => {
                let mut v = value;
                v["rev"] = json!(rev);
                v["ino"] = json!(ino);
                rec.ok(pending, v);
                if !tag && path.starts_with(&format!("{PREFIX}/")) {
                    mine.push(path);
                }
            }
            Ok(Err(e)) => match definite_code(&e) {
                Some(code) => {
                    let mut pending = pending;
                    pending.value["code"] = json!(code);
                    rec.fail(pending, e);
                }
                None => process = rec.info(pending, e),
            },
            Err(_) => process = rec.info(pending, "timed out"),
        }
    }
}

/// The main phase: set up, start one watcher per node and the writers; at the deadline stop.
pub async fn run(ctx: Ctx) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let setup_deadline = Instant::now() + Duration::from_secs(30);
    for dir in [PREFIX, OTHER] {
        retry(setup_deadline, "setup mkdir", || client.mkdir(dir, true)).await?;
    }
    let stat = retry(setup_deadline, "setup stat", || {
        client.stat(PREFIX, ReadOptions::linearizable())
    })
    .await?;
    let start = stat.header.map_or(0, |h| h.revision);
    let rec = ctx.recorder.clone();
    let p = rec.new_process();
    rec.observe(
        p,
        "watch-start",
        json!({"prefix": PREFIX, "rev": start, "retention": RETENTION}),
        None,
    );
    let mut watchers = Vec::new();
    for i in 0..ctx.endpoints.len() {
        let w = i as u32 + 1;
        let pinned = client.on_endpoint(i).context("pin watcher")?;
        rec.observe(
            p,
            "watcher-begin",
            json!({"watcher": w, "after": start}),
            Some(w),
        );
        let fut = watcher(
            pinned,
            rec.clone(),
            w,
            Tail::new(start),
            u64::MAX,
            ctx.deadline,
        );
        watchers.push((w, tokio::spawn(fut)));
    }
    let mut writers = Vec::new();
    for id in 0..ctx.concurrency.max(1) {
        writers.push(tokio::spawn(writer(ctx.clone(), client.clone(), id)));
    }
    for h in writers {
        h.await.context("writer task")?;
    }
    for (w, h) in watchers {
        let progress = h.await.context("watcher task")?;
        rec.observe(
            p,
            "watcher-stop",
            json!({"watcher": w, "progress": progress}),
            Some(w),
        );
    }
    Ok(())
}

/// The final phase: every watcher catches up to the current revision, then the
/// authoritative log is fetched from a fresh stream.
pub async fn finish(ctx: Ctx) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let history = ctx.recorder.history();
    let start = history
        .ops
        .iter()
        .find(|o| o.f == "watch-start")
        .and_then(|o| o.value["rev"].as_u64())
        .context("no watch-start in the history: run did not start")?;
    let stops: HashMap<u64, u64> = history
        .ops
        .iter()
        .filter(|o| o.f == "watcher-stop")
        .filter_map(|o| Some((o.value["watcher"].as_u64()?, o.value["progress"].as_u64()?)))
        .collect();
    let deadline = Instant::now() + CATCH_UP;
    let stat = retry(deadline, "final stat", || {
        client.stat(PREFIX, ReadOptions::linearizable())
    })
    .await?;
    let target = stat.header.map_or(0, |h| h.revision);
    let rec = ctx.recorder.clone();
    let mut tasks = Vec::new();
    for i in 0..ctx.endpoints.len() {
        let w = i as u32 + 1;
        let from = stops.get(&u64::from(w)).copied().unwrap_or(start);
        let pinned = client.on_endpoint(i).context("pin watcher")?;
        let fut = watcher(pinned, rec.clone(), w, Tail::new(from), target, deadline);
        tasks.push((w, tokio::spawn(fut)));
    }
    let p = rec.new_process();
    for (w, h) in tasks {
        let progress = h.await.context("watcher task")?;
        rec.observe(
            p,
            "watcher-end",
            json!({"watcher": w, "progress": progress}),
            Some(w),
        );
    }
    let log = fetch_log(&client, PREFIX, start, target, CATCH_UP).await?;
    record_log(&rec, &log, target);
    Ok(())
}

/// The checkers that judge this workload's history.
pub fn check(history: &History) -> Vec<CheckResult> {
    vec![crate::check::watch::check(history)]
}
