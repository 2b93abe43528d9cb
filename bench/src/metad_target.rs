//! metad workloads: the namespace layout of a run (`Layout`), the setup that creates the keys
//! (ImportFiles batches for files with instances, Txn batches for their tags), and one
//! operation per workload, measured by `stats::drive`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use metad_client::{
    pb, Client, ClientConfig, ClientError, Consistency, ErrorCode, ReadOptions, SiloSpec,
};
use rand::Rng;
use tokio::task::JoinSet;

use crate::stats::{self, Report};
use crate::{ConsistencyArg, RunArgs, Workload};

/// The silo every benchmark file has an instance on, at site `SITE`.
pub const SILO: &str = "bench";
pub const SITE: &str = "bench-site";
/// Files per directory of the key set.
pub const PER_DIR: u64 = 1000;
/// Directories the `create` workload spreads new files over.
pub const CREATE_DIRS: u64 = 100;
/// Tag groups (`grp=g0..g99`) the `find` workload queries.
pub const GROUPS: u64 = 100;

/// Paths of one run under its prefix.
#[derive(Debug, Clone)]
pub struct Layout {
    pub prefix: String,
}

impl Layout {
    /// Key `j`: `<prefix>/k/d<j/1000>/f<j>`.
    pub fn key(&self, j: u64) -> String {
        format!("{}/k/d{}/f{j}", self.prefix, j / PER_DIR)
    }
    pub fn keys_root(&self) -> String {
        format!("{}/k", self.prefix)
    }
    pub fn create_dir(&self, d: u64) -> String {
        format!("{}/c/d{d}", self.prefix)
    }
    /// Client `c`'s rename file, name `side` (0 or 1).
    pub fn rename_file(&self, c: usize, side: u64) -> String {
        format!("{}/r/c{c}-{side}", self.prefix)
    }
}

/// The tag value of counter `n`, `size` bytes (zero-padded decimal).
pub fn value(n: u64, size: usize) -> String {
    format!("{n:0>size$}")
}

pub fn read_options(c: ConsistencyArg) -> ReadOptions {
    match c {
        ConsistencyArg::Linearizable => ReadOptions::linearizable(),
        ConsistencyArg::Serializable => ReadOptions::serializable(),
    }
}

fn is_exists(e: &ClientError) -> bool {
    e.code() == ErrorCode::AlreadyExists
}

/// Connects `n` independent clients (each its own HTTP/2 connections) and waits until the
/// cluster has a leader.
pub async fn connect(endpoints: &[String], n: usize) -> anyhow::Result<Vec<Client>> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        let mut cfg = ClientConfig::new(endpoints.iter().cloned());
        cfg.consistency = Consistency::Linearizable;
        clients.push(Client::connect(cfg).await?);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for c in &clients {
        loop {
            match c.cluster_status().await {
                Ok(s) if s.leader_id != 0 => break,
                r => {
                    anyhow::ensure!(
                        Instant::now() < deadline,
                        "no metad leader within 60 s: {r:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    Ok(clients)
}

/// Registers the benchmark site and silo (already registered is fine).
pub async fn ensure_silo(c: &Client) -> anyhow::Result<()> {
    match c
        .register_site(SITE, "metad-bench", "", Default::default())
        .await
    {
        Err(e) if !is_exists(&e) => return Err(e.into()),
        _ => {}
    }
    let spec = SiloSpec {
        name: SILO.into(),
        site: SITE.into(),
        kind: pb::SiloKind::Posix,
        tier: pb::SiloTier::Hot,
        capacity_bytes: 1 << 60,
        root: "/srv/bench".into(),
        ..Default::default()
    };
    match c.register_silo(spec).await {
        Err(e) if !is_exists(&e) => Err(e.into()),
        _ => Ok(()),
    }
}

/// Imports `paths` (files with one instance each on `SILO`) in batches of 1000, `inflight`
/// requests at a time over `clients`.
pub async fn import(clients: &[Client], paths: Vec<String>, inflight: usize) -> anyhow::Result<()> {
    let mut set = JoinSet::new();
    for (i, chunk) in paths.chunks(1000).enumerate() {
        if set.len() >= inflight.max(1) {
            if let Some(r) = set.join_next().await {
                r??;
            }
        }
        let c = clients[i % clients.len()].clone();
        let files: Vec<pb::ImportEntry> = chunk
            .iter()
            .map(|p| pb::ImportEntry {
                path: p.clone(),
                size: 4096,
                checksum: String::new(),
                ..Default::default()
            })
            .collect();
        set.spawn(async move { c.import_files(SILO, files).await.map(|_| ()) });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(())
}

/// A txn step setting `tags` on `path`.
pub fn set_step(path: String, tags: Vec<(String, String)>) -> pb::TxnStep {
    pb::TxnStep {
        op: Some(pb::txn_step::Op::Tag(pb::TagOp {
            op: Some(pb::tag_op::Op::Set(pb::SetTags {
                path,
                tags: tags
                    .into_iter()
                    .map(|(key, value)| pb::Tag { key, value })
                    .collect(),
                inherit: false,
            })),
        })),
    }
}

/// Sets tags `v=<value>` and `grp=g<j mod 100>` on keys `range`: one Txn of 128 SetTags steps
/// per request, `inflight` requests at a time.
pub async fn tag_keys(
    clients: &[Client],
    layout: &Layout,
    range: std::ops::Range<u64>,
    value: &str,
    inflight: usize,
) -> anyhow::Result<()> {
    let mut set = JoinSet::new();
    let mut start = range.start;
    let mut i = 0;
    while start < range.end {
        let end = (start + 128).min(range.end);
        if set.len() >= inflight.max(1) {
            if let Some(r) = set.join_next().await {
                r??;
            }
        }
        let steps = (start..end)
            .map(|j| {
                set_step(
                    layout.key(j),
                    vec![
                        ("v".into(), value.to_string()),
                        ("grp".into(), format!("g{}", j % GROUPS)),
                    ],
                )
            })
            .collect();
        let c = clients[i % clients.len()].clone();
        set.spawn(async move { c.txn(vec![], steps, vec![]).await.map(|_| ()) });
        start = end;
        i += 1;
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(())
}

struct Ctx {
    writers: Vec<Client>,
    readers: Vec<Client>,
    layout: Layout,
    keys: u64,
    value_size: usize,
    opts: ReadOptions,
    /// Per client: txn-cas counter, or rename side.
    state: Vec<AtomicU64>,
}

impl Ctx {
    fn writer(&self, c: usize) -> &Client {
        &self.writers[c % self.writers.len()]
    }
    fn reader(&self, c: usize) -> &Client {
        &self.readers[c % self.readers.len()]
    }
    fn random_key(&self) -> String {
        let j = rand::thread_rng().gen_range(0..self.keys);
        self.layout.key(j)
    }
}

fn err(e: ClientError) -> String {
    e.to_string()
}

/// Sets up and runs one workload against metad.
pub async fn run(a: &RunArgs) -> anyhow::Result<Report> {
    let w = a.workload;
    let mut a = a.clone();
    if w == Workload::TxnCas {
        a.keys = a.keys.max(a.clients as u64);
    }
    let writers = connect(&a.endpoints, a.connections()).await?;
    let readers = if a.spread {
        writers
            .iter()
            .enumerate()
            .map(|(i, c)| c.on_endpoint(i % a.endpoints.len()))
            .collect::<Result<Vec<_>, _>>()?
    } else {
        writers.clone()
    };
    let layout = Layout { prefix: a.prefix() };
    let setup_started = Instant::now();
    setup(&writers, &layout, &a).await?;
    eprintln!(
        "metad setup ({}) done in {:.1}s under {}",
        w.name(),
        setup_started.elapsed().as_secs_f64(),
        layout.prefix
    );
    let ctx = Arc::new(Ctx {
        writers,
        readers,
        layout,
        keys: a.keys,
        value_size: a.value_size,
        opts: read_options(a.consistency),
        state: (0..a.clients).map(|_| AtomicU64::new(0)).collect(),
    });
    stats::drive(a.info("metad"), a.warmup(), a.duration(), move |c, i| {
        let ctx = Arc::clone(&ctx);
        async move { one_op(&ctx, w, c, i).await }
    })
    .await
}

async fn setup(writers: &[Client], layout: &Layout, a: &RunArgs) -> anyhow::Result<()> {
    let w = a.workload;
    let c0 = &writers[0];
    ensure_silo(c0).await?;
    // With --no-setup the keys (and their tags) exist already; the create directories and the
    // rename files are made either way (idempotent).
    let needs_keys = !a.no_setup && !matches!(w, Workload::Create | Workload::Rename);
    let needs_tags = !a.no_setup
        && matches!(
            w,
            Workload::KvGet | Workload::TxnCas | Workload::Find | Workload::Mixed
        );
    if matches!(w, Workload::Create | Workload::Mixed) {
        for d in 0..CREATE_DIRS {
            c0.mkdir(&layout.create_dir(d), true).await?;
        }
    }
    if matches!(w, Workload::Rename | Workload::Mixed) {
        let paths = (0..a.clients).map(|c| layout.rename_file(c, 0)).collect();
        import(writers, paths, 4).await?;
    }
    if needs_keys {
        let paths = (0..a.keys).map(|j| layout.key(j)).collect();
        import(writers, paths, 4).await?;
    }
    if needs_tags {
        tag_keys(writers, layout, 0..a.keys, &value(0, a.value_size), 8).await?;
    }
    Ok(())
}

async fn one_op(ctx: &Ctx, w: Workload, c: usize, i: u64) -> Result<(), String> {
    let w = if w == Workload::Mixed {
        let r = rand::thread_rng().gen_range(0..100);
        match r {
            0..=59 => Workload::Stat,
            60..=74 => Workload::Locate,
            75..=84 => Workload::KvGet,
            85..=86 => Workload::Find,
            87..=94 => Workload::SetTag,
            95..=98 => Workload::Create,
            _ => Workload::Rename,
        }
    } else {
        w
    };
    match w {
        Workload::Create => {
            let d = (c as u64 + i) % CREATE_DIRS;
            let path = format!("{}/c{c}-{i}", ctx.layout.create_dir(d));
            ctx.writer(c).create(&path).await.map(|_| ()).map_err(err)
        }
        Workload::Stat => ctx
            .reader(c)
            .stat(&ctx.random_key(), ctx.opts)
            .await
            .map(|_| ())
            .map_err(err),
        Workload::Locate => ctx
            .reader(c)
            .locate(&ctx.random_key(), SITE, ctx.opts)
            .await
            .map(|_| ())
            .map_err(err),
        Workload::KvGet => {
            let t = ctx
                .reader(c)
                .get_tags(&ctx.random_key(), false, ctx.opts)
                .await
                .map_err(err)?;
            if t.tags.iter().any(|t| t.key == "v") {
                Ok(())
            } else {
                Err("kv-get: tag v missing".into())
            }
        }
        Workload::Find => {
            let g = rand::thread_rng().gen_range(0..GROUPS);
            ctx.reader(c)
                .find_by_tags(
                    &ctx.layout.keys_root(),
                    &format!("grp=g{g}"),
                    None,
                    1000,
                    ctx.opts,
                )
                .await
                .map(|_| ())
                .map_err(err)
        }
        Workload::SetTag | Workload::KvPut => {
            let v = value(i, ctx.value_size);
            ctx.writer(c)
                .set_tags(&ctx.random_key(), &[("v".into(), v)], false)
                .await
                .map(|_| ())
                .map_err(err)
        }
        Workload::Rename => rename(ctx, c).await,
        Workload::TxnCas => cas(ctx, c).await,
        Workload::Mixed => Ok(()),
    }
}

async fn rename(ctx: &Ctx, c: usize) -> Result<(), String> {
    let side = ctx.state[c].load(Ordering::Relaxed);
    let (src, dst) = (
        ctx.layout.rename_file(c, side),
        ctx.layout.rename_file(c, 1 - side),
    );
    let r = ctx
        .writer(c)
        .rename(&src, &dst, pb::RenameMode::NoReplace)
        .await;
    match r {
        Ok(_) => {
            ctx.state[c].store(1 - side, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => {
            // Find out where the file is now.
            let at0 = ctx
                .writer(c)
                .stat(&ctx.layout.rename_file(c, 0), ReadOptions::linearizable())
                .await
                .is_ok();
            ctx.state[c].store(if at0 { 0 } else { 1 }, Ordering::Relaxed);
            Err(err(e))
        }
    }
}

async fn cas(ctx: &Ctx, c: usize) -> Result<(), String> {
    let path = ctx.layout.key(c as u64);
    let n = ctx.state[c].load(Ordering::Relaxed);
    let compare = pb::Compare {
        path: path.clone(),
        target: pb::CompareTarget::Tag as i32,
        op: pb::CompareOp::Equal as i32,
        tag_key: "v".into(),
        tag_value: value(n, ctx.value_size),
        ..Default::default()
    };
    let step = set_step(
        path.clone(),
        vec![("v".into(), value(n + 1, ctx.value_size))],
    );
    match ctx.writer(c).txn(vec![compare], vec![step], vec![]).await {
        Ok(r) if r.succeeded => {
            ctx.state[c].store(n + 1, Ordering::Relaxed);
            Ok(())
        }
        other => {
            // Resynchronise with the stored value.
            let t = ctx
                .writer(c)
                .get_tags(&path, false, ReadOptions::linearizable())
                .await
                .map_err(err)?;
            if let Some(v) = t.tags.iter().find(|t| t.key == "v") {
                ctx.state[c].store(v.value.parse().unwrap_or(0), Ordering::Relaxed);
            }
            match other {
                Ok(_) => Err("txn-cas: compare failed".into()),
                Err(e) => Err(err(e)),
            }
        }
    }
}
