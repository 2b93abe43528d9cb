//! Applications in other languages: generates Python stubs from `proto/` with grpcio-tools and
//! runs `testkit/python/api_smoke.py` against a real cluster (real gRPC over loopback).
//! grpcio/grpcio-tools are installed with pip if missing (`.ci/run` installs them up front).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use metad_testkit::{init_logging, Cluster};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn python_has_grpc() -> bool {
    Command::new("python3")
        .args(["-c", "import grpc, grpc_tools"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn ensure_grpcio() -> anyhow::Result<()> {
    if python_has_grpc() {
        return Ok(());
    }
    let st = Command::new("python3")
        .args(["-m", "pip", "install", "-q", "grpcio", "grpcio-tools"])
        .status()?;
    anyhow::ensure!(
        st.success() && python_has_grpc(),
        "could not install grpcio/grpcio-tools with pip"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_grpcio_client_talks_to_a_real_cluster() -> anyhow::Result<()> {
    init_logging();
    ensure_grpcio()?;
    let stubs = tempfile::tempdir()?;
    let proto = repo().join("proto");
    let files: Vec<String> = std::fs::read_dir(proto.join("metad/v1"))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "proto"))
        .map(|p| p.strip_prefix(&proto).map(|r| r.display().to_string()))
        .collect::<Result<_, _>>()?;
    let st = Command::new("python3")
        .args([
            "-m",
            "grpc_tools.protoc",
            "-I",
            &proto.display().to_string(),
        ])
        .arg(format!("--python_out={}", stubs.path().display()))
        .arg(format!("--grpc_python_out={}", stubs.path().display()))
        .args(&files)
        .current_dir(&proto)
        .status()?;
    anyhow::ensure!(st.success(), "grpc_tools.protoc failed");
    // Python packages for the generated modules.
    for d in ["metad", "metad/v1"] {
        std::fs::write(stubs.path().join(d).join("__init__.py"), "")?;
    }

    let cluster = Cluster::builder().nodes(3).build().await?;
    cluster.wait_for_leader(Duration::from_secs(20)).await?;
    let endpoint = cluster.client_addr(1);
    let script = repo().join("testkit/python/api_smoke.py");
    let out = tokio::process::Command::new("python3")
        .arg(&script)
        .args([
            "--endpoint",
            &endpoint,
            "--stubs",
            &stubs.path().display().to_string(),
        ])
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("python stdout:\n{stdout}\npython stderr:\n{stderr}");
    anyhow::ensure!(out.status.success(), "python client failed: {stderr}");
    anyhow::ensure!(
        stdout.lines().last() == Some("ok"),
        "python client did not finish"
    );
    cluster.shutdown().await;
    Ok(())
}
