//! The `namespace` workload: concurrent create/mkdir/rename/unlink/rmdir storms over a small
//! set of names below [`BASE`] (3 directories × 8 names, a few nested names) so operations
//! collide, with linearizable `read_dir`/`stat` reads sent to a random node. Judged by
//! `check::namespace`, which replays the authoritative change log fetched in `finish`.
//!
//! History schema (`f` → `value`; completions carry the invocation's fields plus results):
//! - `create`/`mkdir`/`unlink`/`rmdir` `{path}` → ok `{path, rev, ino}`.
//! - `rename` `{src, dst, mode}` (`mode`: replace, no_replace, exchange) → ok
//!   `{src, dst, mode, rev, ino, replaced}` (`replaced`: the replaced/exchanged inode or null).
//! - `read_dir` `{path}` → ok `{path, rev, entries: [[name, ino, kind], ...]}` (name order,
//!   `kind` dir/file/symlink); `stat` `{path}` → ok `{path, rev, ino, kind}`. Reads are
//!   linearizable, pinned to one node (`Op.node`). Final reads carry `final: true`.
//! - `fail` = a definite refusal with `value.code` (NOT_FOUND, ALREADY_EXISTS,
//!   FAILED_PRECONDITION, INVALID_ARGUMENT) — or, for reads, any error; `info` = a write with
//!   an unknown outcome. `rev` is the response header's revision.
//! - observations: `ns-start` `{base, rev, entries: [[path, ino, kind], ...]}` (the tree below
//!   the base at revision `rev`, before any workload write); `log-event` `{rev, kind, path,
//!   old_path, ino, inode_kind, detail}` for every change below the base after `rev` (see
//!   `workload::watch`), complete up to `log-end` `{rev}`.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::Context;
use metad_client::{pb, Client, ReadOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::watch::{definite_code, fetch_log, inode_kind_name, record_log, retry};
use crate::check::CheckResult;
use crate::history::History;
use crate::workload::Ctx;

/// Root of the workload's subtree.
pub const BASE: &str = "/jepsen/ns";
const DIRS: u32 = 3;
const NAMES: u32 = 8;
const CATCH_UP: Duration = Duration::from_secs(60);

/// Extra arguments every metad node needs: none beyond the runner's
/// `--watch-history-revisions=10000000`, which keeps the change log for `finish`.
pub fn node_args() -> Vec<String> {
    Vec::new()
}

/// A random path: mostly `BASE/dX/nY`, some nested `BASE/dX/nY/nZ`, rarely `BASE/dX`.
fn random_path(rng: &mut StdRng) -> String {
    let d = rng.gen_range(0..DIRS);
    let n = rng.gen_range(0..NAMES);
    match rng.gen_range(0..30) {
        0 => format!("{BASE}/d{d}"),
        1..=3 => format!("{BASE}/d{d}/n{n}/n{}", rng.gen_range(0..3)),
        _ => format!("{BASE}/d{d}/n{n}"),
    }
}

fn random_op(rng: &mut StdRng) -> (&'static str, Value) {
    let roll = rng.gen_range(0..100);
    let p = random_path(rng);
    match roll {
        0..=13 => ("create", json!({ "path": p })),
        14..=21 => ("mkdir", json!({ "path": p })),
        22..=41 => {
            let mut dst = random_path(rng);
            while dst == p {
                dst = random_path(rng);
            }
            let mode = match rng.gen_range(0..10) {
                0..=4 => "replace",
                5..=7 => "no_replace",
                _ => "exchange",
            };
            ("rename", json!({"src": p, "dst": dst, "mode": mode}))
        }
        42..=57 => ("unlink", json!({ "path": p })),
        58..=69 => ("rmdir", json!({ "path": p })),
        70..=84 => {
            let dir = match rng.gen_range(0..4) {
                0 => BASE.to_string(),
                1 => format!("{BASE}/d{}", rng.gen_range(0..DIRS)),
                _ => p,
            };
            ("read_dir", json!({ "path": dir }))
        }
        _ => ("stat", json!({ "path": p })),
    }
}

fn rev_of(h: &Option<pb::ResponseHeader>) -> u64 {
    h.as_ref().map_or(0, |h| h.revision)
}

fn ino_of(i: &Option<pb::Inode>) -> Value {
    i.as_ref().map_or(Value::Null, |i| json!(i.ino))
}

fn entries_json(page: &pb::ReadDirResponse) -> Vec<Value> {
    page.entries
        .iter()
        .map(|e| json!([e.name, e.ino, inode_kind_name(e.kind)]))
        .collect()
}

/// Runs one operation; returns the result fields to merge into the value.
async fn call(client: &Client, f: &str, v: &Value) -> Result<Value, metad_client::ClientError> {
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    let path = s("path");
    let lin = ReadOptions::linearizable();
    Ok(match f {
        "create" => {
            let r = client.create(&path).await?;
            json!({"rev": rev_of(&r.header), "ino": ino_of(&r.inode)})
        }
        "mkdir" => {
            let r = client.mkdir(&path, false).await?;
            json!({"rev": rev_of(&r.header), "ino": ino_of(&r.inode)})
        }
        "unlink" => {
            let r = client.unlink(&path).await?;
            json!({"rev": rev_of(&r.header), "ino": ino_of(&r.inode)})
        }
        "rmdir" => {
            let r = client.rmdir(&path).await?;
            json!({"rev": rev_of(&r.header), "ino": ino_of(&r.inode)})
        }
        "rename" => {
            let mode = match s("mode").as_str() {
                "no_replace" => pb::RenameMode::NoReplace,
                "exchange" => pb::RenameMode::Exchange,
                _ => pb::RenameMode::Replace,
            };
            let r = client.rename(&s("src"), &s("dst"), mode).await?;
            json!({"rev": rev_of(&r.header), "ino": ino_of(&r.inode),
                   "replaced": ino_of(&r.replaced)})
        }
        "read_dir" => {
            let r = client.read_dir(&path, "", 1000, false, lin).await?;
            json!({"rev": rev_of(&r.header), "entries": entries_json(&r)})
        }
        _ => {
            let r = client.stat(&path, lin).await?;
            let kind = r.inode.as_ref().map_or("", |i| inode_kind_name(i.kind));
            json!({"rev": rev_of(&r.header), "ino": ino_of(&r.inode), "kind": kind})
        }
    })
}

fn merge(mut v: Value, extra: Value) -> Value {
    if let (Some(m), Value::Object(x)) = (v.as_object_mut(), extra) {
        m.extend(x);
    }
    v
}

async fn worker(ctx: Ctx, client: Client, id: usize) -> anyhow::Result<()> {
    let rec = &ctx.recorder;
    let mut rng = StdRng::seed_from_u64(ctx.seed ^ (0x4e53_0000 + id as u64));
    let mut process = rec.new_process();
    let pinned: Vec<Client> = (0..ctx.endpoints.len())
        .map(|i| client.on_endpoint(i))
        .collect::<Result<_, _>>()
        .context("pin reader")?;
    while !ctx.done() {
        let (f, value) = random_op(&mut rng);
        let read = matches!(f, "read_dir" | "stat");
        let (c, node) = if read && !pinned.is_empty() {
            let i = rng.gen_range(0..pinned.len());
            (&pinned[i], Some(i as u32 + 1))
        } else {
            (&client, None)
        };
        let mut pending = rec.invoke(process, f, value.clone(), node);
        let limit = ctx.op_timeout + Duration::from_secs(1);
        match tokio::time::timeout(limit, call(c, f, &value)).await {
            Ok(Ok(extra)) => rec.ok(pending, merge(value, extra)),
            Ok(Err(e)) => match (definite_code(&e), read) {
                (Some(code), _) => {
                    pending.value["code"] = json!(code);
                    rec.fail(pending, e);
                }
                (None, true) => {
                    pending.value["code"] = json!(e.code().as_str());
                    rec.fail(pending, e);
                }
                (None, false) => process = rec.info(pending, e),
            },
            Err(_) if read => rec.fail(pending, "timed out"),
            Err(_) => process = rec.info(pending, "timed out"),
        }
    }
    Ok(())
}

/// Every object below `BASE` as `[path, ino, kind]`, read directory by directory through
/// `client` (linearizable). With `record`, each read is a `read_dir` op marked `final`.
async fn read_tree(
    ctx: &Ctx,
    client: &Client,
    record: bool,
    deadline: Instant,
) -> anyhow::Result<(Vec<Value>, u64)> {
    let rec = &ctx.recorder;
    let mut out = Vec::new();
    let mut max_rev = 0;
    let mut queue = VecDeque::from([BASE.to_string()]);
    let process = rec.new_process();
    while let Some(dir) = queue.pop_front() {
        let page = retry(deadline, "read tree", || {
            client.read_dir(&dir, "", 1000, false, ReadOptions::linearizable())
        })
        .await?;
        let rev = rev_of(&page.header);
        max_rev = max_rev.max(rev);
        if record {
            let v = json!({"path": dir, "final": true});
            let p = rec.invoke(process, "read_dir", v.clone(), None);
            rec.ok(
                p,
                merge(v, json!({"rev": rev, "entries": entries_json(&page)})),
            );
        }
        for e in &page.entries {
            let path = format!("{dir}/{}", e.name);
            out.push(json!([path, e.ino, inode_kind_name(e.kind)]));
            if e.kind == pb::InodeKind::Directory as i32 {
                queue.push_back(path);
            }
        }
    }
    Ok((out, max_rev))
}

/// The main phase: create the directories, snapshot the tree, then run the storm.
pub async fn run(ctx: Ctx) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    retry(deadline, "setup mkdir", || client.mkdir(BASE, true)).await?;
    for d in 0..DIRS {
        // A previous run on the same cluster may have left a file or nothing there: the
        // snapshot below records whatever is there, so a refusal is fine.
        let dir = format!("{BASE}/d{d}");
        if let Err(e) = retry(deadline, "setup mkdir", || client.mkdir(&dir, true)).await {
            tracing::info!("namespace setup: {e:#}");
        }
    }
    let (entries, rev) = read_tree(&ctx, &client, false, deadline).await?;
    let p = ctx.recorder.new_process();
    ctx.recorder.observe(
        p,
        "ns-start",
        json!({"base": BASE, "rev": rev, "entries": entries}),
        None,
    );
    let mut tasks = Vec::new();
    for id in 0..ctx.concurrency.max(1) {
        tasks.push(tokio::spawn(worker(ctx.clone(), client.clone(), id)));
    }
    for t in tasks {
        t.await.context("worker task")??;
    }
    Ok(())
}

/// The final phase: read the whole tree, then fetch the change log from the start revision
/// up to the final reads' revision.
pub async fn finish(ctx: Ctx) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let start = ctx
        .recorder
        .history()
        .ops
        .iter()
        .find(|o| o.f == "ns-start")
        .and_then(|o| o.value["rev"].as_u64())
        .context("no ns-start in the history: run did not start")?;
    let deadline = Instant::now() + CATCH_UP;
    let (_, target) = read_tree(&ctx, &client, true, deadline).await?;
    let log = fetch_log(&client, BASE, start, target, CATCH_UP).await?;
    record_log(&ctx.recorder, &log, target);
    Ok(())
}

/// The checkers that judge this workload's history.
pub fn check(history: &History) -> Vec<CheckResult> {
    vec![crate::check::namespace::check(history)]
}
