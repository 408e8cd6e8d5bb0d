fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/master.proto", "proto/raft.proto", "proto/node.proto", "proto/meta.proto"];
    tonic_prost_build::configure().compile_protos(&protos, &["proto"])?;
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}
