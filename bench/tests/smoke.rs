//! Benchmark smoke (CI): a real 3-node metad cluster on loopback, `metad-bench` run for a couple
//! of seconds per workload with `--json`; the last output line must be one JSON object with
//! ops/s > 0 and no errors. Proves the tool runs; measures nothing.

use std::process::Command;

use metad_testkit::procs::ProcCluster;

fn run_bench(endpoints: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_metad-bench"))
        .args(["--target", "metad", "--endpoints", endpoints])
        .args([
            "--duration",
            "2",
            "--warmup",
            "0.2",
            "--keys",
            "200",
            "--json",
        ])
        .args(args)
        .output()
        .expect("run metad-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "metad-bench {args:?} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().expect("some output");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}"))
}

#[test]
fn bench_tool_runs_against_a_real_cluster() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = ProcCluster::start(dir.path(), 3, &[]).expect("start cluster");
    let endpoints = cluster.endpoints.join(",");
    for args in [
        &["--workload", "kv-put", "--clients", "4"][..],
        &[
            "--workload",
            "mixed",
            "--clients",
            "4",
            "--consistency",
            "serializable",
        ][..],
        &["--workload", "txn-cas", "--clients", "2"][..],
    ] {
        let v = run_bench(&endpoints, args);
        assert_eq!(v["target"], "metad", "{v}");
        assert!(
            v["ops_per_s"].as_f64().unwrap_or(0.0) > 0.0,
            "{args:?}: {v}"
        );
        assert_eq!(v["errors"].as_u64(), Some(0), "{args:?}: {v}");
        assert!(v["p99_ms"].as_f64().unwrap_or(0.0) > 0.0, "{args:?}: {v}");
    }
}
