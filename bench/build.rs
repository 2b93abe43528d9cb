//! Generates the etcd v3 client stubs (the subset in `proto/etcdserverpb/rpc.proto`) with the
//! vendored protoc, so building the benchmark needs nothing but cargo.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(&["etcdserverpb/rpc.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/etcdserverpb/rpc.proto");
    Ok(())
}
