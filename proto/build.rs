fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/master.proto",
        "proto/raft.proto",
        "proto/node.proto",
        "proto/meta.proto",
        "proto/data.proto",
        "proto/csi.proto",
    ];
    // Blob payloads as `Bytes`: handed on without copying.
    tonic_prost_build::configure().bytes(".strata.data").compile_protos(&protos, &["proto"])?;
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}
