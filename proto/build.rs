//! Generates the gRPC/prost code from `metad/**/*.proto` with a vendored protoc, so a fresh
//! machine needs nothing but cargo.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY of intent: build scripts are single-threaded; prost-build reads PROTOC.
    std::env::set_var("PROTOC", protoc);
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let protos = [
        "metad/v1/common.proto",
        "metad/v1/cluster.proto",
        "metad/v1/model.proto",
        "metad/v1/namespace.proto",
        "metad/v1/tags.proto",
        "metad/v1/topology.proto",
        "metad/v1/watch.proto",
        "metad/v1/moves.proto",
        "metad/internal/v1/register.proto",
        "metad/raft/v1/raft.proto",
    ];
    tonic_prost_build::configure()
        // Every map is a BTreeMap: records stored in the state machine and commands in the log
        // must encode identically on every node (HashMap iteration order is random).
        .btree_map(".")
        .file_descriptor_set_path(out.join("metad_descriptor.bin"))
        .compile_protos(&protos, &["."])?;
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}
