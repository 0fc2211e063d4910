//! Compiles proto/zixiao/v1/*.proto with protox (a protobuf compiler in
//! Rust, so no system `protoc` is needed) and generates the tonic services,
//! plus the encoded descriptor set that server reflection serves.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/zixiao/v1/types.proto",
        "proto/zixiao/v1/api.proto",
        "proto/zixiao/v1/access.proto",
        "proto/zixiao/v1/agent.proto",
        "proto/zixiao/v1/local.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("zixiao_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        // Deterministic encodings, and the ordered maps of the model.
        .btree_map(".")
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
