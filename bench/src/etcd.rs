//! etcd v3 workloads (`kv-put`, `kv-get`, `txn-cas`) on the generated stubs, shaped like their
//! metad counterparts: the same keys count, value size, clients and connections. Writes go to
//! the leader (found with Maintenance.Status), as the metad client's do; reads too unless
//! `--spread`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::task::JoinSet;
use tonic::transport::{Channel, Endpoint};

use crate::etcdpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::etcdpb::kv_client::KvClient;
use crate::etcdpb::maintenance_client::MaintenanceClient;
use crate::etcdpb::{
    request_op, Compare, PutRequest, RangeRequest, RequestOp, StatusRequest, TxnRequest,
};
use crate::metad_target::value;
use crate::stats::{self, Report};
use crate::{ConsistencyArg, RunArgs, Workload};

async fn channel(addr: &str) -> anyhow::Result<Channel> {
    let uri = if addr.starts_with("http") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    Ok(Endpoint::from_shared(uri)?
        .timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(2))
        // The metad client's transport (TCP_NODELAY, coalesced writes), so that the two
        // clients cost the same per request and the comparison is of the servers.
        .connect_with_connector(metad_client::connect::Connector)
        .await?)
}

/// Index of the leader among `endpoints` (polls until one is elected).
async fn leader_index(endpoints: &[String]) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut members = Vec::new();
        let mut leader = 0;
        for e in endpoints {
            let st = match channel(e).await {
                Ok(ch) => MaintenanceClient::new(ch)
                    .status(StatusRequest {})
                    .await
                    .ok()
                    .map(|r| r.into_inner()),
                Err(_) => None,
            };
            members.push(
                st.as_ref()
                    .and_then(|s| s.header.as_ref())
                    .map(|h| h.member_id),
            );
            if let Some(s) = st {
                if s.leader != 0 {
                    leader = s.leader;
                }
            }
        }
        if let Some(i) = members
            .iter()
            .position(|m| *m == Some(leader) && leader != 0)
        {
            return Ok(i);
        }
        anyhow::ensure!(Instant::now() < deadline, "no etcd leader within 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct Ctx {
    writers: Vec<KvClient<Channel>>,
    readers: Vec<KvClient<Channel>>,
    prefix: String,
    keys: u64,
    value_size: usize,
    serializable: bool,
    state: Vec<AtomicU64>,
}

impl Ctx {
    fn key(&self, j: u64) -> Vec<u8> {
        format!("{}/k{j}", self.prefix).into_bytes()
    }
}

fn err(s: tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

pub async fn run(a: &RunArgs) -> anyhow::Result<Report> {
    let w = a.workload;
    anyhow::ensure!(
        matches!(w, Workload::KvPut | Workload::KvGet | Workload::TxnCas),
        "etcd mode runs kv-put, kv-get and txn-cas only"
    );
    let mut a = a.clone();
    if w == Workload::TxnCas {
        a.keys = a.keys.max(a.clients as u64);
    }
    let leader = leader_index(&a.endpoints).await?;
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    for i in 0..a.connections() {
        let wch = channel(&a.endpoints[leader]).await?;
        writers.push(KvClient::new(wch.clone()));
        readers.push(if a.spread {
            KvClient::new(channel(&a.endpoints[i % a.endpoints.len()]).await?)
        } else {
            KvClient::new(wch)
        });
    }
    let ctx = Arc::new(Ctx {
        writers,
        readers,
        prefix: a.prefix(),
        keys: a.keys,
        value_size: a.value_size,
        serializable: a.consistency == ConsistencyArg::Serializable,
        state: (0..a.clients).map(|_| AtomicU64::new(0)).collect(),
    });
    let started = Instant::now();
    if !a.no_setup && matches!(w, Workload::KvGet | Workload::TxnCas) {
        let mut set = JoinSet::new();
        for j in 0..a.keys {
            if set.len() >= 64 {
                if let Some(r) = set.join_next().await {
                    r??;
                }
            }
            let mut kv = ctx.writers[j as usize % ctx.writers.len()].clone();
            let req = PutRequest {
                key: ctx.key(j),
                value: value(0, a.value_size).into_bytes(),
                ..Default::default()
            };
            set.spawn(async move { kv.put(req).await.map(|_| ()) });
        }
        while let Some(r) = set.join_next().await {
            r??;
        }
    }
    eprintln!(
        "etcd setup ({}) done in {:.1}s under {}",
        w.name(),
        started.elapsed().as_secs_f64(),
        ctx.prefix
    );
    stats::drive(a.info("etcd"), a.warmup(), a.duration(), move |c, i| {
        let ctx = Arc::clone(&ctx);
        async move { one_op(&ctx, w, c, i).await }
    })
    .await
}

async fn one_op(ctx: &Ctx, w: Workload, c: usize, i: u64) -> Result<(), String> {
    match w {
        Workload::KvPut => {
            let j = rand::thread_rng().gen_range(0..ctx.keys);
            let mut kv = ctx.writers[c % ctx.writers.len()].clone();
            kv.put(PutRequest {
                key: ctx.key(j),
                value: value(i, ctx.value_size).into_bytes(),
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(err)
        }
        Workload::KvGet => {
            let j = rand::thread_rng().gen_range(0..ctx.keys);
            let mut kv = ctx.readers[c % ctx.readers.len()].clone();
            let r = kv
                .range(RangeRequest {
                    key: ctx.key(j),
                    serializable: ctx.serializable,
                    ..Default::default()
                })
                .await
                .map_err(err)?
                .into_inner();
            if r.kvs.is_empty() {
                Err("kv-get: key missing".into())
            } else {
                Ok(())
            }
        }
        Workload::TxnCas => cas(ctx, c).await,
        _ => Err(format!("{} is not an etcd workload", w.name())),
    }
}

async fn cas(ctx: &Ctx, c: usize) -> Result<(), String> {
    let key = ctx.key(c as u64);
    let n = ctx.state[c].load(Ordering::Relaxed);
    let mut kv = ctx.writers[c % ctx.writers.len()].clone();
    let req = TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Value as i32,
            key: key.clone(),
            target_union: Some(TargetUnion::Value(value(n, ctx.value_size).into_bytes())),
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: key.clone(),
                value: value(n + 1, ctx.value_size).into_bytes(),
                ..Default::default()
            })),
        }],
        failure: vec![],
    };
    match kv.txn(req).await {
        Ok(r) if r.get_ref().succeeded => {
            ctx.state[c].store(n + 1, Ordering::Relaxed);
            Ok(())
        }
        other => {
            let r = kv
                .range(RangeRequest {
                    key,
                    ..Default::default()
                })
                .await
                .map_err(err)?
                .into_inner();
            if let Some(v) = r.kvs.first() {
                let s = String::from_utf8_lossy(&v.value);
                ctx.state[c].store(s.parse().unwrap_or(0), Ordering::Relaxed);
            }
            match other {
                Ok(_) => Err("txn-cas: compare failed".into()),
                Err(e) => Err(err(e)),
            }
        }
    }
}
