//! The measurement loop and its report: `drive` runs N client tasks against one operation until
//! the deadline, each recording latencies (µs) into its own HdrHistogram; `Report` is the merged
//! result, printed as a human table and as one JSON object.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// What one benchmark run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub target: String,
    pub workload: String,
    pub consistency: String,
    pub clients: usize,
    pub connections: usize,
    pub value_size: usize,
    pub keys: u64,
    pub duration_s: f64,
    pub ops: u64,
    pub errors: u64,
    pub ops_per_s: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// A few error messages, to tell what failed.
    pub error_samples: Vec<String>,
    /// 1-minute load average when the run ended (the machine is shared).
    pub load1: f64,
}

/// Per-run settings that go into the report unchanged.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub target: String,
    pub workload: String,
    pub consistency: String,
    pub clients: usize,
    pub connections: usize,
    pub value_size: usize,
    pub keys: u64,
}

struct TaskResult {
    hist: Histogram<u64>,
    ops: u64,
    errors: u64,
    samples: Vec<String>,
}

/// Runs `clients` tasks, each calling `op(client, iteration)` back to back for `duration`
/// (after `warmup`, whose operations are not recorded). An `Err` counts as an error (its
/// latency is not recorded).
pub async fn drive<F, Fut>(
    info: RunInfo,
    warmup: Duration,
    duration: Duration,
    op: F,
) -> anyhow::Result<Report>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let op = Arc::new(op);
    let start = Instant::now() + warmup;
    let end = start + duration;
    let mut tasks = Vec::with_capacity(info.clients);
    for c in 0..info.clients {
        let op = Arc::clone(&op);
        tasks.push(tokio::spawn(async move {
            let mut r = TaskResult {
                hist: Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?,
                ops: 0,
                errors: 0,
                samples: Vec::new(),
            };
            let mut i = 0u64;
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                let res = op(c, i).await;
                i += 1;
                if t < start {
                    continue;
                }
                match res {
                    Ok(()) => {
                        r.ops += 1;
                        r.hist
                            .saturating_record(t.elapsed().as_micros().max(1) as u64);
                    }
                    Err(e) => {
                        r.errors += 1;
                        if r.samples.len() < 3 {
                            r.samples.push(e);
                        }
                    }
                }
            }
            anyhow::Ok(r)
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let (mut ops, mut errors, mut samples) = (0, 0, Vec::new());
    for t in tasks {
        let r = t.await??;
        hist.add(&r.hist)?;
        ops += r.ops;
        errors += r.errors;
        for s in r.samples {
            if samples.len() < 5 {
                samples.push(s);
            }
        }
    }
    let elapsed = Instant::now()
        .saturating_duration_since(start)
        .max(Duration::from_millis(1))
        .as_secs_f64();
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1e3;
    Ok(Report {
        target: info.target,
        workload: info.workload,
        consistency: info.consistency,
        clients: info.clients,
        connections: info.connections,
        value_size: info.value_size,
        keys: info.keys,
        duration_s: elapsed,
        ops,
        errors,
        ops_per_s: ops as f64 / elapsed,
        mean_ms: if ops == 0 { 0.0 } else { hist.mean() / 1e3 },
        p50_ms: ms(0.5),
        p90_ms: ms(0.9),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: hist.max() as f64 / 1e3,
        error_samples: samples,
        load1: load1(),
    })
}

/// The 1-minute load average (0 if unknown).
pub fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

impl Report {
    /// The human-readable table (several lines).
    pub fn table(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!(
            "target={} workload={} consistency={} clients={} connections={} value={}B keys={} load1={:.2}\n",
            self.target,
            self.workload,
            self.consistency,
            self.clients,
            self.connections,
            self.value_size,
            self.keys,
            self.load1
        ));
        s.push_str(&format!(
            "{:>10} {:>8} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
            "ops", "errors", "ops/s", "mean ms", "p50 ms", "p90 ms", "p99 ms", "p999 ms", "max ms"
        ));
        s.push_str(&format!(
            "{:>10} {:>8} {:>11.0} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            self.ops,
            self.errors,
            self.ops_per_s,
            self.mean_ms,
            self.p50_ms,
            self.p90_ms,
            self.p99_ms,
            self.p999_ms,
            self.max_ms
        ));
        for e in &self.error_samples {
            s.push_str(&format!("\nerror: {e}"));
        }
        s
    }

    pub fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> RunInfo {
        RunInfo {
            target: "t".into(),
            workload: "w".into(),
            consistency: "linearizable".into(),
            clients: 3,
            connections: 1,
            value_size: 8,
            keys: 1,
        }
    }

    #[tokio::test]
    async fn drive_counts_ops_and_errors() {
        let r = drive(
            info(),
            Duration::ZERO,
            Duration::from_millis(200),
            |c, i| async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                if c == 0 && i % 2 == 1 {
                    Err("odd".to_string())
                } else {
                    Ok(())
                }
            },
        )
        .await
        .expect("drive");
        assert!(r.ops > 10, "{r:?}");
        assert!(r.errors > 0 && r.errors < r.ops, "{r:?}");
        assert!(r.p50_ms >= 1.0 && r.p50_ms <= r.max_ms, "{r:?}");
        assert_eq!(r.error_samples.first().map(String::as_str), Some("odd"));
        let v: serde_json::Value = serde_json::from_str(&r.json()).expect("json");
        assert_eq!(v["ops"].as_u64(), Some(r.ops));
        assert!(r.table().contains("ops/s"));
    }
}
