//! Compiles `proto/snakepit_bridge.proto` with protox (no system `protoc`)
//! and generates the prost messages and the tonic client.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_dir = manifest.join("../proto");
    let proto = proto_dir.join("snakepit_bridge.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    let fds = protox::compile([&proto], [&proto_dir])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .btree_map(".")
        .compile_fds(fds)?;
    Ok(())
}
